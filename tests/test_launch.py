"""minillm.distributed.launch: results by rank, torchrun's environment, fail-fast on errors, kills and hangs."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from minillm.distributed import WorkerError, free_port, launch


# workers: module-level, so that spawned processes can import them from this test module
def env_and_sum(rank: int, world_size: int, base: float):
    t = torch.tensor([base + rank], dtype=torch.float64)
    dist.all_reduce(t)  # sum over ranks: world_size * base + 0 + 1 + ... + (world_size - 1)
    print(f"hello from {rank}")
    keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR")
    return {k: os.environ[k] for k in keys}, t.item(), dist.get_backend(), torch.get_num_threads()


def raise_on(rank: int, world_size: int, bad: int):
    if rank == bad:
        raise ArithmeticError(f"deliberate failure on rank {rank}")
    dist.barrier()  # the healthy ranks wait here for the failed one, forever without the launcher
    return rank


def loop_until_killed(rank: int, world_size: int, pid_dir: str):
    Path(pid_dir, f"{rank}.pid").write_text(str(os.getpid()))
    while True:  # a training loop: one all-reduce per "step"
        t = torch.ones(4)
        dist.all_reduce(t)
        time.sleep(0.05)


def sleep_forever(rank: int, world_size: int):
    time.sleep(3600)


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_results_env_and_output(capsys):
    out = launch(env_and_sum, 3, args=(10.0,), timeout=120)
    for rank, (env, total, backend, threads) in enumerate(out):
        assert env == {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "3", "MASTER_ADDR": "127.0.0.1"}
        assert total == 3 * 10.0 + 0 + 1 + 2  # worked by hand: 10 + 11 + 12
        assert backend == "gloo" and threads == 1
    printed = capsys.readouterr().out
    assert all(f"[rank {r}] hello from {r}" in printed for r in range(3))


def test_single_process():
    assert launch(env_and_sum, 1, args=(2.5,), timeout=60)[0][1] == 2.5


@pytest.mark.parametrize("bad", [0, 1])
def test_worker_exception_reaches_parent_with_traceback(bad):
    # the healthy rank's barrier fails too (connection closed), and its report may arrive first: the launcher
    # must still name the rank that raised
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=rf"(?s)rank {bad} of 2 failed.*ArithmeticError: deliberate failure on "
                                          rf"rank {bad}"):
        launch(raise_on, 2, args=(bad,), timeout=120)
    assert time.monotonic() - t0 < 60  # not the timeout: the barrier would never return


def test_killed_worker_is_reported_fast_and_nothing_is_left(tmp_path):
    killed_at: list[float] = []

    def killer():
        deadline = time.monotonic() + 90
        while not all((tmp_path / f"{r}.pid").exists() for r in range(2)) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # both are inside their loops now
        os.kill(int((tmp_path / "1.pid").read_text()), signal.SIGKILL)
        killed_at.append(time.monotonic())

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    with pytest.raises(WorkerError, match="rank 1.*exit code -9"):
        launch(loop_until_killed, 2, args=(str(tmp_path),), timeout=120)
    reported = time.monotonic()
    thread.join(5)
    assert killed_at and reported - killed_at[0] < 5.0
    assert _pid_gone(int((tmp_path / "0.pid").read_text()))  # the survivor was stopped and reaped


def test_timeout_kills_everyone():
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=r"ranks \[0, 1\] still running after timeout=3"):
        launch(sleep_forever, 2, timeout=3)
    assert time.monotonic() - t0 < 10


def test_bad_arguments():
    with pytest.raises(ValueError, match="module-level function"):
        launch(lambda rank, world_size: rank, 2)
    with pytest.raises(ValueError, match="nprocs must be"):
        launch(env_and_sum, 0)
    with pytest.raises(ValueError, match="backend must be"):
        launch(env_and_sum, 2, backend="mpi")
    with pytest.raises(ValueError, match="timeout must be"):
        launch(env_and_sum, 2, timeout=0)


def test_free_port_is_bindable():
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
