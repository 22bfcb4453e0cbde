"""Learner solutions for exercises 02.x (position encoding), written from the notebook text only.

``valid_NN_k_*`` satisfy the task text of exercise NN.k; ``wrong_NN_k_*`` break the clause named above them.
"""
# Learner-style code on purpose (zip over ids and ids[1:], unused loop counters):
# ruff: noqa: B905, B007
import math

import torch

# ---- 02.1 sinusoidal_table ------------------------------------------------------------------------

# valid: float32 (no precision asked), strided assignment into even/odd columns
def valid_02_1_strided(n_pos, dim):
    pos = torch.arange(n_pos, dtype=torch.float32)[:, None]
    freq = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    pe = torch.zeros(n_pos, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe


# valid: double loop in float64 with math.sin/cos
def valid_02_1_loops(n_pos, dim):
    pe = torch.zeros(n_pos, dim, dtype=torch.float64)
    for p in range(n_pos):
        for i in range(dim // 2):
            ang = p / 10000 ** (2 * i / dim)
            pe[p, 2 * i] = math.sin(ang)
            pe[p, 2 * i + 1] = math.cos(ang)
    return pe


# wrong: [sin..., cos...] layout -- breaks "the interleaved layout" (column 2i+1 = cos)
def wrong_02_1_concat(n_pos, dim):
    pos = torch.arange(n_pos, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    return torch.cat([torch.sin(pos * freq), torch.cos(pos * freq)], dim=-1)


# wrong: exponent i/d instead of 2i/d -- breaks "p / 10000^(2i/d)"
def wrong_02_1_exponent(n_pos, dim):
    pos = torch.arange(n_pos, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(dim // 2, dtype=torch.float64) / dim)
    pe = torch.zeros(n_pos, dim, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe


# wrong: positions start at 1 -- breaks "row p" for p = 0 .. n_pos-1 (row 0 must be [0, 1, 0, 1])
def wrong_02_1_from_one(n_pos, dim):
    return valid_02_1_loops(n_pos + 1, dim)[1:]


# ---- 02.2 apply_rope ------------------------------------------------------------------------------

def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


# valid: the formula with rotate_half
def valid_02_2_rotate_half(x, cos, sin):
    c = torch.cat([cos, cos], dim=-1)
    s = torch.cat([sin, sin], dim=-1)
    return x * c + _rotate_half(x) * s


# valid: per-pair formula on the two halves, via chunk
def valid_02_2_pairs(x, cos, sin):
    a, b = x.chunk(2, dim=-1)
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


# wrong: rotation in the other direction (sign of sin flipped) -- breaks "(a cos - b sin, a sin + b cos)"
def wrong_02_2_sign(x, cos, sin):
    a, b = x.chunk(2, dim=-1)
    return torch.cat([a * cos + b * sin, -a * sin + b * cos], dim=-1)


# wrong: adjacent pairing (2i, 2i+1) -- breaks "pair i is (x[..., i], x[..., i + d/2])"
def wrong_02_2_adjacent(x, cos, sin):
    a, b = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = a * cos - b * sin
    out[..., 1::2] = a * sin + b * cos
    return out


# wrong: cos/sin repeated with repeat_interleave instead of cat -- breaks "cat(cos, cos)"
def wrong_02_2_interleave_tables(x, cos, sin):
    c = cos.repeat_interleave(2, dim=-1)
    s = sin.repeat_interleave(2, dim=-1)
    return x * c + _rotate_half(x) * s


# ---- 02.3 alibi_slopes ----------------------------------------------------------------------------

def _pow2_slopes(n):
    start = 2 ** (-8 / n)
    return [start ** (i + 1) for i in range(n)]


# valid: the recipe with the power-of-two helper
def valid_02_3_recipe(n):
    if n & (n - 1) == 0:
        return _pow2_slopes(n)
    p = 2 ** math.floor(math.log2(n))
    return _pow2_slopes(p) + _pow2_slopes(2 * p)[0::2][: n - p]


# valid: closed form 2^(-8 k / n) written with exponents, largest power of two found by a loop
def valid_02_3_exponents(n):
    p = 1
    while p * 2 <= n:
        p *= 2
    first = [2.0 ** (-8.0 * (i + 1) / p) for i in range(p)]
    if p == n:
        return first
    extra = [2.0 ** (-8.0 * (2 * j + 1) / (2 * p)) for j in range(n - p)]
    return first + extra


# wrong: uses 2^(-8/n) with the non-power n directly -- breaks "otherwise: n' the largest power of two below n"
def wrong_02_3_no_pow2(n):
    return _pow2_slopes(n)


# wrong: takes the odd indices [1::2] of 2n' -- breaks "the slopes of 2n' at even indices ([0::2])"
def wrong_02_3_odd_indices(n):
    if n & (n - 1) == 0:
        return _pow2_slopes(n)
    p = 2 ** math.floor(math.log2(n))
    return _pow2_slopes(p) + _pow2_slopes(2 * p)[1::2][: n - p]


# wrong: geometric sequence starting at 1 -- breaks "starts at 2^(-8/n)"
def wrong_02_3_start_one(n):
    return [2 ** (-8 * i / n) for i in range(n)] if n & (n - 1) == 0 else valid_02_3_recipe(n)


# ---- 02.4 t5_bucket -------------------------------------------------------------------------------

# valid: direct transcription with math.log
def valid_02_4_direct(rel, bidirectional, num_buckets, max_distance):
    offset = 0
    if bidirectional:
        half = num_buckets // 2
        if rel > 0:
            offset = half
        n = abs(rel)
    else:
        half = num_buckets
        n = max(-rel, 0)
    max_exact = half // 2
    if n < max_exact:
        return offset + n
    b = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (half - max_exact))
    return offset + min(b, half - 1)


# valid: through torch ops in float32 like the HF code, converted back to int
def valid_02_4_torch(rel, bidirectional, num_buckets, max_distance):
    r = torch.tensor(rel)
    ret = torch.tensor(0)
    half = num_buckets
    if bidirectional:
        half //= 2
        ret = ret + (r > 0).long() * half
        n = r.abs()
    else:
        n = -torch.clamp(r, max=0)
    max_exact = half // 2
    if int(n) < max_exact:
        return int(ret + n)
    large = max_exact + (torch.log(n.double() / max_exact) / math.log(max_distance / max_exact)
                         * (half - max_exact)).long()
    large = torch.clamp(large, max=half - 1)
    return int(ret + large)


# wrong: sign convention reversed (query - key) -- breaks "rel = key - query ... rel > 0 offset by half"
def wrong_02_4_sign(rel, bidirectional, num_buckets, max_distance):
    return valid_02_4_direct(-rel, bidirectional, num_buckets, max_distance)


# wrong: no clip at half - 1 -- breaks "clipped to at most half - 1"
def wrong_02_4_no_clip(rel, bidirectional, num_buckets, max_distance):
    offset = 0
    if bidirectional:
        half = num_buckets // 2
        offset = half if rel > 0 else 0
        n = abs(rel)
    else:
        half, n = num_buckets, max(-rel, 0)
    max_exact = half // 2
    if n < max_exact:
        return offset + n
    return offset + max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (half - max_exact))


# wrong: round() instead of int() -- breaks "int(ln(...) ...)" truncation
def wrong_02_4_round(rel, bidirectional, num_buckets, max_distance):
    offset = 0
    if bidirectional:
        half = num_buckets // 2
        offset = half if rel > 0 else 0
        n = abs(rel)
    else:
        half, n = num_buckets, max(-rel, 0)
    max_exact = half // 2
    if n < max_exact:
        return offset + n
    b = max_exact + round(math.log(n / max_exact) / math.log(max_distance / max_exact) * (half - max_exact))
    return offset + min(b, half - 1)


# wrong: causal uses |rel| -- breaks "Causal: n = max(-rel, 0)" (keys after the query go to bucket 0)
def wrong_02_4_causal_abs(rel, bidirectional, num_buckets, max_distance):
    if bidirectional:
        return valid_02_4_direct(rel, True, num_buckets, max_distance)
    return valid_02_4_direct(-abs(rel), False, num_buckets, max_distance)


# ---- 02.5 ntk_base --------------------------------------------------------------------------------

# valid: the formula
def valid_02_5_formula(base, factor, head_dim):
    return base * factor ** (head_dim / (head_dim - 2))


# valid: via exp/log, float32 tensor -> float (relative error ~1e-7)
def valid_02_5_explog(base, factor, head_dim):
    return math.exp(math.log(base) + head_dim / (head_dim - 2) * math.log(factor))


# wrong: plain linear scaling base * s -- breaks "base * s^(d/(d-2))"
def wrong_02_5_linear(base, factor, head_dim):
    return base * factor


# wrong: exponent (d-2)/d inverted -- breaks "s^(d/(d-2))"
def wrong_02_5_inverted(base, factor, head_dim):
    return base * factor ** ((head_dim - 2) / head_dim)


# ---- 02.6 yarn_range ------------------------------------------------------------------------------

def _dim_for(r, d, base, L):
    return d * math.log(L / (2 * math.pi * r)) / (2 * math.log(base))


# valid: the formula
def valid_02_6_formula(head_dim, base, original_len, beta_fast, beta_slow):
    low = math.floor(_dim_for(beta_fast, head_dim, base, original_len))
    high = math.ceil(_dim_for(beta_slow, head_dim, base, original_len))
    return max(low, 0), min(high, head_dim - 1)


# valid: log of base through math.log2 ratios (same value), ints via int()/-(-x//1)
def valid_02_6_log2(head_dim, base, original_len, beta_fast, beta_slow):
    def idx(r):
        return head_dim * math.log2(original_len / (2 * math.pi * r)) / (2 * math.log2(base))
    lo, hi = idx(beta_fast), idx(beta_slow)
    return max(int(math.floor(lo)), 0), min(int(-((-hi) // 1)), head_dim - 1)


# wrong: fast/slow swapped -- breaks "low ... r = beta_fast, high ... r = beta_slow"
def wrong_02_6_swapped(head_dim, base, original_len, beta_fast, beta_slow):
    return valid_02_6_formula(head_dim, base, original_len, beta_slow, beta_fast)


# wrong: no clipping -- breaks "clipped: max(low, 0), min(high, head_dim - 1)"
def wrong_02_6_no_clip(head_dim, base, original_len, beta_fast, beta_slow):
    return (math.floor(_dim_for(beta_fast, head_dim, base, original_len)),
            math.ceil(_dim_for(beta_slow, head_dim, base, original_len)))


# wrong: rounds both to nearest -- breaks "low = floor, high = ceil"
def wrong_02_6_round(head_dim, base, original_len, beta_fast, beta_slow):
    return (max(round(_dim_for(beta_fast, head_dim, base, original_len)), 0),
            min(round(_dim_for(beta_slow, head_dim, base, original_len)), head_dim - 1))


# ---- 02.7 rope_at ---------------------------------------------------------------------------------

def _angles(positions, d, base, dtype):
    inv = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)            # (d/2,)
    return (positions.to(torch.float64)[:, None] * inv[None, :]).to(dtype)     # (T, d/2)


# valid: float64 angles, both layouts by indexing
def valid_02_7_index(x, positions, base, layout):
    d = x.shape[-1]
    ang = _angles(positions, d, base, torch.float64)
    c, s = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    if layout == "halves":
        a, b = x[..., : d // 2], x[..., d // 2:]
        return torch.cat([a * c - b * s, a * s + b * c], dim=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2)


# valid: complex multiplication (Meta's Llama code) for adjacent; halves via a permutation to adjacent
def valid_02_7_complex(x, positions, base, layout):
    d = x.shape[-1]
    ang = _angles(positions, d, base, torch.float64)
    rot = torch.polar(torch.ones_like(ang), ang)                                # (T, d/2) complex128
    if layout == "halves":
        perm = torch.stack([torch.arange(d // 2), torch.arange(d // 2) + d // 2], dim=-1).flatten()
        xa = x[..., perm]
    else:
        xa = x
    z = torch.view_as_complex(xa.to(torch.float64).reshape(*xa.shape[:-1], d // 2, 2).contiguous())
    out = torch.view_as_real(z * rot).flatten(-2).to(x.dtype)
    if layout == "halves":
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(d)
        out = out[..., inv]
    return out


# wrong: ignores `positions`, uses 0..T-1 -- breaks "positions ... not necessarily 0 .. T-1"
def wrong_02_7_arange(x, positions, base, layout):
    return valid_02_7_index(x, torch.arange(x.shape[-2]), base, layout)


# wrong: ignores `layout`, always halves -- breaks the "adjacent" layout clause
def wrong_02_7_always_halves(x, positions, base, layout):
    return valid_02_7_index(x, positions, base, "halves")


# wrong: always base 10000 -- breaks "`base` is RoPE's base (10000 in the paper, 500000 in Llama 3)"
def wrong_02_7_ignore_base(x, positions, base, layout):
    return valid_02_7_index(x, positions, 10000, layout)


# ---- second round: subtler cases ------------------------------------------------------------------

# wrong: offset for rel >= 0 (rel = 0 lands in the "after" half) -- breaks "keys after the query (rel > 0) are offset"
def wrong_02_4_offset_rel_zero(rel, bidirectional, num_buckets, max_distance):
    b = valid_02_4_direct(rel, bidirectional, num_buckets, max_distance)
    return b + num_buckets // 2 if bidirectional and rel == 0 else b


# valid: log10 everywhere (the ratio of two logs does not depend on the base of the log)
def valid_02_6_log10(head_dim, base, original_len, beta_fast, beta_slow):
    import math as m
    def idx(r):
        return head_dim * m.log10(original_len / (2 * m.pi * r)) / (2 * m.log10(base))
    return max(m.floor(idx(beta_fast)), 0), min(m.ceil(idx(beta_slow)), head_dim - 1)


# valid: float32 table for 02.1 built with torch.outer and stack/flatten interleave
def valid_02_1_outer_stack(n_pos, dim):
    inv = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    ang = torch.outer(torch.arange(n_pos, dtype=torch.float32), inv)
    return torch.stack([ang.sin(), ang.cos()], dim=-1).reshape(n_pos, dim)


# ---- third round ----------------------------------------------------------------------------------

# wrong: chunk on dim 1 (right only for 2-D x) -- breaks "x has shape (..., T, d)"
def wrong_02_2_chunk_dim1(x, cos, sin):
    a, b = x.chunk(2, dim=1)
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=1)


# wrong: integer division n // max_exact inside the log -- breaks "ln(n / max_exact)"
def wrong_02_4_intdiv(rel, bidirectional, num_buckets, max_distance):
    offset = 0
    if bidirectional:
        half = num_buckets // 2
        offset = half if rel > 0 else 0
        n = abs(rel)
    else:
        half, n = num_buckets, max(-rel, 0)
    max_exact = half // 2
    if n < max_exact:
        return offset + n
    b = max_exact + int(math.log(n // max_exact) / math.log(max_distance / max_exact) * (half - max_exact))
    return offset + min(b, half - 1)


# wrong: n' = the power of two above n, truncated -- breaks "n' the largest power of two below n ... then 2n' at [0::2]"
def wrong_02_3_next_pow2_truncated(n):
    p = 1
    while p < n:
        p *= 2
    return _pow2_slopes(p)[:n]


# wrong: max_distance fixed at 128 -- breaks "t5_bucket(rel, bidirectional, num_buckets, max_distance)"
def wrong_02_4_fixed_max_distance(rel, bidirectional, num_buckets, max_distance):
    return valid_02_4_direct(rel, bidirectional, num_buckets, 128)
