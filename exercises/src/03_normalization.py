# Solution source of exercises/03_normalization.ipynb (percent format: "# %%" starts a code cell,
# "# %% [markdown]" a markdown cell). Regenerate the learner notebook with
#     .venv/bin/python tools/build_exercises.py
# then execute it with  .venv/bin/python tools/execute_notebooks.py exercises/03_normalization.ipynb
# Code between "# BEGIN SOLUTION <id>: <task>" and "# END SOLUTION" becomes
# raise NotImplementedError("Exercise <id>: <task>") in the learner notebook.

# %% [markdown]
# # Exercises 3: Normalization
#
# Five small functions, one per idea of this chapter: LayerNorm and RMSNorm written out, DeepNorm's two
# constants, a residual sub-layer with the norm before (Pre-LN) or after (Post-LN) it, and an RMSNorm
# that stays correct on float16 inputs.
#
# Each exercise is a function whose body is a stub raising `NotImplementedError`. Replace the `raise`
# line with your code and run the check cell below it: it compares your function with the `minillm`
# reference on the worked examples shown here and on random inputs, and prints ✅ (passed), ❌ with a
# hint (naming the mistake when it recognises a common one) or ⬜ (not attempted). A check never raises.
# For a score report run `minillm grade exercises/03_normalization.ipynb`; see
# [How grading works](../book/grading.md).
#
# Read first: [3.1 LayerNorm and RMSNorm](../notebooks/03_normalization/01_layernorm_rmsnorm.ipynb)
# (03.1, 03.2, 03.5) and
# [3.2 DeepNorm and where the norm goes](../notebooks/03_normalization/02_deepnorm_placement.ipynb)
# (03.3, 03.4). Use plain tensor operations; `torch.nn.functional.layer_norm` and friends would take the
# exercise away from you.

# %%
import torch

from minillm.grading import check

# %% [markdown]
# ## 03.1 LayerNorm (2 points)
#
# Write `layer_norm(x, weight, bias, eps)`. `x` has shape `(..., d)`; `weight` and `bias` have shape
# `(d,)`. Normalise over the **last** dimension:
#
# $$\mu = \frac1d\sum_i x_i,\qquad \sigma^2 = \frac1d\sum_i (x_i-\mu)^2,\qquad
# y = \frac{x-\mu}{\sqrt{\sigma^2+\epsilon}}\odot \text{weight} + \text{bias}.$$
#
# The variance divides by $d$ (biased), and $\epsilon$ sits inside the square root.
# Worked examples (weight = 1, bias = 0):
#
# * `x = [1, 2, 3, 4]`, `eps = 0`: $\mu = 2.5$, $\sigma^2 = (2.25 + 0.25 + 0.25 + 2.25)/4 = 1.25$, so
#   `y = [-1.342, -0.447, 0.447, 1.342]`.
# * `x = [3, 4]`, `eps = 0.75`: $\mu = 3.5$, $\sigma^2 = 0.25$, $\sqrt{0.25 + 0.75} = 1$, so `y = [-0.5, 0.5]`.
#   With `weight = [2, 3]`, `bias = [10, 20]` and `eps = 0`: `y = [-1, 1] * [2, 3] + [10, 20] = [8, 23]`.

# %%
def layer_norm(x, weight, bias, eps):
    """LayerNorm of x (..., d) over its last dimension, with gain `weight` (d,) and shift `bias` (d,)."""
    # BEGIN SOLUTION 03.1: return the layer-normalised x
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Statistics are taken over the last dimension only, with the biased variance; eps goes inside the root.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `subtract the mean of the last dim, divide by sqrt(biased variance + eps), scale, shift`
#
# </details>

# %%
check("03.1", layer_norm)

# %% [markdown]
# ## 03.2 RMSNorm (1 point)
#
# Write `rms_norm(x, weight, eps)`: no mean subtraction and no bias, divide by the root mean square of
# the last dimension:
#
# $$\text{RMS}(x) = \sqrt{\frac1d\sum_i x_i^2 + \epsilon},\qquad y = \frac{x}{\text{RMS}(x)}\odot\text{weight}.$$
#
# Worked example: `x = [3, 4]`, `eps = 0`: mean square $(9 + 16)/2 = 12.5$, RMS $= 3.536$,
# `y = [0.849, 1.131]` (weight = 1). `x = [1, 1, 1, 1]`, `eps = 3`, `weight = [1, 2, 3, 4]`:
# RMS $=\sqrt{1 + 3} = 2$, `y = [0.5, 1, 1.5, 2]`.

# %%
def rms_norm(x, weight, eps):
    """RMSNorm of x (..., d) over its last dimension, with gain `weight` (d,)."""
    # BEGIN SOLUTION 03.2: return the RMS-normalised x
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * weight
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# There is no mean subtraction and no bias: only a root-mean-square over the last dimension.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `divide x by sqrt(mean of x**2 over the last dim + eps), then scale by weight`
#
# </details>

# %%
check("03.2", rms_norm)

# %% [markdown]
# ## 03.3 DeepNorm's constants (1 point)
#
# DeepNorm (Wang et al. 2022) keeps Post-LN but scales the residual by $\alpha$ before the norm,
# $x_{l+1} = \text{LN}(\alpha x_l + G(x_l))$, and initialises the FFN, value and output projections with
# Xavier-normal of gain $\beta$. For a **decoder-only** model with $N$ layers (the paper's table):
#
# $$\alpha = (2N)^{1/4},\qquad \beta = (8N)^{-1/4}.$$
#
# Write `deepnorm_constants(n_layer)` returning the pair `(alpha, beta)`.
# Worked examples: $N = 2$: $(4^{1/4}, 16^{-1/4}) = (\sqrt2, 0.5)$; $N = 8$: $(16^{1/4}, 64^{-1/4}) = (2, 0.354)$;
# $N = 32$: $(2.828, 0.25)$.

# %%
def deepnorm_constants(n_layer):
    """(alpha, beta) of DeepNorm for a decoder-only model with n_layer layers."""
    # BEGIN SOLUTION 03.3: return DeepNorm's (alpha, beta) for N layers
    return (2 * n_layer) ** 0.25, (8 * n_layer) ** -0.25
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Both constants are powers of a multiple of N, one growing and one shrinking with depth.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `alpha = (2N) ** (1/4), beta = (8N) ** (-1/4)`
#
# </details>

# %%
check("03.3", deepnorm_constants)

# %% [markdown]
# ## 03.4 Pre-LN and Post-LN residual sub-layers (2 points)
#
# Write `residual_block(x, f, norm, position, alpha)`, one residual sub-layer around `f` (attention or the
# FFN; any function of a tensor), with the normalisation `norm` (any function of a tensor):
#
# * `position == "pre"` (GPT-2, Llama): $x + f(\text{norm}(x))$ (`alpha` is 1 and unused);
# * `position == "post"` (original Transformer, BERT; DeepNorm when $\alpha > 1$): $\text{norm}(\alpha x + f(x))$.
#
# Worked example, by hand: `x = [1, 2, 3]`, `f(t) = t * t`, `norm(t) = t - t.mean()` (a centring only):
#
# * pre: `norm(x) = [-1, 0, 1]`, `f` of that `= [1, 0, 1]`, plus `x`: **`[2, 2, 4]`**;
# * post, alpha = 1: `x + f(x) = [2, 6, 12]`, mean 20/3: **`[-14/3, -2/3, 16/3]`**;
# * post, alpha = 2: `2x + f(x) = [3, 8, 15]`, mean 26/3: **`[-17/3, -2/3, 19/3]`**.

# %%
def residual_block(x, f, norm, position, alpha):
    """Pre-LN: x + f(norm(x)); Post-LN: norm(alpha * x + f(x))."""
    # BEGIN SOLUTION 03.4: return the output of one residual sub-layer, pre or post
    if position == "pre":
        return x + f(norm(x))
    return norm(alpha * x + f(x))
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# The two placements differ in whether the norm sits on the branch or after the sum.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `"pre" -> x + f(norm(x)); "post" -> norm(alpha * x + f(x))`
#
# </details>

# %%
check("03.4", residual_block)

# %% [markdown]
# ## 03.5 RMSNorm that survives float16 (1 point)
#
# In float16 the largest number is 65504, so any $|x| \ge 256$ has a square that overflows to `inf`;
# an RMSNorm computed in float16 then divides by `inf` and returns zeros. Squares of $|x| < 1.7\cdot10^{-4}$
# round to 0, the other way round. Write `rms_norm_fp32(x, weight, eps)` for `x` and `weight` in float16
# or bfloat16: compute the RMSNorm in **float32**, multiply by the weight, and return a tensor of **x's
# dtype** (as Llama's RMSNorm does).
#
# Worked example: `x = [300, -310, 290, 305]` (float16), `eps = 1e-6`, weight = 1: the mean square is
# (90000 + 96100 + 84100 + 93025) / 4 = 90806.25 (in float32), RMS 301.34, so
# `y = [0.9956, -1.0283, 0.9624, 1.0117]` in float16. All in float16, the same input gives `[0, 0, 0, 0]`.

# %%
def rms_norm_fp32(x, weight, eps):
    """RMSNorm computed in float32 for a float16/bfloat16 x; returns x's dtype."""
    # BEGIN SOLUTION 03.5: return the RMS-normalised x in the dtype of x
    xf = x.float()
    y = xf / torch.sqrt((xf * xf).mean(dim=-1, keepdim=True) + eps) * weight.float()
    return y.to(x.dtype)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Do the arithmetic in a wider type, and come back to the input's dtype only at the end.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `upcast x (and weight) to float32, normalise, multiply, cast back with .to(x.dtype)`
#
# </details>

# %%
check("03.5", rms_norm_fp32)

# %% [markdown]
# ## 03.6 Interview question: the backward pass of RMSNorm (3 points)
#
# Frameworks fuse RMSNorm's forward and backward into one kernel, so its gradient is written by hand.
# Write `rms_norm_backward(x, weight, eps, grad_out)`: given the input `x` of shape `(..., d)`, the gain
# `weight` `(d,)`, `eps`, and `grad_out` (the gradient of the loss with respect to the RMSNorm output,
# the shape of `x`), return the gradient of the loss with respect to `x`, the shape of `x`. Do not call
# autograd (`backward`, `torch.autograd.grad`): derive it on paper from exercise 03.2's definition. Each
# row of the last dimension is normalised on its own, so the gradient of one row depends only on that row.
#
# The check compares with autograd through `minillm.norms.rms_norm` in float64, on batched shapes, on
# rows small enough that `eps` matters, and with several values of `eps`.
#
# Worked example: `x = [3, 4]`, weight `[1, 1]`, `eps = 0`, `grad_out = [1, 0]`: the RMS is
# $\sqrt{12.5} \approx 3.5355$, the output `[0.8485, 1.1314]`, and the gradient with respect to `x` is
# `[0.1810, -0.1358]` (the first output grows with $x_0$, but less than $1/\text{RMS}$ because the RMS
# grows too; the second output shrinks as $x_0$ grows).

# %%
def rms_norm_backward(x, weight, eps, grad_out):
    """The gradient with respect to x of sum(grad_out * rms_norm(x, weight, eps)), without autograd."""
    # BEGIN SOLUTION 03.6: return the gradient with respect to x
    d = x.shape[-1]
    r = torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps)  # (..., 1) the RMS of each row
    gw = grad_out * weight  # (..., d) the gradient with respect to the normalised x / r
    return gw / r - x * (gw * x).sum(dim=-1, keepdim=True) / (d * r**3)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# The output is x times a gain times one over the row's RMS, and the RMS depends on every element of the row:
# the gradient has a direct term and a term through the RMS.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `with r the RMS and g = grad_out * weight: g / r - x * sum(g * x) / (d * r^3), the sum over the last dim`
#
# </details>

# %%
check("03.6", rms_norm_backward)
