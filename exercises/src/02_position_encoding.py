# Solution source of exercises/02_position_encoding.ipynb (percent format: "# %%" starts a code cell,
# "# %% [markdown]" a markdown cell). Regenerate the learner notebook with
#     .venv/bin/python tools/build_exercises.py
# then execute it with  .venv/bin/python tools/execute_notebooks.py exercises/02_position_encoding.ipynb
# Code between "# BEGIN SOLUTION <id>: <task>" and "# END SOLUTION" becomes
# raise NotImplementedError("Exercise <id>: <task>") in the learner notebook.

# %% [markdown]
# # Exercises 2: Position encoding
#
# Six small functions, one per idea of this chapter: the sinusoidal table of the original Transformer,
# rotary embeddings (RoPE) in the `rotate_half` form, ALiBi's slopes, T5's relative position buckets,
# and two formulas for stretching RoPE to longer contexts (NTK-aware scaling and YaRN's ramp).
#
# Each exercise is a function whose body is a stub raising `NotImplementedError`. Replace the `raise`
# line with your code and run the check cell below it: it compares your function with the `minillm`
# reference on the worked examples shown here and on random inputs, and prints ✅ (passed), ❌ with a
# hint (naming the mistake when it recognises a common one) or ⬜ (not attempted). A check never raises.
# For a score report run `minillm grade exercises/02_position_encoding.ipynb`; see
# [How grading works](../book/grading.md).
#
# Read first: [2.1 Absolute and relative positions](../notebooks/02_position_encoding/01_absolute_relative.ipynb)
# (02.1, 02.4), [2.2 RoPE](../notebooks/02_position_encoding/02_rope.ipynb) (02.2) and
# [2.3 ALiBi and length extrapolation](../notebooks/02_position_encoding/03_alibi_extrapolation.ipynb)
# (02.3, 02.5, 02.6).

# %%
import math

import torch

from minillm.grading import check

# %% [markdown]
# ## 02.1 Sinusoidal position table (1 point)
#
# Write `sinusoidal_table(n_pos, dim)`: a float tensor of shape `(n_pos, dim)` with the **interleaved**
# layout of Vaswani et al. (2017):
#
# $$PE[p, 2i] = \sin\!\big(p / 10000^{2i/d}\big), \qquad PE[p, 2i+1] = \cos\!\big(p / 10000^{2i/d}\big).$$
#
# Pair `i` (columns `2i` and `2i+1`) shares one frequency. Worked example, `sinusoidal_table(3, 4)`
# (frequencies 1 and 1/100):
#
# | p | col 0 | col 1 | col 2 | col 3 |
# |---|---|---|---|---|
# | 0 | 0 | 1 | 0 | 1 |
# | 1 | sin 1 = 0.8415 | cos 1 = 0.5403 | sin 0.01 = 0.0100 | cos 0.01 = 0.99995 |
# | 2 | sin 2 = 0.9093 | cos 2 = -0.4161 | sin 0.02 | cos 0.02 |
#
# Some libraries (tensor2tensor, fairseq) store all sines, then all cosines, and also space their
# frequencies slightly differently: a different answer here.

# %%
def sinusoidal_table(n_pos, dim):
    """(n_pos, dim) tensor: column 2i = sin(p / 10000^(2i/dim)), column 2i+1 = cos of the same angle."""
    # BEGIN SOLUTION 02.1: return the (n_pos, dim) sinusoidal table
    table = torch.zeros(n_pos, dim)
    for p in range(n_pos):
        for i in range(dim // 2):
            angle = p / 10000 ** (2 * i / dim)
            table[p, 2 * i] = math.sin(angle)
            table[p, 2 * i + 1] = math.cos(angle)
    return table
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Each pair of columns shares one frequency; the frequencies fall geometrically across the pairs.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Build the `(n_pos, dim/2)` table of angles `p / 10000^(2i/dim)`; column `2i` gets its sine, column `2i+1`
# its cosine (fill even and odd columns, or stack sine and cosine on a last axis and flatten it).
#
# </details>

# %%
check("02.1", sinusoidal_table)

# %% [markdown]
# ## 02.2 Apply RoPE with `rotate_half` (2 points)
#
# Write `apply_rope(x, cos, sin)`. `x` has shape `(..., T, d)`; `cos` and `sin` have shape `(T, d/2)`:
# row `m`, column `i` holds $\cos(m\theta_i)$ and $\sin(m\theta_i)$. Use the **split-halves** pairing of
# GPT-NeoX and of Llama in Hugging Face: pair `i` is feature `i` together with feature `i + d/2`, read as a
# 2-D vector (first feature on the first axis), and the pair of row `m` is rotated counter-clockwise by
# the angle $m\theta_i$. Return a tensor of the shape of `x`.
#
# Worked example: `x = [[1, 2, 3, 4]]` (T = 1, d = 4) with angles `[[π/2, 0]]`: pair 0 is (1, 3), turned
# by 90° into (−3, 1); pair 1 is (2, 4), not turned. Result `[[-3, 2, 1, 4]]`.

# %%
def apply_rope(x, cos, sin):
    """Rotate the pairs (x[..., i], x[..., i + d/2]) of x (..., T, d) by the angles of cos, sin (T, d/2)."""
    # BEGIN SOLUTION 02.2: return x rotated by RoPE
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# This layout pairs feature i with feature i + dim/2; rotate each pair by its angle.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# A pair `(a, b)` rotated by an angle becomes `(a cos − b sin, a sin + b cos)`. With `a, b` the first and second
# half of the last dim: `cat(a*cos - b*sin, a*sin + b*cos)`, or in Hugging Face's vector form
# `x * cat(cos, cos) + rotate_half(x) * cat(sin, sin)` with `rotate_half(x) = cat(-b, a)`.
#
# </details>

# %%
check("02.2", apply_rope)

# %% [markdown]
# ## 02.3 ALiBi slopes (2 points)
#
# Write `alibi_slopes(n)`: the list of the `n` head slopes of ALiBi (Press et al. 2022).
#
# * `n` a power of two: the geometric sequence that starts at $2^{-8/n}$ with ratio $2^{-8/n}$, so
#   `n = 8` gives `1/2, 1/4, ..., 1/256`.
# * otherwise: let `n'` be the largest power of two below `n`. Take the `n'` slopes of `n'`, then the
#   slopes of `2n'` at even indices (the first, third, fifth, ...: the values that fall between the
#   first ones) until there are `n` in all. For `n = 12`: the 8 slopes `2^-1 ... 2^-8`, then
#   `2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5`.

# %%
def alibi_slopes(n):
    """The n ALiBi slopes (a list of floats)."""
    # BEGIN SOLUTION 02.3: return the n ALiBi slopes
    def power_of_two(m):
        start = 2 ** (-8 / m)
        return [start ** (h + 1) for h in range(m)]

    below = 1
    while below * 2 <= n:
        below *= 2
    if below == n:
        return power_of_two(n)
    return power_of_two(below) + power_of_two(2 * below)[0::2][: n - below]
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# The rule is simplest for a power of two; other head counts borrow from the next power of two.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# For a power of two, `[2 ** (-8 * (i + 1) / n) for i in range(n)]`; otherwise `slopes(n') + slopes(2n')[0::2]`,
# cut to `n` entries.
#
# </details>

# %%
check("02.3", alibi_slopes)

# %% [markdown]
# ## 02.4 T5 relative position bucket (2 points)
#
# Write `t5_bucket(rel, bidirectional, num_buckets, max_distance)` for one int `rel = key − query`
# (T5's convention: a key *before* the query has `rel < 0`). It returns an int bucket, by T5's rule:
#
# * **Direction.** Bidirectional: the first `num_buckets // 2` buckets are for keys at or before the
#   query, the next `num_buckets // 2` for keys after it (`rel > 0`), and the distance is $|rel|$.
#   Causal: all `num_buckets` are for keys at or before the query, the distance is $-rel$, and a key
#   after the query counts as distance 0.
# * **Within a direction** of `h` buckets: the first `h // 2` buckets hold the distances
#   `0, 1, ..., h // 2 - 1` exactly, one each. A larger distance `n` falls in a log-spaced bucket: its
#   position between `h // 2` and `max_distance` on a logarithmic scale (0 at `h // 2`, 1 at
#   `max_distance`), times the `h - h // 2` remaining buckets, rounded **down**, counted from bucket
#   `h // 2`. Distances from `max_distance` on all land in the direction's last bucket, `h - 1`.
#
# Worked example, 32 buckets, max distance 128, bidirectional: `rel = 0, -1, -8, -20, -128, 1, 8, 128` give
# `0, 1, 8, 10, 15, 17, 24, 31` (for −20: 20/8 = 2.5 lies ln 2.5 / ln 16 of the way from 8 to 128 on the log
# scale; times 8 buckets that is 2.64, rounded down 2: bucket 8 + 2 = 10; `rel = 0`, the query itself, is
# not after the query: no offset).

# %%
def t5_bucket(rel, bidirectional, num_buckets, max_distance):
    """T5's bucket (an int) of the relative position rel = key - query."""
    # BEGIN SOLUTION 02.4: return the T5 bucket of relative position rel
    offset = 0
    if bidirectional:
        half = num_buckets // 2
        if rel > 0:
            offset = half
        n = abs(rel)
    else:
        half = num_buckets
        n = max(-rel, 0)
    max_exact = half // 2
    if n < max_exact:
        return offset + n
    scaled = math.log(n / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
    return offset + min(max_exact + int(scaled), half - 1)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Small distances get a bucket each; larger ones share buckets whose width grows logarithmically; the sign picks
# one half of the buckets when bidirectional.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `half = num_buckets // 2` and an offset of `half` for `rel > 0` (bidirectional), or `half = num_buckets` and
# `n = max(-rel, 0)` (causal); `max_exact = half // 2`; below it the bucket is `n`, else
# `min(max_exact + int(ln(n / max_exact) / ln(max_distance / max_exact) * (half - max_exact)), half - 1)`,
# plus the offset.
#
# </details>

# %%
check("02.4", t5_bucket)

# %% [markdown]
# ## 02.5 NTK-aware RoPE base (1 point)
#
# NTK-aware scaling stretches RoPE to `s` = `factor` times its training length by raising the base. Pair
# `i` of a head of dimension `d` turns at the frequency $\text{base}^{-2i/d}$; the new base $\text{base}'$
# is the one under which the slowest pair (`i = d/2 − 1`) turns exactly `s` times slower than under
# `base`, while the fastest (`i = 0`, frequency 1) is unchanged whatever the base. Write
# `ntk_base(base, factor, head_dim)` returning $\text{base}'$ (a number).
# Worked example: `ntk_base(10000, 4, 128)` ≈ 40889.9.

# %%
def ntk_base(base, factor, head_dim):
    """The NTK-aware base for a context `factor` times longer."""
    # BEGIN SOLUTION 02.5: return the NTK-aware RoPE base
    return base * math.exp(math.log(factor) * head_dim / (head_dim - 2))
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Choose the new base so that the lowest frequency is stretched by exactly the scale factor.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `base * factor ** (head_dim / (head_dim - 2))`; for the worked example 10000 · 4^(128/126) ≈ 40889.9.
#
# </details>

# %%
check("02.5", ntk_base)

# %% [markdown]
# ## 02.6 YaRN's ramp (1 point)
#
# Pair `i` of RoPE, of frequency $\theta_i = \text{base}^{-2i/d}$ ($d$ = `head_dim`), turns
# $L\theta_i / 2\pi$ times over the `L` = `original_len` training positions. YaRN keeps the pairs that turn
# more than `beta_fast` times, interpolates those that turn fewer than `beta_slow` times, and ramps in
# between. Write `yarn_range(head_dim, base, original_len, beta_fast, beta_slow)` returning the pair of
# ints `(low, high)`: with $i(r)$ the real-valued pair index at which a pair turns exactly `r` times,
# `low` is $i(\text{beta\_fast})$ rounded **down** and `high` is $i(\text{beta\_slow})$ rounded **up**,
# then clipped: `low` at least 0, `high` at most `head_dim − 1` (as in the YaRN reference code).
# Worked example: `yarn_range(128, 10000, 4096, 32, 1)` = `(20, 46)` (20.94 rounded down, 45.03 up).

# %%
def yarn_range(head_dim, base, original_len, beta_fast, beta_slow):
    """(low, high): the pair indices where YaRN's ramp starts and ends."""
    # BEGIN SOLUTION 02.6: return the (low, high) pair indices of the YaRN ramp
    def index(rotations):
        return head_dim * math.log(original_len / (2 * math.pi * rotations)) / (2 * math.log(base))

    return max(math.floor(index(beta_fast)), 0), min(math.ceil(index(beta_slow)), head_dim - 1)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Find the dimension index at which a frequency makes a given number of turns over the original context; do it for
# both betas.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Solving $L\theta_i / 2\pi = r$ for `i` gives $i(r) = d \ln\!\big(L / (2\pi r)\big) / (2 \ln \text{base})$; return
# `max(floor(i(beta_fast)), 0), min(ceil(i(beta_slow)), head_dim - 1)`.
#
# </details>

# %%
check("02.6", yarn_range)

# %% [markdown]
# ## 02.7 Interview question: RoPE at arbitrary positions, both layouts (2 points)
#
# Write `rope_at(x, positions, base, layout)` from scratch (no `cos`/`sin` tables handed to you this time):
# `x` has shape `(..., T, d)` with `d` even, `positions` is a 1-D integer tensor of `T` absolute positions
# (not necessarily `0 .. T-1`: a KV cache continues at an offset, a packed batch restarts at 0), `base` is
# RoPE's base (10000 in the paper, 500000 in Llama 3). Return `x` rotated as RoPE rotates queries and
# keys: at position $p$, pair $i$ ($i = 0, \dots, d/2 - 1$) turns counter-clockwise by $p\,\theta_i$ with
# $\theta_i = \text{base}^{-2i/d}$ (the first pair turns fastest, one radian per position), the pair's
# first feature on the first axis. `x` is float64 and positions reach 100000: compute the angles in
# float64 too (a float32 angle near $10^5$ radians is off by about $4\cdot10^{-3}$, far beyond the
# check's $10^{-5}$).
# `layout` says which features form a pair: `"halves"` pairs feature `i` with feature `i + d/2` (GPT-NeoX,
# Llama in Hugging Face), `"adjacent"` pairs `2i` with `2i + 1` (GPT-J, RoFormer, Meta's Llama code).
#
# The check compares with `minillm.positional` on both layouts, shuffled and offset positions up to
# 100000, and several bases and head sizes; it also checks the property RoPE exists for: the dot product
# of a rotated query and a rotated key depends only on the distance between their positions.
#
# Worked example: `d = 2`, `x = [[1, 0]]` at position 3 turns by 3 radians in either layout:
# `[[cos 3, sin 3]] = [[-0.98999, 0.14112]]`.

# %%
def rope_at(x, positions, base, layout):
    """x (..., T, d) rotated by RoPE at the given positions (T,), with the given base and pairing layout."""
    # BEGIN SOLUTION 02.7: return x rotated at the given positions
    d = x.shape[-1]
    inv_freq = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,) radians per position
    angle = positions.to(torch.float64)[:, None] * inv_freq[None, :]  # (T, d/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    if layout == "halves":
        a, b = x[..., : d // 2], x[..., d // 2:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Build one angle per (position, pair); then rotate every pair as a 2-D vector. Only the choice of the two
# features of a pair differs between the layouts.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `angle[t, i] = positions[t] * base ** (-2i / d); each pair (a, b) -> (a cos - b sin, a sin + b cos)`
#
# </details>

# %%
check("02.7", rope_at)
