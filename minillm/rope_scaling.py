"""Stretching RoPE past its training length: position interpolation, NTK-aware, dynamic NTK, YaRN.

RoPE rotates pair i of a head (i = 0 .. d/2-1) by the angle m * theta_i at position m, with
theta_i = base^(-2i/d). A model trained on L positions has never seen angles beyond L * theta_i; these
methods change the frequencies so that longer sequences stay (mostly) inside the trained range:
- "pi", position interpolation (Chen et al. 2023): positions m -> m / s, i.e. every theta_i / s.
- "ntk", NTK-aware scaling (bloc97, 2023): base' = base * s^(d/(d-2)); the fastest pair (i = 0) is
  unchanged and the slowest one (i = d/2-1) is divided by exactly s, pairs in between by less.
- "dynamic" NTK: the same, with s chosen from the current length: s = factor * T/L - (factor - 1)
  when T > L (Hugging Face's formula; factor = 1 gives s = T/L), and no change while T <= L.
- "yarn" (Peng et al. 2023): per pair, interpolate (theta_i / s) the slow pairs that turn less than
  beta_slow = 1 times over L positions, keep the fast pairs that turn more than beta_fast = 32 times,
  and ramp linearly in between; plus an attention temperature mscale = 0.1 ln(s) + 1 on q and k.
- "llama3" (Llama 3.1, Meta 2024; `_compute_llama3_parameters` in transformers): by wavelength
  lambda_i = 2 pi / theta_i, keep the pairs with lambda_i < L / high_freq_factor, divide by s those with
  lambda_i > L / low_freq_factor, and in between blend (1 - w) theta_i / s + w theta_i with
  w = (L / lambda_i - low_freq_factor) / (high_freq_factor - low_freq_factor); no temperature.
`rope_frequencies(head_dim, base, seq_len, scaling)` returns the frequencies and mscale that
`minillm.positional.RoPE` uses. YaRN's mscale multiplies both q and k, so the attention logits see its
square. Leaves out: LongRoPE's searched factors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

KINDS = ("pi", "ntk", "dynamic", "yarn", "llama3")


@dataclass
class RopeScaling:
    kind: str  # "pi" | "ntk" | "dynamic" | "yarn" | "llama3"
    factor: float  # s: how many times longer than original_len the target context is
    original_len: int  # L: the context length the model was trained on
    beta_fast: float = 32.0  # YaRN: pairs turning more than this many times over L are kept
    beta_slow: float = 1.0  # YaRN: pairs turning fewer than this many times over L are interpolated
    low_freq_factor: float = 1.0  # llama3: wavelengths above L / low_freq_factor are divided by factor
    high_freq_factor: float = 4.0  # llama3: wavelengths below L / high_freq_factor are kept

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.factor < 1 or self.original_len < 1:
            raise ValueError(f"need factor >= 1 and original_len >= 1, got {self.factor}, {self.original_len}")
        if self.kind == "llama3" and not 0 < self.low_freq_factor < self.high_freq_factor:
            raise ValueError(f"llama3 scaling needs 0 < low_freq_factor < high_freq_factor, got "
                             f"{self.low_freq_factor}, {self.high_freq_factor}")


def inv_frequencies(head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """theta_i = base^(-2i/d) for i = 0 .. d/2-1 (float64)."""
    if head_dim % 2 or head_dim < 2:
        raise ValueError(f"head_dim must be even and >= 2, got {head_dim}")
    return base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)


def ntk_base(base: float, factor: float, head_dim: int) -> float:
    """NTK-aware base: base * s^(d/(d-2)), so that the slowest pair is slowed by exactly s."""
    return base * factor ** (head_dim / (head_dim - 2))


def dynamic_ntk_base(base: float, head_dim: int, seq_len: int, original_len: int, factor: float = 1.0) -> float:
    """Dynamic NTK: no change up to original_len, then the NTK base for s = factor*T/L - (factor-1)."""
    if seq_len <= original_len:
        return base
    return ntk_base(base, factor * seq_len / original_len - (factor - 1), head_dim)


def yarn_correction_range(head_dim: int, base: float, original_len: int, beta_fast: float = 32.0,
                          beta_slow: float = 1.0) -> tuple[int, int]:
    """The pair indices (low, high) between which YaRN's ramp runs.

    Pair i turns L * theta_i / (2 pi) times over L positions; it turns r times when
    i = d ln(L / (2 pi r)) / (2 ln base). low = floor of that for r = beta_fast, high = ceil for beta_slow,
    clipped to [0, d - 1] (as in the YaRN reference code).
    """

    def pair_index(rotations: float) -> float:
        return head_dim * math.log(original_len / (2 * math.pi * rotations)) / (2 * math.log(base))

    low, high = math.floor(pair_index(beta_fast)), math.ceil(pair_index(beta_slow))
    return max(low, 0), min(high, head_dim - 1)


def yarn_mscale(factor: float) -> float:
    """YaRN's attention temperature sqrt(1/t) = 0.1 ln(s) + 1 (1.0 for s <= 1)."""
    return 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0


def yarn_inv_frequencies(head_dim: int, base: float, factor: float, original_len: int, beta_fast: float = 32.0,
                         beta_slow: float = 1.0) -> torch.Tensor:
    """Per pair: theta_i (kept) below `low`, theta_i / s above `high`, a linear blend in between."""
    theta = inv_frequencies(head_dim, base)
    low, high = yarn_correction_range(head_dim, base, original_len, beta_fast, beta_slow)
    high_ = high if high > low else low + 1e-3  # avoid 0/0 when the range is empty
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float64) - low) / (high_ - low)).clamp(0, 1)
    return theta * (1 - ramp) + theta / factor * ramp  # ramp 0: extrapolate (keep), 1: interpolate


def llama3_inv_frequencies(head_dim: int, base: float, factor: float, original_len: int,
                           low_freq_factor: float = 1.0, high_freq_factor: float = 4.0) -> torch.Tensor:
    """Llama 3.1's band scaling of theta_i = base^(-2i/d) (float64): keep short wavelengths, divide long ones by
    factor, blend linearly in 1 / wavelength between the two bands."""
    theta = inv_frequencies(head_dim, base)
    wavelen = 2 * math.pi / theta  # (d/2,) positions per full turn of each pair
    w = ((original_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)).clamp(0, 1)
    # w = 1: wavelen <= L / high (kept); w = 0: wavelen >= L / low (interpolated); the band edges agree
    return (1 - w) * theta / factor + w * theta


def rope_frequencies(head_dim: int, base: float, seq_len: int,
                     scaling: RopeScaling | None = None) -> tuple[torch.Tensor, float]:
    """(inv_freq (head_dim/2,) float64, mscale) for a sequence of seq_len positions."""
    if scaling is None:
        return inv_frequencies(head_dim, base), 1.0
    s, L = scaling.factor, scaling.original_len
    if scaling.kind == "pi":
        return inv_frequencies(head_dim, base) / s, 1.0
    if scaling.kind == "ntk":
        return inv_frequencies(head_dim, ntk_base(base, s, head_dim)), 1.0
    if scaling.kind == "dynamic":
        return inv_frequencies(head_dim, dynamic_ntk_base(base, head_dim, seq_len, L, s)), 1.0
    if scaling.kind == "llama3":
        return llama3_inv_frequencies(head_dim, base, s, L, scaling.low_freq_factor, scaling.high_freq_factor), 1.0
    inv = yarn_inv_frequencies(head_dim, base, s, L, scaling.beta_fast, scaling.beta_slow)
    return inv, yarn_mscale(s)
