"""Checkers of chapter 12's ZeRO-Offload / DeepSpeed exercises (minillm/grading/ch12_offload.py, cells
exercises/src/12_zero_fsdp.py): the solution passes, the stub is "not attempted" and gives nothing away, every
simulated mistake gets its own hint on several draws of the random cases, valid variants pass (loops, Fraction,
numpy, tensors, lists, minillm's own functions), junk gets a hint, the worked examples of the markdown are what
minillm computes, and the cases cover the task.

The cells are read from the chapter's exercise source, exercises/src/12_zero_fsdp.py (kit.source("12")).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

import exercise_kit as kit
import pytest
import torch

from minillm.distributed.ds_config import resolve_batch
from minillm.distributed.offload import offload_memory
from minillm.grading import check, core
from minillm.grading.ch12_offload import HAND_BATCH, HAND_OFFLOAD, OFFLOAD_EXERCISES, _batch_cases, _offload_cases

SRC = kit.source("12")
BYTES, BATCH = OFFLOAD_EXERCISES
core.load_chapter("12")

# test_exercises.py's rule for stub messages: no operator, bracket or torch recipe
RECIPE = re.compile(r"[=@*/^\[\]]|\b(softmax|masked_fill|topk|cumsum|repeat_interleave|gather|sqrt|exp|log|"
                    r"arange|tril|reshape|sum|scatter|sigmoid|erf|silu|itemsize|floor|ceil|sin|cos|divmod|"
                    r"multiply|divide|times|product)\b")
JUNK = (lambda *a: None, lambda *a: 1 / 0, "not a function", lambda *a: "text", lambda *a: True,
        lambda *a: (None, None, None), lambda *a: [1.0, 2.0], lambda *a: torch.zeros(0), lambda *a: float("nan"),
        lambda *a: math.inf, lambda *a: ("a", "b", "c"), lambda *a: (1.5, 2.5, 3.5), lambda *a: {"gpu": 1},
        lambda *a: (math.nan, 1, 1), lambda *a: (torch.zeros(2), 1, 1), lambda *a: -1.0)


# the solution / stubs fixtures and the checks every part gets (solution, stub, mistakes, junk)
globals().update(kit.part_tests(SRC, OFFLOAD_EXERCISES, JUNK, RECIPE))


# ---------------------------------------------------------------------------------------------------
# 12.8 valid variants


def bytes_by_tensor(psi, weight_bytes=2, grad_bytes=2, host_grad_bytes=4):
    """A table of tensors with their place and size, summed in a loop."""
    tensors = [("gpu", weight_bytes), ("gpu", grad_bytes), ("cpu", 4), ("cpu", 4), ("cpu", 4),
               ("cpu", host_grad_bytes)]
    out = {"gpu": 0, "cpu": 0}
    for place, size in tensors:
        out[place] += size * psi
    return [out["gpu"], out["cpu"], grad_bytes * psi + weight_bytes * psi]


def bytes_fraction(psi, weight_bytes=2, grad_bytes=2, host_grad_bytes=4):
    p = Fraction(psi)
    return tuple(float(x) for x in ((weight_bytes + grad_bytes) * p, (12 + host_grad_bytes) * p,
                                    (weight_bytes + grad_bytes) * p))


def bytes_tensors(psi, weight_bytes=2, grad_bytes=2, host_grad_bytes=4):
    m = offload_memory(psi, weight_bytes, grad_bytes, host_grad_bytes=host_grad_bytes)
    return tuple(torch.tensor(float(m[k]), dtype=torch.float64) for k in ("device", "host", "link"))


def bytes_numpy(psi, weight_bytes=2, grad_bytes=2, host_grad_bytes=4):
    import numpy as np

    return tuple(np.float64(x) * psi for x in (weight_bytes + grad_bytes, 12 + host_grad_bytes,
                                               weight_bytes + grad_bytes))


@pytest.mark.parametrize("fn", [bytes_by_tensor, bytes_fraction, bytes_tensors, bytes_numpy])
def test_valid_bytes_variants_pass(fn):
    for _ in range(3):
        res = check(BYTES.id, fn)
        assert res.passed, res.hint


def test_bytes_cases_cover_the_task():
    for _ in range(3):
        cases = _offload_cases()
        combos = {args[1:] for args, _ in cases if len(args) == 4}
        assert combos >= {(w, g, h) for w in (2, 4) for g in (2, 4) for h in (2, 4)}
        assert any(len(args) == 1 for args, _ in cases)  # the defaults
        assert all(isinstance(args[0], int) for args, _ in cases)


# ---------------------------------------------------------------------------------------------------
# 12.9 valid variants


def batch_by_search(train, micro, accum, world):
    """Try every candidate for the missing values (small numbers) instead of dividing."""
    if train is None and micro is None:
        return None
    accums = [accum] if accum is not None else ([1] if train is None or micro is None else range(1, 513))
    micros = [micro] if micro is not None else range(1, 513)
    for a in accums:
        for m in micros:
            t = m * a * world
            if train is None or t == train:
                return (t, m, a)
    return None


def batch_raising_reference(train, micro, accum, world):
    try:
        return list(resolve_batch(train, micro, accum, world))
    except ValueError:
        return None


@pytest.mark.parametrize("fn", [batch_by_search, batch_raising_reference,
                                lambda *a: None if batch_raising_reference(*a) is None
                                else torch.tensor(batch_raising_reference(*a))])
def test_valid_batch_variants_pass(fn):
    for _ in range(3):
        res = check(BATCH.id, fn)
        assert res.passed, res.hint


def test_batch_cases_cover_the_task():
    for _ in range(3):
        cases = _batch_cases()
        assert any(want is None and None not in args for args, want in cases)  # inconsistent triple
        assert any(want is None and args[0] is not None and args[1] is not None and args[2] is None
                   for args, want in cases)  # not divisible
        assert any(args[2] is None and args[1] is None and want is not None for args, want in cases)  # accum = 1
        assert any(args[0] is None and args[1] is None for args, _ in cases)
        assert any(args[3] > 1 for args, _ in cases)


# ---------------------------------------------------------------------------------------------------
# the worked examples of the markdown


MARKDOWN = " ".join(" ".join(c.source(False) for c in kit.cells(SRC) if c.kind == "markdown").split())


def test_worked_examples_are_what_minillm_computes():
    assert "`psi = 10**10` with the defaults gives `(40e9, 160e9, 40e9)`" in MARKDOWN
    assert "with `host_grad_bytes = 2` it gives `(40e9, 140e9, 40e9)`" in MARKDOWN
    for args, want in HAND_OFFLOAD:
        m = offload_memory(*args[:1], *args[1:3], **({"host_grad_bytes": args[3]} if len(args) == 4 else {}))
        assert (m["device"], m["host"], m["link"]) == want
    for text in ("`ds_batch(32, 4, None, 4)` is `(32, 4, 2)`", "`ds_batch(32, 4, 3, 4)` is `None`",
                 "`ds_batch(30, 4, None, 4)` is `None`", "`ds_batch(8, None, None, 2)` is `(8, 4, 1)`"):
        assert text in MARKDOWN
    hand = dict(HAND_BATCH)
    assert resolve_batch(32, 4, None, 4) == hand[(32, 4, None, 4)] == (32, 4, 2)
    assert resolve_batch(8, None, None, 2) == hand[(8, None, None, 2)] == (8, 4, 1)
    for args in ((32, 4, 3, 4), (30, 4, None, 4)):
        assert hand[args] is None
        with pytest.raises(ValueError):
            resolve_batch(*args)
