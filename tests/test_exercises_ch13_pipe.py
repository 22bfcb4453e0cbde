"""Checkers of chapter 13's pipeline exercises (minillm/grading/ch13_pipe.py, cells in
exercises/src/13_parallelism.py):
the solution passes, the stub is "not attempted" and does not give the order away, every simulated mistake gets
its own hint on several draws of the random cases, valid variants pass (loops, counters, lists instead of tuples,
float32, Fraction and tensor answers), junk gets a hint, the worked examples of the markdown are what minillm
computes, and the cases cover what the tasks allow (m smaller than the warm-up, one stage, unbalanced timelines,
backwards out of order).

The cells are read from the chapter's exercise source, exercises/src/13_parallelism.py (kit.source("13")).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

import exercise_kit as kit
import pytest
import torch

from minillm.distributed.schedules import (
    bubble_fraction,
    gpipe_schedule,
    one_f_one_b_schedule,
    peak_in_flight,
    timeline,
)
from minillm.grading import check, core
from minillm.grading.ch13_pipe import (
    HAND_BUBBLE,
    HAND_ORDER,
    HAND_PEAK,
    HAND_TIMELINE,
    PIPE_EXERCISES,
    _bubble_cases,
    _order_cases,
    _peak_cases,
)

SRC = kit.source("13")
ORDER, BUBBLE, PEAK = PIPE_EXERCISES
core.load_chapter("13")

# test_exercises.py's rule for stub messages: no operator, bracket or torch recipe
RECIPE = re.compile(r"[=@*/^\[\]+]| - |\b(min|max|sum|range|len|set|warm|p - 1|alternat)\b")
JUNK = (lambda *a: None, lambda *a: 1 / 0, "not a function", lambda *a: "text", lambda *a: True,
        lambda *a: (None, None), lambda *a: [1.0, 2.0], lambda *a: torch.zeros(0), lambda *a: float("nan"),
        lambda *a: math.inf, lambda *a: [("X", 0)], lambda *a: [("F", 0.5)], lambda *a: [("F",)],
        lambda *a: torch.zeros(2, 3, dtype=torch.long), lambda *a: -1)


# the solution / stubs fixtures and the checks every part gets (solution, stub, mistakes, junk)
globals().update(kit.part_tests(SRC, PIPE_EXERCISES, JUNK, RECIPE, min_mistakes=3, mistake_draws=4))


# ---------------------------------------------------------------------------------------------------
# 13.1 valid variants


def order_by_simulation(p, m, s):
    """A forward while forwards remain and fewer than p - s micro-batches are held, else a backward."""
    out, nf, nb = [], 0, 0
    while nb < m:
        if nf < m and nf - nb < p - s:
            out.append(["F", nf])
            nf += 1
        else:
            out.append(["B", nb])
            nb += 1
    return out


@pytest.mark.parametrize("fn", [order_by_simulation, lambda p, m, s: one_f_one_b_schedule(p, m)[s],
                                lambda p, m, s: tuple((k, torch.tensor(i)) for k, i in
                                                      one_f_one_b_schedule(p, m)[s])])
def test_valid_order_variants_pass(fn):
    for p in range(1, 7):  # the simulation variant is itself checked exhaustively against minillm here
        for m in range(1, 9):
            for s in range(p):
                got = [tuple(a) if not isinstance(a[1], torch.Tensor) else (a[0], int(a[1])) for a in fn(p, m, s)]
                assert got == one_f_one_b_schedule(p, m)[s], (p, m, s)
    res = check(ORDER.id, fn)
    assert res.passed, res.hint


def test_order_cases_cover_the_task():
    for _ in range(5):
        cases = _order_cases()
        assert any(m < p - 1 - s for (p, m, s), _ in cases)  # fewer micro-batches than the warm-up
        assert any(p == 1 for (p, _, _), _ in cases) and any(s == p - 1 and p > 1 for (p, _, s), _ in cases)
        assert any(0 < s < p - 1 for (p, _, s), _ in cases)


# ---------------------------------------------------------------------------------------------------
# 13.2 valid variants


def bubble_per_stage(tl):
    end = max(row[-1][2] for row in tl)  # each row is in time order
    idle = 0.0
    for row in tl:
        t = 0.0
        for _, start, stop in row:
            idle += start - t
            t = stop
        idle += end - t
    return idle / (len(tl) * end)


@pytest.mark.parametrize("fn", [bubble_per_stage, bubble_fraction,
                                lambda tl: torch.tensor(bubble_fraction(tl), dtype=torch.float32),
                                lambda tl: Fraction(bubble_fraction(tl)).limit_denominator(10**12),
                                lambda tl: torch.tensor(bubble_fraction(tl), dtype=torch.float64)])
def test_valid_bubble_variants_pass(fn):
    for _ in range(3):
        res = check(BUBBLE.id, fn)
        assert res.passed, res.hint


def test_bubble_cases_include_unbalanced_timelines():
    for _ in range(5):
        cases = _bubble_cases()
        formula = [(len(tl) - 1) / (sum(a[0] == "F" for a, _, _ in tl[0]) + len(tl) - 1) for (tl,), _ in cases]
        assert any(abs(f - want) > 1e-6 for f, (_, want) in zip(formula, cases, strict=True))
        assert all(min(b for row in tl for _, b, _ in row) == 0 for (tl,), _ in cases)  # time starts at 0


# ---------------------------------------------------------------------------------------------------
# 13.3 valid variants


def peak_counter(actions):
    live = peak = 0
    for kind, _ in actions:
        live += 1 if kind == "F" else -1
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("fn", [peak_counter, lambda a: torch.tensor(peak_counter(a)),
                                lambda a: peak_in_flight([a])[0]])
def test_valid_peak_variants_pass(fn):
    for _ in range(3):
        res = check(PEAK.id, fn)
        assert res.passed, res.hint


def test_peak_cases_have_backwards_out_of_order():
    for _ in range(5):
        orders = [acts for (acts,), _ in _peak_cases()]
        outs = [[i for k, i in acts if k == "B"] for acts in orders]
        assert any(b != sorted(b) for b in outs)


# ---------------------------------------------------------------------------------------------------
# the worked examples of the markdown


MARKDOWN = "\n".join(c.source(False) for c in kit.cells(SRC) if c.kind == "markdown")


def test_worked_examples_are_what_minillm_computes():
    text = " ".join(MARKDOWN.split())
    assert ('`p = 3`, `m = 4`, `s = 0` gives `[("F", 0), ("F", 1), ("F", 2), ("B", 0), ("F", 3), ("B", 1), '
            '("B", 2), ("B", 3)]`') in text
    assert one_f_one_b_schedule(3, 4)[0] == HAND_ORDER[1] and HAND_ORDER[0] == (3, 4, 0)
    last = " ".join(f"{k}{i}" for k, i in one_f_one_b_schedule(3, 4)[2])
    assert f"alternates from the start: `{last}`" in text
    tl = timeline(gpipe_schedule(2, 2), t_f=1, t_b=2)
    assert tl == HAND_TIMELINE and bubble_fraction(tl) == pytest.approx(HAND_BUBBLE, abs=1e-15)
    assert "stage 0 runs `F0 [0, 1]`, `F1 [1, 2]`, `B0 [5, 7]`, `B1 [7, 9]`, stage 1 runs `F0 [1, 2]`, " in text
    assert "`F1 [2, 3]`, `B0 [3, 5]`, `B1 [5, 7]`: the answer is `1/3` (0.3333)" in text
    acts, want = HAND_PEAK
    assert " ".join(f"{k}{i}" for k, i in acts) in text and f"gives `{want}`" in text
    assert peak_in_flight([acts]) == [want]


def test_stage_zero_only_bubble_is_caught_on_unbalanced_timelines():
    # on balanced timelines (the worked example, GPipe/1F1B played by `timeline`) stage 0's idle share is the
    # answer; the random unbalanced timelines must tell the two apart on every draw
    def stage0_only(tl):
        return 1 - sum(e - b for _, b, e in tl[0]) / max(e for row in tl for _, _, e in row)

    assert stage0_only(HAND_TIMELINE) == pytest.approx(HAND_BUBBLE)
    for _ in range(5):
        res = check(BUBBLE.id, stage0_only)
        assert res.status == "failed" and "not only stage 0's" in res.hint, res.hint
