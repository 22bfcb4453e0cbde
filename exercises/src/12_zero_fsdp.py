# Solution source of exercises/12_zero_fsdp.ipynb (percent format: "# %%" starts a code cell,
# "# %% [markdown]" a markdown cell). Regenerate the learner notebook with
#     .venv/bin/python tools/build_exercises.py
# then execute it with  .venv/bin/python tools/execute_notebooks.py exercises/12_zero_fsdp.ipynb
# Code between "# BEGIN SOLUTION <id>: <task>" and "# END SOLUTION" becomes
# raise NotImplementedError("Exercise <id>: <task>") in the learner notebook.

# %% [markdown]
# # Exercises 12: ZeRO and sharding
#
# Nine functions, all run in one process (no process group needed; ranks are simulated as lists): the bytes of model
# states per GPU at each ZeRO stage, the elements each rank owns in a padded flat buffer, ZeRO-2's reduce-scatter of
# the ranks' gradients and one ZeRO-1 step (12.1-12.4); cutting a ZeRO-3 unit into padded flat shards, gathering it
# back into named parameters and reduce-scattering its gradient (12.5-12.7); ZeRO-Offload's bytes on the GPU, on the
# CPU and over PCIe, and DeepSpeed's batch identity (12.8-12.9).
#
# Each exercise is a function whose body is a stub raising `NotImplementedError`. Replace the `raise`
# line with your code and run the check cell below it: it compares your function with the `minillm`
# reference on the worked examples shown here and on random inputs, and prints ✅ (passed), ❌ with a
# hint (naming the mistake when it recognises a common one) or ⬜ (not attempted). A check never raises.
# For a score report run `minillm grade exercises/12_zero_fsdp.ipynb`; see
# [How grading works](../book/grading.md).
#
# Read first: [12.1 ZeRO-1 and ZeRO-2](../notebooks/12_zero_fsdp/01_zero.ipynb) (12.1-12.4),
# [12.2 ZeRO-3 and FSDP](../notebooks/12_zero_fsdp/02_fsdp.ipynb) (12.5-12.7) and
# [12.3 ZeRO-Offload and DeepSpeed](../notebooks/12_zero_fsdp/03_offload_deepspeed.ipynb) (12.8-12.9).

# %%
import math  # noqa: F401 (the hints of 12.5 and 12.6 use it)

import torch

from minillm.grading import check

# %% [markdown]
# ## 12.1 Bytes per GPU at each ZeRO stage (1 point)
#
# Read first: [12.1 ZeRO-1 and ZeRO-2](../notebooks/12_zero_fsdp/01_zero.ipynb), sections 1-2. A model of
# $\Psi$ parameters is trained with Adam in mixed precision on $n$ data-parallel GPUs: per parameter, a 2-byte
# (fp16) weight, a 2-byte gradient, and `k` bytes of optimizer states (fp32 master weight, Adam's $m$ and $v$:
# `k = 12`). ZeRO stage 0 is plain data parallelism (every GPU holds everything); stage 1 partitions the optimizer
# states over the $n$ GPUs, stage 2 the gradients as well, stage 3 the weights as well. A partitioned state is
# split evenly: each GPU holds exactly $1/n$ of it (no rounding, no padding).
#
# Write `zero_bytes_per_gpu(psi, n, stage, k)`: the bytes of model states (weights, gradients, optimizer states;
# no activations) that one GPU holds, as a number. Worked examples: `psi = 7.5e9`, `n = 64`, `k = 12` gives
# `120e9` at stage 0 and `31.40625e9` at stage 1.

# %%
def zero_bytes_per_gpu(psi: float, n: int, stage: int, k: float = 12) -> float:
    """Bytes of model states per GPU for ZeRO `stage` (0 = data parallel) on `n` GPUs."""
    # BEGIN SOLUTION 12.1: return the bytes of model states one GPU holds at this stage
    weights = 2 * psi / (n if stage >= 3 else 1)  # fp16 weights: partitioned from stage 3
    grads = 2 * psi / (n if stage >= 2 else 1)  # fp16 gradients: from stage 2
    states = k * psi / (n if stage >= 1 else 1)  # master + m + v: from stage 1
    return weights + grads + states
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Three terms: weights, gradients, optimizer states. For each, ask from which stage on it is split over the GPUs.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Optimizer states from stage 1, gradients from stage 2, weights from stage 3:
# $2\Psi / n^{[s \ge 3]} + 2\Psi / n^{[s \ge 2]} + k\Psi / n^{[s \ge 1]}$. At stage 1 in the worked example:
# $4 \times 7.5\text{e}9 + 12 \times 7.5\text{e}9 / 64$.
#
# </details>

# %%
check("12.1", zero_bytes_per_gpu)


# %% [markdown]
# ## 12.2 The elements each rank owns (1 point)
#
# Read first: [12.1 ZeRO-1 and ZeRO-2](../notebooks/12_zero_fsdp/01_zero.ipynb), sections 3 and 5. ZeRO flattens
# the `numel` parameters into one vector, appends zeros (padding) until its length is a multiple of the number of
# ranks `n`, and cuts it into `n` **equal** consecutive shards: rank 0 owns the first, rank 1 the next, and so on.
# A shard may therefore end in padding, or be all padding when `numel` is small.
#
# Write `shard_bounds(numel, n)`: a list of `n` pairs `(start, stop)`, one per rank, such that rank `r` owns the
# real parameters `flat[start:stop]` (the padding is not part of the slice; a rank that owns no real parameter
# gets the empty slice `(numel, numel)`). Worked examples: `shard_bounds(10, 4)` is
# `[(0, 3), (3, 6), (6, 9), (9, 10)]` (shards of 3, two padding zeros at the end of the last one);
# `shard_bounds(2, 4)` is `[(0, 1), (1, 2), (2, 2), (2, 2)]`.

# %%
def shard_bounds(numel: int, n: int) -> list[tuple[int, int]]:
    """(start, stop) of the real parameters each of the n ranks owns in the padded flat buffer."""
    # BEGIN SOLUTION 12.2: return one (start, stop) pair per rank
    size = -(-numel // n)  # the shard size: numel / n rounded up (the buffer holds n * size elements)
    return [(min(r * size, numel), min((r + 1) * size, numel)) for r in range(n)]
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# First the size of one shard: the padded length divided by `n`. Then rank `r`'s shard covers
# `[r * size, (r + 1) * size)` of the padded buffer; keep only what lies below `numel`.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `size = math.ceil(numel / n)` (or `-(-numel // n)`); the pair is `(min(r * size, numel), min((r + 1) * size,
# numel))`.
#
# </details>

# %%
check("12.2", shard_bounds)


# %% [markdown]
# ## 12.3 ZeRO-2's reduce-scatter of the ranks' gradients (2 points)
#
# Read first: [12.1 ZeRO-1 and ZeRO-2](../notebooks/12_zero_fsdp/01_zero.ipynb), section 4. After backward, each
# of the $n$ ranks holds the flat gradient of its own rows of the batch (a 1-D tensor of `numel` elements, the same
# length on every rank). In ZeRO-2 a reduce-scatter then leaves each rank only **its own shard of the mean
# gradient** (the mean over the ranks), which is all its optimizer step needs; the shards are those of 12.2: the
# flat vector padded with zeros to a multiple of $n$ and cut into $n$ equal consecutive shards, rank $r$ owning
# shard $r$.
#
# Write `reduce_scatter_mean(rank_grads)`: `rank_grads[r]` is rank `r`'s flat gradient. Return a new list of $n$
# new 1-D tensors, entry `r` being what rank `r` holds after the reduce-scatter: its whole shard, padding
# included (so every entry has the same length; padding elements are 0). Each entry is a separate tensor (a rank
# keeps only its own shard, so no two entries may share memory). Leave the inputs unchanged. Worked
# example with $n = 2$: `rank_grads = [tensor([1., 2., 3.]), tensor([3., 4., 5.])]` gives
# `[tensor([2., 3.]), tensor([4., 0.])]`.

# %%
def reduce_scatter_mean(rank_grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each rank's shard of the mean flat gradient (padded), as ZeRO-2's reduce-scatter leaves it."""
    # BEGIN SOLUTION 12.3: return the shard of the averaged gradient that each rank keeps
    n, numel = len(rank_grads), rank_grads[0].numel()
    size = -(-numel // n)  # shard size, as in 12.2
    mean = torch.zeros(n * size, dtype=rank_grads[0].dtype)  # [n * size]: the padding stays 0
    mean[:numel] = torch.stack(rank_grads).sum(dim=0) / n  # what the reduction computes
    return [mean[r * size:(r + 1) * size].clone() for r in range(n)]  # the scatter: rank r gets shard r only
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Two steps: reduce (combine the $n$ gradients element by element into the mean), then scatter (cut the padded
# result into $n$ equal shards and give shard $r$ to rank $r$).
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `size = -(-numel // n)`; build a zero tensor of `n * size` elements, write `torch.stack(rank_grads).sum(0) / n`
# into its first `numel` elements, and return `[mean[r * size:(r + 1) * size].clone() for r in range(n)]`.
#
# </details>

# %%
check("12.3", reduce_scatter_mean)


# %% [markdown]
# ## 12.4 One ZeRO-1 step of SGD with momentum (2 points)
#
# Read first: [12.1 ZeRO-1 and ZeRO-2](../notebooks/12_zero_fsdp/01_zero.ipynb), section 3. The optimizer here is
# SGD with momentum as `torch.optim.SGD(params, lr=lr, momentum=beta)` runs it (no dampening, no weight decay, not
# Nesterov): each element keeps a momentum buffer, which a step first updates with the gradient and then uses to
# move the parameter.
#
# $n$ ranks train the same model with ZeRO-1. The flat parameters (a 1-D tensor of `numel` elements, identical on
# every rank) are padded and cut into $n$ equal shards as in 12.2; rank $r$ keeps the momentum buffer of its shard
# only (its padding elements are 0). One step: the ranks' local gradients are averaged over the ranks, each rank
# updates its momentum shard and its shard of the parameters, and the updated shards are collected so that every
# rank holds the whole new parameter vector again.
#
# Write `zero1_sgd_step(params, rank_grads, momenta, lr, beta)`: `params` is the flat parameter vector,
# `rank_grads[r]` rank `r`'s local flat gradient (`numel` elements), `momenta[r]` rank `r`'s momentum shard
# (a 1-D tensor of the shard's length, padding included). Return a pair: the new flat parameters (`numel`
# elements, what every rank holds after the step) and the list of the $n$ ranks' new momentum shards, all new
# tensors (leave the inputs unchanged). Worked example with $n = 2$: `params = tensor([1., 1., 1.])`,
# `rank_grads = [tensor([1., 2., 3.]), tensor([3., 4., 5.])]`, `momenta = [tensor([1., 1.]), tensor([1., 0.])]`,
# `lr = 0.5`, `beta = 0.5` gives `(tensor([-0.25, -0.75, -1.25]), [tensor([2.5, 3.5]), tensor([4.5, 0.])])`.

# %%
def zero1_sgd_step(params: torch.Tensor, rank_grads: list[torch.Tensor], momenta: list[torch.Tensor], lr: float,
                   beta: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The parameters every rank holds and each rank's momentum shard after one ZeRO-1 step of SGD with momentum."""
    # BEGIN SOLUTION 12.4: return the new flat parameters and the ranks' new momentum shards
    n, numel = len(rank_grads), params.numel()
    size = -(-numel // n)  # shard size, as in 12.2
    grad = torch.zeros(n * size, dtype=params.dtype)
    grad[:numel] = torch.stack(rank_grads).sum(dim=0) / n  # the all-reduce (then / n): every rank's mean gradient
    flat = torch.cat([params, params.new_zeros(n * size - numel)])  # [n * size]: padded parameters
    new_shards, new_momenta = [], []
    for r in range(n):  # what rank r does, on its shard only
        lo, hi = r * size, (r + 1) * size
        buf = beta * momenta[r] + grad[lo:hi]  # torch's SGD: buf = beta * buf + g
        new_shards.append(flat[lo:hi] - lr * buf)  # p = p - lr * buf
        new_momenta.append(buf)
    return torch.cat(new_shards)[:numel], new_momenta  # the all-gather: every rank gets every updated shard
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Do it as the ranks would: first the gradient every rank sees after the all-reduce, then a loop over the ranks in
# which rank $r$ touches only elements $[rS, (r+1)S)$ of the padded vectors, then put the updated shards together.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# With `size = -(-numel // n)` and the gradient `g` = the mean of `rank_grads`, zero-padded to `n * size`: rank
# `r`'s new buffer is `beta * momenta[r] + g[r * size:(r + 1) * size]` and its new shard `p_shard - lr * buf`; the
# new parameters are `torch.cat(new_shards)[:numel]`.
#
# </details>

# %%
check("12.4", zero1_sgd_step)

# %% [markdown]
# ## 12.5 Cut a unit into padded flat shards (2 points)
#
# Read first: [12.2 ZeRO-3 and FSDP](../notebooks/12_zero_fsdp/02_fsdp.ipynb), section 2. ZeRO-3 and FSDP shard
# a model **unit** by unit (a unit is, e.g., one transformer block). A unit's parameters are flattened, each in
# its own row-major order (as `reshape(-1)` does) and one after the other in the order given, into one flat
# buffer of $\Psi_u$ numbers. The buffer is padded with zeros **at the end** to $P_u = n\lceil \Psi_u / n\rceil$
# elements (no padding when $\Psi_u$ is already a multiple of $n$) and cut into $n$ contiguous pieces of
# $P_u / n$ elements: rank $r$ keeps piece $r$.
#
# Write `shard_unit(params, n)`: `params` is the unit's list of tensors, `n >= 1` the number of ranks. Return the
# list of the $n$ pieces (1-D tensors, rank 0's first), as new, separate tensors (a rank keeps only its own piece,
# so no two pieces may share memory); leave `params` unchanged.
#
# Worked example: `params = [tensor([[1., 2.], [3., 4.]]), tensor([5., 6., 7.])]`, `n = 3` gives
# `[tensor([1., 2., 3.]), tensor([4., 5., 6.]), tensor([7., 0., 0.])]`.

# %%
def shard_unit(params: list[torch.Tensor], n: int) -> list[torch.Tensor]:
    """The n ranks' pieces of the unit's zero-padded flat buffer."""
    # BEGIN SOLUTION 12.5: return the list of the n ranks' pieces of the padded flat unit
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
check("12.5", shard_unit)


# %% [markdown]
# ## 12.6 Gather a unit back into named parameters (2 points)
#
# Read first: [12.2 ZeRO-3 and FSDP](../notebooks/12_zero_fsdp/02_fsdp.ipynb), sections 2 and 8. Before a unit
# runs, every rank all-gathers the unit's pieces (12.5) from all ranks and cuts the flat buffer back into the
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
    # BEGIN SOLUTION 12.6: return the dict of the unit's parameters by name, from the ranks' pieces
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
check("12.6", gather_unit)


# %% [markdown]
# ## 12.7 Reduce-scatter a unit's gradient (1 point)
#
# Read first: [12.2 ZeRO-3 and FSDP](../notebooks/12_zero_fsdp/02_fsdp.ipynb), sections 2 and 3. After a unit's
# backward, rank $r$ holds the gradient of the unit's whole flat buffer computed from its own rows of the batch.
# The reduce-scatter leaves rank $r$ with piece $r$ (the same contiguous pieces as in 12.5) of the **mean** of
# these gradients over the $n$ ranks: the gradient of its own shard for the whole batch, as DDP would average it.
#
# Write `reduce_scatter_grad(grads)`: `grads[r]` is rank $r$'s full flat gradient (1-D tensors of the same
# length, a multiple of `n = len(grads)`). Return the list of the $n$ ranks' pieces, as new, separate tensors (no
# two pieces may share memory); leave `grads` unchanged.
#
# Worked example: `grads = [tensor([1., 2., 3., 4.]), tensor([3., 4., 5., 6.])]` gives
# `[tensor([2., 3.]), tensor([4., 5.])]`.

# %%
def reduce_scatter_grad(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each rank's piece of the mean of the ranks' gradients."""
    # BEGIN SOLUTION 12.7: return the list of each rank's piece of the averaged gradient
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
check("12.7", reduce_scatter_grad)

# %% [markdown]
# ## 12.8 ZeRO-Offload: bytes on the GPU, on the CPU and over PCIe (1 point)
#
# Read first: [12.3 ZeRO-Offload and DeepSpeed](../notebooks/12_zero_fsdp/03_offload_deepspeed.ipynb), sections
# 1, 2 and 4. One GPU trains a model of $\Psi$ parameters with Adam in mixed precision under ZeRO-Offload. The GPU
# keeps what forward and backward need: the low-precision weights (`weight_bytes` per parameter) and the gradients
# backward produces (`grad_bytes` per parameter; count them all, as if every gradient waited on the GPU for the
# step: the upper bound, section 4's `bucket_numel=inf`). Everything the optimizer needs lives on the CPU: Adam's fp32
# master weights, $m$ and $v$, and the gradients as the CPU stores them (`host_grad_bytes` per parameter). Each
# step the gradients go from the GPU to the CPU as the GPU made them, and the updated weights come back in the
# GPU's format.
#
# Write `offload_bytes(psi, weight_bytes, grad_bytes, host_grad_bytes)`: a tuple of three numbers, the bytes of
# model states on the GPU, the bytes of model states on the CPU, and the bytes that cross PCIe in one step (both
# directions together). No activations, no buffers. Worked examples: `psi = 10**10` with the defaults gives
# `(40e9, 160e9, 40e9)`; with `host_grad_bytes = 2` it gives `(40e9, 140e9, 40e9)`.

# %%
def offload_bytes(psi: int, weight_bytes: int = 2, grad_bytes: int = 2,
                  host_grad_bytes: int = 4) -> tuple[float, float, float]:
    """(GPU bytes, CPU bytes, PCIe bytes per step) of ZeRO-Offload for psi parameters."""
    # BEGIN SOLUTION 12.8: return the GPU bytes, the CPU bytes and the PCIe bytes of one step
    gpu = (weight_bytes + grad_bytes) * psi  # low-precision weights + the gradients backward makes
    cpu = (4 + 4 + 4 + host_grad_bytes) * psi  # fp32 master, Adam m, Adam v + the gradients received
    pcie = (grad_bytes + weight_bytes) * psi  # gradients down, updated weights up, in the GPU's format
    return gpu, cpu, pcie
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# List the tensors by where they live: two kinds on the GPU, four on the CPU. Then follow one step: what leaves
# the GPU, what comes back, and in which format each travels.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# GPU: weights and gradients. CPU: three fp32 tensors of Adam (4 bytes each) plus the received gradients. PCIe:
# the gradients down in `grad_bytes`, the weights up in `weight_bytes`. With the defaults: $4\Psi$, $16\Psi$,
# $4\Psi$.
#
# </details>

# %%
check("12.8", offload_bytes)


# %% [markdown]
# ## 12.9 DeepSpeed's batch identity (1 point)
#
# Read first: [12.3 ZeRO-Offload and DeepSpeed](../notebooks/12_zero_fsdp/03_offload_deepspeed.ipynb), section 6.
# A DeepSpeed config names three batch quantities: `train_batch_size` (rows per optimizer step, all GPUs
# together), `train_micro_batch_size_per_gpu` (rows one GPU runs in one forward and backward: `micro` below) and
# `gradient_accumulation_steps` (`accum`). With `world_size` GPUs they must satisfy
# train_batch_size = micro × accum × world_size. A config may leave some of them out (`None`):
#
# - all three given: they must satisfy the identity;
# - one of the three missing: it is inferred, and must come out as a whole number;
# - `accum` missing together with one of the two batch sizes: `accum` is 1 and the other batch size is inferred;
# - both batch sizes missing: nothing can be inferred.
#
# Write `ds_batch(train_batch_size, micro, accum, world_size)`: the completed tuple
# `(train_batch_size, micro, accum)` of ints, or `None` when the given values admit no such tuple. Worked
# examples with `world_size = 4`: `ds_batch(32, 4, None, 4)` is `(32, 4, 2)`; `ds_batch(32, 4, 3, 4)` is `None`;
# `ds_batch(30, 4, None, 4)` is `None`; `ds_batch(8, None, None, 2)` is `(8, 4, 1)`.

# %%
def ds_batch(train_batch_size: int | None, micro: int | None, accum: int | None,
             world_size: int) -> tuple[int, int, int] | None:
    """(train_batch_size, micro, accum) completed as DeepSpeed does, or None if impossible."""
    # BEGIN SOLUTION 12.9: return the completed triple, or None when no triple fits
    if train_batch_size is None and micro is None:
        return None
    if train_batch_size is None:
        accum = accum or 1
        return micro * accum * world_size, micro, accum
    if micro is None:
        accum = accum or 1
        micro, rest = divmod(train_batch_size, accum * world_size)
        return (train_batch_size, micro, accum) if rest == 0 else None
    if accum is None:
        accum, rest = divmod(train_batch_size, micro * world_size)
        return (train_batch_size, micro, accum) if rest == 0 else None
    return (train_batch_size, micro, accum) if train_batch_size == micro * accum * world_size else None
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Treat the cases in the order of the list above. Division gives the missing value; the remainder says whether it
# is a whole number.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `micro = train_batch_size / (accum × world_size)` and `accum = train_batch_size / (micro × world_size)`, each
# only when the remainder is 0; when `accum` is missing with a batch size, set it to 1 first.
#
# </details>

# %%
check("12.9", ds_batch)
