"""Learner solutions for exercises 05.x (attention), written from the notebook text only.

``valid_NN_k_*`` satisfy the task text of exercise NN.k; ``wrong_NN_k_*`` break the clause named above them.
"""
# Learner-style code on purpose (zip over ids and ids[1:], unused loop counters):
# ruff: noqa: B905, B007
import math

import torch

# ---- 05.1 attention -------------------------------------------------------------------------------

# valid: masked_fill then softmax
def valid_05_1_masked_fill(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


# valid: scale q first, mask with torch.where, softmax written out with max subtraction
def valid_05_1_where(q, k, v, mask=None):
    s = (q / q.shape[-1] ** 0.5) @ k.mT
    if mask is not None:
        s = torch.where(mask, s, torch.full_like(s, -math.inf))
    e = torch.exp(s - s.amax(-1, keepdim=True))
    return (e / e.sum(-1, keepdim=True)) @ v


# wrong: softmax over the queries (dim=-2) -- breaks "the softmax taken over the keys"
def wrong_05_1_softmax_queries(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-2) @ v


# wrong: no 1/sqrt(D) -- breaks "QK^T / sqrt(D)"
def wrong_05_1_no_scale(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


# wrong: mask applied after the softmax (weights zeroed, not renormalised) -- breaks "set ... before the softmax"
def wrong_05_1_mask_after(q, k, v, mask=None):
    w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    if mask is not None:
        w = w * mask
    return w @ v


# wrong: mask sense inverted (True = blocked) -- breaks "True where the query may attend the key"
def wrong_05_1_mask_inverted(q, k, v, mask=None):
    return valid_05_1_masked_fill(q, k, v, None if mask is None else ~mask)


# ---- 05.2 causal_mask -----------------------------------------------------------------------------

# valid: broadcasting comparison
def valid_05_2_compare(T, S):
    i = torch.arange(T)[:, None]
    j = torch.arange(S)[None, :]
    return j <= i + S - T


# valid: tril with a diagonal offset
def valid_05_2_tril(T, S):
    return torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)


# wrong: top-left alignment -- breaks "The diagonal is aligned bottom-right"
def wrong_05_2_top_left(T, S):
    return torch.tril(torch.ones(T, S)).bool()


# wrong: float mask of 0/1 -- breaks "of dtype torch.bool"
def wrong_05_2_float(T, S):
    return torch.ones(T, S).tril(diagonal=S - T)


# wrong: strict inequality (a token cannot see itself) -- breaks "up to and including its own position"
def wrong_05_2_strict(T, S):
    return torch.arange(S)[None, :] < torch.arange(T)[:, None] + S - T


# ---- 05.3 gqa_attention ---------------------------------------------------------------------------

# valid: repeat_interleave and 05.1
def valid_05_3_repeat_interleave(q, k, v):
    n_rep = q.shape[1] // k.shape[1]
    return valid_05_1_masked_fill(q, k.repeat_interleave(n_rep, 1), v.repeat_interleave(n_rep, 1))


# valid: no copy: view q as (B, H_kv, n_rep, T, D) and broadcast k, v
def valid_05_3_grouped_view(q, k, v):
    B, H, T, D = q.shape
    Hkv = k.shape[1]
    qg = q.reshape(B, Hkv, H // Hkv, T, D)
    out = valid_05_1_masked_fill(qg, k[:, :, None], v[:, :, None])
    return out.reshape(B, H, T, v.shape[-1])


# wrong: tiles the heads (repeat) -- breaks "query head h reads key/value head h // n_rep"
def wrong_05_3_tile(q, k, v):
    n_rep = q.shape[1] // k.shape[1]
    return valid_05_1_masked_fill(q, k.repeat(1, n_rep, 1, 1), v.repeat(1, n_rep, 1, 1))


# wrong: repeats keys but not values (values tiled) -- breaks "each key/value head serves ... consecutive" for v
def wrong_05_3_values_tiled(q, k, v):
    n_rep = q.shape[1] // k.shape[1]
    return valid_05_1_masked_fill(q, k.repeat_interleave(n_rep, 1), v.repeat(1, n_rep, 1, 1))


# ---- 05.4 kv_cache_bytes --------------------------------------------------------------------------

# valid: formula with itemsize
def valid_05_4_itemsize(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    return 2 * n_layer * n_kv_head * head_dim * seq_len * batch * dtype.itemsize


# valid: bytes from finfo/iinfo bits, and element_size of an empty tensor as a fallback
def valid_05_4_bits(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    per = torch.empty((), dtype=dtype).element_size()
    return int(2 * n_layer * n_kv_head * head_dim * seq_len * batch * per)


# wrong: uses n_head -- breaks "n_head ... does not enter: only key/value heads are cached"
def wrong_05_4_n_head(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    return 2 * n_layer * n_head * head_dim * seq_len * batch * dtype.itemsize


# wrong: keys only -- breaks "2 (keys and values)"
def wrong_05_4_keys_only(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    return n_layer * n_kv_head * head_dim * seq_len * batch * dtype.itemsize


# wrong: bits instead of bytes -- breaks "its size in bytes is dtype.itemsize"
def wrong_05_4_bits(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    return 2 * n_layer * n_kv_head * head_dim * seq_len * batch * torch.finfo(dtype).bits


# ---- 05.5 flash_forward ---------------------------------------------------------------------------

# valid: the block loop as written
def valid_05_5_blocks(q, k, v, block):
    D = q.shape[-1]
    S = k.shape[-2]
    m = torch.full(q.shape[:-1], float("-inf"), dtype=q.dtype)
    ell = torch.zeros(q.shape[:-1], dtype=q.dtype)
    acc = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for j in range(0, S, block):
        s = q @ k[..., j:j + block, :].mT / math.sqrt(D)
        m_new = torch.maximum(m, s.amax(-1))
        alpha = torch.exp(m - m_new)
        p = torch.exp(s - m_new[..., None])
        ell = alpha * ell + p.sum(-1)
        acc = alpha[..., None] * acc + p @ v[..., j:j + block, :]
        m = m_new
    return acc / ell[..., None], m + torch.log(ell)


# valid: one block per key (ignores `block`, which only sets tiling: values are equal); lse via logaddexp
def valid_05_5_per_key(q, k, v, block):
    scale = q.shape[-1] ** -0.5
    lse = torch.full(q.shape[:-1], -math.inf, dtype=q.dtype)
    o = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for j in range(k.shape[-2]):
        s = (q * k[..., j:j + 1, :]).sum(-1) * scale          # (..., T)
        new = torch.logaddexp(lse, s)
        o = o * torch.exp(lse - new)[..., None] + torch.exp(s - new)[..., None] * v[..., j:j + 1, :]
        lse = new
    return o, lse


# wrong: no running max (exp of raw scores) -- breaks "unless you subtract the running max" (overflow at 1500)
def wrong_05_5_no_max(q, k, v, block):
    s = q @ k.mT / math.sqrt(q.shape[-1])
    e = torch.exp(s)
    ell = e.sum(-1)
    return (e @ v) / ell[..., None], torch.log(ell)


# wrong: forgets to rescale acc by alpha -- breaks "acc <- alpha acc + p V_j"
def wrong_05_5_no_rescale_acc(q, k, v, block):
    D = q.shape[-1]
    m = torch.full(q.shape[:-1], float("-inf"), dtype=q.dtype)
    ell = torch.zeros(q.shape[:-1], dtype=q.dtype)
    acc = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for j in range(0, k.shape[-2], block):
        s = q @ k[..., j:j + block, :].mT / math.sqrt(D)
        m_new = torch.maximum(m, s.amax(-1))
        p = torch.exp(s - m_new[..., None])
        ell = torch.exp(m - m_new) * ell + p.sum(-1)
        acc = acc + p @ v[..., j:j + block, :]
        m = m_new
    return acc / ell[..., None], m + torch.log(ell)


# wrong: returns lse = log(ell) without m -- breaks "lse = m + log ell"
def wrong_05_5_lse_no_m(q, k, v, block):
    o, lse = valid_05_5_blocks(q, k, v, block)
    s = q @ k.mT / math.sqrt(q.shape[-1])
    return o, lse - s.amax(-1)


# wrong: drops the last, shorter block (range stops at S - block) -- breaks "The last block may be shorter"
def wrong_05_5_drop_tail(q, k, v, block):
    S = k.shape[-2]
    full = (S // block) * block if S >= block else S
    return valid_05_5_blocks(q, k[..., :full, :], v[..., :full, :], block)


# ---- 05.6 pool_kv_heads ---------------------------------------------------------------------------

# valid: reshape to (n_kv, group, head_dim, d_in) and mean over group
def valid_05_6_reshape(w, n_head, n_kv_head):
    hd = w.shape[0] // n_head
    group = n_head // n_kv_head
    return w.reshape(n_kv_head, group, hd, w.shape[1]).mean(1).reshape(n_kv_head * hd, w.shape[1])


# valid: loop over groups and heads, summing slices, then dividing
def valid_05_6_loop(w, n_head, n_kv_head):
    hd = w.shape[0] // n_head
    group = n_head // n_kv_head
    out = []
    for g in range(n_kv_head):
        acc = torch.zeros(hd, w.shape[1], dtype=w.dtype)
        for h in range(g * group, (g + 1) * group):
            acc = acc + w[h * hd:(h + 1) * hd]
        out.append(acc / group)
    return torch.cat(out, 0)


# wrong: groups strided heads (h % n_kv) -- breaks "each group of consecutive heads"
def wrong_05_6_strided(w, n_head, n_kv_head):
    hd = w.shape[0] // n_head
    group = n_head // n_kv_head
    return w.reshape(group, n_kv_head, hd, w.shape[1]).mean(0).reshape(n_kv_head * hd, w.shape[1])


# wrong: treats rows as heads regardless of head_dim -- breaks "head_dim = w.shape[0] // n_head"
def wrong_05_6_rows_as_heads(w, n_head, n_kv_head):
    r = w.shape[0] // n_kv_head
    return w.reshape(n_kv_head, r, w.shape[1]).mean(1).repeat_interleave(w.shape[0] // n_head, 0)


# wrong: sum instead of mean -- breaks "mean-pooling"
def wrong_05_6_sum(w, n_head, n_kv_head):
    hd = w.shape[0] // n_head
    group = n_head // n_kv_head
    return w.reshape(n_kv_head, group, hd, w.shape[1]).sum(1).reshape(n_kv_head * hd, w.shape[1])


# ---- second round: subtler cases ------------------------------------------------------------------

# wrong: returns a float -- breaks "the bytes of the whole cache as an int"
def wrong_05_4_float(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    return 2.0 * n_layer * n_kv_head * head_dim * seq_len * batch * torch.finfo(dtype).bits / 8


# wrong: lse keeps a trailing dim (..., T, 1) -- breaks "lse (..., T)"
def wrong_05_5_lse_keepdim(q, k, v, block):
    o, lse = valid_05_5_blocks(q, k, v, block)
    return o, lse[..., None]


# wrong: scales by sqrt(D_v) (the value width) -- breaks "s = q K_j^T / sqrt(D)"
def wrong_05_5_scale_dv(q, k, v, block):
    return valid_05_5_blocks(q * (q.shape[-1] / v.shape[-1]) ** 0.5, k, v, block)


# valid: block larger than S handled, keys processed from the last block to the first (order does not matter)
def valid_05_5_reverse_blocks(q, k, v, block):
    S = k.shape[-2]
    starts = list(range(0, S, block))[::-1]
    m = torch.full(q.shape[:-1], float("-inf"), dtype=q.dtype)
    ell = torch.zeros_like(m)
    acc = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for j in starts:
        s = q @ k[..., j:j + block, :].transpose(-1, -2) / q.shape[-1] ** 0.5
        m2 = torch.maximum(m, s.max(-1).values)
        a = torch.exp(m - m2)
        p = torch.exp(s - m2[..., None])
        ell, acc, m = a * ell + p.sum(-1), a[..., None] * acc + p @ v[..., j:j + block, :], m2
    return acc / ell[..., None], m + ell.log()


# ---- third round ----------------------------------------------------------------------------------

# wrong: scale from the value width D_v -- breaks "QK^T / sqrt(D)" (D the query/key width)
def wrong_05_1_scale_dv(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(v.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


# wrong: repeat_interleave on dim 0 (batch) for 4-D inputs -- breaks "query head h reads kv head h // n_rep"
def wrong_05_3_batch_dim(q, k, v):
    n_rep = q.shape[1] // k.shape[1]
    if n_rep == 1:
        return valid_05_1_masked_fill(q, k, v)
    k2 = k.transpose(0, 1).repeat_interleave(n_rep, 0).transpose(0, 1) if q.shape[0] == 1 else \
        k.repeat_interleave(n_rep, 1)
    v2 = v.repeat(1, n_rep, 1, 1) if q.shape[0] > 1 else v.transpose(0, 1).repeat_interleave(n_rep, 0).transpose(0, 1)
    return valid_05_1_masked_fill(q, k2, v2)


# ---- fourth round ---------------------------------------------------------------------------------

# wrong: boolean indexing needs a mask of the scores' full shape -- breaks "mask ... broadcastable to (..., T, S)"
def wrong_05_1_bool_index(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s.clone()
        s[~mask] = float("-inf")
    return torch.softmax(s, dim=-1) @ v
