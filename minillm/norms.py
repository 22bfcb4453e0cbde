"""Normalization layers of transformers: LayerNorm, RMSNorm, and DeepNorm's residual scaling and init.

Implements, from the papers' formulas:
- `layer_norm` / `LayerNorm` (Ba, Kiros & Hinton 2016, "Layer Normalization", arXiv:1607.06450):
  y = (x - mean) / sqrt(var + eps) * weight + bias, mean and the *biased* variance (divide by n) over the
  last dimension(s);
- `rms_norm` / `RMSNorm` (Zhang & Sennrich 2019, "Root Mean Square Layer Normalization", NeurIPS):
  y = x / sqrt(mean(x^2) + eps) * weight: no mean subtraction, no bias;
- `residual`: one residual sub-layer with the norm before (Pre-LN, x + f(norm(x))) or after it
  (Post-LN, norm(alpha x + f(x))), the two placements compared by Xiong et al. 2020, "On Layer
  Normalization in the Transformer Architecture" (ICML);
- DeepNorm (Wang et al. 2022, "DeepNet: Scaling Transformers to 1,000 Layers", arXiv:2203.00555):
  `deepnorm_constants` (the paper's Table 1: alpha and beta per architecture). What needs a model's
  structure lives with the model: `minillm.model.deepnorm_init_`, `apply_deepnorm` and `block_grad_norms`,
  and `GPTConfig(norm_position="post", deepnorm=True)`.

Precision: both norms compute in float32 (float64 stays float64) and cast the result back to the input's
dtype, as Llama's and torch's kernels do. In float16 a square overflows from |x| >= 256 (65504 is the
largest float16) and rounds to 0 below |x| ~ 1.7e-4 (its square is under half the smallest subnormal), and
in bfloat16 (8 significant bits) the mean, and a one-pass variance E[x^2] - E[x]^2, are rounded
coarsely; tests/test_norms.py shows each of these failures on numbers.

Leaves out: fused kernels (Apex, Triton), partial RMSNorm (pRMSNorm), batch/group norm, running
statistics, and the encoder-decoder wiring of DeepNorm (only its constants are given).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# ---------------------------------------------------------------------------------------------- functional


def _trailing_dims(x: torch.Tensor, weight: torch.Tensor | None, ndim: int | None) -> tuple[int, ...]:
    """The trailing dims normalised together: weight.ndim of them, else `ndim`, else the last one."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {type(x).__name__} "
                        f"{getattr(x, 'dtype', '')}; convert with x.float()")
    n = weight.ndim if weight is not None else (ndim or 1)
    if n < 1 or n > x.ndim:
        raise ValueError(f"cannot normalise the last {n} dims of a tensor of shape {tuple(x.shape)}")
    if weight is not None and tuple(weight.shape) != tuple(x.shape[-n:]):
        raise ValueError(f"weight has shape {tuple(weight.shape)} but x ends in {tuple(x.shape[-n:])}; "
                         "the norm's size must equal the last dimension(s) of x")
    return tuple(range(-n, 0))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16/float32 -> float32, float64 -> float64: never compute a norm in half precision."""
    return torch.promote_types(dtype, torch.float32)


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    ndim: int | None = None,
) -> torch.Tensor:
    """LayerNorm over the last dims of x: (x - mean) / sqrt(var + eps) * weight + bias.

    var is the biased variance (mean of squared deviations, divide by n, not n - 1), eps sits inside the
    square root. Computes in float32 (or float64) and returns x's dtype and shape.
    """
    dims = _trailing_dims(x, weight, ndim)
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    xf = x.to(_compute_dtype(x.dtype))
    mean = xf.mean(dims, keepdim=True)  # (..., 1)
    centered = xf - mean
    var = centered.pow(2).mean(dims, keepdim=True)  # two-pass: no E[x^2] - E[x]^2 cancellation
    y = centered * torch.rsqrt(var + eps)
    if weight is not None:
        y = y * weight.to(y.dtype)
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y.to(x.dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None, eps: float = 1e-6,
             ndim: int | None = None) -> torch.Tensor:
    """RMSNorm over the last dims of x: x / sqrt(mean(x^2) + eps) * weight (no centring, no bias)."""
    dims = _trailing_dims(x, weight, ndim)
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    xf = x.to(_compute_dtype(x.dtype))
    y = xf * torch.rsqrt(xf.pow(2).mean(dims, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.to(y.dtype)
    return y.to(x.dtype)


# ---------------------------------------------------------------------------------------------- modules


def _as_shape(normalized_shape: int | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"normalized_shape must be a positive int or a tuple of them, got {normalized_shape!r}")
    return shape


class LayerNorm(nn.Module):
    """LayerNorm with a learned gain (`weight`, ones) and shift (`bias`, zeros); `bias=False` as in PaLM."""

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-5, bias: bool = True,
                 elementwise_affine: bool = True):
        super().__init__()
        self.normalized_shape, self.eps = _as_shape(normalized_shape), eps
        self.weight = nn.Parameter(torch.ones(self.normalized_shape)) if elementwise_affine else None
        self.bias = nn.Parameter(torch.zeros(self.normalized_shape)) if elementwise_affine and bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps, ndim=len(self.normalized_shape))

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, bias={self.bias is not None}"


class RMSNorm(nn.Module):
    """RMSNorm with a learned gain (`weight`, ones) and no bias, as in T5 and Llama.

    eps defaults to 1e-6 (Llama 1, T5); Llama 2/3 and Mistral use 1e-5. torch.nn.RMSNorm's default eps is
    torch.finfo(dtype).eps instead, so pass eps explicitly when comparing the two.
    """

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-6, elementwise_affine: bool = True):
        super().__init__()
        self.normalized_shape, self.eps = _as_shape(normalized_shape), eps
        self.weight = nn.Parameter(torch.ones(self.normalized_shape)) if elementwise_affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps, ndim=len(self.normalized_shape))

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}"


# ---------------------------------------------------------------------------------------------- placement


def residual(
    x: torch.Tensor,
    f: Callable[[torch.Tensor], torch.Tensor],
    norm: Callable[[torch.Tensor], torch.Tensor],
    position: str = "pre",
    alpha: float = 1.0,
) -> torch.Tensor:
    """One residual sub-layer around f (attention or FFN).

    "pre":  x + f(norm(x))          the residual stream itself is never normalised (GPT-2, Llama)
    "post": norm(alpha * x + f(x))  normalise after the sum (original Transformer, BERT; DeepNorm: alpha > 1)

    `minillm.model.Block` wires its two sub-layers with this function (the one copy of the wiring).
    """
    if position == "pre":
        if alpha != 1.0:
            raise ValueError("alpha scales the residual of Post-LN (DeepNorm); use position='post' or alpha=1")
        return x + f(norm(x))
    if position == "post":
        return norm(alpha * x + f(x))
    raise ValueError(f"position must be 'pre' or 'post', got {position!r}")


# ---------------------------------------------------------------------------------------------- DeepNorm

# Wang et al. 2022, Table 1 (N encoder layers, M decoder layers):
#   encoder-only (BERT-like):  alpha = (2N)^(1/4)              beta = (8N)^(-1/4)
#   decoder-only (GPT-like):   alpha = (2M)^(1/4)              beta = (8M)^(-1/4)
#   encoder-decoder, encoder:  alpha = 0.81 (N^4 M)^(1/16)     beta = 0.87 (N^4 M)^(-1/16)
#   encoder-decoder, decoder:  alpha = (3M)^(1/4)              beta = (12M)^(-1/4)


def _positive_int(n: int, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive int (a number of layers), got {n!r}")
    return n


def deepnorm_constants(n_layer: int, kind: str = "decoder") -> tuple[float, float]:
    """(alpha, beta) of DeepNorm for a decoder-only ("decoder") or encoder-only ("encoder") stack of n_layer.

    alpha multiplies the residual before the Post-LN; beta is the gain of the Xavier-normal init of the FFN,
    value and output projections. Both rows of the paper's table are the same formula.
    """
    n = _positive_int(n_layer, "n_layer")
    if kind not in ("decoder", "encoder"):
        raise ValueError(f"kind must be 'decoder' or 'encoder' (for encoder-decoder models use "
                         f"deepnorm_constants_encoder_decoder), got {kind!r}")
    return (2 * n) ** 0.25, (8 * n) ** -0.25


def deepnorm_constants_encoder_decoder(n_encoder: int, n_decoder: int) -> dict[str, tuple[float, float]]:
    """{"encoder": (alpha, beta), "decoder": (alpha, beta)} for an N-layer encoder and M-layer decoder."""
    n, m = _positive_int(n_encoder, "n_encoder"), _positive_int(n_decoder, "n_decoder")
    return {"encoder": (0.81 * (n**4 * m) ** (1 / 16), 0.87 * (n**4 * m) ** (-1 / 16)),
            "decoder": ((3 * m) ** 0.25, (12 * m) ** -0.25)}
