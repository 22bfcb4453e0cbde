# Solution source of exercises/13_parallelism.ipynb (percent format: "# %%" starts a code cell,
# "# %% [markdown]" a markdown cell). Regenerate the learner notebook with
#     .venv/bin/python tools/build_exercises.py
# then execute it with  .venv/bin/python tools/execute_notebooks.py exercises/13_parallelism.ipynb
# Code between "# BEGIN SOLUTION <id>: <task>" and "# END SOLUTION" becomes
# raise NotImplementedError("Exercise <id>: <task>") in the learner notebook.

# %% [markdown]
# # Exercises 13: Pipeline, tensor and 3D parallelism
#
# Nine functions, all run in one process (no process group needed; ranks are simulated as lists): the 1F1B order of
# one pipeline stage, the bubble of a pipeline timeline and the activations a stage holds at once (13.1-13.3); the
# Megatron MLP rank by rank, the vocab-parallel cross-entropy from per-rank logit slices and the bytes a GPU sends for
# one tensor-parallel layer (13.4-13.6); the process groups of a rank in a dp × pp × tp mesh, the model-state bytes
# per GPU of a 3D plan, and a pipeline step's time and bubble (13.7-13.9).
#
# Each exercise is a function whose body is a stub raising `NotImplementedError`. Replace the `raise`
# line with your code and run the check cell below it: it compares your function with the `minillm`
# reference on the worked examples shown here and on random inputs, and prints ✅ (passed), ❌ with a
# hint (naming the mistake when it recognises a common one) or ⬜ (not attempted). A check never raises.
# For a score report run `minillm grade exercises/13_parallelism.ipynb`; see
# [How grading works](../book/grading.md).
#
# Read first: [13.1 Pipeline parallelism](../notebooks/13_parallelism/01_pipeline.ipynb) (13.1-13.3, 13.9),
# [13.2 Tensor parallelism](../notebooks/13_parallelism/02_tensor_parallel.ipynb) (13.4-13.6) and
# [13.3 3D parallelism](../notebooks/13_parallelism/03_3d_parallel.ipynb) (13.7-13.9).

# %%
import torch
import torch.nn.functional as F

from minillm.grading import check

# %% [markdown]
# ## 13.1 The 1F1B order of one stage (2 points)
#
# Read first: [13.1 Pipeline parallelism](../notebooks/13_parallelism/01_pipeline.ipynb), section 3.
# A model is cut into $p$ stages (stage 0 first) and a batch into $m$ micro-batches. Stage $s$ runs, for every
# micro-batch $i$, one forward `("F", i)` and one backward `("B", i)`; the forwards in order $0, 1, \dots, m-1$
# and the backwards in the same order. Under **1F1B** (PipeDream-Flush, Megatron's default), stage $s$ first runs
# a warm-up of $p - 1 - s$ forwards (all $m$ of them when $m$ is smaller), then alternates: one forward, then
# one backward, as long as forwards remain; then it runs the backwards that are left.
#
# Write `one_f_one_b_stage(p, m, s)`: return stage $s$'s actions in the order it runs them, a list of pairs
# `("F", i)` / `("B", i)`. Worked example: `p = 3`, `m = 4`, `s = 0` gives
# `[("F", 0), ("F", 1), ("F", 2), ("B", 0), ("F", 3), ("B", 1), ("B", 2), ("B", 3)]`; the last stage, `s = 2`,
# alternates from the start: `F0 B0 F1 B1 F2 B2 F3 B3`.

# %%
def one_f_one_b_stage(p: int, m: int, s: int) -> list[tuple[str, int]]:
    """Stage s's forwards and backwards, in the order 1F1B runs them."""
    # BEGIN SOLUTION 13.1: return stage s's forwards and backwards in the order 1F1B runs them
    w = min(p - 1 - s, m)  # warm-up forwards: enough to keep the stages after s busy
    actions = [("F", i) for i in range(w)]
    for k in range(m - w):  # steady state: the forward of micro-batch w + k, then the backward of k
        actions += [("F", w + k), ("B", k)]
    actions += [("B", i) for i in range(m - w, m)]  # drain the backwards still owed
    return actions
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Three phases: the warm-up forwards, the steady state where each step is a pair (a forward, then a backward),
# and the drain. How many pairs are there once the warm-up has used $w$ forwards? Which backward is due in the
# $k$-th pair?
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# With `w = min(p - 1 - s, m)`: the warm-up is `F0 .. F(w-1)`, pair `k` (for `k` in `range(m - w)`) is
# `("F", w + k), ("B", k)`, and the drain is `B(m-w) .. B(m-1)`.
#
# </details>

# %%
check("13.1", one_f_one_b_stage)

# %% [markdown]
# ## 13.2 The bubble of a pipeline timeline (1 point)
#
# Read first: [13.1 Pipeline parallelism](../notebooks/13_parallelism/01_pipeline.ipynb), section 3.
# A timeline says when each stage ran each action: `tl[s]` is stage $s$'s list of `(action, start, end)`
# triples, for example `(("F", 0), 0, 1)`. Time starts at 0 (some stage starts its first action then) and the
# step ends when the last action of any stage ends. The **bubble** is the fraction of all stage-time in that
# step during which a stage does nothing (before its first action, between actions, after its last). Do not
# assume every action takes the same time: the stages may be unbalanced.
#
# Write `bubble_from_timeline(tl)`: return the bubble as a float. Worked example (GPipe, $p = 2$, $m = 2$,
# backward twice as long as forward): stage 0 runs `F0 [0, 1]`, `F1 [1, 2]`, `B0 [5, 7]`, `B1 [7, 9]`, stage 1
# runs `F0 [1, 2]`, `F1 [2, 3]`, `B0 [3, 5]`, `B1 [5, 7]`: the answer is `1/3` (0.3333).

# %%
def bubble_from_timeline(tl: list[list[tuple[tuple[str, int], float, float]]]) -> float:
    """The idle fraction of the stage-time of a played pipeline schedule."""
    # BEGIN SOLUTION 13.2: return the idle fraction of the timeline
    p = len(tl)
    makespan = max(end for row in tl for _, _, end in row)
    busy = sum(end - start for row in tl for _, start, end in row)
    return 1.0 - busy / (p * makespan)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Compute what is easy to add up: the time each stage is busy. The total stage-time available is the number
# of stages times the length of the step.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `makespan = max(end for row in tl for _, _, end in row)`, `busy = sum(end - start ...)` over every action of
# every stage, bubble `= 1 - busy / (p * makespan)`. In the worked example: busy 6 per stage, 12 of 18.
#
# </details>

# %%
check("13.2", bubble_from_timeline)

# %% [markdown]
# ## 13.3 Activations one stage holds at once (1 point)
#
# Read first: [13.1 Pipeline parallelism](../notebooks/13_parallelism/01_pipeline.ipynb), section 4.
# A stage keeps a micro-batch's activations from the moment its forward has run until its backward has run.
# `actions` is one stage's order, a list of `("F", i)` / `("B", i)`: forwards in order $0, 1, \dots$, each
# micro-batch's backward after its forward, but the backwards may come in any order.
#
# Write `peak_activations(actions)`: return the largest number of micro-batches whose activations the stage
# holds at the same time. Worked example: `F0 F1 B0 F2 F3 B1 B2 B3` gives `3` (after F3 it holds 1, 2 and 3).
# A GPipe stage (all forwards first) holds all $m$; a 1F1B stage $s$ at most $p - s$ (all $m$ if fewer).

# %%
def peak_activations(actions: list[tuple[str, int]]) -> int:
    """The most micro-batches held at once along one stage's order."""
    # BEGIN SOLUTION 13.3: return the largest number of micro-batches held at once
    held, peak = set(), 0
    for kind, i in actions:
        if kind == "F":
            held.add(i)
        else:
            held.discard(i)
        peak = max(peak, len(held))
    return peak
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Walk through the order once, keeping what is held right now; the answer is the largest size that ever
# reaches.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# A forward adds its micro-batch to the held set, a backward removes its own micro-batch (whichever it is);
# take the maximum of `len(held)` after every action.
#
# </details>

# %%
check("13.3", peak_activations)

# %% [markdown]
# ## 13.4 The Megatron MLP, rank by rank (2 points)
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
    # BEGIN SOLUTION 13.4: return every rank's output of the MLP, before the all-reduce
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
check("13.4", megatron_mlp_partials)


# %% [markdown]
# ## 13.5 Vocab-parallel cross-entropy (2 points)
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
    # BEGIN SOLUTION 13.5: return the per-token losses, computed from the ranks' slices
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
check("13.5", vocab_parallel_ce)


# %% [markdown]
# ## 13.6 Bytes a GPU sends for one tensor-parallel layer (1 point)
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
    # BEGIN SOLUTION 13.6: return the bytes one GPU sends for one layer
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
check("13.6", tp_layer_bytes)

# %% [markdown]
# ## 13.7 The groups of a rank in a dp × pp × tp mesh (1 point)
#
# Read first: [13.3 3D parallelism](../notebooks/13_parallelism/03_3d_parallel.ipynb), section 2.
# A 3D-parallel job gives each of its `dp * pp * tp` ranks a coordinate (i_dp, i_pp, i_tp) and numbers them with
# **tp innermost, then pp, then dp**: rank = (i_dp · pp + i_pp) · tp + i_tp (torch's
# `init_device_mesh(..., (dp, pp, tp))`). A rank's **tp group** is the ranks that share its i_dp and i_pp (they
# split each layer), its **pp group** the ranks that share its i_dp and i_tp (one pipeline), its **dp group** the
# ranks that share its i_pp and i_tp (the same piece of the model in every replica).
#
# Write `mesh_groups(rank, dp, tp, pp)`: a dict `{"tp": [...], "pp": [...], "dp": [...]}`, the ranks of each group
# that `rank` belongs to (`rank` included; any order). Worked example: rank 5 of dp 2, tp 2, pp 2 has
# coordinates (1, 0, 1) and the groups `{"tp": [4, 5], "pp": [5, 7], "dp": [1, 5]}`.

# %%
def mesh_groups(rank: int, dp: int, tp: int, pp: int) -> dict[str, list[int]]:
    """The ranks of the tp, pp and dp groups of `rank` (tp innermost, dp outermost)."""
    # BEGIN SOLUTION 13.7: return the ranks of the three groups this rank belongs to
    i_dp, i_pp, i_tp = rank // (tp * pp), rank // tp % pp, rank % tp  # the coordinates, dp outermost

    def rank_of(d, p, t):
        return (d * pp + p) * tp + t

    return {"tp": [rank_of(i_dp, i_pp, t) for t in range(tp)],  # vary one coordinate, keep the others
            "pp": [rank_of(i_dp, p, i_tp) for p in range(pp)],
            "dp": [rank_of(d, i_pp, i_tp) for d in range(dp)]}
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# First recover the coordinates from the rank (the innermost one changes fastest), then list the ranks you get
# by changing one coordinate and keeping the other two.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# i_tp = rank mod tp, i_pp = (rank // tp) mod pp, i_dp = rank // (tp · pp). A tp group is tp consecutive ranks, a
# pp group steps by tp, a dp group by tp · pp.
#
# </details>

# %%
check("13.7", mesh_groups)


# %% [markdown]
# ## 13.8 Model-state bytes per GPU of a 3D plan (1 point)
#
# Read first: [13.3 3D parallelism](../notebooks/13_parallelism/03_3d_parallel.ipynb), section 4, and chapter 12
# (ZeRO). Mixed-precision AdamW keeps, per parameter, 2 bytes of bf16 weights, 2 bytes of bf16 gradients and 12
# bytes of optimizer states (the fp32 master copy and the two moments). Take a model of `psi` parameters that
# tensor parallelism splits evenly over `tp` GPUs and pipeline parallelism over `pp` stages, so each GPU is
# responsible for `psi / (tp * pp)` of them; ZeRO over the `dp` data-parallel replicas then splits, among those,
# the optimizer states (stage 1), also the gradients (stage 2), also the weights (stage 3); stage 0 splits nothing.
#
# Write `state_bytes_per_gpu(psi, dp, tp, pp, zero_stage)`: the bytes of weights + gradients + optimizer states on
# one GPU (activations not counted). Worked example: GPT-3's 175e9 parameters with dp 32, tp 8, pp 4 and ZeRO-1:
# 175e9 / 32 × (2 + 2 + 12 / 32) ≈ 2.39e10 bytes (23.9 GB).

# %%
def state_bytes_per_gpu(psi: float, dp: int, tp: int, pp: int, zero_stage: int) -> float:
    """Bytes of bf16 weights, bf16 gradients and fp32 AdamW states on one GPU of a dp x tp x pp plan with ZeRO."""
    # BEGIN SOLUTION 13.8: return the model-state bytes one GPU holds
    local = psi / (tp * pp)  # parameters this GPU is responsible for
    weights = 2 * local / (dp if zero_stage >= 3 else 1)
    grads = 2 * local / (dp if zero_stage >= 2 else 1)
    optimizer = 12 * local / (dp if zero_stage >= 1 else 1)
    return weights + grads + optimizer
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Count the parameters one GPU is responsible for, then the three kinds of bytes separately: for each, does this
# ZeRO stage split it over the dp replicas?
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Ψ' = psi / (tp · pp). Stage 0: 16 Ψ'; stage 1: (2 + 2 + 12/dp) Ψ'; stage 2: (2 + (2 + 12)/dp) Ψ'; stage 3:
# 16 Ψ' / dp.
#
# </details>

# %%
check("13.8", state_bytes_per_gpu)


# %% [markdown]
# ## 13.9 A pipeline step: time and bubble (1 point)
#
# Read first: [13.1 Pipeline parallelism](../notebooks/13_parallelism/01_pipeline.ipynb) and
# [13.3 3D parallelism](../notebooks/13_parallelism/03_3d_parallel.ipynb). A pipeline of `p` stages runs `m`
# micro-batches per step under GPipe or 1F1B. Take one **slot** as the time a stage needs for one micro-batch's
# forward and backward (`slot` seconds, the same on every stage, communication inside it). The first stage starts
# at once, each later stage one slot after the one before, and the last stage finishes the last micro-batch when
# the pipeline has drained; then the data-parallel gradient all-reduce takes `t_dp` seconds.
#
# Write `pipeline_step(m, p, slot, t_dp)`: a pair (seconds of one step, bubble fraction), where the bubble fraction
# is the share of the slots of a stage spent idle. Worked example: m = 8, p = 4, slot = 0.5 s, t_dp = 1 s gives
# (6.5, 3/11 ≈ 0.273).

# %%
def pipeline_step(m: int, p: int, slot: float, t_dp: float) -> tuple[float, float]:
    """(seconds of one optimizer step, idle fraction of a stage) for m micro-batches on p stages."""
    # BEGIN SOLUTION 13.9: return the step time and the bubble fraction
    slots = m + p - 1  # m busy slots per stage, p - 1 to fill and drain the pipeline
    return slots * slot + t_dp, (p - 1) / slots
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Draw the timeline: when does the last stage start its first micro-batch, and how many slots does each stage
# spend busy?
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Every stage is busy m slots and the step lasts m + p − 1 slots, so it is idle p − 1 of them:
# bubble = (p − 1) / (m + p − 1); time = (m + p − 1) · slot + t_dp.
#
# </details>

# %%
check("13.9", pipeline_step)
