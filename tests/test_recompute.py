"""Chapter 10: activation checkpointing (`minillm.recompute`).

Gradients equal those of the plain model and of `torch.utils.checkpoint` (float64, 1e-12), with backward() and
with autograd.grad; dropout masks agree because the RNG state is restored (and disagree when it is not: the test
can fail); the bytes autograd saves, measured by `minillm.memory.saved_activation_bytes`, equal the formula of
`checkpointed_activation_bytes` exactly (inputs only for full checkpointing)."""

from __future__ import annotations

import copy

import pytest
import torch

from minillm.memory import saved_activation_bytes
from minillm.model import GPT, Block, GPTConfig
from minillm.recompute import (
    CheckpointedBlock,
    apply_activation_checkpointing,
    checkpoint,
    checkpointed_activation_bytes,
    remove_activation_checkpointing,
)
from minillm.train_memory import model_activation_bytes

CFGS = {
    "llama-mha": GPTConfig(vocab_size=37, n_layer=4, n_head=4, d_model=32, pos="rope", norm="rmsnorm",
                           ffn="swiglu", bias=False),
    "llama-gqa": GPTConfig(vocab_size=37, n_layer=3, n_head=4, n_kv_head=2, d_model=32, pos="rope",
                           norm="rmsnorm", ffn="swiglu", bias=False),
    "gpt2": GPTConfig(vocab_size=37, n_layer=3, n_head=2, d_model=16),  # learned positions, LayerNorm, GeLU
}
SETTINGS = [("full", 1), ("full", 2), ("full", 4), ("selective", 1)]


def _model(cfg: GPTConfig, dtype=torch.float64) -> GPT:
    torch.manual_seed(0)
    return GPT(cfg).to(dtype).train()


def _batch(cfg: GPTConfig, B: int = 2, T: int = 11) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, cfg.vocab_size, (2, B, T), generator=g).unbind(0)


def _grads(model: GPT, idx, targets, seed: int = 3, use_grad: bool = False) -> list[torch.Tensor]:
    torch.manual_seed(seed)  # dropout, if any, draws from here
    model.zero_grad(set_to_none=True)
    loss = model(idx, targets)[1]
    params = list(model.parameters())
    if use_grad:
        return [loss.detach(), *torch.autograd.grad(loss, params)]
    loss.backward()
    return [loss.detach(), *(p.grad.clone() for p in params)]


def _assert_all_close(a, b, tol=1e-12):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------------------- the function


def test_checkpoint_hand_worked():
    # f(x) = exp(x) * w: plain autograd saves exp(x) (for w's gradient and x's) and w; the checkpoint saves x only
    x = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([3.0, 4.0, 5.0], dtype=torch.float64, requires_grad=True)

    def f(t):
        return t.exp() * w

    plain, _ = saved_activation_bytes(lambda: f(x), [w])
    ckpt, y = saved_activation_bytes(lambda: checkpoint(f, x, params=[w]), [w])
    assert plain == 3 * 8 and ckpt == 3 * 8  # exp(x) vs x: one tensor of 3 doubles either way ...
    y2 = torch.autograd.grad(y.sum(), [x, w])
    e = torch.exp(torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    # ... and the gradients by hand: d/dx = exp(x) w, d/dw = exp(x)
    _assert_all_close(y2, [e * w.detach(), e])
    # two ops in: plain saves exp(x) and exp(x)^2; the checkpoint still only x
    assert saved_activation_bytes(lambda: (x.exp() ** 2).exp())[0] == 2 * 3 * 8
    assert saved_activation_bytes(lambda: checkpoint(lambda t: (t.exp() ** 2).exp(), x))[0] == 3 * 8


def test_checkpoint_outside_grad_and_bad_inputs():
    x = torch.randn(4, requires_grad=True)
    with torch.no_grad():
        assert checkpoint(torch.exp, x).grad_fn is None
    with pytest.raises(TypeError, match="must be tensors"):
        checkpoint(lambda t, n: t * n, x, 3)


def test_rng_restored_for_dropout_and_not_without():
    torch.manual_seed(0)
    x = torch.randn(64, 32, dtype=torch.float64, requires_grad=True)

    def f(t):
        return torch.nn.functional.dropout(t.sin(), p=0.5, training=True)

    def grad_of(run):
        torch.manual_seed(7)
        return torch.autograd.grad(run().pow(2).sum(), x)[0]

    ref = grad_of(lambda: f(x))
    torch.testing.assert_close(grad_of(lambda: checkpoint(f, x)), ref, rtol=1e-12, atol=1e-12)
    # the caller's RNG stream is not moved by the recomputation: same next draw as without checkpointing
    torch.manual_seed(7)
    checkpoint(f, x).sum().backward()
    after_ckpt = torch.rand(3)
    torch.manual_seed(7)
    f(x).sum().backward()
    torch.testing.assert_close(torch.rand(3), after_ckpt)
    # without restoring the state the recomputed mask differs: the gradient is wrong (the check can fail)
    bad = grad_of(lambda: checkpoint(f, x, preserve_rng_state=False))
    assert not torch.allclose(bad, ref)


# ---------------------------------------------------------------------------------------------- the transform


@pytest.mark.parametrize("name", list(CFGS))
@pytest.mark.parametrize("mode,every", SETTINGS)
@pytest.mark.parametrize("use_grad", [False, True])
def test_gradients_equal_plain_and_torch_checkpoint(name, mode, every, use_grad):
    cfg = CFGS[name]
    idx, targets = _batch(cfg)
    ref = _grads(_model(cfg), idx, targets, use_grad=use_grad)
    ours = apply_activation_checkpointing(_model(cfg), mode, every)
    theirs = apply_activation_checkpointing(_model(cfg), mode, every, impl="torch")
    _assert_all_close(_grads(ours, idx, targets, use_grad=use_grad), ref)
    _assert_all_close(_grads(theirs, idx, targets, use_grad=use_grad), ref)


@pytest.mark.parametrize("mode,every", SETTINGS)
def test_dropout_masks_equal_plain(mode, every):
    cfg = GPTConfig(vocab_size=37, n_layer=4, n_head=4, d_model=32, pos="rope", norm="rmsnorm", ffn="swiglu",
                    dropout=0.3)  # residual-branch and attention-weight dropout
    idx, targets = _batch(cfg)
    ref = _grads(_model(cfg), idx, targets)
    ours = _grads(apply_activation_checkpointing(_model(cfg), mode, every), idx, targets)
    _assert_all_close(ours, ref)
    torch_ckpt = _grads(apply_activation_checkpointing(_model(cfg), mode, every, impl="torch"), idx, targets)
    _assert_all_close(torch_ckpt, ref)
    # a different dropout draw changes the gradients: equality above is not vacuous
    assert not torch.allclose(_grads(_model(cfg), idx, targets, seed=4)[1], ref[1])


@pytest.mark.parametrize("name", list(CFGS))
@pytest.mark.parametrize("mode,every", [(None, 1), *SETTINGS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("impl", ["minillm", "torch"])
def test_saved_bytes_equal_formula(name, mode, every, dtype, impl):
    cfg, B, T = CFGS[name], 3, 13
    model = _model(cfg, dtype)
    if mode is not None:
        apply_activation_checkpointing(model, mode, every, impl)
    idx, targets = _batch(cfg, B, T)
    measured, _ = saved_activation_bytes(lambda: model(idx, targets), model)
    p = dtype.itemsize
    parts = model_activation_bytes(cfg, B, T, p)
    blocks = checkpointed_activation_bytes(cfg, B, T, p, mode, every)
    assert measured == parts["embedding"] + parts["head"] + blocks
    if mode == "full":  # by hand: the inputs of the groups only, ceil(L / every) x B T d elements
        assert blocks == -(-cfg.n_layer // every) * B * T * cfg.d_model * p
    if mode is not None:
        assert blocks < checkpointed_activation_bytes(cfg, B, T, p, None)


def test_selective_hand_worked():
    # llama-mha, B=1, T=8, float32, per layer: the attention core saved scores, exp, weights 3 a s^2 b p = 3072,
    # the causal mask s^2 = 64 and the row max / sum + two bool conditions a s b (2p + 2) = 320 bytes
    cfg = CFGS["llama-mha"]
    drop = 3 * 4 * 64 * 4 + 64 + 4 * 8 * (2 * 4 + 2)
    assert drop == 3456
    assert checkpointed_activation_bytes(cfg, 1, 8, 4, None) - checkpointed_activation_bytes(
        cfg, 1, 8, 4, "selective") == 4 * drop
    # GQA (2 of 4 kv heads): k and v are kept before repeat_kv, another 2 s b (h - 2 x 8) p = 1024 per layer less
    g = CFGS["llama-gqa"]
    assert checkpointed_activation_bytes(g, 1, 8, 4, None) - checkpointed_activation_bytes(
        g, 1, 8, 4, "selective") == 3 * (drop + 2 * 8 * 16 * 4)


def test_transform_keeps_model_and_undoes():
    cfg = CFGS["llama-mha"]
    model = _model(cfg)
    plain_state = copy.deepcopy(model.state_dict())
    idx, _ = _batch(cfg)
    with torch.no_grad():
        ref = model(idx)[0]
    apply_activation_checkpointing(model, "full", 2)
    assert isinstance(model, GPT) and all(isinstance(b, CheckpointedBlock) for b in model.layers)
    assert model.state_dict().keys() == plain_state.keys()
    with torch.no_grad():  # inference runs the blocks as usual, KV caches too
        torch.testing.assert_close(model(idx)[0], ref)
        caches = model.make_kv_caches()
        model(idx[:, :5], kv_caches=caches)
        torch.testing.assert_close(model(idx[:, 5:], kv_caches=caches)[0], ref[:, 5:])
    apply_activation_checkpointing(model, "selective")  # replaces the full mode
    assert not any(isinstance(b, CheckpointedBlock) for b in model.layers)
    assert all("kernel" in b.self_attn.__dict__ for b in model.layers)
    remove_activation_checkpointing(model)
    assert all(type(b) is Block and "kernel" not in b.self_attn.__dict__ for b in model.layers)
    torch.testing.assert_close(model(idx)[0], ref)


def test_bad_arguments():
    model = _model(CFGS["gpt2"])
    with pytest.raises(ValueError, match="mode must be"):
        apply_activation_checkpointing(model, "half")
    with pytest.raises(ValueError, match="every"):
        apply_activation_checkpointing(model, "selective", every=2)
    with pytest.raises(ValueError, match="no minillm.model.Block"):
        apply_activation_checkpointing(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("mode", ["full", "selective"])
def test_recomputed_flops_counted(mode):
    # FlopCounterMode (which hooks module inputs) works through our backward, and counts the recomputation:
    # full adds one forward of the blocks, 2 N_blocks + 4 L T d per token; selective only q k^T and weights @ v, 4 L T d
    from torch.utils.flop_counter import FlopCounterMode

    from minillm.flops import flops_per_token

    cfg, T = CFGS["llama-mha"], 16
    model = apply_activation_checkpointing(_model(cfg, torch.float32), mode)
    idx = torch.randint(0, cfg.vocab_size, (2, T))
    with FlopCounterMode(display=False) as counter:
        model(idx, idx)[1].backward()
    d, L, f = cfg.d_model, cfg.n_layer, cfg.ffn_hidden
    n_blocks = L * (4 * d * d + 3 * d * f)
    extra = 2 * n_blocks + 4 * L * T * d if mode == "full" else 4 * L * T * d
    assert counter.get_total_flops() == 2 * T * (flops_per_token(cfg, T) + extra)


@pytest.mark.parametrize("impl", ["minillm", "torch"])
def test_autocast_state_is_reentered_for_the_recomputation(impl):
    # under CPU bf16 autocast the recomputed forward must run in bf16 too, else the saved-for-backward tensors
    # (recomputed in float32) would give different gradients from the plain bf16 run
    cfg = CFGS["llama-mha"]
    idx, targets = _batch(cfg)

    def grads(model):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(idx, targets)[1]
        return [loss.detach(), *torch.autograd.grad(loss, list(model.parameters()))]

    ref = grads(_model(cfg, torch.float32))
    ours = grads(apply_activation_checkpointing(_model(cfg, torch.float32), "full", impl=impl))
    _assert_all_close(ours, ref, tol=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("mode", ["full", "selective"])
def test_cuda_dropout_rng_restored(mode):
    cfg = GPTConfig(vocab_size=37, n_layer=3, n_head=4, d_model=32, pos="rope", norm="rmsnorm", ffn="swiglu",
                    dropout=0.3)
    idx, targets = (t.cuda() for t in _batch(cfg))
    ref = _grads(_model(cfg).cuda(), idx, targets)
    ours = _grads(apply_activation_checkpointing(_model(cfg).cuda(), mode), idx, targets)
    _assert_all_close(ours, ref)
