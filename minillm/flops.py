"""Compute and hardware: FLOPs per token, model FLOPs utilisation (MFU), training time, and how many GPUs a model needs.

Implements:
- `matmul_params(cfg)`: N, the parameters every token multiplies by: all but the embedding tables and the
  norms' gains, with the lm_head counted even when it is tied to the embedding (the lookup is free, the
  head's (d, V) matmul is not);
- `flops_per_token(cfg, seq, form)`: training FLOPs per token, forward + backward. A matmul of an input row
  by a (m, n) weight is 2 m n FLOPs forward (a multiply and an add per weight) and 4 m n backward (the
  gradient of the input and of the weight), so 6N for the weights (Kaplan et al. 2020, arXiv:2001.08361,
  sec. 2.1; Chinchilla's C = 6ND, Hoffmann et al. 2022, arXiv:2203.15556). The attention matmuls have no
  weights: q k^T and weights @ v are 2 T d FLOPs each per token and layer forward, so 12 L T d for training
  if the whole T x T square is computed: PaLM's form 6N + 12 L H Q T (Chowdhery et al. 2022,
  arXiv:2204.02311, appendix B; H heads of size Q, H Q = d). Kaplan's Table 1 writes the forward attention
  ("Attention: Mask") as 2 n_layer n_ctx d_attn, 2 L T d, i.e. 6 L T d for training: half of the full square,
  what a causal kernel that skips the masked half would do (a query attends to T/2 keys on average); the paper
  does not say why. `form="palm"` (the default, what a dense kernel computes) or `"kaplan"`. N includes the
  lm_head in both forms (Kaplan's C_forward = 2N + 2 n_layer n_ctx d_attn leaves the de-embedding out of N);
- `mfu(tokens_per_s, cfg, seq, peak_flops)`: model FLOPs per second achieved / peak (PaLM, appendix B).
  Model FLOPs exclude recomputation: activation checkpointing (`minillm.recompute`) re-runs the forward
  (another 2N per token) which MFU does not credit; "hardware FLOPs utilisation" would;
- `training_time(params, tokens, n_gpus, peak_flops, mfu)`: seconds for 6 N D FLOPs on n_gpus at mfu;
- `GPUS`: peak dense (no 2:4 sparsity) 16-bit tensor-core FLOP/s and memory of common GPUs, from NVIDIA's
  data sheets: V100 SXM2 (no bf16: its fp16 tensor cores, 125 TFLOPS), A100 SXM 40 GB / 80 GB (bf16
  312 TFLOPS, "A100 Tensor Core GPU" data sheet), H100 SXM (989 TFLOPS, half of the 1,979 "with sparsity"
  of the H100 data sheet), H200 SXM (989 TFLOPS, 141 GB, H200 data sheet), RTX 4090 (165.2 TFLOPS bf16 with
  float32 accumulation, Ada Lovelace architecture whitepaper, appendix A; 330.3 with fp16 accumulation).
  Units: a data sheet's "80 GB" of GPU memory is binary, 80 GiB = 85.9e9 bytes (nvidia-smi reports an A100
  80GB as 81,920 MiB), so `GPUS` keeps "memory GiB" and `gpus_needed` multiplies by GiB = 2**30, while model
  and training sizes are decimal GB (1e9 bytes, `minillm.train_memory.GB`);
- `gpus_needed(bytes_, gpu, usable)` and `gpu_table(...)`: GPUs whose memory holds the bytes of
  `minillm.train_memory.training_memory` / `inference_memory`, for Llama-2 7B / 13B / 70B.

Leaves out: the FLOPs of norms, softmax, activations, the optimizer step and the embedding lookup (a few per
cent at these sizes), interconnect and the memory a framework or the CUDA context holds, and parallelism's
own costs: `gpus_needed` is the memory floor when every byte is sharded across GPUs perfectly (ZeRO-3 / FSDP,
chapter 12), not a speed.
"""

from __future__ import annotations

import math
from typing import Any

from minillm.model import GPTConfig, count_params
from minillm.train_memory import GB, TABLE_MODELS, inference_memory, training_memory

GiB = 2**30  # GPU memory sizes are binary: an "80 GB" card holds 80 GiB (module docstring)
# peak dense 16-bit tensor-core FLOP/s (no sparsity) and memory in GiB, from the vendor data sheets (module docstring)
GPUS: dict[str, dict[str, float]] = {
    "V100 32GB": {"bf16 flops": 125e12, "memory GiB": 32},  # fp16: the V100 has no bf16
    "A100 40GB": {"bf16 flops": 312e12, "memory GiB": 40},
    "A100 80GB": {"bf16 flops": 312e12, "memory GiB": 80},
    "H100 80GB": {"bf16 flops": 989e12, "memory GiB": 80},
    "H200 141GB": {"bf16 flops": 989e12, "memory GiB": 141},
    "RTX 4090 24GB": {"bf16 flops": 165.2e12, "memory GiB": 24},
}
FORMS = ("palm", "kaplan")


def matmul_params(cfg: GPTConfig) -> int:
    """N of 6N: the non-embedding parameters less the norms, plus the lm_head's V d (tied or not)."""
    c = count_params(cfg)
    return c["non_embedding"] - c["norms"] - c["lm_head"] + cfg.vocab_size * cfg.d_model


def flops_per_token(cfg: GPTConfig, seq: int, form: str = "palm") -> float:
    """Training FLOPs per token of GPT(cfg) at context length seq: 6N + 12 L T d ("palm": the full T x T
    square of q k^T and weights @ v) or 6N + 6 L T d ("kaplan": its causal half). Forward alone is a third."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if seq < 1:
        raise ValueError(f"seq must be >= 1, got {seq}")
    attn = (12 if form == "palm" else 6) * cfg.n_layer * seq * cfg.n_head * cfg.head_dim
    return 6 * matmul_params(cfg) + attn


def mfu(tokens_per_s: float, cfg: GPTConfig, seq: int, peak_flops: float, form: str = "palm") -> float:
    """Model FLOPs utilisation: tokens_per_s x flops_per_token(cfg, seq) / peak_flops (a fraction, 0..1 when
    peak_flops is the hardware's true peak)."""
    if peak_flops <= 0 or tokens_per_s < 0:
        raise ValueError(f"need peak_flops > 0 and tokens_per_s >= 0, got {peak_flops}, {tokens_per_s}")
    return tokens_per_s * flops_per_token(cfg, seq, form) / peak_flops


def training_time(params: float, tokens: float, n_gpus: int, peak_flops: float, mfu: float = 0.4) -> float:
    """Seconds to train `params` parameters on `tokens` tokens: 6 N D / (n_gpus x peak_flops x mfu).
    E.g. 7e9 on 1e12 tokens on 1,024 A100s at 40 %: 4.2e22 / (1024 x 312e12 x 0.4) = 3.3e5 s, 3.8 days."""
    if n_gpus < 1 or peak_flops <= 0 or not 0 < mfu <= 1:
        raise ValueError(f"need n_gpus >= 1, peak_flops > 0 and 0 < mfu <= 1, got {n_gpus}, {peak_flops}, {mfu}")
    return 6 * params * tokens / (n_gpus * peak_flops * mfu)


def gpu_peak_flops(name: str) -> float | None:
    """The table's peak for a device name as torch.cuda.get_device_name reports it ("NVIDIA H200"), or None.
    Matched by chip (V100, A100, H100, H200, 4090): PCIe cards and other memory sizes share the SXM peak here."""
    for gpu, spec in GPUS.items():
        chip = gpu.split()[-2] if gpu.startswith("RTX") else gpu.split()[0]  # "4090", "A100", ...
        if chip in name.upper():
            return spec["bf16 flops"]
    return None


def gpus_needed(bytes_: float, gpu: str, usable: float = 0.9) -> int:
    """GPUs of kind `gpu` (a key of GPUS) whose memory (GiB) holds bytes_, using `usable` of each (the rest:
    CUDA context, allocator fragmentation, buffers). A floor: it assumes a perfect shard of every byte."""
    if gpu not in GPUS:
        raise ValueError(f"unknown gpu {gpu!r}; choose one of {list(GPUS)}")
    if not 0 < usable <= 1:
        raise ValueError(f"usable must be in (0, 1], got {usable}")
    return max(1, math.ceil(bytes_ / (GPUS[gpu]["memory GiB"] * GiB * usable)))


def gpu_table(names: tuple[str, ...] = TABLE_MODELS, gpus: tuple[str, ...] = ("A100 80GB", "H100 80GB",
              "RTX 4090 24GB"), batch: int = 1, seq: int = 2048, context: int = 4096,
              usable: float = 0.9) -> list[dict[str, Any]]:
    """Per preset and setting (mixed-precision Adam training at batch x seq; bf16 inference with a KV cache of
    batch x context): the GB (1e9 bytes) needed and the GPUs of each kind whose memory holds them."""
    rows = []
    for name in names:
        cfg = GPTConfig.preset(name)
        for setting, nbytes in (("train mixed+Adam", training_memory(cfg, batch, seq, "mixed")["total"]),
                                ("infer bf16", inference_memory(cfg, batch, context, "bf16")["total"])):
            rows.append({"model": name, "setting": setting, "GB": nbytes / GB,
                         **{gpu: gpus_needed(nbytes, gpu, usable) for gpu in gpus}})
    return rows
