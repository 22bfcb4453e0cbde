# Solution source of exercises/06_model_pretraining.ipynb (percent format: "# %%" starts a code cell,
# "# %% [markdown]" a markdown cell). Regenerate the learner notebook with
#     .venv/bin/python tools/build_exercises.py
# then execute it with  .venv/bin/python tools/execute_notebooks.py exercises/06_model_pretraining.ipynb
# Code between "# BEGIN SOLUTION <id>: <task>" and "# END SOLUTION" becomes
# raise NotImplementedError("Exercise <id>: <task>") in the learner notebook.

# %% [markdown]
# # Exercises 6: The model and pretraining
#
# Six functions, one per idea of this chapter: the next-token loss with its shift, the attention mask of
# a prefix LM, the parameter count of GPT-2 and of Llama (what "7B" means), the warm-up + cosine
# learning-rate schedule, and the split of a model's parameters into the ones AdamW decays and the ones it
# does not.
#
# Each exercise is a function whose body is a stub raising `NotImplementedError`. Replace the `raise`
# line with your code and run the check cell below it: it compares your function with the `minillm`
# reference on the worked examples shown here and on random inputs, and prints ✅ (passed), ❌ with a
# hint (naming the mistake when it recognises a common one) or ⬜ (not attempted). A check never raises.
# For a score report run `minillm grade exercises/06_model_pretraining.ipynb`; see
# [How grading works](../book/grading.md).
#
# Read first: [6.1 Decoder-only, prefix LM, encoder-decoder](../notebooks/06_model_pretraining/01_architectures.ipynb)
# (06.2), [6.2 GPT-2 and Llama as presets of one model](../notebooks/06_model_pretraining/02_gpt_llama.ipynb)
# (06.3, 06.4) and [6.3 Pretraining a small model](../notebooks/06_model_pretraining/03_pretraining.ipynb)
# (06.1, 06.5, 06.6). The checks allow $10^{-6}$ times $\max(1, |\text{expected}|)$ on the loss and
# $10^{-6}$ times `lr` on a learning rate, and want masks, counts and parameter groups exactly.

# %%
import math

import torch
from torch import nn

from minillm.grading import check

# %% [markdown]
# ## 06.1 The next-token loss (2 points)
#
# A decoder-only model reads `idx` of shape `(B, T)` and returns `logits` of shape `(B, T, V)`: the
# logits at position $t$ are its guess for the token at position $t + 1$, having seen tokens $0..t$. Write
# `next_token_loss(logits, idx)`, the mean cross-entropy of those guesses,
#
# $$\mathcal L = -\frac{1}{B\,(T-1)}\sum_{b}\sum_{t=0}^{T-2} \log \text{softmax}\bigl(\text{logits}[b, t]\bigr)
# \bigl[\text{idx}[b, t+1]\bigr],$$
#
# returned as one number (a 0-dim tensor or a float). The last position has no next token and is not
# scored, and the first token is never a target. The loss must stay finite and accurate when a target's
# probability is tiny: the check has targets with probability $e^{-1000}$, far below float64's smallest
# number.
#
# Worked example, $B = 1$, $T = 3$, $V = 3$, `idx = [[0, 2, 1]]`, `logits = [[[0, 0, ln 2], [ln 2, ln 6, 0],
# [5, 0, 0]]]`:
#
# * position 0 has probabilities $(\frac14, \frac14, \frac12)$ and its target is token 2: $-\ln\frac12 = 0.693147$;
# * position 1 has probabilities $(\frac29, \frac69, \frac19)$ and its target is token 1:
#   $-\ln\frac69 = 0.405465$;
# * position 2 (`[5, 0, 0]`) is not scored. The loss is $(0.693147 + 0.405465)/2 = 0.549306$ ($= \frac12\ln 3$).
#   Without the shift (each position scored on its own token) you would get $2.865635$.

# %%
def next_token_loss(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits[:, t] (B, T, V) predicting idx[:, t + 1] (B, T), over the B * (T - 1) pairs."""
    # BEGIN SOLUTION 06.1: return the mean next-token loss
    logp = torch.log_softmax(logits[:, :-1], dim=-1)  # (B, T-1, V)
    target = idx[:, 1:]  # (B, T-1)
    return -logp.gather(-1, target[..., None]).mean()
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Position t predicts token t + 1: shift logits and targets against each other.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Pair `logits[:, :-1]` with `idx[:, 1:]`. `logp = torch.log_softmax(logits[:, :-1], -1)` (not
# `torch.log(torch.softmax(...))`, which underflows to `log 0`); pick `idx[:, 1:]` with `torch.gather` (one entry
# per position); minus the mean. `F.cross_entropy` on the flattened, shifted tensors is accepted too, and is
# the reference.
#
# </details>

# %%
check("06.1", next_token_loss)

# %% [markdown]
# ## 06.2 The prefix-LM mask (1 point)
#
# A prefix LM (T5's "prefix LM", UniLM, GLM) reads its first `prefix_len` tokens like an encoder, all of
# them seeing each other, and generates the rest like a decoder. Write `prefix_lm_mask(T, prefix_len)`
# returning a `(T, T)` tensor of dtype `torch.bool`, `True` where query `i` (row) may attend key `j`
# (column). Every query sees the whole prefix (positions `0 .. prefix_len - 1`) and every token at or
# before its own position; no query, not even one inside the prefix, sees a later token after the prefix
# (those are the targets). `prefix_len = 0` gives the causal mask, `prefix_len = T` full
# bidirectional attention. Worked example, `prefix_lm_mask(5, 2)` (1 = `True`):
#
# ```text
# [[1, 1, 0, 0, 0],
#  [1, 1, 0, 0, 0],
#  [1, 1, 1, 0, 0],
#  [1, 1, 1, 1, 0],
#  [1, 1, 1, 1, 1]]
# ```
#
# Token 0 sees token 1 (both in the prefix); tokens 2, 3, 4 are causal and all see the prefix.

# %%
def prefix_lm_mask(T: int, prefix_len: int) -> torch.Tensor:
    """(T, T) bool, True where query i may attend key j: causal, plus the whole prefix."""
    # BEGIN SOLUTION 06.2: return the (T, T) prefix-LM mask
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    return (j <= i) | (j < prefix_len)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# It is a causal mask, plus full visibility of the prefix keys.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# $\text{mask}[i, j] = (j \le i)\ \text{or}\ (j < \text{prefix\_len})$:
# `i = arange(T)[:, None], j = arange(T)[None, :]; return (j <= i) | (j < prefix_len)`
#
# </details>

# %%
check("06.2", prefix_lm_mask)

# %% [markdown]
# ## 06.3 How many parameters has GPT-2? (1 point)
#
# Write `gpt2_param_count(vocab_size, block_size, n_layer, d_model)`, the number of parameters (an `int`)
# of a GPT-2-style model with $d$ = `d_model`:
#
# * a token embedding $V \times d$ and a **learned** position embedding `block_size` $\times\, d$;
# * per layer: attention with $W_q, W_k, W_v, W_o$ ($d \times d$ each, with biases), an MLP $d \to 4d \to d$
#   (two matrices, with biases), and two LayerNorms (a gain **and** a bias: $2d$ each);
# * a final LayerNorm ($2d$) and the head $d \to V$, which is **tied** to the token embedding (the same
#   matrix, counted once).
#
# The number of heads does not change the count. Worked examples:
#
# * $V = 10$, `block_size` $= 8$, one layer, $d = 4$: $40 + 32 + (12\cdot16 + 13\cdot4 = 244) + 8 = 324$;
# * GPT-2 small ($V = 50257$, 1024 positions, 12 layers, $d = 768$): token embedding $38{,}597{,}376$,
#   positions $786{,}432$, $12 \times 7{,}087{,}872 = 85{,}054{,}464$ in the layers, final LayerNorm
#   $1{,}536$: **$124{,}439{,}808$**, the "124M" of the checkpoint;
# * GPT-2 medium (24 layers, $d = 1024$): $354{,}823{,}168$.

# %%
def gpt2_param_count(vocab_size: int, block_size: int, n_layer: int, d_model: int) -> int:
    """Parameters of a GPT-2-style model: learned positions, biases, LayerNorm, 4d MLP, tied head."""
    # BEGIN SOLUTION 06.3: return the GPT-2 parameter count
    d = d_model
    per_layer = (4 * d * d + 4 * d) + (8 * d * d + 5 * d) + 2 * (2 * d)  # attention, MLP, two LayerNorms
    return vocab_size * d + block_size * d + n_layer * per_layer + 2 * d
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Add up the embeddings, n_layer blocks (attention, MLP, two LayerNorms, with biases) and the final norm; the head
# is tied.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `V d + block_size d + n_layer (12 d^2 + 13 d) + 2 d (final LayerNorm); the head is tied`: a layer has
# $4d^2 + 4d$ in attention, $8d^2 + 5d$ in the MLP and $4d$ in its two LayerNorms.
#
# </details>

# %%
check("06.3", gpt2_param_count)

# %% [markdown]
# ## 06.4 ... and Llama? (2 points)
#
# Write `llama_param_count(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden)` for a Llama-style
# model, which differs from GPT-2 in five places:
#
# * **no position embedding** (RoPE rotates the queries and keys; it has no parameters);
# * **grouped-query attention**: $W_q$ and $W_o$ are $d \times d$, but $W_k$ and $W_v$ only
#   $d \times (n_\text{kv} \cdot d_\text{head})$, with $d_\text{head}$ = `d_model // n_head`;
# * a **SwiGLU** MLP with three matrices (gate, up, down), each $d \times$ `ffn_hidden`;
# * **no biases** anywhere, and **RMSNorm** ($d$ parameters: a gain, no bias), two per layer and a final one;
# * an **untied** head: `lm_head` is its own $V \times d$ matrix.
#
# Worked examples:
#
# * Llama-2-7B ($V = 32000$, 32 layers, $d = 4096$, 32 heads, 32 key/value heads, `ffn_hidden` $= 11008$):
#   per layer attention $4 \cdot 4096^2 = 67{,}108{,}864$, MLP $3 \cdot 4096 \cdot 11008 = 135{,}266{,}304$,
#   norms $8{,}192$, so $32 \times 202{,}383{,}360 = 6{,}476{,}267{,}520$; embedding and head
#   $2 \times 131{,}072{,}000$; final norm $4{,}096$: **$6{,}738{,}415{,}616$** ("7B");
# * Llama-2-70B (80 layers, $d = 8192$, 64 heads but 8 key/value heads, `ffn_hidden` $= 28672$): $W_k$ and $W_v$
#   are $8192 \times 1024$, so attention is $2 \cdot 8192^2 + 2 \cdot 8192 \cdot 1024 = 150{,}994{,}944$ per
#   layer; the total is $68{,}976{,}648{,}192$;
# * Llama-3-8B ($V = 128256$, 32 layers, $d = 4096$, 32 heads, 8 key/value heads, `ffn_hidden` $= 14336$):
#   $8{,}030{,}261{,}248$.

# %%
def llama_param_count(vocab_size: int, n_layer: int, d_model: int, n_head: int, n_kv_head: int,
                      ffn_hidden: int) -> int:
    """Parameters of a Llama-style model: RoPE, GQA, SwiGLU (3 matrices), RMSNorm, no biases, untied head."""
    # BEGIN SOLUTION 06.4: return the Llama parameter count
    d, head_dim = d_model, d_model // n_head
    attention = 2 * d * d + 2 * d * (n_kv_head * head_dim)  # q, o: d x d; k, v: d x (n_kv_head * head_dim)
    per_layer = attention + 3 * d * ffn_hidden + 2 * d
    return 2 * vocab_size * d + n_layer * per_layer + d
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# With GQA, k and v project to fewer dimensions than q; the MLP has three matrices; norms have no bias; the head
# is not tied.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `attention 2 d^2 + 2 d (n_kv_head * head_dim); MLP 3 d h; norms 2 d per layer; + 2 V d + d`
#
# </details>

# %%
check("06.4", llama_param_count)

# %% [markdown]
# ## 06.5 Warm-up, then cosine decay (1 point)
#
# GPT-3 and Llama raise the learning rate linearly for `warmup` steps, then let it fall along a cosine to
# `min_ratio * lr` at step `total`, and keep it there. Write `lr_at(step, lr, warmup, total, min_ratio)`
# (steps count from 0):
#
# * warm-up, `step < warmup`: $\text{lr}\cdot(\text{step} + 1)/\text{warmup}$ (so step 0 already has a
#   small rate, and step `warmup - 1` has the full `lr`);
# * then, with $\text{progress} = \min\bigl(1, (\text{step} - \text{warmup}) / (\text{total} - \text{warmup})\bigr)$:
#   $$\text{lr}\cdot\Bigl(\text{min\_ratio} + (1 - \text{min\_ratio})\cdot\tfrac12\bigl(1 + \cos(\pi\cdot
#   \text{progress})\bigr)\Bigr).$$
#
# `warmup = 0` means no warm-up; the check always has `total > warmup`. Worked examples with
# `lr = 1e-3`, `warmup = 10`, `total = 110`, `min_ratio = 0.1`:
#
# * steps 0, 4, 9: $10^{-4}$, $5\cdot10^{-4}$, $10^{-3}$; step 10 (progress 0): $10^{-3}$;
# * step 35 (progress $\frac14$, $\frac12(1 + \cos\frac\pi4) = 0.853553$): $10^{-3}\cdot(0.1 + 0.9 \cdot
#   0.853553) = 8.68198\cdot10^{-4}$;
# * step 60 (progress $\frac12$): $5.5\cdot10^{-4}$; steps 110 and 150: $10^{-4}$.

# %%
def lr_at(step: int, lr: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay from lr to min_ratio * lr at `total` (then flat)."""
    # BEGIN SOLUTION 06.5: return the learning rate at step
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / (total - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Two phases: a linear ramp, then a cosine from the peak down to the minimum.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `warm-up lr (step + 1) / warmup; then progress = min(1, (step - warmup) / (total - warmup))`
#
# </details>

# %%
check("06.5", lr_at)

# %% [markdown]
# ## 06.6 Which parameters get weight decay? (1 point)
#
# AdamW's weight decay pulls every parameter it is given towards 0. GPT-3, Llama and `minillm.train` give
# it only to the **matrices and embeddings** (parameters with two or more dimensions), never to biases or
# to the gains of LayerNorm / RMSNorm (1-D): decaying a norm's gain would shrink the activations it scales. Write
# `decay_groups(model)` returning a pair `(decay, no_decay)` of lists holding every **trainable**
# parameter (`requires_grad`) of the model exactly once: the parameters themselves, as
# `model.parameters()` yields them (a tied head is one parameter, yielded once). They go straight into
#
# ```python
# torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}])
# ```
#
# Deciding by name (`"bias" in name`) misses the norms' gains. Worked example, the `tiny` preset of
# `minillm.model.GPT` (2 layers, $d = 64$, learned positions, tied head): 14 tensors with $110{,}592$
# numbers are decayed (the token and position embeddings and the six matrices of each layer), 22 tensors
# with $1{,}792$ numbers are not (six biases and two LayerNorms per layer, and the final LayerNorm).

# %%
def decay_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decay, no_decay): the trainable parameters with dim >= 2, and the other trainable ones."""
    # BEGIN SOLUTION 06.6: return the (decay, no_decay) parameter lists
    params = [p for p in model.parameters() if p.requires_grad]
    return [p for p in params if p.dim() >= 2], [p for p in params if p.dim() < 2]
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Decide by the parameter's number of dimensions, and leave out what is frozen.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `params = [p for p in model.parameters() if p.requires_grad]; split on p.dim() >= 2`
#
# </details>

# %%
check("06.6", decay_groups)

# %% [markdown]
# ## 06.7 Interview question: the FLOPs of one training step (2 points)
#
# Write `train_step_flops(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, seq_len, batch)`:
# the floating-point operations of one optimizer step of the Llama-style model of exercise 06.4 (RMSNorm,
# no biases, SwiGLU, grouped-query attention, untied head) on `batch` sequences of `seq_len` tokens, with
# the estimate this chapter uses:
#
# * a multiply-add is 2 FLOPs;
# * in the forward pass, every parameter that is not an embedding row costs one multiply-add per token
#   (the norm gains and the untied head count; looking up a token's embedding is free);
# * attention adds its own two products, the scores of each query against every key and the weighted sum
#   of the values, over all `seq_len` keys for every query (no saving for the causal mask);
# * the backward pass costs twice the forward pass.
#
# Return a number (int or float). The check compares with `minillm.model.flops_per_token` applied to
# `minillm.model.count_params`, within a relative 1e-6, on published shapes and random small ones with
# GQA, MQA and MHA.

# %%
def train_step_flops(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, seq_len, batch):
    """FLOPs of one training step (forward + backward) of a Llama-style model on batch x seq_len tokens."""
    # BEGIN SOLUTION 06.7: return the FLOPs of one training step
    head_dim = d_model // n_head
    attn = 2 * d_model * n_head * head_dim + 2 * d_model * n_kv_head * head_dim  # q, o and the smaller k, v
    per_layer = attn + 3 * d_model * ffn_hidden + 2 * d_model  # + SwiGLU's 3 matrices + 2 RMSNorm gains
    non_embedding = n_layer * per_layer + d_model + vocab_size * d_model  # + final norm + untied head
    per_token = 6 * non_embedding + 12 * n_layer * seq_len * d_model  # 2 (fwd) + 4 (bwd) per parameter
    return per_token * seq_len * batch
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Count the parameters a token multiplies (exercise 06.4 without the embedding table), then the attention
# products per token and layer; a training step costs three forward passes.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `per token: 6 * (non-embedding parameters, head included) + 12 * n_layer * seq_len * d_model; times seq_len * batch`
#
# </details>

# %%
check("06.7", train_step_flops)
