"""Chapter 3 benchmark: how much faster is RMSNorm than LayerNorm, here, forward + backward?

`section_norms(quick)` returns a Markdown section for `python -m minillm.bench` (the appendix "Measured
results"); `norm_timings(...)` returns the rows, which notebook 3.1 shows for a small shape.

Measured: milliseconds per forward + backward (the gradient of a random projection of the output with
respect to the input, the weight and the bias) of our `minillm.norms.LayerNorm` / `RMSNorm` (plain
PyTorch ops, computed in float32) and of `torch.nn.LayerNorm` / `torch.nn.RMSNorm`, for a few
(batch, tokens, width) shapes. Each number is the best of `repeats` timings of `inner` back-to-back
calls, so it is the least disturbed by other work on the machine; CUDA is synchronised before reading
the clock. Zhang & Sennrich (2019) report RMSNorm 7%-64% faster than LayerNorm across their models.

Leaves out: memory use, fused kernels (Apex, Triton, Liger), torch.compile.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from minillm.bench.timer import best_time
from minillm.norms import LayerNorm, RMSNorm
from minillm.utils import get_device, markdown_table


def time_forward_backward(module: nn.Module, x: torch.Tensor, repeats: int = 5, inner: int = 10) -> float:
    """Best-of-`repeats` seconds for ONE forward + backward of `module` on `x` (averaged over `inner` calls)."""
    if repeats < 1 or inner < 1:
        raise ValueError(f"repeats and inner must be >= 1, got {repeats}, {inner}")
    x = x.detach().requires_grad_()
    g = torch.randn_like(x)  # a fixed random upstream gradient

    def step() -> None:
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).backward(g)

    def calls() -> None:
        for _ in range(inner):
            step()

    # warm-up: allocations, kernel selection; then the best of `repeats` timings of `inner` calls
    return best_time(calls, repeats, x.device, warmup=1)[1] / inner


IMPLS = {
    "LayerNorm (minillm)": lambda d: LayerNorm(d, eps=1e-5),
    "RMSNorm (minillm)": lambda d: RMSNorm(d, eps=1e-6),
    "nn.LayerNorm": lambda d: nn.LayerNorm(d, eps=1e-5),
    "nn.RMSNorm": lambda d: nn.RMSNorm(d, eps=1e-6),
}


def norm_timings(
    shapes: Sequence[tuple[int, int, int]],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    repeats: int = 5,
    inner: int = 10,
) -> list[dict[str, Any]]:
    """One row per (B, T, d) shape: milliseconds of each implementation in IMPLS, and RMS/LN time ratios."""
    device = torch.device(device)
    if not shapes or any(len(s) != 3 or min(s) < 1 for s in shapes):
        raise ValueError(f"shapes must be a non-empty list of positive (batch, tokens, width) triples, got {shapes}")
    rows = []
    for shape in shapes:
        x = torch.randn(shape, device=device, dtype=dtype)
        row: dict[str, Any] = {"shape (B, T, d)": " x ".join(map(str, shape)),
                               "dtype": str(dtype).replace("torch.", "")}
        for name, make in IMPLS.items():
            module = make(shape[-1]).to(device=device, dtype=dtype)
            row[f"{name} ms"] = 1000 * time_forward_backward(module, x, repeats, inner)
        row["RMS / LN (minillm)"] = row["RMSNorm (minillm) ms"] / row["LayerNorm (minillm) ms"]
        row["RMS / LN (torch)"] = row["nn.RMSNorm ms"] / row["nn.LayerNorm ms"]
        rows.append(row)
    return rows


COLUMNS = ["shape (B, T, d)", "dtype", *(f"{n} ms" for n in IMPLS), "RMS / LN (minillm)", "RMS / LN (torch)"]


def section_norms(quick: bool = False) -> str:
    """Chapter 3: forward + backward time of RMSNorm vs LayerNorm (ours and torch's) as Markdown."""
    device = get_device()
    if quick:
        shapes, repeats, inner = [(2, 16, 64)], 1, 2
    else:
        shapes, repeats, inner = [(8, 256, 512), (8, 256, 2048), (4, 512, 4096)], 5, 10
    rows = norm_timings(shapes, device, torch.float32, repeats, inner)
    if device.type == "cuda" and not quick:
        rows += norm_timings(shapes, device, torch.bfloat16, repeats, inner)
    return (
        "## Chapter 3: RMSNorm vs LayerNorm, forward + backward\n\n"
        f"Milliseconds per forward + backward on {device.type} (best of {repeats} timings of {inner} calls), "
        "for our norms (plain PyTorch ops, computed in float32) and torch's `nn.LayerNorm` / `nn.RMSNorm`; "
        "the last two columns are the RMSNorm / LayerNorm time ratios (below 1 = RMSNorm faster).\n\n"
        + markdown_table(rows, COLUMNS)
    )
