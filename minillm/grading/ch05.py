"""Checkers of chapter 5 (attention variants), the exercises of exercises/05_attention.ipynb.

| id | the learner writes | compared with |
|---|---|---|
| 05.1 | `attention(q, k, v, mask)`, bool mask (True = may attend) | `minillm.attention.sdpa` (tested against torch's) |
| 05.2 | `causal_mask(T, S)`, bottom-right aligned (S >= T) | `minillm.attention.causal_mask` |
| 05.3 | `gqa_attention(q, k, v)`, H_kv dividing H | `minillm.attention.sdpa` (which repeats k, v with `repeat_kv`) |
| 05.4 | `kv_cache_bytes(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype)` | `kv_cache_bytes_per_token` |
| 05.5 | `flash_forward(q, k, v, block)` -> `(o, lse)`, non-causal | `minillm.flash.flash_attn_forward` |
| 05.6 | `pool_kv_heads(w, n_head, n_kv_head)` | `minillm.attention.mha_to_gqa` (its k_proj weight) |

Hand-worked cases come first (written out in the notebook), then random float64 inputs of several shapes
(05.1-05.3, 05.5, 05.6) or further model sizes (05.4). Every mask used has at least one allowed key per
query, so a plain softmax and the reference (which outputs zeros for a fully masked row) agree. 05.5 also
runs scores of about +-1500, where exp() overflows or underflows float64 unless the running max is
subtracted. Tolerance on tensors: 1e-6 times max(1, |expected|); masks (bool) and integers must be equal.
The `*_MISTAKES` lists pair simulated wrong solutions with the hint naming each.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

from minillm.grading import answers
from minillm.grading.answers import d64, generator, randn64
from minillm.grading.core import Exercise, Wrong

# ---------------------------------------------------------------------------------------------------
# each section below defines its simulated wrong solutions (deliberately wrong: never references) next to
# the list that pairs each one with the hint naming it; EXERCISES at the end declares the exercises

NEG_INF = float("-inf")

# ---------------------------------------------------------------------------------------------------
# helpers


def _int(got, args) -> int:
    return answers.integer(got, "a number of bytes")


def _as_4d(t: torch.Tensor) -> torch.Tensor:
    while t.ndim < 4:
        t = t[None]
    return t


def _random_mask(*shape: int, gen: torch.Generator) -> torch.Tensor:
    """A random bool mask with at least one True in every row (no query without a key)."""
    mask = torch.rand(*shape, generator=gen) < 0.5
    keep = torch.randint(shape[-1], (*shape[:-1], 1), generator=gen)
    return mask.scatter(-1, keep, True)


# hand-worked example of 05.1: D = 4 (sqrt(D) = 2), v = identity so each output row is that query's weights
HAND_Q = [[2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [2.0, 2.0, 0.0, 0.0]]
HAND_K = [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]

# ---------------------------------------------------------------------------------------------------
# 05.1 scaled dot-product attention


def _scores(q, k, scale):
    return (q @ k.transpose(-2, -1)) * scale


def _masked(scores, mask):
    return scores if mask is None else scores.masked_fill(~mask, NEG_INF)


def attn_mask_after_softmax(q, k, v, mask=None):
    w = torch.softmax(_scores(q, k, 1.0 / math.sqrt(q.shape[-1])), dim=-1)
    return (w if mask is None else w.masked_fill(~mask, 0.0)) @ v  # rows no longer sum to 1


def attn_mask_inverted(q, k, v, mask=None):
    s = _scores(q, k, 1.0 / math.sqrt(q.shape[-1]))
    return torch.softmax(s if mask is None else s.masked_fill(mask, NEG_INF), dim=-1) @ v


def attn_mask_inverted_finite(q, k, v, mask=None):
    s = _scores(q, k, 1.0 / math.sqrt(q.shape[-1]))
    return torch.softmax(s if mask is None else s.masked_fill(mask, -1e9), dim=-1) @ v


def attn_mask_added(q, k, v, mask=None):
    s = _scores(q, k, 1.0 / math.sqrt(q.shape[-1]))
    return torch.softmax(s if mask is None else s + mask, dim=-1) @ v  # +1 where allowed


def attn_mask_multiplied(q, k, v, mask=None):
    s = _scores(q, k, 1.0 / math.sqrt(q.shape[-1]))
    return torch.softmax(s if mask is None else s * mask, dim=-1) @ v  # blocked scores become 0, not -inf


MASK_FIX = "use scores.masked_fill(~mask, float('-inf')) before the softmax"
ATTN_MISTAKES = [
    (lambda q, k, v, mask=None: torch.softmax(_masked(_scores(q, k, 1.0), mask), dim=-1) @ v,
     "the scores are not scaled: divide q @ k^T by sqrt(D), D = q.shape[-1] (the head dim)"),
    (lambda q, k, v, mask=None: torch.softmax(_masked(_scores(q, k, 1.0 / q.shape[-1]), mask), dim=-1) @ v,
     "scale by 1 / sqrt(D), not 1 / D"),
    (lambda q, k, v, mask=None: torch.softmax(_masked(_scores(q, k, 1.0 / math.sqrt(k.shape[-2])), mask), dim=-1) @ v,
     "D in 1 / sqrt(D) is the head dimension q.shape[-1], not the number of keys"),
    (lambda q, k, v, mask=None: torch.softmax(_masked(_scores(q, k, 1.0 / math.sqrt(q.shape[-1])), mask), dim=-2) @ v,
     "take the softmax over the keys, dim=-1 (each query's weights sum to 1); "
     "yours normalises over the queries (dim=-2)"),
    (attn_mask_after_softmax, "mask BEFORE the softmax: zeroing weights after it leaves rows that no longer "
                                    f"sum to 1; {MASK_FIX}"),
    (attn_mask_inverted, "mask polarity inverted: True means 'may attend', so block where the mask is "
                               f"False; {MASK_FIX}"),
    (attn_mask_inverted_finite, "mask polarity inverted: True means 'may attend', so block where the mask "
                                      f"is False; {MASK_FIX}"),
    (attn_mask_added, "a boolean mask is not a bias: scores + mask adds 1 to the allowed scores and blocks "
                            f"nothing; {MASK_FIX}"),
    (attn_mask_multiplied, "scores * mask sets blocked scores to 0, and exp(0) = 1 still gives them weight; "
                                 f"{MASK_FIX}"),
]


def _ref_attention(q, k, v, mask):
    from minillm.attention import sdpa

    out = sdpa(_as_4d(q), _as_4d(k), _as_4d(v), mask=mask)
    return out.reshape(*q.shape[:-1], v.shape[-1])


def _attn_out(got, args) -> tuple:
    q, _, v = args[:3]
    return answers.tensor_answer(got, (*q.shape[:-1], v.shape[-1]),
                      "q.shape[:-1] + (v.shape[-1],): one row of v-size per query, softmax(...) @ v")


def _cases_attention() -> list:
    from minillm.attention import causal_mask

    q, k, v = d64(HAND_Q), d64(HAND_K), torch.eye(3, dtype=torch.float64)
    inputs = [(q, k, v, None), (q, k, v, causal_mask(3))]
    gen = generator()
    inputs += [
        (randn64(2, 5, 8, gen=gen), randn64(2, 7, 8, gen=gen), randn64(2, 7, 6, gen=gen), None),
        (randn64(2, 3, 4, 16, gen=gen), randn64(2, 3, 9, 16, gen=gen), randn64(2, 3, 9, 5, gen=gen), causal_mask(4, 9)),
        (randn64(6, 3, gen=gen, scale=2.0), randn64(10, 3, gen=gen), randn64(10, 4, gen=gen),
         _random_mask(6, 10, gen=gen)),
        (randn64(2, 2, 5, 8, gen=gen), randn64(2, 2, 6, 8, gen=gen), randn64(2, 2, 6, 8, gen=gen),
         _random_mask(2, 1, 5, 6, gen=gen)),
        (randn64(3, 2, 4, 4, gen=gen), randn64(3, 2, 7, 4, gen=gen), randn64(3, 2, 7, 3, gen=gen),
         (torch.arange(7) < torch.tensor([7, 3, 1])[:, None])[:, None, None, :]),  # padding: 7, 3, 1 real keys
    ]
    return [(args, _attn_out(_ref_attention(*args), args)) for args in inputs]


# ---------------------------------------------------------------------------------------------------
# 05.2 causal mask, bottom-right aligned


def _ij(T, S):
    return torch.arange(T)[:, None], torch.arange(S)[None, :]


def causal_strict(T, S):
    i, j = _ij(T, S)
    return j < i + (S - T)  # the diagonal (the query itself) is missing


def causal_upper(T, S):
    i, j = _ij(T, S)
    return j >= i + (S - T)  # the future, not the past


def causal_inverted(T, S):
    i, j = _ij(T, S)
    return j > i + (S - T)  # True = blocked (nn.MultiheadAttention's convention)


CAUSAL_MISTAKES = [
    (causal_strict, "off by one: a query attends to itself too, so key j is allowed when j <= i + S - T "
                          "(<=, not <): the diagonal must be True"),
    (lambda T, S: torch.ones(T, S, dtype=torch.bool).tril(),
     "with a cache (S > T) align the diagonal bottom-right: query i is the token at position "
     "i + S - T and sees keys j <= i + S - T; tril(ones(T, S)) aligns it top-left"),
    (lambda T, S: torch.ones(T, S, dtype=torch.bool).tril(diagonal=T - S),
     "the cache shifts the diagonal RIGHT: tril(..., diagonal=S - T), not "
     "diagonal=T - S"),
    (causal_upper, "yours is transposed: query i must see the keys at or BEFORE its position (j <= i + S - T, "
                         "lower triangle), not after it"),
    (causal_inverted, "polarity inverted: True must mean 'may attend' (the convention of "
                            "F.scaled_dot_product_attention); yours marks the blocked keys"),
]


def _bool_mask(got, args) -> tuple:
    T, S = args
    mask = answers.bool_mask(got, (T, S), "(T, S)", "a comparison such as j <= i + S - T gives one")
    return (T, S), tuple(mask.flatten().tolist())


def _cases_causal_mask() -> list:
    from minillm.attention import causal_mask

    sizes = [(3, 3), (2, 4), (1, 5), (4, 6), (1, 1), (5, 5), (6, 7), (3, 10)]
    sizes += [(t, t + random.randrange(0, 9)) for t in (random.randrange(1, 9), random.randrange(1, 9))]
    return [((T, S), _bool_mask(causal_mask(T, S), (T, S))) for T, S in sizes]


# ---------------------------------------------------------------------------------------------------
# 05.3 grouped-query attention


def _sdpa(q, k, v, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return torch.softmax((q @ k.transpose(-2, -1)) * scale, dim=-1) @ v


def gqa_modulo(q, k, v):
    n_rep = q.shape[1] // k.shape[1]
    return _sdpa(q, k.repeat(1, n_rep, 1, 1), v.repeat(1, n_rep, 1, 1))  # query head h reads kv head h % H_kv


def gqa_no_scale(q, k, v):
    n_rep = q.shape[1] // k.shape[1]
    return _sdpa(q, k.repeat_interleave(n_rep, 1), v.repeat_interleave(n_rep, 1), scale=1.0)


GQA_MISTAKES = [
    (gqa_modulo, "query heads grouped wrong: consecutive query heads share a kv head, query head h reads kv "
                       "head h // (H // H_kv); k.repeat(1, n_rep, 1, 1) (or tile) gives h % H_kv instead; use "
                       "k.repeat_interleave(n_rep, dim=1)"),
    (gqa_no_scale, "the scores are not scaled: divide q @ k^T by sqrt(D), as in 05.1"),
]


def _gqa_out(got, args) -> tuple:
    q, _, v = args
    return answers.tensor_answer(got, (*q.shape[:-1], v.shape[-1]), "(B, H, T, D): one output per QUERY head")


def _cases_gqa() -> list:
    from minillm.attention import sdpa

    hand_v = d64([[[1.0, 0.0], [3.0, 0.0]], [[0.0, 10.0], [0.0, 30.0]]])[None]  # (1, 2, 2, 2)
    inputs = [(torch.zeros(1, 4, 1, 2, dtype=torch.float64), torch.zeros(1, 2, 2, 2, dtype=torch.float64), hand_v)]
    gen = generator()
    for B, H, Hkv, T, S, D in [(2, 8, 2, 3, 5, 4), (1, 6, 3, 4, 4, 8), (2, 4, 1, 2, 6, 4), (1, 3, 3, 2, 2, 4),
                               (2, 8, 4, 5, 7, 16)]:
        inputs.append((randn64(B, H, T, D, gen=gen), randn64(B, Hkv, S, D, gen=gen), randn64(B, Hkv, S, D, gen=gen)))
    return [(args, _gqa_out(sdpa(*args), args)) for args in inputs]


# ---------------------------------------------------------------------------------------------------
# 05.4 KV cache size


KV_MISTAKES = [
    (lambda n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype:
         n_layer * n_kv_head * head_dim * seq_len * batch * dtype.itemsize,
     "the factor 2 is missing: the cache holds the keys AND the values"),
    (lambda n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype:
         2 * n_layer * n_head * head_dim * seq_len * batch * dtype.itemsize,
     "use n_kv_head, not n_head: with GQA / MQA only the n_kv_head key/value heads are cached"),
    (lambda n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype:
         2 * n_layer * n_kv_head * head_dim * seq_len * batch * torch.finfo(dtype).bits,
     "torch.finfo(dtype).bits counts bits; bytes per element = bits // 8 (or dtype.itemsize)"),
    (lambda n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype:
         2 * n_layer * n_kv_head * head_dim * seq_len * dtype.itemsize,
     "multiply by batch: each sequence of the batch has its own cache"),
    (lambda n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype:
         2 * n_kv_head * head_dim * seq_len * batch * dtype.itemsize,
     "multiply by n_layer: every layer caches its own keys and values"),
]


def _cases_kv_cache_bytes() -> list:
    from minillm.attention import kv_cache_bytes_per_token

    def ref(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype) -> int:
        item = torch.empty(0, dtype=dtype).element_size()
        return kv_cache_bytes_per_token(n_layer, n_kv_head, head_dim, item) * seq_len * batch

    f16, bf16, f32, f8 = torch.float16, torch.bfloat16, torch.float32, torch.float8_e4m3fn
    cases = [((32, 32, 32, 128, 1, 1, f16), 524_288), ((32, 32, 32, 128, 4096, 1, f16), 2**31),
             ((80, 64, 8, 128, 4096, 8, bf16), 10 * 2**30), ((32, 32, 8, 128, 32768, 1, bf16), 4 * 2**30)]
    more = [(32, 71, 1, 64, 2048, 1, f32), (12, 12, 12, 64, 1024, 4, f32), (32, 32, 8, 128, 8192, 16, f8),
            (3, 6, 2, 5, 7, 3, f16), (2, 4, 4, 8, 1, 2, bf16), (1, 8, 1, 4, 3, 5, f32)]
    cases += [(args, ref(*args)) for args in more]
    return cases


# ---------------------------------------------------------------------------------------------------
# 05.5 FlashAttention forward: online softmax over blocks of keys


def _flash(q, k, v, block, *, rescale_acc=True, rescale_l=True, inverse_alpha=False, normalise_inside=False,
           subtract_max=True, m0=NEG_INF, lse_plus_m=True, scale=None, keepdim=False):
    """One implementation with switches; each switch set the wrong way is one mistake below."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    m = torch.full((*q.shape[:-1], 1), m0, dtype=q.dtype)
    l = torch.zeros_like(m)
    acc = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for j0 in range(0, k.shape[-2], block):
        s = (q @ k[..., j0:j0 + block, :].transpose(-2, -1)) * scale
        if subtract_max:
            m_new = torch.maximum(m, s.amax(-1, keepdim=True))
            alpha = torch.exp(m_new - m) if inverse_alpha else torch.exp(m - m_new)
        else:
            m_new, alpha = torch.zeros_like(m), torch.ones_like(m)
        p = torch.exp(s - m_new)
        l = (alpha * l if rescale_l else l) + p.sum(-1, keepdim=True)
        acc = (alpha * acc if rescale_acc else acc) + p @ v[..., j0:j0 + block, :]
        if normalise_inside:
            acc = acc / l  # the old part is already divided by the old l and is divided again
        m = m_new
    o = acc if normalise_inside else acc / l
    lse = (m + torch.log(l)) if lse_plus_m else torch.log(l)
    return o, (lse if keepdim else lse.squeeze(-1))  # lse (..., T), or (..., T, 1) with keepdim


LSE_KEEPDIM = ("lse holds one number per query, shape (..., T) = q.shape[:-1], not (..., T, 1): drop the kept last "
               "dimension (squeeze(-1)) before returning it")

FLASH_MISTAKES = [
    (lambda q, k, v, block: _flash(q, k, v, block, rescale_acc=False),
     "when the running max grows, rescale the old output accumulator too: "
     "acc = exp(m_old - m_new) * acc + p @ v_block"),
    (lambda q, k, v, block: _flash(q, k, v, block, rescale_l=False),
     "when the running max grows, rescale the old sum too: "
     "l = exp(m_old - m_new) * l + p.sum(-1)"),
    (lambda q, k, v, block: _flash(q, k, v, block, rescale_acc=False, rescale_l=False),
     "the old l and acc were summed under the old max: multiply both by "
     "exp(m_old - m_new) before adding the new block"),
    (lambda q, k, v, block: _flash(q, k, v, block, inverse_alpha=True),
     "the rescale factor is exp(m_old - m_new) (<= 1), not exp(m_new - m_old)"),
    (lambda q, k, v, block: _flash(q, k, v, block, normalise_inside=True),
     "you divide by l inside the loop, so the old part is divided twice: keep acc "
     "unnormalised and divide by l once at the end (or multiply the old output "
     "back by its old l first)"),
    (lambda q, k, v, block: _flash(q, k, v, block, lse_plus_m=False),
     "lse = m + log(l): l was summed under the max m (exp(s - m)), so log(l) alone is "
     "off by m"),
    (lambda q, k, v, block: _flash(q, k, v, block, subtract_max=False),
     "subtract the running max before exp(): exp(s) overflows to inf for scores above ~709 "
     "(and underflows to 0 below ~-745) in float64"),
    (lambda q, k, v, block: _flash(q, k, v, block, m0=0.0),
     "start the running max at -inf, not 0: when every score is far below 0, "
     "exp(s - 0) underflows to 0 and l = 0"),
    (lambda q, k, v, block: _flash(q, k, v, block, scale=1.0),
     "the scores are not scaled: q @ k^T / sqrt(D), D = q.shape[-1]"),
    (lambda q, k, v, block: _flash(q, k, v, block, keepdim=True), LSE_KEEPDIM),
]


def _ref_flash(q, k, v, block):
    """flash_attn_forward on 4-D views; q, k, v zero-padded to one width when v's differs (q . k unchanged)."""
    from minillm.flash import flash_attn_forward

    D, Dv = q.shape[-1], v.shape[-1]
    width = max(D, Dv)
    q4, k4, v4 = (_as_4d(F.pad(t, (0, width - t.shape[-1]))) for t in (q, k, v))
    o, lse = flash_attn_forward(q4, k4, v4, False, block, block, scale=1.0 / math.sqrt(D))
    return o[..., :Dv].reshape(*q.shape[:-1], Dv), lse.reshape(q.shape[:-1])


def _flash_out(got, args) -> tuple:
    q, _, v = args[:3]
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise Wrong(f"return a pair (o, lse), got {type(got).__name__} {got!r:.40}")
    o = answers.tensor_answer(got[0], (*q.shape[:-1], v.shape[-1]), "o: q.shape[:-1] + (v.shape[-1],)")
    lse = answers.float_tensor(got[1], "lse")
    if tuple(lse.shape) == (*q.shape[:-1], 1):
        raise Wrong(f"{LSE_KEEPDIM}. It has shape {tuple(lse.shape)}, expected {tuple(q.shape[:-1])}")
    lse = answers.tensor_answer(lse, tuple(q.shape[:-1]), "lse: q.shape[:-1], one log-sum-exp per query")
    return o, lse


def _close_pair(got, want, args) -> bool:
    return answers.close(got[0], want[0]) and answers.close(got[1], want[1])


def _far_scores(gen: torch.Generator, sign: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v of shape (2, 2, 4, 4) / (2, 2, 8, 4): sign > 0 scores of size ~3000 (some above 709, where
    exp overflows); sign < 0 every score near -1500 (exp underflows to 0 unless the max is subtracted)."""
    if sign > 0:
        return randn64(2, 2, 4, 4, gen=gen, scale=3000.0), randn64(2, 2, 8, 4, gen=gen), randn64(2, 2, 8, 4, gen=gen)
    u = F.normalize(randn64(2, 2, 1, 4, gen=gen), dim=-1)
    q = 3000.0 * u * (1.0 + 0.1 * torch.rand(2, 2, 4, 1, generator=gen, dtype=torch.float64))
    k = -u + 0.05 * randn64(2, 2, 8, 4, gen=gen)
    return q, k, randn64(2, 2, 8, 4, gen=gen)


def _cases_flash_forward() -> list:
    inputs = [(d64([[1.0]]), d64([[1.0], [3.0], [2.0]]), torch.eye(3, dtype=torch.float64), 1)]
    gen = generator()
    inputs += [
        (randn64(4, 4, gen=gen, scale=2.0), randn64(7, 4, gen=gen), randn64(7, 4, gen=gen), 2),
        (randn64(2, 2, 3, 8, gen=gen, scale=2.0), randn64(2, 2, 10, 8, gen=gen), randn64(2, 2, 10, 8, gen=gen), 3),
        (randn64(3, 5, 4, gen=gen, scale=3.0), randn64(3, 9, 4, gen=gen), randn64(3, 9, 6, gen=gen), 4),
        (randn64(2, 6, 8, gen=gen), randn64(2, 6, 8, gen=gen), randn64(2, 6, 8, gen=gen), 1),
        (*_far_scores(gen, +1.0), 3),
        (*_far_scores(gen, -1.0), 2),
        (randn64(1, 2, 5, 4, gen=gen, scale=2.0), randn64(1, 2, 6, 4, gen=gen), randn64(1, 2, 6, 4, gen=gen), 16),
    ]
    cases = []
    for args in inputs:
        o, lse = _ref_flash(*args)
        want = answers.tensor_answer(o, tuple(o.shape), ""), answers.tensor_answer(lse, tuple(lse.shape), "")
        cases.append((args, want))
    return cases


# ---------------------------------------------------------------------------------------------------
# 05.6 MHA -> GQA: mean-pool the key/value heads of each group


def _heads(w, n_head):
    return w.reshape(n_head, w.shape[0] // n_head, w.shape[1])  # (n_head, head_dim, d_in)


def pool_sum(w, n_head, n_kv_head):
    h = _heads(w, n_head)
    return h.reshape(n_kv_head, n_head // n_kv_head, *h.shape[1:]).sum(1).reshape(-1, w.shape[1])


def pool_first_head(w, n_head, n_kv_head):
    h = _heads(w, n_head)
    return h.reshape(n_kv_head, n_head // n_kv_head, *h.shape[1:])[:, 0].reshape(-1, w.shape[1])


def pool_strided(w, n_head, n_kv_head):
    h = _heads(w, n_head)  # groups {g, g + n_kv_head, ...} instead of consecutive heads
    return h.reshape(n_head // n_kv_head, n_kv_head, *h.shape[1:]).mean(0).reshape(-1, w.shape[1])


def pool_wrong_reshape(w, n_head, n_kv_head):
    hd = w.shape[0] // n_head  # rows read as (kv head, head_dim, group): mixes the rows of different heads
    return w.reshape(n_kv_head, hd, n_head // n_kv_head, w.shape[1]).mean(2).reshape(-1, w.shape[1])


POOL_MISTAKES = [
    (pool_sum, "average the heads of a group (mean), not their sum: the pooled head should be the typical "
                     "head, and a sum makes the keys n_head // n_kv_head times larger"),
    (pool_first_head, "GQA mean-pools every head of the group; keeping only the first head of each group "
                            "throws the others away (the GQA paper found mean-pooling works best)"),
    (pool_strided, "a group is CONSECUTIVE heads: kv head g pools old heads g * group .. g * group + group - 1 "
                         "(the heads that share it in repeat_interleave); yours pools heads g, g + n_kv_head, ..."),
    (pool_wrong_reshape, "the rows of w are (head, head_dim): reshape to (n_kv_head, group, head_dim, d_in) "
                               "and average over the group axis; yours mixes rows of different heads"),
]


def _ref_pool(w: torch.Tensor, n_head: int, n_kv_head: int) -> torch.Tensor:
    """k_proj weight of minillm.attention.mha_to_gqa applied to an MHA layer whose k_proj weight is w."""
    from minillm.attention import Attention, AttentionConfig, mha_to_gqa

    attn = Attention(AttentionConfig(d_model=w.shape[1], n_head=n_head)).double()
    with torch.no_grad():
        attn.k_proj.weight.copy_(w)
    return mha_to_gqa(attn, n_kv_head).k_proj.weight.detach()


def _pool_out(got, args) -> tuple:
    w, n_head, n_kv_head = args
    return answers.tensor_answer(got, (n_kv_head * (w.shape[0] // n_head), w.shape[1]),
                      "(n_kv_head * head_dim, d_in): one block of head_dim rows per key/value head")


def _cases_pool_kv_heads() -> list:
    hand = d64([[1, 2, 0, 0], [3, 4, 0, 0], [0, 0, 5, 6], [0, 0, 7, 8]])
    inputs = [(hand, 4, 2), (hand, 2, 1)]
    gen = generator()
    for d, n_head, n_kv_head in [(12, 6, 2), (16, 4, 1), (24, 8, 4), (12, 6, 3), (8, 2, 2)]:
        inputs.append((randn64(d, d, gen=gen), n_head, n_kv_head))
    return [(args, _pool_out(_ref_pool(*args), args)) for args in inputs]


EXERCISES = (
    Exercise("05.1", "Scaled dot-product attention", 2, cases=_cases_attention, name="attention", normalize=_attn_out,
             same=answers.close, mistakes=ATTN_MISTAKES),
    Exercise("05.2", "Causal mask with a KV cache", 1, cases=_cases_causal_mask, name="causal_mask",
             normalize=_bool_mask, mistakes=CAUSAL_MISTAKES),
    Exercise("05.3", "Grouped-query attention", 1, cases=_cases_gqa, name="gqa_attention", normalize=_gqa_out,
             same=answers.close, mistakes=GQA_MISTAKES),
    Exercise("05.4", "KV cache size", 1, cases=_cases_kv_cache_bytes, name="kv_cache_bytes", normalize=_int,
             mistakes=KV_MISTAKES),
    Exercise("05.5", "FlashAttention forward pass", 3, cases=_cases_flash_forward, name="flash_forward",
             normalize=_flash_out, same=_close_pair, mistakes=FLASH_MISTAKES),
    Exercise("05.6", "Pool heads: MHA to GQA", 1, cases=_cases_pool_kv_heads, name="pool_kv_heads",
             normalize=_pool_out, same=answers.close, mistakes=POOL_MISTAKES),
)
