"""Checkers of chapter 7 (inference and decoding), the exercises of exercises/07_inference_decoding.ipynb.

| id | the learner writes | compared with |
|---|---|---|
| 07.1 | `top_k_filter(logits, k)`, logits `(B, V)` | `minillm.sampling.top_k_filter` |
| 07.2 | `top_p_filter(logits, p)` (nucleus) | `minillm.sampling.top_p_filter` |
| 07.3 | `repetition_penalty(logits, prev_ids, theta)` (CTRL) | `minillm.sampling.repetition_penalty` |
| 07.4 | `greedy_generate(model, idx, n)` with a KV cache | `minillm.generate.generate`, temperature 0 |
| 07.5 | `inference_memory_gb(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch)` | `inference_memory` |
| 07.6 | `beam_step(scores, logp, num_beams)` -> `(beam_idx, token_idx, new_scores)` | the step of `beam_search` |

Hand-worked cases come first (written out in the notebook), then random float64 logits (07.1-07.3,
07.6), random float64 tiny models and prompts (07.4) or further model sizes (07.5). 07.2 draws p at least
1e-4 away from every cumulative probability, so that float rounding cannot move a token across the
boundary. 07.4 hands the learner's function a stand-in for the model that forwards every call and records
how many tokens each call fed and how many the caches held: besides the tokens, the check wants one prefill
of the whole prompt and then one token per call, always with the caches, n calls in all for n new tokens
(feeding more than one token to filled caches raises at once, naming the mistake); one prompt has
block_size - 4 tokens and n = 5, where a call after the last token would run past block_size. 07.1 and 07.3
ask for new logits: returning the input tensor, or changing it, fails (`fresh`). Tolerances: 1e-6 times
max(1, |expected|) on logits and scores, 1e-6 relative on gigabytes; token ids, indices and which logits
are -inf must be equal. The `*_MISTAKES` lists pair simulated wrong solutions with the hint naming each.
"""

from __future__ import annotations

import numbers
import random
from collections.abc import Callable

import torch

from minillm.grading import answers
from minillm.grading.answers import d64, generator, randn64
from minillm.grading.core import Exercise, Wrong, short

# ---------------------------------------------------------------------------------------------------
# each section below defines its simulated wrong solutions (deliberately wrong: never references) next to
# the list that pairs each one with the hint naming it; EXERCISES at the end declares the exercises

NEG_INF = float("-inf")

# ---------------------------------------------------------------------------------------------------
# helpers


def _logits_out(got, args) -> tuple:
    return answers.tensor_answer(got, tuple(args[0].shape), "the logits' shape (B, V), the removed tokens set to -inf")


def _ints(got, what: str) -> list[int]:
    """A 1-D integer tensor or a list of ints -> list of int; else Wrong."""
    if isinstance(got, torch.Tensor):
        got = got.detach()
        if got.is_floating_point() or got.is_complex() or got.dtype == torch.bool:
            raise Wrong(f"{what} must be integers (token ids / indices), got a tensor of dtype {got.dtype}: use // "
                        "for integer division, or argmax / topk indices")
        if got.dim() != 1:
            raise Wrong(f"{ONE_D}. {what} has shape {tuple(got.shape)}")
        return [int(v) for v in got.tolist()]
    try:
        items = list(got)
    except TypeError as e:
        raise Wrong(f"{what} must be a tensor or list of ints, got {type(got).__name__} {got!r:.40}") from e
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items):
        raise Wrong(f"{what} must be integers, got {short(items, 40)}")
    return [int(v) for v in items]


ONE_D = "beam_idx and token_idx are 1-D tensors of shape (num_beams,), one entry per kept candidate"

# hand-worked logits of 07.1 and 07.3
HAND_TOPK = [[1.0, 3.0, -0.5, 2.0, 0.0], [0.5, -1.0, 2.0, 1.5, -2.0]]
HAND_PROBS = [0.1, 0.4, 0.05, 0.3, 0.15]  # 07.2: logits = log(probs)
HAND_REP = [2.0, -1.0, 0.5, -3.0, 1.0]

# ---------------------------------------------------------------------------------------------------
# 07.1 top-k


def _kth(logits, k):
    return torch.topk(logits, k, dim=-1).values[:, -1:]


def topk_keeps_k_plus_1(logits, k):
    k1 = min(k + 1, logits.shape[-1])
    return logits.masked_fill(logits < _kth(logits, k1), NEG_INF)


def topk_smallest(logits, k):
    kth = torch.topk(logits, k, dim=-1, largest=False).values[:, -1:]
    return logits.masked_fill(logits > kth, NEG_INF)


def topk_whole_batch(logits, k):
    kth = torch.topk(logits.flatten(), k).values[-1]  # one threshold for every row
    return logits.masked_fill(logits < kth, NEG_INF)


def topk_in_place(logits, k):
    return logits.masked_fill_(logits < _kth(logits, k), NEG_INF)  # fills the caller's tensor


def topk_same_object_full_k(logits, k):
    if k == logits.shape[-1]:
        return logits  # nothing to remove: hands back the caller's tensor itself
    return logits.masked_fill(logits < _kth(logits, k), NEG_INF)


NEW_LOGITS_TOPK = ("return a NEW tensor and leave the caller's logits unchanged: fill out of place (masked_fill, not "
                   "masked_fill_) and return a copy (clone) also when nothing is removed (k = V)")

TOPK_MISTAKES = [
    (topk_keeps_k_plus_1, "you keep k + 1 tokens: keep the k largest, i.e. the logits >= the k-th largest "
                                "(torch.topk(logits, k).values[:, -1:])"),
    (lambda logits, k: logits.masked_fill(logits <= _kth(logits, k), NEG_INF),  # the k-th itself is dropped
     "you keep only k - 1 tokens: the k-th largest itself stays, so drop the logits "
     "STRICTLY below it (logits < kth, not <=)"),
    (lambda logits, k: logits.masked_fill(logits < _kth(logits, k), 0.0),
     "set the removed logits to -inf, not 0: exp(0) = 1 still gives them probability "
     "after the softmax"),
    (topk_smallest, "keep the k LARGEST logits (the most likely tokens); yours keeps the smallest"),
    (topk_whole_batch, "each row is its own distribution: take the k-th largest per row "
                             "(topk(logits, k, dim=-1).values[:, -1:]), not over the whole batch"),
    (lambda logits, k: torch.softmax(logits.masked_fill(logits < _kth(logits, k), NEG_INF), dim=-1),
     "return filtered LOGITS (the removed ones -inf), not probabilities: the softmax "
     "comes later, in sampling"),
    (topk_in_place, NEW_LOGITS_TOPK),
    (topk_same_object_full_k, NEW_LOGITS_TOPK),
]


def _cases_top_k() -> list:
    from minillm.sampling import top_k_filter

    hand = d64(HAND_TOPK)
    inputs = [(hand, 2), (hand, 1), (hand, 5)]
    gen = generator()
    for (B, V), k in [((3, 10), 3), ((1, 50), 7), ((4, 6), 6), ((2, 20), 1), ((5, 8), 4)]:
        inputs.append((randn64(B, V, gen=gen, scale=2.0), k))
    return [(args, _logits_out(top_k_filter(*args), args)) for args in inputs]


# ---------------------------------------------------------------------------------------------------
# 07.2 top-p


def _sorted_probs(logits, descending=True):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=descending)
    return sorted_logits, order, torch.softmax(sorted_logits, dim=-1)


def _unsort(drop_sorted, order):
    return torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)


def topp_drops_crossing_token(logits, p):
    _, order, probs = _sorted_probs(logits)
    drop = probs.cumsum(-1) >= p  # the token that brings the mass to p is dropped
    drop[:, 0] = False
    return logits.masked_fill(_unsort(drop, order), NEG_INF)


def topp_top_not_kept(logits, p):
    _, order, probs = _sorted_probs(logits)
    drop = probs.cumsum(-1) >= p  # when the top token alone holds p, nothing is left
    return logits.masked_fill(_unsort(drop, order), NEG_INF)


def topp_from_least_likely(logits, p):
    _, order, probs = _sorted_probs(logits, descending=False)
    drop = probs.cumsum(-1) - probs >= p
    drop[:, 0] = False
    return logits.masked_fill(_unsort(drop, order), NEG_INF)


def topp_on_logits(logits, p):
    sorted_logits, order, _ = _sorted_probs(logits)
    drop = sorted_logits.cumsum(-1) - sorted_logits >= p  # logits summed as if they were probabilities
    drop[:, 0] = False
    return logits.masked_fill(_unsort(drop, order), NEG_INF)


def topp_mask_not_unsorted(logits, p):
    _, _, probs = _sorted_probs(logits)
    drop = probs.cumsum(-1) - probs >= p
    drop[:, 0] = False
    return logits.masked_fill(drop, NEG_INF)  # a mask in sorted order applied to vocabulary order


def topp_returns_sorted(logits, p):
    sorted_logits, _, probs = _sorted_probs(logits)
    drop = probs.cumsum(-1) - probs >= p
    drop[:, 0] = False
    return sorted_logits.masked_fill(drop, NEG_INF)  # right tokens, but in sorted order


TOPP_MISTAKES = [
    (topp_drops_crossing_token, "the token whose probability brings the total to p or past it is KEPT: keep "
                                      "a token when the mass of the tokens ranked ABOVE it is < p (cumsum - probs "
                                      "< p), not when the cumsum including it is < p"),
    (topp_top_not_kept, "the most likely token is always kept (when it alone holds more than p, it is the "
                              "whole nucleus); yours can leave a row with nothing but -inf. Keep a token when the "
                              "mass of the tokens ranked above it is < p"),
    (topp_from_least_likely, "accumulate from the MOST likely token down (sort descending): the nucleus is "
                                   "the top of the distribution"),
    (topp_on_logits, "p is a probability mass: take the softmax of the sorted logits before the cumulative "
                           "sum; summing logits means nothing"),
    (topp_mask_not_unsorted, "your mask is in SORTED order: map it back to vocabulary order before applying "
                                   "it (drop = drop_sorted.scatter(-1, order, drop_sorted), order from torch.sort)"),
    (topp_returns_sorted, "return the logits in vocabulary order (column t is token t): yours are the sorted "
                                "logits; fill -inf into the original logits at the dropped tokens"),
]


def _mass_above(logits: torch.Tensor) -> torch.Tensor:
    probs = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True).values
    return probs.cumsum(-1) - probs


def _safe_p(logits: torch.Tensor, gen: torch.Generator) -> float:
    """A p in [0.05, 0.95] at least 1e-4 from every cumulative mass of every row (no float boundary cases)."""
    above = _mass_above(logits).flatten()
    while True:
        p = 0.05 + 0.9 * torch.rand((), generator=gen, dtype=torch.float64).item()
        if (above - p).abs().min().item() > 1e-4:
            return round(p, 4)


def _cases_top_p() -> list:
    from minillm.sampling import top_p_filter

    hand = torch.log(d64([HAND_PROBS]))
    inputs = [(hand, 0.75), (hand, 0.5), (hand, 0.3)]
    gen = generator()
    for B, V, scale in [(3, 10, 1.0), (2, 30, 2.0), (4, 6, 0.5), (1, 100, 3.0), (2, 8, 4.0)]:
        logits = randn64(B, V, gen=gen, scale=scale)
        inputs.append((logits, _safe_p(logits, gen)))
    return [(args, _logits_out(top_p_filter(*args), args)) for args in inputs]


# ---------------------------------------------------------------------------------------------------
# 07.3 repetition penalty


def _seen(logits, prev_ids):
    return torch.zeros_like(logits, dtype=torch.bool).scatter(-1, prev_ids, True)


def _counts(logits, prev_ids):
    return torch.zeros_like(logits).scatter_add(-1, prev_ids, torch.ones_like(prev_ids, dtype=logits.dtype))


def rep_per_occurrence(logits, prev_ids, theta):
    factor = theta ** _counts(logits, prev_ids)
    return torch.where(logits > 0, logits / factor, logits * factor)


def rep_unseen(logits, prev_ids, theta):
    penalised = torch.where(logits > 0, logits / theta, logits * theta)
    return torch.where(_seen(logits, prev_ids), logits, penalised)


def rep_shared_history(logits, prev_ids, theta):
    seen = torch.zeros(logits.shape[-1], dtype=torch.bool)
    seen[prev_ids.flatten()] = True  # one set of tokens for every row
    penalised = torch.where(logits > 0, logits / theta, logits * theta)
    return torch.where(seen, penalised, logits)


def rep_in_place(logits, prev_ids, theta):
    picked = logits.gather(-1, prev_ids)
    return logits.scatter_(-1, prev_ids, torch.where(picked > 0, picked / theta, picked * theta))  # the caller's


NEW_LOGITS_REP = ("return NEW logits and leave the caller's tensor unchanged: compute out of place (torch.where, "
                  "scatter without the trailing _), or clone the logits before changing them")

REP_MISTAKES = [
    (lambda logits, prev_ids, theta: torch.where(_seen(logits, prev_ids), logits / theta, logits),
     "dividing a NEGATIVE logit by theta brings it closer to 0 and makes the token MORE "
     "likely: CTRL divides positive logits by theta and multiplies negative ones by theta"),
    (lambda logits, prev_ids, theta:
         torch.where(_seen(logits, prev_ids), torch.where(logits > 0, logits * theta, logits / theta), logits),
     "the two cases are swapped: positive logits are DIVIDED by theta, negative ones "
     "multiplied (both lower the token's probability when theta > 1)"),
    (rep_per_occurrence, "the penalty is applied once per token, however often it occurred (theta, not "
                               "theta ** count): count-based penalties are the frequency penalty's job"),
    (rep_unseen, "penalise the tokens that DID occur in prev_ids, not the others"),
    (rep_shared_history, "each row has its own history: penalise in row b only the tokens of prev_ids[b]"),
    (rep_in_place, NEW_LOGITS_REP),
]


def _rep_out(got, args) -> tuple:
    return answers.tensor_answer(got, tuple(args[0].shape), "the logits' shape (B, V)")


def _cases_repetition_penalty() -> list:
    from minillm.sampling import repetition_penalty

    hand = d64([HAND_REP])
    inputs = [(hand, torch.tensor([[0, 1, 1, 3]]), 2.0),
              (hand.repeat(2, 1), torch.tensor([[0, 1, 1, 3], [4, 4, 2, 2]]), 2.0)]
    gen = generator()
    for B, V, T, theta in [(3, 12, 6, 1.3), (1, 30, 20, 1.2), (4, 8, 1, 0.8), (2, 16, 10, 1.0), (2, 10, 15, 3.0)]:
        inputs.append((randn64(B, V, gen=gen, scale=2.0), torch.randint(V, (B, T), generator=gen), theta))
    return [(args, _rep_out(repetition_penalty(*args), args)) for args in inputs]


# ---------------------------------------------------------------------------------------------------
# 07.4 greedy decoding with a KV cache


def _greedy(model, idx, n, *, first_position=False, stale=False, extra_call=False):
    """Greedy decoding with one deviation: the first token from position 0, the prompt's last token fed again,
    or one more call after the last token."""
    caches = model.make_kv_caches()
    logits, _ = model(idx, kv_caches=caches)
    out = idx
    for step in range(n):
        row = logits[:, 0] if first_position and step == 0 else logits[:, -1]
        nxt = row.argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], dim=1)
        if step < n - 1 or extra_call:
            logits, _ = model(idx[:, -1:] if stale else nxt, kv_caches=caches)
    return out


N_CALLS = ("call the model exactly n times for n new tokens: the prefill gives the first one, then one single-token "
           "call for each further token, and none after the last")


GEN_MISTAKES = [
    (lambda model, idx, n: _greedy(model, idx, n, first_position=True),
     "take the next token from the LAST position's logits, logits[:, -1, :]: at the "
     "prefill logits[:, 0] predicts what follows the FIRST prompt token"),
    (lambda model, idx, n: _greedy(model, idx, n, stale=True),
     "feed the token you just chose (shape (B, 1)) at each step, not the prompt's last "
     "token again"),
    (lambda model, idx, n: _greedy(model, idx, n, extra_call=True), N_CALLS),
]


class CacheMisuse(Exception):
    """Raised by the stand-in model of 07.4 when tokens are fed to filled caches more than one at a time."""


class _Recorder:
    """Stands in for the model in 07.4: forwards every call (without gradients) and records, per call, the number
    of tokens fed and the number the caches already held (None: no caches passed). run_cases deep-copies the
    arguments for each call: the copy is a fresh recorder over the same model, and `latest` points at it."""

    def __init__(self, model, label: str):
        self.model, self.label, self.calls = model, label, []
        self.latest = self

    def __deepcopy__(self, memo):
        fresh = _Recorder(self.model, self.label)
        self.latest = fresh
        return fresh

    def __call__(self, idx, *args, kv_caches=None, **kwargs):
        cached = len(kv_caches[0]) if kv_caches else None
        fed = idx.shape[1] if isinstance(idx, torch.Tensor) and idx.dim() == 2 else None
        if cached and fed is not None and fed > 1:
            raise CacheMisuse(f"you fed {fed} tokens while the caches already hold {cached}: after the prefill feed "
                              "only the newest token, shape (B, 1); the caches have the keys and values of all the "
                              "others (re-feeding them puts them at the wrong positions)")
        self.calls.append((fed, cached))
        with torch.no_grad():
            return self.model(idx, *args, kv_caches=kv_caches, **kwargs)

    forward = __call__

    def make_kv_caches(self, max_len: int | None = None):
        return self.model.make_kv_caches(max_len)

    def eval(self):
        self.model.eval()
        return self

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def __getattr__(self, name):
        model = self.__dict__.get("model")
        if model is None:
            raise AttributeError(name)
        return getattr(model, name)

    def __repr__(self) -> str:
        return f"<{self.label}>"


def _gen_out(got, args) -> tuple:
    rec, idx, n = args
    B, T = idx.shape
    if isinstance(got, (tuple, list)) and len(got) == 2 and isinstance(got[0], torch.Tensor) and got[0].dim() == 2:
        raise Wrong("return only the token ids (B, T + n), not a pair")
    if not isinstance(got, torch.Tensor):
        try:
            got = torch.as_tensor(got)
        except (TypeError, ValueError, RuntimeError) as e:
            raise Wrong(f"return a tensor of token ids (B, T + n), got {type(got).__name__} {got!r:.40}") from e
    if got.is_floating_point() or got.dtype == torch.bool:
        raise Wrong(f"return token ids (an integer tensor, as argmax gives), got dtype {got.dtype}")
    if tuple(got.shape) != (B, T + n):
        raise Wrong(f"return the prompt followed by the {n} new tokens, shape (B, T + n) = {(B, T + n)}; got "
                    f"{tuple(got.shape)}")
    if not torch.equal(got[:, :T].cpu().long(), idx):
        raise Wrong("the output must start with the prompt idx, unchanged, followed by the new tokens")
    calls = rec.latest.calls
    if not calls:
        raise Wrong("call the model you were given: logits, _ = model(idx, kv_caches=caches)")
    if any(cached is None for _, cached in calls):
        raise Wrong("pass kv_caches=caches to every call of the model (caches = model.make_kv_caches(), made once "
                    "before the loop); without them each step recomputes the whole sequence, which is what the cache "
                    "is there to avoid")
    if sum(cached == 0 for _, cached in calls) > 1:
        raise Wrong("make the caches once, before the loop: a call with empty caches after the prefill starts over "
                    "at position 0")
    if calls[0][0] != T:
        raise Wrong(f"feed the whole prompt ({T} tokens) in the first call, the prefill; yours fed {calls[0][0]} "
                    "token(s)")
    if len(calls) != n:
        raise Wrong(f"{N_CALLS}. The model ran {len(calls)} times for {n} new tokens")
    return (B, T + n), tuple(got.flatten().tolist())


def _tiny_models() -> list[tuple[torch.nn.Module, str]]:
    from minillm.model import GPT, GPTConfig

    out = []
    for preset in ("tiny", "tiny-llama"):
        model = GPT(GPTConfig.preset(preset, init_std=0.3)).double().eval()  # 0.3: varied greedy tokens
        out.append((model, f"{preset} GPT, float64"))
    return out


def _cases_greedy_generate() -> list:
    from minillm.generate import generate
    from minillm.sampling import SamplingParams

    with torch.random.fork_rng(devices=[]):  # building the models must not move the learner's global RNG
        torch.manual_seed(random.randrange(2**31))
        (gpt, gpt_label), (llama, llama_label) = _tiny_models()
    gen = generator()
    cases = []
    for (model, label), (B, T), n in [((gpt, gpt_label), (2, 5), 6), ((llama, llama_label), (1, 3), 8),
                                      ((gpt, gpt_label), (3, 2), 1), ((llama, llama_label), (2, 7), 4),
                                      ((gpt, gpt_label), (1, 4), 7),
                                      # the last new token sits at position block_size: no call may feed it
                                      ((llama, llama_label), (2, llama.cfg.block_size - 4), 5)]:
        idx = torch.randint(model.cfg.vocab_size, (B, T), generator=gen)
        if T + n <= model.cfg.block_size:
            want = generate(model, idx, SamplingParams(temperature=0.0, max_tokens=n))
        else:  # generate refuses T + n > block_size; the last token needs no call at its own position
            head = generate(model, idx, SamplingParams(temperature=0.0, max_tokens=n - 1))  # (B, block_size)
            with torch.no_grad():
                logits, _ = model(head)
            want = torch.cat([head, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
        cases.append(((_Recorder(model, label), idx, n), ((B, T + n), tuple(want.flatten().tolist()))))
    return cases


def _one_thread(ex: Exercise, fn: Callable) -> tuple[bool, str]:
    """A 64-wide model runs several times faster on one thread; the learner's setting is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return ex.run_cases(fn)
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------
# 07.5 memory to serve a model


def _memory(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch, *, unit=1e9, size=None, kv_factor=2,
            kv=True, use_batch=True, layers=True):
    size = dtype.itemsize if size is None else size
    kv_bytes = (kv_factor * (n_layer if layers else 1) * n_kv_head * head_dim * tokens * (batch if use_batch else 1)
                * size) if kv else 0
    return (n_params * size + kv_bytes) / unit


MEM_MISTAKES = [
    (lambda n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch:
         _memory(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch, size=torch.finfo(dtype).bits),
     "torch.finfo(dtype).bits counts bits; bytes per number = dtype.itemsize (bits // 8)"),
    (lambda n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch:
         _memory(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch, unit=2 ** 30),
     "the answer is in GB = 10^9 bytes (what '7B x 2 bytes = 14 GB' means), not GiB = 2^30 bytes"),
    (lambda n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch:
         _memory(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch, kv_factor=1),
     "the KV cache holds the keys AND the values: 2 * n_layer * n_kv_head * head_dim per "
     "token"),
    (lambda n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch:
         _memory(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch, kv=False),
     "add the KV cache: 2 * n_layer * n_kv_head * head_dim * tokens * batch numbers"),
    (lambda n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch:
         _memory(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch, use_batch=False),
     "multiply the KV cache by batch: each sequence has its own keys and values"),
    (lambda n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch:
         _memory(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch, layers=False),
     "multiply the KV cache by n_layer: every layer caches its own keys and values"),
]


def _gb_out(got, args) -> float | str:
    return answers.canonical(answers.number(got, "gigabytes"), significant=10)


def _close_gb(got, want, args) -> bool:
    return answers.same_number(got, want, lambda w: answers.TOL * abs(w))


def _cases_inference_memory() -> list:
    from minillm.generate import inference_memory

    def ref(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch) -> float:
        size = dtype.itemsize
        return inference_memory(n_params, size, n_layer=n_layer, n_kv_head=n_kv_head, head_dim=head_dim,
                                tokens=tokens, batch=batch, kv_bytes=size)["total"] / 1e9

    f16, bf16, f32, f8 = torch.float16, torch.bfloat16, torch.float32, torch.float8_e4m3fn
    cases = [((7e9, f16, 32, 32, 128, 0, 1), 14.0), ((6_738_415_616, bf16, 32, 32, 128, 4096, 1), 15.62431488),
             ((68_976_648_192, bf16, 80, 8, 128, 4096, 8), 148.690714624),
             ((6_738_415_616, f32, 32, 32, 128, 4096, 1), 31.24862976)]
    more = [(124_439_808, f32, 12, 12, 64, 1024, 4), (8_030_261_248, bf16, 32, 8, 128, 8192, 16),
            (1.5e9, f8, 28, 2, 128, 32768, 2), (1000, f16, 2, 1, 4, 10, 3), (13e9, f16, 40, 40, 128, 2048, 5)]
    cases += [(args, ref(*args)) for args in more]
    return cases


# ---------------------------------------------------------------------------------------------------
# 07.6 one step of beam search


def _decode(flat, V):
    return flat // V, flat % V


def beam_no_past(scores, logp, num_beams):
    top = torch.topk(logp.flatten(), num_beams)  # ranked by the new token alone
    beam, token = _decode(top.indices, logp.shape[-1])
    return beam, token, scores[beam] + logp[beam, token]


def beam_per_row_topk(scores, logp, num_beams):
    total = scores[:, None] + logp
    top = torch.topk(total, min(num_beams, logp.shape[-1]), dim=-1)  # (n_live, k) per beam, in beam order
    beam = torch.arange(logp.shape[0])[:, None].expand_as(top.indices).flatten()[:num_beams]
    return beam, top.indices.flatten()[:num_beams], top.values.flatten()[:num_beams]


def beam_per_beam_best(scores, logp, num_beams):
    best = (scores[:, None] + logp).max(dim=-1)  # each beam extends by its own best token only
    order = torch.argsort(best.values, descending=True)[:num_beams]
    return order, best.indices[order], best.values[order]


def beam_wrong_divisor(scores, logp, num_beams):
    n_live = logp.shape[0]
    top = torch.topk((scores[:, None] + logp).flatten(), num_beams)
    return top.indices % n_live, top.indices // n_live, top.values  # decoded with n_live instead of V


def beam_lowest(scores, logp, num_beams):
    top = torch.topk((scores[:, None] + logp).flatten(), num_beams, largest=False)
    beam, token = _decode(top.indices, logp.shape[-1])
    return beam, token, top.values


def beam_probabilities_multiplied(scores, logp, num_beams):
    total = torch.exp(scores)[:, None] * torch.exp(logp)  # right ranking, but a probability, not a log-prob
    top = torch.topk(total.flatten(), num_beams)
    beam, token = _decode(top.indices, logp.shape[-1])
    return beam, token, top.values


def beam_column_indices(scores, logp, num_beams):
    top = torch.topk((scores[:, None] + logp).flatten(), num_beams)
    beam, token = _decode(top.indices, logp.shape[-1])
    return beam[:, None], token[:, None], top.values  # (num_beams, 1) instead of (num_beams,)


BEAM_MISTAKES = [
    (beam_no_past, "rank the candidates by the beam's TOTAL log-probability scores[b] + logp[b, t], not by "
                         "the new token's log-probability alone"),
    (beam_per_row_topk, "take the top num_beams over ALL n_live x V candidates at once (flatten, then topk): "
                              "a per-beam topk read in beam order favours the first beams"),
    (beam_per_beam_best, "compare all n_live x V candidates together: one beam may get several children and "
                               "another none; extending each beam by its own best token is not beam search"),
    (beam_wrong_divisor, "a flat index f over the (n_live, V) candidates decodes as beam f // V, token f % V "
                               "(V = logp.shape[-1], not the number of beams)"),
    (beam_lowest, "keep the HIGHEST total log-probabilities (closest to 0), not the lowest"),
    (beam_probabilities_multiplied, "new_scores are log-probabilities: scores[b] + logp[b, t] (adding logs "
                                          "multiplies the probabilities without underflowing)"),
    (beam_column_indices, ONE_D),
]

HAND_BEAM_SCORES = [-1.0, -0.5]
HAND_BEAM_PROBS = [[0.6, 0.3, 0.1], [0.5, 0.45, 0.05]]


def _ref_beam_step(scores: torch.Tensor, logp: torch.Tensor, num_beams: int):
    """The candidate selection of minillm.generate.beam_search (without eos): topk of the flattened totals."""
    V = logp.shape[-1]
    top = torch.topk((scores[:, None] + logp).flatten(), num_beams)
    return top.indices // V, top.indices % V, top.values


def _beam_out(got, args) -> tuple:
    num_beams = args[2]
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        raise Wrong(f"return a triple (beam_idx, token_idx, new_scores), got {type(got).__name__} {short(got, 40)}")
    beam, token = _ints(got[0], "beam_idx"), _ints(got[1], "token_idx")
    scores = answers.tensor_answer(got[2], (num_beams,), "new_scores: one total log-probability per kept candidate")
    if len(beam) != num_beams or len(token) != num_beams:
        raise Wrong(f"keep num_beams = {num_beams} candidates: beam_idx and token_idx need {num_beams} entries, got "
                    f"{len(beam)} and {len(token)}")
    return tuple(beam), tuple(token), scores


def _same_beams(got, want, args) -> bool:
    return got[0] == want[0] and got[1] == want[1] and answers.close(got[2], want[2])


def _cases_beam_step() -> list:
    scores, logp = d64(HAND_BEAM_SCORES), torch.log(d64(HAND_BEAM_PROBS))
    inputs = [(scores, logp, 2), (scores, logp, 3)]
    gen = generator()
    for n_live, V, num_beams in [(1, 6, 3), (4, 10, 4), (3, 7, 3), (2, 50, 2), (1, 20, 5), (5, 4, 5)]:
        lp = torch.log_softmax(randn64(n_live, V, gen=gen, scale=2.0), dim=-1)
        s = -5.0 * torch.rand(n_live, generator=gen, dtype=torch.float64) if n_live > 1 else torch.zeros(1).double()
        inputs.append((s, lp, num_beams))
    return [(args, _beam_out(_ref_beam_step(*args), args)) for args in inputs]


EXERCISES = (
    Exercise("07.1", "Top-k filter", 1, cases=_cases_top_k, name="top_k_filter", normalize=_logits_out,
             same=answers.close, mistakes=TOPK_MISTAKES, fresh=NEW_LOGITS_TOPK),
    Exercise("07.2", "Top-p (nucleus) filter", 2, cases=_cases_top_p, name="top_p_filter", normalize=_logits_out,
             same=answers.close, mistakes=TOPP_MISTAKES),
    Exercise("07.3", "Repetition penalty (CTRL)", 1, cases=_cases_repetition_penalty, name="repetition_penalty",
             normalize=_rep_out, same=answers.close, mistakes=REP_MISTAKES, fresh=NEW_LOGITS_REP),
    Exercise("07.4", "Greedy decoding with a KV cache", 2, cases=_cases_greedy_generate, name="greedy_generate",
             normalize=_gen_out, mistakes=GEN_MISTAKES, check=_one_thread),
    Exercise("07.5", "Memory to serve a model", 1, cases=_cases_inference_memory, name="inference_memory_gb",
             normalize=_gb_out, same=_close_gb, mistakes=MEM_MISTAKES),
    Exercise("07.6", "One step of beam search", 2, cases=_cases_beam_step, name="beam_step", normalize=_beam_out,
             same=_same_beams, mistakes=BEAM_MISTAKES),
)
