"""Learner solutions for exercises 09.x (parameter-efficient fine-tuning), written from the notebook text only.

``valid_NN_k_*`` satisfy the task text of exercise NN.k; ``wrong_NN_k_*`` break the clause named above them.
09.4 (nf4_quantize) and 09.5 (nf4_dequantize) are the NF4 exercises, numbered 09.11 / 09.12 in their draft.
"""
# Learner-style code on purpose (explicit Python loops, unused loop counters):
# ruff: noqa: B905, B007
import math

import torch
import torch.nn.functional as F

from minillm.peft.nf4 import NF4_CODE as NF4

# ---- 09.1 lora_linear -----------------------------------------------------------------------------

def _scale(alpha, r, use_rslora):
    return alpha / math.sqrt(r) if use_rslora else alpha / r


# valid: the hint: two paths, added
def valid_09_1_two_paths(x, W, b, A, B, alpha, use_rslora=False):
    r = A.shape[0]
    h = x @ W.T + _scale(alpha, r, use_rslora) * ((x @ A.T) @ B.T)
    return h if b is None else h + b


# valid: F.linear for both paths (bias passed to the frozen one), rank from B's columns, r ** 0.5
def valid_09_1_f_linear(x, W, b, A, B, alpha, use_rslora=False):
    r = B.shape[1]
    s = alpha / r ** 0.5 if use_rslora else alpha / r
    return F.linear(x, W, b) + s * F.linear(F.linear(x, A), B)


# valid: merge first (W + s B A), then one matmul
def valid_09_1_merged(x, W, b, A, B, alpha, use_rslora=False):
    s = _scale(alpha, A.shape[0], use_rslora)
    h = torch.einsum("...i,oi->...o", x, W + s * (B @ A))
    if b is not None:
        h = h + b
    return h


# valid: flatten the leading dimensions, compute in float32, reshape and cast back
def valid_09_1_float32_flatten(x, W, b, A, B, alpha, use_rslora=False):
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1]).float()
    s = _scale(alpha, A.shape[0], use_rslora)
    h = x2 @ W.float().t() + s * (x2 @ A.float().t() @ B.float().t())
    if b is not None:
        h = h + b.float()
    return h.reshape(*lead, W.shape[0]).to(x.dtype)


# wrong: always alpha / r -- breaks "or by s = alpha / sqrt(r) when use_rslora is true"
def wrong_09_1_ignores_rslora(x, W, b, A, B, alpha, use_rslora=False):
    return valid_09_1_two_paths(x, W, b, A, B, alpha, use_rslora=False)


# wrong: the two scalings swapped -- breaks "s = alpha / r, or ... alpha / sqrt(r) when use_rslora"
def wrong_09_1_scalings_swapped(x, W, b, A, B, alpha, use_rslora=False):
    return valid_09_1_two_paths(x, W, b, A, B, alpha, use_rslora=not use_rslora)


# wrong: the rank taken as A's number of columns (in) -- breaks "A (r, in)"
def wrong_09_1_rank_from_in(x, W, b, A, B, alpha, use_rslora=False):
    r = A.shape[1]
    h = F.linear(x, W, b)
    return h + _scale(alpha, r, use_rslora) * F.linear(F.linear(x, A), B)


# wrong: the bias added to the update path too -- breaks "h = W x + b + s B A x" (the bias once)
def wrong_09_1_bias_twice(x, W, b, A, B, alpha, use_rslora=False):
    s = _scale(alpha, A.shape[0], use_rslora)
    return F.linear(x, W, b) + s * F.linear(F.linear(x, A), B, b)


# wrong: rsLoRA scale written as (alpha / r) ** 0.5 -- breaks "s = alpha / sqrt(r)"
def wrong_09_1_sqrt_of_ratio(x, W, b, A, B, alpha, use_rslora=False):
    r = A.shape[0]
    s = (alpha / r) ** 0.5 if use_rslora else alpha / r
    return F.linear(x, W, b) + s * F.linear(F.linear(x, A), B)


# wrong: floor division alpha // r -- breaks "s = alpha / r"
def wrong_09_1_floor_division(x, W, b, A, B, alpha, use_rslora=False):
    r = A.shape[0]
    s = alpha // math.sqrt(r) if use_rslora else alpha // r
    return F.linear(x, W, b) + s * F.linear(F.linear(x, A), B)


# wrong: x @ W without the transpose -- breaks "W of shape (out, in)" (W x)
def wrong_09_1_no_transpose(x, W, b, A, B, alpha, use_rslora=False):
    s = _scale(alpha, A.shape[0], use_rslora)
    h = x @ W + s * ((x @ A.T) @ B.T)
    return h if b is None else h + b


# wrong: no scaling at all -- breaks "scaled by s"
def wrong_09_1_unscaled(x, W, b, A, B, alpha, use_rslora=False):
    return F.linear(x, W, b) + F.linear(F.linear(x, A), B)


# wrong: torch.mm / addmm, only 2-D inputs work -- breaks "x of shape (..., in) (any number of leading dimensions)"
def wrong_09_1_only_2d(x, W, b, A, B, alpha, use_rslora=False):
    s = _scale(alpha, A.shape[0], use_rslora)
    h = torch.mm(x, W.t()) + s * torch.mm(torch.mm(x, A.t()), B.t())
    return h if b is None else h + b


# ---- 09.2 merge_lora_weight -----------------------------------------------------------------------

# valid: the hint, out of place
def valid_09_2_out_of_place(W, A, B, alpha, use_rslora=False):
    return W + _scale(alpha, A.shape[0], use_rslora) * (B @ A)


# valid: torch.addmm with the scaling as alpha
def valid_09_2_addmm(W, A, B, alpha, use_rslora=False):
    r = A.size(0)
    return torch.addmm(W, B, A, alpha=alpha / r ** 0.5 if use_rslora else alpha / r)


# valid: clone, then a sum of r outer products added in place on the clone
def valid_09_2_outer_products(W, A, B, alpha, use_rslora=False):
    r = A.shape[0]
    s = _scale(alpha, r, use_rslora)
    merged = W.clone()
    for k in range(r):
        merged += s * torch.outer(B[:, k], A[k])
    return merged


# valid: einsum in float32, cast back to W's dtype
def valid_09_2_einsum_float32(W, A, B, alpha, use_rslora=False):
    s = _scale(alpha, A.shape[0], use_rslora)
    return (W.float() + s * torch.einsum("or,ri->oi", B.float(), A.float())).to(W.dtype)


# valid: clone, then addmm_ on the clone
def valid_09_2_clone_addmm_(W, A, B, alpha, use_rslora=False):
    s = _scale(alpha, A.shape[0], use_rslora)
    return W.clone().addmm_(B, A, alpha=s)


# wrong: "merged = W" aliases W, then += edits it -- breaks "Return a new tensor and leave W unchanged"
def wrong_09_2_alias_then_iadd(W, A, B, alpha, use_rslora=False):
    merged = W
    merged += _scale(alpha, A.shape[0], use_rslora) * (B @ A)
    return merged


# wrong: floor division alpha // r -- breaks "with the same scaling as in 09.1" (alpha / r)
def wrong_09_2_floor_division(W, A, B, alpha, use_rslora=False):
    r = A.shape[0]
    return W + (alpha // math.sqrt(r) if use_rslora else alpha // r) * (B @ A)


# wrong: merges in place -- breaks "Return a new tensor and leave W unchanged"
def wrong_09_2_in_place(W, A, B, alpha, use_rslora=False):
    W += _scale(alpha, A.shape[0], use_rslora) * (B @ A)
    return W


# wrong: always alpha / r -- breaks "with the same scaling as in 09.1" (rsLoRA)
def wrong_09_2_ignores_rslora(W, A, B, alpha, use_rslora=False):
    return W + alpha / A.shape[0] * (B @ A)


# wrong: rank read from B's rows (out) -- breaks "rank r made of A (r, in) and B (out, r)"
def wrong_09_2_rank_from_out(W, A, B, alpha, use_rslora=False):
    return W + _scale(alpha, B.shape[0], use_rslora) * (B @ A)


# wrong: the update built as A.T @ B.T, (in, out) -- breaks "the merged weight of shape (out, in)"
def wrong_09_2_transposed_update(W, A, B, alpha, use_rslora=False):
    return W + _scale(alpha, A.shape[0], use_rslora) * (A.T @ B.T)


# wrong: scaling alpha * r (multiplied instead of divided) -- breaks "s = alpha / r"
def wrong_09_2_times_r(W, A, B, alpha, use_rslora=False):
    r = A.shape[0]
    return W + (alpha * math.sqrt(r) if use_rslora else alpha * r) * (B @ A)


# ---- 09.3 lora_trainable_params -------------------------------------------------------------------

def _shapes(d_model, n_head, n_kv_head, ffn_hidden):
    hd = d_model // n_head
    return {"q_proj": (d_model, n_head * hd), "k_proj": (d_model, n_kv_head * hd),
            "v_proj": (d_model, n_kv_head * hd), "o_proj": (n_head * hd, d_model),
            "gate_proj": (d_model, ffn_hidden), "up_proj": (d_model, ffn_hidden),
            "down_proj": (ffn_hidden, d_model)}


# valid: table of (in, out) per block layer, r (in + out) per adapted layer, lm_head once
def valid_09_3_table(n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r, targets):
    shapes = _shapes(d_model, n_head, n_kv_head, ffn_hidden)
    per_block = sum(r * sum(shapes[t]) for t in targets if t in shapes)
    head = r * (d_model + vocab_size) if "lm_head" in targets else 0
    return n_layer * per_block + head


# valid: counts A and B separately, layer by layer, block by block (a set of targets)
def valid_09_3_loops(n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r, targets):
    targets = set(targets)
    head_dim = d_model // n_head
    kv = n_kv_head * head_dim
    total = 0
    for layer in range(n_layer):
        for name, fan_in, fan_out in [("q_proj", d_model, n_head * head_dim), ("k_proj", d_model, kv),
                                      ("v_proj", d_model, kv), ("o_proj", n_head * head_dim, d_model),
                                      ("gate_proj", d_model, ffn_hidden), ("up_proj", d_model, ffn_hidden),
                                      ("down_proj", ffn_hidden, d_model)]:
            if name in targets:
                total += r * fan_in   # A: (r, in)
                total += fan_out * r  # B: (out, r)
    if "lm_head" in targets:
        total += r * d_model + vocab_size * r
    return int(total)


# valid: closed form with d_model for q/o (d_model = n_head * head_dim when divisible)
def valid_09_3_closed_form(n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r, targets):
    kv = n_kv_head * (d_model // n_head)
    dims = {"q_proj": 2 * d_model, "o_proj": 2 * d_model, "k_proj": d_model + kv, "v_proj": d_model + kv,
            "gate_proj": d_model + ffn_hidden, "up_proj": d_model + ffn_hidden, "down_proj": d_model + ffn_hidden}
    block = sum(dims.get(t, 0) for t in targets)
    return r * (n_layer * block + ((d_model + vocab_size) if "lm_head" in targets else 0))


# wrong: lm_head always added (misreading "plus lm_head once") -- breaks "applied to every linear layer whose name
# is in targets"
def wrong_09_3_lm_head_always(n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r, targets):
    t = tuple(targets) if "lm_head" in targets else (*targets, "lm_head")
    return valid_09_3_table(n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r, t)


# wrong: o_proj's input taken as the KV width -- breaks "q_proj and o_proj with n_head heads"
def wrong_09_3_o_proj_kv(n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r, targets):
    shapes = _shapes(d_model, n_head, n_kv_head, ffn_hidden)
    shapes["o_proj"] = (n_kv_head * (d_model // n_head), d_model)
    per_block = sum(r * sum(shapes[t]) for t in targets if t in shapes)
    return n_layer * per_block + (r * (d_model + vocab_size) if "lm_head" in targets else 0)


# wrong: q_proj given the KV width too (GQA applied to the queries) -- breaks "q_proj and o_proj with n_head heads"
def wrong_09_3_q_proj_kv(n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r, targets):
    shapes = _shapes(d_model, n_head, n_kv_head, ffn_hidden)
    shapes["q_proj"] = (d_model, n_kv_head * (d_model // n_head))
    per_block = sum(r * sum(shapes[t]) for t in targets if t in shapes)
    return n_layer * per_block + (r * (d_model + vocab_size) if "lm_head" in targets else 0)


# wrong: k/v with n_head heads (ignores GQA) -- breaks "k_proj and v_proj with n_kv_head heads"
def wrong_09_3_ignores_gqa(n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r, targets):
    return valid_09_3_table(n_layer, d_model, n_head, n_head, ffn_hidden, vocab_size, r, targets)


# wrong: lm_head adapted in every block -- breaks "one lm_head ... at the top"
def wrong_09_3_lm_head_per_layer(n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r, targets):
    total = valid_09_3_table(n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r, targets)
    if "lm_head" in targets:
        total += (n_layer - 1) * r * (d_model + vocab_size)
    return total


# wrong: a bias counted in each adapter's B -- breaks "No linear layer has a bias"
def wrong_09_3_counts_biases(n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r, targets):
    shapes = _shapes(d_model, n_head, n_kv_head, ffn_hidden)
    shapes["lm_head"] = (d_model, vocab_size)
    total = 0
    for t in targets:
        fan_in, fan_out = shapes[t]
        total += (n_layer if t != "lm_head" else 1) * (r * (fan_in + fan_out) + fan_out)
    return total


# wrong: every adapted layer taken as d_model x d_model -- breaks the shapes of k/v (GQA) and of the MLP
def wrong_09_3_all_square(n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r, targets):
    per = 2 * r * d_model
    block = per * sum(1 for t in targets if t != "lm_head")
    return n_layer * block + (r * (d_model + vocab_size) if "lm_head" in targets else 0)


# wrong: lm_head never counted -- breaks "every linear layer whose name is in targets" (lm_head included)
def wrong_09_3_no_lm_head(n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r, targets):
    return valid_09_3_table(n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r,
                            tuple(t for t in targets if t != "lm_head"))


# wrong: only one block counted -- breaks "in every block"
def wrong_09_3_one_block(n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r, targets):
    return valid_09_3_table(1, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r, targets)


# wrong: the full dense matrices counted (in * out) -- breaks "LoRA of rank r" (trains A and B only)
def wrong_09_3_full_matrices(n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r, targets):
    shapes = _shapes(d_model, n_head, n_kv_head, ffn_hidden)
    per_block = sum(shapes[t][0] * shapes[t][1] for t in targets if t in shapes)
    return n_layer * per_block + (d_model * vocab_size if "lm_head" in targets else 0)


# ---- 09.4 nf4_quantize (draft id 09.11) -----------------------------------------------------------

# valid: the hint: blocks as rows, divide (by 1 for zero blocks), argmin of distances to the table
def valid_09_4_argmin(x, blocksize):
    blocks = x.reshape(-1, blocksize)
    absmax = blocks.abs().amax(dim=1)
    scaled = blocks / torch.where(absmax == 0, torch.ones_like(absmax), absmax)[:, None]
    idx = (scaled[..., None] - NF4.to(scaled.dtype)).abs().argmin(-1)
    return idx.flatten(), absmax


# valid: thresholds at the midpoints between code values, bucketize, in float64
def valid_09_4_midpoints_float64(x, blocksize):
    code = NF4.double()
    mids = (code[1:] + code[:-1]) / 2
    blocks = x.double().reshape(-1, blocksize)
    absmax = blocks.abs().max(dim=1).values
    scaled = torch.nan_to_num(blocks / absmax[:, None], nan=0.0)
    idx = torch.bucketize(scaled, mids)
    return idx.reshape(-1), absmax.to(x.dtype)


# valid: one value at a time in Python
def valid_09_4_loops(x, blocksize):
    code = NF4.tolist()
    vals = x.tolist()
    idx, absmax = [], []
    for start in range(0, len(vals), blocksize):
        block = vals[start:start + blocksize]
        m = max(abs(v) for v in block)
        absmax.append(m)
        for v in block:
            s = v / m if m > 0 else 0.0
            idx.append(min(range(16), key=lambda k: abs(code[k] - s)))
    return torch.tensor(idx, dtype=torch.long), torch.tensor(absmax, dtype=x.dtype)


# valid: nearest code for scaled values via the two neighbours found by searchsorted, uint8 indices
def valid_09_4_searchsorted(x, blocksize):
    code = NF4.to(x.dtype)
    blocks = x.view(len(x) // blocksize, blocksize)
    absmax = blocks.abs().amax(1, keepdim=True)
    scaled = torch.where(absmax > 0, blocks / absmax.clamp(min=torch.finfo(x.dtype).tiny), torch.zeros_like(blocks))
    hi = torch.searchsorted(code, scaled.contiguous()).clamp(1, 15)
    lo = hi - 1
    pick_hi = (code[hi] - scaled).abs() < (scaled - code[lo]).abs()
    idx = torch.where(pick_hi, hi, lo)
    return idx.flatten().to(torch.uint8), absmax.squeeze(1)


# valid: squared distance to the table (same nearest code), float64 table
def valid_09_4_squared_distance(x, blocksize):
    n_blocks = x.numel() // blocksize
    blocks = x.double().view(n_blocks, blocksize)
    absmax = blocks.abs().amax(-1)
    safe = absmax.clone()
    safe[safe == 0] = 1.0
    d2 = (blocks[:, :, None] / safe[:, None, None] - NF4.double()[None, None, :]) ** 2
    return d2.argmin(-1).reshape(-1), absmax.float() if x.dtype == torch.float32 else absmax


# wrong: absmax per value (n,) instead of per block -- breaks "absmax a float tensor of shape (len(x) // blocksize,)"
def wrong_09_4_absmax_per_value(x, blocksize):
    idx, absmax = valid_09_4_argmin(x, blocksize)
    return idx, absmax.repeat_interleave(blocksize)


# wrong: the zero block's absmax returned as 1 (the guard leaks into the output) -- breaks "A block of zeros has
# absmax 0"
def wrong_09_4_zero_absmax_as_one(x, blocksize):
    blocks = x.reshape(-1, blocksize)
    absmax = blocks.abs().amax(dim=1)
    absmax = torch.where(absmax == 0, torch.ones_like(absmax), absmax)
    idx = (blocks[..., None] / absmax[:, None, None] - NF4.to(x.dtype)).abs().argmin(-1)
    return idx.flatten(), absmax


# wrong: indices as a float tensor -- breaks "idx an integer tensor"
def wrong_09_4_float_indices(x, blocksize):
    idx, absmax = valid_09_4_argmin(x, blocksize)
    return idx.float(), absmax


# wrong: one absmax for the whole tensor -- breaks "Each block is stored as one float, its absmax"
def wrong_09_4_global_absmax(x, blocksize):
    m = x.abs().max()
    scaled = x / m if m > 0 else torch.zeros_like(x)
    idx = (scaled[:, None] - NF4.to(x.dtype)).abs().argmin(-1)
    return idx, m.repeat(len(x) // blocksize)


# wrong: max instead of absmax -- breaks "its absmax (the largest absolute value in the block)"
def wrong_09_4_max_not_absmax(x, blocksize):
    blocks = x.reshape(-1, blocksize)
    mx = blocks.amax(dim=1)
    scaled = (blocks / torch.where(mx == 0, torch.ones_like(mx), mx)[:, None]).clamp(-1, 1)
    idx = (scaled[..., None] - NF4.to(x.dtype)).abs().argmin(-1)
    return idx.flatten(), mx


# wrong: blocks strided (reshape(blocksize, -1)) -- breaks "blocks of blocksize consecutive values"
def wrong_09_4_strided_blocks(x, blocksize):
    blocks = x.reshape(blocksize, -1).T
    absmax = blocks.abs().amax(dim=1)
    scaled = blocks / torch.where(absmax == 0, torch.ones_like(absmax), absmax)[:, None]
    idx = (scaled[..., None] - NF4.to(x.dtype)).abs().argmin(-1)
    return idx.T.flatten(), absmax


# wrong: rounds down to the code value below (searchsorted - 1) -- breaks "the code value ... nearest"
def wrong_09_4_round_down(x, blocksize):
    blocks = x.reshape(-1, blocksize)
    absmax = blocks.abs().amax(dim=1)
    scaled = blocks / torch.where(absmax == 0, torch.ones_like(absmax), absmax)[:, None]
    idx = (torch.searchsorted(NF4.to(x.dtype), scaled.contiguous(), right=True) - 1).clamp(0, 15)
    return idx.flatten(), absmax


# wrong: a uniform 16-level grid on [-1, 1] instead of the NF4 table -- breaks "the index of the code value in
# NF4 that is nearest"
def wrong_09_4_uniform_grid(x, blocksize):
    blocks = x.reshape(-1, blocksize)
    absmax = blocks.abs().amax(dim=1)
    scaled = blocks / torch.where(absmax == 0, torch.ones_like(absmax), absmax)[:, None]
    idx = torch.round((scaled + 1) / 2 * 15).long()
    return idx.flatten(), absmax


# wrong: nearest code to the unscaled value -- breaks "nearest to the value divided by the block's absmax"
def wrong_09_4_not_scaled(x, blocksize):
    absmax = x.reshape(-1, blocksize).abs().amax(dim=1)
    idx = (x[:, None] - NF4.to(x.dtype)).abs().argmin(-1)
    return idx, absmax


# wrong: divides by absmax unguarded; the zero block's NaNs get index 0 -- breaks "A block of zeros ... every value
# of it gets the index of the code value 0"
def wrong_09_4_zero_block_nan(x, blocksize):
    blocks = x.reshape(-1, blocksize)
    absmax = blocks.abs().amax(dim=1)
    scaled = blocks / absmax[:, None]
    dist = (scaled[..., None] - NF4.to(x.dtype)).abs()
    idx = torch.nan_to_num(dist, nan=0.0).argmin(-1)
    return idx.flatten(), absmax


# ---- 09.5 nf4_dequantize (draft id 09.12) ---------------------------------------------------------

# valid: the hint: table lookup as (n_blocks, blocksize), times absmax per row
def valid_09_5_lookup(idx, absmax, blocksize):
    return (NF4.to(absmax.dtype)[idx.long()].view(-1, blocksize) * absmax[:, None]).flatten()


# valid: absmax repeated per value (repeat_interleave), float64 then cast to absmax's dtype
def valid_09_5_repeat_interleave(idx, absmax, blocksize):
    scale = absmax.double().repeat_interleave(blocksize)
    return (NF4.double()[idx.long()] * scale).to(absmax.dtype)


# valid: Python loop over the values, block = i // blocksize
def valid_09_5_loops(idx, absmax, blocksize):
    code = NF4.tolist()
    out = [code[int(k)] * float(absmax[i // blocksize]) for i, k in enumerate(idx.tolist())]
    return torch.tensor(out, dtype=absmax.dtype)


# valid: gather from the table with index_select, absmax expanded over a block view
def valid_09_5_index_select(idx, absmax, blocksize):
    vals = torch.index_select(NF4, 0, idx.long().flatten()).to(absmax.dtype)
    return (vals.reshape(absmax.numel(), blocksize) * absmax.unsqueeze(-1)).reshape(-1)


# valid: float32 throughout (within 1e-6 relative)
def valid_09_5_float32(idx, absmax, blocksize):
    a = absmax.float()
    return (NF4[idx.long()].reshape(a.shape[0], -1) * a[:, None]).reshape(-1)


# wrong: block index i // n_blocks (blocksize and block count confused) -- breaks "one float per block of blocksize
# consecutive indices"
def wrong_09_5_block_index_confused(idx, absmax, blocksize):
    n_blocks = absmax.numel()
    out = [float(NF4[int(k)]) * float(absmax[min(i // n_blocks, n_blocks - 1)]) for i, k in enumerate(idx.tolist())]
    return torch.tensor(out, dtype=absmax.dtype)


# wrong: value i scaled by absmax[i % n_blocks] (strided blocks) -- breaks "blocks of blocksize consecutive indices"
def wrong_09_5_strided(idx, absmax, blocksize):
    return NF4.to(absmax.dtype)[idx.long()] * absmax.repeat(blocksize)


# wrong: divides by absmax -- breaks "undo the scaling of its block" (the quantiser divided, so multiply)
def wrong_09_5_divides(idx, absmax, blocksize):
    a = torch.where(absmax == 0, torch.ones_like(absmax), absmax)
    return (NF4.to(absmax.dtype)[idx.long()].view(-1, blocksize) / a[:, None]).flatten()


# wrong: the index read as a uniform level (idx / 15 * 2 - 1) -- breaks "the values each index stands for" (NF4)
def wrong_09_5_uniform_levels(idx, absmax, blocksize):
    vals = idx.to(absmax.dtype) / 15 * 2 - 1
    return (vals.view(-1, blocksize) * absmax[:, None]).flatten()


# wrong: forgets the absmax -- breaks "the values each index stands for in its block"
def wrong_09_5_no_absmax(idx, absmax, blocksize):
    return NF4.to(absmax.dtype)[idx.long()]


# wrong: returns the (n_blocks, blocksize) view -- breaks "Return the float tensor of shape (n,)"
def wrong_09_5_not_flattened(idx, absmax, blocksize):
    return NF4.to(absmax.dtype)[idx.long()].view(-1, blocksize) * absmax[:, None]


# wrong: the table indexed from the top (NF4[15 - idx]) -- breaks "idx holds n indices into NF4"
def wrong_09_5_reversed_table(idx, absmax, blocksize):
    return (NF4.to(absmax.dtype)[15 - idx.long()].view(-1, blocksize) * absmax[:, None]).flatten()


# ---- 09.6 adalora_budget ------------------------------------------------------------------------------

# valid: the hint: three branches, float64 progress, int() of the budget
def valid_09_6_hint_branches(step, init_budget, target_budget, tinit, tfinal, total_step):
    if step <= tinit:
        return init_budget
    if step > total_step - tfinal:
        return target_budget
    left = 1 - (step - tinit) / (total_step - tfinal - tinit)
    return int((init_budget - target_budget) * left ** 3 + target_budget)


# valid: integer-only arithmetic, exact floor with //
def valid_09_6_integer_only(step, init_budget, target_budget, tinit, tfinal, total_step):
    fall = total_step - tfinal - tinit
    done = min(max(step - tinit, 0), fall)
    return target_budget + (init_budget - target_budget) * (fall - done) ** 3 // fall ** 3


# valid: exact rationals (fractions.Fraction), math.floor
def valid_09_6_fractions(step, init_budget, target_budget, tinit, tfinal, total_step):
    from fractions import Fraction
    if step <= tinit:
        return init_budget
    elif step > total_step - tfinal:
        return target_budget
    progress = Fraction(step - tinit, total_step - tfinal - tinit)
    return math.floor(target_budget + (init_budget - target_budget) * (1 - progress) ** 3)


# valid: one formula, progress clamped to [0, 1] (0 in warm-up, 1 in the final phase)
def valid_09_6_clamped_progress(step, init_budget, target_budget, tinit, tfinal, total_step):
    progress = min(1.0, max(0.0, (step - tinit) / (total_step - tfinal - tinit)))
    return math.floor(target_budget + (init_budget - target_budget) * (1.0 - progress) ** 3)


# valid: torch float64 tensors, floor, back to a Python int
def valid_09_6_torch_float64(step, init_budget, target_budget, tinit, tfinal, total_step):
    if step <= tinit:
        return int(init_budget)
    if step > total_step - tfinal:
        return int(target_budget)
    s = torch.tensor(float(step - tinit), dtype=torch.float64)
    left = 1 - s / (total_step - tfinal - tinit)
    val = (init_budget - target_budget) * left.pow(3) + target_budget
    return int(torch.floor(val).item())


# valid: numpy float64, the remaining share computed directly ((end - step) / fall), cube by a loop
def valid_09_6_numpy_remaining(step, init_budget, target_budget, tinit, tfinal, total_step):
    import numpy as np
    end = total_step - tfinal
    if step <= tinit:
        return init_budget
    if step > end:
        return target_budget
    remaining = np.float64(end - step) / np.float64(end - tinit)
    cube = np.float64(1.0)
    for _ in range(3):
        cube = cube * remaining
    return int(np.floor(target_budget + (init_budget - target_budget) * cube))


# valid: phases by a loop over (last step, rule); fall value via ceil(x) - 1, which is floor(x) except when x is an
# integer k, where it gives k - 1 ("k - 1 passes too")
def valid_09_6_ceil_minus_one(step, init_budget, target_budget, tinit, tfinal, total_step):
    end = total_step - tfinal
    for last, rule in ((tinit, "warmup"), (end, "fall")):
        if step <= last:
            break
    else:
        rule = "final"
    if rule == "warmup":
        return init_budget
    if rule == "final":
        return target_budget
    left = (end - step) / (end - tinit)
    return math.ceil(target_budget + (init_budget - target_budget) * left * left * left) - 1


# valid: the fall as an interpolation written from the other end: init - (init - target) * (1 - left^3)
def valid_09_6_from_init_side(step, init_budget, target_budget, tinit, tfinal, total_step):
    if step <= tinit:
        return init_budget
    if step > total_step - tfinal:
        return target_budget
    fall = total_step - tfinal - tinit
    num = (fall - (step - tinit)) ** 3  # exact ints: (1 - progress)^3 = num / fall^3
    return init_budget - -(-(init_budget - target_budget) * (fall ** 3 - num) // fall ** 3)


# wrong: square instead of cube -- breaks "times the cube of (1 - progress)"
def wrong_09_6_square(step, init_budget, target_budget, tinit, tfinal, total_step):
    if step <= tinit:
        return init_budget
    if step > total_step - tfinal:
        return target_budget
    left = 1 - (step - tinit) / (total_step - tfinal - tinit)
    return int((init_budget - target_budget) * left ** 2 + target_budget)


# wrong: cube of the progress, not of (1 - progress) -- breaks "the cube of (1 - progress)"
def wrong_09_6_cube_of_progress(step, init_budget, target_budget, tinit, tfinal, total_step):
    if step <= tinit:
        return init_budget
    if step > total_step - tfinal:
        return target_budget
    p = (step - tinit) / (total_step - tfinal - tinit)
    return int((init_budget - target_budget) * p ** 3 + target_budget)


# wrong: rounds to nearest -- breaks "rounded down to an int"
def wrong_09_6_round_nearest(step, init_budget, target_budget, tinit, tfinal, total_step):
    if step <= tinit:
        return init_budget
    if step > total_step - tfinal:
        return target_budget
    left = 1 - (step - tinit) / (total_step - tfinal - tinit)
    return round((init_budget - target_budget) * left ** 3 + target_budget)


# wrong: rounds up -- breaks "rounded down to an int"
def wrong_09_6_ceil(step, init_budget, target_budget, tinit, tfinal, total_step):
    fall = total_step - tfinal - tinit
    done = min(max(step - tinit, 0), fall)
    return target_budget - (-(init_budget - target_budget) * (fall - done) ** 3 // fall ** 3)


# wrong: the fall's length taken as total_step - tinit (tfinal forgotten) -- breaks "the fall's
# total_step - tfinal - tinit steps"
def wrong_09_6_denominator_ignores_tfinal(step, init_budget, target_budget, tinit, tfinal, total_step):
    if step <= tinit:
        return init_budget
    if step > total_step - tfinal:
        return target_budget
    left = 1 - (step - tinit) / (total_step - tinit)
    return int((init_budget - target_budget) * left ** 3 + target_budget)


# wrong: the fall's length taken as total_step - tfinal (tinit forgotten) -- breaks "the fall's
# total_step - tfinal - tinit steps" (progress 1 at step total_step - tfinal)
def wrong_09_6_denominator_ignores_tinit(step, init_budget, target_budget, tinit, tfinal, total_step):
    if step <= tinit:
        return init_budget
    if step > total_step - tfinal:
        return target_budget
    left = 1 - (step - tinit) / (total_step - tfinal)
    return int((init_budget - target_budget) * left ** 3 + target_budget)


# wrong: progress counted from step 0, not from tinit -- breaks "0 at step tinit"
def wrong_09_6_progress_from_step_zero(step, init_budget, target_budget, tinit, tfinal, total_step):
    if step <= tinit:
        return init_budget
    if step > total_step - tfinal:
        return target_budget
    left = 1 - step / (total_step - tfinal)
    return int((init_budget - target_budget) * left ** 3 + target_budget)


# wrong: step read as a 0-based index (the step number is step + 1) -- breaks "steps count 1, 2, ...; step 0 is
# before training"
def wrong_09_6_zero_based_step(step, init_budget, target_budget, tinit, tfinal, total_step):
    return valid_09_6_hint_branches(step + 1, init_budget, target_budget, tinit, tfinal, total_step)


# wrong: the budget before the step (step - 1) -- breaks "the budget after optimizer step step"
def wrong_09_6_budget_before_step(step, init_budget, target_budget, tinit, tfinal, total_step):
    return valid_09_6_hint_branches(max(step - 1, 0), init_budget, target_budget, tinit, tfinal, total_step)


# wrong: the fall counted inclusively, fall + 1 steps -- breaks "the fall's total_step - tfinal - tinit steps"
# (1 at step total_step - tfinal)
def wrong_09_6_denominator_plus_one(step, init_budget, target_budget, tinit, tfinal, total_step):
    if step <= tinit:
        return init_budget
    if step > total_step - tfinal:
        return target_budget
    left = 1 - (step - tinit) / (total_step - tfinal - tinit + 1)
    return int((init_budget - target_budget) * left ** 3 + target_budget)


# wrong: tinit and tfinal swapped (tfinal taken as the warm-up) -- breaks the argument order
# (step, init_budget, target_budget, tinit, tfinal, total_step)
def wrong_09_6_tinit_tfinal_swapped(step, init_budget, target_budget, tinit, tfinal, total_step):
    return valid_09_6_hint_branches(step, init_budget, target_budget, tfinal, tinit, total_step)


# wrong: no final phase, the cubic continued past total_step - tfinal -- breaks "for every step after
# total_step - tfinal, it is target_budget"
def wrong_09_6_no_final_phase(step, init_budget, target_budget, tinit, tfinal, total_step):
    if step <= tinit:
        return init_budget
    left = 1 - (step - tinit) / (total_step - tfinal - tinit)
    return math.floor((init_budget - target_budget) * left ** 3 + target_budget)


# wrong: final phase only after total_step -- breaks "for every step after total_step - tfinal" (the steps
# between total_step - tfinal and total_step fall below target_budget)
def wrong_09_6_final_after_total_step(step, init_budget, target_budget, tinit, tfinal, total_step):
    if step <= tinit:
        return init_budget
    if step > total_step:
        return target_budget
    left = 1 - (step - tinit) / (total_step - tfinal - tinit)
    return math.floor((init_budget - target_budget) * left ** 3 + target_budget)


# wrong: no warm-up branch, the cubic also used before tinit -- breaks "for every step up to and including tinit,
# the budget is init_budget"
def wrong_09_6_no_warmup(step, init_budget, target_budget, tinit, tfinal, total_step):
    if step > total_step - tfinal:
        return target_budget
    left = 1 - (step - tinit) / (total_step - tfinal - tinit)
    return math.floor((init_budget - target_budget) * left ** 3 + target_budget)


# wrong: progress by integer division (always 0 inside the fall) -- breaks "the share of the fall's steps done"
def wrong_09_6_integer_division_progress(step, init_budget, target_budget, tinit, tfinal, total_step):
    if step <= tinit:
        return init_budget
    if step > total_step - tfinal:
        return target_budget
    left = 1 - (step - tinit) // (total_step - tfinal - tinit)
    return int((init_budget - target_budget) * left ** 3 + target_budget)


# wrong: init_budget (not init_budget - target_budget) times the cube -- breaks "init_budget - target_budget
# times the cube"
def wrong_09_6_init_times_cube(step, init_budget, target_budget, tinit, tfinal, total_step):
    if step <= tinit:
        return init_budget
    if step > total_step - tfinal:
        return target_budget
    left = 1 - (step - tinit) / (total_step - tfinal - tinit)
    return int(init_budget * left ** 3 + target_budget)


# wrong: the fall linear in progress -- breaks "falls along a cubic" / "the cube of (1 - progress)"
def wrong_09_6_linear(step, init_budget, target_budget, tinit, tfinal, total_step):
    if step <= tinit:
        return init_budget
    if step > total_step - tfinal:
        return target_budget
    left = 1 - (step - tinit) / (total_step - tfinal - tinit)
    return int((init_budget - target_budget) * left + target_budget)


# wrong: init and target swapped in the fall (starts near target, climbs to init) -- breaks "target_budget plus
# init_budget - target_budget times the cube"
def wrong_09_6_init_target_swapped_in_fall(step, init_budget, target_budget, tinit, tfinal, total_step):
    if step <= tinit:
        return init_budget
    if step > total_step - tfinal:
        return target_budget
    left = 1 - (step - tinit) / (total_step - tfinal - tinit)
    return int((target_budget - init_budget) * left ** 3 + init_budget)


# ---- 09.7 prefix_attention ------------------------------------------------------------------------

def _prefix_reference_like(q, k, v, prefix_k, prefix_v, *, scale=None, keep=None, softmax_dim=-1, fill=None):
    """Concatenate prefix and real keys/values; `keep(T, P)` gives the (T, P + T) bool mask of visible keys."""
    T, D, P = q.shape[-2], q.shape[-1], prefix_k.shape[-2]
    kk = torch.cat([prefix_k, k], dim=-2)
    vv = torch.cat([prefix_v, v], dim=-2)
    s = q @ kk.transpose(-2, -1) * (1 / math.sqrt(D) if scale is None else scale)
    if keep is None:
        keep = lambda T, P: torch.arange(P + T)[None, :] <= torch.arange(T)[:, None] + P  # noqa: E731
    m = keep(T, P).to(q.device)
    s = s.masked_fill(~m, float("-inf") if fill is None else fill)
    return torch.softmax(s, dim=softmax_dim) @ vv


# valid: the hints -- concatenate, mask j > t + P with -inf, one softmax over the last dim
def valid_09_7_concat_mask(q, k, v, prefix_k, prefix_v):
    T, D, P = q.shape[-2], q.shape[-1], prefix_k.shape[-2]
    keys = torch.cat([prefix_k, k], dim=2)
    vals = torch.cat([prefix_v, v], dim=2)
    scores = torch.matmul(q, keys.transpose(2, 3)) / math.sqrt(D)
    j = torch.arange(P + T, device=q.device)
    t = torch.arange(T, device=q.device)
    visible = j[None, :] <= t[:, None] + P
    scores = scores.masked_fill(~visible, float("-inf"))
    return torch.softmax(scores, dim=-1) @ vals


# valid: explicit loop over query positions, each attending to the prefix and k[:t+1]
def valid_09_7_loop_positions(q, k, v, prefix_k, prefix_v):
    T, D = q.shape[-2], q.shape[-1]
    outs = []
    for t in range(T):
        keys = torch.cat([prefix_k, k[:, :, : t + 1]], dim=2)
        vals = torch.cat([prefix_v, v[:, :, : t + 1]], dim=2)
        s = torch.einsum("bhd,bhjd->bhj", q[:, :, t], keys) / math.sqrt(D)
        w = torch.softmax(s, dim=-1)
        outs.append(torch.einsum("bhj,bhjd->bhd", w, vals))
    return torch.stack(outs, dim=2)


# valid: loops over batch, head and position, plain Python lists of scores, softmax written out
def valid_09_7_triple_loop(q, k, v, prefix_k, prefix_v):
    B, H, T, D = q.shape
    P = prefix_k.shape[2]
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                keys = [prefix_k[b, h, i] for i in range(P)] + [k[b, h, j] for j in range(t + 1)]
                vals = [prefix_v[b, h, i] for i in range(P)] + [v[b, h, j] for j in range(t + 1)]
                scores = [float(torch.dot(q[b, h, t], key)) / math.sqrt(D) for key in keys]
                mx = max(scores)
                ws = [math.exp(s - mx) for s in scores]
                z = sum(ws)
                acc = torch.zeros(D, dtype=torch.float64)
                for w, val in zip(ws, vals):
                    acc += (w / z) * val.double()
                out[b, h, t] = acc.to(out.dtype)
    return out


# valid: two score blocks (prefix: all visible; real: causal) joined before one softmax, weights split after
def valid_09_7_two_blocks(q, k, v, prefix_k, prefix_v):
    T, D, P = q.shape[-2], q.shape[-1], prefix_k.shape[-2]
    sp = q @ prefix_k.transpose(-1, -2) / math.sqrt(D)
    sr = q @ k.transpose(-1, -2) / math.sqrt(D)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    sr = sr.masked_fill(~causal, float("-inf"))
    w = torch.cat([sp, sr], dim=-1).softmax(dim=-1)
    return w[..., :P] @ prefix_v + w[..., P:] @ v


# valid: torch's scaled_dot_product_attention with a boolean attn_mask (True = may attend)
def valid_09_7_sdpa_mask(q, k, v, prefix_k, prefix_v):
    T, P = q.shape[-2], prefix_k.shape[-2]
    mask = torch.ones(T, P + T, dtype=torch.bool, device=q.device).tril(diagonal=P)
    return F.scaled_dot_product_attention(q, torch.cat([prefix_k, k], -2), torch.cat([prefix_v, v], -2),
                                          attn_mask=mask)


# valid: computed in float32 internally, cast back to the input dtype
def valid_09_7_float32(q, k, v, prefix_k, prefix_v):
    dt = q.dtype
    q, k, v, prefix_k, prefix_v = (x.float() for x in (q, k, v, prefix_k, prefix_v))
    T, D, P = q.shape[-2], q.shape[-1], prefix_k.shape[-2]
    s = torch.einsum("bhtd,bhjd->bhtj", q, torch.cat([prefix_k, k], 2)) * D ** -0.5
    add = torch.full((T, P + T), float("-inf"), device=q.device).triu(diagonal=P + 1)
    w = torch.softmax(s + add, dim=-1)
    return torch.einsum("bhtj,bhjd->bhtd", w, torch.cat([prefix_v, v], 2)).to(dt)


# valid: log-sum-exp by hand over the two blocks, in float64; P = 0 handled by skipping the prefix block
def valid_09_7_logsumexp_by_hand(q, k, v, prefix_k, prefix_v):
    dt = q.dtype
    q, k, v, prefix_k, prefix_v = (x.double() for x in (q, k, v, prefix_k, prefix_v))
    T, D, P = q.shape[-2], q.shape[-1], prefix_k.shape[-2]
    sr = q @ k.transpose(-1, -2) / math.sqrt(D)
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    sr = sr.masked_fill(future, float("-inf"))
    m = sr.amax(dim=-1, keepdim=True)
    if P > 0:
        sp = q @ prefix_k.transpose(-1, -2) / math.sqrt(D)
        m = torch.maximum(m, sp.amax(dim=-1, keepdim=True))
    er = torch.exp(sr - m)
    num = er @ v
    den = er.sum(-1, keepdim=True)
    if P > 0:
        ep = torch.exp(sp - m)
        num = num + ep @ prefix_v
        den = den + ep.sum(-1, keepdim=True)
    lse = m + torch.log(den)  # log of the softmax's normaliser
    return (num * torch.exp(m - lse)).to(dt)


# valid: P = 0 sent to ordinary causal attention, otherwise concat + mask
def valid_09_7_p_zero_branch(q, k, v, prefix_k, prefix_v):
    if prefix_k.shape[2] == 0:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return valid_09_7_concat_mask(q, k, v, prefix_k, prefix_v)


# valid: online (flash-style) softmax, prefix block first then the real keys one at a time
def valid_09_7_online_softmax(q, k, v, prefix_k, prefix_v):
    B, H, T, D = q.shape
    P = prefix_k.shape[2]
    qs = q.double() / math.sqrt(D)
    m = torch.full((B, H, T, 1), float("-inf"), dtype=torch.float64, device=q.device)
    den = torch.zeros((B, H, T, 1), dtype=torch.float64, device=q.device)
    num = torch.zeros((B, H, T, D), dtype=torch.float64, device=q.device)
    blocks = [(prefix_k[:, :, i : i + 1], prefix_v[:, :, i : i + 1], -1) for i in range(P)]
    blocks += [(k[:, :, j : j + 1], v[:, :, j : j + 1], j) for j in range(T)]
    t = torch.arange(T, device=q.device).view(T, 1)
    for kb, vb, j in blocks:
        s = qs @ kb.double().transpose(-1, -2)  # (B, H, T, 1)
        if j >= 0:
            s = s.masked_fill(t < j, float("-inf"))
        new_m = torch.maximum(m, s)
        a = torch.exp(m - new_m)
        e = torch.exp(s - new_m)
        den = den * a + e
        num = num * a + e * vb.double()
        m = new_m
    return (num / den).to(q.dtype)


# valid: square causal mask over P + T positions with P dummy (zero) queries in front, their rows dropped
def valid_09_7_padded_queries(q, k, v, prefix_k, prefix_v):
    B, H, T, D = q.shape
    P = prefix_k.shape[2]
    qq = torch.cat([q.new_zeros(B, H, P, D), q], dim=2)
    out = F.scaled_dot_product_attention(qq, torch.cat([prefix_k, k], 2), torch.cat([prefix_v, v], 2),
                                         is_causal=True)
    return out[:, :, P:]


# valid: sdpa with an additive float bias (-1e9, not -inf, on the hidden keys) and an explicit scale
def valid_09_7_additive_bias(q, k, v, prefix_k, prefix_v):
    T, D, P = q.shape[-2], q.shape[-1], prefix_k.shape[-2]
    j = torch.arange(P + T, device=q.device)
    i = torch.arange(T, device=q.device)
    bias = torch.zeros(T, P + T, dtype=q.dtype, device=q.device)
    bias = bias.masked_fill(j[None] > i[:, None] + P, -1e9)
    return F.scaled_dot_product_attention(q, torch.cat([prefix_k, k], 2), torch.cat([prefix_v, v], 2),
                                          attn_mask=bias, scale=1 / math.sqrt(D))


# wrong: no causal mask, every real key visible -- breaks "real keys up to and including its own position"
def wrong_09_7_no_causal_mask(q, k, v, prefix_k, prefix_v):
    return _prefix_reference_like(q, k, v, prefix_k, prefix_v,
                                  keep=lambda T, P: torch.ones(T, P + T, dtype=torch.bool))


# wrong: strict mask j < t + P, a query does not see its own key -- breaks "up to and including its own position"
def wrong_09_7_excludes_own_position(q, k, v, prefix_k, prefix_v):
    return _prefix_reference_like(q, k, v, prefix_k, prefix_v,
                                  keep=lambda T, P: torch.ones(T, P + T, dtype=torch.bool).tril(P - 1))


# wrong: the causal mask not shifted by P (tril on the concatenation), query t sees only keys 0..t of it --
# breaks "attends to every prefix key"
def wrong_09_7_mask_not_shifted(q, k, v, prefix_k, prefix_v):
    return _prefix_reference_like(q, k, v, prefix_k, prefix_v,
                                  keep=lambda T, P: torch.ones(T, P + T, dtype=torch.bool).tril())


# wrong: mask shifted one too far (tril(P + 1)), each query sees the next real key too -- breaks "up to and
# including its own position"
def wrong_09_7_sees_next_key(q, k, v, prefix_k, prefix_v):
    return _prefix_reference_like(q, k, v, prefix_k, prefix_v,
                                  keep=lambda T, P: torch.ones(T, P + T, dtype=torch.bool).tril(P + 1))


# wrong: scores divided by D, not sqrt(D) -- breaks "scores divided by sqrt(D)"
def wrong_09_7_divide_by_d(q, k, v, prefix_k, prefix_v):
    return _prefix_reference_like(q, k, v, prefix_k, prefix_v, scale=1 / q.shape[-1])


# wrong: no scaling at all -- breaks "scores divided by sqrt(D)"
def wrong_09_7_unscaled(q, k, v, prefix_k, prefix_v):
    return _prefix_reference_like(q, k, v, prefix_k, prefix_v, scale=1.0)


# wrong: scaled by sqrt of the number of keys P + T -- breaks "scores divided by sqrt(D)"
def wrong_09_7_scale_by_key_count(q, k, v, prefix_k, prefix_v):
    P, T = prefix_k.shape[-2], q.shape[-2]
    return _prefix_reference_like(q, k, v, prefix_k, prefix_v, scale=1 / math.sqrt(P + T))


# wrong: softmax over the query dimension -- breaks "one softmax over all the keys it may see"
def wrong_09_7_softmax_over_queries(q, k, v, prefix_k, prefix_v):
    T, D, P = q.shape[-2], q.shape[-1], prefix_k.shape[-2]
    s = q @ torch.cat([prefix_k, k], 2).transpose(-2, -1) / math.sqrt(D)
    s = s.masked_fill(~torch.ones(T, P + T, dtype=torch.bool).tril(P), float("-inf"))
    w = torch.softmax(s, dim=-2).nan_to_num(0.0)  # columns of future-only keys are all -inf
    return w @ torch.cat([prefix_v, v], 2)


# wrong: separate softmaxes over the prefix and the real keys, outputs averaged -- breaks "one softmax over all
# the keys it may see"
def wrong_09_7_two_softmaxes(q, k, v, prefix_k, prefix_v):
    T, D, P = q.shape[-2], q.shape[-1], prefix_k.shape[-2]
    sr = (q @ k.transpose(-1, -2) / math.sqrt(D)).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(),
                                                               float("-inf"))
    real = sr.softmax(-1) @ v
    if P == 0:
        return real
    pref = (q @ prefix_k.transpose(-1, -2) / math.sqrt(D)).softmax(-1) @ prefix_v
    return (real + pref) / 2


# wrong: masked scores set to 0 instead of -inf (scores * mask) -- breaks "real keys up to its own position"
# (future keys keep weight exp(0))
def wrong_09_7_zero_not_minus_inf(q, k, v, prefix_k, prefix_v):
    return _prefix_reference_like(q, k, v, prefix_k, prefix_v, fill=0.0)


# wrong: mask applied after the softmax without renormalising -- breaks "one softmax over all the keys it may see"
def wrong_09_7_mask_after_softmax(q, k, v, prefix_k, prefix_v):
    T, D, P = q.shape[-2], q.shape[-1], prefix_k.shape[-2]
    s = q @ torch.cat([prefix_k, k], 2).transpose(-2, -1) / math.sqrt(D)
    w = s.softmax(-1) * torch.ones(T, P + T, dtype=s.dtype).tril(P)
    return w @ torch.cat([prefix_v, v], 2)


# wrong: the prefix put after the real keys while the mask still assumes it in front -- breaks "attends to every
# prefix key" (and lets queries see future real keys)
def wrong_09_7_prefix_at_end(q, k, v, prefix_k, prefix_v):
    return _prefix_reference_like(q, prefix_k, prefix_v, k, v)


# wrong: prefix keys in front but prefix values at the end -- pairs prefix keys with real values, breaks "P trained
# key/value pairs"
def wrong_09_7_values_misaligned(q, k, v, prefix_k, prefix_v):
    T, D, P = q.shape[-2], q.shape[-1], prefix_k.shape[-2]
    s = q @ torch.cat([prefix_k, k], 2).transpose(-2, -1) / math.sqrt(D)
    s = s.masked_fill(~torch.ones(T, P + T, dtype=torch.bool).tril(P), float("-inf"))
    return s.softmax(-1) @ torch.cat([v, prefix_v], 2)


# wrong: prefix keys and values swapped -- breaks "prefix_k, prefix_v: the prefix's keys and values"
def wrong_09_7_prefix_kv_swapped(q, k, v, prefix_k, prefix_v):
    return _prefix_reference_like(q, k, v, prefix_v, prefix_k)


# wrong: prefix values dropped (weights over all keys, only the real values summed) -- breaks "attends to every
# prefix key" (the prefix's values never reach the output)
def wrong_09_7_prefix_values_dropped(q, k, v, prefix_k, prefix_v):
    T, D, P = q.shape[-2], q.shape[-1], prefix_k.shape[-2]
    s = q @ torch.cat([prefix_k, k], 2).transpose(-2, -1) / math.sqrt(D)
    s = s.masked_fill(~torch.ones(T, P + T, dtype=torch.bool).tril(P), float("-inf"))
    return s.softmax(-1)[..., P:] @ v


# wrong: output returned as (B, T, H, D) (heads merged the usual way) -- breaks "Return the outputs, shape
# (B, H, T, D)"
def wrong_09_7_output_transposed(q, k, v, prefix_k, prefix_v):
    return valid_09_7_concat_mask(q, k, v, prefix_k, prefix_v).transpose(1, 2).contiguous()


# wrong: log-sum-exp by hand with the max taken over the prefix block alone -- crashes for P = 0 (max of an
# empty dim), breaks "P >= 0" / "With P = 0 this is ordinary causal attention"
def wrong_09_7_crashes_p_zero(q, k, v, prefix_k, prefix_v):
    T, D = q.shape[-2], q.shape[-1]
    sp = q @ prefix_k.transpose(-1, -2) / math.sqrt(D)
    sr = (q @ k.transpose(-1, -2) / math.sqrt(D)).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(),
                                                               float("-inf"))
    m = torch.maximum(sp.max(dim=-1, keepdim=True).values, sr.max(dim=-1, keepdim=True).values)
    ep, er = (sp - m).exp(), (sr - m).exp()
    return (ep @ prefix_v + er @ v) / (ep.sum(-1, keepdim=True) + er.sum(-1, keepdim=True))


# wrong: outputs divided by sqrt(D) after the softmax instead of the scores -- breaks "scores divided by sqrt(D)"
def wrong_09_7_scales_output(q, k, v, prefix_k, prefix_v):
    return _prefix_reference_like(q, k, v, prefix_k, prefix_v, scale=1.0) / math.sqrt(q.shape[-1])
