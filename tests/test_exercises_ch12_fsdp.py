"""Checkers of chapter 12's ZeRO-3 / FSDP exercises (minillm/grading/ch12_fsdp.py, cells
exercises/src/12_zero_fsdp.py): the solution passes, the stub is "not attempted" and gives nothing away, every
simulated mistake gets its own hint on several draws of the random cases, valid variants pass (loops, float32,
other ways to pad and cut, minillm's own functions), junk gets a hint, in-place answers fail with the `fresh` hint,
the worked examples of the markdown are what minillm computes, and the cases cover the task.

The cells are read from the chapter's exercise source, exercises/src/12_zero_fsdp.py (kit.source("12")).
"""

from __future__ import annotations

import math
import re

import exercise_kit as kit
import pytest
import torch

from minillm.distributed.fsdp import Unit, _slices
from minillm.distributed.zero import shard_layout
from minillm.grading import check, core
from minillm.grading.ch12_fsdp import (
    FSDP_EXERCISES,
    HAND_GRADS,
    HAND_PARAMS,
    HAND_RS,
    HAND_SHARDS,
    _gather_cases,
    _rs_cases,
    _shard_cases,
)

SRC = kit.source("12")
SHARD, GATHER, RS = FSDP_EXERCISES
core.load_chapter("12")

# test_exercises.py's rule for stub messages: no operator, bracket or torch recipe
RECIPE = re.compile(r"[=@*/^\[\]]|\b(softmax|masked_fill|topk|cumsum|repeat_interleave|gather|sqrt|exp|log|"
                    r"arange|tril|reshape|sum|scatter|sigmoid|erf|silu|itemsize|floor|ceil|sin|cos|reversed|"
                    r"stack|mean|cat|chunk|pad|zeros|offset)\b")
JUNK = (lambda *a: None, lambda *a: 1 / 0, "not a function", lambda *a: "text", lambda *a: True,
        lambda *a: (None, None, None), lambda *a: [1.0, 2.0], lambda *a: torch.zeros(0), lambda *a: float("nan"),
        lambda *a: math.inf, lambda *a: [[]], lambda *a: [["a"]], lambda *a: {}, lambda *a: {"weight": 1},
        lambda *a: [torch.zeros(7)] * 3, lambda *a: torch.zeros(2, 3, dtype=torch.long))


# the solution / stubs fixtures and the checks every part gets (solution, stub, mistakes, junk)
globals().update(kit.part_tests(SRC, FSDP_EXERCISES, JUNK, RECIPE, forbidden=("end", "order", "contiguous")))


# ---------------------------------------------------------------------------------------------------
# 12.5 valid variants


def shard_with_layout(params, n):
    """minillm's own rule: zero.shard_layout's padded size and bounds."""
    flat = torch.cat([p.reshape(-1) for p in params])
    lay = shard_layout(flat.numel(), n)
    out = torch.zeros(lay.padded, dtype=flat.dtype)
    out[:flat.numel()] = flat
    return [out[lo:hi].clone() for lo, hi in (lay.bounds(r) for r in range(n))]


def shard_loops_float32(params, n):
    vals = [float(v) for p in params for v in p.reshape(-1).tolist()]
    size = (len(vals) + n - 1) // n
    vals += [0.0] * (size * n - len(vals))
    return [torch.tensor(vals[r * size:(r + 1) * size], dtype=torch.float32) for r in range(n)]


def shard_pad_function(params, n):
    flat = torch.cat([p.flatten() for p in params])
    flat = torch.nn.functional.pad(flat, (0, (-flat.numel()) % n))
    return torch.stack(flat.split(flat.numel() // n))  # a 2-D tensor: one row per rank


@pytest.mark.parametrize("fn", [shard_with_layout, shard_loops_float32, shard_pad_function])
def test_valid_shard_variants_pass(fn):
    for _ in range(3):
        res = check(SHARD.id, fn)
        assert res.passed, res.hint


def test_shard_changing_the_input_fails():
    def in_place(params, n):
        out = shard_with_layout(params, n)
        params[0].zero_()
        return out

    res = check(SHARD.id, in_place)
    assert not res.passed and res.hint.startswith("return new tensors and leave the parameters as they were")


def test_shard_views_fail_with_their_hint():
    """Pieces that are views of one padded buffer pin the whole buffer on every rank (separate hint); a piece that
    is a view of the input itself (one parameter, no padding) fails with the fresh hint."""
    def chunk_views(params, n):
        flat = torch.cat([p.reshape(-1) for p in params])
        return list(torch.nn.functional.pad(flat, (0, (-flat.numel()) % n)).chunk(n))

    def input_views(params, n):
        if len(params) == 1 and params[0].numel() % n == 0:
            return list(params[0].reshape(-1).chunk(n))  # views of the caller's parameter
        return shard_with_layout(params, n)

    for _ in range(3):
        res = check(SHARD.id, chunk_views)
        assert not res.passed and res.hint.startswith(SHARD.separate + ". "), res.hint
    res = check(SHARD.id, input_views)
    assert not res.passed and res.hint.startswith(SHARD.fresh + ". ") and "shares its memory" in res.hint, res.hint


# ---------------------------------------------------------------------------------------------------
# 12.6 valid variants


def gather_with_minillm(shards, names, shapes):
    """What consolidate_sharded does for one unit."""
    sizes = [math.prod(s) for s in shapes]
    u = Unit("", None, [], [[n] for n in names], [torch.Size(s) for s in shapes],
             [sum(sizes[:k]) for k in range(len(sizes))], sum(sizes), sum(x.numel() for x in shards), shards[0].dtype)
    return _slices(u, torch.cat(shards))


def gather_split(shards, names, shapes):
    flat = torch.cat(shards)
    sizes = [math.prod(s) for s in shapes]
    parts = flat[:sum(sizes)].split(sizes)
    return {n: p.view(s).float() for n, p, s in zip(names, parts, shapes, strict=True)}


def gather_loops(shards, names, shapes):
    vals = [float(v) for s in shards for v in s.tolist()]
    out = {}
    for n, s in zip(reversed(names), reversed(shapes), strict=True):  # filled in any order, offsets computed
        k = math.prod(s)
        start = sum(math.prod(x) for x in shapes[:names.index(n)])
        out[n] = torch.tensor(vals[start:start + k], dtype=torch.float64).reshape(s)
    return out


@pytest.mark.parametrize("fn", [gather_with_minillm, gather_split, gather_loops])
def test_valid_gather_variants_pass(fn):
    for _ in range(3):
        res = check(GATHER.id, fn)
        assert res.passed, res.hint


def test_gather_wrong_keys_or_shapes_fail():
    def flat_values(shards, names, shapes):
        return {n: t.reshape(-1) for n, t in gather_with_minillm(shards, names, shapes).items()}

    res = check(GATHER.id, flat_values)
    assert not res.passed
    res = check(GATHER.id, lambda sh, names, shapes: {"w": sh[0]})
    assert not res.passed and "one entry per parameter name" in res.hint


# ---------------------------------------------------------------------------------------------------
# 12.7 valid variants


def rs_loops(grads):
    n = len(grads)
    size = grads[0].numel() // n
    out = []
    for r in range(n):
        piece = torch.zeros(size, dtype=torch.float32)
        for g in grads:
            piece += g[r * size:(r + 1) * size].float()
        out.append(piece / n)
    return out


def rs_chunk_first(grads):
    """Scatter, then reduce: the mean of the ranks' piece r. Same numbers."""
    n = len(grads)
    return [sum(g.chunk(n)[r] for g in grads) / n for r in range(n)]


@pytest.mark.parametrize("fn", [rs_loops, rs_chunk_first, lambda g: torch.stack(g).mean(0).reshape(len(g), -1)])
def test_valid_reduce_scatter_variants_pass(fn):
    for _ in range(3):
        res = check(RS.id, fn)
        assert res.passed, res.hint


def test_reduce_scatter_views_fail_with_their_hint():
    def mean_chunks(grads):
        return list(torch.stack(grads).mean(0).chunk(len(grads)))

    def one_rank_alias(grads):
        return [grads[0]] if len(grads) == 1 else [c.clone() for c in mean_chunks(grads)]

    for _ in range(3):
        res = check(RS.id, mean_chunks)
        assert not res.passed and res.hint.startswith(RS.separate + ". "), res.hint
    res = check(RS.id, one_rank_alias)
    assert not res.passed and res.hint.startswith(RS.fresh + ". "), res.hint


def test_reduce_scatter_in_place_fails_with_the_fresh_hint():
    def in_place(grads):
        n = len(grads)
        mean = torch.stack(grads).mean(0)
        grads[0].copy_(mean)
        return [c.clone() for c in mean.chunk(n)]

    res = check(RS.id, in_place)
    assert not res.passed and res.hint.startswith("return new tensors and leave the ranks' gradients")


# ---------------------------------------------------------------------------------------------------
# the worked examples of the markdown, and the cases


MARKDOWN = " ".join(" ".join(c.source(False) for c in kit.cells(SRC) if c.kind == "markdown").split())


def test_worked_examples_are_what_minillm_computes():
    assert ("`params = [tensor([[1., 2.], [3., 4.]]), tensor([5., 6., 7.])]`, `n = 3` gives "
            "`[tensor([1., 2., 3.]), tensor([4., 5., 6.]), tensor([7., 0., 0.])]`") in MARKDOWN
    got = shard_with_layout([torch.tensor(p) for p in HAND_PARAMS], 3)
    assert tuple(tuple(t.tolist()) for t in got) == HAND_SHARDS
    assert ("`shards = [tensor([1., 2., 3.]), tensor([4., 5., 6.]), tensor([7., 0., 0.])]`, "
            "`names = [\"weight\", \"bias\"]`, `shapes = [(2, 2), (3,)]` gives "
            "`{\"weight\": tensor([[1., 2.], [3., 4.]]), \"bias\": tensor([5., 6., 7.])}`") in MARKDOWN
    back = gather_with_minillm([torch.tensor(s) for s in HAND_SHARDS], ["weight", "bias"], [(2, 2), (3,)])
    assert back["weight"].tolist() == HAND_PARAMS[0] and back["bias"].tolist() == HAND_PARAMS[1]
    assert ("`grads = [tensor([1., 2., 3., 4.]), tensor([3., 4., 5., 6.])]` gives "
            "`[tensor([2., 3.]), tensor([4., 5.])]`") in MARKDOWN
    assert tuple(tuple(t.tolist()) for t in rs_chunk_first([torch.tensor(g) for g in HAND_GRADS])) == HAND_RS


def test_cases_cover_the_task():
    for _ in range(3):
        sizes = [(sum(p.numel() for p in ps), n) for (ps, n), _ in _shard_cases()]
        assert any(n == 1 for _, n in sizes) and any(m % n == 0 and n > 1 for m, n in sizes)
        assert any(m % n for m, n in sizes) and any(m < n for m, n in sizes)
        g = [(len(sh), sum(math.prod(s) for s in shp), sum(x.numel() for x in sh))
             for (sh, _, shp), _ in _gather_cases()]  # (n, Psi_u, P_u)
        assert any(n == 1 for n, _, _ in g) and any(psi < p for _, psi, p in g)
        assert any(psi == p and n > 1 for n, psi, p in g)
        assert any(len(gr) == 1 for (gr,), _ in _rs_cases()) and any(len(gr) == 5 for (gr,), _ in _rs_cases())


def test_reduce_scatter_dividing_twice_gets_its_own_hint():
    """The notebook says "sum, then / N": a learner who averages and then divides by N again must be told so."""
    def twice(grads):
        n = len(grads)
        return [(sum(g.chunk(n)[r] for g in grads) / n) / n for r in range(n)]

    res = check(RS.id, twice)
    assert res.status == "failed" and res.hint.startswith("divide by the number of ranks once"), res.hint
