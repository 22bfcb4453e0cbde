"""Worker functions for `minillm.distributed.launch` (tests of `minillm.distributed.zero`): ZeRO-1/2 vs one process
and vs torch's `ZeroRedundancyOptimizer`.

- `reference_run(...)`: one process, the whole global batch, AdamW with minillm.train's weight decay groups (run
  it in the caller's process); `odd_reference(...)` the same for a 19-parameter MLP (19 is prime: every N pads).
- `zero_worker`: on every rank, stage 1 and stage 2 on this rank's rows (parameters, losses, measured bytes and
  the buffers' sizes after the last step), torch's DDP + ZeroRedundancyOptimizer on the same rows, and both
  stages on the odd MLP.
- `zero_notebook_worker`: `zero_worker`'s results plus the collectives (op, elements) that DDP, ZeRO-1, ZeRO-2 and
  ZeRO-3 issue in one training step, and torch's DDP + ZeroRedundancyOptimizer, recorded by a dispatch mode (for
  notebooks/12_zero_fsdp/01_zero.ipynb).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from minillm.distributed.ddp_workers import global_batches, shard, tiny_gpt
from minillm.distributed.zero import ZeroOptimizer
from minillm.train import TrainConfig, param_groups


def _groups(model: nn.Module, weight_decay: float) -> list[dict]:
    return param_groups(model, TrainConfig(weight_decay=weight_decay))


def _loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return model(tokens[:, :-1], tokens[:, 1:])[1]


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _train(model: nn.Module, opt: Any, batches: list[torch.Tensor], loss_fn=_loss) -> list[float]:
    losses = []
    for x in batches:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model, x)
        loss.backward()
        losses.append(loss.item())
        opt.step()
    return losses


def reference_run(steps: int, batch: int, seq: int, lr: float, weight_decay: float) -> dict[str, Any]:
    """One process on the whole batch: AdamW with decayed matrices and undecayed vectors."""
    model = tiny_gpt(0)
    opt = torch.optim.AdamW(_groups(model, weight_decay), lr=lr)
    losses = _train(model, opt, global_batches(steps, batch, seq))
    return {"params": _params(model), "losses": losses}


def odd_mlp() -> nn.Module:
    """Linear(4, 3) + Linear(3, 1) in float64: 15 + 4 = 19 parameters (prime: no N > 1 divides it)."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1)).double()


def _odd_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x[:, :4]).squeeze(-1).sub(x[:, 4]).pow(2).mean()


def _odd_batches(steps: int, batch: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    return [torch.randn(batch, 5, generator=gen, dtype=torch.float64) for _ in range(steps)]


def odd_reference(steps: int, batch: int, lr: float) -> list[torch.Tensor]:
    model = odd_mlp()
    _train(model, torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1), _odd_batches(steps, batch),
           _odd_loss)
    return _params(model)


def zero_worker(rank: int, world: int, steps: int, batch: int, seq: int, lr: float,
                weight_decay: float) -> dict[str, Any]:
    """Stages 1 and 2, torch's ZeroRedundancyOptimizer, and the odd MLP, on this rank's rows of the same data."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    local = [shard(x, rank, world) for x in global_batches(steps, batch, seq)]
    out: dict[str, Any] = {}
    for stage in (1, 2):
        model = tiny_gpt(0)
        opt = ZeroOptimizer(_groups(model, weight_decay), stage=stage, lr=lr)
        out[f"stage{stage}"] = {
            "losses": _train(model, opt, local), "params": _params(model), "memory": opt.memory_bytes(),
            "numels": [b.layout.numel for b in opt.buckets], "shards": [b.layout.shard for b in opt.buckets]}
        odd = odd_mlp()
        opt = ZeroOptimizer(odd.parameters(), stage=stage, lr=lr, weight_decay=0.1)
        _train(odd, opt, [shard(x, rank, world) for x in _odd_batches(steps, 6)], _odd_loss)
        out[f"odd{stage}"] = {"params": _params(odd), "shard": opt.buckets[0].shard.detach().clone(),
                              "layout": opt.buckets[0].layout}

    model = tiny_gpt(0)
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = ZeroRedundancyOptimizer(_groups(model, weight_decay), optimizer_class=torch.optim.AdamW, lr=lr)
    out["torch"] = {"losses": _train(ddp, opt, local), "params": _params(model)}
    return out


# -- chapter 12.1's notebook: one launch returns everything it shows ------------------------------------------
class _CollectiveLog(TorchDispatchMode):
    """While active, records every `torch.distributed` collective this process issues (they reach the dispatcher
    as `c10d.*` ops, the way torch's own `CommDebugMode` sees them): (op, elements of its payload, bytes per
    element). The payload is the full buffer: the input of a reduce-scatter, the output of an all-gather, the
    tensors of an all-reduce or broadcast."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func).startswith("c10d."):
            name = str(func.overloadpacket).split(".")[-1]  # "allreduce_", "_reduce_scatter_base_", "allgather_", ...
            # payload: the full buffer = the input of a reduce-scatter, the output of an all-gather, the tensors of
            # an all-reduce or a broadcast (list forms hold lists of tensors: flatten them)
            payload = _tensors(args[1] if "reduce_scatter" in name else args[0])
            self.calls.append((name.strip("_").replace("_base", ""), sum(t.numel() for t in payload),
                               payload[0].element_size()))
        return func(*args, **(kwargs or {}))


def _tensors(x: Any) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    return [t for item in x for t in _tensors(item)] if isinstance(x, (list, tuple)) else []


def _one_step_collectives(model: nn.Module, opt: Any, tokens: torch.Tensor) -> list[tuple[str, int, int]]:
    """The collectives of one training step (forward, backward, optimizer step) on this rank's rows."""
    opt.zero_grad(set_to_none=True)
    with _CollectiveLog() as log:
        _loss(model, tokens).backward()
        opt.step()
    return log.calls


def zero_notebook_worker(rank: int, world: int, steps: int, batch: int, seq: int, lr: float,
                         weight_decay: float, train: bool = True) -> dict[str, Any]:
    """What notebooks/12_zero_fsdp/01_zero.ipynb shows, in one launch: `zero_worker`'s results (stages 1 and 2,
    torch's ZeroRedundancyOptimizer) and, under "collectives", the collectives each method issues in one
    training step of the same GPT: minillm's DDP + AdamW, ZeroOptimizer stage 1 and 2, torch's DDP +
    ZeroRedundancyOptimizer ("torch ZeRO-1"), and ZeRO-3 (`minillm.distributed.fsdp.fully_shard` + AdamW).
    `train=False` skips `zero_worker` (only "collectives" and "numel": what tests/test_zero.py needs)."""
    from minillm.distributed.ddp import DDP
    from minillm.distributed.fsdp import fully_shard

    out = zero_worker(rank, world, steps, batch, seq, lr, weight_decay) if train else {}
    tokens = shard(global_batches(1, batch, seq)[0], rank, world)
    comm: dict[str, list[tuple[str, int, int]]] = {}
    model = tiny_gpt(0)
    ddp = DDP(model)
    comm["DDP"] = _one_step_collectives(ddp, torch.optim.AdamW(_groups(model, weight_decay), lr=lr), tokens)
    for stage in (1, 2):
        model = tiny_gpt(0)
        opt = ZeroOptimizer(_groups(model, weight_decay), stage=stage, lr=lr)
        comm[f"ZeRO-{stage}"] = _one_step_collectives(model, opt, tokens)
    from torch.distributed.optim import ZeroRedundancyOptimizer

    model = tiny_gpt(0)
    ddp = nn.parallel.DistributedDataParallel(model)  # its construction broadcasts the weights: not in the step
    opt = ZeroRedundancyOptimizer(_groups(model, weight_decay), optimizer_class=torch.optim.AdamW, lr=lr)
    comm["torch ZeRO-1"] = _one_step_collectives(ddp, opt, tokens)
    model = fully_shard(tiny_gpt(0))
    comm["ZeRO-3"] = _one_step_collectives(model, torch.optim.AdamW(model.parameters(), lr=lr), tokens)
    out["collectives"] = comm
    out["numel"] = sum(p.numel() for p in tiny_gpt(0).parameters())
    return out
