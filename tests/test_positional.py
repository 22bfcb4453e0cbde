"""minillm.positional and minillm.rope_scaling: each scheme against a hand-worked case and an independent
reference (the papers' formulas, a complex-number RoPE written here with torch.polar)."""

from __future__ import annotations

import math

import pytest
import torch

from minillm.positional import (
    ALiBi,
    Learned,
    RoPE,
    Sinusoidal,
    T5Bias,
    alibi_bias,
    alibi_slopes,
    apply_rope,
    interleave_to_halves,
    rope_cos_sin,
    rotate_half,
    sinusoidal_table,
    t5_bucket,
)
from minillm.rope_scaling import (
    RopeScaling,
    dynamic_ntk_base,
    inv_frequencies,
    ntk_base,
    rope_frequencies,
    yarn_correction_range,
    yarn_inv_frequencies,
    yarn_mscale,
)

# ---------------------------------------------------------------------------------------------- sinusoidal


def test_sinusoidal_hand_worked_and_layouts():
    pe = sinusoidal_table(3, 4)  # d=4: frequencies 1 and 1/100
    want = torch.tensor([[0, 1, 0, 1],
                         [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)],
                         [math.sin(2), math.cos(2), math.sin(0.02), math.cos(0.02)]])
    torch.testing.assert_close(pe, want)
    big = sinusoidal_table(50, 16)
    p, i = 37, 3  # the paper's formula, element by element
    assert big[p, 2 * i].item() == pytest.approx(math.sin(p / 10000 ** (2 * i / 16)), abs=1e-6)
    assert big[p, 2 * i + 1].item() == pytest.approx(math.cos(p / 10000 ** (2 * i / 16)), abs=1e-6)
    perm = interleave_to_halves(16)
    assert perm[:4].tolist() == [0, 2, 4, 6] and perm[8:10].tolist() == [1, 3]
    halves = sinusoidal_table(50, 16, layout="halves")
    torch.testing.assert_close(big[:, perm], halves)
    assert not torch.allclose(big, halves)
    with pytest.raises(ValueError, match="even"):
        sinusoidal_table(4, 5)


def test_learned_cannot_extrapolate_and_sinusoidal_adds_table():
    x = torch.zeros(1, 5, 8)
    torch.testing.assert_close(Sinusoidal().embed(x, torch.arange(5))[0], sinusoidal_table(5, 8))
    scheme = Learned(16, 64)
    torch.testing.assert_close(scheme.embed(torch.zeros(1, 3, 64), torch.tensor([0, 5, 15]))[0],
                               scheme.weight[[0, 5, 15]])
    with pytest.raises(ValueError, match="max_len=16"):
        scheme.embed(torch.zeros(1, 17, 64), torch.arange(17))


# ---------------------------------------------------------------------------------------------- T5


def test_t5_buckets_hand_worked():
    rel = torch.tensor([-1, -8, -20, -128, 1, 8, 128])  # key - query
    # bidirectional, 32 buckets: 16 per side, max_exact = 8; n=20: 8 + floor(ln(20/8)/ln(128/8) * 8)
    # = 8 + floor(0.9163/2.7726 * 8) = 8 + floor(2.64) = 10; n=128: 8 + 8 = 16 -> clipped to 15
    assert t5_bucket(rel, bidirectional=True).tolist() == [1, 8, 10, 15, 17, 24, 31]
    # causal: all 32 buckets for the past, max_exact = 16; n=20: 16 + floor(ln(20/16)/ln(8) * 16) = 17
    assert t5_bucket(torch.tensor([0, -1, -15, -16, -20, -500, 3]), bidirectional=False).tolist() == \
        [0, 1, 15, 16, 17, 31, 0]


def t5_reference(rel: int, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128) -> int:
    """The formula of Raffel et al. (mesh-tensorflow), written with Python scalars, n = query - key."""
    ret, n = 0, -rel
    if bidirectional:
        num_buckets //= 2
        ret += num_buckets if n < 0 else 0
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return ret + min(large, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_buckets_match_scalar_formula(bidirectional):
    rel = torch.arange(-300, 301)
    got = t5_bucket(rel, bidirectional).tolist()
    assert got == [t5_reference(r, bidirectional) for r in rel.tolist()]


def test_t5_bias_shape_and_values():
    scheme = T5Bias(4)
    assert scheme.table.weight.abs().sum() == 0  # starts at zero: no position preference before training
    with torch.no_grad():
        scheme.table.weight.copy_(torch.arange(32 * 4, dtype=torch.float).view(32, 4))
    pos = torch.arange(6)
    b = scheme.bias(pos, pos)
    assert b.shape == (4, 6, 6)
    assert b[2, 5, 1].item() == 4 * 4 + 2  # query 5, key 1: bucket 4 (causal), head 2
    # the rows of queries 4, 5 over keys 0..5 (decoding with a cache) are the last rows of the full matrix
    torch.testing.assert_close(scheme.bias(torch.tensor([4, 5]), pos), b[:, 4:])


# ---------------------------------------------------------------------------------------------- RoPE


def rope_complex(x: torch.Tensor, pos: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Independent reference: adjacent pairs as complex numbers, multiplied by e^{i m theta_j}."""
    d = x.shape[-1]
    theta = 1.0 / base ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    rot = torch.polar(torch.ones(len(pos), d // 2, dtype=torch.float64), pos[:, None].double() * theta)
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(z * rot).flatten(-2).to(x.dtype)


def test_rope_2d_hand_worked():
    # d=2, one pair, theta=1: (1, 0) at position m turns by m radians
    cos, sin = rope_cos_sin(torch.tensor([0, 1, 2]), torch.tensor([1.0]))
    x = torch.tensor([[1.0, 0.0]] * 3)
    want = torch.tensor([[1.0, 0.0], [math.cos(1), math.sin(1)], [math.cos(2), math.sin(2)]])
    torch.testing.assert_close(apply_rope(x, cos.float(), sin.float()), want)
    torch.testing.assert_close(apply_rope(x, cos.float(), sin.float(), "adjacent"), want)
    torch.testing.assert_close(rotate_half(torch.tensor([1.0, 2, 3, 4])), torch.tensor([-3.0, -4, 1, 2]))


def test_rope_adjacent_matches_complex_reference():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 10, 16, dtype=torch.float64)
    pos = torch.arange(10)
    cos, sin = rope_cos_sin(pos, inv_frequencies(16))
    torch.testing.assert_close(apply_rope(x, cos, sin, "adjacent"), rope_complex(x, pos))


def test_rope_layouts_are_related_by_the_permutation():
    torch.manual_seed(1)
    x = torch.randn(2, 4, 12, 32, dtype=torch.float64)
    cos, sin = rope_cos_sin(torch.arange(12), inv_frequencies(32))
    perm = interleave_to_halves(32)
    inv = torch.argsort(perm)
    adjacent = apply_rope(x, cos, sin, "adjacent")
    via_halves = apply_rope(x[..., perm], cos, sin, "halves")[..., inv]
    torch.testing.assert_close(adjacent, via_halves)
    assert not torch.allclose(adjacent, apply_rope(x, cos, sin, "halves"))


@pytest.mark.parametrize("layout", ["halves", "adjacent"])
def test_rope_score_depends_only_on_offset(layout):
    torch.manual_seed(2)
    q, k = torch.randn(64, dtype=torch.float64), torch.randn(64, dtype=torch.float64)
    inv_freq = inv_frequencies(64)

    def score(m: int, n: int) -> float:
        cos, sin = rope_cos_sin(torch.tensor([m, n]), inv_freq)
        rq = apply_rope(q[None], cos[:1], sin[:1], layout)
        rk = apply_rope(k[None], cos[1:], sin[1:], layout)
        return (rq @ rk.T).item()

    for m, n, s in [(5, 2, 7), (100, 3, 1000), (0, 40, 13)]:
        assert score(m, n) == pytest.approx(score(m + s, n + s), abs=1e-9)
    assert score(5, 2) != pytest.approx(score(5, 3), abs=1e-6)  # but it does depend on the offset


def test_rope_scheme_rotates_q_and_k():
    torch.manual_seed(3)
    q, k = torch.randn(1, 2, 7, 8), torch.randn(1, 2, 7, 8)
    rq, rk = RoPE(layout="adjacent").rotate(q, k, torch.arange(7))
    torch.testing.assert_close(rq, rope_complex(q, torch.arange(7)))
    torch.testing.assert_close(rk, rope_complex(k, torch.arange(7)))
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))  # rotations keep lengths


# ---------------------------------------------------------------------------------------------- scaling


def test_ntk_base_and_dynamic():
    assert ntk_base(10000, 4, 128) == pytest.approx(40890, abs=1)  # 10000 * 4^(128/126) = 40889.94
    # the slowest pair turns exactly 4x slower; the fastest not at all
    fast, slow = inv_frequencies(128, 10000), inv_frequencies(128, ntk_base(10000, 4, 128))
    assert slow[0] == fast[0] and slow[-1].item() == pytest.approx(fast[-1].item() / 4, rel=1e-12)
    assert dynamic_ntk_base(10000, 128, 4096, 4096) == 10000
    assert dynamic_ntk_base(10000, 128, 8192, 4096) == pytest.approx(ntk_base(10000, 2, 128))
    assert dynamic_ntk_base(10000, 128, 8192, 4096, factor=2) == pytest.approx(ntk_base(10000, 3, 128))


def test_yarn_hand_worked():
    # low  = floor(128 ln(4096/(2 pi 32)) / (2 ln 10000)) = floor(128 * 3.0143 / 18.4207) = floor(20.94) = 20
    # high = ceil(128 ln(4096/(2 pi))   / (2 ln 10000)) = ceil(128 * 6.4800 / 18.4207)  = ceil(45.03) = 46
    assert yarn_correction_range(128, 10000, 4096, 32, 1) == (20, 46)
    assert yarn_mscale(4) == pytest.approx(1.1386, abs=5e-5)  # 0.1 ln 4 + 1
    theta = inv_frequencies(128)
    inv = yarn_inv_frequencies(128, 10000, 4, 4096)
    torch.testing.assert_close(inv[:21], theta[:21])  # kept (fast pairs)
    torch.testing.assert_close(inv[46:], theta[46:] / 4)  # interpolated (slow pairs)
    r = (33 - 20) / 26  # in the ramp: a linear blend
    assert inv[33].item() == pytest.approx(theta[33].item() * (1 - r) + theta[33].item() / 4 * r)


def test_rope_frequencies_dispatch():
    theta = inv_frequencies(16)
    torch.testing.assert_close(rope_frequencies(16, 10000, 10, RopeScaling("pi", 4, 64))[0], theta / 4)
    assert rope_frequencies(16, 10000, 10, RopeScaling("yarn", 4, 64))[1] == pytest.approx(yarn_mscale(4))
    torch.testing.assert_close(rope_frequencies(16, 10000, 32, RopeScaling("dynamic", 4, 64))[0], theta)
    with pytest.raises(ValueError, match="kind"):
        RopeScaling("linear", 2, 64)


def test_pi_is_rope_at_scaled_positions():
    torch.manual_seed(4)
    q = torch.randn(1, 1, 8, 16, dtype=torch.float64)
    rq, _ = RoPE(scaling=RopeScaling("pi", 4, 2)).rotate(q, q, torch.arange(8))
    cos, sin = rope_cos_sin(torch.arange(8) / 4, inv_frequencies(16))
    torch.testing.assert_close(rq, apply_rope(q, cos, sin))


# ---------------------------------------------------------------------------------------------- ALiBi


def test_alibi_slopes():
    assert alibi_slopes(8) == [1 / 2 ** k for k in range(1, 9)]
    # n=12 by the paper's reference code: 8 slopes of n=8 (2^-1 .. 2^-8), then get_slopes(16)[0::2][:4];
    # n=16 has start = ratio = 2^(-8/16) = 2^-0.5, so [0::2] = 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5
    want = [2.0 ** -k for k in range(1, 9)] + [2.0 ** -0.5, 2.0 ** -1.5, 2.0 ** -2.5, 2.0 ** -3.5]
    assert alibi_slopes(12) == pytest.approx(want, rel=1e-12)
    assert alibi_slopes(1) == [2.0 ** -8]
    # n=6: slopes(4) = 2^-2, 2^-4, 2^-6, 2^-8, then slopes(8)[0::2][:2] = 2^-1, 2^-3
    assert alibi_slopes(6) == pytest.approx([2.0 ** -k for k in (2, 4, 6, 8, 1, 3)], rel=1e-12)
    with pytest.raises(ValueError):
        alibi_slopes(0)


def test_alibi_bias_matrix():
    b = alibi_bias(2, 3)  # slopes 1/16, 1/256
    want0 = torch.tensor([[0, 0, 0], [-1, 0, 0], [-2, -1, 0]]) / 16
    torch.testing.assert_close(b[0], want0.float())
    torch.testing.assert_close(b[1], want0.float() * 16 / 256)
    pos = torch.arange(3)
    torch.testing.assert_close(ALiBi(2).bias(pos, pos), b)
    torch.testing.assert_close(ALiBi(2).bias(torch.tensor([2]), pos), b[:, 2:])  # a decoding step


# ---------------------------------------------------------------------------------------------- llama3


def test_llama3_hand_worked_bands():
    # d = 8, base 10000: theta = 1, 0.1, 0.01, 0.001; wavelengths 2 pi / theta = 6.28, 62.8, 628, 6283.
    # L = 1000, low 1, high 4: kept below 250, divided by s = 8 above 1000, blended in between
    got = rope_frequencies(8, 10000.0, 10, RopeScaling("llama3", 8.0, 1000, low_freq_factor=1.0,
                                                       high_freq_factor=4.0))
    inv, mscale = got
    w = (1000 / (2 * math.pi / 0.01) - 1) / 3  # the pair with wavelength 628: between 250 and 1000
    want = [1.0, 0.1, (1 - w) * 0.01 / 8 + w * 0.01, 0.001 / 8]
    assert inv.tolist() == pytest.approx(want, rel=1e-12) and mscale == 1.0
    with pytest.raises(ValueError, match="low_freq_factor"):
        RopeScaling("llama3", 8.0, 1000, low_freq_factor=4.0, high_freq_factor=1.0)


def test_llama3_equals_transformers():
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    cfg = transformers.LlamaConfig(hidden_size=256, num_attention_heads=2, rope_theta=500000.0,
                                   max_position_embeddings=131072,
                                   rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                                     high_freq_factor=4.0, original_max_position_embeddings=8192))
    want, attention_factor = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    inv, mscale = rope_frequencies(128, 500000.0, 10, RopeScaling("llama3", 8.0, 8192))
    torch.testing.assert_close(inv.float(), want.float(), rtol=1e-6, atol=0)  # transformers computes in float32
    assert mscale == attention_factor == 1.0
