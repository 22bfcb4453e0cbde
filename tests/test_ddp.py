"""DDP from scratch (minillm.distributed.ddp) against torch's DistributedDataParallel and one process.

Two launches (2 and 3 gloo processes, `equivalence_worker`) feed every multi-process test; the single-process
reference runs here. float64 throughout, so "equal" means 1e-10.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.distributed as dist

from minillm.distributed import launch
from minillm.distributed.ddp import DDP, assign_buckets
from minillm.distributed.ddp_workers import (
    equivalence_worker,
    global_batches,
    shard,
    single_process_run,
    tiny_gpt,
)
from minillm.train import unwrap

STEPS, BATCH, SEQ, MICRO, CAP_MB = 3, 18, 8, 3, 0.002
TOL = {"atol": 1e-10, "rtol": 0}


@pytest.fixture(scope="module", params=[2, 3], ids=["2proc", "3proc"])
def run(request):
    world = request.param
    results = launch(equivalence_worker, nprocs=world, args=(STEPS, BATCH, SEQ, 1e-2, CAP_MB, MICRO), timeout=180)
    return world, results


@pytest.fixture(scope="module")
def single():
    return single_process_run(STEPS, BATCH, SEQ, lr=1e-2)


def _close(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, **TOL)


# -- buckets: no processes needed -----------------------------------------------------------------------------
def test_assign_buckets_hand_case():
    # bytes 12, 12, 12, 4, 20; cap 20; walk 4, 3, 2, 1, 0: [4] reaches 20 -> close; 4+12+12 = 28 -> close; [0] open
    assert assign_buckets([12, 12, 12, 4, 20], 20) == [[4], [3, 2, 1], [0]]
    assert assign_buckets([12, 12, 12, 4, 20], 10 ** 9) == [[4, 3, 2, 1, 0]]  # one bucket, still reverse order
    assert assign_buckets([12, 12, 12, 4, 20], 1) == [[4], [3], [2], [1], [0]]  # every parameter its own bucket


def test_assign_buckets_two_keys_hand_case():
    # two dtypes never share a flat buffer: each key has its own open bucket.
    # cap 8: walk 3 (f32: 4), 2 (f64: 8 -> close [2]), 1 (f32: 4 + 4 = 8 -> close [3, 1]), 0 (f64: 8 -> close [0])
    keys = ["f64", "f32", "f64", "f32"]
    assert assign_buckets([8, 4, 8, 4], 8, keys=keys) == [[2], [3, 1], [0]]
    # cap 12: f64 closes at 8 + 8 = 16; f32 stays open at 8 and comes last
    assert assign_buckets([8, 4, 8, 4], 12, keys=keys) == [[2, 0], [3, 1]]


def _torch_assignment(numels: list[int], cap: int, dtypes: list[torch.dtype]) -> list[list[int]]:
    """torch's own bucketing (the C++ Reducer's), fed the tensors in reverse order as DDP's rebuild does."""
    order = list(reversed(range(len(numels))))
    tensors = [torch.zeros(numels[i], dtype=dtypes[i]) for i in order]
    return dist._compute_bucket_assignment_by_size(tensors, [cap], [False] * len(order), order)[0]


def test_assign_buckets_matches_torch():
    rng = random.Random(0)
    for trial in range(300):
        n = rng.randint(1, 12)
        numels, cap = [rng.randint(1, 50) for _ in range(n)], rng.randint(1, 300)
        mixed = trial % 2 == 1
        dtypes = [rng.choice([torch.float32, torch.float64]) if mixed else torch.float32 for _ in range(n)]
        nbytes = [k * torch.empty(0, dtype=d).element_size() for k, d in zip(numels, dtypes, strict=True)]
        ours = assign_buckets(nbytes, cap, keys=dtypes)
        ref = _torch_assignment(numels, cap, dtypes)
        if mixed:  # the closed buckets agree in order; torch lists the still-open ones in hash-map order
            assert sorted(ours) == sorted(ref), (numels, cap)
        else:
            assert ours == ref, (numels, cap)


def test_assign_buckets_errors():
    with pytest.raises(ValueError, match="cap_bytes"):
        assign_buckets([4, 4], 0)
    with pytest.raises(ValueError, match="one key per parameter"):
        assign_buckets([4, 4], 8, keys=["a"])


def test_ddp_needs_a_process_group():
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="torchrun"):
        DDP(torch.nn.Linear(2, 2))
    model = torch.nn.Linear(2, 2)
    assert unwrap(model) is model


def test_shard_rows_and_error():
    x = torch.arange(12).view(6, 2)
    assert torch.equal(torch.cat([shard(x, r, 3) for r in range(3)]), x)
    assert torch.equal(shard(x, 1, 2), x[3:])
    with pytest.raises(ValueError, match="multiple of 4"):
        shard(x, 0, 4)


# -- launched: 2 and 3 processes ------------------------------------------------------------------------------
def test_broadcast_makes_different_replicas_equal(run):
    world, results = run
    assert all(r["unwrap"] == [True, True] for r in results)  # minillm.train.unwrap finds both wrappers' model
    start = [p.detach() for p in tiny_gpt(0).parameters()]
    for rank, r in enumerate(results):
        if rank:  # each rank was initialised from its own seed: different before the broadcast
            assert max((a - b).abs().max().item() for a, b in zip(r["before"], start, strict=True)) > 1e-3
        _close(r["after_broadcast"], start)  # rank 0's, bit for bit
        assert r["buffer_after_broadcast"].tolist() == [0.0, 0.0, 0.0]  # buffers too (rank r had filled in r)


def test_train_refuses_a_batch_that_does_not_split_over_the_ranks(run):
    world, results = run
    assert all(f"use a multiple of {world}" in r["batch_error"] for r in results)  # batch_size = world + 1
    assert all("not wrapped in a DDP" in r["unwrapped_error"] for r in results)


def test_gradients_equal_torch_ddp_and_single_process(run, single):
    world, results = run
    for r in results:
        for step in range(STEPS):
            _close(r["grads"][step], r["torch_grads"][step])
            _close(r["grads"][step], single["grads"][step])  # mean over equal shards = mean over the batch


def test_parameters_after_adamw_steps_equal(run, single):
    world, results = run
    for r in results:
        _close(r["params"], single["params"])
        _close(r["torch_params"], single["params"])
    # the per-rank loss is the loss of its shard: their mean is the big batch's loss
    for step in range(STEPS):
        mean = sum(r["losses"][step] for r in results) / world
        assert abs(mean - single["losses"][step]) < 1e-10


def test_no_sync_accumulation_equals_the_large_batch(run, single):
    world, results = run
    for rank, r in enumerate(results):
        _close(r["no_sync_grads"], single["grads"][0])
        # inside no_sync nothing was communicated: the gradient is this rank's first micro-batch's alone
        model = tiny_gpt(0)
        part = shard(global_batches(1, BATCH, SEQ)[0], rank, world).chunk(MICRO)[0]
        (model(part[:, :-1], part[:, 1:])[1] / MICRO).backward()
        _close(r["no_sync_local"], [p.grad for p in model.parameters()])


def test_no_sync_is_decided_at_the_forward_as_in_torch(run, single):
    world, results = run
    for rank, r in enumerate(results):
        model = tiny_gpt(0)
        model(*(lambda t: (t[:, :-1], t[:, 1:]))(shard(global_batches(1, BATCH, SEQ)[0], rank, world)))[1].backward()
        local = [p.grad for p in model.parameters()]
        for name in ("minillm", "torch"):
            inside, outside = r[f"{name}_no_sync_at_forward"]
            _close(inside, local)  # forward inside no_sync: its backward stays local even outside the context
            _close(outside, single["grads"][0])  # forward outside: synchronised even with backward inside


def test_torch_bucket_schedule(run):
    """What torch 2.13's own DDP does (torch/nn/parallel/distributed.py, _BucketCapacityConfig), on 12 layers
    of 263,168 bytes: iteration 1 one bucket (find_unused_parameters=False), then rebuilt with a 1 MiB first bucket
    only when bucket_cap_mb is unset; with find_unused_parameters=True (and a 13th, unused layer) cut once at
    construction, the small bucket (the first layers) reduced last, the unused layer's zeros reduced too."""
    world, results = run
    layer, first = 256 * 256 * 4 + 256 * 4, dist._DEFAULT_FIRST_BUCKET_BYTES
    assert first == 1024 * 1024
    for r in results:
        s = r["torch_schedule"]
        assert s["default"] == [[12 * layer], [4 * layer, 8 * layer], [4 * layer, 8 * layer]]
        assert s["bucket_cap_mb=1"] == [[12 * layer]] + [[4 * layer] * 3] * 2  # no small first bucket
        fu = s["find_unused_parameters=True"]
        assert fu[0] == fu[1] == fu[2] and len(fu[0]) == 2 and first <= fu[0][-1] < first + layer
        assert sum(fu[0]) == 13 * layer


def test_buckets_follow_reverse_order_under_the_cap(run):
    world, results = run
    params = list(tiny_gpt(0).parameters())
    expected = assign_buckets([p.numel() * 8 for p in params], int(CAP_MB * 1024 * 1024))
    got = [b["params"] for b in results[0]["buckets"]]
    assert got == expected and len(got) > 3
    assert [i for b in got for i in b] == list(reversed(range(len(params))))
    assert all(b == r["buckets"] for r in results for b in [results[0]["buckets"]])  # every rank the same


def test_communication_overlaps_backward(run):
    world, results = run
    for r in results:
        ev, nb = r["overlap"]["events"], len(r["overlap"]["buckets"])
        kinds = [k for _, k, _ in ev]
        last_grad = max(i for i, k in enumerate(kinds) if k == "grad")
        starts = [(i, b) for i, (_, k, b) in enumerate(ev) if k == "start"]
        assert [b for _, b in starts] == list(range(nb))  # every bucket, in index order
        assert nb > 2 and starts[0][0] < last_grad  # the first all-reduce began while backward still ran
        assert sum(i < last_grad for i, _ in starts) >= nb - 2  # ... and most of them did
        assert kinds.count("grad") == r["overlap"]["n_params"]
        assert kinds.index("backward_end") > last_grad and kinds.index("synced") > kinds.index("backward_end")


def test_unused_parameters_match_torch_find_unused(run):
    world, results = run
    for rank, r in enumerate(results):
        ours, ref = r["unused"], r["torch_unused"]
        assert ours["c.weight"] is None and ref["c.weight"] is None  # unused on every rank: no gradient at all
        for name in ("a.weight", "a.bias", "b.weight", "b.bias"):  # b: used on rank 0 only -> its grad / N
            torch.testing.assert_close(ours[name], ref[name], atol=1e-6, rtol=1e-6)
        if rank:
            torch.testing.assert_close(ours["b.bias"], results[0]["unused"]["b.bias"])


def test_train_under_ddp_resumes_as_one_uninterrupted_process(tmp_path):
    """minillm.train.train with minillm's DDP on 2 ranks: 2 steps, rank 0's checkpoint, a resume to step 4; equal to
    one process that ran the 4 steps without stopping (losses, validation losses, weights; float64)."""
    from minillm.distributed.ddp_workers import resume_run, resume_worker

    ref = resume_run(str(tmp_path / "one"), None, False)
    results = launch(resume_worker, nprocs=2, args=(str(tmp_path / "dp"),), timeout=180)
    assert (tmp_path / "dp" / "ckpt.pt").is_file() and len(ref["train_loss"]) == 4 and len(ref["val_loss"]) == 2
    for r in results:
        torch.testing.assert_close(torch.tensor(r["train_loss"]), torch.tensor(ref["train_loss"]), **TOL)
        torch.testing.assert_close(torch.tensor(r["val_loss"]), torch.tensor(ref["val_loss"]), **TOL)
        _close(r["params"], ref["params"])
