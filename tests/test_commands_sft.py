"""`minillm sft` and `minillm chat`: base checkpoint + data -> chat checkpoint -> a streamed conversation on stdin;
one line + exit 1 for each bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from command_kit import one_error

from minillm.checkpoint import load_checkpoint
from minillm.cli import main as cli
from minillm.sft import ChatTokenizer

TINY = ["--preset", "tiny", "--corpus", "tang300", "--batch-size", "4", "--seq-len", "32", "--eval-every", "0"]
FAST_SFT = ["--steps", "3", "--batch-size", "2", "--seq-len", "64", "--warmup", "0"]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    """A tiny pretrained checkpoint (tang300 characters only) made by `minillm train`."""
    out = tmp_path_factory.mktemp("sftcmd") / "base"
    assert cli(["train", *TINY, "--steps", "4", "--warmup", "1", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def chat_dir(base_dir) -> Path:
    out = base_dir.parent / "chat"
    assert cli(["sft", "--base", str(base_dir), "--tasks", "author,next", *FAST_SFT, "--out", str(out)]) == 0
    return out


def test_sft_writes_a_chat_checkpoint(base_dir, chat_dir, capsys):
    base = load_checkpoint(base_dir)
    state = load_checkpoint(chat_dir)
    assert state["model_config"]["vocab_size"] == base["model_config"]["vocab_size"] + 3
    tok = ChatTokenizer(state["tokenizer"]["chars"])
    assert tok.chars.startswith(base["tokenizer"]["chars"]) and tok.end_id == tok.vocab_size - 1
    assert state["step"] == 3 and state["train_config"]["seq_len"] == 64


def test_sft_reports_what_it_did(base_dir, tmp_path, capsys):
    assert cli(["sft", "--base", str(base_dir), "--tasks", "author,write,next,play", *FAST_SFT,
                "--out", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    # the tang300-only tokenizer cannot write the English `play` questions nor song100's extra characters
    assert "training examples" in out and "skipped" in out and "minillm chat" in out


def test_sft_from_jsonl_padded_and_mixed(base_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    rows = [{"prompt": "春眠", "response": "不觉晓"}, {"messages": [{"role": "user", "content": "花落"},
                                                               {"role": "assistant", "content": "知多少"}]}]
    data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    out = tmp_path / "j"
    assert cli(["sft", "--base", str(base_dir), "--data", str(data), *FAST_SFT, "--no-packing", "--mix-ratio", "0.5",
                "--out", str(out)]) == 0
    assert load_checkpoint(out)["step"] == 3


def test_chat_streams_and_resets(chat_dir, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("春晓作者是谁？\n/reset\n床前明月光下一句是？\n/quit\nnever read\n"))
    assert cli(["chat", str(chat_dir), "--temperature", "0", "--max-tokens", "5"]) == 0
    out = capsys.readouterr().out
    replies = [line for line in out.splitlines() if line.startswith("bot> ")]
    assert len(replies) == 2 and "(conversation cleared)" in out
    assert all(len(r) <= len("bot> ") + 5 * len("<|assistant|>") for r in replies)  # at most 5 tokens each


def test_chat_ends_at_eof_and_skips_unknown_characters(chat_dir, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("春眠 ☃\n"))
    assert cli(["chat", str(chat_dir), "--max-tokens", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("bot> ") == 1 and "☃" in captured.err


def test_chat_streams_token_by_token(chat_dir, monkeypatch):
    """Each token is written (and flushed) on its own, not the reply at once."""
    writes: list[str] = []

    class Spy(io.StringIO):
        def write(self, s: str) -> int:
            writes.append(s)
            return super().write(s)

    monkeypatch.setattr("sys.stdin", io.StringIO("春眠\n"))
    monkeypatch.setattr("sys.stdout", Spy())
    assert cli(["chat", str(chat_dir), "--max-tokens", "6", "--temperature", "1"]) == 0
    after = writes[writes.index("bot> ") + 1:]
    pieces = [w for w in after if w not in ("", "\n")]
    assert 1 <= len(pieces) <= 6 and all(len(p) == 1 or p.startswith("<|") for p in pieces)


@pytest.mark.parametrize(("argv", "fragments"), [
    (["sft", "--tasks", "poetry"], ["unknown task 'poetry'"]),
    (["sft", "--mix-ratio", "1.5"], ["--mix-ratio"]),
    (["sft", "--data", "/no/such.jsonl"], ["no data file"]),
    (["sft", "--seq-len", "4096"], ["block_size"]),
    (["sft", "--steps", "0"], ["steps must be >= 1"]),
])
def test_sft_bad_input_is_one_line(base_dir, tmp_path, capsys, argv, fragments):
    assert cli([*argv, "--base", str(base_dir), "--out", str(tmp_path / "x")]) == 1
    one_error(capsys, "sft", *fragments)


def test_sft_jsonl_with_unknown_characters(base_dir, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "hello", "response": "world"}\n', encoding="utf-8")
    assert cli(["sft", "--base", str(base_dir), "--data", str(data), "--out", str(tmp_path / "x")]) == 1
    one_error(capsys, "sft", "example 1", "lacks")


def test_chat_needs_a_fine_tuned_checkpoint(base_dir, tmp_path, capsys):
    assert cli(["chat", str(base_dir)]) == 1
    one_error(capsys, "chat", "no chat tokens", "minillm sft")
    assert cli(["chat", str(tmp_path / "none")]) == 1
    one_error(capsys, "chat", "no checkpoint")


def test_sft_default_base_is_the_shipped_model(tmp_path, capsys):
    from minillm.pretrained import WEIGHTS

    if not WEIGHTS.is_file():
        pytest.skip("the base model is not built in this checkout")
    assert cli(["sft", "--tasks", "author", "--steps", "1", "--batch-size", "1", "--seq-len", "32",
                "--out", str(tmp_path / "b")]) == 0
    assert load_checkpoint(tmp_path / "b")["model_config"]["vocab_size"] == 2917 + 3
