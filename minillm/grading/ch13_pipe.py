"""Checkers of chapter 13's pipeline exercises, to be joined into minillm/grading/ch13.py's EXERCISES.

| id | the learner writes | compared with |
|---|---|---|
| 13.1 | `one_f_one_b_stage(p, m, s)` -> stage s's actions [("F", i) / ("B", i)] under 1F1B | |
|      | | `minillm.distributed.schedules.one_f_one_b_schedule(p, m)[s]` |
| 13.2 | `bubble_from_timeline(tl)` -> the idle fraction of a played schedule | `...schedules.bubble_fraction` |
| 13.3 | `peak_activations(actions)` -> the most micro-batches one stage holds at once | `...schedules.peak_in_flight` |

13.1 cases: the worked examples (p = 3, m = 4, stages 0 and 2), fewer micro-batches than the warm-up (p = 4, m = 2),
one stage (p = 1), then random p in 1..8, m in 1..12, any stage. Answers are read as a list of (str, int) pairs
(tuples or lists; numpy or tensor integers accepted).
13.2 cases: the worked example (p = 2, m = 2 GPipe, t_b = 2 t_f: 1/3), timelines played by `timeline` (GPipe and
1F1B, random p, m, t_f, t_b), and random hand-made timelines whose stages have different durations and gaps, where
the (p-1)/(m+p-1) shortcut does not hold; time starts at 0. Tolerance 1e-6 absolute
(float32 passes; every simulated mistake is off by more).
13.3 cases: the worked example, GPipe and 1F1B stage orders, then random valid orders (each micro-batch's F before
its B, forwards in order, backwards in any order).
"""

from __future__ import annotations

import numbers
import random
from fractions import Fraction

import torch

from minillm.grading.core import Exercise, Wrong

HAND_ORDER = ((3, 4, 0), [("F", 0), ("F", 1), ("F", 2), ("B", 0), ("F", 3), ("B", 1), ("B", 2), ("B", 3)])
HAND_TIMELINE = [[(("F", 0), 0, 1), (("F", 1), 1, 2), (("B", 0), 5, 7), (("B", 1), 7, 9)],
                 [(("F", 0), 1, 2), (("F", 1), 2, 3), (("B", 0), 3, 5), (("B", 1), 5, 7)]]
HAND_BUBBLE = 1 / 3
HAND_PEAK = ([("F", 0), ("F", 1), ("B", 0), ("F", 2), ("F", 3), ("B", 1), ("B", 2), ("B", 3)], 3)


def _schedule(p: int, m: int):
    from minillm.distributed.schedules import one_f_one_b_schedule

    return one_f_one_b_schedule(p, m)


# ---------------------------------------------------------------------------------------------------
# 13.1 the 1F1B order of one stage


def _int(v, what: str) -> int:
    if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_floating_point():
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise Wrong(f"{what} must be an int, got {type(v).__name__} {v!r:.30}")
    return int(v)


def _actions_out(got, args) -> tuple:
    """The learner's actions as a tuple of (kind, i) tuples."""
    if not isinstance(got, (list, tuple)):
        raise Wrong(f"return a list of actions such as [('F', 0), ('B', 0)], got {type(got).__name__} {got!r:.40}")
    out = []
    for a in got:
        if not isinstance(a, (list, tuple)) or len(a) != 2 or a[0] not in ("F", "B"):
            raise Wrong(f"each action is a pair ('F', i) or ('B', i), got {a!r:.40}")
        out.append((a[0], _int(a[1], "a micro-batch index")))
    return tuple(out)


def _order_ref(p: int, m: int, s: int) -> tuple:
    return tuple(_schedule(p, m)[s])


def _order(p, m, s, warmup, steady_f_first=True):
    w = warmup(p, m, s)
    acts = [("F", i) for i in range(w)]
    for k in range(m - w):
        acts += [("F", w + k), ("B", k)] if steady_f_first else [("B", k), ("F", w + k)]
    return acts + [("B", i) for i in range(m - w, m)]


ORDER_MISTAKES = [
    (lambda p, m, s: [("F", i) for i in range(m)] + [("B", i) for i in range(m)],
     "that is GPipe's order (all forwards, then all backwards); 1F1B alternates one forward and one backward after "
     "a short warm-up"),
    (lambda p, m, s: _order(p, m, s, lambda p, m, s: min(p - s, m)),
     "one forward too many in the warm-up: stage s runs p - 1 - s forwards before its first backward "
     "alternation, so the last stage starts alternating at once"),
    (lambda p, m, s: _order(p, m, s, lambda p, m, s: min(s, m)),
     "the warm-up is reversed: the first stage has the longest one (p - 1 forwards) and the last stage none"),
    (lambda p, m, s: _order(p, m, s, lambda p, m, s: min(p - 1, m)),
     "the warm-up depends on the stage: stage s runs p - 1 - s forwards first, not p - 1 on every stage"),
    (lambda p, m, s: _order(p, m, s, lambda p, m, s: p - 1 - s),
     "with fewer micro-batches than the warm-up (m < p - 1 - s) the warm-up is just all m forwards"),
    (lambda p, m, s: _order(p, m, s, lambda p, m, s: min(p - 1 - s, m), steady_f_first=False),
     "in the steady state the forward comes first: F(w + k), then B(k)"),
]


def _order_cases() -> list:
    cases = [(HAND_ORDER[0], tuple(HAND_ORDER[1]))]
    for args in [(3, 4, 2), (4, 2, 0), (4, 2, 1), (1, 3, 0), (2, 1, 0)]:
        cases.append((args, _order_ref(*args)))
    for _ in range(12):
        p, m = random.randint(1, 8), random.randint(1, 12)
        args = (p, m, random.randrange(p))
        cases.append((args, _order_ref(*args)))
    return cases


# ---------------------------------------------------------------------------------------------------
# 13.2 the bubble of a timeline


def _float_out(got, args) -> float:
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            raise Wrong(f"return one number, the idle fraction, got a tensor of shape {tuple(got.shape)}")
        got = got.item()
    if isinstance(got, Fraction):
        got = float(got)
    if isinstance(got, bool) or not isinstance(got, numbers.Real):
        raise Wrong(f"return the bubble as a float between 0 and 1, got {type(got).__name__} {got!r:.40}")
    return float(got)


def _close(got: float, want: float, args: tuple) -> bool:
    return abs(got - want) <= 1e-6  # float32 answers pass; every simulated mistake is off by far more


def _bubble_ref(tl) -> float:
    from minillm.distributed.schedules import bubble_fraction

    return bubble_fraction(tl)


def _busy(tl) -> float:
    return sum(e - b for row in tl for _, b, e in row)


def _end(tl) -> float:
    return max(e for row in tl for _, _, e in row)


BUBBLE_MISTAKES = [
    (lambda tl: _busy(tl) / (len(tl) * _end(tl)), "that is the busy fraction; the bubble is the idle part"),
    (lambda tl: (len(tl) - 1) / (sum(a[0] == "F" for a, _, _ in tl[0]) + len(tl) - 1),
     "measure the timeline: (p - 1)/(m + p - 1) holds only when every stage takes the same time per action"),
    (lambda tl: 1 - _busy(tl) / sum(max(e for _, _, e in row) - min(b for _, b, _ in row) for row in tl),
     "count every stage over the whole step, from time 0 to the last end of any stage, not only between its own "
     "first and last action"),
    (lambda tl: (len(tl) * _end(tl) - _busy(tl)) / _end(tl),
     "divide the idle time by all the stage-time, p times the length of the step"),
    (lambda tl: sum(min(b for _, b, _ in row) for row in tl) / (len(tl) * _end(tl)),
     "the bubble is all idle time: before a stage's first action, between actions and after its last one"),
    (lambda tl: 1 - sum(e - b for _, b, e in tl[0]) / _end(tl),
     "count the idle time of every stage, not only stage 0's: unbalanced stages idle for different times"),
]


def _random_timeline(p: int, m: int) -> list:
    """Per stage, F0..F(m-1) then B0..B(m-1) at random durations and gaps; some stage starts at time 0."""
    tl = []
    for s in range(p):
        t, row = (0.0 if s == 0 else round(random.uniform(0, 3), 2)), []
        for act in [("F", i) for i in range(m)] + [("B", i) for i in range(m)]:
            if row and random.random() < 0.4:  # a gap (stage 0's first action stays at time 0)
                t += round(random.uniform(0.1, 1.5), 2)
            d = round(random.uniform(0.2, 3.0), 2)
            row.append((act, t, t + d))
            t += d
        tl.append(row)
    return tl


def _bubble_cases() -> list:
    from minillm.distributed.schedules import gpipe_schedule, one_f_one_b_schedule, timeline

    cases = [((HAND_TIMELINE,), HAND_BUBBLE)]
    for make, p, m, tf, tb in [(gpipe_schedule, 4, 4, 1, 2), (one_f_one_b_schedule, 4, 16, 1, 2),
                               (gpipe_schedule, 1, 3, 1, 1)]:
        tl = timeline(make(p, m), t_f=tf, t_b=tb)
        cases.append(((tl,), _bubble_ref(tl)))
    for _ in range(4):
        tl = _random_timeline(random.randint(2, 5), random.randint(1, 5))
        cases.append(((tl,), _bubble_ref(tl)))
    for _ in range(4):
        make = random.choice([gpipe_schedule, one_f_one_b_schedule])
        tl = timeline(make(random.randint(1, 6), random.randint(1, 10)), t_f=random.uniform(0.5, 2),
                      t_b=random.uniform(0.5, 4))
        cases.append(((tl,), _bubble_ref(tl)))
    return cases


# ---------------------------------------------------------------------------------------------------
# 13.3 the micro-batches one stage holds at once


def _int_out(got, args) -> int:
    return _int(got, "the answer (a number of micro-batches)")


def _peak_ref(actions) -> int:
    from minillm.distributed.schedules import peak_in_flight

    return peak_in_flight([list(actions)])[0]


def _longest_f_run(actions) -> int:
    best = run = 0
    for kind, _ in actions:
        run = run + 1 if kind == "F" else 0
        best = max(best, run)
    return best


def _peak_by_highest_index(actions) -> int:
    forwards, top, peak = 0, -1, 0  # top: the highest micro-batch index whose backward has run
    for kind, i in actions:
        if kind == "F":
            forwards += 1
        else:
            top = max(top, i)
        peak = max(peak, forwards - (top + 1))
    return peak


def _forwards_before_first_b(actions) -> int:
    n = 0
    for kind, _ in actions:
        if kind == "B":
            break
        n += 1
    return n


PEAK_MISTAKES = [
    (lambda actions: sum(k == "F" for k, _ in actions),
     "a backward frees its micro-batch's activations: count only micro-batches whose forward has run and whose "
     "backward has not"),
    (_peak_by_highest_index, "backwards may come out of order: subtract the number of backwards that have run, not "
                             "the highest micro-batch index freed"),
    (_longest_f_run, "forwards separated by backwards still add up: track how many are held, not the longest run "
                     "of consecutive forwards"),
    (_forwards_before_first_b, "the peak is not always reached before the first backward: track the count through "
                               "the whole order"),
]


def _random_order(m: int) -> list:
    """Forwards in order, each backward after its forward, backwards in any order."""
    acts, pending, nxt = [], [], 0
    while nxt < m or pending:
        if nxt < m and (not pending or random.random() < 0.55):
            acts.append(("F", nxt))
            pending.append(nxt)
            nxt += 1
        else:
            acts.append(("B", pending.pop(random.randrange(len(pending)))))
    return acts


def _peak_cases() -> list:
    from minillm.distributed.schedules import gpipe_schedule

    cases = [((HAND_PEAK[0],), HAND_PEAK[1])]
    out_of_order = [("F", 0), ("F", 1), ("B", 1), ("F", 2), ("F", 3), ("B", 0), ("B", 3), ("B", 2)]  # peak 3
    for acts in [gpipe_schedule(2, 5)[0], _schedule(4, 8)[0], _schedule(4, 8)[3], _schedule(5, 2)[1],
                 [("F", 0), ("B", 0)], out_of_order, [("F", 0), ("B", 0), ("F", 1), ("F", 2), ("B", 1), ("B", 2)]]:
        cases.append(((acts,), _peak_ref(acts)))
    for _ in range(10):
        acts = _random_order(random.randint(1, 12))
        cases.append(((acts,), _peak_ref(acts)))
    return cases


PIPE_EXERCISES = (
    Exercise("13.1", "The 1F1B order of one stage", 2, cases=_order_cases, name="one_f_one_b_stage",
             normalize=_actions_out, mistakes=ORDER_MISTAKES),
    Exercise("13.2", "The bubble of a pipeline timeline", 1, cases=_bubble_cases, name="bubble_from_timeline",
             normalize=_float_out, same=_close, mistakes=BUBBLE_MISTAKES),
    Exercise("13.3", "Activations one stage holds at once", 1, cases=_peak_cases, name="peak_activations",
             normalize=_int_out, mistakes=PEAK_MISTAKES),
)
