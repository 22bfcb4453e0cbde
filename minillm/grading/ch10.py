"""Checkers of chapter 10 (memory and mixed precision), the exercises of exercises/10_memory_amp.ipynb.

| id | the learner writes | declared in |
|---|---|---|
| 10.1 | `train_state_bytes(...)`: bytes of weights + gradients + AdamW states, fp32 / mixed / bf16 | `ch10_memory` |
| 10.2 | `layer_activation_bytes(seq, batch, hidden, heads, recompute)`: Korthikanti et al.'s count | `ch10_memory` |
| 10.3 | `round_to_bf16(bits)`: an fp32 bit pattern rounded to bf16, nearest, ties to even | `ch10_amp` |
| 10.4 | `loss_scale_trajectory(found_inf, ...)`: the dynamic loss scale over a run | `ch10_amp` |
| 10.5 | `absmax_quantize(x, block)`: block-wise absmax int8 codes and scales | `ch10_save` |
| 10.6 | `accumulated_grad(loss_fn, w, x, y, k)`: the gradient by k micro-batches | `ch10_save` |

Each part declares its exercises with their cases, tolerances and simulated mistakes (with the hint naming each)
in its own module; EXERCISES joins them in the order of the chapter's notebooks.
"""

from __future__ import annotations

from minillm.grading.ch10_amp import AMP_EXERCISES
from minillm.grading.ch10_memory import MEMORY_EXERCISES
from minillm.grading.ch10_save import SAVE_EXERCISES

EXERCISES = tuple(MEMORY_EXERCISES) + tuple(AMP_EXERCISES) + tuple(SAVE_EXERCISES)
