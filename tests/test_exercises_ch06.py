"""Chapter 6 exercises: plausible wrong solutions fail with the hint naming the mistake, acceptable variants
pass, 06.1 and 06.6 leave the learner's RNG alone, and every hand-worked value the notebook's markdown shows
is what the `minillm` references compute (the numbers are read from the markdown itself). What every exercise
gets (the solution passes, the stub is "not attempted", junk answers and the checker's simulated mistakes) is
checked in test_exercises.py."""

from __future__ import annotations

import math
import re

import exercise_kit as kit
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minillm.attention import prefix_lm_mask
from minillm.grading import ch06, check
from minillm.model import GPT, GPTConfig, count_params
from minillm.train import TrainConfig, lr_at, make_optimizer

CHAPTER = "06"
CELLS = kit.cells(kit.source(CHAPTER))


def test_checks_leave_the_global_rng_alone(solution):
    """06.1 and 06.6 build models; the learner's torch RNG must be where it was."""
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    check("06.1", solution["next_token_loss"])
    check("06.6", solution["decay_groups"])
    assert torch.equal(torch.rand(3), want)


# ---------------------------------------------------------------------------------------------------
# the hand-worked values written in the notebook's markdown, read from it and recomputed


MARKDOWN = "\n".join(c.source(False) for c in CELLS if c.kind == "markdown")


def _shown(snippet: str) -> list[float]:
    """The numbers of `snippet`, which must appear verbatim in the notebook's markdown ('{,}' = thousands)."""
    assert snippet in MARKDOWN, f"the markdown no longer shows {snippet!r}"
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", snippet.replace("{,}", ""))]


def test_hand_worked_loss():
    logits = torch.tensor([ch06.HAND_LOGITS], dtype=torch.float64)
    idx = torch.tensor([ch06.HAND_IDX])
    assert _shown("`idx = [[0, 2, 1]]`") == ch06.HAND_IDX
    assert "`logits = [[[0, 0, ln 2], [ln 2, ln 6, 0],\n[5, 0, 0]]]`" in MARKDOWN
    probs = torch.softmax(logits[0], -1)
    torch.testing.assert_close(probs[0], torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64))
    torch.testing.assert_close(probs[1], torch.tensor([2 / 9, 6 / 9, 1 / 9], dtype=torch.float64))
    logp = torch.log_softmax(logits[0], -1)
    assert _shown("$-\\ln\\frac12 = 0.693147$") == pytest.approx([12, -logp[0, 2].item()], abs=5e-7)
    assert _shown("$-\\ln\\frac69 = 0.405465$") == pytest.approx([69, -logp[1, 1].item()], abs=5e-7)
    loss = ch06._ref_loss(logits, idx)
    assert _shown("The loss is $(0.693147 + 0.405465)/2 = 0.549306$ ($= \\frac12\\ln 3$)") == pytest.approx(
        [-logp[0, 2].item(), -logp[1, 1].item(), 2, loss, 12, 3], abs=5e-7)
    assert loss == pytest.approx(math.log(3) / 2, abs=1e-12)
    no_shift = F.cross_entropy(logits[0], idx[0]).item()
    assert _shown("you would get $2.865635$") == pytest.approx([no_shift], abs=5e-7)


def test_gpt_loss_is_the_shifted_cross_entropy():
    """The reference of 06.1 on a GPT's logits: the model's own loss on idx[:, :-1] with targets idx[:, 1:]."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("tiny")).double().eval()
    idx = torch.randint(128, (3, 10))
    with torch.no_grad():
        own = model(idx[:, :-1], idx[:, 1:])[1].item()
        assert ch06._ref_loss(model(idx)[0], idx) == pytest.approx(own, abs=1e-12)


def test_underflow_case_really_underflows():
    for seed in range(10):
        logits, idx = ch06._underflowing_loss_case(torch.Generator().manual_seed(seed))
        assert math.isinf(ch06.loss_log_of_softmax(logits, idx).item())
        assert math.isfinite(ch06._ref_loss(logits, idx)) and ch06._ref_loss(logits, idx) > 300


def test_hand_worked_prefix_mask():
    rows = "[[1, 1, 0, 0, 0],\n [1, 1, 0, 0, 0],\n [1, 1, 1, 0, 0],\n [1, 1, 1, 1, 0],\n [1, 1, 1, 1, 1]]"
    assert _shown(rows) == prefix_lm_mask(5, 2).double().flatten().tolist()
    assert torch.equal(prefix_lm_mask(4, 0), torch.ones(4, 4, dtype=torch.bool).tril())
    assert prefix_lm_mask(4, 4).all()


def test_hand_worked_gpt2_counts():
    assert _shown("$40 + 32 + (12\\cdot16 + 13\\cdot4 = 244) + 8 = 324$") == [40, 32, 12, 16, 13, 4, 244, 8, 324]
    tiny = GPTConfig.preset("gpt2", vocab_size=10, block_size=8, n_layer=1, n_head=1, d_model=4)
    assert GPT(tiny).num_params() == count_params(tiny)["total"] == 324
    c = count_params(GPTConfig.preset("gpt2"))
    assert _shown("token embedding $38{,}597{,}376$") == [c["embed_tokens"]]
    assert _shown("positions $786{,}432$, $12 \\times 7{,}087{,}872 = 85{,}054{,}464$ in the layers") == [
        c["embed_positions"], 12, c["per_layer"], 12 * c["per_layer"]]
    assert c["attention"] + c["mlp"] + c["norms"] - 2 * 768 == 12 * c["per_layer"]
    assert _shown("final LayerNorm\n  $1{,}536$: **$124{,}439{,}808$**") == [2 * 768, c["total"]]
    assert c["lm_head"] == 0 and c["per_layer"] == 12 * 768**2 + 13 * 768
    assert _shown("GPT-2 medium (24 layers, $d = 1024$): $354{,}823{,}168$") == [
        -2, 24, 1024, count_params(GPTConfig.preset("gpt2-medium"))["total"]]


def test_hand_worked_llama_counts():
    c = count_params(GPTConfig.preset("llama2-7b"))
    assert _shown("per layer attention $4 \\cdot 4096^2 = 67{,}108{,}864$") == [4, 4096, 2, 4 * 4096**2]
    assert _shown("MLP $3 \\cdot 4096 \\cdot 11008 = 135{,}266{,}304$") == [3, 4096, 11008, 3 * 4096 * 11008]
    assert c["attention"] == 32 * 4 * 4096**2 and c["mlp"] == 32 * 3 * 4096 * 11008
    assert _shown("norms $8{,}192$, so $32 \\times 202{,}383{,}360 = 6{,}476{,}267{,}520$") == [
        2 * 4096, 32, c["per_layer"], 32 * c["per_layer"]]
    assert _shown("embedding and head\n  $2 \\times 131{,}072{,}000$; final norm $4{,}096$") == [
        2, c["embed_tokens"], 4096]
    assert c["lm_head"] == c["embed_tokens"] and c["embed_positions"] == 0
    assert _shown("**$6{,}738{,}415{,}616$** (\"7B\")") == [c["total"], 7]
    c70 = count_params(GPTConfig.preset("llama2-70b"))
    assert _shown("$2 \\cdot 8192^2 + 2 \\cdot 8192 \\cdot 1024 = 150{,}994{,}944$") == [
        2, 8192, 2, 2, 8192, 1024, c70["attention"] // 80]
    assert _shown("the total is $68{,}976{,}648{,}192$") == [c70["total"]]
    assert _shown("$8{,}030{,}261{,}248$") == [count_params(GPTConfig.preset("llama3-8b"))["total"]]


@pytest.mark.parametrize("preset,overrides", [
    ("gpt2", dict(vocab_size=50, block_size=16, n_layer=2, n_head=4, d_model=32)),
    ("gpt2", dict(vocab_size=7, block_size=3, n_layer=3, n_head=1, d_model=8)),
])
def test_gpt2_reference_counts_a_real_model(preset, overrides):
    cfg = GPTConfig.preset(preset, **overrides)
    assert GPT(cfg).num_params() == ch06._ref_gpt2(cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.d_model)


@pytest.mark.parametrize("args", [(128, 2, 64, 4, 2, 172), (100, 3, 48, 6, 3, 128), (50, 1, 16, 4, 1, 40)])
def test_llama_reference_counts_a_real_model(args):
    V, L, d, H, Hkv, h = args
    cfg = GPTConfig.preset("llama2-7b", vocab_size=V, n_layer=L, d_model=d, n_head=H, n_kv_head=Hkv, ffn_hidden=h)
    assert GPT(cfg).num_params() == ch06._ref_llama(*args)


def test_hand_worked_learning_rates():
    def at(step):
        return lr_at(step, 1e-3, 10, 110, 0.1)

    assert _shown("steps 0, 4, 9: $10^{-4}$, $5\\cdot10^{-4}$, $10^{-3}$; step 10 (progress 0): $10^{-3}$") == [
        0, 4, 9, 10, -4, 5, 10, -4, 10, -3, 10, 0, 10, -3]
    assert [at(s) for s in (0, 4, 9, 10)] == pytest.approx([1e-4, 5e-4, 1e-3, 1e-3], rel=1e-12)
    assert _shown("$\\frac12(1 + \\cos\\frac\\pi4) = 0.853553$") == pytest.approx(
        [12, 1, 4, 0.5 * (1 + math.cos(math.pi / 4))], abs=5e-7)
    assert _shown("$10^{-3}\\cdot(0.1 + 0.9 \\cdot\n  0.853553) = 8.68198\\cdot10^{-4}$") == pytest.approx(
        [10, -3, 0.1, 0.9, 0.853553, at(35) * 1e4, 10, -4], abs=5e-6)
    assert _shown("step 60 (progress $\\frac12$): $5.5\\cdot10^{-4}$; steps 110 and 150: $10^{-4}$") == [
        60, 12, 5.5, 10, -4, 110, 150, 10, -4]
    assert [at(s) for s in (60, 110, 150)] == pytest.approx([5.5e-4, 1e-4, 1e-4], rel=1e-12)


def test_hand_worked_decay_groups():
    model = GPT(GPTConfig.preset("tiny"))
    decay, no_decay = ch06._ref_groups(model)
    params = dict(model.named_parameters())
    assert _shown("14 tensors with $110{,}592$\nnumbers") == [
        len(decay), sum(params[n].numel() for n in decay)]
    assert _shown("22 tensors\nwith $1{,}792$") == [
        len(no_decay), sum(params[n].numel() for n in no_decay)]


def test_reference_groups_are_make_optimizers():
    """ch06 applies make_optimizer's rule directly (no AdamW, no torch._dynamo import in a check)."""
    with torch.random.fork_rng(devices=[]):
        models = ch06._decay_models()
    for model in models:
        names = {id(p): n for n, p in model.named_parameters()}
        groups = make_optimizer(model, TrainConfig()).param_groups
        assert tuple(tuple(sorted(names[id(p)] for p in g["params"])) for g in groups) == ch06._ref_groups(model)
        assert [g["weight_decay"] for g in groups] == [0.1, 0.0]


def test_decay_models_cover_the_edge_cases():
    models = ch06._decay_models()
    assert any(not p.requires_grad for m in models for p in m.parameters())  # frozen parameters
    assert any(p.dim() == 0 for m in models for p in m.parameters())  # a scalar
    assert any(p.dim() == 3 for m in models for p in m.parameters())  # a conv weight
    tied = models[0]
    assert tied.lm_head.weight is tied.embed_tokens.weight
    import copy

    assert copy.deepcopy(tied) is tied  # shared, so that the returned parameters are recognised by identity


# ---------------------------------------------------------------------------------------------------
# plausible wrong solutions, written the way a learner might


def _flat_ce(logits, targets, **kw):
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), **kw)


def nl_no_shift(logits, idx):
    return _flat_ce(logits, idx)


def nl_backwards(logits, idx):
    return _flat_ce(logits[:, 1:], idx[:, :-1])


def nl_onehot_mean(logits, idx):
    logp = F.log_softmax(logits[:, :-1], dim=-1)
    return -(F.one_hot(idx[:, 1:], logits.size(-1)) * logp).mean()


def nl_softmax_gather(logits, idx):
    p = F.softmax(logits[:, :-1], dim=-1)
    return -torch.gather(p, 2, idx[:, 1:].unsqueeze(-1)).mean()


def nl_raw_logits(logits, idx):
    return -torch.gather(logits[:, :-1], 2, idx[:, 1:].unsqueeze(-1)).squeeze(-1).mean()


def nl_sum(logits, idx):
    return _flat_ce(logits[:, :-1], idx[:, 1:], reduction="sum")


def nl_positive(logits, idx):
    return F.log_softmax(logits[:, :-1], -1).gather(-1, idx[:, 1:, None]).mean()


def nl_log_of_softmax(logits, idx):
    return F.nll_loss(torch.log(F.softmax(logits[:, :-1], -1)).flatten(0, 1), idx[:, 1:].flatten())


def nl_per_token(logits, idx):
    return _flat_ce(logits[:, :-1], idx[:, 1:], reduction="none")


def nl_3d_cross_entropy(logits, idx):
    return F.cross_entropy(logits[:, :-1], idx[:, 1:])  # (B, T-1, V) read as (N, C, d1): raises


def pm_ones(T, prefix_len):
    return torch.ones(T, T).bool()


def pm_tril(T, prefix_len):
    return torch.tril(torch.ones(T, T)).bool()


def pm_transposed(T, prefix_len):
    m = torch.tril(torch.ones(T, T, dtype=torch.bool))
    m[:, :prefix_len] = True
    return m.T


def pm_prefix_rows(T, prefix_len):
    m = torch.tril(torch.ones(T, T, dtype=torch.bool))
    m[:prefix_len, :] = True
    return m


def pm_le(T, prefix_len):
    m = torch.tril(torch.ones(T, T, dtype=torch.bool))
    m[:, :prefix_len + 1] = True
    return m


def pm_blocked(T, prefix_len):
    m = torch.tril(torch.ones(T, T, dtype=torch.bool))
    m[:, :prefix_len] = True
    return ~m


def pm_encoder_decoder(T, prefix_len):
    m = torch.zeros(T, T, dtype=torch.bool)
    m[:prefix_len, :prefix_len] = True
    m[prefix_len:, prefix_len:] = torch.tril(torch.ones(T - prefix_len, T - prefix_len, dtype=torch.bool))
    return m


def pm_float(T, prefix_len):
    m = torch.tril(torch.ones(T, T))
    m[:, :prefix_len] = 1
    return m


def gp_no_bias(vocab_size, block_size, n_layer, d_model):
    d = d_model
    return vocab_size * d + block_size * d + n_layer * (12 * d * d + 4 * d) + 2 * d


def gp_kaplan(vocab_size, block_size, n_layer, d_model):
    return 12 * n_layer * d_model**2 + vocab_size * d_model + block_size * d_model


def gp_untied(vocab_size, block_size, n_layer, d_model):
    d = d_model
    return 2 * vocab_size * d + block_size * d + n_layer * (12 * d * d + 13 * d) + 2 * d


def gp_no_positions(vocab_size, block_size, n_layer, d_model):
    d = d_model
    return vocab_size * d + n_layer * (12 * d * d + 13 * d) + 2 * d


def gp_no_final_ln(vocab_size, block_size, n_layer, d_model):
    d = d_model
    return vocab_size * d + block_size * d + n_layer * (12 * d * d + 13 * d)


def gp_float(vocab_size, block_size, n_layer, d_model):
    d = d_model
    return float(vocab_size * d + block_size * d + n_layer * (12 * d * d + 13 * d) + 2 * d)


def ll_mha(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    d = d_model
    return 2 * vocab_size * d + n_layer * (4 * d * d + 3 * d * ffn_hidden + 2 * d) + d


def ll_two_matrices(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    d, kv = d_model, n_kv_head * (d_model // n_head)
    return 2 * vocab_size * d + n_layer * (2 * d * d + 2 * d * kv + 2 * d * ffn_hidden + 2 * d) + d


def ll_tied(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    d, kv = d_model, n_kv_head * (d_model // n_head)
    return vocab_size * d + n_layer * (2 * d * d + 2 * d * kv + 3 * d * ffn_hidden + 2 * d) + d


def ll_layernorm(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    d, kv = d_model, n_kv_head * (d_model // n_head)
    return 2 * vocab_size * d + n_layer * (2 * d * d + 2 * d * kv + 3 * d * ffn_hidden + 4 * d) + 2 * d


def ll_kv_heads_times_d(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    d = d_model
    return 2 * vocab_size * d + n_layer * (2 * d * d + 2 * d * n_kv_head + 3 * d * ffn_hidden + 2 * d) + d


def ll_forgot_final_norm(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    d, kv = d_model, n_kv_head * (d_model // n_head)
    return 2 * vocab_size * d + n_layer * (2 * d * d + 2 * d * kv + 3 * d * ffn_hidden + 2 * d)


def lr_step_over_warmup(step, lr, warmup, total, min_ratio):
    if step < warmup:
        return lr * step / warmup
    return lr_at(step, lr, warmup, total, min_ratio)


def lr_nanogpt(step, lr, warmup, total, min_ratio):
    """nanoGPT's get_lr: (it + 1) / (warmup_iters + 1) in the warm-up."""
    min_lr = lr * min_ratio
    if step < warmup:
        return lr * (step + 1) / (warmup + 1)
    if step > total:
        return min_lr
    coeff = 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / (total - warmup)))
    return min_lr + coeff * (lr - min_lr)


def lr_to_zero(step, lr, warmup, total, min_ratio):
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))


def lr_over_total(step, lr, warmup, total, min_ratio):
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))))


def lr_no_clamp(step, lr, warmup, total, min_ratio):
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))))


def lr_cos_only(step, lr, warmup, total, min_ratio):
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (min_ratio + (1 - min_ratio) * math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))


def lr_linear_decay(step, lr, warmup, total, min_ratio):
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (min_ratio + (1 - min_ratio) * (1 - min(1.0, (step - warmup) / (total - warmup))))


def lr_plus_min(step, lr, warmup, total, min_ratio):
    if step < warmup:
        return lr * (step + 1) / warmup
    return min_ratio * lr + lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))


def dg_all(model):
    return [p for p in model.parameters() if p.requires_grad], []


def dg_bias_name(model):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith("bias") else decay).append(p)
    return decay, no_decay


def dg_swapped(model):
    ps = [p for p in model.parameters() if p.requires_grad]
    return [p for p in ps if p.ndim < 2], [p for p in ps if p.ndim >= 2]


def dg_linear_only(model):
    decay = [m.weight for m in model.modules() if isinstance(m, nn.Linear) and m.weight.requires_grad]
    ids = {id(p) for p in decay}
    return decay, [p for p in model.parameters() if p.requires_grad and id(p) not in ids]


def dg_per_module(model):
    decay, no_decay = [], []
    for m in model.modules():
        for p in m.parameters(recurse=False):  # a tied weight is met in both modules that hold it
            if p.requires_grad:
                (decay if p.dim() >= 2 else no_decay).append(p)
    return decay, no_decay


def dg_frozen_too(model):
    return [p for p in model.parameters() if p.dim() >= 2], [p for p in model.parameters() if p.dim() < 2]


def dg_names(model):
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [n for n, p in named if p.dim() >= 2], [n for n, p in named if p.dim() < 2]


def dg_copies(model):
    ps = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    return [p for p in ps if p.dim() >= 2], [p for p in ps if p.dim() < 2]


def dg_vectors_only(model):
    ps = [p for p in model.parameters() if p.requires_grad]
    return [p for p in ps if p.dim() >= 2], [p for p in ps if p.dim() == 1]  # the 0-D scalar is lost


def dg_one_list(model):
    return [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]


@pytest.mark.parametrize("ex_id,fn,hint", [
    ("06.1", nl_no_shift, "no shift"),
    ("06.1", nl_backwards, "shifted the wrong way"),
    ("06.1", nl_onehot_mean, "divides the loss by V"),
    ("06.1", nl_softmax_gather, "not -p(target)"),
    ("06.1", nl_raw_logits, "not a log-probability"),
    ("06.1", nl_sum, "not the sum"),
    ("06.1", nl_positive, "MINUS the mean"),
    ("06.1", nl_log_of_softmax, "log(softmax(x)) underflows"),
    ("06.1", nl_per_token, "return one number"),
    ("06.1", nl_3d_cross_entropy, "your function raised"),
    ("06.2", pm_ones, "fully bidirectional"),
    ("06.2", pm_tril, "plain causal mask"),
    ("06.2", pm_transposed, "transposed"),
    ("06.2", pm_prefix_rows, "not the queries i < prefix_len"),
    ("06.2", pm_le, "off by one"),
    ("06.2", pm_blocked, "polarity inverted"),
    ("06.2", pm_encoder_decoder, "see the prefix too"),
    ("06.2", pm_float, "dtype torch.bool"),
    ("06.3", gp_no_bias, "linear layers' biases are missing"),
    ("06.3", gp_kaplan, "counts only the matrices"),
    ("06.3", gp_untied, "the head is tied"),
    ("06.3", gp_no_positions, "positions are learned"),
    ("06.3", gp_no_final_ln, "final LayerNorm"),
    ("06.3", gp_float, "return an int"),
    ("06.4", ll_mha, "not n_head * head_dim"),
    ("06.4", ll_two_matrices, "THREE matrices"),
    ("06.4", ll_tied, "NOT tied"),
    ("06.4", ll_layernorm, "not 2d"),
    ("06.4", ll_kv_heads_times_d, "each key/value head has head_dim outputs"),
    ("06.4", ll_forgot_final_norm, "final RMSNorm"),
    ("06.5", lr_step_over_warmup, "not 0"),
    ("06.5", lr_nanogpt, "not warmup + 1"),
    ("06.5", lr_to_zero, "not 0: lr * (min_ratio"),
    ("06.5", lr_over_total, "steps AFTER the warm-up"),
    ("06.5", lr_no_clamp, "clamp progress"),
    ("06.5", lr_cos_only, "goes to -1"),
    ("06.5", lr_linear_decay, "linear decay"),
    ("06.5", lr_plus_min, "interpolate"),
    ("06.6", dg_all, "not everything is decayed"),
    ("06.6", dg_bias_name, "a name test for 'bias' misses them"),
    ("06.6", dg_swapped, "swapped"),
    ("06.6", dg_linear_only, "embeddings are matrices too"),
    ("06.6", dg_per_module, "appears twice"),
    ("06.6", dg_frozen_too, "is frozen"),
    ("06.6", dg_names, "not one of the model's parameters"),
    ("06.6", dg_copies, "not one of the model's parameters"),
    ("06.6", dg_vectors_only, "in neither group"),
    ("06.6", dg_one_list, "return a pair (decay, no_decay)"),
])
def test_wrong_solution_fails_with_its_hint(ex_id, fn, hint):
    res = check(ex_id, fn)
    assert res.status == "failed" and res.points == 0
    assert hint in res.hint, res.hint


def test_mha_llama_count_passes_the_mha_models_and_fails_on_gqa():
    """n_head for the key/value heads is right for Llama-2-7B (MHA): only a GQA case exposes it."""
    assert ll_mha(32000, 32, 4096, 32, 32, 11008) == 6_738_415_616
    assert "llama_param_count(32000, 80, 8192, 64, 8, 28672)" in check("06.4", ll_mha).hint


# ---------------------------------------------------------------------------------------------------
# acceptable variants


def ok_nl_cross_entropy(logits, idx):
    return _flat_ce(logits[:, :-1], idx[:, 1:])


def ok_nl_transposed_ce(logits, idx):
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), idx[:, 1:])


def ok_nl_logsumexp_float(logits, idx):
    x = logits[:, :-1]
    picked = x.gather(-1, idx[:, 1:, None]).squeeze(-1)
    return (torch.logsumexp(x, -1) - picked).mean().item()


def ok_nl_float32(logits, idx):
    return ok_nl_cross_entropy(logits.float(), idx)


def ok_pm_loops(T, prefix_len):
    m = torch.zeros(T, T, dtype=torch.bool)
    for i in range(T):
        for j in range(T):
            m[i, j] = j <= i or j < prefix_len
    return m


def ok_pm_tril_then_fill(T, prefix_len):
    m = torch.ones(T, T).tril().bool()
    m[:, :prefix_len] = True
    return m


def ok_gp_count_params(vocab_size, block_size, n_layer, d_model):
    return ch06._ref_gpt2(vocab_size, block_size, n_layer, d_model)


def ok_gp_numpy(vocab_size, block_size, n_layer, d_model):
    d = np.int64(d_model)
    return (vocab_size + block_size) * d + n_layer * (12 * d * d + 13 * d) + 2 * d


def ok_ll_tensor(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    return torch.tensor(ch06._ref_llama(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden))


def ok_ll_parts(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden):
    hd = d_model // n_head
    q = o = d_model * n_head * hd
    k = v = d_model * n_kv_head * hd
    mlp = 3 * d_model * ffn_hidden
    return vocab_size * d_model * 2 + n_layer * (q + k + v + o + mlp + 2 * d_model) + d_model


def ok_lr_reference(step, lr, warmup, total, min_ratio):
    return lr_at(step, lr, warmup, total, min_ratio)


def ok_lr_tensor(step, lr, warmup, total, min_ratio):
    return torch.tensor(lr_at(step, lr, warmup, total, min_ratio))


def ok_lr_min_lr_form(step, lr, warmup, total, min_ratio):
    min_lr = lr * min_ratio
    if step < warmup:
        return lr * (step + 1) / warmup
    if step >= total:
        return min_lr
    coeff = 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / (total - warmup)))
    return min_lr + coeff * (lr - min_lr)


def ok_dg_named(model):
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return decay, no_decay


def ok_dg_tuples_of_generators(model):
    return (p for p in model.parameters() if p.requires_grad and p.dim() >= 2), tuple(
        p for p in model.parameters() if p.requires_grad and p.dim() < 2)


def ok_dg_make_optimizer_groups(model):
    return tuple(g["params"] for g in make_optimizer(model, TrainConfig()).param_groups)


@pytest.mark.parametrize("ex_id,fn", [
    ("06.1", ok_nl_cross_entropy), ("06.1", ok_nl_transposed_ce), ("06.1", ok_nl_logsumexp_float),
    ("06.1", ok_nl_float32),
    ("06.2", ok_pm_loops), ("06.2", ok_pm_tril_then_fill), ("06.2", prefix_lm_mask),
    ("06.3", ok_gp_count_params), ("06.3", ok_gp_numpy),
    ("06.4", ok_ll_tensor), ("06.4", ok_ll_parts),
    ("06.5", ok_lr_reference), ("06.5", ok_lr_tensor), ("06.5", ok_lr_min_lr_form),
    ("06.6", ok_dg_named), ("06.6", ok_dg_tuples_of_generators), ("06.6", ok_dg_make_optimizer_groups),
])
def test_acceptable_variants_pass(ex_id, fn):
    res = check(ex_id, fn)
    assert res.passed, res.hint
