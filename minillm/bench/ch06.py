"""Chapters 6-7 benchmarks: training throughput (tokens/s, MFU) and the KV cache's speed-up in generation.

`section_training(quick)` trains GPT presets for a few steps on Shakespeare (char tokenizer) and reports
tokens per second and, on a GPU whose peak is known, the model FLOPs utilisation: achieved FLOP/s over
the chip's peak, with 6N + 12 L T d FLOPs per token (N non-embedding parameters; the attention term from
the PaLM paper, Chowdhery et al. 2022, appendix B). `section_generation(quick)` times greedy generation
with and without the KV cache over output lengths (`kv_cache_speedup_rows`, which notebook 7.2 shows).
Both return Markdown for `python -m minillm.bench`.

Leaves out: mixed precision (chapter 10) — everything here runs in float32 (TF32 matmuls on a GPU).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from minillm.bench.timer import best_time
from minillm.model import flops_per_token
from minillm.utils import get_device, markdown_table

# dense TF32 tensor-core peaks (FLOP/s) from the vendors' data sheets; float32 training uses TF32 matmuls here
GPU_PEAK_TF32: dict[str, float] = {"H100": 494e12, "H200": 494e12, "A100": 156e12, "L4": 60e12}


def gpu_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in GPU_PEAK_TF32.items() if k in name), None)


def training_rows(presets: list[tuple[str, int, int]], steps: int, device: torch.device) -> list[dict[str, Any]]:
    """(preset, batch, seq_len) -> tokens/s over `steps` steps after 2 warm-up steps."""
    from minillm.data import CharTokenizer, TokenData, load_corpus
    from minillm.fast import use_kernel
    from minillm.model import GPT, GPTConfig
    from minillm.train import TrainConfig, train

    text = load_corpus("shakespeare")
    data = TokenData(text, CharTokenizer.from_text(text))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    rows = []
    for preset, batch, seq_len in presets:
        torch.manual_seed(0)
        cfg = GPTConfig.preset(preset, vocab_size=data.vocab_size, dropout=0.0)
        model = use_kernel(GPT(cfg).to(device), "torch")
        train(model, data, TrainConfig(steps=2, warmup=0, batch_size=batch, seq_len=seq_len, eval_every=0,
                                       eval_batches=1, progress=False))  # warm-up: allocator, kernels
        hist = train(model, data, TrainConfig(steps=steps, warmup=0, batch_size=batch, seq_len=seq_len,
                                              eval_every=0, eval_batches=1, progress=False))
        n = model.num_params(exclude_embeddings=True)
        achieved = hist.tokens_per_s * flops_per_token(n, cfg.n_layer, seq_len, cfg.d_model)
        peak = gpu_peak(device)
        rows.append({"preset": preset, "params": model.num_params(), "batch x seq": f"{batch} x {seq_len}",
                     "tokens_per_s": hist.tokens_per_s, "TFLOP/s": achieved / 1e12,
                     "MFU": f"{100 * achieved / peak:.1f}%" if peak else "n/a"})
    return rows


def kv_cache_speedup_rows(model: nn.Module, prompt_len: int, lengths: list[int], repeats: int = 3) -> list[dict]:
    """Seconds to generate n tokens greedily with and without the KV cache (best of `repeats`)."""
    from minillm.generate import generate
    from minillm.sampling import SamplingParams

    device = next(model.parameters()).device
    idx = torch.zeros(1, prompt_len, dtype=torch.long, device=device)
    rows = []
    for n in lengths:
        row: dict[str, Any] = {"new_tokens": n}
        for use_cache in (False, True):
            params = SamplingParams(temperature=0.0, max_tokens=n)
            _, row["cache_s" if use_cache else "no_cache_s"] = best_time(
                lambda params=params, use_cache=use_cache: generate(model, idx, params, use_cache=use_cache),
                repeats, device)
        row["speedup"] = row["no_cache_s"] / row["cache_s"]
        rows.append(row)
    return rows


def section_training(quick: bool = False) -> str:

    device = get_device()
    if device.type == "cuda":
        presets = [("tiny", 64, 64), ("small", 64, 256), ("gpt2", 16, 1024)]
    else:
        presets = [("tiny", 16, 64), ("small", 8, 256)]
    if quick:
        presets = presets[:1]
    rows = training_rows(presets, steps=3 if quick else 20, device=device)
    return (
        "## Chapter 6: training throughput\n\n"
        f"Training steps of GPT presets on {device.type} (AdamW, float32, torch's fused attention kernel), "
        "Shakespeare with the character tokenizer; tokens/s after two warm-up steps. TFLOP/s counts "
        "6N + 12 L T d FLOPs per token; MFU divides it by the GPU's dense TF32 peak (n/a on a CPU).\n\n"
        + markdown_table(rows, ["preset", "params", "batch x seq", "tokens_per_s", "TFLOP/s", "MFU"])
    )


def section_generation(quick: bool = False) -> str:
    from minillm.fast import use_kernel
    from minillm.model import GPT, GPTConfig

    device = get_device()
    preset = "small" if not quick else "tiny"
    torch.manual_seed(0)
    cfg = GPTConfig.preset(preset, block_size=1024 if preset == "small" else 256, dropout=0.0)
    model = use_kernel(GPT(cfg).to(device), "torch")
    lengths = [32, 64] if quick else [64, 128, 256, 512]
    rows = kv_cache_speedup_rows(model, prompt_len=16, lengths=lengths, repeats=1 if quick else 3)
    return (
        "## Chapter 7: the KV cache in generation\n\n"
        f"Seconds to generate n tokens greedily from a 16-token prompt with the `{preset}` preset "
        f"({model.num_params():,} parameters, block_size {cfg.block_size}) on {device.type}, best of "
        f"{1 if quick else 3}: re-running the whole sequence every step vs feeding one token and reusing the "
        "cached keys and values.\n\n"
        + markdown_table(rows, ["new_tokens", "no_cache_s", "cache_s", "speedup"])
    )
