# Exercise cells of chapter 11, section 11.2 (collectives), to be joined into exercises/src/11_*.py by the
# coordinator (percent format: "# %%" starts a code cell, "# %% [markdown]" a markdown cell). Checkers:
# minillm/grading/ch11_coll.py (COLL_EXERCISES); ids 11.1 and 11.2 may be renumbered when joined.

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
