"""Start N worker processes with `torch.distributed` initialised, from a script, a test or a notebook.

`launch(fn, nprocs)` is what `torchrun --nproc-per-node N` plus `init_process_group` do, in one call that
returns the workers' results:

1. pick a free TCP port on 127.0.0.1 (`free_port`): the rendezvous point, as torchrun's MASTER_PORT;
2. start `nprocs` processes with the "spawn" method (a fresh interpreter each; "fork" would copy a parent
   that may already hold threads, an OpenMP pool or a CUDA context, which breaks in the child);
3. in each, set the environment torchrun sets (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT),
   one CPU thread per process, `dist.init_process_group(backend, init_method="tcp://127.0.0.1:port")`,
   run `fn(rank, world_size, *args)`, send its result back pickled, destroy the group;
4. wait, polling both the result queue and the processes, so that a failure is seen at once.

Failing fast is the point: in a collective, one dead rank leaves the others blocked forever. So a worker
that raises is reported as `WorkerError` with its traceback (the other workers are killed, none is left
running); one that dies without a word (killed, out of memory, segfault) is reported with its exit code;
and past `timeout` seconds every worker is killed and `TimeoutError` names the ranks still running.

Workers are module-level functions of an importable module (e.g. `minillm.distributed.collectives`): a
spawned process re-imports `fn` by its module and name, and a notebook cell is not a module. What a worker
prints is captured and shown by the parent prefixed with its rank (Python's prints only; messages that C++
libraries such as gloo write to the file descriptors go to the kernel's terminal).

Leaves out: several machines (torchrun's `--nnodes` and its rendezvous backends), elastic restarts, per-rank
log files. Reference: PyTorch docs, "torch.distributed" (init_process_group, TCP initialisation) and
"torchrun (Elastic Launch)" (the environment variables it sets).
"""

from __future__ import annotations

import contextlib
import datetime
import io
import multiprocessing as mp
import os
import pickle
import queue
import socket
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Any

MAX_PROCS = 8


class WorkerError(RuntimeError):
    """A worker process raised or died; the message has its rank and traceback or exit code."""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now (the OS picks one; another program could take it before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(fn: Callable, rank: int, world_size: int, port: int, backend: str, timeout: float,
            env: dict[str, str], args: tuple, results: mp.Queue) -> None:
    """Body of each spawned process: environment, process group, fn, result (or traceback) to the parent."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
                       "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "OMP_NUM_THREADS": "1", **env})
    import torch
    import torch.distributed as dist

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                    world_size=world_size, timeout=datetime.timedelta(seconds=timeout))
            try:
                value = fn(rank, world_size, *args)
            finally:
                dist.destroy_process_group()
        results.put((rank, "ok", pickle.dumps(value), out.getvalue()))
    except BaseException:  # noqa: B036 - any failure, KeyboardInterrupt included, must reach the parent
        results.put((rank, "error", traceback.format_exc(), out.getvalue()))
        raise SystemExit(1) from None


def _check_fn(fn: Callable) -> None:
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if module in (None, "__main__") or "<locals>" in qualname or "<lambda>" in qualname:
        raise ValueError(f"fn={qualname or fn!r} must be a module-level function of an importable module (e.g. "
                         "one in minillm.distributed): spawned processes import it by name, and a notebook cell, "
                         "a lambda or a nested function cannot be imported")


def _stop(procs: Sequence[mp.Process]) -> None:
    """Terminate every process still running (SIGTERM, then SIGKILL after 2 s) and reap them all."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + 2.0
    for p in procs:
        p.join(max(deadline - time.monotonic(), 0.0))
        if p.is_alive():
            p.kill()
            p.join()


def _show(rank: int, text: str) -> None:
    for line in text.rstrip("\n").splitlines():
        print(f"[rank {rank}] {line}")

_KNOCK_ON = ("DistBackendError", "Connection closed by peer", "Connection reset by peer", "gloo", "Gloo")


def _failure_report(rank: int, tb: str, results: mp.Queue, procs: Sequence[mp.Process]) -> str:
    """Name the rank that failed first in cause, not in time: when one rank raises, its peers blocked in a
    collective fail a moment later with a connection error, and that report can arrive first."""
    errors, deadline = {rank: tb}, time.monotonic() + 0.5
    while time.monotonic() < deadline:  # gather the other ranks' reports of the same failure
        try:
            r, status, payload, printed = results.get(timeout=0.05)
        except queue.Empty:
            continue
        _show(r, printed)
        if status == "error":
            errors[r] = payload
    last_line = {r: t.strip().splitlines()[-1] for r, t in errors.items()}
    causes = [r for r in errors if not any(k in last_line[r] for k in _KNOCK_ON)] or list(errors)
    first = causes[0]
    died = [f"rank {r} had died with exit code {p.exitcode}" for r, p in enumerate(procs)
            if r not in errors and p.exitcode not in (None, 0)]
    others = [f"rank {r} failed too: {last_line[r]}" for r in errors if r != first]
    also = f" ({'; '.join(died + others)})" if died or others else ""
    return f"rank {first} of {len(procs)} failed{also}; the other ranks were stopped:\n{errors[first]}"


def launch(fn: Callable[..., Any], nprocs: int, args: tuple = (), *, backend: str = "gloo",
           timeout: float = 60.0, env: dict[str, str] | None = None) -> list[Any]:
    """Run `fn(rank, nprocs, *args)` in `nprocs` spawned processes; returns the results ordered by rank."""
    if not isinstance(nprocs, int) or not 1 <= nprocs <= MAX_PROCS:
        raise ValueError(f"nprocs must be an int in 1..{MAX_PROCS}, got {nprocs!r}")
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' (CPU tensors) or 'nccl' (CUDA tensors), got {backend!r}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    _check_fn(fn)
    cpus = os.cpu_count() or 1
    if nprocs > 2 * cpus:
        warnings.warn(f"{nprocs} processes on {cpus} CPU cores: they will mostly wait for each other", stacklevel=2)
    ctx = mp.get_context("spawn")
    results: mp.Queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, name=f"minillm-rank{rank}", daemon=True,
                         args=(fn, rank, nprocs, port, backend, timeout, dict(env or {}), tuple(args), results))
             for rank in range(nprocs)]
    done: dict[int, Any] = {}
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        while len(done) < nprocs:
            try:
                rank, status, payload, printed = results.get(timeout=0.05)
            except queue.Empty:
                pass
            else:
                _show(rank, printed)
                if status == "error":
                    raise WorkerError(_failure_report(rank, payload, results, procs))
                done[rank] = pickle.loads(payload)
                continue
            dead = [r for r, p in enumerate(procs) if r not in done and p.exitcode is not None]
            if dead and results.empty():
                time.sleep(0.2)  # a result or traceback written just before exit may still be in the pipe
                if results.empty():
                    codes = ", ".join(f"rank {r}: exit code {procs[r].exitcode}" for r in dead)
                    raise WorkerError(f"worker process died without reporting ({codes}; a negative code is the "
                                      "signal that killed it, e.g. -9 = SIGKILL, often out of memory)")
            if time.monotonic() > deadline:
                running = [r for r in range(nprocs) if r not in done]
                raise TimeoutError(f"ranks {running} still running after timeout={timeout} s (a rank waiting in a "
                                   "collective that another rank never joined hangs; raise timeout if the work is "
                                   "just slow)")
    finally:
        _stop(procs)
        results.close()
    return [done[r] for r in range(nprocs)]
