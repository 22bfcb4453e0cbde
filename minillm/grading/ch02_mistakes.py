"""Simulated wrong solutions of the chapter 2 exercises, used by ch02.py to name a learner's mistake.

Each function reproduces one common mistake: the concatenated [sin..., cos...] layout, the column index in
the sinusoid's exponent, a sign error in rotate_half, the adjacent-pair layout, slopes for a head count
that is not a power of two, T5 buckets with the other sign convention or off by one, d vs d-2 in NTK.
They are deliberately wrong: never use them as references.
"""

from __future__ import annotations

import math

import torch

from minillm import positional as ref

# ---------------------------------------------------------------------------------------------------
# 02.1 sinusoidal table


def sinusoid_halves(n_pos, dim):
    return ref.sinusoidal_table(n_pos, dim, layout="halves")


def sinusoid_swapped(n_pos, dim):
    return ref.sinusoidal_table(n_pos, dim)[:, torch.arange(dim) ^ 1]  # cos in even columns, sin in odd


def sinusoid_column_exponent(n_pos, dim):
    pos = torch.arange(n_pos, dtype=torch.float64)[:, None]
    angle = pos / 10000 ** (torch.arange(dim, dtype=torch.float64) / dim)  # j instead of 2i
    out = angle.sin()
    out[:, 1::2] = angle[:, 1::2].cos()
    return out.float()


def sinusoid_pair_exponent(n_pos, dim):
    pos = torch.arange(n_pos, dtype=torch.float64)[:, None]
    angle = pos / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / dim)  # i instead of 2i
    out = torch.empty(n_pos, dim, dtype=torch.float64)
    out[:, 0::2], out[:, 1::2] = angle.sin(), angle.cos()
    return out.float()


# ---------------------------------------------------------------------------------------------------
# 02.2 RoPE, split halves


def rope_sign_error(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * torch.cat([cos, cos], -1) + torch.cat([x2, -x1], -1) * torch.cat([sin, sin], -1)


def rope_adjacent(x, cos, sin):
    return ref.apply_rope(x, cos, sin, "adjacent")


def rope_cos_sin_swapped(x, cos, sin):
    return ref.apply_rope(x, sin, cos, "halves")


# ---------------------------------------------------------------------------------------------------
# 02.3 ALiBi slopes


def slopes_geometric_always(n):
    return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]


def slopes_first_extra(n):
    below = 2 ** int(math.floor(math.log2(n)))
    if below == n:
        return ref.alibi_slopes(n)
    return ref.alibi_slopes(below) + ref.alibi_slopes(2 * below)[: n - below]


def slopes_odd_extra(n):
    below = 2 ** int(math.floor(math.log2(n)))
    if below == n:
        return ref.alibi_slopes(n)
    return ref.alibi_slopes(below) + ref.alibi_slopes(2 * below)[1::2][: n - below]


def slopes_from_one(n):
    return [2.0 ** (-8.0 * h / n) for h in range(n)]


# ---------------------------------------------------------------------------------------------------
# 02.4 T5 bucket


def bucket_query_minus_key(rel, bidirectional, num_buckets, max_distance):
    return int(ref.t5_bucket(torch.tensor(-rel), bidirectional, num_buckets, max_distance))


def _bucket(rel, bidirectional, num_buckets, max_distance, *, to_int=int, clip=True):
    half = num_buckets // 2 if bidirectional else num_buckets
    offset = half if (bidirectional and rel > 0) else 0
    n = abs(rel) if bidirectional else max(-rel, 0)
    exact = half // 2
    if n < exact:
        return offset + n
    big = exact + to_int(math.log(n / exact) / math.log(max_distance / exact) * (half - exact))
    return offset + (min(big, half - 1) if clip else big)


def bucket_no_clip(rel, bidirectional, num_buckets, max_distance):
    return _bucket(rel, bidirectional, num_buckets, max_distance, clip=False)


def bucket_rounded(rel, bidirectional, num_buckets, max_distance):
    return _bucket(rel, bidirectional, num_buckets, max_distance, to_int=round)


# ---------------------------------------------------------------------------------------------------
# 02.5 NTK base, 02.6 YaRN range


def ntk_plain_factor(base, factor, head_dim):
    return base * factor


def ntk_inverted_exponent(base, factor, head_dim):
    return base * factor ** ((head_dim - 2) / head_dim)


def ntk_d_minus_1(base, factor, head_dim):
    return base * factor ** (head_dim / (head_dim - 1))


def _pair(d, base, length, rot):
    return d * math.log(length / (2 * math.pi * rot)) / (2 * math.log(base))


def yarn_rounded(head_dim, base, original_len, beta_fast, beta_slow):
    lo = round(_pair(head_dim, base, original_len, beta_fast))
    hi = round(_pair(head_dim, base, original_len, beta_slow))
    return max(lo, 0), min(hi, head_dim - 1)


def yarn_floor_ceil_swapped(head_dim, base, original_len, beta_fast, beta_slow):
    lo = math.ceil(_pair(head_dim, base, original_len, beta_fast))
    hi = math.floor(_pair(head_dim, base, original_len, beta_slow))
    return max(lo, 0), min(hi, head_dim - 1)


def yarn_betas_swapped(head_dim, base, original_len, beta_fast, beta_slow):
    lo = math.floor(_pair(head_dim, base, original_len, beta_slow))
    hi = math.ceil(_pair(head_dim, base, original_len, beta_fast))
    return max(lo, 0), min(hi, head_dim - 1)


def yarn_unclipped(head_dim, base, original_len, beta_fast, beta_slow):
    return (math.floor(_pair(head_dim, base, original_len, beta_fast)),
            math.ceil(_pair(head_dim, base, original_len, beta_slow)))
