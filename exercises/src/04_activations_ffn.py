# Solution source of exercises/04_activations_ffn.ipynb (percent format: "# %%" starts a code cell,
# "# %% [markdown]" a markdown cell). Regenerate the learner notebook with
#     .venv/bin/python tools/build_exercises.py
# then execute it with  .venv/bin/python tools/execute_notebooks.py exercises/04_activations_ffn.ipynb
# Code between "# BEGIN SOLUTION <id>: <task>" and "# END SOLUTION" becomes
# raise NotImplementedError("Exercise <id>: <task>") in the learner notebook.

# %% [markdown]
# # Exercises 4: Activations and FFN
#
# Six small functions, one per idea of this chapter: exact GeLU and its tanh approximation, Swish with
# its $\beta$, a SwiGLU FFN written with the weights as PyTorch stores them, Llama's rule for the hidden
# size of that FFN, and the parameter count of a classic and a gated FFN.
#
# Each exercise is a function whose body is a stub raising `NotImplementedError`. Replace the `raise`
# line with your code and run the check cell below it: it compares your function with the `minillm`
# reference on the worked examples shown here and on random inputs, and prints ✅ (passed), ❌ with a
# hint (naming the mistake when it recognises a common one) or ⬜ (not attempted). A check never raises.
# For a score report run `minillm grade exercises/04_activations_ffn.ipynb`; see
# [How grading works](../book/grading.md).
#
# Read first: [4.1 Activation functions](../notebooks/04_activations_ffn/01_activations.ipynb) (04.1, 04.2, 04.3)
# and [4.2 GLU feed-forward blocks](../notebooks/04_activations_ffn/02_glu_ffn.ipynb) (04.4, 04.5, 04.6).
# Use plain tensor operations: `torch.nn.functional.gelu`, `F.silu` and friends would take the exercise
# away from you.

# %%
import math

import torch

from minillm.grading import check

# %% [markdown]
# ## 04.1 GeLU, exact (1 point)
#
# Write `gelu(x)`, the Gaussian Error Linear Unit applied elementwise: $x$ times the probability that a
# standard normal variable is below $x$,
#
# $$\text{GeLU}(x) = x\,\Phi(x),\qquad \Phi(x) = P(Z \le x),\ Z \sim \mathcal N(0, 1).$$
#
# Worked examples:
#
# * $\Phi(1) = 0.841345$, so $\text{GeLU}(1) = 0.841345$; $\Phi(-1) = 1 - \Phi(1) = 0.158655$, so
#   $\text{GeLU}(-1) = -0.158655$;
# * $\text{GeLU}(2) = 2 \cdot 0.977250 = 1.954500$, $\text{GeLU}(-2) = -0.045500$, $\text{GeLU}(0) = 0$.
#
# The check wants the exact function to within $10^{-6}$: the tanh formula of 04.2 is off by up to
# $4.7\cdot10^{-4}$ (near $|x| = 2.7$) and $x\,\sigma(1.702x)$ by up to $0.02$, so neither passes here.

# %%
def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GeLU of x, elementwise: x * Phi(x), Phi the standard normal CDF."""
    # BEGIN SOLUTION 04.1: return the exact GELU of x
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# GELU weights x by the standard normal CDF; torch has the error function.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `x * Phi(x)` with `Phi(x) = (1 + torch.erf(x / sqrt(2))) / 2`; note the $\sqrt2$: $\text{erf}(x)$ alone is not
# the normal CDF.
#
# </details>

# %%
check("04.1", gelu)

# %% [markdown]
# ## 04.2 GeLU, tanh approximation (1 point)
#
# GPT-2 and the original BERT code use a cheaper approximation (PyTorch's tanh-approximate GeLU,
# `gelu_new` / `gelu_pytorch_tanh` in Hugging Face). Write `gelu_tanh(x)`, elementwise:
#
# $$\text{GeLU}(x) \approx \frac12\,x\left(1 + \tanh\!\left(\sqrt{2/\pi}\,\bigl(x + 0.044715\,x^3\bigr)\right)\right).$$
#
# Both $x$ and $0.044715\,x^3$ sit inside the bracket that $\sqrt{2/\pi} = 0.797885$ multiplies.
# Worked examples: at $x = 1$ the tanh argument is $0.797885 \cdot 1.044715 = 0.833562$,
# $\tanh = 0.682384$, so the result is $0.5 \cdot 1.682384 = 0.841192$ (exact GeLU: 0.841345);
# at $x = -1$: $-0.158808$; at $x = 2$: $1.954598$; at $x = -2$: $-0.045402$.

# %%
def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh approximation of GeLU, elementwise."""
    # BEGIN SOLUTION 04.2: return the tanh approximation of GELU
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# The tanh form approximates the normal CDF with a cubic inside the tanh.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))`
#
# </details>

# %%
check("04.2", gelu_tanh)

# %% [markdown]
# ## 04.3 Swish and SiLU (1 point)
#
# Write `swish(x, beta)`, elementwise $x\,\sigma(\beta x)$ with $\sigma(t) = 1/(1 + e^{-t})$.
# With $\beta = 1$ it is SiLU, the activation of Llama's FFN; $\beta = 0$ gives the line $x/2$, and a
# large $\beta$ tends to ReLU. The result is $x$ **times** the sigmoid, not the sigmoid alone.
# Worked examples:
#
# * $\beta = 1$: $\text{SiLU}(1) = \sigma(1) = 0.731059$, $\text{SiLU}(-1) = -\sigma(-1) = -0.268941$,
#   $\text{SiLU}(2) = 2\,\sigma(2) = 1.761594$, $\text{SiLU}(0) = 0$;
# * $\beta = 0$: `[1, -1, 2, 0]` gives `[0.5, -0.5, 1, 0]`;
# * $\beta = 2$: $\text{swish}(1) = \sigma(2) = 0.880797$, $\text{swish}(-1) = -\sigma(-2) = -0.119203$.

# %%
def swish(x: torch.Tensor, beta: float) -> torch.Tensor:
    """Swish of x, elementwise: x * sigmoid(beta * x)."""
    # BEGIN SOLUTION 04.3: return Swish of x with the given beta
    return x * torch.sigmoid(beta * x)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Swish gates x by a sigmoid of a scaled x.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `x * sigmoid(beta * x)`
#
# </details>

# %%
check("04.3", swish)

# %% [markdown]
# ## 04.4 A SwiGLU FFN (2 points)
#
# Llama's FFN has three linear maps without bias, named as in Hugging Face's `LlamaMLP`: `gate_proj`
# and `up_proj` ($d \to h$) and `down_proj` ($h \to d$):
#
# $$\text{FFN}_\text{SwiGLU}(x) = \text{down}\bigl(\text{SiLU}(\text{gate}(x)) \odot \text{up}(x)\bigr).$$
#
# The SiLU goes on the **gate** branch only, and the two branches are **multiplied** elementwise.
# Write `swiglu_ffn(x, w_gate, w_up, w_down)` for `x` of shape `(..., d)`, with the weights laid out as
# `nn.Linear.weight` stores them, `(out_features, in_features)`: `w_gate` and `w_up` are `(h, d)`,
# `w_down` is `(d, h)`; output feature `o` of a map is the dot product of row `o` of its weight with the
# input. Return shape `(..., d)`.
#
# Worked example, $d = h = 2$ (square, so only the values, not the shapes, catch a transposed weight):
# `x = [1, 2]`, `w_gate = [[1, 0], [-1, 1]]`, `w_up = [[0, 1], [2, 0]]`, `w_down = [[1, 0], [1, -1]]`.
#
# * gate$(x)$ = `[1, 1]`; up$(x)$ = `[2, 2]`;
# * $\text{SiLU}([1, 1]) \odot [2, 2] = [1.462117, 1.462117]$;
# * down of that = `[1.462117, 0]`.

# %%
def swiglu_ffn(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """down(silu(gate(x)) * up(x)) with nn.Linear-layout weights: w_gate, w_up (h, d), w_down (d, h)."""
    # BEGIN SOLUTION 04.4: return the SwiGLU feed-forward output
    g = x @ w_gate.T
    return (g * torch.sigmoid(g) * (x @ w_up.T)) @ w_down.T
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Two projections of x: one goes through SiLU and gates the other; then project back. The weights are stored (out,
# in).
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# A bias-free linear map with a weight stored `(out, in)` is `x @ W.T`:
# `(silu(x @ w_gate.T) * (x @ w_up.T)) @ w_down.T`, with `silu(t) = t * sigmoid(t)`.
#
# </details>

# %%
check("04.4", swiglu_ffn)

# %% [markdown]
# ## 04.5 Llama's hidden size (2 points)
#
# A gated FFN has three $d\times h$ matrices instead of two. To keep the parameter count of a classic
# FFN with $h = 4d$, $h$ must be $\frac23$ of $4d$. Meta's Llama code takes that value **truncated** to
# an integer; from Llama 2 70B on, when `ffn_dim_multiplier` is given, it multiplies by it and truncates
# again; last it makes $h$ a multiple of `multiple_of` (for fast matrix kernels) by **rounding up**, so
# the multiplier acts before the rounding.
#
# Write `llama_hidden_size(dim, multiple_of=256, ffn_dim_multiplier=None)` returning that int.
# Worked examples:
#
# * LLaMA 7B, `dim = 4096`: $\frac83\cdot4096 = 10922.67 \to 10922$, up to a multiple of 256: **11008**;
# * LLaMA 13B, `dim = 5120`: $13653 \to$ **13824** (53.33 blocks of 256, so 54 blocks; rounding to the
#   nearest would give 13568);
# * LLaMA 65B, `dim = 8192`: $21845 \to$ **22016**;
# * Llama 2 70B, `dim = 8192`, `ffn_dim_multiplier = 1.3`, `multiple_of = 4096`:
#   $\lfloor1.3\cdot21845\rfloor = 28398 \to$ **28672** (7 blocks of 4096).

# %%
def llama_hidden_size(dim: int, multiple_of: int = 256, ffn_dim_multiplier: float | None = None) -> int:
    """Hidden size of Llama's SwiGLU FFN for width dim: an int, a multiple of multiple_of."""
    # BEGIN SOLUTION 04.5: return Llama's FFN hidden size
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Start from the parameter-matched size for three matrices, apply the optional multiplier, then round up.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Solve $3dh = 2d\cdot 4d$ for $h$. Then:
#
# ```text
# hidden = int(2 * (4 * dim) / 3)                   # truncate, as int() does
# if ffn_dim_multiplier is not None:
#     hidden = int(ffn_dim_multiplier * hidden)     # before the rounding
# hidden = multiple_of * ceil(hidden / multiple_of)  # round UP to a multiple
# ```
#
# </details>

# %%
check("04.5", llama_hidden_size)

# %% [markdown]
# ## 04.6 Parameters of an FFN (1 point)
#
# Write `ffn_param_count(dim, hidden, gated, bias)`, the number of parameters of one FFN block:
#
# * classic (`gated=False`): two linear maps, `up` $d\to h$ and `down` $h\to d$;
# * gated (`gated=True`, a GLU FFN such as SwiGLU): three linear maps, `gate` and `up` $d\to h$ and
#   `down` $h\to d$;
#
# each map with a bias when `bias` is true, none otherwise.
#
# Worked examples:
#
# * GPT-2 small, $d = 768$, $h = 3072$, classic with bias: $2\cdot768\cdot3072 + 3072 + 768 = 4{,}722{,}432$;
# * Llama 7B, $d = 4096$, $h = 11008$, gated without bias: $3\cdot4096\cdot11008 = 135{,}266{,}304$, close to a
#   classic $4d$ FFN's $2\cdot4096\cdot16384 = 134{,}217{,}728$ (that is what the $\frac83$ of 04.5 is for);
# * $d = 4$, $h = 8$, gated with bias: $96 + 8 + 8 + 4 = 116$.

# %%
def ffn_param_count(dim: int, hidden: int, gated: bool, bias: bool) -> int:
    """Parameters of one FFN block: classic (up, down) or gated (gate, up, down), with or without biases."""
    # BEGIN SOLUTION 04.6: return the FFN parameter count
    n_in = 2 if gated else 1  # maps d -> h
    return (n_in + 1) * dim * hidden + ((n_in * hidden + dim) if bias else 0)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Count each matrix as in times out, and each bias by its output size; a gated FFN has one more matrix.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Classic: $2dh$ weights, plus biases of sizes $h$ and $d$; gated: $3dh$ weights, plus biases of sizes $h$, $h$
# and $d$ (biases only when `bias` is true).
#
# </details>

# %%
check("04.6", ffn_param_count)

# %% [markdown]
# ## 04.7 Interview question: a gated FFN from a fused checkpoint (2 points)
#
# Some checkpoints store a gated FFN's gate and up projections as **one** matrix: Phi-3's `gate_up_proj`
# has shape `(2h, d)` in `nn.Linear`'s layout (output rows, input columns), the `h` rows of the gate
# first, then the `h` rows of the up projection; `down_proj` is `(d, h)`. Write
# `fused_glu_ffn(x, w_gate_up, w_down, variant)` for `x` of shape `(..., d)`, returning `(..., d)`: the
# gated FFN of this chapter, where `variant` names the activation of the gate as in the chapter's table
# (`"swiglu"`, `"geglu"` with the exact GELU, `"reglu"`). No biases. Nothing tells you `h`: read it off the
# weights. Hidden and model sizes differ in the check, batches have several leading dimensions.
#
# Worked example, `d = h = 1`: `x = [[2]]`, `w_gate_up = [[1], [3]]` (gate 1, up 3), `w_down = [[0.5]]`
# gives `[[5.284782]]` for swiglu, `[[5.863499]]` for geglu and `[[6]]` for reglu.

# %%
def fused_glu_ffn(x, w_gate_up, w_down, variant):
    """The gated FFN of x (..., d) with the fused (2h, d) gate-then-up weight and the (d, h) down weight."""
    # BEGIN SOLUTION 04.7: return the FFN output, the shape of x
    h = w_gate_up.shape[0] // 2
    gate, up = x @ w_gate_up[:h].T, x @ w_gate_up[h:].T  # (..., h) each
    act = {"swiglu": torch.nn.functional.silu, "geglu": torch.nn.functional.gelu, "reglu": torch.relu}[variant]
    return (act(gate) * up) @ w_down.T
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Split the fused matrix into its two blocks of rows; only the gate branch goes through the activation.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `gate = x @ W[:h].T, up = x @ W[h:].T; out = (act(gate) * up) @ w_down.T`
#
# </details>

# %%
check("04.7", fused_glu_ffn)
