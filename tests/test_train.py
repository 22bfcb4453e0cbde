"""minillm.train and the chapter-6 part of minillm.data: batches, schedule, AdamW groups, exact resume."""

from __future__ import annotations

import math

import pytest
import torch

from minillm.checkpoint import load_checkpoint
from minillm.data import CharTokenizer, TokenData, build_tokenizer, load_corpus, tokenizer_from_state, tokenizer_state
from minillm.model import GPT, GPTConfig
from minillm.train import History, TrainConfig, evaluate, lr_at, make_optimizer, train

TEXT = load_corpus("shakespeare", max_chars=20_000)


@pytest.fixture(scope="module")
def data() -> TokenData:
    return TokenData(TEXT, CharTokenizer.from_text(TEXT))


def toy(vocab: int, seed: int = 0) -> GPT:
    """A one-layer GPT small enough to train in a second."""
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab, block_size=32, n_layer=1, n_head=2, d_model=32, pos="learned"))


def cfg(**kw) -> TrainConfig:
    base = dict(steps=20, batch_size=4, seq_len=16, lr=3e-3, warmup=2, eval_every=10, eval_batches=2, progress=False)
    return TrainConfig(**{**base, **kw})


# ------------------------------------------------------------------ data


def test_char_tokenizer_by_hand():
    tok = CharTokenizer.from_text("hello")
    assert tok.chars == "ehlo" and tok.encode("hole") == [1, 3, 2, 0] and tok.decode([1, 0]) == "he"
    with pytest.raises(ValueError, match="trained on"):
        tok.encode("hex")


def test_tokenizer_state_round_trip():
    char = CharTokenizer.from_text(TEXT)
    assert tokenizer_from_state(tokenizer_state(char)).encode("To be") == char.encode("To be")
    bpe = build_tokenizer("床前明月光，疑是地上霜。" * 20 + TEXT[:3000], "bpe", vocab_size=300)
    again = tokenizer_from_state(tokenizer_state(bpe))
    s = "举头望明月 To be, or not"
    assert again.encode(s) == bpe.encode(s) and again.decode(again.encode(s)) == s
    with pytest.raises(ValueError, match="vocab_size > 256"):
        build_tokenizer(TEXT, "bpe", vocab_size=100)
    with pytest.raises(ValueError, match="'char' or 'bpe'"):
        build_tokenizer(TEXT, "word")


def test_batches_are_shifted_windows_of_their_split(data):
    x, y = data.batch("train", 8, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16)
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x moved one token left
    train_text = data.tokenizer.decode(data.train.tolist())
    for row in range(8):  # each window is a real piece of the training text
        assert data.tokenizer.decode(x[row].tolist() + y[row, -1:].tolist()) in train_text
    assert len(data.val) == int(len(TEXT) * 0.1) and len(data.train) + len(data.val) == len(TEXT)
    with pytest.raises(ValueError, match="too few"):
        data.batch("val", 1, 10_000)
    with pytest.raises(ValueError, match="'train' or 'val'"):
        data.batch("test", 1, 8)


# ------------------------------------------------------------------ schedule and optimizer


def test_lr_schedule_by_hand():
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)  # warm-up: (step + 1) / warmup
    assert lr_at(10, 1.0, 10, 100) == pytest.approx(1.0)  # the peak
    assert lr_at(55, 1.0, 10, 100) == pytest.approx(0.55)  # halfway through the cosine: (0.1 + 1) / 2
    assert lr_at(100, 1.0, 10, 100) == pytest.approx(0.1) and lr_at(100, 1.0, 10, 100, min_ratio=0.0) == 0.0


def test_weight_decay_only_on_matrices(data):
    model = toy(data.vocab_size)
    opt = make_optimizer(model, cfg(weight_decay=0.1))
    decayed = {id(p) for p in opt.param_groups[0]["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.dim() >= 2), name
    assert opt.param_groups[1]["weight_decay"] == 0.0 and opt.defaults["betas"] == (0.9, 0.95)


@pytest.mark.parametrize(("kw", "msg"), [({"steps": 0}, "steps"), ({"warmup": 50}, "warmup"), ({"lr": 0}, "lr"),
                                         ({"lr": float("nan")}, "finite lr"), ({"lr": -1e-3}, "lr > 0"),
                                         ({"eval_every": -1}, "eval_every")])
def test_bad_config(kw, msg):
    with pytest.raises(ValueError, match=msg):
        cfg(**kw)


def test_warmup_left_unset_fits_the_run():
    assert TrainConfig(steps=300).warmup == 30 and TrainConfig(steps=5000).warmup == 30  # the old default
    assert TrainConfig(steps=20).warmup == 2 and TrainConfig(steps=5).warmup == 0  # short runs: steps // 10
    assert TrainConfig(steps=20, warmup=7).warmup == 7


# ------------------------------------------------------------------ training


def test_training_lowers_the_loss(data):
    model = toy(data.vocab_size)
    before = evaluate(model, data, cfg())
    assert before == pytest.approx(math.log(data.vocab_size), abs=0.5)  # near uniform at init
    hist = train(model, data, cfg(steps=80, eval_every=40))
    assert hist.step == list(range(1, 81)) and hist.val_step == [40, 80]
    assert hist.val_loss[-1] < before - 0.5 and hist.tokens == 80 * 4 * 16 and hist.tokens_per_s > 0
    assert evaluate(model, data, cfg()) == evaluate(model, data, cfg())  # the same windows every time


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(data, tmp_path):
    straight = toy(data.vocab_size)
    h1 = train(straight, data, cfg(out_dir=str(tmp_path / "a")))
    interrupted = toy(data.vocab_size)
    train(interrupted, data, cfg(out_dir=str(tmp_path / "b")), until=9)  # stops after step 9, off the eval grid
    assert load_checkpoint(tmp_path / "b" / "ckpt.pt")["step"] == 9
    resumed = toy(data.vocab_size, seed=99)  # different init: everything must come from the checkpoint
    h2 = train(resumed, data, cfg(out_dir=str(tmp_path / "b")), resume=True)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert h2.train_loss == h1.train_loss and h2.val_loss == h1.val_loss and h2.step == h1.step


def test_checkpoint_holds_model_config_and_tokenizer(data, tmp_path):
    train(toy(data.vocab_size), data, cfg(steps=3, out_dir=str(tmp_path)))
    state = load_checkpoint(tmp_path / "ckpt.pt")
    assert state["step"] == 3 and state["tokenizer"]["kind"] == "char"
    assert state["train_config"]["steps"] == 3 and History(**state["history"]).step == [1, 2, 3]
    with pytest.raises(FileNotFoundError, match="train first"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a minillm checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="out_dir"):
        train(toy(data.vocab_size), data, cfg(), resume=True)


def test_a_diverging_run_stops_with_advice(data):
    with pytest.raises(FloatingPointError, match="lower lr"):
        train(toy(data.vocab_size), data, cfg(lr=1e12, grad_clip=None, warmup=0, steps=30))


def test_regularizer_and_after_step_seams(data):
    plain = toy(data.vocab_size)
    h_plain = train(plain, data, cfg(steps=6))
    seen: list[tuple[int, bool]] = []
    hooked = toy(data.vocab_size)
    w = hooked.layers[0].mlp.down.weight

    def after_step(step: int) -> None:  # runs after opt.step(), gradients still in place
        seen.append((step, w.grad is not None))

    # a zero regulariser changes nothing, and the logged loss is the model's own
    h_zero = train(hooked, data, cfg(steps=6), regularizer=lambda: 0.0 * w.sum(), after_step=after_step)
    assert seen == [(s, True) for s in range(1, 7)]
    assert h_zero.train_loss == h_plain.train_loss
    for a, b in zip(plain.parameters(), hooked.parameters(), strict=True):
        assert torch.equal(a, b)
    # an L2 pull on one matrix shrinks it compared with the plain run, and only through its gradient
    pulled = toy(data.vocab_size)
    wp = pulled.layers[0].mlp.down.weight
    train(pulled, data, cfg(steps=6), regularizer=lambda: 1e3 * wp.pow(2).sum())
    assert wp.norm() < 0.5 * plain.layers[0].mlp.down.weight.norm()
