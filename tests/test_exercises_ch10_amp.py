"""Chapter 10's number-format and mixed-precision exercises (10.3 round fp32 bits to bf16, 10.4 the dynamic loss
scale over a run), from their cells in exercises/src/10_amp_cells.py: the solution passes and the stub is "not
attempted" without giving the rule away, junk answers get hints without the checker raising, every simulated
mistake gets its own hint on several draws of the random cases, valid variants pass (torch's own cast,
torch.amp.GradScaler itself, float32 tensors, numpy ints, tuples), and the worked examples the markdown shows are
what torch computes."""

from __future__ import annotations

import math
import re

import exercise_kit as kit
import pytest
import torch

from minillm.grading import check, core
from minillm.grading.ch10_amp import AMP_EXERCISES, HAND_BF16, HAND_FLAGS, _bf16_cases, _trajectory_cases

SOURCE = kit.source("10")
CELLS = kit.cells(SOURCE)
MARKDOWN = "\n".join(c.source(False) for c in CELLS if c.kind == "markdown")
core.load_chapter("10")


globals().update(kit.namespace_fixtures(SOURCE))  # the solution and stubs fixtures


EXERCISES = [(k, v) for k, v in kit.checked_functions(SOURCE).items() if k in ("10.3", "10.4")]


def test_check_cells_are_the_registered_exercises():
    assert EXERCISES == [("10.3", "round_to_bf16"), ("10.4", "loss_scale_trajectory")]
    assert [e.id for e in AMP_EXERCISES] == ["10.3", "10.4"] and [e.points for e in AMP_EXERCISES] == [2, 2]


@pytest.mark.parametrize("ex_id,name", EXERCISES)
def test_solution_passes(ex_id, name, solution):
    for _ in range(3):
        res = check(ex_id, solution[name])
        assert res.passed, res.hint


@pytest.mark.parametrize("ex_id,name", EXERCISES)
def test_stub_is_not_attempted_and_states_what_not_how(ex_id, name, stubs):
    res = check(ex_id, stubs[name])
    assert res.status == "not attempted" and "NotImplementedError" in res.line()
    with pytest.raises(NotImplementedError) as e:
        stubs[name]([False], 1.0, 2.0, 0.5, 1) if ex_id == "10.4" else stubs[name](0)
    message = str(e.value)
    assert message.startswith(f"Exercise {ex_id}: return ")
    assert not re.search(r"[=@*/^\[\]&|<>]|0x|\b(shift|mask|add|carry|multiply|count|reset)\b", message), message


JUNK = (lambda *a: None, lambda *a: 1 / 0, "not a function", lambda *a: "text", lambda *a: True,
        lambda *a: (None, None), lambda *a: [1.0, 2.0], lambda *a: torch.zeros(0), lambda *a: float("nan"),
        lambda *a: math.inf, lambda *a: ([1], [2]), lambda *a: ("a", "b"), lambda *a: (torch.zeros(2), []),
        lambda *a: 2**40, lambda *a: -1, lambda *a: 1.5, lambda *a: ([True] * len(a[0]), [0]) if a and
        isinstance(a[0], list) else 0, lambda *a: torch.zeros(2, 3, dtype=torch.long))


@pytest.mark.parametrize("ex_id", ["10.3", "10.4"])
def test_check_never_raises_on_junk(ex_id):
    kit.assert_junk_gets_a_hint(ex_id, JUNK)


@pytest.mark.parametrize("ex_id", ["10.3", "10.4"])
def test_each_simulated_mistake_gets_its_own_hint_on_every_draw(ex_id):
    kit.assert_mistakes_caught(ex_id, min_mistakes=6)


# ---------------------------------------------------------------------------------------------------
# 10.3 valid variants and worked examples


def bf16_by_torch(bits: int) -> int:
    """torch's own cast: reinterpret the bits as float32, cast, read the 16 bits back."""
    signed = bits - 2**32 if bits >= 2**31 else bits
    x = torch.tensor([signed], dtype=torch.int32).view(torch.float32)
    return x.to(torch.bfloat16).view(torch.int16).item() & 0xFFFF


def bf16_classic_trick(bits: int) -> int:
    """The rounding bias trick: add 0x7FFF plus the last kept bit, then drop 16 bits (NaNs first)."""
    if bits & 0x7FFFFFFF > 0x7F800000:
        return 0x7FC0 | ((bits >> 16) & 0x8000)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


def bf16_numpy(bits: int):
    import numpy as np

    return np.uint16(bf16_classic_trick(bits))


def bf16_tensor(bits: int) -> torch.Tensor:
    return torch.tensor(bf16_classic_trick(bits), dtype=torch.int64)


@pytest.mark.parametrize("fn", [bf16_by_torch, bf16_classic_trick, bf16_numpy, bf16_tensor])
def test_bf16_valid_variants_pass(fn):
    for _ in range(3):
        res = check("10.3", fn)
        assert res.passed, res.hint


def test_bf16_hand_cases_are_torch_casts_and_the_markdown_table():
    for bits, want in HAND_BF16:
        got = bf16_by_torch(bits)
        assert got == want or (math.isnan(struct_value(bits)) and (got >> 7) & 0xFF == 0xFF and got & 0x7F)
    for row in ("| `0x3F800000` | 1.0 | `0x3F80` |", "| `0x3F808000` | $1 + 2^{-8}$ | `0x3F80` |",
                "| `0x3F818000` | $1 + 3 \\cdot 2^{-8}$ | `0x3F82` |",
                "| `0x3F808001` | just above $1 + 2^{-8}$ | `0x3F81` |", "| `0x7F7FFFFF` | largest fp32 | `0x7F80` |"):
        assert row in MARKDOWN, row
        fp32_hex, bf16_hex = re.findall(r"`(0x[0-9A-F]+)`", row)
        assert bf16_by_torch(int(fp32_hex, 16)) == int(bf16_hex, 16)


def struct_value(bits: int) -> float:
    import struct

    return struct.unpack(">f", bits.to_bytes(4, "big"))[0]


def test_bf16_cases_cover_ties_nans_overflow_and_subnormals():
    cases = [args[0] for args, _ in _bf16_cases()]
    assert sum(b & 0xFFFF == 0x8000 for b in cases) >= 20  # ties
    assert any(b & 0x7FFFFFFF > 0x7F800000 and not (b >> 16) & 0x7F for b in cases)  # NaN only in the low half
    assert any((b >> 23) & 0xFF == 0 and b & 0x7FFFFF for b in cases)  # subnormal
    assert 0x7F7FFFFF in cases and 0x80000000 in cases


# ---------------------------------------------------------------------------------------------------
# 10.4 valid variants and worked examples


class CountingSGD(torch.optim.SGD):
    """SGD that counts the steps it took (GradScaler skips the call on an overflow)."""

    def __init__(self, params, **kw):
        super().__init__(params, **kw)
        self.taken = 0

    def step(self, closure=None):
        self.taken += 1
        return super().step(closure)


def trajectory_by_gradscaler(found_inf, init_scale, growth_factor, backoff_factor, growth_interval):
    """torch.amp.GradScaler itself, fed a gradient of inf on the flagged steps."""
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_factor=growth_factor,
                                  backoff_factor=backoff_factor, growth_interval=growth_interval)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = CountingSGD([p], lr=0.0)
    scaler.scale(torch.ones(()))  # GradScaler makes its scale tensor on first use
    scales, skipped = [], []
    for t, flag in enumerate(found_inf):
        p.grad = torch.tensor([math.inf if flag else 1.0])
        before = opt.taken
        scaler.step(opt)
        if opt.taken == before:
            skipped.append(t)
        scaler.update()
        scales.append(scaler.get_scale())
    return scales, skipped


def trajectory_float32(found_inf, init_scale, growth_factor, backoff_factor, growth_interval):
    scale, clean = torch.tensor(init_scale, dtype=torch.float32), 0
    scales, skipped = [], []
    for t, flag in enumerate(found_inf):
        if flag:
            scale, clean = scale * backoff_factor, 0
            skipped.append(t)
        else:
            clean += 1
            if clean == growth_interval:
                grown = scale * growth_factor
                scale = grown if torch.isfinite(grown) else scale
                clean = 0
        scales.append(scale.clone())
    return tuple(scales), torch.tensor(skipped, dtype=torch.int64)


def trajectory_recursive(found_inf, init_scale, growth_factor, backoff_factor, growth_interval, clean=0):
    """A different shape: recursion over the list, numpy scalars in the answer."""
    import numpy as np

    if not found_inf:
        return [], []
    if found_inf[0]:
        scale, clean = init_scale * backoff_factor, 0
    elif clean + 1 == growth_interval:
        scale = init_scale * growth_factor if init_scale * growth_factor < 3.4028235e38 else init_scale
        clean = 0
    else:
        scale, clean = init_scale, clean + 1
    rest_s, rest_k = trajectory_recursive(found_inf[1:], scale, growth_factor, backoff_factor, growth_interval, clean)
    return [np.float64(scale)] + rest_s, ([0] if found_inf[0] else []) + [k + 1 for k in rest_k]


@pytest.mark.parametrize("fn", [trajectory_by_gradscaler, trajectory_float32, trajectory_recursive])
def test_trajectory_valid_variants_pass(fn):
    for _ in range(2):
        res = check("10.4", fn)
        assert res.passed, res.hint


def test_trajectory_worked_examples_are_gradscalers_and_the_markdown():
    for args, want in HAND_FLAGS:
        assert tuple(map(list, trajectory_by_gradscaler(*args))) == want
    assert "`found_inf = [False, False, True, False, False, False]` gives `([8, 16, 8, 8, 16, 16], [2])`" in MARKDOWN
    assert "`found_inf = [False, True, False, False]` gives `([8, 4, 4, 8], [1])`" in MARKDOWN
    assert "`growth_interval = 2`, `init_scale = 8.0`" in MARKDOWN


def test_trajectory_cases_have_growth_backoff_and_the_float32_cap():
    cases = _trajectory_cases()
    grew = shrank = capped = False
    for (flags, init, *_), (scales, skipped) in cases:
        assert list(skipped) == [t for t, f in enumerate(flags) if f]
        seq = [init, *scales]
        grew |= any(b > a for a, b in zip(seq[:-1], seq[1:], strict=True))
        shrank |= any(b < a for a, b in zip(seq[:-1], seq[1:], strict=True))
        capped |= init == 2.0**126 and scales[-1] == 2.0**127
    assert grew and shrank and capped
    # the reference (minillm's DynamicLossScaler) is GradScaler's rule on every case
    for args, (scales, skipped) in cases[:8]:
        ref_scales, ref_skipped = trajectory_by_gradscaler(*args)
        assert tuple(ref_scales) == scales and tuple(ref_skipped) == skipped
