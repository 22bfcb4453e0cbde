"""Checkers of chapter 13's 3D-parallelism exercises (minillm/grading/ch13_plan.py, cells of notebook 13.3): the
solution passes, the stub is "not attempted" and says what, not how, every simulated mistake gets its own hint on
several draws, valid variants pass (loops over all ranks, numpy / tensor / Fraction answers, other orders of the
ranks), junk gets a hint, the worked examples of the markdown are what minillm computes, and the cases cover what
the task allows. The cells are read from the chapter's exercise source, exercises/src/13_parallelism.py; the ids
from PLAN_EXERCISES."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import exercise_kit as kit
import pytest
import torch

from minillm.distributed.plan import ParallelPlan, device_mesh_layout
from minillm.distributed.zero import zero_memory
from minillm.grading import check, core
from minillm.grading.ch13_plan import (
    HAND_MESH,
    HAND_STATES,
    HAND_STEP,
    PLAN_EXERCISES,
    _mesh_cases,
    _state_cases,
    _step_cases,
)

SRC = kit.source("13")
MESH, STATES, STEP = PLAN_EXERCISES
core.load_chapter("13")

RECIPE = re.compile(r"[=@*/^\[\]]|\b(softmax|masked_fill|topk|cumsum|repeat_interleave|gather|sqrt|exp|log|"
                    r"arange|tril|reshape|sum|scatter|sigmoid|erf|silu|itemsize|floor|ceil|sin|cos)\b")
JUNK = (lambda *a: None, lambda *a: 1 / 0, "not a function", lambda *a: "text", lambda *a: True,
        lambda *a: (None, None), lambda *a: [1.0, 2.0, 3.0], lambda *a: torch.zeros(0), lambda *a: float("nan"),
        lambda *a: math.inf, lambda *a: {"tp": [0.5], "pp": [1], "dp": [2]}, lambda *a: {"tp": [0]},
        lambda *a: ("a", "b"), lambda *a: torch.zeros(2, 3))


# the solution / stubs fixtures and the checks every part gets (solution, stub, mistakes, junk)
globals().update(kit.part_tests(SRC, PLAN_EXERCISES, JUNK, RECIPE))


# ---------------------------------------------------------------------------------------------------
# valid variants


def mesh_by_search(rank, dp, tp, pp):
    """Loop over every rank and keep those that differ from `rank` in one coordinate only; tuples, reversed."""
    def coord(r):
        return r // (tp * pp), r // tp % pp, r % tp

    me = coord(rank)
    out = {}
    for k, axis in enumerate(("dp", "pp", "tp")):
        out[axis] = tuple(reversed([r for r in range(dp * tp * pp)
                                    if all(coord(r)[j] == me[j] for j in range(3) if j != k)]))
    return out


def mesh_by_torch(rank, dp, tp, pp):
    grid = torch.arange(dp * pp * tp).view(dp, pp, tp)
    d, p, t = rank // (tp * pp), rank // tp % pp, rank % tp
    return {"dp": grid[:, p, t], "pp": grid[d, :, t], "tp": grid[d, p, :]}


@pytest.mark.parametrize("fn", [mesh_by_search, mesh_by_torch])
def test_valid_mesh_variants_pass(fn):
    for _ in range(3):
        res = check(MESH.id, fn)
        assert res.passed, res.hint


def states_fraction(psi, dp, tp, pp, zero_stage):
    local = Fraction(psi) / (tp * pp)
    parts = [(2, 3), (2, 2), (12, 1)]  # bytes, the stage from which they are split
    return float(sum(b * local / (dp if zero_stage >= s else 1) for b, s in parts))


@pytest.mark.parametrize("fn", [states_fraction,
                                lambda psi, dp, tp, pp, z: zero_memory(psi / (tp * pp), dp, z),
                                lambda *a: torch.tensor(states_fraction(*a), dtype=torch.float64)])
def test_valid_state_variants_pass(fn):
    for _ in range(3):
        res = check(STATES.id, fn)
        assert res.passed, res.hint


def step_loop(m, p, slot, t_dp):
    """Simulate the timeline: stage s runs micro-batch i in slot i + s."""
    busy = {(i + s) for i in range(m) for s in range(p)}
    slots = max(busy) + 1
    return [slots * slot + t_dp, 1 - m / slots]


@pytest.mark.parametrize("fn", [step_loop, lambda m, p, slot, t: torch.tensor(
    [(m + p - 1) * slot + t, ParallelPlan(1, 1, p, micro_batches=m).bubble()], dtype=torch.float64)])
def test_valid_step_variants_pass(fn):
    for _ in range(3):
        res = check(STEP.id, fn)
        assert res.passed, res.hint


# ---------------------------------------------------------------------------------------------------
# cases and worked examples


def test_cases_cover_the_task():
    for _ in range(3):
        shapes = {args[1:] for args, _ in _mesh_cases()}
        assert (1, 1, 1) in shapes and any(d > 1 and t > 1 and p > 1 and len({d, t, p}) == 3 for d, t, p in shapes)
        stages = {args[4] for args, _ in _state_cases()}
        assert stages == {0, 1, 2, 3} and any(args[1] == 1 for args, _ in _state_cases())
        steps = [args for args, _ in _step_cases()]
        assert any(p == 1 for _, p, _, _ in steps) and any(m == 1 for m, _, _, _ in steps)


MARKDOWN = "\n".join(c.source(False) for c in kit.cells(SRC) if c.kind == "markdown")


def test_worked_examples_are_what_minillm_computes():
    rank, dp, tp, pp = HAND_MESH[0]
    layout = device_mesh_layout(dp, tp, pp)
    assert {a: next(g for g in layout[a] if rank in g) for a in ("tp", "pp", "dp")} == HAND_MESH[1]
    assert '`{"tp": [4, 5], "pp": [5, 7], "dp": [1, 5]}`' in MARKDOWN
    psi, dp, tp, pp, z = HAND_STATES[0]
    assert zero_memory(psi / (tp * pp), dp, z) == pytest.approx(HAND_STATES[1], rel=1e-12)
    assert f"{HAND_STATES[1]:.2e}" == "2.39e+10" and "2.39e10 bytes" in MARKDOWN
    m, p, slot, t = HAND_STEP[0]
    assert (m + p - 1) * slot + t == HAND_STEP[1][0] and ParallelPlan(1, 1, p, micro_batches=m).bubble() == \
        pytest.approx(HAND_STEP[1][1])
    assert "(6.5, 3/11 ≈ 0.273)" in MARKDOWN
