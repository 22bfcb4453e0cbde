"""Checkers of chapter 13's tensor-parallel exercises (minillm/grading/ch13_tp.py, cells in
exercises/src/13_parallelism.py):
the solution passes, the stub is "not attempted" and does not give the recipe away, every simulated mistake gets
its own hint on several draws of the random cases, valid variants pass (loops, float32, the full matrices sliced
differently, minillm's own cross-entropy pieces), junk gets a hint, the worked examples of the markdown are what
the references compute, and the cases cover what the task allows.

The cells are read from the chapter's exercise source, exercises/src/13_parallelism.py (kit.source("13")).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

import exercise_kit as kit
import pytest
import torch
import torch.nn.functional as F

from minillm.grading import check, core
from minillm.grading.ch13_tp import (
    HAND_A,
    HAND_B,
    HAND_BYTES,
    HAND_CE,
    HAND_X,
    TP_EXERCISES,
    _bytes_cases,
    _ce_cases,
    _mlp_cases,
)

SRC = kit.source("13")
MLP, CE, BYTES = TP_EXERCISES
core.load_chapter("13")

RECIPE = re.compile(r"[=@*/^\[\]]|\b(gelu|GeLU|softmax|gather|exp|log|sum|max|amax|chunk|cat|concatenat\w*|"
                    r"subtract|owner)\b")
JUNK = (lambda *a: None, lambda *a: 1 / 0, "not a function", lambda *a: "text", lambda *a: True,
        lambda *a: (None, None, None), lambda *a: [1.0, 2.0], lambda *a: torch.zeros(0), lambda *a: float("nan"),
        lambda *a: math.inf, lambda *a: ([0.5], [1], [2]), lambda *a: ("a", "b", "c"),
        lambda *a: torch.zeros(2, 3, dtype=torch.long))


# the solution / stubs fixtures and the checks every part gets (solution, stub, mistakes, junk)
globals().update(kit.part_tests(SRC, TP_EXERCISES, JUNK, RECIPE))


# ---------------------------------------------------------------------------------------------------
# 13.4 valid variants


def mlp_full_then_slice(x, a_shards, b_shards):
    """Rebuild A and B, then take each rank's blocks of the hidden units from the full hidden activation."""
    a, n = torch.cat(a_shards, 1), len(a_shards)
    hidden = F.gelu(x @ a)
    per = a_shards[0].shape[1]
    return [hidden[:, r * per:(r + 1) * per] @ b_shards[r] for r in range(n)]


def mlp_float32_loops(x, a_shards, b_shards):
    outs = []
    for a, b in zip(a_shards, b_shards, strict=True):
        rows, h, f = x.shape[0], b.shape[1], a.shape[1]
        out = torch.zeros(rows, h, dtype=torch.float32)
        for i in range(rows):
            for j in range(f):
                pre = sum(float(x[i, k]) * float(a[k, j]) for k in range(x.shape[1]))
                act = 0.5 * pre * (1 + math.erf(pre / math.sqrt(2)))
                for c in range(h):
                    out[i, c] += act * float(b[j, c])
        outs.append(out)
    return outs


@pytest.mark.parametrize("fn", [mlp_full_then_slice, mlp_float32_loops,
                                lambda x, a, b: torch.stack([F.gelu(x @ ai) @ bi for ai, bi in zip(a, b, strict=True)]),
                                lambda x, a, b: tuple(F.gelu(x.float() @ ai.float()) @ bi.float()
                                                      for ai, bi in zip(a, b, strict=True))])
def test_valid_mlp_variants_pass(fn):
    for _ in range(3):
        res = check(MLP.id, fn)
        assert res.passed, res.hint


def test_mlp_in_place_or_returning_an_input_fails_with_the_fresh_hint():
    def in_place(x, a_shards, b_shards):
        outs = [F.gelu(x @ a) @ b for a, b in zip(a_shards, b_shards, strict=True)]
        x.zero_()
        return outs

    res = check(MLP.id, in_place)
    assert not res.passed and res.hint.startswith("return new tensors and leave the shards")


def test_mlp_partials_sum_to_the_unsplit_mlp():
    for (x, a_shards, b_shards), want in _mlp_cases():
        full = F.gelu(x @ torch.cat(a_shards, 1)) @ torch.cat(b_shards, 0)
        total = torch.tensor(want[0], dtype=torch.float64).reshape(full.shape)
        for p in want[1:]:
            total = total + torch.tensor(p, dtype=torch.float64).reshape(full.shape)
        torch.testing.assert_close(total, full, atol=1e-12, rtol=0)


def test_mlp_cases_cover_the_task():
    for _ in range(5):
        cases = _mlp_cases()
        ns = {len(a) for (_, a, _), _ in cases}
        assert 1 in ns and {2, 3, 4} <= ns
        assert any(x.shape[1] == 1 for (x, _, _), _ in cases) and any(x.shape[0] > 1 for (x, _, _), _ in cases)


# ---------------------------------------------------------------------------------------------------
# 13.5 valid variants


def ce_float32(shards, target):
    """The same steps in float32 (logits up to ~70 keep 1e-5 absolute precision; the 800 case ~6e-5)."""
    return vocab_ce_ref([z.float() for z in shards], target).double()


def vocab_ce_ref(shards, target):
    v = shards[0].shape[-1]
    m = torch.stack([z.max(-1).values for z in shards]).max(0).values
    lse = m + torch.log(sum(torch.exp(z - m[:, None]).sum(-1) for z in shards))
    owner, local = target // v, target % v
    z_t = torch.stack([shards[int(o)][i, int(j)] for i, (o, j) in enumerate(zip(owner, local, strict=True))])
    return lse - z_t


def ce_logsumexp_per_rank(shards, target):
    """Each rank's logsumexp, combined with a global logsumexp of the N partial results: another stable route."""
    v = shards[0].shape[-1]
    lse = torch.logsumexp(torch.stack([torch.logsumexp(z, -1) for z in shards]), 0)
    out = []
    for i, t in enumerate(target.tolist()):
        out.append(lse[i] - shards[t // v][i, t % v])
    return torch.stack(out)


@pytest.mark.parametrize("fn", [vocab_ce_ref, ce_float32, ce_logsumexp_per_rank,
                                lambda s, t: [float(v) for v in vocab_ce_ref(s, t)]])
def test_valid_ce_variants_pass(fn):
    for _ in range(3):
        res = check(CE.id, fn)
        assert res.passed, res.hint


def test_ce_cases_cover_the_task():
    for _ in range(5):
        cases = _ce_cases()
        assert any(len(s) == 1 for (s, _), _ in cases) and any(len(s) == 4 for (s, _), _ in cases)
        assert any(max(float(z.max()) for z in s) > 700 for (s, _), _ in cases)  # exp overflows without the max
        assert any(s[0].shape[-1] == 1 for (s, _), _ in cases)
        # some case where a rank owns none of the targets
        assert any(any(not ((t >= r * s[0].shape[-1]) & (t < (r + 1) * s[0].shape[-1])).any()
                       for r in range(len(s))) for (s, t), _ in cases if len(s) > 1)


def test_ce_forgetting_the_max_on_the_target_logit_gets_its_hint():
    """A learner's version that shifts the exps by the global max but not the target's logit (off by m)."""

    def unshifted_target(shards, target):
        v = shards[0].shape[-1]
        m = torch.stack([z.amax(-1) for z in shards]).amax(0)
        sum_e = sum((z - m[:, None]).exp().sum(-1) for z in shards)
        z_t = torch.stack([shards[int(t) // v][i, int(t) % v] for i, t in enumerate(target)])
        return sum_e.log() - z_t

    res = check(CE.id, unshifted_target)
    assert res.status == "failed" and res.hint.startswith("the sum of exps was taken against the max m"), res.hint


def test_ce_without_the_max_overflows_on_the_large_case():
    (s, t), _ = next(c for c in _ce_cases() if max(float(z.max()) for z in c[0][0]) > 700)
    assert torch.isinf(torch.log(sum(z.exp().sum(-1) for z in s))).all()


# ---------------------------------------------------------------------------------------------------
# 13.6 valid variants, and the reference against minillm.distributed.plan


def bytes_loop(b, s, h, t, nbytes):
    total = 0.0
    for _op in ("g after o_proj", "g after down", "f before attention", "f before the MLP"):
        for _phase in ("reduce-scatter", "all-gather"):
            for _step in range(t - 1):
                total += b * s * h * nbytes / t  # one chunk per ring step
    return total


def bytes_fraction(b, s, h, t, nbytes):
    return float(Fraction(8 * (t - 1), t) * b * s * h * nbytes)


@pytest.mark.parametrize("fn", [bytes_loop, bytes_fraction, lambda *a: __import__("numpy").float64(bytes_loop(*a)),
                                lambda *a: torch.tensor(bytes_loop(*a), dtype=torch.float64)])
def test_valid_bytes_variants_pass(fn):
    for _ in range(3):
        res = check(BYTES.id, fn)
        assert res.passed, res.hint


def test_bytes_reference_is_the_plan_calculators_tp_term():
    from minillm.distributed.plan import DGX_A100, GPT3_175B, ParallelPlan, estimate

    for t in (2, 4, 8):
        est = estimate(GPT3_175B, DGX_A100, ParallelPlan(dp=1, tp=t, pp=1, micro_batches=1))
        assert est.comm["tp"] / GPT3_175B.n_layer == pytest.approx(bytes_loop(1, 2048, 12288, t, 2), rel=1e-12)
    assert any(args[3] == 1 and want == 0 for args, want in _bytes_cases())


# ---------------------------------------------------------------------------------------------------
# the worked examples of the markdown


MARKDOWN = " ".join(" ".join(c.source(False) for c in kit.cells(SRC) if c.kind == "markdown").split())


def test_worked_examples_are_what_the_references_compute():
    assert "`x = [[1, -1]]`, `A = [[1, 0, 2, -1], [0, 1, 1, 1]]`" in MARKDOWN
    assert "`B = [[1, 0], [0, 1], [1, 1], [2, -1]]`" in MARKDOWN
    x, a, b = (torch.tensor(v, dtype=torch.float64) for v in (HAND_X, HAND_A, HAND_B))
    parts = [F.gelu(x @ ai) @ bi for ai, bi in zip(a.chunk(2, 1), b.chunk(2, 0), strict=True)]
    shown = [[[round(v, 4) for v in row] for row in p.tolist()] for p in parts]
    assert shown == [[[0.8413, -0.1587]], [[0.7503, 0.8868]]]
    assert "`[[[0.8413, -0.1587]], [[0.7503, 0.8868]]]`" in MARKDOWN
    y = (F.gelu(x @ a) @ b)[0].tolist()
    assert [round(v, 4) for v in y] == [1.5917, 0.7282] and "$Y = [1.5917, 0.7282]$" in MARKDOWN
    assert "$xA = [1, -1, 1, -2]$" in MARKDOWN and (x @ a).tolist() == [[1, -1, 1, -2]]
    full = torch.tensor([HAND_CE[0][0][0] + HAND_CE[0][1][0]], dtype=torch.float64)
    loss = F.cross_entropy(full, torch.tensor(HAND_CE[1]))
    assert abs(loss.item() - math.log(2)) < 1e-12 and f"`[{loss.item():.4f}]`" in MARKDOWN
    assert "`shards = [[[0, ln 3]], [[0, 0]]]`, `target = [1]`" in MARKDOWN
    assert "`b = 1`, `s = 2048`, `h = 12288`, `t = 8`, `nbytes = 2` gives `352321536` bytes" in MARKDOWN
    assert HAND_BYTES == ((1, 2048, 12288, 8, 2), 352321536) and bytes_loop(*HAND_BYTES[0]) == 352321536
    assert 1 * 2048 * 12288 * 2 == 50_331_648 and "$4 \\times 1.75 \\times 50{,}331{,}648$" in MARKDOWN
