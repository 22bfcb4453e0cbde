"""DeepSpeed's config read into minillm's pieces (minillm.distributed.ds_config): the batch identity by hand, the
mapping of a ZeRO-2 + offload + fp16 config, refusals with one-line errors, and DeepSpeed's loss-scale rule by hand
and against minillm.amp.DynamicLossScaler (= torch GradScaler), where they agree and where they do not.
"""

from __future__ import annotations

import random

import pytest
import torch

from minillm.amp import DynamicLossScaler
from minillm.distributed.ds_config import DeepSpeedLossScale, read_ds_config, resolve_batch
from minillm.train import TrainConfig

ZERO2_OFFLOAD = {
    "train_batch_size": 64, "gradient_accumulation_steps": 4, "gradient_clipping": 1.0,
    "fp16": {"enabled": True, "loss_scale": 0, "initial_scale_power": 12, "loss_scale_window": 500,
             "hysteresis": 2, "min_loss_scale": 1},
    "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu", "pin_memory": True},
                          "overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": 5e8,
                          "allgather_bucket_size": 5e8},
    "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1}},
}


@pytest.mark.parametrize(("given", "want"), [
    ((32, 4, None, 4), (32, 4, 2)),  # accumulation inferred: 32 / (4 x 4)
    ((None, 4, 2, 4), (32, 4, 2)),  # global batch inferred
    ((32, None, 2, 4), (32, 4, 2)),  # micro batch inferred
    ((32, 4, 2, 4), (32, 4, 2)),  # all three, consistent
    ((8, None, None, 2), (8, 4, 1)),  # only the global batch: accumulation 1
    ((None, 3, None, 1), (3, 3, 1)),
])
def test_batch_identity_by_hand(given, want):
    assert resolve_batch(*given) == want
    train, micro, accum = want
    assert train == micro * accum * given[3]


@pytest.mark.parametrize(("given", "match"), [
    ((32, 4, 3, 4), r"32 != micro batch 4 x accumulation 3 x world size 4 = 48: change one"),
    ((30, 4, None, 4), "not divisible by micro batch 4 x world size 4: make it a multiple of 16"),
    ((30, None, 4, 2), "make it a multiple of 8"),
    ((None, None, 2, 4), "give train_batch_size or train_micro_batch_size_per_gpu"),
    ((0, 4, None, 1), "positive int"),
    ((32.0, 4, None, 1), "positive int"),
])
def test_batch_identity_refusals(given, match):
    with pytest.raises(ValueError, match=match):
        resolve_batch(*given)


def test_zero2_offload_fp16_config_maps_onto_minillm():
    ds = read_ds_config(ZERO2_OFFLOAD, world_size=8)
    assert (ds.train_batch_size, ds.micro_batch, ds.grad_accum) == (64, 2, 4)
    assert ds.zero_stage == 2 and ds.offload_optimizer == "cpu" and ds.offload_param is None
    assert ds.precision == "fp16" and ds.grad_clip == 1.0
    assert ds.comm["overlap_comm"] is True and ds.comm["reduce_bucket_size"] == 5e8
    kw = ds.train_config_kwargs()
    assert kw == {"batch_size": 8, "grad_accum": 4, "grad_clip": 1.0, "precision": "fp16", "lr": 3e-4,
                  "betas": (0.9, 0.95), "weight_decay": 0.1}
    TrainConfig(**kw)  # a valid minillm config
    scaler = DynamicLossScaler(**ds.scaler_kwargs())
    assert scaler.get_scale() == 2.0 ** 12 == 4096 and scaler.growth_interval == 500
    assert ds.loss_scale["hysteresis"] == 2 and ds.loss_scale["min_loss_scale"] == 1


def test_defaults_and_bf16():
    ds = read_ds_config({"train_micro_batch_size_per_gpu": 4, "bf16": {"enabled": True}}, world_size=2)
    assert (ds.train_batch_size, ds.grad_accum, ds.precision, ds.zero_stage) == (8, 1, "bf16", 0)
    assert ds.scaler_kwargs() is None and ds.optimizer == {}
    fp16 = read_ds_config({"train_batch_size": 4, "fp16": {"enabled": True}})
    assert fp16.scaler_kwargs()["init_scale"] == 65536.0 and fp16.loss_scale["hysteresis"] == 2  # DeepSpeed's defaults
    static = read_ds_config({"train_batch_size": 4, "fp16": {"enabled": True, "loss_scale": 128}})
    assert static.scaler_kwargs() is None and static.loss_scale["loss_scale"] == 128


@pytest.mark.parametrize(("cfg", "match"), [
    ({"train_batch_size": 4, "scheduler": {}}, "unknown key 'scheduler' in the top level"),
    ({"train_batch_size": 4, "zero_optimization": {"stage": 3, "stage3_prefetch_bucket_size": 1}},
     "unknown key 'stage3_prefetch_bucket_size' in zero_optimization"),
    ({"train_batch_size": 4, "fp16": {"enabled": True, "auto_cast": True}}, "unknown key 'auto_cast' in fp16"),
    ({"train_batch_size": "auto"}, "'auto'"),
    ({"train_batch_size": 4, "fp16": {"enabled": True}, "bf16": {"enabled": True}}, "both enabled"),
    ({"train_batch_size": 4, "zero_optimization": {"stage": 4}}, "stage must be 0, 1, 2 or 3"),
    ({"train_batch_size": 4, "zero_optimization": {"offload_optimizer": {"device": "cpu"}}}, "set a stage"),
    ({"train_batch_size": 4, "zero_optimization": {"stage": 2, "offload_param": {"device": "cpu"}}}, "stage 3"),
    ({"train_batch_size": 4, "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "gpu"}}}, "'cpu'"),
    ({"train_batch_size": 4, "optimizer": {"type": "Lamb"}}, "use Adam or AdamW"),
    ({"train_batch_size": 4, "optimizer": {"type": "AdamW", "params": {"momentum": 0.9}}}, "optimizer.params"),
])
def test_refusals_are_one_line(cfg, match):
    with pytest.raises(ValueError, match=match) as e:
        read_ds_config(cfg)
    assert "\n" not in str(e.value)


def test_deepspeed_loss_scale_by_hand():
    # window 2, hysteresis 2, start 2^4 = 16; overflow pattern T T F F F F T
    s = DeepSpeedLossScale(initial_scale_power=4, loss_scale_window=2, hysteresis=2, min_loss_scale=1)
    scales = []
    for overflow in (True, True, False, False, False, False, True):
        s.update(overflow)
        scales.append(s.scale)
    # 1st overflow absorbed by the hysteresis, 2nd halves; growth after 2 clean steps (refills the hysteresis),
    # again after 2 more; the last overflow is absorbed again
    assert scales == [16, 8, 8, 16, 16, 32, 32]
    floor = DeepSpeedLossScale(initial_scale_power=1, hysteresis=1, min_loss_scale=1)
    for _ in range(3):
        floor.update(True)
    assert floor.scale == 1  # never below min_loss_scale
    # consecutive_hysteresis: a clean step between two overflows refills the counter, so neither halves
    c = DeepSpeedLossScale(initial_scale_power=4, loss_scale_window=100, hysteresis=2, consecutive_hysteresis=True)
    n = DeepSpeedLossScale(initial_scale_power=4, loss_scale_window=100, hysteresis=2)
    for overflow in (True, False, True):
        c.update(overflow)
        n.update(overflow)
    assert (c.scale, n.scale) == (16, 8)
    # stage 0 (FP16_Optimizer): no hysteresis, first growth after window + 1 = 3 clean steps
    z = DeepSpeedLossScale(initial_scale_power=4, loss_scale_window=2, hysteresis=2, stage0=True)
    zs = []
    for overflow in (True, False, False, False, False, False):
        z.update(overflow)
        zs.append(z.scale)
    assert zs == [8, 8, 8, 16, 16, 32]


def _deepspeed_zero_rule(pattern, power, window, hysteresis, consecutive, min_scale=1.0) -> list[float]:
    """DeepSpeed's `DynamicLossScaler.update_scale` (loss_scaler.py, used by ZeRO 1-3), restated with its own
    variable names (cur_scale, cur_hysteresis, delayed_shift, cur_iter, last_overflow_iter) as an independent
    reference for `DeepSpeedLossScale`."""
    cur_scale, delayed_shift, cur_hysteresis, cur_iter, last_overflow_iter = 2.0 ** power, hysteresis, hysteresis, 0, -1
    out = []
    for overflow in pattern:
        if overflow:
            if delayed_shift == 1 or cur_hysteresis == 1:
                cur_scale = max(cur_scale / 2, min_scale)
            else:
                cur_hysteresis -= 1
            last_overflow_iter = cur_iter
        else:
            if consecutive:
                cur_hysteresis = delayed_shift
            if (cur_iter - last_overflow_iter) % window == 0:
                if not consecutive:
                    cur_hysteresis = delayed_shift
                cur_scale *= 2
        cur_iter += 1
        out.append(cur_scale)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_deepspeed_loss_scale_equals_deepspeeds_rule(seed):
    rng = random.Random(seed)
    pattern = [rng.random() < 0.3 for _ in range(60)]
    for window, hysteresis, consecutive in [(1, 1, False), (2, 2, False), (3, 2, True), (4, 3, False), (2, 3, True)]:
        s = DeepSpeedLossScale(initial_scale_power=8, loss_scale_window=window, hysteresis=hysteresis,
                               consecutive_hysteresis=consecutive)
        got = []
        for overflow in pattern:
            s.update(overflow)
            got.append(s.scale)
        assert got == _deepspeed_zero_rule(pattern, 8, window, hysteresis, consecutive)


def _gradscaler_scales(pattern, init, interval) -> list[float]:
    """minillm's DynamicLossScaler (GradScaler's rule) driven by gradients that are inf on the overflow steps."""
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.0)
    scaler = DynamicLossScaler(init_scale=init, growth_interval=interval)
    out = []
    for overflow in pattern:
        w.grad = torch.tensor([float("inf") if overflow else 1.0])
        scaler.step(opt)
        scaler.update()
        out.append(scaler.get_scale())
    return out


def test_deepspeed_rule_vs_gradscaler():
    pattern = [True] + [False] * 5 + [True, False, False, False]
    ds = DeepSpeedLossScale(initial_scale_power=4, loss_scale_window=2, hysteresis=1, min_loss_scale=1)
    ds_scales = []
    for overflow in pattern:
        ds.update(overflow)
        ds_scales.append(ds.scale)
    gs = _gradscaler_scales(pattern, 16.0, 2)
    assert gs == [8, 8, 16, 16, 32, 32, 16, 16, 32, 32]
    assert ds_scales == gs  # with hysteresis 1 the ZeRO rule is GradScaler's, step for step
    rng = random.Random(0)
    for _ in range(5):
        pat = [rng.random() < 0.3 for _ in range(40)]
        ds = DeepSpeedLossScale(initial_scale_power=10, loss_scale_window=3, hysteresis=1, min_loss_scale=0.0)
        got = []
        for overflow in pat:
            ds.update(overflow)
            got.append(ds.scale)
        assert got == _gradscaler_scales(pat, 1024.0, 3)
    # hysteresis 2 (DeepSpeed's default): the first overflow after a growth does not halve
    h2 = DeepSpeedLossScale(initial_scale_power=4, loss_scale_window=2, hysteresis=2, min_loss_scale=1)
    h2.update(True)
    assert h2.scale == 16 and gs[0] == 8
