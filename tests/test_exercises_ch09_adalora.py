"""Chapter 9's AdaLoRA exercise (09.6, the cubic budget schedule): the solution passes and valid variants pass
(loops, float32, exact fractions, numpy and tensor answers), the stub is "not attempted", each simulated mistake
gets its own hint, junk never makes a check raise, and the worked example the markdown shows is what minillm
computes. Until exercises/src/09_peft.py holds these cells (they are pasted there at the merge) the cells are
read from exercises/src/09_peft_adalora_cells.py."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import exercise_kit as kit
import pytest
import torch

from minillm.grading import check, core
from minillm.grading.ch09_adalora import ADALORA_EXERCISES, HAND, HAND_BUDGETS, _cases
from minillm.peft.adalora import budget_schedule

CELLS_SRC = kit.ROOT / "exercises" / "src" / "09_peft_adalora_cells.py"
IDS = {"09.6": "adalora_budget"}


def _source():
    merged = [s for s in kit.SOURCES if s.name.startswith("09_peft") and s != CELLS_SRC]
    for s in merged:  # after the merge: the chapter's own source, once it holds the cells
        if "def adalora_budget" in s.read_text(encoding="utf-8"):
            return s
    return CELLS_SRC


@pytest.fixture(scope="module", autouse=True)
def registered():
    core.load_chapter("09")
    core.register(*[e for e in ADALORA_EXERCISES if e.id not in core.REGISTRY])


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
    assert "left" not in str(raised.value.original) and "**" not in str(raised.value.original)  # what, not how


@pytest.mark.parametrize("ex_id", IDS)
def test_each_simulated_mistake_gets_its_own_hint(ex_id):
    mistakes = core.REGISTRY[ex_id].mistakes
    assert len(mistakes) >= 8
    for _ in range(3):  # new random cases each time
        for fn, hint in mistakes:
            res = check(ex_id, fn)
            assert res.status == "failed" and res.hint.startswith(hint + ". "), (hint, res.hint)
            assert "\n" not in res.line(), res.line()


JUNK = (lambda *a: None, lambda *a: 1 / 0, "not a function", lambda *a: "text", lambda *a: (None, None),
        lambda *a: [1.0, 2.0], lambda *a: torch.zeros(0), lambda *a: float("nan"), lambda *a: float("inf"),
        lambda *a: torch.zeros(2, 3, dtype=torch.long), lambda *a: True, lambda *a: -1, lambda *a: a[1] + 0.5)


@pytest.mark.parametrize("ex_id", IDS)
def test_check_never_raises_on_junk(ex_id):
    for fn in JUNK:
        res = check(ex_id, fn)
        assert res.status == "failed" and res.hint, (ex_id, res)
        assert not res.hint.startswith(("internal", "checking what your function returned raised")), res.hint


# ---------------------------------------------------------------------------------------------------
# valid variants


def budget_loop(step, b0, bt, tinit, tfinal, total):
    """The fall step by step: the cube by repeated multiplication, the floor by counting."""
    if step <= tinit:
        return b0
    if step > total - tfinal:
        return bt
    left = 1.0
    for _ in range(step - tinit):
        left -= 1.0 / (total - tfinal - tinit)
    cube = 1.0
    for _ in range(3):
        cube *= left
    value, k = (b0 - bt) * cube + bt, 0
    while k + 1 <= value + 1e-12 * value:
        k += 1
    return k


def budget_f32(step, b0, bt, tinit, tfinal, total):
    t = torch.tensor(float(step), dtype=torch.float32)
    left = (1 - (t - tinit) / (total - tfinal - tinit)).clamp(0, 1)
    value = (b0 - bt) * left ** 3 + bt
    value = torch.where(t <= tinit, torch.tensor(float(b0)), value)
    return torch.floor(value).to(torch.int64)


def budget_fraction(step, b0, bt, tinit, tfinal, total):
    if step <= tinit:
        return b0
    if step > total - tfinal:
        return bt
    left = 1 - Fraction(step - tinit, total - tfinal - tinit)
    return math.floor((b0 - bt) * left ** 3 + bt)


def budget_numpy(step, b0, bt, tinit, tfinal, total):
    import numpy as np

    return np.int64(budget_schedule(step, b0, bt, tinit, tfinal, total))


@pytest.mark.parametrize("fn", [budget_loop, budget_f32, budget_fraction, budget_numpy,
                                lambda *a: float(budget_schedule(*a)), budget_schedule])
def test_valid_variants_pass(fn):
    for _ in range(3):
        res = check("09.6", fn)
        assert res.passed, res.hint


def test_fractional_and_tensor_answers_get_hints():
    res = check("09.6", lambda *a: torch.tensor([budget_schedule(*a)] * 2))
    assert not res.passed and "one number" in res.hint
    res = check("09.6", lambda *a: str(budget_schedule(*a)))
    assert not res.passed and "as an int" in res.hint


# ---------------------------------------------------------------------------------------------------
# the worked example of the markdown, and the cases


MARKDOWN = "\n".join(c.source(False) for c in kit.cells(_source()) if c.kind == "markdown")


def test_worked_example_is_what_minillm_computes():
    shown = "`[24, 24, 24, 16, 11, 9, 8, 8, 8, 8, 8, 8]`"
    assert shown in MARKDOWN and [int(v) for v in re.findall(r"\d+", shown)] == HAND_BUDGETS
    assert "`init_budget = 24`" in MARKDOWN and "`tinit = 2`" in MARKDOWN and "`total_step = 10`" in MARKDOWN
    assert [budget_schedule(t, *HAND) for t in range(12)] == HAND_BUDGETS
    assert "16 * 0.512 + 8 = 16.192" in MARKDOWN and 16 * 0.512 + 8 == pytest.approx(16.192)


def test_cases_cover_every_phase_and_agree_with_minillm():
    for _ in range(5):
        cases = _cases()
        assert len(cases) > 40
        phases = set()
        for (t, b0, bt, tinit, tfinal, total), want in cases:
            phases.add("warm" if t <= tinit else "final" if t > total - tfinal else "fall")
            # minillm's float64 formula equals the exact floor except where the exact value is an integer
            assert budget_schedule(t, b0, bt, tinit, tfinal, total) in (want, want - 1)
        assert phases == {"warm", "fall", "final"}
