# Exercise cells of chapter 13, section 13.2 (tensor parallelism), to be joined into exercises/src/13_*.py by the
# coordinator (percent format: "# %%" starts a code cell, "# %% [markdown]" a markdown cell). Checkers:
# minillm/grading/ch13_tp.py (TP_EXERCISES); ids 13.5, 13.6 and 13.7 may be renumbered when joined.

# %%
import torch
import torch.nn.functional as F

from minillm.grading import check

# %% [markdown]
# ## 13.5 The Megatron MLP, rank by rank (2 points)
#
# Read first: [13.2 Tensor parallelism](../notebooks/13_parallelism/02_tensor_parallel.ipynb).
# The MLP $Y = \mathrm{GeLU}(xA)\,B$ ($x$: $(b, h)$, $A$: $(h, f)$, $B$: $(f, h)$, no biases) runs on $N$ ranks the
# Megatron way: $A$ is split **by columns** and $B$ **by rows**, so rank $r$ holds `a_shards[r]` $= A_r$ $(h, f/N)$
# and `b_shards[r]` $= B_r$ $(f/N, h)$, the rows of $B$ that match its columns of $A$. Every rank holds all of $x$.
# Each rank computes its own full-size $(b, h)$ output from what it holds, with no communication; an all-reduce
# (Megatron's $g$) would then sum the $N$ outputs into $Y$.
#
# Write `megatron_mlp_partials(x, a_shards, b_shards)`: return the list of the $N$ ranks' outputs **before** that
# all-reduce (new tensors; leave the inputs as they were). The GeLU is the exact one, `F.gelu`'s default.
# Worked example, $N = 2$: `x = [[1, -1]]`, `A = [[1, 0, 2, -1], [0, 1, 1, 1]]` (rank 0 holds columns 0-1, rank 1
# columns 2-3), `B = [[1, 0], [0, 1], [1, 1], [2, -1]]` (rank 0 rows 0-1, rank 1 rows 2-3). Then $xA = [1, -1, 1, -2]$,
# and the answer is `[[[0.8413, -0.1587]], [[0.7503, 0.8868]]]` (to 4 decimals), which sum to $Y = [1.5917, 0.7282]$.

# %%
def megatron_mlp_partials(x: torch.Tensor, a_shards: list[torch.Tensor],
                          b_shards: list[torch.Tensor]) -> list[torch.Tensor]:
    """Rank r's output of the column- then row-parallel MLP, before the all-reduce, for every r."""
    # BEGIN SOLUTION 13.5: return every rank's output of the MLP, before the all-reduce
    outs = []
    for a, b in zip(a_shards, b_shards, strict=True):
        hidden = F.gelu(x @ a)  # (b, f/N): this rank's slice of the hidden units; GeLU is elementwise, no sync
        outs.append(hidden @ b)  # (b, h): a partial sum over this rank's f/N hidden units
    return outs
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Write $Y$ as a sum over blocks: $XA = [XA_1 \mid \dots \mid XA_N]$, and a product $[H_1 \mid \dots \mid H_N]\,B$ with
# $B$ cut into the matching blocks of rows is $\sum_r H_r B_r$. Where can the elementwise GeLU go?
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Rank $r$: `F.gelu(x @ a_shards[r]) @ b_shards[r]`. Nothing is summed or divided: that is the all-reduce's job.
#
# </details>

# %%
check("13.5", megatron_mlp_partials)


# %% [markdown]
# ## 13.6 Vocab-parallel cross-entropy (2 points)
#
# Read first: [13.2 Tensor parallelism](../notebooks/13_parallelism/02_tensor_parallel.ipynb), section 6.
# With the vocabulary split over $N$ ranks, rank $r$ holds the logits of ids $rV/N, \dots, (r+1)V/N - 1$:
# `shards[r]` has shape $(M, V/N)$ for $M$ tokens, and `target` $(M,)$ holds ids in $[0, V)$. The loss of a token is
# $\log \sum_j e^{z_j} - z_{\text{target}}$, and the ranks must get it **without gathering the logits**: only three
# all-reduces of $M$ numbers each, (1) the maximum $m$ over the whole vocabulary, (2) $\sum_j e^{z_j - m}$, each rank
# summing its slice, (3) $z_{\text{target}} - m$, which only the rank that holds the target's id knows (the others
# contribute 0).
#
# Write `vocab_parallel_ce(shards, target)`: simulate those steps with the ranks as the list and return the $M$
# per-token losses, a tensor of shape $(M,)$. It must stay finite for logits in the hundreds. Worked example, $N = 2$:
# `shards = [[[0, ln 3]], [[0, 0]]]`, `target = [1]` (on rank 0): $m = \ln 3$, the sums are $1/3 + 1$ and
# $1/3 + 1/3$ (together 2), the target gives $\ln 3 - m = 0$, so the answer is `[ln 2]` = `[0.6931]`.

# %%
def vocab_parallel_ce(shards: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy (M,) from the ranks' logit slices shards[r] (M, V/N) and target ids (M,)."""
    # BEGIN SOLUTION 13.6: return the per-token losses, computed from the ranks' slices
    v = shards[0].shape[-1]  # V/N ids per rank
    m = torch.stack([z.amax(-1) for z in shards]).amax(0)  # (M,) all-reduce MAX of the local maxima
    sum_e = sum((z - m[:, None]).exp().sum(-1) for z in shards)  # (M,) all-reduce SUM
    picked = torch.zeros_like(m)
    for r, z in enumerate(shards):  # all-reduce SUM: the owner's z_target - m, 0 elsewhere
        mine = (target >= r * v) & (target < (r + 1) * v)
        local = torch.where(mine, target - r * v, torch.zeros_like(target))
        picked = picked + torch.where(mine, z.gather(1, local[:, None])[:, 0] - m, torch.zeros_like(m))
    return sum_e.log() - picked
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# $\log\sum_j e^{z_j} = m + \log\sum_j e^{z_j - m}$ for any $m$; with $m$ the global maximum no exponent is positive.
# Every rank must use the same $m$, so it is the maximum of the ranks' maxima.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Rank $r$ owns the target when `r * v <= target < (r + 1) * v` (with `v` = `shards[0].shape[-1]`); its local index
# is `target - r * v`. The loss is `log(sum of the ranks' sums) - (z_target - m)`.
#
# </details>

# %%
check("13.6", vocab_parallel_ce)


# %% [markdown]
# ## 13.7 Bytes a GPU sends for one tensor-parallel layer (1 point)
#
# Read first: [13.2 Tensor parallelism](../notebooks/13_parallelism/02_tensor_parallel.ipynb), sections 5 and 9.
# A transformer layer under Megatron tensor parallelism over $t$ GPUs (no sequence parallelism, no recomputation)
# all-reduces its $(b, s, h)$ activation at Megatron's $f$ and $g$ operators, a few times per micro-batch. Each
# all-reduce is a ring all-reduce (chapter 11): over $t$ GPUs it sends $2(t-1)/t$ of the buffer per GPU.
#
# Write `tp_layer_bytes(b, s, h, t, nbytes)`: the bytes one GPU sends for one layer and one micro-batch of $b$
# sequences of $s$ tokens, forward and backward together, with `nbytes` bytes per activation value. One GPU sends
# nothing. Worked example (GPT-3 175B, $h = 12288$): `b = 1`, `s = 2048`, `h = 12288`, `t = 8`, `nbytes = 2` gives
# `352321536` bytes (352 MB, section 9 of the notebook).

# %%
def tp_layer_bytes(b: int, s: int, h: int, t: int, nbytes: int) -> float:
    """Bytes one GPU sends for one tensor-parallel layer and one micro-batch, forward + backward."""
    # BEGIN SOLUTION 13.7: return the bytes one GPU sends for one layer
    all_reduces = 4  # g after o_proj and after down (forward), f before attention and before the MLP (backward)
    return all_reduces * 2 * (t - 1) / t * b * s * h * nbytes  # ring: 2(t - 1)/t of the b s h buffer each
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Count the operators per layer: one $g$ after each row-parallel layer in forward, one $f$ before each block of
# column-parallel layers in backward. How many row-parallel layers does a transformer layer have?
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Two all-reduces forward and two backward, each of the whole $b \cdot s \cdot h$ activation:
# $4 \times 2(t-1)/t \times b\,s\,h \times \text{nbytes}$. In the worked example $4 \times 1.75 \times 50{,}331{,}648$.
#
# </details>

# %%
check("13.7", tp_layer_bytes)
