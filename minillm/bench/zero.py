"""Chapter 12's benchmark: what each rank holds between steps, and what a step costs, for DDP and ZeRO-1/2/3.

- `sharding_worker(rank, world, model, batch, seq, steps)`: a worker for `minillm.distributed.launch` (spawned
  processes import it by name, so it lives here). On every rank, for each method in `METHODS`, a small GPT
  (`ddp_workers.tiny_gpt` with `model`'s fields, float32) is trained with AdamW on this rank's batch / world rows
  of the same global batches; after the last step (gradients still in place, as during the next forward) the
  bytes the rank holds are measured from the tensors themselves: parameters (their local shards for ZeRO-3 and
  FSDP2), gradients (each distinct storage once: stage 1's `.grad` tensors are views of one flat buffer) and the
  optimizer's tensors (AdamW's m and v; ZeRO-1/2's shard copy of the parameters, which mixed precision would keep
  as the fp32 master). The step time is the fastest of `steps` steps.
- `sharding_rows(results, ...)`: the table, with the formula of `minillm.distributed.zero.zero_memory` next to
  each measurement; `sharding_markdown` the Markdown from them; `section_sharding(quick)` runs the launch and
  returns the appendix's Markdown.

Methods: `ddp` minillm's DDP + AdamW (stage 0); `zero1`, `zero2` `minillm.distributed.zero.ZeroOptimizer`;
`zero3` `minillm.distributed.fsdp.fully_shard` + AdamW over the shards; `torch-zero1` torch's DDP +
`ZeroRedundancyOptimizer` (stage 1 by whole parameters); `torch-fsdp2` torch's `fully_shard` (per-parameter
DTensor shards). Backend: gloo on the CPU, float32, always: one GPU cannot host several ranks, and the table is
about bytes, which do not depend on the device.

Leaves out: activations and temporary buffers (a step's peak: chapter 10's tables), the gathered buffers of
ZeRO-3 during forward and backward (12.2 measures them), mixed precision (the formula's 2-byte weights and
gradients; here every tensor is float32, so the formula is evaluated with 4-byte weights and gradients and K = 8
bytes of m and v, + 4 bytes of shard copy for ZeRO-1/2).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from minillm.bench.timer import best_time

METHODS = ("ddp", "zero1", "zero2", "zero3", "torch-zero1", "torch-fsdp2")
STAGE = {"ddp": 0, "zero1": 1, "zero2": 2, "zero3": 3, "torch-zero1": 1, "torch-fsdp2": 3}


def _local(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (FSDP2), else the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def _storages(tensors: list[torch.Tensor | None]) -> int:
    """Bytes of the distinct storages behind `tensors` (views of one buffer count once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if t is not None:
            s = _local(t).untyped_storage()
            seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def held_bytes(model: nn.Module, opt: Any) -> dict[str, int]:
    """Parameters, gradients and optimizer tensors this rank holds now, by distinct storage (see the docstring)."""
    from minillm.distributed.zero import ZeroOptimizer

    params = list(model.parameters())
    if isinstance(opt, ZeroOptimizer):
        m = opt.memory_bytes()
        return {"params": m["weights"], "grads": m["grads"], "optimizer": m["master"] + m["optimizer"]}
    inner = getattr(opt, "optim", opt)  # ZeroRedundancyOptimizer keeps this rank's optimizer in .optim
    states = [v for st in inner.state.values() for v in st.values()
              if isinstance(v, torch.Tensor) and v.numel() > 1]
    return {"params": _storages(params), "grads": _storages([p.grad for p in params]),
            "optimizer": _storages(states)}


def _setup(method: str, model: nn.Module, lr: float) -> tuple[nn.Module, Any]:
    """(the module to call, the optimizer) for `method` on `model` (same weights on every rank)."""
    from minillm.distributed.ddp import DDP
    from minillm.distributed.fsdp import fully_shard
    from minillm.distributed.zero import ZeroOptimizer

    if method == "ddp":
        return DDP(model), torch.optim.AdamW(model.parameters(), lr=lr)
    if method in ("zero1", "zero2"):
        return model, ZeroOptimizer(model.parameters(), stage=STAGE[method], lr=lr)
    if method == "zero3":
        fully_shard(model)
        return model, torch.optim.AdamW(model.parameters(), lr=lr)
    if method == "torch-zero1":
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return (nn.parallel.DistributedDataParallel(model),
                ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.AdamW, lr=lr))
    if method == "torch-fsdp2":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard as torch_fully_shard

        mesh = init_device_mesh("cpu", (torch.distributed.get_world_size(),))
        for block in model.layers:
            torch_fully_shard(block, mesh=mesh)
        torch_fully_shard(model, mesh=mesh)
        return model, torch.optim.AdamW(model.parameters(), lr=lr)
    raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def sharding_worker(rank: int, world: int, model: dict[str, Any], batch: int, seq: int,
                    steps: int) -> dict[str, Any]:
    """{method: {params, grads, optimizer, step_s, loss, psi}} on this rank (see the module docstring)."""
    from minillm.distributed.ddp_workers import global_batches, shard, tiny_gpt

    out: dict[str, Any] = {}
    for method in METHODS:
        net = tiny_gpt(0, torch.float32, **model)
        psi = sum(p.numel() for p in net.parameters())
        x = shard(global_batches(1, batch, seq, net.cfg.vocab_size)[0], rank, world)
        call, opt = _setup(method, net, lr=1e-3)

        def step(call: nn.Module = call, opt: Any = opt, x: torch.Tensor = x) -> float:
            opt.zero_grad(set_to_none=True)
            loss = call(x[:, :-1], x[:, 1:])[1]
            loss.backward()
            opt.step()
            return loss.item()

        loss, sec = best_time(step, steps, warmup=1)
        out[method] = {**held_bytes(net, opt), "step_s": sec, "loss": loss, "psi": psi}
    return out


def formula_bytes(method: str, psi: int, world: int) -> float:
    """`zero_memory` with float32 tensors: 4-byte weights and gradients, K = 8 (m, v) + 4 for ZeRO-1/2's shard
    copy of the parameters (ZeroOptimizer's; torch's ZeroRedundancyOptimizer steps the parameters themselves)."""
    from minillm.distributed.zero import zero_memory

    k = 12 if method in ("zero1", "zero2") else 8
    return zero_memory(psi, world, STAGE[method], k=k, weight_bytes=4, grad_bytes=4)


def sharding_rows(results: dict[str, Any], world: int) -> list[dict[str, Any]]:
    """One row per method: rank 0's measured bytes, the formula's, their ratio, and ms per step."""
    rows = []
    for method in METHODS:
        r = results[method]
        held = r["params"] + r["grads"] + r["optimizer"]
        formula = formula_bytes(method, r["psi"], world)
        rows.append({"method": method, "ZeRO stage": STAGE[method], "params KB": r["params"] / 1e3,
                     "grads KB": r["grads"] / 1e3, "optimizer KB": r["optimizer"] / 1e3,
                     "held KB": held / 1e3, "formula KB": formula / 1e3, "held / formula": held / formula,
                     "ms / step": 1e3 * r["step_s"]})
    return rows


SHARDING_COLUMNS = ["method", "ZeRO stage", "params KB", "grads KB", "optimizer KB", "held KB", "formula KB",
                    "held / formula", "ms / step"]


def section_sharding(quick: bool = False) -> str:
    from minillm.distributed.launch import launch

    world = 2
    if quick:
        model, batch, seq, steps = dict(vocab_size=64, block_size=16, n_layer=2, n_head=2, d_model=16), 4, 8, 1
    else:
        model = dict(vocab_size=512, block_size=64, n_layer=4, n_head=4, d_model=128)
        batch, seq, steps = 16, 64, 5
    results = launch(sharding_worker, world, (model, batch, seq, steps), timeout=600)
    return sharding_markdown(results[0], world, model, batch, seq, steps)


def sharding_markdown(results: dict[str, Any], world: int, model: dict[str, Any], batch: int, seq: int,
                      steps: int) -> str:
    """The section's Markdown from rank 0's `sharding_worker` result."""
    from minillm.utils import markdown_table

    psi = results["ddp"]["psi"]
    losses = {m: results[m]["loss"] for m in METHODS}
    spread = max(losses.values()) - min(losses.values())
    shape = ", ".join(f"{k} {v}" for k, v in model.items())
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (
        "## Chapter 12: what each rank holds, DDP and ZeRO-1/2/3\n\n"
        f"A GPT of {psi:,} parameters (`minillm.distributed.ddp_workers.tiny_gpt` with {shape}), float32, AdamW "
        f"(lr 1e-3), {world} processes (`minillm.distributed.launch`, gloo) on a machine with {os.cpu_count()} "
        f"CPU cores{load}, each on {batch // world} of the {batch} x {seq} rows of one global batch. Bytes held by "
        "rank 0 after a step, gradients still in place, measured from the tensors (distinct storages): "
        "parameters (local shards for ZeRO-3 and FSDP2), gradients, and the optimizer's tensors (AdamW's m and v, "
        "plus ZeroOptimizer's shard copy of the parameters, the fp32 master of mixed precision). formula: "
        "`zero.zero_memory` with 4-byte weights and gradients and K = 8 (+ 4 for the shard copy). ms / step: the "
        f"fastest of {steps} steps after a warm-up. The losses of the last step agree within {spread:.1e} across "
        "the six methods (the same data and starting weights).\n\n"
        + markdown_table(sharding_rows(results, world), SHARDING_COLUMNS)
        + "\nWhat this measures: the bytes are exact and do not depend on the machine; held / formula differs "
        "from 1 by the padding of flat buffers to a multiple of N (minillm) and by what torch keeps besides: "
        "ZeroRedundancyOptimizer shards whole parameters (rank 0's share is whatever its greedy partition gave it), "
        "FSDP2 pads each parameter's dim 0. The times are two processes sharing two cores over loopback: they show "
        "the overhead of each method's extra collectives on this machine, not its cost on GPUs joined by NVLink.\n"
    )
