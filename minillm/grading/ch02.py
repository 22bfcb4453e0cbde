"""Checkers of chapter 2 (position encoding), the exercises of exercises/02_position_encoding.ipynb.

| id | the learner writes | compared with |
|---|---|---|
| 02.1 | `sinusoidal_table(n_pos, dim)` (interleaved) | `minillm.positional.sinusoidal_table` |
| 02.2 | `apply_rope(x, cos, sin)` (split halves) | `minillm.positional.apply_rope(..., "halves")` |
| 02.3 | `alibi_slopes(n)` | `minillm.positional.alibi_slopes` |
| 02.4 | `t5_bucket(rel, bidirectional, num_buckets, max_distance)` | `minillm.positional.t5_bucket` |
| 02.5 | `ntk_base(base, factor, head_dim)` | `minillm.rope_scaling.ntk_base` |
| 02.6 | `yarn_range(head_dim, base, original_len, beta_fast, beta_slow)` | `rope_scaling.yarn_correction_range` |

Hand-worked cases come first (written out in the notebook), then random inputs. Tensors and floats are
compared with a tolerance of 1e-5 (relative 1e-9 for 02.5); ints exactly. The `*_MISTAKES` lists pair
simulated wrong solutions (ch02_mistakes.py) with the hint naming each.
"""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Callable

import torch

from minillm.grading import ch02_mistakes as wrong
from minillm.grading.core import Wrong, register, run_cases

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

SINUSOID_MISTAKES = [
    (wrong.sinusoid_halves, "this is the concatenated layout [sin..., cos...]; the paper interleaves: "
                            "column 2i holds sin, column 2i+1 the cos of the same angle"),
    (wrong.sinusoid_swapped, "sin and cos are swapped: even columns (2i) hold sin, odd ones (2i+1) cos"),
    (wrong.sinusoid_column_exponent, "the exponent uses the column index j; both columns 2i and 2i+1 of pair i "
                                     "share the frequency 1/10000^(2i/d)"),
    (wrong.sinusoid_pair_exponent, "the exponent is 2i/d, not i/d (i counts pairs, 2i is the even column)"),
]


@register("02.1", title="Sinusoidal position table", points=1)
def check_sinusoidal(fn: Callable) -> tuple[bool, str]:
    from minillm.positional import sinusoidal_table

    cases = [((n, d), _floats(sinusoidal_table(n, d), None)) for n, d in [(3, 4), (1, 2), (8, 6), (50, 16), (20, 64)]]
    return run_cases(fn, cases, name="sinusoidal_table", normalize=_shaped(lambda a: (a[0], a[1])), same=_close,
                     mistakes=SINUSOID_MISTAKES)


# ---------------------------------------------------------------------------------------------------
# 02.2 RoPE, split halves

ROPE_MISTAKES = [
    (wrong.rope_sign_error, "rotate_half has the wrong sign: it is cat(-x2, x1), not cat(x2, -x1) "
                            "(you rotated by minus the angle)"),
    (wrong.rope_adjacent, "you paired adjacent dims (x[2i], x[2i+1]) (GPT-J layout); here the pairs are "
                          "(x[i], x[i + d/2]) (split halves, GPT-NeoX / Llama in Hugging Face)"),
    (wrong.rope_cos_sin_swapped, "cos and sin are swapped: x * cos + rotate_half(x) * sin"),
]


@register("02.2", title="Apply RoPE (rotate_half)", points=2)
def check_rope(fn: Callable) -> tuple[bool, str]:
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
    return run_cases(fn, cases, name="apply_rope", normalize=_shaped(lambda a: tuple(a[0].shape)), same=_close,
                     mistakes=ROPE_MISTAKES)


# ---------------------------------------------------------------------------------------------------
# 02.3 ALiBi slopes

SLOPE_MISTAKES = [
    (wrong.slopes_geometric_always, "2^(-8(h+1)/n) is only for n a power of two; otherwise take the n' slopes of "
                                    "the power of two below, then every other slope of 2n'"),
    (wrong.slopes_first_extra, "the extra slopes are every OTHER slope of 2n' ([0::2]), the ones that fall "
                               "between the n' slopes; you took the first ones"),
    (wrong.slopes_odd_extra, "[1::2] of the 2n' slopes repeats the n' slopes you already have; take [0::2]"),
    (wrong.slopes_from_one, "the first slope is 2^(-8/n), not 1: the sequence starts at the ratio itself"),
]


@register("02.3", title="ALiBi slopes", points=2)
def check_slopes(fn: Callable) -> tuple[bool, str]:
    from minillm.positional import alibi_slopes

    cases = [((n,), _floats(alibi_slopes(n), None)) for n in (8, 12, 1, 2, 6, 16, 5, 24, 32, 40)]
    return run_cases(fn, cases, name="alibi_slopes", normalize=_shaped(lambda a: (a[0],)), same=_close,
                     mistakes=SLOPE_MISTAKES)


# ---------------------------------------------------------------------------------------------------
# 02.4 T5 bucket

BUCKET_MISTAKES = [
    (wrong.bucket_query_minus_key, "sign convention: rel is key - query, so keys AFTER the query (rel > 0) go "
                                   "to the upper half, and the causal case looks at rel < 0"),
    (wrong.bucket_no_clip, "distances beyond max_distance must share the last bucket: clip with "
                           "min(bucket, num_buckets - 1) (per half when bidirectional)"),
    (wrong.bucket_rounded, "truncate the log-spaced bucket (int() / floor), don't round it"),
]


@register("02.4", title="T5 relative position bucket", points=2)
def check_bucket(fn: Callable) -> tuple[bool, str]:
    from minillm.positional import t5_bucket

    hand = [(-1, 1), (-8, 8), (-20, 10), (-128, 15), (1, 17), (8, 24), (128, 31)]
    cases = [((r, True, 32, 128), b) for r, b in hand]
    cases += [((r, False, 32, 128), b) for r, b in [(0, 0), (-1, 1), (-16, 16), (-20, 17), (-500, 31), (3, 0)]]
    rng = random.Random()
    for _ in range(40):
        args = (rng.randint(-400, 400), rng.random() < 0.5, rng.choice([8, 16, 32, 64]), rng.choice([64, 128, 256]))
        cases.append((args, int(t5_bucket(torch.tensor(args[0]), *args[1:]))))
    return run_cases(fn, cases, name="t5_bucket", normalize=_int, mistakes=BUCKET_MISTAKES)


# ---------------------------------------------------------------------------------------------------
# 02.5 NTK base, 02.6 YaRN range


def _float(got, args) -> float:
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if not isinstance(got, numbers.Real) or isinstance(got, bool):
        raise Wrong(f"return a number, got {type(got).__name__}")
    return float(got)


NTK_MISTAKES = [
    (wrong.ntk_plain_factor, "multiplying the base by s is not enough: the exponent d/(d-2) makes the slowest "
                             "pair turn exactly s times slower"),
    (wrong.ntk_inverted_exponent, "the exponent is d/(d-2), not (d-2)/d"),
    (wrong.ntk_d_minus_1, "the exponent is d/(d-2): the slowest pair has index i = d/2-1, so 2i/d = (d-2)/d"),
]


@register("02.5", title="NTK-aware RoPE base", points=1)
def check_ntk(fn: Callable) -> tuple[bool, str]:
    from minillm.rope_scaling import ntk_base

    cases = [((10000.0, 4.0, 128), ntk_base(10000, 4, 128)), ((10000.0, 1.0, 64), 10000.0)]
    cases += [((b, s, d), ntk_base(b, s, d)) for b, s, d in [(10000.0, 2.0, 64), (500000.0, 8.0, 128), (100.0, 3.0, 4)]]
    return run_cases(fn, cases, name="ntk_base", normalize=_float,
                     same=lambda g, w, a: math.isclose(g, w, rel_tol=1e-9), mistakes=NTK_MISTAKES)


def _int_pair(got, args) -> tuple[int, int]:
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        raise Wrong(f"return a pair (low, high), got {type(got).__name__} {got!r:.40}")
    return _int(got[0], args), _int(got[1], args)


YARN_MISTAKES = [
    (wrong.yarn_rounded, "low is rounded DOWN (floor) and high UP (ceil), so the ramp covers the whole band"),
    (wrong.yarn_floor_ceil_swapped, "floor goes with low (beta_fast), ceil with high (beta_slow)"),
    (wrong.yarn_betas_swapped, "low comes from beta_fast (32 rotations: the fast pairs end there), high from "
                               "beta_slow (1 rotation)"),
    (wrong.yarn_unclipped, "clip the range to valid indices: max(low, 0), min(high, head_dim - 1)"),
]


@register("02.6", title="YaRN ramp range", points=1)
def check_yarn(fn: Callable) -> tuple[bool, str]:
    from minillm.rope_scaling import yarn_correction_range

    cases = [((128, 10000.0, 4096, 32.0, 1.0), (20, 46))]
    for args in [(64, 10000.0, 2048, 32.0, 1.0), (128, 500000.0, 8192, 32.0, 1.0), (16, 10000.0, 64, 32.0, 1.0),
                 (128, 10000.0, 10**12, 32.0, 1.0), (64, 10000.0, 4096, 16.0, 2.0)]:
        cases.append((args, yarn_correction_range(*args)))
    return run_cases(fn, cases, name="yarn_range", normalize=_int_pair, mistakes=YARN_MISTAKES)
