"""Hugging Face interop: GPT-2 and Llama checkpoints to and from `minillm.model.GPT`, and safetensors files.

Implements:
- `config_from_hf` / `config_to_hf`: a `transformers` GPT2Config or LlamaConfig (object or dict) <-> GPTConfig;
  `hf_family(cfg)` says which of the two computes the same function as GPT(cfg), if any;
- `from_hf_gpt2` / `to_hf_gpt2`: GPT-2's state dict. HF's GPT-2 keeps OpenAI's `Conv1D` layers, whose weight
  is stored (in, out) and applied as x @ W + b, the transpose of `nn.Linear`'s (out, in); and one fused
  `c_attn` (d, 3d) holding q, k and v side by side. So: split c_attn in three along its output dim, and
  transpose every matrix of a block. Embeddings and LayerNorms map one to one;
- `from_hf_llama` / `to_hf_llama`: Llama's state dict, a renaming only: GPT's names are Llama's minus the
  `model.` prefix and the `_proj` of the MLP. No permutation of q / k is needed: HF's conversion script
  already permuted Meta's weights from the adjacent-pairs RoPE layout to HF's rotate_half ("halves") one,
  which is what `GPT` uses (`RoPE(layout="halves")`); a checkpoint in Meta's own layout would need it;
- `from_hf(hf_model)` / `to_hf(model)`: the same for whole models;
- `save_safetensors` / `load_safetensors`: a GPT as one .safetensors file, the config in its metadata.

`transformers` is imported only inside `config_to_hf` and `to_hf` (the tests use it as the reference);
everything else works on plain dicts of tensors. `from_hf_*` do not copy: where no transform was needed the
model's parameters share storage with the given tensors (`load_state_dict(assign=True)`), and take their dtype;
`from_hf` copies. Loaded models come back in eval mode, as `from_pretrained`'s do.
RoPE scaling: plain RoPE and Llama 3.1's "llama3" rope type (`GPTConfig.rope_scaling`) both ways.
Leaves out: Meta's original Llama format, other RoPE scalings (linear, dynamic, yarn), sharded checkpoints
(several .safetensors files and an index), the tokenizers, other families (Mistral, Qwen, OPT ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from minillm.model import GLU, GPT, GPTConfig

_GPT2_ACT = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
_LLAMA_ACT = {"silu": "swiglu", "swish": "swiglu", "gelu": "geglu"}

# ---------------------------------------------------------------------------------------------- configs


def _as_dict(hf_config: Any) -> dict[str, Any]:
    if isinstance(hf_config, dict):
        return hf_config
    if hasattr(hf_config, "to_dict"):
        return hf_config.to_dict()
    raise TypeError(f"expected a transformers config or a dict (config.json), got {type(hf_config).__name__}")


def config_from_hf(hf_config: Any) -> GPTConfig:
    """GPTConfig of a Hugging Face GPT2Config / LlamaConfig, or of their config.json as a dict."""
    c = _as_dict(hf_config)
    kind = c.get("model_type")
    if kind == "gpt2":
        act = c.get("activation_function", "gelu_new")
        if act not in _GPT2_ACT:
            raise ValueError(f"GPT-2 activation_function={act!r} is not supported; use one of {list(_GPT2_ACT)}")
        if not c.get("scale_attn_weights", True) or c.get("scale_attn_by_inverse_layer_idx", False):
            raise ValueError("only GPT-2's default attention scaling 1/sqrt(head_dim) is supported")
        if c.get("add_cross_attention", False):
            raise ValueError("add_cross_attention=True is an encoder-decoder model; GPT is decoder-only")
        return GPTConfig(
            vocab_size=c["vocab_size"], block_size=c["n_positions"], n_layer=c["n_layer"], n_head=c["n_head"],
            d_model=c["n_embd"], ffn_hidden=c.get("n_inner") or 0, pos="learned", norm="layernorm",
            norm_eps=c.get("layer_norm_epsilon", 1e-5), ffn=_GPT2_ACT[act], bias=True,
            tie_embeddings=c.get("tie_word_embeddings", True), dropout=c.get("resid_pdrop", 0.0),
        )
    if kind == "llama":
        act = c.get("hidden_act", "silu")
        if act not in _LLAMA_ACT:
            raise ValueError(f"Llama hidden_act={act!r} is not supported; use one of {list(_LLAMA_ACT)}")
        rope = c.get("rope_parameters") or c.get("rope_scaling") or {}  # transformers >= 5 / 4.x
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        scaling = None
        if rope_type == "llama3":  # Llama 3.1+: band scaling of the frequencies (minillm.rope_scaling)
            scaling = {"kind": "llama3", "factor": float(rope["factor"]),
                       "original_len": int(rope["original_max_position_embeddings"]),
                       "low_freq_factor": float(rope.get("low_freq_factor", 1.0)),
                       "high_freq_factor": float(rope.get("high_freq_factor", 4.0))}
        elif rope_type != "default":
            raise ValueError(f"rope_type={rope_type!r} is not supported (plain RoPE or 'llama3'); drop the RoPE "
                             "scaling")
        theta = rope.get("rope_theta", c.get("rope_theta", 10000.0))
        d, n_head = c["hidden_size"], c["num_attention_heads"]
        if c.get("head_dim") not in (None, d // n_head):
            raise ValueError(f"head_dim={c['head_dim']} differs from hidden_size / num_attention_heads={d // n_head}; "
                             "GPT derives head_dim = d_model // n_head")
        bias = c.get("attention_bias", False)
        if c.get("mlp_bias", bias) != bias:
            raise ValueError("attention_bias and mlp_bias differ; GPTConfig has a single `bias` for both")
        return GPTConfig(
            vocab_size=c["vocab_size"], block_size=c["max_position_embeddings"], n_layer=c["num_hidden_layers"],
            n_head=n_head, n_kv_head=c.get("num_key_value_heads") or n_head, d_model=d,
            ffn_hidden=c["intermediate_size"], pos="rope", rope_theta=float(theta), rope_scaling=scaling,
            norm="rmsnorm",
            norm_eps=c.get("rms_norm_eps", 1e-6), ffn=_LLAMA_ACT[act], bias=bias,
            tie_embeddings=c.get("tie_word_embeddings", False), dropout=c.get("attention_dropout", 0.0),
        )
    raise ValueError(f"model_type={kind!r} is not supported; minillm converts 'gpt2' and 'llama'")


def hf_family(cfg: GPTConfig) -> str:
    """"gpt2" or "llama": which Hugging Face architecture computes the same function as GPT(cfg)."""
    common = not cfg.parallel_block and cfg.norm_position == "pre"
    if common and cfg.pos == "learned" and cfg.norm == "layernorm" and cfg.bias and cfg.ffn not in GLU \
            and cfg.n_kv_head == cfg.n_head:
        return "gpt2"
    scaling_ok = cfg.rope_scaling is None or cfg.rope_scaling.get("kind") == "llama3"
    if common and cfg.pos == "rope" and scaling_ok and cfg.norm == "rmsnorm" and cfg.ffn in GLU:
        return "llama"
    raise ValueError("no Hugging Face equivalent: GPT-2 needs pos='learned', norm='layernorm', bias=True, a gelu/relu "
                     "FFN and MHA; Llama needs pos='rope' (no scaling or 'llama3'), norm='rmsnorm' and ffn='swiglu' "
                     "or 'geglu'; both need norm_position='pre' and parallel_block=False")


def config_to_hf(cfg: GPTConfig) -> Any:
    """A transformers GPT2Config or LlamaConfig for cfg (imports transformers)."""
    if hf_family(cfg) == "gpt2":
        from transformers import GPT2Config

        act = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}[cfg.ffn]
        return GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.d_model,
                          n_layer=cfg.n_layer, n_head=cfg.n_head, n_inner=cfg.ffn_hidden, activation_function=act,
                          layer_norm_epsilon=cfg.norm_eps, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
                          attn_pdrop=cfg.dropout, tie_word_embeddings=cfg.tie_embeddings,
                          bos_token_id=cfg.vocab_size - 1, eos_token_id=cfg.vocab_size - 1)
    from transformers import LlamaConfig

    rope_scaling = None
    if cfg.rope_scaling is not None:
        r = cfg.rope_scaling
        rope_scaling = {"rope_type": "llama3", "factor": r["factor"], "original_max_position_embeddings":
                        r["original_len"], "low_freq_factor": r.get("low_freq_factor", 1.0),
                        "high_freq_factor": r.get("high_freq_factor", 4.0)}
    return LlamaConfig(rope_scaling=rope_scaling,
                       vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.ffn_hidden,
                       num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                       num_key_value_heads=cfg.n_kv_head, head_dim=cfg.head_dim,
                       hidden_act="silu" if cfg.ffn == "swiglu" else "gelu",
                       max_position_embeddings=cfg.block_size, rms_norm_eps=cfg.norm_eps, rope_theta=cfg.rope_theta,
                       attention_bias=cfg.bias, mlp_bias=cfg.bias, tie_word_embeddings=cfg.tie_embeddings,
                       attention_dropout=cfg.dropout, bos_token_id=min(1, cfg.vocab_size - 1),
                       eos_token_id=min(2, cfg.vocab_size - 1))


# ---------------------------------------------------------------------------------------------- state dicts


def _strip(sd: dict[str, torch.Tensor], prefix: str, ignore: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Drop an optional prefix and the buffers that are not weights (causal masks, cached RoPE frequencies)."""
    out = {}
    for k, v in sd.items():
        if k.endswith(ignore):
            continue
        out[k[len(prefix):] if k.startswith(prefix) else k] = v
    return out


def _load(cfg: GPTConfig, sd: dict[str, torch.Tensor], leftover: dict[str, torch.Tensor]) -> GPT:
    """GPT(cfg) holding the tensors of sd (GPT's names), built on the meta device so nothing is allocated twice.

    leftover: checkpoint entries that no rule mapped; any is an error, as is a missing or mis-shaped tensor."""
    if cfg.tie_embeddings and "embed_tokens.weight" in sd:
        sd["lm_head.weight"] = sd["embed_tokens.weight"]
    with torch.device("meta"):
        model = GPT(cfg)
    expected = model.state_dict()
    unused = sorted(set(leftover) | (set(sd) - set(expected)))
    if unused:
        raise ValueError(f"{len(unused)} tensors of the checkpoint were not used, e.g. {unused[:4]}; "
                         "is it the architecture the config says?")
    missing = sorted(set(expected) - set(sd))
    if missing:
        raise ValueError(f"the checkpoint lacks {len(missing)} tensors, e.g. {missing[:4]}; check n_layer and "
                         "tie_embeddings (an untied model needs lm_head.weight)")
    wrong = [f"{k}: {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if sd[k].shape != v.shape]
    if wrong:
        raise ValueError(f"shapes differ from the config's (checkpoint vs config): {wrong[:4]}")
    model.load_state_dict(sd, strict=True, assign=True)
    model.tie_weights()  # assign=True put two separate Parameters in place of the shared one
    return model.eval()


def from_hf_gpt2(state_dict: dict[str, torch.Tensor], cfg: GPTConfig) -> GPT:
    """GPT from a Hugging Face GPT-2 state dict (keys with or without the `transformer.` prefix)."""
    if hf_family(cfg) != "gpt2":
        raise ValueError("cfg is not GPT-2 shaped; build it with config_from_hf(hf_config)")
    src = _strip(state_dict, "transformer.", (".attn.bias", ".attn.masked_bias"))

    def take(key: str) -> torch.Tensor:
        if key not in src:
            raise ValueError(f"the GPT-2 checkpoint has no {key!r}; is n_layer={cfg.n_layer} right?")
        return src.pop(key)

    sd = {"embed_tokens.weight": take("wte.weight"), "embed_positions.weight": take("wpe.weight"),
          "norm.weight": take("ln_f.weight"), "norm.bias": take("ln_f.bias")}
    head = src.pop("lm_head.weight", None)
    if head is not None and not cfg.tie_embeddings:
        sd["lm_head.weight"] = head
    for i in range(cfg.n_layer):
        h, o = f"h.{i}.", f"layers.{i}."
        for theirs, ours in (("ln_1", "input_layernorm"), ("ln_2", "post_attention_layernorm")):
            sd[o + ours + ".weight"], sd[o + ours + ".bias"] = take(h + theirs + ".weight"), take(h + theirs + ".bias")
        # c_attn: Conv1D weight (d, 3d) = [W_q^T | W_k^T | W_v^T], bias (3d,) = [b_q | b_k | b_v]
        w, b = take(h + "attn.c_attn.weight"), take(h + "attn.c_attn.bias")
        for name, w_part, b_part in zip("qkv", w.chunk(3, dim=1), b.chunk(3), strict=True):
            sd[o + f"self_attn.{name}_proj.weight"] = w_part.t().contiguous()  # (d, d) as nn.Linear's (out, in)
            sd[o + f"self_attn.{name}_proj.bias"] = b_part.contiguous()
        for theirs, ours in (("attn.c_proj", "self_attn.o_proj"), ("mlp.c_fc", "mlp.up"), ("mlp.c_proj", "mlp.down")):
            sd[o + ours + ".weight"] = take(h + theirs + ".weight").t().contiguous()
            sd[o + ours + ".bias"] = take(h + theirs + ".bias")
    return _load(cfg, sd, src)


def to_hf_gpt2(model: GPT) -> dict[str, torch.Tensor]:
    """The state dict of the equivalent transformers GPT2LMHeadModel (for its load_state_dict)."""
    if hf_family(model.cfg) != "gpt2":
        raise ValueError("the model is not GPT-2 shaped (see hf_family)")
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    out = {"transformer.wte.weight": sd["embed_tokens.weight"], "transformer.wpe.weight": sd["embed_positions.weight"],
           "transformer.ln_f.weight": sd["norm.weight"], "transformer.ln_f.bias": sd["norm.bias"],
           "lm_head.weight": sd["lm_head.weight"]}
    for i in range(model.cfg.n_layer):
        h, o = f"transformer.h.{i}.", f"layers.{i}."
        for theirs, ours in (("ln_1", "input_layernorm"), ("ln_2", "post_attention_layernorm")):
            out[h + theirs + ".weight"], out[h + theirs + ".bias"] = sd[o + ours + ".weight"], sd[o + ours + ".bias"]
        qkv = [o + f"self_attn.{n}_proj" for n in "qkv"]
        out[h + "attn.c_attn.weight"] = torch.cat([sd[p + ".weight"] for p in qkv], dim=0).t().contiguous()  # (d, 3d)
        out[h + "attn.c_attn.bias"] = torch.cat([sd[p + ".bias"] for p in qkv])
        for theirs, ours in (("attn.c_proj", "self_attn.o_proj"), ("mlp.c_fc", "mlp.up"), ("mlp.c_proj", "mlp.down")):
            out[h + theirs + ".weight"] = sd[o + ours + ".weight"].t().contiguous()
            out[h + theirs + ".bias"] = sd[o + ours + ".bias"]
    return out


_LLAMA_MLP = (("mlp.gate_proj.", "mlp.gate."), ("mlp.up_proj.", "mlp.up."), ("mlp.down_proj.", "mlp.down."))


def from_hf_llama(state_dict: dict[str, torch.Tensor], cfg: GPTConfig) -> GPT:
    """GPT from a Hugging Face Llama state dict (keys with or without the `model.` prefix)."""
    if hf_family(cfg) != "llama":
        raise ValueError("cfg is not Llama shaped; build it with config_from_hf(hf_config)")
    src = _strip(state_dict, "model.", ("rotary_emb.inv_freq",))
    if cfg.tie_embeddings:
        src.pop("lm_head.weight", None)
    sd = {}
    for k in [k for k in src if k.startswith(("embed_tokens.", "norm.", "lm_head.", "layers."))]:
        new = k
        for theirs, ours in _LLAMA_MLP:
            new = new.replace(theirs, ours)
        sd[new] = src.pop(k)
    return _load(cfg, sd, src)


def to_hf_llama(model: GPT) -> dict[str, torch.Tensor]:
    """The state dict of the equivalent transformers LlamaForCausalLM (for its load_state_dict)."""
    if hf_family(model.cfg) != "llama":
        raise ValueError("the model is not Llama shaped (see hf_family)")
    out = {}
    for k, v in model.state_dict().items():
        for theirs, ours in _LLAMA_MLP:
            k = k.replace(ours, theirs)
        out[k if k.startswith("lm_head.") else "model." + k] = v.detach()
    return out


def from_hf(hf_model: Any) -> GPT:
    """A GPT computing the same function as a transformers GPT2LMHeadModel or LlamaForCausalLM (weights copied)."""
    cfg = config_from_hf(hf_model.config)
    sd = {k: v.detach().clone() for k, v in hf_model.state_dict().items()}
    return (from_hf_gpt2 if hf_family(cfg) == "gpt2" else from_hf_llama)(sd, cfg)


def to_hf(model: GPT) -> Any:
    """The equivalent transformers GPT2LMHeadModel or LlamaForCausalLM, in eval mode (imports transformers)."""
    hf_cfg = config_to_hf(model.cfg)
    if hf_family(model.cfg) == "gpt2":
        from transformers import GPT2LMHeadModel as cls

        sd = to_hf_gpt2(model)
    else:
        from transformers import LlamaForCausalLM as cls

        sd = to_hf_llama(model)
    hf_model = cls(hf_cfg).to(model.lm_head.weight.dtype)
    hf_model.load_state_dict(sd, strict=True)
    return hf_model.eval()


# ---------------------------------------------------------------------------------------------- safetensors


def save_safetensors(model: GPT, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write the weights (a tied head once) and the config (JSON, in the file's metadata) to `path`."""
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        del sd["lm_head.weight"]  # the same tensor as embed_tokens.weight; safetensors refuses shared storage
    save_file(sd, str(path), metadata={**(metadata or {}), "format": "pt",
                                       "minillm_config": json.dumps(model.cfg.to_dict())})


def load_safetensors(path: str | Path, device: str | torch.device = "cpu") -> GPT:
    """The GPT saved by `save_safetensors`, on `device`, in the dtype it was saved in."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device=str(device)) as f:
        meta = f.metadata() or {}
        if "minillm_config" not in meta:
            raise ValueError(f"{path} has no minillm_config metadata: it was not written by save_safetensors")
        sd = {k: f.get_tensor(k) for k in f.keys()}
    return _load(GPTConfig.from_dict(json.loads(meta["minillm_config"])), sd, {})
