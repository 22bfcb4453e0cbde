"""Chapter 5 benchmark: memory and time of naive attention, FlashAttention's tiling, and torch's SDPA.

`section_attention(quick)` returns a Markdown section for `python -m minillm.bench` (the appendix "Measured
results"); `memory_rows(...)` and `time_rows(...)` return the rows, which notebook 5 shows for small shapes.

Measured, for one causal self-attention forward on random (B, H, T, D) float32 inputs, without gradients:
- peak memory (`minillm.flash.attention_peak_memory`: the high-water mark of the allocator's events under
  torch.profiler) of naive attention (`minillm.attention.sdpa`, which materialises (T, T) scores), of our
  tiled `minillm.flash.flash_attn_forward`, and of torch's `F.scaled_dot_product_attention` (on CPU a
  fused flash-style kernel since torch 2.2);
- time in milliseconds of the same three (best of `repeats`; CUDA synchronised before reading the clock).
The claim to check: naive memory grows like T^2 (several (T, T) matrices), tiled memory like T (the output
plus a few (block, block) tiles). Our tiled version is a Python loop of small PyTorch ops: it shows the
arithmetic, not the SRAM/HBM traffic that makes the CUDA kernel fast. On a CPU it can still beat the naive
version at long T (it skips the tiles above the causal diagonal and never writes a (T, T) matrix), while
torch's fused kernel is faster than both. Leaves out: the backward pass, half precision, the CUDA
FlashAttention kernels' own timings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from minillm.attention import sdpa
from minillm.bench.timer import best_time
from minillm.flash import attention_peak_memory, flash_attn_forward
from minillm.utils import get_device, markdown_table

MIB = 2**20


def memory_rows(Ts: Sequence[int], B: int = 1, H: int = 4, D: int = 64, block: int = 64,
                device: torch.device | str = "cpu") -> list[dict[str, Any]]:
    """One row per T: measured peak MiB of naive / tiled / torch SDPA, and the size of one (B, H, T, T) matrix."""
    if not Ts or min(Ts) < 1:
        raise ValueError(f"Ts must be a non-empty list of positive sequence lengths, got {list(Ts)}")
    rows = []
    for T in Ts:
        r = attention_peak_memory(T, B, H, D, block, is_causal=True, device=device)
        rows.append({"T": T, "naive MiB": r["naive_bytes"] / MIB, "flash (ours) MiB": r["flash_bytes"] / MIB,
                     "torch SDPA MiB": r["sdpa_bytes"] / MIB, "one (T, T) matrix MiB": r["scores_bytes"] / MIB,
                     "naive / matrix": r["naive_bytes"] / r["scores_bytes"],
                     "flash / output": r["flash_bytes"] / r["output_bytes"]})
    return rows


def time_rows(Ts: Sequence[int], B: int = 1, H: int = 4, D: int = 64, block: int = 64,
              device: torch.device | str = "cpu", repeats: int = 3) -> list[dict[str, Any]]:
    """One row per T: milliseconds of one causal forward of naive / tiled (ours) / torch SDPA."""
    if not Ts or min(Ts) < 1 or repeats < 1:
        raise ValueError(f"need positive sequence lengths and repeats >= 1, got {list(Ts)}, {repeats}")
    device = torch.device(device)
    rows = []
    for T in Ts:
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(B, H, T, D, generator=g).to(device) for _ in range(3))
        impls = {"naive ms": lambda q, k, v: sdpa(q, k, v, is_causal=True),
                 "flash (ours) ms": lambda q, k, v: flash_attn_forward(q, k, v, True, block, block),
                 "torch SDPA ms": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)}
        row: dict[str, Any] = {"T": T}
        with torch.no_grad():
            for name, fn in impls.items():
                row[name] = 1000 * best_time(lambda fn=fn, q=q, k=k, v=v: fn(q, k, v), repeats, device, warmup=1)[1]
        rows.append(row)
    return rows


MEM_COLUMNS = ["T", "naive MiB", "flash (ours) MiB", "torch SDPA MiB", "one (T, T) matrix MiB", "naive / matrix",
               "flash / output"]
TIME_COLUMNS = ["T", "naive ms", "flash (ours) ms", "torch SDPA ms"]


def section_attention(quick: bool = False) -> str:
    """Chapter 5: peak memory and time of naive vs tiled (FlashAttention) vs torch SDPA attention, as Markdown."""
    device = get_device()
    B, H, D = 1, 4, 64
    block = 128 if device.type == "cuda" else 64
    if quick:
        mem_T, time_T, repeats = [256, 512, 1024], [256, 1024], 1
    elif device.type == "cuda":
        mem_T, time_T, repeats = [1024, 2048, 4096, 8192, 16384], [1024, 4096, 16384], 5
    else:
        mem_T, time_T, repeats = [256, 512, 1024, 2048, 4096], [512, 1024, 2048, 4096], 3
    mem = memory_rows(mem_T, B, H, D, block, device)
    times = time_rows(time_T, B, H, D, block, device, repeats)
    threads = f", {torch.get_num_threads()} CPU threads" if device.type == "cpu" else ""
    return (
        "## Chapter 5: attention memory and time, naive vs tiled (FlashAttention) vs torch SDPA\n\n"
        f"One causal self-attention forward, float32, B = {B}, H = {H} heads of D = {D}, no gradients, on "
        f"{device.type}{threads}; tiles of {block} x {block} for ours. Peak memory is measured (the allocator's "
        "high-water mark during the call, outputs included, inputs excluded). `naive / matrix` counts how many "
        "(T, T) score matrices the naive version holds at its peak; `flash / output` how many outputs' worth "
        "the tiled one holds (it tends to 1 as T grows: the tiles' share shrinks).\n\n"
        + markdown_table(mem, MEM_COLUMNS)
        + f"\nMilliseconds per forward (best of {repeats}). Ours is a Python loop over small tiles: it shows the "
        "algorithm, not the speed of a fused kernel, though skipping the tiles above the causal diagonal and never "
        "writing a (T, T) matrix can make it faster than the naive version at long T.\n\n"
        + markdown_table(times, TIME_COLUMNS)
    )
