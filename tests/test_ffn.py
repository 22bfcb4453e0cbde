"""minillm.ffn against torch's own functions, a Llama-style MLP built here, and hand-worked values."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from minillm import ffn


@pytest.fixture
def x():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 6, 16, generator=g, dtype=torch.float64) * 3


def test_gelu_matches_torch(x):
    torch.testing.assert_close(ffn.gelu(x), F.gelu(x, approximate="none"))
    torch.testing.assert_close(ffn.gelu_tanh(x), F.gelu(x, approximate="tanh"))


def test_gelu_hand_values():
    # GeLU(1) = Phi(1) = 0.841344746..., GeLU(0) = 0, GeLU(-inf side) -> 0
    v = ffn.gelu(torch.tensor([0.0, 1.0, -1.0], dtype=torch.float64))
    torch.testing.assert_close(v, torch.tensor([0.0, 0.8413447460685429, -0.15865525393145707], dtype=torch.float64))


def test_gelu_tanh_max_gap():
    x = torch.linspace(-8, 8, 1_600_001, dtype=torch.float64)
    d = (ffn.gelu(x) - ffn.gelu_tanh(x)).abs()
    i = int(d.argmax())
    assert abs(d[i].item() - 4.73e-4) < 5e-6
    assert abs(abs(x[i].item()) - 2.70) < 0.01


def test_swish_silu(x):
    torch.testing.assert_close(ffn.silu(x), F.silu(x))
    torch.testing.assert_close(ffn.swish(x, 1.0), F.silu(x))
    torch.testing.assert_close(ffn.swish(x, 0.0), x / 2)
    torch.testing.assert_close(ffn.swish(x, 50.0), F.relu(x), atol=1e-2, rtol=0)
    # hand: silu(1) = 1 / (1 + e^-1)
    assert ffn.silu(torch.tensor(1.0, dtype=torch.float64)).item() == pytest.approx(1 / (1 + math.exp(-1)))


def test_glu_matches_torch(x):
    torch.testing.assert_close(ffn.glu(x, dim=-1), F.glu(x, dim=-1))
    torch.testing.assert_close(ffn.glu(x, dim=1), F.glu(x, dim=1))
    # hand: glu([2, 0]) = 2 * sigmoid(0) = 1
    assert ffn.glu(torch.tensor([2.0, 0.0])).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="even"):
        ffn.glu(torch.zeros(3))


def test_ffn_module_equals_formula(x):
    torch.manual_seed(0)
    m = ffn.FFN(16, 64, "relu").double()
    ref = F.linear(F.relu(F.linear(x, m.up.weight, m.up.bias)), m.down.weight, m.down.bias)
    torch.testing.assert_close(m(x), ref)


def test_swiglu_equals_llama_style_mlp(x):
    torch.manual_seed(0)
    d, h = 16, 40
    gate, up, down = nn.Linear(d, h, bias=False), nn.Linear(d, h, bias=False), nn.Linear(h, d, bias=False)
    llama = lambda t: down(F.silu(gate(t)) * up(t))  # noqa: E731
    m = ffn.GLUFFN(d, h, "swiglu")
    with torch.no_grad():
        m.gate.weight.copy_(gate.weight)
        m.up.weight.copy_(up.weight)
        m.down.weight.copy_(down.weight)
    xf = x.float()
    torch.testing.assert_close(m(xf), llama(xf))
    # functional form with matrices (d, h): weights transposed
    torch.testing.assert_close(ffn.swiglu(xf, gate.weight.T, up.weight.T, down.weight.T), llama(xf))
    # swapping gate and up changes the output
    assert not torch.allclose(ffn.swiglu(xf, up.weight.T, gate.weight.T, down.weight.T), llama(xf))


@pytest.mark.parametrize("variant,act", [("glu", torch.sigmoid), ("reglu", F.relu), ("geglu", F.gelu),
                                          ("swiglu", F.silu)])
def test_glu_variants(variant, act, x):
    torch.manual_seed(1)
    m = ffn.GLUFFN(16, 24, variant).double()
    ref = m.down(act(x @ m.gate.weight.T) * (x @ m.up.weight.T))
    torch.testing.assert_close(m(x), ref)


def test_llama_hidden_size():
    assert ffn.llama_hidden_size(4096) == 11008
    assert ffn.llama_hidden_size(5120) == 13824
    assert ffn.llama_hidden_size(8192) == 22016  # LLaMA-1 65B
    assert ffn.llama_hidden_size(8192, multiple_of=4096, ffn_dim_multiplier=1.3) == 28672  # Llama-2-70B
    # hand: dim 48 -> int(128) = 128 -> rounded up to 256 with multiple_of 256; to 128 with 32
    assert ffn.llama_hidden_size(48, multiple_of=256) == 256
    assert ffn.llama_hidden_size(48, multiple_of=32) == 128
    assert ffn.llama_hidden_size(50, multiple_of=8) == 136  # int(133.33) = 133 -> 136 (up, not 128)
    with pytest.raises(ValueError):
        ffn.llama_hidden_size(0)
    with pytest.raises(TypeError):
        ffn.llama_hidden_size(64.0)


def test_param_counts():
    for d, h in [(16, 64), (48, 128), (7, 13)]:
        assert ffn.ffn_params(d, h) == sum(p.numel() for p in ffn.FFN(d, h).parameters())
        assert ffn.ffn_params(d, h, bias=False) == sum(p.numel() for p in ffn.FFN(d, h, bias=False).parameters())
        assert ffn.glu_ffn_params(d, h) == sum(p.numel() for p in ffn.GLUFFN(d, h).parameters())
        assert ffn.glu_ffn_params(d, h, True) == sum(p.numel() for p in ffn.GLUFFN(d, h, bias=True).parameters())
    # 8/3 rule: the GLU FFN with h = 8d/3 has as many weights as a 4d classic FFN
    d = 96
    assert ffn.glu_ffn_params(d, 8 * d // 3, bias=False) == ffn.ffn_params(d, 4 * d, bias=False)


def test_bad_input():
    with pytest.raises(ValueError, match="unknown activation"):
        ffn.FFN(8, 16, "tanhh")
    with pytest.raises(ValueError, match="unknown GLU variant"):
        ffn.GLUFFN(8, 16, "swish")
    with pytest.raises(ValueError, match="positive"):
        ffn.FFN(8, 0)
