# Cells of chapter 12's ZeRO-3 / FSDP exercises, to be joined into exercises/src/12_zero_fsdp.py (percent format:
# "# %%" starts a code cell, "# %% [markdown]" a markdown cell). Checkers: minillm/grading/ch12_fsdp.py.
# The cells need `import math`, `import torch` and `from minillm.grading import check` from the chapter's import
# cell (Hint 2 of 12.4 and 12.5 uses math.ceil / math.prod).

# %%
import math  # noqa: F401 (Hint 2 of 12.4 and 12.5 uses it)

import torch

from minillm.grading import check

# %% [markdown]
# ## 12.4 Cut a unit into padded flat shards (2 points)
#
# Read first: [12.2 ZeRO-3 and FSDP](../notebooks/12_zero_fsdp/02_fsdp.ipynb), section 2. ZeRO-3 and FSDP shard
# a model **unit** by unit (a unit is, e.g., one transformer block). A unit's parameters are flattened, each in
# its own row-major order (as `reshape(-1)` does) and one after the other in the order given, into one flat
# buffer of $\Psi_u$ numbers. The buffer is padded with zeros **at the end** to $P_u = n\lceil \Psi_u / n\rceil$
# elements (no padding when $\Psi_u$ is already a multiple of $n$) and cut into $n$ contiguous pieces of
# $P_u / n$ elements: rank $r$ keeps piece $r$.
#
# Write `shard_unit(params, n)`: `params` is the unit's list of tensors, `n >= 1` the number of ranks. Return the
# list of the $n$ pieces (1-D tensors, rank 0's first), as new tensors; leave `params` unchanged.
#
# Worked example: `params = [tensor([[1., 2.], [3., 4.]]), tensor([5., 6., 7.])]`, `n = 3` gives
# `[tensor([1., 2., 3.]), tensor([4., 5., 6.]), tensor([7., 0., 0.])]`.

# %%
def shard_unit(params: list[torch.Tensor], n: int) -> list[torch.Tensor]:
    """The n ranks' pieces of the unit's zero-padded flat buffer."""
    # BEGIN SOLUTION 12.4: return the list of the n ranks' pieces of the padded flat unit
    flat = torch.cat([p.reshape(-1) for p in params])  # (Psi_u,), parameters in the order given
    padded = n * -(-flat.numel() // n)  # n * ceil(Psi_u / n)
    flat = torch.cat([flat, flat.new_zeros(padded - flat.numel())])  # (P_u,), zeros at the end
    return [piece.clone() for piece in flat.chunk(n)]  # n contiguous pieces of P_u / n
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Three steps: one flat tensor from all the parameters, the number of zeros to append so that its length divides
# by `n`, then `n` equal contiguous pieces. Check the pieces' lengths on the worked example: 7 numbers, 3 ranks.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `torch.cat([p.reshape(-1) for p in params])`; $P_u$ is `n * math.ceil(numel / n)`; append
# `flat.new_zeros(P_u - numel)`; `padded.chunk(n)` then cuts equal pieces (clone them: chunks are views).
#
# </details>

# %%
check("12.4", shard_unit)


# %% [markdown]
# ## 12.5 Gather a unit back into named parameters (2 points)
#
# Read first: [12.2 ZeRO-3 and FSDP](../notebooks/12_zero_fsdp/02_fsdp.ipynb), sections 2 and 8. Before a unit
# runs, every rank all-gathers the unit's pieces (12.4) from all ranks and cuts the flat buffer back into the
# unit's parameters. A checkpoint consolidated from per-rank files (DeepSpeed's `zero_to_fp32.py`, minillm's
# `consolidate_sharded`) does the same, unit by unit.
#
# Write `gather_unit(shards, names, shapes)`: `shards[r]` is rank $r$'s piece (a 1-D tensor, all pieces of the
# same length); `names[k]` and `shapes[k]` are the name and shape of the unit's parameter $k$, in the order they
# were flattened. Return a dict `{names[k]: tensor of shape shapes[k]}` holding each parameter's values (the
# padding at the end is dropped).
#
# Worked example: `shards = [tensor([1., 2., 3.]), tensor([4., 5., 6.]), tensor([7., 0., 0.])]`,
# `names = ["weight", "bias"]`, `shapes = [(2, 2), (3,)]` gives
# `{"weight": tensor([[1., 2.], [3., 4.]]), "bias": tensor([5., 6., 7.])}`.

# %%
def gather_unit(shards: list[torch.Tensor], names: list[str], shapes: list[tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The unit's parameters, by name, from the ranks' pieces."""
    # BEGIN SOLUTION 12.5: return the dict of the unit's parameters by name, from the ranks' pieces
    flat = torch.cat(shards)  # (P_u,): rank 0's piece first
    params, offset = {}, 0
    for name, shape in zip(names, shapes, strict=True):
        size = 1
        for d in shape:
            size *= d
        params[name] = flat[offset:offset + size].reshape(shape)  # this parameter's slice, row-major
        offset += size
    return params
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Join the pieces in rank order into one flat tensor; then walk the parameters in order with a running offset:
# each parameter's slice starts where the previous one ended.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `flat = torch.cat(shards)`; for each `(name, shape)`: `size = math.prod(shape)`,
# `out[name] = flat[offset:offset + size].reshape(shape)`, `offset += size`. The padding is whatever is left after
# the last parameter.
#
# </details>

# %%
check("12.5", gather_unit)


# %% [markdown]
# ## 12.6 Reduce-scatter a unit's gradient (1 point)
#
# Read first: [12.2 ZeRO-3 and FSDP](../notebooks/12_zero_fsdp/02_fsdp.ipynb), sections 2 and 3. After a unit's
# backward, rank $r$ holds the gradient of the unit's whole flat buffer computed from its own rows of the batch.
# The reduce-scatter leaves rank $r$ with piece $r$ (the same contiguous pieces as in 12.4) of the **mean** of
# these gradients over the $n$ ranks: the gradient of its own shard for the whole batch, as DDP would average it.
#
# Write `reduce_scatter_grad(grads)`: `grads[r]` is rank $r$'s full flat gradient (1-D tensors of the same
# length, a multiple of `n = len(grads)`). Return the list of the $n$ ranks' pieces, as new tensors; leave
# `grads` unchanged.
#
# Worked example: `grads = [tensor([1., 2., 3., 4.]), tensor([3., 4., 5., 6.])]` gives
# `[tensor([2., 3.]), tensor([4., 5.])]`.

# %%
def reduce_scatter_grad(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each rank's piece of the mean of the ranks' gradients."""
    # BEGIN SOLUTION 12.6: return the list of each rank's piece of the averaged gradient
    n = len(grads)
    mean = torch.stack(grads).mean(0)  # (P_u,): what an all-reduce would leave everywhere
    return [piece.clone() for piece in mean.chunk(n)]  # rank r keeps only piece r
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Two steps: reduce (the element-wise mean over ranks), then scatter (cut it into `n` contiguous pieces, one
# per rank).
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `torch.stack(grads).mean(0).chunk(n)`, each piece cloned. In the worked example the mean is
# `[2., 3., 4., 5.]`.
#
# </details>

# %%
check("12.6", reduce_scatter_grad)
