"""Checkers of chapter 12's ZeRO-1/2 exercises (12.1-12.4), to be joined into minillm/grading/ch12.py's EXERCISES.

| id | the learner writes | compared with |
|---|---|---|
| 12.1 | `zero_bytes_per_gpu(psi, n, stage, k)` -> bytes of model states per GPU, mixed precision, | |
|      | ZeRO stage 0 (data parallel) .. 3 | `minillm.distributed.zero.zero_memory` |
| 12.2 | `shard_bounds(numel, n)` -> n pairs (start, stop): the real elements each rank owns in a flat buffer | |
|      | padded to a multiple of n and cut into n equal shards | `minillm.distributed.zero.shard_layout` |
| 12.3 | `reduce_scatter_mean(rank_grads)` -> n tensors: rank r's shard of the mean flat gradient, padded | |
|      | (what ZeRO-2's reduce-scatter leaves on each rank) | `shard_layout` + the mean; a real model |
| 12.4 | `zero1_sgd_step(params, rank_grads, momenta, lr, beta)` -> (new flat parameters, the ranks' new momentum | |
|      | shards): one ZeRO-1 step of SGD with momentum, ranks simulated | `torch.optim.SGD(momentum=beta)` |

12.1 cases: the paper's figure 1 (7.5B on 64 GPUs, all four stages), n = 1 (every stage the same), k other than
12, then random psi (1e6 .. 1e12), n (1 .. 4096), stage and k; relative tolerance 1e-9 (float64 arithmetic in any
order passes).
12.2 cases: the worked examples, a divisible numel, numel < n (ranks that hold padding only), n = 1, numel = 1,
the tiny GPT of the notebook (7,360 over 3), then random numel 1 .. 300 and n 1 .. 16. Integers: compared exactly.
12.3 cases: the worked example, one rank, numel divisible by n, numel < n (shards of padding only), integer-valued
float64 gradients (exact in any order and in float32, so a simulated mistake is named), the gradients of a linear
layer on N equal shards of a batch, whose answer is the slice of the whole batch's gradient computed in one go
(not the formula), and random normals; tolerance 1e-5 times the largest |value| (at least 1), so float32 passes.
The answer must be new tensors and leave the inputs unchanged (`fresh`).
12.4 cases: the worked example, one rank, integer tensors with dyadic lr and beta (exact in float32 too, so a
simulated mistake is named), numel not divisible by n and smaller than n, then normals with realistic lr and beta;
the reference is torch's own SGD on the whole flat vector with the mean gradient; the momentum shards' padding is 0
in every case (as in training: its gradient is always 0). Tolerance as 12.3.
The ids are this part's own; the coordinator may renumber them.
"""

from __future__ import annotations

import math
import numbers
import random

import torch

from minillm.grading import answers
from minillm.grading.core import Exercise, Wrong, short

HAND_MEMORY = ((7.5e9, 64, 0, 12), 120e9), ((7.5e9, 64, 1, 12), 31.40625e9)
HAND_BOUNDS = ((10, 4), ((0, 3), (3, 6), (6, 9), (9, 10))), ((2, 4), ((0, 1), (1, 2), (2, 2), (2, 2)))
HAND_GRADS = ([1.0, 2.0, 3.0], [3.0, 4.0, 5.0])
HAND_SHARDS = ((2.0, 3.0), (4.0, 0.0))


# -- 12.1 the per-stage memory formula ---------------------------------------------------------------------------
def _memory_ref(psi: float, n: int, stage: int, k: float) -> float:
    from minillm.distributed.zero import zero_memory

    return zero_memory(psi, n, stage, k=k)


def _bytes_out(got, args) -> float:
    return answers.number(got, "the bytes of model states one GPU holds")


def _rel(got: float, want: float, args: tuple) -> bool:
    return math.isfinite(got) and abs(got - want) <= 1e-9 * abs(want)


def _mem(psi, n, stage, k, *, w=2.0, g=2.0, shift=0, all_split=False, fixed_k=None):
    """Simulated solutions: the formula with one thing changed."""
    s = min(max(stage + shift, 0), 3)
    k = k if fixed_k is None else fixed_k
    if all_split and s >= 1:
        return (w + g + k) * psi / n
    return w * psi / (n if s >= 3 else 1) + g * psi / (n if s >= 2 else 1) + k * psi / (n if s >= 1 else 1)


MEMORY_MISTAKES = [
    (lambda p, n, s, k: _mem(p, n, s, k, shift=1),
     "off by one stage: stage 1 partitions the optimizer states only, stage 2 adds the gradients, stage 3 the "
     "weights"),
    (lambda p, n, s, k: _mem(p, n, s, k, shift=-1),
     "off by one stage: stage 1 already partitions the optimizer states (stage 0 is plain data parallelism), and "
     "stage 3 partitions everything"),
    (lambda p, n, s, k: _mem(p, n, s, k, all_split=True),
     "stages 1 and 2 still keep every weight on every GPU (and stage 1 every gradient): only what the stage "
     "partitions is divided by n"),
    (lambda p, n, s, k: _mem(p, n, s, k, w=4.0, g=4.0),
     "in mixed precision the weights and gradients are 2 bytes each (fp16 / bf16); the fp32 master copy is part of "
     "the k optimizer bytes"),
    (lambda p, n, s, k: _mem(p, n, s, k, fixed_k=12),
     "use the k you are given (optimizer bytes per parameter), not always 12"),
]


def _memory_cases() -> list:
    cases = [(args, want) for args, want in HAND_MEMORY]
    cases += [((7.5e9, 64, s, 12), _memory_ref(7.5e9, 64, s, 12)) for s in (2, 3)]
    cases += [((1e9, 1, s, 12), 16e9) for s in range(4)]  # one GPU: nothing to partition
    cases += [((2e9, 8, s, 16), _memory_ref(2e9, 8, s, 16)) for s in range(4)]  # e.g. fp32 master + m + v + more
    cases.append(((1e12, 1024, 3, 12), 16e12 / 1024))  # the paper's trillion parameters on 1024 GPUs
    for _ in range(16):
        args = (float(round(10 ** random.uniform(6, 12))), random.choice([2, 3, 4, 8, 16, 64, 100, 512, 1024, 4096]),
                random.randint(0, 3), random.choice([12, 12, 4, 8, 16]))
        cases.append((args, _memory_ref(*args)))
    return cases


# -- 12.2 a rank's shard bounds -----------------------------------------------------------------------------------
def _bounds_ref(numel: int, n: int) -> tuple:
    from minillm.distributed.zero import shard_layout

    lay = shard_layout(numel, n)
    return tuple((min(lo, numel), min(hi, numel)) for lo, hi in (lay.bounds(r) for r in range(n)))


def _bounds_out(got, args) -> tuple:
    numel, n = args
    if isinstance(got, torch.Tensor):
        got = got.tolist()
    if not isinstance(got, (list, tuple)):
        raise Wrong(f"return a list of {n} pairs (start, stop), one per rank, got {type(got).__name__}")
    if len(got) != n:
        raise Wrong(f"return one pair (start, stop) per rank: {n} pairs, got {len(got)}")
    out = []
    for r, pair in enumerate(got):
        if isinstance(pair, torch.Tensor):
            pair = pair.tolist()
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise Wrong(f"rank {r}'s entry must be a pair (start, stop), got {pair!r:.40}")
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in pair):
            raise Wrong(f"rank {r}'s (start, stop) must be ints (element indices), got {pair!r:.40}")
        out.append((int(pair[0]), int(pair[1])))
    return tuple(out)


def _floor_last(numel, n):  # floor-sized shards, the last rank takes the remainder
    q = numel // n
    return [(r * q, (r + 1) * q if r < n - 1 else numel) for r in range(n)]


def _split_like_tensor_split(numel, n):
    q, extra = divmod(numel, n)
    out, start = [], 0
    for r in range(n):
        size = q + (1 if r < extra else 0)
        out.append((start, start + size))
        start += size
    return out


BOUNDS_MISTAKES = [
    (lambda m, n: [(r * -(-m // n), (r + 1) * -(-m // n)) for r in range(n)],
     "stop at numel: the padding elements past the end of the flat parameters are not parameters (and a rank "
     "whose shard is all padding holds the empty slice (numel, numel))"),
    (lambda m, n: [(r * -(-m // n), min((r + 1) * -(-m // n), m)) for r in range(n)],
     "a rank whose shard is all padding holds the empty slice (numel, numel): clip the start at numel too"),
    (_split_like_tensor_split,
     "ZeRO pads the flat buffer at the end to a multiple of n and cuts n equal shards of ceil(numel / n): only the "
     "last shards are short, the sizes are not spread as torch.tensor_split spreads them"),
    (_floor_last,
     "every shard has the same size, numel / n rounded up (the buffer is padded at the end): the last rank does not "
     "take the remainder"),
    (lambda m, n: [(r * (m // n), (r + 1) * (m // n)) for r in range(n)],
     "with shards of numel // n the last elements belong to nobody: round the shard size up and pad"),
]


def _bounds_cases() -> list:
    cases = [(args, want) for args, want in HAND_BOUNDS]
    fixed = [(12, 4), (12, 3), (3, 8), (5, 1), (1, 1), (1, 4), (7360, 3), (19, 2), (13, 5), (16, 16)]
    cases += [((m, n), _bounds_ref(m, n)) for m, n in fixed]
    for _ in range(30):
        m, n = random.randint(1, 300), random.randint(1, 16)
        cases.append(((m, n), _bounds_ref(m, n)))
    return cases


# -- 12.3 the reduce-scatter of ZeRO-2 ----------------------------------------------------------------------------
def _rs_ref(rank_grads: list[torch.Tensor]) -> list[torch.Tensor]:
    from minillm.distributed.zero import shard_layout

    n, numel = len(rank_grads), rank_grads[0].numel()
    lay = shard_layout(numel, n)
    mean = torch.zeros(lay.padded, dtype=torch.float64)
    mean[:numel] = torch.stack([g.double() for g in rank_grads]).sum(0) / n
    return [mean[lo:hi].clone() for lo, hi in (lay.bounds(r) for r in range(n))]


def _canon_shards(shards) -> tuple:
    return tuple(tuple(float(v) for v in s.reshape(-1).tolist()) for s in shards)


def _shards_out(got, args) -> tuple:
    (rank_grads,) = args
    n, numel = len(rank_grads), rank_grads[0].numel()
    size = -(-numel // n)
    if isinstance(got, torch.Tensor) and got.dim() == 2:
        got = list(got)
    if not isinstance(got, (list, tuple)):
        raise Wrong(f"return a list of {n} tensors (one shard per rank), got {type(got).__name__}")
    if len(got) != n:
        raise Wrong(f"return one shard per rank: {n} tensors, got {len(got)}")
    out = []
    for r, s in enumerate(got):
        t = answers.float_tensor(s, f"rank {r}'s shard of the mean gradient")
        if t.dim() != 1 or t.numel() != size:
            raise Wrong(f"rank {r} keeps its shard only: a 1-D tensor of {size} elements (the flat gradient of "
                        f"{numel} elements padded to a multiple of {n} ranks and cut into {n} equal shards), got "
                        f"shape {tuple(t.shape)}")
        out.append(t.reshape(-1))
    return _canon_shards(out)


def _close(got: tuple, want: tuple, args: tuple) -> bool:
    scale = max([1.0] + [abs(v) for s in want for v in s])
    return all(math.isfinite(g) and abs(g - w) <= 1e-5 * scale for gs, ws in zip(got, want, strict=True)
               for g, w in zip(gs, ws, strict=True))


def _padded(g: torch.Tensor, n: int) -> torch.Tensor:
    size = -(-g.numel() // n)
    return torch.cat([g.double().reshape(-1), g.new_zeros(size * n - g.numel(), dtype=torch.float64)])


def _rs_sim(rank_grads, *, divide=True, own=False, shift=0):
    """Simulated solutions: the reference with one thing changed."""
    n = len(rank_grads)
    size = -(-rank_grads[0].numel() // n)
    flats = [_padded(g, n) for g in rank_grads]
    total = sum(flats) / (n if divide else 1)
    out = []
    for r in range(n):
        c = (r + shift) % n
        src = flats[r] if own else total
        out.append(src[c * size:(c + 1) * size].clone())
    return out


RS_MISTAKES = [
    (lambda g: _rs_sim(g, divide=False),
     "the shard a rank keeps is the MEAN over the ranks (the sum divided by the number of ranks), as DDP averages"),
    (lambda g: _rs_sim(g, own=True),
     "reduce first: rank r's shard holds that slice summed over every rank's gradient (then divided by the number "
     "of ranks), not its own gradient's slice"),
    (lambda g: _rs_sim(g, shift=1),
     "in ZeRO rank r owns shard r (elements r S .. (r + 1) S); a ring reduce-scatter happens to finish with chunk "
     "r + 1 on rank r, but torch's reduce_scatter_tensor and ZeRO give rank r shard r"),
    (lambda g: _rs_sim(g, shift=-1), "in ZeRO rank r owns shard r (elements r S .. (r + 1) S), not shard r - 1"),
]


def _ints(numel: int, n: int) -> list[torch.Tensor]:
    return [torch.randint(-20, 21, (numel,)).double() for _ in range(n)]


def _linear_case(n: int, rows: int, seed: int) -> tuple:
    """A linear layer's flat gradients on n equal shards of a batch: (the ranks' gradients, the answer sliced from
    the gradient of the whole batch, computed in one go)."""
    gen = torch.Generator().manual_seed(seed)
    layer = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        layer.weight.copy_(torch.randn(2, 3, generator=gen, dtype=torch.float64))
        layer.bias.copy_(torch.randn(2, generator=gen, dtype=torch.float64))
    x = torch.randn(n * rows, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(n * rows, 2, generator=gen, dtype=torch.float64)

    def flat_grad(sel) -> torch.Tensor:
        layer.zero_grad(set_to_none=True)
        (layer(x[sel]) - y[sel]).pow(2).mean().backward()
        return torch.cat([layer.weight.grad.reshape(-1), layer.bias.grad]).clone()  # [8]

    ranks = [flat_grad(slice(r * rows, (r + 1) * rows)) for r in range(n)]
    whole = _padded(flat_grad(slice(None)), n)
    size = whole.numel() // n
    return ranks, _canon_shards([whole[r * size:(r + 1) * size] for r in range(n)])


def _rs_cases() -> list:
    hand = [torch.tensor(g, dtype=torch.float64) for g in HAND_GRADS]
    cases = [((hand,), HAND_SHARDS)]
    one = [torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64)]
    cases.append(((one,), _canon_shards(_rs_ref(one))))
    for n, numel in [(4, 8), (3, 7), (2, 5), (4, 2), (5, 13), (3, 1), (2, 9)]:  # divisible, padded, numel < n
        g = _ints(numel, n)
        cases.append(((g,), _canon_shards(_rs_ref(g))))
    for _ in range(5):
        n = random.randint(2, 6)
        g = _ints(random.randint(1, 20), n)
        cases.append(((g,), _canon_shards(_rs_ref(g))))
    for n, rows, seed in ((2, 3, 0), (3, 2, 1), (4, 1, random.randint(2, 10 ** 6))):  # 8 elements: 3 pads 1
        ranks, want = _linear_case(n, rows, seed)
        cases.append(((ranks,), want))
    for _ in range(3):
        n = random.randint(2, 5)
        numel = random.randint(n, 17)
        g = [torch.randn(numel, dtype=torch.float64) for _ in range(n)]
        cases.append(((g,), _canon_shards(_rs_ref(g))))
    return cases


# -- 12.4 one ZeRO-1 step of SGD with momentum ----------------------------------------------------------------------
HAND_STEP_ARGS = ([1.0, 1.0, 1.0], ([1.0, 2.0, 3.0], [3.0, 4.0, 5.0]), ([1.0, 1.0], [1.0, 0.0]), 0.5, 0.5)
HAND_STEP = ((-0.25, -0.75, -1.25), ((2.5, 3.5), (4.5, 0.0)))


def _step_ref(params, rank_grads, momenta, lr, beta) -> tuple:
    """torch.optim.SGD(momentum=beta) on the whole flat parameter vector, stepped once with the mean gradient and
    the ranks' momentum shards put together as its buffer; the new buffer cut back into the ranks' padded shards."""
    n, numel = len(rank_grads), params.numel()
    size = -(-numel // n)
    p = params.detach().double().clone()
    p.grad = torch.stack([g.double() for g in rank_grads]).mean(0)
    opt = torch.optim.SGD([p], lr=lr, momentum=beta)
    opt.state[p]["momentum_buffer"] = torch.cat([m.double() for m in momenta])[:numel].clone()
    opt.step()
    buf = torch.cat([opt.state[p]["momentum_buffer"], torch.zeros(n * size - numel, dtype=torch.float64)])
    return _canon_step(p.detach(), [buf[r * size:(r + 1) * size] for r in range(n)])


def _canon_step(params, momenta) -> tuple:
    return tuple(float(v) for v in params.reshape(-1).tolist()), _canon_shards(momenta)


def _step_out(got, args) -> tuple:
    params, rank_grads = args[0], args[1]
    n, numel = len(rank_grads), params.numel()
    size = -(-numel // n)
    if not isinstance(got, (list, tuple)) or len(got) != 2:
        raise Wrong("return a pair: (the new flat parameters, the list of the ranks' new momentum shards)")
    new_params = answers.float_tensor(got[0], "the new flat parameters every rank holds")
    if new_params.dim() != 1 or new_params.numel() != numel:
        raise Wrong(f"the new parameters are the whole flat vector every rank holds after the step: {numel} "
                    f"elements, got shape {tuple(new_params.shape)}")
    momenta = got[1]
    if isinstance(momenta, torch.Tensor) and momenta.dim() == 2:
        momenta = list(momenta)
    if not isinstance(momenta, (list, tuple)) or len(momenta) != n:
        raise Wrong(f"the second entry is the list of the {n} ranks' momentum shards, got {short(momenta, 40)}")
    out = []
    for r, m in enumerate(momenta):
        t = answers.float_tensor(m, f"rank {r}'s momentum shard")
        if t.dim() != 1 or t.numel() != size:
            raise Wrong(f"rank {r}'s momentum covers its shard only, {size} elements (padding included), got shape "
                        f"{tuple(t.shape)}")
        out.append(t)
    return _canon_step(new_params, out)


def _step_close(got: tuple, want: tuple, args: tuple) -> bool:
    return _close((got[0],), (want[0],), args) and _close(got[1], want[1], args)


def _step_sim(params, rank_grads, momenta, lr, beta, *, grad="mean", damp=False, keep=False, gather=True,
              stale=False):
    """Simulated solutions: the right step with one thing changed."""
    n, numel = len(rank_grads), params.numel()
    size = -(-numel // n)
    flats = [_padded(g, n) for g in rank_grads]
    total = sum(flats)
    new_p, new_m = _padded(params, n), []
    for r in range(n):
        lo, hi = r * size, (r + 1) * size
        g = {"mean": total / n, "sum": total, "own": flats[r]}[grad][lo:hi]
        m = momenta[r].double()
        buf = beta * m + ((1 - beta) * g if damp else g)
        if gather or r == 0:  # without the all-gather only one shard of the returned vector would be new
            new_p[lo:hi] = new_p[lo:hi] - lr * (m if stale else buf)  # stale: moved by the buffer before the update
        new_m.append(m.clone() if keep else buf)
    return new_p[:numel], new_m


STEP_MISTAKES = [
    (lambda *a: _step_sim(*a, grad="own"),
     "every rank steps its shard with the MEAN gradient over all ranks (ZeRO-1 all-reduces it first), not with its "
     "own local gradient"),
    (lambda *a: _step_sim(*a, grad="sum"),
     "the gradient is the mean over the ranks: the all-reduced sum divided by the number of ranks"),
    (lambda *a: _step_sim(*a, gather=False),
     "after the step every rank all-gathers the updated shards: the parameters every rank holds are updated in "
     "every shard, not only in rank 0's"),
    (lambda *a: _step_sim(*a, keep=True),
     "return the UPDATED momentum shards: the next step needs this step's buffer"),
    (lambda *a: _step_sim(*a, stale=True),
     "the step first updates the momentum buffer with this step's gradient, then moves the parameter by lr times "
     "the UPDATED buffer"),
    (lambda *a: _step_sim(*a, damp=True),
     "torch's SGD momentum adds the gradient itself to beta times the buffer (no 1 - beta factor: dampening is 0)"),
]


def _step_case(params, rank_grads, momenta, lr, beta) -> tuple:
    args = (params, rank_grads, momenta, lr, beta)
    return args, _step_ref(*args)


def _zero_pad_momenta(momenta: list[torch.Tensor], numel: int) -> list[torch.Tensor]:
    """The padding elements of a momentum shard are 0 (their gradient always is)."""
    size = momenta[0].numel()
    for r, m in enumerate(momenta):
        m[max(numel - r * size, 0):] = 0
    return momenta


def _step_cases() -> list:
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    p, gs, ms, lr, beta = HAND_STEP_ARGS
    cases = [((t(p), [t(g) for g in gs], [t(m) for m in ms], lr, beta), HAND_STEP)]
    cases.append(_step_case(t([2.0, -1.0]), [t([4.0, 2.0])], [t([1.0, 1.0])], 0.25, 0.5))  # one rank
    dyadic = [0.5, 0.25, 0.125, 1.0]
    for n, numel in [(2, 4), (3, 7), (4, 2), (2, 5), (4, 9), (3, 1)]:  # integers, dyadic lr/beta: exact
        size = -(-numel // n)
        ms = _zero_pad_momenta([torch.randint(-5, 6, (size,)).double() for _ in range(n)], numel)
        cases.append(_step_case(torch.randint(-9, 10, (numel,)).double(),
                                [torch.randint(-9, 10, (numel,)).double() for _ in range(n)], ms,
                                random.choice(dyadic), random.choice(dyadic[:3])))
    for beta in (0.9, 0.95, 0.5, random.choice([0.9, 0.95, 0.5])):  # normals, realistic lr; every beta each draw
        n, numel = random.randint(2, 5), random.randint(1, 17)
        size = -(-numel // n)
        ms = _zero_pad_momenta([torch.randn(size, dtype=torch.float64) for _ in range(n)], numel)
        cases.append(_step_case(torch.randn(numel, dtype=torch.float64),
                                [torch.randn(numel, dtype=torch.float64) for _ in range(n)], ms,
                                10 ** random.uniform(-3, -1), beta))
    return cases


ZERO_EXERCISES = (
    Exercise("12.1", "Bytes per GPU at each ZeRO stage", 1, cases=_memory_cases, name="zero_bytes_per_gpu",
             normalize=_bytes_out, same=_rel, mistakes=MEMORY_MISTAKES),
    Exercise("12.2", "The elements each rank owns", 1, cases=_bounds_cases, name="shard_bounds",
             normalize=_bounds_out, mistakes=BOUNDS_MISTAKES),
    Exercise("12.3", "ZeRO-2's reduce-scatter of the ranks' gradients", 2, cases=_rs_cases, name="reduce_scatter_mean",
             normalize=_shards_out, same=_close, mistakes=RS_MISTAKES,
             fresh="return new tensors and leave the ranks' gradients as they were",
             separate="each rank keeps only its own shard of the mean"),
    Exercise("12.4", "One ZeRO-1 step of SGD with momentum", 2, cases=_step_cases, name="zero1_sgd_step",
             normalize=_step_out, same=_step_close, mistakes=STEP_MISTAKES,
             fresh="return new tensors and leave the parameters, gradients and momentum shards as they were"),
)
