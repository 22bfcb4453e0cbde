"""minillm.model: parameter counts (formula = numel = published numbers), KV-cache decoding for every position
scheme, each scheme against a forward written out here, causality, Pre-/Post-LN and DeepNorm, init, a
hand-worked forward, and config validation. The comparison with Hugging Face is in test_hf_interop.py."""

import math

import pytest
import torch
import torch.nn.functional as F

from minillm.attention import prefix_lm_mask
from minillm.model import (
    GPT,
    POS,
    PRESETS,
    TABLE_PRESETS,
    GPTConfig,
    apply_deepnorm,
    block_grad_norms,
    count_params,
    deepnorm_init_,
    param_table,
)


def _model(name: str, dtype=torch.float64, seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.preset(name, **overrides)).to(dtype).eval()


def _randomize_norms(model: GPT, seed: int = 1) -> GPT:
    """Norm gains 1 +- 0.3 and biases ~ N(0, 0.3): at init (1 and 0) a swapped or missing norm would not show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.3 * torch.randn(p.shape, generator=g))
    return model


# ---------------------------------------------------------------------------------------------- counting


@pytest.mark.parametrize("name", list(PRESETS))
def test_count_params_formula_equals_numel_on_meta(name):
    cfg = GPTConfig.preset(name)
    with torch.device("meta"):  # no memory: llama2-70b would need 276 GB in float32
        model = GPT(cfg)
    counts = count_params(cfg)
    assert counts["total"] == model.num_params() == sum(p.numel() for p in model.parameters())
    parts = ("embed_tokens", "embed_positions", "attention", "mlp", "norms", "lm_head")
    assert counts["total"] == sum(counts[k] for k in parts)
    assert counts["per_layer"] == sum(p.numel() for p in model.layers[0].parameters())
    assert counts["non_embedding"] == model.num_params(exclude_embeddings=True)


# Published totals: HF `model.num_parameters()` of openai-community/gpt2 (124,439,808) and gpt2-medium, the
# Llama 2 paper's 7B / 13B / 70B (exact counts of meta-llama/Llama-2-*-hf), Meta-Llama-3-8B (8.03B); nanoGPT's
# shakespeare-char model prints "number of parameters: 10.65M" (without position embeddings).
PUBLISHED = {
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "llama2-7b": 6_738_415_616,
    "llama2-13b": 13_015_864_320,
    "llama2-70b": 68_976_648_192,
    "llama3-8b": 8_030_261_248,
    "mistral-7b": 7_241_732_096,  # mistralai/Mistral-7B-v0.1
    # falcon-7b: HF counts 6,921,720,704; GPT's one `bias` flag drops its LayerNorm biases (33 x 4544 fewer)
    "falcon-7b": 6_921_720_704 - 33 * 4544,
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_count_params_published(name):
    assert count_params(GPTConfig.preset(name))["total"] == PUBLISHED[name]


def test_count_params_nanogpt_small():
    c = count_params(GPTConfig.preset("small"))
    assert c["total"] - c["embed_positions"] == 10_646_784  # nanoGPT subtracts only wpe (wte is the tied head)


def test_count_params_tiny_by_hand():
    # d=64, V=128, T=64, 2 layers, gelu 4d, biases, tied head
    tok, pos = 128 * 64, 64 * 64
    attn = 4 * 64 * 64 + 4 * 64  # q, k, v, o and their biases
    mlp = 64 * 256 + 256 + 256 * 64 + 64
    norms = 2 * (64 + 64)  # two LayerNorms with weight and bias
    assert count_params(GPTConfig.preset("tiny"))["total"] == tok + pos + 2 * (attn + mlp + norms) + 128 == 112_384
    # GQA: k and v have n_kv_head * hd = 2 * 16 = 32 outputs; SwiGLU has three 64 x 172 matrices; RMSNorm d each
    per_layer = 64 * 64 * 2 + 2 * 64 * 32 + 3 * 64 * 172 + 2 * 64
    assert count_params(GPTConfig.preset("tiny-llama"))["total"] == 2 * 128 * 64 + 2 * per_layer + 64


@pytest.mark.parametrize("overrides", [
    dict(parallel_block=True), dict(bias=False), dict(norm="rmsnorm"), dict(ffn="geglu"), dict(ffn="relu"),
    dict(pos="t5"), dict(pos="sinusoidal"), dict(pos="alibi"), dict(pos="none"), dict(norm_position="post"),
    dict(pos="none"), dict(n_kv_head=1), dict(tie_embeddings=False), dict(ffn="swiglu", bias=True, ffn_hidden=100),
])
def test_count_params_variants(overrides):
    cfg = GPTConfig.preset("tiny", **overrides)
    assert count_params(cfg)["total"] == GPT(cfg).num_params()


def test_param_table():
    rows = {r["preset"]: r for r in param_table()}
    assert set(rows) == set(TABLE_PRESETS)
    r = rows["llama2-7b"]
    assert r["params"] == PUBLISHED["llama2-7b"] and round(r["billions"], 2) == 6.74
    assert abs(r["weights GiB"] - 6_738_415_616 * 2 / 2**30) < 1e-9
    assert abs(r["embeddings %"] + r["attention %"] + r["mlp %"] - 100) < 0.01  # the rest is norms
    assert rows["gpt2"]["embeddings %"] > 30  # GPT-2 small: 39M of 124M are the tied token + position tables


# ---------------------------------------------------------------------------------------------- forward


@pytest.mark.parametrize("name", ["tiny", "tiny-llama"])
def test_kv_cache_decoding_equals_full_forward(name):
    model = _randomize_norms(_model(name))
    idx = torch.randint(0, 128, (2, 24), generator=torch.Generator().manual_seed(2))
    full, _ = model(idx)
    caches = model.make_kv_caches()
    pieces = [model(idx[:, :7], kv_caches=caches)[0]]  # prefill 7 tokens
    for t in range(7, 20):  # then one token at a time
        pieces.append(model(idx[:, t:t + 1], kv_caches=caches)[0])
    pieces.append(model(idx[:, 20:], kv_caches=caches)[0])  # and a chunk of 4
    assert len(caches[0]) == 24
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-12)
    # a model that ignores the cache (every step at position 0, no past keys) must differ
    alone = torch.cat([model(idx[:, t:t + 1])[0] for t in range(24)], dim=1)
    assert (alone - full).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["tiny", "tiny-llama"])
def test_causal(name):
    model = _model(name)
    idx = torch.randint(0, 128, (1, 16), generator=torch.Generator().manual_seed(3))
    changed = idx.clone()
    changed[0, 9] = (idx[0, 9] + 1) % 128
    a, b = model(idx)[0], model(changed)[0]
    assert torch.equal(a[:, :9], b[:, :9])  # the past never sees the future
    assert (a[:, 9:] - b[:, 9:]).abs().amax(-1).min() > 0  # every later position does see the change


def test_prefix_lm_mask():
    model = _model("tiny-llama")
    idx = torch.randint(0, 128, (1, 12), generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(model(idx, mask=prefix_lm_mask(12, 0))[0], model(idx)[0], rtol=0, atol=1e-12)
    changed = idx.clone()
    changed[0, 4] = (idx[0, 4] + 1) % 128
    a, b = model(idx, mask=prefix_lm_mask(12, 5))[0], model(changed, mask=prefix_lm_mask(12, 5))[0]
    assert (a[:, :4] - b[:, :4]).abs().max() > 1e-6  # inside the prefix, attention is bidirectional


def test_start_pos():
    idx = torch.randint(0, 128, (1, 10), generator=torch.Generator().manual_seed(5))
    rope = _model("tiny-llama")  # RoPE scores depend only on q_pos - k_pos: shifting every position is a no-op
    torch.testing.assert_close(rope(idx, start_pos=17)[0], rope(idx)[0], rtol=0, atol=1e-10)
    learned = _model("tiny")  # learned absolute positions: a different row of the table
    assert (learned(idx, start_pos=17)[0] - learned(idx)[0]).abs().max() > 1e-4


def test_hand_worked_identity_blocks():
    """With o_proj and mlp.down zero every block adds 0: logits = LN(E[idx] + P[pos]) @ E^T, written out."""
    model = _model("tiny")
    with torch.no_grad():
        for layer in model.layers:
            for lin in (layer.self_attn.o_proj, layer.mlp.down):
                lin.weight.zero_()
                lin.bias.zero_()
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.normal_()
    idx = torch.tensor([[3, 1, 4, 1, 5]])
    E, P = model.embed_tokens.weight, model.embed_positions.weight
    h = E[idx[0]] + P[:5]  # (5, d)
    mu, var = h.mean(-1, keepdim=True), ((h - h.mean(-1, keepdim=True)) ** 2).mean(-1, keepdim=True)
    expected = ((h - mu) / torch.sqrt(var + 1e-5) * model.norm.weight + model.norm.bias) @ E.T
    torch.testing.assert_close(model(idx)[0][0], expected, rtol=0, atol=1e-12)


def test_parallel_block_formula():
    model = _randomize_norms(_model("tiny", parallel_block=True))
    layer = model.layers[0]
    assert layer.post_attention_layernorm is None
    x = torch.randn(2, 6, 64, dtype=torch.float64)
    h = layer.input_layernorm(x)
    expected = x + layer.self_attn(h, is_causal=True) + layer.mlp(h)
    torch.testing.assert_close(layer(x, is_causal=True), expected, rtol=0, atol=1e-12)


def test_loss_at_init_is_ln_vocab():
    model = _model("tiny", dtype=torch.float32)
    g = torch.Generator().manual_seed(6)
    idx, targets = torch.randint(0, 128, (8, 64), generator=g), torch.randint(0, 128, (8, 64), generator=g)
    logits, loss = model(idx, targets)
    assert abs(loss.item() - math.log(128)) < 0.05  # near-uniform predictions at init
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 128), targets.reshape(-1)))
    targets[:, :32] = -100  # ignored positions (prompt masking in chapter 8)
    torch.testing.assert_close(model(idx, targets)[1], F.cross_entropy(logits[:, 32:].reshape(-1, 128),
                                                                        targets[:, 32:].reshape(-1)))
    assert model(idx)[1] is None


def test_gpt2_init():
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("tiny", d_model=256, n_layer=8))
    layer = model.layers[3]
    assert abs(layer.self_attn.q_proj.weight.std().item() - 0.02) < 0.001
    assert abs(layer.mlp.up.weight.std().item() - 0.02) < 0.001
    for w in (layer.self_attn.o_proj.weight, layer.mlp.down.weight):  # 0.02 / sqrt(2 * 8) = 0.005
        assert abs(w.std().item() - 0.005) < 0.0003
    assert abs(model.embed_tokens.weight.std().item() - 0.02) < 0.002
    assert torch.equal(layer.self_attn.q_proj.bias, torch.zeros(256))
    assert torch.equal(layer.input_layernorm.weight, torch.ones(256))


def test_tied_and_untied():
    tied, untied = GPT(GPTConfig.preset("tiny")), GPT(GPTConfig.preset("tiny", tie_embeddings=False))
    assert tied.lm_head.weight is tied.embed_tokens.weight
    assert untied.lm_head.weight is not untied.embed_tokens.weight
    assert untied.num_params() - tied.num_params() == 128 * 64


def test_tiny_trains_in_seconds():
    model = _model("tiny", dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    seq = torch.arange(33) % 13  # a cycle of 13 tokens: every next token is predictable from the previous one
    x, y = seq[None, :-1].repeat(2, 1), seq[None, 1:].repeat(2, 1)
    first = model(x, y)[1].item()
    for _ in range(40):
        loss = model(x, y)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 4.5 and loss.item() < 0.5


# ---------------------------------------------------------------------------------------------- errors


def test_forward_errors():
    model = _model("tiny")
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 65, dtype=torch.long))  # learned positions have 64 rows
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 8, dtype=torch.long), start_pos=60)
    with pytest.raises(ValueError, match="make_kv_caches"):
        model(torch.zeros(1, 8, dtype=torch.long), kv_caches=model.make_kv_caches()[:1])
    caches = model.make_kv_caches()
    model(torch.zeros(1, 8, dtype=torch.long), kv_caches=caches)
    with pytest.raises(ValueError, match="start_pos"):
        model(torch.zeros(1, 1, dtype=torch.long), kv_caches=caches, start_pos=3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(d_model=64, n_head=5), "divisible by n_head"),
    (dict(n_head=4, n_kv_head=3), "multiple of n_kv_head"),
    (dict(pos="xpos"), "pos="),
    (dict(norm_position="sandwich"), "norm_position="),
    (dict(init="kaiming"), "init="),
    (dict(deepnorm=True), "norm_position='post'"),
    (dict(norm_position="post", parallel_block=True), "parallel_block"),
    (dict(pos="learned", rope_scaling={"kind": "pi", "factor": 2.0, "original_len": 64}), "rope_scaling"),
    (dict(pos="t5", t5_num_buckets=2), "num_buckets"),
    (dict(norm="batchnorm"), "norm="),
    (dict(ffn="swish"), "ffn="),
    (dict(pos="rope", d_model=12, n_head=4), "even head_dim"),
    (dict(dropout=1.0), "dropout"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(ffn_hidden=-1), "ffn_hidden"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**kwargs)


def test_config_presets_and_dict():
    with pytest.raises(ValueError, match="choose from"):
        GPTConfig.preset("gpt5")
    cfg = GPTConfig.preset("llama3-8b")
    assert (cfg.n_kv_head, cfg.head_dim, cfg.rope_theta, cfg.norm_eps) == (8, 128, 500000.0, 1e-5)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    assert GPTConfig(ffn="swiglu", d_model=4096, n_head=32).ffn_hidden == 11008  # the Llama rule
    assert GPTConfig(ffn="gelu", d_model=48).ffn_hidden == 192  # 4 d
    assert GPTConfig(n_head=4).n_kv_head == 4


# ---------------------------------------------------------------------------------------------- chapter 2-4 parts


def _random_t5(model: GPT, seed: int = 3) -> GPT:
    """T5's table starts at zero (no effect): give it values so that a wrong row or sign would show."""
    if model.rel_bias is not None:
        with torch.no_grad():
            model.rel_bias.table.weight.copy_(torch.randn(model.rel_bias.table.weight.shape,
                                                          generator=torch.Generator().manual_seed(seed)))
    return model


@pytest.mark.parametrize("norm_position", ["pre", "post"])
@pytest.mark.parametrize("pos", POS)
def test_kv_cache_decoding_every_position_scheme(pos, norm_position):
    model = _random_t5(_randomize_norms(_model("toy", pos=pos, norm_position=norm_position)))
    idx = torch.randint(0, 128, (2, 20), generator=torch.Generator().manual_seed(2))
    full, _ = model(idx)
    caches = model.make_kv_caches()
    pieces = [model(idx[:, :6], kv_caches=caches)[0]]
    pieces += [model(idx[:, t:t + 1], kv_caches=caches)[0] for t in range(6, 17)]
    pieces.append(model(idx[:, 17:], kv_caches=caches)[0])
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-12)


def _t5_bucket_scalar(n: int, num_buckets: int = 32, max_distance: int = 128) -> int:
    """T5's causal bucket of a key n >= 0 tokens back (mesh-tensorflow's formula with Python scalars)."""
    max_exact = num_buckets // 2
    if n < max_exact:
        return n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return min(large, num_buckets - 1)


def _reference_forward(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """GPT's forward written out with plain torch ops and the papers' formulas (one Pre-LN stack)."""
    cfg = model.cfg
    T, H, hd = idx.shape[1], cfg.n_head, cfg.head_dim
    x = model.embed_tokens.weight[idx[0]]  # (T, d)
    p = torch.arange(T, dtype=torch.float64)[:, None]
    if cfg.pos == "sinusoidal":  # Vaswani et al.: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...)
        i = torch.arange(cfg.d_model // 2, dtype=torch.float64)
        pe = torch.zeros(T, cfg.d_model, dtype=torch.float64)
        angle = p / 10000 ** (2 * i / cfg.d_model)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
        x = x + pe
    if cfg.pos == "learned":
        x = x + model.embed_positions.weight[:T]
    bias = torch.zeros(H, T, T, dtype=torch.float64)
    for h in range(H):
        for q in range(T):
            for k in range(q + 1):
                if cfg.pos == "alibi":  # Press et al.: slopes 2^(-8/H), 2^(-16/H), ... for H a power of 2
                    bias[h, q, k] = -(2.0 ** (-8.0 * (h + 1) / H)) * (q - k)
                if cfg.pos == "t5":
                    bias[h, q, k] = model.rel_bias.table.weight[_t5_bucket_scalar(q - k), h]
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    for layer in model.layers:
        a = layer.self_attn
        h_in = F.layer_norm(x, (cfg.d_model,), layer.input_layernorm.weight, layer.input_layernorm.bias, 1e-5)
        q, k, v = ((h_in @ lin.weight.T + lin.bias).view(T, H, hd).transpose(0, 1)
                   for lin in (a.q_proj, a.k_proj, a.v_proj))
        if cfg.pos == "rope":  # halves layout: pair (j, j + hd/2) as a complex number times e^(i m theta_j)
            theta = 10000.0 ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
            rot = torch.polar(torch.ones(T, hd // 2, dtype=torch.float64), p * theta)
            zq, zk = (torch.complex(t[..., : hd // 2], t[..., hd // 2:]) * rot for t in (q, k))
            q, k = torch.cat([zq.real, zq.imag], dim=-1), torch.cat([zk.real, zk.imag], dim=-1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd) + bias
        w = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        x = x + ((w @ v).transpose(0, 1).reshape(T, -1) @ a.o_proj.weight.T + a.o_proj.bias)
        ln2 = layer.post_attention_layernorm
        m = layer.mlp
        h2 = F.layer_norm(x, (cfg.d_model,), ln2.weight, ln2.bias, 1e-5)
        x = x + F.gelu(h2 @ m.up.weight.T + m.up.bias) @ m.down.weight.T + m.down.bias
    x = F.layer_norm(x, (cfg.d_model,), model.norm.weight, model.norm.bias, 1e-5)
    return x @ model.lm_head.weight.T


@pytest.mark.parametrize("pos", POS)
def test_every_position_scheme_equals_a_forward_written_out(pos):
    model = _random_t5(_randomize_norms(_model("toy", pos=pos)))
    idx = torch.randint(0, 128, (1, 12), generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(model(idx)[0][0], _reference_forward(model, idx), rtol=0, atol=1e-10)


def test_alibi_and_t5_extrapolate_and_see_order():
    for pos in ("alibi", "t5", "sinusoidal", "rope"):
        model = _random_t5(_model("toy", pos=pos, block_size=16))
        long = torch.randint(0, 128, (1, 40), generator=torch.Generator().manual_seed(1))
        assert torch.isfinite(model(long)[0]).all()  # past block_size: no table to run out of
    # without positions, one causal layer lets the last token see the past as a set: swapping two earlier
    # tokens leaves its logits unchanged (a second layer would not: the mask itself leaks order); every
    # scheme that encodes position changes them
    idx = torch.tensor([[5, 9, 2, 7, 3]])
    swapped = torch.tensor([[9, 5, 2, 7, 3]])
    for pos in POS:
        model = _random_t5(_model("toy", pos=pos, n_layer=1))
        diff = (model(idx)[0][0, -1] - model(swapped)[0][0, -1]).abs().max().item()
        assert (diff < 1e-12) if pos == "none" else (diff > 1e-6), (pos, diff)


@pytest.mark.parametrize("deepnorm", [False, True])
def test_post_ln_block_is_norm_of_alpha_x_plus_f(deepnorm):
    model = _randomize_norms(_model("toy", n_layer=8, norm_position="post", deepnorm=deepnorm))
    alpha = (2 * 8) ** 0.25 if deepnorm else 1.0  # N = 8: alpha = 2
    assert model.cfg.alpha == pytest.approx(alpha) and model.norm is None  # Post-LN: no final norm
    layer = model.layers[2]
    x = torch.randn(2, 6, 64, dtype=torch.float64)
    h = layer.input_layernorm(alpha * x + layer.self_attn(x, is_causal=True))
    want = layer.post_attention_layernorm(alpha * h + layer.mlp(h))
    torch.testing.assert_close(layer(x, is_causal=True), want, rtol=0, atol=1e-12)
    # the whole model: the head reads the last block's (normalised) output directly
    idx = torch.randint(0, 128, (1, 5))
    x = model.embed_tokens(idx)
    for layer in model.layers:
        x = layer(x, is_causal=True)
    torch.testing.assert_close(model(idx)[0], model.lm_head(x), rtol=0, atol=1e-12)


def test_deepnorm_init_scales_v_o_and_mlp_by_beta_not_q_k():
    d, n = 128, 8
    torch.manual_seed(9)
    model = GPT(GPTConfig.preset("toy", d_model=d, n_layer=n, norm_position="post", deepnorm=True, init=""))
    beta = 1 / (2 * math.sqrt(2))  # (8 * 8)^(-1/4)
    assert model.cfg.init == "deepnorm"

    def pooled_std(weights):
        return torch.cat([w.flatten() for w in weights]).std().item()

    xavier = math.sqrt(2 / (d + d))  # Xavier-normal std of a d x d matrix, gain 1
    attn = [layer.self_attn for layer in model.layers]
    for name, gain in (("q_proj", 1.0), ("k_proj", 1.0), ("v_proj", beta), ("o_proj", beta)):
        assert pooled_std(getattr(a, name).weight for a in attn) == pytest.approx(gain * xavier, rel=0.03), name
    for name in ("up", "down"):  # (4d, d) and (d, 4d): Xavier std sqrt(2 / 5d), times beta
        got = pooled_std(getattr(layer.mlp, name).weight for layer in model.layers)
        assert got == pytest.approx(beta * math.sqrt(2 / (5 * d)), rel=0.03), name
    assert all((lin.bias == 0).all() for layer in model.layers
               for lin in (layer.self_attn.v_proj, layer.self_attn.o_proj, layer.mlp.up, layer.mlp.down))
    # the GLU MLP: all three matrices get beta
    glu = GPT(GPTConfig.preset("toy", d_model=d, n_layer=n, ffn="swiglu", ffn_hidden=2 * d, norm_position="post",
                               deepnorm=True, init="deepnorm"))
    assert pooled_std(layer.mlp.gate.weight for layer in glu.layers) == pytest.approx(
        beta * math.sqrt(2 / (3 * d)), rel=0.03)


def test_apply_deepnorm_on_gpt_and_its_errors():
    torch.manual_seed(0)
    cfg = GPTConfig.preset("toy", n_layer=8, norm_position="post")
    model = apply_deepnorm(GPT(cfg))
    assert cfg.alpha == 1.0 and model.cfg.alpha == pytest.approx(2.0) and model.cfg.deepnorm
    assert all(layer.alpha == pytest.approx(2.0) for layer in model.layers)
    torch.manual_seed(1)
    built = GPT(GPTConfig.preset("toy", n_layer=8, norm_position="post", deepnorm=True, init="deepnorm"))
    assert built.layers[0].alpha == model.layers[0].alpha
    deepnorm_init_(GPT(GPTConfig.preset("tiny")), 0.5)  # any GPT (the old duck-typed helper raised TypeError)
    with pytest.raises(ValueError, match="norm_position='post'"):
        apply_deepnorm(GPT(GPTConfig.preset("toy")))
    with pytest.raises(TypeError, match="GPT"):
        deepnorm_init_(torch.nn.Linear(3, 3), 0.5)
    with pytest.raises(ValueError, match="beta"):
        deepnorm_init_(GPT(GPTConfig.preset("toy")), 0.0)


def test_block_grad_norms_on_gpt_equal_torch_total_norm():
    torch.manual_seed(10)
    model = GPT(GPTConfig.preset("toy", vocab_size=20, n_layer=3, d_model=16, n_head=2, norm="rmsnorm"))
    x, y = torch.randint(20, (2, 8)), torch.randint(20, (2, 8))
    got = block_grad_norms(model, x, y)
    _, loss = model(x, y)
    loss.backward()
    want = [torch.nn.utils.get_total_norm([p.grad for p in b.parameters()]).item() for b in model.layers]
    assert got == pytest.approx(want, rel=1e-5) and len(got) == 3
    with pytest.raises(TypeError, match="GPT"):
        block_grad_norms(torch.nn.Linear(2, 2), x, y)


def test_toy_preset_is_the_old_experiment_model():
    """"toy" = the shape of chapters 2-4's former ToyLM: 2 layers of 4 heads at d 64, no positions, LayerNorm,
    exact-GeLU 4x MLP, biases, untied bias-free head. Its parameters by hand: 2 * (4 (64^2 + 64) + 2 * 128
    + (64 * 256 + 256) + (256 * 64 + 64)) + 128 (final LayerNorm) + 2 * 128 * 64 (embedding and head)."""
    model = GPT(GPTConfig.preset("toy"))
    per_layer = 4 * (64 * 64 + 64) + 2 * 128 + (64 * 256 + 256) + (256 * 64 + 64)
    assert model.num_params() == 2 * per_layer + 128 + 2 * 128 * 64 == 116_480
    assert model.embed_positions is None and model.lm_head.bias is None


def test_torch_init_is_pytorchs_layer_defaults():
    """"torch" (the "toy" preset): nn.Linear U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases,
    nn.Embedding N(0, 1), norms 1 and 0 (the init of the former ToyLM)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("toy", d_model=256))
    assert model.cfg.init == "torch"
    assert abs(model.embed_tokens.weight.std().item() - 1.0) < 0.02
    up = model.layers[0].mlp.up  # fan_in 256: U(-1/16, 1/16), std 1 / (16 sqrt 3)
    assert up.weight.abs().max() <= 1 / 16 and abs(up.weight.std().item() - 1 / (16 * math.sqrt(3))) < 0.001
    assert up.bias.abs().max() <= 1 / 16 and up.bias.abs().max() > 0
    assert torch.equal(model.layers[0].input_layernorm.weight, torch.ones(256))
    deep = GPT(GPTConfig.preset("toy", n_layer=8, norm_position="post", deepnorm=True, init="deepnorm"))
    assert abs(deep.embed_tokens.weight.std().item() - 1.0) < 0.05  # DeepNorm starts from the same defaults


@pytest.mark.parametrize("pos", ["t5", "alibi"])
def test_bias_schemes_with_pytorchs_fused_kernel(pos):
    """The float mask (bias + -inf) works with minillm.fast's torch kernel too, with and without a cache."""
    from minillm.fast import use_kernel

    model = _random_t5(_model("toy", pos=pos, dtype=torch.float32))
    idx = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(4))
    want = model(idx)[0]
    use_kernel(model, "torch")
    torch.testing.assert_close(model(idx)[0], want, rtol=1e-5, atol=1e-5)
    caches = model.make_kv_caches()
    steps = [model(idx[:, :5], kv_caches=caches)[0]]
    steps += [model(idx[:, t:t + 1], kv_caches=caches)[0] for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), want, rtol=1e-5, atol=1e-5)
