# Chapter 10's exercises on number formats and mixed precision (10.6, 10.7): cells to be assembled into
# exercises/src/10_memory_amp.py after the chapter's title and import cells (which import `check` from
# minillm.grading). Checkers: minillm/grading/ch10_amp.py; tests: tests/test_exercises_ch10_amp.py.
from minillm.grading import check  # noqa: F401 - for linters only: this header is not part of the notebook

# %% [markdown]
# ## 10.6 Round fp32 bits to bf16, ties to even (2 points)
#
# Read first: [10.3 Number formats](../notebooks/10_memory_amp/03_number_formats.ipynb). bf16 is fp32 with the
# lower 16 bits of the mantissa dropped: sign (1 bit), the same 8 exponent bits, 7 mantissa bits. Converting
# fp32 to bf16 therefore keeps the top 16 bits of the fp32 pattern and **rounds** on the 16 bits it drops:
# to the nearest bf16 value, and on an exact tie to the neighbour whose last kept bit is 0 (round to nearest
# even, IEEE 754's default and what `torch.Tensor.to(torch.bfloat16)` does).
#
# Write `round_to_bf16(bits)`: `bits` is an fp32 bit pattern as a Python int in $[0, 2^{32})$; return the bf16
# bit pattern as an int in $[0, 2^{16})$, using integer operations on the bits (no float types). Rules:
#
# * finite values round to the nearest bf16 value, ties to even; a value that rounds past bf16's largest finite
#   number becomes inf (`0x7F80`, or `0xFF80` when negative), as torch's cast does; the sign is kept (-0.0 stays
#   `0x8000`); subnormals need no special case;
# * inf stays inf; every NaN must give a bf16 NaN (exponent bits all ones, mantissa not zero), any one.
#
# Worked examples (hex):
#
# | fp32 bits | value | bf16 bits | why |
# |---|---|---|---|
# | `0x3F800000` | 1.0 | `0x3F80` | nothing dropped |
# | `0x3F808000` | $1 + 2^{-8}$ | `0x3F80` | a tie, last kept bit 0: stays |
# | `0x3F818000` | $1 + 3 \cdot 2^{-8}$ | `0x3F82` | a tie, last kept bit 1: up to the even `...82` |
# | `0x3F808001` | just above $1 + 2^{-8}$ | `0x3F81` | above the halfway point: up |
# | `0x7F7FFFFF` | largest fp32 | `0x7F80` | rounds past bf16's largest finite: inf |
# | `0x7F800001` | a NaN | a NaN, e.g. `0x7FC0` | its only set mantissa bit is dropped, yet it must stay NaN |

# %%
def round_to_bf16(bits: int) -> int:
    """fp32 bit pattern -> the bf16 bit pattern of the nearest bf16 value (ties to even)."""
    # BEGIN SOLUTION 10.6: return the bf16 bit pattern nearest to the fp32 value, ties to even
    if (bits >> 23) & 0xFF == 0xFF and bits & 0x7FFFFF:  # NaN: keep the sign, force a quiet NaN
        return (bits >> 16) | 0x0040
    kept, dropped = bits >> 16, bits & 0xFFFF
    if dropped > 0x8000 or (dropped == 0x8000 and kept & 1):  # above halfway, or a tie with an odd last bit
        kept += 1  # a carry into the exponent is right: the next binade, or inf from the largest binade
    return kept
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Split the pattern into the 16 bits that stay and the 16 that go. Compare what goes with exactly half of
# $2^{16}$: more means round up, less means keep, equal is the tie. Handle NaN first.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `kept, dropped = bits >> 16, bits & 0xFFFF`; add 1 to `kept` when `dropped > 0x8000`, or when
# `dropped == 0x8000` and `kept & 1`. Adding 1 to the largest finite pattern carries into the exponent and
# gives exactly inf's pattern. A NaN is exponent `0xFF` with a non-zero mantissa: return `(bits >> 16) | 0x40`.
#
# </details>

# %%
check("10.6", round_to_bf16)

# %% [markdown]
# ## 10.7 The dynamic loss scale over a run (2 points)
#
# Read first: [10.4 Mixed precision](../notebooks/10_memory_amp/04_mixed_precision.ipynb). fp16 training
# multiplies the loss by a scale $S$ and adapts $S$ as `torch.amp.GradScaler` does. After each step's backward
# pass, it is known whether any gradient was inf or NaN (`found_inf[t]`); then:
#
# * **overflow**: the step is skipped (no weight update), $S$ is multiplied by `backoff_factor`, and the count of
#   clean steps in a row goes back to 0;
# * **clean step**: the count grows by 1; when it reaches `growth_interval`, $S$ is multiplied by `growth_factor`
#   and the count goes back to 0. $S$ is a float32: if growing would take it past the largest float32
#   (about $3.4 \cdot 10^{38}$), it stays where it is (the count still goes back to 0).
#
# Write `loss_scale_trajectory(found_inf, init_scale, growth_factor, backoff_factor, growth_interval)`:
# `found_inf` is a list of bools, one per step. Return `(scales, skipped)`: `scales[t]` is $S$ **after** step
# `t`'s update (the scale step `t + 1` uses), and `skipped` the list of the indices of the skipped steps.
# Worked example, `growth_interval = 2`, `init_scale = 8.0`, factors 2 and 0.5:
#
# * `found_inf = [False, False, True, False, False, False]` gives `([8, 16, 8, 8, 16, 16], [2])`;
# * `found_inf = [False, True, False, False]` gives `([8, 4, 4, 8], [1])`: the overflow at step 1 resets the
#   count, so growth waits for steps 2 and 3.
#
# Scales computed in float64 are fine (they are compared to $10^{-5}$ relative).

# %%
def loss_scale_trajectory(found_inf: list[bool], init_scale: float, growth_factor: float, backoff_factor: float,
                          growth_interval: int) -> tuple[list[float], list[int]]:
    """GradScaler's rule over a run: the scale after each step's update, and the skipped steps."""
    # BEGIN SOLUTION 10.7: return the scale after each step and the indices of the skipped steps
    largest_float32 = 3.4028234663852886e38
    scale, clean = init_scale, 0
    scales, skipped = [], []
    for t, overflow in enumerate(found_inf):
        if overflow:
            skipped.append(t)
            scale *= backoff_factor
            clean = 0
        else:
            clean += 1
            if clean == growth_interval:
                if scale * growth_factor <= largest_float32:
                    scale *= growth_factor
                clean = 0
        scales.append(scale)
    return scales, skipped
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Keep two numbers while walking over the steps: the scale and the count of clean steps since the last growth
# or overflow. Append the scale at the end of each step, after deciding what happens to it.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# On `found_inf[t]`: record `t`, `scale *= backoff_factor`, `clean = 0`. Otherwise `clean += 1`, and when
# `clean == growth_interval`: multiply by `growth_factor` if the result is at most `3.4028234663852886e38`, and
# set `clean = 0` either way.
#
# </details>

# %%
check("10.7", loss_scale_trajectory)
