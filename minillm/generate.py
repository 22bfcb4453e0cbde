"""Autoregressive generation: the decoding loop with and without a KV cache, beam search, memory of an nB model.

- `generate(model, idx, params)`: prefill the prompt once, then one token per step. With `use_cache` each
  step feeds only the newest token and attends to the cached keys/values of the earlier ones (O(T) work per
  step instead of O(T^2) for re-running the whole sequence); without, it re-runs the last `block_size`
  tokens every step, as nanoGPT's `generate` does. Both give the same tokens (tested).
- `beam_search(model, idx, num_beams)`: keeps the `num_beams` prefixes of highest total log-probability;
  finished hypotheses (ending in `eos_id`) are ranked by sum(log p) / length**length_penalty, Hugging Face's
  convention (Wu et al. 2016, GNMT, use a different length penalty), and it stops by HF's
  `early_stopping=False` heuristic (exact for length_penalty = 0; see the function's docstring).
- `inference_memory(n_params, ...)`: weights + KV cache, the first-order estimate of the memory of serving.

The model is any module with `forward(idx, kv_caches=None) -> (logits, loss)`, `make_kv_caches(max_len)` and
`cfg.block_size` (a `minillm.model.GPT`). Leaves out: batched prompts of different lengths (left padding),
speculative decoding, stop strings, paged caches (chapter 16). The command line (`minillm generate`) is
`minillm.commands.generate`; loading a checkpoint is `minillm.checkpoint.load_for_generation`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from minillm.attention import kv_cache_bytes_per_token
from minillm.sampling import SamplingParams, sample


@torch.no_grad()
def generate(
    model: nn.Module,
    idx: torch.Tensor,
    params: SamplingParams | None = None,
    *,
    use_cache: bool = True,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    penalty_window: int | None = None,
) -> torch.Tensor:
    """idx (B, T) prompt ids -> (B, T + n) with n <= params.max_tokens new tokens (fewer if every row hit eos_id).

    Penalties look at the prompt and everything generated (or the last `penalty_window` tokens)."""
    params = params or SamplingParams()
    if idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError(f"idx must be (batch, tokens) with at least one token, got shape {tuple(idx.shape)}")
    block = model.cfg.block_size
    # the model reads the prompt and every new token but the last one (which is sampled, never fed back)
    seen = idx.size(1) + params.max_tokens - 1
    if use_cache and seen > block:
        raise ValueError(f"prompt ({idx.size(1)}) + max_tokens ({params.max_tokens}) - 1 = {seen} positions exceed "
                         f"the model's block_size={block}; lower max_tokens or use use_cache=False (crops the context)")
    was_training = model.training
    model.eval()
    caches = model.make_kv_caches(seen) if use_cache else None
    out = idx
    done = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    step_input = idx  # the prefill: the whole prompt once
    for _ in range(params.max_tokens):
        if use_cache:
            logits, _ = model(step_input, kv_caches=caches)
        else:
            logits, _ = model(out[:, -block:])
        history = out if penalty_window is None else out[:, -penalty_window:]
        nxt = sample(logits[:, -1, :], history, params, generator)  # (B,)
        if eos_id is not None:
            nxt = torch.where(done, torch.full_like(nxt, eos_id), nxt)  # finished rows keep emitting eos
            done |= nxt == eos_id
        out = torch.cat([out, nxt[:, None]], dim=1)
        step_input = nxt[:, None]  # (B, 1): only the new token goes through the model next time
        if eos_id is not None and bool(done.all()):
            break
    model.train(was_training)
    return out


@torch.no_grad()
def beam_search(
    model: nn.Module,
    idx: torch.Tensor,
    num_beams: int = 4,
    max_tokens: int = 20,
    *,
    eos_id: int | None = None,
    length_penalty: float = 1.0,
) -> tuple[torch.Tensor, float]:
    """idx (1, T) -> (the best sequence (1, T + n), its score). Re-runs the model on all beams each step.

    Each step expands every live beam by its `num_beams` best tokens, keeps the `num_beams` best of all
    candidates by total log-probability, and moves candidates ending in eos_id to the finished list.
    A hypothesis of n new tokens scores sum(log p) / n**length_penalty.

    Stopping rule: Hugging Face's `early_stopping=False` (its default), a heuristic. After each step, once
    `num_beams` hypotheses are finished, stop if the best live beam's score *at its current length* is below
    the worst finished score; also stop after max_tokens steps or when no beam is left alive. With
    length_penalty = 0 this is exact: sum(log p) only falls as tokens are added. With length_penalty > 0 it
    is not: the numerator falls but the denominator n**alpha grows, so a live beam's (negative) score can
    still rise, and a longer hypothesis that would have won may be cut off. Hugging Face's
    `early_stopping="never"` is the exact rule (it bounds a live beam by its score over max_length**alpha);
    `early_stopping=True` stops as soon as `num_beams` hypotheses are finished. With length_penalty < 0 the
    check is skipped and the search runs for max_tokens steps (or until no live beam is left)."""
    if idx.dim() != 2 or idx.size(0) != 1:
        raise ValueError(f"beam_search takes one prompt of shape (1, T), got {tuple(idx.shape)}")
    if num_beams < 1 or max_tokens < 1:
        raise ValueError(f"num_beams and max_tokens must be >= 1, got {num_beams}, {max_tokens}")
    block, prompt_len = model.cfg.block_size, idx.size(1)
    was_training = model.training
    model.eval()
    beams, scores = idx, torch.zeros(1, device=idx.device)  # (n_live, T), (n_live,) total log-probs
    finished: list[tuple[float, torch.Tensor]] = []

    def score(total_logp: float, seq_len: int) -> float:
        return total_logp / (seq_len - prompt_len) ** length_penalty

    for _ in range(max_tokens):
        logits, _ = model(beams[:, -block:])
        logp = F.log_softmax(logits[:, -1, :].float(), dim=-1)  # (n_live, V)
        cand = (scores[:, None] + logp).flatten()  # (n_live * V,)
        top = torch.topk(cand, min(2 * num_beams, cand.numel()))
        V = logp.size(-1)
        new_beams, new_scores = [], []
        for s, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            seq = torch.cat([beams[flat // V], beams.new_tensor([flat % V])])
            if eos_id is not None and flat % V == eos_id:
                finished.append((score(s, seq.numel()), seq))
            else:
                new_beams.append(seq)
                new_scores.append(s)
            if len(new_beams) == num_beams:
                break
        finished = sorted(finished, key=lambda f: f[0], reverse=True)[:num_beams]
        if not new_beams:
            break
        beams, scores = torch.stack(new_beams), torch.tensor(new_scores, device=idx.device)
        if len(finished) == num_beams and length_penalty >= 0:
            best_live = scores.max().item() / (beams.size(1) - prompt_len) ** length_penalty
            if best_live < finished[-1][0]:
                break
    for s, seq in zip(scores.tolist(), beams, strict=True):  # unfinished beams compete at the end too
        finished.append((score(s, seq.numel()), seq))
    best_score, best = max(finished, key=lambda f: f[0])
    model.train(was_training)
    return best[None, :], best_score


def inference_memory(n_params: float, dtype_bytes: float = 2, *, n_layer: int = 0, n_kv_head: int = 0,
                     head_dim: int = 0, tokens: int = 0, batch: int = 1, kv_bytes: float = 2) -> dict[str, float]:
    """Bytes to serve a model: weights (n_params * dtype_bytes) + KV cache (2 * L * H_kv * D * tokens * batch).

    Leaves out activations (small at inference: one layer's worth at a time) and framework overhead, which
    in practice add 10-20%."""
    weights = n_params * dtype_bytes
    kv = kv_cache_bytes_per_token(n_layer, n_kv_head, head_dim, kv_bytes) * tokens * batch if tokens else 0
    return {"weights": weights, "kv_cache": kv, "total": weights + kv}
