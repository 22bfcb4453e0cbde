# Solution source of exercises/09_peft.ipynb (percent format: "# %%" starts a code cell,
# "# %% [markdown]" a markdown cell). Regenerate the learner notebook with
#     .venv/bin/python tools/build_exercises.py
# then execute it with  .venv/bin/python tools/execute_notebooks.py exercises/09_peft.ipynb
# Code between "# BEGIN SOLUTION <id>: <task>" and "# END SOLUTION" becomes
# raise NotImplementedError("Exercise <id>: <task>") in the learner notebook.

# %% [markdown]
# # Exercises 9: Parameter-efficient fine-tuning
#
# Three functions about LoRA: the forward pass of an adapted linear layer, merging the adapter into the
# frozen weight for inference, and the number of parameters LoRA trains in a Llama-shaped model.
#
# Each exercise is a function whose body is a stub raising `NotImplementedError`. Replace the `raise`
# line with your code and run the check cell below it: it compares your function with the `minillm`
# reference on the worked examples shown here and on random inputs, and prints ✅ (passed), ❌ with a
# hint (naming the mistake when it recognises a common one) or ⬜ (not attempted). A check never raises.
# For a score report run `minillm grade exercises/09_peft.ipynb`; see
# [How grading works](../book/grading.md).
#
# Read first: [9.1 LoRA](../notebooks/09_peft/01_lora.ipynb). Tensors are float64; the checks allow
# $10^{-5}$ times the largest expected $|\text{value}|$ of a case (at least 1) on every output value, so float32
# arithmetic passes, and want parameter counts exactly.

# %%
import torch

from minillm.grading import check

# %% [markdown]
# ## 09.1 A LoRA linear layer (1 point)
#
# A frozen linear layer has weight `W` of shape `(out, in)` and bias `b` of shape `(out,)`, or `b = None`
# for a layer without bias. LoRA adds a trainable update of rank $r$ made of `A` `(r, in)` and `B`
# `(out, r)`, scaled by $s = \alpha / r$, or by $s = \alpha / \sqrt{r}$ when `use_rslora` is true (rsLoRA):
#
# $$h = W x + b + s\, B A x .$$
#
# Write `lora_linear(x, W, b, A, B, alpha, use_rslora=False)` for `x` of shape `(..., in)` (any number of
# leading dimensions), returning `h` of shape `(..., out)`. Worked example with
# `W = [[1, 2], [3, 4]]`, `A = [[1, -1]]`, `B = [[2], [0.5]]`, `alpha = 3` ($r = 1$, $s = 3$) and
# `x = [[2, 1]]`:
#
# * `b = None`: $Wx = [4, 10]$, $Ax = 1$, $s\,BAx = [6, 1.5]$, so `h = [[10, 11.5]]`;
# * `b = [1, -1]`: `h = [[11, 10.5]]`.

# %%
def lora_linear(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor | None, A: torch.Tensor, B: torch.Tensor,
                alpha: float, use_rslora: bool = False) -> torch.Tensor:
    """(..., in) -> (..., out): the frozen layer's output plus the scaled rank-r update."""
    # BEGIN SOLUTION 09.1: return the frozen layer's output plus the scaled LoRA update
    r = A.shape[0]
    s = alpha / r**0.5 if use_rslora else alpha / r
    h = x @ W.T + (x @ A.T) @ B.T * s  # (..., in) -> (..., r) -> (..., out): never the (out, in) product B A
    return h if b is None else h + b
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# The rank is the number of rows of `A`. Compute the two paths separately and add them; the bias belongs to the
# frozen path only.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `x @ W.T` is the frozen path; `(x @ A.T) @ B.T` the update, multiplied by `alpha / r` or `alpha / r ** 0.5`.
#
# </details>

# %%
check("09.1", lora_linear)

# %% [markdown]
# ## 09.2 Merge a LoRA update (1 point)
#
# For inference the update can be folded into the frozen weight, so that one matrix computes what the
# adapted layer does and the adapter costs no time at all. Write `merge_lora_weight(W, A, B, alpha,
# use_rslora=False)` returning the merged weight of shape `(out, in)`, with the same scaling as in 09.1.
# Return a new tensor and leave `W` unchanged (unmerging needs it). Worked examples:
#
# * the layer of 09.1: `[[7, -4], [4.5, 2.5]]`;
# * `W` = zeros (2 x 2), $r = 4$ with every row of `A` equal to `[1, 0]`, `B = [[0.25, 0.25, 0.25, 0.25],
#   [0, 0, 0, 0]]`, `alpha = 8`, `use_rslora=True` ($s = 8 / \sqrt 4 = 4$): `[[4, 0], [0, 0]]`.

# %%
def merge_lora_weight(W: torch.Tensor, A: torch.Tensor, B: torch.Tensor, alpha: float,
                      use_rslora: bool = False) -> torch.Tensor:
    """(out, in): a new weight computing what the frozen layer plus its scaled LoRA update computes."""
    # BEGIN SOLUTION 09.2: return the merged weight as a new tensor
    r = A.shape[0]
    s = alpha / r**0.5 if use_rslora else alpha / r
    return W + s * (B @ A)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Write $h$ of 09.1 (without bias) as one matrix times $x$.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# $Wx + s\,BAx = (W + s\,BA)\,x$: return `W + s * (B @ A)` (out of place, not `W += ...`).
#
# </details>

# %%
check("09.2", merge_lora_weight)

# %% [markdown]
# ## 09.3 How many parameters does LoRA train? (2 points)
#
# A Llama-shaped model has `n_layer` blocks; in each, attention projections `q_proj` and `o_proj` with
# `n_head` heads of `head_dim = d_model // n_head`, `k_proj` and `v_proj` with `n_kv_head` heads of the same
# size (grouped-query attention when `n_kv_head < n_head`), and a SwiGLU MLP of width `ffn_hidden`
# (`gate_proj`, `up_proj`: `d_model` to `ffn_hidden`; `down_proj` back); one `lm_head` maps `d_model` to
# `vocab_size` at the top. No linear layer has a bias. LoRA of rank `r` is applied to every linear layer whose
# name is in `targets` (a tuple of those names), in every block. Write `lora_trainable_params(n_layer, d_model,
# n_head, n_kv_head, ffn_hidden, vocab_size, r, targets)` returning how many parameters LoRA trains (an int).
#
# Worked example: Llama-2-7B (32 layers, `d_model` 4096, 32 heads and 32 KV heads, `ffn_hidden` 11008,
# vocabulary 32000) with `targets = ("q_proj", "v_proj")` and `r = 8` trains 4,194,304 parameters,
# about 0.06% of its 6.7 billion.

# %%
def lora_trainable_params(n_layer: int, d_model: int, n_head: int, n_kv_head: int, ffn_hidden: int, vocab_size: int,
                          r: int, targets: tuple[str, ...]) -> int:
    """How many parameters LoRA of rank r on `targets` trains in this Llama-shaped model."""
    # BEGIN SOLUTION 09.3: return the number of trainable LoRA parameters
    head_dim = d_model // n_head
    q, kv = n_head * head_dim, n_kv_head * head_dim
    shapes = {"q_proj": (d_model, q), "k_proj": (d_model, kv), "v_proj": (d_model, kv), "o_proj": (q, d_model),
              "gate_proj": (d_model, ffn_hidden), "up_proj": (d_model, ffn_hidden),
              "down_proj": (ffn_hidden, d_model)}
    per_layer = sum(r * (i + o) for name, (i, o) in shapes.items() if name in targets)  # A: r x in, B: out x r
    head = r * (d_model + vocab_size) if "lm_head" in targets else 0
    return n_layer * per_layer + head
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Write down the (in, out) shape of each of the eight linear layers; what do A and B of one adapted layer hold?
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# An adapted (in, out) layer trains r (in + out) numbers; `k_proj` and `v_proj` output `n_kv_head * head_dim`;
# sum over the targets of one block, times `n_layer`, plus `lm_head` once.
#
# </details>

# %%
check("09.3", lora_trainable_params)
