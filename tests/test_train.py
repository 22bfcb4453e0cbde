"""minillm.train and the chapter-6 part of minillm.data: batches, schedule, AdamW groups, exact resume."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager

import pytest
import torch

from minillm.checkpoint import load_checkpoint
from minillm.data import CharTokenizer, TokenData, build_tokenizer, load_corpus, tokenizer_from_state, tokenizer_state
from minillm.model import GPT, GPTConfig
from minillm.train import History, TrainConfig, evaluate, lr_at, make_optimizer, param_groups, split_batch, train

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


# ------------------------------------------------------------------ gradient accumulation and mixed precision (ch. 10)


def grads_after_one_step(model: GPT, data, **kw) -> dict[str, torch.Tensor]:
    """The gradients of the first optimizer step (read by after_step, before the next zero_grad)."""
    seen: dict[str, torch.Tensor] = {}

    def grab(step: int) -> None:
        seen.update({n: p.grad.clone() for n, p in model.named_parameters()})

    train(model, data, cfg(steps=1, warmup=0, grad_clip=None, **kw), after_step=grab)
    return seen


def test_accumulated_gradients_equal_the_full_batch_ones(data):
    full = grads_after_one_step(toy(data.vocab_size).double(), data, batch_size=8)
    for accum in (2, 4, 8):
        acc = grads_after_one_step(toy(data.vocab_size).double(), data, batch_size=8, grad_accum=accum)
        for name, g in full.items():
            torch.testing.assert_close(acc[name], g, rtol=1e-10, atol=1e-13, msg=f"{name}, grad_accum={accum}")
    # the test can fail: summing micro-batch gradients without dividing by grad_accum gives 4x the gradient
    model = toy(data.vocab_size).double()
    x, y = data.batch("train", 8, 16, torch.Generator().manual_seed(0))
    for xm, ym, _ in split_batch(x, y, {}, 4):
        model(xm, ym)[1].backward()
    w = "layers.0.mlp.down.weight"
    torch.testing.assert_close(dict(model.named_parameters())[w].grad, 4 * full[w], rtol=1e-10, atol=1e-13)


def test_accumulated_run_follows_the_full_batch_run(data):
    h1 = train(full := toy(data.vocab_size), data, cfg(steps=10, batch_size=8))
    h4 = train(acc := toy(data.vocab_size), data, cfg(steps=10, batch_size=8, grad_accum=4))
    assert h4.step == h1.step and h4.tokens == h1.tokens == 10 * 8 * 16  # the same batches, the same tokens
    assert max(abs(a - b) for a, b in zip(h1.train_loss, h4.train_loss, strict=True)) < 2e-6
    for a, b in zip(full.parameters(), acc.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_every_micro_batch_but_the_last_runs_under_no_sync(data):
    class Wrapped(torch.nn.Module):  # what DistributedDataParallel offers: a no_sync() context
        def __init__(self, inner: GPT) -> None:
            super().__init__()
            self.inner, self.calls, self.synced = inner, [], False

        @contextmanager
        def no_sync(self):
            self.synced = True
            yield
            self.synced = False

        def forward(self, x, y):
            if self.training:  # evaluation batches are not micro-batches
                self.calls.append(self.synced)
            return self.inner(x, y)

    model = Wrapped(toy(data.vocab_size))
    train(model, data, cfg(steps=2, batch_size=6, grad_accum=3))
    assert model.calls == [True, True, False] * 2


def test_split_batch_by_hand():
    x, y = torch.arange(12).view(6, 2), torch.arange(12).view(6, 2) + 1
    parts = split_batch(x, y, {"positions": torch.arange(6)}, 3)
    assert [p[0].tolist() for p in parts] == [[[0, 1], [2, 3]], [[4, 5], [6, 7]], [[8, 9], [10, 11]]]
    assert [p[2]["positions"].tolist() for p in parts] == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError, match="3 rows, the tokens 6"):
        split_batch(x, y, {"mask": torch.ones(3, 2)}, 3)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_runs_train_like_fp32(data, precision):
    h32 = train(toy(data.vocab_size), data, cfg(steps=40, eval_every=40))
    hlo = train(toy(data.vocab_size), data, cfg(steps=40, eval_every=40, precision=precision))
    assert hlo.val_loss[-1] < hlo.train_loss[0] - 0.5  # it learns
    diffs = [abs(a - b) for a, b in zip(h32.train_loss, hlo.train_loss, strict=True)]
    assert max(diffs) < 0.1 and abs(hlo.val_loss[-1] - h32.val_loss[-1]) < 0.05
    assert 0 < max(diffs)  # autocast really ran: the numbers are not fp32's
    assert hlo.skipped_steps == []  # no overflow on this model at the initial scale 2^16


def overflowing(model: GPT) -> Callable[[], torch.Tensor]:
    """A regulariser whose gradient, 1e35 per weight, overflows fp32 once scaled by 2^16, ..., 2^12 (> 3.4e38)."""
    w = model.layers[0].mlp.down.weight
    return lambda: 1e35 * w.sum()


def test_fp16_skips_overflowing_steps_and_resumes_with_the_scaler(data, tmp_path):
    model = toy(data.vocab_size)
    before = [p.detach().clone() for p in model.parameters()]
    h = train(model, data, cfg(steps=5, precision="fp16", out_dir=str(tmp_path / "s")), regularizer=overflowing(model))
    # by hand: 1e35 * 2^16, 2^15, 2^14, 2^13, 2^12 are all > 3.4e38 (inf); 1e35 * 2^11 = 2.0e38 is finite
    assert h.skipped_steps == [1, 2, 3, 4, 5] and all(map(torch.equal, before, model.parameters()))
    assert load_checkpoint(tmp_path / "s")["grad_scaler"]["scale"] == 2.0**11
    # resume: the scaler's state comes from the checkpoint, so the run continues bit for bit
    straight = toy(data.vocab_size)
    h1 = train(straight, data, cfg(precision="fp16", out_dir=str(tmp_path / "a")), regularizer=overflowing(straight))
    first = toy(data.vocab_size)
    train(first, data, cfg(precision="fp16", out_dir=str(tmp_path / "b")), until=3, regularizer=overflowing(first))
    resumed = toy(data.vocab_size, seed=99)
    h2 = train(resumed, data, cfg(precision="fp16", out_dir=str(tmp_path / "b")), resume=True,
               regularizer=overflowing(resumed))
    assert h1.skipped_steps == h2.skipped_steps == [1, 2, 3, 4, 5] and h2.train_loss == h1.train_loss
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(("kw", "msg"), [({"grad_accum": 0}, "grad_accum must be >= 1"),
                                         ({"batch_size": 6, "grad_accum": 4}, "not divisible by grad_accum=4"),
                                         ({"precision": "fp8"}, "unknown precision 'fp8'")])
def test_bad_accumulation_or_precision(kw, msg):
    with pytest.raises(ValueError, match=msg):
        cfg(**kw)


def test_the_optimizer_seam(data):
    h_default = train(toy(data.vocab_size), data, cfg(steps=5))
    same = train(toy(data.vocab_size), data, cfg(steps=5),
                 optimizer=lambda m, c: torch.optim.AdamW(param_groups(m, c), lr=c.lr, betas=c.betas))
    assert same.train_loss == h_default.train_loss
    sgd = train(toy(data.vocab_size), data, cfg(steps=5), optimizer=lambda m, c: torch.optim.SGD(m.parameters(), 1.0))
    assert sgd.train_loss[0] == h_default.train_loss[0] and sgd.train_loss[1:] != h_default.train_loss[1:]
