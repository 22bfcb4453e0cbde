"""Simulated wrong solutions of the chapter 3 exercises, used by ch03.py to name a learner's mistake.

Each function reproduces one common mistake: the unbiased variance (torch.var's default), eps outside
the square root, a LayerNorm without mean subtraction or an RMSNorm with it, normalising over the wrong
dimension, DeepNorm's alpha and beta swapped or taken from another row of the table, Pre-LN and Post-LN
mixed up, and an RMSNorm computed in float16. They are deliberately wrong: never use them as references.
"""

from __future__ import annotations

import torch

# ---------------------------------------------------------------------------------------------------
# 03.1 LayerNorm


def ln_unbiased(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(x.var(-1, keepdim=True) + eps) * weight + bias  # var divides by d - 1


def ln_eps_outside(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    std = ((x - mean) ** 2).mean(-1, keepdim=True).sqrt()
    return (x - mean) / (std + eps) * weight + bias


def ln_no_centering(x, weight, bias, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight + bias


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


# ---------------------------------------------------------------------------------------------------
# 03.2 RMSNorm


def rms_subtract_mean(x, weight, eps):
    c = x - x.mean(-1, keepdim=True)
    return c / torch.sqrt((c * c).mean(-1, keepdim=True) + eps) * weight


def rms_eps_outside(x, weight, eps):
    return x / ((x * x).mean(-1, keepdim=True).sqrt() + eps) * weight


def rms_no_sqrt(x, weight, eps):
    return x / ((x * x).mean(-1, keepdim=True) + eps) * weight


def rms_sum_not_mean(x, weight, eps):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + eps) * weight  # the L2 norm: sqrt(d) too large


def rms_first_dim(x, weight, eps):
    return x / torch.sqrt((x * x).mean(0, keepdim=True) + eps) * weight


# ---------------------------------------------------------------------------------------------------
# 03.3 DeepNorm constants


def deepnorm_swapped(n):
    return (8 * n) ** -0.25, (2 * n) ** 0.25


def deepnorm_encdec_decoder(n):
    return (3 * n) ** 0.25, (12 * n) ** -0.25


def deepnorm_glm(n):
    return (2 * n) ** 0.5, (2 * n) ** -0.5


def deepnorm_beta_positive(n):
    return (2 * n) ** 0.25, (8 * n) ** 0.25


# ---------------------------------------------------------------------------------------------------
# 03.4 residual placement


def residual_swapped(x, f, norm, position, alpha):
    return norm(alpha * x + f(x)) if position == "pre" else x + f(norm(x))


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


# ---------------------------------------------------------------------------------------------------
# 03.5 RMSNorm in float32


def rms_half_precision(x, weight, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight  # all in float16/bfloat16
