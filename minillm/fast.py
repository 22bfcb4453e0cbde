"""Speed-ups as transforms of an unchanged model (the approach of gpt-fast): the model code stays the
readable one, and a function swaps a part of a finished model for a faster equivalent.

- `torch_sdpa`: PyTorch's fused `F.scaled_dot_product_attention` (FlashAttention / memory-efficient
  kernels on a GPU, a fused C++ loop on the CPU) behind minillm's calling convention: boolean or additive
  float masks (T5 / ALiBi biases arrive as a float mask), grouped K/V heads, and a causal mask aligned
  bottom-right when there are more keys than queries (decoding with a KV cache), where PyTorch's own
  `is_causal` is aligned top-left.
- `use_kernel(model, kernel)`: sets the attention kernel of every `minillm.attention.Attention` in a model.
- `to_fast(model, compile=False)`: every teaching op of the model becomes PyTorch's fused one, module by
  module: `norms.LayerNorm` / `RMSNorm` -> `F.layer_norm` / `F.rms_norm`; `ffn.FFN` / `GLUFFN` -> the
  activation's one-kernel form (`F.gelu`, `F.silu`, ...), and one matmul for GLU's gate and up; `attention.
  Attention` -> one matmul for q, k and v, and `torch_sdpa`. `compile=True` adds `torch.compile`.
  `to_teaching(model)` undoes the swaps.

How a swap works: the module's class becomes a subclass that only overrides `forward` (`m.__class__ =
FastLayerNorm`, ...). Parameters, buffers, names, `state_dict`, hooks and `isinstance` checks stay what
they were, so a state_dict saved from a fast model loads into a plain `GPT` and the other way round, and an
optimizer built before or after the swap holds the same tensors. Only modules of exactly these classes are
swapped (a subclass may have changed `forward`), whatever block wiring (pre/post-norm, parallel) holds them.

Fused projections keep the separate parameters: the fast forward concatenates `q_proj`, `k_proj` and
`v_proj` (and GLU's `gate` and `up`) weights at call time, a copy of 3 d^2 numbers that autograd splits back
in the backward pass. At nanoGPT's shakespeare_char shape one (B T, d) x (d, 3d) matmul is cheaper than
three (B T, d) x (d, d) ones even with that copy (`minillm.bench.fast` measures the whole model); with
fewer than `FUSE_MIN_ROWS` tokens (decoding) the copy would cost as much as the matmul, so the projections
run separately.

Transforms of later chapters compose: a projection that is no longer a plain `nn.Linear` (LoRA's
`LoRALinear`, a quantized linear) is never fused but called as a module, so `to_fast` works before or after
`minillm.peft.apply_lora` and the adapter stays in the forward and the backward.

Precision follows the teaching ops: the norms compute in float32 for float16 / bfloat16 inputs (float64
stays float64) and return the input's dtype. Fused activations and matmuls agree to float rounding.

Leaves out: CUDA graphs, fused optimizers, fused cross-entropy, quantized kernels (chapter 17). The float
RoPE rotation and the KV cache stay the teaching code (cheap next to the matmuls at these shapes).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from minillm import ffn as _ffn
from minillm.attention import Attention, causal_mask, sdpa
from minillm.ffn import FFN, GLUFFN
from minillm.norms import LayerNorm, RMSNorm

# ---------------------------------------------------------------------------------------------- attention


def torch_sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Same arguments and result as `minillm.attention.sdpa`, computed by `F.scaled_dot_product_attention`.

    q (B, H, T, D), k and v (B, H_kv, S, D) -> (B, H, T, D)."""
    T, S = q.shape[-2], k.shape[-2]
    if is_causal and (S != T or mask is not None):  # torch's is_causal is top-left aligned, ours bottom-right
        causal = causal_mask(T, S, device=q.device)  # (T, S) bool
        if mask is None:
            mask = causal
        elif mask.dtype == torch.bool:
            mask = mask & causal
        else:  # an additive float mask
            mask = mask.masked_fill(~causal, float("-inf"))
        is_causal = False
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal,
                                          scale=scale, enable_gqa=q.shape[1] != k.shape[1])


KERNELS: dict[str, Callable[..., torch.Tensor]] = {"minillm": sdpa, "torch": torch_sdpa}


def use_kernel(model: nn.Module, kernel: str | Callable[..., torch.Tensor] = "torch") -> nn.Module:
    """Set the attention kernel of every Attention module of `model` ("minillm", "torch" or a function)."""
    if isinstance(kernel, str):
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; choose one of {list(KERNELS)} or pass a function")
        kernel = KERNELS[kernel]
    n = 0
    for m in model.modules():
        if isinstance(m, Attention):
            m.kernel = kernel
            n += 1
    if n == 0:
        raise ValueError(f"{type(model).__name__} has no minillm.attention.Attention module to change")
    return model


# below this many rows (tokens) the weight copy of a fused projection costs about what the matmul does
# (decoding with a KV cache feeds one token per sequence): run the projections separately instead
FUSE_MIN_ROWS = 32


def _fused_linear(x: torch.Tensor, linears: tuple[nn.Module, ...]) -> torch.Tensor:
    """x (..., d) -> (..., sum of out_features): one matmul with the linears' weights stacked by rows.

    Only plain nn.Linear layers are fused; when one was wrapped or replaced by a transform (a LoRA adapter,
    a quantized linear) they all run as the modules they are, so the wrapper's forward is never skipped."""
    if x.numel() < FUSE_MIN_ROWS * x.shape[-1] or any(type(lin) is not nn.Linear for lin in linears):
        return torch.cat([lin(x) for lin in linears], dim=-1)  # (..., sum out): a copy of a few rows only
    weight = torch.cat([lin.weight for lin in linears])  # (sum out, d): a copy, split back by autograd
    bias = None if linears[0].bias is None else torch.cat([lin.bias for lin in linears])
    return F.linear(x, weight, bias)


class FastAttention(Attention):
    """`Attention` with q, k and v from one matmul and PyTorch's fused SDPA (unless a kernel was set); the
    teaching `forward` runs unchanged around them."""

    kernel = staticmethod(torch_sdpa)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.cfg
        qkv = _fused_linear(x, (self.q_proj, self.k_proj, self.v_proj))  # (B, T, (H + 2 H_kv) hd)
        return qkv.split((c.n_head * c.head_dim, c.n_kv_head * c.head_dim, c.n_kv_head * c.head_dim), dim=-1)


# ---------------------------------------------------------------------------------------------- norms


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)  # the teaching norms' rule: float32 at least


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(dtype)


class FastLayerNorm(LayerNorm):
    """`LayerNorm` computed by `F.layer_norm` (one kernel, forward and backward)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cd = _compute_dtype(x.dtype)
        y = F.layer_norm(x.to(cd), self.normalized_shape, _cast(self.weight, cd), _cast(self.bias, cd), self.eps)
        return y.to(x.dtype)


class FastRMSNorm(RMSNorm):
    """`RMSNorm` computed by `F.rms_norm`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cd = _compute_dtype(x.dtype)
        return F.rms_norm(x.to(cd), self.normalized_shape, _cast(self.weight, cd), self.eps).to(x.dtype)


# ---------------------------------------------------------------------------------------------- FFN

# minillm.ffn's activations -> the one-kernel PyTorch op computing the same function
FUSED_ACTIVATIONS: dict[Callable[[torch.Tensor], torch.Tensor], Callable[[torch.Tensor], torch.Tensor]] = {
    _ffn.gelu: F.gelu,
    _ffn.gelu_tanh: partial(F.gelu, approximate="tanh"),
    _ffn.relu: F.relu,
    _ffn.silu: F.silu,
    torch.sigmoid: torch.sigmoid,
}


class FastFFN(FFN):
    """`FFN` with the activation's fused kernel (`fused_act`, set by `to_fast`)."""

    fused_act: Callable[[torch.Tensor], torch.Tensor]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.fused_act(self.up(x)))


class FastGLUFFN(GLUFFN):
    """`GLUFFN` with gate and up in one matmul and the activation's fused kernel."""

    fused_act: Callable[[torch.Tensor], torch.Tensor]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = _fused_linear(x, (self.gate, self.up)).chunk(2, dim=-1)  # 2 x (..., hidden)
        return self.down(self.fused_act(gate) * up)


# ---------------------------------------------------------------------------------------------- transforms

# exact teaching class -> its fast subclass (subclasses of the teaching classes are left alone)
FAST_CLASSES: dict[type[nn.Module], type[nn.Module]] = {
    LayerNorm: FastLayerNorm,
    RMSNorm: FastRMSNorm,
    FFN: FastFFN,
    GLUFFN: FastGLUFFN,
    Attention: FastAttention,
}
TEACHING_CLASSES: dict[type[nn.Module], type[nn.Module]] = {v: k for k, v in FAST_CLASSES.items()}


def to_fast(model: nn.Module, compile: bool = False) -> nn.Module:
    """Swap every teaching op of `model` for PyTorch's fused one, in place; returns the model.

    Same parameters, names and state_dict; outputs equal up to float rounding. Attention gets `torch_sdpa`
    unless `use_kernel` gave it another kernel than the teaching `sdpa` (e.g. a FlashAttention function).
    compile=True also wraps the forward in `torch.compile` (`model.compile()`: the module keeps its
    names; the first calls are slow)."""
    n = 0
    for m in model.modules():
        if type(m) in TEACHING_CLASSES:  # already fast (to_fast twice is harmless)
            n += 1
            continue
        fast = FAST_CLASSES.get(type(m))
        if fast is None:
            continue
        if m.__dict__.get("kernel") is sdpa:  # use_kernel(model, "minillm") set the teaching kernel: drop it
            del m.kernel
        if isinstance(m, FFN | GLUFFN):
            m.fused_act = FUSED_ACTIVATIONS.get(m.act, m.act)  # an unknown activation stays as it is
        m.__class__ = fast
        n += 1
    if n == 0:
        raise ValueError(f"{type(model).__name__} has no minillm norm, FFN or Attention module to make fast; "
                         "to_fast transforms models built from minillm.norms, minillm.ffn and minillm.attention")
    if compile:
        model.compile()
    return model


def to_teaching(model: nn.Module) -> nn.Module:
    """Undo `to_fast`'s swaps, in place (a compiled forward stays compiled: rebuild the model for that)."""
    for m in model.modules():
        teaching = TEACHING_CLASSES.get(type(m))
        if teaching is not None:
            m.__class__ = teaching
            m.__dict__.pop("fused_act", None)
    return model
