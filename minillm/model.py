"""GPT: one decoder-only transformer whose presets are GPT-2 and Llama, assembled from the course's parts.

Implements:
- `GPTConfig`: the shape of the model and its pluggable parts (learned / rotary / no positions, LayerNorm /
  RMSNorm, GeLU / SwiGLU FFN, MHA / GQA / MQA, tied or untied head, sequential or parallel block), with
  presets from the published configs (`PRESETS`);
- `GPT`: token embedding -> n_layer Pre-LN blocks -> final norm -> lm_head, like GPT-2 (Radford et al. 2019,
  "Language Models are Unsupervised Multitask Learners") and Llama (Touvron et al. 2023, arXiv:2302.13971 and
  2307.09288), built from `minillm.attention.Attention`, `minillm.positional.RoPE`, `minillm.norms` and
  `minillm.ffn`; a `KVCache` per layer for incremental decoding; GPT-2's init (normal(0, 0.02), the
  residual output projections scaled by 1/sqrt(2 n_layer), GPT-2 paper sec. 2.3);
- `count_params(cfg)`: the parameter count by formula, part by part, and `param_table()`: what "7B" means.

Weight names are Hugging Face Llama's without the `model.` prefix: `embed_tokens`, `layers.{i}.self_attn.
{q,k,v,o}_proj`, `layers.{i}.input_layernorm`, `layers.{i}.post_attention_layernorm`, `norm`, `lm_head`, plus
`embed_positions` for learned positions (HF OPT's name). The MLP is `minillm.ffn`'s module, so its matrices
are `mlp.gate` / `mlp.up` / `mlp.down` (Llama: `gate_proj` / `up_proj` / `down_proj`; GPT-2: `c_fc` / `c_proj`);
`minillm.hf` maps both checkpoints to these names.

Leaves out: padding-aware batching (pass `mask`), sliding windows, MoE layers, encoder-decoder models,
precision / parallelism / adapters (functions of later chapters transform a finished `GPT`), generation
(chapter 7, `minillm.generate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from minillm.attention import Attention, AttentionConfig, KVCache, parallel_block, sequential_block
from minillm.ffn import FFN, GLUFFN, ffn_params, glu_ffn_params, llama_hidden_size
from minillm.norms import LayerNorm, RMSNorm
from minillm.positional import RoPE

POS = ("learned", "rope", "none")
NORMS = ("layernorm", "rmsnorm")
FFNS = ("gelu", "gelu_tanh", "relu", "swiglu", "geglu")
GLU = ("swiglu", "geglu")  # three matrices (gate, up, down); the others have two (up, down)


@dataclass
class GPTConfig:
    vocab_size: int = 128
    block_size: int = 64  # the longest context (learned positions have this many rows)
    n_layer: int = 2
    n_head: int = 4
    n_kv_head: int | None = None  # None = n_head (MHA); 1 = MQA; a divisor in between = GQA
    d_model: int = 64
    ffn_hidden: int = 0  # 0 = derived: 4 d for gelu / relu, Llama's rule (8/3 d rounded up to 256) for a GLU
    pos: str = "learned"  # "learned" (GPT-2) | "rope" (Llama) | "none" (NoPE: causal mask only)
    rope_theta: float = 10000.0
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    norm_eps: float = 1e-5
    ffn: str = "gelu"  # "gelu" | "gelu_tanh" (GPT-2's "gelu_new") | "relu" | "swiglu" (Llama) | "geglu"
    bias: bool = True  # on the linear layers and LayerNorm (GPT-2: True, Llama: False)
    tie_embeddings: bool = True  # lm_head.weight is embed_tokens.weight
    dropout: float = 0.0  # on embeddings, attention weights and both residual branches, while training
    parallel_block: bool = False  # x + attn(ln(x)) + mlp(ln(x)) with one shared norm (GPT-J, PaLM)
    init_std: float = 0.02
    head_dim: int = field(default=0, init=False)  # derived: d_model // n_head

    def __post_init__(self):
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "d_model"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_head={self.n_head}; change one of them")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} must be a multiple of n_kv_head={self.n_kv_head}: "
                             "pick n_kv_head among the divisors of n_head (1 = MQA, n_head = MHA)")
        self.head_dim = self.d_model // self.n_head
        for name, value, choices in (("pos", self.pos, POS), ("norm", self.norm, NORMS), ("ffn", self.ffn, FFNS)):
            if value not in choices:
                raise ValueError(f"{name}={value!r} is not one of {choices}")
        if self.pos == "rope" and (self.head_dim % 2 or self.rope_theta <= 1):
            raise ValueError(f"RoPE needs an even head_dim (got d_model/n_head={self.head_dim}) and rope_theta > 1 "
                             f"(got {self.rope_theta})")
        if self.ffn_hidden == 0:
            self.ffn_hidden = llama_hidden_size(self.d_model) if self.ffn in GLU else 4 * self.d_model
        if self.ffn_hidden < 1:
            raise ValueError(f"ffn_hidden must be positive (or 0 to derive it), got {self.ffn_hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.norm_eps < 0 or self.init_std <= 0:
            raise ValueError(f"need norm_eps >= 0 and init_std > 0, got {self.norm_eps}, {self.init_std}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> GPTConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {list(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments (derived fields left out), JSON-able: GPTConfig(**cfg.to_dict()) == cfg."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        names = {f.name for f in fields(cls) if f.init}
        return cls(**{k: v for k, v in d.items() if k in names})


_GPT2 = dict(pos="learned", norm="layernorm", norm_eps=1e-5, ffn="gelu_tanh", bias=True, tie_embeddings=True)
_LLAMA = dict(pos="rope", norm="rmsnorm", norm_eps=1e-5, ffn="swiglu", bias=False, tie_embeddings=False)

# Shapes from the published configs: openai-community/gpt2 and gpt2-medium config.json; meta-llama/Llama-2-{7,13,70}b-hf
# and Meta-Llama-3-8B config.json (rms_norm_eps 1e-5 in all of them; LLaMA-1's params.json had 1e-6);
# "small" is nanoGPT's shakespeare_char config (Karpathy, config/train_shakespeare_char.py: 10.65M parameters).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(vocab_size=128, block_size=64, n_layer=2, n_head=4, d_model=64, ffn="gelu"),
    "tiny-llama": dict(_LLAMA, vocab_size=128, block_size=64, n_layer=2, n_head=4, n_kv_head=2, d_model=64,
                       ffn_hidden=172),  # 172 ~ 8/3 * 64 (the 256-rounding of the Llama rule would give 256)
    "small": dict(vocab_size=65, block_size=256, n_layer=6, n_head=6, d_model=384, ffn="gelu", bias=False, dropout=0.2),
    "gpt2": dict(_GPT2, vocab_size=50257, block_size=1024, n_layer=12, n_head=12, d_model=768),
    "gpt2-medium": dict(_GPT2, vocab_size=50257, block_size=1024, n_layer=24, n_head=16, d_model=1024),
    "llama2-7b": dict(_LLAMA, vocab_size=32000, block_size=4096, n_layer=32, n_head=32, d_model=4096, ffn_hidden=11008),
    "llama2-13b": dict(_LLAMA, vocab_size=32000, block_size=4096, n_layer=40, n_head=40, d_model=5120,
                       ffn_hidden=13824),
    "llama2-70b": dict(_LLAMA, vocab_size=32000, block_size=4096, n_layer=80, n_head=64, n_kv_head=8, d_model=8192,
                       ffn_hidden=28672),
    "llama3-8b": dict(_LLAMA, vocab_size=128256, block_size=8192, n_layer=32, n_head=32, n_kv_head=8, d_model=4096,
                      ffn_hidden=14336, rope_theta=500000.0),
}


def _norm(cfg: GPTConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.d_model, eps=cfg.norm_eps)
    return LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)


class Block(nn.Module):
    """One Pre-LN decoder layer: attention and MLP, each read through a norm and added to the residual stream."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        acfg = AttentionConfig(d_model=cfg.d_model, n_head=cfg.n_head, n_kv_head=cfg.n_kv_head, bias=cfg.bias,
                               dropout=cfg.dropout)
        self.input_layernorm = _norm(cfg)
        self.self_attn = Attention(acfg)
        # the parallel block (GPT-J, PaLM) reads both branches through the one input norm
        self.post_attention_layernorm = None if cfg.parallel_block else _norm(cfg)
        if cfg.ffn in GLU:
            self.mlp: nn.Module = GLUFFN(cfg.d_model, cfg.ffn_hidden, variant=cfg.ffn, bias=cfg.bias)
        else:
            self.mlp = FFN(cfg.d_model, cfg.ffn_hidden, activation=cfg.ffn, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, **attn_kwargs: Any) -> torch.Tensor:
        """x: (B, T, d) -> (B, T, d); attn_kwargs (rotate, mask, is_causal, kv_cache, pos) go to the attention."""

        def attn(h: torch.Tensor) -> torch.Tensor:
            return self.drop(self.self_attn(h, **attn_kwargs))

        def mlp(h: torch.Tensor) -> torch.Tensor:
            return self.drop(self.mlp(h))

        if self.post_attention_layernorm is None:
            return parallel_block(x, attn, mlp, self.input_layernorm)
        return sequential_block(x, attn, mlp, self.input_layernorm, self.post_attention_layernorm)


class GPT(nn.Module):
    """A decoder-only language model: idx (B, T) -> next-token logits (B, T, vocab_size)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.embed_positions = nn.Embedding(cfg.block_size, cfg.d_model) if cfg.pos == "learned" else None
        # a plain object, not a module: set `model.rope.scaling = RopeScaling(...)` to stretch the context
        self.rope = RoPE(cfg.rope_theta, layout="halves") if cfg.pos == "rope" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = _norm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.tie_weights()
        self.reset_parameters()

    def tie_weights(self) -> None:
        """Share the input embedding with the output projection (Press & Wolf 2017) when cfg.tie_embeddings."""
        if self.cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2's init: every matrix and embedding ~ N(0, init_std^2), biases 0, norms 1 (and 0); the two
        projections that write into the residual stream (o_proj, mlp.down) get init_std / sqrt(2 n_layer), so
        the stream's variance does not grow with depth (2 additions per layer)."""
        std = self.cfg.init_std
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, 0.0, std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, LayerNorm | RMSNorm) and m.weight is not None:
                nn.init.ones_(m.weight)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        for layer in self.layers:
            nn.init.normal_(layer.self_attn.o_proj.weight, 0.0, std / math.sqrt(2 * self.cfg.n_layer))
            nn.init.normal_(layer.mlp.down.weight, 0.0, std / math.sqrt(2 * self.cfg.n_layer))

    def make_kv_caches(self, max_len: int | None = None) -> list[KVCache]:
        """One empty KVCache per layer holding up to max_len tokens (default block_size); the buffers are
        allocated on the first forward, with the batch size, dtype and device of that call."""
        return [KVCache(max_len or self.cfg.block_size) for _ in self.layers]

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        kv_caches: list[KVCache] | None = None,
        start_pos: int | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> (logits (B, T, V), mean cross-entropy against targets (B, T) or None).

        kv_caches (from `make_kv_caches`): idx continues the cached tokens, at positions len(cache) .. + T - 1.
        start_pos: the position of idx[:, 0] (default: the number of cached tokens, or 0). Learned positions
        stop at block_size; RoPE and pos="none" run past it (extrapolation, chapter 2).
        mask: bool, True = may attend, broadcastable to (B, H, T, S) over the S cached + new keys; it replaces
        the causal mask (e.g. `attention.prefix_lm_mask` for a prefix LM). targets = -100 are ignored."""
        B, T = idx.shape
        cached = 0
        if kv_caches is not None:
            if len(kv_caches) != len(self.layers):
                raise ValueError(f"got {len(kv_caches)} caches for {len(self.layers)} layers; use make_kv_caches()")
            cached = len(kv_caches[0])
            if start_pos is not None and start_pos != cached:
                raise ValueError(f"start_pos={start_pos} but the caches hold {cached} tokens; leave start_pos out")
        start = cached if start_pos is None else start_pos
        if start < 0:
            raise ValueError(f"start_pos must be >= 0, got {start}")
        if self.embed_positions is not None and start + T > self.cfg.block_size:
            raise ValueError(f"positions up to {start + T - 1} but learned positions have block_size="
                             f"{self.cfg.block_size} rows; shorten the input or crop it to the last block_size tokens")
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.embed_tokens(idx)  # (B, T, d)
        if self.embed_positions is not None:
            x = x + self.embed_positions(pos)  # (B, T, d) + (T, d)
        x = self.drop(x)
        rotate = self.rope.rotate if self.rope is not None else None
        for i, layer in enumerate(self.layers):
            cache = kv_caches[i] if kv_caches is not None else None
            x = layer(x, rotate=rotate, mask=mask, is_causal=mask is None, kv_cache=cache, pos=pos)
        logits = self.lm_head(self.norm(x))  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        return logits, loss

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Number of distinct parameters (a tied head counts once); exclude_embeddings drops the token and
        position tables (with a tied head that matrix is the head too, so it goes as well)."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.embed_tokens.weight.numel()
            if self.embed_positions is not None:
                n -= self.embed_positions.weight.numel()
        return n


# ---------------------------------------------------------------------------------------------- counting


def count_params(cfg: GPTConfig) -> dict[str, int]:
    """Parameters of GPT(cfg) by formula, part by part (all layers together), without building the model.

    attention per layer: q and o are d x (H hd), k and v d x (H_kv hd) (GQA shrinks only k and v), + biases;
    mlp per layer: 2 matrices d x h (gelu) or 3 (GLU), + biases; a norm: d (RMSNorm) or 2d (LayerNorm with
    bias); embeddings: V d (+ block_size d for learned positions); lm_head: V d unless tied."""
    d, hd, L = cfg.d_model, cfg.head_dim, cfg.n_layer
    q_out, kv_out = cfg.n_head * hd, cfg.n_kv_head * hd
    attn = d * q_out + 2 * d * kv_out + q_out * d + (q_out + 2 * kv_out + d if cfg.bias else 0)
    mlp = (glu_ffn_params if cfg.ffn in GLU else ffn_params)(d, cfg.ffn_hidden, bias=cfg.bias)
    one_norm = d * (2 if cfg.norm == "layernorm" and cfg.bias else 1)
    norms_per_layer = one_norm * (1 if cfg.parallel_block else 2)
    out = {
        "embed_tokens": cfg.vocab_size * d,
        "embed_positions": cfg.block_size * d if cfg.pos == "learned" else 0,
        "attention": L * attn,
        "mlp": L * mlp,
        "norms": L * norms_per_layer + one_norm,  # + the final norm
        "lm_head": 0 if cfg.tie_embeddings else cfg.vocab_size * d,
        "per_layer": attn + mlp + norms_per_layer,
    }
    out["total"] = sum(v for k, v in out.items() if k != "per_layer")
    out["non_embedding"] = out["total"] - out["embed_tokens"] - out["embed_positions"]
    return out


def param_table(names: list[str] | None = None, dtype_bytes: int = 2) -> list[dict[str, Any]]:
    """What "7B" means: per preset, the shape, the total parameters and where they sit, and the memory of the
    weights alone at dtype_bytes per parameter (2 = bf16 / fp16)."""
    rows = []
    for name in names or list(PRESETS):
        cfg = GPTConfig.preset(name)
        c = count_params(cfg)
        total = c["total"]
        rows.append({
            "preset": name, "n_layer": cfg.n_layer, "d_model": cfg.d_model, "n_head": cfg.n_head,
            "n_kv_head": cfg.n_kv_head, "ffn_hidden": cfg.ffn_hidden, "vocab": cfg.vocab_size, "params": total,
            "billions": total / 1e9,
            "embeddings %": 100 * (c["embed_tokens"] + c["embed_positions"] + c["lm_head"]) / total,
            "attention %": 100 * c["attention"] / total, "mlp %": 100 * c["mlp"] / total,
            "12 L d^2": 12 * cfg.n_layer * cfg.d_model**2,  # Kaplan et al. 2020's approximation (4d MLP, MHA)
            "weights GiB": total * dtype_bytes / 2**30,
        })
    return rows

