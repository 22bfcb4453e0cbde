"""ZeRO-Offload (minillm.distributed.offload) against mixed-precision AdamW with fp32 master weights
(minillm.amp.MixedPrecision, itself checked against torch), a one-weight hand-worked step, the bytes by placement
against the paper's split, gradient accumulation, fp16 loss scaling, and the delayed parameter update against a
hand-written one-step-stale loop. Everything runs on the CPU (host == device), so "equal" is bit for bit; the
data-parallel version (ShardedOffloadAdam, ZeRO-2 + offload) runs on 2 gloo processes against one process on the
whole batch (fp32, to summation order).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minillm.amp import DynamicLossScaler, MixedPrecision, copy_grads_to_master, copy_master_to_model, master_params
from minillm.distributed.ddp_workers import global_batches, tiny_gpt
from minillm.distributed.offload import OffloadAdam, offload_memory
from minillm.train import TrainConfig, param_groups

STEPS, BATCH, SEQ, LR, WD = 5, 4, 8, 1e-2, 0.1


def _loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    logits = model(tokens[:, :-1])[0]
    return F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())  # fp32 loss, as autocast


def _groups(model: nn.Module) -> list[dict]:
    return param_groups(model, TrainConfig(weight_decay=WD))


def _reference(dtype=torch.bfloat16, scaler=None) -> tuple[list[float], list[bool], nn.Module, list]:
    model = tiny_gpt(0, torch.float32)
    mp = MixedPrecision(model, dtype, lambda ps: torch.optim.AdamW(
        [{"params": [ps[i] for i, p in enumerate(model.parameters()) if p.dim() >= 2], "weight_decay": WD},
         {"params": [ps[i] for i, p in enumerate(model.parameters()) if p.dim() < 2], "weight_decay": 0.0}],
        lr=LR), scaler=scaler)
    losses, taken = [], []
    for tokens in global_batches(STEPS, BATCH, SEQ):
        loss, ok = mp.step(lambda m, t=tokens: _loss(m, t))
        losses.append(loss)
        taken.append(ok)
    return losses, taken, mp.model, mp.master


def _offload(dtype=torch.bfloat16, scaler=None, **kw) -> tuple[list[float], list[bool], nn.Module, OffloadAdam]:
    model = tiny_gpt(0, torch.float32)
    opt = OffloadAdam(model, lr=LR, dtype=dtype, groups=_groups(model), **kw)
    losses, taken = [], []
    for tokens in global_batches(STEPS, BATCH, SEQ):
        loss = _loss(model, tokens)
        (loss if scaler is None else scaler.scale(loss)).backward()
        taken.append(opt.step(scaler))
        losses.append(float(loss.detach()))
    return losses, taken, model, opt


def _same(a, b) -> None:
    for x, y in zip(list(a), list(b), strict=True):
        assert torch.equal(x.detach(), y.detach())


# -- the formula ------------------------------------------------------------------------------------------------
def test_offload_memory_by_hand():
    # 10B parameters: 2 + 2 bytes each on the GPU (40 GB), 12 + 4 on the CPU (160 GB), 4 over PCIe per step
    assert offload_memory(10e9) == {"device": 40e9, "host": 160e9, "link": 40e9}
    assert offload_memory(10e9, host_grad_bytes=2)["host"] == 140e9
    with pytest.raises(ValueError, match="psi"):
        offload_memory(-1)


# -- a hand-worked step ---------------------------------------------------------------------------------------------
def test_one_weight_by_hand():
    lin = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    opt = OffloadAdam(lin, lr=0.1, dtype=torch.bfloat16)
    assert lin.weight.dtype == torch.bfloat16
    (2.0 * lin.weight).sum().backward()  # g = 2
    assert lin.weight.grad is None and opt.host_grads[0].item() == 2.0  # moved out by the hook, in fp32
    opt.step()
    # Adam's first step moves by lr * g / (|g| + eps) = 0.1 (to fp32 rounding): master 0.9, device bf16(0.9)
    assert opt.master[0].item() == pytest.approx(0.9, abs=1e-7) and opt.master[0].dtype == torch.float32
    assert lin.weight.item() == 0.8984375  # 0.9 rounded to bf16's 8 significant bits: 1.1100110b x 2^-1


# -- the trajectory -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bucket", [None, 1000, float("inf")], ids=["per-param", "bucket1000", "one-bucket"])
def test_trajectory_equals_mixed_precision_adamw(bucket):
    ref_losses, _, ref_model, ref_master = _reference()
    losses, taken, model, opt = _offload(bucket_numel=bucket)
    assert losses == ref_losses and all(taken)
    _same(model.parameters(), ref_model.parameters())
    _same(opt.master, ref_master)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


def test_trajectory_equals_torch_adamw_on_fp32_copies():
    """An independent reference without minillm.amp: AdamW on fp32 copies, bf16 model, casts written out."""
    model = tiny_gpt(0, torch.float32)
    master = [nn.Parameter(p.detach().clone()) for p in model.parameters()]
    opt = torch.optim.AdamW(master, lr=LR, weight_decay=0.0)
    model.to(torch.bfloat16)
    for tokens in global_batches(STEPS, BATCH, SEQ):
        _loss(model, tokens).backward()
        for p, m in zip(model.parameters(), master, strict=True):
            m.grad = p.grad.float()
            p.grad = None
        opt.step()
        with torch.no_grad():
            for p, m in zip(model.parameters(), master, strict=True):
                p.copy_(m.to(torch.bfloat16))
    got, off = _plain_offload()
    _same(got.parameters(), model.parameters())
    _same(off.master, master)


def _plain_offload():
    model = tiny_gpt(0, torch.float32)
    opt = OffloadAdam(model, lr=LR, weight_decay=0.0)
    for tokens in global_batches(STEPS, BATCH, SEQ):
        _loss(model, tokens).backward()
        opt.step()
    return model, opt


def test_gradient_accumulation_sums_on_the_host():
    """Two half batches before one step: the host adds the two bf16 gradients in fp32."""
    ref = tiny_gpt(0, torch.float32)
    master = master_params(ref)
    ref_opt = torch.optim.AdamW(master, lr=LR, weight_decay=0.0)
    ref.to(torch.bfloat16)
    model = tiny_gpt(0, torch.float32)
    opt = OffloadAdam(model, lr=LR)
    for tokens in global_batches(3, BATCH, SEQ):
        total = [torch.zeros_like(m) for m in master]
        for half in tokens.chunk(2):
            (_loss(ref, half) / 2).backward()
            copy_grads_to_master(ref, master)
            for t, m in zip(total, master, strict=True):
                t += m.grad
            ref.zero_grad(set_to_none=True)
            (_loss(model, half) / 2).backward()
        for m, t in zip(master, total, strict=True):
            m.grad = t
        ref_opt.step()
        copy_master_to_model(master, ref)
        opt.step()
    _same(model.parameters(), ref.parameters())
    _same(opt.master, master)


def test_fp16_with_loss_scaling_skips_the_same_steps():
    # a scale of 2^30 overflows fp16 gradients (max 65504): skipped steps until the backoff brings it down
    def scaler():
        return DynamicLossScaler(init_scale=2.0**30, backoff_factor=2.0**-8, growth_interval=2)

    ref_losses, ref_taken, ref_model, _ = _reference(torch.float16, scaler())
    losses, taken, model, _ = _offload(torch.float16, scaler())
    assert taken == ref_taken and not all(taken) and any(taken)
    assert losses == ref_losses
    _same(model.parameters(), ref_model.parameters())


def test_delayed_update_is_one_step_stale():
    model = tiny_gpt(0, torch.float32)
    master = [nn.Parameter(p.detach().clone()) for p in model.parameters()]
    ref_opt = torch.optim.AdamW(master, lr=LR, weight_decay=0.0)
    model.to(torch.bfloat16)
    previous = None  # the weights the device gets after this step: the master before it
    for tokens in global_batches(STEPS, BATCH, SEQ):
        _loss(model, tokens).backward()  # g_t at the weights the device has: p_{t-2} after the first step
        before = [m.detach().to(torch.bfloat16) for m in master]
        for p, m in zip(model.parameters(), master, strict=True):
            m.grad = p.grad.float()
            p.grad = None
        ref_opt.step()  # p_t = AdamW(p_{t-1}, g_t)
        with torch.no_grad():
            if previous is not None:
                for p, w in zip(model.parameters(), before, strict=True):
                    p.copy_(w)
        previous = before
    dpu = tiny_gpt(0, torch.float32)
    opt = OffloadAdam(dpu, lr=LR, delayed_update=True)
    for tokens in global_batches(STEPS, BATCH, SEQ):
        _loss(dpu, tokens).backward()
        opt.step()
    _same(dpu.parameters(), model.parameters())
    _same(opt.master, master)
    opt.finish()  # now the device has the newest weights
    _same(dpu.parameters(), [m.to(torch.bfloat16) for m in master])
    plain, _ = _plain_offload()
    assert not all(torch.equal(a, b) for a, b in zip(plain.parameters(), dpu.parameters(), strict=True))


# -- bytes by placement ---------------------------------------------------------------------------------------------
def test_placement_bytes_equal_the_paper_split():
    model = tiny_gpt(0, torch.float32)
    psi = sum(p.numel() for p in model.parameters())
    opt = OffloadAdam(model, lr=LR, bucket_numel=float("inf"))  # the paper's full device gradient buffer
    _loss(model, global_batches(1, BATCH, SEQ)[0]).backward()
    during = opt.placement_bytes()
    assert during["device"] == {"weights": 2 * psi, "grads": 2 * psi}  # 2 Psi + 2 Psi before the copy
    assert opt.peak_device_grad_bytes == 2 * psi
    opt.step()
    after = opt.placement_bytes()
    assert after["device"] == {"weights": 2 * psi, "grads": 0}
    assert after["host"] == {"master": 4 * psi, "exp_avg": 4 * psi, "exp_avg_sq": 4 * psi, "grads": 4 * psi}
    formula = offload_memory(psi)
    assert sum(during["device"].values()) == formula["device"] and sum(after["host"].values()) == formula["host"]


def test_per_parameter_hooks_keep_one_gradient_on_the_device():
    model = tiny_gpt(0, torch.float32)
    opt = OffloadAdam(model, lr=LR, host_grad_dtype=torch.bfloat16)
    _loss(model, global_batches(1, BATCH, SEQ)[0]).backward()
    assert opt.placement_bytes()["device"]["grads"] == 0  # every gradient already moved
    assert opt.peak_device_grad_bytes == 2 * max(p.numel() for p in model.parameters())
    psi = sum(p.numel() for p in model.parameters())
    assert opt.placement_bytes()["host"]["grads"] == 2 * psi  # kept 16-bit on the host: 12 Psi + 2 Psi
    assert opt.devices() == {"device": {"cpu"}, "host": {"cpu"}}
    assert set(opt.seconds) == {"grad_to_host", "host_step", "param_to_device"}


def test_errors_say_what_to_change():
    with pytest.raises(ValueError, match="dtype"):
        OffloadAdam(tiny_gpt(0, torch.float32), dtype=torch.int8)
    frozen = tiny_gpt(0, torch.float32).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        OffloadAdam(frozen)
    model = tiny_gpt(0, torch.float32)
    with pytest.raises(ValueError, match="exactly once"):
        OffloadAdam(model, groups=[{"params": list(model.parameters())[:2]}])
    with pytest.raises(ValueError, match="bucket_numel"):
        OffloadAdam(tiny_gpt(0, torch.float32), bucket_numel=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_a_gpu_the_states_live_on_the_host():
    model = tiny_gpt(0, torch.float32).cuda()
    ref = copy.deepcopy(model).cpu()
    opt = OffloadAdam(model, lr=LR)
    assert opt.devices() == {"device": {"cuda"}, "host": {"cpu"}}
    losses = []
    for tokens in global_batches(3, BATCH, SEQ):
        loss = _loss(model, tokens.cuda())
        loss.backward()
        assert all(p.grad is None for p in model.parameters())  # every gradient already on the host
        opt.step()
        losses.append(float(loss.detach()))
    mp = MixedPrecision(ref, torch.bfloat16, lambda ps: torch.optim.AdamW(ps, lr=LR, weight_decay=0.0))
    ref_losses = [mp.step(lambda m, t=tokens: _loss(m, t))[0] for tokens in global_batches(3, BATCH, SEQ)]
    # GPU vs CPU bf16 kernels round differently: the same training to bf16 accuracy, not bit for bit
    assert losses == pytest.approx(ref_losses, abs=0.05)
    psi = sum(p.numel() for p in model.parameters())
    assert opt.placement_bytes()["host"]["exp_avg"] == 4 * psi
    assert all(t.is_pinned() for t in opt.host_grads)


# -- data parallel: ZeRO-2 + offload on 2 gloo processes ---------------------------------------------------------
def test_sharded_offload_equals_one_process_on_the_whole_batch():
    from minillm.distributed import launch
    from minillm.distributed.offload_workers import sharded_offload_worker, single_offload_run

    steps, batch, seq, world = 4, 8, 8, 2
    res = launch(sharded_offload_worker, nprocs=world, args=(steps, batch, seq, LR), timeout=180)
    ref = single_offload_run(steps, batch, seq, LR)
    full = torch.cat([ref["last_grad"], ref["last_grad"].new_zeros(res[0]["padded"] - res[0]["psi"])])
    for rank, r in enumerate(res):
        # the host holds the MEAN gradient of the whole batch, this rank's slice only (fp32: to summation order)
        s = r["shard"]
        torch.testing.assert_close(r["last_grad"], full[rank * s:(rank + 1) * s], atol=1e-6, rtol=0)
        # every rank ends with the full weights (Adam divides by sqrt(v): fp32 rounding grows to ~1e-5)
        for a, b in zip(r["params"], ref["params"], strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    mean_loss = [sum(r["losses"][i] for r in res) / world for i in range(steps)]
    assert mean_loss == pytest.approx(ref["losses"], abs=1e-5)
    r0 = res[0]
    s = r0["shard"]
    assert r0["padded"] == world * s and r0["padded"] - r0["psi"] < world
    # host: a 1/N shard of master, m, v and gradient (fp32), 16 bytes x S; device: the full fp32 weights here
    assert r0["placement"]["host"] == {"master": 4 * s, "exp_avg": 4 * s, "exp_avg_sq": 4 * s, "grads": 4 * s}
    assert r0["placement"]["device"]["weights"] == 4 * r0["psi"]
    assert [r["losses"] for r in res][0] != [r["losses"] for r in res][1]  # each rank saw its own rows


def _gaps(res: list[dict], ref: dict) -> tuple[float, float]:
    full = torch.cat([ref["last_grad"], ref["last_grad"].new_zeros(res[0]["padded"] - res[0]["psi"])])
    s = res[0]["shard"]
    grad = max((r["last_grad"] - full[k * s:(k + 1) * s]).abs().max().item() for k, r in enumerate(res))
    weight = max((a - b).abs().max().item() for r in res for a, b in zip(r["params"], ref["params"], strict=True))
    return grad, weight


def test_sharded_offload_in_float64_is_exact_to_rounding():
    """The fp32 gaps (~1e-8 gradient, ~1e-5 weights) are summation order, not a bug: in float64 the same runs agree
    to ~1e-16 and ~1e-13 (a bug, e.g. a missing division by N or a shifted shard, would stay large)."""
    from minillm.distributed import launch
    from minillm.distributed.offload_workers import sharded_offload_worker_dtypes, single_offload_run

    steps, batch, seq = 4, 8, 8
    res = launch(sharded_offload_worker_dtypes, nprocs=2, args=(steps, batch, seq, LR), timeout=180)
    g32, w32 = _gaps([r["float32"] for r in res], single_offload_run(steps, batch, seq, LR, torch.float32))
    g64, w64 = _gaps([r["float64"] for r in res], single_offload_run(steps, batch, seq, LR, torch.float64))
    assert res[0]["float64"]["last_grad"].dtype == torch.float64
    assert g64 < 1e-14 and w64 < 1e-10
    assert g32 < 1e-6 and w32 < 1e-4 and w64 < w32 * 1e-4  # fp32's gap shrinks by far more than 10^4 in fp64
    r64 = res[0]["float64"]
    assert r64["placement"]["host"]["master"] == 8 * r64["shard"]  # the master shard is float64 too


def test_sharded_offload_needs_a_process_group():
    from minillm.distributed.offload import ShardedOffloadAdam

    with pytest.raises(RuntimeError, match="torch.distributed initialised"):
        ShardedOffloadAdam(tiny_gpt(0, torch.float32))
