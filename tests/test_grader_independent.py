"""Independent test of the exercise grader: learner-written solutions, valid and wrong, through `check`.

The solutions in tests/learner_solutions/chNN.py were written from the notebook text alone (without the
grader's list of anticipated mistakes or the reference solutions). A function named
``valid_NN_k_*`` satisfies the task text of exercise NN.k and must pass; ``wrong_NN_k_*`` breaks a clause of
it (named in the comment above the function) and must fail. Cases where the grader disagrees, verified by
hand, are marked xfail(strict=True) in GRADER_DEFECTS, so the suite passes now and flags the fix.
"""
from __future__ import annotations

import importlib
import inspect
import random
import re
import sys
from pathlib import Path

import pytest
import torch

from minillm.grading import check

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # tests/ is not a package: import learner_solutions from here
CHAPTERS = sorted(p.stem for p in (HERE / "learner_solutions").glob("ch[0-9][0-9].py"))
NAME = re.compile(r"^(valid|wrong)_(\d\d)_(\d+)_\w+$")

# name -> reason; each verified: a valid solution the grader rejects, or a wrong one it accepts
GRADER_DEFECTS: dict[str, str] = {}


def _cases() -> list:
    cases = []
    for ch in CHAPTERS:
        mod = importlib.import_module(f"learner_solutions.{ch}")
        for name, fn in inspect.getmembers(mod, inspect.isfunction):
            m = NAME.match(name)
            if not m or fn.__module__ != mod.__name__:
                continue
            kind, nn, k = m.groups()
            marks = []
            if name in GRADER_DEFECTS:
                marks.append(pytest.mark.xfail(strict=True, reason="grader defect: " + GRADER_DEFECTS[name]))
            cases.append(pytest.param(f"{nn}.{k}", fn, kind == "valid", id=name, marks=marks))
    return cases


# The checks draw fresh random cases (from `random`) at every call, so a learner's one run sees one draw: a
# solution must get the same verdict on every seed. Fixed seeds keep this suite repeatable.
SEEDS = (0, 1, 2, 3, 4, 5)


@pytest.mark.parametrize(("exercise_id", "fn", "is_valid"), _cases())
def test_learner_solution(exercise_id: str, fn, is_valid: bool) -> None:
    verdicts = []
    for seed in SEEDS:
        random.seed(seed)
        torch.manual_seed(seed)
        res = check(exercise_id, fn)
        ok = (res.status == "passed" and res.points == res.max_points) if is_valid else \
            (res.status == "failed" and res.points == 0)
        verdicts.append((seed, ok, res.line()))
    bad = [f"seed {seed}: {line}" for seed, ok, line in verdicts if not ok]
    assert not bad, f"{len(bad)}/{len(SEEDS)} seeds: " + " | ".join(bad)


def test_every_exercise_has_two_valid_and_two_wrong() -> None:
    counts: dict[tuple[str, str], int] = {}
    for p in _cases():
        exercise_id, fn, is_valid = p.values
        key = (exercise_id, "valid" if is_valid else "wrong")
        counts[key] = counts.get(key, 0) + 1
    ids = {e for e, _ in counts}
    assert len(ids) >= 45, sorted(ids)
    for e in ids:
        assert counts.get((e, "valid"), 0) >= 2 and counts.get((e, "wrong"), 0) >= 2, e
