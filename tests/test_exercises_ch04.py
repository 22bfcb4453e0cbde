"""Chapter 4 exercises: plausible wrong solutions fail with the hint naming the mistake, acceptable variants
pass, and the hand-worked values the notebook shows are what the references compute. What every exercise
gets (the solution passes, the stub is "not attempted", junk answers and the checker's simulated mistakes)
is checked in test_exercises.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minillm import ffn
from minillm.grading import check

# ---------------------------------------------------------------------------------------------------
# the hand-worked values written in the notebook's markdown


def _d64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_hand_worked_activation_values():
    x = _d64([-2.0, -1.0, 0.0, 1.0, 2.0])
    assert ffn.gelu(x).tolist() == pytest.approx([-0.045500, -0.158655, 0.0, 0.841345, 1.954500], abs=5e-7)
    assert 0.5 * (1 + math.erf(2 / math.sqrt(2))) == pytest.approx(0.977250, abs=5e-7)  # Phi(2)
    assert ffn.gelu_tanh(x).tolist() == pytest.approx([-0.045402, -0.158808, 0.0, 0.841192, 1.954598], abs=5e-7)
    assert math.sqrt(2 / math.pi) == pytest.approx(0.797885, abs=5e-7)
    assert math.sqrt(2 / math.pi) * 1.044715 == pytest.approx(0.833562, abs=5e-7)
    assert math.tanh(math.sqrt(2 / math.pi) * 1.044715) == pytest.approx(0.682384, abs=5e-7)
    # the two GeLU formulas against PyTorch's, and the largest gap quoted in the notebook (4.7e-4 near |x| = 2.7)
    grid = torch.linspace(-6, 6, 12001, dtype=torch.float64)
    assert torch.allclose(ffn.gelu(grid), F.gelu(grid), atol=1e-12)
    assert torch.allclose(ffn.gelu_tanh(grid), F.gelu(grid, approximate="tanh"), atol=1e-12)
    gap = (ffn.gelu(grid) - ffn.gelu_tanh(grid)).abs()
    assert gap.max().item() == pytest.approx(4.73e-4, abs=1e-5)
    assert abs(grid[gap.argmax()].item()) == pytest.approx(2.7, abs=0.05)
    assert (ffn.gelu(grid) - grid * torch.sigmoid(1.702 * grid)).abs().max().item() == pytest.approx(0.020, abs=1e-3)
    s = _d64([1.0, -1.0, 2.0, 0.0])
    assert ffn.swish(s, 1.0).tolist() == pytest.approx([0.731059, -0.268941, 1.761594, 0.0], abs=5e-7)
    assert ffn.swish(s, 0.0).tolist() == [0.5, -0.5, 1.0, 0.0]
    assert ffn.swish(_d64([1.0, -1.0]), 2.0).tolist() == pytest.approx([0.880797, -0.119203], abs=5e-7)


def test_hand_worked_swiglu_matches_the_module_with_llama_names():
    x = _d64([1.0, 2.0])
    wg, wu, wd = _d64([[1.0, 0.0], [-1.0, 1.0]]), _d64([[0.0, 1.0], [2.0, 0.0]]), _d64([[1.0, 0.0], [1.0, -1.0]])
    assert (x @ wg.T).tolist() == [1.0, 1.0] and (x @ wu.T).tolist() == [2.0, 2.0]
    want = [2 * ffn.silu(torch.tensor(1.0, dtype=torch.float64)).item(), 0.0]
    assert want[0] == pytest.approx(1.462117, abs=5e-7)
    assert ffn.swiglu(x, wg.T, wu.T, wd.T).tolist() == pytest.approx(want, abs=1e-12)
    block = ffn.GLUFFN(2, 2, "swiglu").double()
    with torch.no_grad():
        block.gate.weight.copy_(wg)
        block.up.weight.copy_(wu)
        block.down.weight.copy_(wd)
    assert block(x).tolist() == pytest.approx(want, abs=1e-12)


def test_hand_worked_hidden_sizes_and_parameter_counts():
    assert [ffn.llama_hidden_size(d) for d in (4096, 5120, 8192)] == [11008, 13824, 22016]
    assert ffn.llama_hidden_size(8192, 4096, 1.3) == 28672
    assert (int(8 * 4096 / 3), int(8 * 5120 / 3), int(8 * 8192 / 3), int(1.3 * 21845)) == (10922, 13653, 21845, 28398)
    assert 256 * round(13653 / 256) == 13568  # the "nearest" answer the notebook warns about
    assert ffn.ffn_params(768, 3072, bias=True) == 4_722_432
    assert ffn.glu_ffn_params(4096, 11008, bias=False) == 135_266_304
    assert ffn.ffn_params(4096, 16384, bias=False) == 134_217_728
    assert ffn.glu_ffn_params(4, 8, bias=True) == 116
    block = ffn.GLUFFN(4, 8, "swiglu", bias=True)
    assert sum(p.numel() for p in block.parameters()) == 116
    assert sum(p.numel() for p in ffn.FFN(4, 16, bias=True).parameters()) == ffn.ffn_params(4, 16, bias=True)


# ---------------------------------------------------------------------------------------------------
# plausible wrong solutions, written the way a learner might


def gelu_gpt2_formula(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def gelu_quick(x):
    return x * torch.sigmoid(1.702 * x)


def gelu_erf_of_x(x):
    return x * (1 + torch.erf(x)) / 2


def gelu_cdf(x):
    return torch.distributions.Normal(0.0, 1.0).cdf(x)


def gelu_twice(x):
    return x * (1 + torch.special.erf(x / 2**0.5))


def gelu_relu(x):
    return torch.relu(x)


def gt_linear_tanh(x):
    return 0.5 * x * (1 + torch.tanh(0.7978845608 * x))


def gt_sqrt_two_pi(x):
    return x / 2 * (1 + torch.tanh((2 * math.pi) ** 0.5 * (x + 0.044715 * x * x * x)))


def gt_bracket(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * x + 0.044715 * x**3))


def gt_exact(x):
    return F.gelu(x)


def gt_no_half(x):
    return x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def sw_sigmoid(x, beta):
    return 1 / (1 + torch.exp(-beta * x))


def sw_silu(x, beta):
    return F.silu(x)


def sw_beta_times(x, beta):
    return beta * x * torch.sigmoid(x)


def sw_over_beta(x, beta):
    return x / (1 + torch.exp(-x / beta))


def ffn_silu_up(x, w_gate, w_up, w_down):
    return F.linear(F.linear(x, w_gate) * F.silu(F.linear(x, w_up)), w_down)


def ffn_matmul_no_t(x, w_gate, w_up, w_down):
    return (F.silu(x @ w_gate) * (x @ w_up)) @ w_down


def ffn_geglu(x, w_gate, w_up, w_down):
    return F.linear(F.gelu(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)


def ffn_glu(x, w_gate, w_up, w_down):
    return F.linear(torch.sigmoid(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)


def ffn_plus(x, w_gate, w_up, w_down):
    return F.linear(F.silu(F.linear(x, w_gate)) + F.linear(x, w_up), w_down)


def ffn_no_down(x, w_gate, w_up, w_down):
    return F.silu(x @ w_gate.T) * (x @ w_up.T)


def ffn_silu_of_product(x, w_gate, w_up, w_down):
    return F.silu((x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


def ffn_classic(x, w_gate, w_up, w_down):
    return F.silu(x @ w_up.T) @ w_down.T  # the gate never used: not a recognised mistake, still wrong


def hid_4d(dim, multiple_of=256, ffn_dim_multiplier=None):
    h = 4 * dim
    if ffn_dim_multiplier:
        h = int(h * ffn_dim_multiplier)
    return math.ceil(h / multiple_of) * multiple_of


def hid_two_thirds_d(dim, multiple_of=256, ffn_dim_multiplier=None):
    h = 2 * dim // 3
    if ffn_dim_multiplier is not None:
        h = int(ffn_dim_multiplier * h)
    return -(-h // multiple_of) * multiple_of


def hid_floor(dim, multiple_of=256, ffn_dim_multiplier=None):
    h = int(8 * dim / 3)
    if ffn_dim_multiplier is not None:
        h = int(ffn_dim_multiplier * h)
    return h // multiple_of * multiple_of


def hid_nearest(dim, multiple_of=256, ffn_dim_multiplier=None):
    h = int(8 * dim / 3)
    if ffn_dim_multiplier is not None:
        h = int(ffn_dim_multiplier * h)
    return round(h / multiple_of) * multiple_of


def hid_no_multiplier(dim, multiple_of=256, ffn_dim_multiplier=None):
    return math.ceil(int(8 * dim / 3) / multiple_of) * multiple_of


def hid_multiplier_last(dim, multiple_of=256, ffn_dim_multiplier=None):
    h = math.ceil(int(8 * dim / 3) / multiple_of) * multiple_of
    if ffn_dim_multiplier is not None:
        h = int(h * ffn_dim_multiplier)
    return h


def hid_fixed_256(dim, multiple_of=256, ffn_dim_multiplier=None):
    h = int(8 * dim / 3)
    if ffn_dim_multiplier is not None:
        h = int(ffn_dim_multiplier * h)
    return math.ceil(h / 256) * 256


def hid_unrounded(dim, multiple_of=256, ffn_dim_multiplier=None):
    h = int(8 * dim / 3)
    return h if ffn_dim_multiplier is None else int(h * ffn_dim_multiplier)


def hid_float(dim, multiple_of=256, ffn_dim_multiplier=None):
    h = 8 * dim / 3 * (ffn_dim_multiplier or 1)
    return math.ceil(h / multiple_of) * multiple_of * 1.0


def par_no_bias(dim, hidden, gated, bias):
    return dim * hidden * (3 if gated else 2)


def par_always_two(dim, hidden, gated, bias):
    return 2 * dim * hidden + (dim + hidden if bias else 0)


def par_gate_bias_missing(dim, hidden, gated, bias):
    n = 3 if gated else 2
    return n * dim * hidden + (hidden + dim) * bias


def par_down_bias_hidden(dim, hidden, gated, bias):
    w = (3 if gated else 2) * dim * hidden
    b = (3 if gated else 2) * hidden if bias else 0
    return w + b


@pytest.mark.parametrize("ex_id,fn,hint", [
    ("04.1", gelu_gpt2_formula, "tanh approximation"),
    ("04.1", gelu_quick, "sigmoid approximation"),
    ("04.1", gelu_erf_of_x, "divide x by sqrt(2)"),
    ("04.1", gelu_cdf, "you returned Phi(x)"),
    ("04.1", gelu_twice, "1/2 of Phi is missing"),
    ("04.1", gelu_relu, "expected"),
    ("04.2", gt_linear_tanh, "cubic term is missing"),
    ("04.2", gt_sqrt_two_pi, "not sqrt(2 * pi)"),
    ("04.2", gt_bracket, "whole bracket"),
    ("04.2", gt_exact, "exact GeLU"),
    ("04.2", gt_no_half, "factor 0.5 is missing"),
    ("04.3", sw_sigmoid, "not the sigmoid alone"),
    ("04.3", sw_silu, "beta is ignored"),
    ("04.3", sw_beta_times, "INSIDE the sigmoid"),
    ("04.3", sw_over_beta, "not sigmoid(x / beta)"),
    ("04.4", ffn_silu_up, "GATE branch"),
    ("04.4", ffn_matmul_no_t, "x @ W.T, not x @ W"),
    ("04.4", ffn_geglu, "GeGLU"),
    ("04.4", ffn_glu, "original GLU"),
    ("04.4", ffn_plus, "MULTIPLIED"),
    ("04.4", ffn_no_down, "down projection is missing"),
    ("04.4", ffn_silu_of_product, "gate alone"),
    ("04.4", ffn_classic, "expected"),
    ("04.5", hid_4d, "2/3 is missing"),
    ("04.5", hid_two_thirds_d, "not 2/3 of d"),
    ("04.5", hid_floor, "yours rounds down"),
    ("04.5", hid_nearest, "not to the nearest"),
    ("04.5", hid_no_multiplier, "ffn_dim_multiplier is ignored"),
    ("04.5", hid_multiplier_last, "BEFORE rounding up"),
    ("04.5", hid_fixed_256, "not a fixed 256"),
    ("04.5", hid_unrounded, "round hidden up"),
    ("04.5", hid_float, "return an int"),
    ("04.6", par_no_bias, "biases are missing"),
    ("04.6", par_always_two, "THREE matrices"),
    ("04.6", par_gate_bias_missing, "two biases of size hidden"),
    ("04.6", par_down_bias_hidden, "dim entries"),
])
def test_wrong_solution_fails_with_its_hint(ex_id, fn, hint):
    res = check(ex_id, fn)
    assert res.status == "failed" and res.points == 0
    assert hint in res.hint, res.hint


def test_no_2_3_in_the_hidden_size_is_reported_on_the_first_case():
    res = check("04.5", hid_4d)
    assert "llama_hidden_size(4096) returned 16384, expected 11008" in res.hint, res.hint


def test_missing_transpose_on_rectangular_weights_names_the_shape_error():
    """A learner whose x @ W happens to work on the square hand case but not on d != h fails either way."""

    def transpose_only_when_square(x, w_gate, w_up, w_down):
        if w_gate.shape[0] == w_gate.shape[1]:
            return ffn.swiglu(x, w_gate.T, w_up.T, w_down.T)
        return (F.silu(x @ w_gate) * (x @ w_up)) @ w_down

    res = check("04.4", transpose_only_when_square)
    assert res.status == "failed" and "RuntimeError" in res.hint, res.hint


# ---------------------------------------------------------------------------------------------------
# acceptable variants


def ok_gelu_ndtr(x):
    return x * torch.special.ndtr(x)


def ok_gelu_erfc(x):
    return 0.5 * x * torch.erfc(-x / math.sqrt(2))


def ok_gelu_tanh_torch(x):
    return F.gelu(x, approximate="tanh")


def ok_swish_exp(x, beta):
    return x / (1 + torch.exp(-beta * x))


def ok_swiglu_linear(x, w_gate, w_up, w_down):
    return F.linear(F.silu(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)


def ok_swiglu_einsum(x, w_gate, w_up, w_down):
    g = torch.einsum("...d,hd->...h", x, w_gate)
    u = torch.einsum("...d,hd->...h", x, w_up)
    return torch.einsum("...h,dh->...d", g * torch.sigmoid(g) * u, w_down)


def ok_hidden_floor_div_and_ceil(dim, multiple_of=256, ffn_dim_multiplier=None):
    h = 8 * dim // 3
    if ffn_dim_multiplier is not None:
        h = int(h * ffn_dim_multiplier)
    return math.ceil(h / multiple_of) * multiple_of


def ok_hidden_multiplier_on_float(dim, multiple_of=256, ffn_dim_multiplier=None):
    h = 8 * dim / 3 * (1 if ffn_dim_multiplier is None else ffn_dim_multiplier)
    return -(-int(h) // multiple_of) * multiple_of


def ok_params_modules(dim, hidden, gated, bias):
    block = ffn.GLUFFN(dim, hidden, bias=bias) if gated else ffn.FFN(dim, hidden, bias=bias)
    return sum(p.numel() for p in block.parameters())


@pytest.mark.parametrize("ex_id,fn", [
    ("04.1", ok_gelu_ndtr), ("04.1", ok_gelu_erfc), ("04.1", F.gelu),
    ("04.2", ok_gelu_tanh_torch),
    ("04.3", ok_swish_exp),
    ("04.4", ok_swiglu_linear), ("04.4", ok_swiglu_einsum),
    ("04.5", ok_hidden_floor_div_and_ceil), ("04.5", ok_hidden_multiplier_on_float), ("04.5", ffn.llama_hidden_size),
    ("04.6", ok_params_modules),
])
def test_acceptable_variants_pass(ex_id, fn):
    res = check(ex_id, fn)
    assert res.passed, res.hint


def test_float32_answers_pass_the_elementwise_checks():
    """A learner who computes in float32 is within the tolerance (1e-6 relative)."""
    res = check("04.1", lambda x: F.gelu(x.float()))
    assert res.passed, res.hint
