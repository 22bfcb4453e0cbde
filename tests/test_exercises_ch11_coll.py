"""Checkers of chapter 11's collectives exercises (minillm/grading/ch11_coll.py, cells in
exercises/src/11_data_parallel.py): the solution passes, the stub is "not attempted" and does not give the schedule
away, every simulated mistake gets its own hint on several draws of the random cases, valid variants pass (loops,
float32, another way of tracking the chunks; Fraction, numpy and tensor answers), junk gets a hint, the worked
examples of the markdown are what minillm computes, and the cases cover what the task allows (uneven and empty
chunks, N = 1). The ids are read from COLL_EXERCISES.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

import exercise_kit as kit
import pytest
import torch

from minillm.distributed.collectives import ring_time, simulate_ring_all_reduce
from minillm.grading import check, core
from minillm.grading.ch11_coll import COLL_EXERCISES, HAND_AFTER, HAND_BUFFERS, HAND_TIME, _rs_cases, _time_cases

SRC = kit.source("11")
RS, TIME = COLL_EXERCISES
core.load_chapter("11")

# test_exercises.py's rule for stub messages: no operator, bracket or torch recipe
RECIPE = re.compile(r"[=@*/^\[\]]|\b(softmax|masked_fill|topk|cumsum|repeat_interleave|gather|sqrt|exp|log|"
                    r"arange|tril|reshape|sum|scatter|sigmoid|erf|silu|itemsize|floor|ceil|sin|cos)\b")
JUNK = (lambda *a: None, lambda *a: 1 / 0, "not a function", lambda *a: "text", lambda *a: True,
        lambda *a: (None, None, None), lambda *a: [1.0, 2.0], lambda *a: torch.zeros(0), lambda *a: float("nan"),
        lambda *a: math.inf, lambda *a: ([0.5], [1], [2]), lambda *a: ("a", "b", "c"),
        lambda *a: torch.zeros(2, 3, dtype=torch.long))


# the solution / stubs fixtures and the checks every part gets (solution, stub, mistakes, junk)
globals().update(kit.part_tests(SRC, COLL_EXERCISES, JUNK, RECIPE, forbidden=("n - 1",)))


# ---------------------------------------------------------------------------------------------------
# 11.1 valid variants, and in-place answers


def rs_follow_the_chunk(buffers):
    """Follow each chunk c around the ring: it starts at rank c and is added into ranks c + 1, ..., c + N - 1."""
    n = len(buffers)
    out = [b.clone() for b in buffers]
    sizes = [len(c) for c in torch.tensor_split(torch.arange(buffers[0].numel()), n)]
    starts = [sum(sizes[:c]) for c in range(n)]
    for c in range(n):
        lo, hi = starts[c], starts[c] + sizes[c]
        acc = buffers[c][lo:hi].clone()
        for hop in range(1, n):
            r = (c + hop) % n
            acc = out[r][lo:hi] + acc  # the receiver's own copy plus what arrives
            out[r][lo:hi] = acc
    return out


def rs_float32_loops(buffers):
    n = len(buffers)
    bufs = [[float(v) for v in b] for b in buffers]
    numel = len(bufs[0])
    q, extra = divmod(numel, n)
    bounds, start = [], 0
    for c in range(n):
        size = q + (1 if c < extra else 0)
        bounds.append((start, start + size))
        start += size
    for s in range(n - 1):
        snapshot = [list(b) for b in bufs]
        for r in range(n):
            c = (r - s) % n
            lo, hi = bounds[c]
            for i in range(lo, hi):
                bufs[(r + 1) % n][i] += snapshot[r][i]
    return [torch.tensor(b, dtype=torch.float32) for b in bufs]


@pytest.mark.parametrize("fn", [rs_follow_the_chunk, rs_float32_loops,
                                lambda b: simulate_ring_all_reduce(b, "reduce_scatter"),
                                lambda b: torch.stack(simulate_ring_all_reduce(b, "reduce_scatter")) if b[0].numel()
                                else [t.clone() for t in b]])
def test_valid_reduce_scatter_variants_pass(fn):
    for _ in range(3):
        res = check(RS.id, fn)
        assert res.passed, res.hint


def test_reduce_scatter_in_place_fails_with_the_fresh_hint():
    def in_place(buffers):
        out = simulate_ring_all_reduce(buffers, "reduce_scatter")
        for b, o in zip(buffers, out, strict=True):
            b.copy_(o)
        return buffers

    res = check(RS.id, in_place)
    assert not res.passed and res.hint.startswith("return new tensors and leave the input buffers")


def test_reduce_scatter_cases_cover_the_task():
    for _ in range(5):
        cases = _rs_cases()
        shapes = {(len(bufs), bufs[0].numel()) for (bufs,), _ in cases}
        assert any(n == 1 for n, _ in shapes) and any(m == 0 for _, m in shapes)
        assert any(m % n and m > n for n, m in shapes) and any(0 < m < n for n, m in shapes)
        assert any(m % n == 0 and m > 0 and n > 1 for n, m in shapes)
        assert any(not bufs[0].eq(bufs[0].round()).all() for (bufs,), _ in cases)  # some non-integer buffers


# ---------------------------------------------------------------------------------------------------
# 11.2 valid variants


def time_loop(nbytes, n, alpha, beta):
    total = 0.0
    for _phase in ("reduce-scatter", "all-gather"):
        for _step in range(n - 1):
            total += alpha + beta * (nbytes / n)
    return total


def time_fraction(nbytes, n, alpha, beta):
    return float(2 * (n - 1) * (Fraction(alpha) + Fraction(nbytes) / n * Fraction(beta)))


def time_numpy(nbytes, n, alpha, beta):
    import numpy as np

    return np.float64(ring_time(nbytes, n, alpha, beta))


@pytest.mark.parametrize("fn", [time_loop, time_fraction, time_numpy, ring_time,
                                lambda *a: torch.tensor(ring_time(*a), dtype=torch.float64)])
def test_valid_time_variants_pass(fn):
    for _ in range(3):
        res = check(TIME.id, fn)
        assert res.passed, res.hint


def test_time_cases_cover_n_equal_1():
    assert any(args[1] == 1 and want == 0 for args, want in _time_cases())


# ---------------------------------------------------------------------------------------------------
# the worked examples of the markdown


MARKDOWN = "\n".join(c.source(False) for c in kit.cells(SRC) if c.kind == "markdown")


def test_worked_examples_are_what_minillm_computes():
    assert "`buffers = [[1, 1, 1], [10, 10, 10], [100, 100, 100]]`" in MARKDOWN
    assert "`[[1, 111, 101], [11, 10, 111], [111, 110, 100]]`" in MARKDOWN
    after = simulate_ring_all_reduce([torch.tensor(b) for b in HAND_BUFFERS], "reduce_scatter")
    assert tuple(tuple(b.tolist()) for b in after) == HAND_AFTER == ((1, 111, 101), (11, 10, 111), (111, 110, 100))
    assert "after step 0 rank 1's chunk 0 is 11" in " ".join(MARKDOWN.split())
    assert "`nbytes = 4e6`, `n = 4`, `alpha = 1e-5`, `beta = 1e-9` gives `0.00606` seconds" in MARKDOWN
    assert ring_time(*HAND_TIME[0]) == pytest.approx(HAND_TIME[1], rel=1e-12)
