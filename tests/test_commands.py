"""`minillm train` and `minillm generate`: the happy path, and one line + exit 1 for each bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from command_kit import one_error

from minillm.checkpoint import load_checkpoint
from minillm.cli import main as cli
from minillm.commands.generate import context_plan

FAST = ["--preset", "tiny", "--corpus", "tang300", "--batch-size", "4", "--seq-len", "32", "--eval-every", "0"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cmd") / "run"
    assert cli(["train", *FAST, "--steps", "6", "--warmup", "1", "--out", str(out)]) == 0
    return out


def test_train_then_generate(run_dir, capsys):
    assert (run_dir / "ckpt.pt").is_file() and (run_dir / "loss.png").stat().st_size > 1000
    assert cli(["generate", str(run_dir), "--prompt", "床前", "--max-tokens", "10", "--temperature", "0"]) == 0
    text = capsys.readouterr().out[:-1]  # print's newline
    assert text.startswith("床前") and len(text) == 12  # char tokenizer: 10 new tokens = 10 characters


def test_train_prints_a_summary(tmp_path, capsys):
    assert cli(["train", *FAST, "--steps", "5", "--out", str(tmp_path / "r")]) == 0  # 5 < 30 steps, no --warmup
    printed = capsys.readouterr().out
    assert "parameters" in printed and '"steps": 5' in printed
    assert load_checkpoint(tmp_path / "r")["train_config"]["warmup"] == 0  # derived: min(30, 5 // 10)


def test_train_reads_a_config_file(tmp_path):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": {"n_layer": 1, "d_model": 32}, "train": {"steps": 3, "batch_size": 2,
                                                                                "seq_len": 16, "warmup": 0}}))
    out = tmp_path / "run"
    assert cli(["train", "--config", str(cfg), "--corpus", "song100", "--eval-every", "0", "--out", str(out)]) == 0
    state = load_checkpoint(out / "ckpt.pt")
    assert state["model_config"]["n_layer"] == 1 and state["model_config"]["d_model"] == 32
    assert state["train_config"]["steps"] == 3 and state["train_config"]["seq_len"] == 16


@pytest.mark.parametrize(("name", "text", "fragments"), [
    ("c.json", json.dumps({"optimizer": {}}), ["unknown key 'optimizer'", "model, train, data"]),
    ("c.json", json.dumps({"train": {"stpes": 3}}), ["unknown key 'stpes'", "did you mean 'steps'?"]),
    ("c.json", json.dumps({"model": {"n_layers": 1}}), ["unknown key 'n_layers'", "did you mean 'n_layer'?"]),
    ("c.json", json.dumps({"data": {"corpse": "tang300"}}), ["did you mean 'corpus'?"]),
    ("c.json", '{"train": {"steps": 3,}}', ["not valid JSON at line 1"]),
    ("c.yaml", "train:\n  steps: [3\n  lr: 1\n", ["not valid YAML at line", "fix that line"]),
    ("c.yaml", "model: 3\n", ["section 'model' must be a mapping"]),
    ("c.yaml", "train:\n  steps: ten\n", ["wrong type"]),
])
def test_bad_config_files(tmp_path, capsys, name, text, fragments):
    (tmp_path / name).write_text(text)
    assert cli(["train", "--config", str(tmp_path / name), "--out", str(tmp_path / "run")]) == 1
    one_error(capsys, "train", *fragments)


@pytest.mark.parametrize(("flags", "fragments"), [
    (["--lr", "nan"], ["finite lr", "nan"]),
    (["--lr", "-0.001"], ["lr > 0"]),
    (["--steps", "20", "--warmup", "40"], ["warmup must be in [0, steps=20]"]),
    (["--preset", "nope"], ["unknown preset"]),
    (["--corpus", "tang"], ["unknown corpus"]),
    (["--seq-len", "1000"], ["exceeds the model's block_size"]),
    (["--grad-accum", "3"], ["batch_size=4 is not divisible by grad_accum=3", "choose a grad_accum"]),
    (["--grad-accum", "0"], ["grad_accum must be >= 1"]),
    (["--precision", "fp8"], ["unknown precision 'fp8'", "fp32, bf16, fp16"]),
])
def test_bad_train_flags(tmp_path, capsys, flags, fragments):
    assert cli(["train", *FAST, "--steps", "3", *flags, "--out", str(tmp_path / "run")]) == 1
    one_error(capsys, "train", *fragments)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_train_with_accumulation_and_low_precision(tmp_path, capsys, precision):
    out = tmp_path / "run"
    assert cli(["train", *FAST, "--steps", "3", "--grad-accum", "2", "--precision", precision, "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-2])
    assert summary["steps"] == 3 and (summary.get("skipped_steps") == 0) == (precision == "fp16")
    state = load_checkpoint(out)
    assert state["train_config"]["grad_accum"] == 2 and state["train_config"]["precision"] == precision
    assert (state.get("grad_scaler") is not None) == (precision == "fp16")


def test_out_is_checked_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("x")  # a file where a directory should be: mkdir fails, also for root
    assert cli(["train", *FAST, "--steps", "3", "--out", str(tmp_path / "file" / "run")]) == 1
    one_error(capsys, "train", "is not writable", "choose a directory")
    assert not (tmp_path / "file" / "run").exists()


def test_resume_continues_the_run(run_dir, tmp_path, capsys):
    shutil.copytree(run_dir, tmp_path / "run")
    assert cli(["train", *FAST, "--steps", "8", "--warmup", "1", "--resume", "--out", str(tmp_path / "run")]) == 0
    assert '"steps": 8' in capsys.readouterr().out
    state = load_checkpoint(tmp_path / "run")
    assert state["step"] == 8 and state["history"]["step"] == list(range(1, 9))  # 6 saved + 2 new


def test_resume_checks_the_run(run_dir, tmp_path, capsys):
    assert cli(["train", *FAST, "--steps", "8", "--resume", "--out", str(tmp_path / "empty")]) == 1
    one_error(capsys, "train", "no checkpoint", "drop --resume")
    cfg = tmp_path / "wide.yaml"
    cfg.write_text("model:\n  d_model: 32\n  n_head: 2\n")
    assert cli(["train", *FAST, "--config", str(cfg), "--steps", "8", "--resume", "--out", str(run_dir)]) == 1
    one_error(capsys, "train", "different model", "d_model", "same --preset/--config")


def test_generate_refuses_broken_checkpoints(run_dir, tmp_path, capsys):
    data = (run_dir / "ckpt.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])
    (tmp_path / "notes.pt").write_text("hello\n")
    for name in ("cut.pt", "notes.pt"):
        assert cli(["generate", str(tmp_path / name)]) == 1
        one_error(capsys, "generate", name)
    assert cli(["generate", str(tmp_path / "nope")]) == 1
    one_error(capsys, "generate", "train first")


@pytest.mark.parametrize(("flags", "fragments"), [
    (["--num-samples", "0"], ["--num-samples must be >= 1"]),
    (["--temperature", "nan"], ["--temperature must be a finite number"]),
    (["--temperature", "-1"], ["temperature must be a finite number >= 0"]),
    (["--top-p", "0"], ["top_p must be in (0, 1]"]),
    (["--prompt", ""], ["--prompt is empty"]),
    (["--prompt", "床前xyz"], ["not in this tokenizer's vocabulary"]),
    (["--max-tokens", "0"], ["--max-tokens must be >= 1"]),
    (["--max-tokens", "500"], ["exceed the model's context of 64 tokens", "lower --max-tokens to 64", "--no-cache"]),
])
def test_bad_generate_flags(run_dir, capsys, flags, fragments):
    capsys.readouterr()
    assert cli(["generate", str(run_dir), "--prompt", "床", *flags]) == 1
    one_error(capsys, "generate", *fragments)


def test_no_cache_goes_past_the_context_and_says_so(run_dir, capsys):
    capsys.readouterr()
    assert cli(["generate", str(run_dir), "--prompt", "床", "--max-tokens", "70", "--no-cache",
                "--temperature", "0"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out[:-1]) == 71 and "only the last 64 tokens" in captured.err


def test_context_plan_by_hand():
    # the model reads prompt + new - 1 tokens: the last new token is sampled, never fed back
    assert context_plan(10, 55, 64, no_cache=False) is None  # 10 + 55 - 1 = 64: exactly fits
    assert context_plan(64, 1, 64, no_cache=False) is None  # a full prompt still gets one new token
    with pytest.raises(ValueError, match="lower --max-tokens to 55"):
        context_plan(10, 56, 64, no_cache=False)
    with pytest.raises(ValueError, match="shorten the prompt to at most 64"):
        context_plan(65, 1, 64, no_cache=False)
    assert "would read 65 tokens" in context_plan(10, 56, 64, no_cache=True)
