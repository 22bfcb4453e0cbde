# Solution source of exercises/11_data_parallel.ipynb (percent format: "# %%" starts a code cell,
# "# %% [markdown]" a markdown cell). Regenerate the learner notebook with
#     .venv/bin/python tools/build_exercises.py
# then execute it with  .venv/bin/python tools/execute_notebooks.py exercises/11_data_parallel.ipynb
# Code between "# BEGIN SOLUTION <id>: <task>" and "# END SOLUTION" becomes
# raise NotImplementedError("Exercise <id>: <task>") in the learner notebook.

# %% [markdown]
# # Exercises 11: Data parallelism
#
# Four functions, all run in one process (no process group needed): the reduce-scatter half of ring all-reduce,
# simulated on a list of per-rank buffers; the α–β time of a ring all-reduce; DDP's assignment of parameters to
# gradient buckets; and the averaging of the ranks' gradients that makes N data-parallel ranks take the whole
# batch's step.
#
# Each exercise is a function whose body is a stub raising `NotImplementedError`. Replace the `raise`
# line with your code and run the check cell below it: it compares your function with the `minillm`
# reference on the worked examples shown here and on random inputs, and prints ✅ (passed), ❌ with a
# hint (naming the mistake when it recognises a common one) or ⬜ (not attempted). A check never raises.
# For a score report run `minillm grade exercises/11_data_parallel.ipynb`; see
# [How grading works](../book/grading.md).
#
# Read first: [11.2 Collectives from point-to-point](../notebooks/11_data_parallel/02_collectives.ipynb) (11.1,
# 11.2) and [11.3 DDP from scratch](../notebooks/11_data_parallel/03_ddp.ipynb) (11.3, 11.4).

# %%
import torch

from minillm.grading import check

# %% [markdown]
# ## 11.1 The ring reduce-scatter, simulated (2 points)
#
# Read first: [11.2 Collectives from point-to-point](../notebooks/11_data_parallel/02_collectives.ipynb).
# Ring all-reduce starts with a **reduce-scatter**. $N$ ranks sit in a ring: rank $r$ sends only to rank
# $(r + 1) \bmod N$ and receives only from rank $(r - 1) \bmod N$. Each rank's buffer (a 1-D tensor, the same
# length on every rank) is cut into $N$ chunks the way `torch.tensor_split(buffer, N)` cuts it: when the
# length is not a multiple of $N$, the first chunks are one element longer (a chunk may be empty).
#
# The reduce-scatter runs in $N - 1$ steps. At each step every rank sends one chunk of its buffer to its
# right neighbour, all at the same time, and the neighbour **adds** it to its own copy of that chunk. At
# step 0 rank $r$ sends its chunk $r$. When the steps are done, rank $r$ holds in its chunk $(r + 1) \bmod N$
# the sum of that chunk over all $N$ ranks (the other chunks hold partial sums, whatever the schedule left).
#
# Write `ring_reduce_scatter_sim(buffers)`: `buffers[r]` is rank $r$'s buffer; return a new list of $N$ new
# tensors, the buffers after the reduce-scatter (leave the inputs unchanged). Worked example with $N = 3$,
# `buffers = [[1, 1, 1], [10, 10, 10], [100, 100, 100]]` (one element per chunk): after step 0 rank 1's chunk
# 0 is 11; the answer is `[[1, 111, 101], [11, 10, 111], [111, 110, 100]]`.

# %%
def ring_reduce_scatter_sim(buffers: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each rank's buffer after the ring reduce-scatter (new tensors; the inputs are left as they were)."""
    # BEGIN SOLUTION 11.1: return every rank's buffer after the first phase of ring all-reduce
    n = len(buffers)
    bufs = [b.clone() for b in buffers]
    chunks = [torch.tensor_split(b, n) for b in bufs]  # views into bufs: chunks[r][c] is rank r's chunk c
    for s in range(n - 1):
        sent = [chunks[r][(r - s) % n].clone() for r in range(n)]  # what every rank sends at this step
        for r in range(n):
            chunks[(r + 1) % n][(r - s) % n].add_(sent[r])  # the right neighbour adds it to its copy, in place
    return bufs
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Follow one chunk: it starts at one rank, then travels one hop to the right per step, picking up the
# receiving rank's copy at each hop. After $N - 1$ hops it has visited every rank. Where must chunk $c$ start
# for its last hop to end at rank $c - 1$?
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# A rank forwards, at step $s + 1$, the chunk it added to at step $s$: at step $s$ rank $r$ sends chunk
# $(r - s) \bmod N$ to rank $(r + 1) \bmod N$. `torch.tensor_split(buf, n)` returns views, so
# `chunks[(r + 1) % n][(r - s) % n].add_(sent)` writes into the buffer itself.
#
# </details>

# %%
check("11.1", ring_reduce_scatter_sim)


# %% [markdown]
# ## 11.2 How long does a ring all-reduce take? (1 point)
#
# Read first: [11.2 Collectives from point-to-point](../notebooks/11_data_parallel/02_collectives.ipynb).
# The α–β model prices a message of $m$ bytes at $\alpha + m\beta$ seconds ($\alpha$: latency,
# $\beta$: seconds per byte). In a step of a ring algorithm every rank sends one message and receives one
# at the same time, so a step costs one message's time; the steps run one after another.
#
# Write `ring_allreduce_time(nbytes, n, alpha, beta)`: the time in seconds of a ring all-reduce of a
# message of `nbytes` bytes over `n` ranks (the whole algorithm, reduce-scatter and all-gather), with every
# chunk taken as exactly `nbytes / n` bytes (no rounding). One rank has nothing to exchange.
# Worked example: `nbytes = 4e6`, `n = 4`, `alpha = 1e-5`, `beta = 1e-9` gives `0.00606` seconds.

# %%
def ring_allreduce_time(nbytes: float, n: int, alpha: float, beta: float) -> float:
    """Seconds of a ring all-reduce of `nbytes` bytes over `n` ranks in the α–β model."""
    # BEGIN SOLUTION 11.2: return the α–β time of a ring all-reduce
    steps = 2 * (n - 1)  # n - 1 steps of reduce-scatter, n - 1 of all-gather
    return steps * (alpha + nbytes / n * beta)  # each step: one chunk of nbytes / n per rank, in parallel
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Count the steps of each phase, and the size of the one message each rank sends in a step.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Reduce-scatter and all-gather take $N - 1$ steps each, and every step sends one chunk of `nbytes / n`:
# $2(N - 1)\,(\alpha + \beta \cdot \text{nbytes} / N)$. In the worked example: $6 \times (10^{-5} + 10^{-3})$.
#
# </details>

# %%
check("11.2", ring_allreduce_time)


# %% [markdown]
# ## 11.3 DDP's gradient buckets (2 points)
#
# Read first: [11.3 DDP from scratch](../notebooks/11_data_parallel/03_ddp.ipynb), section 4. DDP does not
# all-reduce each gradient on its own: it groups the parameters into **buckets** of about `cap` bytes and
# all-reduces one bucket at a time, as soon as backward has produced every gradient in it.
#
# Write `ddp_buckets(sizes, cap)`: `sizes[i]` is the size in bytes of parameter `i`'s gradient, parameters in
# the order the model registered them; `cap >= 1` is the bucket size in bytes. Return the list of buckets, each a
# list of parameter indices, following these rules:
#
# * visit the parameters from the **last** registered to the first (backward produces gradients in about that
#   order);
# * each visited parameter joins the current bucket; as soon as the current bucket's total size **reaches or
#   passes** `cap`, that bucket is complete and the next parameter starts a new one (so a bucket may end above
#   the cap, by its last parameter);
# * the bucket still open at the end, if it holds any parameter, is the last bucket;
# * the buckets are listed in the order they were completed (the order DDP launches them). Inside a bucket the
#   order of the indices is free.
#
# Worked example: `sizes = [12, 12, 12, 4, 20]`, `cap = 20` gives `[[4], [3, 2, 1], [0]]`: parameter 4 alone
# reaches 20; 3, 2 and 1 together make 28; parameter 0 is left over. No parameters give `[]`.

# %%
def ddp_buckets(sizes: list[int], cap: int) -> list[list[int]]:
    """The parameters' buckets, in launch order, under DDP's rules."""
    # BEGIN SOLUTION 11.3: return the list of buckets (lists of parameter indices) in the order DDP launches them
    buckets, current, total = [], [], 0
    for i in reversed(range(len(sizes))):  # the order backward produces the gradients
        current.append(i)
        total += sizes[i]
        if total >= cap:  # full: launch it, start the next
            buckets.append(current)
            current, total = [], 0
    if current:
        buckets.append(current)
    return buckets
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# One loop over the indices, backwards, with two running values: the indices of the bucket being filled and its
# size so far. Check the size after adding each parameter, not before.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `for i in reversed(range(len(sizes)))`: append `i`, add `sizes[i]`; if the total is `>= cap`, append the bucket
# to the result and reset both. After the loop, append the open bucket if it is not empty.
#
# </details>

# %%
check("11.3", ddp_buckets)


# %% [markdown]
# ## 11.4 Averaging the ranks' gradients as DDP does (2 points)
#
# Read first: [11.3 DDP from scratch](../notebooks/11_data_parallel/03_ddp.ipynb), sections 1 and 8. After
# backward, each of the $N$ ranks holds the gradients of its own shard of the batch; DDP's all-reduce leaves every
# rank with the same gradients, equal to those of the whole batch when the shards have equal sizes. Some
# parameters may get no gradient on some ranks (a branch of the model that a rank's data did not use).
#
# Write `ddp_average(rank_grads)`: `rank_grads[r][i]` is rank `r`'s gradient of parameter `i`, a tensor, or `None`
# when parameter `i` got no gradient on rank `r` (every rank lists the same parameters, and a parameter's tensors
# have the same shape on every rank). Return a list with one entry per parameter: the gradient every rank holds
# after DDP's synchronisation (up to floating-point rounding), where a rank without a gradient counts as zeros, or
# `None` when no rank had a gradient for that parameter. Leave the inputs unchanged.
#
# Worked example with $N = 2$ ranks and 3 parameters:
# `rank_grads = [[tensor([1., 2.]), None, None], [tensor([3., 4.]), tensor([6.]), None]]` gives
# `[tensor([2., 3.]), tensor([3.]), None]`.

# %%
def ddp_average(rank_grads: list[list[torch.Tensor | None]]) -> list[torch.Tensor | None]:
    """Every rank's gradient of each parameter after DDP's all-reduce."""
    # BEGIN SOLUTION 11.4: return each parameter's gradient after DDP's synchronisation (or None)
    n = len(rank_grads)
    out = []
    for i in range(len(rank_grads[0])):
        present = [grads[i] for grads in rank_grads if grads[i] is not None]
        out.append(None if not present else torch.stack(present).sum(dim=0) / n)  # the missing ones add zeros
    return out
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# All-reduce sums; DDP then divides by the number of ranks. Which number: the ranks that had a gradient, or all of
# them? Section 1 of the notebook says which one gives the whole batch's gradient.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# For each parameter `i`, collect `grads[i]` over the ranks, skipping `None`. If nothing is left, the answer is
# `None`; otherwise it is their sum divided by `len(rank_grads)`, all ranks.
#
# </details>

# %%
check("11.4", ddp_average)
