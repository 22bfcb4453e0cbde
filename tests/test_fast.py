"""minillm.fast: the torch SDPA kernel and the fused ops of `to_fast` give what the teaching ops give, alone and
in the model (logits, loss, gradients, KV cache, masks), and leave parameter names and state_dict unchanged."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F

from minillm import fast as fast_module
from minillm import ffn
from minillm.attention import Attention, causal_mask, mask_to_bias, padding_mask, prefix_lm_mask, sdpa
from minillm.fast import (
    FUSED_ACTIVATIONS,
    FastAttention,
    FastFFN,
    FastGLUFFN,
    FastLayerNorm,
    FastRMSNorm,
    to_fast,
    to_teaching,
    torch_sdpa,
    use_kernel,
)
from minillm.ffn import FFN, GLUFFN
from minillm.model import GPT, GPTConfig
from minillm.norms import LayerNorm, RMSNorm

# ---------------------------------------------------------------------------------------------- kernel


@pytest.mark.parametrize(("T", "S", "Hkv"), [(5, 5, 4), (3, 7, 2), (1, 9, 1), (6, 6, 1)])
@pytest.mark.parametrize("kind", ["none", "bool", "float"])
def test_torch_sdpa_equals_minillm_sdpa(T, S, Hkv, kind):
    g = torch.Generator().manual_seed(T * 100 + S)
    q = torch.randn(2, 4, T, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, Hkv, S, 8, generator=g, dtype=torch.float64) for _ in range(2))
    mask = None
    if kind != "none":
        mask = padding_mask(torch.tensor([S, S - 1]), S)  # (2, 1, 1, S): the second row's last key is padding
        if kind == "float":
            mask = torch.zeros(mask.shape, dtype=torch.float64).masked_fill(~mask, float("-inf"))
    for causal in (False, True):
        want = sdpa(q, k, v, mask=mask, is_causal=causal)
        torch.testing.assert_close(torch_sdpa(q, k, v, mask=mask, is_causal=causal), want, atol=1e-12, rtol=0)


def test_bottom_right_alignment_differs_from_torch_is_causal():
    # the reason torch_sdpa builds the mask itself: with S > T torch aligns is_causal top-left
    q, k, v = torch.randn(1, 1, 2, 4), torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 4)
    ours = torch_sdpa(q, k, v, is_causal=True)
    top_left = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert not torch.allclose(ours, top_left)
    torch.testing.assert_close(ours, sdpa(q, k, v, mask=causal_mask(2, 5)))


@pytest.mark.parametrize("preset", ["tiny", "tiny-llama"])
def test_gpt_same_logits_loss_and_grads_with_either_kernel(preset):
    torch.manual_seed(0)
    a = GPT(GPTConfig.preset(preset)).double()
    b = GPT(GPTConfig.preset(preset)).double()
    b.load_state_dict(a.state_dict())
    use_kernel(b, "torch")
    idx = torch.randint(0, 128, (2, 20))
    la, loss_a = a(idx, idx)
    lb, loss_b = b(idx, idx)
    torch.testing.assert_close(lb, la, atol=1e-10, rtol=0)
    loss_a.backward()
    loss_b.backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pb.grad, pa.grad, atol=1e-10, rtol=0, msg=name)
    caches = b.make_kv_caches()  # cached decoding with the torch kernel (S > T: bottom-right mask)
    b(idx[:, :12], kv_caches=caches)
    step, _ = b(idx[:, 12:13], kv_caches=caches)
    torch.testing.assert_close(step[:, 0], la[:, 12], atol=1e-10, rtol=0)


def test_use_kernel_errors():
    with pytest.raises(ValueError, match="choose one of"):
        use_kernel(GPT(GPTConfig.preset("tiny")), "triton")
    with pytest.raises(ValueError, match="no minillm.attention.Attention"):
        use_kernel(torch.nn.Linear(2, 2))


# ---------------------------------------------------------------------------------------------- fused ops alone


def _fast_copy(module: torch.nn.Module) -> torch.nn.Module:
    clone = type(module).__new__(type(module))
    clone.__dict__.update(module.__dict__)  # shares the parameters: the copy differs only in its class
    return to_fast(clone)


def test_fused_norms_hand_worked():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    ln = _fast_copy(LayerNorm(4, eps=0.0))
    assert type(ln) is FastLayerNorm
    torch.testing.assert_close(ln(x), (x - 2.5) / math.sqrt(1.25))  # mean 2.5, biased variance 1.25
    rms = _fast_copy(RMSNorm(2, eps=0.0))
    assert type(rms) is FastRMSNorm
    torch.testing.assert_close(rms(torch.tensor([3.0, 4.0])), torch.tensor([3.0, 4.0]) / math.sqrt(12.5))


@pytest.mark.parametrize("kind", ["layernorm", "layernorm-nobias", "rmsnorm"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_fused_norm_equals_teaching_norm(kind, dtype):
    g = torch.Generator().manual_seed(0)
    teach = RMSNorm(48, eps=1e-5) if kind == "rmsnorm" else LayerNorm(48, bias=kind == "layernorm", eps=1e-5)
    with torch.no_grad():  # a non-trivial gain and shift, kept in float32 as in a mixed-precision model
        for p in teach.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    if dtype == torch.float64:
        teach.double()
    fast = _fast_copy(teach)
    x = (3 + 5 * torch.randn(4, 7, 48, generator=g, dtype=torch.float64)).to(dtype)  # a mean far from 0
    x.requires_grad_(True)
    want, got = teach(x), fast(x)
    assert got.dtype == dtype
    # both compute in float32 (float64 for float64) and round once to x's dtype: at most one unit of it apart
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2**-10, torch.bfloat16: 2**-7}[dtype]
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    if dtype in (torch.float64, torch.float32):
        (gx_want,) = torch.autograd.grad(want.square().sum(), x)
        (gx_got,) = torch.autograd.grad(got.square().sum(), x)
        torch.testing.assert_close(gx_got, gx_want, atol=10 * tol, rtol=10 * tol)


def test_fused_norm_keeps_float32_compute_for_float16():
    # |x| >= 256 overflows float16 squares: a norm computed in float16 would give inf / nan
    x = torch.tensor([[300.0, -300.0, 600.0, 0.0]], dtype=torch.float16)
    for teach in (LayerNorm(4), RMSNorm(4)):
        got = _fast_copy(teach)(x)
        assert got.dtype == torch.float16 and torch.isfinite(got).all()
        torch.testing.assert_close(got, teach(x), atol=2**-10, rtol=2**-10)


@pytest.mark.parametrize("teaching", list(FUSED_ACTIVATIONS), ids=lambda f: getattr(f, "__name__", str(f)))
def test_fused_activation_equals_teaching_activation(teaching):
    x = torch.linspace(-8, 8, 1001, dtype=torch.float64)
    torch.testing.assert_close(FUSED_ACTIVATIONS[teaching](x), teaching(x), atol=1e-14, rtol=1e-14)


def test_activation_test_would_catch_a_wrong_pairing():
    # the tolerance above is tight enough to tell exact GeLU from its tanh approximation (max error ~4.7e-4)
    x = torch.linspace(-8, 8, 1001, dtype=torch.float64)
    assert not torch.allclose(F.gelu(x), ffn.gelu_tanh(x), atol=1e-14, rtol=1e-14)


@pytest.mark.parametrize(("cls", "kw", "fast_cls"), [
    (FFN, dict(activation="gelu_tanh", bias=True), FastFFN),
    (FFN, dict(activation="relu", bias=False), FastFFN),
    (GLUFFN, dict(variant="swiglu", bias=False), FastGLUFFN),
    (GLUFFN, dict(variant="geglu", bias=True), FastGLUFFN),
])
@pytest.mark.parametrize("fuse_min_rows", [0, 10**9], ids=["one-matmul", "separate"])
def test_fused_ffn_equals_teaching_ffn(cls, kw, fast_cls, fuse_min_rows, monkeypatch):
    monkeypatch.setattr(fast_module, "FUSE_MIN_ROWS", fuse_min_rows)
    torch.manual_seed(0)
    teach = cls(16, 40, **kw).double()
    if kw.get("bias"):
        with torch.no_grad():
            for m in teach.modules():
                if isinstance(m, torch.nn.Linear):
                    m.bias.normal_()
    fast = _fast_copy(teach)
    assert type(fast) is fast_cls
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    torch.testing.assert_close(fast(x), teach(x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("fuse_min_rows", [0, 10**9], ids=["one-matmul", "separate"])
def test_fused_attention_equals_teaching_attention_with_masks(fuse_min_rows, monkeypatch):
    monkeypatch.setattr(fast_module, "FUSE_MIN_ROWS", fuse_min_rows)
    from minillm.attention import AttentionConfig

    torch.manual_seed(0)
    teach = Attention(AttentionConfig(d_model=32, n_head=4, n_kv_head=2, bias=True)).double()
    fast = _fast_copy(teach)
    assert type(fast) is FastAttention
    x = torch.randn(2, 6, 32, dtype=torch.float64)
    bias = torch.randn(4, 6, 6, dtype=torch.float64)  # a per-head float bias, as T5 / ALiBi pass it
    for kw in ({}, {"is_causal": False}, {"mask": prefix_lm_mask(6, 2)}, {"mask": bias},
               {"mask": mask_to_bias(prefix_lm_mask(6, 3), torch.float64), "is_causal": False}):
        torch.testing.assert_close(fast(x, **kw), teach(x, **kw), atol=1e-12, rtol=0, msg=str(kw))


# ---------------------------------------------------------------------------------------------- the model

MODELS = {
    "gpt2-style": dict(preset="tiny"),
    "gpt2-tanh-nobias": dict(preset="tiny", ffn="gelu_tanh", bias=False),
    "llama-gqa": dict(preset="tiny-llama"),
    "llama-mqa-geglu": dict(preset="tiny-llama", n_kv_head=1, ffn="geglu"),
    "parallel-block": dict(preset="tiny", parallel_block=True, pos="rope"),
}


def _pair(spec: dict, dtype=torch.float64) -> tuple[GPT, GPT]:
    spec = dict(spec)
    torch.manual_seed(0)
    a = GPT(GPTConfig.preset(spec.pop("preset"), **spec)).to(dtype)
    b = GPT(a.cfg).to(dtype)
    b.load_state_dict(a.state_dict())
    return a, to_fast(b)


@pytest.mark.parametrize("name", list(MODELS))
def test_to_fast_same_logits_loss_grads_and_cache(name):
    a, b = _pair(MODELS[name])
    assert sum(type(m).__name__.startswith("Fast") for m in b.modules()) == 1 + len(b.layers) * (
        4 - b.cfg.parallel_block)  # final norm + per layer: 1-2 norms, attention, mlp
    idx = torch.randint(0, 128, (2, 20))
    la, loss_a = a(idx, idx)
    lb, loss_b = b(idx, idx)
    torch.testing.assert_close(lb, la, atol=1e-10, rtol=0)
    torch.testing.assert_close(loss_b, loss_a, atol=1e-12, rtol=0)
    loss_a.backward()
    loss_b.backward()
    for (name_a, pa), (name_b, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert name_a == name_b
        torch.testing.assert_close(pb.grad, pa.grad, atol=1e-10, rtol=0, msg=name_a)
    caches = b.make_kv_caches()
    b(idx[:, :12], kv_caches=caches)
    step, _ = b(idx[:, 12:14], kv_caches=caches)  # two new tokens on 12 cached ones
    torch.testing.assert_close(step, la[:, 12:14], atol=1e-10, rtol=0)
    mask = prefix_lm_mask(20, 5)  # a caller's boolean mask, and the same as an additive float mask
    torch.testing.assert_close(b(idx, mask=mask)[0], a(idx, mask=mask)[0], atol=1e-10, rtol=0)
    fmask = mask_to_bias(mask, torch.float64)
    torch.testing.assert_close(b(idx, mask=fmask)[0], a(idx, mask=mask)[0], atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", ["gpt2-style", "llama-gqa"])
def test_to_fast_float32(name):
    a, b = _pair(MODELS[name], torch.float32)
    idx = torch.randint(0, 128, (4, 64))
    la, loss_a = a(idx, idx)
    lb, loss_b = b(idx, idx)
    torch.testing.assert_close(lb, la, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss_b, loss_a, atol=1e-6, rtol=1e-6)
    loss_a.backward()
    loss_b.backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pb.grad, pa.grad, atol=1e-5, rtol=1e-4, msg=n)


def test_to_fast_keeps_names_state_dict_and_parameters():
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("tiny-llama"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = [id(p) for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters())  # built before the swap: must still train the same tensors
    assert to_fast(model) is model
    assert [id(p) for p in model.parameters()] == params
    assert list(model.state_dict()) == list(before)
    assert isinstance(model.layers[0].self_attn, Attention) and isinstance(model.norm, RMSNorm)
    idx = torch.randint(0, 128, (2, 16))
    model(idx, idx)[1].backward()
    opt.step()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)  # saved from the fast model ...
    buf.seek(0)
    plain = GPT(GPTConfig.preset("tiny-llama"))
    plain.load_state_dict(torch.load(buf, weights_only=True), strict=True)  # ... loads into a plain GPT
    assert not any(type(m).__name__.startswith("Fast") for m in plain.modules())
    torch.testing.assert_close(plain(idx)[0], model(idx)[0], atol=1e-5, rtol=1e-5)
    assert not torch.equal(plain.state_dict()["norm.weight"], before["norm.weight"])  # the AdamW step landed


def test_to_fast_twice_to_teaching_and_kernels():
    torch.manual_seed(0)
    model = use_kernel(GPT(GPTConfig.preset("tiny")), "minillm")
    idx = torch.randint(0, 128, (1, 10))
    want = model(idx)[0]
    to_fast(to_fast(model))
    assert model.layers[0].self_attn.kernel is torch_sdpa  # the teaching kernel set by use_kernel is replaced
    torch.testing.assert_close(model(idx)[0], want, atol=1e-5, rtol=1e-5)
    to_teaching(model)
    assert {type(m) for m in model.modules()} >= {LayerNorm, FFN, Attention}
    assert not any(type(m).__name__.startswith("Fast") for m in model.modules())
    assert not hasattr(model.layers[0].mlp, "fused_act")

    def mine(q, k, v, **kw):  # a custom kernel (e.g. a FlashAttention function) survives to_fast
        return sdpa(q, k, v, **kw)

    use_kernel(model, mine)
    to_fast(model)
    assert model.layers[0].self_attn.kernel is mine


def test_to_fast_leaves_subclasses_alone():
    class MyNorm(LayerNorm):  # a subclass may compute something else: not swapped
        def forward(self, x):
            return 2 * super().forward(x)

    seq = torch.nn.Sequential(MyNorm(4), LayerNorm(4))
    to_fast(seq)
    assert type(seq[0]) is MyNorm and type(seq[1]) is FastLayerNorm


def test_to_fast_error_without_minillm_modules():
    with pytest.raises(ValueError, match="no minillm norm, FFN or Attention"):
        to_fast(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)))


def test_to_fast_compile_calls_module_compile(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: calls.append(self))
    model = GPT(GPTConfig.preset("tiny"))
    assert to_fast(model, compile=True) is model and calls == [model]
    to_fast(model)
    assert calls == [model]  # compile=False does not compile


# ---------------------------------------------------------------------------------------------- benchmark


def test_bench_fast_quick_rows():
    from minillm.bench import fast as bench

    rows = bench.training_rows("tiny", batch=2, seq_len=32, steps=1, rounds=1, warmup=1, paths=bench.PATHS[:3])
    assert [r["path"] for r in rows] == ["teaching", "kernel only", "to_fast"]
    for r in rows:
        assert r["tokens_per_s"] > 0 and r["Δ loss"] < 1e-5 and not r["note"]
    assert rows[0]["vs teaching"] == 1.0


def test_bench_section_fast_quick(monkeypatch):
    from minillm.bench import fast as bench

    md = bench.section_fast(quick=True)
    assert md.startswith("## The fast path") and "| to_fast |" in md and "| teaching |" in md


def test_fast_attention_keeps_the_teaching_forward():
    # the fast class replaces only the projections (and the kernel): every option of Attention.forward, present
    # or added later, runs the same code on the fast path
    assert "forward" not in vars(FastAttention) and FastAttention.forward is Attention.forward
    assert set(vars(FastAttention)) & {"project", "kernel"} == {"project", "kernel"}
