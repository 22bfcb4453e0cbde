"""Checkers of chapter 12 (ZeRO and sharding), the exercises of exercises/12_zero_fsdp.ipynb.

| id | the learner writes | declared in |
|---|---|---|
| 12.1 | `zero_bytes_per_gpu(psi, n, stage, k)`: model-state bytes one GPU holds at a ZeRO stage | `ch12_zero` |
| 12.2 | `shard_bounds(numel, n)`: the (start, stop) of each rank's shard of a padded flat buffer | `ch12_zero` |
| 12.3 | `reduce_scatter_mean(rank_grads)`: ZeRO-2's reduce-scatter, each rank's shard of the mean | `ch12_zero` |
| 12.4 | `zero1_sgd_step(params, rank_grads, momenta, lr, ...)`: one ZeRO-1 step of SGD with momentum | `ch12_zero` |
| 12.5 | `shard_unit(params, n)`: a ZeRO-3 unit flattened, zero-padded and cut into n pieces | `ch12_fsdp` |
| 12.6 | `gather_unit(shards, names, shapes)`: the pieces gathered back into named parameters | `ch12_fsdp` |
| 12.7 | `reduce_scatter_grad(grads)`: each rank's piece of the mean of the ranks' unit gradients | `ch12_fsdp` |
| 12.8 | `offload_bytes(psi, ...)`: ZeRO-Offload's bytes on the GPU, on the CPU and over PCIe | `ch12_offload` |
| 12.9 | `ds_batch(train_batch_size, micro, accum, world_size)`: DeepSpeed's batch identity completed | `ch12_offload` |

Each part declares its exercises with their cases, tolerances and simulated mistakes (with the hint naming each)
in its own module; EXERCISES joins them in the order of the chapter's notebooks. All nine run in one process:
the grader never starts a process group.
"""

from __future__ import annotations

from minillm.grading.ch12_fsdp import FSDP_EXERCISES
from minillm.grading.ch12_offload import OFFLOAD_EXERCISES
from minillm.grading.ch12_zero import ZERO_EXERCISES

EXERCISES = tuple(ZERO_EXERCISES) + tuple(FSDP_EXERCISES) + tuple(OFFLOAD_EXERCISES)
