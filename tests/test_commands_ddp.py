"""`minillm train` under torchrun: 2 processes give the single-process loss curve, and a checkpoint of a plain GPT."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minillm.checkpoint import load_checkpoint, restore_model
from minillm.commands.train import torchrun_env
from minillm.distributed import free_port
from minillm.model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--preset", "tiny", "--corpus", "tang300", "--steps", "5", "--batch-size", "4", "--seq-len", "32",
         "--eval-every", "2", "--lr", "0.01", "--warmup", "1"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MINILLM_DEVICE="cpu")
    return env


def _run(cmd: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return res


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    _run([sys.executable, "-m", "minillm.cli", "train", *FLAGS, "--out", str(out)])
    return load_checkpoint(out / "ckpt.pt", "cpu")


@pytest.mark.parametrize("ddp,extra", [("minillm", ["--grad-accum", "2"]), ("torch", [])])
def test_torchrun_two_processes_equal_one(tmp_path, single, ddp, extra):
    out = tmp_path / ddp
    res = _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                "--master-port", str(free_port()), "-m", "minillm.cli", "train", *FLAGS, *extra, "--ddp", ddp,
                "--out", str(out)])
    assert res.stdout.count('"train_loss"') == 1  # only rank 0 prints the summary
    assert f"2 processes, {ddp} DDP" in res.stdout
    state = load_checkpoint(out / "ckpt.pt", "cpu")
    hist, ref = state["history"], single["history"]
    assert hist["step"] == ref["step"] == [1, 2, 3, 4, 5]
    torch.testing.assert_close(torch.tensor(hist["train_loss"]), torch.tensor(ref["train_loss"]), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(hist["val_loss"]), torch.tensor(ref["val_loss"]), atol=1e-5, rtol=0)
    assert hist["train_loss"][-1] < hist["train_loss"][0] - 0.1  # it learned something: the curves are not flat
    # the checkpoint is of the plain model: it loads into a GPT with no wrapper, and its weights are the single run's
    assert not any(k.startswith("module.") for k in state["model"])
    model = GPT(GPTConfig(**state["model_config"]))
    restore_model(model, state)
    # AdamW divides by sqrt(v): float32 rounding in a gradient (1e-7 relative) becomes a few 1e-5 in a weight
    # after 5 steps at lr 0.01, and the key bias, whose exact gradient is 0 (softmax ignores a constant added to
    # every score), takes +-lr steps from pure rounding noise; so: relative distance per tensor, key biases apart
    for name, p in model.state_dict().items():
        ref_p = single["model"][name]
        assert (p - ref_p).abs().max() < 1e-3, name
        if not name.endswith("k_proj.bias"):
            assert (p - ref_p).norm() <= 1e-4 * ref_p.norm(), name


def test_torchrun_env(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert torchrun_env() is None
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert torchrun_env() == (1, 2, 1)
