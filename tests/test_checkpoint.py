"""minillm.checkpoint: round trip, refusing pickled code, one-line errors for broken or foreign files."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from minillm.checkpoint import (
    config_mismatch,
    load_checkpoint,
    load_for_generation,
    model_from_checkpoint,
    restore_model,
    restore_rng,
    save_checkpoint,
)
from minillm.data import CharTokenizer, build_tokenizer
from minillm.model import GPT, GPTConfig


def tiny(vocab: int = 12, d_model: int = 16, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=16, n_layer=1, n_head=2, d_model=d_model))


class Touch:
    """Unpickling this object calls open(marker, "w"): it would create the file `marker`."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_round_trip_rebuilds_model_tokenizer_and_rng(tmp_path):
    model, tok = tiny(), CharTokenizer("abcdefghijkl")
    opt = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))[1].backward()
    opt.step()
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(7)
    save_checkpoint(tmp_path / "run" / "ckpt.pt", model, opt, 3, data_generator=gen, tokenizer=tok,
                    train_config={"steps": 10}, extra={"note": "hi"})
    expected_torch, expected_data = torch.rand(3), torch.rand(3, generator=gen)
    state = load_checkpoint(tmp_path / "run")  # a run directory works as well as its ckpt.pt
    assert state["step"] == 3 and state["format"] == "minillm-checkpoint" and state["note"] == "hi"
    again = model_from_checkpoint(state)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    gen2 = torch.Generator().manual_seed(0)
    restore_rng(state, gen2)
    assert torch.equal(torch.rand(3), expected_torch) and torch.equal(torch.rand(3, generator=gen2), expected_data)
    m2, tok2 = load_for_generation(tmp_path / "run" / "ckpt.pt")
    assert not m2.training and tok2.encode("cab") == [2, 0, 1]


def test_bpe_tokenizer_survives_weights_only_loading(tmp_path):
    tok = build_tokenizer("床前明月光，疑是地上霜。" * 30, "bpe", vocab_size=270)
    save_checkpoint(tmp_path / "c.pt", tiny(vocab=270), None, 0, tokenizer=tok)
    _, again = load_for_generation(tmp_path / "c.pt")
    assert again.encode("明月光") == tok.encode("明月光")


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["pickle", "torch.save"])
def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path, writer):
    marker = tmp_path / "pwned"
    payload = {"model": {"w": Touch(marker)}, "step": 0}
    path = tmp_path / "evil.pt"
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="refused to load") as err:
        load_checkpoint(path)
    if writer == "torch.save":
        assert "asks for io.open" in str(err.value)  # names what it would have called
    assert "\n" not in str(err.value) and not marker.exists()  # one line, and open() was never called
    # the control: the same file, unpickled without the guard, does create the marker
    if writer == "pickle":
        pickle.loads(path.read_bytes())
        assert marker.exists()


def test_truncated_and_foreign_files_get_one_line(tmp_path):
    save_checkpoint(tmp_path / "ok.pt", tiny(), None, 1)
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pt").write_text("not a checkpoint\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("cut.pt", "text.pt", "empty.pt"):
        with pytest.raises(ValueError, match="truncated or not a torch checkpoint|refused to load") as err:
            load_checkpoint(tmp_path / name)
        assert "\n" not in str(err.value), name
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="not a minillm checkpoint"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError, match="train first"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_different_model_is_named_in_one_line(tmp_path):
    save_checkpoint(tmp_path / "c.pt", tiny(d_model=16), None, 1)
    state = load_checkpoint(tmp_path / "c.pt")
    with pytest.raises(ValueError, match=r"different model \(d_model: 16 in the checkpoint, 32 now") as err:
        restore_model(tiny(d_model=32), state)
    assert "\n" not in str(err.value)
    state["model_config"] = None  # no config to compare: the shapes still give a short error
    with pytest.raises(ValueError, match="does not fit this model"):
        restore_model(tiny(d_model=32), state)
    assert config_mismatch({"a": 1, "b": 2}, {"a": 1, "b": 3, "new": 0}) == ["b: 2 in the checkpoint, 3 now"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_resume_on_cuda_moves_rng_states_back_to_the_cpu(tmp_path):
    """load_checkpoint(map_location="cuda") puts every tensor on the GPU, the RNG states too; a CPU generator's
    set_state needs a CPU ByteTensor, so restore_rng moves them back (before, resume raised here)."""
    from minillm.data import CharTokenizer, TokenData, load_corpus
    from minillm.train import TrainConfig, train

    text = load_corpus("shakespeare", max_chars=20_000)
    data = TokenData(text, CharTokenizer.from_text(text))
    cfg = dict(steps=8, batch_size=4, seq_len=16, warmup=2, eval_every=4, eval_batches=2, progress=False)
    straight = tiny(vocab=data.vocab_size).cuda()
    train(straight, data, TrainConfig(**cfg, out_dir=str(tmp_path / "a")))
    interrupted = tiny(vocab=data.vocab_size).cuda()
    train(interrupted, data, TrainConfig(**cfg, out_dir=str(tmp_path / "b")), until=3)
    state = load_checkpoint(tmp_path / "b", "cuda")
    assert state["rng_data"].device.type == "cuda"  # what made set_state fail
    resumed = tiny(vocab=data.vocab_size, seed=9).cuda()
    train(resumed, data, TrainConfig(**cfg, out_dir=str(tmp_path / "b")), resume=True)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)  # GPU atomics may reorder float sums
