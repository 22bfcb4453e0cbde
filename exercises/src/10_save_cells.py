# Cells for exercises/src/10_memory_amp.py (section 10.5, saving memory), in the same percent format: paste them
# after the chapter's other exercises (the import cell below adds nothing the file's first code cell lacks: drop
# it if the file already imports check, torch and F), renumber 10.51 / 10.52 to follow the chapter's last id (in
# minillm/grading/ch10_save.py, tests/test_exercises_ch10_save.py and the stubs' messages below), add
# "[10.5 Saving memory](../notebooks/10_memory_amp/05_saving_memory.ipynb) (10.51, 10.52)" to the file's
# "Read first" line, then delete this file (two 10_*.py sources break exercise_kit.source("10")).
# Checkers: minillm/grading/ch10_save.py (SAVE_EXERCISES, ids 10.51 and 10.52).

# %%
import torch
import torch.nn.functional as F

from minillm.grading import check

# %% [markdown]
# ## 10.51 Block-wise absmax int8 quantisation (2 points)
#
# Read first: [10.5 Saving memory](../notebooks/10_memory_amp/05_saving_memory.ipynb), section 2. 8-bit
# optimizers store a state tensor as one byte per value plus one scale per **block**. Write
# `absmax_quantize(x, block)` for the linear (int8) code:
#
# * flatten `x` row by row and cut it into blocks of `block` consecutive values (the last block may be
#   shorter);
# * each block's scale is its **absmax**, the largest absolute value in the block;
# * each value's code is `127 * value / absmax` rounded to the nearest integer, a whole number from -127 to
#   127; a block of zeros has absmax 0 and codes 0.
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
    # BEGIN SOLUTION 10.51: return (q, absmax): the int8 codes of x and one absmax per block
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
check("10.51", absmax_quantize)

# %% [markdown]
# ## 10.52 Gradient accumulation over micro-batches (2 points)
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
# Worked example: `w = [[2.0]]`, `x = [[1], [2], [3], [4]]`, `y = 0`, the mean squared error and `k = 2`.
# The gradient of the mean of $(x w)^2$ is the mean of $2 w x^2$: 10 for rows 1-2, 50 for rows 3-4, and
# **30** for the batch (adding the two micro-batch gradients unscaled gives 60).

# %%
def accumulated_grad(loss_fn, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """The gradient of loss_fn(w, x, y) with respect to w, accumulated over k micro-batches."""
    # BEGIN SOLUTION 10.52: return the batch's gradient, accumulated over k micro-batches
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
check("10.52", accumulated_grad)
