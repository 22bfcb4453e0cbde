"""Checkers of chapter 11's collectives exercises, to be joined into minillm/grading/ch11.py's EXERCISES.

| id | the learner writes | compared with |
|---|---|---|
| 11.1 | `ring_reduce_scatter_sim(buffers)` -> list of N 1-D tensors (every rank's buffer after the ring | |
|      | reduce-scatter, chunks as torch.tensor_split) | `minillm.distributed.collectives.simulate_ring_all_reduce` |
| 11.2 | `ring_allreduce_time(nbytes, n, alpha, beta)` -> float seconds (α–β model) | `...collectives.ring_time` |

11.1 cases: the worked example (N = 3, buffers 1, 10, 100), N = 1 (nothing moves), then N in 2..6 and lengths
0..17 (multiples of N, not multiples, shorter than N: empty chunks, empty), fixed and random. Most buffers hold small
integers in float64, whose sums are exact in any order and in float32, so a simulated mistake reproduces the
learner's answer exactly and its hint can be named; the last cases are float64 normals, compared within
1e-5 times the largest |value| of the case (at least 1), so float32 passes. The answer must be new tensors
(`fresh`): returning or changing the input buffers fails.
11.2 cases: the worked example, N = 1 (0 s), N = 2, then random sizes 1 B .. 10 GB, N in 2..1024, α and β
over realistic ranges; relative tolerance 1e-9 (any order of the arithmetic in float64 passes).
"""

from __future__ import annotations

import math
import numbers
import random

import torch

from minillm.grading.core import Exercise, Wrong

HAND_BUFFERS = ([1.0, 1.0, 1.0], [10.0, 10.0, 10.0], [100.0, 100.0, 100.0])
HAND_AFTER = ((1.0, 111.0, 101.0), (11.0, 10.0, 111.0), (111.0, 110.0, 100.0))
HAND_TIME = ((4e6, 4, 1e-5, 1e-9), 0.00606)


def _reference(buffers: list[torch.Tensor]) -> tuple:
    from minillm.distributed.collectives import simulate_ring_all_reduce

    return _canon(simulate_ring_all_reduce(buffers, "reduce_scatter"))


def _canon(bufs) -> tuple:
    return tuple(tuple(float(v) for v in b.reshape(-1).tolist()) for b in bufs)


def _buffers_out(got, args) -> tuple:
    """The learner's list of N tensors as a tuple of tuples of floats (a list of lists is accepted too)."""
    (buffers,) = args
    n, numel = len(buffers), buffers[0].numel()
    if isinstance(got, torch.Tensor) and got.dim() == 2:
        got = list(got)
    if not isinstance(got, (list, tuple)):
        raise Wrong(f"return a list of {n} tensors (one buffer per rank), got {type(got).__name__}")
    if len(got) != n:
        raise Wrong(f"return one buffer per rank: {n} tensors, got {len(got)}")
    out = []
    for r, b in enumerate(got):
        try:
            t = b if isinstance(b, torch.Tensor) else torch.as_tensor(b, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise Wrong(f"rank {r}'s buffer must be a 1-D tensor, got {type(b).__name__} {b!r:.30}") from None
        if t.numel() != numel:
            raise Wrong(f"rank {r}'s buffer must keep its {numel} elements, got {t.numel()}")
        out.append(t.detach().double().reshape(-1))
    return _canon(out)


def _close(got: tuple, want: tuple, args: tuple) -> bool:
    scale = max([1.0] + [abs(v) for b in want for v in b])
    return all(abs(g - w) <= 1e-5 * scale for gb, wb in zip(got, want, strict=True)
               for g, w in zip(gb, wb, strict=True))


def _split(b: torch.Tensor, n: int, how: str) -> list[torch.Tensor]:
    if how == "chunk":  # torch.chunk: ceil-sized chunks, possibly fewer than n; pad the list with empty views
        parts = list(torch.chunk(b, n)) if b.numel() else []
        return parts + [b[b.numel():]] * (n - len(parts))
    if how == "last_longer":  # floor-sized chunks, the remainder all in the last one
        q = b.numel() // n
        return [b[i * q:(i + 1) * q] if i < n - 1 else b[i * q:] for i in range(n)]
    return list(torch.tensor_split(b, n))


def _sim(buffers, *, steps=None, send=lambda r, s, n: (r - s) % n, to=1, add=True, split="tensor_split",
         snapshot=True):
    """Simulated wrong solutions: the reference with one thing changed."""
    n = len(buffers)
    bufs = [b.clone() for b in buffers]
    chunks = [_split(b, n, split) for b in bufs]
    for s in range(n - 1 if steps is None else steps(n)):
        sent = [chunks[r][send(r, s, n)].clone() if snapshot else chunks[r][send(r, s, n)] for r in range(n)]
        for r in range(n):
            target = chunks[(r + to) % n][send(r, s, n)]
            if add:
                target += sent[r]
            else:
                target.copy_(sent[r])
    return bufs


def _all_reduced(buffers):
    total = torch.stack(list(buffers)).sum(0)
    return [total.clone() for _ in buffers]


RS_MISTAKES = [
    (lambda b: [x.clone() for x in b], "nothing changed: at each of the N - 1 steps every rank sends a chunk to its "
                                       "right neighbour, which adds it to its own copy"),
    (lambda b: _sim(b, split="chunk"),
     "cut the chunks as torch.tensor_split does (the first length % N chunks one element longer); torch.chunk's "
     "ceil-sized chunks are a different split"),
    (lambda b: _sim(b, split="last_longer"),
     "cut the chunks as torch.tensor_split does: the first length % N chunks are one element longer, not the last"),
    (lambda b: _sim(b, send=lambda r, s, n: (r + 1 - s) % n),
     "off by one chunk: at step 0 rank r sends its chunk r (then rank r owns chunk r + 1 at the end)"),
    (lambda b: _sim(b, send=lambda r, s, n: (r + s) % n),
     "a rank forwards the chunk it has just added to: at step s rank r sends chunk (r - s) mod N, not (r + s)"),
    (lambda b: _sim(b, send=lambda r, s, n: r % n),
     "a rank sends a different chunk at each step: the one it has just added to, (r - s) mod N at step s"),
    (lambda b: _sim(b, steps=lambda n: n),
     "the reduce-scatter takes N - 1 steps: an N-th step adds a rank's contribution twice"),
    (lambda b: _sim(b, steps=lambda n: n - 2),
     "the reduce-scatter takes N - 1 steps: with N - 2 the owned chunk misses one rank"),
    (lambda b: _sim(b, add=False),
     "the receiver adds the incoming chunk to its own copy; overwriting it is the all-gather's rule"),
    (lambda b: _sim(b, to=-1, send=lambda r, s, n: (r + s) % n),
     "rank r sends to its right neighbour, rank (r + 1) mod N, not to the left"),
    (_all_reduced, "return the buffers after the reduce-scatter only: every rank holding the full sum is what the "
                   "all-gather phase produces"),
]


def _rs_cases() -> list:
    cases = [(([torch.tensor(b) for b in HAND_BUFFERS],), HAND_AFTER)]
    one = [torch.tensor([3.0, -1.0, 2.0])]
    cases.append(((one,), _reference(one)))
    # (N, length): divisible, uneven (first chunks longer), shorter than N (empty chunks), empty; then random
    shapes = [(4, 8), (4, 10), (3, 7), (5, 13), (4, 2), (3, 0), (2, 5), (6, 17)]
    shapes += [(random.randint(2, 6), random.randint(0, 17)) for _ in range(6)]
    for n, numel in shapes:  # small integers: exact in every order and precision
        bufs = [torch.randint(-20, 21, (numel,)).double() for _ in range(n)]
        cases.append(((bufs,), _reference(bufs)))
    for _ in range(4):  # float64 normals, compared with a tolerance
        n = random.randint(2, 6)
        numel = random.randint(n, 17)
        bufs = [torch.randn(numel, dtype=torch.float64) for _ in range(n)]
        cases.append(((bufs,), _reference(bufs)))
    return cases


def _time_out(got, args) -> float:
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            raise Wrong(f"return one number, the time in seconds, got a tensor of shape {tuple(got.shape)}")
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, numbers.Real):
        raise Wrong(f"return the time as a float (seconds), got {type(got).__name__} {got!r:.40}")
    return float(got)


def _rel(got: float, want: float, args: tuple) -> bool:
    return math.isfinite(got) and abs(got - want) <= 1e-9 * max(abs(want), 1e-300)


def _ring_ref(nbytes, n, alpha, beta) -> float:
    from minillm.distributed.collectives import ring_time

    return ring_time(nbytes, n, alpha, beta)


TIME_MISTAKES = [
    (lambda S, n, a, b: 2 * (n - 1) * (a + S * b),
     "each step moves one chunk, nbytes / n bytes, not the whole message"),
    (lambda S, n, a, b: (n - 1) * (a + S / n * b),
     "that is the reduce-scatter alone: the all-gather takes as many steps again"),
    (lambda S, n, a, b: 2 * n * (a + S / n * b), "each phase takes n - 1 steps (one rank already has its own chunk)"),
    (lambda S, n, a, b: 2 * a + 2 * (n - 1) * S / n * b,
     "every step is a message and pays the latency α: 2(n - 1) of them, not 2"),
    (lambda S, n, a, b: 2 * math.ceil(math.log2(n)) * (a + S * b) if n > 1 else 0.0,
     "that is a binary tree's time; the ring takes 2(n - 1) steps of nbytes / n"),
    (lambda S, n, a, b: 2 * (n - 1) * a + 2 * (n - 1) / n * S / b,
     "β is seconds per byte: multiply the bytes by β"),
    (lambda S, n, a, b: 2 * (n - 1) * (a + math.ceil(S / n) * b),
     "the model takes a chunk as nbytes / n bytes exactly, a real number: do not round it up to whole bytes"),
    (lambda S, n, a, b: 2 * (n - 1) * (a + math.floor(S / n) * b),
     "the model takes a chunk as nbytes / n bytes exactly, a real number: do not round it down to whole bytes"),
]


def _time_cases() -> list:
    cases = [(HAND_TIME[0], HAND_TIME[1]), ((1e6, 1, 1e-5, 1e-9), 0.0), ((1000.0, 2, 2e-6, 1e-10), 2 * (2e-6 + 5e-8))]
    for _ in range(12):
        args = (10 ** random.uniform(0, 10), random.choice([2, 3, 5, 8, 16, 64, 100, 1024]),
                10 ** random.uniform(-7, -4), 10 ** random.uniform(-12, -9))
        cases.append((args, _ring_ref(*args)))
    return cases


COLL_EXERCISES = (
    Exercise("11.1", "The ring reduce-scatter, simulated", 2, cases=_rs_cases, name="ring_reduce_scatter_sim",
             normalize=_buffers_out, same=_close, mistakes=RS_MISTAKES,
             fresh="return new tensors and leave the input buffers as they were"),
    Exercise("11.2", "The α–β time of a ring all-reduce", 1, cases=_time_cases, name="ring_allreduce_time",
             normalize=_time_out, same=_rel, mistakes=TIME_MISTAKES),
)
