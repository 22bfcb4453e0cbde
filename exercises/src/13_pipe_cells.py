# Exercise cells of chapter 13, section 13.1 (pipeline parallelism), to be joined into exercises/src/13_*.py by the
# coordinator (percent format: "# %%" starts a code cell, "# %% [markdown]" a markdown cell). Checkers:
# minillm/grading/ch13_pipe.py (PIPE_EXERCISES); ids 13.1-13.3 may be renumbered when joined.

# %%
from minillm.grading import check

# %% [markdown]
# ## 13.1 The 1F1B order of one stage (2 points)
#
# Read first: [13.1 Pipeline parallelism](../notebooks/13_parallelism/01_pipeline.ipynb), section 3.
# A model is cut into $p$ stages (stage 0 first) and a batch into $m$ micro-batches. Stage $s$ runs, for every
# micro-batch $i$, one forward `("F", i)` and one backward `("B", i)`; the forwards in order $0, 1, \dots, m-1$
# and the backwards in the same order. Under **1F1B** (PipeDream-Flush, Megatron's default), stage $s$ first runs
# a warm-up of $p - 1 - s$ forwards (all $m$ of them when $m$ is smaller), then alternates: one forward, then
# one backward, as long as forwards remain; then it runs the backwards that are left.
#
# Write `one_f_one_b_stage(p, m, s)`: return stage $s$'s actions in the order it runs them, a list of pairs
# `("F", i)` / `("B", i)`. Worked example: `p = 3`, `m = 4`, `s = 0` gives
# `[("F", 0), ("F", 1), ("F", 2), ("B", 0), ("F", 3), ("B", 1), ("B", 2), ("B", 3)]`; the last stage, `s = 2`,
# alternates from the start: `F0 B0 F1 B1 F2 B2 F3 B3`.

# %%
def one_f_one_b_stage(p: int, m: int, s: int) -> list[tuple[str, int]]:
    """Stage s's forwards and backwards, in the order 1F1B runs them."""
    # BEGIN SOLUTION 13.1: return stage s's forwards and backwards in the order 1F1B runs them
    w = min(p - 1 - s, m)  # warm-up forwards: enough to keep the stages after s busy
    actions = [("F", i) for i in range(w)]
    for k in range(m - w):  # steady state: the forward of micro-batch w + k, then the backward of k
        actions += [("F", w + k), ("B", k)]
    actions += [("B", i) for i in range(m - w, m)]  # drain the backwards still owed
    return actions
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Three phases: the warm-up forwards, the steady state where each step is a pair (a forward, then a backward),
# and the drain. How many pairs are there once the warm-up has used $w$ forwards? Which backward is due in the
# $k$-th pair?
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# With `w = min(p - 1 - s, m)`: the warm-up is `F0 .. F(w-1)`, pair `k` (for `k` in `range(m - w)`) is
# `("F", w + k), ("B", k)`, and the drain is `B(m-w) .. B(m-1)`.
#
# </details>

# %%
check("13.1", one_f_one_b_stage)

# %% [markdown]
# ## 13.2 The bubble of a pipeline timeline (1 point)
#
# Read first: [13.1 Pipeline parallelism](../notebooks/13_parallelism/01_pipeline.ipynb), section 3.
# A timeline says when each stage ran each action: `tl[s]` is stage $s$'s list of `(action, start, end)`
# triples, for example `(("F", 0), 0, 1)`. Time starts at 0 (some stage starts its first action then) and the
# step ends when the last action of any stage ends. The **bubble** is the fraction of all stage-time in that
# step during which a stage does nothing (before its first action, between actions, after its last). Do not
# assume every action takes the same time: the stages may be unbalanced.
#
# Write `bubble_from_timeline(tl)`: return the bubble as a float. Worked example (GPipe, $p = 2$, $m = 2$,
# backward twice as long as forward): stage 0 runs `F0 [0, 1]`, `F1 [1, 2]`, `B0 [5, 7]`, `B1 [7, 9]`, stage 1
# runs `F0 [1, 2]`, `F1 [2, 3]`, `B0 [3, 5]`, `B1 [5, 7]`: the answer is `1/3` (0.3333).

# %%
def bubble_from_timeline(tl: list[list[tuple[tuple[str, int], float, float]]]) -> float:
    """The idle fraction of the stage-time of a played pipeline schedule."""
    # BEGIN SOLUTION 13.2: return the idle fraction of the timeline
    p = len(tl)
    makespan = max(end for row in tl for _, _, end in row)
    busy = sum(end - start for row in tl for _, start, end in row)
    return 1.0 - busy / (p * makespan)
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Compute what is easy to add up: the time each stage is busy. The total stage-time available is the number
# of stages times the length of the step.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `makespan = max(end for row in tl for _, _, end in row)`, `busy = sum(end - start ...)` over every action of
# every stage, bubble `= 1 - busy / (p * makespan)`. In the worked example: busy 6 per stage, 12 of 18.
#
# </details>

# %%
check("13.2", bubble_from_timeline)

# %% [markdown]
# ## 13.3 Activations one stage holds at once (1 point)
#
# Read first: [13.1 Pipeline parallelism](../notebooks/13_parallelism/01_pipeline.ipynb), section 4.
# A stage keeps a micro-batch's activations from the moment its forward has run until its backward has run.
# `actions` is one stage's order, a list of `("F", i)` / `("B", i)`: forwards in order $0, 1, \dots$, each
# micro-batch's backward after its forward, but the backwards may come in any order.
#
# Write `peak_activations(actions)`: return the largest number of micro-batches whose activations the stage
# holds at the same time. Worked example: `F0 F1 B0 F2 F3 B1 B2 B3` gives `3` (after F3 it holds 1, 2 and 3).
# A GPipe stage (all forwards first) holds all $m$; a 1F1B stage $s$ at most $p - s$ (all $m$ if fewer).

# %%
def peak_activations(actions: list[tuple[str, int]]) -> int:
    """The most micro-batches held at once along one stage's order."""
    # BEGIN SOLUTION 13.3: return the largest number of micro-batches held at once
    held, peak = set(), 0
    for kind, i in actions:
        if kind == "F":
            held.add(i)
        else:
            held.discard(i)
        peak = max(peak, len(held))
    return peak
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Walk through the order once, keeping what is held right now; the answer is the largest size that ever
# reaches.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# A forward adds its micro-batch to the held set, a backward removes its own micro-batch (whichever it is);
# take the maximum of `len(held)` after every action.
#
# </details>

# %%
check("13.3", peak_activations)
