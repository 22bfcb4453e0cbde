"""Chapter 9 exercises, LoRA (09.1-09.3): plausible wrong solutions fail with the hint naming the mistake,
acceptable variants (float32, loops, einsum, the merged weight) pass, and every hand-worked value the notebook's
markdown shows is what the `minillm` references compute. For the whole chapter: the function each check cell
grades, how many mistakes the NF4, AdaLoRA and prefix checkers simulate at least, and junk answers shaped like
this chapter's (indices, budgets, attention outputs) fail with a hint. NF4 (09.4, 09.5), AdaLoRA (09.6) and
prefix attention (09.7) have their own files, test_exercises_ch09_{nf4,adalora,prompts}.py. What every exercise
gets (the solution passes, the stub is "not attempted", generic junk answers and the checker's simulated
mistakes) is checked in test_exercises.py."""

from __future__ import annotations

import math

import exercise_kit as kit
import pytest
import torch
import torch.nn.functional as F

from minillm.grading import ch09, check, core
from minillm.model import GPTConfig
from minillm.peft import LoraConfig, LoRALinear, lora_param_count

CHAPTER = "09"
CELLS = kit.cells(kit.source(CHAPTER))
MARKDOWN = "\n".join(c.source(False) for c in CELLS if c.kind == "markdown")


def _d64(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def _hand_layer(bias=None) -> LoRALinear:
    base = torch.nn.Linear(2, 2, bias=bias is not None).double()
    lora = LoRALinear(base, 1, ch09.HAND_ALPHA)
    with torch.no_grad():
        base.weight.copy_(_d64(ch09.HAND_W))
        if bias is not None:
            base.bias.copy_(_d64(bias))
        lora.lora_A.copy_(_d64(ch09.HAND_A))
        lora.lora_B.copy_(_d64(ch09.HAND_B))
    return lora


def test_hand_worked_values_shown_are_the_references():
    assert "`W = [[1, 2], [3, 4]]`, `A = [[1, -1]]`, `B = [[2], [0.5]]`, `alpha = 3`" in MARKDOWN
    assert "`x = [[2, 1]]`" in MARKDOWN
    x = _d64(ch09.HAND_X)
    assert "`b = None`: $Wx = [4, 10]$, $Ax = 1$, $s\\,BAx = [6, 1.5]$, so `h = [[10, 11.5]]`" in MARKDOWN
    assert _hand_layer()(x).tolist() == [[10.0, 11.5]]
    assert "`b = [1, -1]`: `h = [[11, 10.5]]`" in MARKDOWN
    assert _hand_layer([1.0, -1.0])(x).tolist() == [[11.0, 10.5]]
    layer = _hand_layer()
    layer.merge()
    assert "the layer of 09.1: `[[7, -4], [4.5, 2.5]]`" in MARKDOWN
    assert layer.base_layer.weight.tolist() == [[7.0, -4.0], [4.5, 2.5]]
    # the rsLoRA example: W = 0, four rows [1, 0], B's first row 0.25, alpha 8 -> s = 4
    assert "`alpha = 8`, `use_rslora=True` ($s = 8 / \\sqrt 4 = 4$): `[[4, 0], [0, 0]]`" in MARKDOWN
    rs = LoRALinear(torch.nn.Linear(2, 2, bias=False).double(), 4, 8.0, use_rslora=True)
    with torch.no_grad():
        rs.base_layer.weight.zero_()
        rs.lora_A.copy_(_d64([[1.0, 0.0]] * 4))
        rs.lora_B.copy_(_d64([[0.25] * 4, [0.0] * 4]))
    rs.merge()
    assert rs.base_layer.weight.tolist() == [[4.0, 0.0], [0.0, 0.0]]
    assert "`r = 8` trains 4,194,304 parameters" in MARKDOWN
    assert lora_param_count(LoraConfig(r=8, target_modules=("q_proj", "v_proj")), "llama2-7b") == 4_194_304


def test_llama70b_case_is_gqa_shaped():
    cfg = GPTConfig.preset("llama2-70b")
    assert lora_param_count(LoraConfig(r=16, target_modules=("q_proj", "v_proj")), cfg) == 32_768_000


# ---------------------------------------------------------------------------------------------------
# acceptable variants pass


def lora_linear_float32(x, W, b, A, B, alpha, use_rslora=False):
    f = [t.float() if t is not None else None for t in (x, W, b, A, B)]
    s = alpha / math.sqrt(A.shape[0]) if use_rslora else alpha / A.shape[0]
    return F.linear(f[0], f[1], f[2]) + s * F.linear(F.linear(f[0], f[3]), f[4])


def lora_linear_merged(x, W, b, A, B, alpha, use_rslora=False):
    s = alpha / math.sqrt(A.shape[0]) if use_rslora else alpha / A.shape[0]
    return F.linear(x, W + s * B @ A, b)


def lora_linear_einsum(x, W, b, A, B, alpha, use_rslora=False):
    s = alpha * (A.shape[0] ** -0.5 if use_rslora else 1 / A.shape[0])
    h = torch.einsum("...i,oi->...o", x, W) + s * torch.einsum("...r,or->...o", torch.einsum("...i,ri->...r", x, A), B)
    return h + (0 if b is None else b)


def merge_loops(W, A, B, alpha, use_rslora=False):
    s = alpha / math.sqrt(A.shape[0]) if use_rslora else alpha / A.shape[0]
    out = [[W[o, i].item() + s * sum(B[o, k].item() * A[k, i].item() for k in range(A.shape[0]))
            for i in range(W.shape[1])] for o in range(W.shape[0])]
    return out  # a nested list is accepted too


def merge_clone_in_place(W, A, B, alpha, use_rslora=False):
    s = alpha / math.sqrt(A.shape[0]) if use_rslora else alpha / A.shape[0]
    out = W.clone()
    out.addmm_(B, A, alpha=s)
    return out


def params_by_loops(n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r, targets):
    hd = d_model // n_head
    total = 0
    for _ in range(n_layer):
        for name in targets:
            if name == "lm_head":
                continue
            i = ffn_hidden if name == "down_proj" else (n_head * hd if name == "o_proj" else d_model)
            o = {"q_proj": n_head * hd, "k_proj": n_kv_head * hd, "v_proj": n_kv_head * hd}.get(
                name, d_model if name in ("o_proj", "down_proj") else ffn_hidden)
            total += r * i + o * r
    return total + (r * (d_model + vocab_size) if "lm_head" in targets else 0)


@pytest.mark.parametrize(("ex", "fn"), [("09.1", lora_linear_float32), ("09.1", lora_linear_merged),
                                        ("09.1", lora_linear_einsum), ("09.2", merge_loops),
                                        ("09.2", merge_clone_in_place), ("09.3", params_by_loops)])
def test_valid_variants_pass(ex, fn):
    for _ in range(3):  # new random cases each time
        assert check(ex, fn).passed


# ---------------------------------------------------------------------------------------------------
# plausible wrong solutions fail, with the hint of their mistake


def transposed_delta_linear(x, W, b, A, B, alpha, use_rslora=False):
    s = alpha / math.sqrt(A.shape[0]) if use_rslora else alpha / A.shape[0]
    return F.linear(x, W, b) + s * (x @ (B @ A))  # (B A) x^T as if the weight were (in, out): wrong unless square


def int_division(n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r, targets):
    return float(params_by_loops(n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r, targets))


@pytest.mark.parametrize(("ex", "fn", "hint"), [
    ("09.1", transposed_delta_linear, ""),
    ("09.1", lambda x, W, b, A, B, alpha, use_rslora=False: F.linear(x, W, b), ""),
    ("09.1", lambda x, W, b, A, B, alpha, use_rslora=False: F.linear(x, W, b) + alpha / A.shape[0] * (x @ A.T @ B.T),
     "with use_rslora=True"),
    ("09.2", lambda W, A, B, alpha, use_rslora=False: W + alpha * (B @ A), "alpha / r"),
    ("09.3", int_division, "return an int"),
    ("09.3", lambda *a: ch09._count(*a, layers=False), "multiply the per-layer count by n_layer"),
])
def test_wrong_solutions_fail(ex, fn, hint):
    result = check(ex, fn)
    assert not result.passed
    assert hint in result.hint


# ---------------------------------------------------------------------------------------------------
# the whole chapter: the graded functions, the simulated mistakes, junk shaped like the chapter's answers


def test_check_cells_grade_the_functions_the_hints_name():
    assert kit.checked_functions(kit.source(CHAPTER)) == {
        "09.1": "lora_linear", "09.2": "merge_lora_weight", "09.3": "lora_trainable_params",
        "09.4": "nf4_quantize", "09.5": "nf4_dequantize", "09.6": "adalora_budget", "09.7": "prefix_attention"}


def test_checkers_simulate_enough_mistakes():
    counts = {e.id: len(e.mistakes) for e in core.exercises_of(CHAPTER)}
    floors = {"09.4": 3, "09.5": 3, "09.6": 8, "09.7": 5}
    assert all(counts[i] >= n for i, n in floors.items()), counts


# beyond test_exercises.py's JUNK: wrong-valued answers of the right kind (x is 09.4's input, 09.5's indices)
NF4_JUNK = (lambda x, *a: (torch.full_like(x, 3.0), x[:1]), lambda x, *a: (torch.full((x.numel(),), 99), x[:1]))
CHAPTER_JUNK = {
    "09.4": NF4_JUNK,
    "09.5": NF4_JUNK,
    "09.6": (lambda *a: -1, lambda *a: a[1] + 0.5),
    "09.7": (lambda q, *a: q, lambda q, *a: torch.full_like(q, float("nan")),
             lambda q, k, v, pk, pv: torch.cat([pv, v], 2), lambda q, *a: q[..., 0], lambda q, *a: q.long()),
}


@pytest.mark.parametrize(("ex", "k"), [(ex, k) for ex, fns in CHAPTER_JUNK.items() for k in range(len(fns))])
def test_chapter_shaped_junk_fails_with_a_hint(ex, k):
    res = check(ex, CHAPTER_JUNK[ex][k])
    assert res.status == "failed" and res.hint, res
    assert not res.hint.startswith(("internal", "checking what your function returned raised")), res.hint
