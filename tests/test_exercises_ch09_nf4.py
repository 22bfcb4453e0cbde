"""Chapter 9's NF4 exercises (09.11 quantise, 09.12 dequantise): the solution passes and valid variants pass, the
stub is "not attempted", each simulated mistake gets its own hint, junk never makes a check raise, and the
hand-worked values the markdown shows are what minillm computes. Until exercises/src/09_peft.py holds these cells
(they are pasted there at the merge) the cells are read from exercises/src/09_peft_nf4_cells.py."""

from __future__ import annotations

import math
import re

import exercise_kit as kit
import pytest
import torch

from minillm.grading import check, core
from minillm.grading.ch09_nf4 import HAND_X1, HAND_X2, HAND_X3, NF4_EXERCISES, _away_from_midpoints
from minillm.peft.nf4 import NF4_CODE, dequantize_blockwise, quantize_blockwise

CELLS_SRC = kit.ROOT / "exercises" / "src" / "09_peft_nf4_cells.py"
IDS = {"09.11": "nf4_quantize", "09.12": "nf4_dequantize"}


def _source():
    merged = [s for s in kit.SOURCES if s.name.startswith("09_peft") and s != CELLS_SRC]
    for s in merged:  # after the merge: the chapter's own source, once it holds the cells
        if "def nf4_quantize" in s.read_text(encoding="utf-8"):
            return s
    return CELLS_SRC


@pytest.fixture(scope="module", autouse=True)
def registered():
    core.load_chapter("09")
    core.register(*[e for e in NF4_EXERCISES if e.id not in core.REGISTRY])


@pytest.fixture(scope="module")
def sol() -> dict:
    return kit.load_namespace(_source(), solution=True)


@pytest.fixture(scope="module")
def stub() -> dict:
    return kit.load_namespace(_source(), solution=False)


def test_check_cells_name_the_exercises():
    assert {k: v for k, v in kit.checked_functions(_source()).items() if k in IDS} == IDS


@pytest.mark.parametrize("ex_id", IDS)
def test_solution_passes_stub_not_attempted(ex_id, sol, stub, capsys):
    res = check(ex_id, sol[IDS[ex_id]])
    assert res.passed and res.points == res.max_points > 0, res.hint
    res = check(ex_id, stub[IDS[ex_id]])
    assert (res.status, res.points) == ("not attempted", 0)
    with pytest.raises(core.LearnerError) as raised:  # the checker's first call: the stub names its exercise
        core.REGISTRY[ex_id].checker(stub[IDS[ex_id]])
    assert isinstance(raised.value.original, NotImplementedError)
    assert f"Exercise {ex_id}: " in str(raised.value.original)


@pytest.mark.parametrize("ex_id", IDS)
def test_each_simulated_mistake_gets_its_own_hint(ex_id):
    mistakes = core.REGISTRY[ex_id].mistakes
    assert len(mistakes) >= 3
    for fn, hint in mistakes:
        res = check(ex_id, fn)
        assert res.status == "failed" and res.hint.startswith(hint + ". "), (fn.__name__, res.hint)
        assert "\n" not in res.line() and "tensor([" not in res.line(), res.line()


JUNK = (lambda *a: None, lambda *a: 1 / 0, "not a function", lambda *a: "text", lambda *a: (None, None),
        lambda *a: [1.0, 2.0], lambda *a: torch.zeros(0), lambda *a: float("nan"), lambda *a: ([1], [2]),
        lambda *a: (torch.zeros(2), []), lambda *a: ("a", "b"), lambda *a: torch.zeros(2, 3, dtype=torch.long),
        lambda x, *a: (torch.full_like(x, 3.0), x[:1]), lambda x, *a: (torch.full((x.numel(),), 99), x[:1]))


@pytest.mark.parametrize("ex_id", IDS)
def test_check_never_raises_on_junk(ex_id):
    for fn in JUNK:
        res = check(ex_id, fn)
        assert res.status == "failed" and res.hint, (ex_id, res)
        assert not res.hint.startswith(("internal", "checking what your function returned raised")), res.hint


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


@pytest.mark.parametrize("ex_id,fn", [("09.11", quantize_loop), ("09.11", quantize_midpoints_f32),
                                      ("09.11", lambda x, b: quantize_blockwise(x, NF4_CODE, b)),
                                      ("09.12", dequantize_loop), ("09.12", dequantize_f32)])
def test_valid_variants_pass(ex_id, fn):
    res = check(ex_id, fn)
    assert res.passed, res.hint


def test_wrong_dtype_and_shape_get_hints():
    def values_not_indices(x, b):
        idx, absmax = quantize_blockwise(x, NF4_CODE, b)
        return NF4_CODE[idx.long()], absmax

    res = check("09.11", values_not_indices)
    assert not res.passed and "integer indices" in res.hint
    res = check("09.11", lambda x, b: (quantize_blockwise(x, NF4_CODE, b)[0].long(),
                                       quantize_blockwise(x, NF4_CODE, b)[1][:, None]))
    assert not res.passed and "one number per block" in res.hint


# ---------------------------------------------------------------------------------------------------
# the worked examples of the markdown, and the random cases' margins


MARKDOWN = "\n".join(c.source(False) for c in kit.cells(_source()) if c.kind == "markdown")


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
