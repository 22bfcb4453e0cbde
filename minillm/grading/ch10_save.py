"""Checkers of chapter 10's saving-memory exercises, to be joined into minillm/grading/ch10.py's EXERCISES.

| id | the learner writes | compared with |
|---|---|---|
| 10.5 | `absmax_quantize(x, block)` -> (q, absmax): int8 codes round(127 x / absmax) of | |
|       | each block of the flattened x, one absmax per block (zero block: absmax 0, codes 0) | |
|       | | `minillm.optim8bit.quantize_blockwise` with `linear_map()` (index - 128) |
| 10.6 | `accumulated_grad(loss_fn, w, x, y, k)` -> the gradient of `loss_fn(w, x, y)` | |
|       | by k micro-batches (one forward + backward each, each loss divided by k) | the full batch's autograd.grad |

10.5 cases: the notebook's worked example, an all-zero block, 2-D inputs whose blocks cross rows, then random
inputs (1-D and 2-D, blocks that do not divide the length, values over several orders of magnitude); random
values lie at least 1e-4 away from a rounding tie of 127 x / absmax, so float32 arithmetic rounds the same way.
The codes must be equal, the absmax within 1e-6 (relative). Any integer or integral float dtype passes for q.

10.6 cases: the worked example (w = 2, x = 1..4, y = 0: the batch gradient 30), then random linear models
under a mean-squared-error or cross-entropy loss, with k from 1 to the batch size; w arrives with an old
gradient in w.grad that must not leak into the answer. The gradient must match within 1e-6. After the values
pass, an instrumented loss_fn checks the accumulation itself: exactly k calls of B / k rows, each row of x in
one call, and each micro-batch's loss backpropagated before the next forward (one micro-batch's activations
at a time); any split of the rows into k equal parts passes, and so does torch.autograd.grad instead of
.backward().
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
import torch.nn.functional as F

from minillm.grading.answers import canonical, float_tensor, generator, randn64
from minillm.grading.core import Exercise, Wrong, call, run_cases, short

# ---------------------------------------------------------------------------------------------------
# 10.5 block-wise absmax int8

HAND_X = [0.5, -2.0, 0.0, 2.0, 3.0, -0.3]  # blocks of 4: [0.5, -2, 0, 2] (absmax 2), [3, -0.3] (absmax 3)
HAND_Q = [32, -127, 0, 127, 127, -13]  # 127 * 0.25 = 31.75 -> 32; 127 * -0.1 = -12.7 -> -13
HAND_ABSMAX = [2.0, 3.0]


def _reference(x: torch.Tensor, block: int) -> tuple[tuple[int, ...], tuple]:
    from minillm.optim8bit import linear_map, quantize_blockwise

    idx, absmax = quantize_blockwise(x.double(), linear_map(signed=True), block)  # codes k / 127, k = -128..127
    return tuple((idx.long() - 128).tolist()), tuple(canonical(v) for v in absmax.double().tolist())


def _quant(x: torch.Tensor, block: int, *, scale: float = 127.0, rnd=torch.round, signed_max: bool = False,
           per_tensor: bool = False, column_major: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulated solutions: the right one with one thing changed."""
    flat = (x.t() if column_major and x.dim() == 2 else x).reshape(-1).double()
    nb = -(-flat.numel() // block)
    blocks = F.pad(flat, (0, nb * block - flat.numel())).view(nb, block)
    big = blocks.amax(dim=1) if signed_max else blocks.abs().amax(dim=1)  # (nb,)
    if per_tensor:
        big = big.max().expand(nb).clone()
    safe = torch.where(big == 0, torch.ones_like(big), big)
    q = rnd(blocks / safe[:, None] * scale)
    return q.reshape(-1)[: flat.numel()], big


QUANT_MISTAKES = [
    (lambda x, block: _quant(x, block, per_tensor=True),
     "one absmax per block, not one for the whole tensor: an outlier then spoils only its own block"),
    (lambda x, block: _quant(x, block, rnd=torch.floor), "round to the nearest code, not down"),
    (lambda x, block: _quant(x, block, rnd=torch.trunc),
     "round to the nearest code: converting to an integer type truncates towards 0"),
    (lambda x, block: _quant(x, block, scale=128.0),
     "a block's largest value maps to 127 (or -127): scale by 127 / absmax; 128 does not fit in int8"),
    (lambda x, block: _quant(x, block, scale=255.0),
     "int8 codes run from -127 to 127: scale by 127 / absmax, not 255 (that is the unsigned range)"),
    (lambda x, block: _quant(x, block, signed_max=True),
     "the scale is the block's largest absolute value, not its largest value"),
    (lambda x, block: _quant(x, block, column_major=True),
     "cut the blocks from x flattened row by row (x.reshape(-1)), not column by column"),
]


def _quant_out(got, args) -> tuple[tuple[int, ...], tuple]:
    x, block = args
    n, nb = x.numel(), -(-x.numel() // block)
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise Wrong(f"return a pair (q, absmax): the codes and one absmax per block, got {short(got, 60)}")
    q = float_tensor(got[0], "q, one int8 code per value of x")
    absmax = float_tensor(got[1], "absmax, one per block")
    if q.numel() != n:
        raise Wrong(f"q has {q.numel()} value(s), expected one code per value of x ({n})")
    if torch.isnan(q).any():
        raise Wrong("q holds nan: an all-zero block has absmax 0, and its codes are 0 (do not divide by 0)")
    if not torch.equal(q, q.round()):
        bad = q[q != q.round()][0].item()
        raise Wrong(f"q must hold whole numbers, the codes -127..127, got {bad:.4g}: return the codes, not the "
                    "dequantised values")
    if absmax.numel() != nb:
        raise Wrong(f"absmax has {absmax.numel()} value(s), expected one per block of {block}: {nb} for {n} values "
                    "(the last block may be shorter)")
    return tuple(int(v) for v in q.reshape(-1).tolist()), tuple(canonical(v) for v in absmax.reshape(-1).tolist())


def _quant_same(got, want, args) -> bool:
    return got[0] == want[0] and all(
        (isinstance(a, str) or isinstance(b, str)) and a == b or abs(a - b) <= 1e-6 * max(1.0, abs(b))
        for a, b in zip(got[1], want[1], strict=True))


def _away_from_ties(x: torch.Tensor, block: int) -> bool:
    flat = x.reshape(-1).double()
    nb = -(-flat.numel() // block)
    blocks = F.pad(flat, (0, nb * block - flat.numel())).view(nb, block)
    big = blocks.abs().amax(dim=1, keepdim=True)
    scaled = 127 * blocks / torch.where(big == 0, torch.ones_like(big), big)
    frac = scaled - scaled.floor()
    return bool(((frac - 0.5).abs() > 1e-4).all())


def _cases_quant() -> list:
    gen = generator()
    cases = [((torch.tensor(HAND_X, dtype=torch.float64), 4), (tuple(HAND_Q), tuple(HAND_ABSMAX)))]
    zero_block = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, -0.25], dtype=torch.float64)  # [0, 0, 0, 0] | [1, -0.25]
    inputs = [(zero_block, 4), (randn64(3, 5, gen=gen), 4), (randn64(2, 6, gen=gen), 5)]
    while len(inputs) < 14:
        shape = random.choice([(random.randint(5, 300),), (random.randint(2, 9), random.randint(3, 40))])
        x = randn64(*shape, gen=gen) * torch.logspace(-3, 1, shape[-1], dtype=torch.float64)
        block = random.choice([4, 7, 16, 64, 256])
        if _away_from_ties(x, block):
            inputs.append((x, block))
    cases += [((x, block), _reference(x, block)) for x, block in inputs if _away_from_ties(x, block)]
    return cases


# ---------------------------------------------------------------------------------------------------
# 10.6 gradient accumulation

HAND_W, HAND_XS, HAND_GRAD = 2.0, [1.0, 2.0, 3.0, 4.0], 30.0  # micro-batch gradients 10 and 50, mean 30


def mse(w: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the linear model xb @ w, over the rows and outputs of the micro-batch."""
    return ((xb @ w - yb) ** 2).mean()


def xent(w: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the logits xb @ w against the labels yb, over the rows of the micro-batch."""
    return F.cross_entropy(xb @ w, yb)


def _leaf(w: torch.Tensor, old_grad: torch.Tensor | None = None) -> torch.Tensor:
    w = w.detach().clone().requires_grad_(True)
    w.grad = old_grad
    return w


def _accumulate(loss_fn, w, x, y, k, *, divide: Callable[[int, int], float] = lambda k, b: k,
                reset_inside: bool = False, keep_old: bool = False, overlap: bool = False) -> torch.Tensor:
    """The reference (defaults) and simulated wrong solutions: one thing changed."""
    total = w.grad.detach().clone() if keep_old and w.grad is not None else torch.zeros_like(w)
    rows = len(x) // k
    for j in range(k):
        if reset_inside:
            total = torch.zeros_like(w)
        stop = (j + 1) * rows + (1 if overlap else 0)
        loss = loss_fn(w, x[j * rows:stop], y[j * rows:stop]) / divide(k, len(x))
        total = total + torch.autograd.grad(loss, w)[0]
    return total


ACCUM_MISTAKES = [
    (lambda *a: _accumulate(*a, divide=lambda k, b: 1),
     "divide each micro-batch's loss by k: the gradients of k mean losses add up to k times the batch's"),
    (lambda *a: _accumulate(*a, divide=lambda k, b: b),
     "divide by k, the number of micro-batches, not by the number of rows: loss_fn already averages its rows"),
    (lambda *a: _accumulate(*a, reset_inside=True),
     "the gradients of all k micro-batches add up: clear the gradient once before the loop, not inside it"),
    (lambda *a: _accumulate(*a, keep_old=True),
     "w.grad arrives holding an earlier step's gradient: clear it first, the answer is this batch's gradient only"),
    (lambda *a: _accumulate(*a, overlap=True),
     "the micro-batches split the rows: each row of x belongs to exactly one micro-batch of len(x) // k rows"),
]


def _grad_out(got, args) -> tuple:
    w = args[1]
    g = float_tensor(got, "the gradient of the batch's loss with respect to w")
    if tuple(g.shape) != tuple(w.shape):
        raise Wrong(f"the gradient has shape {tuple(g.shape)}, expected w's shape {tuple(w.shape)}")
    return tuple(g.shape), tuple(canonical(v) for v in g.reshape(-1).tolist())


def _grad_same(got, want, args) -> bool:
    return got[0] == want[0] and all(
        (isinstance(a, str) or isinstance(b, str)) and a == b or abs(a - b) <= 1e-6 * max(1.0, abs(b))
        for a, b in zip(got[1], want[1], strict=True))


def _full_batch(loss_fn, w, x, y) -> tuple:
    w = _leaf(w)
    g = torch.autograd.grad(loss_fn(w, x, y), w)[0]
    return tuple(g.shape), tuple(canonical(v) for v in g.reshape(-1).tolist())


def _accum_inputs() -> list[tuple]:
    gen = generator()
    hand = (mse, _leaf(torch.tensor([[HAND_W]], dtype=torch.float64)),
            torch.tensor([[v] for v in HAND_XS], dtype=torch.float64), torch.zeros(4, 1, dtype=torch.float64), 2)
    inputs = [hand]
    for b, k in [(6, 3), (8, 4), (8, 2), (12, 3), (12, 6), (6, 6), (4, 1), (10, 5)]:
        d, o = random.randint(2, 5), random.randint(2, 4)
        w = _leaf(randn64(d, o, gen=gen), old_grad=randn64(d, o, gen=gen))  # an earlier step's gradient
        x = randn64(b, d, gen=gen)
        if random.random() < 0.5:
            inputs.append((mse, w, x, randn64(b, o, gen=gen), k))
        else:
            inputs.append((xent, w, x, torch.randint(0, o, (b,), generator=gen), k))
    return inputs


def _cases_accum() -> list:
    out = []
    for loss_fn, w, x, y, k in _accum_inputs():
        out.append(((loss_fn, w, x, y, k), _full_batch(loss_fn, w, x, y)))
    out[0] = (out[0][0], ((1, 1), (HAND_GRAD,)))  # by hand: mean of 2 * w * x^2 over x = 1..4 is 4 * 7.5
    return out


class _Recorder:
    """A loss_fn that records which rows of x each call gets and which earlier losses were backpropagated."""

    def __init__(self, loss_fn: Callable, x: torch.Tensor) -> None:
        self.loss_fn, self.x = loss_fn, x
        self.calls: list[tuple[list[int], set[int]]] = []  # (rows of x, losses backpropagated before this call)
        self.done: set[int] = set()

    def __call__(self, w, xb, yb):
        j = len(self.calls)
        xb_ = torch.as_tensor(xb, dtype=torch.float64).reshape(-1, self.x.shape[1])
        dist = torch.cdist(xb_, self.x)  # (rows given, rows of x)
        rows = [int(i) if d < 1e-4 else -1 for d, i in zip(*dist.min(dim=1), strict=True)]
        self.calls.append((rows, set(self.done)))
        loss = self.loss_fn(w, xb, yb)
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            loss.register_hook(lambda g, j=j: self.done.add(j))  # runs when backward reaches this loss
        return loss


def _check_accum(ex: Exercise, fn: Callable) -> tuple[bool, str]:
    ok, hint = run_cases(fn, ex.cases(), name=ex.name, normalize=ex.normalize, same=ex.same, mistakes=ex.mistakes)
    if not ok:
        return ok, hint
    gen = generator()
    b, k = 12, 3
    x = randn64(b, 4, gen=gen)
    rec = _Recorder(mse, x)
    call(fn, rec, _leaf(randn64(4, 2, gen=gen)), x, randn64(b, 2, gen=gen), k, name=ex.name)
    where = f"(on a batch of {b} rows, k = {k})"
    sizes = [len(r) for r, _ in rec.calls]
    if sizes != [b // k] * k:
        return False, (f"call loss_fn once per micro-batch, each with len(x) // k rows: it was called "
                       f"{len(sizes)} time(s) with {sizes} rows, expected {k} calls of {b // k} {where}")
    used = sorted(i for r, _ in rec.calls for i in r)
    if used != list(range(b)):
        return False, f"each row of x must go to exactly one micro-batch, as it is (rows used: {used}) {where}"
    for j, (_, before) in enumerate(rec.calls):
        if not set(range(j)) <= before:
            return False, ("backpropagate each micro-batch's loss before the next forward: summing the losses and "
                           "calling backward once keeps every micro-batch's activations alive at the same time, "
                           f"which is what accumulation avoids {where}")
    return True, ""


SAVE_EXERCISES = (
    Exercise("10.5", "Block-wise absmax int8 quantisation", 2, cases=_cases_quant, name="absmax_quantize",
             normalize=_quant_out, same=_quant_same, mistakes=QUANT_MISTAKES),
    Exercise("10.6", "Gradient accumulation over micro-batches", 2, cases=_cases_accum, name="accumulated_grad",
             normalize=_grad_out, same=_grad_same, mistakes=ACCUM_MISTAKES, check=_check_accum),
)
