"""Checkers of chapter 2 (position encoding), the exercises of exercises/02_position_encoding.ipynb.

| id | the learner writes | compared with |
|---|---|---|
| 02.1 | `sinusoidal_table(n_pos, dim)` (interleaved) | `minillm.positional.sinusoidal_table` |
| 02.2 | `apply_rope(x, cos, sin)` (split halves) | `minillm.positional.apply_rope(..., "halves")` |
| 02.3 | `alibi_slopes(n)` | `minillm.positional.alibi_slopes` |
| 02.4 | `t5_bucket(rel, bidirectional, num_buckets, max_distance)` | `minillm.positional.t5_bucket` |
| 02.5 | `ntk_base(base, factor, head_dim)` | `minillm.rope_scaling.ntk_base` |
| 02.6 | `yarn_range(head_dim, base, original_len, beta_fast, beta_slow)` | `rope_scaling.yarn_correction_range` |
| 02.7 | `rope_at(x, positions, base, layout)`, both layouts | `positional.rope_cos_sin` + `apply_rope` |

Hand-worked cases come first (written out in the notebook), then random inputs. Tensors and floats are
compared with a tolerance of 1e-5 (relative 1e-6 for 02.5, so float32 arithmetic passes); ints exactly.
The `*_MISTAKES` lists pair simulated wrong solutions with the hint naming each.
"""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Callable

import torch

from minillm import positional as ref
from minillm.grading import answers
from minillm.grading.answers import generator
from minillm.grading.core import Exercise, Wrong, call

# Each section below defines its simulated wrong solutions (deliberately wrong: never references) next to
# the list that pairs each one with the hint naming it; EXERCISES at the end declares the exercises.

# ---------------------------------------------------------------------------------------------------
# shape checks


def _floats(got, args) -> tuple:
    """A tensor / array / list of numbers -> (shape, values rounded to 6 decimals) for comparison."""
    try:
        t = torch.as_tensor(got, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise Wrong(f"return a tensor (or a list of numbers), got a {type(got).__name__}") from e
    return tuple(t.shape), tuple(round(v, 6) for v in t.flatten().tolist())


def _close(got, want, args, tol: float = 1e-5) -> bool:
    return got[0] == want[0] and all(abs(a - b) <= tol for a, b in zip(got[1], want[1], strict=True))


def _shaped(expected_shape: Callable[[tuple], tuple]):
    def normalize(got, args):
        shape, values = _floats(got, args)
        want = expected_shape(args)
        if shape != want:
            raise Wrong(f"the result has shape {shape}, expected {want}")
        return shape, values
    return normalize


def _int(got, args) -> int:
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if not isinstance(got, numbers.Integral) or isinstance(got, bool):
        raise Wrong(f"return an int bucket index, got {type(got).__name__} {got!r:.40}")
    return int(got)


# ---------------------------------------------------------------------------------------------------
# 02.1 sinusoidal table


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


SINUSOID_MISTAKES = [
    (lambda n_pos, dim: ref.sinusoidal_table(n_pos, dim, layout='halves'),
     "this is the concatenated layout [sin..., cos...]; the paper interleaves: "
     "column 2i holds sin, column 2i+1 the cos of the same angle"),
    (lambda n_pos, dim:
         ref.sinusoidal_table(n_pos, dim)[:, torch.arange(dim) ^ 1],  # cos in even columns, sin in odd
     "sin and cos are swapped: even columns (2i) hold sin, odd ones (2i+1) cos"),
    (sinusoid_column_exponent, "the exponent uses the column index j; both columns 2i and 2i+1 of pair i "
                                     "share the frequency 1/10000^(2i/d)"),
    (sinusoid_pair_exponent, "the exponent is 2i/d, not i/d (i counts pairs, 2i is the even column)"),
]


def _cases_sinusoidal() -> list:
    from minillm.positional import sinusoidal_table

    return [((n, d), _floats(sinusoidal_table(n, d), None)) for n, d in [(3, 4), (1, 2), (8, 6), (50, 16), (20, 64)]]


# ---------------------------------------------------------------------------------------------------
# 02.2 RoPE, split halves


def rope_sign_error(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return x * torch.cat([cos, cos], -1) + torch.cat([x2, -x1], -1) * torch.cat([sin, sin], -1)


ROPE_MISTAKES = [
    (rope_sign_error, "rotate_half has the wrong sign: it is cat(-x2, x1), not cat(x2, -x1) "
                            "(you rotated by minus the angle)"),
    (lambda x, cos, sin: ref.apply_rope(x, cos, sin, 'adjacent'),
     "you paired adjacent dims (x[2i], x[2i+1]) (GPT-J layout); here the pairs are "
     "(x[i], x[i + d/2]) (split halves, GPT-NeoX / Llama in Hugging Face)"),
    (lambda x, cos, sin: ref.apply_rope(x, sin, cos, 'halves'),
     "cos and sin are swapped: x * cos + rotate_half(x) * sin"),
]


def _cases_rope() -> list:
    from minillm.positional import apply_rope, rope_cos_sin
    from minillm.rope_scaling import inv_frequencies

    x0 = torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64)  # T=1, d=4
    half_pi = torch.tensor([[math.pi / 2, 0.0]], dtype=torch.float64)
    cases = [((x0, half_pi.cos(), half_pi.sin()), _floats(torch.tensor([[-3.0, 2.0, 1.0, 4.0]]), None))]
    gen = torch.Generator().manual_seed(random.randrange(2**31))
    for shape in [(5, 8), (2, 3, 7, 16), (1, 4, 12, 32)]:
        x = torch.randn(*shape, generator=gen, dtype=torch.float64)
        cos, sin = rope_cos_sin(torch.arange(shape[-2]), inv_frequencies(shape[-1]))
        cases.append(((x, cos, sin), _floats(apply_rope(x, cos, sin, "halves"), None)))
    return cases


# ---------------------------------------------------------------------------------------------------
# 02.3 ALiBi slopes


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


SLOPE_MISTAKES = [
    (lambda n: [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)],
     "2^(-8(h+1)/n) is only for n a power of two; otherwise take the n' slopes of "
     "the power of two below, then every other slope of 2n'"),
    (slopes_first_extra, "the extra slopes are every OTHER slope of 2n' ([0::2]), the ones that fall "
                               "between the n' slopes; you took the first ones"),
    (slopes_odd_extra, "[1::2] of the 2n' slopes repeats the n' slopes you already have; take [0::2]"),
    (lambda n: [2.0 ** (-8.0 * h / n) for h in range(n)],
     "the first slope is 2^(-8/n), not 1: the sequence starts at the ratio itself"),
]


def _cases_slopes() -> list:
    from minillm.positional import alibi_slopes

    return [((n,), _floats(alibi_slopes(n), None)) for n in (8, 12, 1, 2, 6, 16, 5, 24, 32, 40)]


# ---------------------------------------------------------------------------------------------------
# 02.4 T5 bucket


def _bucket(rel, bidirectional, num_buckets, max_distance, *, to_int=int, clip=True, zero_up=False):
    """T5's bucket with one deviation: rounding instead of `to_int`, no clip, or rel = 0 in the upper half."""
    half = num_buckets // 2 if bidirectional else num_buckets
    offset = half if (bidirectional and (rel > 0 or (zero_up and rel == 0))) else 0
    n = abs(rel) if bidirectional else max(-rel, 0)
    exact = half // 2
    if n < exact:
        return offset + n
    big = exact + to_int(math.log(n / exact) / math.log(max_distance / exact) * (half - exact))
    return offset + (min(big, half - 1) if clip else big)


BUCKET_MISTAKES = [
    (lambda rel, bidirectional, num_buckets, max_distance:
         int(ref.t5_bucket(torch.tensor(-rel), bidirectional, num_buckets, max_distance)),
     "sign convention: rel is key - query, so keys AFTER the query (rel > 0) go "
     "to the upper half, and the causal case looks at rel < 0"),
    (lambda rel, bidirectional, num_buckets, max_distance:
         _bucket(rel, bidirectional, num_buckets, max_distance, clip=False),
     "distances beyond max_distance must share the last bucket: clip with "
     "min(bucket, num_buckets - 1) (per half when bidirectional)"),
    (lambda rel, bidirectional, num_buckets, max_distance:
         _bucket(rel, bidirectional, num_buckets, max_distance, to_int=round),
     "truncate the log-spaced bucket (int() / floor), don't round it"),
    (lambda rel, bidirectional, num_buckets, max_distance:
         _bucket(rel, bidirectional, num_buckets, max_distance, zero_up=True),
     "rel = 0 (the query itself) is bucket 0, in the lower half: only keys AFTER the query (rel > 0) are offset "
     "by num_buckets // 2"),
    (lambda rel, bidirectional, num_buckets, max_distance: _bucket(rel, bidirectional, num_buckets, 128),
     "use the max_distance you are given (the log-spaced buckets reach it), not a fixed 128"),
]


def _cases_bucket() -> list:
    from minillm.positional import t5_bucket

    hand = [(0, 0), (-1, 1), (-8, 8), (-20, 10), (-128, 15), (1, 17), (8, 24), (128, 31)]
    cases = [((r, True, 32, 128), b) for r, b in hand]
    cases += [((r, False, 32, 128), b) for r, b in [(0, 0), (-1, 1), (-16, 16), (-20, 17), (-500, 31), (3, 0)]]
    # another max_distance moves the log-spaced buckets (128 would give 10, 30, 28, 31)
    cases += [((-20, True, 32, 64), 11), ((-100, False, 32, 256), 26), ((40, True, 32, 64), 30),
              ((-300, False, 32, 512), 29)]
    rng = random.Random()
    for _ in range(40):
        args = (rng.randint(-400, 400), rng.random() < 0.5, rng.choice([8, 16, 32, 64]), rng.choice([64, 128, 256]))
        cases.append((args, int(t5_bucket(torch.tensor(args[0]), *args[1:]))))
    return cases


# ---------------------------------------------------------------------------------------------------
# 02.5 NTK base, 02.6 YaRN range


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


def _float(got, args) -> float:
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if not isinstance(got, numbers.Real) or isinstance(got, bool):
        raise Wrong(f"return a number, got {type(got).__name__}")
    return float(got)


NTK_MISTAKES = [
    (lambda base, factor, head_dim: base * factor,
     "multiplying the base by s is not enough: the exponent d/(d-2) makes the slowest "
     "pair turn exactly s times slower"),
    (lambda base, factor, head_dim: base * factor ** ((head_dim - 2) / head_dim),
     "the exponent is d/(d-2), not (d-2)/d"),
    (lambda base, factor, head_dim: base * factor ** (head_dim / (head_dim - 1)),
     "the exponent is d/(d-2): the slowest pair has index i = d/2-1, so 2i/d = (d-2)/d"),
]


def _cases_ntk() -> list:
    from minillm.rope_scaling import ntk_base

    cases = [((10000.0, 4.0, 128), ntk_base(10000, 4, 128)), ((10000.0, 1.0, 64), 10000.0)]
    cases += [((b, s, d), ntk_base(b, s, d)) for b, s, d in [(10000.0, 2.0, 64), (500000.0, 8.0, 128), (100.0, 3.0, 4)]]
    return cases


def _int_pair(got, args) -> tuple[int, int]:
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        raise Wrong(f"return a pair (low, high), got {type(got).__name__} {got!r:.40}")
    return _int(got[0], args), _int(got[1], args)


YARN_MISTAKES = [
    (yarn_rounded, "low is rounded DOWN (floor) and high UP (ceil), so the ramp covers the whole band"),
    (yarn_floor_ceil_swapped, "floor goes with low (beta_fast), ceil with high (beta_slow)"),
    (yarn_betas_swapped, "low comes from beta_fast (32 rotations: the fast pairs end there), high from "
                               "beta_slow (1 rotation)"),
    (yarn_unclipped, "clip the range to valid indices: max(low, 0), min(high, head_dim - 1)"),
]


def _cases_yarn() -> list:
    from minillm.rope_scaling import yarn_correction_range

    cases = [((128, 10000.0, 4096, 32.0, 1.0), (20, 46))]
    for args in [(64, 10000.0, 2048, 32.0, 1.0), (128, 500000.0, 8192, 32.0, 1.0), (16, 10000.0, 64, 32.0, 1.0),
                 (128, 10000.0, 10**12, 32.0, 1.0), (64, 10000.0, 4096, 16.0, 2.0)]:
        cases.append((args, yarn_correction_range(*args)))
    return cases


# ---------------------------------------------------------------------------------------------------
# 02.7 RoPE at arbitrary positions, both layouts (interview question)


def _rope_ref(x, positions, base, layout, *, exponent=2.0, sign=1.0, layout_of=None, pos=None,
              angle_dtype=torch.float64):
    """minillm's apply_rope with one deviation per keyword (the simulated mistakes below)."""
    d = x.shape[-1]
    inv_freq = base ** (-exponent * torch.arange(0, d // 2, dtype=angle_dtype) / d)
    p = positions if pos is None else pos(positions)
    cos, sin = ref.rope_cos_sin(p, inv_freq)  # angles in angle_dtype
    return ref.apply_rope(x, cos.to(x.dtype), sign * sin.to(x.dtype), layout_of or layout)


def _cases_rope_at() -> list:
    gen = generator()
    inputs = [(torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([3]), 10000.0, "halves"),
              (torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([3]), 10000.0, "adjacent")]
    for shape, base, layout, pos in [((5, 8), 10000.0, "halves", torch.arange(5)),
                                     ((5, 8), 10000.0, "adjacent", torch.arange(5)),
                                     ((2, 3, 4, 16), 500000.0, "halves", torch.tensor([7, 8, 9, 10])),
                                     ((2, 6, 4), 100.0, "adjacent", torch.tensor([5, 0, 3, 1, 4, 2])),
                                     ((3, 2, 12), 10000.0, "adjacent", torch.tensor([99990, 100000])),
                                     ((1, 5, 6), 1e6, "halves", torch.randperm(5, generator=gen) + 37)]:
        inputs.append((answers.randn64(*shape, gen=gen), pos, base, layout))
    return [(args, _shaped(lambda a: tuple(a[0].shape))(_rope_ref(*args), args)) for args in inputs]


def _check_rope_at(ex: Exercise, fn: Callable) -> tuple[bool, str]:
    ok, hint = ex.run_cases(fn)
    if not ok:
        return ok, hint
    gen = generator()  # the property itself: q . k is the same for positions (m, n) and (m + s, n + s)
    q, k = answers.randn64(1, 8, gen=gen), answers.randn64(1, 8, gen=gen)
    for layout in ("halves", "adjacent"):
        dots = [(call(fn, q, torch.tensor([m]), 10000.0, layout, name="rope_at")
                 * call(fn, k, torch.tensor([n]), 10000.0, layout, name="rope_at")).sum().item()
                for m, n in [(5, 2), (105, 102), (1005, 1002)]]
        if max(dots) - min(dots) > 1e-6 * max(1.0, abs(dots[0])):
            return False, (f"q . k after rotation must depend only on the distance of the positions; with layout "
                           f"{layout!r} positions (5, 2), (105, 102), (1005, 1002) give {dots}")
    return True, ""


ROPE_AT_MISTAKES = [
    (lambda x, positions, base, layout:
         _rope_ref(x, positions, base, layout, layout_of={'halves': 'adjacent', 'adjacent': 'halves'}[layout]),
     "the layouts are swapped: 'halves' pairs feature i with i + d/2, 'adjacent' pairs "
     "2i with 2i + 1"),
    (lambda x, positions, base, layout: _rope_ref(x, positions, base, layout, pos=lambda p: torch.arange(len(p))),
     "rotate by the positions you are given, not by 0 .. T-1: with a KV cache or packed "
     "sequences they differ"),
    (lambda x, positions, base, layout: _rope_ref(x, positions, base, layout, exponent=1.0),
     "the frequency of pair i falls as base ** (-2i / d), not base ** (-i / d): the last pair "
     "turns nearly base times slower than the first"),
    (lambda x, positions, base, layout: _rope_ref(x, positions, base, layout, sign=-1.0),
     "rotate counter-clockwise: a pair (a, b) becomes (a cos - b sin, a sin + b cos)"),
    (lambda x, positions, base, layout: _rope_ref(x, positions, base, layout, angle_dtype=torch.float32),
     "compute the angles in float64 as the task asks: a float32 angle near 100000 radians is off by about "
     "0.004, far beyond the check's 1e-5"),
]


EXERCISES = (
    Exercise("02.1", "Sinusoidal position table", 1, cases=_cases_sinusoidal, name="sinusoidal_table",
             normalize=_shaped(lambda a: (a[0], a[1])), same=_close, mistakes=SINUSOID_MISTAKES),
    Exercise("02.2", "Apply RoPE (rotate_half)", 2, cases=_cases_rope, name="apply_rope",
             normalize=_shaped(lambda a: tuple(a[0].shape)), same=_close, mistakes=ROPE_MISTAKES),
    Exercise("02.3", "ALiBi slopes", 2, cases=_cases_slopes, name="alibi_slopes",
             normalize=_shaped(lambda a: (a[0],)), same=_close, mistakes=SLOPE_MISTAKES),
    Exercise("02.4", "T5 relative position bucket", 2, cases=_cases_bucket, name="t5_bucket", normalize=_int,
             mistakes=BUCKET_MISTAKES),
    Exercise("02.5", "NTK-aware RoPE base", 1, cases=_cases_ntk, name="ntk_base", normalize=_float,
             same=lambda g, w, a: math.isclose(g, w, rel_tol=1e-6), mistakes=NTK_MISTAKES),
    Exercise("02.6", "YaRN ramp range", 1, cases=_cases_yarn, name="yarn_range", normalize=_int_pair,
             mistakes=YARN_MISTAKES),
    Exercise("02.7", "RoPE at given positions, both layouts", 2, cases=_cases_rope_at, name="rope_at",
             normalize=_shaped(lambda a: tuple(a[0].shape)), same=_close, mistakes=ROPE_AT_MISTAKES,
             check=_check_rope_at),
)
