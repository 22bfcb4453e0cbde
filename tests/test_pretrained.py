"""The shipped base model (minillm/base_model): it loads, gives the recorded losses, and its recipe reproduces the
recorded first training steps; bits per byte and the held-out loss on hand-worked cases; the data mixture."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from minillm.data import CharTokenizer, MixedData
from minillm.model import GPT, GPTConfig
from minillm.pretrained import BASE_DIR, RECIPE, bits_per_byte, evaluate_corpora, heldout_loss, load_base, read_meta


@pytest.fixture(scope="module")
def base():
    return load_base("cpu")


def test_shipped_files_are_small_and_described():
    size = (BASE_DIR / "model.safetensors").stat().st_size
    assert size < 8e6, f"the shipped weights are {size / 1e6:.1f} MB; the package should stay small"
    meta = read_meta()
    assert set(meta["val"]) == {"shakespeare", "tang300", "song100"}
    assert (BASE_DIR / "card.md").read_text(encoding="utf-8").count(f"{meta['params']:,}") >= 1


def test_weights_load_and_give_the_recorded_loss(base):
    model, tok = base
    meta = read_meta()
    assert model.num_params() == meta["params"]
    assert tok.vocab_size == model.cfg.vocab_size == meta["model_config"]["vocab_size"]
    assert model.lm_head.weight is model.embed_tokens.weight  # tied: stored once, shared after loading
    got = evaluate_corpora(model, tok)
    for name, rec in meta["val"].items():
        # BLAS kernels differ between CPUs: sums in another order move the loss in the 6th digit, not the 3rd
        assert got[name]["nats_per_token"] == pytest.approx(rec["nats_per_token"], rel=1e-3), name
        assert got[name]["bits_per_byte"] == pytest.approx(rec["bits_per_byte"], rel=1e-3), name
        assert got[name]["tokens"] == rec["tokens"] and got[name]["bytes"] == rec["bytes"]
    # a trained model, far below the uniform guess ln V and below the unigram entropy of English characters (~3.3 nats)
    assert meta["val"]["shakespeare"]["nats_per_token"] < 2.0 < math.log(tok.vocab_size)


def test_recipe_reproduces_the_first_steps(tmp_path):
    from minillm.commands import train as train_cmd
    from minillm.fast import to_fast
    from minillm.train import train

    p = argparse.ArgumentParser()
    train_cmd.add_arguments(p)
    args = p.parse_args(["--preset", "base", "--config", str(RECIPE), "--out", str(tmp_path)])
    model_cfg, cfg, data, _ = train_cmd.build(args)
    cfg.out_dir, cfg.progress = None, False
    first = read_meta()["first_losses"]
    torch.manual_seed(cfg.seed)
    model = to_fast(GPT(model_cfg))  # as `minillm train` runs it
    hist = train(model, data, cfg, until=len(first))
    # the same data order and init; the loss differs only by float rounding, which grows slowly over steps
    torch.testing.assert_close(torch.tensor(hist.train_loss), torch.tensor(first), rtol=2e-3, atol=0)


def test_bits_per_byte_by_hand():
    # 2 tokens of 1 nat each over 2 bytes: 2 nats = 2 / ln 2 bits in 2 bytes
    assert bits_per_byte(1.0, 2, 2) == pytest.approx(1 / math.log(2))
    # a Chinese character is 3 UTF-8 bytes: the same loss per token is a third per byte
    assert bits_per_byte(3 * math.log(2), 1, 3) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n_bytes > 0"):
        bits_per_byte(1.0, 1, 0)


def test_heldout_loss_covers_every_token_once():
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("tiny", vocab_size=11, block_size=8)).double().eval()
    ids = torch.randint(0, 11, (1 + 3 * 5,))  # 3 windows of 5 predictions
    logits = torch.cat([model(ids[i: i + 5][None])[0][0] for i in (0, 5, 10)])  # (15, V), each window on its own
    want = F.cross_entropy(logits, ids[1:], reduction="mean").item()
    assert heldout_loss(model, ids, seq_len=5, batch_size=2) == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="too few"):
        heldout_loss(model, ids[:3], seq_len=5)


def test_mixed_data_samples_by_weight_and_splits_each_corpus():
    tok = CharTokenizer.from_text("ab")
    data = MixedData({"a": "a" * 1000, "b": "b" * 1000}, tok, {"a": 3.0, "b": 1.0})
    assert len(data.parts["a"].val) == len(data.parts["b"].val) == 100  # each corpus keeps its own 10%
    x, y = data.batch("train", 4000, 4, torch.Generator().manual_seed(0))
    share_a = (x[:, 0] == tok.stoi["a"]).double().mean().item()
    assert share_a == pytest.approx(0.75, abs=0.03)  # 3 : 1
    assert torch.equal(x[:, 1:], y[:, :-1])  # next-token targets within each row
    with pytest.raises(ValueError, match="one weight per corpus"):
        MixedData({"a": "aa"}, tok, {"b": 1.0})
    with pytest.raises(ValueError, match="> 0"):
        MixedData({"a": "a" * 100}, tok, {"a": 0.0})


def test_load_base_without_files_says_how_to_build(tmp_path):
    with pytest.raises(FileNotFoundError, match="make_base_model"):
        load_base("cpu", tmp_path)


def test_generate_command_samples_from_the_base_model(capsys):
    from minillm.cli import main

    assert main(["generate", "base", "--prompt", "ROMEO:", "--max-tokens", "30", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ROMEO:") and len(out.rstrip("\n")) >= len("ROMEO:") + 20
