"""Checkers of chapter 12's ZeRO-1/2 exercises (minillm/grading/ch12_zero.py, cells exercises/src/12_zero_fsdp.py):
the solution passes, the stub is "not attempted" and gives nothing away, every simulated mistake gets its own hint
on several draws of the random cases, valid variants pass (loops, Fraction, numpy, float32, 2-D tensors, minillm's
own functions), junk gets a hint, the worked examples of the markdown are what minillm computes, and the cases
cover the task (n = 1, numel < n, padding, k other than 12, every stage).

The cells are read from the chapter's exercise source, exercises/src/12_zero_fsdp.py (kit.source("12")).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

import exercise_kit as kit
import pytest
import torch

from minillm.distributed.zero import shard_layout, zero_memory
from minillm.grading import check, core
from minillm.grading.ch12_zero import (
    HAND_BOUNDS,
    HAND_GRADS,
    HAND_MEMORY,
    HAND_SHARDS,
    HAND_STEP,
    HAND_STEP_ARGS,
    ZERO_EXERCISES,
    _bounds_cases,
    _linear_case,
    _memory_cases,
    _rs_cases,
    _rs_ref,
    _step_cases,
    _step_ref,
)

SRC = kit.source("12")
MEMORY, BOUNDS, RS, STEP = ZERO_EXERCISES
core.load_chapter("12")

# test_exercises.py's rule for stub messages: no operator, bracket or torch recipe
RECIPE = re.compile(r"[=@*/^\[\]]|\b(softmax|masked_fill|topk|cumsum|repeat_interleave|gather|sqrt|exp|log|"
                    r"arange|tril|reshape|sum|scatter|sigmoid|erf|silu|itemsize|floor|ceil|sin|cos|reversed|"
                    r"stack|mean|pad|padding|divide|min)\b")
JUNK = (lambda *a: None, lambda *a: 1 / 0, "not a function", lambda *a: "text", lambda *a: True,
        lambda *a: (None, None, None), lambda *a: [1.0, 2.0], lambda *a: torch.zeros(0), lambda *a: float("nan"),
        lambda *a: math.inf, lambda *a: [[]], lambda *a: [["a", "b"]], lambda *a: [[0.5, 1.5]], lambda *a: [None] * 40,
        lambda *a: [torch.zeros(7)] * 3, lambda *a: torch.zeros(2, 3, dtype=torch.long), lambda *a: -1.0)


# the solution / stubs fixtures and the checks every part gets (solution, stub, mistakes, junk)
globals().update(kit.part_tests(SRC, ZERO_EXERCISES, JUNK, RECIPE))


# ---------------------------------------------------------------------------------------------------
# 12.1 valid variants


def memory_table(psi, n, stage, k=12):
    """A lookup of what each stage partitions, summed in a loop."""
    split = {"weights": stage >= 3, "gradients": stage >= 2, "optimizer": stage >= 1}
    size = {"weights": 2, "gradients": 2, "optimizer": k}
    total = 0.0
    for part in split:
        total += size[part] * psi / (n if split[part] else 1)
    return total


def memory_fraction(psi, n, stage, k=12):
    terms = [(2, 3), (2, 2), (k, 1)]
    return float(sum(Fraction(b) * Fraction(psi) / (n if stage >= s else 1) for b, s in terms))


def memory_numpy(psi, n, stage, k=12):
    import numpy as np

    return np.float64(zero_memory(psi, n, stage, k=k))


@pytest.mark.parametrize("fn", [memory_table, memory_fraction, memory_numpy,
                                lambda p, n, s, k: zero_memory(p, n, s, k=k),
                                lambda p, n, s, k: torch.tensor(zero_memory(p, n, s, k=k), dtype=torch.float64)])
def test_valid_memory_variants_pass(fn):
    for _ in range(3):
        res = check(MEMORY.id, fn)
        assert res.passed, res.hint


def test_memory_cases_cover_the_task():
    for _ in range(3):
        cases = _memory_cases()
        assert {args[2] for args, _ in cases} == {0, 1, 2, 3}
        assert any(args[1] == 1 for args, _ in cases) and any(args[3] != 12 for args, _ in cases)
        assert any(args[1] > 1000 for args, _ in cases)


# ---------------------------------------------------------------------------------------------------
# 12.2 valid variants


def bounds_loop(numel, n):
    size = math.ceil(numel / n)
    out, start = [], 0
    for _rank in range(n):
        stop = start + size
        out.append([start if start < numel else numel, stop if stop < numel else numel])
        start = stop
    return out


def bounds_from_layout(numel, n):
    lay = shard_layout(numel, n)
    return tuple((min(a, numel), min(b, numel)) for a, b in (lay.bounds(r) for r in range(n)))


@pytest.mark.parametrize("fn", [bounds_loop, bounds_from_layout,
                                lambda m, n: torch.tensor(bounds_from_layout(m, n))])
def test_valid_bounds_variants_pass(fn):
    for _ in range(3):
        res = check(BOUNDS.id, fn)
        assert res.passed, res.hint


def test_bounds_hints_for_floats_and_wrong_counts():
    res = check(BOUNDS.id, lambda m, n: [(float(a), float(b)) for a, b in bounds_from_layout(m, n)])
    assert not res.passed and "must be ints" in res.hint
    res = check(BOUNDS.id, lambda m, n: bounds_from_layout(m, n)[:-1])
    assert not res.passed and "one pair (start, stop) per rank" in res.hint


def test_bounds_cases_cover_the_task():
    for _ in range(3):
        cases = _bounds_cases()
        assert any(n == 1 for (_m, n), _ in cases) and any(m < n for (m, n), _ in cases)
        assert any(m % n == 0 and n > 1 for (m, n), _ in cases) and any(m % n and m > n for (m, n), _ in cases)
        assert any(w[-1] == (m, m) for (m, _n), w in cases)  # a rank with padding only


# ---------------------------------------------------------------------------------------------------
# 12.3 valid variants, in-place answers, the all-reduce answer


def rs_float32_loops(rank_grads):
    n, numel = len(rank_grads), len(rank_grads[0])
    size = -(-numel // n)
    out = []
    for r in range(n):
        shard = torch.zeros(size, dtype=torch.float32)
        for j in range(size):
            i = r * size + j
            if i < numel:
                shard[j] = sum(float(g[i]) for g in rank_grads) / n
        out.append(shard)
    return out


def rs_pad_then_split(rank_grads):
    n = len(rank_grads)
    size = -(-rank_grads[0].numel() // n)
    padded = [torch.nn.functional.pad(g, (0, size * n - g.numel())) for g in rank_grads]
    return [piece.clone() for piece in torch.stack(padded).mean(dim=0).split(size)]  # separate tensors


def rs_views_of_one_buffer(rank_grads):
    """Right values, but every rank's shard is a view of one full mean buffer (the task: separate tensors)."""
    n = len(rank_grads)
    size = -(-rank_grads[0].numel() // n)
    padded = [torch.nn.functional.pad(g, (0, size * n - g.numel())) for g in rank_grads]
    return list(torch.stack(padded).mean(dim=0).split(size))


def rs_as_2d(rank_grads):
    return torch.stack(_rs_ref(rank_grads))


@pytest.mark.parametrize("fn", [_rs_ref, rs_float32_loops, rs_pad_then_split, rs_as_2d])
def test_valid_reduce_scatter_variants_pass(fn):
    for _ in range(3):
        res = check(RS.id, fn)
        assert res.passed, res.hint


def test_reduce_scatter_views_of_one_buffer_fail_with_the_separate_hint():
    for _ in range(3):
        res = check(RS.id, rs_views_of_one_buffer)
        assert res.status == "failed" and res.hint.startswith(RS.separate + ". "), res.hint
        assert "share one buffer" in res.hint


def test_reduce_scatter_in_place_fails_with_the_fresh_hint():
    def in_place(rank_grads):
        out = _rs_ref(rank_grads)
        for g in rank_grads:
            g.zero_()
        return out

    res = check(RS.id, in_place)
    assert not res.passed and res.hint.startswith("return new tensors and leave the ranks' gradients")


def test_reduce_scatter_hint_for_the_all_reduce_answer():
    def all_reduce(rank_grads):  # every rank keeps the whole mean: DDP / ZeRO-1, not ZeRO-2
        mean = torch.stack(rank_grads).mean(0)
        return [mean.clone() for _ in rank_grads]

    res = check(RS.id, all_reduce)
    assert not res.passed and res.hint.startswith("rank 0 keeps its shard only: a 1-D tensor of 2 elements")

    def unpadded(rank_grads):  # torch.tensor_split of the mean: unequal shards, no zeros
        return [s.clone() for s in torch.tensor_split(torch.stack(rank_grads).mean(0), len(rank_grads))]

    res = check(RS.id, unpadded)
    assert not res.passed and "keeps its shard only" in res.hint


def test_reduce_scatter_cases_include_the_large_batch_gradient():
    ranks, want = _linear_case(3, 2, 0)  # 8 gradient elements over 3 ranks: shards of 3, one padding zero
    got = _rs_ref(ranks)
    flat = [v for s in got for v in s.tolist()]
    assert max(abs(a - b) for a, b in zip(flat, [v for s in want for v in s], strict=True)) < 1e-12
    assert flat[-1] == 0.0
    for _ in range(3):
        cases = _rs_cases()
        assert any(len(g) == 1 for (g,), _ in cases)
        assert any(g[0].numel() < len(g) for (g,), _ in cases)             # shards made of padding only
        assert any(g[0].numel() % len(g) for (g,), _ in cases)             # padded
        assert any(g[0].numel() % len(g) == 0 and len(g) > 1 for (g,), _ in cases)
        assert any(not g[0].eq(g[0].round()).all() for (g,), _ in cases)   # some non-integer gradients


# ---------------------------------------------------------------------------------------------------
# 12.4 valid variants, in-place answers


def step_with_torch_sgd_per_rank(params, rank_grads, momenta, lr, beta):
    """Each simulated rank builds torch's SGD over its own shard (as ZeroOptimizer builds AdamW), float32."""
    n, numel = len(rank_grads), params.numel()
    size = -(-numel // n)
    pad = n * size - numel
    flat = torch.cat([params.float(), torch.zeros(pad)])
    grad = torch.cat([torch.stack([g.float() for g in rank_grads]).mean(0), torch.zeros(pad)])
    shards, bufs = [], []
    for r in range(n):
        shard = flat[r * size:(r + 1) * size].clone()
        shard.grad = grad[r * size:(r + 1) * size].clone()
        opt = torch.optim.SGD([shard], lr=lr, momentum=beta)
        opt.state[shard]["momentum_buffer"] = momenta[r].float().clone()
        opt.step()
        shards.append(shard)
        bufs.append(opt.state[shard]["momentum_buffer"])
    return torch.cat(shards)[:numel], bufs


def step_loops(params, rank_grads, momenta, lr, beta):
    n, numel = len(rank_grads), len(params)
    size = -(-numel // n)
    new_p = [float(v) for v in params]
    new_m = []
    for r in range(n):
        m = []
        for j in range(size):
            i = r * size + j
            g = sum(float(gr[i]) for gr in rank_grads) / n if i < numel else 0.0
            b = beta * float(momenta[r][j]) + g
            m.append(b)
            if i < numel:
                new_p[i] -= lr * b
        new_m.append(m)
    return new_p, torch.tensor(new_m)  # a list of floats and a 2-D tensor: accepted


@pytest.mark.parametrize("fn", [lambda *a: _step_ref_tensors(*a), step_with_torch_sgd_per_rank, step_loops])
def test_valid_step_variants_pass(fn):
    for _ in range(3):
        res = check(STEP.id, fn)
        assert res.passed, res.hint


def _step_ref_tensors(params, rank_grads, momenta, lr, beta):
    p, ms = _step_ref(params, rank_grads, momenta, lr, beta)
    return torch.tensor(p, dtype=torch.float64), [torch.tensor(m, dtype=torch.float64) for m in ms]


def test_step_in_place_fails_with_the_fresh_hint():
    def in_place(params, rank_grads, momenta, lr, beta):
        new_p, new_m = _step_ref_tensors(params, rank_grads, momenta, lr, beta)
        params.copy_(new_p)
        return params, new_m

    res = check(STEP.id, in_place)
    assert not res.passed and res.hint.startswith("return new tensors and leave the parameters")


def test_step_hints_for_wrong_shapes():
    def unpadded_momenta(params, rank_grads, momenta, lr, beta):
        new_p, new_m = _step_ref_tensors(params, rank_grads, momenta, lr, beta)
        return new_p, [m[:1] for m in new_m]

    res = check(STEP.id, unpadded_momenta)
    assert not res.passed and "momentum covers its shard only, 2 elements" in res.hint
    res = check(STEP.id, lambda *a: _step_ref_tensors(*a)[0])
    assert not res.passed and res.hint.startswith("return a pair")


def test_step_cases_cover_the_task():
    for _ in range(3):
        cases = _step_cases()
        assert any(len(a[1]) == 1 for a, _ in cases) and any(a[0].numel() < len(a[1]) for a, _ in cases)
        assert any(a[0].numel() % len(a[1]) and a[0].numel() > len(a[1]) for a, _ in cases)
        assert any(a[4] == 0.9 or a[4] == 0.95 for a, _ in cases) and any(a[3] < 0.1 for a, _ in cases)
        for a, _ in cases:  # the padding of every momentum shard is 0, as in training
            n, numel = len(a[1]), a[0].numel()
            flat = torch.cat(a[2])
            assert flat.numel() == n * -(-numel // n) and not flat[numel:].any()


# ---------------------------------------------------------------------------------------------------
# the worked examples of the markdown


MARKDOWN = " ".join(" ".join(c.source(False) for c in kit.cells(SRC) if c.kind == "markdown").split())


def test_worked_examples_are_what_minillm_computes():
    assert "`psi = 7.5e9`, `n = 64`, `k = 12` gives `120e9` at stage 0 and `31.40625e9` at stage 1" in MARKDOWN
    for args, want in HAND_MEMORY:
        assert zero_memory(args[0], args[1], args[2], k=args[3]) == pytest.approx(want, rel=1e-12)
    assert "`shard_bounds(10, 4)` is `[(0, 3), (3, 6), (6, 9), (9, 10)]`" in MARKDOWN
    assert "`shard_bounds(2, 4)` is `[(0, 1), (1, 2), (2, 2), (2, 2)]`" in MARKDOWN
    for (numel, n), want in HAND_BOUNDS:
        lay = shard_layout(numel, n)
        assert tuple((min(a, numel), min(b, numel)) for a, b in (lay.bounds(r) for r in range(n))) == want
    assert "`rank_grads = [tensor([1., 2., 3.]), tensor([3., 4., 5.])]` gives `[tensor([2., 3.]), tensor([4., 0.])]`" \
        in MARKDOWN
    got = _rs_ref([torch.tensor(g) for g in HAND_GRADS])
    assert tuple(tuple(s.tolist()) for s in got) == HAND_SHARDS == ((2.0, 3.0), (4.0, 0.0))
    assert ("`params = tensor([1., 1., 1.])`, `rank_grads = [tensor([1., 2., 3.]), tensor([3., 4., 5.])]`, "
            "`momenta = [tensor([1., 1.]), tensor([1., 0.])]`, `lr = 0.5`, `beta = 0.5` gives "
            "`(tensor([-0.25, -0.75, -1.25]), [tensor([2.5, 3.5]), tensor([4.5, 0.])])`") in MARKDOWN
    p, gs, ms, lr, beta = HAND_STEP_ARGS
    t = torch.tensor
    assert _step_ref(t(p), [t(g) for g in gs], [t(m) for m in ms], lr, beta) == HAND_STEP
    assert HAND_STEP == ((-0.25, -0.75, -1.25), ((2.5, 3.5), (4.5, 0.0)))


def test_step_moved_by_the_old_buffer_gets_the_order_hint():
    # a learner's loop that moves the parameters with the momentum buffer BEFORE adding this step's gradient
    def stale(params, rank_grads, momenta, lr, beta):
        n, numel = len(rank_grads), params.numel()
        size = -(-numel // n)
        mean = [sum(g[i].item() for g in rank_grads) / n for i in range(numel)] + [0.0] * (n * size - numel)
        flat = params.tolist() + [0.0] * (n * size - numel)
        new_m = []
        for r in range(n):
            buf = []
            for j in range(size):
                i = r * size + j
                flat[i] -= lr * momenta[r][j].item()
                buf.append(beta * momenta[r][j].item() + mean[i])
            new_m.append(torch.tensor(buf, dtype=torch.float64))
        return torch.tensor(flat[:numel], dtype=torch.float64), new_m

    for _ in range(3):
        res = check(STEP.id, stale)
        assert res.status == "failed" and "UPDATED buffer" in res.hint, res.hint
