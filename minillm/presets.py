"""The one table of model shapes: the course's small experiment models and published models, with sources.

`PRESETS[name]` holds the keyword arguments of `minillm.model.GPTConfig`; `GPTConfig.preset(name)`,
`minillm.attention.AttentionConfig.preset(name)` and `minillm.attention.MODEL_SHAPES` all read this table,
so a shape is written down once. `SOURCES[name]` says where each published shape comes from.

Course presets (they train in seconds to minutes on a laptop CPU):
- "toy": the model of the experiments of chapters 2-4 (the former `ToyLM` default: 2 layers, 4 heads, d 64,
  no positions, LayerNorm, exact-GeLU 4x MLP, biases, an untied head, PyTorch's default init); chapters
  2-4 override `pos`,
  `norm`, `norm_position`, `ffn`, `n_layer`;
- "tiny" (GPT-2 family) and "tiny-llama" (Llama family) at the same size, for chapters 6-7;
- "base": the course's base model from Part II on (`minillm.pretrained`, recipe in `minillm/base_model/`);
- "small": nanoGPT's shakespeare_char shape (Karpathy, config/train_shakespeare_char.py: 10.65M parameters).

Published shapes are copied from each model's config.json on the Hugging Face Hub (see SOURCES). Leaves
out what GPT does not model: Mistral's sliding window (4096), and Falcon's LayerNorm biases (GPT's one
`bias` flag covers linear layers and LayerNorms alike, so "falcon-7b" has 33 x 4544 parameters fewer).
"""

from __future__ import annotations

from typing import Any

_GPT2 = dict(pos="learned", norm="layernorm", norm_eps=1e-5, ffn="gelu_tanh", bias=True, tie_embeddings=True)
_LLAMA = dict(pos="rope", norm="rmsnorm", norm_eps=1e-5, ffn="swiglu", bias=False, tie_embeddings=False)

PRESETS: dict[str, dict[str, Any]] = {
    # ---- the course's small models
    "toy": dict(vocab_size=128, block_size=64, n_layer=2, n_head=4, d_model=64, pos="none", norm="layernorm",
                ffn="gelu", bias=True, tie_embeddings=False, init="torch"),
    "tiny": dict(vocab_size=128, block_size=64, n_layer=2, n_head=4, d_model=64, ffn="gelu"),
    "tiny-llama": dict(_LLAMA, vocab_size=128, block_size=64, n_layer=2, n_head=4, n_kv_head=2, d_model=64,
                       ffn_hidden=172),  # 172 ~ 8/3 * 64 (the 256-rounding of the Llama rule would give 256)
    # the course's base model (Part II on): Llama-shaped, tied embeddings, sized to train in ~25 CPU minutes
    "base": dict(_LLAMA, vocab_size=2917, block_size=256, n_layer=4, n_head=6, d_model=192, ffn_hidden=512,
                 tie_embeddings=True),
    "small": dict(vocab_size=65, block_size=256, n_layer=6, n_head=6, d_model=384, ffn="gelu", bias=False, dropout=0.2),
    # ---- published models
    "gpt2": dict(_GPT2, vocab_size=50257, block_size=1024, n_layer=12, n_head=12, d_model=768),
    "gpt2-medium": dict(_GPT2, vocab_size=50257, block_size=1024, n_layer=24, n_head=16, d_model=1024),
    "llama2-7b": dict(_LLAMA, vocab_size=32000, block_size=4096, n_layer=32, n_head=32, d_model=4096, ffn_hidden=11008),
    "llama2-13b": dict(_LLAMA, vocab_size=32000, block_size=4096, n_layer=40, n_head=40, d_model=5120,
                       ffn_hidden=13824),
    "llama2-70b": dict(_LLAMA, vocab_size=32000, block_size=4096, n_layer=80, n_head=64, n_kv_head=8, d_model=8192,
                       ffn_hidden=28672),
    "llama3-8b": dict(_LLAMA, vocab_size=128256, block_size=8192, n_layer=32, n_head=32, n_kv_head=8, d_model=4096,
                      ffn_hidden=14336, rope_theta=500000.0),
    "mistral-7b": dict(_LLAMA, vocab_size=32000, block_size=32768, n_layer=32, n_head=32, n_kv_head=8, d_model=4096,
                       ffn_hidden=14336),
    "falcon-7b": dict(vocab_size=65024, block_size=2048, n_layer=32, n_head=71, n_kv_head=1, d_model=4544,
                      pos="rope", norm="layernorm", ffn="gelu", bias=False, tie_embeddings=True,
                      parallel_block=True),
}

SOURCES: dict[str, str] = {
    "small": "Karpathy, nanoGPT, config/train_shakespeare_char.py",
    "gpt2": "openai-community/gpt2 config.json (Radford et al. 2019)",
    "gpt2-medium": "openai-community/gpt2-medium config.json",
    "llama2-7b": "meta-llama/Llama-2-7b-hf config.json (Touvron et al. 2023, arXiv:2307.09288)",
    "llama2-13b": "meta-llama/Llama-2-13b-hf config.json",
    "llama2-70b": "meta-llama/Llama-2-70b-hf config.json (GQA, 8 kv heads)",
    "llama3-8b": "meta-llama/Meta-Llama-3-8B config.json (rope_theta 500000)",
    "mistral-7b": "mistralai/Mistral-7B-v0.1 config.json (Jiang et al. 2023, arXiv:2310.06825)",
    "falcon-7b": "tiiuae/falcon-7b config.json (multi_query, parallel_attn; 71 heads of 64)",
}

# the published models, in the order tables list them
PUBLISHED: tuple[str, ...] = tuple(name for name in PRESETS if name in SOURCES and name != "small")


def preset(name: str) -> dict[str, Any]:
    """A copy of the GPTConfig keyword arguments of preset `name`."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {list(PRESETS)}")
    return dict(PRESETS[name])
