"""One wall-clock timer for every benchmark: the best of `repeats` runs, with the device synchronised.

`best_time(fn, repeats, sync_device=None, warmup=0) -> (result, seconds)` calls `fn()` `warmup` times untimed
(allocations, kernel selection, caches), then `repeats` times under `time.perf_counter`, and returns the last
result and the smallest time. The minimum, not the mean, because noise on a shared machine (other processes,
frequency changes) only ever adds time. On CUDA, kernels run asynchronously: the clock is read only after
`torch.cuda.synchronize(sync_device)`, before and after the call, so the time covers the work and not just
its launch.

Leaves out: CUDA events (finer than perf_counter for sub-millisecond kernels), statistics beyond the minimum.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

R = TypeVar("R")


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], R], repeats: int = 1, sync_device: torch.device | str | None = None, *,
              warmup: int = 0) -> tuple[R, float]:
    """Run `fn` `warmup` times untimed, then `repeats` times; return (its last result, the smallest seconds)."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    best, out = float("inf"), None
    for _ in range(repeats):
        _sync(sync_device)
        t0 = time.perf_counter()
        out = fn()
        _sync(sync_device)
        best = min(best, time.perf_counter() - t0)
    return out, best
