"""QLoRA: an NF4-quantised frozen base with LoRA adapters on top, and the memory each way of fine-tuning takes.

- `apply_qlora(model, cfg)`: every linear layer of the blocks to NF4 (`minillm.peft.nf4.quantize_model_nf4`,
  the head stays as it is), then LoRA on `cfg.target_modules` (`minillm.peft.lora.apply_lora`, which wraps
  `LinearNF4` layers as it wraps nn.Linear ones). Gradients flow through the dequantised base into the
  adapters; the base gets none.
- `finetune_memory(shape, method, r)` and `memory_table(...)`: the bytes of weights, gradients and Adam
  states for full fine-tuning, LoRA and QLoRA of a Llama-shaped model (`LLAMA_SHAPES`: LLaMA 7B and 65B,
  Touvron et al. 2023, arXiv:2302.13971, table 2), by formula:

  | term | full | LoRA | QLoRA |
  |---|---|---|---|
  | base weights | 2 B x N (16-bit) | 2 B x N, frozen | `bits_per_parameter()`/8 B x N_linear + 2 B x N_rest |
  | adapter weights | - | 2 B x N_lora | 2 B x N_lora |
  | gradients | 2 B x N | 2 B x N_lora | 2 B x N_lora |
  | Adam m and v | 8 B x N (fp32) | 8 B x N_lora | 8 B x N_lora |

  So full fine-tuning takes 12 bytes per parameter, Dettmers et al.'s count (sec. 1: "more than 780 GB" for
  65B). N_lora = r (d_in + d_out) per adapted matrix; the paper adapts every linear layer of the blocks with
  r = 64 (sec. 4). N_rest are the embedding and head (kept in 16 bits).

Leaves out: activations (they depend on batch and length; QLoRA uses gradient checkpointing, sec. 3, and
chapter 10 counts them), fp32 master weights of mixed-precision training unless asked for
(`master_weights=True`: +4 B per trained parameter, 16 B in all for full fine-tuning),
paged optimizers (they move optimizer states to CPU memory under pressure; they do not shrink them), the
CUDA context and allocator slack.
Reference: Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized LLMs" (arXiv:2305.14314).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from minillm.peft.nf4 import bits_per_parameter, quantize_model_nf4

# LLaMA (v1) shapes: layers, model width, SwiGLU hidden width, vocabulary; untied embedding and head
LLAMA_SHAPES: dict[str, dict[str, int]] = {
    "7b": dict(n_layer=32, d_model=4096, ffn_hidden=11008, vocab_size=32000),
    "65b": dict(n_layer=80, d_model=8192, ffn_hidden=22016, vocab_size=32000),
}
METHODS = ("full", "lora", "qlora")
GB = 1e9  # decimal gigabytes, as the QLoRA paper counts (a GPU's "48 GB" of memory is 48 GiB = 51.5 GB)


def llama_counts(shape: dict[str, int], r: int = 64) -> dict[str, int]:
    """Parameter counts: `linear` (the 7 matrices of each block), `rest` (embedding, head, RMSNorm gains),
    `total`, and `lora` (rank-r adapters on all 7 matrices of every block)."""
    d, f, L, V = shape["d_model"], shape["ffn_hidden"], shape["n_layer"], shape["vocab_size"]
    linear = L * (4 * d * d + 3 * d * f)  # q, k, v, o: d x d; gate, up: d -> f; down: f -> d
    rest = 2 * V * d + (2 * L + 1) * d  # embedding + head, two norms per block + the final norm
    lora = L * r * (4 * (d + d) + 3 * (d + f))  # r (d_in + d_out) per matrix: A is r x d_in, B is d_out x r
    return {"linear": linear, "rest": rest, "total": linear + rest, "lora": lora}


def finetune_memory(shape: dict[str, int], method: str, r: int = 64, double_quant: bool = True,
                    master_weights: bool = False) -> dict[str, float]:
    """GB (1e9 bytes) of base weights, adapters, gradients and Adam states for one way of fine-tuning;
    `master_weights` adds the fp32 copy of what is trained that mixed-precision training keeps (4 B each)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    c = llama_counts(shape, r)
    trained = c["total"] if method == "full" else c["lora"]
    if method == "qlora":
        base = c["linear"] * bits_per_parameter(double_quant=double_quant) / 8 + 2 * c["rest"]
    else:
        base = 2 * c["total"]  # 16-bit weights
    terms = {
        "base weights": base,
        "adapters": 0 if method == "full" else 2 * c["lora"],  # 16-bit A and B
        "gradients": 2 * trained,  # 16-bit, only for what is trained
        "Adam states": 8 * trained,  # fp32 first and second moments
    }
    if master_weights:
        terms["fp32 master"] = 4 * trained
    out = {k: v / GB for k, v in terms.items()}
    out["total"] = sum(out.values())
    return out


def memory_table(models: tuple[str, ...] = ("7b", "65b"), r: int = 64) -> list[dict[str, Any]]:
    """Rows (model, method, each term in GB, total) for `minillm.utils.markdown_table`; the values are not
    rounded (rounding first, then formatting to 3 significant digits, would print 0.32 GB as 0.300)."""
    rows = []
    for name in models:
        if name not in LLAMA_SHAPES:
            raise ValueError(f"unknown model {name!r}; choose from {sorted(LLAMA_SHAPES)} or add its shape")
        for method in METHODS:
            gb = finetune_memory(LLAMA_SHAPES[name], method, r)
            rows.append({"model": f"LLaMA-{name.upper()}", "method": method,
                         **gb})
    return rows


def apply_qlora(model: nn.Module, cfg: Any, blocksize: int = 64, double_quant: bool = True,
                compute_dtype: torch.dtype | None = None) -> nn.Module:
    """NF4 for every linear layer except the head, then LoRA (`cfg`: a `minillm.peft.lora.LoraConfig`) on top;
    the model is changed in place and returned, with only the adapters trainable."""
    from minillm.peft.lora import apply_lora  # the sibling module of chapter 9.1

    quantize_model_nf4(model, None, ("lm_head",), blocksize, double_quant, compute_dtype)
    return apply_lora(model, cfg)
