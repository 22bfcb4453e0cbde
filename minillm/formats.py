"""Binary floating-point formats from their bits: fp32, fp16, bf16 and the two 8-bit formats (fp8 e4m3, e5m2).

A float of a format with `exp_bits` exponent bits and `man_bits` mantissa bits is the bit string
sign | exponent field E | mantissa field M, and (IEEE 754 binary formats, section 3.4)

    normal      (E > 0):  (-1)^s * (1 + M / 2^man_bits) * 2^(E - bias)
    subnormal   (E = 0):  (-1)^s * (M / 2^man_bits)     * 2^(1 - bias)

`FloatFormat` holds the layout and derives everything else from it, nothing is copied from a table:

- `max`: the largest finite value. IEEE-like formats reserve the all-ones exponent for inf / NaN, so the largest
  exponent field is 2^e - 2 with an all-ones mantissa. fp8 e4m3 as OCP E4M3 (torch's `float8_e4m3fn`: finite, one
  NaN pattern per sign; Micikevicius et al. 2022, table 1) has no inf and gives the all-ones exponent back to
  finite numbers, keeping only S.1111.111 as NaN: largest field 2^4 - 1 = 15 with mantissa 110, i.e. 2^(15-7) *
  1.75 = 448.
- `min_normal` = 2^(1 - bias), `min_subnormal` = 2^(1 - bias - man_bits), `eps` = 2^-man_bits (the gap
  between 1 and the next float; `torch.finfo(...).eps`).

`decode(bits, fmt)` reads a bit pattern (`bit_string` writes it out field by field); `encode(x, fmt)` rounds a
Python float to the nearest representable value, ties to the even mantissa (IEEE's default rounding), and
handles overflow as PyTorch's casts do (checked in tests/test_amp.py against `torch.Tensor.to` for every format):

- fp32, fp16, bf16, fp8 e5m2 overflow to inf: a value rounds to inf once it reaches max + half an ulp
  (the tie goes to inf, whose "mantissa" is even).
- fp8 e4m3fn has no inf; torch's cast (2.13 here) saturates: everything beyond 448, +-inf included, becomes +-448,
  and only NaN gives NaN. Older releases give NaN for |x| >= 480 and +-inf (and for 464 < |x| < 480, which rounds
  to 480); that is `saturate=False`, the non-saturating mode of the OCP spec. The tests detect which behaviour the
  installed torch has.

Why the formats look the way they do (Kalamkar et al. 2019, "A Study of BFLOAT16 for Deep Learning Training"): bf16
has fp32's 8-bit exponent, hence about the same range (normals 2^-126 ... 3.39e38; fp32 values beyond bf16's max +
half an ulp round to inf, fp32 subnormals up to 2^-134, half of bf16's smallest subnormal 2^-133, round to 0), at
about 2-3 significant decimal digits, so no loss scaling is needed; fp16 trades range (max 65504, smallest
subnormal 2^-24 ~ 6e-8) for precision, which is why fp16 training needs loss scaling (`minillm.amp`). fp8 e4m3 is
the forward-pass format (precision), e5m2 the gradient format (range).

Leaves out: signalling vs quiet NaN payloads (encode writes one canonical NaN), rounding modes other than
nearest-even (stochastic rounding), fp8 scaling factors per tensor, fp4 / MX block formats.

References: IEEE 754-2019; Kalamkar et al. 2019 (bf16); Micikevicius et al. 2022, "FP8 Formats for Deep
Learning" (e4m3 / e5m2, table 1); torch.finfo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class FloatFormat:
    """A binary float layout. `nan`: "ieee" (all-ones exponent, any non-zero mantissa; all-ones exponent
    with zero mantissa is inf) or "fn" (only the all-ones exponent AND mantissa is NaN; no inf)."""

    name: str
    exp_bits: int
    man_bits: int
    bias: int
    has_inf: bool
    nan: str = "ieee"

    def __post_init__(self) -> None:
        if self.nan not in ("ieee", "fn"):
            raise ValueError(f"nan must be 'ieee' or 'fn', got {self.nan!r}")
        if self.has_inf != (self.nan == "ieee"):
            raise ValueError("has_inf=True goes with nan='ieee', has_inf=False with nan='fn'")

    @property
    def bits(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def max_exp_field(self) -> int:
        """Largest exponent field of a finite value."""
        all_ones = 2**self.exp_bits - 1
        return all_ones - 1 if self.nan == "ieee" else all_ones

    @property
    def max_man_at_top(self) -> int:
        """Largest mantissa field in the top binade (the all-ones one is NaN in 'fn' formats)."""
        all_ones = 2**self.man_bits - 1
        return all_ones if self.nan == "ieee" else all_ones - 1

    @property
    def max(self) -> float:
        return math.ldexp(1 + self.max_man_at_top / 2**self.man_bits, self.max_exp_field - self.bias)

    @property
    def min_normal(self) -> float:
        return math.ldexp(1.0, 1 - self.bias)

    @property
    def min_subnormal(self) -> float:
        return math.ldexp(1.0, 1 - self.bias - self.man_bits)

    @property
    def eps(self) -> float:
        return math.ldexp(1.0, -self.man_bits)

    @property
    def nan_bits(self) -> int:
        """The canonical (positive, quiet) NaN that `encode` writes."""
        exp_all = (2**self.exp_bits - 1) << self.man_bits
        if self.nan == "fn":
            return exp_all | (2**self.man_bits - 1)
        return exp_all | (1 << (self.man_bits - 1))  # quiet bit = top mantissa bit

    @property
    def inf_bits(self) -> int:
        if not self.has_inf:
            raise ValueError(f"{self.name} has no inf")
        return (2**self.exp_bits - 1) << self.man_bits


FP32 = FloatFormat("fp32", 8, 23, 127, True)
FP16 = FloatFormat("fp16", 5, 10, 15, True)
BF16 = FloatFormat("bf16", 8, 7, 127, True)
E4M3 = FloatFormat("fp8_e4m3fn", 4, 3, 7, False, nan="fn")
E5M2 = FloatFormat("fp8_e5m2", 5, 2, 15, True)
FORMATS = {f.name: f for f in (FP32, FP16, BF16, E4M3, E5M2)}


def fields(bits: int, fmt: FloatFormat) -> tuple[int, int, int]:
    """(sign, exponent field, mantissa field) of a bit pattern."""
    if not 0 <= bits < 2**fmt.bits:
        raise ValueError(f"bits must be an unsigned {fmt.bits}-bit integer for {fmt.name}, got {bits}")
    sign = bits >> (fmt.bits - 1)
    exp = (bits >> fmt.man_bits) & (2**fmt.exp_bits - 1)
    man = bits & (2**fmt.man_bits - 1)
    return sign, exp, man


def bit_string(bits: int, fmt: FloatFormat, sep: str = " ") -> str:
    """The bit pattern as text, sign / exponent / mantissa fields apart: 1.0 in fp16 is '0 01111 0000000000'."""
    sign, exp, man = fields(bits, fmt)
    return sep.join((str(sign), f"{exp:0{fmt.exp_bits}b}", f"{man:0{fmt.man_bits}b}"))


def decode(bits: int, fmt: FloatFormat) -> float:
    """The value of a bit pattern (exact: every value of these formats is a Python float)."""
    sign, exp, man = fields(bits, fmt)
    s = -1.0 if sign else 1.0
    top = 2**fmt.exp_bits - 1
    if exp == top and fmt.nan == "ieee":
        return s * math.inf if man == 0 else math.nan
    if exp == top and man == 2**fmt.man_bits - 1:  # "fn": the single NaN per sign
        return math.nan
    if exp == 0:  # subnormal: no hidden 1, exponent pinned at 1 - bias
        return s * math.ldexp(man, 1 - fmt.bias - fmt.man_bits)
    return s * math.ldexp(2**fmt.man_bits + man, exp - fmt.bias - fmt.man_bits)


def encode(x: float, fmt: FloatFormat, *, saturate: bool | None = None) -> int:
    """Bits of the value of `fmt` nearest to `x` (ties to even). Overflow: inf where the format has one;
    otherwise `saturate` (default: True, as torch 2.13's float8_e4m3fn cast) clamps to +-max, False gives NaN
    (as older torch releases' cast)."""
    if saturate is None:
        saturate = not fmt.has_inf
    sign_bit = (1 << (fmt.bits - 1)) if math.copysign(1.0, x) < 0 else 0
    if math.isnan(x):
        return fmt.nan_bits
    a = abs(x)
    if a == 0:
        return sign_bit
    if math.isinf(a):
        return sign_bit | _overflow(fmt, saturate)
    # a = m * 2^e with m in [0.5, 1): the unbiased exponent of a as 1.f * 2^E is E = e - 1
    _, e = math.frexp(a)
    exp_unb = max(e - 1, 1 - fmt.bias)  # subnormals share the smallest normal exponent
    quantum = math.ldexp(1.0, exp_unb - fmt.man_bits)  # spacing of the format's values in this binade
    n = round(a / quantum)  # a / quantum is exact (power-of-two scaling); round() ties to even
    if n == 2 ** (fmt.man_bits + 1):  # rounding carried into the next binade
        n //= 2
        exp_unb += 1
    if math.ldexp(n, exp_unb - fmt.man_bits) > fmt.max:
        return sign_bit | _overflow(fmt, saturate)
    if n < 2**fmt.man_bits:  # subnormal (or rounded to zero): exponent field 0
        return sign_bit | n
    return sign_bit | ((exp_unb + fmt.bias) << fmt.man_bits) | (n - 2**fmt.man_bits)


def _overflow(fmt: FloatFormat, saturate: bool) -> int:
    if fmt.has_inf:
        return fmt.inf_bits
    if saturate:
        return (fmt.max_exp_field << fmt.man_bits) | fmt.max_man_at_top
    return fmt.nan_bits


def round_to(x: float, fmt: FloatFormat) -> float:
    """x rounded to `fmt` and read back (what a cast to that dtype and back to float64 gives)."""
    return decode(encode(x, fmt), fmt)


def describe(fmt: FloatFormat) -> dict[str, float | int | str]:
    """One row of the formats table: layout and derived range / precision."""
    return {"name": fmt.name, "bits": fmt.bits, "exp_bits": fmt.exp_bits, "man_bits": fmt.man_bits,
            "bias": fmt.bias, "max": fmt.max, "min_normal": fmt.min_normal,
            "min_subnormal": fmt.min_subnormal, "eps": fmt.eps}
