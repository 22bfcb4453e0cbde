"""Learner solutions for exercises 07.x (inference and decoding), written from the notebook text only.

``valid_NN_k_*`` satisfy the task text of exercise NN.k; ``wrong_NN_k_*`` break the clause named above them.
"""
# Learner-style code on purpose (zip over ids and ids[1:], unused loop counters):
# ruff: noqa: B905, B007
import torch

# ---- 07.1 top_k_filter ----------------------------------------------------------------------------

# valid: threshold at the k-th largest value
def valid_07_1_threshold(logits, k):
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


# valid: scatter the top-k values into a -inf tensor
def valid_07_1_scatter(logits, k):
    vals, idx = logits.topk(k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, idx, vals)


# wrong: keeps k+1 (threshold at the (k+1)-th, <=) -- breaks "keep the k largest"
def wrong_07_1_k_plus_one(logits, k):
    if k == logits.shape[-1]:
        return logits.clone()
    kth = torch.topk(logits, k + 1, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


# wrong: one threshold for the whole batch -- breaks "Each row is filtered on its own"
def wrong_07_1_global(logits, k):
    kth = torch.topk(logits.flatten(), k).values[-1]
    return logits.masked_fill(logits < kth, float("-inf"))


# wrong: edits the input in place -- breaks "returning a new (B, V) tensor"
def wrong_07_1_in_place(logits, k):
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]
    return logits.masked_fill_(logits < kth, float("-inf"))


# ---- 07.2 top_p_filter ----------------------------------------------------------------------------

# valid: the recipe, scatter back
def valid_07_2_scatter(logits, p):
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    drop_sorted = (probs.cumsum(-1) - probs) >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


# valid: per-row Python loop, inverse permutation by argsort
def valid_07_2_loop(logits, p):
    out = logits.clone()
    for b in range(logits.shape[0]):
        row = logits[b]
        order = torch.argsort(row, descending=True)
        probs = torch.softmax(row[order], dim=-1)
        keep_sorted = torch.cumsum(probs, 0) - probs < p
        keep = keep_sorted[torch.argsort(order)]
        out[b][~keep] = float("-inf")
    return out


# wrong: cumsum < p (drops the token that crosses p) -- breaks "The token that brings the total to p ... is kept"
def wrong_07_2_cumsum_lt_p(logits, p):
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    keep_sorted = probs.cumsum(-1) < p
    keep_sorted[..., 0] = True
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return logits.masked_fill(~keep, float("-inf"))


# wrong: mask left in sorted order (not mapped back) -- breaks step 3 "map the mask ... back to vocabulary order"
def wrong_07_2_no_unsort(logits, p):
    sorted_logits, _ = torch.sort(logits, descending=True, dim=-1)
    probs = torch.softmax(sorted_logits, dim=-1)
    drop = (probs.cumsum(-1) - probs) >= p
    return logits.masked_fill(drop, float("-inf"))


# wrong: probabilities with the softmax of the raw logits treated as already normalised (exp) -- breaks "take the
# softmax of the sorted row"
def wrong_07_2_exp_not_softmax(logits, p):
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.exp()
    drop_sorted = (probs.cumsum(-1) - probs) >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


# ---- 07.3 repetition_penalty ----------------------------------------------------------------------

# valid: gather / where / scatter (HF's way; duplicates scatter the same value)
def valid_07_3_gather(logits, prev_ids, theta):
    picked = logits.gather(-1, prev_ids)
    picked = torch.where(picked > 0, picked / theta, picked * theta)
    return logits.scatter(-1, prev_ids, picked)


# valid: Python loops over rows and the set of tokens
def valid_07_3_loops(logits, prev_ids, theta):
    out = logits.clone()
    for b in range(logits.shape[0]):
        for t in set(prev_ids[b].tolist()):
            v = out[b, t]
            out[b, t] = v / theta if v > 0 else v * theta
    return out


# wrong: divides every logit by theta -- breaks the sign rule ("logit * theta otherwise")
def wrong_07_3_always_divide(logits, prev_ids, theta):
    picked = logits.gather(-1, prev_ids) / theta
    return logits.scatter(-1, prev_ids, picked)


# wrong: penalises once per occurrence -- breaks "applied once per token that occurs, however many times"
def wrong_07_3_per_occurrence(logits, prev_ids, theta):
    out = logits.clone()
    for b in range(logits.shape[0]):
        for t in prev_ids[b].tolist():
            v = out[b, t]
            out[b, t] = v / theta if v > 0 else v * theta
    return out


# wrong: uses the history of row 0 for every row -- breaks "row b being the history of sequence b"
def wrong_07_3_first_row_history(logits, prev_ids, theta):
    return valid_07_3_gather(logits, prev_ids[:1].expand_as(prev_ids), theta)


# ---- 07.4 greedy_generate -------------------------------------------------------------------------

# valid: the recipe
@torch.no_grad()
def valid_07_4_recipe(model, idx, n):
    caches = model.make_kv_caches()
    out = idx
    if n == 0:
        return idx.clone()
    logits, _ = model(idx, kv_caches=caches)
    nxt = logits[:, -1, :].argmax(-1, keepdim=True)
    out = torch.cat([out, nxt], dim=1)
    for _ in range(n - 1):
        logits, _ = model(nxt, kv_caches=caches)
        nxt = logits[:, -1, :].argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], dim=1)
    return out


# valid: tokens collected in a list, the step loop written with the "feed" variable, cat at the end
@torch.no_grad()
def valid_07_4_list(model, idx, n):
    caches = model.make_kv_caches()
    new = []
    feed = idx
    for _ in range(n):
        logits, _ = model(feed, kv_caches=caches)
        feed = torch.argmax(logits[:, -1], dim=-1).unsqueeze(1)
        new.append(feed)
    return torch.cat([idx, *new], dim=1)


# wrong: no cache, re-runs the whole sequence each step -- breaks "then each further step feeds only the newest token"
@torch.no_grad()
def wrong_07_4_no_cache(model, idx, n):
    out = idx
    for _ in range(n):
        logits, _ = model(out)
        out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return out


# wrong: one call too many (computes a token after the last and discards it) -- breaks "n calls in all"
@torch.no_grad()
def wrong_07_4_extra_call(model, idx, n):
    caches = model.make_kv_caches()
    logits, _ = model(idx, kv_caches=caches)
    out = idx
    for _ in range(n):
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], dim=1)
        logits, _ = model(nxt, kv_caches=caches)
    return out


# wrong: argmax over the first position's logits -- breaks "the argmax of the last position's logits"
@torch.no_grad()
def wrong_07_4_first_position(model, idx, n):
    caches = model.make_kv_caches()
    feed, new = idx, []
    for _ in range(n):
        logits, _ = model(feed, kv_caches=caches)
        feed = logits[:, 0].argmax(-1, keepdim=True)
        new.append(feed)
    return torch.cat([idx, *new], dim=1)


# wrong: returns only the new tokens -- breaks "return the (B, T + n) tensor of the prompt followed by the new tokens"
@torch.no_grad()
def wrong_07_4_new_only(model, idx, n):
    return valid_07_4_list(model, idx, n)[:, idx.shape[1]:]


# ---- 07.5 inference_memory_gb ---------------------------------------------------------------------

# valid: the formula
def valid_07_5_formula(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch):
    return (n_params + 2 * n_layer * n_kv_head * head_dim * tokens * batch) * dtype.itemsize / 1e9


# valid: weights and cache separately, bytes from element_size, summed in GB
def valid_07_5_parts(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch):
    b = torch.tensor([], dtype=dtype).element_size()
    weights = n_params * b / 10 ** 9
    cache = 2 * n_layer * n_kv_head * head_dim * tokens * batch * b / 10 ** 9
    return float(weights + cache)


# wrong: GiB instead of GB -- breaks "GB, 10^9 bytes ... not GiB"
def wrong_07_5_gib(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch):
    return (n_params + 2 * n_layer * n_kv_head * head_dim * tokens * batch) * dtype.itemsize / 2 ** 30


# wrong: cache without batch -- breaks "for every token of every sequence of the batch"
def wrong_07_5_no_batch(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch):
    return (n_params + 2 * n_layer * n_kv_head * head_dim * tokens) * dtype.itemsize / 1e9


# wrong: cache always in fp16 (2 bytes) -- breaks "weights and cache both stored in dtype"
def wrong_07_5_cache_fp16(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch):
    return (n_params * dtype.itemsize + 2 * n_layer * n_kv_head * head_dim * tokens * batch * 2) / 1e9


# ---- 07.6 beam_step -------------------------------------------------------------------------------

# valid: flatten + topk
def valid_07_6_topk(scores, logp, num_beams):
    V = logp.shape[-1]
    cand = (scores[:, None] + logp).flatten()
    vals, f = torch.topk(cand, num_beams)
    return f // V, f % V, vals


# valid: full sort (descending) and divmod via torch.div
def valid_07_6_sort(scores, logp, num_beams):
    V = logp.shape[1]
    cand = (logp + scores.unsqueeze(1)).reshape(-1)
    vals, f = torch.sort(cand, descending=True)
    f = f[:num_beams]
    return torch.div(f, V, rounding_mode="floor"), torch.remainder(f, V), vals[:num_beams]


# wrong: best token per beam, then best beams (no several children per beam) -- breaks "keeps the num_beams best
# of them all together: one beam may get several children"
def wrong_07_6_per_beam(scores, logp, num_beams):
    cand = scores[:, None] + logp
    best, tok = cand.max(-1)
    k = min(num_beams, best.shape[0])
    vals, b = torch.topk(best, k)
    if k < num_beams:      # pad from the first beam's next-best tokens
        v2, t2 = torch.topk(cand[0], num_beams)
        extra = num_beams - k
        return (torch.cat([b, torch.zeros(extra, dtype=torch.long)]), torch.cat([tok[b], t2[1:extra + 1]]),
                torch.cat([vals, v2[1:extra + 1]]))
    return b, tok[b], vals


# wrong: ranks by logp only, ignoring the beams' totals -- breaks "candidates scores[b] + logp[b, t]"
def wrong_07_6_ignore_scores(scores, logp, num_beams):
    V = logp.shape[-1]
    vals, f = torch.topk(logp.flatten(), num_beams)
    return f // V, f % V, scores[f // V] + vals


# wrong: decodes the beam-major flat index with the number of beams (f // n_live, f % n_live) -- breaks
# "decode a flat index f as beam f // V, token f % V"
def wrong_07_6_decode_by_n_live(scores, logp, num_beams):
    n = logp.shape[0]
    vals, f = torch.topk((scores[:, None] + logp).flatten(), num_beams)
    return f // n, f % n, vals


# ---- second round: subtler cases ------------------------------------------------------------------

# wrong: prefill of all but the last prompt token, then the last token alone (n + 1 calls) -- breaks "one prefill
# of the whole prompt ... n calls in all"
@torch.no_grad()
def wrong_07_4_split_prefill(model, idx, n):
    caches = model.make_kv_caches()
    model(idx[:, :-1], kv_caches=caches)
    feed, new = idx[:, -1:], []
    for _ in range(n):
        logits, _ = model(feed, kv_caches=caches)
        feed = logits[:, -1].argmax(-1, keepdim=True)
        new.append(feed)
    return torch.cat([idx, *new], dim=1)


# wrong: worst first -- breaks "of length num_beams, best first"
def wrong_07_6_worst_first(scores, logp, num_beams):
    b, t, s = valid_07_6_topk(scores, logp, num_beams)
    return b.flip(0), t.flip(0), s.flip(0)


# wrong: keeps k tokens in place but returns the input tensor when k == V -- breaks "returning a new tensor"
def wrong_07_1_same_object_full_k(logits, k):
    if k == logits.shape[-1]:
        return logits
    return valid_07_1_threshold(logits, k)


# ---- third round ----------------------------------------------------------------------------------

# wrong: one argmax over the whole batch (a single token for all rows) -- breaks "each the argmax of the last
# position's logits" of its own row (visible with B > 1)
@torch.no_grad()
def wrong_07_4_batch_flat_argmax(model, idx, n):
    caches = model.make_kv_caches()
    feed, new = idx, []
    for _ in range(n):
        logits, _ = model(feed, kv_caches=caches)
        last = logits[:, -1]
        tok = last.argmax() % last.shape[-1]
        feed = tok.expand(idx.shape[0], 1).clone()
        new.append(feed)
    return torch.cat([idx, *new], dim=1)


# wrong: the union of all rows' histories penalises every row -- breaks "row b being the history of sequence b"
def wrong_07_3_union(logits, prev_ids, theta):
    allp = prev_ids.flatten()[None].expand(logits.shape[0], -1)
    return valid_07_3_gather(logits, allp, theta)


# wrong: new_scores are the token log-probs only -- breaks "has total new_scores[i]"
def wrong_07_6_scores_without_prefix(scores, logp, num_beams):
    b, t, _ = valid_07_6_topk(scores, logp, num_beams)
    return b, t, logp[b, t]


# valid: candidates ranked in a Python list of (score, beam, token), returned as tensors
def valid_07_6_python(scores, logp, num_beams):
    cand = [(float(scores[b] + logp[b, t]), b, t) for b in range(logp.shape[0]) for t in range(logp.shape[1])]
    cand.sort(key=lambda c: -c[0])
    top = cand[:num_beams]
    return (torch.tensor([c[1] for c in top]), torch.tensor([c[2] for c in top]),
            torch.tensor([c[0] for c in top], dtype=logp.dtype))


# ---- fourth round ---------------------------------------------------------------------------------

# wrong: scatter_ into the caller's logits -- breaks "returning new (B, V) logits"
def wrong_07_3_in_place(logits, prev_ids, theta):
    picked = logits.gather(-1, prev_ids)
    picked = torch.where(picked > 0, picked / theta, picked * theta)
    return logits.scatter_(-1, prev_ids, picked)


# wrong: a first call without caches "to see the shapes", then the recipe -- breaks "make_kv_caches() once, before
# anything else" and "n calls in all"
@torch.no_grad()
def wrong_07_4_warmup_call(model, idx, n):
    model(idx)
    return valid_07_4_recipe(model, idx, n)


# valid: two-stage top-k (each beam's num_beams best, then the best of those): the global top num_beams are
# always among them
def valid_07_6_two_stage(scores, logp, num_beams):
    V = logp.shape[-1]
    k1 = min(num_beams, V)
    v1, t1 = (scores[:, None] + logp).topk(k1, dim=-1)                 # (n_live, k1)
    v2, f = v1.flatten().topk(num_beams)
    b = torch.div(f, k1, rounding_mode="floor")
    return b, t1.flatten()[f], v2
