# Solution source of exercises/09_peft.ipynb (percent format: "# %%" starts a code cell,
# "# %% [markdown]" a markdown cell). Regenerate the learner notebook with
#     .venv/bin/python tools/build_exercises.py
# then execute it with  .venv/bin/python tools/execute_notebooks.py exercises/09_peft.ipynb
# Code between "# BEGIN SOLUTION <id>: <task>" and "# END SOLUTION" becomes
# raise NotImplementedError("Exercise <id>: <task>") in the learner notebook.

# %% [markdown]
# # Exercises 9: Parameter-efficient fine-tuning
#
# Seven functions: three about LoRA (the forward pass of an adapted linear layer, merging the adapter into the
# frozen weight for inference, the number of parameters LoRA trains in a Llama-shaped model), two about
# QLoRA's 4-bit NormalFloat (quantising blocks of weights to NF4 and back), one about AdaLoRA (its cubic
# rank-budget schedule) and one about prefix tuning (attention over a prefix of trained keys and values).
#
# Each exercise is a function whose body is a stub raising `NotImplementedError`. Replace the `raise`
# line with your code and run the check cell below it: it compares your function with the `minillm`
# reference on the worked examples shown here and on random inputs, and prints ✅ (passed), ❌ with a
# hint (naming the mistake when it recognises a common one) or ⬜ (not attempted). A check never raises.
# For a score report run `minillm grade exercises/09_peft.ipynb`; see
# [How grading works](../book/grading.md).
#
# Read first: [9.1 LoRA](../notebooks/09_peft/01_lora.ipynb) (09.1-09.3),
# [9.2 QLoRA](../notebooks/09_peft/02_qlora.ipynb) (09.4, 09.5), [9.3 AdaLoRA](../notebooks/09_peft/03_adalora.ipynb)
# (09.6) and [9.4 Adapters and prompts](../notebooks/09_peft/04_adapters_prompts.ipynb) (09.7). Tensors are
# float64; the checks allow $10^{-5}$ times the largest expected $|\text{value}|$ of a case (at least 1) on every
# output value, so float32 arithmetic passes, and want parameter counts exactly.

# %%
import torch

from minillm.grading import check
from minillm.peft.nf4 import NF4_CODE as NF4

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


# %% [markdown]
# ## NF4: the 4-bit data type of QLoRA
#
# Read first: [9.2 QLoRA](../notebooks/09_peft/02_qlora.ipynb). `NF4` (imported in the first code cell) is the
# float32 tensor of the 16 NF4 code values of QLoRA's appendix E, sorted: $-1$, $-0.6962$, $-0.5251$, $-0.3949$,
# $-0.2844$, $-0.1848$, $-0.0911$, $0$, $0.0796$, $0.1609$, $0.2461$, $0.3379$, $0.4407$, $0.5626$, $0.7230$, $1$.
# An NF4 number is an **index** 0..15 into it.

# %% [markdown]
# ## 09.4 Quantise to NF4 (2 points)
#
# Write `nf4_quantize(x, blocksize)` for a 1-D float tensor `x` whose length is a multiple of `blocksize`.
# Cut `x` into blocks of `blocksize` consecutive values. Each block is stored as one float, its **absmax** (the
# largest absolute value in the block), and one NF4 index per value: the index of the code value in `NF4` that
# is nearest to the value divided by the block's absmax. Return `(idx, absmax)`: `idx` an integer tensor of
# shape `(len(x),)` with entries in 0..15, `absmax` a float tensor of shape `(len(x) // blocksize,)`. A block of
# zeros has absmax 0 and every value of it gets the index of the code value 0. The check has no ties (no value
# lies within $10^{-4}$ of halfway between two code values) and wants the indices exactly and absmax within
# $10^{-6}$ relative. Worked examples:
#
# * `x = [2.0, -1.0, 0.5, 0.0]`, `blocksize = 4`: absmax `[2.0]`, idx `[15, 2, 10, 7]`;
# * `x = [0.0, 0.3, -0.6, 4.0, 2.9, -1.0]`, `blocksize = 3`: absmax `[0.6, 4.0]`, idx `[7, 12, 0, 15, 14, 4]`;
# * `x = [0.0, 0.0, -0.25, 0.125]`, `blocksize = 2`: absmax `[0.0, 0.25]`, idx `[7, 7, 0, 12]`.

# %%
def nf4_quantize(x: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (n,) -> (idx (n,) integers 0..15, absmax (n // blocksize,)): blockwise absmax NF4 quantisation."""
    # BEGIN SOLUTION 09.4: return (idx, absmax) of x in NF4, one absmax per block
    blocks = x.reshape(-1, blocksize)  # (n_blocks, blocksize)
    absmax = blocks.abs().amax(dim=1)  # (n_blocks,)
    scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax))  # a zero block divides by 1: stays 0
    scaled = blocks / scale[:, None]  # in [-1, 1]
    code = NF4.to(scaled.dtype)
    idx = (scaled[..., None] - code).abs().argmin(dim=-1)  # (n_blocks, blocksize, 16) -> nearest code
    return idx.reshape(-1), absmax
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# View `x` as a matrix with one block per row. Scale each row into $[-1, 1]$ by its own largest magnitude, then
# for each scaled value find the closest entry of the 16-value table.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `blocks = x.reshape(-1, blocksize)`; `absmax = blocks.abs().amax(dim=1)`; divide by `absmax[:, None]` (by 1
# where absmax is 0); `(scaled[..., None] - NF4).abs().argmin(-1)` gives the nearest index; flatten it.
#
# </details>

# %%
check("09.4", nf4_quantize)

# %% [markdown]
# ## 09.5 Dequantise NF4 (1 point)
#
# Write `nf4_dequantize(idx, absmax, blocksize)`, the inverse of 09.4: `idx` holds `n` indices into `NF4`,
# `absmax` one float per block of `blocksize` consecutive indices. Return the float tensor of shape `(n,)` of
# the values each index stands for in its block. Checked within $10^{-6}$ relative. Worked examples:
#
# * `idx = [15, 2, 10, 7]`, `absmax = [2.0]`, `blocksize = 4`: `[2.0, -1.0501461, 0.4922246, 0.0]`;
# * `idx = [7, 12, 0, 15, 14, 4]`, `absmax = [0.6, 4.0]`, `blocksize = 3`:
#   `[0.0, 0.2644259, -0.6, 4.0, 2.8918273, -1.1377655]`.

# %%
def nf4_dequantize(idx: torch.Tensor, absmax: torch.Tensor, blocksize: int) -> torch.Tensor:
    """idx (n,) integers 0..15, absmax (n // blocksize,) -> values (n,)."""
    # BEGIN SOLUTION 09.5: return the values the NF4 indices stand for
    values = NF4.to(absmax.dtype)[idx].reshape(-1, blocksize)  # (n_blocks, blocksize) in [-1, 1]
    return (values * absmax[:, None]).reshape(-1)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Look each index up in the table, then undo the scaling of its block.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `NF4[idx]` viewed as `(n_blocks, blocksize)`, times `absmax[:, None]`, flattened.
#
# </details>

# %%
check("09.5", nf4_dequantize)


# %% [markdown]
# ## 09.6 AdaLoRA's budget schedule (2 points)
#
# Read first: [9.3 AdaLoRA](../notebooks/09_peft/03_adalora.ipynb). AdaLoRA keeps a **budget**: the total
# number of singular values (triplets) left switched on across all adapted matrices. It starts at
# `init_budget`, ends at `target_budget` (at most `init_budget`), and in between falls along a cubic, the way
# the paper (its eq. 12) and `peft` schedule it.
#
# Write `adalora_budget(step, init_budget, target_budget, tinit, tfinal, total_step)`, the budget after
# optimizer step `step` (steps count 1, 2, ...; step 0 is before training), an `int` (a float or a one-element
# tensor holding a whole number is accepted too):
#
# * **warm-up**: for every step up to and including `tinit`, the budget is `init_budget`;
# * **final phase**: for every step after `total_step - tfinal`, it is `target_budget`;
# * **the fall**, the steps in between: let the progress be the share of the fall's
#   `total_step - tfinal - tinit` steps done by `step` (0 at step `tinit`, 1 at step `total_step - tfinal`).
#   The budget is `target_budget` plus `init_budget - target_budget` times the cube of (1 - progress),
#   rounded down to an int.
#
# All arguments are ints with `0 <= tinit < total_step - tfinal` and `tfinal >= 0`; `step >= 0` may lie past
# `total_step`. The answer must equal the exact value rounded down (when that value is an integer $k$, $k - 1$
# passes too: float rounding can land just below it). Worked example, `init_budget = 24`,
# `target_budget = 8`, `tinit = 2`, `tfinal = 3`, `total_step = 10`, at steps 0, 1, ..., 11:
# `[24, 24, 24, 16, 11, 9, 8, 8, 8, 8, 8, 8]`.

# %%
def adalora_budget(step: int, init_budget: int, target_budget: int, tinit: int, tfinal: int,
                   total_step: int) -> int:
    """The total rank AdaLoRA keeps after optimizer step `step`."""
    # BEGIN SOLUTION 09.6: return the budget after this step: warm-up, cubic fall, final phase
    if step <= tinit:  # warm-up: the full budget
        return init_budget
    if step > total_step - tfinal:  # final phase: the rank pattern is fixed
        return target_budget
    left = 1 - (step - tinit) / (total_step - tfinal - tinit)  # 1 at tinit, 0 at total_step - tfinal
    return int((init_budget - target_budget) * left ** 3 + target_budget)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Three branches, one per phase. Only the middle one computes anything: how far the fall has gone, as a
# number from 0 to 1, then a cube of what is left of it.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# With `left = 1 - (step - tinit) / (total_step - tfinal - tinit)`, the fall's budget is
# `int((init_budget - target_budget) * left ** 3 + target_budget)`. At step 3 of the worked example,
# `left = 0.8` and `16 * 0.512 + 8 = 16.192`, so 16.
#
# </details>

# %%
check("09.6", adalora_budget)


# %% [markdown]
# ## 09.7 Attention with a prefix of keys and values (2 points)
#
# Read first: [9.4 Adapters and prompts](../notebooks/09_peft/04_adapters_prompts.ipynb), section 4. Prefix tuning
# and P-tuning v2 give every attention layer $P$ trained key/value pairs that no token produced. Write
# `prefix_attention(q, k, v, prefix_k, prefix_v)` for one layer of a decoder:
#
# * `q`, `k`, `v` of shape `(B, H, T, D)`: the queries, keys and values of the $T$ real tokens (already
#   projected, one head per `H`);
# * `prefix_k`, `prefix_v` of shape `(B, H, P, D)`, $P \ge 0$: the prefix's keys and values.
#
# Each query attends to **every** prefix key and to the real keys **up to and including its own position**,
# with scaled dot-product attention (scores divided by $\sqrt{D}$, one softmax over all the keys it may see).
# Return the outputs, shape `(B, H, T, D)`. With $P = 0$ this is ordinary causal attention. The check allows
# $10^{-5}$ times the largest expected $|\text{value}|$ (at least 1) on every value, so float32 passes.
#
# Worked example: $B = H = 1$, $P = 2$, $T = 3$, $D = 1$, every query 1 and every key 0 (all scores equal, so
# a query's weights are uniform over the keys it sees), `prefix_v = [6, 0]`, `v = [3, 1, 5]`:
# the outputs are $(6 + 0 + 3) / 3 = 3$, $(6 + 0 + 3 + 1) / 4 = 2.5$ and $(6 + 0 + 3 + 1 + 5) / 5 = 3$,
# i.e. `[3, 2.5, 3]`.

# %%
def prefix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prefix_k: torch.Tensor,
                     prefix_v: torch.Tensor) -> torch.Tensor:
    """(B, H, T, D): each real token's attention over the whole prefix and the real tokens up to itself."""
    # BEGIN SOLUTION 09.7: return every query's attention output over the prefix and the causal real keys
    P, T = prefix_k.shape[2], q.shape[2]
    keys = torch.cat([prefix_k, k], dim=2)  # (B, H, P + T, D)
    values = torch.cat([prefix_v, v], dim=2)
    scores = q @ keys.transpose(-2, -1) / q.shape[-1] ** 0.5  # (B, H, T, P + T)
    # query t sees key j of the concatenation when j < P (the prefix) or j - P <= t (a real key up to t)
    allowed = torch.arange(P + T)[None, :] <= torch.arange(T)[:, None] + P  # (T, P + T)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ values
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Put the prefix keys in front of the real keys (and the prefix values in front of the real values): then one
# attention over $P + T$ keys does it, with a mask that hides only the real keys after each query.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Query $t$ may see key $j$ of the concatenation when $j \le t + P$. Fill the other scores with $-\infty$ before
# one softmax over the last dimension, then multiply by the concatenated values.
#
# </details>

# %%
check("09.7", prefix_attention)
