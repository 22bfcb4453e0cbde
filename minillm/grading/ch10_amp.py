"""Checkers of chapter 10's number-format and mixed-precision exercises, to be joined into chapter 10's EXERCISES.

| id | the learner writes | compared with |
|---|---|---|
| 10.3 | `round_to_bf16(bits)`: fp32 bit pattern (int) -> bf16 bit pattern (int), nearest, ties to even | |
|      | | `minillm.formats.encode(decode(bits, FP32), BF16)` |
| 10.4 | `loss_scale_trajectory(found_inf, init_scale, growth_factor, backoff_factor, growth_interval)` | |
|      | -> `(scales, skipped)`: the scale after each step's update, the steps skipped | `DynamicLossScaler` |

10.3 cases: the worked bit patterns of the exercise (1.0, the ties 1 + 2^-8 and 1 + 3 * 2^-8, just above a tie,
the largest float32, -0.0, subnormals and a subnormal tie, inf, -inf and two NaNs, one whose set mantissa bits all
lie in the low half that bf16 drops), then random 32-bit patterns and random ties (low half exactly 0x8000). The
answer is an int (a Python or numpy int, or a one-element integer tensor) in [0, 2^16); for a NaN input any bf16 NaN
(exponent all ones, mantissa not 0) passes, otherwise the bits must be equal.

10.4 cases: two hand-worked flag sequences (interval 2, scale 8; the second shows that an overflow resets the count
of clean steps), an all-clean run whose growth would pass the largest float32 (the scale stays), then random
sequences with random factors and intervals. The reference drives `DynamicLossScaler` (== torch.amp.GradScaler, see
tests/test_amp.py) with a gradient of inf on the flagged steps. Scales may be computed in float64: they are compared
to 1e-5 relative (float32 rounds each product, float64
less); the skipped steps must be equal.
"""

from __future__ import annotations

import math
import numbers
import random

import torch

from minillm.grading.core import Exercise, Wrong, short

FLOAT32_MAX = 3.4028234663852886e38

# ---------------------------------------------------------------------------------------------------
# 10.3 round an fp32 bit pattern to bf16


def _bf16_reference(bits: int) -> int:
    from minillm.formats import BF16, FP32, decode, encode

    return encode(decode(bits, FP32), BF16)


def _is_nan32(bits: int) -> bool:
    return (bits >> 23) & 0xFF == 0xFF and bits & 0x7FFFFF != 0


HAND_BF16 = [
    (0x3F800000, 0x3F80),  # 1.0
    (0x3F808000, 0x3F80),  # 1 + 2^-8: a tie between 1 and 1 + 2^-7, to the even mantissa 0
    (0x3F818000, 0x3F82),  # 1 + 3 * 2^-8: a tie between mantissas 1 and 2, to 2
    (0x3F808001, 0x3F81),  # just above the tie: up
    (0xC0490FDB, 0xC049),  # -pi (0xC0490FDB): below the halfway point, down
    (0x7F7FFFFF, 0x7F80),  # the largest float32 rounds past bf16's largest finite: inf
    (0x80000000, 0x8000),  # -0.0 keeps its sign
    (0x00000001, 0x0000),  # the smallest float32 subnormal: to 0
    (0x00008000, 0x0000),  # a subnormal tie, to the even 0
    (0x00018000, 0x0002),  # a subnormal tie between 1 and 2, to 2
    (0x7F800000, 0x7F80),  # inf
    (0xFF800000, 0xFF80),  # -inf
    (0x7FC00000, 0x7FC0),  # a quiet NaN
    (0x7F800001, 0x7FC0),  # a NaN whose only set mantissa bit is dropped: must stay NaN, not become inf
]
# not shown in the notebook: the NaNs and overflows whose rounding carries into the sign or past 16 bits (a
# learner who rounds first and patches NaN / inf afterwards gets these wrong; random patterns almost never hit them)
EDGE_BF16 = [0x7FFFFFFF, 0xFFFFFFFF, 0x7FFF8000, 0xFFFF8000, 0xFF7FFFFF, 0xFF7F8000, 0x7F7F8000, 0x807FFFFF]


def _bits_out(got, args) -> int:
    if isinstance(got, torch.Tensor):
        if got.numel() != 1 or got.is_floating_point() or got.dtype == torch.bool:
            raise Wrong(f"return the bf16 bit pattern as one int, got a tensor ({short(got, 50)})")
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, numbers.Integral):
        raise Wrong(f"return the bf16 bit pattern as an int (e.g. 0x3F80 for 1.0), got {type(got).__name__} "
                    f"{got!r:.40}")
    got = int(got)
    if not 0 <= got < 2**16:
        raise Wrong(f"return the 16-bit pattern as an unsigned int in [0, 65535], got {got} = {got:#x}; "
                    "keep the sign in bit 15")
    return got


def _same_bits(got: int, want: int, args: tuple) -> bool:
    if _is_nan32(args[0]):
        return (got >> 7) & 0xFF == 0xFF and got & 0x7F != 0  # any bf16 NaN
    return got == want


def _bf16_cases() -> list:
    cases = [((b,), w) for b, w in HAND_BF16] + [((b,), _bf16_reference(b)) for b in EDGE_BF16]
    for _ in range(60):
        b = random.getrandbits(32)
        cases.append(((b,), _bf16_reference(b)))
    for _ in range(30):  # ties: the dropped half is exactly 0x8000, with random kept bits (finite ones)
        high = random.getrandbits(16)
        if (high >> 7) & 0xFF == 0xFF:
            high &= 0xBFFF
        b = (high << 16) | 0x8000
        cases.append(((b,), _bf16_reference(b)))
    return cases


def bf16_truncate(bits):
    return bits >> 16


def bf16_ties_away(bits):
    return ((bits + 0x8000) >> 16) & 0xFFFF


def bf16_ties_down(bits):
    return ((bits + 0x7FFF) >> 16) & 0xFFFF


def bf16_rne_no_nan(bits):
    lsb = (bits >> 16) & 1
    return ((bits + 0x7FFF + lsb) >> 16) & 0xFFFF


def bf16_saturate(bits):
    out = _bf16_reference(bits)
    if out & 0x7FFF == 0x7F80 and bits & 0x7FFFFFFF != 0x7F800000:  # a finite value that rounded to inf
        return (out & 0x8000) | 0x7F7F
    return out


def bf16_flush_subnormals(bits):
    if (bits >> 23) & 0xFF == 0:  # exponent field 0: zero or subnormal, flushed to a signed zero
        return (bits >> 16) & 0x8000
    return _bf16_reference(bits)


def bf16_drop_sign(bits):
    return _bf16_reference(bits) & 0x7FFF


BF16_MISTAKES = [
    (bf16_truncate, "that truncates (drops the low 16 bits, rounding toward zero): round to the NEAREST bf16 value, "
                    "looking at the dropped half"),
    (bf16_ties_away, "ties go to the EVEN neighbour, not away from zero: when the dropped half is exactly 0x8000, "
                     "round up only if the kept last bit is 1"),
    (bf16_ties_down, "ties go to the even neighbour: when the dropped half is exactly 0x8000 and the kept last bit "
                     "is 1, round up"),
    (bf16_rne_no_nan, "a NaN must stay NaN: rounding a NaN whose set mantissa bits are all in the dropped half "
                      "gives the pattern of inf; return a NaN (e.g. 0x7FC0 with the sign) for every NaN input"),
    (bf16_saturate, "a finite value that rounds past bf16's largest finite number becomes inf (as torch's cast), "
                    "not the largest finite value"),
    (bf16_flush_subnormals, "subnormals (exponent field 0) are numbers too: they round like any other value "
                            "(bf16 has subnormals, with fp32's exponent), not to zero"),
    (bf16_drop_sign, "keep the sign: bit 31 of the input is bit 15 of the answer"),
]

# ---------------------------------------------------------------------------------------------------
# 10.4 dynamic loss scaling over a sequence of overflow flags


def _trajectory_reference(found_inf, init_scale, growth_factor, backoff_factor, growth_interval):
    from minillm.amp import DynamicLossScaler

    scaler = DynamicLossScaler(init_scale=init_scale, growth_factor=growth_factor, backoff_factor=backoff_factor,
                               growth_interval=growth_interval)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.0)
    scales, skipped = [], []
    for t, flag in enumerate(found_inf):
        p.grad = torch.tensor([math.inf if flag else 1.0])
        if not scaler.step(opt):
            skipped.append(t)
        scaler.update()
        scales.append(scaler.get_scale())
    return scales, skipped


HAND_FLAGS = [
    (([False, False, True, False, False, False], 8.0, 2.0, 0.5, 2), ([8.0, 16.0, 8.0, 8.0, 16.0, 16.0], [2])),
    (([False, True, False, False], 8.0, 2.0, 0.5, 2), ([8.0, 4.0, 4.0, 8.0], [1])),
]


def _trajectory_out(got, args) -> tuple:
    what = "return (scales, skipped): a list of one scale per step and a list of the skipped steps' indices"
    if isinstance(got, (str, bytes)) or not hasattr(got, "__len__") or len(got) != 2:
        raise Wrong(f"{what}, got {short(got, 50)}")
    scales, skipped = got
    n = len(args[0])
    if any(isinstance(x, (str, bytes)) for x in (scales, skipped)):
        raise Wrong(f"{what}, got {short(got, 50)}")
    try:
        scales = [s.item() if isinstance(s, torch.Tensor) else s for s in scales]
        skipped = [s.item() if isinstance(s, torch.Tensor) else s for s in skipped]
    except (TypeError, ValueError, RuntimeError) as e:
        raise Wrong(f"{what}, got {short(got, 50)}") from e
    if not all(isinstance(s, numbers.Real) and not isinstance(s, bool) for s in scales):
        raise Wrong(f"the scales must be numbers, got {short(scales, 50)}")
    if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in skipped):
        raise Wrong(f"the skipped steps must be int indices (0 = the first step), got {short(skipped, 50)}")
    scales, skipped = [float(s) for s in scales], [int(s) for s in skipped]
    if len(scales) != n:
        raise Wrong(f"return one scale per step ({n} steps), got {len(scales)}")
    return tuple(scales), tuple(skipped)


def _same_trajectory(got: tuple, want: tuple, args: tuple) -> bool:
    scales, skipped = got
    want_scales, want_skipped = want
    return skipped == tuple(want_skipped) and all(
        math.isfinite(a) and abs(a - b) <= 1e-5 * abs(b) for a, b in zip(scales, want_scales, strict=True))


def _trajectory_cases() -> list:
    cases = [(args, (tuple(s), tuple(k))) for args, (s, k) in HAND_FLAGS]
    top = ([False] * 4, 2.0**126, 2.0, 0.5, 1)  # 2^126 -> 2^127 -> 2^128 would be inf in float32: stays
    cases.append((top, tuple(map(tuple, _trajectory_reference(*top)))))
    for _ in range(25):
        n = random.randint(8, 50)
        p = random.choice([0.05, 0.15, 0.3, 0.5])
        flags = [random.random() < p for _ in range(n)]
        args = (flags, random.choice([2.0**16, 2.0**10, 1.0, 3.0, 1024.0]), random.choice([2.0, 1.5, 4.0]),
                random.choice([0.5, 0.25, 0.75]), random.randint(1, 6))
        cases.append((args, tuple(map(tuple, _trajectory_reference(*args)))))
    return cases


def _schedule(found_inf, init_scale, growth_factor, backoff_factor, growth_interval, *, reset_on_inf=True,
              reset_on_growth=True, extra=0, before=False, cap=True, every_kth_step=False, backoff=True):
    """The rule with one thing changed (simulated wrong solutions)."""
    scale, clean = init_scale, 0
    scales, skipped = [], []
    for t, flag in enumerate(found_inf):
        used = scale
        if flag:
            skipped.append(t)
            scale = scale * backoff_factor if backoff else scale
            clean = 0 if reset_on_inf else clean
        else:
            clean += 1
            if every_kth_step:  # grows at steps interval, 2 interval, ... whatever came before
                grow = (t + 1) % growth_interval == 0
            elif reset_on_growth:
                grow = clean == growth_interval + extra
            else:
                grow = clean >= growth_interval + extra
            if grow:
                if not cap or scale * growth_factor <= FLOAT32_MAX:
                    scale *= growth_factor
                clean = 0 if reset_on_growth else clean
        scales.append(used if before else scale)
    return scales, skipped


TRAJECTORY_MISTAKES = [
    (lambda *a: _schedule(*a, reset_on_inf=False),
     "an overflow resets the count of clean steps: growth needs growth_interval clean steps IN A ROW"),
    (lambda *a: _schedule(*a, reset_on_growth=False),
     "after growing, the count of clean steps starts again from 0: the scale grows once per growth_interval clean "
     "steps, not at every clean step after the first growth_interval"),
    (lambda *a: _schedule(*a, extra=1),
     "off by one: the scale grows right after the growth_interval-th clean step in a row, not after one more"),
    (lambda *a: _schedule(*a, before=True),
     "scales[t] is the scale AFTER step t's update (what the next step uses), not the scale step t used"),
    (lambda *a: _schedule(*a, cap=False),
     "the scale is a float32: when growing would take it past the largest float32 (about 3.4e38), it stays"),
    (lambda *a: _schedule(*a, backoff=False),
     "on an overflow the step is skipped AND the scale is multiplied by backoff_factor"),
    (lambda *a: _schedule(*a, every_kth_step=True),
     "growth depends on the clean steps since the last growth or overflow, not on the step number: count them"),
]


AMP_EXERCISES = (
    Exercise("10.3", "Round fp32 bits to bf16, ties to even", 2, cases=_bf16_cases, name="round_to_bf16",
             normalize=_bits_out, same=_same_bits, mistakes=BF16_MISTAKES),
    Exercise("10.4", "The dynamic loss scale over a run", 2, cases=_trajectory_cases, name="loss_scale_trajectory",
             normalize=_trajectory_out, same=_same_trajectory, mistakes=TRAJECTORY_MISTAKES),
)
