# Solution source of exercises/10_memory_amp.ipynb (percent format: "# %%" starts a code cell,
# "# %% [markdown]" a markdown cell). Regenerate the learner notebook with
#     .venv/bin/python tools/build_exercises.py
# then execute it with  .venv/bin/python tools/execute_notebooks.py exercises/10_memory_amp.ipynb
# Code between "# BEGIN SOLUTION <id>: <task>" and "# END SOLUTION" becomes
# raise NotImplementedError("Exercise <id>: <task>") in the learner notebook.

# %% [markdown]
# # Exercises 10: Memory and mixed precision
#
# Six functions: two about where training memory goes (the bytes of the weights, gradients and optimizer states of
# a Llama-shaped model in fp32, mixed precision or bf16; the activation bytes one layer keeps for backward, with
# and without activation checkpointing), two about 16-bit numbers (rounding an fp32 bit pattern to bf16 with
# integer operations; the dynamic loss scale of fp16 training over a run) and two about saving memory (block-wise
# absmax int8 quantisation, as 8-bit optimizers store their states; gradient accumulation over micro-batches).
#
# Each exercise is a function whose body is a stub raising `NotImplementedError`. Replace the `raise`
# line with your code and run the check cell below it: it compares your function with the `minillm`
# reference on the worked examples shown here and on random inputs, and prints ✅ (passed), ❌ with a
# hint (naming the mistake when it recognises a common one) or ⬜ (not attempted). A check never raises.
# For a score report run `minillm grade exercises/10_memory_amp.ipynb`; see
# [How grading works](../book/grading.md).
#
# Read first: [10.1 Where training memory goes](../notebooks/10_memory_amp/01_memory_flops.ipynb) (10.1),
# [10.2 Activation checkpointing](../notebooks/10_memory_amp/02_activation_checkpointing.ipynb) (10.2),
# [10.3 Number formats](../notebooks/10_memory_amp/03_number_formats.ipynb) (10.3),
# [10.4 Mixed precision](../notebooks/10_memory_amp/04_mixed_precision.ipynb) (10.4) and
# [10.5 Saving memory](../notebooks/10_memory_amp/05_saving_memory.ipynb) (10.5, 10.6).

# %%
import torch
import torch.nn.functional as F

from minillm.grading import check

# %% [markdown]
# ## 10.1 Bytes of the model states in training (2 points)
#
# Read first: [10.1 Where training memory goes](../notebooks/10_memory_amp/01_memory_flops.ipynb). Before any
# activation, a training step holds for every parameter its weight, its gradient and the optimizer's states. The
# model is Llama-shaped: no biases, RoPE (no position table), per layer the projections q and o ($d \times d$), k and
# v ($d \times$ `n_kv_head` heads of $d / n_\text{head}$), a SwiGLU MLP of three $d \times$ `ffn_hidden` matrices and
# two RMSNorm gains of $d$; a final RMSNorm gain of $d$; the token embedding ($V \times d$); an lm_head ($d \times V$)
# unless `tied` (then the head is the embedding matrix). The optimizer is AdamW, and `precision` is one of
#
# * `"fp32"`: weights, gradients and AdamW's states all in 4 bytes;
# * `"mixed"`: 16-bit weights and gradients, plus an fp32 master copy of the weights, AdamW's states in fp32;
# * `"bf16"`: weights, gradients and AdamW's states all in bf16, no master copy.
#
# Write `train_state_bytes(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, tied, precision)`: the bytes
# of weights, gradients and optimizer states (master copy included) together, as a number. Worked examples: a tiny
# model with `vocab_size=10, n_layer=1, d_model=4, n_head=2, n_kv_head=1, ffn_hidden=8, tied=True` has 196
# parameters, so `3136` bytes in `"fp32"`, `3136` in `"mixed"` and `1568` in `"bf16"`; Llama-2-7B (`32000, 32, 4096,
# 32, 32, 11008, False`, 6,738,415,616 parameters) needs `107814649856` bytes (108 GB) in `"mixed"`. The answer must
# be exact to within half a byte (plus $10^{-9}$ of it).

# %%
def train_state_bytes(vocab_size: int, n_layer: int, d_model: int, n_head: int, n_kv_head: int, ffn_hidden: int,
                      tied: bool, precision: str) -> int:
    """Bytes of weights + gradients + AdamW states (and master copy) of a Llama-shaped model in training."""
    # BEGIN SOLUTION 10.1: return the bytes of weights, gradients and optimizer states in this precision
    head_dim = d_model // n_head
    attention = 2 * d_model * d_model + 2 * d_model * n_kv_head * head_dim  # q, o; k, v (GQA: fewer heads)
    per_layer = attention + 3 * d_model * ffn_hidden + 2 * d_model  # + SwiGLU + two RMSNorm gains
    params = n_layer * per_layer + d_model + vocab_size * d_model * (1 if tied else 2)  # final norm, embedding, head
    per_param = {"fp32": 4 + 4 + 4 + 4,  # weights, gradients, m, v
                 "mixed": 2 + 2 + 4 + 4 + 4,  # 16-bit weights and gradients, fp32 master, m, v
                 "bf16": 2 + 2 + 2 + 2}[precision]
    return params * per_param
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Two separate counts multiplied together: how many parameters the model has (attention, MLP, norms per layer;
# then the final norm, the embedding, and the head if it is not tied), and how many bytes each parameter costs in
# this precision, summing weight, gradient, master copy (if any) and AdamW's two states.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Bytes per parameter: fp32 $4 + 4 + 4 + 4 = 16$; mixed $2 + 2 + 4 + 4 + 4 = 16$; bf16 $2 + 2 + 2 + 2 = 8$. For the
# tiny model: q and o $2 \times 16$, k and v $2 \times 4 \times 2$, MLP $3 \times 32$, norms $8$: 152 per layer, plus
# the final norm 4 and the tied embedding 40, so 196 parameters.
#
# </details>

# %%
check("10.1", train_state_bytes)

# %% [markdown]
# ## 10.2 Activation bytes of a layer, with and without recomputation (1 point)
#
# Read first: [10.2 Activation checkpointing](../notebooks/10_memory_amp/02_activation_checkpointing.ipynb).
# Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", sec. 4.1) count the
# bytes one GPT layer stores for backward, with 16-bit activations and 1-byte dropout masks, for a sequence of $s$
# tokens, a batch of $b$, hidden size $h$ and $a$ heads:
#
# * the attention block: $11\,sbh + 5\,as^2b$, where the $5\,as^2b$ are the core attention's $s \times s$ tensors (the
#   softmax's output, the dropout mask and the dropout's output);
# * the MLP: $19\,sbh$; the two LayerNorms: $4\,sbh$.
#
# Three ways to train (`recompute`): `"none"` stores all of it; `"selective"` recomputes the core attention in
# backward, so its $s \times s$ tensors are not stored and everything else is; `"full"` stores only the layer's input
# ($sbh$ numbers of 2 bytes) and recomputes the rest.
#
# Write `layer_activation_bytes(seq, batch, hidden, heads, recompute)`, the bytes stored for one layer, as a number.
# Worked example, a Llama-2-7B-sized layer at `seq=2048, batch=1, hidden=4096, heads=32`: `956301312` bytes with
# `"none"` (956 MB), `285212672` with `"selective"`, `16777216` with `"full"`.

# %%
def layer_activation_bytes(seq: int, batch: int, hidden: int, heads: int, recompute: str) -> int:
    """Bytes one GPT layer stores for backward (Korthikanti et al. 2022's count), for a recomputation mode."""
    # BEGIN SOLUTION 10.2: return the bytes this layer stores for backward with this recomputation mode
    s, b, h, a = seq, batch, hidden, heads
    if recompute == "full":
        return 2 * s * b * h  # the input only, 2 bytes per number
    linear = (11 + 19 + 4) * s * b * h  # attention block, MLP, LayerNorms
    if recompute == "selective":
        return linear
    return linear + 5 * a * s * s * b  # + the core attention's s x s tensors
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Add up the parts the mode stores. The $sbh$ terms do not depend on the mode except in `"full"`, which keeps
# one $(s, b, h)$ tensor; only `"none"` stores the terms that grow with $s^2$.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `"none"`: $34\,sbh + 5\,as^2b$; `"selective"`: $34\,sbh$; `"full"`: $2\,sbh$. In the worked example
# $sbh = 8{,}388{,}608$ and $as^2b = 134{,}217{,}728$.
#
# </details>

# %%
check("10.2", layer_activation_bytes)


# %% [markdown]
# ## 10.3 Round fp32 bits to bf16, ties to even (2 points)
#
# Read first: [10.3 Number formats](../notebooks/10_memory_amp/03_number_formats.ipynb). bf16 is fp32 with the
# lower 16 bits of the mantissa dropped: sign (1 bit), the same 8 exponent bits, 7 mantissa bits. Converting
# fp32 to bf16 therefore keeps the top 16 bits of the fp32 pattern and **rounds** on the 16 bits it drops:
# to the nearest bf16 value, and on an exact tie to the neighbour whose last kept bit is 0 (round to nearest
# even, IEEE 754's default and what `torch.Tensor.to(torch.bfloat16)` does).
#
# Write `round_to_bf16(bits)`: `bits` is an fp32 bit pattern as a Python int in $[0, 2^{32})$; return the bf16
# bit pattern as an int in $[0, 2^{16})$, using integer operations on the bits (no float types). Rules:
#
# * finite values round to the nearest bf16 value, ties to even; a value that rounds past bf16's largest finite
#   number becomes inf (`0x7F80`, or `0xFF80` when negative), as torch's cast does; the sign is kept (-0.0 stays
#   `0x8000`); subnormals need no special case;
# * inf stays inf; every NaN must give a bf16 NaN (exponent bits all ones, mantissa not zero), any one.
#
# Worked examples (hex):
#
# | fp32 bits | value | bf16 bits | why |
# |---|---|---|---|
# | `0x3F800000` | 1.0 | `0x3F80` | nothing dropped |
# | `0x3F808000` | $1 + 2^{-8}$ | `0x3F80` | a tie, last kept bit 0: stays |
# | `0x3F818000` | $1 + 3 \cdot 2^{-8}$ | `0x3F82` | a tie, last kept bit 1: up to the even `...82` |
# | `0x3F808001` | just above $1 + 2^{-8}$ | `0x3F81` | above the halfway point: up |
# | `0x7F7FFFFF` | largest fp32 | `0x7F80` | rounds past bf16's largest finite: inf |
# | `0x7F800001` | a NaN | a NaN, e.g. `0x7FC0` | its only set mantissa bit is dropped, yet it must stay NaN |

# %%
def round_to_bf16(bits: int) -> int:
    """fp32 bit pattern -> the bf16 bit pattern of the nearest bf16 value (ties to even)."""
    # BEGIN SOLUTION 10.3: return the bf16 bit pattern nearest to the fp32 value, ties to even
    if (bits >> 23) & 0xFF == 0xFF and bits & 0x7FFFFF:  # NaN: keep the sign, force a quiet NaN
        return (bits >> 16) | 0x0040
    kept, dropped = bits >> 16, bits & 0xFFFF
    if dropped > 0x8000 or (dropped == 0x8000 and kept & 1):  # above halfway, or a tie with an odd last bit
        kept += 1  # a carry into the exponent is right: the next binade, or inf from the largest binade
    return kept
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Split the pattern into the 16 bits that stay and the 16 that go. Compare what goes with exactly half of
# $2^{16}$: more means round up, less means keep, equal is the tie. Handle NaN first.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `kept, dropped = bits >> 16, bits & 0xFFFF`; add 1 to `kept` when `dropped > 0x8000`, or when
# `dropped == 0x8000` and `kept & 1`. Adding 1 to the largest finite pattern carries into the exponent and
# gives exactly inf's pattern. A NaN is exponent `0xFF` with a non-zero mantissa: return `(bits >> 16) | 0x40`.
#
# </details>

# %%
check("10.3", round_to_bf16)

# %% [markdown]
# ## 10.4 The dynamic loss scale over a run (2 points)
#
# Read first: [10.4 Mixed precision](../notebooks/10_memory_amp/04_mixed_precision.ipynb). fp16 training
# multiplies the loss by a scale $S$ and adapts $S$ as `torch.amp.GradScaler` does. After each step's backward
# pass, it is known whether any gradient was inf or NaN (`found_inf[t]`); then:
#
# * **overflow**: the step is skipped (no weight update), $S$ is multiplied by `backoff_factor`, and the count of
#   clean steps in a row goes back to 0;
# * **clean step**: the count grows by 1; when it reaches `growth_interval`, $S$ is multiplied by `growth_factor`
#   and the count goes back to 0. $S$ is a float32: if growing would take it past the largest float32
#   (about $3.4 \cdot 10^{38}$), it stays where it is (the count still goes back to 0).
#
# Write `loss_scale_trajectory(found_inf, init_scale, growth_factor, backoff_factor, growth_interval)`:
# `found_inf` is a list of bools, one per step. Return `(scales, skipped)`: `scales[t]` is $S$ **after** step
# `t`'s update (the scale step `t + 1` uses), and `skipped` the list of the indices of the skipped steps.
# Worked example, `growth_interval = 2`, `init_scale = 8.0`, factors 2 and 0.5:
#
# * `found_inf = [False, False, True, False, False, False]` gives `([8, 16, 8, 8, 16, 16], [2])`;
# * `found_inf = [False, True, False, False]` gives `([8, 4, 4, 8], [1])`: the overflow at step 1 resets the
#   count, so growth waits for steps 2 and 3.
#
# Scales computed in float64 are fine (they are compared to $10^{-5}$ relative).

# %%
def loss_scale_trajectory(found_inf: list[bool], init_scale: float, growth_factor: float, backoff_factor: float,
                          growth_interval: int) -> tuple[list[float], list[int]]:
    """GradScaler's rule over a run: the scale after each step's update, and the skipped steps."""
    # BEGIN SOLUTION 10.4: return the scale after each step and the indices of the skipped steps
    largest_float32 = 3.4028234663852886e38
    scale, clean = init_scale, 0
    scales, skipped = [], []
    for t, overflow in enumerate(found_inf):
        if overflow:
            skipped.append(t)
            scale *= backoff_factor
            clean = 0
        else:
            clean += 1
            if clean == growth_interval:
                if scale * growth_factor <= largest_float32:
                    scale *= growth_factor
                clean = 0
        scales.append(scale)
    return scales, skipped
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Keep two numbers while walking over the steps: the scale and the count of clean steps since the last growth
# or overflow. Append the scale at the end of each step, after deciding what happens to it.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# On `found_inf[t]`: record `t`, `scale *= backoff_factor`, `clean = 0`. Otherwise `clean += 1`, and when
# `clean == growth_interval`: multiply by `growth_factor` if the result is at most `3.4028234663852886e38`, and
# set `clean = 0` either way.
#
# </details>

# %%
check("10.4", loss_scale_trajectory)


# %% [markdown]
# ## 10.5 Block-wise absmax int8 quantisation (2 points)
#
# Read first: [10.5 Saving memory](../notebooks/10_memory_amp/05_saving_memory.ipynb), section 2. 8-bit
# optimizers store a state tensor as one byte per value plus one scale per **block**. Write
# `absmax_quantize(x, block)` for the linear (int8) code:
#
# * flatten `x` row by row and cut it into blocks of `block` consecutive values (the last block may be
#   shorter);
# * each block's scale is its **absmax**, the largest absolute value in the block;
# * each value's code is `127 * value / absmax` rounded to the nearest integer (an exact half may go either
#   way), a whole number from -127 to 127; a block of zeros has absmax 0 and codes 0.
#
# Return `(q, absmax)`: `q` holds one code per value of `x` (flattened, any integer dtype, `torch.int8`
# fits), `absmax` one float per block. Dequantising is `q / 127 * absmax` of the value's block.
#
# Worked example, `x = [0.5, -2.0, 0.0, 2.0, 3.0, -0.3]` and `block = 4`: the blocks are `[0.5, -2, 0, 2]`
# (absmax 2) and `[3, -0.3]` (absmax 3); `127 * 0.25 = 31.75` rounds to 32 and `127 * -0.1 = -12.7` to -13,
# so `q = [32, -127, 0, 127, 127, -13]` and `absmax = [2.0, 3.0]`.

# %%
def absmax_quantize(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Block-wise absmax int8 codes of x (flattened) and one absmax per block."""
    # BEGIN SOLUTION 10.5: return (q, absmax): the int8 codes of x and one absmax per block
    flat = x.reshape(-1).float()
    n_blocks = -(-flat.numel() // block)  # ceil: the last block may be shorter
    blocks = F.pad(flat, (0, n_blocks * block - flat.numel())).view(n_blocks, block)  # zeros leave absmax alone
    absmax = blocks.abs().amax(dim=1)  # (n_blocks,)
    scale = torch.where(absmax > 0, 127 / absmax, torch.zeros_like(absmax))  # a zero block: codes 0
    q = torch.round(blocks * scale[:, None]).to(torch.int8)
    return q.reshape(-1)[: flat.numel()], absmax
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Pad the flattened tensor with zeros to a whole number of blocks (zeros do not change any block's absmax),
# view it as a matrix with one block per row, and work row by row: one absmax per row.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `absmax = blocks.abs().amax(dim=1)`, then `torch.round(blocks / absmax[:, None] * 127)`, with the rows
# whose absmax is 0 kept at 0 (divide by 1 there, or use `torch.where`). Cut the padding off `q` at the end.
#
# </details>

# %%
check("10.5", absmax_quantize)

# %% [markdown]
# ## 10.6 Gradient accumulation over micro-batches (2 points)
#
# Read first: [10.5 Saving memory](../notebooks/10_memory_amp/05_saving_memory.ipynb), section 1. Write
# `accumulated_grad(loss_fn, w, x, y, k)`: the gradient with respect to `w` of the whole batch's loss
# `loss_fn(w, x, y)`, computed the way gradient accumulation computes it, so that only one micro-batch's
# activations exist at a time:
#
# * split the `len(x)` rows of `x` (and the matching rows of `y`) into `k` micro-batches of `len(x) // k`
#   rows each (`k` divides `len(x)`); every row goes to exactly one micro-batch;
# * for each micro-batch in turn: call `loss_fn(w, x_micro, y_micro)` once (it returns the **mean** loss over
#   its rows), scale it so that the gradients of the `k` micro-batches add up to the batch's, and
#   backpropagate it before the next micro-batch's forward;
# * `w` is a leaf tensor with `requires_grad=True` whose `w.grad` may still hold an **earlier** step's
#   gradient: return this batch's gradient only (a tensor of `w`'s shape).
#
# Worked example: `w = [[2.0]]`, `x = [[1], [2], [3], [4]]`, `y = torch.zeros(4, 1)`, the mean squared error and
# `k = 2`.
# The gradient of the mean of $(x w)^2$ is the mean of $2 w x^2$: 10 for rows 1-2, 50 for rows 3-4, and
# **30** for the batch (adding the two micro-batch gradients unscaled gives 60).

# %%
def accumulated_grad(loss_fn, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """The gradient of loss_fn(w, x, y) with respect to w, accumulated over k micro-batches."""
    # BEGIN SOLUTION 10.6: return the batch's gradient, accumulated over k micro-batches
    w.grad = None  # an earlier step's gradient must not leak in
    rows = len(x) // k
    for j in range(k):
        loss = loss_fn(w, x[j * rows:(j + 1) * rows], y[j * rows:(j + 1) * rows])  # the micro-batch's mean
        (loss / k).backward()  # w.grad += d(loss / k) / dw; this micro-batch's activations are freed
    return w.grad
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# The batch's loss is the mean of the `k` micro-batch means (they have equal sizes), and the gradient of a
# mean is the mean of the gradients. `.backward()` adds into `w.grad`; it does not overwrite it.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Set `w.grad = None` first, then loop `j` over `range(k)` with `rows = len(x) // k`: take
# `x[j * rows:(j + 1) * rows]` (and the same rows of `y`), compute the loss, call `(loss / k).backward()`.
# Return `w.grad`.
#
# </details>

# %%
check("10.6", accumulated_grad)
