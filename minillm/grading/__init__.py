"""Graded exercises: `check("01.3", train_bpe)` in a notebook, `minillm grade` for a report card.

- `core`: `check()`, `Exercise`, the registry and the result line printed in the notebook.
- `ch01`, `ch02`, ...: one module per chapter, imported when first needed: its `EXERCISES`, one declarative
  `Exercise` each (id, title, points, cases from the minillm reference, the simulated mistakes with the
  hint that names each, optional custom check).
- `answers`: what the chapter checkers share: reading the learner's answer (a tensor of the right shape, a
  number, an int, a boolean mask), comparing it with a tolerance, drawing random float64 inputs.
- `runner`: executes an exercise notebook, then grades it outside the learner's kernel (`minillm grade`;
  its arguments and printing are in `minillm.commands.grade`).
- `worker`: the fresh process that runs the checks that count, on the notebook's definitions only.

See book/grading.md ("How grading works") for the learner's view.
"""

from minillm.grading.core import CheckResult, Exercise, check

__all__ = ["CheckResult", "Exercise", "check"]
