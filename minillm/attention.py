"""Attention and its variants: scaled dot-product attention, masks, MHA / MQA / GQA, a KV cache, parallel blocks.

Implements:
- `sdpa`: softmax(q k^T * scale + mask) v written out (Vaswani et al. 2017, "Attention Is All You Need",
  eq. 1), with fewer key/value heads than query heads (`repeat_kv`, as in Llama's code);
- masks as boolean (T, S) tensors, True = "may attend" (the convention of torch's SDPA): `causal_mask`,
  `padding_mask`, `prefix_lm_mask` (UniLM / T5's prefix LM), `sliding_window_mask` (Longformer, Mistral);
  combine them with `&`; `mask_to_bias` turns one into the additive 0 / -inf form;
- `AttentionConfig` and `Attention`: multi-head (n_kv_head = n_head), multi-query (n_kv_head = 1, Shazeer
  2019, "Fast Transformer Decoding: One Write-Head is All You Need", arXiv:1911.02150) and grouped-query
  attention (1 < n_kv_head < n_head, Ainslie et al. 2023, "GQA", arXiv:2305.13245) in one module with
  Llama's weight names, a RoPE hook and a `KVCache`;
- `mha_to_gqa`: GQA's checkpoint conversion, mean-pooling the key and value heads of each group (GQA sec. 2.1);
- `kv_cache_bytes_per_token` (the one copy of the formula) and `kv_cache_table`: the cache size of published
  models (shapes from `minillm.presets`), MHA vs GQA vs MQA;
- `sequential_block` / `parallel_block`: x + f(ln(x)) then + g(ln(.)), vs GPT-J / PaLM's parallel form
  x + attn(ln(x)) + mlp(ln(x)) (Chowdhery et al. 2022, "PaLM", arXiv:2204.02311, sec. 2).

Conventions. q is (B, H, T, D), k and v are (B, H_kv, S, D); H_kv divides H and query head h reads key/value
head h // (H / H_kv). `is_causal` with S > T (decoding with a cache) is aligned bottom-right: query i sits at
position i + S - T and attends keys j <= i + S - T, as in FlashAttention >= 2.1. torch's
`F.scaled_dot_product_attention(is_causal=True)` aligns top-left (j <= i) instead; both agree when S == T.
A fully masked query row (no key allowed) outputs zeros, again as FlashAttention does (a plain softmax
over all -inf gives NaN). `dropout_p` drops attention weights (and rescales by 1 / (1 - p)) as SDPA does.

Leaves out: fused kernels (see `minillm.flash` for the tiled algorithm), paged caches (chapter 16), cross-
attention modules, attention sinks, multi-head latent attention (DeepSeek-V2), linear / sparse attention.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from minillm.norms import residual
from minillm.presets import PRESETS

Rotate = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

# ---------------------------------------------------------------------------------------------- masks


def causal_mask(T: int, S: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, S) bool, True where query i may attend key j: j <= i + (S - T) (bottom-right aligned; S defaults to T).

    With a cache holding S - T earlier tokens, query i is the token at position i + S - T. If S < T the first
    T - S rows are all False (those queries have no key at or before them)."""
    S = T if S is None else S
    if T < 1 or S < 1:
        raise ValueError(f"need T >= 1 and S >= 1, got T={T}, S={S}")
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(S, device=device)[None, :]
    return j <= i + (S - T)


def sliding_window_mask(T: int, window: int, S: int | None = None,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """(T, S) bool: causal, and each query sees only the `window` latest keys, itself included.

    Query i (at position p = i + S - T) attends keys p - window < j <= p, so `window` = 1 sees only itself."""
    if window < 1:
        raise ValueError(f"window must be >= 1 (the number of keys each query sees, itself included), got {window}")
    S = T if S is None else S
    causal = causal_mask(T, S, device)
    i = torch.arange(T, device=device)[:, None] + (S - T)
    j = torch.arange(S, device=device)[None, :]
    return causal & (j > i - window)


def prefix_lm_mask(T: int, prefix_len: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, T) bool: the first `prefix_len` tokens see each other (bidirectional), the rest is causal.

    mask[i, j] = (j <= i) or (j < prefix_len): every query sees the whole prefix, no query sees a later
    non-prefix token. prefix_len = 0 is the causal mask, prefix_len = T full bidirectional attention."""
    if not 0 <= prefix_len <= T:
        raise ValueError(f"prefix_len must be between 0 and T={T}, got {prefix_len}")
    j = torch.arange(T, device=device)[None, :]
    return causal_mask(T, device=device) | (j < prefix_len)


def padding_mask(lengths_or_mask: torch.Tensor, S: int | None = None) -> torch.Tensor:
    """(B, 1, 1, S) bool, True on real keys, broadcastable against (B, H, T, S) scores.

    Pass either the lengths (B,) of right-padded sequences (S defaults to the longest), or a Hugging Face
    style `attention_mask` (B, S) with 1 on real tokens and 0 on padding (left or right)."""
    x = lengths_or_mask
    if x.ndim == 1:
        if x.dtype.is_floating_point or (x < 0).any():
            raise ValueError("lengths must be non-negative integers; for an attention_mask pass a (B, S) tensor")
        S = int(x.max()) if S is None else S
        if int(x.max()) > S:
            raise ValueError(f"a length {int(x.max())} exceeds S={S}; raise S")
        keep = torch.arange(S, device=x.device)[None, :] < x[:, None]  # (B, S)
    elif x.ndim == 2:
        if S is not None and S != x.shape[1]:
            raise ValueError(f"attention_mask has {x.shape[1]} columns but S={S}; drop S or fix the mask")
        keep = x.bool()
    else:
        raise ValueError(f"expected lengths (B,) or an attention_mask (B, S), got shape {tuple(x.shape)}")
    return keep[:, None, None, :]


def mask_to_bias(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Boolean mask -> additive bias: 0 where True (attend), -inf where False."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))


# ---------------------------------------------------------------------------------------------- sdpa


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, H_kv, S, D) -> (B, H_kv * n_rep, S, D): kv head g becomes heads g*n_rep .. g*n_rep + n_rep - 1."""
    if n_rep == 1:
        return x
    B, Hkv, S, D = x.shape
    return x[:, :, None].expand(B, Hkv, n_rep, S, D).reshape(B, Hkv * n_rep, S, D)


def sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v; q (B, H, T, D), k and v (B, H_kv, S, D) -> (B, H, T, D).

    mask: bool (True = may attend) or float (added to the scores), broadcastable to (B, H, T, S); it is
    combined with `is_causal` (bottom-right aligned) when both are given. scale defaults to 1 / sqrt(D).
    Rows with no allowed key give zeros. dropout_p > 0 drops weights (use only while training)."""
    if q.ndim != 4 or k.ndim != 4 or v.shape[:3] != k.shape[:3]:
        raise ValueError(f"expected q (B, H, T, D), k and v (B, H_kv, S, D); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    H, Hkv = q.shape[1], k.shape[1]
    if H % Hkv:
        raise ValueError(f"the {H} query heads must be a multiple of the {Hkv} key/value heads")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    k, v = repeat_kv(k, H // Hkv), repeat_kv(v, H // Hkv)  # (B, H, S, D)
    T, S = q.shape[2], k.shape[2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    if is_causal:
        scores = scores.masked_fill(~causal_mask(T, S, q.device), float("-inf"))
    # softmax that maps an all -inf row to zeros: subtract a finite max, divide by a non-zero sum
    m = scores.amax(-1, keepdim=True)  # (B, H, T, 1)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(scores - m)
    denom = e.sum(-1, keepdim=True)
    weights = e / torch.where(denom > 0, denom, torch.ones_like(denom))
    if dropout_p > 0:
        weights = F.dropout(weights, p=dropout_p)
    return weights @ v


# ---------------------------------------------------------------------------------------------- the module


@dataclass
class AttentionConfig:
    d_model: int = 64
    n_head: int = 4
    n_kv_head: int | None = None  # None = n_head (MHA); 1 = MQA; a divisor in between = GQA
    bias: bool = False  # biases on the projections (GPT-2: True, Llama: False)
    dropout: float = 0.0  # on the attention weights, while training
    head_dim: int = field(init=False, default=0)  # derived: d_model // n_head

    def __post_init__(self):
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if min(self.d_model, self.n_head, self.n_kv_head) < 1:
            raise ValueError(f"d_model, n_head and n_kv_head must be positive, got {self.d_model}, "
                             f"{self.n_head}, {self.n_kv_head}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_head={self.n_head}; change one of them")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} must be a multiple of n_kv_head={self.n_kv_head}: "
                             "pick n_kv_head among the divisors of n_head (1 = MQA, n_head = MHA)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        self.head_dim = self.d_model // self.n_head

    @property
    def n_rep(self) -> int:
        """How many query heads share each key/value head."""
        return self.n_head // self.n_kv_head

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> AttentionConfig:
        """The attention shape of a model of `minillm.presets.PRESETS` (d_model, n_head, n_kv_head, bias)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {list(PRESETS)}")
        shape = {k: v for k, v in PRESETS[name].items() if k in ("d_model", "n_head", "n_kv_head", "bias")}
        return cls(**{**shape, **overrides})


class KVCache:
    """The keys and values of the tokens seen so far, for one attention layer.

    `update(k, v)` appends (B, H_kv, T_new, D) along the sequence and returns the full (B, H_kv, S, D).
    With `max_len` the buffers are allocated once and written in place; without, each update concatenates
    (a copy of the whole cache per step: fine for teaching, quadratic over a long generation)."""

    def __init__(self, max_len: int | None = None):
        self.max_len, self.k, self.v, self.length = max_len, None, None, 0

    def __len__(self) -> int:
        return self.length

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = k.shape[2]
        if self.max_len is None:
            self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
            self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
            self.length += t
            return self.k, self.v
        if self.length + t > self.max_len:
            raise ValueError(f"the cache holds {self.length} tokens, {t} more exceed max_len={self.max_len}; "
                             "raise max_len")
        if self.k is None:  # (B, H_kv, max_len, D), allocated on first use with the inputs' dtype and device
            self.k = k.new_zeros(*k.shape[:2], self.max_len, k.shape[3])
            self.v = v.new_zeros(*v.shape[:2], self.max_len, v.shape[3])
        self.k[:, :, self.length:self.length + t] = k
        self.v[:, :, self.length:self.length + t] = v
        self.length += t
        return self.k[:, :, :self.length], self.v[:, :, :self.length]

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached keys and values (the filled part)."""
        if self.k is None:
            return 0
        per_token = (self.k[:, :, :1].numel() + self.v[:, :, :1].numel()) * self.k.element_size()
        return per_token * self.length


class Attention(nn.Module):
    """Multi-head attention with n_kv_head key/value heads (MHA, GQA or MQA), Llama's projection names.

    `kernel` computes softmax(q k^T / sqrt(d) + mask) v; `minillm.fast.use_kernel` swaps it for a faster one."""

    kernel = staticmethod(sdpa)

    def __init__(self, cfg: AttentionConfig):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        self.q_proj = nn.Linear(cfg.d_model, cfg.n_head * hd, bias=cfg.bias)
        self.k_proj = nn.Linear(cfg.d_model, cfg.n_kv_head * hd, bias=cfg.bias)
        self.v_proj = nn.Linear(cfg.d_model, cfg.n_kv_head * hd, bias=cfg.bias)
        self.o_proj = nn.Linear(cfg.n_head * hd, cfg.d_model, bias=cfg.bias)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, d_model) -> q (B, T, H hd), k and v (B, T, H_kv hd): the three input projections
        (`minillm.fast` computes them as one matmul)."""
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)

    def forward(
        self,
        x: torch.Tensor,
        *,
        rotate: Rotate | None = None,
        mask: torch.Tensor | None = None,
        is_causal: bool = True,
        kv_cache: KVCache | None = None,
        pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B, T, d_model) -> (B, T, d_model).

        rotate(q, k, pos) -> (q, k) applies RoPE (e.g. `minillm.positional.RoPE().rotate`) before caching;
        pos (T,) defaults to len(kv_cache) .. len(kv_cache) + T - 1. mask is over the S cached + new keys."""
        B, T, _ = x.shape
        c = self.cfg
        q, k, v = self.project(x)
        q = q.view(B, T, c.n_head, c.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, c.n_kv_head, c.head_dim).transpose(1, 2)  # (B, H_kv, T, hd)
        v = v.view(B, T, c.n_kv_head, c.head_dim).transpose(1, 2)  # (B, H_kv, T, hd)
        if rotate is not None:
            if pos is None:
                start = len(kv_cache) if kv_cache is not None else 0
                pos = torch.arange(start, start + T, device=x.device)
            q, k = rotate(q, k, pos)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)  # (B, H_kv, S, hd), S = cached + T
        p = c.dropout if self.training else 0.0
        y = self.kernel(q, k, v, mask=mask, is_causal=is_causal, dropout_p=p)  # (B, H, T, hd)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, c.n_head * c.head_dim))


def mha_to_gqa(attn: Attention, n_kv_head: int) -> Attention:
    """A copy of `attn` with n_kv_head key/value heads, each the mean of a group of consecutive old heads.

    GQA's uptraining recipe (Ainslie et al. 2023, sec. 2.1): mean-pool the key and value projection matrices
    (and biases) within each group, keep the query and output projections. n_kv_head = 1 gives MQA."""
    old = attn.cfg
    if n_kv_head < 1 or old.n_kv_head % n_kv_head:
        raise ValueError(f"n_kv_head={n_kv_head} must divide the current number of kv heads {old.n_kv_head}")
    new = Attention(replace(old, n_kv_head=n_kv_head)).to(attn.q_proj.weight)
    group, hd = old.n_kv_head // n_kv_head, old.head_dim
    with torch.no_grad():
        new.q_proj.load_state_dict(attn.q_proj.state_dict())
        new.o_proj.load_state_dict(attn.o_proj.state_dict())
        for name in ("k_proj", "v_proj"):
            src, dst = getattr(attn, name), getattr(new, name)
            # rows of the weight are (old kv head, hd): group consecutive heads and average them
            dst.weight.copy_(src.weight.view(n_kv_head, group, hd, -1).mean(1).reshape_as(dst.weight))
            if src.bias is not None:
                dst.bias.copy_(src.bias.view(n_kv_head, group, hd).mean(1).reshape_as(dst.bias))
    return new


# ---------------------------------------------------------------------------------------------- KV cache size


def kv_cache_bytes_per_token(n_layer: int, n_kv_head: int, head_dim: int, dtype_bytes: float = 2) -> float:
    """Bytes of KV cache per token: 2 (k and v) * n_layer * n_kv_head * head_dim * dtype_bytes.

    dtype_bytes may be fractional (0.5 for a 4-bit cache); the result is an int for whole-byte dtypes."""
    if min(n_layer, n_kv_head, head_dim) < 1 or not dtype_bytes > 0:
        raise ValueError(f"n_layer, n_kv_head and head_dim must be positive integers and dtype_bytes > 0, got "
                         f"{n_layer}, {n_kv_head}, {head_dim}, {dtype_bytes}")
    return 2 * n_layer * n_kv_head * head_dim * dtype_bytes


# the rows of kv_cache_table: display name -> preset of minillm.presets (sources there)
KV_TABLE_MODELS = {"GPT-2 small": "gpt2", "Llama-2-7B": "llama2-7b", "Llama-2-70B": "llama2-70b",
                   "Mistral-7B": "mistral-7b", "Llama-3-8B": "llama3-8b", "Falcon-7B": "falcon-7b"}


def _shape(name: str) -> tuple[int, int, int, int]:
    p = PRESETS[name]
    n_head = p["n_head"]
    return p["n_layer"], n_head, p.get("n_kv_head") or n_head, p["d_model"] // n_head


# (n_layer, n_head, n_kv_head, head_dim) per model, read from the one table of shapes
MODEL_SHAPES: dict[str, tuple[int, int, int, int]] = {k: _shape(v) for k, v in KV_TABLE_MODELS.items()}


def kv_cache_table(seq_len: int = 4096, batch: int = 1, dtype_bytes: int = 2) -> list[dict[str, Any]]:
    """One row per model of MODEL_SHAPES: its KV cache per token and for `batch` sequences of `seq_len`,
    and the same for an MHA model of the same shape (n_kv_head = n_head), to show what GQA / MQA save."""
    rows = []
    for name, (n_layer, n_head, n_kv_head, hd) in MODEL_SHAPES.items():
        per_tok = kv_cache_bytes_per_token(n_layer, n_kv_head, hd, dtype_bytes)
        kind = "MHA" if n_kv_head == n_head else ("MQA" if n_kv_head == 1 else "GQA")
        rows.append({"model": name, "kind": kind, "n_layer": n_layer, "n_head": n_head, "n_kv_head": n_kv_head,
                     "head_dim": hd, "KiB / token": per_tok / 1024,
                     f"GiB ({batch} x {seq_len} tokens)": per_tok * seq_len * batch / 2**30,
                     "MHA / this": n_head / n_kv_head})
    return rows


# ---------------------------------------------------------------------------------------------- blocks

Fn = Callable[[torch.Tensor], torch.Tensor]


def sequential_block(x: torch.Tensor, attn: Fn, mlp: Fn, norm1: Fn, norm2: Fn) -> torch.Tensor:
    """The usual Pre-LN block: h = x + attn(norm1(x)); h + mlp(norm2(h)) (two `minillm.norms.residual`)."""
    return residual(residual(x, attn, norm1), mlp, norm2)


def parallel_block(x: torch.Tensor, attn: Fn, mlp: Fn, norm1: Fn, norm2: Fn | None = None) -> torch.Tensor:
    """GPT-J / PaLM's parallel block: x + attn(norm1(x)) + mlp(norm2(x)), both branches read the same x.

    GPT-J and PaLM share one norm (norm2 = None); GPT-NeoX keeps two. The two matmuls of attention's input and
    the MLP's input can be fused (PaLM reports ~15% faster training at large scale), at the cost that the MLP
    no longer sees this layer's attention output: parallel = sequential - (mlp(norm2(h)) - mlp(norm2(x)))."""
    return x + attn(norm1(x)) + mlp((norm2 or norm1)(x))
