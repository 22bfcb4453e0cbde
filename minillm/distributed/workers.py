"""Worker functions for `minillm.distributed.launch`, used by tests/test_collectives.py and chapter 11's notebooks.

Each is `fn(rank, world_size, ...)`, runs with the default process group initialised (gloo on CPU) and
returns plain Python data: spawned processes import these by module and name, which a notebook cell cannot
offer. One launch runs many checks, because starting N processes costs seconds on a small CPU.

Leaves out: GPUs (gloo on CPU only; the algorithms take any tensor the backend's send/recv take).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.distributed as dist

from minillm.distributed.collectives import ALGORITHMS, P2P, all_reduce, ring_reduce_scatter


def _inputs(rank: int, numel: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's test tensors: small integers in float64 (sums are exact in any order) and float32 normals."""
    g = torch.Generator().manual_seed(seed * 1000 + rank)
    ints = torch.randint(-50, 51, (numel,), generator=g).double()  # (numel,)
    rand = torch.randn(numel, generator=g)  # (numel,) float32
    return ints, rand


def allreduce_check_worker(rank: int, world_size: int, numels: list[int], seed: int = 0) -> dict:
    """Compare ring, tree and naive all-reduce with `dist.all_reduce` on each size (sum and mean) and count bytes.

    Returns {"exact": {(algo, numel): bool}, "max_err": {(algo, numel): float}, "mean_err": {...},
    "bytes": {(algo, numel): int}, "messages": {...}, "shape_ok": {algo: bool}, "owned": int,
    "owned_ok": bool}: exact = float64 integer sums bitwise equal; max_err = float32 normals vs dist.all_reduce;
    bytes = what this rank sent in the float64 sum."""
    out: dict = {"exact": {}, "max_err": {}, "mean_err": {}, "bytes": {}, "messages": {}, "shape_ok": {}}
    for numel in numels:
        ints, rand = _inputs(rank, numel, seed)
        want_ints, want_rand = ints.clone(), rand.clone()
        dist.all_reduce(want_ints)  # the reference: torch's own (gloo) all-reduce, SUM
        dist.all_reduce(want_rand)
        for algo in ALGORITHMS:
            comm = P2P()
            got = all_reduce(ints.clone(), algo, "sum", comm)
            out["exact"][algo, numel] = bool(torch.equal(got, want_ints))
            out["bytes"][algo, numel], out["messages"][algo, numel] = comm.bytes_sent, comm.messages_sent
            got = all_reduce(rand.clone(), algo, "sum")
            out["max_err"][algo, numel] = float((got - want_rand).abs().max()) if numel else 0.0
            got = all_reduce(rand.clone(), algo, "mean")
            out["mean_err"][algo, numel] = float((got - want_rand / world_size).abs().max()) if numel else 0.0
    # a 2-D non-contiguous tensor and an int64 one: the result lands in the caller's tensor
    for algo in ALGORITHMS:
        base = torch.arange(12, dtype=torch.float64).reshape(3, 4) * (rank + 1)
        t = base.t()  # (4, 3), not contiguous
        all_reduce(t, algo, "sum")
        k = torch.full((5,), rank, dtype=torch.int64)
        all_reduce(k, algo, "sum")
        total = world_size * (world_size + 1) / 2  # sum of (rank + 1)
        out["shape_ok"][algo] = bool(torch.equal(t, torch.arange(12.0).reshape(3, 4).t() * total)
                                     and torch.equal(k, torch.full((5,), world_size * (world_size - 1) // 2)))
    # after the reduce-scatter alone, this rank's chunk (rank + 1) % N is the full sum
    ints, _ = _inputs(rank, 10, seed)
    want = ints.clone()
    dist.all_reduce(want)
    flat = ints.clone()
    owned = ring_reduce_scatter(flat, P2P())
    bounds = torch.tensor_split(torch.arange(10), world_size)[owned]
    out["owned"] = owned
    out["owned_ok"] = bool(torch.equal(flat[bounds], want[bounds]))
    return out


def bytes_worker(rank: int, world_size: int, numel: int, element_size: int = 4) -> dict[str, int]:
    """{algo: bytes this rank sent} for one all-reduce of `numel` elements of `element_size` bytes."""
    dtype = {1: torch.uint8, 2: torch.float16, 4: torch.float32, 8: torch.float64}[element_size]
    sent = {}
    for algo in ALGORITHMS:
        comm = P2P()
        all_reduce(torch.ones(numel, dtype=dtype), algo, "sum", comm)
        sent[algo] = comm.bytes_sent
    return sent


def timing_worker(rank: int, world_size: int, numels: list[int], repeats: int = 5) -> dict:
    """Median seconds of one all-reduce of float32 tensors of each size: ring, tree, naive and `dist.all_reduce`.

    Each timed call starts after a barrier and is timed by the slowest rank (max over ranks), as a training
    step would wait for it. Returns {(algo, numel): seconds} (the same on every rank)."""
    calls = {**{a: (lambda t, a=a: all_reduce(t, a)) for a in ALGORITHMS}, "torch": dist.all_reduce}
    times: dict = {}
    for numel in numels:
        x = torch.ones(numel)
        for name, fn in calls.items():
            samples = []
            for _ in range(repeats + 1):  # the first call warms up (connections, allocations)
                dist.barrier()
                start = time.perf_counter()
                fn(x)
                elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
                dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
                samples.append(float(elapsed))
            times[name, numel] = statistics.median(samples[1:])
    return times
