# Solution source of exercises/07_inference_decoding.ipynb (percent format: "# %%" starts a code cell,
# "# %% [markdown]" a markdown cell). Regenerate the learner notebook with
#     .venv/bin/python tools/build_exercises.py
# then execute it with  .venv/bin/python tools/execute_notebooks.py exercises/07_inference_decoding.ipynb
# Code between "# BEGIN SOLUTION <id>: <task>" and "# END SOLUTION" becomes
# raise NotImplementedError("Exercise <id>: <task>") in the learner notebook.

# %% [markdown]
# # Exercises 7: Inference and decoding
#
# Six functions, one per idea of this chapter: the top-k and top-p (nucleus) filters, CTRL's repetition
# penalty, greedy decoding with a KV cache, the memory it takes to serve a model, and one step of beam
# search.
#
# Each exercise is a function whose body is a stub raising `NotImplementedError`. Replace the `raise`
# line with your code and run the check cell below it: it compares your function with the `minillm`
# reference on the worked examples shown here and on random inputs, and prints ✅ (passed), ❌ with a
# hint (naming the mistake when it recognises a common one) or ⬜ (not attempted). A check never raises.
# For a score report run `minillm grade exercises/07_inference_decoding.ipynb`; see
# [How grading works](../book/grading.md).
#
# Read first: [7.1 Greedy, temperature, top-k, top-p, beam search](../notebooks/07_inference_decoding/01_decoding.ipynb)
# (07.1, 07.2, 07.6),
# [7.2 The KV cache and the memory of an nB model](../notebooks/07_inference_decoding/02_kv_cache_memory.ipynb)
# (07.4, 07.5) and [7.3 The repetition problem](../notebooks/07_inference_decoding/03_repetition.ipynb) (07.3).
# Logits are float64 of shape `(B, V)`, one row per sequence. The checks allow $10^{-6}$ times
# $\max(1, |\text{expected}|)$ on logits and scores and $10^{-6}$ relative on gigabytes, and want token ids,
# indices and the positions of $-\infty$ exactly.

# %%
import torch

from minillm.grading import check

# %% [markdown]
# ## 07.1 Top-k (1 point)
#
# Write `top_k_filter(logits, k)` for `logits` of shape `(B, V)` and $1 \le k \le V$: in each row keep the
# `k` largest logits and set every other one to $-\infty$ (so that the softmax gives them probability
# exactly 0), returning a new `(B, V)` tensor of logits. Each row is filtered on its own; the check has no
# ties. Worked examples
# with `logits = [[1, 3, -0.5, 2, 0], [0.5, -1, 2, 1.5, -2]]`:
#
# * `k = 2`: `[[-inf, 3, -inf, 2, -inf], [-inf, -inf, 2, 1.5, -inf]]`;
# * `k = 1` (greedy, as a filter): `[[-inf, 3, -inf, -inf, -inf], [-inf, -inf, 2, -inf, -inf]]`;
# * `k = 5` (= V): the same values as the logits, in a new tensor (the caller's logits stay as they were).

# %%
def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """(B, V) -> (B, V): the k largest logits of each row kept, the others -inf."""
    # BEGIN SOLUTION 07.1: return the logits with all but the top k set to -inf
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Find the k-th largest value of each row and compare against it.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `kth = topk(logits, k, dim=-1).values[:, -1:]; masked_fill(logits < kth, -inf)`
#
# </details>

# %%
check("07.1", top_k_filter)

# %% [markdown]
# ## 07.2 Top-p, nucleus sampling (2 points)
#
# Top-p keeps the smallest set of most likely tokens whose probabilities add up to at least `p`, so the
# number of kept tokens adapts to how sure the model is. Write `top_p_filter(logits, p)` for `(B, V)` logits
# and $0 < p < 1$, returning `(B, V)` logits, in vocabulary order, with the other tokens at $-\infty$. Per
# row, with the probabilities the softmax of the row gives: rank the tokens from most to least likely; a
# token is **kept** when the total probability of the tokens ranked **above** it is $< p$. So the token
# that brings the total to $p$ or past it is kept, and so is the most likely token, always.
#
# Worked example: one row with probabilities `[0.1, 0.4, 0.05, 0.3, 0.15]`, i.e. `logits = log(probs)` =
# `[-2.302585, -0.916291, -2.995732, -1.203973, -1.897120]`. Sorted, tokens 1, 3, 4, 0, 2 have probabilities
# 0.4, 0.3, 0.15, 0.1, 0.05 and the mass above them is 0, 0.4, 0.7, 0.85, 0.95:
#
# * `p = 0.75`: tokens 1, 3 and 4 are kept (0.7 < 0.75; together they hold 0.85):
#   `[-inf, -0.916291, -inf, -1.203973, -1.897120]`;
# * `p = 0.5`: tokens 1 and 3: `[-inf, -0.916291, -inf, -1.203973, -inf]`;
# * `p = 0.3`: token 1 alone holds more than p: `[-inf, -0.916291, -inf, -inf, -inf]`.

# %%
def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """(B, V) -> (B, V): keep the most likely tokens while the mass ranked above them is < p; the rest -inf."""
    # BEGIN SOLUTION 07.2: return the logits outside the nucleus set to -inf
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    drop_sorted = probs.cumsum(dim=-1) - probs >= p  # the mass of the tokens ranked above is already >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Sort, accumulate the probabilities, and keep a token while the mass before it is below p; undo the sort.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Sort each row in descending order (`torch.sort(..., descending=True)` also gives the `order`); `probs` = softmax
# of the sorted row; `drop = cumsum(probs) - probs >= p`; map the mask back to vocabulary order
# (`drop.scatter(-1, order, drop)` on a zero mask, or index with the inverse permutation); fill $-\infty$.
#
# </details>

# %%
check("07.2", top_p_filter)

# %% [markdown]
# ## 07.3 The repetition penalty (1 point)
#
# CTRL (Keskar et al. 2019) discourages a model from repeating itself: every token that already occurs in
# the sequence gets its logit divided by a factor $\theta > 1$. Dividing a negative logit would raise it,
# so Hugging Face's version, the one to write here, pushes by the sign:
#
# $$\text{logit} \leftarrow \begin{cases} \text{logit} / \theta & \text{if logit} > 0,\\
# \text{logit} \cdot \theta & \text{otherwise,} \end{cases}$$
#
# applied **once** per token that occurs, however many times it occurs (Hugging Face's
# `repetition_penalty`). Write `repetition_penalty(logits, prev_ids, theta)` for `logits` `(B, V)` and
# `prev_ids` `(B, T)` (the tokens so far, row `b` being the history of sequence `b`), returning new `(B, V)`
# logits. Worked example, `theta = 2`, `logits = [[2, -1, 0.5, -3, 1]]`:
#
# * `prev_ids = [[0, 1, 1, 3]]`: token 0 gives $2/2 = 1$, token 1 (twice, penalised once)
#   $-1\cdot2 = -2$, token 3 $-3\cdot2 = -6$; tokens 2 and 4 are untouched: `[[1, -2, 0.5, -6, 1]]`
#   (dividing $-1$ by 2 would give $-0.5$ and make token 1 **more** likely);
# * the same logits in a second row with history `[4, 4, 2, 2]`: `[[2, -1, 0.25, -3, 0.5]]`.

# %%
def repetition_penalty(logits: torch.Tensor, prev_ids: torch.Tensor, theta: float) -> torch.Tensor:
    """(B, V) -> (B, V): for the tokens in prev_ids[b], positive logits / theta, the others * theta."""
    # BEGIN SOLUTION 07.3: return the logits with the repetition penalty applied
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, prev_ids, True)
    penalised = torch.where(logits > 0, logits / theta, logits * theta)
    return torch.where(seen, penalised, logits)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Mark, per row, the tokens seen before; positive and negative logits are pushed down differently.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `seen = (B, V) bool, True at prev_ids (scatter); where(seen, where(l > 0, l / t, l * t), l)`
#
# </details>

# %%
check("07.3", repetition_penalty)

# %% [markdown]
# ## 07.4 Greedy decoding with a KV cache (2 points)
#
# Write `greedy_generate(model, idx, n)`: continue the prompts `idx` `(B, T)` by `n` tokens, each the argmax
# of the last position's logits, and return the `(B, T + n)` tensor of the prompt followed by the new tokens.
# `model` is a `minillm.model.GPT` (try `GPT(GPTConfig.preset("tiny"))`). Its KV-cache interface:
# `model.make_kv_caches()` returns fresh, empty caches (one per layer, room for `block_size` tokens), and
# `model(tokens, kv_caches=caches)` returns the pair `(logits, loss)`, with `logits` `(B, t, V)` for the `t`
# tokens fed; it places them after the `len(caches[0])` tokens already cached, lets them attend to those,
# and appends their keys and values to the caches. Use it this way:
#
# * make the caches **once**, before any call;
# * the **prefill**: one call with the whole prompt;
# * then each further call feeds **only the newest token**, shape `(B, 1)`.
#
# The check gives you a stand-in for the model that forwards every call and records what it was fed: it
# wants one prefill of the whole prompt, then one token per call, always with the caches, and the same
# tokens as `minillm.generate.generate` with temperature 0. Feeding more than one token to filled caches
# raises at once. Worked example of the calls, prompt of `T = 3` tokens, `n = 3`:
#
# | call | tokens fed | cached before | positions | gives |
# |---|---|---|---|---|
# | 1 (prefill) | 3 (the prompt) | 0 | 0, 1, 2 | new token 1 |
# | 2 | 1 (new token 1) | 3 | 3 | new token 2 |
# | 3 | 1 (new token 2) | 4 | 4 | new token 3 |
#
# New token 3 needs no further call: `n` calls in all for `n` new tokens. The check counts the calls, and one
# of its prompts has `block_size - 4` tokens with `n = 5`: the last new token would sit at position
# `block_size`, which the model has no room for, so a call that feeds it fails.

# %%
@torch.no_grad()
def greedy_generate(model, idx: torch.Tensor, n: int) -> torch.Tensor:
    """idx (B, T) -> (B, T + n): n greedy tokens, the prompt prefilled once, then one token per step."""
    # BEGIN SOLUTION 07.4: return idx followed by n greedily generated tokens
    caches = model.make_kv_caches()
    logits, _ = model(idx, kv_caches=caches)  # the prefill: (B, T, V)
    out = idx
    for step in range(n):
        nxt = logits[:, -1, :].argmax(dim=-1, keepdim=True)  # (B, 1)
        out = torch.cat([out, nxt], dim=1)
        if step < n - 1:
            logits, _ = model(nxt, kv_caches=caches)  # (B, 1, V)
    return out
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Fill the caches with the whole prompt once, then feed one token per step.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `caches = model.make_kv_caches()`; `logits, _ = model(idx, kv_caches=caches)`; the next token is the argmax of
# `logits[:, -1, :]` `(B, V)`; then `logits, _ = model(nxt, kv_caches=caches)` with `nxt` of shape `(B, 1)`.
#
# </details>

# %%
check("07.4", greedy_generate)

# %% [markdown]
# ## 07.5 How much memory does serving take? (1 point)
#
# To first order, serving a model takes its **weights**, `n_params` numbers, plus the **KV cache**: per
# token, per layer, the keys and the values, `n_kv_head * head_dim` numbers each, for every token of every
# sequence of the batch. Write `inference_memory_gb(n_params, dtype, n_layer, n_kv_head, head_dim, tokens,
# batch)` returning the total in **GB, $10^9$ bytes** (as in "a 7B model in fp16 takes 14 GB"; not GiB,
# $2^{30}$), with weights and cache both stored in `dtype` (a `torch.dtype`). Activations and the
# framework's overhead (10-20% in practice) are left out. Worked examples:
#
# * 7B parameters in float16, no cache (`tokens = 0`): $7\cdot10^9 \cdot 2 / 10^9 = 14$ GB;
# * Llama-2-7B ($6{,}738{,}415{,}616$ parameters, 32 layers, 32 key/value heads of 128) in bfloat16, 4096
#   tokens, batch 1: weights $13.476831$ GB + cache $2{,}147{,}483{,}648$ bytes $= 2.147484$ GB: $15.624315$ GB;
# * the same in float32: $26.953662 + 4.294967 = 31.248630$ GB;
# * Llama-2-70B ($68{,}976{,}648{,}192$ parameters, 80 layers, 8 key/value heads of 128) in bfloat16, 4096
#   tokens, batch 8: $137.953296 + 10.737418 = 148.690715$ GB, two 80 GB GPUs at least.

# %%
def inference_memory_gb(n_params: float, dtype: torch.dtype, n_layer: int, n_kv_head: int, head_dim: int,
                        tokens: int, batch: int) -> float:
    """GB (1e9 bytes) of the weights plus the KV cache, both in dtype."""
    # BEGIN SOLUTION 07.5: return the serving memory in GB
    kv_numbers = 2 * n_layer * n_kv_head * head_dim * tokens * batch
    return (n_params + kv_numbers) * dtype.itemsize / 1e9
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# The weights plus the KV cache of every sequence, in bytes, divided by 1e9.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `(n_params + 2 * n_layer * n_kv_head * head_dim * tokens * batch) * dtype.itemsize / 1e9`; `dtype.itemsize` is
# the bytes per number.
#
# </details>

# %%
check("07.5", inference_memory_gb)

# %% [markdown]
# ## 07.6 One step of beam search (2 points)
#
# Beam search keeps the `num_beams` prefixes of highest total log-probability. One step takes the live
# beams' totals `scores` `(n_live,)` and their next-token log-probabilities `logp` `(n_live, V)`, forms
# all $n_\text{live} \times V$ candidates `scores[b] + logp[b, t]`, and keeps the `num_beams` best of them
# **all together**: one beam may get several children and another none. Write
# `beam_step(scores, logp, num_beams)` returning a triple `(beam_idx, token_idx, new_scores)` of length
# `num_beams`, best first: candidate `i` extends beam `beam_idx[i]` by token `token_idx[i]` and has total
# `new_scores[i]`. At the first step there is one beam (`n_live = 1`) and `num_beams` of its tokens are kept.
#
# Worked example, `scores = [-1.0, -0.5]`, probabilities `[[0.6, 0.3, 0.1], [0.5, 0.45, 0.05]]`
# (`logp` is their log):
#
# | | token 0 | token 1 | token 2 |
# |---|---|---|---|
# | beam 0 ($-1.0$) | $-1.510826$ | $-2.203973$ | $-3.302585$ |
# | beam 1 ($-0.5$) | $-1.193147$ | $-1.298508$ | $-3.495732$ |
#
# With `num_beams = 2` both survivors are children of beam 1: `beam_idx = [1, 1]`, `token_idx = [0, 1]`,
# `new_scores = [-1.193147, -1.298508]`, although beam 0's best token (0.6) is more likely than any of
# beam 1's. With `num_beams = 3` the third is beam 0, token 0, $-1.510826$.

# %%
def beam_step(scores: torch.Tensor, logp: torch.Tensor, num_beams: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  torch.Tensor]:
    """The num_beams best candidates scores[b] + logp[b, t]: (beam_idx, token_idx, new_scores), best first."""
    # BEGIN SOLUTION 07.6: return (beam_idx, token_idx, new_scores), best first
    V = logp.shape[-1]
    top = torch.topk((scores[:, None] + logp).flatten(), num_beams)
    return top.indices // V, top.indices % V, top.values
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Score every continuation of every beam, take the best over all of them at once, and recover beam and token from
# the flat index.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `total = scores[:, None] + logp`; `torch.topk` over `total.flatten()`; decode a flat index `f` as beam `f // V`,
# token `f % V`.
#
# </details>

# %%
check("07.6", beam_step)
