"""Checkers of chapter 9's QLoRA exercises (NF4), to be folded into minillm/grading/ch09.py.

| id | the learner writes | compared with |
|---|---|---|
| 09.11 | `nf4_quantize(x, blocksize)` -> `(idx, absmax)`, x 1-D | `minillm.peft.nf4.quantize_blockwise`, NF4_CODE |
| 09.12 | `nf4_dequantize(idx, absmax, blocksize)` -> values | `minillm.peft.nf4.dequantize_blockwise` |

Hand-worked cases come first (written out in the notebook), then random blocks: float32 and float64 normal
values at scales from 1e-3 to 10, block sizes 2 to 64, a block with a negative extreme, an all-zero block.
Random values are moved at least 1e-4 (in units of their block's absmax) away from every midpoint between two
neighbouring code values, so that dividing or multiplying by a reciprocal, in float32 or float64, cannot
change the nearest code. Tolerances: indices equal; absmax and dequantised values within 1e-6 relative
(+1e-12). The `*_MISTAKES` lists pair simulated wrong solutions with the hint naming each.
"""

from __future__ import annotations

import numbers

import torch

from minillm.grading import answers
from minillm.grading.answers import generator
from minillm.grading.core import Exercise, Wrong, short

# ---------------------------------------------------------------------------------------------------
# helpers


def _code() -> torch.Tensor:
    from minillm.peft.nf4 import NF4_CODE

    return NF4_CODE.double()


def _floats(got, shape: tuple, what: str) -> tuple:
    """(shape, values to 10 significant digits): values as small as 1e-4 keep their relative precision."""
    t = answers.float_tensor(got, what)
    if tuple(t.shape) != shape:
        raise Wrong(f"the result has shape {tuple(t.shape)}, expected {shape} ({what})")
    return shape, tuple(answers.canonical(v, significant=10) for v in t.flatten().tolist())


def _rel_close(got: tuple, want: tuple) -> bool:
    return answers.same_values(got, want, lambda b: 1e-6 * abs(b) + 1e-12)


def _indices(got, n: int) -> tuple[int, ...]:
    """The learner's indices: n integers in 0..15 (a tensor of an integer dtype, or a list of ints)."""
    if isinstance(got, torch.Tensor):
        got = got.detach()
        if got.is_floating_point() or got.dtype == torch.bool:
            raise Wrong(f"idx must hold integer indices into NF4 (0..15), got a tensor of dtype {got.dtype}: "
                        "return positions in the table, not code values")
        items = got.flatten().tolist() if got.dim() == 1 else None
        if items is None:
            raise Wrong(f"idx must be 1-D of shape ({n},), one index per value, got shape {tuple(got.shape)}")
    else:
        try:
            items = list(got)
        except TypeError as e:
            raise Wrong(f"idx must be a tensor or list of ints, got {type(got).__name__} {got!r:.40}") from e
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items):
            raise Wrong(f"idx must hold integers 0..15, got {short(items, 40)}")
    if len(items) != n:
        raise Wrong(f"idx has {len(items)} entries, expected {n}: one index per value of x")
    if any(not 0 <= v <= 15 for v in items):
        raise Wrong(f"every index must lie in 0..15 (NF4 has 16 values), got {short(items, 60)}")
    return tuple(int(v) for v in items)


def _away_from_midpoints(x: torch.Tensor, blocksize: int) -> torch.Tensor:
    """x with every value whose scaled position lies within 1e-4 of a decision boundary moved 3e-4 further."""
    code = _code()
    mids = (code[:-1] + code[1:]) / 2  # (15,)
    x = x.clone()
    for _ in range(3):
        blocks = x.double().view(-1, blocksize)
        absmax = blocks.abs().amax(1, keepdim=True).clamp(min=1e-300)
        scaled = blocks / absmax  # (n_blocks, blocksize)
        d = scaled[..., None] - mids  # (n_blocks, blocksize, 15)
        near = d.abs().amin(-1) < 1e-4
        if not near.any():
            return x
        side = torch.sign(d.gather(-1, d.abs().argmin(-1, keepdim=True))[..., 0])  # which side of the boundary
        moved = blocks + near * side * 3e-4 * absmax  # midpoints are <= 0.862: no value becomes the absmax
        x = moved.reshape(-1).to(x.dtype)
    return x


def _blocks_cases() -> list[tuple[torch.Tensor, int]]:
    """(x, blocksize) inputs: the hand-worked ones, then random blocks of every kind the task allows."""
    f32 = torch.float32
    cases = [(torch.tensor(HAND_X1, dtype=f32), 4), (torch.tensor(HAND_X2, dtype=f32), 3),
             (torch.tensor(HAND_X3), 2)]
    gen = generator()
    for dtype, bs, n_blocks, scale in [(f32, 64, 2, 0.02), (torch.float64, 8, 5, 3.0), (f32, 16, 3, 1e-3),
                                       (torch.float64, 64, 1, 10.0), (f32, 2, 7, 1.0), (f32, 32, 4, 0.5)]:
        x = (scale * torch.randn(n_blocks * bs, generator=gen, dtype=torch.float64)).to(dtype)
        x.view(-1, bs)[0, int(torch.randint(bs, (1,), generator=gen))] = -4 * scale  # a negative extreme
        if n_blocks > 2:
            x.view(-1, bs)[1] = 0.0  # an all-zero block
        cases.append((_away_from_midpoints(x, bs), bs))
    return cases


# hand-worked inputs of 09.11 (the notebook's markdown shows them with their answers)
HAND_X1 = [2.0, -1.0, 0.5, 0.0]  # one block of 4: absmax 2 -> idx [15, 2, 10, 7]
HAND_X2 = [0.0, 0.3, -0.6, 4.0, 2.9, -1.0]  # two blocks of 3: absmax [0.6, 4] -> idx [7, 12, 0, 15, 14, 4]
HAND_X3 = [0.0, 0.0, -0.25, 0.125]  # blocksize 2: an all-zero block, then absmax 0.25 -> idx [7, 7, 0, 12]

# ---------------------------------------------------------------------------------------------------
# 09.11 quantise to NF4


def _quant_out(got, args) -> tuple:
    x, bs = args
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise Wrong(f"return a pair (idx, absmax), got {type(got).__name__} {short(got, 40)}")
    idx = _indices(got[0], x.numel())
    absmax = _floats(got[1], (x.numel() // bs,), "absmax: one number per block of blocksize values")
    return idx, absmax


def _same_quant(got, want, args) -> bool:
    return got[0] == want[0] and _rel_close(got[1], want[1])


def _nearest(scaled: torch.Tensor) -> torch.Tensor:
    return (scaled[..., None] - _code()).abs().argmin(-1)


def _blocks(x, bs):
    return x.double().view(-1, bs)


def _safe(absmax):
    return torch.where(absmax > 0, absmax, torch.ones_like(absmax))


def quant_signed_max(x, bs):
    b = _blocks(x, bs)
    absmax = b.amax(1)  # the largest value, not the largest magnitude
    return _nearest((b / _safe(absmax)[:, None]).clamp(-1, 1)).flatten(), absmax


def quant_global_absmax(x, bs):
    b = _blocks(x, bs)
    absmax = b.abs().max().expand(b.shape[0])  # one scale for everything
    return _nearest(b / _safe(absmax)[:, None]).flatten(), absmax.clone()


def _absmax(x, bs):
    b = _blocks(x, bs)
    absmax = b.abs().amax(1)
    return b / _safe(absmax)[:, None], absmax


def quant_round_up(x, bs):
    scaled, absmax = _absmax(x, bs)
    return torch.bucketize(scaled, _code()).flatten(), absmax  # the first code value >= x


def quant_round_down(x, bs):
    scaled, absmax = _absmax(x, bs)
    return (torch.bucketize(scaled, _code(), right=True) - 1).flatten(), absmax  # the last code value <= x


def quant_uniform_int4(x, bs):
    scaled, absmax = _absmax(x, bs)
    return (torch.round(scaled * 7) + 7).long().flatten().clamp(0, 15), absmax  # 15 evenly spaced levels


def quant_zero_block_nan(x, bs):
    b = _blocks(x, bs)
    absmax = b.abs().amax(1)
    scaled = b / absmax[:, None]  # 0 / 0 = nan in an all-zero block
    return torch.nan_to_num((scaled[..., None] - _code()).abs(), nan=0.0).argmin(-1).flatten(), absmax


QUANT_MISTAKES = [
    (quant_signed_max, "the scale of a block is its largest ABSOLUTE value |x|: a block whose extreme value is "
                       "negative (e.g. -0.6 in [0, 0.3, -0.6]) must be scaled by 0.6"),
    (quant_global_absmax, "each block of `blocksize` consecutive values has its own absmax (one number per block), "
                          "not one for the whole tensor"),
    (quant_round_up, "each value goes to the NEAREST code value; yours takes the next one up (the first code >= "
                     "the value): compare with the midpoints between neighbouring code values"),
    (quant_round_down, "each value goes to the NEAREST code value; yours takes the next one down (the last code <= "
                       "the value): compare with the midpoints between neighbouring code values"),
    (quant_uniform_int4, "NF4's 16 values are not evenly spaced: take the index of the nearest of the 16 values in "
                         "NF4, not a rounded integer level"),
    (quant_zero_block_nan, "an all-zero block has absmax 0: avoid dividing 0 by 0 (nan); all its values are 0 and "
                           "take the index of the code value 0 (7)"),
]


def _cases_quantize() -> list:
    from minillm.peft.nf4 import NF4_CODE, quantize_blockwise

    cases = []
    for x, bs in _blocks_cases():
        idx, absmax = quantize_blockwise(x, NF4_CODE, bs)
        cases.append(((x, bs), _quant_out((idx.long(), absmax), (x, bs))))
    return cases


# ---------------------------------------------------------------------------------------------------
# 09.12 dequantise


def _dequant_out(got, args) -> tuple:
    idx = args[0]
    return _floats(got, (idx.numel(),), "the dequantised values, one per index")


def _same_dequant(got, want, args) -> bool:
    return _rel_close(got, want)


def dequant_tiled(idx, absmax, bs):
    return _code()[idx] * absmax.double().repeat(bs)  # [a0, a1, a0, a1, ...]: tiles instead of repeating each


def dequant_no_scale(idx, absmax, bs):
    return _code()[idx].clone()


def dequant_divide(idx, absmax, bs):
    return _code()[idx] / absmax.double().repeat_interleave(bs)


def dequant_uniform(idx, absmax, bs):
    return (idx.double() - 7) / 7 * absmax.double().repeat_interleave(bs)


DEQUANT_MISTAKES = [
    (dequant_tiled, "value i belongs to block i // blocksize: its scale is absmax[i // blocksize] (each absmax "
                    "repeated blocksize times in a row, not the whole absmax tensor tiled)"),
    (dequant_no_scale, "multiply each code value by its block's absmax: the codes only span [-1, 1]"),
    (dequant_divide, "quantising divided by absmax, so dequantising MULTIPLIES by it"),
    (dequant_uniform, "idx is a position in the NF4 table (NF4[idx]), not an evenly spaced integer level"),
]


def _cases_dequantize() -> list:
    from minillm.peft.nf4 import NF4_CODE, dequantize_blockwise, quantize_blockwise

    cases = [((torch.tensor([15, 2, 10, 7]), torch.tensor([2.0], dtype=torch.float64), 4), None),
             ((torch.tensor([7, 12, 0, 15, 14, 4]), torch.tensor([0.6, 4.0], dtype=torch.float64), 3), None)]
    for x, bs in _blocks_cases()[3:]:
        idx, absmax = quantize_blockwise(x, NF4_CODE, bs)
        cases.append(((idx.long(), absmax.to(x.dtype), bs), None))
    return [(args, _dequant_out(dequantize_blockwise(*args[:2], NF4_CODE, args[2]), args)) for args, _ in cases]


NF4_EXERCISES = (
    Exercise("09.11", "Quantise blocks to NF4", 2, cases=_cases_quantize, name="nf4_quantize", normalize=_quant_out,
             same=_same_quant, mistakes=QUANT_MISTAKES),
    Exercise("09.12", "Dequantise NF4", 1, cases=_cases_dequantize, name="nf4_dequantize", normalize=_dequant_out,
             same=_same_dequant, mistakes=DEQUANT_MISTAKES),
)
