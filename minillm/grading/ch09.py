"""Checkers of chapter 9 (parameter-efficient fine-tuning), the exercises of exercises/09_peft.ipynb.

| id | the learner writes | compared with |
|---|---|---|
| 09.1 | `lora_linear(x, W, b, A, B, alpha, use_rslora)`: frozen layer + scaled update | `minillm.peft.LoRALinear` |
| 09.2 | `merge_lora_weight(W, A, B, alpha, use_rslora)`: the merged weight, a new tensor | `LoRALinear.merge` |
| 09.3 | `lora_trainable_params(n_layer, d_model, n_head, n_kv_head, ffn_hidden, vocab_size, r, targets)` | |
|      | (an int) | `minillm.peft.lora_param_count` |
| 09.4 | `nf4_quantize(x, blocksize)` -> `(idx, absmax)`: blockwise NF4 | `minillm.peft.nf4` (in `ch09_nf4`) |
| 09.5 | `nf4_dequantize(idx, absmax, blocksize)` | `minillm.peft.nf4` (in `ch09_nf4`) |
| 09.6 | `adalora_budget(step, init_budget, target_budget, tinit, tfinal, total_step)` -> int | |
|      | | `minillm.peft.adalora.budget_schedule` (in `ch09_adalora`) |
| 09.7 | `prefix_attention(q, k, v, prefix_k, prefix_v)`: a prefix, then causal real keys | |
|      | | `minillm.attention.sdpa` (in `ch09_prompts`) |

Hand-worked cases come first (written out in the notebook: a 2 x 2 weight with r = 1; Llama-2-7B with q and v
at r = 8, 4,194,304), then random float64 inputs of random shapes (09.1 also with a 3-D x and without bias)
and random Llama-shaped models with GQA and target subsets (09.3). 09.2 asks for a new weight: returning W
itself or changing it in place fails (`fresh`). Tolerances: 1e-5 times the largest |expected value| of the
case (at least 1), for every output value, so float32 arithmetic passes; parameter counts must be equal. The
`*_MISTAKES` lists pair simulated wrong solutions with the hint naming each.

EXERCISES is one tuple per topic of the chapter, joined at the end; 09.4 and 09.5 (QLoRA's NF4) are declared,
with their cases, tolerances and simulated mistakes, in `minillm.grading.ch09_nf4`, 09.6 (AdaLoRA) in
`minillm.grading.ch09_adalora`, 09.7 (prefix attention) in `minillm.grading.ch09_prompts`.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

from minillm.grading import answers
from minillm.grading.answers import d64, generator, randn64
from minillm.grading.ch09_adalora import ADALORA_EXERCISES
from minillm.grading.ch09_nf4 import NF4_EXERCISES
from minillm.grading.ch09_prompts import PROMPT_EXERCISES
from minillm.grading.core import Exercise

# the 2 x 2, r = 1 example of the notebook (also in tests/test_lora.py)
HAND_W = [[1.0, 2.0], [3.0, 4.0]]
HAND_A = [[1.0, -1.0]]
HAND_B = [[2.0], [0.5]]
HAND_X = [[2.0, 1.0]]
HAND_ALPHA = 3.0
TOL = 1e-5


def _close(got: tuple, want: tuple, args: tuple = ()) -> bool:
    """Every value within 1e-5 of the largest expected |value| (at least 1): a float32 answer's rounding passes,
    a wrong scaling (off by a factor of r, sqrt(r) or alpha) does not."""
    top = max([abs(v) for v in want[1] if not isinstance(v, str)] + [1.0])
    return answers.same_values(got, want, lambda b: TOL * top)


def _scale(A, alpha, use_rslora):
    r = A.shape[0]
    return alpha / math.sqrt(r) if use_rslora else alpha / r


# ---------------------------------------------------------------------------------------------------
# 09.1 the LoRA forward


def _lora(x, W, b, A, B, alpha, use_rslora, *, scale=None, base=True, bias=True, order="BA"):
    s = _scale(A, alpha, use_rslora) if scale is None else scale(A, alpha, use_rslora)
    y = F.linear(x, W, b if bias else None) if base else 0.0
    h = x @ A.T @ B.T if order == "BA" else x @ (A.T @ B.T)
    return y + s * h


LINEAR_MISTAKES = [
    (lambda x, W, b, A, B, alpha, rs: _lora(x, W, b, A, B, alpha, rs, scale=lambda A, a, rs: a),
     "scale the update by alpha / r (alpha / sqrt(r) with use_rslora), not by alpha alone: r is A.shape[0]"),
    (lambda x, W, b, A, B, alpha, rs: _lora(x, W, b, A, B, alpha, rs, scale=lambda A, a, rs: 1.0),
     "the update B A x is multiplied by the scaling alpha / r (alpha / sqrt(r) with use_rslora)"),
    (lambda x, W, b, A, B, alpha, rs: _lora(x, W, b, A, B, alpha, rs, scale=lambda A, a, rs: a * A.shape[0]),
     "divide alpha by the rank (alpha / r), do not multiply"),
    (lambda x, W, b, A, B, alpha, rs: _lora(x, W, b, A, B, alpha, False),
     "with use_rslora=True the scaling is alpha / sqrt(r) (rsLoRA), not alpha / r"),
    (lambda x, W, b, A, B, alpha, rs: _lora(x, W, b, A, B, alpha, True),
     "alpha / sqrt(r) is rsLoRA's scaling, only with use_rslora=True; plain LoRA uses alpha / r"),
    (lambda x, W, b, A, B, alpha, rs: _lora(x, W, b, A, B, alpha, rs, base=False),
     "the adapter is added to the frozen layer's output: W x + b + scaling * B A x, not the update alone"),
    (lambda x, W, b, A, B, alpha, rs: _lora(x, W, b, A, B, alpha, rs, bias=False),
     "keep the frozen layer's bias b (when it is not None) in the output"),
]


def _linear_out(got, args) -> tuple:
    x, W = args[0], args[1]
    return answers.tensor_answer(got, (*x.shape[:-1], W.shape[0]), "one output row per input row: (..., out)")


def _cases_linear() -> list:
    from minillm.peft import LoRALinear

    def ref(x, W, b, A, B, alpha, rs):
        base = torch.nn.Linear(W.shape[1], W.shape[0], bias=b is not None).double()
        lora = LoRALinear(base, A.shape[0], alpha, use_rslora=rs)
        with torch.no_grad():
            base.weight.copy_(W)
            if b is not None:
                base.bias.copy_(b)
            lora.lora_A.copy_(A)
            lora.lora_B.copy_(B)
            return lora(x)

    hand = (d64(HAND_X), d64(HAND_W), None, d64(HAND_A), d64(HAND_B), HAND_ALPHA, False)
    cases = [(hand, ((1, 2), (10.0, 11.5))),
             ((d64(HAND_X), d64(HAND_W), d64([1.0, -1.0]), d64(HAND_A), d64(HAND_B), HAND_ALPHA, False),
              ((1, 2), (11.0, 10.5)))]
    gen = generator()
    shapes = [((5,), 6, 4, 2, True, False), ((3,), 8, 8, 4, False, True), ((2, 3), 7, 5, 3, True, True),
              ((4,), 16, 12, 8, True, False), ((1, 2), 5, 9, 1, False, False), ((6,), 10, 3, 4, True, True)]
    for lead, d_in, d_out, r, with_bias, rs in shapes:
        x = randn64(*lead, d_in, gen=gen)
        W, A, B = randn64(d_out, d_in, gen=gen), randn64(r, d_in, gen=gen), randn64(d_out, r, gen=gen)
        b = randn64(d_out, gen=gen) if with_bias else None
        alpha = random.choice([1.0, 4.0, 16.0, 2.0 * r, 7.5])
        args = (x, W, b, A, B, alpha, rs)
        cases.append((args, _linear_out(ref(*args), args)))
    return cases


# ---------------------------------------------------------------------------------------------------
# 09.2 merging


def _merge(W, A, B, alpha, rs, *, scale=None, transpose=False):
    s = _scale(A, alpha, rs) if scale is None else scale(A, alpha, rs)
    delta = (A.T @ B.T) if transpose else (B @ A)
    return W + s * delta


NEW_WEIGHT = ("return a NEW weight tensor and leave W unchanged (W + ..., not W += ...): unmerging and the frozen "
              "base layer both need W as it was")


def _merge_in_place(W, A, B, alpha, rs):
    W += _scale(A, alpha, rs) * (B @ A)
    return W


MERGE_MISTAKES = [
    (lambda W, A, B, alpha, rs: _merge(W, A, B, alpha, rs, transpose=True),
     "the update of an (out, in) weight is B A, of shape (out, in): B is (out, r), A is (r, in); (B A)^T is "
     "the weight of the transposed layer"),
    (lambda W, A, B, alpha, rs: _merge(W, A, B, alpha, rs, scale=lambda A, a, rs: 1.0),
     "merge the SCALED update: W + (alpha / r) B A, so that the merged layer computes what the adapted one does"),
    (lambda W, A, B, alpha, rs: _merge(W, A, B, alpha, rs, scale=lambda A, a, rs: a),
     "the scaling is alpha / r (alpha / sqrt(r) with use_rslora), not alpha: r is A.shape[0]"),
    (lambda W, A, B, alpha, rs: _merge(W, A, B, alpha, False),
     "with use_rslora=True the scaling is alpha / sqrt(r)"),
    (lambda W, A, B, alpha, rs: _merge(W, A, B, alpha, True),
     "plain LoRA (use_rslora=False) scales by alpha / r; alpha / sqrt(r) is rsLoRA's"),
    (lambda W, A, B, alpha, rs: _scale(A, alpha, rs) * (B @ A),
     "merging adds the update to the frozen weight: return W + scaling * B A, not the update alone"),
    (_merge_in_place, NEW_WEIGHT),
]


def _weight_out(got, args) -> tuple:
    return answers.tensor_answer(got, tuple(args[0].shape), "the merged weight, the shape of W: (out, in)")


def _cases_merge() -> list:
    from minillm.peft import LoRALinear

    def ref(W, A, B, alpha, rs):
        base = torch.nn.Linear(W.shape[1], W.shape[0], bias=False).double()
        lora = LoRALinear(base, A.shape[0], alpha, use_rslora=rs)
        with torch.no_grad():
            base.weight.copy_(W)
            lora.lora_A.copy_(A)
            lora.lora_B.copy_(B)
        lora.merge()
        return base.weight.detach()

    cases = [((d64(HAND_W), d64(HAND_A), d64(HAND_B), HAND_ALPHA, False), ((2, 2), (7.0, -4.0, 4.5, 2.5))),
             # r = 4, alpha = 8, rsLoRA: scaling 8 / sqrt(4) = 4 (plain LoRA: 2)
             ((d64([[0.0, 0.0], [0.0, 0.0]]), d64([[1.0, 0.0]] * 4), d64([[0.25] * 4, [0.0] * 4]), 8.0, True),
              ((2, 2), (4.0, 0.0, 0.0, 0.0)))]
    gen = generator()
    for d_in, d_out, r, rs in [(4, 4, 2, False), (6, 3, 1, True), (5, 8, 4, False), (12, 12, 8, True),
                               (3, 7, 3, False)]:
        W, A, B = randn64(d_out, d_in, gen=gen), randn64(r, d_in, gen=gen), randn64(d_out, r, gen=gen)
        args = (W, A, B, random.choice([1.0, 8.0, 2.0 * r, 5.5]), rs)
        cases.append((args, _weight_out(ref(*args), args)))
    return cases


# ---------------------------------------------------------------------------------------------------
# 09.3 trainable parameters

PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
OURS = {"gate_proj": "mlp.gate", "up_proj": "mlp.up", "down_proj": "mlp.down"}  # minillm's MLP names


def _shapes(n_layer, d, n_head, n_kv_head, ffn, vocab, *, gqa=True):
    hd = d // n_head
    q, kv = n_head * hd, (n_kv_head if gqa else n_head) * hd
    return {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d), "gate_proj": (d, ffn),
            "up_proj": (d, ffn), "down_proj": (ffn, d), "lm_head": (d, vocab)}


def _count(n_layer, d, n_head, n_kv_head, ffn, vocab, r, targets, *, per=lambda r, i, o: r * (i + o), gqa=True,
           layers=True, head_per_layer=False):
    shapes = _shapes(n_layer, d, n_head, n_kv_head, ffn, vocab, gqa=gqa)
    total = 0
    for t in targets:
        n = per(r, *shapes[t])
        total += n * (n_layer if layers and (t != "lm_head" or head_per_layer) else 1)
    return total


PARAM_MISTAKES = [
    (lambda *a: _count(*a, per=lambda r, i, o: r * i * o),
     "each adapted linear trains A (r x in) and B (out x r): r * (in + out) numbers, not r * in * out"),
    (lambda *a: _count(*a, per=lambda r, i, o: i * o),
     "count the adapter (A: r x in, B: out x r), not the frozen weight (in x out)"),
    (lambda *a: _count(*a, per=lambda r, i, o: r * i),
     "count both matrices: A (r x in) AND B (out x r)"),
    (lambda *a: _count(*a, gqa=False),
     "with grouped-query attention k_proj and v_proj map d_model to n_kv_head * head_dim, not to d_model"),
    (lambda *a: _count(*a, layers=False),
     "every layer has its own adapted projections: multiply the per-layer count by n_layer (lm_head is one)"),
    (lambda *a: _count(*a, head_per_layer=True),
     "lm_head is a single layer at the top of the model, not one per block"),
    (lambda *a: _count(*a, per=lambda r, i, o: 2 * r * max(i, o)),
     "in and out differ for the MLP's projections, for k / v under GQA and for lm_head: use r * (in + out)"),
]


def _int_out(got, args) -> int:
    return answers.integer(got, "the number of trainable parameters")


def _cases_params() -> list:
    from minillm.model import GPTConfig
    from minillm.peft import LoraConfig, lora_param_count

    def ref(n_layer, d, n_head, n_kv_head, ffn, vocab, r, targets):
        cfg = GPTConfig(vocab_size=vocab, n_layer=n_layer, n_head=n_head, n_kv_head=n_kv_head, d_model=d,
                        ffn_hidden=ffn, pos="rope", norm="rmsnorm", ffn="swiglu", bias=False, tie_embeddings=False)
        return lora_param_count(LoraConfig(r=r, target_modules=tuple(OURS.get(t, t) for t in targets)), cfg)

    cases = [((32, 4096, 32, 32, 11008, 32000, 8, ("q_proj", "v_proj")), 4_194_304),
             # Llama-2-70B (GQA: 8 kv heads of 128), q and v at r = 16: 80 x 16 x ((8192 + 8192) + (8192 + 1024))
             ((80, 8192, 64, 8, 28672, 32000, 16, ("q_proj", "v_proj")), 32_768_000),
             ((2, 8, 2, 1, 20, 50, 1, ("k_proj", "down_proj", "lm_head")), 2 * ((8 + 4) + (20 + 8)) + (8 + 50)),
             # GQA with every attention projection: o_proj reads the n_head heads (8), k / v write n_kv_head's (4)
             ((2, 8, 4, 2, 20, 50, 2, ("q_proj", "k_proj", "v_proj", "o_proj")),
              2 * 2 * ((8 + 8) + (8 + 4) + (8 + 4) + (8 + 8)))]
    for _ in range(6):
        n_head = random.choice([2, 4, 8])
        n_kv_head = random.choice([k for k in (1, 2, 4, 8) if n_head % k == 0])
        d = n_head * random.choice([4, 8, 16])
        targets = tuple(t for t in (*PROJ, "lm_head") if random.random() < 0.45) or ("k_proj",)
        args = (random.randint(1, 6), d, n_head, n_kv_head, random.randint(d, 4 * d), random.randint(30, 300),
                random.choice([1, 2, 4, 8, 16]), targets)
        cases.append((args, ref(*args)))
    return cases


EXERCISES_LORA = (
    Exercise("09.1", "A LoRA linear layer", 1, cases=_cases_linear, name="lora_linear", normalize=_linear_out,
             same=_close, mistakes=LINEAR_MISTAKES),
    Exercise("09.2", "Merge a LoRA update", 1, cases=_cases_merge, name="merge_lora_weight", normalize=_weight_out,
             same=_close, mistakes=MERGE_MISTAKES, fresh=NEW_WEIGHT),
    Exercise("09.3", "Trainable parameters of LoRA", 2, cases=_cases_params, name="lora_trainable_params",
             normalize=_int_out, mistakes=PARAM_MISTAKES),
)

# later parts of chapter 9 (QLoRA's NF4, ...) append their tuples here
EXERCISES = EXERCISES_LORA + NF4_EXERCISES + ADALORA_EXERCISES + PROMPT_EXERCISES
