"""Distributed training (chapters 11-13), each method a transform of an unchanged model, built on `torch.distributed`.

- `launch(fn, nprocs)` runs a package function in N spawned processes with `torch.distributed` initialised (gloo on
  CPU, NCCL on GPUs), the way `torchrun` does, and fails fast with the failing worker's traceback (`launch`).
- Chapter 11: collectives from point-to-point (`collectives`), `torch.multiprocessing` demos (`multiproc`), DDP from
  scratch (`ddp`).
- Chapter 12: ZeRO stages 1-2 (`zero`: `ZeroOptimizer`, `zero_memory`, sharded optimizer state dicts and
  `consolidate_optimizer`), ZeRO-3 / FSDP (`fsdp`: `fully_shard`, sharded checkpoints; `zero3`: the wrappers
  `minillm train --zero 3` uses), ZeRO-Offload (`offload`: `OffloadAdam`, `ShardedOffloadAdam`, `offload_memory`)
  and DeepSpeed's config read into minillm's pieces (`ds_config`: `read_ds_config`, `resolve_batch`,
  `DeepSpeedLossScale`).
- Chapter 13: pipeline schedules, timelines and send/receive plans (`schedules`) and a pipelined GPT
  (`pipeline`), Megatron tensor parallelism (`tensor`), the 3D-parallelism calculator (`plan`) and a real dp x tp
  run on a 2-D mesh (`mesh_workers`).

Worker functions that tests and notebooks launch live in the `*_workers` modules (spawned processes import them by
name). Only the launcher is imported here; import the others from their modules.
"""

from minillm.distributed.launch import WorkerError, free_port, launch

__all__ = ["WorkerError", "free_port", "launch"]
