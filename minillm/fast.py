"""Speed-ups as transforms of an unchanged model (the approach of gpt-fast): the model code stays the
readable one, and a function swaps a part of a finished model for a faster equivalent.

- `torch_sdpa`: PyTorch's fused `F.scaled_dot_product_attention` (FlashAttention / memory-efficient
  kernels on a GPU, a fused C++ loop on the CPU) behind minillm's calling convention: boolean masks with
  True = may attend, grouped K/V heads, and a causal mask aligned bottom-right when there are more keys
  than queries (decoding with a KV cache), where PyTorch's own `is_causal` is aligned top-left.
- `use_kernel(model, kernel)`: sets the attention kernel of every `minillm.attention.Attention` in a model.

Tests check that a GPT gives the same logits, loss and gradients with either kernel, with and without a
KV cache. Leaves out: torch.compile, CUDA graphs, quantized kernels (chapter 17).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from minillm.attention import Attention, causal_mask, sdpa


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
