"""Learner solutions for exercises 06.x (model and pretraining), written from the notebook text only.

``valid_NN_k_*`` satisfy the task text of exercise NN.k; ``wrong_NN_k_*`` break the clause named above them.
"""
# Learner-style code on purpose (zip over ids and ids[1:], unused loop counters):
# ruff: noqa: B905, B007
import math

import torch
import torch.nn.functional as F

# ---- 06.1 next_token_loss -------------------------------------------------------------------------

# valid: log_softmax + gather, mean
def valid_06_1_gather(logits, idx):
    lp = torch.log_softmax(logits[:, :-1], dim=-1)
    return -lp.gather(-1, idx[:, 1:, None]).squeeze(-1).mean()


# valid: F.cross_entropy with the class dim moved (no flattening), returned as a Python float
def valid_06_1_cross_entropy_float(logits, idx):
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), idx[:, 1:]).item()


# wrong: no shift -- breaks "pair logits[:, :-1] with idx[:, 1:]"
def wrong_06_1_no_shift(logits, idx):
    return F.cross_entropy(logits.flatten(0, 1), idx.flatten())


# wrong: log(softmax) underflows -- breaks "Use torch.log_softmax ... targets with probability e^-1000"
def wrong_06_1_log_softmax_underflow(logits, idx):
    p = torch.softmax(logits[:, :-1], dim=-1)
    return -torch.log(p.gather(-1, idx[:, 1:, None])).mean()


# wrong: sum over positions, mean over batch only -- breaks "mean ... over B (T-1)"
def wrong_06_1_sum_over_t(logits, idx):
    lp = torch.log_softmax(logits[:, :-1], dim=-1)
    return -lp.gather(-1, idx[:, 1:, None]).squeeze(-1).sum(1).mean()


# wrong: shift the wrong way (logits[:, 1:] with idx[:, :-1]) -- breaks "the logits at t guess the token t+1"
def wrong_06_1_shift_backwards(logits, idx):
    lp = torch.log_softmax(logits[:, 1:], dim=-1)
    return -lp.gather(-1, idx[:, :-1, None]).squeeze(-1).mean()


# ---- 06.2 prefix_lm_mask --------------------------------------------------------------------------

# valid: the formula with broadcasting
def valid_06_2_formula(T, prefix_len):
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    return (j <= i) | (j < prefix_len)


# valid: tril, then open the prefix columns by slicing
def valid_06_2_slice(T, prefix_len):
    m = torch.ones(T, T, dtype=torch.bool).tril()
    m[:, :prefix_len] = True
    return m


# wrong: prefix rows see everything -- breaks "no query, not even one inside the prefix, sees a later token
# after the prefix"
def wrong_06_2_prefix_rows_full(T, prefix_len):
    m = torch.ones(T, T, dtype=torch.bool).tril()
    m[:prefix_len, :] = True
    return m


# wrong: prefix off by one (j <= prefix_len) -- breaks "j < prefix_len"
def wrong_06_2_off_by_one(T, prefix_len):
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    return (j <= i) | (j <= prefix_len)


# wrong: int mask -- breaks "of dtype torch.bool"
def wrong_06_2_int(T, prefix_len):
    return valid_06_2_formula(T, prefix_len).long()


# ---- 06.3 gpt2_param_count ------------------------------------------------------------------------

# valid: formula
def valid_06_3_formula(vocab_size, block_size, n_layer, d_model):
    d = d_model
    return vocab_size * d + block_size * d + n_layer * (12 * d * d + 13 * d) + 2 * d


# valid: built part by part, on the meta device with nn modules (tie by counting the embedding once)
def valid_06_3_meta(vocab_size, block_size, n_layer, d_model):
    from torch import nn
    d = d_model
    with torch.device("meta"):
        parts = [nn.Embedding(vocab_size, d), nn.Embedding(block_size, d), nn.LayerNorm(d)]
        for _ in range(n_layer):
            parts += [nn.Linear(d, d) for _ in range(4)]
            parts += [nn.Linear(d, 4 * d), nn.Linear(4 * d, d), nn.LayerNorm(d), nn.LayerNorm(d)]
    return sum(p.numel() for m in parts for p in m.parameters())


# wrong: untied head counted -- breaks "the head ... tied to the token embedding (counted once)"
def wrong_06_3_untied(vocab_size, block_size, n_layer, d_model):
    return valid_06_3_formula(vocab_size, block_size, n_layer, d_model) + vocab_size * d_model


# wrong: forgets the final LayerNorm -- breaks "a final LayerNorm (2d)"
def wrong_06_3_no_final_ln(vocab_size, block_size, n_layer, d_model):
    return valid_06_3_formula(vocab_size, block_size, n_layer, d_model) - 2 * d_model


# wrong: LayerNorm without bias (d each) -- breaks "a gain and a bias: 2d each"
def wrong_06_3_ln_no_bias(vocab_size, block_size, n_layer, d_model):
    d = d_model
    return vocab_size * d + block_size * d + n_layer * (12 * d * d + 11 * d) + d


# ---- 06.4 llama_param_count -----------------------------------------------------------------------

# valid: formula
def valid_06_4_formula(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    d = d_model
    kv = n_kv_head * (d // n_head)
    per = 2 * d * d + 2 * d * kv + 3 * d * ffn_hidden + 2 * d
    return 2 * vocab_size * d + n_layer * per + d


# valid: sum over a list of shapes
def valid_06_4_shapes(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    hd = d_model // n_head
    layer = [(d_model, d_model), (n_kv_head * hd, d_model), (n_kv_head * hd, d_model), (d_model, d_model),
             (ffn_hidden, d_model), (ffn_hidden, d_model), (d_model, ffn_hidden), (d_model,), (d_model,)]
    total = sum(math.prod(s) for s in layer) * n_layer
    return int(total + math.prod((vocab_size, d_model)) * 2 + d_model)


# wrong: k, v full d x d (ignores GQA) -- breaks "W_k and W_v only d x (n_kv d_head)"
def wrong_06_4_no_gqa(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    return valid_06_4_formula(vocab_size, n_layer, d_model, n_head, n_head, ffn_hidden)


# wrong: tied head -- breaks "an untied head: lm_head is its own V x d matrix"
def wrong_06_4_tied(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    return valid_06_4_formula(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden) - vocab_size * d_model


# wrong: kv width n_kv_head * d (not * d_head) -- breaks "d_head = d_model // n_head"
def wrong_06_4_kv_width(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    d = d_model
    per = 2 * d * d + 2 * d * (n_kv_head * d) + 3 * d * ffn_hidden + 2 * d
    return 2 * vocab_size * d + n_layer * per + d


# wrong: forgets the final norm -- breaks "two per layer and a final one"
def wrong_06_4_no_final_norm(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    return valid_06_4_formula(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden) - d_model


# ---- 06.5 lr_at -----------------------------------------------------------------------------------

# valid: the formula
def valid_06_5_formula(step, lr, warmup, total, min_ratio):
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / (total - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# valid: cos^2 form (0.5(1 + cos 2a) = cos^2 a), min_lr + (lr - min_lr) * ..., progress clamped with max/min
def valid_06_5_cos2(step, lr, warmup, total, min_ratio):
    if warmup > 0 and step < warmup:
        return lr * (step + 1) / warmup
    prog = max(0.0, min(1.0, (step - warmup) / (total - warmup)))
    lo = lr * min_ratio
    return lo + (lr - lo) * math.cos(math.pi * prog / 2) ** 2


# wrong: warm-up from step / warmup (step 0 gives 0) -- breaks "lr (step + 1)/warmup"
def wrong_06_5_warmup_step(step, lr, warmup, total, min_ratio):
    if step < warmup:
        return lr * step / warmup
    return valid_06_5_formula(step, lr, warmup, total, min_ratio)


# wrong: decays to 0, not min_ratio lr -- breaks "fall along a cosine to min_ratio * lr"
def wrong_06_5_to_zero(step, lr, warmup, total, min_ratio):
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / (total - warmup))
    return lr * 0.5 * (1 + math.cos(math.pi * progress))


# wrong: no clamp after total (cosine comes back up) -- breaks "and keep it there" / min(1, ...)
def wrong_06_5_no_clamp(step, lr, warmup, total, min_ratio):
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / (total - warmup)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# wrong: progress over total instead of total - warmup -- breaks "(step - warmup)/(total - warmup)"
def wrong_06_5_progress_total(step, lr, warmup, total, min_ratio):
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / total)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# ---- 06.6 decay_groups ----------------------------------------------------------------------------

# valid: by dim over model.parameters()
def valid_06_6_dim(model):
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return decay, no_decay


# valid: via named_parameters (dedups shared params like parameters()), as a tuple of lists
def valid_06_6_named(model):
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    return [p for p in params if p.ndim >= 2], [p for p in params if p.ndim < 2]


# wrong: by name ("bias" in name) -- breaks "Deciding by name misses the norms' gains"
def wrong_06_6_by_name(model):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if "bias" in n else decay).append(p)
    return decay, no_decay


# wrong: includes frozen parameters -- breaks "every trainable parameter (requires_grad)"
def wrong_06_6_frozen(model):
    ps = list(model.parameters())
    return [p for p in ps if p.dim() >= 2], [p for p in ps if p.dim() < 2]


# wrong: walks modules with recurse=False and no dedup -- a tied head appears twice -- breaks "exactly once"
def wrong_06_6_tied_twice(model):
    decay, no_decay = [], []
    for m in model.modules():
        for p in m.parameters(recurse=False):
            if p.requires_grad:
                (decay if p.dim() >= 2 else no_decay).append(p)
    return decay, no_decay


# wrong: returns copies (detached clones) -- breaks "the parameters themselves"
def wrong_06_6_clones(model):
    d, n = valid_06_6_dim(model)
    return [torch.nn.Parameter(p.detach().clone()) for p in d], [torch.nn.Parameter(p.detach().clone()) for p in n]


# ---- 06.7 train_step_flops ------------------------------------------------------------------------

# valid: 6 N_nonembed + 12 L T d per token, times tokens
def valid_06_7_6n(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, seq_len, batch):
    n = valid_06_4_formula(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden) - vocab_size * d_model
    return (6 * n + 12 * n_layer * seq_len * d_model) * seq_len * batch


# valid: forward counted explicitly per token (2 per multiply-add), times 3, as a float
def valid_06_7_explicit(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, seq_len, batch):
    hd = d_model // n_head
    per_layer = (2 * d_model * n_head * hd + 2 * d_model * n_kv_head * hd + 3 * d_model * ffn_hidden
                 + 2 * d_model)
    params = n_layer * per_layer + d_model + vocab_size * d_model          # + final norm + head
    attn = n_layer * (2 * seq_len * n_head * hd) * 2                         # scores + weighted sum, 2 FLOPs each
    fwd = 2.0 * params + attn
    return 3.0 * fwd * seq_len * batch


# wrong: counts the embedding too -- breaks "looking up a token's embedding is free"
def wrong_06_7_with_embedding(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, seq_len, batch):
    n = valid_06_4_formula(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden)
    return (6 * n + 12 * n_layer * seq_len * d_model) * seq_len * batch


# wrong: forward only -- breaks "the backward pass costs twice the forward pass"
def wrong_06_7_forward_only(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, seq_len, batch):
    return valid_06_7_6n(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, seq_len, batch) / 3


# wrong: attention over half the keys (causal saving) -- breaks "no saving for the causal mask"
def wrong_06_7_causal_half(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, seq_len, batch):
    n = valid_06_4_formula(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden) - vocab_size * d_model
    return (6 * n + 6 * n_layer * seq_len * d_model) * seq_len * batch


# wrong: attention term with the KV width (n_kv_head * d_head) -- breaks "the scores of each query against every key"
# (every query head computes its own scores, GQA shares only the stored keys)
def wrong_06_7_attn_kv_width(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, seq_len, batch):
    n = valid_06_4_formula(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden) - vocab_size * d_model
    kv = n_kv_head * (d_model // n_head)
    return (6 * n + 12 * n_layer * seq_len * kv) * seq_len * batch


# ---- second round: subtler cases ------------------------------------------------------------------

# wrong: "<=" for the warm-up (step == warmup gives lr (warmup+1)/warmup > lr) -- breaks "warm-up, step < warmup"
def wrong_06_5_warmup_inclusive(step, lr, warmup, total, min_ratio):
    if step <= warmup and warmup > 0:
        return lr * (step + 1) / warmup
    return valid_06_5_formula(step, lr, warmup, total, min_ratio)


# wrong: dim > 2 (embeddings and 2-D matrices go to no_decay) -- breaks "parameters with p.dim() >= 2"
def wrong_06_6_dim_gt_2(model):
    ps = [p for p in model.parameters() if p.requires_grad]
    return [p for p in ps if p.dim() > 2], [p for p in ps if p.dim() <= 2]


# wrong: decay excludes embeddings by name -- breaks "only to the matrices and embeddings"
def wrong_06_6_no_embedding_decay(model):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 and "emb" not in n and "wte" not in n and "wpe" not in n else no_decay).append(p)
    return decay, no_decay


# ---- third round ----------------------------------------------------------------------------------

# valid: loss in float32 (no precision asked; 1e-6 relative is within float32's 6e-8)
def valid_06_1_float32(logits, idx):
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return -lp.gather(-1, idx[:, 1:, None]).mean()


# valid: lists in another order (largest tensors first); the text asks for each parameter once, no order
def valid_06_6_sorted_by_size(model):
    d, n = valid_06_6_dim(model)
    return sorted(d, key=lambda p: -p.numel()), sorted(n, key=lambda p: -p.numel())


# wrong: norm gains treated as free -- breaks "the norm gains and the untied head count"
def wrong_06_7_no_norms(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, seq_len, batch):
    n = valid_06_4_formula(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden) - vocab_size * d_model
    n -= (2 * n_layer + 1) * d_model
    return (6 * n + 12 * n_layer * seq_len * d_model) * seq_len * batch


# wrong: the head treated like an embedding (free) -- breaks "the untied head count"
def wrong_06_7_no_head(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, seq_len, batch):
    n = valid_06_4_formula(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden) - 2 * vocab_size * d_model
    return (6 * n + 12 * n_layer * seq_len * d_model) * seq_len * batch
