"""Chapter 10's saving-memory exercises (10.5 block-wise absmax int8, 10.6 gradient accumulation): the solution
passes and valid variants pass (loops, float64, other integer dtypes, autograd.grad, strided or reversed
splits), the stub is "not attempted" and says what, not how, each simulated mistake gets its own hint on
several draws, junk never makes a check raise, answers of the wrong form get their own hints, the
accumulation check catches a full-batch call and a single backward of the summed losses, and the worked
examples the markdown shows are what minillm computes. Until exercises/src/10_*.py holds these cells (they are
pasted there at the merge) they are read from exercises/src/10_save_cells.py."""

from __future__ import annotations

import re

import exercise_kit as kit
import pytest
import torch
import torch.nn.functional as F

from minillm.grading import check, core
from minillm.grading.ch10_save import (
    HAND_ABSMAX,
    HAND_GRAD,
    HAND_Q,
    HAND_W,
    HAND_X,
    HAND_XS,
    _reference,
    mse,
)
from minillm.optim8bit import dequantize_blockwise, linear_map, quantize_blockwise

IDS = {"10.5": "absmax_quantize", "10.6": "accumulated_grad"}
STUB_RE = re.compile(r'raise NotImplementedError\("Exercise (\d\d\.\d+): ([^"]*)"\)')
RECIPE = re.compile(r"[=@*/^\[\]]|\b(round|floor|abs|amax|max|backward|grad|reshape|view|pad|sum|mean)\b")


def _source():
    return kit.source("10")


@pytest.fixture(scope="module", autouse=True)
def registered():
    core.load_chapter("10")


@pytest.fixture(scope="module")
def sol() -> dict:
    return kit.load_namespace(_source(), solution=True)


@pytest.fixture(scope="module")
def stub() -> dict:
    return kit.load_namespace(_source(), solution=False)


def test_check_cells_name_the_exercises():
    assert {k: v for k, v in kit.checked_functions(_source()).items() if k in IDS} == IDS


@pytest.mark.parametrize("ex_id", IDS)
def test_solution_passes_stub_not_attempted(ex_id, sol, stub):
    res = check(ex_id, sol[IDS[ex_id]])
    assert res.passed and res.points == res.max_points == 2, res.hint
    res = check(ex_id, stub[IDS[ex_id]])
    assert (res.status, res.points) == ("not attempted", 0)
    with pytest.raises(core.LearnerError) as raised:
        core.REGISTRY[ex_id].checker(stub[IDS[ex_id]])
    assert isinstance(raised.value.original, NotImplementedError)
    assert f"Exercise {ex_id}: " in str(raised.value.original)


def test_stubs_say_what_not_how():
    code = "\n".join(c.source(False) for c in kit.cells(_source()) if c.kind == "code")
    stubs = dict(STUB_RE.findall(code))
    assert set(IDS) <= set(stubs)
    for ex_id in IDS:
        assert stubs[ex_id].startswith("return ") and not RECIPE.search(stubs[ex_id]), stubs[ex_id]


@pytest.mark.parametrize("ex_id", IDS)
def test_each_simulated_mistake_gets_its_own_hint(ex_id):
    kit.assert_mistakes_caught(ex_id, min_mistakes=5, not_in_line=("tensor([",))


JUNK = (lambda *a: None, lambda *a: 1 / 0, "not a function", lambda *a: "text", lambda *a: (None, None),
        lambda *a: [1.0, 2.0], lambda *a: torch.zeros(0), lambda *a: float("nan"), lambda *a: (torch.zeros(2), []),
        lambda *a: torch.zeros(2, 3, dtype=torch.long), lambda *a: True, lambda *a: ("a", "b"),
        lambda *a: ([0.5], [1], [2]))


@pytest.mark.parametrize("ex_id", IDS)
def test_check_never_raises_on_junk(ex_id):
    kit.assert_junk_gets_a_hint(ex_id, JUNK)


# ---------------------------------------------------------------------------------------------------
# 10.5: valid variants, answers of the wrong form, the worked example


def quant_loop(x, block):
    """Block by block in Python, float64, int64 codes, a list of absmax values."""
    flat = x.reshape(-1).double().tolist()
    q, absmax = [], []
    for start in range(0, len(flat), block):
        part = flat[start:start + block]
        big = max(abs(v) for v in part)
        absmax.append(big)
        q += [round(127 * v / big) if big > 0 else 0 for v in part]
    return torch.tensor(q, dtype=torch.int64), absmax


def quant_float_codes(x, block):
    """Codes left as integral floats of x's shape; absmax of zero blocks clamped to a tiny value."""
    flat = x.reshape(-1)
    blocks = F.pad(flat, (0, -flat.numel() % block)).view(-1, block)
    absmax = blocks.abs().amax(1).clamp_min(1e-30)
    return torch.round(blocks / absmax[:, None] * 127).reshape(-1)[: flat.numel()].view(x.shape), absmax


@pytest.mark.parametrize("fn", [quant_loop, quant_float_codes,
                                lambda x, b: (lambda q, a: (q.long() - 128, a))(
                                    *quantize_blockwise(x, linear_map(signed=True), b))])
def test_quantise_valid_variants_pass(fn):
    for _ in range(3):
        res = check("10.5", fn)
        assert res.passed, res.hint


def test_quantise_wrong_forms_get_hints(sol):
    ref = sol["absmax_quantize"]
    cases = [
        (lambda x, b: ref(x, b)[0], "return a pair (q, absmax)"),
        (lambda x, b: (ref(x, b)[0], ref(x, b)[1].max().reshape(1)), "one per block"),
        (lambda x, b: (ref(x, b)[0].float() / 127, ref(x, b)[1]), "whole numbers"),
        (lambda x, b: (ref(x, b)[0][:-1], ref(x, b)[1]), "one code per value of x"),
        (lambda x, b: (torch.where(ref(x, b)[0] == 0, float("nan"), ref(x, b)[0].float()), ref(x, b)[1]),
         "all-zero block"),
    ]
    for fn, fragment in cases:
        res = check("10.5", fn)
        assert not res.passed and fragment in res.hint, (fragment, res.hint)


def test_quantise_worked_example_is_what_minillm_computes():
    markdown = "\n".join(c.source(False) for c in kit.cells(_source()) if c.kind == "markdown")
    assert "`q = [32, -127, 0, 127, 127, -13]`" in markdown and "`absmax = [2.0, 3.0]`" in markdown
    assert "`x = [0.5, -2.0, 0.0, 2.0, 3.0, -0.3]`" in markdown and "`block = 4`" in markdown
    x = torch.tensor(HAND_X, dtype=torch.float64)
    assert _reference(x, 4) == (tuple(HAND_Q), tuple(HAND_ABSMAX))
    q, absmax = quantize_blockwise(x, linear_map(signed=True), 4)
    back = dequantize_blockwise(q, absmax, linear_map(signed=True), x.shape, 4)
    scale = torch.tensor([2.0] * 4 + [3.0] * 2)  # each value's block absmax
    torch.testing.assert_close(back, torch.tensor(HAND_Q, dtype=torch.float32) / 127 * scale)
    assert round(127 * 0.25) == 32 and round(127 * -0.1) == -13  # the markdown's 31.75 and -12.7


# ---------------------------------------------------------------------------------------------------
# 10.6: valid variants, the accumulation check, the worked example


def accum_autograd(loss_fn, w, x, y, k):
    """torch.autograd.grad into a separate buffer, micro-batches in reverse order; w.grad left alone."""
    rows = len(x) // k
    total = torch.zeros_like(w)
    for j in reversed(range(k)):
        loss = loss_fn(w, x[j * rows:(j + 1) * rows], y[j * rows:(j + 1) * rows])
        total += torch.autograd.grad(loss / k, w)[0]
    return total


def accum_strided(loss_fn, w, x, y, k):
    """Rows j, j + k, j + 2k, ... in micro-batch j (another split into equal parts), zero_ instead of None."""
    if w.grad is not None:
        w.grad.zero_()
    for j in range(k):
        (loss_fn(w, x[j::k], y[j::k]) / k).backward()
    return w.grad.clone()


@pytest.mark.parametrize("fn", [accum_autograd, accum_strided])
def test_accumulation_valid_variants_pass(fn):
    for _ in range(3):
        res = check("10.6", fn)
        assert res.passed, res.hint


def full_batch(loss_fn, w, x, y, k):
    return torch.autograd.grad(loss_fn(w, x, y), w)[0]


def summed_then_backward(loss_fn, w, x, y, k):
    rows = len(x) // k
    total = sum(loss_fn(w, x[j * rows:(j + 1) * rows], y[j * rows:(j + 1) * rows]) / k for j in range(k))
    return torch.autograd.grad(total, w)[0]


def with_logging_call(loss_fn, w, x, y, k):
    loss_fn(w, x, y)  # "for the log": a full-batch forward the task does not allow
    return accum_autograd(loss_fn, w, x, y, k)


@pytest.mark.parametrize(("fn", "fragment"), [(full_batch, "call loss_fn once per micro-batch"),
                                              (with_logging_call, "call loss_fn once per micro-batch"),
                                              (summed_then_backward, "before the next forward")])
def test_accumulation_check_catches_equal_values_computed_wrongly(fn, fragment):
    res = check("10.6", fn)  # the values are right: only the instrumented loss_fn can tell
    assert not res.passed and fragment in res.hint, res.hint


def test_accumulation_wrong_shape_gets_a_hint():
    res = check("10.6", lambda loss_fn, w, x, y, k: accum_autograd(loss_fn, w, x, y, k).reshape(-1))
    assert not res.passed and "expected w's shape" in res.hint


def test_accumulation_worked_example_is_right():
    markdown = "\n".join(c.source(False) for c in kit.cells(_source()) if c.kind == "markdown")
    assert "10 for rows 1-2, 50 for rows 3-4, and\n**30** for the batch" in markdown and "gives 60" in markdown
    w = torch.tensor([[HAND_W]], dtype=torch.float64, requires_grad=True)
    x = torch.tensor([[v] for v in HAND_XS], dtype=torch.float64)
    y = torch.zeros(4, 1, dtype=torch.float64)
    parts = [torch.autograd.grad(mse(w, x[i:i + 2], y[i:i + 2]), w)[0].item() for i in (0, 2)]
    assert parts == [10.0, 50.0] and sum(parts) / 2 == HAND_GRAD == 30.0
    assert torch.autograd.grad(mse(w, x, y), w)[0].item() == HAND_GRAD
