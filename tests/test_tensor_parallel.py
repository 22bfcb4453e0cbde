"""Megatron tensor parallelism (minillm.distributed.tensor) against one process, F.cross_entropy and DTensor.

One launch per process count (2, and 4 with heads that split four ways) feeds every multi-process test; the
single-process references run here. float64 throughout, so "equal" means 1e-10.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minillm.distributed import launch
from minillm.distributed.ddp_workers import tiny_gpt
from minillm.distributed.tensor_workers import BATCH, GPT2, LLAMA, SEQ, tokens, tp_worker

TOL = {"atol": 1e-10, "rtol": 0}
CONFIGS = {2: {"llama": LLAMA, "gpt2": GPT2}, 4: {"llama": {**LLAMA, "n_kv_head": 4}}}


@pytest.fixture(scope="module", params=[2, 4], ids=["2proc", "4proc"])
def run(request):
    world = request.param
    return world, launch(tp_worker, nprocs=world, args=(CONFIGS[world], world == 2), timeout=180)


def reference(overrides: dict) -> dict:
    """The unsharded model: logits, loss, parameters and gradients by name (tied weights listed once)."""
    model = tiny_gpt(0, **overrides)
    x = tokens()
    logits, loss = model(x[:, :-1], x[:, 1:])
    loss.backward()
    return {"logits": logits.detach(), "loss": loss.item(),
            "params": {n: p.detach() for n, p in model.named_parameters()},
            "grads": {n: p.grad for n, p in model.named_parameters()}}


def test_forward_and_gradients_equal_one_process(run):
    world, results = run
    for name, overrides in CONFIGS[world].items():
        ref = reference(overrides)
        for rank, out in enumerate(results):
            got = out[name]
            torch.testing.assert_close(got["logits"], ref["logits"], **TOL)
            assert abs(got["loss"] - ref["loss"]) < 1e-10
            assert got["params"].keys() == ref["params"].keys()  # every parameter, by its unsharded name
            for n in ref["params"]:
                torch.testing.assert_close(got["params"][n], ref["params"][n], atol=0, rtol=0)
                torch.testing.assert_close(got["grads"][n], ref["grads"][n], **TOL, msg=f"{name} {n} rank {rank}")


def test_local_heads_and_replicated_vocab(run):
    world, results = run
    n_kv = CONFIGS[world]["llama"]["n_kv_head"]
    ref = reference(LLAMA if world == 2 else CONFIGS[world]["llama"])
    for out in results:
        assert out["llama"]["local_heads"] == (4 // world, n_kv // world)
        rep = out["replicated_vocab"]  # embedding and lm_head left whole: the model's own loss
        torch.testing.assert_close(rep["logits"], ref["logits"], **TOL)
        for n in ref["grads"]:
            torch.testing.assert_close(rep["grads"][n], ref["grads"][n], **TOL)


def test_collectives_two_forward_two_backward_per_block(run):
    world, results = run
    n_layer = 2
    for out in results:
        for name in CONFIGS[world]:
            fwd, bwd = out[name]["forward"], out[name]["backward"]
            assert fwd[("g", "forward")] == 2 * n_layer  # o_proj and down: g each
            assert bwd == {("f", "backward"): 2 * n_layer + 1}  # attention and MLP input, + the lm_head's input
            assert fwd[("embedding", "forward")] == 1
            assert sum(v for k, v in fwd.items() if k[0].startswith("ce_")) == 3  # max, sum-exp, target logit
            # every g and f moves one (B, T, d_model) activation: b*s*h elements; the embedding's g too
            d = tiny_gpt(0, **CONFIGS[world][name]).cfg.d_model
            bsh = BATCH * SEQ * d
            assert out[name]["forward_elements"][("g", "forward")] == 2 * n_layer * bsh
            assert out[name]["backward_elements"] == {("f", "backward"): (2 * n_layer + 1) * bsh}
            assert out[name]["forward_elements"][("embedding", "forward")] == bsh
            assert out[name]["forward_elements"][("ce_max", "forward")] == BATCH * SEQ  # (B, T) numbers only
        rep = out["replicated_vocab"]
        assert rep["forward"] == {("g", "forward"): 2 * n_layer} and rep["backward"] == {("f", "backward"): 2 * n_layer}


def test_column_and_row_layers_alone(run):
    world, results = run
    for out in results:
        lay = out["layers"]
        first, second = torch.nn.Linear(6, 4 * world).double(), torch.nn.Linear(4 * world, 5).double()
        first.load_state_dict(lay["first"])
        second.load_state_dict(lay["second"])
        x = lay["x"].clone().requires_grad_()
        y = second(torch.tanh(first(x)))
        y.pow(2).sum().backward()
        torch.testing.assert_close(lay["gather"], first(lay["x"]).detach(), **TOL)
        torch.testing.assert_close(lay["y"], y.detach(), **TOL)
        torch.testing.assert_close(lay["x_grad"], x.grad, **TOL)  # needs f's all-reduce in backward


def test_vocab_parallel_cross_entropy(run):
    world, results = run
    ce = results[0]["ce"]
    full = ce["full"].clone().requires_grad_()
    loss = F.cross_entropy(full, ce["target"], ignore_index=-100)
    loss.backward()
    for out in results:
        assert abs(out["ce"]["loss"] - loss.item()) < 1e-10
        torch.testing.assert_close(out["ce"]["grad"], full.grad, **TOL)
        assert (out["ce"]["forward"], out["ce"]["backward"]) == (3, 0)  # no all-reduce in backward
    if world == 2:  # hand case: logits [0, ln 3 | 0, 0], target 1 -> ln(6) - ln(3) = ln 2
        assert all(abs(out["hand_ce"] - math.log(2)) < 1e-12 for out in results)


def test_clear_error_when_heads_do_not_split(run):
    world, results = run
    assert f"divisible by the {world} tensor-parallel ranks" in results[0]["head_error"]
    assert "without targets" in results[0]["llama"]["refused"]  # a vocab-parallel model refuses targets
    assert f"ffn_hidden={4 * world + 1} must be divisible" in results[0]["ffn_error"]
    assert results[0]["ffn_error_left_whole"]  # refused before any layer was sharded


def test_equal_to_dtensor_parallelize_module(run):
    world, results = run
    if world != 2:
        pytest.skip("DTensor comparison run with 2 processes only (CI time)")
    if "dtensor_skip" in results[0]:
        pytest.skip(f"DTensor parallelize_module did not run on CPU/gloo: {results[0]['dtensor_skip']}")
    for name in CONFIGS[world]:
        ref = reference(CONFIGS[world][name])
        for out in results:
            dt, ours = out["dtensor"][name], out[name]
            torch.testing.assert_close(dt["logits"], ours["logits"], **TOL)
            assert abs(dt["loss"] - ours["loss"]) < 1e-10
            assert dt["grads"].keys() == ref["grads"].keys()
            for n in ref["grads"]:
                torch.testing.assert_close(dt["grads"][n], ours["grads"][n], **TOL)


def test_errors_without_a_process_group():
    from minillm.distributed.tensor import _split

    with pytest.raises(ValueError, match="use a multiple of 3"):
        _split(10, 3, "vocab_size")
