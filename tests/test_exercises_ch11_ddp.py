"""Checkers of chapter 11's DDP exercises (minillm/grading/ch11_ddp.py, cells in exercises/src/11_data_parallel.py): the
solution passes, the stub is "not attempted" and gives nothing away, every simulated mistake gets its own hint on
several draws of the random cases, valid variants pass (other loops, float32, tensors, other orders inside a bucket),
junk gets a hint, the worked examples of the markdown are what minillm computes, and the cases cover the task.
"""

from __future__ import annotations

import math
import re

import exercise_kit as kit
import pytest
import torch

from minillm.distributed.ddp import assign_buckets
from minillm.grading import check, core
from minillm.grading.ch11_ddp import (
    DDP_EXERCISES,
    HAND_BUCKETS,
    HAND_CAP,
    HAND_SIZES,
    _average_cases,
    _average_ref,
    _bucket_cases,
    _shard_case,
)

SRC = kit.source("11")
BUCKETS, AVERAGE = DDP_EXERCISES
core.load_chapter("11")

# test_exercises.py's rule for stub messages: no operator, bracket or torch recipe
RECIPE = re.compile(r"[=@*/^\[\]]|\b(softmax|masked_fill|topk|cumsum|repeat_interleave|gather|sqrt|exp|log|"
                    r"arange|tril|reshape|sum|scatter|sigmoid|erf|silu|itemsize|floor|ceil|sin|cos|reversed|"
                    r"stack|mean)\b")
JUNK = (lambda *a: None, lambda *a: 1 / 0, "not a function", lambda *a: "text", lambda *a: True,
        lambda *a: (None, None, None), lambda *a: [1.0, 2.0], lambda *a: torch.zeros(0), lambda *a: float("nan"),
        lambda *a: math.inf, lambda *a: [[]], lambda *a: [["a"]], lambda *a: [[0.5]], lambda *a: [None] * 40,
        lambda *a: [torch.zeros(7)] * 3)


# the solution / stubs fixtures and the checks every part gets (solution, stub, mistakes, junk)
globals().update(kit.part_tests(SRC, DDP_EXERCISES, JUNK, RECIPE, forbidden=("zero", "divid", "last")))


# ---------------------------------------------------------------------------------------------------
# 11.3 valid variants


def buckets_ascending_tuples(sizes, cap):
    """Indices ascending inside each bucket, tuples: the same partition, the same launch order."""
    return [tuple(sorted(b)) for b in assign_buckets(sizes, cap)]


def buckets_by_cut_points(sizes, cap):
    """Find where each bucket ends by prefix sums of the reversed sizes."""
    order = list(range(len(sizes)))[::-1]
    out, start = [], 0
    while start < len(order):
        total, end = 0, start
        while end < len(order) and total < cap:
            total += sizes[order[end]]
            end += 1
        out.append(order[start:end])
        start = end
    return out


def buckets_tensor(sizes, cap):
    return [torch.tensor(b) for b in assign_buckets(sizes, cap)]


@pytest.mark.parametrize("fn", [assign_buckets, buckets_ascending_tuples, buckets_by_cut_points, buckets_tensor])
def test_valid_bucket_variants_pass(fn):
    for _ in range(3):
        res = check(BUCKETS.id, fn)
        assert res.passed, res.hint


def test_bucket_hints_for_empty_buckets_and_sizes_instead_of_indices():
    res = check(BUCKETS.id, lambda s, c: assign_buckets(s, c) + [[]])
    assert not res.passed and "never empty" in res.hint
    res = check(BUCKETS.id, lambda s, c: [[s[i] for i in b] for b in assign_buckets(s, c)] if s else [])
    assert not res.passed


def test_bucket_cases_cover_the_task():
    for _ in range(3):
        cases = _bucket_cases()
        assert any(not s for (s, _c), _ in cases)                        # no parameters
        assert any(any(x > c for x in s) for (s, c), _ in cases)         # a parameter above the cap
        assert any(any(x == c for x in s) for (s, c), _ in cases)        # exactly the cap
        assert any(len(w) == 1 and len(s) > 1 for (s, _c), w in cases)   # everything in one bucket
        assert any(len(w) == len(s) > 1 for (s, _c), w in cases)         # every parameter alone
        assert any(sum(s[i] for i in w[-1]) < c for (s, c), w in cases if w)  # a last bucket below the cap


# ---------------------------------------------------------------------------------------------------
# 11.4 valid variants


def average_float32(rank_grads):
    n = len(rank_grads)
    out = []
    for i in range(len(rank_grads[0])):
        got = [g[i].float() for g in rank_grads if g[i] is not None]
        out.append(None if not got else sum(x / n for x in got))  # divide first, in float32
    return out


def average_with_zeros(rank_grads):
    """Fill the missing gradients with zeros, as DDP's flat buffer does, but keep None when all are missing."""
    out = []
    for per_param in zip(*rank_grads, strict=True):
        ref = next((g for g in per_param if g is not None), None)
        if ref is None:
            out.append(None)
            continue
        out.append(torch.stack([g if g is not None else torch.zeros_like(ref) for g in per_param]).mean(dim=0))
    return out


@pytest.mark.parametrize("fn", [_average_ref, average_float32, average_with_zeros])
def test_valid_average_variants_pass(fn):
    for _ in range(3):
        res = check(AVERAGE.id, fn)
        assert res.passed, res.hint


def test_average_hint_when_a_missing_parameter_becomes_a_number():
    def sum_of_nothing(rank_grads):
        return [sum(g[i] for g in rank_grads if g[i] is not None) / len(rank_grads) for i in range(len(rank_grads[0]))]

    res = check(AVERAGE.id, sum_of_nothing)
    assert not res.passed and "stays None" in res.hint


def test_average_cases_include_the_large_batch_gradient():
    ranks, big = _shard_case(3, 2, 0)
    for got, want in zip(_average_ref(ranks), big, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)  # the mean of shard gradients is the batch's
    cases = _average_cases()
    assert any(len(r) == 1 for (r,), _ in cases)                                  # one rank
    assert any(all(g[i] is None for g in r) for (r,), _ in cases for i in range(len(r[0])))  # nobody's gradient
    assert any(0 < sum(g[i] is None for g in r) < len(r) for (r,), _ in cases for i in range(len(r[0])))


# ---------------------------------------------------------------------------------------------------
# the worked examples of the markdown


MARKDOWN = "\n".join(c.source(False) for c in kit.cells(SRC) if c.kind == "markdown")


def test_worked_examples_are_what_minillm_computes():
    assert "`sizes = [12, 12, 12, 4, 20]`, `cap = 20` gives `[[4], [3, 2, 1], [0]]`" in MARKDOWN
    assert assign_buckets(HAND_SIZES, HAND_CAP) == HAND_BUCKETS == [[4], [3, 2, 1], [0]]
    assert "`rank_grads = [[tensor([1., 2.]), None, None], [tensor([3., 4.]), tensor([6.]), None]]`" in MARKDOWN
    assert "`[tensor([2., 3.]), tensor([3.]), None]`" in MARKDOWN
    t = torch.tensor
    got = _average_ref([[t([1.0, 2.0]), None, None], [t([3.0, 4.0]), t([6.0]), None]])
    assert got[0].tolist() == [2.0, 3.0] and got[1].tolist() == [3.0] and got[2] is None
