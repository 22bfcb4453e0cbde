"""Checkers of chapter 4 (activations and FFN), the exercises of exercises/04_activations_ffn.ipynb.

| id | the learner writes | compared with |
|---|---|---|
| 04.1 | `gelu(x)` (exact, via erf) | `minillm.ffn.gelu` (itself tested against `torch.nn.functional.gelu`) |
| 04.2 | `gelu_tanh(x)` | `minillm.ffn.gelu_tanh` (tested against `F.gelu(approximate="tanh")`) |
| 04.3 | `swish(x, beta)` | `minillm.ffn.swish` |
| 04.4 | `swiglu_ffn(x, w_gate, w_up, w_down)`, weights `(out, in)` | `minillm.ffn.swiglu` on the transposed weights |
| 04.5 | `llama_hidden_size(dim, multiple_of, ffn_dim_multiplier)` | `minillm.ffn.llama_hidden_size` |
| 04.6 | `ffn_param_count(dim, hidden, gated, bias)` | `minillm.ffn.ffn_params` / `glu_ffn_params` |
| 04.7 | `fused_glu_ffn(x, w_gate_up, w_down, variant)`, Phi-3 fused layout | `minillm.ffn.GLUFFN` |

Hand-worked cases come first (written out in the notebook), then random float64 inputs (04.1-04.4) or
further model sizes (04.5, 04.6). Tolerance on tensors: 1e-6 times max(1, |expected|), tight enough to
tell exact GeLU from its tanh approximation (which differs by up to 4.7e-4); integers must be equal. The
`*_MISTAKES` lists pair simulated wrong solutions with the hint naming each.
"""

from __future__ import annotations

import math

import torch

from minillm.grading import answers
from minillm.grading.answers import d64, generator, randn64
from minillm.grading.core import Exercise

# Each section below defines its simulated wrong solutions (deliberately wrong: never references) next to
# the list that pairs each one with the hint naming it; EXERCISES at the end declares the exercises.

# ---------------------------------------------------------------------------------------------------
# helpers


def _as_tensor(got, want_shape: tuple, what: str) -> tuple:
    """A tensor (or nested list) of shape `want_shape` -> (shape, values) in float64; else Wrong."""
    return answers.shaped(answers.float_tensor(got), want_shape, what)


def _elementwise(got, args) -> tuple:
    return _as_tensor(got, tuple(args[0].shape), "x's shape: the function is applied elementwise")


def _ffn_out(got, args) -> tuple:
    return _as_tensor(got, tuple(args[0].shape), "x's shape (..., d): down_proj maps h back to d, and a map with "
                                                 "weight W of shape (out, in) is x @ W.T")


def _int(got, args) -> int:
    return answers.integer(got)


def _random_inputs(gen: torch.Generator) -> list[torch.Tensor]:
    """Elementwise-test inputs: several shapes and scales, the region |x| ~ 2.7 where the tanh formula is
    furthest from exact GeLU, tiny values and large ones (where GeLU is ~x or ~0)."""
    return [randn64(3, 7, gen=gen, scale=2.0), randn64(2, 4, 5, gen=gen, scale=4.0),
            torch.linspace(-6.0, 6.0, 49, dtype=torch.float64), randn64(10, gen=gen, scale=1e-3),
            d64([-12.0, -8.0, 8.0, 12.0])]


# ---------------------------------------------------------------------------------------------------
# 04.1 GeLU, exact


GELU_MISTAKES = [
    (lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3))),
     "that is the tanh approximation (exercise 04.2), off by up to 4.7e-4; here use the "
     "exact Phi(x) = (1 + erf(x / sqrt(2))) / 2"),
    (lambda x: x * torch.sigmoid(1.702 * x),
     "that is the sigmoid approximation x * sigmoid(1.702 x), off by up to 0.02; use the "
     "exact Phi(x) = (1 + erf(x / sqrt(2))) / 2"),
    (lambda x: x * 0.5 * (1.0 + torch.erf(x)),  # Phi(x) needs erf(x / sqrt 2)
     "erf(x) alone is not the normal CDF: Phi(x) = (1 + erf(x / sqrt(2))) / 2 "
     "(divide x by sqrt(2) inside erf)"),
    (lambda x: 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0))),  # the CDF, not x times it
     "you returned Phi(x), the CDF; GeLU is x * Phi(x)"),
    (lambda x: x * (1.0 + torch.erf(x / math.sqrt(2.0))),
     "the 1/2 of Phi is missing: Phi(x) = (1 + erf(x / sqrt(2))) / 2 (yours is twice GeLU)"),
]


def _cases_gelu() -> list:
    from minillm.ffn import gelu

    xs = [d64([-2.0, -1.0, 0.0, 1.0, 2.0])] + _random_inputs(generator())
    return [((x,), _elementwise(gelu(x), (x,))) for x in xs]


# ---------------------------------------------------------------------------------------------------
# 04.2 GeLU, tanh approximation





TANH_MISTAKES = [
    (lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * x)),
     "the cubic term is missing: tanh(sqrt(2 / pi) * (x + 0.044715 * x**3))"),
    (lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 * math.pi) * (x + 0.044715 * x ** 3))),
     "the constant is sqrt(2 / pi) = 0.7979, not sqrt(2 * pi)"),
    (lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * x + 0.044715 * x ** 3)),
     "sqrt(2 / pi) multiplies the whole bracket: sqrt(2 / pi) * (x + 0.044715 * x**3), "
     "not only x"),
    (lambda x: x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0))),
     "that is the exact GeLU (erf, exercise 04.1); this one wants the tanh approximation, "
     "which differs by up to 4.7e-4"),
    (lambda x: x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3))),
     "the factor 0.5 is missing: 0.5 * x * (1 + tanh(...))"),
]


def _cases_gelu_tanh() -> list:
    from minillm.ffn import gelu_tanh

    xs = [d64([-2.0, -1.0, 0.0, 1.0, 2.0])] + _random_inputs(generator())
    return [((x,), _elementwise(gelu_tanh(x), (x,))) for x in xs]


# ---------------------------------------------------------------------------------------------------
# 04.3 Swish





SWISH_MISTAKES = [
    (lambda x, beta: torch.sigmoid(beta * x), "Swish is x TIMES sigmoid(beta * x), not the sigmoid alone"),
    (lambda x, beta: x * torch.sigmoid(x),
     "beta is ignored: Swish is x * sigmoid(beta * x) (yours is right only for beta = 1)"),
    (lambda x, beta: beta * x * torch.sigmoid(x),
     "beta goes INSIDE the sigmoid: x * sigmoid(beta * x), not beta * x * sigmoid(x)"),
    (lambda x, beta: x * torch.sigmoid(x / beta),
     "multiply by beta inside the sigmoid: sigmoid(beta * x), not sigmoid(x / beta)"),
]


def _cases_swish() -> list:
    from minillm.ffn import swish

    hand = d64([1.0, -1.0, 2.0, 0.0])
    inputs = [(hand, 1.0), (hand, 0.0), (d64([1.0, -1.0]), 2.0)]
    betas = [0.5, 1.702, 1.0, 3.0, 10.0]
    inputs += list(zip(_random_inputs(generator()), betas, strict=True))
    return [((x, beta), _elementwise(swish(x, beta), (x,))) for x, beta in inputs]


# ---------------------------------------------------------------------------------------------------
# 04.4 SwiGLU FFN


def _silu(t):
    return t * torch.sigmoid(t)


def swiglu_gelu(x, w_gate, w_up, w_down):
    g = x @ w_gate.T
    return (g * 0.5 * (1.0 + torch.erf(g / math.sqrt(2.0))) * (x @ w_up.T)) @ w_down.T


SWIGLU_MISTAKES = [
    (lambda x, w_gate, w_up, w_down: x @ w_gate.T * _silu(x @ w_up.T) @ w_down.T,
     "the SiLU goes on the GATE branch: silu(x @ w_gate.T) * (x @ w_up.T); yours is on "
     "the up branch"),
    (lambda x, w_gate, w_up, w_down: _silu(x @ w_gate) * (x @ w_up) @ w_down,
     "the weights are stored (out_features, in_features) as in nn.Linear: a map is "
     "x @ W.T, not x @ W"),
    (swiglu_gelu, "GeLU on the gate is GeGLU; SwiGLU uses SiLU: silu(t) = t * sigmoid(t)"),
    (lambda x, w_gate, w_up, w_down:
         torch.sigmoid(x @ w_gate.T) * (x @ w_up.T) @ w_down.T,  # GLU, not SwiGLU
     "sigmoid(gate) * up is the original GLU; SwiGLU uses SiLU(gate) = gate * "
     "sigmoid(gate)"),
    (lambda x, w_gate, w_up, w_down: (_silu(x @ w_gate.T) + x @ w_up.T) @ w_down.T,
     "the two branches are MULTIPLIED elementwise: silu(gate(x)) * up(x), not added"),
    (lambda x, w_gate, w_up, w_down: _silu(x @ w_gate.T) * (x @ w_up.T),
     "the down projection is missing: finish with @ w_down.T to map h back to d"),
    (lambda x, w_gate, w_up, w_down: _silu(x @ w_gate.T * (x @ w_up.T)) @ w_down.T,
     "apply the SiLU to the gate alone, then multiply: silu(gate(x)) * up(x), not "
     "silu(gate(x) * up(x))"),
]


def _cases_swiglu() -> list:
    from minillm.ffn import swiglu

    def case(x, wg, wu, wd):
        return (x, wg, wu, wd), _ffn_out(swiglu(x, wg.T, wu.T, wd.T), (x,))

    cases = [case(d64([1.0, 2.0]), d64([[1.0, 0.0], [-1.0, 1.0]]), d64([[0.0, 1.0], [2.0, 0.0]]),
                  d64([[1.0, 0.0], [1.0, -1.0]]))]
    gen = generator()
    for x_shape, h in [((3, 8), 12), ((2, 5, 16), 40), ((6,), 6), ((1, 4), 10)]:
        d = x_shape[-1]
        x = randn64(*x_shape, gen=gen, scale=1.5)
        cases.append(case(x, randn64(h, d, gen=gen, scale=d**-0.5), randn64(h, d, gen=gen, scale=d**-0.5),
                          randn64(d, h, gen=gen, scale=h**-0.5)))
    return cases


# ---------------------------------------------------------------------------------------------------
# 04.5 Llama's hidden size


def _round_up(h, m):
    return m * ((h + m - 1) // m)


def hidden_no_two_thirds(dim, multiple_of=256, ffn_dim_multiplier=None):
    hidden = 4 * dim
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return _round_up(hidden, multiple_of)


def hidden_two_thirds_of_dim(dim, multiple_of=256, ffn_dim_multiplier=None):
    hidden = int(2 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return _round_up(hidden, multiple_of)


def hidden_round_down(dim, multiple_of=256, ffn_dim_multiplier=None):
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * (hidden // multiple_of)


def hidden_round_nearest(dim, multiple_of=256, ffn_dim_multiplier=None):
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * round(hidden / multiple_of)


def hidden_no_rounding(dim, multiple_of=256, ffn_dim_multiplier=None):
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return hidden


def hidden_multiplier_after_rounding(dim, multiple_of=256, ffn_dim_multiplier=None):
    hidden = _round_up(int(2 * 4 * dim / 3), multiple_of)
    return hidden if ffn_dim_multiplier is None else int(ffn_dim_multiplier * hidden)


def hidden_always_256(dim, multiple_of=256, ffn_dim_multiplier=None):
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return _round_up(hidden, 256)


HIDDEN_MISTAKES = [
    (hidden_no_two_thirds, "the 2/3 is missing: a gated FFN has 3 matrices, so h = 2/3 * 4d = 8d/3 "
                                 "(int(2 * 4 * dim / 3)), not 4d"),
    (hidden_two_thirds_of_dim, "h starts from 2/3 of 4d (8d/3, about 2.67 d), not 2/3 of d"),
    (hidden_round_down, "round UP to a multiple of multiple_of: multiple_of * ((hidden + multiple_of - 1) "
                              "// multiple_of); yours rounds down"),
    (hidden_round_nearest, "round UP, not to the nearest multiple: dim 5120 gives 13653 -> 13824 (54 blocks "
                                 "of 256), not 13568"),
    (hidden_no_rounding, "round hidden up to a multiple of multiple_of (the result must be one)"),
    (lambda dim, multiple_of=256, ffn_dim_multiplier=None: _round_up(int(2 * 4 * dim / 3), multiple_of),
     "ffn_dim_multiplier is ignored: when it is not None, hidden = "
     "int(ffn_dim_multiplier * hidden) before rounding up"),
    (hidden_multiplier_after_rounding, "apply ffn_dim_multiplier BEFORE rounding up, so that the result is "
                                             "a multiple of multiple_of"),
    (hidden_always_256, "use the multiple_of argument, not a fixed 256"),
]


def _cases_llama_hidden() -> list:
    from minillm.ffn import llama_hidden_size

    cases = [((4096,), 11008), ((5120,), 13824), ((8192,), 22016), ((8192, 4096, 1.3), 28672)]
    more = [(6656,), (4096, 1024, 1.3), (16384, 4096, 1.2), (768, 64), (2048,), (1000, 100), (4096, 1),
            (3200, 256, 1.0), (5120, 512, 0.5), (3, 1)]
    cases += [(args, llama_hidden_size(*args)) for args in more]
    return cases


# ---------------------------------------------------------------------------------------------------
# 04.6 FFN parameter count


def params_bias_both_hidden(dim, hidden, gated, bias):
    n_in = 2 if gated else 1
    return (n_in + 1) * dim * hidden + ((n_in + 1) * hidden if bias else 0)  # down's bias has d entries


PARAM_MISTAKES = [
    (lambda dim, hidden, gated, bias: (3 if gated else 2) * dim * hidden,
     "the biases are missing: with bias=True add hidden for each d -> h map and dim for down"),
    (lambda dim, hidden, gated, bias:
         2 * dim * hidden + (hidden + dim if bias else 0),  # the gate matrix forgotten
     "a gated FFN has THREE matrices (gate, up, down): 3 * dim * hidden"),
    (lambda dim, hidden, gated, bias:
         (3 if gated else 2) * dim * hidden + (hidden + dim if bias else 0),  # gate's bias forgotten
     "with bias, a gated FFN has two biases of size hidden (gate and up) plus "
     "dim for down"),
    (params_bias_both_hidden, "down maps h -> d, so its bias has dim entries, not hidden"),
]


def _cases_ffn_params() -> list:
    from minillm.ffn import ffn_params, glu_ffn_params

    def ref(dim: int, hidden: int, gated: bool, bias: bool) -> int:
        return (glu_ffn_params if gated else ffn_params)(dim, hidden, bias=bias)

    cases = [((768, 3072, False, True), 4_722_432), ((4096, 11008, True, False), 135_266_304),
             ((4, 8, True, True), 116)]
    more = [(4096, 16384, False, False), (4, 16, False, True), (10, 3, True, True), (5, 7, False, True),
            (5, 7, True, False), (512, 1365, True, True), (1024, 4096, False, False)]
    cases += [(args, ref(*args)) for args in more]
    return cases


# ---------------------------------------------------------------------------------------------------
# 04.7 a gated FFN from a fused gate_up_proj (interview question), compared with minillm.ffn.GLUFFN

_ACT = {"swiglu": torch.nn.functional.silu, "geglu": torch.nn.functional.gelu, "reglu": torch.relu}


def _fused(x, w, w_down, variant, *, up_first=False, rows=None, act=None, both=False):
    """The fused FFN with one deviation per keyword (the simulated mistakes below)."""
    h = w.shape[0] // 2
    first, second = (w[0::2], w[1::2]) if rows == "interleaved" else (w[:h], w[h:])
    gate, up = (second, first) if up_first else (first, second)
    f = act or _ACT[variant]
    g, u = x @ gate.T, x @ up.T
    return (f(g) * (f(u) if both else u)) @ w_down.T


def _ref_fused(x, w, w_down, variant):
    from minillm.ffn import GLUFFN

    h, d = w.shape[0] // 2, w.shape[1]
    ffn = GLUFFN(d, h, variant).double()
    with torch.no_grad():
        ffn.gate.weight.copy_(w[:h])
        ffn.up.weight.copy_(w[h:])
        ffn.down.weight.copy_(w_down)
        return ffn(x)


def _fused_out(got, args) -> tuple:
    return answers.tensor_answer(got, tuple(args[0].shape), "x's shape (..., d): the FFN maps d back to d")


def _cases_fused() -> list:
    one = (d64([[2.0]]), d64([[1.0], [3.0]]), d64([[0.5]]))
    inputs = [(*one, v) for v in ("swiglu", "geglu", "reglu")]
    gen = generator()
    for lead, d, h, variant in [((4,), 6, 10, "swiglu"), ((2, 3), 8, 5, "geglu"), ((3,), 4, 12, "reglu"),
                                ((2, 2, 3), 5, 7, "swiglu"), ((5,), 12, 4, "geglu")]:
        x = randn64(*lead, d, gen=gen, scale=2.0)
        inputs.append((x, randn64(2 * h, d, gen=gen), randn64(d, h, gen=gen), variant))
    return [(args, _fused_out(_ref_fused(*args), args)) for args in inputs]


FUSED_MISTAKES = [
    (lambda x, w, wd, v: _fused(x, w, wd, v, up_first=True),
     "the gate's rows come FIRST in gate_up_proj: the activation goes on the first h outputs, not the last h"),
    (lambda x, w, wd, v: _fused(x, w, wd, v, rows="interleaved"),
     "the two projections are contiguous blocks of h rows (gate, then up), not alternating rows"),
    (lambda x, w, wd, v: _fused(x, w, wd, v, both=True),
     "only the gate goes through the activation; the up branch stays linear"),
    (lambda x, w, wd, v: _fused(x, w, wd, v, act=lambda t: t),
     "the gate has no activation: a bilinear FFN is not SwiGLU / GeGLU / ReGLU"),
    (lambda x, w, wd, v: _fused(x, w, wd, v, act=lambda t: torch.nn.functional.gelu(t, approximate="tanh")
                                if v == "geglu" else _ACT[v](t)),
     "geglu uses the exact GELU (with erf), not the tanh approximation"),
]


EXERCISES = (
    Exercise("04.1", "GeLU (exact)", 1, cases=_cases_gelu, name="gelu", normalize=_elementwise, same=answers.close,
             mistakes=GELU_MISTAKES),
    Exercise("04.2", "GeLU (tanh approximation)", 1, cases=_cases_gelu_tanh, name="gelu_tanh", normalize=_elementwise,
             same=answers.close, mistakes=TANH_MISTAKES),
    Exercise("04.3", "Swish", 1, cases=_cases_swish, name="swish", normalize=_elementwise, same=answers.close,
             mistakes=SWISH_MISTAKES),
    Exercise("04.4", "SwiGLU FFN", 2, cases=_cases_swiglu, name="swiglu_ffn", normalize=_ffn_out, same=answers.close,
             mistakes=SWIGLU_MISTAKES),
    Exercise("04.5", "Llama's FFN hidden size", 2, cases=_cases_llama_hidden, name="llama_hidden_size",
             normalize=_int, mistakes=HIDDEN_MISTAKES),
    Exercise("04.6", "FFN parameter count", 1, cases=_cases_ffn_params, name="ffn_param_count", normalize=_int,
             mistakes=PARAM_MISTAKES),
    Exercise("04.7", "Gated FFN from a fused checkpoint", 2, cases=_cases_fused, name="fused_glu_ffn",
             normalize=_fused_out, same=answers.close, mistakes=FUSED_MISTAKES),
)
