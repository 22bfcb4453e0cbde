"""FlashAttention's algorithm in plain PyTorch: tiled attention with an online softmax, and its backward.

Implements (Dao et al. 2022, "FlashAttention", arXiv:2205.14135, Algorithm 1; Dao 2023, "FlashAttention-2",
arXiv:2307.08691, Algorithms 1 and 2):
- `flash_attn_forward`: for each block of `block_q` queries, walk over blocks of `block_k` keys keeping a
  running row max m, a running sum l of exp(s - m) and an unnormalised output acc; when a new block raises the
  max, the old l and acc are rescaled by exp(m_old - m_new). One division by l at the end (FA2), and the
  log-sum-exp lse = m + log l is kept for the backward. The (T, S) score matrix never exists: the largest
  intermediate is one (block_q, block_k) tile per (batch, head).
- `flash_attn_backward`: recomputes each tile's probabilities from q, k and lse (P = exp(q k^T * scale - lse))
  instead of storing them, with D = rowsum(dO * O) replacing rowsum(dP * P) (FA2 eq. in sec. 3.1.2).
- `FlashAttention` (a `torch.autograd.Function`) and `flash_attention(q, k, v, ...)` wiring the two, with
  grouped-query k/v repeated outside the Function so autograd sums their gradients over each group.
- `attention_peak_memory`: the measured peak bytes of naive, tiled and torch's attention (the probe itself,
  `peak_allocated_bytes`, is in `minillm.memory`).

Conventions as in `minillm.attention`: q (B, H, T, D), k and v (B, H, S, D); `is_causal` is aligned bottom-
right (query i attends keys j <= i + S - T, as FlashAttention >= 2.1; torch SDPA's is_causal is top-left,
the same when S == T); a query row with no allowed key outputs zeros and has lse = -inf. Causal tiles that
lie entirely above the diagonal are skipped (never computed), which halves the work for S == T.

What it is not: fast. The point of FlashAttention is where the tiles live (on-chip SRAM) and how many bytes
move between SRAM and HBM; Python loops over tiles show the arithmetic and the O(T) memory, not the speed.
Leaves out: dropout, attention bias / arbitrary masks, the FA2 work partitioning across thread blocks and
warps, FA3's asynchrony and FP8, varlen (packed) batches, the paged KV cache.

Measuring memory: `minillm.memory.peak_allocated_bytes` (the allocator's high-water mark during one call,
on CPU from torch.profiler's allocation events) explains how.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from minillm.attention import repeat_kv, sdpa
from minillm.memory import peak_allocated_bytes


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_q: int, block_k: int) -> None:
    if q.ndim != 4 or k.shape != v.shape or k.ndim != 4 or q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"expected q (B, H, T, D) and k, v (B, H, S, D) with the same B, H, D; got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)} (repeat grouped kv heads first)")
    if block_q < 1 or block_k < 1:
        raise ValueError(f"block_q and block_k must be >= 1, got {block_q}, {block_k}")


def kv_blocks(i0: int, i1: int, S: int, block_k: int, is_causal: bool, offset: int) -> Iterator[tuple[int, int, bool]]:
    """The key tiles (j0, j1, needs_mask) that query rows i0 .. i1-1 must visit.

    Without causality: every tile, none masked. With it (query i sees keys j <= i + offset): stop at the first
    tile entirely above the diagonal (j0 > i1 - 1 + offset); mask only the tiles that cross it
    (j1 - 1 > i0 + offset); tiles fully below the diagonal need no mask."""
    for j0 in range(0, S, block_k):
        j1 = min(j0 + block_k, S)
        if is_causal and j0 > i1 - 1 + offset:
            break
        yield j0, j1, is_causal and j1 - 1 > i0 + offset


def _tile_scores(qi, kj, scale, i0, i1, j0, j1, needs_mask, offset):
    s = (qi @ kj.transpose(-2, -1)) * scale  # (B, H, bq, bk)
    if needs_mask:
        i = torch.arange(i0, i1, device=qi.device)[:, None]
        j = torch.arange(j0, j1, device=qi.device)[None, :]
        s = s.masked_fill(j > i + offset, float("-inf"))
    return s


def flash_attn_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    is_causal: bool = False,
    block_q: int = 64,
    block_k: int = 64,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiled attention: o (B, H, T, D) = softmax(q k^T * scale) v, and lse (B, H, T) = logsumexp of the scores."""
    _check(q, k, v, block_q, block_k)
    T, S = q.shape[2], k.shape[2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    offset = S - T  # bottom-right causal alignment
    o = torch.empty_like(q)
    lse = q.new_empty(q.shape[:3])
    for i0 in range(0, T, block_q):
        i1 = min(i0 + block_q, T)
        qi = q[:, :, i0:i1]  # (B, H, bq, D)
        m = q.new_full((*q.shape[:2], i1 - i0, 1), float("-inf"))  # running max of the scores seen so far
        l = q.new_zeros(m.shape)  # running sum of exp(s - m)
        acc = q.new_zeros(qi.shape)  # running sum of exp(s - m) v, unnormalised
        for j0, j1, needs_mask in kv_blocks(i0, i1, S, block_k, is_causal, offset):
            s = _tile_scores(qi, k[:, :, j0:j1], scale, i0, i1, j0, j1, needs_mask, offset)
            m_new = torch.maximum(m, s.amax(-1, keepdim=True))
            m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))  # rows all -inf so far
            p = torch.exp(s - m_safe)  # (B, H, bq, bk)
            alpha = torch.exp(m - m_safe)  # rescales what was summed under the old max (0 when m was -inf)
            l = alpha * l + p.sum(-1, keepdim=True)
            acc = alpha * acc + p @ v[:, :, j0:j1]
            m = m_new
        o[:, :, i0:i1] = acc / torch.where(l > 0, l, torch.ones_like(l))  # l == 0: no key allowed, output 0
        lse[:, :, i0:i1] = (m + torch.log(l)).squeeze(-1)  # -inf + log 0 stays -inf for empty rows
    return o, lse


def flash_attn_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    do: torch.Tensor,
    is_causal: bool = False,
    block_q: int = 64,
    block_k: int = 64,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients (dq, dk, dv) of the attention output given dO, recomputing each tile's probabilities.

    Per tile: P = exp(S - lse), dV += P^T dO, dP = dO V^T, dS = P * (dP - D) with D = rowsum(dO * O),
    dQ += dS K * scale, dK += dS^T Q * scale. FA2 puts the key tiles in the outer loop so that dK, dV stay in
    SRAM and only dQ is accumulated in HBM; here the query tiles are outer (the same schedule as the forward)."""
    _check(q, k, v, block_q, block_k)
    T, S = q.shape[2], k.shape[2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    offset = S - T
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    D = (do * o).sum(-1, keepdim=True)  # (B, H, T, 1): rowsum(dO * O) = rowsum(dP * P)
    lse_safe = torch.where(torch.isfinite(lse), lse, torch.full_like(lse, float("inf")))[..., None]  # P = 0
    for i0 in range(0, T, block_q):
        i1 = min(i0 + block_q, T)
        qi, doi, Di, lsei = q[:, :, i0:i1], do[:, :, i0:i1], D[:, :, i0:i1], lse_safe[:, :, i0:i1]
        for j0, j1, needs_mask in kv_blocks(i0, i1, S, block_k, is_causal, offset):
            kj, vj = k[:, :, j0:j1], v[:, :, j0:j1]
            p = torch.exp(_tile_scores(qi, kj, scale, i0, i1, j0, j1, needs_mask, offset) - lsei)  # (B,H,bq,bk)
            dv[:, :, j0:j1] += p.transpose(-2, -1) @ doi
            ds = p * (doi @ vj.transpose(-2, -1) - Di)  # (B, H, bq, bk)
            dq[:, :, i0:i1] += (ds @ kj) * scale
            dk[:, :, j0:j1] += (ds.transpose(-2, -1) @ qi) * scale
    return dq, dk, dv


class FlashAttention(torch.autograd.Function):
    """Autograd wiring: forward saves q, k, v, o and lse (not the (T, S) probabilities); backward recomputes."""

    @staticmethod
    def forward(ctx: Any, q, k, v, is_causal=False, block_q=64, block_k=64, scale=None):
        o, lse = flash_attn_forward(q, k, v, is_causal, block_q, block_k, scale)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.args = (is_causal, block_q, block_k, scale)
        return o

    @staticmethod
    def backward(ctx: Any, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = flash_attn_backward(q, k, v, o, lse, do.contiguous(), *ctx.args)
        return dq, dk, dv, None, None, None, None


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    is_causal: bool = False,
    block_q: int = 64,
    block_k: int = 64,
    scale: float | None = None,
) -> torch.Tensor:
    """Differentiable tiled attention; k and v may have fewer heads than q (GQA / MQA), repeated here."""
    if q.ndim != 4 or k.ndim != 4 or q.shape[1] % k.shape[1]:
        raise ValueError(f"expected q (B, H, T, D), k and v (B, H_kv, S, D) with H_kv dividing H; got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}")
    n_rep = q.shape[1] // k.shape[1]
    return FlashAttention.apply(q, repeat_kv(k, n_rep), repeat_kv(v, n_rep), is_causal, block_q, block_k, scale)


# ---------------------------------------------------------------------------------------------- memory


def attention_peak_memory(
    T: int, B: int = 1, H: int = 4, D: int = 64, block: int = 64, is_causal: bool = True,
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
) -> dict[str, Any]:
    """Measured peak bytes of one forward of naive attention (`minillm.attention.sdpa`), of
    `flash_attn_forward` (block_q = block_k = block) and of torch's `F.scaled_dot_product_attention` on random
    (B, H, T, D) inputs, S = T, no grad.

    Also returns the bytes of one (B, H, T, T) score matrix and of the (B, H, T, D) output, the sizes the
    naive and the flash peaks should be multiples of."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, generator=g, dtype=dtype).to(device) for _ in range(3))
    with torch.no_grad():
        naive, _ = peak_allocated_bytes(lambda: sdpa(q, k, v, is_causal=is_causal), device)
        flash, _ = peak_allocated_bytes(lambda: flash_attn_forward(q, k, v, is_causal, block, block), device)
        torch_sdpa, _ = peak_allocated_bytes(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=is_causal),
                                             device)
    item = q.element_size()
    return {"T": T, "naive_bytes": naive, "flash_bytes": flash, "sdpa_bytes": torch_sdpa,
            "scores_bytes": B * H * T * T * item,
            "output_bytes": B * H * T * D * item}
