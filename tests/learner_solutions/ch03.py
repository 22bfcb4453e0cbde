"""Learner solutions for exercises 03.x (normalization), written from the notebook text only.

``valid_NN_k_*`` satisfy the task text of exercise NN.k; ``wrong_NN_k_*`` break the clause named above them.
"""
# Learner-style code on purpose (zip over ids and ids[1:], unused loop counters):
# ruff: noqa: B905, B007
import torch

# ---- 03.1 layer_norm ------------------------------------------------------------------------------

# valid: mean and biased variance by hand, rsqrt
def valid_03_1_rsqrt(x, weight, bias, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) * torch.rsqrt(var + eps) * weight + bias


# valid: torch.var_mean(unbiased=False), other order of gain and shift
def valid_03_1_var_mean(x, weight, bias, eps):
    var, mu = torch.var_mean(x, dim=-1, keepdim=True, correction=0)
    return bias + weight * ((x - mu) / torch.sqrt(var + eps))


# wrong: unbiased variance (divides by d-1) -- breaks "The variance divides by d (biased)"
def wrong_03_1_unbiased(x, weight, bias, eps):
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * weight + bias


# wrong: eps outside the sqrt -- breaks "epsilon sits inside the square root"
def wrong_03_1_eps_outside(x, weight, bias, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / (torch.sqrt(var) + eps) * weight + bias


# wrong: normalises over the first dim -- breaks "Normalise over the last dimension" (visible on (..., d) batches)
def wrong_03_1_dim0(x, weight, bias, eps):
    mu = x.mean(0, keepdim=True)
    var = ((x - mu) ** 2).mean(0, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * weight + bias


# ---- 03.2 rms_norm --------------------------------------------------------------------------------

# valid: rsqrt of the mean square
def valid_03_2_rsqrt(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


# valid: via the vector norm: ||x|| / sqrt(d)
def valid_03_2_norm(x, weight, eps):
    d = x.shape[-1]
    ms = torch.linalg.vector_norm(x, dim=-1, keepdim=True) ** 2 / d
    return weight * (x / torch.sqrt(ms + eps))


# wrong: subtracts the mean (that is LayerNorm) -- breaks "no mean subtraction"
def wrong_03_2_centred(x, weight, eps):
    xc = x - x.mean(-1, keepdim=True)
    return xc / torch.sqrt(xc.pow(2).mean(-1, keepdim=True) + eps) * weight


# wrong: sum instead of mean of squares -- breaks "(1/d) sum x_i^2"
def wrong_03_2_sum(x, weight, eps):
    return x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps) * weight


# wrong: eps outside the sqrt -- breaks "sqrt(mean + eps)"
def wrong_03_2_eps_outside(x, weight, eps):
    return x / (torch.sqrt(x.pow(2).mean(-1, keepdim=True)) + eps) * weight


# ---- 03.3 deepnorm_constants ----------------------------------------------------------------------

# valid: the formula
def valid_03_3_formula(n_layer):
    return (2 * n_layer) ** 0.25, (8 * n_layer) ** -0.25


# valid: as a list of two via sqrt of sqrt
def valid_03_3_sqrt(n_layer):
    import math
    return [math.sqrt(math.sqrt(2 * n_layer)), 1 / math.sqrt(math.sqrt(8 * n_layer))]


# wrong: encoder-decoder constants of the paper's table -- breaks "for a decoder-only model ... (2N)^(1/4), (8N)^(-1/4)"
def wrong_03_3_encdec(n_layer):
    return 0.81 * (n_layer ** 4 * n_layer) ** 0.0625, 0.87 * (n_layer ** 4 * n_layer) ** -0.0625


# wrong: (alpha, beta) returned in the wrong order -- breaks "returning the pair (alpha, beta)"
def wrong_03_3_swapped(n_layer):
    return (8 * n_layer) ** -0.25, (2 * n_layer) ** 0.25


# wrong: beta = (8N)^(+1/4) -- breaks the minus sign of the exponent
def wrong_03_3_beta_sign(n_layer):
    return (2 * n_layer) ** 0.25, (8 * n_layer) ** 0.25


# ---- 03.4 residual_block --------------------------------------------------------------------------

# valid: if/else
def valid_03_4_ifelse(x, f, norm, position, alpha):
    if position == "pre":
        return x + f(norm(x))
    return norm(alpha * x + f(x))


# valid: dispatch table; "pre" ignores alpha even if someone passes alpha != 1
def valid_03_4_table(x, f, norm, position, alpha):
    branches = {"pre": lambda: f(norm(x)) + x, "post": lambda: norm(x * alpha + f(x))}
    return branches[position]()


# wrong: post scales f(x) by alpha instead of x -- breaks "norm(alpha x + f(x))"
def wrong_03_4_alpha_on_f(x, f, norm, position, alpha):
    if position == "pre":
        return x + f(norm(x))
    return norm(x + alpha * f(x))


# wrong: pre-LN adds norm(x) as the residual -- breaks "x + f(norm(x))"
def wrong_03_4_pre_norm_residual(x, f, norm, position, alpha):
    if position == "pre":
        h = norm(x)
        return h + f(h)
    return norm(alpha * x + f(x))


# wrong: post ignores alpha -- breaks "DeepNorm when alpha > 1"
def wrong_03_4_post_no_alpha(x, f, norm, position, alpha):
    if position == "pre":
        return x + f(norm(x))
    return norm(x + f(x))


# ---- 03.5 rms_norm_fp32 ---------------------------------------------------------------------------

# valid: weight multiplied in float32, one cast to x's dtype at the end
def valid_03_5_fp32_weight(x, weight, eps):
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (y * weight.float()).to(x.dtype)


# valid: float64 computation (at least float32 precision), cast once at the end
def valid_03_5_fp64(x, weight, eps):
    xd = x.double()
    y = xd / torch.sqrt((xd * xd).mean(-1, keepdim=True) + eps) * weight.double()
    return y.to(x.dtype)


# wrong: all in the input dtype -- breaks "compute the RMSNorm in float32" (overflow for |x| >= 256 in fp16)
def wrong_03_5_half(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


# wrong: returns float32 -- breaks "return a tensor of x's dtype"
def wrong_03_5_returns_fp32(x, weight, eps):
    xf = x.float()
    return xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()


# wrong: forgets the weight -- breaks "multiply by the weight"
def wrong_03_5_no_weight(x, weight, eps):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


# ---- 03.6 rms_norm_backward -----------------------------------------------------------------------

# valid: closed form: dx = (g w)/r - x * sum(g w x) / (d r^3)
def valid_03_6_closed(x, weight, eps, grad_out):
    d = x.shape[-1]
    r = torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    gw = grad_out * weight
    return gw / r - x * (gw * x).sum(-1, keepdim=True) / (d * r ** 3)


# valid: through the Jacobian per row (einsum), float64 internally, back to x's dtype
def valid_03_6_jacobian(x, weight, eps, grad_out):
    d = x.shape[-1]
    xd = x.double().reshape(-1, d)
    g = (grad_out.double() * weight.double()).reshape(-1, d)
    r = torch.sqrt(xd.pow(2).mean(-1) + eps)                                 # (N,)
    eye = torch.eye(d, dtype=torch.float64)
    # J[n, i, j] = d y_i / d x_j (without the weight) = delta_ij / r - x_i x_j / (d r^3)
    jac = eye / r[:, None, None] - xd[:, :, None] * xd[:, None, :] / (d * r[:, None, None] ** 3)
    dx = torch.einsum("ni,nij->nj", g, jac)
    return dx.reshape(x.shape).to(x.dtype)


# wrong: forgets that the RMS depends on x (treats 1/r as a constant) -- breaks "derive it ... from 03.2's definition"
def wrong_03_6_const_rms(x, weight, eps, grad_out):
    r = torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return grad_out * weight / r


# wrong: drops the 1/d in the second term -- breaks the definition's mean (1/d sum)
def wrong_03_6_no_d(x, weight, eps, grad_out):
    r = torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    gw = grad_out * weight
    return gw / r - x * (gw * x).sum(-1, keepdim=True) / r ** 3


# wrong: ignores eps in the backward (r without eps) -- breaks 03.2's definition (eps inside the RMS)
def wrong_03_6_no_eps(x, weight, eps, grad_out):
    return valid_03_6_closed(x, weight, 0.0, grad_out)


# ---- second round: subtler cases ------------------------------------------------------------------

# valid: Hugging Face LlamaRMSNorm's order: normalise in float32, cast to x's dtype, then multiply by the weight
# (the text says "as Llama's RMSNorm does"; the rounding differs from a float32 product by at most 1 ulp)
def valid_03_5_llama_order(x, weight, eps):
    xf = x.to(torch.float32)
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * y.to(x.dtype)


# ---- third round ----------------------------------------------------------------------------------

# wrong: casts the result to float16 whatever x's dtype -- breaks "return a tensor of x's dtype" for bfloat16
def wrong_03_5_always_half(x, weight, eps):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).half()


# wrong: d read from x.shape[1] (right only for 2-D x) -- breaks "x of shape (..., d)" (batched shapes)
def wrong_03_6_shape1(x, weight, eps, grad_out):
    d = x.shape[1]
    r = torch.sqrt((x * x).sum(-1, keepdim=True) / d + eps)
    gw = grad_out * weight
    return gw / r - x * (gw * x).sum(-1, keepdim=True) / (d * r ** 3)


# valid: 03.1 with the variance as E[x^2] - mu^2 (same value up to rounding on these scales), float64 inside
def valid_03_1_moments(x, weight, bias, eps):
    xd = x.double()
    mu = xd.mean(-1, keepdim=True)
    var = (xd * xd).mean(-1, keepdim=True) - mu * mu
    return ((xd - mu) / torch.sqrt(var + eps) * weight.double() + bias.double()).to(x.dtype)
