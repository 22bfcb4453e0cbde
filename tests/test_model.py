"""minillm.model: parameter counts (formula = numel = published numbers), KV-cache decoding, causality, init,
a hand-worked forward, and config validation. The comparison with Hugging Face is in test_hf_interop.py."""

import math

import pytest
import torch
import torch.nn.functional as F

from minillm.attention import prefix_lm_mask
from minillm.model import GPT, PRESETS, GPTConfig, count_params, param_table


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
    dict(pos="none"), dict(n_kv_head=1), dict(tie_embeddings=False), dict(ffn="swiglu", bias=True, ffn_hidden=100),
])
def test_count_params_variants(overrides):
    cfg = GPTConfig.preset("tiny", **overrides)
    assert count_params(cfg)["total"] == GPT(cfg).num_params()


def test_param_table():
    rows = {r["preset"]: r for r in param_table()}
    assert set(rows) == set(PRESETS)
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
    (dict(pos="alibi"), "pos="),
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
