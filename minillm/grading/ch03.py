"""Checkers of chapter 3 (normalization), the exercises of exercises/03_normalization.ipynb.

| id | the learner writes | compared with |
|---|---|---|
| 03.1 | `layer_norm(x, weight, bias, eps)` | `minillm.norms.layer_norm` (itself tested against `torch.nn.LayerNorm`) |
| 03.2 | `rms_norm(x, weight, eps)` | `minillm.norms.rms_norm` (tested against `torch.nn.RMSNorm`) |
| 03.3 | `deepnorm_constants(n_layer)` | `minillm.norms.deepnorm_constants(n, "decoder")` |
| 03.4 | `residual_block(x, f, norm, position, alpha)` | `minillm.norms.residual` |
| 03.5 | `rms_norm_fp32(x, weight, eps)` on float16 / bfloat16 | `minillm.norms.rms_norm` (float32 inside) |
| 03.6 | `rms_norm_backward(x, weight, eps, grad_out)`, no autograd | autograd through `minillm.norms.rms_norm` |

Hand-worked cases come first (written out in the notebook), then random float64 inputs. Tolerances:
1e-6 absolute on float64 results (03.1, 03.2, 03.4), 1e-6 relative for 03.3 (float32 arithmetic
passes) and 03.6, and for 03.5 two rounding steps of the input's dtype (so multiplying by the weight
before or after casting back both pass). The `*_MISTAKES` lists pair simulated wrong solutions with the
hint naming each.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from minillm.grading import answers
from minillm.grading.answers import generator, randn64
from minillm.grading.core import Exercise, Wrong

# Each section below defines its simulated wrong solutions (deliberately wrong: never references) next to
# the list that pairs each one with the hint naming it; EXERCISES at the end declares the exercises.

# ---------------------------------------------------------------------------------------------------
# shape checks


def _tensor_like_x(got, args) -> tuple:
    """A tensor (or nested list) of x's shape -> (shape, values) in float64."""
    t = answers.float_tensor(got)
    want = tuple(args[0].shape)
    if tuple(t.shape) != want:
        raise Wrong(f"the result has shape {tuple(t.shape)}, expected x's shape {want} (normalise over the last "
                    "dim and keep it: mean(dim=-1, keepdim=True))")
    return want, answers.values(t)


def _close(got, want, args, tol: float = 1e-6) -> bool:
    return answers.same_values(got, want, lambda b: tol)


# ---------------------------------------------------------------------------------------------------
# 03.1 LayerNorm


def ln_unbiased(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(x.var(-1, keepdim=True) + eps) * weight + bias  # var divides by d - 1


def ln_eps_outside(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    std = ((x - mean) ** 2).mean(-1, keepdim=True).sqrt()
    return (x - mean) / (std + eps) * weight + bias


def ln_uncentered_variance(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight + bias  # E[x^2], not Var


def ln_first_dim(x, weight, bias, eps):
    mean = x.mean(0, keepdim=True)
    var = ((x - mean) ** 2).mean(0, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def ln_bias_before_weight(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return ((x - mean) / torch.sqrt(var + eps) + bias) * weight


LN_MISTAKES = [
    (ln_unbiased, "unbiased variance: torch.var divides by d - 1 by default; LayerNorm divides by d "
                        "(x.var(dim=-1, unbiased=False), or ((x - mean) ** 2).mean(-1))"),
    (ln_eps_outside, "eps goes INSIDE the square root: (x - mean) / sqrt(var + eps), not / (std + eps)"),
    (lambda x, weight, bias, eps: x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight + bias,
     "you forgot to subtract the mean (that is RMSNorm); LayerNorm centres first"),
    (ln_uncentered_variance, "the variance is the mean of (x - mean)^2, not the mean of x^2"),
    (ln_first_dim, "normalised over the wrong dimension: use the LAST one (dim=-1, keepdim=True)"),
    (ln_bias_before_weight, "scale first, then shift: x_hat * weight + bias"),
]


def _cases_layer_norm() -> list:
    from minillm.norms import layer_norm

    def case(x, w, b, eps):
        return (x, w, b, eps), _tensor_like_x(layer_norm(x, w, b, eps), (x,))

    d64 = dict(dtype=torch.float64)
    cases = [
        case(torch.tensor([1.0, 2, 3, 4], **d64), torch.ones(4, **d64), torch.zeros(4, **d64), 0.0),
        case(torch.tensor([3.0, 4.0], **d64), torch.ones(2, **d64), torch.zeros(2, **d64), 0.75),
        case(torch.tensor([3.0, 4.0], **d64), torch.tensor([2.0, 3.0], **d64), torch.tensor([10.0, 20.0], **d64), 0.0),
    ]
    gen = generator()
    for shape, eps, scale, shift in [((3, 5), 1e-5, 2.0, 1.0), ((2, 4, 8), 0.1, 1.0, -3.0), ((6,), 1e-3, 3.0, 0.5),
                                     ((4, 16), 1e-2, 0.05, 2.0)]:
        x = randn64(*shape, gen=gen, scale=scale, shift=shift)
        cases.append(case(x, randn64(shape[-1], gen=gen), randn64(shape[-1], gen=gen), eps))
    return cases


# ---------------------------------------------------------------------------------------------------
# 03.2 RMSNorm


def rms_subtract_mean(x, weight, eps):
    c = x - x.mean(-1, keepdim=True)
    return c / torch.sqrt((c * c).mean(-1, keepdim=True) + eps) * weight


RMS_MISTAKES = [
    (rms_subtract_mean, "RMSNorm does NOT subtract the mean: divide x itself by sqrt(mean(x^2) + eps)"),
    (lambda x, weight, eps: x / ((x * x).mean(-1, keepdim=True).sqrt() + eps) * weight,
     "eps goes INSIDE the square root: x / sqrt(mean(x^2) + eps)"),
    (lambda x, weight, eps: x / ((x * x).mean(-1, keepdim=True) + eps) * weight,
     "take the square ROOT of the mean square: x / sqrt(mean(x^2) + eps)"),
    (lambda x, weight, eps:
         x / torch.sqrt((x * x).sum(-1, keepdim=True) + eps) * weight,  # the L2 norm: sqrt(d) too large
     "that is the L2 norm (sum of squares); RMS uses the MEAN of the squares, "
     "so yours is sqrt(d) times too small"),
    (lambda x, weight, eps: x / torch.sqrt((x * x).mean(0, keepdim=True) + eps) * weight,
     "normalised over the wrong dimension: use the LAST one (dim=-1, keepdim=True)"),
]


def _cases_rms_norm() -> list:
    from minillm.norms import rms_norm

    def case(x, w, eps):
        return (x, w, eps), _tensor_like_x(rms_norm(x, w, eps), (x,))

    d64 = dict(dtype=torch.float64)
    cases = [case(torch.tensor([3.0, 4.0], **d64), torch.ones(2, **d64), 0.0),
             case(torch.ones(4, **d64), torch.tensor([1.0, 2, 3, 4], **d64), 3.0)]
    gen = generator()
    for shape, eps, shift in [((3, 5), 1e-6, 1.0), ((2, 4, 8), 0.1, -2.0), ((6,), 1e-3, 0.0), ((4, 16), 1e-5, 3.0)]:
        cases.append(case(randn64(*shape, gen=gen, shift=shift), randn64(shape[-1], gen=gen), eps))
    return cases


# ---------------------------------------------------------------------------------------------------
# 03.3 DeepNorm constants





def _number(v):
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    if not isinstance(v, numbers.Real) or isinstance(v, bool):
        raise Wrong(f"alpha and beta must be numbers, got {type(v).__name__}")
    return float(v)


def _pair(got, args) -> tuple[float, float]:
    if not (isinstance(got, (tuple, list)) and len(got) == 2):
        raise Wrong(f"return a pair (alpha, beta), got {type(got).__name__} {got!r:.40}")
    return _number(got[0]), _number(got[1])


DEEPNORM_MISTAKES = [
    (lambda n: ((8 * n) ** (-0.25), (2 * n) ** 0.25),
     "alpha and beta are swapped: alpha = (2N)^(1/4) > 1 scales the residual, "
     "beta = (8N)^(-1/4) < 1 scales the init"),
    (lambda n: ((3 * n) ** 0.25, (12 * n) ** (-0.25)),
     "(3N)^(1/4) and (12N)^(-1/4) are the DECODER of an encoder-decoder model; "
     "decoder-only uses (2N)^(1/4) and (8N)^(-1/4)"),
    (lambda n: ((2 * n) ** 0.5, (2 * n) ** (-0.5)),
     "(2N)^(1/2) is GLM-130B's variant; the DeepNet paper's decoder-only constants are "
     "(2N)^(1/4) and (8N)^(-1/4)"),
    (lambda n: ((2 * n) ** 0.25, (8 * n) ** 0.25),
     "beta = (8N)^(-1/4): a NEGATIVE exponent (beta < 1 shrinks the init)"),
]


def _cases_deepnorm() -> list:
    from minillm.norms import deepnorm_constants

    cases = [((2,), (math.sqrt(2), 0.5)), ((8,), (2.0, 1 / (2 * math.sqrt(2)))), ((32,), (2 * math.sqrt(2), 0.25))]
    cases += [((n,), deepnorm_constants(n, "decoder")) for n in (1, 6, 24, 48, 70, 1000)]
    return cases


# ---------------------------------------------------------------------------------------------------
# 03.4 residual placement


def residual_normalised_stream(x, f, norm, position, alpha):
    if position == "pre":
        return norm(x) + f(norm(x))  # the residual carries norm(x) instead of x
    return norm(alpha * x + f(x))


def residual_post_norms_f(x, f, norm, position, alpha):
    if position == "pre":
        return x + f(norm(x))
    return alpha * x + norm(f(x))  # normalises the sub-layer output, not the sum


def residual_alpha_on_f(x, f, norm, position, alpha):
    if position == "pre":
        return x + f(norm(x))
    return norm(x + alpha * f(x))


def residual_no_alpha(x, f, norm, position, alpha):
    if position == "pre":
        return x + f(norm(x))
    return norm(x + f(x))


class Center(nn.Module):
    """norm(t) = t - mean(t) over the last dim (the hand-worked 'norm' of the notebook)."""

    def forward(self, t):
        return t - t.mean(-1, keepdim=True)

    def __repr__(self):
        return "center"


class Square(nn.Module):
    """f(t) = t * t (the hand-worked sub-layer of the notebook)."""

    def forward(self, t):
        return t * t

    def __repr__(self):
        return "square"


RESIDUAL_MISTAKES = [
    (lambda x, f, norm, position, alpha: norm(alpha * x + f(x)) if position == 'pre' else x + f(norm(x)),
     "pre and post are swapped: Pre-LN is x + f(norm(x)), Post-LN is norm(alpha x + f(x))"),
    (residual_normalised_stream, "Pre-LN adds f(norm(x)) to the RAW x; the residual stream is never "
                                       "normalised (you added it to norm(x))"),
    (residual_post_norms_f, "Post-LN normalises the SUM: norm(alpha * x + f(x)), not alpha * x + norm(f(x))"),
    (residual_alpha_on_f, "alpha scales the residual x, not the sub-layer output: norm(alpha * x + f(x))"),
    (residual_no_alpha, "Post-LN must use alpha: norm(alpha * x + f(x)) (DeepNorm's alpha > 1)"),
]


def _cases_residual() -> list:
    from minillm.norms import LayerNorm, RMSNorm, residual

    x0 = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)

    def hand(*v):
        return (3,), tuple(round(a, 7) for a in v)

    cases = [((x0, Square(), Center(), "pre", 1.0), hand(2.0, 2.0, 4.0)),
             ((x0, Square(), Center(), "post", 1.0), hand(-14 / 3, -2 / 3, 16 / 3)),
             ((x0, Square(), Center(), "post", 2.0), hand(-17 / 3, -2 / 3, 19 / 3))]
    gen = generator()
    with torch.random.fork_rng(devices=[]):  # building nn.Linear draws from the global RNG: leave the learner's alone
        for position, alpha, norm_cls in [("pre", 1.0, LayerNorm), ("post", 1.0, LayerNorm), ("post", 1.6, RMSNorm),
                                          ("pre", 1.0, RMSNorm), ("post", 2.5, LayerNorm)]:
            f, norm = nn.Linear(8, 8).double(), norm_cls(8).double()
            with torch.no_grad():
                f.weight.copy_(randn64(8, 8, gen=gen, scale=0.4))
                f.bias.copy_(randn64(8, gen=gen))
                norm.weight.copy_(randn64(8, gen=gen, shift=1.0))
                x = randn64(2, 5, 8, gen=gen, scale=2.0)
                want = residual(x, f, norm, position, alpha)
            cases.append(((x, f, norm, position, alpha), _tensor_like_x(want, (x,))))
    return cases


# ---------------------------------------------------------------------------------------------------
# 03.5 RMSNorm computed in float32


def _same_dtype(got, args) -> tuple:
    x = args[0]
    if not isinstance(got, torch.Tensor):
        raise Wrong(f"return a tensor, got a {type(got).__name__}")
    if got.dtype != x.dtype:
        raise Wrong(f"return x's dtype ({x.dtype}), got {got.dtype}: compute in float32, then cast back with "
                    ".to(x.dtype)")
    return _tensor_like_x(got, args)


def _within_two_steps(got, want, args) -> bool:
    """|got - want| <= 2 rounding steps of x's dtype (relative), elementwise; inf/nan must match exactly."""
    step = torch.finfo(args[0].dtype).eps
    return answers.same_values(got, want, lambda b: 2 * step * abs(b) + 1e-7)


HALF_MISTAKES = [
    (lambda x, weight, eps:
         x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight,  # all in float16/bfloat16
     "computed in float16/bfloat16: x * x overflows for |x| >= 256 (or rounds to 0 for "
     "tiny x); upcast first with x.float(), normalise, multiply, then .to(x.dtype)"),
]


def _cases_rms_fp32() -> list:
    from minillm.norms import rms_norm

    def case(x, w, eps):
        return (x, w, eps), _same_dtype(rms_norm(x, w, eps), (x,))

    h = dict(dtype=torch.float16)
    cases = [case(torch.tensor([300.0, -310.0, 290.0, 305.0], **h), torch.ones(4, **h), 1e-6),
             case(torch.tensor([1e-4, -1.2e-4, 1.5e-4, -0.8e-4], **h), torch.ones(4, **h), 0.0)]
    gen = generator()
    for shape, dtype, scale in [((3, 64), torch.float16, 400.0), ((2, 4, 32), torch.float16, 1.0),
                                ((4, 32), torch.bfloat16, 1000.0), ((5, 16), torch.float16, 3e-5)]:
        x = randn64(*shape, gen=gen, scale=scale).to(dtype)
        cases.append(case(x, randn64(shape[-1], gen=gen, shift=1.0).to(dtype), 1e-6 if scale > 1e-3 else 0.0))
    return cases


# ---------------------------------------------------------------------------------------------------
# 03.6 RMSNorm backward by hand (interview question), compared with autograd through minillm.norms.rms_norm


def _rms_parts(x, weight, eps, grad_out):
    r = torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps)
    return r, grad_out * weight, x.shape[-1]


def rmsb_rms_constant(x, weight, eps, grad_out):
    r, gw, _ = _rms_parts(x, weight, eps, grad_out)
    return gw / r  # the path through the RMS is missing


def rmsb_no_mean(x, weight, eps, grad_out):
    r, gw, _ = _rms_parts(x, weight, eps, grad_out)
    return gw / r - x * (gw * x).sum(-1, keepdim=True) / r**3  # the 1/d of the mean is missing


def rmsb_sign(x, weight, eps, grad_out):
    r, gw, d = _rms_parts(x, weight, eps, grad_out)
    return gw / r + x * (gw * x).sum(-1, keepdim=True) / (d * r**3)


def rmsb_no_weight(x, weight, eps, grad_out):
    r, _, d = _rms_parts(x, weight, eps, grad_out)
    return grad_out / r - x * (grad_out * x).sum(-1, keepdim=True) / (d * r**3)


def rmsb_elementwise(x, weight, eps, grad_out):
    r, gw, d = _rms_parts(x, weight, eps, grad_out)
    return gw / r - x * gw * x / (d * r**3)  # the sum over the row is missing: each x_j moves every output


def _cases_rms_backward() -> list:
    from minillm.norms import rms_norm

    def case(x, w, eps, g):
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((rms_norm(xr, w, eps) * g).sum(), xr)
        return (x, w, eps, g), _tensor_like_x(grad, (x,))

    d64 = answers.d64
    cases = [case(d64([3.0, 4.0]), d64([1.0, 1.0]), 0.0, d64([1.0, 0.0]))]  # the worked example
    gen = generator()
    for shape, eps, scale in [((3, 5), 1e-6, 1.0), ((2, 4, 8), 1e-5, 3.0), ((6,), 0.5, 1.0), ((4, 7), 1e-2, 1e-3),
                              ((2, 3, 16), 0.0, 2.0), ((5, 1), 1e-6, 1.0)]:
        x = randn64(*shape, gen=gen, scale=scale)
        cases.append(case(x, randn64(shape[-1], gen=gen, shift=1.0), eps, randn64(*shape, gen=gen)))
    return cases


RMSB_MISTAKES = [
    (rmsb_rms_constant, "the RMS depends on x too: besides grad_out * weight / RMS there is a term through the "
                        "RMS, which couples the elements of a row"),
    (rmsb_elementwise, "every x_j changes the RMS of its row and so every output of the row: the second term "
                       "needs a sum over the row, not an elementwise product"),
    (rmsb_no_mean, "the RMS is a root of the MEAN of the squares: its derivative carries a factor 1/d"),
    (rmsb_sign, "the term through the RMS has the wrong sign: a larger |x| makes the RMS larger, which shrinks "
                "every output of the row"),
    (rmsb_no_weight, "the loss sees the output after the gain: use grad_out * weight wherever the gradient of "
                     "the normalised x appears"),
]


EXERCISES = (
    Exercise("03.1", "LayerNorm", 2, cases=_cases_layer_norm, name="layer_norm", normalize=_tensor_like_x,
             same=_close, mistakes=LN_MISTAKES),
    Exercise("03.2", "RMSNorm", 1, cases=_cases_rms_norm, name="rms_norm", normalize=_tensor_like_x, same=_close,
             mistakes=RMS_MISTAKES),
    Exercise("03.3", "DeepNorm constants", 1, cases=_cases_deepnorm, name="deepnorm_constants", normalize=_pair,
             same=lambda g, w, a: all(math.isclose(x, y, rel_tol=1e-6) for x, y in zip(g, w, strict=True)),
             mistakes=DEEPNORM_MISTAKES),
    Exercise("03.4", "Pre-LN and Post-LN residual", 2, cases=_cases_residual, name="residual_block",
             normalize=_tensor_like_x, same=_close, mistakes=RESIDUAL_MISTAKES),
    Exercise("03.5", "RMSNorm in float32 for float16 input", 1, cases=_cases_rms_fp32, name="rms_norm_fp32",
             normalize=_same_dtype, same=_within_two_steps, mistakes=HALF_MISTAKES),
    Exercise("03.6", "RMSNorm backward by hand", 3, cases=_cases_rms_backward, name="rms_norm_backward",
             normalize=_tensor_like_x, same=answers.close, mistakes=RMSB_MISTAKES),
)
