"""Learner solutions for exercises 10.x (memory and mixed precision), written from the notebook text only."""
# ruff: noqa: B905, B007

import math

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------------------------
# 10.1 Bytes of the model states in training
# ---------------------------------------------------------------------------------------------------------------


def _params(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, tied):
    d = d_model
    kv = n_kv_head * (d // n_head)
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * ffn_hidden + 2 * d
    total = n_layer * per_layer + d + vocab_size * d
    if not tied:
        total += d * vocab_size
    return total


def valid_10_1_int(vocab_size: int, n_layer: int, d_model: int, n_head: int, n_kv_head: int, ffn_hidden: int,
                   tied: bool, precision: str) -> int:
    per = {"fp32": 4 + 4 + 4 + 4, "mixed": 2 + 2 + 4 + 4 + 4, "bf16": 2 + 2 + 2 + 2}[precision]
    return per * _params(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, tied)


def valid_10_1_float(vocab_size: int, n_layer: int, d_model: int, n_head: int, n_kv_head: int, ffn_hidden: int,
                     tied: bool, precision: str) -> int:
    head_dim = d_model / n_head
    attn = 2 * d_model * d_model + 2 * d_model * n_kv_head * head_dim
    mlp = 3.0 * d_model * ffn_hidden
    norms = 2.0 * d_model
    n = n_layer * (attn + mlp + norms) + d_model + vocab_size * d_model * (1 if tied else 2)
    if precision == "fp32":
        return n * 16.0
    if precision == "mixed":
        return n * 16.0
    return n * 8.0


def valid_10_1_loop(vocab_size: int, n_layer: int, d_model: int, n_head: int, n_kv_head: int, ffn_hidden: int,
                    tied: bool, precision: str) -> int:
    shapes = []
    hd = d_model // n_head
    for _ in range(n_layer):
        shapes += [(d_model, d_model), (d_model, n_kv_head * hd), (d_model, n_kv_head * hd), (d_model, d_model)]
        shapes += [(d_model, ffn_hidden)] * 3
        shapes += [(d_model,), (d_model,)]
    shapes.append((d_model,))
    shapes.append((vocab_size, d_model))
    if not tied:
        shapes.append((d_model, vocab_size))
    n = sum(math.prod(s) for s in shapes)
    if precision == "fp32":
        weight, grad, master, adam = 4, 4, 0, 8
    elif precision == "mixed":
        weight, grad, master, adam = 2, 2, 4, 8
    elif precision == "bf16":
        weight, grad, master, adam = 2, 2, 0, 4
    else:
        raise ValueError(precision)
    total = 0
    for part in (weight, grad, master, adam):
        total += part * n
    return total


def valid_10_1_numpy(vocab_size: int, n_layer: int, d_model: int, n_head: int, n_kv_head: int, ffn_hidden: int,
                     tied: bool, precision: str) -> int:
    d = np.int64(d_model)
    kv = np.int64(n_kv_head) * (d // np.int64(n_head))
    layer = np.array([d * d, d * kv, d * kv, d * d, d * ffn_hidden, d * ffn_hidden, d * ffn_hidden, d, d],
                     dtype=np.int64).sum()
    n = np.int64(n_layer) * layer + d + np.int64(vocab_size) * d * (1 if tied else 2)
    bytes_per = np.int64(16 if precision in ("fp32", "mixed") else 8)
    return n * bytes_per


# WRONG: "k and v (d x n_kv_head heads of d/n_head)" -- treats k and v as d x d (ignores GQA)
def wrong_10_1_kv_full(vocab_size: int, n_layer: int, d_model: int, n_head: int, n_kv_head: int, ffn_hidden: int,
                       tied: bool, precision: str) -> int:
    per = {"fp32": 16, "mixed": 16, "bf16": 8}[precision]
    n = _params(vocab_size, n_layer, d_model, n_head, n_head, ffn_hidden, tied)
    return per * n


# WRONG: "an lm_head (d x V) unless tied" -- always counts the head
def wrong_10_1_head_always(vocab_size: int, n_layer: int, d_model: int, n_head: int, n_kv_head: int,
                           ffn_hidden: int, tied: bool, precision: str) -> int:
    per = {"fp32": 16, "mixed": 16, "bf16": 8}[precision]
    return per * _params(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, False)


# WRONG: "two RMSNorm gains of d ... a final RMSNorm gain of d" -- forgets all norm gains
def wrong_10_1_no_norms(vocab_size: int, n_layer: int, d_model: int, n_head: int, n_kv_head: int, ffn_hidden: int,
                        tied: bool, precision: str) -> int:
    per = {"fp32": 16, "mixed": 16, "bf16": 8}[precision]
    n = _params(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, tied) - (2 * n_layer + 1) * d_model
    return per * n


# WRONG: "mixed: ... plus an fp32 master copy of the weights" -- forgets the master copy (12 bytes)
def wrong_10_1_mixed_no_master(vocab_size: int, n_layer: int, d_model: int, n_head: int, n_kv_head: int,
                               ffn_hidden: int, tied: bool, precision: str) -> int:
    per = {"fp32": 16, "mixed": 12, "bf16": 8}[precision]
    return per * _params(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, tied)


# WRONG: "bf16: ... AdamW's states all in bf16" -- keeps AdamW's states in fp32 (12 bytes)
def wrong_10_1_bf16_fp32_states(vocab_size: int, n_layer: int, d_model: int, n_head: int, n_kv_head: int,
                                ffn_hidden: int, tied: bool, precision: str) -> int:
    per = {"fp32": 16, "mixed": 16, "bf16": 12}[precision]
    return per * _params(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, tied)


# WRONG: "the optimizer is AdamW" (two states) -- counts one state only
def wrong_10_1_one_adam_state(vocab_size: int, n_layer: int, d_model: int, n_head: int, n_kv_head: int,
                              ffn_hidden: int, tied: bool, precision: str) -> int:
    per = {"fp32": 12, "mixed": 12, "bf16": 6}[precision]
    return per * _params(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, tied)


# WRONG: "k and v (d x n_kv_head heads of d / n_head)" -- forgets the head size: k and v of d x n_kv_head
def wrong_10_1_kv_no_head_dim(vocab_size: int, n_layer: int, d_model: int, n_head: int, n_kv_head: int,
                              ffn_hidden: int, tied: bool, precision: str) -> int:
    d = d_model
    n = n_layer * (2 * d * d + 2 * d * n_kv_head + 3 * d * ffn_hidden + 2 * d) + d + vocab_size * d * (1 if tied else 2)
    return {"fp32": 16, "mixed": 16, "bf16": 8}[precision] * n


# WRONG: "a final RMSNorm gain of d" -- forgets the final norm only
def wrong_10_1_no_final_norm(vocab_size: int, n_layer: int, d_model: int, n_head: int, n_kv_head: int,
                             ffn_hidden: int, tied: bool, precision: str) -> int:
    per = {"fp32": 16, "mixed": 16, "bf16": 8}[precision]
    return per * (_params(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, tied) - d_model)


# ---------------------------------------------------------------------------------------------------------------
# 10.2 Activation bytes of a layer
# ---------------------------------------------------------------------------------------------------------------


def valid_10_2_int(seq: int, batch: int, hidden: int, heads: int, recompute: str) -> int:
    sbh = seq * batch * hidden
    if recompute == "none":
        return 34 * sbh + 5 * heads * seq * seq * batch
    if recompute == "selective":
        return 34 * sbh
    return 2 * sbh


def valid_10_2_parts(seq: int, batch: int, hidden: int, heads: int, recompute: str) -> int:
    s, b, h, a = seq, batch, hidden, heads
    attention_linear = 11 * s * b * h
    core = 5 * a * s ** 2 * b
    mlp = 19 * s * b * h
    norms = 4 * s * b * h
    parts = {"none": attention_linear + core + mlp + norms,
             "selective": attention_linear + mlp + norms,
             "full": 2 * s * b * h}
    return parts[recompute]


def valid_10_2_float(seq: int, batch: int, hidden: int, heads: int, recompute: str) -> int:
    sbh = float(seq) * float(batch) * float(hidden)
    if recompute == "full":
        return 2.0 * sbh
    total = (11.0 + 19.0 + 4.0) * sbh
    if recompute == "none":
        total += 5.0 * heads * float(seq) ** 2 * batch
    return total


def valid_10_2_numpy(seq: int, batch: int, hidden: int, heads: int, recompute: str) -> int:
    s, b, h, a = (np.int64(v) for v in (seq, batch, hidden, heads))
    coeff = {"none": (34, 5), "selective": (34, 0), "full": (2, 0)}[recompute]
    return coeff[0] * s * b * h + coeff[1] * a * s * s * b


# WRONG: "full stores only the layer's input (sbh numbers of 2 bytes)" -- counts 1 byte per number
def wrong_10_2_full_one_byte(seq: int, batch: int, hidden: int, heads: int, recompute: str) -> int:
    sbh = seq * batch * hidden
    return {"none": 34 * sbh + 5 * heads * seq * seq * batch, "selective": 34 * sbh, "full": sbh}[recompute]


# WRONG: "selective ... its s x s tensors are not stored and everything else is" -- drops the whole attention block
def wrong_10_2_selective_drops_attention(seq: int, batch: int, hidden: int, heads: int, recompute: str) -> int:
    sbh = seq * batch * hidden
    return {"none": 34 * sbh + 5 * heads * seq * seq * batch, "selective": 23 * sbh, "full": 2 * sbh}[recompute]


# WRONG: "the two LayerNorms: 4sbh" -- forgets the LayerNorms
def wrong_10_2_no_layernorm(seq: int, batch: int, hidden: int, heads: int, recompute: str) -> int:
    sbh = seq * batch * hidden
    return {"none": 30 * sbh + 5 * heads * seq * seq * batch, "selective": 30 * sbh, "full": 2 * sbh}[recompute]


# WRONG: "5 a s^2 b" -- forgets the batch factor in the s x s term
def wrong_10_2_s2_no_batch(seq: int, batch: int, hidden: int, heads: int, recompute: str) -> int:
    sbh = seq * batch * hidden
    return {"none": 34 * sbh + 5 * heads * seq * seq, "selective": 34 * sbh, "full": 2 * sbh}[recompute]


# WRONG: "5 a s^2 b" -- forgets the heads factor
def wrong_10_2_s2_no_heads(seq: int, batch: int, hidden: int, heads: int, recompute: str) -> int:
    sbh = seq * batch * hidden
    return {"none": 34 * sbh + 5 * seq * seq * batch, "selective": 34 * sbh, "full": 2 * sbh}[recompute]


# WRONG: "full stores only the layer's input ... and recomputes the rest" -- keeps the s x s tensors too
def wrong_10_2_full_keeps_core(seq: int, batch: int, hidden: int, heads: int, recompute: str) -> int:
    sbh = seq * batch * hidden
    core = 5 * heads * seq * seq * batch
    return {"none": 34 * sbh + core, "selective": 34 * sbh, "full": 2 * sbh + core}[recompute]


# ---------------------------------------------------------------------------------------------------------------
# 10.3 Round fp32 bits to bf16
# ---------------------------------------------------------------------------------------------------------------


def valid_10_3_hint(bits: int) -> int:
    if (bits >> 23) & 0xFF == 0xFF and bits & 0x7FFFFF:
        return (bits >> 16) | 0x40
    kept, dropped = bits >> 16, bits & 0xFFFF
    if dropped > 0x8000 or (dropped == 0x8000 and kept & 1):
        kept += 1
    return kept


def valid_10_3_bias(bits: int) -> int:
    exp = (bits >> 23) & 0xFF
    mant = bits & 0x7FFFFF
    if exp == 0xFF and mant != 0:
        return 0x7FC0
    lsb = (bits >> 16) & 1
    return ((bits + 0x7FFF + lsb) >> 16) & 0xFFFF


def valid_10_3_sign_magnitude(bits: int) -> int:
    sign = (bits >> 31) & 1
    mag = bits & 0x7FFFFFFF
    if mag > 0x7F800000:  # NaN
        return (sign << 15) | 0x7F81
    hi = mag >> 16
    lo = mag & 0xFFFF
    if lo > 0x8000:
        hi += 1
    elif lo == 0x8000:
        hi += hi & 1
    return (sign << 15) | hi


def valid_10_3_strings(bits: int) -> int:
    s = format(bits, "032b")
    exponent, mantissa = s[1:9], s[9:]
    if exponent == "11111111" and "1" in mantissa:
        return int(s[:16], 2) | 1 | 0x40
    keep, drop = s[:16], s[16:]
    value = int(keep, 2)
    half = "1" + "0" * 15
    if drop > half or (drop == half and keep[-1] == "1"):
        value += 1
    return value


def valid_10_3_numpy(bits: int) -> int:
    b = np.uint64(bits)
    if (b >> np.uint64(23)) & np.uint64(0xFF) == np.uint64(0xFF) and b & np.uint64(0x7FFFFF):
        return int((b >> np.uint64(16)) | np.uint64(0x7FC0))
    rounding = np.uint64(0x7FFF) + ((b >> np.uint64(16)) & np.uint64(1))
    return int((b + rounding) >> np.uint64(16))


# WRONG: "rounds on the 16 bits it drops" -- truncates
def wrong_10_3_truncate(bits: int) -> int:
    if (bits >> 23) & 0xFF == 0xFF and bits & 0x7FFFFF:
        return (bits >> 16) | 0x40
    return bits >> 16


# WRONG: "on an exact tie to the neighbour whose last kept bit is 0" -- ties always round up
def wrong_10_3_half_up(bits: int) -> int:
    if (bits >> 23) & 0xFF == 0xFF and bits & 0x7FFFFF:
        return (bits >> 16) | 0x40
    kept, dropped = bits >> 16, bits & 0xFFFF
    if dropped >= 0x8000:
        kept += 1
    return kept


# WRONG: "every NaN must give a bf16 NaN" -- no NaN case
def wrong_10_3_no_nan(bits: int) -> int:
    kept, dropped = bits >> 16, bits & 0xFFFF
    if dropped > 0x8000 or (dropped == 0x8000 and kept & 1):
        kept += 1
    return kept


# WRONG: "ties to the neighbour whose last kept bit is 0" -- inverted (ties to odd)
def wrong_10_3_ties_odd(bits: int) -> int:
    if (bits >> 23) & 0xFF == 0xFF and bits & 0x7FFFFF:
        return (bits >> 16) | 0x40
    kept, dropped = bits >> 16, bits & 0xFFFF
    if dropped > 0x8000 or (dropped == 0x8000 and not kept & 1):
        kept += 1
    return kept


# WRONG: "a value that rounds past bf16's largest finite number becomes inf" -- saturates to the largest finite
def wrong_10_3_saturate(bits: int) -> int:
    if (bits >> 23) & 0xFF == 0xFF:
        if bits & 0x7FFFFF:
            return (bits >> 16) | 0x40
        return bits >> 16
    kept, dropped = bits >> 16, bits & 0xFFFF
    if dropped > 0x8000 or (dropped == 0x8000 and kept & 1):
        kept += 1
    if (kept >> 7) & 0xFF == 0xFF:
        kept -= 1
    return kept


# WRONG: "every NaN must give a bf16 NaN" -- rounds first and patches NaNs only when the result looks like inf;
# a NaN with a full mantissa carries out (0x7FFFFFFF -> 0x8000, i.e. -0.0)
def wrong_10_3_nan_after_round(bits: int) -> int:
    is_nan = (bits >> 23) & 0xFF == 0xFF and bits & 0x7FFFFF
    kept, dropped = bits >> 16, bits & 0xFFFF
    if dropped > 0x8000 or (dropped == 0x8000 and kept & 1):
        kept += 1
    if is_nan and (kept & 0x7F80) == 0x7F80 and (kept & 0x7F) == 0:
        kept |= 0x40
    return kept


# WRONG: "inf (0x7F80, or 0xFF80 when negative)" -- negative overflow gives +inf
def wrong_10_3_overflow_positive_inf(bits: int) -> int:
    if (bits >> 23) & 0xFF == 0xFF:
        return (bits >> 16) | (0x40 if bits & 0x7FFFFF else 0)
    kept, dropped = bits >> 16, bits & 0xFFFF
    if dropped > 0x8000 or (dropped == 0x8000 and kept & 1):
        kept += 1
    if (kept >> 7) & 0xFF == 0xFF:
        return 0x7F80
    return kept


# WRONG: "subnormals need no special case" -- flushes subnormals to (signed) zero
def wrong_10_3_flush_subnormals(bits: int) -> int:
    if (bits >> 23) & 0xFF == 0:
        return (bits >> 16) & 0x8000
    return valid_10_3_hint(bits)


# ---------------------------------------------------------------------------------------------------------------
# 10.4 Dynamic loss scale
# ---------------------------------------------------------------------------------------------------------------

FLT_MAX = 3.4028234663852886e38


def valid_10_4_loop(found_inf: list[bool], init_scale: float, growth_factor: float, backoff_factor: float,
                    growth_interval: int) -> tuple[list[float], list[int]]:
    scale, clean = float(init_scale), 0
    scales, skipped = [], []
    for t, inf in enumerate(found_inf):
        if inf:
            skipped.append(t)
            scale *= backoff_factor
            clean = 0
        else:
            clean += 1
            if clean == growth_interval:
                if scale * growth_factor <= FLT_MAX:
                    scale *= growth_factor
                clean = 0
        scales.append(scale)
    return scales, skipped


def valid_10_4_float32(found_inf: list[bool], init_scale: float, growth_factor: float, backoff_factor: float,
                       growth_interval: int) -> tuple[list[float], list[int]]:
    scale = np.float32(init_scale)
    tracker = 0
    scales, skipped = [], []
    with np.errstate(over="ignore"):
        for t in range(len(found_inf)):
            if found_inf[t]:
                skipped.append(t)
                scale = np.float32(scale * np.float32(backoff_factor))
                tracker = 0
            else:
                tracker += 1
                if tracker >= growth_interval:
                    grown = np.float32(scale * np.float32(growth_factor))
                    if np.isfinite(grown):
                        scale = grown
                    tracker = 0
            scales.append(float(scale))
    return scales, skipped


def valid_10_4_torch_kernel(found_inf: list[bool], init_scale: float, growth_factor: float, backoff_factor: float,
                            growth_interval: int) -> tuple[list[float], list[int]]:
    scale = torch.tensor(float(init_scale), dtype=torch.float32)
    tracker = torch.tensor(0, dtype=torch.int32)
    scales, skipped = [], []
    for t, inf in enumerate(found_inf):
        if inf:
            skipped.append(t)
        torch._amp_update_scale_(scale, tracker, torch.tensor(1.0 if inf else 0.0), growth_factor, backoff_factor,
                                 growth_interval)
        scales.append(scale.item())
    return scales, skipped


def valid_10_4_last_event(found_inf: list[bool], init_scale: float, growth_factor: float, backoff_factor: float,
                          growth_interval: int) -> tuple[list[float], list[int]]:
    # remember the index of the last reset instead of a counter
    scales, skipped = [], []
    scale = init_scale
    last_reset = -1
    for t in range(len(found_inf)):
        if found_inf[t]:
            scale = scale * backoff_factor
            skipped.append(t)
            last_reset = t
        elif t - last_reset == growth_interval:
            new = scale * growth_factor
            scale = new if new <= FLT_MAX else scale
            last_reset = t
        scales.append(scale)
    return scales, skipped


# WRONG: "scales[t] is S after step t's update" -- records the scale step t used
def wrong_10_4_before_update(found_inf: list[bool], init_scale: float, growth_factor: float, backoff_factor: float,
                             growth_interval: int) -> tuple[list[float], list[int]]:
    scale, clean = float(init_scale), 0
    scales, skipped = [], []
    for t, inf in enumerate(found_inf):
        scales.append(scale)
        if inf:
            skipped.append(t)
            scale *= backoff_factor
            clean = 0
        else:
            clean += 1
            if clean == growth_interval:
                if scale * growth_factor <= FLT_MAX:
                    scale *= growth_factor
                clean = 0
    return scales, skipped


# WRONG: "overflow: ... the count of clean steps in a row goes back to 0" -- count not reset
def wrong_10_4_no_reset_on_overflow(found_inf: list[bool], init_scale: float, growth_factor: float,
                                    backoff_factor: float, growth_interval: int) -> tuple[list[float], list[int]]:
    scale, clean = float(init_scale), 0
    scales, skipped = [], []
    for t, inf in enumerate(found_inf):
        if inf:
            skipped.append(t)
            scale *= backoff_factor
        else:
            clean += 1
            if clean == growth_interval:
                if scale * growth_factor <= FLT_MAX:
                    scale *= growth_factor
                clean = 0
        scales.append(scale)
    return scales, skipped


# WRONG: "when it reaches growth_interval" -- grows one step late (count > interval)
def wrong_10_4_off_by_one(found_inf: list[bool], init_scale: float, growth_factor: float, backoff_factor: float,
                          growth_interval: int) -> tuple[list[float], list[int]]:
    scale, clean = float(init_scale), 0
    scales, skipped = [], []
    for t, inf in enumerate(found_inf):
        if inf:
            skipped.append(t)
            scale *= backoff_factor
            clean = 0
        else:
            clean += 1
            if clean > growth_interval:
                if scale * growth_factor <= FLT_MAX:
                    scale *= growth_factor
                clean = 0
        scales.append(scale)
    return scales, skipped


# WRONG: "if growing would take it past the largest float32, it stays where it is" -- no cap
def wrong_10_4_no_cap(found_inf: list[bool], init_scale: float, growth_factor: float, backoff_factor: float,
                      growth_interval: int) -> tuple[list[float], list[int]]:
    scale, clean = float(init_scale), 0
    scales, skipped = [], []
    for t, inf in enumerate(found_inf):
        if inf:
            skipped.append(t)
            scale *= backoff_factor
            clean = 0
        else:
            clean += 1
            if clean == growth_interval:
                scale *= growth_factor
                clean = 0
        scales.append(scale)
    return scales, skipped


# WRONG: "it stays where it is" -- clamps to the largest float32 instead
def wrong_10_4_clamp(found_inf: list[bool], init_scale: float, growth_factor: float, backoff_factor: float,
                     growth_interval: int) -> tuple[list[float], list[int]]:
    scale, clean = float(init_scale), 0
    scales, skipped = [], []
    for t, inf in enumerate(found_inf):
        if inf:
            skipped.append(t)
            scale *= backoff_factor
            clean = 0
        else:
            clean += 1
            if clean == growth_interval:
                scale = min(scale * growth_factor, FLT_MAX)
                clean = 0
        scales.append(scale)
    return scales, skipped


# WRONG: "when it reaches growth_interval ... the count goes back to 0" -- never resets after growth
def wrong_10_4_no_reset_after_growth(found_inf: list[bool], init_scale: float, growth_factor: float,
                                     backoff_factor: float, growth_interval: int) -> tuple[list[float], list[int]]:
    scale, clean = float(init_scale), 0
    scales, skipped = [], []
    for t, inf in enumerate(found_inf):
        if inf:
            skipped.append(t)
            scale *= backoff_factor
            clean = 0
        else:
            clean += 1
            if clean >= growth_interval and scale * growth_factor <= FLT_MAX:
                scale *= growth_factor
        scales.append(scale)
    return scales, skipped


# WRONG: "S is multiplied by backoff_factor" -- divides by growth_factor (same only when they are reciprocal)
def wrong_10_4_divide_by_growth(found_inf: list[bool], init_scale: float, growth_factor: float,
                                backoff_factor: float, growth_interval: int) -> tuple[list[float], list[int]]:
    scale, clean = float(init_scale), 0
    scales, skipped = [], []
    for t, inf in enumerate(found_inf):
        if inf:
            skipped.append(t)
            scale /= growth_factor
            clean = 0
        else:
            clean += 1
            if clean == growth_interval:
                if scale * growth_factor <= FLT_MAX:
                    scale *= growth_factor
                clean = 0
        scales.append(scale)
    return scales, skipped


# WRONG: "skipped the list of the indices of the skipped steps" -- 1-based step numbers
def wrong_10_4_one_based(found_inf: list[bool], init_scale: float, growth_factor: float, backoff_factor: float,
                         growth_interval: int) -> tuple[list[float], list[int]]:
    scales, skipped = valid_10_4_loop(found_inf, init_scale, growth_factor, backoff_factor, growth_interval)
    return scales, [t + 1 for t in skipped]


# ---------------------------------------------------------------------------------------------------------------
# 10.5 Block-wise absmax int8 quantisation
# ---------------------------------------------------------------------------------------------------------------


def valid_10_5_pad(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.reshape(-1).float()
    n = flat.numel()
    pad = (-n) % block
    blocks = F.pad(flat, (0, pad)).view(-1, block)
    absmax = blocks.abs().amax(dim=1)
    safe = torch.where(absmax == 0, torch.ones_like(absmax), absmax)
    q = torch.round(blocks / safe[:, None] * 127).to(torch.int8).reshape(-1)[:n]
    return q, absmax


def valid_10_5_loop(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    values = x.flatten().tolist()
    codes, scales = [], []
    for start in range(0, len(values), block):
        chunk = values[start:start + block]
        m = max(abs(v) for v in chunk)
        scales.append(m)
        for v in chunk:
            codes.append(0 if m == 0 else round(127 * v / m))
    return torch.tensor(codes, dtype=torch.int8), torch.tensor(scales)


def valid_10_5_float64(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.detach().double().flatten()
    qs, ms = [], []
    for chunk in torch.split(flat, block):
        m = chunk.abs().max()
        if m == 0:
            qs.append(torch.zeros_like(chunk, dtype=torch.int16))
        else:
            qs.append(torch.round(127 * chunk / m).to(torch.int16))
        ms.append(m)
    return torch.cat(qs), torch.stack(ms)


def valid_10_5_numpy(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    a = x.detach().cpu().numpy().astype(np.float32).ravel()
    nb = (a.size + block - 1) // block
    padded = np.zeros(nb * block, dtype=np.float32)
    padded[:a.size] = a
    blocks = padded.reshape(nb, block)
    absmax = np.abs(blocks).max(axis=1)
    denom = np.where(absmax > 0, absmax, 1.0).astype(np.float32)
    q = np.rint(127 * blocks / denom[:, None]).astype(np.int32).ravel()[:a.size]
    return torch.from_numpy(q), torch.from_numpy(absmax)


# "rounded to the nearest integer": the text gives no tie rule, so round-half-up is a valid reading
def valid_10_5_half_up(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.reshape(-1).float()
    n = flat.numel()
    blocks = F.pad(flat, (0, (-n) % block)).view(-1, block)
    absmax = blocks.abs().amax(dim=1)
    scaled = 127 * blocks / absmax.clamp_min(1e-30)[:, None]
    q = torch.sign(scaled) * torch.floor(scaled.abs() + 0.5)
    q = torch.where(absmax[:, None] == 0, torch.zeros_like(q), q)
    return q.to(torch.int8).reshape(-1)[:n], absmax


# WRONG: "one scale per block" -- one absmax for the whole tensor
def wrong_10_5_global_absmax(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.reshape(-1).float()
    nb = (flat.numel() + block - 1) // block
    m = flat.abs().max()
    q = torch.round(127 * flat / m) if m > 0 else torch.zeros_like(flat)
    return q.to(torch.int8), m.repeat(nb)


# WRONG: "flatten x row by row" -- flattens column by column
def wrong_10_5_column_major(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.t().reshape(-1) if x.dim() == 2 else x.reshape(-1)
    return valid_10_5_pad(flat, block)


# WRONG: "rounded to the nearest integer" -- truncates toward zero
def wrong_10_5_truncate(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.reshape(-1).float()
    n = flat.numel()
    blocks = F.pad(flat, (0, (-n) % block)).view(-1, block)
    absmax = blocks.abs().amax(dim=1)
    safe = torch.where(absmax == 0, torch.ones_like(absmax), absmax)
    q = (blocks / safe[:, None] * 127).to(torch.int8).reshape(-1)[:n]
    return q, absmax


# WRONG: "the last block may be shorter" -- drops the incomplete last block
def wrong_10_5_drop_last(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.reshape(-1).float()
    nb = flat.numel() // block
    blocks = flat[:nb * block].view(nb, block)
    absmax = blocks.abs().amax(dim=1)
    safe = torch.where(absmax == 0, torch.ones_like(absmax), absmax)
    q = torch.round(blocks / safe[:, None] * 127).to(torch.int8).reshape(-1)
    return q, absmax


# WRONG: "a block of zeros has absmax 0" -- stores 1 as its absmax
def wrong_10_5_zero_block_one(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    q, absmax = valid_10_5_pad(x, block)
    return q, torch.where(absmax == 0, torch.ones_like(absmax), absmax)


# WRONG: "its absmax, the largest absolute value" -- uses the signed max
def wrong_10_5_signed_max(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.reshape(-1).float()
    n = flat.numel()
    blocks = F.pad(flat, (0, (-n) % block), value=float("-inf")).view(-1, block)
    m = blocks.amax(dim=1)
    safe = torch.where(m == 0, torch.ones_like(m), m)
    blocks = torch.where(torch.isinf(blocks), torch.zeros_like(blocks), blocks)
    q = torch.round(blocks / safe[:, None] * 127).clamp(-127, 127).to(torch.int8).reshape(-1)[:n]
    return q, m


# WRONG: "rounded to the nearest integer" -- int(v + 0.5), which is wrong for negative values
def wrong_10_5_int_plus_half(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    values = x.flatten().tolist()
    codes, scales = [], []
    for start in range(0, len(values), block):
        chunk = values[start:start + block]
        m = max(abs(v) for v in chunk)
        scales.append(m)
        codes += [0 if m == 0 else int(127 * v / m + 0.5) for v in chunk]
    return torch.tensor(codes, dtype=torch.int8), torch.tensor(scales)


# WRONG: "flatten x row by row and cut it into blocks of block consecutive values" -- cuts x along its first
# dimension (blocks of `block` rows) without flattening first
def wrong_10_5_split_rows(x: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    qs, ms = [], []
    for chunk in torch.split(x.float(), block, dim=0):
        m = chunk.abs().max()
        qs.append(torch.zeros_like(chunk) if m == 0 else torch.round(127 * chunk / m))
        ms.append(m)
    return torch.cat(qs).reshape(-1).to(torch.int8), torch.stack(ms)


# ---------------------------------------------------------------------------------------------------------------
# 10.6 Gradient accumulation
# ---------------------------------------------------------------------------------------------------------------


def valid_10_6_hint(loss_fn, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    w.grad = None
    rows = len(x) // k
    for j in range(k):
        loss = loss_fn(w, x[j * rows:(j + 1) * rows], y[j * rows:(j + 1) * rows])
        (loss / k).backward()
    return w.grad


def valid_10_6_chunk_zero(loss_fn, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    if w.grad is not None:
        w.grad.zero_()
    for xm, ym in zip(torch.chunk(x, k), torch.chunk(y, k)):
        loss = loss_fn(w, xm, ym) * (len(xm) / len(x))
        loss.backward()
    return w.grad.clone()


def valid_10_6_autograd_grad(loss_fn, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    total = torch.zeros_like(w)
    for xm, ym in zip(x.split(len(x) // k), y.split(len(y) // k)):
        (g,) = torch.autograd.grad(loss_fn(w, xm, ym) / k, w)
        total += g
    return total


# "every row goes to exactly one micro-batch": an interleaved split also fits the text (no order is asked for)
def valid_10_6_interleaved(loss_fn, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    w.grad = None
    for j in range(k):
        (loss_fn(w, x[j::k], y[j::k]) / k).backward()
    return w.grad


# WRONG: "scale it so that the gradients of the k micro-batches add up to the batch's" -- no scaling
def wrong_10_6_unscaled(loss_fn, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    w.grad = None
    rows = len(x) // k
    for j in range(k):
        loss_fn(w, x[j * rows:(j + 1) * rows], y[j * rows:(j + 1) * rows]).backward()
    return w.grad


# WRONG: "w.grad may still hold an earlier step's gradient: return this batch's gradient only" -- not cleared
def wrong_10_6_no_clear(loss_fn, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    rows = len(x) // k
    for j in range(k):
        (loss_fn(w, x[j * rows:(j + 1) * rows], y[j * rows:(j + 1) * rows]) / k).backward()
    return w.grad


# WRONG: "scale it so that the gradients add up to the batch's" -- divides by the rows per micro-batch
def wrong_10_6_divide_rows(loss_fn, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    w.grad = None
    rows = len(x) // k
    for j in range(k):
        (loss_fn(w, x[j * rows:(j + 1) * rows], y[j * rows:(j + 1) * rows]) / rows).backward()
    return w.grad


# WRONG: "call loss_fn(w, x_micro, y_micro) once for each micro-batch" -- one forward on the whole batch
def wrong_10_6_whole_batch(loss_fn, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    w.grad = None
    loss_fn(w, x, y).backward()
    return w.grad


# WRONG: "backpropagate it before the next micro-batch's forward" -- sums the losses, one backward at the end
def wrong_10_6_backward_at_end(loss_fn, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    w.grad = None
    rows = len(x) // k
    total = 0
    for j in range(k):
        total = total + loss_fn(w, x[j * rows:(j + 1) * rows], y[j * rows:(j + 1) * rows]) / k
    total.backward()
    return w.grad


# WRONG: "the k micro-batches add up" -- clears w.grad in every iteration, so only the last micro-batch is left
def wrong_10_6_last_only(loss_fn, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    rows = len(x) // k
    for j in range(k):
        w.grad = None
        (loss_fn(w, x[j * rows:(j + 1) * rows], y[j * rows:(j + 1) * rows]) / k).backward()
    return w.grad


# "return this batch's gradient only (a tensor of w's shape)": the text does not ask for w.grad to be filled
def valid_10_6_detached_copy(loss_fn, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    w2 = w.detach().clone().requires_grad_(True)
    rows = len(x) // k
    for j in range(k):
        (loss_fn(w2, x[j * rows:(j + 1) * rows], y[j * rows:(j + 1) * rows]) / k).backward()
    return w2.grad


# WRONG: "call loss_fn(w, x_micro, y_micro) once" -- calls it twice per micro-batch (once to log, once to backprop)
def wrong_10_6_two_calls(loss_fn, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    w.grad = None
    rows = len(x) // k
    logged = []
    for j in range(k):
        xm, ym = x[j * rows:(j + 1) * rows], y[j * rows:(j + 1) * rows]
        logged.append(loss_fn(w, xm, ym).item())
        (loss_fn(w, xm, ym) / k).backward()
    return w.grad


# WRONG: "backpropagate it before the next micro-batch's forward" -- all forwards first, then the backwards
def wrong_10_6_forward_all_first(loss_fn, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    w.grad = None
    rows = len(x) // k
    losses = [loss_fn(w, x[j * rows:(j + 1) * rows], y[j * rows:(j + 1) * rows]) for j in range(k)]
    for loss in losses:
        (loss / k).backward()
    return w.grad
