"""Checker of chapter 9's prompt-methods exercise, to be folded into minillm/grading/ch09.py.

| id | the learner writes | compared with |
|---|---|---|
| 09.7 | `prefix_attention(q, k, v, prefix_k, prefix_v)`: a prefix, then causal real keys | `minillm.attention.sdpa` |

The reference is `sdpa` over the prefix keys followed by the real ones with a bottom-right causal mask, what
`minillm.peft.prefix.PrefixModel` makes every attention layer compute.

The hand-worked case comes first (all keys equal, so the weights are uniform and the answer is a running mean the
notebook writes out), then random float64 cases: batch 1 to 3, heads 1 to 4, head dims 1 to 16, T from 1 to 7,
P from 0 (no prefix: plain causal attention) to 6, P > T and P < T, scores spread enough that a missing
1/sqrt(D) or a wrong mask moves the output. Tolerance: 1e-5 times the largest expected |value| (at least 1) on
every value, so float32 arithmetic passes. `PREFIX_MISTAKES` pairs simulated wrong solutions with the hint naming
each.
"""

from __future__ import annotations

import math
import random

import torch

from minillm.grading import answers
from minillm.grading.answers import d64, generator, randn64
from minillm.grading.core import Exercise

TOL = 1e-5
# the notebook's worked example: P = 2, T = 3, D = 1, every key 0 (uniform weights over the visible keys)
HAND_PREFIX_V = [6.0, 0.0]
HAND_V = [3.0, 1.0, 5.0]
HAND_OUT = [3.0, 2.5, 3.0]  # (6 + 0 + 3) / 3, (6 + 0 + 3 + 1) / 4, (6 + 0 + 3 + 1 + 5) / 5


def _close(got: tuple, want: tuple, args: tuple = ()) -> bool:
    top = max([abs(v) for v in want[1] if not isinstance(v, str)] + [1.0])
    return answers.same_values(got, want, lambda b: TOL * top)


def _out(got, args) -> tuple:
    q = args[0]
    return answers.tensor_answer(got, tuple(q.shape), "one output vector per query: the shape of q, (B, H, T, D)")


def _reference(q, k, v, pk, pv):
    from minillm.attention import sdpa

    return sdpa(q, torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2), is_causal=True)


def _hand_case() -> tuple:
    q = torch.ones(1, 1, 3, 1, dtype=torch.float64)
    k = torch.zeros(1, 1, 3, 1, dtype=torch.float64)
    pk = torch.zeros(1, 1, 2, 1, dtype=torch.float64)
    v = d64(HAND_V).view(1, 1, 3, 1)
    pv = d64(HAND_PREFIX_V).view(1, 1, 2, 1)
    return q, k, v, pk, pv


def _cases() -> list:
    hand = _hand_case()
    cases = [(hand, ((1, 1, 3, 1), tuple(HAND_OUT)))]
    gen = generator()
    shapes = [(1, 1, 4, 2, 8), (2, 3, 3, 5, 4), (3, 2, 7, 1, 16), (1, 4, 5, 0, 6), (2, 1, 1, 3, 1), (1, 2, 6, 6, 3),
              (2, 2, 2, 4, 5)]
    random.shuffle(shapes)
    for B, H, T, P, D in shapes:
        # entries of std 1.25: scaled scores q . k / sqrt(D) of std ~1.5 (softmax neither uniform nor one-hot),
        # unscaled ones sqrt(D) times larger, so the scaling and the masks both show
        scale = 1.25
        q, k = randn64(B, H, T, D, gen=gen, scale=scale), randn64(B, H, T, D, gen=gen, scale=scale)
        pk = randn64(B, H, P, D, gen=gen, scale=scale)
        v, pv = randn64(B, H, T, D, gen=gen), randn64(B, H, P, D, gen=gen, shift=1.0)
        args = (q, k, v, pk, pv)
        cases.append((args, _out(_reference(*args), args)))
    return cases


# ---------------------------------------------------------------------------------------------------
# simulated mistakes


def _attend(q, keys, values, allowed, scale=True):
    """softmax over the allowed keys of q keys^T (/ sqrt(D)), times values; allowed (T, S) bool."""
    s = q @ keys.transpose(-2, -1)
    if scale:
        s = s / math.sqrt(q.shape[-1])
    s = s.masked_fill(~allowed, float("-inf"))
    return torch.softmax(s, dim=-1) @ values


def _masks(T: int, P: int):
    i = torch.arange(T)[:, None]
    j = torch.arange(P + T)[None, :]
    return i, j


def no_scaling(q, k, v, pk, pv):
    T, P = q.shape[2], pk.shape[2]
    i, j = _masks(T, P)
    return _attend(q, torch.cat([pk, k], 2), torch.cat([pv, v], 2), j <= i + P, scale=False)


def top_left_causal(q, k, v, pk, pv):
    T, P = q.shape[2], pk.shape[2]
    i, j = _masks(T, P)
    return _attend(q, torch.cat([pk, k], 2), torch.cat([pv, v], 2), j <= i)  # query t sees only t + 1 keys


def ignores_prefix(q, k, v, pk, pv):
    T = q.shape[2]
    i, j = _masks(T, 0)
    return _attend(q, k, v, j <= i)


def not_causal(q, k, v, pk, pv):
    T, P = q.shape[2], pk.shape[2]
    return _attend(q, torch.cat([pk, k], 2), torch.cat([pv, v], 2), torch.ones(T, P + T, dtype=torch.bool))


def prefix_causal_too(q, k, v, pk, pv):
    # the prefix keys treated as if they were the first P queries' own tokens: query t sees prefix keys 0..t only
    T, P = q.shape[2], pk.shape[2]
    i, j = _masks(T, P)
    allowed = torch.where(j < P, j <= i, j - P <= i)
    return _attend(q, torch.cat([pk, k], 2), torch.cat([pv, v], 2), allowed)


def two_softmaxes(q, k, v, pk, pv):
    T, P = q.shape[2], pk.shape[2]
    i, j = _masks(T, 0)
    real = _attend(q, k, v, j <= i)
    if P == 0:
        return real
    return real + _attend(q, pk, pv, torch.ones(T, P, dtype=torch.bool))  # each part normalised on its own


PREFIX_MISTAKES = [
    (no_scaling, "divide the scores q . k by sqrt(D), D = the head dimension (q.shape[-1]), before the softmax"),
    (top_left_causal, "every query sees ALL prefix keys, then the real keys up to its own position: with the "
                      "prefix first, query t may attend to the first P + t + 1 keys, not the first t + 1"),
    (ignores_prefix, "the queries also attend to the P prefix keys (prefix_k) and mix in their values (prefix_v)"),
    (not_causal, "a query must not see the real keys after its own position (causal), only every prefix key"),
    (prefix_causal_too, "the prefix is visible to every query: query 0 already sees all P prefix keys (only the "
                        "real keys are masked causally)"),
    (two_softmaxes, "one softmax over the prefix keys and the visible real keys together, so the weights of a "
                    "query sum to 1 over both, not one softmax per part"),
]


PROMPT_EXERCISES = (
    Exercise("09.7", "Attention with a prefix of keys and values", 2, cases=_cases, name="prefix_attention",
             normalize=_out, same=_close, mistakes=PREFIX_MISTAKES),
)
