"""`minillm train --zero 1|2|3` under torchrun (2 gloo processes): the losses of --ddp minillm, a full ckpt.pt that
`minillm generate` reads, one optimizer shard per rank, --resume, and the one-line errors of wrong combinations.

Launches (each costs seconds of imports per process): --ddp minillm (the reference), --zero 2 for 2 steps then
--resume to 4, --zero 3 with --grad-accum 2 for 4 steps. Stage 1 and each stage's bit-for-bit resumption run on the
library in tests/test_zero.py (train() with ZeRO-1, -2, -3 stopped and resumed equals the uninterrupted run exactly,
and the single-process run to 1e-10 in float64). Tolerance: float32. ZeRO averages the gradient as sum / N after the
collective, DDP as sum of (grad / N): a few ulps per gradient, which AdamW's 1 / sqrt(v) turns into ~1e-6 in a
loss after 4 steps at lr 0.01 (atol 1e-5, as tests/test_commands_ddp.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minillm.checkpoint import load_checkpoint, load_for_generation
from minillm.cli import main
from minillm.distributed import free_port

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--preset", "tiny", "--corpus", "tang300", "--batch-size", "4", "--seq-len", "32", "--eval-every", "2",
         "--lr", "0.01", "--warmup", "1"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MINILLM_DEVICE="cpu")
    return env


def _torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(free_port()), "-m", "minillm.cli", "train", *FLAGS, *args]
    res = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return res


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> str:
    # a constant learning rate after warm-up (min_lr_ratio 1), so a run of 2 steps resumed to 4 has the schedule of
    # a run of 4 steps
    path = tmp_path_factory.mktemp("cfg") / "flat.json"
    path.write_text(json.dumps({"train": {"min_lr_ratio": 1.0}}))
    return str(path)


@pytest.fixture(scope="module")
def ddp(tmp_path_factory, config):
    out = tmp_path_factory.mktemp("ddp")
    _torchrun("--steps", "4", "--config", config, "--ddp", "minillm", "--out", str(out))
    return load_checkpoint(out / "ckpt.pt")


def _close_history(got: dict, ref: dict) -> None:
    assert got["step"] == ref["step"] == [1, 2, 3, 4]
    for key in ("train_loss", "val_loss"):
        torch.testing.assert_close(torch.tensor(got[key]), torch.tensor(ref[key]), atol=1e-5, rtol=0)
    assert got["train_loss"][-1] < got["train_loss"][0] - 0.1  # it learned: the curves are not flat


def test_zero2_resume_equals_ddp(tmp_path, ddp, config):
    from minillm.distributed.zero import consolidate_optimizer

    out = tmp_path / "zero2"
    first = _torchrun("--steps", "2", "--config", config, "--zero", "2", "--out", str(out))
    assert "2 processes, ZeRO-2 (optimizer states + gradients sharded), cpu" in first.stdout
    assert first.stdout.count('"train_loss"') == 1  # only rank 0 prints the summary
    assert "optim_shard_0.pt .. optim_shard_1.pt" in first.stdout
    res = _torchrun("--steps", "4", "--config", config, "--zero", "2", "--out", str(out), "--resume")
    state = load_checkpoint(out / "ckpt.pt")
    _close_history(state["history"], ddp["history"])
    assert state["optimizer"] is None and state["optimizer_shards"] == {"world": 2, "stage": 2}
    # the model in ckpt.pt is a plain GPT that generate loads unchanged, with DDP's weights
    model, _ = load_for_generation(out)
    for name, p in model.state_dict().items():
        assert (p - ddp["model"][name]).abs().max() < 1e-3, name
    # the optimizer shards consolidate into DDP's full AdamW state (same keys: parameter indices; same step)
    shards = [torch.load(out / f"optim_shard_{r}.pt", weights_only=True) for r in range(2)]
    assert [s["step"] for s in shards] == [4, 4] and [s["rank"] for s in shards] == [0, 1]
    full = consolidate_optimizer(shards)
    assert set(full["state"]) == set(ddp["optimizer"]["state"])
    for i, ref in ddp["optimizer"]["state"].items():
        assert full["state"][i]["step"] == ref["step"] == 4
        torch.testing.assert_close(full["state"][i]["exp_avg"], ref["exp_avg"], atol=1e-5, rtol=1e-3)
    assert res.returncode == 0


def test_zero3_equals_ddp_and_saves_full_model(tmp_path, ddp, config):
    out = tmp_path / "zero3"
    # with gradient accumulation: each micro-batch's backward reduce-scatters, the shard gradients add up
    res = _torchrun("--steps", "4", "--config", config, "--zero", "3", "--grad-accum", "2", "--out", str(out))
    assert "ZeRO-3 (optimizer states + gradients + parameters sharded)" in res.stdout
    state = load_checkpoint(out / "ckpt.pt")
    _close_history(state["history"], ddp["history"])
    model, _ = load_for_generation(out)  # gathered by every rank, written by rank 0: every key of the plain GPT
    assert set(model.state_dict()) == set(ddp["model"])
    for name, p in model.state_dict().items():
        assert (p - ddp["model"][name]).abs().max() < 1e-3, name


@pytest.mark.parametrize("env,extra,message", [
    ({}, [], "torchrun --nproc-per-node 2 -m minillm.cli train --zero 1"),
    ({"RANK": "0", "WORLD_SIZE": "1"}, [], "launch 2 or more"),
    ({"RANK": "0", "WORLD_SIZE": "2"}, ["--ddp", "torch"], "--zero and --ddp are exclusive"),
    ({"RANK": "0", "WORLD_SIZE": "2"}, ["--precision", "fp16"], "use --precision bf16 or fp32"),
])
def test_zero_errors(monkeypatch, capsys, tmp_path, env, extra, message):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(["train", "--zero", "1", *extra, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_optimizer_shard_files(tmp_path):
    from minillm.checkpoint import (
        load_optimizer_shard,
        load_optimizer_state,
        optimizer_shard_file,
        save_optimizer_shard,
    )

    path = optimizer_shard_file(tmp_path / "run" / "ckpt.pt", 1)
    assert path == tmp_path / "run" / "optim_shard_1.pt"
    save_optimizer_shard(path, {"world": 2, "x": torch.arange(3)}, step=3)
    got = load_optimizer_shard(path, step=3)
    assert got["step"] == 3 and torch.equal(got["x"], torch.arange(3))
    with pytest.raises(ValueError, match="from step 3, ckpt.pt from step 4"):
        load_optimizer_shard(path, step=4)
    with pytest.raises(FileNotFoundError, match="optim_shard_<rank>.pt"):
        load_optimizer_shard(path.with_name("optim_shard_5.pt"), step=3)
    # a ZeRO checkpoint resumed by a plain optimizer, or on another world size: one line saying what to run
    opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters())
    state = {"optimizer": None, "optimizer_shards": {"world": 2, "stage": 2}, "step": 3}
    with pytest.raises(ValueError, match=r"sharded over 2 processes \(ZeRO-2\): resume with torchrun "
                                         r"--nproc-per-node 2 \.\.\. --zero 2"):
        load_optimizer_state(opt, state, tmp_path / "run" / "ckpt.pt", 0, 1, torch.device("cpu"))


# -- one process in a gloo group of 1: the resume paths of minillm.train with a sharded optimizer, no launch --------
KW = {"steps": 4, "batch_size": 4, "seq_len": 8, "eval_every": 2, "eval_batches": 1, "progress": False, "lr": 1e-2,
      "warmup": 1, "grad_clip": 0.5, "min_lr_ratio": 1.0}


@pytest.fixture
def one_rank():
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.mark.parametrize("stage", [1, 3])
def test_zero_resumes_a_plain_run_with_its_adamw_state(one_rank, tmp_path, stage):
    # a run without ZeRO saves AdamW's state keyed by index; --zero 3 names parameters by their keys. Before the fix
    # nothing matched and the resumed ZeRO-3 run silently started from fresh moments and step counters.
    from minillm.distributed.ddp_workers import tiny_gpt
    from minillm.distributed.zero import ZeroDataParallel, ZeroOptimizer
    from minillm.distributed.zero3 import FullyShardedDataParallel, ShardedOptimizer
    from minillm.distributed.zero_train_workers import RandomTokens
    from minillm.train import TrainConfig, param_groups, train, unwrap

    ref_model = tiny_gpt(0)
    ref = train(ref_model, RandomTokens(), TrainConfig(**KW, out_dir=str(tmp_path / "ref")))
    train(tiny_gpt(0), RandomTokens(), TrainConfig(**KW, out_dir=str(tmp_path / "run")), until=2)  # plain AdamW

    def make(m, cfg):
        if stage == 3:
            return ShardedOptimizer(m, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        return ZeroOptimizer(param_groups(unwrap(m), cfg), stage=stage, lr=cfg.lr, betas=cfg.betas)

    model = (FullyShardedDataParallel if stage == 3 else ZeroDataParallel)(tiny_gpt(1))
    hist = train(model, RandomTokens(), TrainConfig(**KW, out_dir=str(tmp_path / "run")), resume=True, optimizer=make)
    assert hist.train_loss == pytest.approx(ref.train_loss, abs=1e-12)
    full = model.full_state_dict() if stage == 3 else _params(model.module)
    for name, p in _params(ref_model).items():
        torch.testing.assert_close(full[name], p, atol=1e-12, rtol=0)
    if stage != 3:
        return
    # the bare sharded GPT does not know the indices: a one-line error instead of fresh moments
    bare = ShardedOptimizer(FullyShardedDataParallel(tiny_gpt(0)).module, lr=1e-2)
    with pytest.raises(ValueError, match="none match, so no moment would load"):
        bare.load_full_state_dict(load_checkpoint(tmp_path / "ref" / "ckpt.pt")["optimizer"])


def test_zero_resumes_after_a_crash_between_shards_and_ckpt(one_rank, tmp_path, monkeypatch):
    # killed while saving step 4: the new shards are on disk, ckpt.pt is still step 2. Before the fix the shards of
    # step 2 were overwritten and the run could not resume at all ("from step 4, ckpt.pt from step 2").
    import minillm.checkpoint as mc
    import minillm.train as mt
    from minillm.distributed.ddp_workers import tiny_gpt
    from minillm.distributed.zero import ZeroDataParallel, ZeroOptimizer
    from minillm.distributed.zero_train_workers import RandomTokens

    def make(m, cfg):
        return ZeroOptimizer(mt.param_groups(mt.unwrap(m), cfg), stage=1, lr=cfg.lr, betas=cfg.betas)

    straight = ZeroDataParallel(tiny_gpt(0))
    mt.train(straight, RandomTokens(), mt.TrainConfig(**KW, out_dir=str(tmp_path / "straight")), optimizer=make)
    run = str(tmp_path / "run")
    save = mc.save_checkpoint

    def crash_at_4(path, model, opt, step, **kw):
        if step == 4:
            raise KeyboardInterrupt("killed while saving")
        save(path, model, opt, step, **kw)

    monkeypatch.setattr(mc, "save_checkpoint", crash_at_4)
    with pytest.raises(KeyboardInterrupt):
        mt.train(ZeroDataParallel(tiny_gpt(0)), RandomTokens(), mt.TrainConfig(**KW, out_dir=run, ckpt_every=2),
                 optimizer=make)
    monkeypatch.setattr(mc, "save_checkpoint", save)
    assert load_checkpoint(run)["step"] == 2
    assert torch.load(Path(run) / "optim_shard_0.pt", weights_only=True)["step"] == 4
    resumed = ZeroDataParallel(tiny_gpt(1))
    hist = mt.train(resumed, RandomTokens(), mt.TrainConfig(**KW, out_dir=run, ckpt_every=2), resume=True,
                    optimizer=make)
    assert hist.step == [1, 2, 3, 4]
    for name, p in _params(straight.module).items():
        assert torch.equal(_params(resumed.module)[name], p), name


def test_a_shard_missing_on_one_rank_fails_every_rank(tmp_path):
    # rank 1 cannot load its shard: rank 0 must not go on into the step's all-reduce and wait there for ever
    from minillm.distributed import launch
    from minillm.distributed.zero_train_workers import zero_resume_error_worker

    kw = {k: v for k, v in KW.items() if k != "min_lr_ratio"}
    got = launch(zero_resume_error_worker, nprocs=2, args=(str(tmp_path), kw), timeout=120)
    assert got[1].startswith("FileNotFoundError: no optimizer shard") and "optim_shard_1.pt" in got[1]
    assert got[0] == "ValueError: 1 other rank(s) could not load their optim_shard_<rank>.pt for step 2 (their " \
                     "error says why): every rank stops"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_zero3_weight_decay_equals_adamw_param_groups(one_rank, dtype):
    # zero gradients: AdamW's step is its decoupled decay alone (m = v = 0). ShardedOptimizer must decay exactly the
    # matrices (minillm.train.param_groups) by exactly AdamW's factor; in bf16 a factor tensor rounded to the shard's
    # dtype decayed by another factor before the fix
    from minillm.distributed.ddp_workers import tiny_gpt
    from minillm.distributed.zero3 import FullyShardedDataParallel, ShardedOptimizer
    from minillm.train import TrainConfig, make_optimizer

    lr, wd = 0.1, 0.1  # factor 0.99: a bf16 tensor rounds it to 0.98828125
    plain = tiny_gpt(0, dtype=dtype)
    ref = make_optimizer(plain, TrainConfig(lr=lr, weight_decay=wd))
    for p in plain.parameters():
        p.grad = torch.zeros_like(p)
    ref.step()
    model = FullyShardedDataParallel(tiny_gpt(0, dtype=dtype))
    opt = ShardedOptimizer(model, lr=lr, weight_decay=wd)
    for u in model.module.fsdp.units:
        u.shard.grad = torch.zeros_like(u.shard)
    opt.step()
    full = model.full_state_dict()
    moved = 0
    for name, p in plain.named_parameters():
        assert torch.equal(full[name], p.detach()), name
        moved += p.dim() >= 2 and not torch.equal(p.detach(), tiny_gpt(0, dtype=dtype).state_dict()[name])
    assert moved >= 1  # the decay did move the matrices


def test_zero_clip_then_skipped_step_does_not_leak_into_the_next(one_rank):
    # clip_grad_norm_ averages the gradients and marks them averaged; a step skipped after it (zero_grad, as a loop
    # that drops a step with an inf norm does) must not make the next step skip its own averaging (before the fix
    # that step found no gradient and silently did not move the weights)
    from minillm.distributed.zero import ZeroOptimizer

    torch.manual_seed(0)
    for stage in (1, 2):
        lin, ref = torch.nn.Linear(3, 2).double(), torch.nn.Linear(3, 2).double()
        ref.load_state_dict(lin.state_dict())
        opt, ref_opt = ZeroOptimizer(lin.parameters(), stage=stage, lr=0.1), torch.optim.AdamW(ref.parameters(), lr=0.1)
        x = torch.randn(4, 3, dtype=torch.float64)
        lin(x).sum().backward()
        opt.clip_grad_norm_(1.0)
        opt.zero_grad()  # the step is skipped
        for model, o in ((lin, opt), (ref, ref_opt)):
            model(x).square().sum().backward()
            o.step()
        for a, b in zip(lin.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_resume_across_zero3_and_zero12_is_one_line(tmp_path):
    from minillm.checkpoint import load_optimizer_state

    class Sharded:
        per_rank_state, stage = True, 3

    state = {"optimizer": None, "optimizer_shards": {"world": 2, "stage": 1}, "step": 3}
    with pytest.raises(ValueError, match=r"\(ZeRO-1\): resume with torchrun --nproc-per-node 2 \.\.\. --zero 1"):
        load_optimizer_state(Sharded(), state, tmp_path / "ckpt.pt", 0, 2, torch.device("cpu"))


def test_zero_state_dict_does_not_copy_the_states(one_rank):
    # a checkpoint must not need a second copy of the optimizer states in device memory (ZeRO's whole point): the
    # shard state dict holds the live tensors, as torch's Optimizer.state_dict does (before: deepcopy + clone)
    from minillm.distributed.zero import ZeroOptimizer

    lin = torch.nn.Linear(3, 2)
    opt = ZeroOptimizer(lin.parameters(), lr=0.1)
    lin(torch.randn(4, 3)).sum().backward()
    opt.step()
    sd = opt.state_dict()
    assert sd["master"][0].data_ptr() == opt.buckets[0].shard.data_ptr()
    live = opt.optimizer.state[opt.buckets[0].shard]
    assert sd["optimizer"]["state"][0]["exp_avg"].data_ptr() == live["exp_avg"].data_ptr()
