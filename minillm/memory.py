"""Measuring memory: the peak bytes the allocator holds during one call, on CPU and on CUDA.

- `peak_allocated_bytes(fn, device)` runs `fn()` and returns (peak bytes allocated during the call above what
  was allocated before it, fn's result).

How. On CUDA, torch's own counter: `torch.cuda.reset_peak_memory_stats` before the call,
`torch.cuda.max_memory_allocated` after. On CPU, which has no such counter, the call runs under
`torch.profiler.profile(profile_memory=True)`, which records every allocation and free of the CPU allocator
with its size and time; the running sum of those events, maximised over time, is the peak of bytes allocated
during the call (outputs included, inputs excluded). It sees allocations made inside C++ kernels too (torch's
own SDPA). tracemalloc does not see torch's allocations, and the process RSS high-water mark cannot be reset
between calls, so neither can measure one call. The profiler's C++ side prints two log lines per use to the
stderr file descriptor; they are silenced for the duration.

A component: it imports only torch. Chapter 5 measures attention with it (`minillm.flash.attention_peak_memory`);
later chapters (activation checkpointing, mixed precision, ZeRO) measure training steps with it.
Leaves out: memory held by the CUDA caching allocator but not allocated (`memory_reserved`), other devices (MPS).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
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

    with _silence_fd2(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == DeviceType.CPU)
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return peak, out
