"""The fast path's benchmark: training tokens/s of one GPT with the teaching ops, with only the fused attention
kernel (`use_kernel`), with every fused op (`to_fast`) and with `torch.compile` on top.

`training_rows(...)` builds one model per path from the same seed and weights, warms each up, then runs
`rounds` rounds of `steps` training steps, the paths taking turns inside every round (A B C A B C ...) so a
machine whose load changes treats them alike; tokens/s is from the median step. A step is `minillm.train`'s
step (batch, forward, backward, clip to 1.0, AdamW, zero_grad, `loss.item()`). The first warm-up step of
every path sees the same batch with the same weights, so its loss doubles as a check that the paths compute
the same function ("Δ loss" against the teaching path). `extra` adds models from outside the package
(a reference trainer: a function of the teaching model returning a module whose forward(idx, targets)
gives (logits, loss)) into the same alternation. `section_fast(quick)` renders the appendix's Markdown.

Leaves out: mixed precision (chapter 10), fused optimizers, CUDA graphs.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from minillm.bench.timer import best_time

PATHS = ("teaching", "kernel only", "to_fast", "to_fast + compile")


def _make_path(name: str, base: nn.Module) -> nn.Module:
    from minillm.fast import to_fast, use_kernel

    model = copy.deepcopy(base)
    if name == "kernel only":
        return use_kernel(model, "torch")
    if name == "to_fast":
        return to_fast(model)
    if name == "to_fast + compile":
        return to_fast(model, compile=True)
    return model


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """One training step as `minillm.train.train` takes it, timed by the bench's one timer; returns (seconds, loss)."""

    def step() -> float:
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()  # waits for a GPU, so the clock is honest

    value, seconds = best_time(step, repeats=1, sync_device=x.device)
    return seconds, value


def training_rows(
    preset: str = "small",
    batch: int = 12,
    seq_len: int = 256,
    steps: int = 3,
    rounds: int = 3,
    warmup: int = 2,
    paths: tuple[str, ...] = PATHS,
    extra: dict[str, Callable[[nn.Module], nn.Module]] | None = None,
    device: torch.device | str = "cpu",
) -> list[dict[str, Any]]:
    """One row per path: median ms per step and tokens/s over all timed steps; "vs teaching", the median over
    rounds of the first path's step time over this path's (a paired ratio, robust to a load that drifts);
    "Δ loss", |difference| of the first warm-up step's loss from the first path's; "warm-up s", building
    the path and its warm-up steps (torch.compile's compilation included); `round_s`, the median step time
    of each round.

    A path whose warm-up fails (e.g. torch.compile without a working compiler) gets a row with a `note`
    and no numbers, instead of stopping the benchmark."""
    from minillm.data import CharTokenizer, TokenData, load_corpus
    from minillm.model import GPT, GPTConfig
    from minillm.train import TrainConfig, make_optimizer

    text = load_corpus("shakespeare")
    data = TokenData(text, CharTokenizer.from_text(text))
    torch.manual_seed(0)
    cfg = GPTConfig.preset(preset, vocab_size=data.vocab_size, block_size=seq_len, dropout=0.0)
    base = GPT(cfg).to(device)
    opt_cfg = TrainConfig(steps=1, warmup=0, lr=1e-3)
    builders = {name: (lambda b, n=name: _make_path(n, b)) for name in paths} | dict(extra or {})
    models, opts, first_loss, notes, warm_s = {}, {}, {}, {}, {}
    for name, build in builders.items():
        gen = torch.Generator().manual_seed(1)  # the same batches for every path
        t0 = time.perf_counter()
        try:
            model = build(base).to(device).train()
            opt = make_optimizer(model, opt_cfg)
            for i in range(warmup):
                x, y = data.batch("train", batch, seq_len, gen)
                _, loss = _step(model, opt, x.to(device).contiguous(), y.to(device).contiguous())
                if i == 0:
                    first_loss[name] = loss
        except Exception as e:  # noqa: BLE001 - report the path as skipped, keep measuring the others
            notes[name] = f"skipped: {type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}"
            continue
        models[name], opts[name], warm_s[name] = model, opt, time.perf_counter() - t0  # compile time too
    times: dict[str, list[list[float]]] = {name: [] for name in models}  # per round, per step
    gen = torch.Generator().manual_seed(2)
    for _ in range(rounds):
        for name, model in models.items():  # the paths take turns: a load spike hits them alike
            times[name].append([])
            for _ in range(steps):
                x, y = data.batch("train", batch, seq_len, gen)
                x, y = x.to(device).contiguous(), y.to(device).contiguous()
                times[name][-1].append(_step(model, opts[name], x, y)[0])
    rows = []
    ref = next(iter(models), None)
    ref_round_s = [statistics.median(r) for r in times[ref]] if ref is not None else []
    for name in builders:
        row: dict[str, Any] = {"path": name, "ms / step": "", "tokens_per_s": "", "vs teaching": "",
                               "Δ loss": "", "warm-up s": "", "note": notes.get(name, ""), "round_s": []}
        if name in times:
            sec = statistics.median(t for r in times[name] for t in r)
            round_s = [statistics.median(r) for r in times[name]]  # one median step time per round
            # the speed-up of each round (both paths measured within seconds of each other), then the median
            speedup = statistics.median(a / b for a, b in zip(ref_round_s, round_s, strict=True))
            row.update({"ms / step": 1e3 * sec, "tokens_per_s": batch * seq_len / sec, "vs teaching": speedup,
                        "Δ loss": abs(first_loss[name] - first_loss[ref]), "warm-up s": warm_s[name],
                        "round_s": round_s})
        rows.append(row)
    return rows


def section_fast(quick: bool = False) -> str:
    from minillm.utils import get_device, markdown_table

    device = get_device()
    if quick:
        shape = dict(preset="tiny", batch=4, seq_len=64, steps=1, rounds=1, warmup=1, paths=PATHS[:3])
    else:
        shape = dict(preset="small", batch=64 if device.type == "cuda" else 12, seq_len=256, steps=2, rounds=5)
    rows = training_rows(**shape, device=device)
    load = f" (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)" if device.type == "cpu" else ""
    return (
        "## The fast path: teaching ops vs fused kernels\n\n"
        f"Training steps of the `{shape['preset']}` preset (dropout 0, float32, AdamW) on {device.type}{load}, "
        f"batch {shape['batch']} x {shape['seq_len']} tokens of Shakespeare; tokens/s from the median step of "
        f"{shape['rounds']} rounds of {shape['steps']} steps, the paths taking turns in every round; \"vs "
        "teaching\" is the median of the per-round speed-ups. `kernel only` swaps just the attention for "
        "PyTorch's SDPA; `to_fast` also the norms, the activations and the q/k/v and gate/up projections "
        "(`minillm.fast`). Δ loss: the absolute difference of the first step's loss from the teaching path's "
        "(same weights, same batch). warm-up s: building the path and its warm-up steps (torch.compile's "
        "compilation included).\n\n"
        + markdown_table(rows, ["path", "ms / step", "tokens_per_s", "vs teaching", "Δ loss", "warm-up s",
                                "note"])
    )
