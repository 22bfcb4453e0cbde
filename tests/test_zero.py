"""ZeRO stages 1 and 2 from scratch (minillm.distributed.zero) against one process and torch's
ZeroRedundancyOptimizer; the per-rank memory formula, measured and by hand.

One launch per process count (2 and 3 gloo processes, `zero_worker`) feeds every multi-process test; the
single-process references run here. float64 throughout, so "equal" means 1e-10.
"""

from __future__ import annotations

import pytest
import torch

from minillm.distributed import launch
from minillm.distributed.zero import GB, ZeroOptimizer, shard_layout, zero_memory
from minillm.distributed.zero_workers import odd_reference, reference_run, zero_worker

STEPS, BATCH, SEQ, LR, WD = 4, 12, 8, 1e-2, 0.1
TOL = {"atol": 1e-10, "rtol": 0}


@pytest.fixture(scope="module", params=[2, 3], ids=["2proc", "3proc"])
def run(request):
    world = request.param
    return world, launch(zero_worker, nprocs=world, args=(STEPS, BATCH, SEQ, LR, WD), timeout=180)


@pytest.fixture(scope="module")
def single():
    return reference_run(STEPS, BATCH, SEQ, LR, WD)


def _close(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, **TOL)


# -- the formula and the layout: no processes needed ------------------------------------------------------------
def test_zero_memory_paper_case():
    # Rajbhandari et al. 2020, figure 1: Psi = 7.5B, N = 64, K = 12, mixed precision
    got = [zero_memory(7.5e9, 64, s) / GB for s in (0, 1, 2, 3)]
    assert got[0] == pytest.approx(120.0)             # (2 + 2 + 12) 7.5e9 = 120e9
    assert got[1] == pytest.approx(31.40625)          # 4 x 7.5e9 + 12 x 7.5e9 / 64 = 30e9 + 1.40625e9
    assert got[2] == pytest.approx(16.640625)         # 2 x 7.5e9 + 14 x 7.5e9 / 64
    assert got[3] == pytest.approx(1.875)             # 16 x 7.5e9 / 64
    assert [round(g, 1) for g in got] == [120.0, 31.4, 16.6, 1.9]


def test_zero_memory_padding_hand_case():
    # psi = 10, N = 3: shard 4, padded 12. stage 1: 2*10 + 2*12 + 12*4 = 92; stage 2: 20 + 14*4 = 76; stage 3: 16*4
    assert zero_memory(10, 3, 1, pad=True) == 92
    assert zero_memory(10, 3, 2, pad=True) == 76
    assert zero_memory(10, 3, 3, pad=True) == 64
    assert zero_memory(10, 3, 1) == pytest.approx(20 + 20 + 40)  # unpadded: the paper's Psi / N


def test_zero_memory_errors():
    with pytest.raises(ValueError, match="stage must be"):
        zero_memory(10, 2, 4)
    with pytest.raises(ValueError, match="n_ranks"):
        zero_memory(10, 0, 1)


def test_shard_layout_hand_case():
    # three parameters of 5, 3, 2 elements = 10, over N = 3: shard 4, padded 12.
    # flat: p0 p0 p0 p0 | p0 p1 p1 p1 | p2 p2 pad pad
    lay = shard_layout(10, 3)
    assert (lay.shard, lay.padded) == (4, 12)
    assert [lay.bounds(r) for r in range(3)] == [(0, 4), (4, 8), (8, 12)]
    assert lay.owned(0, [5, 3, 2]) == [(0, 0, 4)]
    assert lay.owned(1, [5, 3, 2]) == [(0, 4, 5), (1, 0, 3)]  # the last element of p0, all of p1
    assert lay.owned(2, [5, 3, 2]) == [(2, 0, 2)]              # p2, then two padding elements owned by nobody
    assert shard_layout(12, 3).padded == 12  # divisible: no padding


def test_errors_without_process_group():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="stage must be 1"):
        ZeroOptimizer(model.parameters(), stage=3)
    with pytest.raises(RuntimeError, match="init_process_group"):
        ZeroOptimizer(model.parameters(), stage=1)
    with pytest.raises(ValueError, match="numel >= 1"):
        shard_layout(0, 2)


# -- multi-process ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stage", [1, 2])
def test_trajectory_equals_single_process(run, single, stage):
    world, results = run
    for r in results:  # every rank ends with the full, identical parameters
        _close(r[f"stage{stage}"]["params"], single["params"])
    # the mean of the ranks' losses = the loss on the whole batch (equal row counts)
    mean = [sum(r[f"stage{stage}"]["losses"][i] for r in results) / world for i in range(STEPS)]
    assert mean == pytest.approx(single["losses"], abs=1e-10)


def test_stage1_equals_torch_zero_redundancy_optimizer(run):
    world, results = run
    for r in results:
        _close(r["stage1"]["params"], r["torch"]["params"])
        assert r["stage1"]["losses"] == pytest.approx(r["torch"]["losses"], abs=1e-10)


@pytest.mark.parametrize("stage", [1, 2])
def test_uneven_numel(run, stage):
    # 19 parameters (prime): N = 2 pads 1, N = 3 pads 2; the trajectory still equals one process
    world, results = run
    ref = odd_reference(STEPS, 6, LR)
    lay = results[0][f"odd{stage}"]["layout"]
    assert (lay.numel, lay.shard, lay.padded) == (19, -(-19 // world), world * -(-19 // world))
    for r in results:
        _close(r[f"odd{stage}"]["params"], ref)
    # the last rank's shard ends in zero padding, still zero after the steps (zero weight, zero gradient)
    last = results[-1][f"odd{stage}"]["shard"]
    assert torch.equal(last[19 - (world - 1) * lay.shard:], torch.zeros(lay.padded - 19, dtype=torch.float64))
    # every rank's shard = its slice of the flat final parameters
    flat = torch.cat([p.reshape(-1) for p in ref] + [torch.zeros(lay.padded - 19, dtype=torch.float64)])
    for rank, r in enumerate(results):
        torch.testing.assert_close(r[f"odd{stage}"]["shard"], flat[rank * lay.shard:(rank + 1) * lay.shard], **TOL)


@pytest.mark.parametrize("stage", [1, 2])
def test_measured_bytes_equal_formula(run, stage):
    # float64 model: 8-byte weights and gradients, K = 24 (float64 master shard + m + v), per (group) buffer padded
    world, results = run
    for r in results:
        got = r[f"stage{stage}"]
        numels = got["numels"]
        assert numels == [6912, 448]  # the tiny GPT: matrices (decayed), vectors (not)
        assert got["shards"] == [-(-n // world) for n in numels]
        mem = got["memory"]
        measured = mem["weights"] + mem["grads"] + mem["master"] + mem["optimizer"]
        formula = sum(zero_memory(n, world, stage, k=24, weight_bytes=8, grad_bytes=8, pad=True) for n in numels)
        assert measured == formula
        assert mem["weights"] == 8 * sum(numels)
        assert mem["master"] == 8 * sum(got["shards"])
        assert mem["optimizer"] == 16 * sum(got["shards"])  # AdamW's exp_avg and exp_avg_sq of the shard
        shards_total = sum(got["shards"])
        assert mem["grads"] == 8 * (world * shards_total if stage == 1 else shards_total)


# -- sharded optimizer checkpoints and minillm.train with ZeRO (one launch, 2 processes) ----------------------------
CKPT_ARGS = (STEPS, BATCH, SEQ, LR, WD, 0.05)  # clip at 0.05: below the tiny GPT's gradient norm, so it bites
TRAIN_KW = {"steps": 4, "batch_size": 4, "seq_len": 8, "eval_every": 2, "eval_batches": 1, "progress": False,
            "lr": 1e-2, "warmup": 1, "grad_clip": 0.5}


@pytest.fixture(scope="module")
def ckpt_run(tmp_path_factory):
    from minillm.distributed.zero_train_workers import zero_checkpoint_and_train_worker

    out = tmp_path_factory.mktemp("zero_train")
    return launch(zero_checkpoint_and_train_worker, nprocs=2, args=(CKPT_ARGS, str(out), TRAIN_KW), timeout=180)


def _named_reference(batches, extra=(), clip=None):
    """Single-process AdamW (named groups) over `batches` then `extra`: (parameters, {name: state})."""
    from minillm.distributed.ddp_workers import tiny_gpt
    from minillm.distributed.zero_train_workers import named_groups, run_steps

    model = tiny_gpt(0)
    opt = torch.optim.AdamW(named_groups(model, WD), lr=LR)
    run_steps(model, opt, batches, clip=clip)
    sd = opt.state_dict()
    states = {n: sd["state"][i] for g in sd["param_groups"] for n, i in zip(g["param_names"], g["params"], strict=True)}
    run_steps(model, opt, list(extra))
    return [p.detach().clone() for p in model.parameters()], states


@pytest.mark.parametrize("stage", [1, 2])
def test_consolidated_optimizer_equals_single_process_adamw(ckpt_run, stage):
    from minillm.distributed.ddp_workers import global_batches
    from minillm.distributed.zero import consolidate_optimizer

    _, ref = _named_reference(global_batches(STEPS, BATCH, SEQ))
    shards = [r["ckpt"][f"stage{stage}"]["state"] for r in ckpt_run]
    full = consolidate_optimizer(shards)
    assert set(full["state"]) == set(ref) and "embed_tokens.weight" in ref  # keyed by parameter name, tied once
    for name, st in ref.items():
        assert set(full["state"][name]) == {"step", "exp_avg", "exp_avg_sq"}
        for key in ("step", "exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(full["state"][name][key], st[key], **TOL)
    assert [g["weight_decay"] for g in full["param_groups"]] == [WD, 0.0]
    # hand check of the layout: rank r's exp_avg is elements [r S, (r+1) S) of the flat (padded) group buffer
    lay = shards[0]["layout"][0]
    assert lay["padded"] == 2 * lay["shard"] and lay["numel"] == 6912
    assert [s["optimizer"]["state"][0]["exp_avg"].shape for s in shards] == [torch.Size([lay["shard"]])] * 2
    with pytest.raises(ValueError, match="rank order"):
        consolidate_optimizer(shards[::-1])


@pytest.mark.parametrize("stage", [1, 2])
def test_resume_from_shard_is_bit_for_bit(ckpt_run, stage):
    for r in ckpt_run:
        got = r["ckpt"][f"stage{stage}"]
        for a, b in zip(got["resumed"], got["params"], strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("stage", [1, 2])
def test_reshard_and_errors(ckpt_run, stage):
    from minillm.distributed.ddp_workers import global_batches

    batches = global_batches(STEPS, BATCH, SEQ)
    ref_params, _ = _named_reference(batches, extra=batches[:2])
    for r in ckpt_run:
        got = r["ckpt"][f"stage{stage}"]
        _close(got["resharded"], ref_params)
        world_err, rank_err, format_err = got["errors"]
        assert "saved by 3 ranks, loading on 2" in world_err and "consolidate" in world_err
        assert "optim_shard_" in rank_err
        assert "not a ZeroOptimizer shard" in format_err
        assert all("\n" not in e for e in got["errors"])


@pytest.mark.parametrize("stage", [1, 2])
def test_clip_grad_norm_equals_single_process(ckpt_run, stage):
    from minillm.distributed.ddp_workers import global_batches

    ref_params, _ = _named_reference(global_batches(STEPS, BATCH, SEQ), clip=0.05)
    unclipped, _ = _named_reference(global_batches(STEPS, BATCH, SEQ))
    assert max((a - b).abs().max().item() for a, b in zip(ref_params, unclipped, strict=True)) > 1e-4  # the clip bites
    for r in ckpt_run:
        _close(r["ckpt"][f"stage{stage}"]["clipped"], ref_params)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_train_loop_with_zero_equals_single_process_and_resumes(ckpt_run, stage, tmp_path):
    from minillm.distributed.ddp_workers import tiny_gpt
    from minillm.distributed.zero_train_workers import RandomTokens
    from minillm.train import TrainConfig, train

    model = tiny_gpt(0)
    ref = train(model, RandomTokens(), TrainConfig(**TRAIN_KW, out_dir=str(tmp_path)))
    if stage == 3:
        ckpt_run = ckpt_run[:1]  # full_state_dict gathers to rank 0 only
    ref_params = dict(model.named_parameters())
    for r in ckpt_run:
        got = r["train"][f"stage{stage}"]
        assert got["straight"]["loss"] == pytest.approx(ref.train_loss, abs=1e-10)
        assert got["straight"]["val"] == pytest.approx(ref.val_loss, abs=1e-10)
        assert set(ref_params) <= set(got["straight"]["params"])
        for name, p in ref_params.items():
            torch.testing.assert_close(got["straight"]["params"][name], p.detach(), **TOL)
        assert len(got["stopped"]["loss"]) == 2
        assert got["resumed"]["loss"] == got["straight"]["loss"]  # resumed history = the uninterrupted one, exactly
        for name, p in got["straight"]["params"].items():
            assert torch.equal(got["resumed"]["params"][name], p), name
# -- communication volume of one step (12.1's notebook worker, one launch) -------------------------------------
@pytest.fixture(scope="module")
def comm():
    from minillm.distributed.zero_workers import zero_notebook_worker

    res = launch(zero_notebook_worker, nprocs=2, args=(1, BATCH, SEQ, LR, WD, False), timeout=180)
    return res, res[0]["numel"]


def test_communication_volume_per_step(comm):
    # the paper's units (section 7): a reduce-scatter, all-gather or broadcast of M elements moves M, an all-reduce 2M
    from minillm.distributed.ddp_workers import tiny_gpt

    res, psi = comm
    named = list(tiny_gpt(0).named_parameters())
    assert psi == 7360 and len(named) == 36  # 2 layers, d 16, vocab 32
    root = sum(p.numel() for name, p in named if not name.startswith("layers."))
    assert root == 512 + 256 + 16 + 16  # token + position embeddings, final norm weight + bias
    weight = {"allreduce": 2, "reduce_scatter": 1, "allgather": 1, "broadcast": 1}
    for r in res:  # every rank issues the same collectives
        c = r["collectives"]
        assert c == res[0]["collectives"]

        def total(method, op, c=c):
            return sum(e for o, e, _ in c[method] if o == op)

        def volume(method, c=c):
            return sum(weight[o] * e for o, e, _ in c[method]) / psi

        assert all(b == 8 for calls in c.values() for *_, b in calls)  # float64 throughout
        # DDP: one all-reduce of the gradients + one unused-parameter flag per parameter
        assert [o for o, *_ in c["DDP"]] == ["allreduce"] and total("DDP", "allreduce") == psi + 36
        # ZeRO-2: reduce-scatter + all-gather of each of the two (weight-decay) buffers = 2 Psi, DDP's volume
        assert sorted(o for o, *_ in c["ZeRO-2"]) == ["allgather"] * 2 + ["reduce_scatter"] * 2
        assert total("ZeRO-2", "reduce_scatter") == total("ZeRO-2", "allgather") == psi  # 6912 + 448, even: no pad
        assert volume("ZeRO-2") == 2
        # minillm's stage 1: all-reduce (2 Psi) + all-gather (Psi) = 3 Psi
        assert total("ZeRO-1", "allreduce") == total("ZeRO-1", "allgather") == psi and volume("ZeRO-1") == 3
        # torch's DDP + ZeroRedundancyOptimizer: one all-reduce, then one broadcast per parameter, no all-gather
        assert total("torch ZeRO-1", "allreduce") == psi and "allgather" not in {o for o, *_ in c["torch ZeRO-1"]}
        assert sorted(e for o, e, _ in c["torch ZeRO-1"] if o == "broadcast") == sorted(p.numel() for _, p in named)
        assert volume("torch ZeRO-1") == 3
        # ZeRO-3: root unit gathered once, each of the 2 blocks twice (forward, backward); gradients reduce-scattered
        assert [o for o, *_ in c["ZeRO-3"]].count("allgather") == 1 + 2 * 2
        assert total("ZeRO-3", "allgather") == 2 * psi - root and total("ZeRO-3", "reduce_scatter") == psi
        assert volume("ZeRO-3") == pytest.approx(3 - root / psi)  # 2.89, the paper's 3 Psi less the root's regather
