"""Checkers of chapter 10's memory exercises (10.1, 10.2), to be joined into minillm/grading/ch10.py's EXERCISES.

| id | the learner writes | compared with |
|---|---|---|
| 10.1 | `train_state_bytes(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, tied, precision)` | |
|      | (bytes of weights + gradients + AdamW states of a Llama-shaped model in "fp32" / "mixed" / "bf16") | |
|      | | `minillm.model.count_params` x `minillm.train_memory.PRECISIONS` |
| 10.2 | `layer_activation_bytes(seq, batch, hidden, heads, recompute)` (Korthikanti et al. 2022's count of one | |
|      | GPT layer's activations in 16 bits, recompute "none" / "selective" / "full") | arithmetic of their table 2 |

Answers are byte counts: an int, a float or a one-element tensor; they must equal the exact count within 0.5 byte
plus 1e-9 of it (float64 arithmetic passes; float32 cannot hold counts of 1e11 bytes exactly and is not asked for).
Cases: the worked examples of the task text (a tiny model by hand, Llama-2-7B; a 7B-shaped layer at 2,048 tokens),
then random shapes. The ids are this part's own; the coordinator may renumber them.
"""

from __future__ import annotations

import random

from minillm.grading import answers
from minillm.grading.core import Exercise

PRECISIONS = ("fp32", "mixed", "bf16")
MODES = ("none", "selective", "full")


def _bytes_out(got, args) -> float:
    return answers.number(got, "a number of bytes")


def _same_bytes(got: float, want: float, args: tuple) -> bool:
    return abs(got - want) <= 0.5 + 1e-9 * abs(want)


# ---------------------------------------------------------------------------------------------------
# 10.1 bytes of the model states in training


def _params(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, tied, *, kv_heads=None, norms=True,
            head_twice=False) -> int:
    """Parameters of a Llama-shaped GPT (no biases, RMSNorm, SwiGLU, RoPE), by minillm.model.count_params."""
    from minillm.model import GPTConfig, count_params

    cfg = GPTConfig.preset("llama2-7b", vocab_size=vocab_size, n_layer=n_layer, d_model=d_model, n_head=n_head,
                           n_kv_head=kv_heads or n_kv_head, ffn_hidden=ffn_hidden, tie_embeddings=tied)
    c = count_params(cfg)
    return c["total"] - (0 if norms else c["norms"]) + (vocab_size * d_model if head_twice and tied else 0)


def _ref_state_bytes(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, tied, precision, *,
                     master=True, states=2, wide_mixed=False, bf16_master=False, unit=1, **params_kw) -> float:
    """The reference; each keyword set otherwise is one simulated mistake."""
    from minillm.train_memory import PRECISIONS as BYTES

    b = dict(BYTES[precision])
    if precision == "mixed" and not master:
        b["master"] = 0
    if precision == "mixed" and wide_mixed:
        b["weights"] = b["grads"] = 4
    if precision == "bf16" and bf16_master:
        b["master"] = 4
    per_param = b["weights"] + b["grads"] + b["master"] + states * b["state"]
    n = _params(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, tied, **params_kw)
    return n * per_param / unit


TINY = (10, 1, 4, 2, 1, 8, True)  # the task text's hand-worked model: 196 parameters
LLAMA2_7B = (32000, 32, 4096, 32, 32, 11008, False)


def _cases_state_bytes() -> list:
    shapes = [TINY, (10, 1, 4, 2, 1, 8, False), LLAMA2_7B, (32000, 80, 8192, 64, 8, 28672, False)]
    for _ in range(3):
        n_head = random.choice([2, 4, 8])
        shapes.append((random.randrange(2, 60000), random.randrange(1, 12), n_head * random.choice([2, 4, 8, 16]),
                       n_head, random.choice([k for k in range(1, n_head + 1) if n_head % k == 0]),
                       random.randrange(1, 3000), random.random() < 0.5))
    cases = []
    for shape in shapes:
        for precision in PRECISIONS:
            args = (*shape, precision)
            cases.append((args, _ref_state_bytes(*args)))
    return cases


STATE_MISTAKES = [
    (lambda *a: _ref_state_bytes(*a, master=False),
     "mixed precision keeps an fp32 master copy of the weights for the update: 4 more bytes per parameter"),
    (lambda *a: _ref_state_bytes(*a, states=1),
     "AdamW keeps two states per parameter, the first moment m and the second moment v"),
    (lambda *a: _ref_state_bytes(*a, states=0),
     "the optimizer's states are missing: AdamW keeps m and v for every parameter"),
    (lambda *a: _ref_state_bytes(*a, wide_mixed=True),
     "in mixed precision the weights the model computes with and their gradients are 16-bit: 2 bytes each"),
    (lambda *a: _ref_state_bytes(*a, bf16_master=True),
     "pure bf16 training keeps no fp32 master copy: weights, gradients, m and v are all 2 bytes"),
    (lambda *a: _ref_state_bytes(*a, unit=1e9), "return bytes, not GB"),
    (lambda *a: _ref_state_bytes(*a, head_twice=True),
     "with tied embeddings the lm_head is the embedding matrix: count it once"),
    (lambda *a: _ref_state_bytes(*a, kv_heads=a[3]),
     "with GQA the k and v projections have n_kv_head heads of d_model / n_head, not n_head"),
    (lambda *a: _ref_state_bytes(*a, norms=False),
     "the RMSNorm gains are parameters too: two per layer and a final one, d_model each"),
]


# ---------------------------------------------------------------------------------------------------
# 10.2 activations of one layer (Korthikanti et al. 2022)


def _ref_layer_bytes(seq, batch, hidden, heads, recompute, *, attention=True, selective_keeps=False, full=2,
                     swap=False, square=True, width=1) -> float:
    """34 s b h + 5 a s^2 b bytes (none), 34 s b h (selective), 2 s b h (full); keywords: simulated mistakes."""
    s, b, h, a = seq, batch, hidden, heads
    quad = 5 * a * (s * s * b if not swap else s * b * b) if square else 5 * a * s * b
    if recompute == "full":
        return full * s * b * h * width
    if recompute == "selective" and not selective_keeps:
        return 34 * s * b * h * width
    return (34 * s * b * h + (quad if attention else 0)) * width


LAYER_7B = (2048, 1, 4096, 32)


def _cases_layer_bytes() -> list:
    shapes = [LAYER_7B, (4, 2, 8, 2), (512, 8, 1024, 16)]
    for _ in range(3):
        heads = random.choice([1, 4, 12, 32])
        shapes.append((random.randrange(1, 8192), random.randrange(1, 64), heads * random.choice([16, 64, 128]),
                       heads))
    cases = []
    for shape in shapes:
        for mode in MODES:
            args = (*shape, mode)
            cases.append((args, _ref_layer_bytes(*args)))
    return cases


LAYER_MISTAKES = [
    (lambda *a: _ref_layer_bytes(*a, attention=False),
     "without recomputation the attention's s x s tensors are stored too: 5 a s^2 b bytes"),
    (lambda *a: _ref_layer_bytes(*a, selective_keeps=True),
     "selective recomputation drops exactly the attention's s x s tensors (5 a s^2 b); the 34 s b h stay"),
    (lambda *a: _ref_layer_bytes(*a, full=0),
     "full recomputation still keeps each layer's input, s b h numbers of 2 bytes"),
    (lambda *a: _ref_layer_bytes(*a, full=34),
     "full recomputation keeps only the layer's input (2 s b h bytes), not the 34 s b h"),
    (lambda *a: _ref_layer_bytes(*a, swap=True),
     "each head and sequence has an s x s attention matrix: the term is 5 a s^2 b, not 5 a s b^2"),
    (lambda *a: _ref_layer_bytes(*a, square=False),
     "the attention matrices have s x s entries per head and sequence: 5 a s^2 b, not 5 a s b"),
    (lambda *a: _ref_layer_bytes(*a, width=2),
     "the count is for 16-bit activations (2 bytes, 1-byte dropout masks): the coefficients already are bytes"),
]


MEMORY_EXERCISES = [
    Exercise("10.1", "Bytes of the model states in training", 2, cases=_cases_state_bytes, name="train_state_bytes",
             normalize=_bytes_out, same=_same_bytes, mistakes=STATE_MISTAKES),
    Exercise("10.2", "Activation bytes of a layer, with and without recomputation", 1, cases=_cases_layer_bytes,
             name="layer_activation_bytes", normalize=_bytes_out, same=_same_bytes, mistakes=LAYER_MISTAKES),
]
