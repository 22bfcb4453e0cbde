"""Chapter 3 exercises: plausible wrong solutions, written the way a learner might, fail with the hint
naming the mistake, and Llama's order of the weight multiply passes. What every exercise gets (the solution
passes, the stub is "not attempted", junk answers and the checker's simulated mistakes) is checked in
test_exercises.py."""

from __future__ import annotations

import math

import pytest
import torch

from minillm.grading import check

# ---------------------------------------------------------------------------------------------------
# plausible wrong solutions, written the way a learner might


def ln_torch_var(x, weight, bias, eps):
    return (x - x.mean(-1, keepdim=True)) / torch.sqrt(torch.var(x, dim=-1, keepdim=True) + eps) * weight + bias


def ln_std_plus_eps(x, weight, bias, eps):
    mu = x.mean(dim=-1, keepdim=True)
    sigma = x.std(dim=-1, keepdim=True, unbiased=False)
    return weight * (x - mu) / (sigma + eps) + bias


def ln_without_mean(x, weight, bias, eps):
    return weight * x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt() + bias


def ln_dim0(x, weight, bias, eps):
    mu = x.mean(0, keepdim=True)
    var = x.var(0, keepdim=True, unbiased=False)
    return (x - mu) / (var + eps).sqrt() * weight + bias


def ln_no_keepdim(x, weight, bias, eps):
    mu = x.mean(-1)
    var = ((x - mu.unsqueeze(-1)) ** 2).mean(-1)
    return (x - mu.unsqueeze(-1)) / torch.sqrt(var + eps).sum()  # collapses the rows' scales: wrong values


def rms_centred(x, weight, eps):
    x = x - x.mean(-1, keepdim=True)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rms_plus_eps_outside(x, weight, eps):
    return weight * x / (x.pow(2).mean(-1, keepdim=True).sqrt() + eps)


def rms_l2(x, weight, eps):
    return weight * x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps)


def rms_returns_reduced_shape(x, weight, eps):
    return torch.sqrt((x * x).mean(-1) + eps)  # returns the RMS itself


def deep_swapped(n):
    return (8 * n) ** (-1 / 4), (2 * n) ** (1 / 4)


def deep_encdec(n):
    return (3 * n) ** 0.25, (12 * n) ** -0.25


def deep_glm(n):
    return math.sqrt(2 * n), 1 / math.sqrt(2 * n)


def res_swapped(x, f, norm, position, alpha):
    if position == "post":
        return x + f(norm(x))
    return norm(alpha * x + f(x))


def res_pre_adds_normed(x, f, norm, position, alpha):
    if position == "pre":
        h = norm(x)
        return h + f(h)
    return norm(alpha * x + f(x))


def res_post_no_alpha(x, f, norm, position, alpha):
    return x + f(norm(x)) if position == "pre" else norm(x + f(x))


def res_post_norm_inside(x, f, norm, position, alpha):
    return x + f(norm(x)) if position == "pre" else alpha * x + norm(f(x))


def rms_fp16_all_the_way(x, weight, eps):
    return weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def rms_fp32_no_cast_back(x, weight, eps):
    x = x.float()
    return weight.float() * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def rms_fp32_llama_order(x, weight, eps):
    """Acceptable: normalise in float32, cast back, THEN multiply by the (float16) weight (Llama's order)."""
    xf = x.to(torch.float32)
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


@pytest.mark.parametrize("ex_id,fn,hint", [
    ("03.1", ln_torch_var, "unbiased variance"),
    ("03.1", ln_std_plus_eps, "INSIDE the square root"),
    ("03.1", ln_without_mean, "forgot to subtract the mean"),
    ("03.1", ln_dim0, "wrong dimension"),
    ("03.1", ln_no_keepdim, "expected"),
    ("03.2", rms_centred, "does NOT subtract the mean"),
    ("03.2", rms_plus_eps_outside, "INSIDE the square root"),
    ("03.2", rms_l2, "L2 norm"),
    ("03.2", rms_returns_reduced_shape, "shape"),
    ("03.3", deep_swapped, "swapped"),
    ("03.3", deep_encdec, "encoder-decoder"),
    ("03.3", deep_glm, "GLM-130B"),
    ("03.4", res_swapped, "swapped"),
    ("03.4", res_pre_adds_normed, "RAW x"),
    ("03.4", res_post_no_alpha, "must use alpha"),
    ("03.4", res_post_norm_inside, "normalises the SUM"),
    ("03.5", rms_fp16_all_the_way, "overflows"),
    ("03.5", rms_fp32_no_cast_back, "cast back"),
])
def test_wrong_solution_fails_with_its_hint(ex_id, fn, hint):
    res = check(ex_id, fn)
    assert res.status == "failed" and res.points == 0
    assert hint in res.hint, res.hint


def test_llama_order_of_the_weight_multiply_is_accepted():
    res = check("03.5", rms_fp32_llama_order)
    assert res.passed, res.hint
