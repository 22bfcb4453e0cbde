"""Helpers the chapter checkers share: reading the learner's answer, comparing it, drawing random inputs.

A checker's `normalize(got, args)` (see `core.run_cases`) turns what the learner's function returned into a
canonical value, or raises `Wrong(hint)` naming what is off (a list where a tensor was wanted, the wrong
shape or dtype). The canonical value of a tensor is `(shape, values)`: the values in float64, rounded,
with nan and inf as strings so that equal answers compare equal; `same_values` compares two of those
within a tolerance. The hints are the chapters' own: the argument `what` (what the answer holds), and
everything around it, stays in the chapter module.

Leaves out: chapter 2's readers (rounded to 6 decimals, nan kept as a float) and answers that are pairs
or lists of integers, which each chapter reads in its own way.
"""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Callable

import torch

from minillm.grading.core import Wrong

# ---------------------------------------------------------------------------------------------------
# reading an answer


def canonical(v: float, significant: int | None = None) -> float | str:
    """v rounded to 7 decimals (or to `significant` digits); nan and inf as strings, so equal answers compare equal."""
    if math.isnan(v) or math.isinf(v):
        return str(v)
    return float(f"{v:.{significant}g}") if significant else round(v, 7)


def values(t: torch.Tensor) -> tuple:
    """The values of t, flattened, each made `canonical`."""
    return tuple(canonical(v) for v in t.flatten().tolist())


def float_tensor(got, what: str | None = None) -> torch.Tensor:
    """A tensor, array or nested list of numbers -> a float64 tensor (detached from autograd); else Wrong.

    Without `what` the hint is "return a tensor, got a list"; with it, the hint names what the tensor holds,
    and text or None is turned away up front with its value shown.
    """
    if isinstance(got, torch.Tensor):
        got = got.detach()
    if what is not None and (isinstance(got, (str, bytes)) or got is None):
        raise Wrong(f"return a tensor ({what}), got {type(got).__name__} {got!r:.40}")
    try:
        return torch.as_tensor(got, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        label = f" ({what})" if what is not None else ""
        raise Wrong(f"return a tensor{label}, got a {type(got).__name__}") from e


def shaped(t: torch.Tensor, want_shape: tuple, what: str) -> tuple:
    """`(shape, values)` of t when its shape is `want_shape`; else Wrong naming both shapes and `what`."""
    if tuple(t.shape) != want_shape:
        raise Wrong(f"the result has shape {tuple(t.shape)}, expected {want_shape} ({what})")
    return want_shape, values(t)


def tensor_answer(got, want_shape: tuple, what: str) -> tuple:
    """A tensor (or nested list) of shape `want_shape` -> `(shape, values)` in float64; else Wrong naming `what`."""
    return shaped(float_tensor(got, what), want_shape, what)


def bool_mask(got, want_shape: tuple, shape_name: str, how: str) -> torch.Tensor:
    """The learner's attention mask, checked: a torch.bool tensor (True = may attend) of shape `want_shape`.

    `shape_name` names the shape in the hint ("(T, S)"); `how` says how to get a boolean tensor.
    """
    if not isinstance(got, torch.Tensor):
        raise Wrong(f"return a torch.Tensor of dtype torch.bool (True = may attend), got {type(got).__name__} "
                    f"{got!r:.40}")
    if got.dtype != torch.bool:
        raise Wrong(f"return a boolean tensor (dtype torch.bool, True = may attend), got dtype {got.dtype}; {how}")
    if tuple(got.shape) != want_shape:
        raise Wrong(f"the mask has shape {tuple(got.shape)}, expected {shape_name} = {want_shape}: one row per "
                    "query, one column per key")
    return got


def number(got, what: str) -> float:
    """A Python number or a one-element tensor -> float; else Wrong naming `what`."""
    if isinstance(got, torch.Tensor):
        got = got.detach()
        if got.numel() != 1:
            raise Wrong(f"return one number ({what}), got a tensor of shape {tuple(got.shape)}")
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, numbers.Real):
        raise Wrong(f"return a number ({what}), got {type(got).__name__} {got!r:.40}")
    return float(got)


def integer(got, what: str | None = None) -> int:
    """A Python int or a one-element integer tensor -> int; else Wrong ("return an int (what), got ...")."""
    if isinstance(got, torch.Tensor) and got.numel() == 1 and not got.is_floating_point():
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, numbers.Integral):
        label = f" ({what})" if what is not None else ""
        raise Wrong(f"return an int{label}, got {type(got).__name__} {got!r:.40}")
    return int(got)


# ---------------------------------------------------------------------------------------------------
# comparing answers

TOL = 1e-6


def same_values(got: tuple, want: tuple, tol: Callable[[float], float]) -> bool:
    """Two `(shape, values)`: the same shape, each value within `tol(expected)`, nan and inf (strings) equal."""
    if got[0] != want[0]:
        return False
    for a, b in zip(got[1], want[1], strict=True):
        if isinstance(a, str) or isinstance(b, str):
            if a != b:
                return False
        elif abs(a - b) > tol(b):
            return False
    return True


def close(got: tuple, want: tuple, args: tuple = ()) -> bool:
    """`same_values` within TOL * max(1, |expected|) (a `same` for run_cases)."""
    return same_values(got, want, lambda b: TOL * max(1.0, abs(b)))


def same_number(got: float | str, want: float | str, tol: Callable[[float], float]) -> bool:
    """Two `canonical` numbers: equal when either is nan or inf (a string), else within `tol(expected)`."""
    if isinstance(got, str) or isinstance(want, str):
        return got == want
    return abs(got - want) <= tol(want)


# ---------------------------------------------------------------------------------------------------
# random inputs


def generator() -> torch.Generator:
    """A torch generator with a fresh seed (drawn from `random`): new random cases at every check."""
    return torch.Generator().manual_seed(random.randrange(2**31))


def randn64(*shape: int, gen: torch.Generator, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    """scale * N(0, 1) + shift, in float64."""
    t = scale * torch.randn(*shape, generator=gen, dtype=torch.float64)
    return t + shift if shift else t


def d64(data) -> torch.Tensor:
    """torch.tensor(data) in float64."""
    return torch.tensor(data, dtype=torch.float64)
