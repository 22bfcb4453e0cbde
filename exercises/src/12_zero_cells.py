# Exercise cells of chapter 12, section 12.1 (ZeRO-1 and ZeRO-2), to be joined into exercises/src/12_*.py by the
# coordinator (percent format: "# %%" starts a code cell, "# %% [markdown]" a markdown cell). Checkers:
# minillm/grading/ch12_zero.py (ZERO_EXERCISES); ids 12.1-12.4 may be renumbered when joined.

# %%
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
# included (so every entry has the same length; padding elements are 0). Leave the inputs unchanged. Worked
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
