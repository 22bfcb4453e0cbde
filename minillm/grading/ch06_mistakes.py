"""Simulated wrong solutions of the chapter 6 exercises, used by ch06.py to name a learner's mistake.

Each function reproduces one common mistake: a next-token loss without the shift, shifted the wrong way,
averaged over the vocabulary too, taken on probabilities or raw logits, summed, or computed as
log(softmax) (which underflows); a prefix-LM mask that is fully bidirectional, only causal, transposed,
off by one, inverted, or that lets the prefix see the future; GPT-2 and Llama parameter counts that drop
biases, norms, position embeddings or the final norm, count a tied head twice (or an untied one not at
all), use n_head for the key/value heads or two FFN matrices instead of three; learning-rate schedules
whose warm-up starts at 0 or divides by warmup + 1, whose cosine ends at 0, runs over `total` steps, is
not clamped, is not shifted into [0, 1] or is linear; weight-decay groups that decay everything, decide by
the name 'bias', leave the embeddings out or are swapped. They are deliberately wrong: never use them as
references.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------------
# 06.1 next-token loss


def _logp_of(logits, targets):
    """log p(target) at each position: (B, T', V), (B, T') -> (B, T')."""
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None])[..., 0]


def loss_no_shift(logits, idx):
    return -_logp_of(logits, idx).mean()  # position t scored on its own token, not the next one


def loss_shift_backwards(logits, idx):
    return -_logp_of(logits[:, 1:], idx[:, :-1]).mean()  # position t + 1 predicts token t


def loss_mean_over_vocab(logits, idx):
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    onehot = F.one_hot(idx[:, 1:], logits.shape[-1]).to(logp.dtype)
    return -(onehot * logp).mean()  # the mean also divides by V


def loss_probs_not_log(logits, idx):
    probs = torch.softmax(logits[:, :-1], dim=-1)
    return -probs.gather(-1, idx[:, 1:, None]).mean()


def loss_raw_logits(logits, idx):
    return -logits[:, :-1].gather(-1, idx[:, 1:, None]).mean()  # no log-softmax: not a log-probability


def loss_sum(logits, idx):
    return -_logp_of(logits[:, :-1], idx[:, 1:]).sum()


def loss_no_minus(logits, idx):
    return _logp_of(logits[:, :-1], idx[:, 1:]).mean()


def loss_log_of_softmax(logits, idx):
    probs = torch.softmax(logits[:, :-1], dim=-1)
    return -torch.log(probs).gather(-1, idx[:, 1:, None]).mean()  # log(0) = -inf once a probability underflows


# ---------------------------------------------------------------------------------------------------
# 06.2 prefix-LM mask


def _ij(T):
    return torch.arange(T)[:, None], torch.arange(T)[None, :]


def prefix_bidirectional(T, prefix_len):
    return torch.ones(T, T, dtype=torch.bool)


def prefix_causal_only(T, prefix_len):
    i, j = _ij(T)
    return j <= i


def prefix_transposed(T, prefix_len):
    i, j = _ij(T)
    return (i <= j) | (i < prefix_len)


def prefix_queries_see_all(T, prefix_len):
    i, j = _ij(T)
    return (j <= i) | (i < prefix_len)  # the prefix sees the target tokens, which it must predict


def prefix_off_by_one(T, prefix_len):
    i, j = _ij(T)
    return (j <= i) | (j <= prefix_len)


def prefix_inverted(T, prefix_len):
    i, j = _ij(T)
    return ~((j <= i) | (j < prefix_len))


def prefix_block_diagonal(T, prefix_len):
    i, j = _ij(T)
    in_prefix = (i < prefix_len) & (j < prefix_len)
    return in_prefix | ((i >= prefix_len) & (j >= prefix_len) & (j <= i))  # the rest never sees the prefix


# ---------------------------------------------------------------------------------------------------
# 06.3 GPT-2 parameter count (tied head, learned positions, biases, LayerNorm)


def _gpt2(vocab_size, block_size, n_layer, d_model, *, linear_bias=True, ln=2, final_ln=True, positions=True,
          head=False):
    d = d_model
    per_layer = 12 * d * d + (9 * d if linear_bias else 0) + 2 * ln * d
    return (vocab_size * d + (block_size * d if positions else 0) + n_layer * per_layer
            + (ln * d if final_ln else 0) + (vocab_size * d if head else 0))


def gpt2_no_linear_bias(vocab_size, block_size, n_layer, d_model):
    return _gpt2(vocab_size, block_size, n_layer, d_model, linear_bias=False)


def gpt2_no_bias_at_all(vocab_size, block_size, n_layer, d_model):
    return _gpt2(vocab_size, block_size, n_layer, d_model, linear_bias=False, ln=1)


def gpt2_head_counted(vocab_size, block_size, n_layer, d_model):
    return _gpt2(vocab_size, block_size, n_layer, d_model, head=True)


def gpt2_no_positions(vocab_size, block_size, n_layer, d_model):
    return _gpt2(vocab_size, block_size, n_layer, d_model, positions=False)


def gpt2_no_final_ln(vocab_size, block_size, n_layer, d_model):
    return _gpt2(vocab_size, block_size, n_layer, d_model, final_ln=False)


def gpt2_no_layernorm(vocab_size, block_size, n_layer, d_model):
    return _gpt2(vocab_size, block_size, n_layer, d_model, ln=0, final_ln=False)


def gpt2_ln_weight_only(vocab_size, block_size, n_layer, d_model):
    return _gpt2(vocab_size, block_size, n_layer, d_model, ln=1)


def gpt2_matrices_only(vocab_size, block_size, n_layer, d_model):
    return _gpt2(vocab_size, block_size, n_layer, d_model, linear_bias=False, ln=0, final_ln=False)


# ---------------------------------------------------------------------------------------------------
# 06.4 Llama parameter count (GQA, SwiGLU, RMSNorm, no biases, untied head)


def _llama(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, *, kv_heads=None, kv_width=None,
           ffn_mats=3, norm=1, bias=False, head=True, final_norm=True):
    d, hd = d_model, d_model // n_head
    kv = (n_kv_head if kv_heads is None else kv_heads) * hd if kv_width is None else kv_width
    attn = 2 * d * d + 2 * d * kv + ((2 * d + 2 * kv) if bias else 0)
    mlp = ffn_mats * d * ffn_hidden + (((ffn_mats - 1) * ffn_hidden + d) if bias else 0)
    per_layer = attn + mlp + 2 * norm * d
    return vocab_size * d * (2 if head else 1) + n_layer * per_layer + (norm * d if final_norm else 0)


def llama_kv_n_head(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    return _llama(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, kv_heads=n_head)


def llama_kv_no_head_dim(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    return _llama(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, kv_width=n_kv_head)


def llama_two_ffn_matrices(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    return _llama(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, ffn_mats=2)


def llama_tied_head(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    return _llama(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, head=False)


def llama_layernorm(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    return _llama(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, norm=2)


def llama_biases(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    return _llama(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, bias=True)


def llama_no_final_norm(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    return _llama(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, final_norm=False)


def llama_no_norms(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    return _llama(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, norm=0, final_norm=False)


# ---------------------------------------------------------------------------------------------------
# 06.5 warm-up + cosine learning rate


def _lr(step, lr, warmup, total, min_ratio, *, warm0=False, warm_plus_one=False, to_zero=False, over_total=False,
        clamp=True, no_half=False, linear=False, add_min=False):
    if warmup and step < warmup:
        return lr * (step if warm0 else step + 1) / (warmup + 1 if warm_plus_one else warmup)
    progress = step / total if over_total else (step - warmup) / max(total - warmup, 1)
    if clamp:
        progress = min(progress, 1.0)
    shape = 1 - progress if linear else (math.cos(math.pi * progress) if no_half
                                         else 0.5 * (1 + math.cos(math.pi * progress)))
    if to_zero:
        return lr * shape
    if add_min:
        return lr * shape + min_ratio * lr
    return lr * (min_ratio + (1 - min_ratio) * shape)


def lr_warmup_from_zero(step, lr, warmup, total, min_ratio):
    return _lr(step, lr, warmup, total, min_ratio, warm0=True)


def lr_warmup_plus_one(step, lr, warmup, total, min_ratio):
    return _lr(step, lr, warmup, total, min_ratio, warm_plus_one=True)  # nanoGPT's (step + 1) / (warmup + 1)


def lr_cosine_to_zero(step, lr, warmup, total, min_ratio):
    return _lr(step, lr, warmup, total, min_ratio, to_zero=True)


def lr_cosine_over_total(step, lr, warmup, total, min_ratio):
    return _lr(step, lr, warmup, total, min_ratio, over_total=True)


def lr_not_clamped(step, lr, warmup, total, min_ratio):
    return _lr(step, lr, warmup, total, min_ratio, clamp=False)


def lr_no_half(step, lr, warmup, total, min_ratio):
    return _lr(step, lr, warmup, total, min_ratio, no_half=True)


def lr_linear(step, lr, warmup, total, min_ratio):
    return _lr(step, lr, warmup, total, min_ratio, linear=True)


def lr_min_added(step, lr, warmup, total, min_ratio):
    return _lr(step, lr, warmup, total, min_ratio, add_min=True)


# ---------------------------------------------------------------------------------------------------
# 06.6 weight-decay groups


def _trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def decay_everything(model):
    return _trainable(model), []


def decay_by_bias_name(model):
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [p for n, p in named if "bias" not in n], [p for n, p in named if "bias" in n]


def decay_swapped(model):
    params = _trainable(model)
    return [p for p in params if p.dim() < 2], [p for p in params if p.dim() >= 2]


def decay_linear_only(model):
    """minGPT's older rule: decay nn.Linear weights only (embeddings are left out)."""
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    params = _trainable(model)
    return [p for p in params if id(p) in linear], [p for p in params if id(p) not in linear]
