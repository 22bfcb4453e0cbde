"""Distributed training (chapters 11-13): a launcher, collectives from point-to-point, DDP from scratch.

`launch(fn, nprocs)` runs a package function in N spawned processes with `torch.distributed` initialised
(gloo on CPU, NCCL on GPUs), the way `torchrun` does, and fails fast with the failing worker's traceback.
"""

from minillm.distributed.launch import WorkerError, free_port, launch

__all__ = ["WorkerError", "free_port", "launch"]
