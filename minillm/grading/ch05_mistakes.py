"""Simulated wrong solutions of the chapter 5 exercises, used by ch05.py to name a learner's mistake.

Each function reproduces one common mistake: attention without (or with the wrong) 1/sqrt(D) scaling, a
softmax over the queries, a mask applied after the softmax, added or multiplied instead of filled, or with
its polarity inverted; a causal mask off by one, aligned top-left under a KV cache or transposed; query
heads mapped to key/value heads by modulo (`repeat` instead of `repeat_interleave`); KV-cache sizes without
the factor 2, with n_head for n_kv_head or bits for bytes; an online softmax that forgets a rescaling, uses
the inverse factor, normalises inside the loop, never subtracts a max or starts it at 0; key/value heads
pooled by sum, by taking one head, by strided groups or by a wrong reshape. They are deliberately wrong:
never use them as references.
"""

from __future__ import annotations

import math

import torch

NEG_INF = float("-inf")

# ---------------------------------------------------------------------------------------------------
# 05.1 scaled dot-product attention


def _scores(q, k, scale):
    return (q @ k.transpose(-2, -1)) * scale


def _masked(scores, mask):
    return scores if mask is None else scores.masked_fill(~mask, NEG_INF)


def attn_no_scale(q, k, v, mask=None):
    return torch.softmax(_masked(_scores(q, k, 1.0), mask), dim=-1) @ v


def attn_scale_by_d(q, k, v, mask=None):
    return torch.softmax(_masked(_scores(q, k, 1.0 / q.shape[-1]), mask), dim=-1) @ v


def attn_scale_by_seq(q, k, v, mask=None):
    return torch.softmax(_masked(_scores(q, k, 1.0 / math.sqrt(k.shape[-2])), mask), dim=-1) @ v


def attn_softmax_over_queries(q, k, v, mask=None):
    return torch.softmax(_masked(_scores(q, k, 1.0 / math.sqrt(q.shape[-1])), mask), dim=-2) @ v


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


# ---------------------------------------------------------------------------------------------------
# 05.2 causal mask (bottom-right aligned)


def _ij(T, S):
    return torch.arange(T)[:, None], torch.arange(S)[None, :]


def causal_strict(T, S):
    i, j = _ij(T, S)
    return j < i + (S - T)  # the diagonal (the query itself) is missing


def causal_top_left(T, S):
    return torch.ones(T, S, dtype=torch.bool).tril()


def causal_offset_wrong_sign(T, S):
    return torch.ones(T, S, dtype=torch.bool).tril(diagonal=T - S)


def causal_upper(T, S):
    i, j = _ij(T, S)
    return j >= i + (S - T)  # the future, not the past


def causal_inverted(T, S):
    i, j = _ij(T, S)
    return j > i + (S - T)  # True = blocked (nn.MultiheadAttention's convention)


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


# ---------------------------------------------------------------------------------------------------
# 05.4 KV cache size


def kv_no_factor_2(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    return n_layer * n_kv_head * head_dim * seq_len * batch * dtype.itemsize


def kv_n_head(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    return 2 * n_layer * n_head * head_dim * seq_len * batch * dtype.itemsize


def kv_bits(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    return 2 * n_layer * n_kv_head * head_dim * seq_len * batch * torch.finfo(dtype).bits


def kv_no_batch(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    return 2 * n_layer * n_kv_head * head_dim * seq_len * dtype.itemsize


def kv_one_layer(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    return 2 * n_kv_head * head_dim * seq_len * batch * dtype.itemsize


# ---------------------------------------------------------------------------------------------------
# 05.5 FlashAttention forward (online softmax over key blocks)


def _flash(q, k, v, block, *, rescale_acc=True, rescale_l=True, inverse_alpha=False, normalise_inside=False,
           subtract_max=True, m0=NEG_INF, lse_plus_m=True, scale=None):
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
    return o, lse.squeeze(-1)


def flash_acc_not_rescaled(q, k, v, block):
    return _flash(q, k, v, block, rescale_acc=False)


def flash_l_not_rescaled(q, k, v, block):
    return _flash(q, k, v, block, rescale_l=False)


def flash_nothing_rescaled(q, k, v, block):
    return _flash(q, k, v, block, rescale_acc=False, rescale_l=False)


def flash_inverse_alpha(q, k, v, block):
    return _flash(q, k, v, block, inverse_alpha=True)


def flash_normalise_inside(q, k, v, block):
    return _flash(q, k, v, block, normalise_inside=True)


def flash_lse_no_max(q, k, v, block):
    return _flash(q, k, v, block, lse_plus_m=False)


def flash_no_max(q, k, v, block):
    return _flash(q, k, v, block, subtract_max=False)


def flash_m_starts_at_zero(q, k, v, block):
    return _flash(q, k, v, block, m0=0.0)


def flash_no_scale(q, k, v, block):
    return _flash(q, k, v, block, scale=1.0)


# ---------------------------------------------------------------------------------------------------
# 05.6 MHA -> GQA: pool the key/value heads of each group


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
