"""Chapter 2 exercises: plausible wrong solutions, written the way a learner might, fail with the hint
naming the mistake. What every exercise gets (the solution passes, the stub is "not attempted", junk
answers and the checker's simulated mistakes) is checked in test_exercises.py."""

from __future__ import annotations

import math

import pytest
import torch

from minillm.grading import check

# ---------------------------------------------------------------------------------------------------
# plausible wrong solutions, written the way a learner might


def sin_cat(n_pos, dim):
    p = torch.arange(n_pos)[:, None].float()
    w = 10000 ** (-torch.arange(0, dim, 2).float() / dim)
    return torch.cat([torch.sin(p * w), torch.cos(p * w)], dim=1)


def sin_cos_swapped(n_pos, dim):
    out = torch.zeros(n_pos, dim)
    for p in range(n_pos):
        for i in range(dim // 2):
            out[p, 2 * i] = math.cos(p / 10000 ** (2 * i / dim))
            out[p, 2 * i + 1] = math.sin(p / 10000 ** (2 * i / dim))
    return out


def sin_column_index(n_pos, dim):
    out = torch.zeros(n_pos, dim)
    for p in range(n_pos):
        for j in range(dim):
            angle = p / 10000 ** (j / dim)
            out[p, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return out


def rope_wrong_sign(x, cos, sin):
    h = x.shape[-1] // 2
    a, b = x[..., :h], x[..., h:]
    return torch.cat([a * cos + b * sin, -a * sin + b * cos], dim=-1)


def rope_pairs_adjacent(x, cos, sin):
    a, b = x[..., ::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., ::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
    return out


def slopes_formula_for_all(n):
    return [2 ** (-8 * (h + 1) / n) for h in range(n)]


def slopes_first_of_double(n):
    p = 2 ** math.floor(math.log2(n))
    base = [2 ** (-8 * (h + 1) / p) for h in range(p)]
    extra = [2 ** (-8 * (h + 1) / (2 * p)) for h in range(2 * p)]
    return base + extra[: n - p]


def bucket_other_sign(rel, bidirectional, num_buckets, max_distance):
    rel = -rel  # query - key
    half = num_buckets // 2 if bidirectional else num_buckets
    off = half if bidirectional and rel > 0 else 0
    n = abs(rel) if bidirectional else max(-rel, 0)
    e = half // 2
    if n < e:
        return off + n
    return off + min(e + int(math.log(n / e) / math.log(max_distance / e) * (half - e)), half - 1)


def bucket_unclipped(rel, bidirectional, num_buckets, max_distance):
    half = num_buckets // 2 if bidirectional else num_buckets
    off = half if bidirectional and rel > 0 else 0
    n = abs(rel) if bidirectional else max(-rel, 0)
    e = half // 2
    if n < e:
        return off + n
    return off + e + int(math.log(n / e) / math.log(max_distance / e) * (half - e))


def ntk_d_over_d(base, factor, head_dim):
    return base * factor ** ((head_dim - 2) / head_dim)


def ntk_times_factor(base, factor, head_dim):
    return base * factor


def yarn_round(head_dim, base, original_len, beta_fast, beta_slow):
    def idx(r):
        return head_dim * math.log(original_len / (2 * math.pi * r)) / (2 * math.log(base))
    return max(round(idx(beta_fast)), 0), min(round(idx(beta_slow)), head_dim - 1)


def yarn_no_clip(head_dim, base, original_len, beta_fast, beta_slow):
    def idx(r):
        return head_dim * math.log(original_len / (2 * math.pi * r)) / (2 * math.log(base))
    return math.floor(idx(beta_fast)), math.ceil(idx(beta_slow))


@pytest.mark.parametrize("ex_id,fn,hint", [
    ("02.1", sin_cat, "concatenated layout"),
    ("02.1", sin_cos_swapped, "swapped"),
    ("02.1", sin_column_index, "column index"),
    ("02.1", lambda n, d: torch.zeros(n, d + 1), "shape"),
    ("02.2", rope_wrong_sign, "rotate_half has the wrong sign"),
    ("02.2", rope_pairs_adjacent, "adjacent dims"),
    ("02.3", slopes_formula_for_all, "only for n a power of two"),
    ("02.3", slopes_first_of_double, "every OTHER slope"),
    ("02.4", bucket_other_sign, "sign convention"),
    ("02.4", bucket_unclipped, "clip"),
    ("02.5", ntk_d_over_d, "not (d-2)/d"),
    ("02.5", ntk_times_factor, "not enough"),
    ("02.6", yarn_round, "rounded DOWN"),
    ("02.6", yarn_no_clip, "clip the range"),
])
def test_wrong_solution_fails_with_its_hint(ex_id, fn, hint):
    res = check(ex_id, fn)
    assert res.status == "failed" and res.points == 0
    assert hint in res.hint, res.hint
