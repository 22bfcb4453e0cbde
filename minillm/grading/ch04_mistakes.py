"""Simulated wrong solutions of the chapter 4 exercises, used by ch04.py to name a learner's mistake.

Each function reproduces one common mistake: GeLU replaced by one of its approximations or written with
erf(x) instead of erf(x / sqrt 2), the tanh formula with its cubic term dropped or its constant garbled,
Swish returning the sigmoid alone or ignoring beta, a SwiGLU FFN with the SiLU on the wrong branch, the
weights not transposed or the branches added, Llama's hidden size without the 2/3 or rounded the wrong
way, and FFN parameter counts that forget a bias or a matrix. They are deliberately wrong: never use
them as references.
"""

from __future__ import annotations

import math

import torch

# ---------------------------------------------------------------------------------------------------
# 04.1 GeLU, exact


def gelu_tanh_approx(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def gelu_sigmoid_approx(x):
    return x * torch.sigmoid(1.702 * x)


def gelu_erf_no_sqrt2(x):
    return x * 0.5 * (1.0 + torch.erf(x))  # Phi(x) needs erf(x / sqrt 2)


def gelu_phi_only(x):
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))  # the CDF, not x times it


def gelu_no_half(x):
    return x * (1.0 + torch.erf(x / math.sqrt(2.0)))


# ---------------------------------------------------------------------------------------------------
# 04.2 GeLU, tanh approximation


def tanh_no_cubic(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * x))


def tanh_sqrt_2pi(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 * math.pi) * (x + 0.044715 * x**3)))


def tanh_cubic_outside(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * x + 0.044715 * x**3))


def tanh_exact_erf(x):
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def tanh_no_half(x):
    return x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


# ---------------------------------------------------------------------------------------------------
# 04.3 Swish


def swish_sigmoid_only(x, beta):
    return torch.sigmoid(beta * x)


def swish_ignores_beta(x, beta):
    return x * torch.sigmoid(x)


def swish_beta_outside(x, beta):
    return beta * x * torch.sigmoid(x)


def swish_divides_by_beta(x, beta):
    return x * torch.sigmoid(x / beta)


# ---------------------------------------------------------------------------------------------------
# 04.4 SwiGLU FFN (weights in nn.Linear layout: (out, in))


def _silu(t):
    return t * torch.sigmoid(t)


def swiglu_silu_on_up(x, w_gate, w_up, w_down):
    return ((x @ w_gate.T) * _silu(x @ w_up.T)) @ w_down.T


def swiglu_no_transpose(x, w_gate, w_up, w_down):
    return (_silu(x @ w_gate) * (x @ w_up)) @ w_down


def swiglu_gelu(x, w_gate, w_up, w_down):
    g = x @ w_gate.T
    return (g * 0.5 * (1.0 + torch.erf(g / math.sqrt(2.0))) * (x @ w_up.T)) @ w_down.T


def swiglu_sigmoid_gate(x, w_gate, w_up, w_down):
    return (torch.sigmoid(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T  # GLU, not SwiGLU


def swiglu_added(x, w_gate, w_up, w_down):
    return (_silu(x @ w_gate.T) + (x @ w_up.T)) @ w_down.T


def swiglu_no_down(x, w_gate, w_up, w_down):
    return _silu(x @ w_gate.T) * (x @ w_up.T)


def swiglu_silu_after_product(x, w_gate, w_up, w_down):
    return _silu((x @ w_gate.T) * (x @ w_up.T)) @ w_down.T


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


def hidden_ignores_multiplier(dim, multiple_of=256, ffn_dim_multiplier=None):
    return _round_up(int(2 * 4 * dim / 3), multiple_of)


def hidden_multiplier_after_rounding(dim, multiple_of=256, ffn_dim_multiplier=None):
    hidden = _round_up(int(2 * 4 * dim / 3), multiple_of)
    return hidden if ffn_dim_multiplier is None else int(ffn_dim_multiplier * hidden)


def hidden_always_256(dim, multiple_of=256, ffn_dim_multiplier=None):
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return _round_up(hidden, 256)


# ---------------------------------------------------------------------------------------------------
# 04.6 FFN parameter count


def params_no_bias(dim, hidden, gated, bias):
    return (3 if gated else 2) * dim * hidden


def params_two_matrices(dim, hidden, gated, bias):
    return 2 * dim * hidden + ((hidden + dim) if bias else 0)  # the gate matrix forgotten


def params_gated_one_hidden_bias(dim, hidden, gated, bias):
    return (3 if gated else 2) * dim * hidden + ((hidden + dim) if bias else 0)  # gate's bias forgotten


def params_bias_both_hidden(dim, hidden, gated, bias):
    n_in = 2 if gated else 1
    return (n_in + 1) * dim * hidden + ((n_in + 1) * hidden if bias else 0)  # down's bias has d entries
