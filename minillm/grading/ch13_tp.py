"""Checkers of chapter 13's tensor-parallel exercises (cells: exercises/src/13_tp_cells.py), to be joined into
minillm/grading/ch13.py's EXERCISES (the ids may be renumbered then).

| id | the learner writes | compared with |
|---|---|---|
| 13.4 | `megatron_mlp_partials(x, a_shards, b_shards)` -> list of N (b, h) tensors: rank r's output of the | |
|      | column- then row-parallel MLP before the all-reduce, GeLU(x A_r) B_r | the unsplit MLP's pieces |
| 13.5 | `vocab_parallel_ce(shards, target)` -> (M,) per-token cross-entropy from per-rank logit slices | |
|      | (rank r holds vocabulary ids r V/N ..) | `F.cross_entropy` on the concatenated logits |
| 13.6 | `tp_layer_bytes(b, s, h, t, nbytes)` -> bytes one GPU sends for one layer, forward + backward | |
|      | (4 ring all-reduces of the b s h activation) | `minillm.distributed.plan`'s tp term per layer |

13.4 cases: the worked example (N = 2, b 1, h 2, hidden 4), N = 1, then N in 2..4, b 1..4, h 1..5, hidden N..4N
per rank, float64 normals; compared within 1e-5 times the largest |value| of the case (at least 1), so float32
passes and the exact-vs-tanh GeLU difference (about 1e-3 here) does not.
13.5 cases: the worked example ([0, ln 3 | 0, 0], target 1: ln 2), N = 1, then N in 2..4, V/N in 1..5 (a rank may
hold no target), M in 1..6, logits 3 x normal + an offset in 0..60 (float32 keeps ~1e-5 there), and one case with
an offset of 800, where exp without the max subtraction overflows even in float64; within 1e-4 x max(1, |loss|).
13.6 cases: the worked example (GPT-3 175B, t = 8: 352,321,536 bytes), t = 1 (0 bytes), t = 2, then random b, s, h,
t in 2..64 and 1, 2 or 4 bytes; relative tolerance 1e-9 (any order of the arithmetic in float64 passes).
"""

from __future__ import annotations

import math
import numbers
import random

import torch
import torch.nn.functional as F

from minillm.grading.core import Exercise, Wrong

HAND_X = [[1.0, -1.0]]
HAND_A = [[1.0, 0.0, 2.0, -1.0], [0.0, 1.0, 1.0, 1.0]]  # (h 2, hidden 4): rank 0 columns 0-1, rank 1 columns 2-3
HAND_B = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]]  # (hidden 4, h 2): rank 0 rows 0-1, rank 1 rows 2-3
HAND_CE = ([[0.0, math.log(3.0)]], [[0.0, 0.0]]), [1]


def _shards_mlp(x, a, b, n):
    return x, list(a.chunk(n, dim=1)), list(b.chunk(n, dim=0))


def _mlp_reference(x, a_shards, b_shards) -> tuple:
    return _canon([F.gelu(x @ a) @ b for a, b in zip(a_shards, b_shards, strict=True)])


def _canon(parts) -> tuple:
    return tuple(tuple(float(v) for v in p.reshape(-1).tolist()) for p in parts)


def _hand_mlp_args() -> tuple:
    x = torch.tensor(HAND_X, dtype=torch.float64)
    return _shards_mlp(x, torch.tensor(HAND_A, dtype=torch.float64), torch.tensor(HAND_B, dtype=torch.float64), 2)


def _mlp_cases() -> list:
    cases = [(args := _hand_mlp_args(), _mlp_reference(*args))]
    shapes = [(1, 2, 3, 2), (2, 3, 4, 3), (3, 1, 2, 4), (4, 2, 1, 1), (2, 2, 5, 2)]
    shapes += [(random.randint(2, 4), random.randint(1, 4), random.randint(1, 5), random.randint(1, 4))
               for _ in range(4)]
    for n, b, h, per in shapes:  # per: hidden units per rank
        x = torch.randn(b, h, dtype=torch.float64)
        a, w = torch.randn(h, n * per, dtype=torch.float64), torch.randn(n * per, h, dtype=torch.float64)
        args = _shards_mlp(x, a, w, n)
        cases.append((args, _mlp_reference(*args)))
    return cases


def _parts_out(got, args) -> tuple:
    """The learner's list of N (b, h) tensors as a tuple of tuples of floats (a stacked (N, b, h) tensor too)."""
    x, a_shards, _ = args
    n, shape = len(a_shards), tuple(x.shape)
    if isinstance(got, torch.Tensor) and got.dim() == 3:
        got = list(got)
    if not isinstance(got, (list, tuple)):
        raise Wrong(f"return a list of {n} tensors (one partial output per rank), got {type(got).__name__}")
    if len(got) != n:
        raise Wrong(f"return one partial output per rank: {n} tensors, got {len(got)}")
    out = []
    for r, p in enumerate(got):
        if not isinstance(p, torch.Tensor):
            raise Wrong(f"rank {r}'s output must be a tensor of shape {shape}, got {type(p).__name__}")
        if tuple(p.shape) != shape:
            raise Wrong(f"rank {r}'s output must have x's shape {shape} (a full-size partial sum), got "
                        f"{tuple(p.shape)}")
        if not p.is_floating_point():
            raise Wrong(f"rank {r}'s output must be a float tensor, got {p.dtype}")
        out.append(p.detach().double())
    return _canon(out)


def _close_parts(got: tuple, want: tuple, args: tuple) -> bool:
    scale = max([1.0] + [abs(v) for p in want for v in p])
    return all(math.isfinite(g) and abs(g - w) <= 1e-5 * scale for gp, wp in zip(got, want, strict=True)
               for g, w in zip(gp, wp, strict=True))


def _mlp_sim(x, a_shards, b_shards, *, act=F.gelu, where="between", scale=1.0, pair=lambda r, n: r):
    n = len(a_shards)
    outs = []
    for r in range(n):
        a, b = a_shards[r], b_shards[pair(r, n)]
        outs.append((act(x @ a) @ b if where == "between" else act(x @ a @ b) if where == "after" else x @ a @ b)
                    * scale)
    return outs


def _all_reduced(x, a_shards, b_shards):
    total = sum(F.gelu(x @ a) @ b for a, b in zip(a_shards, b_shards, strict=True))
    return [total.clone() for _ in a_shards]


MLP_MISTAKES = [
    (_all_reduced, "return each rank's partial output before the all-reduce g: summed over the ranks they give the "
                   "MLP's output, but no rank holds that sum yet"),
    (lambda x, a, b: _mlp_sim(x, a, b, where="none"),
     "apply the GeLU between the two matmuls, on the rank's own hidden slice"),
    (lambda x, a, b: _mlp_sim(x, a, b, where="after"),
     "the GeLU goes on the hidden slice x A_r, before the row-parallel matmul, not on the partial output"),
    (lambda x, a, b: _mlp_sim(x, a, b, act=lambda t: F.gelu(t, approximate="tanh")),
     "use the exact GeLU (the erf form, F.gelu's default), not its tanh approximation"),
    (lambda x, a, b: _mlp_sim(x, a, b, scale=1.0 / len(a)),
     "do not divide by N: the all-reduce sums the partial outputs, it does not average them"),
    (lambda x, a, b: _mlp_sim(x, a, b, pair=lambda r, n: n - 1 - r),
     "rank r multiplies its hidden slice by its own shard of B (the rows matching its columns of A)"),
]


def _ce_reference(shards, target) -> tuple:
    full = torch.cat(list(shards), dim=-1)
    return tuple(float(v) for v in F.cross_entropy(full, target, reduction="none").tolist())


def _ce_cases() -> list:
    hand = ([torch.tensor(s, dtype=torch.float64) for s in HAND_CE[0]], torch.tensor(HAND_CE[1]))
    cases = [(hand, (math.log(2.0),))]
    shapes = [(1, 4, 3, 0.0), (2, 3, 5, 20.0), (3, 1, 4, 0.0), (4, 2, 6, 60.0), (2, 5, 1, 800.0)]
    shapes += [(random.randint(2, 4), random.randint(1, 5), random.randint(1, 6), random.uniform(0, 60))
               for _ in range(5)]
    for n, per, m, offset in shapes:
        full = torch.randn(m, n * per, dtype=torch.float64) * 3 + offset
        target = torch.randint(0, n * per, (m,))
        args = (list(full.chunk(n, dim=-1)), target)
        cases.append((args, _ce_reference(*args)))
    return cases


def _losses_out(got, args) -> tuple:
    _, target = args
    m = target.numel()
    if isinstance(got, (list, tuple)) and all(isinstance(v, (int, float)) for v in got):
        got = torch.tensor(got, dtype=torch.float64)
    if not isinstance(got, torch.Tensor):
        raise Wrong(f"return a tensor of {m} per-token losses, got {type(got).__name__}")
    if got.numel() != m or got.dim() != 1:
        raise Wrong(f"return one loss per token, a tensor of shape ({m},), not their mean; got shape "
                    f"{tuple(got.shape)}")
    if not got.is_floating_point():
        raise Wrong(f"the losses must be a float tensor, got {got.dtype}")
    return tuple(float(v) for v in got.detach().double().tolist())


def _close_losses(got: tuple, want: tuple, args: tuple) -> bool:
    return all(math.isfinite(g) and abs(g - w) <= 1e-4 * max(1.0, abs(w)) for g, w in zip(got, want, strict=True))


def _ce_sim(shards, target, *, global_max=True, subtract=True, owner_only=True, offset=True, target_minus_m=True):
    v = shards[0].shape[-1]
    local_max = [z.amax(-1) for z in shards]
    m = torch.stack(local_max).amax(0) if subtract else torch.zeros_like(local_max[0])
    sum_e = sum(((z - (m if global_max else lm)[:, None]).exp().sum(-1)) for z, lm in zip(shards, local_max,
                                                                                           strict=True))
    picked = torch.zeros_like(m)
    for r, z in enumerate(shards):
        start = r * v if offset else 0
        mine = (target >= start) & (target < start + v) if owner_only else torch.ones_like(target, dtype=torch.bool)
        local = torch.where(mine, target - start, 0) % v
        picked = picked + torch.where(mine, z.gather(1, local[:, None])[:, 0] - (m if target_minus_m else 0.0), 0.0)
    return sum_e.log() - picked


CE_MISTAKES = [
    (lambda s, t: _ce_sim(s, t, subtract=False),
     "subtract the global max of the logits before exp: without it exp overflows for large logits (inf)"),
    (lambda s, t: _ce_sim(s, t, global_max=False),
     "every rank must subtract the same, global max before exp (all-reduce MAX of the local maxima); sums of "
     "exps taken against different local maxima do not add up"),
    (lambda s, t: _ce_sim(s, t, owner_only=False),
     "only the rank whose vocabulary range holds the target contributes its logit; the others contribute 0"),
    (lambda s, t: _ce_sim(s, t, offset=False),
     "rank r holds vocabulary ids r V/N .. (r + 1) V/N - 1: subtract r V/N from the target id to index its slice, "
     "and only the owner contributes"),
    (lambda s, t: _ce_sim(s, t, target_minus_m=False),
     "the sum of exps was taken against the max m, so the target's logit needs it too: the loss is "
     "log(sum of exp(z - m)) - (z_target - m)"),
    (lambda s, t: torch.full((t.numel(),), float(F.cross_entropy(torch.cat(s, -1), t)), dtype=torch.float64),
     "return each token's loss, not the mean repeated"),
    (lambda s, t: -_ce_sim(s, t),
     "the loss is log-sum-exp minus the target's logit (a negative log-probability, >= 0), not the reverse"),
]


HAND_BYTES = ((1, 2048, 12288, 8, 2), 352_321_536)


def _bytes_ref(b: int, s: int, h: int, t: int, nbytes: int) -> float:
    """4 all-reduces per layer (g twice forward, f twice backward), each 2 (t - 1) / t of b s h values per GPU."""
    return 4 * 2 * (t - 1) / t * b * s * h * nbytes


def _bytes_cases() -> list:
    cases = [HAND_BYTES, ((2, 16, 64, 1, 2), 0.0), ((1, 1, 1, 2, 4), 16.0)]
    for _ in range(10):
        args = (random.randint(1, 16), random.choice([128, 512, 2048, 8192]), random.choice([768, 4096, 12288]),
                random.choice([2, 3, 4, 8, 16, 64]), random.choice([1, 2, 4]))
        cases.append((args, _bytes_ref(*args)))
    return cases


def _number_out(got, args) -> float:
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            raise Wrong(f"return one number, the bytes, got a tensor of shape {tuple(got.shape)}")
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, numbers.Real):
        raise Wrong(f"return the bytes as a number, got {type(got).__name__} {got!r:.40}")
    return float(got)


def _rel(got: float, want: float, args: tuple) -> bool:
    return math.isfinite(got) and abs(got - want) <= 1e-9 * max(abs(want), 1.0)


BYTES_MISTAKES = [
    (lambda b, s, h, t, n: 2 * 2 * (t - 1) / t * b * s * h * n,
     "half the bytes: count backward too (g all-reduces twice per layer forward, f twice backward, 4 in all), and "
     "each ring all-reduce, a reduce-scatter then an all-gather, sends 2(t - 1)/t of the buffer"),
    (lambda b, s, h, t, n: 4 * b * s * h * n if t > 1 else 0.0,
     "a ring all-reduce sends 2(t - 1)/t of the buffer per GPU, not the buffer once"),
    (lambda b, s, h, t, n: 4 * 2 * (t - 1) * b * s * h * n,
     "each of the 2(t - 1) ring steps sends one chunk, 1/t of the buffer, not all of it"),
    (lambda b, s, h, t, n: 4 * 2 * (t - 1) / t * b * s * h * n / t,
     "the all-reduced activation is the whole b s h on every rank (a row-parallel output is full-size), not 1/t"),
    (lambda b, s, h, t, n: 4 * 2 * (t - 1) / t * b * s * h,
     "multiply the elements by the bytes per element, nbytes"),
    (lambda b, s, h, t, n: 6 * 2 * (t - 1) / t * b * s * h * n,
     "without recomputation a layer all-reduces 4 times (2 forward, 2 backward); 6 is with the forward re-run"),
]


TP_EXERCISES = (
    Exercise("13.4", "The Megatron MLP, rank by rank", 2, cases=_mlp_cases, name="megatron_mlp_partials",
             normalize=_parts_out, same=_close_parts, mistakes=MLP_MISTAKES,
             fresh="return new tensors and leave the shards as they were"),
    Exercise("13.5", "Vocab-parallel cross-entropy", 2, cases=_ce_cases, name="vocab_parallel_ce",
             normalize=_losses_out, same=_close_losses, mistakes=CE_MISTAKES),
    Exercise("13.6", "Bytes a GPU sends for one tensor-parallel layer", 1, cases=_bytes_cases, name="tp_layer_bytes",
             normalize=_number_out, same=_rel, mistakes=BYTES_MISTAKES),
)
