# Cells for exercises/src/09_peft.py (chapter 9.4, prompt methods), in the same percent format: paste them after
# the last exercise of 09_peft.py (drop the import cell here: 09_peft.py imports torch and check already), add
# "and 9.4 (09.7)" to its "Read first" line, then delete this file (two 09_*.py sources break
# exercise_kit.source("09")). Checker: minillm/grading/ch09_prompts.py (PROMPT_EXERCISES, id 09.7).

# %%
import torch

from minillm.grading import check

# %% [markdown]
# ## 09.7 Attention with a prefix of keys and values (2 points)
#
# Read first: [9.4 Adapters and prompts](../notebooks/09_peft/04_adapters_prompts.ipynb), section 4. Prefix tuning
# and P-tuning v2 give every attention layer $P$ trained key/value pairs that no token produced. Write
# `prefix_attention(q, k, v, prefix_k, prefix_v)` for one layer of a decoder:
#
# * `q`, `k`, `v` of shape `(B, H, T, D)`: the queries, keys and values of the $T$ real tokens (already
#   projected, one head per `H`);
# * `prefix_k`, `prefix_v` of shape `(B, H, P, D)`, $P \ge 0$: the prefix's keys and values.
#
# Each query attends to **every** prefix key and to the real keys **up to and including its own position**,
# with scaled dot-product attention (scores divided by $\sqrt{D}$, one softmax over all the keys it may see).
# Return the outputs, shape `(B, H, T, D)`. With $P = 0$ this is ordinary causal attention. The check allows
# $10^{-5}$ times the largest expected $|\text{value}|$ (at least 1) on every value, so float32 passes.
#
# Worked example: $B = H = 1$, $P = 2$, $T = 3$, $D = 1$, every query 1 and every key 0 (all scores equal, so
# a query's weights are uniform over the keys it sees), `prefix_v = [6, 0]`, `v = [3, 1, 5]`:
# the outputs are $(6 + 0 + 3) / 3 = 3$, $(6 + 0 + 3 + 1) / 4 = 2.5$ and $(6 + 0 + 3 + 1 + 5) / 5 = 3$,
# i.e. `[3, 2.5, 3]`.

# %%
def prefix_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, prefix_k: torch.Tensor,
                     prefix_v: torch.Tensor) -> torch.Tensor:
    """(B, H, T, D): each real token's attention over the whole prefix and the real tokens up to itself."""
    # BEGIN SOLUTION 09.7: return every query's attention output over the prefix and the causal real keys
    P, T = prefix_k.shape[2], q.shape[2]
    keys = torch.cat([prefix_k, k], dim=2)  # (B, H, P + T, D)
    values = torch.cat([prefix_v, v], dim=2)
    scores = q @ keys.transpose(-2, -1) / q.shape[-1] ** 0.5  # (B, H, T, P + T)
    # query t sees key j of the concatenation when j < P (the prefix) or j - P <= t (a real key up to t)
    allowed = torch.arange(P + T)[None, :] <= torch.arange(T)[:, None] + P  # (T, P + T)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ values
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Put the prefix keys in front of the real keys (and the prefix values in front of the real values): then one
# attention over $P + T$ keys does it, with a mask that hides only the real keys after each query.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Query $t$ may see key $j$ of the concatenation when $j \le t + P$. Fill the other scores with $-\infty$ before
# one softmax over the last dimension, then multiply by the concatenated values.
#
# </details>

# %%
check("09.7", prefix_attention)
