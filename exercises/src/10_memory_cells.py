# Exercise cells of chapter 10, part "memory" (10.1 where training memory goes, 10.2 activation checkpointing),
# to be joined into exercises/src/10_*.py by the coordinator (percent format: "# %%" starts a code cell,
# "# %% [markdown]" a markdown cell). Code between "# BEGIN SOLUTION <id>: <task>" and "# END SOLUTION" becomes
# raise NotImplementedError("Exercise <id>: <task>") in the learner notebook. The ids may be renumbered.

# %%
from minillm.grading import check  # (already in the chapter's first code cell once the cells are joined)

# %% [markdown]
# ## 10.1 Bytes of the model states in training (2 points)
#
# Read first: [10.1 Where training memory goes](../notebooks/10_memory_amp/01_memory_flops.ipynb). Before any
# activation, a training step holds for every parameter its weight, its gradient and the optimizer's states. The
# model is Llama-shaped: no biases, RoPE (no position table), per layer the projections q and o ($d \times d$), k and
# v ($d \times$ `n_kv_head` heads of $d / n_\text{head}$), a SwiGLU MLP of three $d \times$ `ffn_hidden` matrices and
# two RMSNorm gains of $d$; a final RMSNorm gain of $d$; the token embedding ($V \times d$); an lm_head ($d \times V$)
# unless `tied` (then the head is the embedding matrix). The optimizer is AdamW, and `precision` is one of
#
# * `"fp32"`: weights, gradients and AdamW's states all in 4 bytes;
# * `"mixed"`: 16-bit weights and gradients, plus an fp32 master copy of the weights, AdamW's states in fp32;
# * `"bf16"`: weights, gradients and AdamW's states all in bf16, no master copy.
#
# Write `train_state_bytes(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, tied, precision)`: the bytes
# of weights, gradients and optimizer states (master copy included) together, as a number. Worked examples: a tiny
# model with `vocab_size=10, n_layer=1, d_model=4, n_head=2, n_kv_head=1, ffn_hidden=8, tied=True` has 196
# parameters, so `3136` bytes in `"fp32"`, `3136` in `"mixed"` and `1568` in `"bf16"`; Llama-2-7B (`32000, 32, 4096,
# 32, 32, 11008, False`, 6,738,415,616 parameters) needs `107814649856` bytes (108 GB) in `"mixed"`. The answer must
# be exact to within half a byte (plus $10^{-9}$ of it).

# %%
def train_state_bytes(vocab_size: int, n_layer: int, d_model: int, n_head: int, n_kv_head: int, ffn_hidden: int,
                      tied: bool, precision: str) -> int:
    """Bytes of weights + gradients + AdamW states (and master copy) of a Llama-shaped model in training."""
    # BEGIN SOLUTION 10.1: return the bytes of weights, gradients and optimizer states in this precision
    head_dim = d_model // n_head
    attention = 2 * d_model * d_model + 2 * d_model * n_kv_head * head_dim  # q, o; k, v (GQA: fewer heads)
    per_layer = attention + 3 * d_model * ffn_hidden + 2 * d_model  # + SwiGLU + two RMSNorm gains
    params = n_layer * per_layer + d_model + vocab_size * d_model * (1 if tied else 2)  # final norm, embedding, head
    per_param = {"fp32": 4 + 4 + 4 + 4,  # weights, gradients, m, v
                 "mixed": 2 + 2 + 4 + 4 + 4,  # 16-bit weights and gradients, fp32 master, m, v
                 "bf16": 2 + 2 + 2 + 2}[precision]
    return params * per_param
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Two separate counts multiplied together: how many parameters the model has (attention, MLP, norms per layer;
# then the final norm, the embedding, and the head if it is not tied), and how many bytes each parameter costs in
# this precision, summing weight, gradient, master copy (if any) and AdamW's two states.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Bytes per parameter: fp32 $4 + 4 + 4 + 4 = 16$; mixed $2 + 2 + 4 + 4 + 4 = 16$; bf16 $2 + 2 + 2 + 2 = 8$. For the
# tiny model: q and o $2 \times 16$, k and v $2 \times 4 \times 2$, MLP $3 \times 32$, norms $8$: 152 per layer, plus
# the final norm 4 and the tied embedding 40, so 196 parameters.
#
# </details>

# %%
check("10.1", train_state_bytes)

# %% [markdown]
# ## 10.2 Activation bytes of a layer, with and without recomputation (1 point)
#
# Read first: [10.2 Activation checkpointing](../notebooks/10_memory_amp/02_activation_checkpointing.ipynb).
# Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", sec. 4.1) count the
# bytes one GPT layer stores for backward, with 16-bit activations and 1-byte dropout masks, for a sequence of $s$
# tokens, a batch of $b$, hidden size $h$ and $a$ heads:
#
# * the attention block: $11\,sbh + 5\,as^2b$, where the $5\,as^2b$ are the core attention's $s \times s$ tensors (the
#   softmax's output, the dropout mask and the dropout's output);
# * the MLP: $19\,sbh$; the two LayerNorms: $4\,sbh$.
#
# Three ways to train (`recompute`): `"none"` stores all of it; `"selective"` recomputes the core attention in
# backward, so its $s \times s$ tensors are not stored and everything else is; `"full"` stores only the layer's input
# ($sbh$ numbers of 2 bytes) and recomputes the rest.
#
# Write `layer_activation_bytes(seq, batch, hidden, heads, recompute)`, the bytes stored for one layer, as a number.
# Worked example, a Llama-2-7B-sized layer at `seq=2048, batch=1, hidden=4096, heads=32`: `956301312` bytes with
# `"none"` (956 MB), `285212672` with `"selective"`, `16777216` with `"full"`.

# %%
def layer_activation_bytes(seq: int, batch: int, hidden: int, heads: int, recompute: str) -> int:
    """Bytes one GPT layer stores for backward (Korthikanti et al. 2022's count), for a recomputation mode."""
    # BEGIN SOLUTION 10.2: return the bytes this layer stores for backward with this recomputation mode
    s, b, h, a = seq, batch, hidden, heads
    if recompute == "full":
        return 2 * s * b * h  # the input only, 2 bytes per number
    linear = (11 + 19 + 4) * s * b * h  # attention block, MLP, LayerNorms
    if recompute == "selective":
        return linear
    return linear + 5 * a * s * s * b  # + the core attention's s x s tensors
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Add up the parts the mode stores. The $sbh$ terms do not depend on the mode except in `"full"`, which keeps
# one $(s, b, h)$ tensor; only `"none"` stores the terms that grow with $s^2$.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `"none"`: $34\,sbh + 5\,as^2b$; `"selective"`: $34\,sbh$; `"full"`: $2\,sbh$. In the worked example
# $sbh = 8{,}388{,}608$ and $as^2b = 134{,}217{,}728$.
#
# </details>

# %%
check("10.2", layer_activation_bytes)
