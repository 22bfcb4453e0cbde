"""Checkers of chapter 13 (pipeline, tensor and 3D parallelism), the exercises of exercises/13_parallelism.ipynb.

| id | the learner writes | declared in |
|---|---|---|
| 13.1 | `one_f_one_b_stage(p, m, s)`: the order of forwards and backwards of one 1F1B stage | `ch13_pipe` |
| 13.2 | `bubble_from_timeline(tl)`: the idle share of a pipeline step, measured | `ch13_pipe` |
| 13.3 | `peak_activations(actions)`: the most micro-batches one stage holds at once | `ch13_pipe` |
| 13.4 | `megatron_mlp_partials(x, a_shards, b_shards)`: each rank's MLP output before the all-reduce | `ch13_tp` |
| 13.5 | `vocab_parallel_ce(shards, target)`: per-token loss from per-rank logit slices | `ch13_tp` |
| 13.6 | `tp_layer_bytes(b, s, h, t, nbytes)`: bytes one GPU sends for one tensor-parallel layer | `ch13_tp` |
| 13.7 | `mesh_groups(rank, dp, tp, pp)`: the tp, pp and dp groups of a rank | `ch13_plan` |
| 13.8 | `state_bytes_per_gpu(psi, dp, tp, pp, zero_stage)`: model-state bytes per GPU of a plan | `ch13_plan` |
| 13.9 | `pipeline_step(m, p, slot, t_dp)`: a pipeline step's time and bubble | `ch13_plan` |

Each part declares its exercises with their cases, tolerances and simulated mistakes (with the hint naming each)
in its own module; EXERCISES joins them in the order of the chapter's notebooks. All nine run in one process:
the grader never starts a process group.
"""

from __future__ import annotations

from minillm.grading.ch13_pipe import PIPE_EXERCISES
from minillm.grading.ch13_plan import PLAN_EXERCISES
from minillm.grading.ch13_tp import TP_EXERCISES

EXERCISES = tuple(PIPE_EXERCISES) + tuple(TP_EXERCISES) + tuple(PLAN_EXERCISES)
