"""Ring, tree and naive all-reduce (minillm.distributed.collectives) against `dist.all_reduce`, their exact byte
counts, the α–β cost model, the single-process ring simulation, and the torch.multiprocessing demos.

One launch per world size N = 1..4 runs every distributed check (starting processes is the slow part); the
tests below read its results. Float64 sums of small integers must be bitwise equal to gloo's (exact in any
order); float32 normals within a few ulps of the sum."""

from __future__ import annotations

import time

import pytest
import torch

from minillm.distributed import launch
from minillm.distributed.collectives import (
    ALGORITHMS,
    all_reduce,
    bytes_sent,
    chunk_bounds,
    chunk_sizes,
    naive_time,
    ring_all_reduce,
    ring_time,
    simulate_ring_all_reduce,
    tree_time,
)
from minillm.distributed.multiproc import (
    SHARING_STRATEGIES,
    START_METHODS,
    _join_all,
    shared_tensor_demo,
    sharing_strategy_demo,
    storage_handle,
)
from minillm.distributed.workers import allreduce_check_worker

NUMELS = [0, 1, 7, 10, 13]  # 13 and 10 are not multiples of 3 or 4; 1 < N leaves empty chunks
WORLDS = [1, 2, 3, 4]


@pytest.fixture(scope="module", params=WORLDS, ids=lambda n: f"N{n}")
def world(request) -> tuple[int, list[dict]]:
    n = request.param
    return n, launch(allreduce_check_worker, n, args=(NUMELS,), timeout=120.0)


def test_equal_to_dist_all_reduce(world):
    n, results = world
    for rank, res in enumerate(results):
        for (algo, numel), exact in res["exact"].items():
            assert exact, f"{algo} float64 integer sum != dist.all_reduce (N={n}, numel={numel}, rank {rank})"
        for key, err in res["max_err"].items():
            assert err <= 1e-5, (key, err)  # sums of N <= 4 normals, float32 rounding only
        for key, err in res["mean_err"].items():
            assert err <= 1e-5, (key, err)
        assert all(res["shape_ok"].values()), res["shape_ok"]  # non-contiguous float64 and int64 tensors


def test_reduce_scatter_leaves_chunk_rank_plus_one_reduced(world):
    n, results = world
    assert [r["owned"] for r in results] == [(rank + 1) % n for rank in range(n)]
    assert all(r["owned_ok"] for r in results)


def test_bytes_counted_equal_the_exact_formula(world):
    n, results = world
    for rank, res in enumerate(results):
        for (algo, numel), got in res["bytes"].items():
            assert got == bytes_sent(algo, numel, n, rank, element_size=8), (algo, numel, rank)
    # the ring sends 2(N-1)/N·S per rank on average, exactly: summed over ranks, 2(N-1)·S
    for numel in NUMELS:
        total = sum(res["bytes"]["ring", numel] for res in results)
        assert total == 2 * (n - 1) * numel * 8
        for res in results:  # each rank within 2 elements of the mean (uneven chunks differ by one element)
            assert abs(res["bytes"]["ring", numel] - 2 * (n - 1) * numel * 8 / n) < 2 * 8
        assert results[0]["bytes"]["naive", numel] == (n - 1) * numel * 8  # the root's bottleneck
    if n > 1:
        assert results[0]["messages"]["ring", 13] == 2 * (n - 1)


def test_chunks_hand_cases():
    assert chunk_sizes(10, 4) == [3, 3, 2, 2]
    assert chunk_sizes(2, 4) == [1, 1, 0, 0]
    assert chunk_bounds(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    for numel in range(0, 20):
        for n in range(1, 6):  # the same split as torch.tensor_split
            assert chunk_sizes(numel, n) == [len(c) for c in torch.tensor_split(torch.arange(numel), n)]
    with pytest.raises(ValueError, match="n >= 1"):
        chunk_sizes(5, 0)


def test_bytes_sent_hand_cases():
    # ring, 10 elements over 4 ranks, chunks [3, 3, 2, 2]: rank r skips chunk r+1 then chunk r+2
    assert [bytes_sent("ring", 10, 4, r) for r in range(4)] == [15, 16, 15, 14]  # mean 15 = 2·3/4·10
    assert [bytes_sent("ring", 12, 4, r, element_size=4) for r in range(4)] == [72] * 4  # 2·3/4·12·4
    assert [bytes_sent("ring", 9, 2, r) for r in range(2)] == [9, 9]  # N = 2: S each
    assert [bytes_sent("naive", 5, 4, r) for r in range(4)] == [15, 5, 5, 5]
    assert [bytes_sent("tree", 5, 4, r) for r in range(4)] == [10, 5, 10, 5]  # 0 -> 2, 1; 2 -> 3 in the broadcast
    assert [bytes_sent("tree", 5, 3, r) for r in range(3)] == [10, 5, 5]
    assert [bytes_sent(a, 5, 1, 0) for a in ALGORITHMS] == [0, 0, 0]
    with pytest.raises(ValueError, match="rank"):
        bytes_sent("ring", 5, 2, 2)


def test_cost_model_hand_cases():
    S, a, b = 1e6, 1e-5, 1e-9
    assert ring_time(S, 4, a, b) == pytest.approx(6 * a + 1.5e6 * b)  # 2(N-1)α + 2(N-1)/N·S·β
    assert tree_time(S, 4, a, b) == pytest.approx(4 * (a + S * b))  # 2·log2(4) rounds
    assert tree_time(S, 5, a, b) == pytest.approx(6 * (a + S * b))  # ⌈log2 5⌉ = 3
    assert naive_time(S, 4, a, b) == pytest.approx(6 * (a + S * b))
    assert ring_time(S, 4, a, b, gamma=2e-9) == pytest.approx(6 * a + 1.5e6 * b + 0.75e6 * 2e-9)
    assert [f(S, 1, a, b) for f in (ring_time, tree_time, naive_time)] == [0, 0, 0]
    # large messages: the ring's bandwidth term stays under 2·S·β while N grows; small: the tree's latency wins
    assert ring_time(1e9, 64, a, b) < tree_time(1e9, 64, a, b) < naive_time(1e9, 64, a, b)
    assert tree_time(8, 64, a, b) < ring_time(8, 64, a, b)
    with pytest.raises(ValueError, match="n >= 1"):
        ring_time(S, 0, a, b)


def test_simulation_hand_case_and_sum():
    bufs = [torch.tensor([1.0, 1, 1]), torch.tensor([10.0, 10, 10]), torch.tensor([100.0, 100, 100])]
    after_rs = simulate_ring_all_reduce(bufs, "reduce_scatter")
    assert [b.tolist() for b in after_rs] == [[1, 111, 101], [11, 10, 111], [111, 110, 100]]
    assert [b.tolist() for b in bufs] == [[1] * 3, [10] * 3, [100] * 3]  # inputs untouched
    assert all(b.tolist() == [111] * 3 for b in simulate_ring_all_reduce(bufs))
    g = torch.Generator().manual_seed(0)
    for n in range(1, 6):
        for numel in (0, 1, 5, 11):
            xs = [torch.randint(-9, 10, (numel,), generator=g).double() for _ in range(n)]
            want = torch.stack(xs).sum(0) if numel else torch.zeros(0, dtype=torch.float64)
            assert all(torch.equal(b, want) for b in simulate_ring_all_reduce(xs))
            rs = simulate_ring_all_reduce(xs, "reduce_scatter")
            for r in range(n):
                s = slice(*chunk_bounds(numel, n)[(r + 1) % n])
                assert torch.equal(rs[r][s], want[s])


def test_bad_arguments_fail_before_any_message():
    with pytest.raises(ValueError, match="floating-point"):
        ring_all_reduce(torch.ones(3, dtype=torch.int64), "mean")
    with pytest.raises(ValueError, match="op must be"):
        all_reduce(torch.ones(3), "tree", "max")
    with pytest.raises(ValueError, match="algo must be"):
        all_reduce(torch.ones(3), "butterfly")


# ---------------------------------------------------------------------------------------------------
# torch.multiprocessing


@pytest.mark.skipif("fork" not in START_METHODS, reason="no fork start method on this system")
def test_fork_sees_writes_only_through_shared_memory():
    private = shared_tensor_demo("fork", share=False, nprocs=2, times=3, timeout=30)
    assert private["values"] == [0.0, 0.0] and not private["is_shared"]  # the children wrote to their copies
    shared = shared_tensor_demo("fork", share=True, nprocs=2, times=3, timeout=30)
    assert shared["values"] == [3.0, 3.0] and shared["is_shared"]


def test_spawn_moves_the_tensor_to_shared_memory_by_itself():
    res = shared_tensor_demo("spawn", share=False, nprocs=1, times=2, timeout=60)
    assert res["values"] == [2.0] and res["is_shared"]


@pytest.mark.skipif("fork" not in START_METHODS, reason="no fork start method on this system")
def test_sharing_strategies():
    assert set(SHARING_STRATEGIES) >= {"file_descriptor", "file_system"}
    for strategy in ("file_descriptor", "file_system"):
        res = sharing_strategy_demo(strategy, timeout=30)
        assert res["values"] == [1.0, 1.0, 1.0] and res["is_shared"] and res["child_saw_shared"], res
    fd, nbytes = storage_handle("file_descriptor")
    assert isinstance(fd, int) and nbytes == 16
    _, name, nbytes = storage_handle("file_system")
    assert name.startswith("/torch_") and nbytes == 16
    with pytest.raises(ValueError, match="strategy must be"):
        storage_handle("pipe")


@pytest.mark.skipif("fork" not in START_METHODS, reason="no fork start method on this system")
def test_a_hanging_worker_is_killed_at_the_timeout():
    import torch.multiprocessing as mp

    p = mp.get_context("fork").Process(target=time.sleep, args=(60,), name="sleeper", daemon=True)
    p.start()
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="sleeper"):
        _join_all([p], timeout=0.5)
    assert time.monotonic() - start < 5 and not p.is_alive()
