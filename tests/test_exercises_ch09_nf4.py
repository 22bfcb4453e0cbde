"""Chapter 9's NF4 exercises (09.4 quantise, 09.5 dequantise): valid variants pass (loops, float32, midpoints
and bucketize, lists), values instead of indices and a badly shaped absmax get their own hints, the hand-worked
values the markdown shows are what minillm computes, and the checker's random blocks keep away from the rounding
boundaries. What every exercise gets (the solution passes, the stub is "not attempted", junk answers, each
simulated mistake's hint) is checked in test_exercises.py; the chapter's own junk answers and mistake counts in
test_exercises_ch09.py."""

from __future__ import annotations

import math
import re

import exercise_kit as kit
import pytest
import torch

from minillm.grading import check
from minillm.grading.ch09_nf4 import HAND_X1, HAND_X2, HAND_X3, _away_from_midpoints
from minillm.peft.nf4 import NF4_CODE, dequantize_blockwise, quantize_blockwise

CHAPTER = "09"
CELLS = kit.cells(kit.source(CHAPTER))


# ---------------------------------------------------------------------------------------------------
# valid variants: loops, float32 throughout, midpoints and bucketize, returning lists


def quantize_loop(x, blocksize):
    code = NF4_CODE.tolist()
    idx, absmax = [], []
    for b in range(0, len(x), blocksize):
        block = [float(v) for v in x[b: b + blocksize]]
        m = max(abs(v) for v in block)
        absmax.append(m)
        for v in block:
            s = v / m if m > 0 else 0.0
            idx.append(min(range(16), key=lambda i: abs(s - code[i])))
    return torch.tensor(idx), torch.tensor(absmax)


def quantize_midpoints_f32(x, blocksize):
    blocks = x.float().view(-1, blocksize)
    absmax = blocks.abs().amax(1)
    scaled = blocks * (1 / absmax.clamp(min=1e-30))[:, None]
    return torch.bucketize(scaled, (NF4_CODE[1:] + NF4_CODE[:-1]) / 2).flatten().to(torch.uint8), absmax


def dequantize_loop(idx, absmax, blocksize):
    return [NF4_CODE[int(i)].item() * float(absmax[k // blocksize]) for k, i in enumerate(idx)]


def dequantize_f32(idx, absmax, blocksize):
    return NF4_CODE[idx.long()] * absmax.float().repeat_interleave(blocksize)


@pytest.mark.parametrize("ex_id,fn", [("09.4", quantize_loop), ("09.4", quantize_midpoints_f32),
                                      ("09.4", lambda x, b: quantize_blockwise(x, NF4_CODE, b)),
                                      ("09.5", dequantize_loop), ("09.5", dequantize_f32)])
def test_valid_variants_pass(ex_id, fn):
    res = check(ex_id, fn)
    assert res.passed, res.hint


def test_wrong_dtype_and_shape_get_hints():
    def values_not_indices(x, b):
        idx, absmax = quantize_blockwise(x, NF4_CODE, b)
        return NF4_CODE[idx.long()], absmax

    res = check("09.4", values_not_indices)
    assert not res.passed and "integer indices" in res.hint
    res = check("09.4", lambda x, b: (quantize_blockwise(x, NF4_CODE, b)[0].long(),
                                       quantize_blockwise(x, NF4_CODE, b)[1][:, None]))
    assert not res.passed and "one number per block" in res.hint


# ---------------------------------------------------------------------------------------------------
# the worked examples of the markdown, and the random cases' margins


MARKDOWN = "\n".join(c.source(False) for c in CELLS if c.kind == "markdown")


def _numbers(snippet: str) -> list[float]:
    assert snippet in MARKDOWN, f"the markdown no longer shows {snippet!r}"
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", snippet)]


@pytest.mark.parametrize("x,bs,shown", [
    (HAND_X1, 4, "absmax `[2.0]`, idx `[15, 2, 10, 7]`"),
    (HAND_X2, 3, "absmax `[0.6, 4.0]`, idx `[7, 12, 0, 15, 14, 4]`"),
    (HAND_X3, 2, "absmax `[0.0, 0.25]`, idx `[7, 7, 0, 12]`"),
])
def test_hand_worked_quantize(x, bs, shown):
    idx, absmax = quantize_blockwise(torch.tensor(x), NF4_CODE, bs)
    nums = _numbers(shown)
    n_blocks = len(x) // bs
    assert absmax.tolist() == pytest.approx(nums[:n_blocks]) and idx.tolist() == nums[n_blocks:]
    assert f"x = {x}" in MARKDOWN.replace("`", "")


@pytest.mark.parametrize("idx,absmax,bs,shown", [
    ([15, 2, 10, 7], [2.0], 4, "`[2.0, -1.0501461, 0.4922246, 0.0]`"),
    ([7, 12, 0, 15, 14, 4], [0.6, 4.0], 3, "`[0.0, 0.2644259, -0.6, 4.0, 2.8918273, -1.1377655]`"),
])
def test_hand_worked_dequantize(idx, absmax, bs, shown):
    got = dequantize_blockwise(torch.tensor(idx), torch.tensor(absmax, dtype=torch.float64), NF4_CODE, bs)
    assert got.tolist() == pytest.approx(_numbers(shown), abs=5e-8)


def test_random_cases_keep_away_from_the_boundaries():
    torch.manual_seed(0)
    x = torch.randn(64 * 50, dtype=torch.float64)
    moved = _away_from_midpoints(x, 64)
    blocks = moved.view(-1, 64)
    scaled = blocks / blocks.abs().amax(1, keepdim=True)
    mids = (NF4_CODE.double()[1:] + NF4_CODE.double()[:-1]) / 2
    assert (scaled[..., None] - mids).abs().min() >= 1e-4
    assert torch.equal(blocks.abs().amax(1), x.view(-1, 64).abs().amax(1))  # the absmax stay
    assert (moved - x).abs().max() <= 3e-4 * x.abs().max() + 1e-12 and not math.isnan(moved.sum())
