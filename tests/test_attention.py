"""minillm.attention: masks on hand-worked matrices, `sdpa` against torch's SDPA and a hand-worked softmax, the
MHA / GQA / MQA module against a manual computation with the same weights, the KV cache (incremental decoding
equals the full forward), GQA's mean-pooling conversion, KV-cache sizes of published models, parallel blocks.

Tolerances: float64 atol = rtol = 1e-10 unless a test says otherwise.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minillm.attention import (
    MODEL_SHAPES,
    Attention,
    AttentionConfig,
    KVCache,
    causal_mask,
    kv_cache_bytes_per_token,
    kv_cache_table,
    mask_to_bias,
    mha_to_gqa,
    padding_mask,
    parallel_block,
    prefix_lm_mask,
    repeat_kv,
    sdpa,
    sequential_block,
    sliding_window_mask,
)
from minillm.positional import RoPE

TOL = dict(atol=1e-10, rtol=1e-10)


def _qkv(B=2, H=4, Hkv=4, T=5, S=5, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, Hkv, S, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, Hkv, S, D, generator=g, dtype=torch.float64)
    return q, k, v


def _b(rows):
    return torch.tensor(rows, dtype=torch.bool)


# ---------------------------------------------------------------------------------------------- masks


def test_causal_mask_hand_worked():
    assert torch.equal(causal_mask(3), _b([[1, 0, 0], [1, 1, 0], [1, 1, 1]]))
    # decoding with 2 cached tokens: queries sit at positions 2 and 3 (bottom-right alignment)
    assert torch.equal(causal_mask(2, 4), _b([[1, 1, 1, 0], [1, 1, 1, 1]]))
    # more queries than keys: the first query has no key at or before it
    assert torch.equal(causal_mask(3, 2), _b([[0, 0], [1, 0], [1, 1]]))


def test_prefix_lm_mask_hand_worked():
    expected = _b([[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])
    assert torch.equal(prefix_lm_mask(4, 2), expected)
    assert torch.equal(prefix_lm_mask(4, 0), causal_mask(4))
    assert prefix_lm_mask(4, 4).all()


def test_sliding_window_mask_hand_worked():
    expected = _b([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]])
    assert torch.equal(sliding_window_mask(4, 2), expected)
    assert torch.equal(sliding_window_mask(4, 1), torch.eye(4, dtype=torch.bool))
    assert torch.equal(sliding_window_mask(4, 4), causal_mask(4))
    # with a cache: one query at position 4 sees keys 3 and 4 only
    assert torch.equal(sliding_window_mask(1, 2, S=5), _b([[0, 0, 0, 1, 1]]))
    # the combination "causal & within w" equals the sliding window
    i, j = torch.arange(6)[:, None], torch.arange(6)[None, :]
    assert torch.equal(causal_mask(6) & (i - j < 3), sliding_window_mask(6, 3))


def test_padding_mask_hand_worked():
    m = padding_mask(torch.tensor([2, 3]))
    assert m.shape == (2, 1, 1, 3)
    assert torch.equal(m[:, 0, 0], _b([[1, 1, 0], [1, 1, 1]]))
    assert torch.equal(padding_mask(torch.tensor([2, 3]), S=4)[:, 0, 0], _b([[1, 1, 0, 0], [1, 1, 1, 0]]))
    # Hugging Face attention_mask, left padding
    hf = torch.tensor([[0, 1, 1], [1, 1, 1]])
    assert torch.equal(padding_mask(hf)[:, 0, 0], _b([[0, 1, 1], [1, 1, 1]]))
    # combined with causal: (B, 1, T, S)
    both = causal_mask(3) & padding_mask(torch.tensor([2, 3]))
    assert torch.equal(both[0, 0], _b([[1, 0, 0], [1, 1, 0], [1, 1, 0]]))


def test_mask_errors():
    for bad in (lambda: causal_mask(0), lambda: sliding_window_mask(4, 0), lambda: prefix_lm_mask(3, 4),
                lambda: padding_mask(torch.tensor([2, 5]), S=3), lambda: padding_mask(torch.ones(2, 3), S=4),
                lambda: padding_mask(torch.ones(1, 2, 3))):
        with pytest.raises(ValueError):
            bad()


def test_mask_to_bias():
    bias = mask_to_bias(causal_mask(2), torch.float64)
    assert torch.equal(bias, torch.tensor([[0.0, -math.inf], [0.0, 0.0]], dtype=torch.float64))


# ---------------------------------------------------------------------------------------------- sdpa


def test_sdpa_hand_worked_two_keys():
    # scores [0, ln 3] -> weights [1/4, 3/4]; v = identity so the output is the weights
    q = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    k = torch.tensor([0.0, math.log(3)], dtype=torch.float64).view(1, 1, 2, 1)
    v = torch.eye(2, dtype=torch.float64).view(1, 1, 2, 2)
    out = sdpa(q, k, v, scale=1.0)
    torch.testing.assert_close(out.view(2), torch.tensor([0.25, 0.75], dtype=torch.float64), **TOL)


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("Hkv", [4, 2, 1])
def test_sdpa_equals_torch(is_causal, Hkv):
    q, k, v = _qkv(Hkv=Hkv, T=7, S=7)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, enable_gqa=True)
    torch.testing.assert_close(sdpa(q, k, v, is_causal=is_causal), ref, **TOL)


def test_sdpa_masks_and_scale_equal_torch():
    q, k, v = _qkv(T=5, S=9)
    g = torch.Generator().manual_seed(1)
    bool_mask = torch.rand(2, 1, 5, 9, generator=g) > 0.4
    bool_mask[..., 0] = True  # every row keeps at least one key
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bool_mask, scale=0.3)
    torch.testing.assert_close(sdpa(q, k, v, mask=bool_mask, scale=0.3), ref, **TOL)
    # the additive form of the same mask, and an arbitrary float bias
    torch.testing.assert_close(sdpa(q, k, v, mask=mask_to_bias(bool_mask, torch.float64), scale=0.3), ref, **TOL)
    bias = torch.randn(4, 5, 9, generator=g, dtype=torch.float64)
    torch.testing.assert_close(sdpa(q, k, v, mask=bias),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=bias), **TOL)


def test_sdpa_causal_with_cache_is_bottom_right():
    q, k, v = _qkv(T=3, S=7)
    ours = sdpa(q, k, v, is_causal=True)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(3, 7)), **TOL)
    # torch's is_causal aligns top-left: a different answer when S != T
    assert not torch.allclose(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    # the last query sees every key: same as no mask
    torch.testing.assert_close(ours[:, :, -1], sdpa(q, k, v)[:, :, -1], **TOL)


def test_sdpa_fully_masked_row_is_zero_like_torch():
    q, k, v = _qkv(T=3, S=3)
    q.requires_grad_()
    mask = _b([[0, 0, 0], [1, 0, 0], [1, 1, 1]])
    out = sdpa(q, k, v, mask=mask)
    assert torch.equal(out[:, :, 0], torch.zeros_like(out[:, :, 0]))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **TOL)
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.equal(q.grad[:, :, 0], torch.zeros_like(q.grad[:, :, 0]))
    # S < T with is_causal: the first T - S queries have no key
    out = sdpa(*_qkv(T=4, S=2), is_causal=True)
    assert torch.equal(out[:, :, :2], torch.zeros_like(out[:, :, :2])) and out[:, :, 2:].abs().sum() > 0


def test_sdpa_dropout_drops_and_rescales_weights():
    torch.manual_seed(0)
    S = 16
    q, k, _ = _qkv(B=4, T=8, S=S, Hkv=4)
    v = torch.eye(S, dtype=torch.float64).expand(4, 4, S, S)  # output = attention weights
    w = sdpa(q, k, v)
    dropped = sdpa(q, k, v, dropout_p=0.5)
    kept = dropped != 0
    torch.testing.assert_close(dropped[kept], 2 * w[kept], **TOL)  # survivors scaled by 1 / (1 - p)
    assert 0.4 < kept.double().mean() < 0.6


def test_repeat_kv_maps_heads_to_groups():
    x = torch.arange(3.0).view(1, 3, 1, 1).expand(1, 3, 2, 4)
    y = repeat_kv(x, 2)
    assert y.shape == (1, 6, 2, 4)
    assert y[0, :, 0, 0].tolist() == [0, 0, 1, 1, 2, 2]
    torch.testing.assert_close(y, x.repeat_interleave(2, dim=1))


def test_sdpa_rejects_bad_heads():
    q, _, _ = _qkv(H=4)
    _, k, v = _qkv(Hkv=3)
    with pytest.raises(ValueError, match="multiple"):
        sdpa(q, k, v)


# ---------------------------------------------------------------------------------------------- config, module


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match="divisible by n_head"):
        AttentionConfig(d_model=65, n_head=4)
    with pytest.raises(ValueError, match="multiple of n_kv_head"):
        AttentionConfig(d_model=64, n_head=4, n_kv_head=3)
    with pytest.raises(ValueError, match="unknown preset"):
        AttentionConfig.preset("gpt5")
    c = AttentionConfig.preset("llama2-70b")
    assert (c.head_dim, c.n_rep) == (128, 8)
    assert AttentionConfig(d_model=64, n_head=4).n_kv_head == 4
    assert AttentionConfig.preset("falcon-7b").head_dim == 64
    assert AttentionConfig.preset("tiny", n_kv_head=1).n_rep == 4


def _manual_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """The same layer written with the weights directly and torch's SDPA (enable_gqa)."""
    c = attn.cfg
    B, T, _ = x.shape
    q = F.linear(x, attn.q_proj.weight, attn.q_proj.bias).view(B, T, c.n_head, c.head_dim).transpose(1, 2)
    k = F.linear(x, attn.k_proj.weight, attn.k_proj.bias).view(B, T, c.n_kv_head, c.head_dim).transpose(1, 2)
    v = F.linear(x, attn.v_proj.weight, attn.v_proj.bias).view(B, T, c.n_kv_head, c.head_dim).transpose(1, 2)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    return F.linear(y.transpose(1, 2).reshape(B, T, -1), attn.o_proj.weight, attn.o_proj.bias)


@pytest.mark.parametrize("n_kv_head", [4, 2, 1])
@pytest.mark.parametrize("bias", [False, True])
def test_attention_module_equals_manual(n_kv_head, bias):
    torch.manual_seed(0)
    attn = Attention(AttentionConfig(d_model=32, n_head=4, n_kv_head=n_kv_head, bias=bias)).double()
    assert attn.k_proj.weight.shape == (n_kv_head * 8, 32) and attn.q_proj.weight.shape == (32, 32)
    x = torch.randn(2, 6, 32, dtype=torch.float64)
    torch.testing.assert_close(attn(x), _manual_attention(attn, x), **TOL)


@pytest.mark.parametrize("max_len", [None, 16])
@pytest.mark.parametrize("rope", [False, True])
def test_kv_cache_incremental_equals_full(max_len, rope):
    torch.manual_seed(0)
    attn = Attention(AttentionConfig(d_model=32, n_head=4, n_kv_head=2)).double()
    rotate = RoPE().rotate if rope else None
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    full = attn(x, rotate=rotate)
    cache = KVCache(max_len)
    steps = [attn(x[:, :4], rotate=rotate, kv_cache=cache)]  # the prompt at once
    for t in range(4, 9):  # then one token at a time
        steps.append(attn(x[:, t:t + 1], rotate=rotate, kv_cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, **TOL)
    assert len(cache) == 9 and cache.k.shape[1] == 2


def test_kv_cache_overflow_and_nbytes():
    cache = KVCache(max_len=4)
    k = torch.zeros(1, 8, 3, 128, dtype=torch.float16)
    cache.update(k, k)
    # one layer of 8 kv heads of 128 in fp16: 2 * 8 * 128 * 2 bytes per token
    assert cache.nbytes == 3 * kv_cache_bytes_per_token(1, 8, 128, 2) == 3 * 4096
    with pytest.raises(ValueError, match="max_len"):
        cache.update(k, k)


def test_padding_mask_hides_padded_tokens():
    torch.manual_seed(0)
    attn = Attention(AttentionConfig(d_model=16, n_head=2)).double()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    mask = padding_mask(torch.tensor([3, 5]), S=5)
    out = attn(x, mask=mask)
    x2 = x.clone()
    x2[0, 3:] = 100 * torch.randn(2, 16, dtype=torch.float64)  # change only the padding of sequence 0
    out2 = attn(x2, mask=mask)
    torch.testing.assert_close(out2[0, :3], out[0, :3], **TOL)
    torch.testing.assert_close(out2[1], out[1], **TOL)
    torch.testing.assert_close(attn(x2)[0, :3], attn(x)[0, :3], **TOL)  # right padding: causal alone hides it
    # bidirectional attention (is_causal=False): without the mask the padding leaks into real tokens
    assert not torch.allclose(attn(x2, is_causal=False)[0, :3], attn(x, is_causal=False)[0, :3])
    torch.testing.assert_close(attn(x2, mask=mask, is_causal=False)[0, :3],
                               attn(x, mask=mask, is_causal=False)[0, :3], **TOL)


# ---------------------------------------------------------------------------------------------- MHA -> GQA


def test_mha_to_gqa_mean_pools_groups():
    torch.manual_seed(0)
    mha = Attention(AttentionConfig(d_model=48, n_head=6, bias=True)).double()
    gqa = mha_to_gqa(mha, 2)
    assert gqa.cfg.n_kv_head == 2 and gqa.k_proj.weight.shape == (16, 48)
    for name in ("k_proj", "v_proj"):
        w, b = getattr(mha, name).weight, getattr(mha, name).bias
        for g in range(2):  # group g = old heads 3g, 3g+1, 3g+2 (rows of 8)
            rows = [w[h * 8:(h + 1) * 8] for h in range(3 * g, 3 * g + 3)]
            biases = [b[h * 8:(h + 1) * 8] for h in range(3 * g, 3 * g + 3)]
            torch.testing.assert_close(getattr(gqa, name).weight[g * 8:(g + 1) * 8], sum(rows) / 3, **TOL)
            torch.testing.assert_close(getattr(gqa, name).bias[g * 8:(g + 1) * 8], sum(biases) / 3, **TOL)
    assert torch.equal(gqa.q_proj.weight, mha.q_proj.weight) and torch.equal(gqa.o_proj.bias, mha.o_proj.bias)
    x = torch.randn(2, 5, 48, dtype=torch.float64)
    assert not torch.allclose(gqa(x), mha(x))  # in general pooling changes the layer


@pytest.mark.parametrize("n_kv_head", [2, 1])
def test_mha_to_gqa_exact_when_group_heads_are_identical(n_kv_head):
    torch.manual_seed(0)
    mha = Attention(AttentionConfig(d_model=32, n_head=4, bias=True)).double()
    group = 4 // n_kv_head
    with torch.no_grad():  # make the k and v heads of each group identical
        for lin in (mha.k_proj, mha.v_proj):
            w = lin.weight.view(n_kv_head, group, 8, 32)
            w.copy_(w[:, :1].expand_as(w).clone())
            b = lin.bias.view(n_kv_head, group, 8)
            b.copy_(b[:, :1].expand_as(b).clone())
    converted = mha_to_gqa(mha, n_kv_head)
    x = torch.randn(2, 7, 32, dtype=torch.float64)
    torch.testing.assert_close(converted(x), mha(x), atol=1e-12, rtol=1e-12)
    if n_kv_head == 1:  # MQA: one key and one value head
        assert converted.k_proj.weight.shape == (8, 32) and converted.cfg.n_rep == 4


def test_mha_to_gqa_rejects_non_divisor():
    mha = Attention(AttentionConfig(d_model=32, n_head=4))
    with pytest.raises(ValueError, match="must divide"):
        mha_to_gqa(mha, 3)


# ---------------------------------------------------------------------------------------------- cache sizes


def test_kv_cache_bytes_hand_worked():
    assert kv_cache_bytes_per_token(32, 32, 128, 2) == 524_288 == 2**19  # Llama-2-7B fp16: 0.5 MiB per token
    assert kv_cache_bytes_per_token(80, 8, 128, 2) == 327_680  # Llama-2-70B: GQA, 8 kv heads
    assert kv_cache_bytes_per_token(12, 12, 64, 4) == 73_728  # GPT-2 small, fp32
    with pytest.raises(ValueError):
        kv_cache_bytes_per_token(0, 8, 128)


def test_kv_cache_table():
    rows = {r["model"]: r for r in kv_cache_table(seq_len=4096, batch=1)}
    assert set(rows) == set(MODEL_SHAPES)
    assert rows["Llama-2-7B"]["KiB / token"] == 512 and rows["Llama-2-7B"]["kind"] == "MHA"
    assert rows["Llama-2-7B"]["GiB (1 x 4096 tokens)"] == 2.0  # 0.5 MiB * 4096
    assert rows["Mistral-7B"]["MHA / this"] == 4 and rows["Mistral-7B"]["kind"] == "GQA"
    assert rows["Llama-2-70B"]["MHA / this"] == 8 and rows["Falcon-7B"]["kind"] == "MQA"
    # the presets agree with the table's shapes
    for preset, model in [("llama2-7b", "Llama-2-7B"), ("llama2-70b", "Llama-2-70B"), ("mistral-7b", "Mistral-7B"),
                          ("llama3-8b", "Llama-3-8B"), ("falcon-7b", "Falcon-7B"), ("gpt2", "GPT-2 small")]:
        c = AttentionConfig.preset(preset)
        assert (c.n_head, c.n_kv_head, c.head_dim) == MODEL_SHAPES[model][1:]


# ---------------------------------------------------------------------------------------------- blocks


def test_parallel_vs_sequential_block():
    torch.manual_seed(0)
    d = 8
    A = torch.randn(d, d, dtype=torch.float64)
    M = torch.randn(d, d, dtype=torch.float64)
    x = torch.randn(3, d, dtype=torch.float64)
    attn, mlp, ident = (lambda t: t @ A.T), (lambda t: t @ M.T), (lambda t: t)
    par = parallel_block(x, attn, mlp, ident)
    seq = sequential_block(x, attn, mlp, ident, ident)
    torch.testing.assert_close(par, x + x @ A.T + x @ M.T, **TOL)
    # with linear branches and no norm, the difference is exactly the MLP applied to the attention output
    torch.testing.assert_close(seq - par, (x @ A.T) @ M.T, **TOL)
    # two norms (GPT-NeoX) vs one shared norm (GPT-J, PaLM)
    ln1, ln2 = torch.nn.LayerNorm(d).double(), torch.nn.LayerNorm(d, elementwise_affine=False).double()
    with torch.no_grad():
        ln1.weight.normal_()
    torch.testing.assert_close(parallel_block(x, attn, mlp, ln1, ln2), x + attn(ln1(x)) + mlp(ln2(x)), **TOL)
    torch.testing.assert_close(parallel_block(x, attn, mlp, ln1), x + attn(ln1(x)) + mlp(ln1(x)), **TOL)
    # if attention contributes nothing, the two blocks agree
    zero = lambda t: torch.zeros_like(t)  # noqa: E731
    torch.testing.assert_close(parallel_block(x, zero, mlp, ln1), sequential_block(x, zero, mlp, ln1, ln1), **TOL)
