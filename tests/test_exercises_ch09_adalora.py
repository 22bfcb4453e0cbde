"""Chapter 9's AdaLoRA exercise (09.6, the cubic budget schedule): valid variants pass (loops, float32, exact
fractions, numpy and tensor answers), a tensor or a string answer gets its own hint, the simulated mistakes are
caught on several draws of the random cases, the stub does not give the formula away, the worked example the
markdown shows is what minillm computes, and the checker's cases cover every phase. What every exercise gets
(the solution passes, the stub is "not attempted", junk answers, each simulated mistake's hint on one draw) is
checked in test_exercises.py; the chapter's own junk answers and mistake counts in test_exercises_ch09.py."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import exercise_kit as kit
import pytest
import torch

from minillm.grading import check, core
from minillm.grading.ch09_adalora import HAND, HAND_BUDGETS, _cases
from minillm.peft.adalora import budget_schedule

CHAPTER = "09"
CELLS = kit.cells(kit.source(CHAPTER))


def test_stub_does_not_give_the_fall_away(stubs):
    with pytest.raises(NotImplementedError) as e:
        stubs["adalora_budget"](5, *HAND)
    assert str(e.value).startswith("Exercise 09.6: ") and "left" not in str(e.value)


def test_simulated_mistakes_are_caught_on_every_draw_of_cases():
    core.load_chapter(CHAPTER)
    for _ in range(2):  # two more draws of random schedules than test_exercises.py's
        for fn, hint in core.REGISTRY["09.6"].mistakes:
            res = check("09.6", fn)
            assert res.status == "failed" and res.hint.startswith(hint + ". "), (hint, res.hint)


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


MARKDOWN = "\n".join(c.source(False) for c in CELLS if c.kind == "markdown")


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
