"""minillm.hf against the reference: tiny random Hugging Face GPT-2 and Llama models give the same logits and loss
after conversion, both ways; configs map both ways; safetensors files round-trip; HF's own parameter counts of
the big presets (built on the meta device) equal count_params."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from minillm.hf import (  # noqa: E402
    config_from_hf,
    config_to_hf,
    from_hf,
    from_hf_gpt2,
    from_hf_llama,
    hf_family,
    load_safetensors,
    save_safetensors,
    to_hf,
    to_hf_gpt2,
    to_hf_llama,
)
from minillm.model import GPT, GPTConfig, count_params  # noqa: E402


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random: at HF's init biases are 0 and norms 1, so a swapped bias or norm would not show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def _gpt2(tie: bool):
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=101, n_positions=64,
                                  layer_norm_epsilon=1e-2, tie_word_embeddings=tie, bos_token_id=100,
                                  eos_token_id=100)  # eps far from the default, so a dropped field shows
    return _randomize(transformers.GPT2LMHeadModel(cfg))


def _llama(tie: bool):
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=101, max_position_embeddings=64,
                                   rms_norm_eps=1e-2, rope_theta=500.0, tie_word_embeddings=tie,
                                   attn_implementation="eager")
    return _randomize(transformers.LlamaForCausalLM(cfg))


MAKERS = {"gpt2": _gpt2, "llama": _llama}
IDX = torch.randint(0, 101, (2, 40), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_from_hf_same_logits_and_loss(family, tie):
    hf = MAKERS[family](tie)
    model = from_hf(hf)
    assert hf_family(model.cfg) == family and model.cfg.tie_embeddings == tie
    assert (model.lm_head.weight is model.embed_tokens.weight) == tie
    assert model.num_params() == hf.num_parameters() == count_params(model.cfg)["total"]
    with torch.no_grad():
        ref = hf(IDX, labels=IDX)
        logits, _ = model(IDX)
        _, loss = model(IDX[:, :-1], IDX[:, 1:])  # HF shifts the labels inside; we pass the next tokens
    assert ref.logits.abs().max() > 1.0  # logits far from 0: a weak check would pass on near-zero logits
    torch.testing.assert_close(logits, ref.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(loss, ref.loss, rtol=0, atol=1e-5)
    # the parameters are copies: changing the HF model leaves ours alone
    with torch.no_grad():
        next(hf.parameters()).add_(1.0)
    torch.testing.assert_close(model(IDX)[0], logits, rtol=0, atol=0)


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("name", ["tiny", "tiny-llama"])
def test_to_hf_round_trip(name, tie):
    torch.manual_seed(0)
    model = _randomize(GPT(GPTConfig.preset(name, vocab_size=101, tie_embeddings=tie)))
    sd = (to_hf_gpt2 if name == "tiny" else to_hf_llama)(model)
    hf = to_hf(model)
    assert set(sd) == set(hf.state_dict())  # exactly the names transformers expects
    with torch.no_grad():
        torch.testing.assert_close(hf(IDX).logits, model(IDX)[0], rtol=0, atol=1e-5)
        back = from_hf(hf)
        torch.testing.assert_close(back(IDX)[0], model(IDX)[0], rtol=0, atol=0)
    assert config_from_hf(config_to_hf(model.cfg)) == model.cfg
    assert config_from_hf(config_to_hf(model.cfg).to_dict()) == model.cfg  # a config.json as a dict


def test_gpt2_original_checkpoint_keys():
    """openai-community/gpt2's own file: no `transformer.` prefix, no lm_head, causal-mask buffers `attn.bias`."""
    hf = _gpt2(tie=True)
    sd = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    sd["h.0.attn.bias"] = torch.ones(1, 1, 64, 64).tril()
    model = from_hf_gpt2(sd, config_from_hf(hf.config))
    with torch.no_grad():
        torch.testing.assert_close(model(IDX)[0], hf(IDX).logits, rtol=0, atol=1e-5)


def test_gpt2_split_by_hand():
    """c_attn (d, 3d) is [W_q^T | W_k^T | W_v^T]: q_proj's weight is its first d columns, transposed."""
    hf = _gpt2(tie=True)
    model = from_hf(hf)
    c_attn = hf.transformer.h[1].attn.c_attn
    attn = model.layers[1].self_attn
    assert torch.equal(attn.k_proj.weight, c_attn.weight[:, 64:128].T)
    assert torch.equal(attn.v_proj.bias, c_attn.bias[128:])
    x = torch.randn(3, 64)
    torch.testing.assert_close(torch.cat([attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)], -1), c_attn(x))


def test_conversion_errors():
    hf = _llama(tie=False)
    cfg = config_from_hf(hf.config)
    sd = hf.state_dict()
    with pytest.raises(ValueError, match="not used"):
        from_hf_llama({**sd, "model.layers.0.self_attn.extra.weight": torch.zeros(1)}, cfg)
    with pytest.raises(ValueError, match="not GPT-2 shaped"):
        from_hf_gpt2(sd, cfg)
    with pytest.raises(ValueError, match="lacks 3 tensors"):
        from_hf_llama({k: v for k, v in sd.items() if "layers.1.mlp" not in k}, cfg)
    with pytest.raises(ValueError, match="lm_head"):
        from_hf_llama({k: v for k, v in sd.items() if k != "lm_head.weight"}, cfg)  # untied needs its head
    with pytest.raises(ValueError, match="shapes differ"):
        from_hf_llama(sd, config_from_hf({**hf.config.to_dict(), "intermediate_size": 170}))
    with pytest.raises(ValueError, match="n_layer"):
        from_hf_gpt2(_gpt2(tie=True).state_dict(), GPTConfig.preset("tiny", vocab_size=101, n_layer=3))
    with pytest.raises(ValueError, match="no Hugging Face equivalent"):
        hf_family(GPTConfig.preset("tiny", parallel_block=True))
    d = hf.config.to_dict()
    with pytest.raises(ValueError, match="rope_type"):
        config_from_hf({**d, "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}})
    with pytest.raises(ValueError, match="head_dim"):
        config_from_hf({**d, "head_dim": 32})
    with pytest.raises(ValueError, match="model_type"):
        config_from_hf({**d, "model_type": "bert"})


def test_config_from_transformers_4_dict():
    """transformers 4.x wrote rope_theta at the top level and rope_scaling = None."""
    d = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
         "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "hidden_act": "silu",
         "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "rope_scaling": None,
         "tie_word_embeddings": False, "attention_bias": False}  # meta-llama/Llama-2-7b-hf's config.json
    assert config_from_hf(d) == GPTConfig.preset("llama2-7b")


@pytest.mark.parametrize("name", ["gpt2", "gpt2-medium", "llama2-7b", "llama2-70b", "llama3-8b"])
def test_count_params_equals_transformers_on_meta(name):
    cfg = GPTConfig.preset(name)
    cls = transformers.GPT2LMHeadModel if name.startswith("gpt2") else transformers.LlamaForCausalLM
    with torch.device("meta"):
        hf = cls(config_to_hf(cfg))
    assert hf.num_parameters() == count_params(cfg)["total"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["tiny", "tiny-llama"])
def test_safetensors_round_trip(tmp_path, name, dtype):
    from safetensors import safe_open

    torch.manual_seed(0)
    model = _randomize(GPT(GPTConfig.preset(name))).to(dtype)
    path = tmp_path / "model.safetensors"
    save_safetensors(model, path)
    with safe_open(str(path), framework="pt") as f:
        assert ("lm_head.weight" in f.keys()) == (not model.cfg.tie_embeddings)  # a tied head is stored once
    back = load_safetensors(path)
    assert back.cfg == model.cfg and back.lm_head.weight.dtype == dtype
    assert (back.lm_head.weight is back.embed_tokens.weight) == model.cfg.tie_embeddings
    with torch.no_grad():
        assert torch.equal(back(IDX)[0], model(IDX)[0])


def test_load_safetensors_needs_config(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="save_safetensors"):
        load_safetensors(tmp_path / "other.safetensors")


def test_llama3_rope_scaling_from_and_to_hf():
    """Llama 3.1's rope_scaling {"rope_type": "llama3"}: config_from_hf reads it, and the converted model
    gives HF's logits at positions where the scaled frequencies differ from plain RoPE."""
    scaling = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=16)
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=172, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=101, max_position_embeddings=128,
                                   rms_norm_eps=1e-2, rope_theta=500.0, rope_scaling=scaling,
                                   attn_implementation="eager")
    hf = _randomize(transformers.LlamaForCausalLM(cfg))
    ours = from_hf(hf)
    assert ours.cfg.rope_scaling == {"kind": "llama3", "factor": 8.0, "original_len": 16, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0}
    with torch.no_grad():
        torch.testing.assert_close(ours(IDX)[0], hf(IDX).logits, rtol=1e-4, atol=1e-4)
        plain = from_hf(hf)
        plain.rope.scaling = None
        assert (plain(IDX)[0] - hf(IDX).logits).abs().max() > 1e-3  # the scaling matters at these lengths
    back = config_to_hf(ours.cfg).to_dict()
    rope = back.get("rope_parameters") or back.get("rope_scaling")
    assert rope["rope_type"] == "llama3" and rope["factor"] == 8.0
    assert config_from_hf(back) == ours.cfg
