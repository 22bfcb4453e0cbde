"""Simulated wrong solutions of the chapter 7 exercises, used by ch07.py to name a learner's mistake.

Each function reproduces one common mistake: a top-k filter that keeps k + 1 or k - 1 tokens, sets the
others to 0, keeps the smallest, takes one threshold for the whole batch or returns probabilities; a
top-p filter that drops the token crossing p, can drop the top token, accumulates from the least likely
token, accumulates logits, or leaves its mask or its result in sorted order; a repetition penalty that
divides negative logits too, swaps the two cases, compounds per occurrence, penalises the unseen tokens or
shares one history across the batch; greedy decoding that reads the first position's logits at the
prefill or keeps feeding the prompt's last token; memory estimates in bits or GiB, without the factor 2,
the KV cache, the batch or the layers; a beam-search step that forgets the beams' scores, takes each
beam's top tokens separately, decodes the flat index with the wrong divisor, keeps the worst candidates
or returns probabilities. They are deliberately wrong: never use them as references.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")

# ---------------------------------------------------------------------------------------------------
# 07.1 top-k


def _kth(logits, k):
    return torch.topk(logits, k, dim=-1).values[:, -1:]


def topk_keeps_k_plus_1(logits, k):
    k1 = min(k + 1, logits.shape[-1])
    return logits.masked_fill(logits < _kth(logits, k1), NEG_INF)


def topk_keeps_k_minus_1(logits, k):
    return logits.masked_fill(logits <= _kth(logits, k), NEG_INF)  # the k-th itself is dropped


def topk_zero_not_inf(logits, k):
    return logits.masked_fill(logits < _kth(logits, k), 0.0)


def topk_smallest(logits, k):
    kth = torch.topk(logits, k, dim=-1, largest=False).values[:, -1:]
    return logits.masked_fill(logits > kth, NEG_INF)


def topk_whole_batch(logits, k):
    kth = torch.topk(logits.flatten(), k).values[-1]  # one threshold for every row
    return logits.masked_fill(logits < kth, NEG_INF)


def topk_probabilities(logits, k):
    return torch.softmax(logits.masked_fill(logits < _kth(logits, k), NEG_INF), dim=-1)


# ---------------------------------------------------------------------------------------------------
# 07.2 top-p


def _sorted_probs(logits, descending=True):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=descending)
    return sorted_logits, order, torch.softmax(sorted_logits, dim=-1)


def _unsort(drop_sorted, order):
    return torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)


def topp_drops_crossing_token(logits, p):
    _, order, probs = _sorted_probs(logits)
    drop = probs.cumsum(-1) >= p  # the token that brings the mass to p is dropped
    drop[:, 0] = False
    return logits.masked_fill(_unsort(drop, order), NEG_INF)


def topp_top_not_kept(logits, p):
    _, order, probs = _sorted_probs(logits)
    drop = probs.cumsum(-1) >= p  # when the top token alone holds p, nothing is left
    return logits.masked_fill(_unsort(drop, order), NEG_INF)


def topp_from_least_likely(logits, p):
    _, order, probs = _sorted_probs(logits, descending=False)
    drop = probs.cumsum(-1) - probs >= p
    drop[:, 0] = False
    return logits.masked_fill(_unsort(drop, order), NEG_INF)


def topp_on_logits(logits, p):
    sorted_logits, order, _ = _sorted_probs(logits)
    drop = sorted_logits.cumsum(-1) - sorted_logits >= p  # logits summed as if they were probabilities
    drop[:, 0] = False
    return logits.masked_fill(_unsort(drop, order), NEG_INF)


def topp_mask_not_unsorted(logits, p):
    _, _, probs = _sorted_probs(logits)
    drop = probs.cumsum(-1) - probs >= p
    drop[:, 0] = False
    return logits.masked_fill(drop, NEG_INF)  # a mask in sorted order applied to vocabulary order


def topp_returns_sorted(logits, p):
    sorted_logits, _, probs = _sorted_probs(logits)
    drop = probs.cumsum(-1) - probs >= p
    drop[:, 0] = False
    return sorted_logits.masked_fill(drop, NEG_INF)  # right tokens, but in sorted order


# ---------------------------------------------------------------------------------------------------
# 07.3 repetition penalty (CTRL)


def _seen(logits, prev_ids):
    return torch.zeros_like(logits, dtype=torch.bool).scatter(-1, prev_ids, True)


def _counts(logits, prev_ids):
    return torch.zeros_like(logits).scatter_add(-1, prev_ids, torch.ones_like(prev_ids, dtype=logits.dtype))


def rep_divides_all(logits, prev_ids, theta):
    return torch.where(_seen(logits, prev_ids), logits / theta, logits)


def rep_swapped(logits, prev_ids, theta):
    return torch.where(_seen(logits, prev_ids), torch.where(logits > 0, logits * theta, logits / theta), logits)


def rep_per_occurrence(logits, prev_ids, theta):
    factor = theta ** _counts(logits, prev_ids)
    return torch.where(logits > 0, logits / factor, logits * factor)


def rep_unseen(logits, prev_ids, theta):
    penalised = torch.where(logits > 0, logits / theta, logits * theta)
    return torch.where(_seen(logits, prev_ids), logits, penalised)


def rep_shared_history(logits, prev_ids, theta):
    seen = torch.zeros(logits.shape[-1], dtype=torch.bool)
    seen[prev_ids.flatten()] = True  # one set of tokens for every row
    penalised = torch.where(logits > 0, logits / theta, logits * theta)
    return torch.where(seen, penalised, logits)


# ---------------------------------------------------------------------------------------------------
# 07.4 greedy decoding with a KV cache


def _greedy(model, idx, n, *, first_position=False, stale=False):
    caches = model.make_kv_caches()
    logits, _ = model(idx, kv_caches=caches)
    out = idx
    for step in range(n):
        row = logits[:, 0] if first_position and step == 0 else logits[:, -1]
        nxt = row.argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], dim=1)
        if step < n - 1:
            logits, _ = model(idx[:, -1:] if stale else nxt, kv_caches=caches)
    return out


def gen_first_position(model, idx, n):
    return _greedy(model, idx, n, first_position=True)


def gen_stale_token(model, idx, n):
    return _greedy(model, idx, n, stale=True)


# ---------------------------------------------------------------------------------------------------
# 07.5 inference memory


def _memory(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch, *, unit=1e9, size=None, kv_factor=2,
            kv=True, use_batch=True, layers=True):
    size = dtype.itemsize if size is None else size
    kv_bytes = (kv_factor * (n_layer if layers else 1) * n_kv_head * head_dim * tokens * (batch if use_batch else 1)
                * size) if kv else 0
    return (n_params * size + kv_bytes) / unit


def mem_bits(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch):
    return _memory(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch, size=torch.finfo(dtype).bits)


def mem_gib(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch):
    return _memory(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch, unit=2**30)


def mem_no_factor_2(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch):
    return _memory(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch, kv_factor=1)


def mem_weights_only(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch):
    return _memory(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch, kv=False)


def mem_no_batch(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch):
    return _memory(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch, use_batch=False)


def mem_no_layers(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch):
    return _memory(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch, layers=False)


# ---------------------------------------------------------------------------------------------------
# 07.6 one step of beam search


def _decode(flat, V):
    return flat // V, flat % V


def beam_no_past(scores, logp, num_beams):
    top = torch.topk(logp.flatten(), num_beams)  # ranked by the new token alone
    beam, token = _decode(top.indices, logp.shape[-1])
    return beam, token, scores[beam] + logp[beam, token]


def beam_per_row_topk(scores, logp, num_beams):
    total = scores[:, None] + logp
    top = torch.topk(total, min(num_beams, logp.shape[-1]), dim=-1)  # (n_live, k) per beam, in beam order
    beam = torch.arange(logp.shape[0])[:, None].expand_as(top.indices).flatten()[:num_beams]
    return beam, top.indices.flatten()[:num_beams], top.values.flatten()[:num_beams]


def beam_per_beam_best(scores, logp, num_beams):
    best = (scores[:, None] + logp).max(dim=-1)  # each beam extends by its own best token only
    order = torch.argsort(best.values, descending=True)[:num_beams]
    return order, best.indices[order], best.values[order]


def beam_wrong_divisor(scores, logp, num_beams):
    n_live = logp.shape[0]
    top = torch.topk((scores[:, None] + logp).flatten(), num_beams)
    return top.indices % n_live, top.indices // n_live, top.values  # decoded with n_live instead of V


def beam_lowest(scores, logp, num_beams):
    top = torch.topk((scores[:, None] + logp).flatten(), num_beams, largest=False)
    beam, token = _decode(top.indices, logp.shape[-1])
    return beam, token, top.values


def beam_probabilities_multiplied(scores, logp, num_beams):
    total = torch.exp(scores)[:, None] * torch.exp(logp)  # right ranking, but a probability, not a log-prob
    top = torch.topk(total.flatten(), num_beams)
    beam, token = _decode(top.indices, logp.shape[-1])
    return beam, token, top.values

