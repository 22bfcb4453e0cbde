"""minillm.norms: LayerNorm and RMSNorm against torch's modules and hand-worked cases, the low-precision
failures that computing in float32 avoids, Pre-/Post-LN placement, and DeepNorm's constants (the paper's
table). DeepNorm's init and the gradient probe act on a GPT: tests/test_model.py.

Tolerances: float64 rtol = atol = 1e-10; float32 torch's defaults (rtol 1.3e-6, atol 1e-5); bfloat16 /
float16 outputs are compared with the float64 result rounded to the same dtype, within one rounding step.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from minillm.norms import (
    LayerNorm,
    RMSNorm,
    deepnorm_constants,
    deepnorm_constants_encoder_decoder,
    layer_norm,
    residual,
    rms_norm,
)

SHAPES = [(5,), (3, 7), (2, 4, 16), (2, 3, 5, 64)]
TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1.3e-6, atol=1e-5)}


def _randomise(*modules: nn.Module) -> None:
    """Give the norms' weights/biases random values (ones/zeros would hide a missing multiply/add)."""
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.copy_(torch.randn_like(p))


# ---------------------------------------------------------------------------------------------- vs torch


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eps", [1e-5, 1e-2])
def test_layernorm_equals_torch(shape, dtype, eps):
    torch.manual_seed(0)
    ours, ref = LayerNorm(shape[-1], eps=eps).to(dtype), nn.LayerNorm(shape[-1], eps=eps).to(dtype)
    _randomise(ours)
    ref.load_state_dict(ours.state_dict())
    x = 3 * torch.randn(shape, dtype=dtype) + 1.5
    torch.testing.assert_close(ours(x), ref(x), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("eps", [1e-6, 1e-2])
def test_rmsnorm_equals_torch(shape, dtype, eps):
    torch.manual_seed(1)
    ours, ref = RMSNorm(shape[-1], eps=eps).to(dtype), nn.RMSNorm(shape[-1], eps=eps).to(dtype)
    _randomise(ours)
    ref.load_state_dict(ours.state_dict())
    x = 3 * torch.randn(shape, dtype=dtype) + 1.5
    torch.testing.assert_close(ours(x), ref(x), **TOL[dtype])


def test_multi_dim_normalized_shape_and_no_bias_equal_torch():
    torch.manual_seed(2)
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    pairs = [(LayerNorm((5, 6)), nn.LayerNorm((5, 6))), (LayerNorm(6, bias=False), nn.LayerNorm(6, bias=False)),
             (RMSNorm((5, 6), eps=1e-6), nn.RMSNorm((5, 6), eps=1e-6)),
             (LayerNorm(6, elementwise_affine=False), nn.LayerNorm(6, elementwise_affine=False)),
             (RMSNorm(6, eps=1e-6, elementwise_affine=False), nn.RMSNorm(6, eps=1e-6, elementwise_affine=False))]
    for ours, ref in pairs:
        ours, ref = ours.double(), ref.double()
        _randomise(ours)
        ref.load_state_dict(ours.state_dict())
        torch.testing.assert_close(ours(x), ref(x), **TOL[torch.float64])


def test_gradients_equal_torch():
    torch.manual_seed(3)
    for ours, ref in [(LayerNorm(16), nn.LayerNorm(16)), (RMSNorm(16, eps=1e-6), nn.RMSNorm(16, eps=1e-6))]:
        ours, ref = ours.double(), ref.double()
        _randomise(ours)
        ref.load_state_dict(ours.state_dict())
        x = torch.randn(4, 9, 16, dtype=torch.float64)
        g = torch.randn(4, 9, 16, dtype=torch.float64)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        (ours(xa) * g).sum().backward()
        (ref(xb) * g).sum().backward()
        torch.testing.assert_close(xa.grad, xb.grad, **TOL[torch.float64])
        for (name, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, **TOL[torch.float64], msg=name)


# ---------------------------------------------------------------------------------------------- by hand


def test_layer_norm_by_hand():
    # [1, 2, 3, 4]: mean 2.5, biased variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    s = math.sqrt(1.25)
    torch.testing.assert_close(layer_norm(x, eps=0.0), torch.tensor([-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s],
                                                                  dtype=torch.float64))
    # [3, 4]: mean 3.5, variance 0.25 -> [-1, 1]; weight [2, 3], bias [10, 20] -> [8, 23]
    w, b = torch.tensor([2.0, 3.0]), torch.tensor([10.0, 20.0])
    torch.testing.assert_close(layer_norm(torch.tensor([3.0, 4.0]), w, b, eps=0.0), torch.tensor([8.0, 23.0]))
    # eps inside the root: variance 0.25 + eps 0.75 = 1 -> [-0.5, 0.5]
    torch.testing.assert_close(layer_norm(torch.tensor([3.0, 4.0]), eps=0.75), torch.tensor([-0.5, 0.5]))


def test_rms_norm_by_hand():
    # [3, 4]: mean square (9 + 16) / 2 = 12.5 -> [3, 4] / sqrt(12.5)
    r = math.sqrt(12.5)
    torch.testing.assert_close(rms_norm(torch.tensor([3.0, 4.0]), eps=0.0), torch.tensor([3 / r, 4 / r]))
    # [1, 1, 1, 1] (mean square 1) with eps 3 -> 1 / sqrt(4) = 0.5 each, times weight [1, 2, 3, 4]
    torch.testing.assert_close(rms_norm(torch.ones(4), torch.tensor([1.0, 2.0, 3.0, 4.0]), eps=3.0),
                               torch.tensor([0.5, 1.0, 1.5, 2.0]))


def test_invariances_that_tell_the_two_apart():
    """LN: invariant to shifting and scaling a row. RMSNorm: to scaling only (no re-centring)."""
    torch.manual_seed(4)
    x = torch.randn(6, 32, dtype=torch.float64)
    for f in (layer_norm, rms_norm):
        torch.testing.assert_close(f(7.0 * x, eps=0.0), f(x, eps=0.0))
    torch.testing.assert_close(layer_norm(x + 5.0, eps=0.0), layer_norm(x, eps=0.0))
    assert (rms_norm(x + 5.0, eps=0.0) - rms_norm(x, eps=0.0)).abs().max() > 0.1
    # outputs: LN rows have mean 0 and (biased) variance 1; RMSNorm rows have mean square 1
    y = layer_norm(x, eps=0.0)
    torch.testing.assert_close(y.mean(-1), torch.zeros(6, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(rms_norm(x, eps=0.0).pow(2).mean(-1), torch.ones(6, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------- low precision


def _one_step(dtype: torch.dtype, ref64: torch.Tensor) -> torch.Tensor:
    """The spacing between `dtype` numbers at |ref64| (one rounding step), elementwise."""
    exp = torch.floor(torch.log2(ref64.abs().clamp_min(torch.finfo(dtype).tiny)))
    return torch.exp2(exp) * torch.finfo(dtype).eps


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_are_computed_in_float32(dtype):
    torch.manual_seed(5)
    x = (2 * torch.randn(4, 64) + 1).to(dtype)
    w, b = torch.randn(64).to(dtype), torch.randn(64).to(dtype)
    for got, ref in [(layer_norm(x, w, b, 1e-5), layer_norm(x.double(), w.double(), b.double(), 1e-5)),
                     (rms_norm(x, w, 1e-6), rms_norm(x.double(), w.double(), 1e-6))]:
        assert got.dtype == dtype  # cast back
        # float32 compute: at most one rounding step of `dtype` away from the exact (float64) answer
        assert ((got.double() - ref).abs() <= _one_step(dtype, ref) + 1e-6).all()
    # and agrees with torch's own kernels on the same low-precision input
    torch.testing.assert_close(rms_norm(x, w, 1e-6), torch.nn.functional.rms_norm(x, (64,), w, 1e-6))
    torch.testing.assert_close(layer_norm(x, w, b, 1e-5), torch.nn.functional.layer_norm(x, (64,), w, b, 1e-5))


def test_float16_squares_overflow_without_float32():
    # |x| ~ 300: 300^2 = 90000 > 65504, the largest float16, so a float16 mean of squares is inf
    x = torch.tensor([300.0, -310.0, 290.0, 305.0], dtype=torch.float16)
    naive_ms = x.pow(2).mean()
    assert torch.isinf(naive_ms)
    naive = x * torch.rsqrt(naive_ms + 1e-6)  # what an all-float16 RMSNorm returns: zeros
    assert (naive == 0).all()
    ours = rms_norm(x, eps=1e-6)
    ref = x.double() / x.double().pow(2).mean().sqrt()
    assert ((ours.double() - ref).abs() <= _one_step(torch.float16, ref)).all()  # ~[0.99, -1.03, 0.96, 1.01]


def test_float16_squares_underflow_without_float32():
    # |x| ~ 1e-4: squares ~ 1e-8 are below half of float16's smallest subnormal (2^-24 ~ 6e-8): they round to 0
    x = torch.tensor([1e-4, -1.2e-4, 1.5e-4, -0.8e-4], dtype=torch.float16)
    assert (x.pow(2) == 0).all()
    naive = x * torch.rsqrt(x.pow(2).mean() + 1e-6)  # all-float16: x / sqrt(eps) ~ 1000 x, RMS ~0.1 instead of 1
    assert naive.float().pow(2).mean().sqrt() < 0.2
    ours, ref = rms_norm(x, eps=0.0), rms_norm(x.double(), eps=0.0)
    assert ((ours.double() - ref).abs() <= _one_step(torch.float16, ref)).all()
    assert ref.pow(2).mean().item() == pytest.approx(1.0)


def test_bfloat16_one_pass_variance_cancels():
    # mean 100, std ~1: E[x^2] ~ 10001 where bfloat16 numbers are 64 apart, so E[x^2] - E[x]^2 is junk
    torch.manual_seed(6)
    x = (100 + torch.randn(256)).to(torch.bfloat16)
    true_var = x.double().var(unbiased=False).item()
    one_pass = (x.pow(2).mean() - x.mean() ** 2).item()
    assert abs(one_pass - true_var) > 0.5 * true_var
    ours = layer_norm(x, eps=0.0)  # two-pass in float32
    ref = layer_norm(x.double(), eps=0.0)
    assert ((ours.double() - ref).abs() <= _one_step(torch.bfloat16, ref) + 1e-6).all()


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_inputs_have_clear_messages():
    with pytest.raises(ValueError, match="last dimension"):
        layer_norm(torch.randn(2, 5), torch.ones(4))
    with pytest.raises(TypeError, match="floating-point"):
        rms_norm(torch.arange(4))
    with pytest.raises(ValueError, match="eps"):
        rms_norm(torch.randn(3), eps=-1.0)
    with pytest.raises(ValueError, match="normalized_shape"):
        LayerNorm(0)
    with pytest.raises(ValueError, match="position"):
        residual(torch.randn(3), lambda t: t, lambda t: t, "middle")
    with pytest.raises(ValueError, match="alpha"):
        residual(torch.randn(3), lambda t: t, lambda t: t, "pre", alpha=2.0)
    with pytest.raises(ValueError, match="n_layer"):
        deepnorm_constants(0)
    with pytest.raises(ValueError, match="encoder_decoder"):
        deepnorm_constants(6, "encoder-decoder")


# ---------------------------------------------------------------------------------------------- placement


@pytest.mark.parametrize("position,alpha", [("pre", 1.0), ("post", 1.0), ("post", 1.7)])
def test_residual_by_formula(position, alpha):
    torch.manual_seed(7)
    norm, f = RMSNorm(16).double(), nn.Linear(16, 16).double()
    _randomise(norm)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    want = x + f(norm(x)) if position == "pre" else norm(alpha * x + f(x))
    torch.testing.assert_close(residual(x, f, norm, position, alpha), want)


def test_pre_ln_residual_stream_grows_post_ln_stays_normalised():
    torch.manual_seed(8)
    x = torch.randn(4, 10, 32)
    norm, f = LayerNorm(32), nn.Linear(32, 32)
    pre, post = x, x
    for _ in range(20):
        pre, post = residual(pre, f, norm, "pre"), residual(post, f, norm, "post")
    assert pre.pow(2).mean().sqrt() > 3 * x.pow(2).mean().sqrt()  # Pre-LN: the stream keeps adding f's output
    # Post-LN: every row of the stream is normalised (mean square 1)
    torch.testing.assert_close(post.pow(2).mean(-1), torch.ones(4, 10), rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------------------------- DeepNorm


def test_deepnorm_constants_from_the_paper_table():
    # decoder-only / encoder-only: alpha = (2N)^(1/4), beta = (8N)^(-1/4); worked where they are powers of 2
    for n, alpha, beta in [(2, math.sqrt(2), 0.5), (8, 2.0, 1 / (2 * math.sqrt(2))), (32, 2 * math.sqrt(2), 0.25)]:
        for kind in ("decoder", "encoder"):
            a, b = deepnorm_constants(n, kind)
            assert a == pytest.approx(alpha, rel=1e-12) and b == pytest.approx(beta, rel=1e-12)
    # 1000 layers (the paper's title): alpha = 2000^(1/4) ~ 6.69, beta = 8000^(-1/4) ~ 0.106
    a, b = deepnorm_constants(1000)
    assert a == pytest.approx(6.687, abs=1e-3) and b == pytest.approx(0.1057, abs=1e-4)
    # encoder-decoder, N = 8, M = 16: N^4 M = 2^16, (2^16)^(1/16) = 2 -> encoder (1.62, 0.435)
    ed = deepnorm_constants_encoder_decoder(8, 16)
    assert ed["encoder"] == pytest.approx((1.62, 0.435), rel=1e-12)
    assert ed["decoder"] == pytest.approx((48 ** 0.25, 192 ** -0.25), rel=1e-12)
    assert deepnorm_constants_encoder_decoder(1, 1)["encoder"] == pytest.approx((0.81, 0.87))


# ---------------------------------------------------------------------------------------------- benchmark


def test_bench_section_structure():
    from minillm.bench import ch03 as bench_ch03

    rows = bench_ch03.norm_timings([(2, 8, 32), (1, 4, 16)], "cpu", repeats=1, inner=1)
    assert [r["shape (B, T, d)"] for r in rows] == ["2 x 8 x 32", "1 x 4 x 16"]
    for r in rows:
        assert set(bench_ch03.COLUMNS) <= set(r) and all(r[f"{n} ms"] > 0 for n in bench_ch03.IMPLS)
        assert r["RMS / LN (minillm)"] == pytest.approx(r["RMSNorm (minillm) ms"] / r["LayerNorm (minillm) ms"])
    md = bench_ch03.section_norms(quick=True)
    assert md.startswith("## Chapter 3") and md.count("\n|") == 3  # header, rule, one quick shape
    with pytest.raises(ValueError, match="triples"):
        bench_ch03.norm_timings([(2, 8)], "cpu")
