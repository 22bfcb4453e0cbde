"""Where training memory goes: weights, gradients, optimizer states and activations, as functions of a config.

Implements:
- `activation_bytes_per_layer(cfg, batch, seq, dtype_bytes)`: the bytes autograd saves for backward in one
  `minillm.model.Block` forward, op by op, in the style of Korthikanti et al. 2022 ("Reducing Activation
  Recomputation in Large Transformer Models", arXiv:2205.05198, sec. 4.1, eq. 1); `activation_terms` gives
  the same sum term by term;
- `model_activation_bytes(cfg, batch, seq, dtype_bytes)`: n_layer x per layer + the embedding, final norm,
  head and loss terms of `minillm.model.GPT(idx, targets)`;
- `training_memory(cfg, batch, seq, precision, optimizer)` and `inference_memory(cfg, batch, context, precision)`:
  bytes of weights / gradients / optimizer states / activations (or KV cache), and `memory_table(names, ...)`
  for the presets of `minillm.presets` (Llama-2 7B, 13B, 70B with GQA).

The per-layer formula. s = seq, b = batch, h = d_model, a = n_head, d = h / a, f = ffn_hidden, p = dtype_bytes
(the model's and the input's dtype), c = max(p, 4) (`minillm.norms` computes in float32 at least):

    bytes = s b h (4c + 6p) + s b f (k_ffn p) + a s^2 b (3p) + s^2 + a s b (2p + 2) + 2 s b c + 4 s d p [RoPE]
            + 2 h c [only if p < 4]

op by op (per layer, what each backward needs):
- each of the 2 norms saves its float32+ input x (LayerNorm: x - mean instead), its 1/rms (s b), and the
  normalised x before the gain: 2 s b h c + s b c; in 16 bits also a float32 copy of its gain (h c);
- the linear layers save their inputs: the normalised x (read by q, k and v: one storage), the attention
  output before o_proj, the normalised h before the MLP: 3 s b h p;
- q @ k^T saves q and the keys AFTER `repeat_kv` (a heads, not n_kv_head), weights @ v the values after
  `repeat_kv`: 3 s b h p. GQA shrinks the weights and the KV cache, not these activations;
- RoPE saves its cos and sin tables, built once for q and once for k: 4 s d p (no b);
- the written-out softmax of `minillm.attention.sdpa`: the masked scores (saved by amax), exp(scores - max)
  (saved by exp and the division), the weights (saved by weights @ v): 3 a s^2 b p; the causal mask
  (bool, s^2 bytes); the row max and the row sum (a s b p each) and two bool conditions of its
  `torch.where`s (a s b each);
- the MLP: SwiGLU saves gate(x), sigmoid(gate(x)), silu(gate(x)), up(x) and the product before down:
  k_ffn = 5; exact GeLU (x / sqrt2, erf + 1, x / 2, and the output) 4; tanh-GeLU 5; GeGLU 6; ReLU 2.

Against Korthikanti et al.'s GPT layer, 34 s b h + 5 a s^2 b bytes without recomputation (their assumptions: 2-byte
activations, 1-byte dropout masks, a 4h GeLU MLP, LayerNorm statistics ignored, no tensor / sequence parallelism or
recomputation). The same in both: the inputs of the linear layers (QKV, output projection, MLP: 6 s b h) and q, k,
v (6 s b h). Different: (1) their softmax saves only its output (2 a s^2 b), then a dropout mask (a s^2 b) and the
dropout output (2 a s^2 b); ours is written out, has no dropout, and saves scores, exp and weights: 6 a s^2 b; (2)
their LayerNorm saves only its input (2 s b h each, 4 for two); ours saves input and normalised output in float32
(8 s b h each, 16 for two) and RMSNorm saves the same as LayerNorm; (3) their MLP is a 4h GeLU (GeLU input and
output, 8 + 8 s b h); SwiGLU saves 5 tensors of f = 8h/3 (26.7 s b h in 16 bits); (4) dropout 0: none of their two
s b h residual-branch dropout masks; (5) GQA changes nothing here (keys and values are repeated before they are
saved); RoPE adds 4 s d p. In fp16 with SwiGLU (f = 8h/3) ours is about 54.7 s b h + 6 a s^2 b.

Weights, gradients, optimizer states (bytes per parameter, ZeRO's accounting, Rajbhandari et al. 2020,
arXiv:1910.02054, sec. 3.1; mixed precision as in Micikevicius et al. 2018, arXiv:1710.03740):
- "fp32": weights 4 + gradients 4 + Adam m, v 4 + 4 = 16; activations at p = 4;
- "mixed": fp16/bf16 weights 2 + fp16/bf16 gradients 2 + fp32 master weights 4 + Adam m, v 4 + 4 = 16;
  activations at p = 2 (norms in float32, as ours run);
- "bf16": everything in bf16, Adam's m and v too: 2 + 2 + 2 + 2 = 8; activations at p = 2 (lossy without
  stochastic rounding or Kahan summation: updates below half a bf16 ulp of the weight are lost).
`minillm.peft.qlora.finetune_memory` counts 12 B per parameter for full fine-tuning (no master weights) and
16 with master_weights=True, the "mixed" row here. Inference: weights + the KV cache of `batch` sequences of
`context` tokens (`minillm.attention.kv_cache_bytes_per_token`).

Leaves out: the parallel block, T5 / ALiBi biases, custom masks, dropout > 0 (the functions raise), the
saved tensors of a fused kernel (`minillm.fast.use_kernel`: torch's SDPA saves no s^2 term), autocast (it
casts weights per matmul and saves those copies), activation checkpointing (`minillm.recompute`, with its own
`checkpointed_activation_bytes`) and sequence / tensor parallelism (Korthikanti et al.'s subject: later chapters),
the CUDA context, allocator fragmentation, temporary buffers of backward, and the logits' float32 upcast some
trainers do. FLOPs, MFU, training time and GPUs needed: `minillm.flops`.
"""

from __future__ import annotations

from typing import Any

from minillm.attention import kv_cache_bytes_per_token
from minillm.model import GPTConfig, count_params

FFN_SAVED = {"swiglu": 5, "geglu": 6, "gelu": 4, "gelu_tanh": 5, "relu": 2}  # tensors of s b f saved by the MLP
PRECISIONS = {  # bytes per parameter: weights, gradients, master copy, one optimizer state; activation dtype
    "fp32": dict(weights=4, grads=4, master=0, state=4, act=4),
    "mixed": dict(weights=2, grads=2, master=4, state=4, act=2),
    "bf16": dict(weights=2, grads=2, master=0, state=2, act=2),  # lossy without stochastic rounding or Kahan summation
}
OPTIMIZER_STATES = {"adamw": 2, "sgd_momentum": 1, "sgd": 0}  # states per parameter (Adam: m and v)
TABLE_MODELS = ("llama2-7b", "llama2-13b", "llama2-70b")
GB = 1e9  # decimal gigabytes for model and training sizes; a GPU's "80 GB" is binary, 80 GiB (minillm.flops.GiB)


def _check(cfg: GPTConfig, batch: int, seq: int, dtype_bytes: int) -> None:
    if cfg.parallel_block or cfg.pos in ("t5", "alibi") or cfg.dropout > 0:
        raise ValueError("the activation formula covers sequential blocks with pos none/sinusoidal/learned/rope and "
                         f"dropout=0; got parallel_block={cfg.parallel_block}, pos={cfg.pos!r}, "
                         f"dropout={cfg.dropout}")
    if min(batch, seq) < 1 or dtype_bytes not in (2, 4, 8):
        raise ValueError(f"need batch, seq >= 1 and dtype_bytes in (2, 4, 8), got {batch}, {seq}, {dtype_bytes}")


def activation_terms(cfg: GPTConfig, batch: int, seq: int, dtype_bytes: int = 4) -> dict[str, int]:
    """The bytes one Block saves for backward, term by term (see the module docstring); they sum to
    `activation_bytes_per_layer`. Causal self-attention over seq tokens, no cache, no mask."""
    _check(cfg, batch, seq, dtype_bytes)
    s, b, h, a, f, p = seq, batch, cfg.d_model, cfg.n_head, cfg.ffn_hidden, dtype_bytes
    c = max(p, 4)  # the norms compute in float32 at least
    return {
        "norms": 2 * (2 * s * b * h * c + s * b * c + (h * c if p < 4 else 0)),  # x (or x - mean), 1/rms, x-hat
        "linear inputs": 3 * s * b * h * p,  # normed x (q, k, v), attention output (o), normed h (MLP)
        "q, k, v": 3 * s * b * h * p,  # q and the repeated k, v, at n_head heads
        "rope": 4 * s * cfg.head_dim * p if cfg.pos == "rope" else 0,  # cos, sin for q, and again for k
        "scores, exp, weights": 3 * a * s * s * b * p,
        "causal mask": s * s,  # bool
        "softmax max, sum": a * s * b * (2 * p + 2),  # the row max and sum, and two bool where-conditions
        "mlp": FFN_SAVED[cfg.ffn] * s * b * f * p,
    }


def activation_bytes_per_layer(cfg: GPTConfig, batch: int, seq: int, dtype_bytes: int = 4) -> int:
    """Bytes autograd saves in one `minillm.model.Block` forward (training, causal, no recomputation):
    s b h (4c + 6p) + k_ffn s b f p + 3 p a s^2 b + s^2 + (2p + 2) a s b + 2 c s b + 4 s d p (RoPE)
    (+ 2 h c in 16 bits), c = max(p, 4); the module docstring derives each term."""
    return sum(activation_terms(cfg, batch, seq, dtype_bytes).values())


def model_activation_bytes(cfg: GPTConfig, batch: int, seq: int, dtype_bytes: int = 4) -> dict[str, int]:
    """Bytes saved by one `GPT(idx, targets)` forward: {"layers", "embedding", "head", "total"}.

    embedding: the int64 ids (8 s b; the position table, if learned, saves its int64 positions, 8 s);
    head: the final norm (Pre-LN: 2 s b h c + s b c), the lm_head input (s b h p), the log-softmax of the
    cross-entropy (s b V p), the int64 targets (8 s b) and its total weight (one element, p)."""
    _check(cfg, batch, seq, dtype_bytes)
    s, b, h, p, c = seq, batch, cfg.d_model, dtype_bytes, max(dtype_bytes, 4)
    embedding = 8 * s * b + (8 * s if cfg.pos == "learned" else 0)
    final_norm = 2 * s * b * h * c + s * b * c + (h * c if p < 4 else 0) if cfg.norm_position == "pre" else 0
    head = final_norm + s * b * h * p + s * b * cfg.vocab_size * p + 8 * s * b + p
    layers = cfg.n_layer * activation_bytes_per_layer(cfg, batch, seq, dtype_bytes)
    return {"layers": layers, "embedding": embedding, "head": head, "total": layers + embedding + head}


def training_memory(cfg: GPTConfig, batch: int, seq: int, precision: str = "fp32",
                    optimizer: str = "adamw") -> dict[str, int]:
    """Bytes of weights, gradients, optimizer states (master copy included) and activations of one training
    step of GPT(cfg) on batch x seq tokens, and their total. Conventions in the module docstring."""
    if precision not in PRECISIONS or optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"precision must be one of {list(PRECISIONS)} and optimizer one of "
                         f"{list(OPTIMIZER_STATES)}, got {precision!r}, {optimizer!r}")
    n, b = count_params(cfg)["total"], PRECISIONS[precision]
    out = {
        "weights": n * b["weights"],
        "gradients": n * b["grads"],
        "optimizer states": n * (b["master"] + OPTIMIZER_STATES[optimizer] * b["state"]),
        "activations": model_activation_bytes(cfg, batch, seq, b["act"])["total"],
    }
    out["total"] = sum(out.values())
    return out


def inference_memory(cfg: GPTConfig, batch: int, context: int, precision: str = "bf16") -> dict[str, int]:
    """Bytes of the weights and of the KV cache of `batch` sequences of `context` tokens (same dtype)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    p = PRECISIONS[precision]["weights"]
    kv = int(kv_cache_bytes_per_token(cfg.n_layer, cfg.n_kv_head, cfg.head_dim, p)) * batch * context
    weights = count_params(cfg)["total"] * p
    return {"weights": weights, "kv cache": kv, "total": weights + kv}


def memory_table(names: tuple[str, ...] = TABLE_MODELS, batch: int = 1, seq: int = 2048,
                 context: int = 4096, optimizer: str = "adamw") -> list[dict[str, Any]]:
    """One row per (preset, precision): parameters, training GB (weights, gradients, optimizer states,
    activations at batch x seq, total) and inference GB (weights + KV cache of batch x context)."""
    rows = []
    for name in names:
        cfg = GPTConfig.preset(name)
        for precision in PRECISIONS:
            t = training_memory(cfg, batch, seq, precision, optimizer)
            i = inference_memory(cfg, batch, context, precision)
            rows.append({"model": name, "precision": precision, "params": count_params(cfg)["total"],
                         **{f"{k} GB": v / GB for k, v in t.items() if k != "total"},
                         "train GB": t["total"] / GB, "kv cache GB": i["kv cache"] / GB,
                         "infer GB": i["total"] / GB})
    return rows
