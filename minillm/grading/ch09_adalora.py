"""Checker of chapter 9's AdaLoRA exercise, to be joined into minillm/grading/ch09.py's EXERCISES.

| id | the learner writes | compared with |
|---|---|---|
| 09.6 | `adalora_budget(step, init_budget, target_budget, tinit, tfinal, total_step)` -> int | |
|      | (the total rank kept after a step: warm-up, cubic fall, final phase) | `minillm.peft.adalora.budget_schedule` |

Cases: the worked example of the notebook (b_0 = 24, b_T = 8, tinit 2, tfinal 3, total 10) at every step 0..11,
peft's defaults (tinit = tfinal = 0), then random schedules at the phase boundaries (0, tinit, tinit + 1,
total_step - tfinal and the step after, a step past the end) and at random steps of the fall. The answer is an
int (a Python int, an integral float or a one-element tensor); it must equal the exact value of the cubic
rounded down. Random falling steps keep their exact value at least 1e-3 away from the integer below or above
it (unless it is an integer), so float32 arithmetic truncates the same way; when the exact value is an integer
k, k - 1 (what float rounding can give, and what peft's float64 formula gives in a few cases) passes too.
"""

from __future__ import annotations

import math
import numbers
import random
from fractions import Fraction

import torch

from minillm.grading.core import Exercise, Wrong

HAND = (24, 8, 2, 3, 10)  # init_budget, target_budget, tinit, tfinal, total_step of the notebook's example
HAND_BUDGETS = [24, 24, 24, 16, 11, 9, 8, 8, 8, 8, 8, 8]  # steps 0..11


def _exact(step: int, b0: int, bt: int, tinit: int, tfinal: int, total: int) -> Fraction:
    """The schedule's value before truncation, as an exact fraction."""
    if step <= tinit:
        return Fraction(b0)
    if step > total - tfinal:
        return Fraction(bt)
    left = 1 - Fraction(step - tinit, total - tfinal - tinit)
    return (b0 - bt) * left ** 3 + bt


def _float64(step: int, b0: int, bt: int, tinit: int, tfinal: int, total: int) -> int:
    from minillm.peft.adalora import budget_schedule

    return budget_schedule(step, b0, bt, tinit, tfinal, total)


def _budget_out(got, args) -> int | float:
    """The learner's budget as an int; a fractional number is kept (the comparison fails and names it)."""
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            raise Wrong(f"return one number, the budget, got a tensor of shape {tuple(got.shape)}")
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, numbers.Real):
        raise Wrong(f"return the budget as an int, got {type(got).__name__} {got!r:.40}")
    if isinstance(got, numbers.Integral):
        return int(got)
    g = float(got)
    return int(g) if math.isfinite(g) and g == int(g) else g


def _same(got, want: int, args: tuple) -> bool:
    exact = _exact(*args)
    ok = {want, _float64(*args)}
    if exact.denominator == 1:  # an integer value: float rounding may land just below it
        ok.add(int(exact) - 1)
    return got in ok


def _floor(x: float) -> int:
    return math.floor(x)


def _schedule(step, b0, bt, tinit, tfinal, total, *, power=3, rnd=_floor, shift=0, span=None, warm=True, final=True,
              rising=False, whole=False):
    """Simulated wrong solutions: the right one with one thing changed."""
    if warm and step <= tinit:
        return b0
    if final and step > total - tfinal:
        return bt
    length = (total - tfinal - tinit) if span is None else span(total, tfinal, tinit)
    p = (step - tinit + shift) / length
    f = p ** power if rising else (1 - p) ** power
    value = b0 * f + bt if whole else (b0 - bt) * f + bt
    return value if rnd is None else rnd(value)


MISTAKES = [
    (lambda *a: _schedule(*a, power=1),
     "the budget falls along a cubic, not a straight line: the factor (1 - progress) is cubed"),
    (lambda *a: _schedule(*a, power=2), "the factor (1 - progress) is cubed, not squared"),
    (lambda *a: _schedule(*a, rising=True),
     "the factor is 1 at the start of the fall and 0 at its end: cube (1 - progress), not the progress"),
    (lambda *a: _schedule(*a, whole=True),
     "the cubic scales the part of the budget that goes away, init_budget - target_budget, then adds target_budget"),
    (lambda *a: _schedule(*a, rnd=None), "the budget is a whole number of singular values: round the cubic down"),
    (lambda *a: _schedule(*a, rnd=round), "round the cubic down (truncate), not to the nearest int"),
    (lambda *a: _schedule(*a, rnd=math.ceil), "round the cubic down (truncate), not up"),
    (lambda *a: _schedule(*a, shift=-1),
     "off by one at tinit: at step tinit + 1 one step of the fall has passed (progress (step - tinit) / length)"),
    (lambda *a: _schedule(*a, shift=1),
     "off by one at tinit: the fall's progress at step tinit + 1 is 1 / length, so at step tinit it is 0"),
    (lambda *a: _schedule(*a, span=lambda t, tf, ti: t - ti),
     "the fall ends at step total_step - tfinal: its length is total_step - tfinal - tinit"),
    (lambda *a: _schedule(*a, span=lambda t, tf, ti: t - tf - ti + 1),
     "off by one at total_step - tfinal: the fall lasts total_step - tfinal - tinit steps and reaches "
     "target_budget exactly at step total_step - tfinal"),
    (lambda *a: _schedule(*a, warm=False), "up to and including step tinit the budget stays init_budget"),
    (lambda *a: _schedule(*a, final=False), "after step total_step - tfinal the budget stays target_budget"),
]


def _away_from_integers(args: tuple) -> bool:
    exact = _exact(*args)
    frac = exact - math.floor(exact)
    return frac == 0 or Fraction(1, 1000) <= frac <= 1 - Fraction(1, 1000)


def _cases() -> list:
    cases = [((t, *HAND), b) for t, b in enumerate(HAND_BUDGETS)]
    # peft's defaults: init_r 12, target_r 8 on 2 matrices, no warm-up, no final phase, 100 steps
    cases += [((t, 24, 16, 0, 0, 100), _float64(t, 24, 16, 0, 0, 100)) for t in (0, 1, 37, 99, 100, 101)]
    for _ in range(12):
        n = random.randint(1, 60)  # matrices
        init_r = random.randint(2, 16)
        target_r = random.randint(1, init_r)
        b0, bt = init_r * n, target_r * n
        total = random.randint(3, 3000)
        tinit = random.randint(0, total // 3)
        tfinal = random.randint(0, total - tinit - 1)
        end = total - tfinal
        steps = [0, tinit, tinit + 1, end, end + 1, total + random.randint(1, 9)]
        steps += [random.randint(tinit + 1, end) for _ in range(4)]
        for t in steps:
            args = (t, b0, bt, tinit, tfinal, total)
            if _away_from_integers(args):
                cases.append((args, math.floor(_exact(*args))))
    return cases


ADALORA_EXERCISES = (
    Exercise("09.6", "AdaLoRA's cubic budget schedule", 2, cases=_cases, name="adalora_budget",
             normalize=_budget_out, same=_same, mistakes=MISTAKES),
)
