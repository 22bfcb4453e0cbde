"""Position encodings: sinusoidal and learned absolute embeddings, T5's bucketed relative bias, RoPE, ALiBi.

Self-attention is blind to order: permute the tokens and every output is permuted the same way. A position
scheme breaks that symmetry, in one of three places (the three hooks of `minillm.toy.PositionScheme`):
- added to the token embeddings (`embed`): `Sinusoidal` (Vaswani et al. 2017) and `Learned` (GPT-2);
- rotating queries and keys (`rotate`): `RoPE` (Su et al. 2021, RoFormer), in both pairing layouts;
- added to the attention scores (`bias`): `T5Bias` (Raffel et al. 2020) and `ALiBi` (Press et al. 2022).
Each scheme is also usable on its own through plain functions (`sinusoidal_table`, `t5_bucket`,
`apply_rope`, `alibi_slopes`, `alibi_bias`). Longer-context tricks for RoPE (position interpolation, NTK,
dynamic NTK, YaRN) live in `minillm.rope_scaling`; `RoPE(scaling=...)` applies them.

Conventions: positions start at 0; a relative position is `key - query` (T5's `memory_position -
context_position`), so in a causal model every visible key has relative position <= 0.
Leaves out: xPos, KERPLE, FIRE, NoPE analyses, 2-D/multimodal RoPE, caching cos/sin across calls.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from minillm.rope_scaling import RopeScaling, rope_frequencies
from minillm.toy import PositionScheme, ToyConfig

# ------------------------------------------------------------------------------------------ absolute


def sinusoidal_table(n_pos: int, dim: int, base: float = 10000.0, layout: str = "interleaved") -> torch.Tensor:
    """(n_pos, dim) table; "interleaved" is the paper's: PE[p, 2i] = sin(p / base^(2i/d)), PE[p, 2i+1] = cos.

    "halves" puts all the sines first and all the cosines after ([sin..., cos...], as some libraries do);
    it holds the same numbers, columns permuted by `interleave_to_halves(dim)`.
    """
    if dim % 2 or dim < 2 or n_pos < 1:
        raise ValueError(f"need n_pos >= 1 and an even dim >= 2, got n_pos={n_pos}, dim={dim}")
    if layout not in ("interleaved", "halves"):
        raise ValueError(f"layout must be 'interleaved' or 'halves', got {layout!r}")
    pos = torch.arange(n_pos, dtype=torch.float64)[:, None]  # (P, 1)
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (d/2,): 1 / base^(2i/d)
    angle = pos * inv_freq  # (P, d/2)
    if layout == "halves":
        return torch.cat([angle.sin(), angle.cos()], dim=-1).float()
    table = torch.empty(n_pos, dim, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = angle.sin(), angle.cos()
    return table.float()


def interleave_to_halves(dim: int) -> torch.Tensor:
    """The permutation [0, 2, 4, ..., 1, 3, 5, ...]: x_interleaved[..., perm] is the split-halves layout."""
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    return torch.cat([torch.arange(0, dim, 2), torch.arange(1, dim, 2)])


class Sinusoidal(PositionScheme):
    """Fixed sin/cos embeddings added to the token embeddings (no parameters; any length works)."""

    def __init__(self, base: float = 10000.0):
        self.base = base

    def embed(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        table = sinusoidal_table(int(pos.max()) + 1, x.shape[-1], self.base).to(x.device, x.dtype)
        return x + table[pos]  # (B, T, d) + (T, d)


class Learned(PositionScheme):
    """A learned (max_len, d) table (GPT-2, BERT); positions >= max_len have no row and raise."""

    def __init__(self):
        self.table: nn.Embedding | None = None

    def setup(self, cfg: ToyConfig) -> nn.Module:
        self.table = nn.Embedding(cfg.max_len, cfg.d_model)
        nn.init.normal_(self.table.weight, std=0.02)
        return self.table

    def embed(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if self.table is None:
            raise RuntimeError("Learned.setup(cfg) was not called; pass the scheme to ToyConfig(position=...)")
        if int(pos.max()) >= self.table.num_embeddings:
            raise ValueError(f"position {int(pos.max())} has no learned row: trained with max_len="
                             f"{self.table.num_embeddings}; learned positions cannot extrapolate")
        return x + self.table(pos)


# ------------------------------------------------------------------------------------------ T5 relative bias


def t5_bucket(rel: torch.Tensor, bidirectional: bool = True, num_buckets: int = 32,
              max_distance: int = 128) -> torch.Tensor:
    """T5's bucket of each relative position rel = key - query (an int tensor of any shape).

    Bidirectional: half the buckets for keys before the query (rel < 0) and half, offset by num_buckets/2,
    for keys after it (rel > 0). In each half the first max_exact = half/2 distances get a bucket each,
    then distances up to max_distance share logarithmically spaced buckets, and farther ones the last.
    Causal (bidirectional=False): only rel <= 0 matters; rel > 0 goes to bucket 0.
    """
    if num_buckets < 4 or (bidirectional and num_buckets % 2):
        raise ValueError(f"num_buckets must be >= 4 (and even when bidirectional), got {num_buckets}")
    rel = torch.as_tensor(rel, dtype=torch.long)
    bucket = torch.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (rel > 0).long() * num_buckets  # keys after the query: upper half
        n = rel.abs()
    else:
        n = (-rel).clamp(min=0)  # distance back to an earlier key
    max_exact = num_buckets // 2
    # log-spaced buckets for max_exact <= n < max_distance (clamp n to 1 first so log() is defined)
    log_ratio = torch.log(n.clamp(min=1).double() / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + log_ratio * (num_buckets - max_exact)).long().clamp(max=num_buckets - 1)
    return bucket + torch.where(n < max_exact, n, large)


class T5Bias(PositionScheme):
    """A learned scalar per (bucket, head) added to the attention scores (Raffel et al. 2020)."""

    def __init__(self, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = False):
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.table: nn.Embedding | None = None

    def setup(self, cfg: ToyConfig) -> nn.Module:
        self.table = nn.Embedding(self.num_buckets, cfg.n_head)
        nn.init.zeros_(self.table.weight)
        return self.table

    def bias(self, n_head: int, t: int, device: torch.device) -> torch.Tensor:
        if self.table is None:
            raise RuntimeError("T5Bias.setup(cfg) was not called; pass the scheme to ToyConfig(position=...)")
        pos = torch.arange(t, device=device)
        rel = pos[None, :] - pos[:, None]  # (T, T): key j - query i
        buckets = t5_bucket(rel, self.bidirectional, self.num_buckets, self.max_distance)
        return self.table(buckets).permute(2, 0, 1)  # (T, T, H) -> (H, T, T)


# ------------------------------------------------------------------------------------------ RoPE


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Split-halves layout: (x1, x2) -> (-x2, x1), i.e. multiply each pair (x1_i, x2_i) by i."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def rope_cos_sin(pos: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the angles pos * inv_freq, each (T, hd/2)."""
    angle = pos.to(inv_freq.dtype)[:, None] * inv_freq[None, :]  # (T, hd/2)
    return angle.cos(), angle.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: str = "halves") -> torch.Tensor:
    """Rotate x (..., T, hd) by the angles whose cos and sin are (T, hd/2).

    "halves" (GPT-NeoX, Llama in Hugging Face): pair i is (x[i], x[i + hd/2]).
    "adjacent" (GPT-J, RoFormer, Meta's Llama code): pair i is (x[2i], x[2i + 1]).
    Either way each pair (a, b) becomes (a cos - b sin, a sin + b cos).
    """
    if x.shape[-1] % 2 or cos.shape[-1] * 2 != x.shape[-1]:
        raise ValueError(f"x has {x.shape[-1]} dims; need an even number equal to 2 * cos.shape[-1]={cos.shape[-1]}")
    if layout == "halves":
        cos2, sin2 = torch.cat([cos, cos], dim=-1), torch.cat([sin, sin], dim=-1)  # (T, hd)
        return x * cos2.to(x.dtype) + rotate_half(x) * sin2.to(x.dtype)
    if layout == "adjacent":
        a, b = x[..., 0::2], x[..., 1::2]  # (..., T, hd/2) each
        c, s = cos.to(x.dtype), sin.to(x.dtype)
        return torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2)  # re-interleave
    raise ValueError(f"layout must be 'halves' or 'adjacent', got {layout!r}")


class RoPE(PositionScheme):
    """Rotary embeddings on q and k; `scaling` (minillm.rope_scaling) stretches them to longer contexts.

    `scaling` may be changed after training (e.g. `rope.scaling = RopeScaling("pi", 4, 64)`) to try
    position interpolation or NTK scaling at evaluation time.
    """

    def __init__(self, base: float = 10000.0, layout: str = "halves", scaling: RopeScaling | None = None):
        if layout not in ("halves", "adjacent"):
            raise ValueError(f"layout must be 'halves' or 'adjacent', got {layout!r}")
        self.base, self.layout, self.scaling = base, layout, scaling

    def rotate(self, q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hd = q.shape[-1]
        inv_freq, mscale = rope_frequencies(hd, self.base, int(pos.max()) + 1, self.scaling)
        cos, sin = rope_cos_sin(pos.to(q.device), inv_freq.to(q.device))
        cos, sin = cos * mscale, sin * mscale  # YaRN's temperature (1.0 otherwise) on both q and k
        return apply_rope(q, cos, sin, self.layout), apply_rope(k, cos, sin, self.layout)


# ------------------------------------------------------------------------------------------ ALiBi


def alibi_slopes(n_head: int) -> list[float]:
    """One slope per head (Press et al. 2022).

    n a power of two: the geometric sequence 2^(-8/n), 2^(-16/n), ..., 2^(-8). Otherwise take the slopes
    of the closest power of two below, n' (all of them), then every other slope of 2n' (the ones between
    them) until there are n.
    """
    if not isinstance(n_head, int) or n_head < 1:
        raise ValueError(f"n_head must be a positive int, got {n_head!r}")
    if n_head & (n_head - 1) == 0:  # power of two
        return [2.0 ** (-8.0 * (h + 1) / n_head) for h in range(n_head)]
    below = 2 ** int(math.floor(math.log2(n_head)))
    return alibi_slopes(below) + alibi_slopes(2 * below)[0::2][: n_head - below]


def alibi_bias(n_head: int, t: int, device: torch.device | None = None) -> torch.Tensor:
    """(H, T, T) bias: -slope_h * (i - j) for keys j <= query i; 0 above the diagonal (masked anyway)."""
    pos = torch.arange(t, device=device)
    dist = (pos[:, None] - pos[None, :]).clamp(min=0).float()  # (T, T): i - j
    slopes = torch.tensor(alibi_slopes(n_head), device=device)
    return -slopes[:, None, None] * dist


class ALiBi(PositionScheme):
    """Attention with linear biases: no embeddings, a fixed distance penalty per head."""

    def bias(self, n_head: int, t: int, device: torch.device) -> torch.Tensor:
        return alibi_bias(n_head, t, device)
