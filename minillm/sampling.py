"""Turning next-token logits into a choice: greedy, temperature, top-k, top-p, penalties.

Each function takes logits of shape (B, V) (one row per sequence) and returns new logits of the same
shape, with the tokens it rules out set to -inf, so the steps compose; `process_logits` applies them
in the order Hugging Face's `generate` and vLLM use, and `sample` draws (or takes the argmax).

- temperature: logits / T. T -> 0 tends to greedy; T = 1 is the model's own distribution; T > 1 flattens.
- top-k (Fan et al. 2018, arXiv:1805.04833): keep the k largest logits (tokens tied with the k-th are kept).
- top-p, nucleus sampling (Holtzman et al. 2020, arXiv:1904.09751): keep the smallest set of most likely
  tokens whose probabilities add up to at least p (the most likely token is always kept).
- repetition penalty (Keskar et al. 2019, CTRL, arXiv:1909.05858): CTRL divides the logit of every token
  already in the sequence by theta, whatever its sign (which *raises* a negative logit); this module uses
  Hugging Face's sign-aware fix: divide a positive logit by theta, multiply a negative one by theta, so
  theta > 1 makes repeats less likely either way.
- frequency and presence penalties (OpenAI's API): logit - frequency * count - presence * [count > 0].

`SamplingParams` keeps vLLM's field names. Leaves out: min-p, typical and eta sampling, logit bias,
stop strings, beam search (see `minillm.generate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

NEG_INF = float("-inf")


@dataclass
class SamplingParams:
    """How to pick each next token. temperature = 0 means greedy; top_k = 0 and top_p = 1 mean "off"."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    max_tokens: int = 64

    def __post_init__(self):
        if not self.temperature >= 0 or math.isinf(self.temperature):  # `not >=` also catches NaN
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = keep every token), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = keep every token), got {self.top_p}")
        if not 0 < self.repetition_penalty < math.inf:
            raise ValueError(f"repetition_penalty must be > 0 (1 = off, > 1 penalises), got {self.repetition_penalty}")
        if not (math.isfinite(self.frequency_penalty) and math.isfinite(self.presence_penalty)):
            raise ValueError(f"frequency and presence penalties must be finite, got {self.frequency_penalty}, "
                             f"{self.presence_penalty}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def _check_logits(logits: torch.Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (batch, vocab), got {tuple(logits.shape)}; use logits[:, -1, :]")


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, V) -> (B, V): logits / T. T = 0 is greedy and has no distribution: use `sample`, which takes argmax."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 here, got {temperature} (temperature 0 means greedy: use argmax)")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (and any tied with the k-th); the rest become -inf. k = 0: no-op."""
    _check_logits(logits)
    if k <= 0 or k >= logits.size(-1):
        return logits.clone()  # nothing removed, still a new tensor: the caller may fill it in place
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1): the k-th largest value
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus: keep the most likely tokens until their probability reaches p; the rest become -inf.

    A token is kept when the tokens ranked above it hold less than p of the probability, so the kept
    set is the smallest one whose mass is >= p, and the top token is always kept. p = 1: no-op.
    """
    _check_logits(logits)
    if p >= 1.0:
        return logits.clone()  # a new tensor, as on every other path
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    mass_above = torch.cumsum(probs, dim=-1) - probs  # (B, V): probability of the tokens ranked higher
    drop_sorted = mass_above >= p
    drop_sorted[:, 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, NEG_INF)


def token_counts(prev_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, T) token ids -> (B, V) how often each token occurs in each row."""
    if prev_ids.dim() != 2:
        raise ValueError(f"prev_ids must have shape (batch, tokens), got {tuple(prev_ids.shape)}")
    counts = torch.zeros(prev_ids.size(0), vocab_size, dtype=torch.long, device=prev_ids.device)
    return counts.scatter_add_(1, prev_ids, torch.ones_like(prev_ids))


def repetition_penalty(logits: torch.Tensor, prev_ids: torch.Tensor, theta: float) -> torch.Tensor:
    """Repetition penalty on every token seen in prev_ids, with Hugging Face's sign rule: positive logits / theta,
    negative logits * theta (CTRL itself divides every seen logit by theta, whatever its sign)."""
    _check_logits(logits)
    if theta == 1.0 or prev_ids.numel() == 0:
        return logits.clone()  # a new tensor, as on every other path
    seen = token_counts(prev_ids, logits.size(-1)) > 0
    penalised = torch.where(logits > 0, logits / theta, logits * theta)
    return torch.where(seen, penalised, logits)


def frequency_presence_penalty(
    logits: torch.Tensor, prev_ids: torch.Tensor, frequency: float, presence: float
) -> torch.Tensor:
    """OpenAI-style: logit - frequency * (times the token occurred) - presence * (1 if it occurred)."""
    _check_logits(logits)
    if (frequency == 0 and presence == 0) or prev_ids.numel() == 0:
        return logits.clone()  # a new tensor, as on every other path
    counts = token_counts(prev_ids, logits.size(-1)).to(logits.dtype)
    return logits - frequency * counts - presence * (counts > 0).to(logits.dtype)


def process_logits(logits: torch.Tensor, prev_ids: torch.Tensor | None, params: SamplingParams) -> torch.Tensor:
    """Penalties, then temperature, then top-k, then top-p (Hugging Face's order). (B, V) -> (B, V)."""
    _check_logits(logits)
    if prev_ids is not None:
        logits = repetition_penalty(logits, prev_ids, params.repetition_penalty)
        logits = frequency_presence_penalty(logits, prev_ids, params.frequency_penalty, params.presence_penalty)
    if params.greedy:
        return logits  # argmax is unchanged by temperature, top-k and top-p
    logits = apply_temperature(logits, params.temperature)
    logits = top_k_filter(logits, params.top_k)
    return top_p_filter(logits, params.top_p)


def next_token_probs(logits: torch.Tensor, prev_ids: torch.Tensor | None, params: SamplingParams) -> torch.Tensor:
    """(B, V) -> (B, V) the distribution the next token is drawn from (one-hot on the argmax when greedy)."""
    processed = process_logits(logits, prev_ids, params)
    if params.greedy:
        return torch.nn.functional.one_hot(processed.argmax(-1), logits.size(-1)).to(torch.float32)
    return torch.softmax(processed.float(), dim=-1)


def sample(
    logits: torch.Tensor,
    prev_ids: torch.Tensor | None = None,
    params: SamplingParams | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, V) logits -> (B,) next token ids: argmax when temperature = 0, otherwise a draw."""
    params = params or SamplingParams()
    processed = process_logits(logits, prev_ids, params)
    if params.greedy:
        return processed.argmax(dim=-1)
    probs = torch.softmax(processed.float(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
