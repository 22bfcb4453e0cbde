"""Activations and feed-forward (FFN) blocks of a transformer.

Implements, from the formulas:
- GeLU, exact ``x * Phi(x)`` (Phi via erf) and the tanh approximation
  ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`` (Hendrycks & Gimpel 2016, arXiv:1606.08415);
- Swish ``x * sigmoid(beta x)``; beta = 1 is SiLU (Ramachandran et al. 2017, arXiv:1710.05941);
- GLU and its variants ReGLU, GeGLU, SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer",
  arXiv:2002.05202): ``FFN_GLU(x) = (sigma(x W) * x V) W2``, sigma replaced by ReLU / GeLU / Swish;
- ``FFN``: ``down(act(up(x)))``, and ``GLUFFN``: ``down(act(gate(x)) * up(x))`` (Llama weight names);
- ``llama_hidden_size``: the Llama rule for the hidden size of a SwiGLU FFN (8/3 d, rounded up);
- parameter counts of both blocks.

Leaves out: dropout, tensor-parallel sharding, fused kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GeLU: x * Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2 (the standard normal CDF)."""
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh approximation of GeLU (used by GPT-2 and BERT's original code); max error ~4.7e-4."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def swish(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Swish: x * sigmoid(beta x). beta = 1 is SiLU; beta -> inf tends to ReLU; beta = 0 gives x / 2."""
    return x * torch.sigmoid(beta * x)


def silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU = Swish with beta = 1: x * sigmoid(x) (not sigmoid(x) alone)."""
    return swish(x, 1.0)


def relu(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, min=0.0)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": relu,
    "gelu": gelu,
    "gelu_tanh": gelu_tanh,
    "silu": silu,
    "swish": silu,
    "sigmoid": torch.sigmoid,
}


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if not isinstance(name, str):
        raise TypeError(f"activation must be a name (str), got {type(name).__name__}")
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def glu(x: torch.Tensor, dim: int = -1, activation: str = "sigmoid") -> torch.Tensor:
    """Split x in two halves (a, b) along ``dim`` and return a * act(b) (``F.glu`` for sigmoid).

    The gate is the SECOND half, as in ``torch.nn.functional.glu`` and Dauphin et al. 2017.
    """
    if x.shape[dim] % 2:
        raise ValueError(f"glu needs an even size along dim {dim}, got {x.shape[dim]}")
    a, b = x.chunk(2, dim=dim)
    return a * get_activation(activation)(b)


# GLU variants by name: the activation applied to the gate branch (Shazeer 2020, eq. 5-6).
GLU_VARIANTS = {"glu": "sigmoid", "reglu": "relu", "geglu": "gelu", "swiglu": "silu"}


class FFN(nn.Module):
    """Classic transformer FFN: down(act(up(x))), x: (..., dim) -> (..., dim)."""

    def __init__(self, dim: int, hidden: int, activation: str = "gelu", bias: bool = True):
        super().__init__()
        _check_sizes(dim, hidden)
        self.act = get_activation(activation)
        self.up = nn.Linear(dim, hidden, bias=bias)  # W1: dim -> hidden
        self.down = nn.Linear(hidden, dim, bias=bias)  # W2: hidden -> dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


class GLUFFN(nn.Module):
    """Gated FFN: down(act(gate(x)) * up(x)); activation "silu" gives SwiGLU (Llama's MLP).

    ``variant`` is one of GLU_VARIANTS ("glu", "reglu", "geglu", "swiglu"). The activation is on the
    gate only: swapping gate and up changes the function.
    """

    def __init__(self, dim: int, hidden: int, variant: str = "swiglu", bias: bool = False):
        super().__init__()
        _check_sizes(dim, hidden)
        if variant not in GLU_VARIANTS:
            raise ValueError(f"unknown GLU variant {variant!r}; choose one of {sorted(GLU_VARIANTS)}")
        self.variant = variant
        self.act = get_activation(GLU_VARIANTS[variant])
        self.gate = nn.Linear(dim, hidden, bias=bias)  # W  (gate_proj)
        self.up = nn.Linear(dim, hidden, bias=bias)  # V  (up_proj)
        self.down = nn.Linear(hidden, dim, bias=bias)  # W2 (down_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.gate(x)) * self.up(x))


def swiglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    """Functional SwiGLU with weights as matrices: (silu(x W) * x V) W2.

    x: (..., d); w_gate, w_up: (d, h); w_down: (h, d).
    """
    return (silu(x @ w_gate) * (x @ w_up)) @ w_down


def _check_sizes(dim: int, hidden: int) -> None:
    for name, v in (("dim", dim), ("hidden", hidden)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
        if v <= 0:
            raise ValueError(f"{name} must be positive, got {v}")


def llama_hidden_size(dim: int, multiple_of: int = 256, ffn_dim_multiplier: float | None = None) -> int:
    """Llama's SwiGLU hidden size: int(2 * 4 * dim / 3), times ffn_dim_multiplier, rounded UP.

    Why 8/3: a GLU FFN has 3 matrices (gate, up, down) instead of 2, so 3 d h = 2 d (4 d) gives
    h = 8 d / 3 for the same parameter count as a 4d classic FFN.
    Examples (multiple_of=256, no multiplier): 4096 -> 11008 (Llama 7B), 5120 -> 13824 (13B),
    8192 -> 22016 (LLaMA-1 65B). Llama-2-70B (dim 8192) instead uses ffn_dim_multiplier=1.3,
    multiple_of=4096, which gives 28672, not 22016.
    """
    _check_sizes(dim, multiple_of)
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        if ffn_dim_multiplier <= 0:
            raise ValueError(f"ffn_dim_multiplier must be positive, got {ffn_dim_multiplier}")
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)  # round up


def ffn_params(dim: int, hidden: int, bias: bool = True) -> int:
    """Parameters of FFN: two matrices d x h (+ biases h and d)."""
    return 2 * dim * hidden + ((hidden + dim) if bias else 0)


def glu_ffn_params(dim: int, hidden: int, bias: bool = False) -> int:
    """Parameters of GLUFFN: three matrices d x h (+ biases 2h and d)."""
    return 3 * dim * hidden + ((2 * hidden + dim) if bias else 0)
