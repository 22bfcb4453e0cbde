"""Checkers of chapter 11's DDP exercises, to be joined into minillm/grading/ch11.py's EXERCISES.

| id | the learner writes | compared with |
|---|---|---|
| 11.3 | `ddp_buckets(sizes, cap)` -> list of buckets (lists of parameter indices), reverse order, byte cap | |
|      | | `minillm.distributed.ddp.assign_buckets` |
| 11.4 | `ddp_average(rank_grads)` -> list of tensors / None: every rank's `.grad` after DDP's all-reduce | |
|      | | the sum over ranks / N (as `DDP._finalize`); the large-batch gradient of a real model |

11.3 cases: the worked example, no parameters, one parameter larger than the cap, sizes equal to the cap, a cap
larger than everything, then random sizes (1..64 bytes, some equal to the cap) and caps. The order of the indices
inside a bucket is free (a bucket is a set of parameters; DDP flattens them in any fixed order); the order of the
buckets is not (it is the order they are launched in). Integers only: answers compare exactly.
11.4 cases: the worked example, one rank, a parameter no rank has a gradient for, one present on some ranks only,
then integer-valued tensors with N in {2, 4} (exact in float64 and float32, so a simulated mistake is named), then
the gradients of a linear layer on N equal shards of a batch, whose answer is the gradient of the whole batch
computed in one go (not the formula), and random normals; tolerance 1e-5 times the largest |value| (at least 1),
so float32 passes.
"""

from __future__ import annotations

import numbers
import random

import torch

from minillm.grading.core import Exercise, Wrong, short

HAND_SIZES, HAND_CAP = [12, 12, 12, 4, 20], 20
HAND_BUCKETS = [[4], [3, 2, 1], [0]]


# -- 11.3 buckets ----------------------------------------------------------------------------------------------
def _buckets_ref(sizes: list[int], cap: int) -> tuple:
    from minillm.distributed.ddp import assign_buckets

    return _canon_buckets(assign_buckets(sizes, cap))


def _canon_buckets(buckets) -> tuple:
    return tuple(tuple(sorted(b, reverse=True)) for b in buckets)


def _buckets_out(got, args) -> tuple:
    """A list of buckets, each a list of int indices; canonical: tuples, indices descending inside a bucket."""
    if not isinstance(got, (list, tuple)):
        raise Wrong(f"return a list of buckets (each a list of parameter indices), got {type(got).__name__}")
    out = []
    for b in got:
        if isinstance(b, torch.Tensor):
            b = b.tolist()
        if not isinstance(b, (list, tuple)):
            raise Wrong(f"each bucket is a list of parameter indices, got {type(b).__name__} {b!r:.40}")
        if len(b) == 0:
            raise Wrong("a bucket is never empty: open a new bucket only for a parameter that goes into it")
        if not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in b):
            raise Wrong(f"bucket {list(b)!r:.60} must hold int indices of parameters, not sizes or other values")
        out.append([int(i) for i in b])
    return _canon_buckets(out)


def _walk(sizes, cap, *, forward=False, strict=False, gt=False, keep_last=True, reset=True, empty=False):
    """Simulated solutions: the right walk with one thing changed."""
    order = range(len(sizes)) if forward else reversed(range(len(sizes)))
    buckets, cur, total = [], [], 0
    for i in order:
        if strict and cur and total + sizes[i] > cap:  # never pass the cap: close before adding
            buckets.append(cur)
            cur, total = [], (0 if reset else total)
        cur.append(i)
        total += sizes[i]
        if (total > cap) if (gt or strict) else (total >= cap):
            buckets.append(cur)
            cur = []
            total = 0 if reset else total
    if (cur or empty) and keep_last:
        buckets.append(cur)
    return buckets


BUCKET_MISTAKES = [
    (lambda s, c: _walk(s, c, forward=True),
     "walk the parameters from the last registered to the first (backward produces gradients in about that "
     "order), so the first bucket holds the last parameters"),
    (lambda s, c: _walk(s, c, strict=True),
     "a bucket is closed once its size reaches the cap: the parameter that takes it to or past the cap still "
     "joins it (it may end above the cap)"),
    (lambda s, c: _walk(s, c, gt=True), "a bucket whose size is exactly the cap is full: close it at size >= cap"),
    (lambda s, c: _walk(s, c, keep_last=False),
     "the last bucket may stay below the cap; its parameters still need communicating: return it too"),
    (lambda s, c: _walk(s, c, reset=False), "each new bucket starts at 0 bytes: reset the running size when you "
     "close a bucket"),
]


def _bucket_cases() -> list:
    cases = [((list(HAND_SIZES), HAND_CAP), _canon_buckets(HAND_BUCKETS))]
    fixed = [([], 8), ([100], 8), ([8, 8, 8], 8), ([3, 5, 2, 6], 1000), ([4, 4, 4, 4], 8), ([1, 9, 1, 1], 5),
             ([6, 2, 7, 1, 3], 9), ([2, 30, 2, 2, 2], 6)]
    cases += [((list(s), c), _buckets_ref(s, c)) for s, c in fixed]
    for _ in range(40):
        n = random.randint(1, 14)
        cap = random.randint(1, 80)
        sizes = [random.choice([cap, random.randint(1, 64)]) if random.random() < 0.2 else random.randint(1, 64)
                 for _ in range(n)]
        cases.append(((sizes, cap), _buckets_ref(sizes, cap)))
    return cases


# -- 11.4 averaging ------------------------------------------------------------------------------------------
def _average_ref(rank_grads: list[list]) -> list:
    """Every rank's gradient after DDP: sum over ranks (None = zeros) / N; None when no rank had one."""
    n, out = len(rank_grads), []
    for per_param in zip(*rank_grads, strict=True):
        present = [g for g in per_param if g is not None]
        out.append(None if not present else sum(g.double() for g in present) / n)
    return out


def _grads_out(got, args) -> tuple:
    """A list with one entry per parameter: None or a tensor of that parameter's shape; canonical tuples."""
    rank_grads = args[0]
    shapes = [next((tuple(r[i].shape) for r in rank_grads if r[i] is not None), None)
              for i in range(len(rank_grads[0]))]
    if not isinstance(got, (list, tuple)):
        raise Wrong(f"return a list with one gradient (or None) per parameter, got {type(got).__name__}")
    if len(got) != len(shapes):
        raise Wrong(f"return one entry per parameter ({len(shapes)}), got {len(got)}")
    out = []
    for i, g in enumerate(got):
        if g is None:
            out.append(None)
            continue
        if not isinstance(g, torch.Tensor):
            if shapes[i] is None:  # e.g. sum([]) / n = 0.0
                raise Wrong(f"no rank has a gradient for parameter {i}: its entry stays None (so the optimizer "
                            f"skips it), got {short(g, 40)}")
            raise Wrong(f"entry {i} must be a tensor or None, got {type(g).__name__}")
        if shapes[i] is not None and tuple(g.shape) != shapes[i]:
            raise Wrong(f"entry {i} has shape {tuple(g.shape)}; a gradient has its parameter's shape {shapes[i]}")
        out.append((tuple(g.shape), tuple(g.detach().double().reshape(-1).tolist())))
    return tuple(out)


def _canon_grads(grads) -> tuple:
    return tuple(None if g is None else (tuple(g.shape), tuple(g.double().reshape(-1).tolist())) for g in grads)


def _close(got: tuple, want: tuple, args) -> bool:
    if len(got) != len(want):
        return False
    for g, w in zip(got, want, strict=True):
        if (g is None) != (w is None):
            return False
        if w is None:
            continue
        if g[0] != w[0]:
            return False
        scale = max([1.0] + [abs(v) for v in w[1]])
        if any(abs(a - b) > 1e-5 * scale for a, b in zip(g[1], w[1], strict=True)):
            return False
    return True


def _params(rank_grads):  # per parameter: the tuple of the ranks' gradients
    return list(zip(*rank_grads, strict=True))


def _sum_only(rank_grads):
    return [None if all(g is None for g in p) else sum(g for g in p if g is not None) for p in _params(rank_grads)]


def _by_present(rank_grads):
    out = []
    for p in _params(rank_grads):
        present = [g for g in p if g is not None]
        out.append(None if not present else sum(present) / len(present))
    return out


def _zeros_for_none(rank_grads):
    out = []
    for p in _params(rank_grads):
        shape = next((g.shape for g in p if g is not None), (1,))
        out.append(sum(g if g is not None else torch.zeros(shape, dtype=torch.float64) for g in p) / len(p))
    return out


def _own(rank_grads):
    return [None if g is None else g.clone() for g in rank_grads[0]]


AVERAGE_MISTAKES = [
    (_sum_only, "all-reduce leaves the sum of the ranks' gradients; DDP then divides it by the number of ranks N"),
    (_by_present,
     "divide by N, the number of ranks, even when some had no gradient for the parameter: they contribute zeros "
     "(that is what makes the result the large batch's gradient)"),
    (_zeros_for_none, "a parameter that no rank has a gradient for stays None (so the optimizer skips it), not zeros"),
    (_own, "every rank must end with the same gradient, the average over all ranks, not its own"),
]


def _ints(shape, n_ranks, p_none=0.0):
    return [None if random.random() < p_none else torch.randint(-9, 10, shape).double() for _ in range(n_ranks)]


def _shard_case(n_ranks: int, rows_per_rank: int, seed: int) -> tuple:
    """A linear layer, mean squared error over N equal shards: (the ranks' gradients, the whole batch's)."""
    gen = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(2, 3, generator=gen, dtype=torch.float64))
        layer.bias.copy_(torch.randn(2, generator=gen, dtype=torch.float64))
    x = torch.randn(n_ranks * rows_per_rank, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(n_ranks * rows_per_rank, 2, generator=gen, dtype=torch.float64)

    def grads(rows):
        layer.zero_grad(set_to_none=True)
        (layer(x[rows]) - y[rows]).pow(2).mean().backward()
        return [layer.weight.grad.clone(), layer.bias.grad.clone()]

    ranks = [grads(slice(r * rows_per_rank, (r + 1) * rows_per_rank)) for r in range(n_ranks)]
    return ranks, grads(slice(None))


def _average_cases() -> list:
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    hand = [[t(1.0, 2.0), None, None], [t(3.0, 4.0), t(6.0), None]]
    cases = [((hand,), _canon_grads([t(2.0, 3.0), t(3.0), None]))]
    cases.append((([[t(5.0, -1.0), t(2.0)]],), _canon_grads([t(5.0, -1.0), t(2.0)])))  # one rank: unchanged
    for _ in range(6):
        n = random.choice([2, 4])
        shapes = [tuple(random.randint(1, 3) for _ in range(random.randint(1, 2))) for _ in range(random.randint(1, 4))]
        per_param = [_ints(s, n, p_none=random.choice([0.0, 0.0, 0.3, 1.0])) for s in shapes]
        rank_grads = [[per_param[i][r] for i in range(len(shapes))] for r in range(n)]
        cases.append(((rank_grads,), _canon_grads(_average_ref(rank_grads))))
    for n, rows, seed in ((2, 3, 0), (3, 2, 1), (4, 1, random.randint(2, 10 ** 6))):
        ranks, big = _shard_case(n, rows, seed)
        cases.append(((ranks,), _canon_grads(big)))  # the large-batch gradient, computed directly
    for _ in range(3):
        n = random.randint(2, 5)
        rank_grads = [[torch.randn(2, 3, dtype=torch.float64), torch.randn(4, dtype=torch.float64)] for _ in range(n)]
        cases.append(((rank_grads,), _canon_grads(_average_ref(rank_grads))))
    return cases


DDP_EXERCISES = (
    Exercise("11.3", "DDP's gradient buckets", 2, cases=_bucket_cases, name="ddp_buckets", normalize=_buckets_out,
             mistakes=BUCKET_MISTAKES),
    Exercise("11.4", "Averaging the ranks' gradients as DDP does", 2, cases=_average_cases, name="ddp_average",
             normalize=_grads_out, same=_close, mistakes=AVERAGE_MISTAKES,
             fresh="leave the ranks' gradients as they were: build the averages in new tensors (no add_ / div_ on "
                   "an input)"),
)
