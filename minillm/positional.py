"""Position encodings: sinusoidal and learned absolute embeddings, T5's bucketed relative bias, RoPE, ALiBi.

Self-attention is blind to order: permute the tokens and every output is permuted the same way. A position
scheme breaks that symmetry, in one of three places; each is a small part that `minillm.model.GPT` plugs in
(`GPTConfig(pos=...)`), with one method named after its place:
- added to the token embeddings (`embed(x, pos)`): `Sinusoidal` (Vaswani et al. 2017) and `Learned` (GPT-2);
- rotating queries and keys (`rotate(q, k, pos)`): `RoPE` (Su et al. 2021, RoFormer), in both pairing layouts;
- added to the attention scores (`bias(q_pos, k_pos)`, (H, T, S) for queries and keys at absolute positions,
  so that decoding with a KV cache gets the rows of the new queries): `T5Bias` (Raffel et al. 2020) and
  `ALiBi` (Press et al. 2022).
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

# ------------------------------------------------------------------------------------------ absolute


def sinusoidal_table(n_pos: int, dim: int, base: float = 10000.0, layout: str = "interleaved",
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(n_pos, dim) table; "interleaved" is the paper's: PE[p, 2i] = sin(p / base^(2i/d)), PE[p, 2i+1] = cos.

    "halves" puts all the sines first and all the cosines after ([sin..., cos...]); it holds the same
    numbers, columns permuted by `interleave_to_halves(dim)`. tensor2tensor and fairseq also concatenate
    [sin..., cos...], but space the frequencies as base^(-i / (d/2 - 1)) instead of base^(-2i / d), so their
    tables differ from the paper's in the frequencies too, not only by a column permutation.
    """
    if dim % 2 or dim < 2 or n_pos < 1:
        raise ValueError(f"need n_pos >= 1 and an even dim >= 2, got n_pos={n_pos}, dim={dim}")
    if layout not in ("interleaved", "halves"):
        raise ValueError(f"layout must be 'interleaved' or 'halves', got {layout!r}")
    pos = torch.arange(n_pos, dtype=torch.float64)[:, None]  # (P, 1)
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (d/2,): 1 / base^(2i/d)
    angle = pos * inv_freq  # (P, d/2)
    if layout == "halves":
        return torch.cat([angle.sin(), angle.cos()], dim=-1).to(dtype)
    table = torch.empty(n_pos, dim, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = angle.sin(), angle.cos()
    return table.to(dtype)  # computed in float64, returned in dtype


def interleave_to_halves(dim: int) -> torch.Tensor:
    """The permutation [0, 2, 4, ..., 1, 3, 5, ...]: x_interleaved[..., perm] is the split-halves layout."""
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    return torch.cat([torch.arange(0, dim, 2), torch.arange(1, dim, 2)])


class Sinusoidal:
    """Fixed sin/cos embeddings added to the token embeddings (no parameters; any length works)."""

    def __init__(self, base: float = 10000.0):
        self.base = base

    def embed(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        table = sinusoidal_table(int(pos.max()) + 1, x.shape[-1], self.base, dtype=x.dtype).to(x.device)
        return x + table[pos]  # (B, T, d) + (T, d)


class Learned(nn.Embedding):
    """A learned (max_len, d) table (GPT-2, BERT) added to the token embeddings; positions >= max_len raise."""

    def embed(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x (B, T, d) + table[pos] (T, d)."""
        if int(pos.max()) >= self.num_embeddings:
            raise ValueError(f"position {int(pos.max())} has no learned row: the table has max_len="
                             f"{self.num_embeddings} rows; learned positions cannot extrapolate")
        return x + self(pos)


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


class T5Bias(nn.Module):
    """A learned scalar per (bucket, head) added to the attention scores (Raffel et al. 2020).

    As in T5, one table serves every layer (T5 computes it in the first layer and reuses it). The table
    starts at zero, so an untrained model attends as without positions."""

    def __init__(self, n_head: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = False):
        super().__init__()
        t5_bucket(torch.zeros(1), bidirectional, num_buckets, max_distance)  # validates the bucket arguments
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.table = nn.Embedding(num_buckets, n_head)
        nn.init.zeros_(self.table.weight)

    def bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """(H, T, S) bias for queries at positions q_pos (T,) and keys at k_pos (S,)."""
        rel = k_pos[None, :] - q_pos[:, None]  # (T, S): key - query
        buckets = t5_bucket(rel, self.bidirectional, self.num_buckets, self.max_distance)
        return self.table(buckets.to(self.table.weight.device)).permute(2, 0, 1)  # (T, S, H) -> (H, T, S)

    def extra_repr(self) -> str:
        return f"num_buckets={self.num_buckets}, max_distance={self.max_distance}, bidirectional={self.bidirectional}"


# ------------------------------------------------------------------------------------------ RoPE


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Split-halves layout: (x1, x2) -> (-x2, x1), i.e. multiply each pair (x1_i, x2_i) by i."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def rope_cos_sin(pos: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the angles pos * inv_freq, each (T, hd/2), or (B, T, hd/2) for per-row positions (B, T)."""
    angle = pos.to(inv_freq.dtype)[..., None] * inv_freq  # (..., T, hd/2)
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


class RoPE:
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
        if cos.dim() == 3:  # per-row positions (B, T) (packed sequences): (B, 1, T, hd/2), shared by the heads
            cos, sin = cos[:, None], sin[:, None]
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
    return ALiBi(n_head).bias(pos, pos)


class ALiBi:
    """Attention with linear biases: no embeddings, a fixed distance penalty per head."""

    def __init__(self, n_head: int):
        self.n_head, self.slopes = n_head, alibi_slopes(n_head)

    def bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor) -> torch.Tensor:
        """(H, T, S): -slope_h * (q_pos[i] - k_pos[j]) for keys at or before the query, 0 for later keys."""
        dist = (q_pos[:, None] - k_pos[None, :]).clamp(min=0).float()  # (T, S)
        slopes = torch.tensor(self.slopes, device=dist.device)
        return -slopes[:, None, None] * dist
