# Cells for exercises/src/09_peft.py (AdaLoRA), in the same percent format: paste them after the NF4 exercises
# 09.4-09.5 (the import cell below adds nothing the file's first code cell lacks: drop it), add
# "[9.3 AdaLoRA](../notebooks/09_peft/03_adalora.ipynb) (09.6)" to the file's "Read first" line, then delete
# this file (two 09_*.py sources break exercise_kit.source("09")).
# Checker: minillm/grading/ch09_adalora.py (ADALORA_EXERCISES, id 09.6).

# %%
from minillm.grading import check

# %% [markdown]
# ## 09.6 AdaLoRA's budget schedule (2 points)
#
# Read first: [9.3 AdaLoRA](../notebooks/09_peft/03_adalora.ipynb). AdaLoRA keeps a **budget**: the total
# number of singular values (triplets) left switched on across all adapted matrices. It starts at
# `init_budget`, ends at `target_budget` (at most `init_budget`), and in between falls along a cubic, the way
# the paper (its eq. 12) and `peft` schedule it.
#
# Write `adalora_budget(step, init_budget, target_budget, tinit, tfinal, total_step)`, the budget after
# optimizer step `step` (steps count 1, 2, ...; step 0 is before training), an `int`:
#
# * **warm-up**: for every step up to and including `tinit`, the budget is `init_budget`;
# * **final phase**: for every step after `total_step - tfinal`, it is `target_budget`;
# * **the fall**, the steps in between: let the progress be the share of the fall's
#   `total_step - tfinal - tinit` steps done by `step` (0 at step `tinit`, 1 at step `total_step - tfinal`).
#   The budget is `target_budget` plus `init_budget - target_budget` times the cube of (1 - progress),
#   rounded down to an int.
#
# All arguments are ints with `0 <= tinit < total_step - tfinal` and `tfinal >= 0`; `step >= 0` may lie past
# `total_step`. The answer must equal the exact value rounded down (when that value is an integer $k$, $k - 1$
# passes too: float rounding can land just below it). Worked example, `init_budget = 24`,
# `target_budget = 8`, `tinit = 2`, `tfinal = 3`, `total_step = 10`, at steps 0, 1, ..., 11:
# `[24, 24, 24, 16, 11, 9, 8, 8, 8, 8, 8, 8]`.

# %%
def adalora_budget(step: int, init_budget: int, target_budget: int, tinit: int, tfinal: int,
                   total_step: int) -> int:
    """The total rank AdaLoRA keeps after optimizer step `step`."""
    # BEGIN SOLUTION 09.6: return the budget after this step: warm-up, cubic fall, final phase
    if step <= tinit:  # warm-up: the full budget
        return init_budget
    if step > total_step - tfinal:  # final phase: the rank pattern is fixed
        return target_budget
    left = 1 - (step - tinit) / (total_step - tfinal - tinit)  # 1 at tinit, 0 at total_step - tfinal
    return int((init_budget - target_budget) * left ** 3 + target_budget)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Three branches, one per phase. Only the middle one computes anything: how far the fall has gone, as a
# number from 0 to 1, then a cube of what is left of it.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# With `left = 1 - (step - tinit) / (total_step - tfinal - tinit)`, the fall's budget is
# `int((init_budget - target_budget) * left ** 3 + target_budget)`. At step 3 of the worked example,
# `left = 0.8` and `16 * 0.512 + 8 = 16.192`, so 16.
#
# </details>

# %%
check("09.6", adalora_budget)
