"""Checkers of chapter 12's ZeRO-Offload and DeepSpeed exercises, to be joined into minillm/grading/ch12.py's EXERCISES.

| id | the learner writes | compared with |
|---|---|---|
| 12.8 | `offload_bytes(psi, weight_bytes, grad_bytes, host_grad_bytes)` -> (GPU, CPU, PCIe per step) bytes | |
|      | | `minillm.distributed.offload.offload_memory` |
| 12.9 | `ds_batch(train_batch_size, micro, accum, world_size)` -> the completed triple, or None | |
|      | | `minillm.distributed.ds_config.resolve_batch` (None where it refuses) |

12.8 cases: the worked examples (10^10 parameters, defaults; host gradients in 16 bits), then random integer Ψ
(10^3 .. 10^12) with every combination of 2- and 4-byte weights, gradients and host gradients. Ψ is an int, so the
answers are integers below 2^53, exact in any order of the arithmetic; compared with a relative tolerance of 1e-9
all the same.
12.9 cases: the worked examples (each of the three inferred, all three consistent and not, a division that is not
exact, accumulation defaulting to 1, both batch sizes missing), then random micro batch, accumulation and world
size with one or two values hidden, some made inconsistent or indivisible. Integers only: answers compare exactly.
"""

from __future__ import annotations

import math
import numbers
import random

from minillm.grading.core import Exercise, Wrong, short

PSI_HAND = 10 ** 10
HAND_OFFLOAD = (((PSI_HAND,), (40e9, 160e9, 40e9)), ((PSI_HAND, 2, 2, 2), (40e9, 140e9, 40e9)))


# -- 12.8 bytes by placement -------------------------------------------------------------------------------------
def _offload_ref(psi, weight_bytes=2, grad_bytes=2, host_grad_bytes=4) -> tuple[float, float, float]:
    from minillm.distributed.offload import offload_memory

    m = offload_memory(psi, weight_bytes=weight_bytes, grad_bytes=grad_bytes, host_grad_bytes=host_grad_bytes)
    return float(m["device"]), float(m["host"]), float(m["link"])


def _number(x, what: str) -> float:
    if not isinstance(x, numbers.Real) and hasattr(x, "item") and callable(x.item):  # a tensor or numpy scalar
        try:
            x = x.item()
        except (ValueError, RuntimeError):
            raise Wrong(f"{what} must be one number, got {short(x, 40)}") from None
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise Wrong(f"{what} must be a number of bytes, got {type(x).__name__} {short(x, 40)}")
    return float(x)


def _triple_out(got, args) -> tuple[float, float, float]:
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        raise Wrong(f"return three numbers (GPU bytes, CPU bytes, PCIe bytes per step), got {short(got, 60)}")
    return tuple(_number(x, name) for x, name in zip(got, ("the GPU bytes", "the CPU bytes", "the PCIe bytes"),
                                                      strict=True))


def _rel(got, want, args) -> bool:
    return all(math.isfinite(g) and abs(g - w) <= 1e-9 * max(abs(w), 1.0) for g, w in zip(got, want, strict=True))


def _offload_cases() -> list:
    cases = [(args, want) for args, want in HAND_OFFLOAD]
    for w in (2, 4):
        for g in (2, 4):
            for h in (2, 4):
                psi = random.choice([random.randint(10 ** 3, 10 ** 6), random.randint(10 ** 9, 10 ** 12)])
                cases.append(((psi, w, g, h), _offload_ref(psi, w, g, h)))
    psi = random.randint(10 ** 6, 10 ** 11)
    cases.append(((psi,), _offload_ref(psi)))
    return cases


OFFLOAD_MISTAKES = [
    (lambda p, w=2, g=2, h=4: ((w + g + 12) * p, 0, 0),
     "that is training without offload, everything on the GPU: ZeRO-Offload moves the optimizer states and the "
     "update to the CPU"),
    (lambda p, w=2, g=2, h=4: (w * p, (12 + h) * p, (g + w) * p),
     "the 16-bit gradients are produced on the GPU by backward: count them there too (the upper bound 2Ψ + 2Ψ, "
     "every gradient waiting for the step)"),
    (lambda p, w=2, g=2, h=4: ((w + g) * p, 12 * p, (g + w) * p),
     "the CPU also keeps the gradients it receives, host_grad_bytes per parameter, for the Adam step"),
    (lambda p, w=2, g=2, h=4: ((w + g) * p, (8 + h) * p, (g + w) * p),
     "Adam's states on the CPU are three fp32 tensors: the master weights as well as m and v (12 bytes)"),
    (lambda p, w=2, g=2, h=4: ((w + g) * p, (12 + h) * p, g * p),
     "the updated weights travel back to the GPU every step too: PCIe carries gradients down and weights up"),
    (lambda p, w=2, g=2, h=4: ((w + g) * p, (12 + h) * p, 8 * p),
     "the tensors cross PCIe in their 16-bit form (grad_bytes down, weight_bytes up); the fp32 copies never leave "
     "the CPU"),
    (lambda p, w=2, g=2, h=4: ((w + g) * p, (12 + h) * p, (h + w) * p),
     "the gradients cross PCIe as the GPU made them, grad_bytes each; host_grad_bytes is what they take once on "
     "the CPU"),
    (lambda p, w=2, g=2, h=4: ((w + g) * p, 16 * p, (g + w) * p),
     "use the host_grad_bytes argument for the CPU's gradients: it is not always 4"),
    (lambda p, w=2, g=2, h=4: (4 * p, (12 + h) * p, 4 * p),
     "use the weight_bytes and grad_bytes arguments: they are not always 2"),
]


# -- 12.9 DeepSpeed's batch identity -----------------------------------------------------------------------------
HAND_BATCH = [
    ((32, 4, None, 4), (32, 4, 2)),
    ((None, 4, 2, 4), (32, 4, 2)),
    ((32, None, 2, 4), (32, 4, 2)),
    ((32, 4, 2, 4), (32, 4, 2)),
    ((32, 4, 3, 4), None),
    ((30, 4, None, 4), None),
    ((8, None, None, 2), (8, 4, 1)),
    ((None, 3, None, 1), (3, 3, 1)),
    ((None, None, 2, 4), None),
]


def _batch_ref(train, micro, accum, world):
    from minillm.distributed.ds_config import resolve_batch

    try:
        return resolve_batch(train, micro, accum, world)
    except ValueError:
        return None


def _batch_out(got, args):
    if got is None:
        return None
    if hasattr(got, "tolist") and getattr(got, "ndim", None) == 1:  # a 1-D tensor or numpy array
        got = got.tolist()
    if not isinstance(got, (tuple, list)) or len(got) != 3:
        raise Wrong(f"return (train_batch_size, micro, accum) as three ints, or None, got {short(got, 60)}")
    out = []
    for x in got:
        if hasattr(x, "item") and callable(x.item):
            try:
                x = x.item()
            except (ValueError, RuntimeError):
                raise Wrong(f"each value must be one int, got {short(x, 40)}") from None
        if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(x) or x != int(x):
            raise Wrong(f"each of the three values is a whole number of rows or steps, got {short(x, 40)}")
        out.append(int(x))
    return tuple(out)


def _batch_cases() -> list:
    cases = list(HAND_BATCH)
    for _ in range(16):
        micro, accum, world = random.randint(1, 16), random.randint(1, 8), random.choice([1, 2, 3, 4, 8, 64])
        train = micro * accum * world
        kind = random.choice(["train", "micro", "accum", "micro+accum", "train+accum", "bad", "indivisible"])
        if kind == "train":
            args = (None, micro, accum, world)
        elif kind == "micro":
            args = (train, None, accum, world)
        elif kind == "accum":
            args = (train, micro, None, world)
        elif kind == "micro+accum":
            args = (train, None, None, world)
        elif kind == "train+accum":
            args = (None, micro, None, world)
        elif kind == "bad":
            args = (train + random.randint(1, 5), micro, accum, world)
        else:
            args = (train + 1, micro, None, world) if micro * world > 1 else (train + 1, None, 2, world)
        cases.append((args, _batch_ref(*args)))
    return cases


def _ds_no_world(t, m, a, w):
    return _batch_ref(t, m, a, 1)


def _ds_floor(t, m, a, w):
    if t is None and m is None:
        return None
    if t is None:
        return (m * (a or 1) * w, m, a or 1)
    if m is None:
        return (t, t // ((a or 1) * w), a or 1)
    if a is None:
        return (t, m, t // (m * w))
    return _batch_ref(t, m, a, w)


def _ds_no_consistency(t, m, a, w):
    return (t, m, a) if None not in (t, m, a) else _batch_ref(t, m, a, w)


def _ds_no_default(t, m, a, w):
    if a is None and (t is None or m is None):
        return None
    return _batch_ref(t, m, a, w)


def _ds_order(t, m, a, w):
    r = _batch_ref(t, m, a, w)
    return None if r is None else (r[1], r[2], r[0])


BATCH_MISTAKES = [
    (_ds_no_world, "the global batch counts every GPU: train_batch_size = micro x accum x world_size"),
    (_ds_floor, "when the division is not exact no whole number fits: return None rather than rounding down"),
    (_ds_no_consistency, "three given values must satisfy the identity: return None when they do not"),
    (_ds_no_default, "with the accumulation steps missing as well, DeepSpeed takes them as 1 and infers the other "
                     "batch size"),
    (_ds_order, "return the triple in the order (train_batch_size, micro, accum)"),
]


OFFLOAD_EXERCISES = (
    Exercise("12.8", "ZeRO-Offload: bytes on the GPU, on the CPU and over PCIe", 1, cases=_offload_cases,
             name="offload_bytes", normalize=_triple_out, same=_rel, mistakes=OFFLOAD_MISTAKES),
    Exercise("12.9", "DeepSpeed's batch identity", 1, cases=_batch_cases, name="ds_batch", normalize=_batch_out,
             mistakes=BATCH_MISTAKES),
)
