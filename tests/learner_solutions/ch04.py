"""Learner solutions for exercises 04.x (activations and FFN), written from the notebook text only.

``valid_NN_k_*`` satisfy the task text of exercise NN.k; ``wrong_NN_k_*`` break the clause named above them.
"""
# Learner-style code on purpose (zip over ids and ids[1:], unused loop counters):
# ruff: noqa: B905, B007
import math

import torch

# ---- 04.1 gelu ------------------------------------------------------------------------------------

# valid: x * Phi(x) with erf
def valid_04_1_erf(x):
    return x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))


# valid: Phi via erfc (more accurate in the left tail): Phi(x) = erfc(-x/sqrt2)/2
def valid_04_1_erfc(x):
    return 0.5 * x * torch.special.erfc(-x * (1 / math.sqrt(2)))


# wrong: erf(x) without the sqrt2 -- breaks "note the sqrt2: erf(x) alone is not the normal CDF"
def wrong_04_1_no_sqrt2(x):
    return x * 0.5 * (1 + torch.erf(x))


# wrong: the tanh approximation -- breaks "The check wants the exact function to within 1e-6"
def wrong_04_1_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


# wrong: returns Phi(x), not x Phi(x) -- breaks "x times the probability"
def wrong_04_1_cdf_only(x):
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


# ---- 04.2 gelu_tanh -------------------------------------------------------------------------------

# valid: the formula
def valid_04_2_formula(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x.pow(3))))


# valid: 1 + tanh(u) = 2 sigmoid(2u), so the formula is x * sigmoid(2u)
def valid_04_2_sigmoid(x):
    u = math.sqrt(2 / math.pi) * x * (1 + 0.044715 * x * x)
    return x * torch.sigmoid(2 * u)


# wrong: sqrt(2/pi) multiplies only x -- breaks "Both x and 0.044715 x^3 sit inside the bracket"
def wrong_04_2_bracket(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * x + 0.044715 * x ** 3))


# wrong: sqrt(pi/2) instead of sqrt(2/pi) -- breaks "sqrt(2/pi) = 0.797885"
def wrong_04_2_inverted_const(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(math.pi / 2) * (x + 0.044715 * x ** 3)))


# wrong: x^2 instead of x^3 -- breaks "0.044715 x^3"
def wrong_04_2_square(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 2)))


# ---- 04.3 swish -----------------------------------------------------------------------------------

# valid: x * sigmoid(beta x)
def valid_04_3_sigmoid(x, beta):
    return x * torch.sigmoid(beta * x)


# valid: written as x / (1 + exp(-beta x))
def valid_04_3_exp(x, beta):
    return x / (1 + torch.exp(-beta * x))


# wrong: sigmoid alone -- breaks "x times the sigmoid, not the sigmoid alone"
def wrong_04_3_sigmoid_only(x, beta):
    return torch.sigmoid(beta * x)


# wrong: ignores beta (SiLU always) -- breaks "x sigma(beta x)"
def wrong_04_3_ignore_beta(x, beta):
    return x * torch.sigmoid(x)


# wrong: beta outside the sigmoid -- breaks "sigma(beta x)"
def wrong_04_3_beta_outside(x, beta):
    return beta * x * torch.sigmoid(x)


# ---- 04.4 swiglu_ffn ------------------------------------------------------------------------------

# valid: x @ W.T
def valid_04_4_matmul(x, w_gate, w_up, w_down):
    g = x @ w_gate.T
    return (g * torch.sigmoid(g) * (x @ w_up.T)) @ w_down.T


# valid: torch.nn.functional.linear (allowed: only activations were excluded) and einsum
def valid_04_4_einsum(x, w_gate, w_up, w_down):
    g = torch.einsum("...d,hd->...h", x, w_gate)
    u = torch.nn.functional.linear(x, w_up)
    return torch.einsum("...h,dh->...d", g / (1 + torch.exp(-g)) * u, w_down)


# wrong: SiLU on the up branch -- breaks "The SiLU goes on the gate branch only"
def wrong_04_4_silu_on_up(x, w_gate, w_up, w_down):
    u = x @ w_up.T
    return ((x @ w_gate.T) * u * torch.sigmoid(u)) @ w_down.T


# wrong: missing .T on the down projection (runs only when h == d) -- breaks "A linear map ... is x @ W.T"
def wrong_04_4_no_transpose(x, w_gate, w_up, w_down):
    g = x @ w_gate.T
    u = x @ w_up.T
    return (g * torch.sigmoid(g) * u) @ w_down


# wrong: branches added instead of multiplied -- breaks "the two branches are multiplied elementwise"
def wrong_04_4_added(x, w_gate, w_up, w_down):
    g = x @ w_gate.T
    return (g * torch.sigmoid(g) + x @ w_up.T) @ w_down.T


# ---- 04.5 llama_hidden_size -----------------------------------------------------------------------

# valid: the recipe with math.ceil
def valid_04_5_ceil(dim, multiple_of=256, ffn_dim_multiplier=None):
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * math.ceil(hidden / multiple_of)


# valid: integer arithmetic ceil (-(-a // b)) and 8*dim//3 (same truncation for ints)
def valid_04_5_intdiv(dim, multiple_of=256, ffn_dim_multiplier=None):
    hidden = 8 * dim // 3
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return -(-hidden // multiple_of) * multiple_of


# wrong: rounds to the nearest multiple -- breaks "rounding up"
def wrong_04_5_nearest(dim, multiple_of=256, ffn_dim_multiplier=None):
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * round(hidden / multiple_of)


# wrong: multiplier applied after rounding -- breaks "scales it by ffn_dim_multiplier first ... before the rounding"
def wrong_04_5_multiplier_after(dim, multiple_of=256, ffn_dim_multiplier=None):
    hidden = int(2 * (4 * dim) / 3)
    hidden = multiple_of * math.ceil(hidden / multiple_of)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return hidden


# wrong: ignores ffn_dim_multiplier -- breaks the optional argument's clause
def wrong_04_5_ignore_multiplier(dim, multiple_of=256, ffn_dim_multiplier=None):
    return valid_04_5_ceil(dim, multiple_of, None)


# wrong: ceil adds a block even when already a multiple (hidden // m + 1) -- breaks "round UP to a multiple"
def wrong_04_5_always_plus_one(dim, multiple_of=256, ffn_dim_multiplier=None):
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * (hidden // multiple_of + 1)


# ---- 04.6 ffn_param_count -------------------------------------------------------------------------

# valid: formula
def valid_04_6_formula(dim, hidden, gated, bias):
    n_in = 2 if gated else 1
    return (n_in + 1) * dim * hidden + (bias and n_in * hidden + dim or 0)


# valid: build the layers on the meta device and count
def valid_04_6_meta(dim, hidden, gated, bias):
    with torch.device("meta"):
        layers = [torch.nn.Linear(dim, hidden, bias=bias) for _ in range(2 if gated else 1)]
        layers.append(torch.nn.Linear(hidden, dim, bias=bias))
    return sum(p.numel() for m in layers for p in m.parameters())


# wrong: gated counts only two matrices -- breaks "gated: 3dh weights"
def wrong_04_6_gated_two(dim, hidden, gated, bias):
    return 2 * dim * hidden + ((hidden * (2 if gated else 1) + dim) if bias else 0)


# wrong: bias sizes swapped to d, d(, h) -- breaks "biases of sizes h and d"
def wrong_04_6_bias_sizes(dim, hidden, gated, bias):
    w = (3 if gated else 2) * dim * hidden
    return w + ((2 * dim + hidden if gated else 2 * dim) if bias else 0)


# wrong: forgets the down-projection bias -- breaks "plus biases of sizes h and d"
def wrong_04_6_no_down_bias(dim, hidden, gated, bias):
    w = (3 if gated else 2) * dim * hidden
    return w + (((2 if gated else 1) * hidden) if bias else 0)


# ---- 04.7 fused_glu_ffn ---------------------------------------------------------------------------

_ACTS = {
    "swiglu": lambda t: t * torch.sigmoid(t),
    "geglu": lambda t: 0.5 * t * (1 + torch.erf(t / math.sqrt(2))),
    "reglu": lambda t: t.clamp_min(0),
}


# valid: chunk the fused projection output
def valid_04_7_chunk(x, w_gate_up, w_down, variant):
    gate, up = (x @ w_gate_up.T).chunk(2, dim=-1)
    return (_ACTS[variant](gate) * up) @ w_down.T


# valid: split the weight by rows first, h read from w_down
def valid_04_7_split_weight(x, w_gate_up, w_down, variant):
    h = w_down.shape[1]
    wg, wu = w_gate_up[:h], w_gate_up[h:]
    act = {"swiglu": torch.nn.functional.silu, "geglu": torch.nn.functional.gelu,
           "reglu": torch.relu}[variant]
    return torch.nn.functional.linear(act(torch.nn.functional.linear(x, wg)) * torch.nn.functional.linear(x, wu),
                                      w_down)


# wrong: up first, then gate -- breaks "the h rows of the gate first, then the h rows of the up projection"
def wrong_04_7_up_first(x, w_gate_up, w_down, variant):
    up, gate = (x @ w_gate_up.T).chunk(2, dim=-1)
    return (_ACTS[variant](gate) * up) @ w_down.T


# wrong: interleaved rows (even = gate, odd = up) -- breaks "the h rows of the gate first"
def wrong_04_7_interleaved(x, w_gate_up, w_down, variant):
    y = x @ w_gate_up.T
    return (_ACTS[variant](y[..., 0::2]) * y[..., 1::2]) @ w_down.T


# wrong: geglu with the tanh approximation -- breaks '"geglu" with the exact GELU'
def wrong_04_7_geglu_tanh(x, w_gate_up, w_down, variant):
    if variant != "geglu":
        return valid_04_7_chunk(x, w_gate_up, w_down, variant)
    gate, up = (x @ w_gate_up.T).chunk(2, dim=-1)
    g = 0.5 * gate * (1 + torch.tanh(math.sqrt(2 / math.pi) * (gate + 0.044715 * gate ** 3)))
    return (g * up) @ w_down.T


# wrong: h taken as d (w_gate_up split at x.shape[-1]) -- breaks "Nothing tells you h: read it off the weights"
def wrong_04_7_h_is_d(x, w_gate_up, w_down, variant):
    d = x.shape[-1]
    wg, wu = w_gate_up[:d], w_gate_up[d:2 * d]
    return (_ACTS[variant](x @ wg.T) * (x @ wu.T)) @ w_down.T


# ---- second round: subtler cases ------------------------------------------------------------------

# valid: multiplier given as an int-like float and multiple_of passed positionally; math.ceil on a Fraction
def valid_04_5_fraction(dim, multiple_of=256, ffn_dim_multiplier=None):
    from fractions import Fraction
    hidden = int(Fraction(8 * dim, 3))
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return int(math.ceil(Fraction(hidden, multiple_of))) * multiple_of
