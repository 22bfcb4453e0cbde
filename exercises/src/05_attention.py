# Solution source of exercises/05_attention.ipynb (percent format: "# %%" starts a code cell,
# "# %% [markdown]" a markdown cell). Regenerate the learner notebook with
#     .venv/bin/python tools/build_exercises.py
# then execute it with  .venv/bin/python tools/execute_notebooks.py exercises/05_attention.ipynb
# Code between "# BEGIN SOLUTION <id>: <task>" and "# END SOLUTION" becomes
# raise NotImplementedError("Exercise <id>: <task>") in the learner notebook.

# %% [markdown]
# # Exercises 5: Attention variants
#
# Six functions, one per idea of this chapter: scaled dot-product attention with a boolean mask, the
# causal mask of a model decoding with a KV cache, grouped-query attention, the size of a KV cache,
# FlashAttention's forward pass with its online softmax, and the conversion of a multi-head layer's key
# and value heads into GQA's fewer heads.
#
# Each exercise is a function whose body is a stub raising `NotImplementedError`. Replace the `raise`
# line with your code and run the check cell below it: it compares your function with the `minillm`
# reference on the worked examples shown here and on random inputs, and prints ✅ (passed), ❌ with a
# hint (naming the mistake when it recognises a common one) or ⬜ (not attempted). A check never raises.
# For a score report run `minillm grade exercises/05_attention.ipynb`; see
# [How grading works](../book/grading.md).
#
# Read first: [5.1 Attention, masks, MHA / MQA / GQA](../notebooks/05_attention/01_attention_masks_gqa.ipynb)
# (05.1, 05.2, 05.3, 05.4, 05.6) and [5.2 FlashAttention](../notebooks/05_attention/02_flash_attention.ipynb)
# (05.5). Use plain tensor operations: `torch.nn.functional.scaled_dot_product_attention` would take the
# exercise away from you. Inputs are float64; the checks allow $10^{-6}$ times $\max(1, |\text{expected}|)$
# on floats and want masks and byte counts exactly.

# %%
import math

import torch

from minillm.grading import check

# %% [markdown]
# ## 05.1 Scaled dot-product attention (2 points)
#
# Write `attention(q, k, v, mask=None)` for `q` of shape `(..., T, D)`, `k` of shape `(..., S, D)` and
# `v` of shape `(..., S, D_v)`, returning `(..., T, D_v)`:
#
# $$\text{Attention}(Q, K, V) = \text{softmax}\!\left(\frac{QK^\top}{\sqrt D}\right)V,$$
#
# the softmax taken over the **keys** (the last dimension of the `(..., T, S)` scores), so that each
# query's weights sum to 1. `mask` is `None` or a **boolean** tensor broadcastable to `(..., T, S)`,
# `True` where the query may attend the key (the convention of `F.scaled_dot_product_attention`): a key
# the mask forbids gets weight **exactly 0**, and each query's remaining weights still sum to 1 (the
# softmax runs over the allowed keys only). Every mask in the check leaves each query at least one key.
#
# Worked example, $D = 4$ (so $\sqrt D = 2$), $v$ the $3\times3$ identity, so each output row is that
# query's weights: `q = [[2, 0, 0, 0], [0, 2, 0, 0], [2, 2, 0, 0]]`,
# `k = [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]]`.
#
# * $QK^\top/2$ = `[[1, 1, 0], [0, 1, 0], [1, 2, 0]]`;
# * no mask: the rows' softmaxes `[[0.422319, 0.422319, 0.155362], [0.211942, 0.576117, 0.211942],
#   [0.244728, 0.665241, 0.090031]]`;
# * with the causal mask `[[T, F, F], [T, T, F], [T, T, T]]`: query 0 sees only key 0, query 1 takes the
#   softmax of `[0, 1]`: `[[1, 0, 0], [0.268941, 0.731059, 0], [0.244728, 0.665241, 0.090031]]`.

# %%
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(D), over the keys) v; mask (bool, True = may attend) blocks scores before the softmax."""
    # BEGIN SOLUTION 05.1: return the attention output, one row per query
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Score every query against every key, scale, block what the mask forbids before normalising over the keys, then
# average the values.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `scores = q @ k^T / sqrt(D)`, shape `(..., T, S)`; set the forbidden scores to $-\infty$ **before** the softmax
# (`scores.masked_fill(~mask, float("-inf"))`); softmax over dim -1; `@ v`.
#
# </details>

# %%
check("05.1", attention)

# %% [markdown]
# ## 05.2 The causal mask with a KV cache (1 point)
#
# Write `causal_mask(T, S)` returning a `(T, S)` tensor of dtype `torch.bool`, `True` where query `i` may
# attend key `j`. During generation with a KV cache the `S` keys are the `S - T` tokens already in the
# cache followed by the `T` new ones ($S \ge T$), and the `T` queries are those new tokens, in order: every
# query sees every key up to and including its own position, none after it.
#
# So the diagonal is aligned **bottom-right** (as FlashAttention $\ge$ 2.1 does); with $S = T$ this is the
# usual lower triangle. A triangle anchored at the top-left corner (what torch's `is_causal=True` does)
# is right only when $S = T$. Worked examples (1 = `True`):
#
# * `causal_mask(3, 3)` = `[[1, 0, 0], [1, 1, 0], [1, 1, 1]]`;
# * `causal_mask(2, 4)` (2 tokens cached, queries at positions 2 and 3) = `[[1, 1, 1, 0], [1, 1, 1, 1]]`;
# * `causal_mask(1, 5)` (one decoding step) = `[[1, 1, 1, 1, 1]]`: the newest token sees everything.

# %%
def causal_mask(T: int, S: int) -> torch.Tensor:
    """(T, S) bool, True where query i may attend key j; diagonal aligned bottom-right (S >= T)."""
    # BEGIN SOLUTION 05.2: return the (T, S) causal mask
    i = torch.arange(T)[:, None]
    j = torch.arange(S)[None, :]
    return j <= i + (S - T)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Query i sits at absolute position i + S - T; compare positions with broadcasting.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# $\text{mask}[i, j] = \bigl(j \le i + S - T\bigr)$: `i = arange(T)[:, None], j = arange(S)[None, :];
# return j <= i + (S - T)`. (`torch.tril(torch.ones(T, S))` would align the diagonal top-left.)
#
# </details>

# %%
check("05.2", causal_mask)

# %% [markdown]
# ## 05.3 Grouped-query attention (1 point)
#
# In grouped-query attention `q` has `H` heads, `(B, H, T, D)`, but `k` and `v` only `H_kv` (a divisor
# of `H`), `(B, H_kv, S, D)`: each key/value head serves a group of $n_\text{rep} = H / H_\text{kv}$
# **consecutive** query heads, so query head `h` reads key/value head `h // n_rep` (MQA is $H_\text{kv} = 1$,
# MHA $H_\text{kv} = H$), not the tiled pairing of query head `h` with key/value head `h % H_kv`. Write
# `gqa_attention(q, k, v)` (no mask, 05.1's scaled dot-product attention within each head) returning
# `(B, H, T, D)`.
#
# Worked example: $H = 4$, $H_\text{kv} = 2$, $T = 1$, $S = 2$, $D = 2$, `q = 0` (so every weight is
# $\frac12$ and each output is the mean of its key/value head's two value rows), value head 0 =
# `[[1, 0], [3, 0]]` (mean `[2, 0]`), value head 1 = `[[0, 10], [0, 30]]` (mean `[0, 20]`). Query heads 0
# and 1 read head 0, heads 2 and 3 read head 1: the four outputs are `[2, 0], [2, 0], [0, 20], [0, 20]`
# (tiling would give `[2, 0], [0, 20], [2, 0], [0, 20]`).

# %%
def gqa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention of q (B, H, T, D) over k, v (B, H_kv, S, D): query head h uses kv head h // (H // H_kv)."""
    # BEGIN SOLUTION 05.3: return grouped-query attention, one output per query head
    n_rep = q.shape[1] // k.shape[1]
    return attention(q, k.repeat_interleave(n_rep, dim=1), v.repeat_interleave(n_rep, dim=1))
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Make k and v have as many heads as q, so that consecutive query heads share a key/value head; then your
# `attention` from 05.1 does the rest.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `n_rep = H // H_kv`; copy each key/value head `n_rep` times in place, as Llama's `repeat_kv` does:
# `k.repeat_interleave(n_rep, dim=1)` (same for v; `k.repeat(1, n_rep, 1, 1)` would tile instead); then
# `attention`.
#
# </details>

# %%
check("05.3", gqa_attention)

# %% [markdown]
# ## 05.4 The size of a KV cache (1 point)
#
# While generating, every layer keeps the keys **and** the values of every token of every sequence in the
# batch: per token and layer that is `n_kv_head * head_dim` numbers for the keys and as many for the
# values. Write `kv_cache_bytes(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype)`, the bytes of
# the whole cache (every layer, every token of length `seq_len` of every sequence, each element stored in
# `dtype`, a `torch.dtype`) as an `int`. `n_head` (the number of **query** heads) is given but does not
# enter: only key/value heads are cached, which is the whole point of GQA and MQA. Worked examples:
#
# * Llama-2-7B (32 layers, 32 heads, all key/value heads, head_dim 128), float16, one token:
#   $2\cdot32\cdot32\cdot128\cdot2 = 524{,}288$ bytes (0.5 MiB per token); 4096 tokens: $2^{31}$ bytes = 2 GiB;
# * Llama-2-70B (80 layers, 64 query heads, 8 key/value heads, head_dim 128), bfloat16, 4096 tokens, batch
#   8: $327{,}680$ bytes per token $\times\, 4096 \times 8 = 10{,}737{,}418{,}240$ bytes = 10 GiB (with 64
#   key/value heads it would be 80 GiB);
# * Mistral-7B (32 layers, 32 heads, 8 key/value heads, head_dim 128), bfloat16, 32768 tokens:
#   $131{,}072 \times 32768 = 4{,}294{,}967{,}296$ bytes = 4 GiB.

# %%
def kv_cache_bytes(n_layer: int, n_head: int, n_kv_head: int, head_dim: int, seq_len: int, batch: int,
                   dtype: torch.dtype) -> int:
    """Bytes of the KV cache of `batch` sequences of `seq_len` tokens (keys and values, every layer)."""
    # BEGIN SOLUTION 05.4: return the size of the KV cache in bytes
    return 2 * n_layer * n_kv_head * head_dim * seq_len * batch * dtype.itemsize
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Count what is stored per token per layer, for keys and for values, then scale up.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `2 (k and v) * n_layer * n_kv_head * head_dim * seq_len * batch * dtype.itemsize`: a dtype's size in bytes is
# `dtype.itemsize` (`torch.finfo(dtype).bits` counts bits).
#
# </details>

# %%
check("05.4", kv_cache_bytes)

# %% [markdown]
# ## 05.5 FlashAttention's forward pass (3 points)
#
# FlashAttention computes exact attention (05.1's formula, here without mask) but never forms the
# `(T, S)` score matrix: it reads the keys and values **one block of `block` keys at a time**, in order,
# and between blocks keeps only a few numbers per query besides one output row. Write
# `flash_forward(q, k, v, block)` for `q` `(..., T, D)`, `k` `(..., S, D)`, `v` `(..., S, D_v)`, returning
# the pair `(o, lse)`: `o` `(..., T, D_v)` is $\text{softmax}(qk^\top/\sqrt D)\,v$, and `lse` `(..., T)` is
# the log-sum-exp of each query's scaled scores $s_j$, $\text{lse} = \log\sum_j e^{s_j}$ (the backward
# pass recomputes the probabilities from it). The last block may be shorter. The check compares values
# only (it cannot see whether you tiled); its inputs include scores near $\pm1500$, where $e^{s}$
# overflows or underflows float64, and both outputs must still be finite and accurate there.
#
# Worked example: one query `q = [[1]]` ($D = 1$), keys `[[1], [3], [2]]` (scores 1, 3, 2), `v` the
# $3\times3$ identity, `block = 1`: $o$ = softmax(`[1, 3, 2]`) = `[0.090031, 0.665241, 0.244728]` and
# lse = $\log(e + e^3 + e^2)$ = 3.407606. Hint 2 below traces the three blocks.

# %%
def flash_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(o, lse) of softmax(q k^T / sqrt(D)) v, walking over blocks of `block` keys with an online softmax."""
    # BEGIN SOLUTION 05.5: return (o, lse) computed one block of keys at a time
    scale = 1.0 / math.sqrt(q.shape[-1])
    m = torch.full((*q.shape[:-1], 1), float("-inf"), dtype=q.dtype)
    l = torch.zeros_like(m)
    acc = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    for j0 in range(0, k.shape[-2], block):
        s = q @ k[..., j0:j0 + block, :].transpose(-2, -1) * scale
        m_new = torch.maximum(m, s.amax(dim=-1, keepdim=True))
        alpha = torch.exp(m - m_new)
        p = torch.exp(s - m_new)
        l = alpha * l + p.sum(dim=-1, keepdim=True)
        acc = alpha * acc + p @ v[..., j0:j0 + block, :]
        m = m_new
    return acc / l, (m + torch.log(l)).squeeze(-1)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Keep a running maximum, a running sum and an unnormalised output per query; when the maximum grows, correct what
# was accumulated.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Keep, per query, a running max $m$ of the scores seen so far, the running sum $\ell$ of $e^{s - m}$ and an
# unnormalised output $\text{acc} = \sum e^{s - m} v$. For each block of keys $K_j$ and values $V_j$:
#
# $$s = qK_j^\top/\sqrt D,\quad m' = \max\bigl(m, \max s\bigr),\quad \alpha = e^{m - m'},\quad
# p = e^{s - m'},$$
# $$\ell \leftarrow \alpha\,\ell + \textstyle\sum p,\qquad \text{acc} \leftarrow \alpha\,\text{acc} + p\,V_j,
# \qquad m \leftarrow m'.$$
#
# Start from $m = -\infty$, $\ell = 0$, $\text{acc} = 0$ ($\alpha = e^{-\infty} = 0$ on the first block).
# At the end $o = \text{acc}/\ell$ and $\text{lse} = m + \log\ell$. The worked example, one key per block:
#
# * key 0: $m = 1$, $\ell = 1$, acc = `[1, 0, 0]`;
# * key 1: $m' = 3$, $\alpha = e^{-2} = 0.135335$: $\ell = 0.135335 + 1 = 1.135335$, acc = `[0.135335, 1, 0]`;
# * key 2: $m' = 3$, $\alpha = 1$, $p = e^{-1} = 0.367879$: $\ell = 1.503215$, acc = `[0.135335, 1, 0.367879]`;
# * $o$ = acc / $\ell$ = `[0.090031, 0.665241, 0.244728]` = softmax(`[1, 3, 2]`), and
#   lse $= 3 + \log 1.503215 = 3.407606 = \log(e + e^3 + e^2)$.
#
# </details>

# %%
check("05.5", flash_forward)

# %% [markdown]
# ## 05.6 From MHA to GQA: pool the key/value heads (1 point)
#
# GQA's authors turn a trained multi-head checkpoint into a grouped-query one by **mean-pooling** the key
# (and value) projections of each group of consecutive heads, then train a little more. The key projection
# weight, as `nn.Linear` stores it, is `(n_head * head_dim, d_in)`: rows `h * head_dim` to
# `(h + 1) * head_dim - 1` produce head `h`. Write `pool_kv_heads(w, n_head, n_kv_head)` returning the
# `(n_kv_head * head_dim, d_in)` weight whose head `g` is the mean of old heads
# `g * group, ..., g * group + group - 1`, with `group = n_head / n_kv_head` and `head_dim` the number of
# rows of `w` divided by `n_head`.
#
# Worked examples with `w = [[1, 2, 0, 0], [3, 4, 0, 0], [0, 0, 5, 6], [0, 0, 7, 8]]`:
#
# * `n_head = 4` (head_dim 1, each row a head), `n_kv_head = 2`: heads {0, 1} and {2, 3} give
#   `[[2, 3, 0, 0], [0, 0, 6, 7]]`;
# * `n_head = 2` (head_dim 2: rows {0, 1} are head 0, rows {2, 3} head 1), `n_kv_head = 1` (MQA): the
#   mean of the two heads, row by row, `[[0.5, 1, 2.5, 3], [1.5, 2, 3.5, 4]]`.

# %%
def pool_kv_heads(w: torch.Tensor, n_head: int, n_kv_head: int) -> torch.Tensor:
    """(n_head * head_dim, d_in) -> (n_kv_head * head_dim, d_in): mean of each group of consecutive heads."""
    # BEGIN SOLUTION 05.6: return the pooled key (or value) projection weight
    head_dim, group = w.shape[0] // n_head, n_head // n_kv_head
    return w.reshape(n_kv_head, group, head_dim, w.shape[1]).mean(dim=1).reshape(n_kv_head * head_dim, w.shape[1])
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Consecutive heads form a group; view the rows per head and average within each group.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `reshape to (n_kv_head, group, head_dim, d_in), mean over the group axis, reshape back`
#
# </details>

# %%
check("05.6", pool_kv_heads)
