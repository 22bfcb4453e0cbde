"""Measuring memory: the peak bytes the allocator holds during one call (CPU, CUDA); the bytes autograd saves.

- `peak_allocated_bytes(fn, device)` runs `fn()` and returns (peak bytes allocated during the call above what
  was allocated before it, fn's result).
- `saved_tensors(fn, params)` / `saved_activation_bytes(fn, params)`: what autograd keeps for backward while
  `fn()` runs: the distinct storages it saves, and their bytes, parameters excluded.

How. On CUDA, torch's own counter: `torch.cuda.reset_peak_memory_stats` before the call,
`torch.cuda.max_memory_allocated` after. On CPU, which has no such counter, the call runs under
`torch.profiler.profile(profile_memory=True)`, which records every allocation and free of the CPU allocator with
its size and time; the running sum of those events, maximised over time, is the peak of bytes allocated during the
call (outputs included, inputs excluded). It sees allocations made inside C++ kernels too (torch's own SDPA).
tracemalloc does not see torch's allocations, and the process RSS high-water mark cannot be reset between calls, so
neither can measure one call. The profiler's C++ side prints a log line to the stderr file descriptor when it
starts and one when it stops; only those two calls are silenced, so what `fn` itself writes to stderr still shows.

Saved tensors. Every differentiable op stores what its backward needs (a matmul its two inputs, exp its output,
masked_fill its mask); `torch.autograd.graph.saved_tensors_hooks(pack, unpack)` calls `pack` on each such tensor as
it is saved. Autograd saves a tensor, not a copy, so the memory is that of the tensor's storage; one storage saved
by several ops (a linear layer's input read by q, k and v), or saved through a view (W.t(), a transposed q), is
held once: storages are counted once, keyed by (device, `untyped_storage().data_ptr()`), at their full `nbytes()`.
The packed tensors are kept alive until the count is done, so a freed storage's address cannot be reused by a later
one and merge two storages. Parameters are not activations: a saved tensor whose storage is that of one of `params`
(the weight itself, or W.t() that F.linear saves) is left out. A copy of a parameter (`weight.to(float32)` inside a
norm run in bf16, the casts of autocast) is a new storage and does count: it is memory that lives until backward.
Python numbers an op keeps (the `scale` of `scores * scale`) are stored as 0-dim float64 CPU tensors without
passing through the hooks: 8 bytes each, not counted. This is the measurement the activation formulas of
`minillm.train_memory` (Korthikanti et al. 2022, arXiv:2205.05198, sec. 4) are checked against, on any device.

A component: it imports only torch. Chapter 5 measures attention with it (`minillm.flash.attention_peak_memory`);
later chapters (activation checkpointing, mixed precision, ZeRO) measure training steps with it.
Leaves out: memory held by the CUDA caching allocator but not allocated (`memory_reserved`), other devices
(MPS), tensors saved by custom autograd Functions through `ctx.foo = t` instead of `save_for_backward` (hooks
do not see them), and the transient peak of backward itself (use `peak_allocated_bytes` around it).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch


@contextlib.contextmanager
def _silence_fd2() -> Iterator[None]:
    """Send the process's file descriptor 2 (C++ stderr) to /dev/null for the duration; Python errors still raise."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def peak_allocated_bytes(fn: Callable[[], Any], device: torch.device | str = "cpu") -> tuple[int, Any]:
    """Run fn(); return (peak bytes allocated on `device` during the call above what was allocated before, result).

    CUDA: torch.cuda's own high-water mark (reset before the call). CPU: the allocator's [memory] events that
    torch.profiler records (+bytes on allocation, -bytes on free), sorted by time; the peak of their running
    sum is the high-water mark of this call's allocations."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before, out
    if device.type != "cpu":
        raise ValueError(f"peak memory is measured on 'cpu' or 'cuda' only, got {device}")
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    # kineto prints one line to fd 2 on start and one on stop: silence those two calls only, so that fn's own
    # stderr (warnings, C++ errors) still shows
    with _silence_fd2():
        prof.__enter__()
    try:
        out = fn()
    finally:
        with _silence_fd2():
            prof.__exit__(None, None, None)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == DeviceType.CPU)
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return peak, out


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    """(device, data pointer) of t's storage: addresses on different devices may coincide."""
    return str(t.device), t.untyped_storage().data_ptr()


def _storage_ptrs(params: Iterable[torch.Tensor] | torch.nn.Module) -> set[tuple[str, int]]:
    """The (device, data pointer) keys of the storages of `params` (a module: its parameters)."""
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    return {_storage_key(p) for p in params}


def saved_tensors(fn: Callable[[], Any], params: Iterable[torch.Tensor] | torch.nn.Module = ()
                  ) -> tuple[list[tuple[tuple[int, ...], torch.dtype, int]], Any]:
    """Run fn(); return ([(shape, dtype, storage bytes) of each distinct storage autograd saved for backward,
    in the order first saved], fn's result). Storages of `params` (a module: its parameters) are left out.
    The shape is that of the first tensor saved from that storage."""
    skip = _storage_ptrs(params)
    seen: dict[tuple[str, int], tuple[tuple[int, ...], torch.dtype, int]] = {}  # (device, data_ptr) -> record
    alive: list[torch.Tensor] = []  # kept until counted: a freed storage's address could be reused

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in skip and key not in seen:
            seen[key] = (tuple(t.shape), t.dtype, t.untyped_storage().nbytes())
            alive.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    records = list(seen.values())
    alive.clear()
    return records, out


def saved_activation_bytes(fn: Callable[[], Any], params: Iterable[torch.Tensor] | torch.nn.Module = ()
                           ) -> tuple[int, Any]:
    """Run fn(); return (bytes of the distinct storages autograd saved for backward, parameters excluded,
    fn's result). Pass the model (or its parameters) as `params`, else weights saved by matmuls count too."""
    records, out = saved_tensors(fn, params)
    return sum(nbytes for _, _, nbytes in records), out
