"""Worker functions for `minillm.distributed.launch` (tests of `minillm.distributed.offload`): ZeRO-Offload over
data-parallel ranks (`ShardedOffloadAdam`) vs one process on the whole batch.

- `single_offload_run(...)`: one process, the whole global batch, `OffloadAdam` (run it in the caller's process).
- `sharded_offload_worker`: on every rank, `ShardedOffloadAdam` on this rank's rows; returns the parameters, the
  losses, the bytes it holds by placement, its shard size and the last step's averaged shard gradient.
- `sharded_offload_worker_dtypes`: the same for several dtypes in one launch ({"float32": ..., "float64": ...}):
  float64 shows that the fp32 gaps to one process are rounding, not a bug.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from minillm.distributed.ddp_workers import global_batches, shard, tiny_gpt
from minillm.distributed.offload import OffloadAdam, ShardedOffloadAdam


def _loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return model(tokens[:, :-1], tokens[:, 1:])[1]  # mean cross-entropy over the rows given


def single_offload_run(steps: int, batch: int, seq: int, lr: float, dtype: torch.dtype = torch.float32) -> dict:
    model = tiny_gpt(0, torch.float32)
    opt = OffloadAdam(model, lr=lr, dtype=dtype)
    losses = []
    for tokens in global_batches(steps, batch, seq):
        loss = _loss(model, tokens)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    flat = torch.cat([g.reshape(-1) for g in opt.host_grads])  # [psi] the last step's fp32 gradient
    return {"params": [p.detach().clone() for p in model.parameters()], "losses": losses, "last_grad": flat}


def sharded_offload_worker(rank: int, world: int, steps: int, batch: int, seq: int, lr: float,
                           dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    model = tiny_gpt(0, torch.float32)
    opt = ShardedOffloadAdam(model, lr=lr, dtype=dtype)
    losses = []
    for tokens in global_batches(steps, batch, seq):
        loss = _loss(model, shard(tokens, rank, world))
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return {"params": [p.detach().clone() for p in model.parameters()], "losses": losses,
            "placement": opt.placement_bytes(), "shard": opt.layout.shard, "padded": opt.layout.padded,
            "last_grad": opt.host_grad.clone(),  # [S] the mean gradient of this rank's shard, last step
            "psi": sum(p.numel() for p in model.parameters())}


def sharded_offload_worker_dtypes(rank: int, world: int, steps: int, batch: int, seq: int, lr: float,
                                  dtypes: tuple[str, ...] = ("float32", "float64")) -> dict[str, dict[str, Any]]:
    return {name: sharded_offload_worker(rank, world, steps, batch, seq, lr, getattr(torch, name))
            for name in dtypes}
