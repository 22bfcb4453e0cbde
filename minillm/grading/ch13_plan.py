"""Checkers of chapter 13's 3D-parallelism exercises (notebook 13.3), to be joined into minillm/grading/ch13.py's
EXERCISES (ids provisional: the chapter numbers them when its parts are joined).

| id | the learner writes | compared with |
|---|---|---|
| 13.7 | `mesh_groups(rank, dp, tp, pp)` -> {"tp": [...], "pp": [...], "dp": [...]}: the ranks of the three groups | |
|      | `rank` belongs to, tp innermost, then pp, then dp | `minillm.distributed.plan.device_mesh_layout` |
| 13.8 | `state_bytes_per_gpu(psi, dp, tp, pp, zero_stage)` -> bytes of weights, gradients and optimizer states | |
|      | on one GPU (mixed-precision AdamW, 2 + 2 + 12 bytes) | `minillm.distributed.zero.zero_memory` |
| 13.9 | `pipeline_step(m, p, slot, t_dp)` -> (seconds of one step, bubble fraction) | |
|      | for m micro-batches on p stages | `minillm.distributed.plan.ParallelPlan.bubble` |

13.7 cases: the worked example (rank 5 of dp 2, tp 2, pp 2), one GPU, 1-D meshes, lopsided shapes (dp 3, tp 2,
pp 4), random shapes up to 64 ranks with every rank or a random one; groups are compared as sorted lists of ints
(any order of the ranks passes, tensors and tuples too). 13.8 cases: the worked example, every ZeRO stage on
random shapes, dp = 1; relative tolerance 1e-9 (any arithmetic order passes). 13.9 cases: the worked example, p = 1
(no bubble), m = 1, random; relative tolerance 1e-9 on both numbers.
"""

from __future__ import annotations

import math
import numbers
import random

import torch

from minillm.grading.core import Exercise, Wrong

HAND_MESH = ((5, 2, 2, 2), {"tp": [4, 5], "pp": [5, 7], "dp": [1, 5]})
HAND_STATES = ((175e9, 32, 8, 4, 1), 175e9 / 32 * (2 + 2 + 12 / 32))
HAND_STEP = ((8, 4, 0.5, 1.0), (6.5, 3 / 11))

# ---------------------------------------------------------------------------------------------------
# 13.7 mesh groups


def _mesh_ref(rank: int, dp: int, tp: int, pp: int) -> dict[str, list[int]]:
    from minillm.distributed.plan import device_mesh_layout

    layout = device_mesh_layout(dp, tp, pp)
    return {axis: next(sorted(g) for g in layout[axis] if rank in g) for axis in ("tp", "pp", "dp")}


def _groups_out(got, args) -> dict[str, list[int]]:
    if not isinstance(got, dict):
        raise Wrong(f'return a dict {{"tp": [...], "pp": [...], "dp": [...]}}, got {type(got).__name__}')
    if set(got) != {"tp", "pp", "dp"}:
        raise Wrong(f'return exactly the keys "tp", "pp" and "dp", got {sorted(map(str, got))}')
    out = {}
    for axis in ("tp", "pp", "dp"):
        g = got[axis]
        if isinstance(g, torch.Tensor):
            g = g.reshape(-1).tolist()
        if not isinstance(g, (list, tuple)) or not all(isinstance(r, numbers.Integral) and not isinstance(r, bool)
                                                       for r in g):
            raise Wrong(f"the {axis} group must be a list of int ranks, got {g!r:.60}")
        out[axis] = sorted(int(r) for r in g)
    return out


def _mesh_by(order: str):
    """A mesh with another order of the axes, outermost first (the reference is "dp pp tp")."""
    def fn(rank, dp, tp, pp):
        size = {"dp": dp, "pp": pp, "tp": tp}
        axes = order.split()
        coords, rest = {}, rank
        for a in reversed(axes):  # the last axis is innermost
            coords[a] = rest % size[a]
            rest //= size[a]

        def rank_of(c):
            r = 0
            for a in axes:
                r = r * size[a] + c[a]
            return r

        return {axis: [rank_of({**coords, axis: i}) for i in range(size[axis])] for axis in ("tp", "pp", "dp")}
    return fn


def _mesh_blocks(rank, dp, tp, pp):
    """Every group as a block of consecutive ranks of its size."""
    return {axis: [rank // n * n + i for i in range(n)] for axis, n in (("tp", tp), ("pp", pp), ("dp", dp))}


def _mesh_replica_as_dp(rank, dp, tp, pp):
    """The dp entry holds this rank's replica (its tp x pp block) instead of its data-parallel peers."""
    out = _mesh_ref(rank, dp, tp, pp)
    block = tp * pp
    out["dp"] = [rank // block * block + i for i in range(block)]
    return out


MESH_MISTAKES = [
    (_mesh_by("dp tp pp"), "tp is the innermost axis, not pp: a tp group is a run of consecutive ranks "
                           "(rank = (i_dp pp + i_pp) tp + i_tp)"),
    (_mesh_by("pp dp tp"), "that is Megatron-LM's order (pp outermost); this mesh puts dp outermost: rank = "
                           "(i_dp pp + i_pp) tp + i_tp"),
    (_mesh_by("tp pp dp"), "the order is reversed: tp is innermost (consecutive ranks), dp outermost"),
    (_mesh_blocks, "only the tp group is a block of consecutive ranks; a pp group steps by tp, a dp group by tp pp"),
    (_mesh_replica_as_dp, "the dp group holds the ranks with the same (pp, tp) position in the other replicas, "
                          "not this rank's own replica"),
]


def _mesh_cases() -> list:
    cases = [(HAND_MESH[0], HAND_MESH[1])]
    shapes = [(1, 1, 1), (4, 1, 1), (1, 4, 1), (1, 1, 4), (3, 2, 4), (2, 4, 2), (2, 8, 2)]
    for dp, tp, pp in shapes:
        for rank in range(dp * tp * pp):
            cases.append(((rank, dp, tp, pp), _mesh_ref(rank, dp, tp, pp)))
    for _ in range(10):
        dp, tp, pp = random.choice([1, 2, 3, 4]), random.choice([1, 2, 4, 8]), random.choice([1, 2, 3, 4])
        rank = random.randrange(dp * tp * pp)
        cases.append(((rank, dp, tp, pp), _mesh_ref(rank, dp, tp, pp)))
    return cases


def _eq(got, want, args) -> bool:
    return got == want


# ---------------------------------------------------------------------------------------------------
# 13.8 model-state bytes per GPU


def _states_ref(psi, dp, tp, pp, zero_stage) -> float:
    from minillm.distributed.zero import zero_memory

    return zero_memory(psi / (tp * pp), dp, zero_stage)


def _number_out(got, args) -> float:
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            raise Wrong(f"return one number, got a tensor of shape {tuple(got.shape)}")
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, numbers.Real):
        raise Wrong(f"return a number, got {type(got).__name__} {got!r:.40}")
    return float(got)


def _rel(got: float, want: float, args: tuple) -> bool:
    return math.isfinite(got) and abs(got - want) <= 1e-9 * max(abs(want), 1e-300)


def _states_with(w=2, g=2, k=12, split=lambda tp, pp: tp * pp, shard=lambda z: (z >= 3, z >= 2, z >= 1),
                 adam_only=False):
    def fn(psi, dp, tp, pp, zero_stage):
        local = psi / split(tp, pp)
        sw, sg, so = shard(zero_stage)
        opt = (8 / (dp if so else 1) + 4) if adam_only else k / (dp if so else 1)
        return local * (w / (dp if sw else 1) + g / (dp if sg else 1) + opt)
    return fn


STATE_MISTAKES = [
    (_states_with(shard=lambda z: (z >= 1, z >= 1, z >= 1)),
     "ZeRO-1 splits only the optimizer states over dp, ZeRO-2 also the gradients, ZeRO-3 also the weights; "
     "dividing all 16 bytes by dp is ZeRO-3 at every stage"),
    (_states_with(shard=lambda z: (z >= 2, z >= 1, z >= 1)),
     "one stage off: ZeRO-1 splits the optimizer states, ZeRO-2 adds the gradients, ZeRO-3 the weights"),
    (_states_with(shard=lambda z: (False, False, z >= 1)),
     "ZeRO-2 also splits the gradients over dp, and ZeRO-3 the weights"),
    (_states_with(adam_only=True),
     "the fp32 master weights (4 bytes) are optimizer state too: ZeRO-1 splits all 12 bytes over dp"),
    (_states_with(split=lambda tp, pp: tp),
     "a pipeline stage holds only its 1/pp of the layers: divide the parameters by tp and by pp"),
    (_states_with(split=lambda tp, pp: pp),
     "tensor parallelism splits every matrix: each GPU holds 1/tp of its stage's parameters"),
    (_states_with(split=lambda tp, pp: 1),
     "each GPU holds psi / (tp pp) parameters: tensor and pipeline parallelism both split the model"),
    (_states_with(k=8), "mixed-precision AdamW keeps 12 bytes of optimizer state per parameter: the fp32 master "
                        "copy (4) and the two moments (4 + 4)"),
    (lambda psi, dp, tp, pp, z: 16 * psi / (tp * pp * dp),
     "the ZeRO stage decides what is split over dp: stage 0 splits nothing"),
]


def _state_cases() -> list:
    cases = [(HAND_STATES[0], HAND_STATES[1]), ((1000.0, 4, 1, 1, 0), 16000.0), ((1000.0, 1, 1, 1, 3), 16000.0)]
    cases += [((1200.0, 4, 2, 3, z), _states_ref(1200.0, 4, 2, 3, z)) for z in range(4)]
    for _ in range(12):
        args = (10 ** random.uniform(6, 12), random.choice([2, 4, 8, 16, 64, 128]), random.choice([1, 2, 4, 8]),
                random.choice([1, 2, 4, 8, 16]), random.randrange(4))
        cases.append((args, _states_ref(*args)))
    return cases


# ---------------------------------------------------------------------------------------------------
# 13.9 pipeline step time and bubble


def _step_ref(m, p, slot, t_dp) -> tuple[float, float]:
    from minillm.distributed.plan import ParallelPlan

    return (m + p - 1) * slot + t_dp, ParallelPlan(1, 1, p, micro_batches=m).bubble()


def _pair_out(got, args) -> tuple[float, float]:
    if isinstance(got, torch.Tensor):
        got = got.reshape(-1).tolist()
    if not isinstance(got, (list, tuple)) or len(got) != 2:
        raise Wrong(f"return a pair (step seconds, bubble fraction), got {type(got).__name__} {got!r:.40}")
    return _number_out(got[0], args), _number_out(got[1], args)


def _pair_close(got, want, args) -> bool:
    return _rel(got[0], want[0], args) and _rel(got[1], want[1], args)


STEP_MISTAKES = [
    (lambda m, p, slot, t: (m * p * slot + t, (p - 1) / (m + p - 1)),
     "the stages work at the same time: a step lasts m + p - 1 slots, not m p"),
    (lambda m, p, slot, t: (m * slot + t, (p - 1) / (m + p - 1)),
     "the pipeline fills and drains: p - 1 more slots than the m micro-batches"),
    (lambda m, p, slot, t: ((m + p) * slot + t, p / (m + p)),
     "filling and draining add p - 1 slots (the first stage starts at once), not p"),
    (lambda m, p, slot, t: ((m + p - 1) * slot + t, (p - 1) / m),
     "the bubble fraction is idle time over the whole step, (p - 1) / (m + p - 1); (p - 1) / m is idle over busy"),
    (lambda m, p, slot, t: ((m + p - 1) * slot, (p - 1) / (m + p - 1)),
     "the data-parallel all-reduce comes after the last slot: add t_dp"),
]


def _step_cases() -> list:
    cases = [(HAND_STEP[0], HAND_STEP[1]), ((4, 1, 2.0, 0.5), (8.5, 0.0)), ((1, 4, 1.0, 0.0), (4.0, 0.75)),
             ((16, 4, 0.25, 0.0), (4.75, 3 / 19))]
    for _ in range(10):
        args = (random.randint(1, 200), random.choice([1, 2, 4, 8, 16, 32]), random.uniform(0.01, 2.0),
                random.uniform(0.01, 5.0))
        cases.append((args, _step_ref(*args)))
    return cases


PLAN_EXERCISES = (
    Exercise("13.7", "The groups of a rank in a dp × pp × tp mesh", 1, cases=_mesh_cases, name="mesh_groups",
             normalize=_groups_out, same=_eq, mistakes=MESH_MISTAKES),
    Exercise("13.8", "Model-state bytes per GPU of a 3D plan", 1, cases=_state_cases, name="state_bytes_per_gpu",
             normalize=_number_out, same=_rel, mistakes=STATE_MISTAKES),
    Exercise("13.9", "A pipeline step: time and bubble", 1, cases=_step_cases, name="pipeline_step",
             normalize=_pair_out, same=_pair_close, mistakes=STEP_MISTAKES),
)
