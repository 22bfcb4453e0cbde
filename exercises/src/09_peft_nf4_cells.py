# Cells for exercises/src/09_peft.py (QLoRA's NF4), in the same percent format: paste them after the LoRA
# exercises. Checkers: minillm/grading/ch09_nf4.py (NF4_EXERCISES). Renumber 09.11 / 09.12 at the merge if
# chapter 9 numbers its exercises otherwise (ids appear in the headings, the stubs and the check cells).

# %% [markdown]
# ## NF4: the 4-bit data type of QLoRA
#
# Read first: [9.2 QLoRA](../notebooks/09_peft/02_qlora.ipynb). `NF4` below is the table of the 16 NF4 code
# values, sorted from $-1$ to $1$ (QLoRA, appendix E); an NF4 number is an **index** 0..15 into it.

# %%
import torch

from minillm.grading import check
from minillm.peft.nf4 import NF4_CODE as NF4

print(NF4)

# %% [markdown]
# ## 09.11 Quantise to NF4 (2 points)
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
    # BEGIN SOLUTION 09.11: return (idx, absmax) of x in NF4, one absmax per block
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
check("09.11", nf4_quantize)

# %% [markdown]
# ## 09.12 Dequantise NF4 (1 point)
#
# Write `nf4_dequantize(idx, absmax, blocksize)`, the inverse of 09.11: `idx` holds `n` indices into `NF4`,
# `absmax` one float per block of `blocksize` consecutive indices. Return the float tensor of shape `(n,)` of
# the values each index stands for in its block. Checked within $10^{-6}$ relative. Worked examples:
#
# * `idx = [15, 2, 10, 7]`, `absmax = [2.0]`, `blocksize = 4`: `[2.0, -1.0501461, 0.4922246, 0.0]`;
# * `idx = [7, 12, 0, 15, 14, 4]`, `absmax = [0.6, 4.0]`, `blocksize = 3`:
#   `[0.0, 0.2644259, -0.6, 4.0, 2.8918273, -1.1377655]`.

# %%
def nf4_dequantize(idx: torch.Tensor, absmax: torch.Tensor, blocksize: int) -> torch.Tensor:
    """idx (n,) integers 0..15, absmax (n // blocksize,) -> values (n,)."""
    # BEGIN SOLUTION 09.12: return the values the NF4 indices stand for
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
check("09.12", nf4_dequantize)
