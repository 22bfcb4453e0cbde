# Cells of notebook 13.3 (3D parallelism) for exercises/src/13_parallelism.py (percent format; ids provisional:
# the chapter numbers them when its parts are joined). Checkers: minillm/grading/ch13_plan.py (PLAN_EXERCISES).

# %%
from minillm.grading import check

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
