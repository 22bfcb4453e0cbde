"""Chapter 10's memory exercises (10.1 bytes of the model states in training, 10.2 activation bytes of a layer):
the solution passes and the stub is "not attempted", junk answers never make a check raise, each simulated
mistake gets its own hint on several draws of the random cases, valid variants pass (floats, tensors, numpy,
loops), the stubs do not give the answer away, and the worked examples of the task text are what the references
(and minillm's own memory functions) compute. The cells live in exercises/src/10_memory_cells.py until the
coordinator joins them into chapter 10's source; the exercises are registered here from `MEMORY_EXERCISES`."""

from __future__ import annotations

import math
import re

import exercise_kit as kit
import numpy as np
import pytest
import torch

from minillm.grading import check, core
from minillm.grading.ch10_memory import (
    LAYER_7B,
    LLAMA2_7B,
    MEMORY_EXERCISES,
    TINY,
    _params,
    _ref_layer_bytes,
    _ref_state_bytes,
)
from minillm.model import GPTConfig, count_params
from minillm.train_memory import training_memory

SOURCE = kit.source("10")
IDS = {"10.1": "train_state_bytes", "10.2": "layer_activation_bytes"}
JUNK = (lambda *a: None, lambda *a: 1 / 0, "not a function", lambda *a: "text", lambda *a: True,
        lambda *a: [1.0, 2.0], lambda *a: torch.zeros(0), lambda *a: float("nan"), lambda *a: math.inf,
        lambda *a: torch.zeros(2, 3, dtype=torch.long))


@pytest.fixture(autouse=True, scope="module")
def registered():
    core.load_chapter("10")


globals().update(kit.namespace_fixtures(SOURCE))  # the solution and stubs fixtures


def test_check_cells_grade_the_declared_functions():
    assert {k: v for k, v in kit.checked_functions(SOURCE).items() if k in IDS} == IDS
    assert [e.id for e in MEMORY_EXERCISES] == list(IDS) and [e.name for e in MEMORY_EXERCISES] == list(IDS.values())


@pytest.mark.parametrize("ex_id", IDS)
def test_solution_passes_and_stub_is_not_attempted(ex_id, solution, stubs):
    assert check(ex_id, solution[IDS[ex_id]]).status == "passed"
    with pytest.raises(NotImplementedError, match=f"^Exercise {ex_id}: return "):
        stubs[IDS[ex_id]](*([1] * 7), "fp32") if ex_id == "10.1" else stubs[IDS[ex_id]](1, 1, 1, 1, "none")
    assert check(ex_id, stubs[IDS[ex_id]]).status == "not attempted"


def test_stubs_do_not_give_the_answer_away(stubs):
    for name in IDS.values():
        with pytest.raises(NotImplementedError) as e:
            stubs[name](*([1] * 7), "fp32") if name == "train_state_bytes" else stubs[name](1, 1, 1, 1, "none")
        assert not re.search(r"[=*/+]|\d|master|Adam|34|s\^2", str(e.value).split(": ", 1)[1]), str(e.value)


@pytest.mark.parametrize("ex_id", IDS)
def test_check_never_raises_on_junk(ex_id):
    kit.assert_junk_gets_a_hint(ex_id, JUNK)


@pytest.mark.parametrize("ex_id", IDS)
def test_each_simulated_mistake_gets_its_own_hint_on_every_draw(ex_id):
    kit.assert_mistakes_caught(ex_id, min_mistakes=5)


# ---------------------------------------------------------------------------------------------------
# valid variants


def state_bytes_float_loop(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, tied, precision):
    """Float arithmetic, parameters counted matrix by matrix in a loop, bytes as a sum over the parts."""
    hd = d_model / n_head
    shapes = [(vocab_size, d_model)] + ([] if tied else [(d_model, vocab_size)]) + [(d_model, 1)]
    for _ in range(n_layer):
        shapes += [(d_model, d_model), (d_model, n_kv_head * hd), (d_model, n_kv_head * hd), (d_model, d_model),
                   (d_model, ffn_hidden), (d_model, ffn_hidden), (ffn_hidden, d_model), (d_model, 1), (d_model, 1)]
    n = 0.0
    for r, c in shapes:
        n += r * c
    parts = {"fp32": (4.0, 4.0, 0.0, 4.0, 4.0), "mixed": (2.0, 2.0, 4.0, 4.0, 4.0), "bf16": (2.0, 2.0, 0.0, 2.0, 2.0)}
    return sum(n * b for b in parts[precision])


def state_bytes_tensor(*args):
    return torch.tensor(state_bytes_float_loop(*args), dtype=torch.float64)


def state_bytes_numpy(*args):
    return np.int64(round(state_bytes_float_loop(*args)))


def layer_bytes_float(seq, batch, hidden, heads, recompute):
    sbh = float(seq) * batch * hidden
    table = {"none": 34 * sbh * (1 + 5 * heads * seq / (34 * hidden)), "selective": 34.0 * sbh, "full": 2.0 * sbh}
    return table[recompute]


def layer_bytes_tensor(seq, batch, hidden, heads, recompute):
    return torch.tensor([layer_bytes_float(seq, batch, hidden, heads, recompute)], dtype=torch.float64)


@pytest.mark.parametrize("ex_id,fn", [("10.1", state_bytes_float_loop), ("10.1", state_bytes_tensor),
                                      ("10.1", state_bytes_numpy), ("10.2", layer_bytes_float),
                                      ("10.2", layer_bytes_tensor)])
def test_valid_variants_pass(ex_id, fn):
    for _ in range(3):
        assert check(ex_id, fn).status == "passed"


def test_one_byte_off_fails():
    assert check("10.1", lambda *a: _ref_state_bytes(*a) + 1).status == "failed"
    assert check("10.2", lambda *a: _ref_layer_bytes(*a) + 1).status == "failed"


# ---------------------------------------------------------------------------------------------------
# the worked examples and the references


def _markdown() -> str:
    return "\n".join(c.source(False) for c in kit.cells(SOURCE) if c.kind == "markdown")


def test_worked_examples_of_the_task_text():
    text = _markdown()
    assert _params(*TINY) == 196 and "196" in text
    shown = {p: _ref_state_bytes(*TINY, p) for p in ("fp32", "mixed", "bf16")}
    assert shown == {"fp32": 3136, "mixed": 3136, "bf16": 1568}
    assert "`3136` bytes in `\"fp32\"`, `3136` in `\"mixed\"` and `1568` in `\"bf16\"`" in text
    assert _ref_state_bytes(*LLAMA2_7B, "mixed") == 107_814_649_856 and "`107814649856`" in text
    layer = {m: _ref_layer_bytes(*LAYER_7B, m) for m in ("none", "selective", "full")}
    assert layer == {"none": 956_301_312, "selective": 285_212_672, "full": 16_777_216}
    for v in layer.values():
        assert f"`{v}`" in text
    # hint 2's numbers
    assert 2048 * 1 * 4096 == 8_388_608 and 32 * 2048**2 == 134_217_728


def test_state_bytes_reference_equals_minillm_training_memory():
    # by hand for the tiny model: q, o 2 x 16; k, v 2 x 4 x 2; SwiGLU 3 x 32; norms 8 -> 152; + final 4 + embedding 40
    assert 2 * 16 + 2 * 8 + 96 + 8 + 4 + 40 == 196
    for shape in (TINY, LLAMA2_7B, (1000, 3, 96, 6, 2, 250, True)):
        cfg = GPTConfig.preset("llama2-7b", vocab_size=shape[0], n_layer=shape[1], d_model=shape[2], n_head=shape[3],
                               n_kv_head=shape[4], ffn_hidden=shape[5], tie_embeddings=shape[6])
        with torch.device("meta"):
            from minillm.model import GPT

            built = GPT(cfg).num_params()
        assert _params(*shape) == count_params(cfg)["total"] == built
        for precision in ("fp32", "mixed", "bf16"):
            t = training_memory(cfg, 1, 1, precision)
            assert _ref_state_bytes(*shape, precision) == t["weights"] + t["gradients"] + t["optimizer states"]


def test_layer_reference_is_korthikanti_table():
    # their table 2 without parallelism: sbh (34 + 5 a s / h), sbh 34, and 2 sbh for full recomputation
    for s, b, h, a in ((2048, 1, 4096, 32), (4, 2, 8, 2), (1000, 3, 768, 12)):
        assert _ref_layer_bytes(s, b, h, a, "none") == pytest.approx(s * b * h * (34 + 5 * a * s / h), rel=1e-15)
        assert _ref_layer_bytes(s, b, h, a, "selective") == 34 * s * b * h
        assert _ref_layer_bytes(s, b, h, a, "full") == 2 * s * b * h
