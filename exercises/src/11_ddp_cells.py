# Exercise cells of chapter 11, section 11.3 (DDP), to be joined into exercises/src/11_*.py by the coordinator
# (percent format: "# %%" starts a code cell, "# %% [markdown]" a markdown cell). Checkers:
# minillm/grading/ch11_ddp.py (DDP_EXERCISES); ids 11.3 and 11.4 may be renumbered when joined.

# %%
import torch

from minillm.grading import check

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
# after DDP's synchronisation, exactly as DDP computes it, where a rank without a gradient counts as zeros, or
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
