"""Graded exercises: `check("01.3", train_bpe)` in a notebook, `minillm grade` for a report card.

- `core`: `check()`, the registry (`register`) and the result line printed in the notebook.
- `ch01`, `ch02`, ...: the checkers of each chapter, imported when first needed (`ch01_mistakes`
  holds the simulated wrong solutions whose hints name a learner's mistake).
- `answers`: what the chapter checkers share: reading the learner's answer (a tensor of the right shape, a
  number, an int, a boolean mask), comparing it with a tolerance, drawing random float64 inputs.
- `runner`: executes exercise notebooks and builds the report card (`minillm grade`).
- `build`: writes the learner notebook (stubs) from the solution source (`exercises/src/*.py`).

See book/grading.md ("How grading works") for the learner's view.
"""

from minillm.grading.core import CheckResult, check, register

__all__ = ["CheckResult", "check", "register"]
