"""Chapter 11's benchmark: data-parallel training steps and all-reduce, 1 vs N processes.

- `bench_worker(rank, world, device_type, model, batch, seq, steps, numels, repeats)`: a worker for
  `minillm.distributed.launch` (spawned processes import it by name, so it lives here). On every rank:
  (1) the fastest training step (forward, backward, AdamW) of a small GPT (`ddp_workers.tiny_gpt` with `model`'s
  fields) on this rank's batch / world rows of one global batch, under minillm's `DDP` and torch's
  `DistributedDataParallel` (world 1: the plain model), synchronised and under `no_sync` (the same work without
  communication), the steps alternating; (2) one all-reduce of float32 messages of each size in `numels` with
  `minillm.distributed.collectives` (ring, tree, naive) and `dist.all_reduce`: the median over `repeats`, each
  call started after a barrier and timed by the slowest rank, and the bytes this rank sent (counted by
  `collectives.P2P`) against `collectives.bytes_sent`'s formula.
- `ddp_rows` / `collective_rows`: the launches and the tables; `section_ddp(quick)` the appendix's Markdown.

Backend: gloo with CPU tensors; on a machine with at least as many GPUs as processes, nccl with one GPU per rank.
Leaves out: more than one machine, gradient compression, ZeRO / FSDP sharding (chapter 12).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from minillm.bench.timer import best_time

MB = 2**20


def _ddp_step(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, local: bool) -> Callable[[], None]:
    """forward, backward (under `no_sync` when `local`: no all-reduce), AdamW step."""
    from minillm.distributed.ddp_workers import _loss

    def step() -> None:
        with net.no_sync() if local else nullcontext():
            opt.zero_grad(set_to_none=True)
            _loss(net, x).backward()
        opt.step()

    return step


def _step_times(rank: int, world: int, device: torch.device, model: dict[str, Any], batch: int, seq: int,
                steps: int) -> dict[str, dict[str, float]]:
    from minillm.distributed.ddp import DDP
    from minillm.distributed.ddp_workers import global_batches, shard, tiny_gpt

    out: dict[str, dict[str, float]] = {}
    for which in ("minillm", "torch") if world > 1 else ("none",):
        net: nn.Module = tiny_gpt(0, torch.float32, **model).to(device)
        x = shard(global_batches(1, batch, seq, net.cfg.vocab_size)[0], rank, world).to(device)
        if which == "minillm":
            net = DDP(net, 25.0)
        elif which == "torch":
            net = nn.parallel.DistributedDataParallel(net, bucket_cap_mb=25.0)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        times: dict[str, list[float]] = {"synced": [], "local": []}
        for i in range(2 * steps + 2):  # synced and no_sync steps alternate; the first two warm up
            mode = "synced" if i % 2 == 0 else "local"
            if world > 1:
                dist.barrier()  # start together: waiting for a slower rank is not part of the step
            _, sec = best_time(_ddp_step(net, opt, x, mode == "local" and world > 1), 1, sync_device=device)
            if i >= 2:
                times[mode].append(sec)
        best = {k: min(v) for k, v in times.items()}  # the fastest: the least disturbed by other jobs
        if world == 1:
            best = dict.fromkeys(best, min(times["synced"] + times["local"]))
        out[which] = {"step_s": best["synced"], "compute_s": best["local"],
                      "params": sum(p.numel() for p in net.parameters())}
    return out


def _collective_times(rank: int, world: int, device: torch.device, numels: list[int], repeats: int
                      ) -> dict[tuple[str, int], dict[str, float]]:
    from minillm.distributed.collectives import ALGORITHMS, P2P, all_reduce, bytes_sent

    out: dict[tuple[str, int], dict[str, float]] = {}
    for numel in numels:
        for name in (*ALGORITHMS, "torch"):
            samples, sent = [], 0
            for i in range(repeats + 1):  # the first call warms up (connections, buffers)
                x = torch.ones(numel, device=device)
                comm = P2P()
                dist.barrier()
                call = (lambda t=x: dist.all_reduce(t)) if name == "torch" else (
                    lambda t=x, a=name, c=comm: all_reduce(t, a, "sum", c))
                _, sec = best_time(call, 1, sync_device=device)
                elapsed = torch.tensor([sec], dtype=torch.float64, device=device)
                dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the collective ends when its slowest rank does
                if i:
                    samples.append(float(elapsed))
                sent = comm.bytes_sent
                if float(x[0]) != world:
                    raise RuntimeError(f"{name} all-reduce of ones over {world} ranks gave {float(x[0])}")
            formula = bytes_sent(name, numel, world, rank, 4) if name != "torch" else float("nan")
            out[name, numel] = {"s": statistics.median(samples), "sent": sent if name != "torch" else float("nan"),
                                "formula": formula}
    return out


def bench_worker(rank: int, world: int, device_type: str, model: dict[str, Any], batch: int, seq: int, steps: int,
                 numels: list[int], repeats: int) -> dict[str, Any]:
    """Step times and all-reduce times on this rank (see the module docstring); plain data for the parent."""
    device = torch.device("cpu")
    if device_type == "cuda":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    return {"steps": _step_times(rank, world, device, model, batch, seq, steps),
            "collectives": _collective_times(rank, world, device, numels, repeats) if world > 1 else {}}


def backend_for(nprocs: int) -> tuple[str, str]:
    """(backend, device type): nccl on GPUs when there is one per process, else gloo on the CPU."""
    if torch.cuda.is_available() and torch.cuda.device_count() >= nprocs and nprocs > 1:
        return "nccl", "cuda"
    return "gloo", "cpu"


def run_worlds(worlds: list[int], model: dict[str, Any], batch: int, seq: int, steps: int, numels: list[int],
               repeats: int, timeout: float = 300.0) -> dict[int, dict[str, Any]]:
    """{world: rank 0's result of `bench_worker`}, one launch per world size."""
    from minillm.distributed.launch import launch

    out = {}
    for world in worlds:
        backend, device_type = backend_for(world)
        result = launch(bench_worker, world, (device_type, model, batch, seq, steps, numels, repeats),
                        backend=backend, timeout=timeout)[0]
        out[world] = {**result, "backend": backend}
    return out


def ddp_rows(results: dict[int, dict[str, Any]], batch: int, seq: int) -> list[dict[str, Any]]:
    """One row per (processes, wrapper): ms per synchronised step and per `no_sync` step, communication's share
    of the step (1 - no_sync / synced), and the speed-up over one process on the same global batch."""
    one = results[min(results)]["steps"]["none"]["step_s"] if 1 in results else None
    rows = []
    for world, res in sorted(results.items()):
        for which, t in res["steps"].items():
            rows.append({"processes": world, "backend": res["backend"], "DDP": which, "rows / rank": batch // world,
                         "tokens / step": batch * seq, "ms / step": 1e3 * t["step_s"],
                         "ms no_sync": 1e3 * t["compute_s"],
                         "comm share": max(0.0, 1 - t["compute_s"] / t["step_s"]),
                         "speed-up vs 1": one / t["step_s"] if one else "", "params": t["params"]})
    return rows


def collective_rows(results: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (processes, message size, algorithm): median ms, MB/s of the message, bytes rank 0 sent
    (counted) and the formula's bytes."""
    rows = []
    for world, res in sorted(results.items()):
        for (name, numel), t in res["collectives"].items():
            counted = "" if t["sent"] != t["sent"] else int(t["sent"])  # NaN: torch's own, not counted
            formula = "" if t["formula"] != t["formula"] else int(t["formula"])
            rows.append({"processes": world, "MB": 4 * numel / MB, "algorithm": name, "ms": 1e3 * t["s"],
                         "MB/s": 4 * numel / MB / t["s"], "bytes sent (rank 0)": counted, "formula": formula})
    return rows


DDP_COLUMNS = ["processes", "backend", "DDP", "rows / rank", "ms / step", "ms no_sync", "comm share", "speed-up vs 1"]
COLLECTIVE_COLUMNS = ["processes", "MB", "algorithm", "ms", "MB/s", "bytes sent (rank 0)", "formula"]


def section_ddp(quick: bool = False) -> str:
    from minillm.utils import by_device, get_device, markdown_table

    device = get_device()
    if quick:
        worlds, model, batch, seq, steps = [2], {}, 4, 8, 1
        numels, repeats = [1000], 1
    else:
        worlds = [1, 2] + ([4] if (os.cpu_count() or 1) >= 4 else [])
        model = by_device(dict(vocab_size=512, block_size=64, n_layer=4, n_head=4, d_model=128),
                          dict(vocab_size=4096, block_size=256, n_layer=8, n_head=8, d_model=512), device)
        batch, seq = by_device((16, 64), (64, 256), device)
        steps, numels, repeats = 8, [2**10, 2**16, 2**20], 5
    results = run_worlds(worlds, model, batch, seq, steps, numels, repeats)
    params = next(iter(next(iter(results.values()))["steps"].values()))["params"]
    shape = ", ".join(f"{k} {v}" for k, v in model.items()) or "its defaults"
    cores = os.cpu_count()
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (
        "## Chapter 11: data parallelism, 1 vs N processes\n\n"
        f"A GPT of {params:,} parameters (`minillm.distributed.ddp_workers.tiny_gpt` with {shape}), "
        f"one global batch of {batch} x {seq} tokens split over the processes, float32, AdamW; each process is "
        f"started by `minillm.distributed.launch` ({', '.join(sorted({r['backend'] for r in results.values()}))}) "
        f"on a machine with {cores} CPU cores{load}. ms / step: the fastest of {steps} synchronised steps (forward, "
        "backward with the gradient all-reduce, optimizer step); ms no_sync: the same step under `no_sync()` (no "
        "communication), the two kinds alternating; comm share = 1 - no_sync / synced, the part of the step the "
        "all-reduce adds (0 when the no_sync step was not the faster one: then the communication was lost in the "
        "machine's noise). Buckets of 25 MB in both DDPs.\n\n"
        + markdown_table(ddp_rows(results, batch, seq), DDP_COLUMNS)
        + f"\nWhat this measures: {max(worlds)} processes on a machine of {cores} CPU cores shared with other jobs "
        f"split the same cores, they are not {max(worlds)} devices: once the processes outnumber the free cores they "
        "take turns and a step cannot get faster, whatever the batch split. gloo's messages are memory copies "
        "through the loopback network, so the comm share is the cost of those copies plus the wait at each "
        "all-reduce for the slower rank, not a network's bandwidth; none of it predicts GPUs joined by NVLink, "
        "where compute and communication run on separate hardware and overlap.\n\n"
        f"All-reduce of float32 messages: median of {repeats} calls (after a warm-up), each started after a "
        "barrier and timed by the slowest rank; ring, tree and naive are `minillm.distributed.collectives` over "
        "point-to-point sends, torch is `dist.all_reduce`. bytes sent (rank 0): counted by `collectives.P2P`; "
        "formula: `collectives.bytes_sent` (ring: 2 (N-1)/N of the message; with 2 processes every "
        f"algorithm sends the message once). The model above has {4 * params / MB:.1f} MB of float32 gradients, "
        "the size of the largest message here.\n\n"
        + markdown_table(collective_rows(results), COLLECTIVE_COLUMNS)
    )
