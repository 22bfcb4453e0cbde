"""Checkers of chapter 12's ZeRO-3 / FSDP exercises, to be joined into minillm/grading/ch12.py's EXERCISES.

| id | the learner writes | compared with |
|---|---|---|
| 12.5 | `shard_unit(params, n)` -> n 1-D tensors: the unit flattened, zero-padded to a multiple of n, | |
|      | cut into n equal pieces (rank r keeps piece r) | `minillm.distributed.zero.shard_layout` |
| 12.6 | `gather_unit(shards, names, shapes)` -> {name: tensor of its shape}: the all-gathered unit cut | |
|      | back into its parameters | `minillm.distributed.fsdp` (what `consolidate_sharded` does per unit) |
| 12.7 | `reduce_scatter_grad(grads)` -> n 1-D tensors: rank r's piece of the mean of the ranks' full | |
|      | flat gradients | `torch.tensor.chunk` of the mean (what `fsdp._Unshard.backward` leaves on rank r) |

Ranks are simulated as lists (rank r's tensor = list[r]), so the checks run in the learner's one process.
Cases: a worked example first, then n = 1, units whose size is a multiple of n, is not, is smaller than n, and
random ones. Values are small integers in float64 (exact in any order and in float32), so a simulated mistake
reproduces the learner's answer exactly and its hint can be named; answers are compared within 1e-5 of the
largest value (float32 passes). 12.5 and 12.7 must return new tensors and leave their inputs as they were.
"""

from __future__ import annotations

import math
import random

import torch

from minillm.grading.core import Exercise, Wrong

HAND_PARAMS = ([[1.0, 2.0], [3.0, 4.0]], [5.0, 6.0, 7.0])  # a 2x2 matrix and a bias of 3: Psi_u = 7
HAND_SHARDS = ((1.0, 2.0, 3.0), (4.0, 5.0, 6.0), (7.0, 0.0, 0.0))  # n = 3: padded to 9, pieces of 3
HAND_GRADS = ([1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0])  # n = 2 ranks' full flat gradients
HAND_RS = ((2.0, 3.0), (4.0, 5.0))  # mean [2, 3, 4, 5]: rank 0 keeps [2, 3], rank 1 [4, 5]


def _ints(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randint(-9, 10, shape).double()


def _canon_list(got, args, n: int, what: str) -> tuple:
    """A list of n tensors (or a 2-D tensor) as a tuple of tuples of floats."""
    if isinstance(got, torch.Tensor) and got.dim() == 2:
        got = list(got)
    if not isinstance(got, (list, tuple)):
        raise Wrong(f"return a list of {n} tensors ({what}), got {type(got).__name__}")
    if len(got) != n:
        raise Wrong(f"return one tensor per rank: {n} tensors, got {len(got)}")
    out = []
    for r, t in enumerate(got):
        try:
            t = t if isinstance(t, torch.Tensor) else torch.as_tensor(t, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise Wrong(f"rank {r}'s tensor must be a 1-D tensor, got {type(t).__name__} {t!r:.30}") from None
        if not t.is_floating_point() and t.dtype != torch.int64:
            raise Wrong(f"rank {r}'s tensor must hold numbers, got dtype {t.dtype}")
        out.append(tuple(float(v) for v in t.detach().double().reshape(-1).tolist()))
    return tuple(out)


def _close(got, want, args) -> bool:
    if isinstance(want[0], tuple) and len(want[0]) == 3 and isinstance(want[0][0], str):  # 12.6: (name, shape, values)
        pairs = list(zip(got, want, strict=True))
        if any(g[:2] != w[:2] or len(g[2]) != len(w[2]) for g, w in pairs):
            return False
        pairs = [(g[2], w[2]) for g, w in pairs]
    else:
        if len(got) != len(want) or any(len(g) != len(w) for g, w in zip(got, want, strict=True)):
            return False
        pairs = list(zip(got, want, strict=True))
    scale = max([1.0] + [abs(v) for _, w in pairs for v in w])
    return all(abs(a - b) <= 1e-5 * scale for g, w in pairs for a, b in zip(g, w, strict=True))


# ---------------------------------------------------------------------------------------------------
# 12.5 shard a unit


def _shard_ref(params: list[torch.Tensor], n: int) -> list[torch.Tensor]:
    from minillm.distributed.zero import shard_layout

    flat = torch.cat([p.reshape(-1) for p in params])  # (Psi_u,)
    lay = shard_layout(flat.numel(), n)
    padded = torch.cat([flat, flat.new_zeros(lay.padded - flat.numel())])  # (P_u,)
    return [padded[slice(*lay.bounds(r))].clone() for r in range(n)]


def _shard_out(got, args) -> tuple:
    return _canon_list(got, args, args[1], "rank r's piece of the padded flat unit")


def _flat(params) -> torch.Tensor:
    return torch.cat([p.reshape(-1) for p in params])


def _pieces(flat: torch.Tensor, n: int, pad_front: bool = False) -> list[torch.Tensor]:
    pad = flat.new_zeros(n * math.ceil(flat.numel() / n) - flat.numel())
    full = torch.cat([pad, flat] if pad_front else [flat, pad])
    return list(full.chunk(n))


SHARD_MISTAKES = [
    (lambda ps, n: list(torch.tensor_split(_flat(ps), n)),
     "every rank's piece has the same length, ceil(Ψ_u / n): pad the flat unit with zeros at the end to a multiple "
     "of n before cutting it"),
    (lambda ps, n: [c.clone() for c in _flat(ps).chunk(n)] + [_flat(ps)[:0]] * (n - len(_flat(ps).chunk(n))),
     "pad the flat unit with zeros to a multiple of n first: without padding the last piece is short (or missing)"),
    (lambda ps, n: _pieces(_flat(ps), n, pad_front=True),
     "the zero padding goes at the end of the flat unit, after the last parameter, not before the first"),
    (lambda ps, n: [torch.cat(_pieces(_flat(ps), n))[r::n].clone() for r in range(n)],
     "rank r keeps one contiguous piece, elements r P/n .. (r + 1) P/n - 1, not every n-th element"),
    (lambda ps, n: [c.clone() for c in torch.cat([_flat(ps), _flat(ps).new_zeros(n - _flat(ps).numel() % n)]).chunk(n)],
     "pad only up to the next multiple of n: a unit whose size is already a multiple of n gets no padding"),
    (lambda ps, n: _pieces(torch.cat([p.t().reshape(-1) if p.dim() == 2 else p.reshape(-1) for p in ps]), n),
     "flatten each parameter in its own (row-major) order, as reshape(-1) does; a transposed matrix mixes its "
     "elements up"),
    (lambda ps, n: _pieces(torch.cat([p.reshape(-1) for p in reversed(ps)]), n),
     "flatten the parameters in the order given (registration order): the offsets of the layout depend on it"),
]


def _shard_cases() -> list:
    cases = [(([torch.tensor(p) for p in HAND_PARAMS], 3), HAND_SHARDS)]
    shapes = [([(3, 2), (2,)], 1), ([(2, 3), (3,)], 3), ([(4, 2), (2,), (2,)], 4), ([(2,)], 3), ([(3, 3), (3,)], 2),
              ([(5,)], 5), ([(2, 2), (2, 2)], 3)]
    shapes += [([(random.randint(1, 4), random.randint(1, 4)), (random.randint(1, 4),)], random.randint(2, 5))
               for _ in range(6)]
    for dims, n in shapes:
        ps = [_ints(d) for d in dims]
        cases.append(((ps, n), _shard_out(_shard_ref(ps, n), (ps, n))))
    return cases


# ---------------------------------------------------------------------------------------------------
# 12.6 gather a unit back into named parameters


def _gather_ref(shards: list[torch.Tensor], names: list[str], shapes: list[tuple[int, ...]]) -> dict:
    from minillm.distributed.fsdp import Unit, _slices

    flat = torch.cat(shards)  # (P_u,): what the all-gather leaves on every rank
    sizes = [math.prod(s) for s in shapes]
    offsets = [sum(sizes[:k]) for k in range(len(sizes))]
    u = Unit("", None, [], [[nm] for nm in names], [torch.Size(s) for s in shapes], offsets, sum(sizes),
             flat.numel(), flat.dtype)
    return _slices(u, flat)


def _gather_out(got, args) -> tuple:
    _, names, shapes = args
    if not isinstance(got, dict):
        raise Wrong(f"return a dict {{parameter name: tensor}}, got {type(got).__name__}")
    if sorted(got, key=str) != sorted(names):
        raise Wrong(f"return one entry per parameter name, exactly {names}; got keys {sorted(got, key=str)}")
    out = []
    for nm in names:
        t = got[nm]
        if not isinstance(t, torch.Tensor):
            raise Wrong(f"{nm!r} must be a tensor, got {type(t).__name__}")
        out.append((nm, tuple(t.shape), tuple(float(v) for v in t.detach().double().reshape(-1).tolist())))
    return tuple(out)


def _cut(flat: torch.Tensor, names, shapes, from_zero: bool = False) -> dict:
    out, off = {}, 0
    for nm, s in zip(names, shapes, strict=True):
        k = math.prod(s)
        start = 0 if from_zero else off
        out[nm] = flat[start:start + k].reshape(s)
        off += k
    return out


GATHER_MISTAKES = [
    (lambda sh, nm, sp: _cut(torch.cat(list(reversed(sh))), nm, sp),
     "concatenate the pieces in rank order: rank 0's piece is the start of the flat unit"),
    (lambda sh, nm, sp: _cut(torch.stack(list(sh), 1).reshape(-1), nm, sp),
     "each rank holds a contiguous piece: concatenate the pieces, do not interleave them element by element"),
    (lambda sh, nm, sp: _cut(torch.cat(sh), nm, sp, from_zero=True),
     "each parameter starts where the previous one ended: its offset is the sum of the sizes before it, not 0"),
    (lambda sh, nm, sp: _cut(torch.cat(sh)[torch.cat(sh).numel() - sum(math.prod(s) for s in sp):], nm, sp),
     "the padding is at the end of the flat unit: the parameters start at element 0"),
    (lambda sh, nm, sp: {n: t.t() if t.dim() == 2 else t
                         for n, t in _cut(torch.cat(sh), nm, [tuple(reversed(s)) for s in sp]).items()},
     "each parameter was flattened row-major (reshape(-1)): reshape its slice to its shape directly, no transpose"),
]


def _gather_case(dims: list[tuple[int, ...]], n: int) -> tuple:
    ps = [_ints(d) for d in dims]
    shards = _shard_ref(ps, n)
    names = [f"p{k}" for k in range(len(dims))]
    args = (shards, names, [tuple(d) for d in dims])
    return args, _gather_out(_gather_ref(*args), args)


def _gather_cases() -> list:
    hand = [torch.tensor(s) for s in HAND_SHARDS]
    args = (hand, ["weight", "bias"], [(2, 2), (3,)])
    cases = [(args, _gather_out(_gather_ref(*args), args))]
    dims = [([(3, 2), (2,)], 1), ([(2, 3), (3,), (3,)], 3), ([(4, 2), (2,)], 4), ([(2, 4)], 3), ([(3, 3), (3,)], 2),
            ([(2, 3), (3, 2)], 5)]
    dims += [([(random.randint(2, 4), random.randint(2, 4)), (random.randint(1, 4),)], random.randint(2, 5))
             for _ in range(6)]
    cases += [_gather_case(d, n) for d, n in dims]
    return cases


# ---------------------------------------------------------------------------------------------------
# 12.7 reduce-scatter a unit's gradient


def _rs_ref(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    n = len(grads)
    mean = torch.stack(list(grads)).sum(0) / n  # (P_u,): the sum over ranks, / n as DDP
    return [c.clone() for c in mean.chunk(n)]


def _rs_out(got, args) -> tuple:
    return _canon_list(got, args, len(args[0]), "rank r's piece of the averaged gradient")


RS_MISTAKES = [
    (lambda g: [c.clone() for c in torch.stack(list(g)).sum(0).chunk(len(g))],
     "divide the sum by the number of ranks: each rank's gradient is of its own rows' mean loss, the step needs "
     "the mean over ranks (as DDP)"),
    (lambda g: [g[r].chunk(len(g))[r].clone() for r in range(len(g))],
     "reduce first: rank r's piece is the mean over ALL ranks of piece r, not piece r of its own gradient"),
    (lambda g: [torch.stack(list(g)).mean(0) for _ in g],
     "scatter after reducing: rank r keeps only piece r of the mean (1/n of it); every rank holding all of it is "
     "an all-reduce"),
    (lambda g: list(reversed(_rs_ref(g))), "rank r keeps piece r (rank 0 the first piece), the piece its shard covers"),
    (lambda g: [torch.stack(list(g)).mean(0)[r::len(g)].clone() for r in range(len(g))],
     "rank r keeps one contiguous piece, elements r P/n .. (r + 1) P/n - 1, the ones its shard covers"),
    (lambda g: [c / len(g) for c in torch.stack(list(g)).mean(0).chunk(len(g))],
     "divide by the number of ranks once: the mean over ranks is the sum / n; dividing the mean by n again makes "
     "the step n times too small"),
]


def _rs_cases() -> list:
    cases = [(([torch.tensor(g) for g in HAND_GRADS],), HAND_RS)]
    shapes = [(1, 3), (3, 6), (4, 8), (2, 2), (3, 12), (5, 5)]
    shapes += [(n, n * random.randint(1, 4)) for n in (random.randint(2, 5) for _ in range(6))]
    for n, numel in shapes:  # multiples of n, as a padded unit is; integers times n: the mean is exact
        g = [_ints((numel,)) * n for _ in range(n)]
        cases.append(((g,), _rs_out(_rs_ref(g), (g,))))
    return cases


FSDP_EXERCISES = (
    Exercise("12.5", "Cut a unit into padded flat shards", 2, cases=_shard_cases, name="shard_unit",
             normalize=_shard_out, same=_close, mistakes=SHARD_MISTAKES,
             fresh="return new tensors and leave the parameters as they were",
             separate="each rank keeps only its own piece"),
    Exercise("12.6", "Gather a unit back into named parameters", 2, cases=_gather_cases, name="gather_unit",
             normalize=_gather_out, same=_close, mistakes=GATHER_MISTAKES),
    Exercise("12.7", "Reduce-scatter a unit's gradient", 1, cases=_rs_cases, name="reduce_scatter_grad",
             normalize=_rs_out, same=_close, mistakes=RS_MISTAKES,
             fresh="return new tensors and leave the ranks' gradients as they were",
             separate="each rank keeps only its own piece of the mean"),
)
