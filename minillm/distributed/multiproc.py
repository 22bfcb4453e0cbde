"""torch.multiprocessing on a CPU: start methods, tensors in shared memory, sharing strategies.

`torch.multiprocessing` is Python's `multiprocessing` plus pickling rules for tensors: a CPU tensor sent to
another process (as a `Process` argument under "spawn"/"forkserver", or through a `Queue`) is not copied
byte by byte; its storage is **moved to shared memory** (in place, in the sender) and the receiver maps the
same pages. Writes by either side are then seen by both. What this module shows, each demo a function that
starts real processes, waits at most `timeout` seconds and kills them past it:

- `shared_tensor_demo(method, share)`: workers add to one tensor; does the parent see it?
  "fork" copies the parent's memory copy-on-write and pickles nothing, so the child writes to its own copy
  unless the tensor was put in shared memory first (`share_memory_()`); "spawn" and "forkserver" start a
  fresh interpreter and pickle the arguments, so torch moves the tensor to shared memory by itself.
- `sharing_strategy_demo(strategy)`: how the pages are handed over. "file_descriptor" (the Linux default):
  the storage lives in an unnamed shared-memory file and the sender passes its open file descriptor over a
  Unix socket; each shared storage keeps an fd open, so very many tensors can hit `ulimit -n` ("too many open
  files"). "file_system": the storage is a named file in /dev/shm, and the receiver opens it by name; no fd
  is kept per tensor, but a process killed hard can leave files behind (torch starts `torch_shm_manager`
  to clean them up). Change it with `torch.multiprocessing.set_sharing_strategy` (process-wide).
- `storage_handle(strategy)`: what a storage's share call returns under each strategy (an fd, or a name).

Start methods: "fork" (the Linux default up to Python 3.13; "forkserver" from 3.14) is fast but copies
whatever the parent holds, threads included, which is why it is unsafe after CUDA or OpenMP has started;
"spawn" (the only one on Windows and the macOS default) is a clean interpreter that re-imports the target by
module and name, so targets must be module-level functions of an importable module (here: this module);
"forkserver" forks from a clean server process. CUDA tensors can only be shared with spawn/forkserver, and the
producer must keep them alive while consumers use them (PyTorch docs, "Multiprocessing best practices").

Leaves out: CUDA IPC (no GPU here), `mp.spawn`'s error propagation (see `minillm.distributed.launch`),
Hogwild training. References: PyTorch docs, "torch.multiprocessing" and "Multiprocessing best practices";
Python docs, "multiprocessing: Contexts and start methods".
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Iterator, Sequence

import torch
import torch.multiprocessing as mp

START_METHODS: tuple[str, ...] = tuple(mp.get_all_start_methods())
SHARING_STRATEGIES: tuple[str, ...] = tuple(sorted(mp.get_all_sharing_strategies()))


def _add_worker(t: torch.Tensor, index: int, times: int) -> None:
    """Worker: add 1 to t[index], `times` times (each worker writes its own element: no race)."""
    for _ in range(times):
        t[index] += 1


def _join_all(procs: Sequence[mp.Process], timeout: float) -> None:
    """Join every process within `timeout` seconds in all; past it kill them and raise TimeoutError."""
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(deadline - time.monotonic(), 0.0))
    late = [p.name for p in procs if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    if late:
        raise TimeoutError(f"{late} still running after {timeout} s: killed (raise timeout on a busy machine)")
    failed = [f"{p.name}: exit code {p.exitcode}" for p in procs if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"worker processes failed ({', '.join(failed)})")


def shared_tensor_demo(method: str = "spawn", share: bool = True, nprocs: int = 2, times: int = 3,
                       timeout: float = 60.0) -> dict:
    """Start `nprocs` processes with start method `method`, each adding 1 `times` times to its element of one
    tensor of zeros (moved to shared memory first when `share`). Returns what the parent sees afterwards:
    {"method", "share", "values" (list), "is_shared" (bool), "seconds" (start to join)}."""
    if method not in START_METHODS:
        raise ValueError(f"method must be one of {START_METHODS} on this system, got {method!r}")
    if not 1 <= nprocs <= 8:
        raise ValueError(f"nprocs must be in 1..8, got {nprocs}")
    ctx = mp.get_context(method)
    t = torch.zeros(nprocs)  # (nprocs,): one element per worker
    if share:
        t.share_memory_()  # moves the storage to shared memory, in place; t keeps its identity
    start = time.perf_counter()
    procs = [ctx.Process(target=_add_worker, args=(t, i, times), name=f"{method}-worker{i}", daemon=True)
             for i in range(nprocs)]
    for p in procs:
        p.start()
    _join_all(procs, timeout)
    return {"method": method, "share": share, "values": t.tolist(), "is_shared": t.is_shared(),
            "seconds": time.perf_counter() - start}


def _queue_worker(inbox: mp.Queue, outbox: mp.Queue) -> None:
    """Worker: take a tensor from `inbox`, add 1 to it in place, report what it saw."""
    t = inbox.get(timeout=30)
    t += 1
    outbox.put(("done", t.is_shared()))


@contextlib.contextmanager
def sharing_strategy(strategy: str) -> Iterator[None]:
    """Use `strategy` inside the block (it is process-wide), then restore the previous one."""
    if strategy not in SHARING_STRATEGIES:
        raise ValueError(f"strategy must be one of {SHARING_STRATEGIES}, got {strategy!r}")
    before = mp.get_sharing_strategy()
    mp.set_sharing_strategy(strategy)
    try:
        yield
    finally:
        mp.set_sharing_strategy(before)


def sharing_strategy_demo(strategy: str, method: str = "fork", timeout: float = 60.0) -> dict:
    """Send a tensor of zeros to a child through a `torch.multiprocessing` Queue under `strategy`; the child
    adds 1 in place. Returns {"strategy", "values" (the parent's tensor afterwards), "is_shared" (parent),
    "child_saw_shared"}. The parent's tensor changes only because the Queue shared its storage."""
    if method not in START_METHODS:
        raise ValueError(f"method must be one of {START_METHODS} on this system, got {method!r}")
    with sharing_strategy(strategy):
        ctx = mp.get_context(method)
        inbox, outbox = ctx.Queue(), ctx.Queue()
        child = ctx.Process(target=_queue_worker, args=(inbox, outbox), name=f"{strategy}-child", daemon=True)
        child.start()
        t = torch.zeros(3)  # (3,)
        inbox.put(t)  # pickled by torch's reducer: the storage moves to shared memory under this strategy
        try:
            _, child_shared = outbox.get(timeout=timeout)
        except queue.Empty:
            child.kill()
            child.join()
            raise TimeoutError(f"the child did not answer within {timeout} s: killed") from None
        _join_all([child], timeout)
        return {"strategy": strategy, "values": t.tolist(), "is_shared": t.is_shared(),
                "child_saw_shared": child_shared}


def storage_handle(strategy: str) -> tuple:
    """What moving a fresh 4-float storage to shared memory returns under `strategy`: (fd, nbytes) for
    "file_descriptor", (manager socket, file name in /dev/shm, nbytes) for "file_system"."""
    storage = torch.zeros(4).untyped_storage()
    if strategy == "file_descriptor":
        return storage._share_fd_cpu_()
    if strategy == "file_system":
        return tuple(x.decode() if isinstance(x, bytes) else x for x in storage._share_filename_cpu_())
    raise ValueError(f"strategy must be one of {SHARING_STRATEGIES}, got {strategy!r}")
