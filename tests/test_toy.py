"""minillm.toy: the small experiment model of chapters 2-4."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minillm.data import load_corpus
from minillm.toy import Attention, Block, CharData, PositionScheme, ToyConfig, ToyLM, eval_loss, lr_at, train_toy


def test_attention_equals_torch_sdpa_causal():
    torch.manual_seed(0)
    cfg = ToyConfig(d_model=32, n_head=4)
    attn = Attention(cfg).double()
    x = torch.randn(2, 7, 32, dtype=torch.float64)
    B, T, d = x.shape
    q, k, v = (p(x).view(B, T, 4, 8).transpose(1, 2) for p in (attn.q, attn.k, attn.v))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, d)
    torch.testing.assert_close(attn(x, torch.arange(T)), attn.o(ref), rtol=0, atol=1e-12)


class ShiftBias(PositionScheme):
    """A bias that forbids attending anywhere but the current token (for the test below)."""

    def bias(self, n_head, t, device):
        return ((torch.eye(t, device=device) - 1) * 1e9).expand(n_head, t, t)


def test_position_bias_reaches_the_scores():
    torch.manual_seed(0)
    cfg = ToyConfig(d_model=16, n_head=2, position=ShiftBias())
    attn = Attention(cfg).double()
    x = torch.randn(1, 5, 16, dtype=torch.float64)
    # attending only to itself, the output is o(v(x)) at every position
    torch.testing.assert_close(attn(x, torch.arange(5)), attn.o(attn.v(x)))


def test_post_ln_block_by_hand():
    torch.manual_seed(0)
    cfg = ToyConfig(d_model=8, n_head=2, norm_position="post", alpha=2.0)
    blk = Block(cfg)
    x = torch.randn(1, 3, 8)
    pos = torch.arange(3)
    h = blk.norm1(2.0 * x + blk.attn(x, pos))
    torch.testing.assert_close(blk(x, pos), blk.norm2(2.0 * h + blk.ffn(h)))


def test_lr_schedule_hand_values():
    assert lr_at(0, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 10, 100) == pytest.approx(1.0)
    assert lr_at(10, 1.0, 10, 100) == pytest.approx(1.0)  # cosine starts at the peak
    assert lr_at(55, 1.0, 10, 100) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway: cos(pi/2) = 0
    assert lr_at(100, 1.0, 10, 100) == pytest.approx(0.1)
    assert lr_at(0, 2.0, 0, 10) == pytest.approx(2.0)


def test_char_data_round_trip_and_windows():
    data = CharData("hello world, hello moon" * 10)
    assert data.decode(data.encode("hello moon")) == "hello moon"
    x, y = data.batch("train", 4, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8)
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    with pytest.raises(ValueError, match="too few"):
        data.batch("val", 1, 1000)


def test_training_lowers_the_loss_and_learned_params_are_registered():
    torch.manual_seed(0)
    data = CharData(load_corpus("shakespeare", max_chars=20_000))
    model = ToyLM(ToyConfig(vocab_size=data.vocab_size, d_model=32, n_head=2, n_layer=1))
    start = eval_loss(model, data, seq_len=32, batches=2)
    assert start == pytest.approx(math.log(data.vocab_size), rel=0.1)  # near uniform at init
    losses = train_toy(model, data, steps=60, batch_size=8, seq_len=32, lr=1e-2)
    assert len(losses) == 60 and eval_loss(model, data, seq_len=32, batches=2) < start - 0.8


def test_config_errors():
    with pytest.raises(ValueError, match="divisible"):
        ToyConfig(d_model=10, n_head=4)
    with pytest.raises(ValueError, match="'pre' or 'post'"):
        ToyConfig(norm_position="sandwich")
    assert isinstance(ToyLM(ToyConfig()).norm_f, nn.LayerNorm)
