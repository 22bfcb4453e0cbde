"""Checkers of chapter 11 (data parallelism), the exercises of exercises/11_data_parallel.ipynb.

| id | the learner writes | declared in |
|---|---|---|
| 11.1 | `ring_reduce_scatter_sim(buffers)`: the buffers after ring reduce-scatter, one process | `ch11_coll` |
| 11.2 | `ring_allreduce_time(nbytes, n, alpha, beta)`: the α–β time of a ring all-reduce | `ch11_coll` |
| 11.3 | `ddp_buckets(sizes, cap)`: parameters to gradient buckets, reverse order, byte cap | `ch11_ddp` |
| 11.4 | `ddp_average(rank_grads)`: the ranks' gradients averaged as DDP does | `ch11_ddp` |

Each part declares its exercises with their cases, tolerances and simulated mistakes (with the hint naming each)
in its own module; EXERCISES joins them in the order of the chapter's notebooks. All four run in one process:
the grader never starts a process group.
"""

from __future__ import annotations

from minillm.grading.ch11_coll import COLL_EXERCISES
from minillm.grading.ch11_ddp import DDP_EXERCISES

EXERCISES = tuple(COLL_EXERCISES) + tuple(DDP_EXERCISES)
