"""Chapter 10's benchmark: where a training step's memory goes, formula against measurement, and what it costs.

- `recompute_rows(shapes, device, repeats)`: for each (config, batch, seq) and recomputation mode (none,
  "selective", "full" of `minillm.recompute.apply_activation_checkpointing`), the bytes autograd saves for
  backward in one `GPT(idx, targets)` forward, by formula (`minillm.train_memory.model_activation_bytes`'
  embedding and head + `minillm.recompute.checkpointed_activation_bytes` for the blocks) and as measured by
  `minillm.memory.saved_activation_bytes` (saved-tensor hooks), and the time of a forward + backward
  (`minillm.bench.timer.best_time`). Float32, dropout 0: there the formula is exact, byte for byte.
- `precision_rows(batch, seq, device, repeats)`: a whole training step of the base model (forward, backward
  over `grad_accum` micro-batches, clip, optimizer step; `minillm.train.backward_micro_batches` under
  `TrainConfig.precision`'s autocast, a GradScaler for fp16) in fp32 / bf16 / fp16 with grad_accum 1 and 4,
  and with `minillm.optim8bit.Adam8bit` instead of AdamW: time, peak memory of the step
  (`minillm.memory.peak_allocated_bytes`: CUDA's high-water mark, or the CPU allocator's events), and the
  optimizer's state bytes against their formula (AdamW 8 bytes per parameter; 8-bit Adam
  `optim8bit.expected_state_bytes`).
- `section_memory(quick)`: both as the appendix's Markdown; on a GPU (`minillm.utils.by_device`) larger shapes.

Leaves out: activation bytes under autocast (saved tensors are then a mix of dtypes the fp32 formula does not
model), offloading, and fused optimizers.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from minillm.bench.timer import best_time

MODES: tuple[str | None, ...] = (None, "selective", "full")
PRECISIONS = ("fp32", "bf16", "fp16")
MB = 2**20


def bench_config(name: str, seq: int) -> Any:
    """A preset with dropout 0 and a block_size that holds `seq` tokens."""
    from minillm.model import GPTConfig

    cfg = GPTConfig.preset(name, dropout=0.0)
    return GPTConfig.preset(name, dropout=0.0, block_size=max(seq, cfg.block_size))


def _batch(cfg: Any, batch: int, seq: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq + 1), generator=gen).to(device)
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()


def recompute_rows(shapes: list[tuple[str, int, int]], device: torch.device | str = "cpu", repeats: int = 2,
                   modes: tuple[str | None, ...] = MODES) -> list[dict[str, Any]]:
    """One row per (config name, batch, seq) x recomputation mode: formula and measured saved bytes (MB and the
    difference in bytes), ms per forward + backward (best of `repeats` after one warm-up), time relative to
    no recomputation."""
    from minillm.memory import saved_activation_bytes
    from minillm.model import GPT
    from minillm.recompute import apply_activation_checkpointing, checkpointed_activation_bytes
    from minillm.train_memory import model_activation_bytes

    rows = []
    for name, batch, seq in shapes:
        cfg = bench_config(name, seq)
        x, y = _batch(cfg, batch, seq, device)
        parts = model_activation_bytes(cfg, batch, seq, 4)
        base_s = None
        for mode in modes:
            torch.manual_seed(0)
            model = GPT(cfg).to(device).train()
            if mode is not None:
                apply_activation_checkpointing(model, mode)
            measured, _ = saved_activation_bytes(lambda: model(x, y), model)  # noqa: B023 - called right here
            formula = parts["embedding"] + parts["head"] + checkpointed_activation_bytes(cfg, batch, seq, 4, mode)
            _, sec = best_time(_forward_backward(model, x, y), repeats, sync_device=x.device, warmup=1)
            base_s = sec if mode is None else base_s
            rows.append({"config": name, "params": sum(p.numel() for p in model.parameters()), "batch": batch,
                         "seq": seq, "recompute": mode or "none", "formula MB": formula / MB,
                         "measured MB": measured / MB, "formula − measured (bytes)": formula - measured,
                         "formula_bytes": formula, "measured_bytes": measured,
                         "ms fwd+bwd": 1e3 * sec, "time vs none": sec / base_s})
    return rows


def _forward_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], float]:
    """forward, backward (gradients dropped first); returns the loss."""

    def step() -> float:
        model.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        return loss.item()

    return step


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, tcfg: Any,
                scaler: torch.amp.GradScaler | None) -> Callable[[], float]:
    """One optimizer step as `minillm.train.train` takes it: micro-batches under autocast, (unscale,) clip, step."""
    from minillm.train import backward_micro_batches, split_batch

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = backward_micro_batches(model, split_batch(x, y, {}, tcfg.grad_accum), tcfg, 1, scaler)
        if scaler is not None:
            scaler.unscale_(opt)  # clip the true gradients
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if scaler is None:
            opt.step()
        else:
            scaler.step(opt)
            scaler.update()
        return loss

    return step


def _adamw_bytes(model: nn.Module) -> int:
    return 8 * sum(p.numel() for p in model.parameters())  # exp_avg + exp_avg_sq, fp32


def _adam8bit_bytes(model: nn.Module) -> int:
    from minillm.optim8bit import MIN_8BIT_SIZE, expected_state_bytes

    return sum(expected_state_bytes(p.numel(), bits8=p.numel() >= MIN_8BIT_SIZE) for p in model.parameters())


def precision_rows(batch: int, seq: int, device: torch.device | str = "cpu", repeats: int = 2,
                   config: str = "base", accums: tuple[int, ...] = (1, 4),
                   precisions: tuple[str, ...] = PRECISIONS) -> list[dict[str, Any]]:
    """One row per precision x grad_accum (AdamW), then fp32 / grad_accum 1 with 8-bit Adam: ms per step (best of
    `repeats` after one warm-up), the step's peak memory above what was allocated before it (weights and
    optimizer states already there; gradients, activations and temporaries inside), optimizer state bytes
    measured (`optim8bit.state_bytes`) and by formula, and the first step's loss."""
    from minillm.memory import peak_allocated_bytes
    from minillm.model import GPT
    from minillm.optim8bit import Adam8bit, state_bytes
    from minillm.train import TrainConfig, make_optimizer

    device = torch.device(device)
    cfg = bench_config(config, seq)
    x, y = _batch(cfg, batch, seq, device)
    runs = [(p, a, "AdamW") for p in precisions for a in accums] + [("fp32", 1, "Adam8bit")]
    rows, ref_peak = [], None
    for precision, accum, opt_name in runs:
        tcfg = TrainConfig(steps=1, warmup=0, batch_size=batch, seq_len=seq, precision=precision, grad_accum=accum,
                           lr=1e-3)
        torch.manual_seed(0)
        model = GPT(cfg).to(device).train()
        opt = make_optimizer(model, tcfg) if opt_name == "AdamW" else Adam8bit(model.parameters(), lr=1e-3)
        expected = _adamw_bytes(model) if opt_name == "AdamW" else _adam8bit_bytes(model)
        scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        step = _train_step(model, opt, x, y, tcfg, scaler)
        first_loss = step()  # the warm-up: the optimizer's states now exist
        peak, _ = peak_allocated_bytes(step, device)
        _, sec = best_time(step, repeats, sync_device=device)
        ref_peak = peak if ref_peak is None else ref_peak
        rows.append({"precision": precision, "grad_accum": accum, "optimizer": opt_name, "ms / step": 1e3 * sec,
                     "step peak MB": peak / MB, "peak vs fp32": peak / ref_peak,
                     "state MB": state_bytes(opt) / MB, "state formula MB": expected / MB,
                     "state_bytes": state_bytes(opt), "state_formula_bytes": expected, "first loss": first_loss})
    return rows


RECOMPUTE_COLUMNS = ["config", "params", "batch", "seq", "recompute", "formula MB", "measured MB",
                     "formula − measured (bytes)", "ms fwd+bwd", "time vs none"]
PRECISION_COLUMNS = ["precision", "grad_accum", "optimizer", "ms / step", "step peak MB", "peak vs fp32", "state MB",
                     "state formula MB", "first loss"]


def section_memory(quick: bool = False) -> str:
    from minillm.utils import by_device, get_device, markdown_table

    device = get_device()
    if quick:
        shapes, (pb, ps), repeats = [("tiny", 2, 16), ("tiny-llama", 2, 16)], (4, 16), 1
        prec = precision_rows(pb, ps, device, repeats, config="tiny", accums=(1, 2), precisions=("fp32", "bf16"))
    else:
        shapes = by_device([("base", 4, 64), ("base", 4, 256), ("base", 8, 256), ("tiny", 8, 64),
                            ("tiny-llama", 8, 64)],
                           [("base", 16, 256), ("base", 64, 256), ("base", 128, 256), ("tiny", 128, 64),
                            ("tiny-llama", 128, 64)], device)
        (pb, ps), repeats = by_device((8, 128), (64, 256), device), 2
        prec = precision_rows(pb, ps, device, repeats)
    rec = recompute_rows(shapes, device, repeats + 1)
    ms = {(r["precision"], r["grad_accum"], r["optimizer"]): r["ms / step"] for r in prec}
    vs_fp32 = ", ".join(f"{p} {ms[p, 1, 'AdamW'] / ms['fp32', 1, 'AdamW']:.2f}x" for p in PRECISIONS[1:]
                        if (p, 1, "AdamW") in ms)
    load = f" (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)" if device.type == "cpu" else ""
    return (
        "## Chapter 10: activation memory, recomputation and mixed precision\n\n"
        f"Measured on {device.type}{load}, float32 weights, dropout 0, random tokens. First table: the bytes autograd "
        "saves for backward in one `GPT(idx, targets)` forward, by the formula of `minillm.train_memory` (the "
        "blocks by `minillm.recompute.checkpointed_activation_bytes`, plus embedding and head) and as measured by "
        "`minillm.memory.saved_activation_bytes` (saved-tensor hooks, distinct storages, weights excluded), with "
        "no recomputation, selective (the attention core) and full (whole blocks) recomputation; time of one "
        f"forward + backward, best of {repeats + 1} after a warm-up. `base` is the course's base model, `tiny` the "
        "GPT-2-shaped preset (LayerNorm, GeLU, learned positions), `tiny-llama` a Llama-shaped one with GQA.\n\n"
        + markdown_table(rec, RECOMPUTE_COLUMNS)
        + f"\nSecond table: one whole training step of `{'tiny' if quick else 'base'}` on a batch of {pb} x {ps} "
        "tokens (forward and backward over `grad_accum` micro-batches under `TrainConfig.precision`'s autocast, "
        "clip, optimizer step; fp16 with a GradScaler), "
        f"best of {repeats} after a warm-up. Step peak: memory allocated during the step above what was "
        "allocated before it (weights and optimizer states are already there; gradients, activations and "
        "temporaries are inside), CUDA's high-water mark or the CPU allocator's events. State MB: the optimizer "
        "state tensors after the step (`minillm.optim8bit.state_bytes`) against the formula (AdamW 8 bytes per "
        "parameter; 8-bit Adam 2 bytes per element plus an fp32 absmax per block of 256, fp32 states for tensors "
        "under 4096 elements). Autocast keeps fp32 weights and casts on the fly: it saves activation memory "
        "everywhere, but time only where the hardware has fast 16-bit matrix kernels; here the step took "
        f"{vs_fp32} the fp32 time (grad_accum 1).\n\n"
        + markdown_table(prec, PRECISION_COLUMNS)
    )
