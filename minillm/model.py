"""GPT: the course's one decoder-only transformer; GPT-2, Llama and the small experiment models are its presets.

Implements:
- `GPTConfig`: the shape of the model and its pluggable parts: positions (none / sinusoidal / learned / T5
  relative bias / RoPE / ALiBi, chapter 2), LayerNorm / RMSNorm placed before (Pre-LN) or after (Post-LN,
  DeepNorm) each sub-layer (chapter 3), GeLU / ReLU / SwiGLU / GeGLU FFN (chapter 4), MHA / GQA / MQA, tied
  or untied head, sequential or parallel block; shapes from `minillm.presets`;
- `GPT`: token embedding -> n_layer blocks -> final norm (Pre-LN only) -> lm_head, like GPT-2 (Radford et al.
  2019) and Llama (Touvron et al. 2023, arXiv:2302.13971 and 2307.09288), built from `minillm.attention`,
  `minillm.positional`, `minillm.norms` and `minillm.ffn`; a `KVCache` per layer for incremental decoding;
- three init rules: GPT-2's (normal(0, 0.02), the residual output projections scaled by 1/sqrt(2 n_layer),
  GPT-2 paper sec. 2.3), PyTorch's layer defaults ("torch": Linear U(+-1/sqrt(fan_in)), Embedding N(0, 1);
  the "toy" preset of chapters 2-4) and DeepNorm's ("torch" + `deepnorm_init_` on the blocks, Wang et al.
  2022, arXiv:2203.00555);
- `apply_deepnorm`, `block_grad_norms`: DeepNorm on a built model, and the per-layer gradient-norm probe of
  chapter 3's Pre-LN / Post-LN experiment;
- `count_params(cfg)`: the parameter count by formula, part by part, and `param_table()`: what "7B" means.

Positions. "sinusoidal" and "learned" are added to the token embeddings. The sinusoids have entries of size 1:
with GPT-2's init (embeddings of std 0.02) they drown the tokens, which is why the original Transformer
initialises its embeddings at std d^(-1/2) and multiplies them by sqrt(d) (Vaswani et al. 2017 sec. 3.4); the
"toy" preset uses PyTorch's default init (embeddings N(0, 1)), where the two have comparable sizes. "rope"
rotates q and k; "t5" and "alibi" add a (H, T, S) bias to the attention scores, handed to the attention
kernel as its float `mask` (with -inf on the keys a query may not see, so causality and any user mask are
folded into it). The bias rows are those of the queries' absolute positions, so decoding with a KV cache
equals the full forward. As in GPT-2 and Llama, every scheme keeps the 1/sqrt(head_dim) scaling of the
scores (T5 itself has none).

Post-LN (norm(alpha x + f(x)) per sub-layer, the original Transformer and BERT) ends without a final norm:
the last sub-layer's output is already normalised, and neither of those models adds one. `deepnorm=True`
sets DeepNorm's alpha = (2N)^(1/4) and init gain beta = (8N)^(-1/4) (decoder-only row of the paper's table).

Weight names are Hugging Face Llama's without the `model.` prefix: `embed_tokens`, `layers.{i}.self_attn.
{q,k,v,o}_proj`, `layers.{i}.input_layernorm` (the attention sub-layer's norm), `layers.{i}.
post_attention_layernorm` (the MLP sub-layer's), `norm`, `lm_head`, plus `embed_positions` for learned
positions (HF OPT's name) and `rel_bias.table` for T5's bias. The MLP is `minillm.ffn`'s module
(`mlp.gate` / `mlp.up` / `mlp.down`); `minillm.hf` maps GPT-2 and Llama checkpoints to these names.

Leaves out: padding-aware batching (pass `mask`), sliding windows, MoE layers, encoder-decoder models,
precision / parallelism / adapters (functions of later chapters transform a finished `GPT`), generation
(chapter 7, `minillm.generate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from minillm.attention import Attention, AttentionConfig, KVCache, causal_mask, parallel_block
from minillm.ffn import FFN, GLUFFN, ffn_params, glu_ffn_params, llama_hidden_size
from minillm.norms import LayerNorm, RMSNorm, deepnorm_constants, residual
from minillm.positional import ALiBi, Learned, RoPE, Sinusoidal, T5Bias
from minillm.presets import PRESETS
from minillm.rope_scaling import RopeScaling

POS = ("none", "sinusoidal", "learned", "t5", "rope", "alibi")
NORMS = ("layernorm", "rmsnorm")
NORM_POSITIONS = ("pre", "post")
INITS = ("gpt2", "torch", "deepnorm")
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
    pos: str = "learned"  # "none" (NoPE) | "sinusoidal" | "learned" (GPT-2) | "t5" | "rope" (Llama) | "alibi"
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # RopeScaling's fields, e.g. {"kind": "llama3", "factor": 8, ...}
    t5_num_buckets: int = 32  # T5's relative bias: buckets and the distance where the last bucket starts
    t5_max_distance: int = 128
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    norm_eps: float = 1e-5
    norm_position: str = "pre"  # "pre": x + f(norm(x)); "post": norm(alpha x + f(x)), no final norm
    deepnorm: bool = False  # Post-LN with DeepNorm's alpha = (2N)^(1/4) (and, by default, its init)
    init: str = ""  # "gpt2" | "torch" (PyTorch's defaults) | "deepnorm"; "" = "deepnorm" if deepnorm else "gpt2"
    ffn: str = "gelu"  # "gelu" | "gelu_tanh" (GPT-2's "gelu_new") | "relu" | "swiglu" (Llama) | "geglu"
    bias: bool = True  # on the linear layers and LayerNorm (GPT-2: True, Llama: False)
    tie_embeddings: bool = True  # lm_head.weight is embed_tokens.weight
    dropout: float = 0.0  # on embeddings, attention weights and both residual branches, while training
    parallel_block: bool = False  # x + attn(ln(x)) + mlp(ln(x)) with one shared norm (GPT-J, PaLM)
    init_std: float = 0.02
    head_dim: int = field(default=0, init=False)  # derived: d_model // n_head
    alpha: float = field(default=1.0, init=False)  # derived: the residual scale of Post-LN (DeepNorm's alpha)

    def __post_init__(self):
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "d_model"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        # the attention's own checks (divisibility of d_model and n_head), written once in AttentionConfig
        self.head_dim = AttentionConfig(d_model=self.d_model, n_head=self.n_head, n_kv_head=self.n_kv_head).head_dim
        self.init = self.init or ("deepnorm" if self.deepnorm else "gpt2")
        for name, value, choices in (("pos", self.pos, POS), ("norm", self.norm, NORMS), ("ffn", self.ffn, FFNS),
                                     ("norm_position", self.norm_position, NORM_POSITIONS), ("init", self.init, INITS)):
            if value not in choices:
                raise ValueError(f"{name}={value!r} is not one of {choices}")
        if self.pos == "rope" and (self.head_dim % 2 or self.rope_theta <= 1):
            raise ValueError(f"RoPE needs an even head_dim (got d_model/n_head={self.head_dim}) and rope_theta > 1 "
                             f"(got {self.rope_theta})")
        if self.pos == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {self.d_model}")
        if self.rope_scaling is not None:
            if self.pos != "rope":
                raise ValueError(f"rope_scaling applies to pos='rope', not pos={self.pos!r}; drop it")
            RopeScaling(**self.rope_scaling)  # validates the fields
        if self.pos == "t5":
            from minillm.positional import t5_bucket

            t5_bucket(torch.zeros(1), False, self.t5_num_buckets, self.t5_max_distance)  # validates
        if self.norm_position == "post" and self.parallel_block:
            raise ValueError("parallel_block=True is a Pre-LN wiring; use norm_position='pre' or parallel_block=False")
        if self.deepnorm and self.norm_position != "post":
            raise ValueError("DeepNorm scales the residual of Post-LN: set norm_position='post' with deepnorm=True")
        self.alpha = deepnorm_constants(self.n_layer)[0] if self.deepnorm else 1.0
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
        """The config of preset `name` from `minillm.presets.PRESETS`, with keyword overrides."""
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


def _norm(cfg: GPTConfig) -> nn.Module:
    if cfg.norm == "rmsnorm":
        return RMSNorm(cfg.d_model, eps=cfg.norm_eps)
    return LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)


class Block(nn.Module):
    """One decoder layer: an attention and an MLP sub-layer, each wired by `minillm.norms.residual`
    (Pre-LN: x + f(norm(x)); Post-LN: norm(alpha x + f(x))), or GPT-J / PaLM's parallel block."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        acfg = AttentionConfig(d_model=cfg.d_model, n_head=cfg.n_head, n_kv_head=cfg.n_kv_head, bias=cfg.bias,
                               dropout=cfg.dropout)
        self.norm_position, self.alpha = cfg.norm_position, cfg.alpha
        self.input_layernorm = _norm(cfg)  # the attention sub-layer's norm (before it, or after the sum)
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
        h = residual(x, attn, self.input_layernorm, self.norm_position, self.alpha)
        return residual(h, mlp, self.post_attention_layernorm, self.norm_position, self.alpha)


class GPT(nn.Module):
    """A decoder-only language model: idx (B, T) -> next-token logits (B, T, vocab_size)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.embed_positions = Learned(cfg.block_size, cfg.d_model) if cfg.pos == "learned" else None
        self.sinusoidal = Sinusoidal() if cfg.pos == "sinusoidal" else None
        # plain objects, not modules: set `model.rope.scaling = RopeScaling(...)` to stretch the context
        scaling = RopeScaling(**cfg.rope_scaling) if cfg.rope_scaling else None
        self.rope = RoPE(cfg.rope_theta, layout="halves", scaling=scaling) if cfg.pos == "rope" else None
        self.alibi = ALiBi(cfg.n_head) if cfg.pos == "alibi" else None
        # T5's bias table is shared by all layers, as in T5
        self.rel_bias = T5Bias(cfg.n_head, cfg.t5_num_buckets, cfg.t5_max_distance) if cfg.pos == "t5" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = _norm(cfg) if cfg.norm_position == "pre" else None  # Post-LN's last sub-layer ends normalised
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
        the stream's variance does not grow with depth (2 additions per layer). With cfg.init == "deepnorm"
        the blocks are then re-initialised by `deepnorm_init_` with beta = (8 n_layer)^(-1/4). T5's bias
        table starts at zero (no position preference before training). cfg.init == "torch": every layer's own
        `reset_parameters()` (PyTorch's defaults), the init of the former ToyLM of chapters 2-4; "deepnorm"
        starts from it too, as DeepNet's unit-scale embeddings do."""
        torch_init = self.cfg.init in ("torch", "deepnorm")
        std = self.cfg.init_std
        for m in self.modules():
            if isinstance(m, LayerNorm | RMSNorm):
                if m.weight is not None:
                    nn.init.ones_(m.weight)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear | nn.Embedding):
                if torch_init:
                    m.reset_parameters()
                    continue
                nn.init.normal_(m.weight, 0.0, std)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.zeros_(m.bias)
        if self.rel_bias is not None:
            nn.init.zeros_(self.rel_bias.table.weight)
        if torch_init:
            if self.cfg.init == "deepnorm":
                deepnorm_init_(self, deepnorm_constants(self.cfg.n_layer)[1])
            return
        for layer in self.layers:
            nn.init.normal_(layer.self_attn.o_proj.weight, 0.0, std / math.sqrt(2 * self.cfg.n_layer))
            nn.init.normal_(layer.mlp.down.weight, 0.0, std / math.sqrt(2 * self.cfg.n_layer))

    def make_kv_caches(self, max_len: int | None = None) -> list[KVCache]:
        """One empty KVCache per layer holding up to max_len tokens (default block_size); the buffers are
        allocated on the first forward, with the batch size, dtype and device of that call."""
        return [KVCache(max_len or self.cfg.block_size) for _ in self.layers]

    def attention_bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor, mask: torch.Tensor | None,
                       dtype: torch.dtype) -> torch.Tensor | None:
        """T5 / ALiBi: the float mask (H, T, S) (or (B, H, T, S)) the kernel adds to the scores: the position
        bias of queries q_pos (T,) and keys k_pos (S,), -inf where a query may not attend (a later key, or
        False in `mask`). None for the other schemes."""
        part = self.rel_bias if self.rel_bias is not None else self.alibi
        if part is None:
            return None
        bias = part.bias(q_pos, k_pos).to(dtype)  # (H, T, S)
        allowed = k_pos[None, :] <= q_pos[:, None] if mask is None else mask  # (T, S) causal, or the caller's
        if allowed.dtype == torch.bool:
            return bias.masked_fill(~allowed, float("-inf"))
        return bias + allowed.to(dtype)  # an additive float mask from the caller

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        kv_caches: list[KVCache] | None = None,
        start_pos: int | None = None,
        mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> (logits (B, T, V), mean cross-entropy against targets (B, T) or None).

        kv_caches (from `make_kv_caches`): idx continues the cached tokens, at positions len(cache) .. + T - 1.
        start_pos: the position of idx[:, 0] (default: the number of cached tokens, or 0). Learned positions
        stop at block_size; the other schemes run past it (extrapolation, chapter 2).
        mask: bool, True = may attend, broadcastable to (B, H, T, S) over the S cached + new keys; it replaces
        the causal mask (e.g. `attention.prefix_lm_mask` for a prefix LM). targets = -100 are ignored.
        positions: (T,) or (B, T) position ids that replace start_pos .. start_pos + T - 1, e.g. restarting at 0
        for each example packed into one window (`minillm.sft`, with a block-diagonal `mask`). Not with
        kv_caches; T5 / ALiBi take only (T,) (their bias is shared by the batch)."""
        B, T = idx.shape
        if positions is not None:
            return self._forward_positions(idx, targets, positions, start_pos, kv_caches, mask)
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
        pos = torch.arange(start, start + T, device=idx.device)  # (T,) positions of the queries
        return self._run(idx, targets, pos, pos if kv_caches is None else None, kv_caches, mask)

    def _forward_positions(self, idx: torch.Tensor, targets: torch.Tensor | None, positions: torch.Tensor,
                           start_pos: int | None, kv_caches: list[KVCache] | None,
                           mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """forward(..., positions=...): check the position ids, then the same layers as forward."""
        B, T = idx.shape
        if kv_caches is not None or start_pos is not None:
            raise ValueError("positions= replaces start_pos and cannot be combined with kv_caches; pass one of them")
        positions = torch.as_tensor(positions, device=idx.device)
        if positions.dtype.is_floating_point or positions.shape not in ((T,), (B, T)):
            raise ValueError(f"positions must be integer ids of shape (T,)=({T},) or (B, T)=({B}, {T}), "
                             f"got {positions.dtype} {tuple(positions.shape)}")
        if positions.numel() and int(positions.min()) < 0:
            raise ValueError(f"positions must be >= 0, got {int(positions.min())}")
        if positions.dim() == 2 and (self.rel_bias is not None or self.alibi is not None):
            raise ValueError(f"pos={self.cfg.pos!r} builds one bias for the whole batch: give positions of shape "
                             "(T,), or use rope / learned / sinusoidal positions for per-row (B, T) ids")
        if mask is None and (self.rel_bias is not None or self.alibi is not None):
            # their default mask compares position values; with restarting ids causality is by index instead
            mask = causal_mask(T, device=idx.device)
        return self._run(idx, targets, positions.long(), positions.long(), None, mask)

    def _run(self, idx: torch.Tensor, targets: torch.Tensor | None, pos: torch.Tensor, k_pos: torch.Tensor | None,
             kv_caches: list[KVCache] | None, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The layers: pos (T,) or (B, T) are the queries' positions, k_pos the keys' (None: 0 .. cached + T - 1)."""
        T = idx.shape[1]
        x = self.embed_tokens(idx)  # (B, T, d)
        if self.embed_positions is not None:
            x = self.embed_positions.embed(x, pos)  # + (T, d)
        elif self.sinusoidal is not None:
            x = self.sinusoidal.embed(x, pos)
        x = self.drop(x)
        if k_pos is None:  # a KV cache: the keys are the cached tokens and the new ones, 0 .. cached + T - 1
            k_pos = torch.arange(len(kv_caches[0]) + T, device=idx.device)  # (S,)
        bias = self.attention_bias(pos, k_pos, mask, x.dtype)
        if bias is not None:  # T5 / ALiBi: the bias carries causality (and the caller's mask)
            mask, is_causal = bias, False
        else:
            is_causal = mask is None
        rotate = self.rope.rotate if self.rope is not None else None
        for i, layer in enumerate(self.layers):
            cache = kv_caches[i] if kv_caches is not None else None
            x = layer(x, rotate=rotate, mask=mask, is_causal=is_causal, kv_cache=cache, pos=pos)
        if self.norm is not None:
            x = self.norm(x)
        logits = self.lm_head(x)  # (B, T, V)
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


# ---------------------------------------------------------------------------------------------- DeepNorm


def _layers(model: nn.Module, fn: str) -> nn.ModuleList:
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not all(isinstance(b, Block) for b in layers):
        raise TypeError(f"{fn} expects a minillm.model.GPT (blocks in .layers), got {type(model).__name__}")
    return layers


def deepnorm_init_(model: nn.Module, beta: float) -> nn.Module:
    """DeepNorm's init, in place, on every block of a GPT: Xavier-normal with gain `beta` for the value
    (`v_proj`) and output (`o_proj`) projections and every matrix of the MLP, gain 1 for query and key
    (`q_proj`, `k_proj`) (Wang et al. 2022, Figure 2's pseudocode). Their biases start at zero, so beta
    scales the whole sub-layer output at init. Returns the model."""
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    layers = _layers(model, "deepnorm_init_")

    def init(linear: nn.Linear, gain: float) -> None:
        nn.init.xavier_normal_(linear.weight, gain=gain)
        if linear.bias is not None:
            nn.init.zeros_(linear.bias)

    with torch.no_grad():
        for block in layers:
            attn = block.self_attn
            init(attn.q_proj, 1.0)
            init(attn.k_proj, 1.0)
            init(attn.v_proj, beta)
            init(attn.o_proj, beta)
            for m in block.mlp.modules():
                if isinstance(m, nn.Linear):
                    init(m, beta)
    return model


def apply_deepnorm(model: nn.Module) -> nn.Module:
    """Turn a Post-LN GPT into a DeepNorm one, in place: residual scale alpha = (2N)^(1/4) in every block and
    the beta = (8N)^(-1/4) init (decoder-only constants, N = n_layer); model.cfg becomes a copy with
    deepnorm=True. Same as building GPT(GPTConfig(..., norm_position="post", deepnorm=True)). Returns it."""
    layers = _layers(model, "apply_deepnorm")
    cfg = model.cfg
    if cfg.norm_position != "post":
        raise ValueError("DeepNorm modifies Post-LN: build the model with GPTConfig(norm_position='post')")
    model.cfg = replace(cfg, deepnorm=True, init="deepnorm")  # a copy: the caller's config object stays as it was
    for block in layers:
        block.alpha = model.cfg.alpha
    return deepnorm_init_(model, deepnorm_constants(len(layers))[1])


def block_grad_norms(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """One forward/backward of a GPT on (x, y); the L2 norm of the gradient of each block's parameters.

    Entry l is sqrt(sum of squared gradients of all weights and biases of block l), l = 0 (next to the
    embedding) .. n_layer - 1 (next to the output). Gradients are cleared before and after.
    """
    layers = _layers(model, "block_grad_norms")
    model.zero_grad(set_to_none=True)
    _, loss = model(x, y)
    loss.backward()
    norms = []
    for block in layers:
        sq = sum(p.grad.detach().double().pow(2).sum() for p in block.parameters() if p.grad is not None)
        norms.append(math.sqrt(float(sq)))
    model.zero_grad(set_to_none=True)
    return norms


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
    final_norm = one_norm if cfg.norm_position == "pre" else 0  # Post-LN has none
    out = {
        "embed_tokens": cfg.vocab_size * d,
        "embed_positions": cfg.block_size * d if cfg.pos == "learned" else 0,
        "attention": L * attn,
        "mlp": L * mlp,
        "norms": L * norms_per_layer + final_norm,
        "t5_bias": cfg.t5_num_buckets * cfg.n_head if cfg.pos == "t5" else 0,
        "lm_head": 0 if cfg.tie_embeddings else cfg.vocab_size * d,
        "per_layer": attn + mlp + norms_per_layer,
    }
    out["total"] = sum(v for k, v in out.items() if k != "per_layer")
    out["non_embedding"] = out["total"] - out["embed_tokens"] - out["embed_positions"]
    return out


# the presets param_table lists by default: the course's GPT-2 / Llama ones and the published models
TABLE_PRESETS = ("tiny", "tiny-llama", "small", "gpt2", "gpt2-medium", "llama2-7b", "llama2-13b", "llama2-70b",
                 "llama3-8b")


def flops_per_token(n_params_non_embedding: int, n_layer: int, seq_len: int, d_model: int) -> float:
    """Training FLOPs per token: 6N for the matmuls of forward + backward (2N forward, 4N backward), plus
    12 L T d for the attention scores and their weighted sum (Kaplan et al. 2020, arXiv:2001.08361, Table 1)."""
    return 6 * n_params_non_embedding + 12 * n_layer * seq_len * d_model


def param_table(names: list[str] | None = None, dtype_bytes: int = 2) -> list[dict[str, Any]]:
    """What "7B" means: per preset, the shape, the total parameters and where they sit, and the memory of the
    weights alone at dtype_bytes per parameter (2 = bf16 / fp16)."""
    rows = []
    for name in names or list(TABLE_PRESETS):
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

