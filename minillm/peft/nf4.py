"""NF4 (4-bit NormalFloat) quantisation with double quantisation, and a frozen 4-bit linear layer for QLoRA.

Implements, after Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs" (arXiv:2305.14314):

- `nf4_code_values()`: the 16 NF4 values (sec. 3, eq. 4; the list of appendix E). Quantiles of N(0, 1) at
  probabilities spaced evenly from 0.5 to `NF4_OFFSET`: 8 for the positive half, 7 for the negative half,
  plus an exact 0, all divided by the largest, so that 0, -1 and +1 are exact. Bit for bit the paper's list.
- `quantize_blockwise(x, code, blocksize)` / `dequantize_blockwise(...)`: absmax scaling per block of
  `blocksize` consecutive values (flattened row-major), each scaled value rounded to the nearest code value.
  Generic in the code: NF4 (16 values), `int4_code_values()`, `fp4_code_values()`, and the 8-bit
  `dynamic_code_values()` used for the constants.
- Double quantisation (sec. 3): the fp32 absmax constants c2 (one per 64 weights) have their mean subtracted
  and are quantised in blocks of 256 to 8 bits, keeping one fp32 constant per 256 blocks. The paper calls the
  8-bit type "8-bit Floats"; like bitsandbytes we use Dettmers' dynamic (tree) 8-bit type, a sign bit, a
  base-10 exponent written as a run of zeros, and linear fraction bits (arXiv:1511.04561).
- `quantize_nf4(w)` -> `NF4Weight` (two 4-bit indices per byte, first value in the high nibble) and
  `dequantize_nf4(q)`; `bits_per_parameter()` (4 + 32/64 = 4.5 bits, 4 + 8/64 + 32/(64*256) = 4.127 bits).
- `LinearNF4`: a frozen linear layer that stores only the NF4 weight and dequantises it to the compute dtype
  on every forward, and again in backward (the 16-bit matrix is never kept between the two); it exposes
  `in_features` / `out_features` so LoRA can wrap it. `quantize_model_nf4(model)` swaps a model's linear
  layers for it.

Same results as bitsandbytes' `quantize_4bit(..., quant_type="nf4", blocksize=64)`: the same packed codes,
fp32 constants and dequantised values; with double quantisation the same mean and second-level constants, and
the same 8-bit codes except for the few constants (under 1%) that lie near a decision boundary, where its CPU
kernel's approximate search takes the neighbouring code and ours the nearest (tests/test_nf4.py compares where
bitsandbytes is installed). Leaves out: fused 4-bit matmul kernels (on a CPU, dequantising costs time on every
step), paged optimizers (unified-memory paging of the optimizer state, sec. 3), storage dtypes other than
uint8, merging LoRA weights into an NF4 base, and guarding the fp32 constants against `module.to(dtype)`
(choose `compute_dtype` instead of casting a quantised model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# the outermost probability. Q(1) = inf, so the ends sit at this offset instead: the mean of 1 - 1/(2*16) and
# 1 - 1/(2*15) (the midpoints of the last bins of 16 and of 15 equal-mass bins) to 7 digits, as published
NF4_OFFSET = 0.9677083
_TINY = 1e-38  # a floor for absmax, so an all-zero block divides by something and gives codes of 0


def nf4_code_values(offset: float = NF4_OFFSET) -> torch.Tensor:
    """The 16 NF4 values, sorted, float32 (16,): -1, 7 negatives, 0, 7 positives, +1."""
    if not 0.5 < offset < 1.0:
        raise ValueError(f"offset is the outermost quantile's probability and must lie in (0.5, 1), got {offset}")
    # probabilities in float32, quantiles in float64, values rounded to float32, then normalised in float32:
    # this order reproduces appendix E bit for bit
    pos = torch.special.ndtri(torch.linspace(offset, 0.5, 9)[:-1].double()).float()  # (8,) > 0
    neg = -torch.special.ndtri(torch.linspace(offset, 0.5, 8)[:-1].double()).float()  # (7,) < 0
    values = torch.cat([neg, torch.zeros(1), pos]).sort().values  # (16,), one extra positive value
    return values / values.max()  # the largest becomes exactly 1, the smallest exactly -1


NF4_CODE = nf4_code_values()


def int4_code_values() -> torch.Tensor:
    """Symmetric 4-bit integers as a code: k/7 for k = -7..7 (15 evenly spaced values, absmax scaling)."""
    return torch.arange(-7, 8, dtype=torch.float32) / 7


def fp4_code_values() -> torch.Tensor:
    """FP4 E2M1 (1 sign, 2 exponent, 1 mantissa bit: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and negatives) divided by 6."""
    mags = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]) / 6
    return torch.cat([-mags[1:].flip(0), mags])  # (15,): the two zeros of the format count once


def dynamic_code_values() -> torch.Tensor:
    """The signed 8-bit dynamic type, sorted, float32 (256,), values in [-1, 1].

    A byte is a sign bit, then e zeros (the value is scaled by 10^-e, e = 0..6), then a 1 (the indicator),
    then 6 - e bits of a linear fraction in (0.1, 1); the codes with no indicator are 0 and 1.
    """
    values: list[float] = []
    for e in range(6, -1, -1):
        n_frac = 2 ** (6 - e)  # fraction values at exponent e: fewer bits left the more zeros precede them
        edges = torch.linspace(0.1, 1, n_frac + 1)  # float32, like the published table
        mids = (edges[:-1] + edges[1:]) / 2  # (n_frac,) each fraction code sits at the middle of its bin
        values += (10.0**-e * mids).tolist() + (-(10.0**-e) * mids).tolist()
    values += [0.0, 1.0]  # 2 * 127 + 2 = 256
    return torch.tensor(sorted(values), dtype=torch.float32)


DYNAMIC_CODE = dynamic_code_values()


def nearest_code(scaled: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Index (uint8) of the nearest value of the sorted `code` for each entry of `scaled`; ties go down."""
    mids = (code[:-1] + code[1:]) / 2  # (len(code) - 1,) decision boundaries
    return torch.bucketize(scaled, mids.to(scaled.device)).to(torch.uint8)


def _blocks(x: torch.Tensor, blocksize: int) -> torch.Tensor:
    """Flatten to (n_blocks, blocksize) float32, zero-padding the last block (zeros leave its absmax alone)."""
    if blocksize < 1:
        raise ValueError(f"blocksize must be a positive int, got {blocksize}")
    flat = x.detach().reshape(-1).float()
    return F.pad(flat, (0, -flat.numel() % blocksize)).view(-1, blocksize)


def quantize_blockwise(
    x: torch.Tensor, code: torch.Tensor, blocksize: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blockwise absmax quantisation of x (any shape, flattened row-major) to indices into the sorted `code`.

    Returns (indices uint8 (x.numel(),), absmax float32 (ceil(numel / blocksize),)).
    """
    if x.numel() == 0:
        raise ValueError("cannot quantise an empty tensor")
    blocks = _blocks(x, blocksize)  # (n_blocks, blocksize)
    absmax = blocks.abs().amax(dim=1)  # (n_blocks,) one fp32 constant per block
    # multiply by the reciprocal (as bitsandbytes does, for identical rounding); clamp guards |x/absmax| <= 1
    scaled = (blocks * (1.0 / absmax.clamp(min=_TINY))[:, None]).clamp(-1, 1)
    return nearest_code(scaled, code).reshape(-1)[: x.numel()], absmax


def dequantize_blockwise(
    idx: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, blocksize: int = 64
) -> torch.Tensor:
    """code[idx] * absmax of each value's block: float32 (idx.numel(),)."""
    n = idx.numel()
    values = code.to(absmax.device)[idx.reshape(-1).long()]  # (n,) in [-1, 1]
    if n % blocksize:
        values = F.pad(values, (0, -n % blocksize))
    values = values.view(-1, blocksize)  # (n_blocks, blocksize)
    return (values * absmax[:, None]).reshape(-1)[:n]


def pack_4bit(idx: torch.Tensor) -> torch.Tensor:
    """Two 4-bit indices per byte, the first in the high nibble: uint8 (ceil(n / 2),)."""
    idx = idx.reshape(-1).to(torch.uint8)
    idx = F.pad(idx, (0, idx.numel() % 2))  # an odd count gets a 0 in the last low nibble
    return (idx[0::2] << 4) | idx[1::2]


def unpack_4bit(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of `pack_4bit`: uint8 (n,)."""
    return torch.stack([packed >> 4, packed & 0xF], dim=1).reshape(-1)[:n]


@dataclass
class NF4Weight:
    """A tensor in NF4. Without double quantisation `absmax` is fp32 and the dq fields are None; with it,
    `absmax` holds uint8 indices into `dynamic_code_values()` for (c2 - absmax_offset), blockwise scaled
    by the fp32 `absmax2`, one per `blocksize2` constants."""

    packed: torch.Tensor  # uint8 (ceil(numel / 2),)
    absmax: torch.Tensor  # float32 or uint8 (n_blocks,)
    shape: torch.Size
    dtype: torch.dtype  # the dtype dequantisation returns
    blocksize: int = 64
    absmax2: torch.Tensor | None = None  # float32 (ceil(n_blocks / blocksize2),)
    absmax_offset: torch.Tensor | None = None  # float32 () the mean of the fp32 constants
    blocksize2: int = 256

    @property
    def nbytes(self) -> int:
        """Bytes stored, constants included."""
        extra = [t for t in (self.absmax2, self.absmax_offset) if t is not None]
        return sum(t.numel() * t.element_size() for t in [self.packed, self.absmax, *extra])


def quantize_absmax(absmax: torch.Tensor, blocksize2: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Double quantisation of the fp32 constants: (uint8 indices (n,), fp32 absmax2 (ceil(n/blocksize2),),
    fp32 offset ()). The constants are all positive: subtracting their mean centres them for a signed type."""
    offset = absmax.mean()
    idx, absmax2 = quantize_blockwise(absmax - offset, DYNAMIC_CODE, blocksize2)
    return idx, absmax2, offset


def dequantize_absmax(idx: torch.Tensor, absmax2: torch.Tensor, offset: torch.Tensor, blocksize2: int = 256):
    """The fp32 constants back from `quantize_absmax`'s output: float32 (idx.numel(),)."""
    return dequantize_blockwise(idx, absmax2, DYNAMIC_CODE, blocksize2) + offset


def quantize_nf4(w: torch.Tensor, blocksize: int = 64, double_quant: bool = True, blocksize2: int = 256) -> NF4Weight:
    """w (any shape, float) -> NF4Weight: NF4 indices of w / absmax per block of `blocksize`, packed."""
    if not w.is_floating_point():
        raise ValueError(f"quantize_nf4 takes a float tensor (the weights), got {w.dtype}")
    idx, absmax = quantize_blockwise(w, NF4_CODE, blocksize)
    q = NF4Weight(pack_4bit(idx), absmax, w.shape, w.dtype, blocksize)
    if double_quant:
        q.absmax, q.absmax2, q.absmax_offset = quantize_absmax(absmax, blocksize2)
        q.blocksize2 = blocksize2
    return q


def dequantize_nf4(q: NF4Weight, dtype: torch.dtype | None = None) -> torch.Tensor:
    """NF4Weight -> dense tensor of q.shape in `dtype` (default: the dtype that was quantised)."""
    absmax = q.absmax
    if q.absmax2 is not None:  # double quantised: the fp32 constants first
        absmax = dequantize_absmax(q.absmax, q.absmax2, q.absmax_offset, q.blocksize2)
    idx = unpack_4bit(q.packed, math.prod(q.shape))
    return dequantize_blockwise(idx, absmax, NF4_CODE, q.blocksize).view(q.shape).to(dtype or q.dtype)


def bits_per_parameter(
    bits: int = 4, blocksize: int = 64, double_quant: bool = True, blocksize2: int = 256
) -> float:
    """Storage bits per weight: the code plus the constants spread over their blocks. Without double
    quantisation one fp32 constant per block: 4 + 32/64 = 4.5; with it, an 8-bit constant per block and
    an fp32 one per `blocksize2` blocks: 4 + 8/64 + 32/(64*256) = 4.127 (the paper's 0.127 bits)."""
    if double_quant:
        return bits + 8 / blocksize + 32 / (blocksize * blocksize2)
    return bits + 32 / blocksize


class _DequantMatmul(torch.autograd.Function):
    """y = x @ W.T with W dequantised in forward and again in backward: between the two only NF4 is kept."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: LinearNF4) -> torch.Tensor:
        ctx.layer = layer
        return x @ layer.dequantize().T  # (..., in) @ (in, out) -> (..., out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if not ctx.needs_input_grad[0]:
            return None, None
        return grad @ ctx.layer.dequantize(), None  # (..., out) @ (out, in): no gradient for the frozen W


class LinearNF4(nn.Module):
    """A frozen linear layer with an NF4 weight: y = x @ dequant(W).T + b, computed in `compute_dtype`.

    Holds buffers only (no parameters): `weight_packed`, `absmax` (and `absmax2`, `absmax_offset` with double
    quantisation) and `bias` in the compute dtype. Build it with `LinearNF4.from_linear(linear)`.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, blocksize: int = 64,
                 double_quant: bool = True, compute_dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.blocksize, self.double_quant, self.compute_dtype = blocksize, double_quant, compute_dtype
        self.blocksize2 = 256
        self.set_weight(torch.zeros(out_features, in_features))
        self.register_buffer("bias", torch.zeros(out_features, dtype=compute_dtype) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, blocksize: int = 64, double_quant: bool = True,
                    compute_dtype: torch.dtype | None = None) -> LinearNF4:
        """Quantise an nn.Linear's weight; the compute dtype defaults to the weight's dtype."""
        dtype = compute_dtype or linear.weight.dtype
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, blocksize, double_quant, dtype)
        layer.set_weight(linear.weight.detach())
        if linear.bias is not None:
            layer.bias = linear.bias.detach().to(dtype).clone()
        return layer.to(linear.weight.device)

    def set_weight(self, w: torch.Tensor) -> None:
        """Quantise a dense (out_features, in_features) weight into this layer's buffers."""
        if tuple(w.shape) != (self.out_features, self.in_features):
            raise ValueError(f"weight must be (out_features, in_features) = {(self.out_features, self.in_features)}"
                             f", got {tuple(w.shape)}")
        q = quantize_nf4(w, self.blocksize, self.double_quant, self.blocksize2)
        self.register_buffer("weight_packed", q.packed)
        self.register_buffer("absmax", q.absmax)
        self.register_buffer("absmax2", q.absmax2)
        self.register_buffer("absmax_offset", q.absmax_offset)

    def nf4_weight(self) -> NF4Weight:
        shape = torch.Size((self.out_features, self.in_features))
        return NF4Weight(self.weight_packed, self.absmax, shape, self.compute_dtype, self.blocksize,
                         self.absmax2, self.absmax_offset, self.blocksize2)

    def dequantize(self) -> torch.Tensor:
        """The dense weight (out_features, in_features) in the compute dtype (a new tensor each call)."""
        return dequantize_nf4(self.nf4_weight(), self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _DequantMatmul.apply(x.to(self.compute_dtype), self)  # (..., out_features)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"blocksize={self.blocksize}, double_quant={self.double_quant}, compute_dtype={self.compute_dtype}")


def quantize_model_nf4(model: nn.Module, target_modules: tuple[str, ...] | None = None,
                       skip_modules: tuple[str, ...] = ("lm_head",), blocksize: int = 64, double_quant: bool = True,
                       compute_dtype: torch.dtype | None = None) -> nn.Module:
    """Replace, in place, every nn.Linear whose qualified name ends with one of `target_modules` (None: every
    nn.Linear) and with none of `skip_modules` by a LinearNF4; returns the model.

    The head is skipped by default: QLoRA keeps it in 16 bits, and a tied head shares the embedding matrix.
    """
    def ends(name: str, suffixes: tuple[str, ...]) -> bool:
        return any(name == s or name.endswith("." + s) for s in suffixes)

    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)
             and (target_modules is None or ends(n, target_modules)) and not ends(n, skip_modules)]
    if not names:
        raise ValueError(f"no nn.Linear of the model matches target_modules={target_modules} (skipping "
                         f"{skip_modules}); pass suffixes of names from model.named_modules()")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, LinearNF4.from_linear(getattr(parent, child), blocksize, double_quant, compute_dtype))
    return model
