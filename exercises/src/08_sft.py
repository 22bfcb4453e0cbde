# Solution source of exercises/08_sft.ipynb (percent format: "# %%" starts a code cell,
# "# %% [markdown]" a markdown cell). Regenerate the learner notebook with
#     .venv/bin/python tools/build_exercises.py
# then execute it with  .venv/bin/python tools/execute_notebooks.py exercises/08_sft.ipynb
# Code between "# BEGIN SOLUTION <id>: <task>" and "# END SOLUTION" becomes
# raise NotImplementedError("Exercise <id>: <task>") in the learner notebook.

# %% [markdown]
# # Exercises 8: Supervised fine-tuning
#
# Three functions, the three places where SFT code goes wrong without an error message: which tokens the
# loss counts, what a packed window may attend to, and how the labels line up with the logits.
#
# Each exercise is a function whose body is a stub raising `NotImplementedError`. Replace the `raise`
# line with your code and run the check cell below it: it compares your function with the `minillm`
# reference on the worked examples shown here and on random inputs, and prints ✅ (passed), ❌ with a
# hint (naming the mistake when it recognises a common one) or ⬜ (not attempted). A check never raises.
# For a score report run `minillm grade exercises/08_sft.ipynb`; see
# [How grading works](../book/grading.md).
#
# Read first: [8.1 Chat data, loss masking and packing](../notebooks/08_sft/01_chat_data_masking_packing.ipynb).
# Labels, positions and masks must be exact; the loss is checked within $10^{-6}$ times
# $\max(1, |\text{expected}|)$.

# %%
import torch

from minillm.grading import check

# %% [markdown]
# ## 08.1 The label mask of a chat example (1 point)
#
# A conversation is rendered as token ids: each turn is a role token (`<|user|>` or `<|assistant|>`), the
# turn's content, and `<|end|>`. Write `assistant_labels(ids, assistant_id, end_id)` for a list of token ids,
# returning a list of the same length in Hugging Face's convention (not shifted): `labels[t] = ids[t]` for
# the tokens the loss counts, `-100` for all others. The loss counts each assistant reply: the tokens after
# an `<|assistant|>` token, up to **and including** the `<|end|>` that closes it. The `<|assistant|>`
# token itself, user turns and their `<|end|>` are `-100`. Every assistant turn counts; a reply that the
# end of the sequence cuts off counts up to the last token. Contents never contain the special ids.
#
# Worked examples with `<|user|>` = 6, `<|assistant|>` = 7, `<|end|>` = 8 (`assistant_id=7, end_id=8`):
#
# * `ids = [6, 0, 1, 8, 7, 2, 8, 6, 3, 8, 7, 4, 5, 8]` (user "ab", assistant "c", user "x", assistant "yz"):
#   `[-100, -100, -100, -100, -100, 2, 8, -100, -100, -100, -100, 4, 5, 8]`;
# * `ids = [6, 0, 8, 7, 8]` (an empty reply): `[-100, -100, -100, -100, 8]`;
# * `ids = [7, 1, 2]` (a reply cut off): `[-100, 1, 2]`.

# %%
def assistant_labels(ids: list[int], assistant_id: int, end_id: int) -> list[int]:
    """Labels for ids: the assistant replies (with their closing <|end|>) keep their ids, the rest is -100."""
    # BEGIN SOLUTION 08.1: return one label per token: the reply tokens' ids, -100 elsewhere
    labels, inside = [], False
    for t in ids:
        if inside:
            labels.append(t)
            inside = t != end_id  # the <|end|> is counted, then the reply is over
        else:
            labels.append(-100)
            inside = t == assistant_id  # the reply starts after the role token
    return labels
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Walk through the ids once, remembering whether you are inside a reply. Decide the label of the current
# token before you update that state.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Inside a reply: the label is the token, and the reply ends after an `end_id`. Outside: the label is
# `-100`, and a reply starts after an `assistant_id`.
#
# </details>

# %%
check("08.1", assistant_labels)

# %% [markdown]
# ## 08.2 Positions and mask of a packed window (2 points)
#
# Packing lays several examples end to end in one window of `T` tokens. For the window to compute exactly
# what each example computes alone, every example gets its own positions and sees only itself. Write
# `packing_inputs(lengths, T)`: the examples have the given lengths (in order, starting at token 0,
# `sum(lengths) <= T`); the tokens after them (if any) are padding and form one more segment of their own.
# Return `(positions, mask)`:
#
# * `positions`, an integer tensor of shape `(T,)`: each token's index inside its own segment (0 for the
#   first token of each example, and of the padding);
# * `mask`, a boolean tensor of shape `(T, T)`, `mask[i, j]` True when query `i` may attend key `j`:
#   both in the same segment and `j <= i`.
#
# Worked example, `lengths = [2, 3]`, `T = 6` (segments 0 0 1 1 1, then one padding token):
# `positions = [0, 1, 0, 1, 2, 0]` and, row by row (1 = True),
#
# ```
# 1 0 0 0 0 0
# 1 1 0 0 0 0
# 0 0 1 0 0 0
# 0 0 1 1 0 0
# 0 0 1 1 1 0
# 0 0 0 0 0 1
# ```

# %%
def packing_inputs(lengths: list[int], T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions (T,), mask (T, T) bool) for examples of these lengths packed into a window of T tokens."""
    # BEGIN SOLUTION 08.2: return the per-segment positions and the block-diagonal causal mask
    seg = torch.full((T,), len(lengths), dtype=torch.long)  # the padding: one more segment
    positions = torch.zeros(T, dtype=torch.long)
    start = 0
    for s, n in enumerate(lengths):
        seg[start: start + n] = s
        positions[start: start + n] = torch.arange(n)
        start += n
    positions[start:] = torch.arange(T - start)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    return positions, causal & (seg[:, None] == seg[None, :])
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Give every token a segment id first (the example it belongs to; the padding its own id). Both outputs
# follow from the segment ids.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# The mask is `same_segment & causal`, with `same_segment = seg[:, None] == seg[None, :]` and `causal` the
# lower triangle (`torch.ones(T, T, dtype=torch.bool).tril()`). Positions: `arange(n)` over each segment.
#
# </details>

# %%
check("08.2", packing_inputs)

# %% [markdown]
# ## 08.3 The causal-LM loss with Hugging Face's labels (2 points)
#
# Hugging Face models take `labels` aligned with the input ids (as `assistant_labels` returns them) and
# shift inside: the logits at position `t` are scored against `labels[t + 1]`. Write
# `causal_lm_loss(logits, labels)` for `logits` of shape `(B, T, V)` and integer `labels` of shape `(B, T)`,
# returning the mean cross-entropy (natural log) over every position of the batch whose target label is
# not `-100`, as a number or a 0-d tensor. Every row has at least one counted label.
#
# Worked example, `B = 1, T = 3, V = 2`: `logits = [[[0, 0], [ln 3, 0], [0, 0]]]`, `labels =
# [[-100, 0, 1]]`. Position 0 is scored on label 0 with probabilities (1/2, 1/2): $\ln 2$; position 1 on
# label 1 with probabilities (3/4, 1/4): $\ln 4$; position 2 has no next label. The loss is
# $(\ln 2 + \ln 4) / 2 = 1.5 \ln 2 \approx 1.039721$.

# %%
def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labels that are not -100 (labels not shifted yet)."""
    # BEGIN SOLUTION 08.3: return the mean cross-entropy over the counted next-token labels
    V = logits.shape[-1]
    pred, target = logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1)  # position t predicts label t + 1
    keep = target != -100
    logp = torch.log_softmax(pred[keep], dim=-1)
    return -logp.gather(1, target[keep][:, None]).mean()
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Drop the last position of the logits and the first of the labels, then average the cross-entropy over the
# targets that are not `-100`.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)` does all of
# it: its mean divides by the number of counted targets.
#
# </details>

# %%
check("08.3", causal_lm_loss)
