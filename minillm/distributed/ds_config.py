"""DeepSpeed's JSON config read into minillm's pieces: batch sizes, precision and loss scaling, ZeRO stage, offload.

DeepSpeed (`deepspeed.initialize(model=..., config=ds_config)`) is driven by one JSON dict. `read_ds_config(cfg,
world_size)` reads the subset that chapters 10-12 built, checks it the way DeepSpeed does, and returns a
`DSConfig` whose fields name the minillm piece each key maps to:

| DeepSpeed key | minillm |
|---|---|
| train_batch_size, train_micro_batch_size_per_gpu, | `TrainConfig.batch_size`, `grad_accum` (per rank), |
| gradient_accumulation_steps | data-parallel world size |
| gradient_clipping | `TrainConfig.grad_clip` |
| fp16.enabled / bf16.enabled | `TrainConfig.precision` "fp16" / "bf16" (`minillm.amp.MixedPrecision`) |
| fp16.initial_scale_power, loss_scale_window | `DynamicLossScaler(init_scale=2**power, growth_interval=window)` |
| zero_optimization.stage 1 / 2 / 3 | `ZeroOptimizer(stage=1/2)` / `fsdp.fully_shard` |
| zero_optimization.offload_optimizer.device "cpu" | `offload.OffloadAdam` |
| reduce_bucket_size, allgather_bucket_size, | kept in `comm` (DDP's `bucket_cap`; minillm's ZeRO |
| overlap_comm, contiguous_gradients | uses one flat buffer per group) |
| optimizer {type: Adam/AdamW, params} | `TrainConfig.lr`, `betas`, `weight_decay` |

The batch identity (DeepSpeed docs, "Batch Size Related Parameters"): train_batch_size = micro batch per GPU x
gradient accumulation steps x number of GPUs; give two of the three and the third is inferred (with only one of
the two batch sizes, accumulation is 1); three inconsistent values, or sizes that do not divide, are refused.

Loss scaling (DeepSpeed docs, "FP16 training options"; `deepspeed/runtime/fp16/loss_scaler.py`): loss_scale 0
means dynamic scaling starting at 2**initial_scale_power (any other value is a static scale, no skipping logic);
an overflow skips the step and halves the scale, loss_scale_window clean steps in a row double it, and it never
goes below min_loss_scale. With ZeRO (stages 1-3, `DynamicLossScaler.update_scale`) the one difference from
torch's GradScaler (= `minillm.amp.DynamicLossScaler`) is hysteresis h: an overflow halves the scale only when
h - 1 overflows have already been absorbed since the counter was last refilled (each overflow still skips its
step); the counter is refilled at each growth, or after every clean step with consecutive_hysteresis. With
hysteresis 1 the two rules give the same scales: growth comes after loss_scale_window clean steps counted from
the last overflow (or the start), exactly as after GradScaler's growth_interval. Without ZeRO (stage 0,
`FP16_Optimizer._update_scale` in fused_optimizer.py) DeepSpeed uses an older rule: no hysteresis (the key is
ignored) and the first growth after an overflow (or the start) only after loss_scale_window + 1 clean steps;
`DeepSpeedLossScale(stage0=True)` reproduces it. (DeepSpeed also stops the run when an overflow comes with the
scale already at min_loss_scale; `DeepSpeedLossScale` stays at the floor.)

Leaves out: everything else DeepSpeed reads (scheduler, activation checkpointing, pipeline, ZeRO-3's prefetch
and persistence thresholds, NVMe offload, communication data types, monitoring): they are refused as unknown keys
so that a config is never silently half-applied; "auto" values (Hugging Face's Trainer fills them in).

References: DeepSpeed docs, "DeepSpeed Configuration JSON" (batch size, fp16, bf16, zero_optimization,
offload_optimizer sections) and `deepspeed/runtime/fp16/loss_scaler.py` (DynamicLossScaler.update_scale);
Rajbhandari et al. 2020 (ZeRO stages); Ren et al. 2021 (ZeRO-Offload).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KEYS: dict[str, set[str]] = {
    "": {"train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping",
         "fp16", "bf16", "zero_optimization", "optimizer", "steps_per_print", "wall_clock_breakdown"},
    "fp16": {"enabled", "loss_scale", "initial_scale_power", "loss_scale_window", "hysteresis",
             "consecutive_hysteresis", "min_loss_scale"},
    "bf16": {"enabled"},
    "zero_optimization": {"stage", "offload_optimizer", "offload_param", "overlap_comm", "contiguous_gradients",
                          "reduce_bucket_size", "allgather_bucket_size", "reduce_scatter", "allgather_partitions"},
    "offload_optimizer": {"device", "pin_memory"},
    "offload_param": {"device", "pin_memory"},
    "optimizer": {"type", "params"},
    "optimizer.params": {"lr", "betas", "eps", "weight_decay"},
}
FP16_DEFAULTS = {"loss_scale": 0.0, "initial_scale_power": 16, "loss_scale_window": 1000, "hysteresis": 2,
                 "consecutive_hysteresis": False, "min_loss_scale": 1.0}  # deepspeed/runtime/constants.py


def _check_keys(d: Any, where: str) -> dict:
    if not isinstance(d, dict):
        raise ValueError(f"{where or 'the config'} must be a dict, got {type(d).__name__}")
    known = KEYS[where if where in KEYS else where.split(".")[-1]]
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in {where or 'the top level'}: this reader knows "
                         f"{', '.join(sorted(known))} (remove it, or map it yourself)")
    if any(v == "auto" for v in d.values()):
        key = next(k for k, v in d.items() if v == "auto")
        raise ValueError(f"{key!r} is 'auto' (a placeholder Hugging Face's Trainer fills in): give a number")
    return d


def resolve_batch(train_batch_size: int | None, micro: int | None, accum: int | None,
                  world_size: int) -> tuple[int, int, int]:
    """(train_batch_size, micro batch per GPU, accumulation steps) with train = micro x accum x world_size,
    the missing ones inferred as DeepSpeed does; inconsistent or non-divisible values raise ValueError."""
    for name, v in (("train_batch_size", train_batch_size), ("train_micro_batch_size_per_gpu", micro),
                    ("gradient_accumulation_steps", accum), ("world_size", world_size)):
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if train_batch_size is None and micro is None:
        raise ValueError("give train_batch_size or train_micro_batch_size_per_gpu (or both)")
    if train_batch_size is None:
        accum = accum or 1
        return micro * accum * world_size, micro, accum
    if micro is None:
        accum = accum or 1
        if train_batch_size % (accum * world_size):
            raise ValueError(f"train_batch_size {train_batch_size} is not divisible by gradient_accumulation_steps "
                             f"{accum} x world size {world_size}: make it a multiple of {accum * world_size}")
        return train_batch_size, train_batch_size // (accum * world_size), accum
    if accum is None:
        if train_batch_size % (micro * world_size):
            raise ValueError(f"train_batch_size {train_batch_size} is not divisible by micro batch {micro} x world "
                             f"size {world_size}: make it a multiple of {micro * world_size}")
        return train_batch_size, micro, train_batch_size // (micro * world_size)
    if train_batch_size != micro * accum * world_size:
        raise ValueError(f"train_batch_size {train_batch_size} != micro batch {micro} x accumulation {accum} x world "
                         f"size {world_size} = {micro * accum * world_size}: change one of them (or drop one and "
                         "let it be inferred)")
    return train_batch_size, micro, accum


@dataclass
class DSConfig:
    """What `read_ds_config` found, named by the minillm piece it maps to (see the module docstring)."""

    train_batch_size: int
    micro_batch: int
    grad_accum: int
    world_size: int
    grad_clip: float | None = None
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16"
    loss_scale: dict[str, float] = field(default_factory=dict)  # fp16 only
    zero_stage: int = 0
    offload_optimizer: str | None = None  # "cpu" or None
    offload_param: str | None = None
    comm: dict[str, Any] = field(default_factory=dict)  # overlap_comm, buckets, ...
    optimizer: dict[str, Any] = field(default_factory=dict)  # {"type": "AdamW", "lr": ..., ...}

    def train_config_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `minillm.train.TrainConfig` for one rank: its rows per step, accumulation,
        clipping, precision and the optimizer's hyperparameters."""
        out: dict[str, Any] = {"batch_size": self.micro_batch * self.grad_accum, "grad_accum": self.grad_accum,
                               "grad_clip": self.grad_clip, "precision": self.precision}
        for k in ("lr", "betas", "weight_decay"):
            if k in self.optimizer:
                out[k] = tuple(self.optimizer[k]) if k == "betas" else self.optimizer[k]
        return out

    def scaler_kwargs(self) -> dict[str, float] | None:
        """Arguments of `minillm.amp.DynamicLossScaler` for the fp16 section (None without fp16 or with a static
        scale). Hysteresis and min_loss_scale have no GradScaler equivalent: see `DeepSpeedLossScale`."""
        if self.precision != "fp16" or self.loss_scale["loss_scale"]:
            return None
        return {"init_scale": 2.0 ** self.loss_scale["initial_scale_power"], "growth_factor": 2.0,
                "backoff_factor": 0.5, "growth_interval": int(self.loss_scale["loss_scale_window"])}


def read_ds_config(cfg: dict, world_size: int = 1) -> DSConfig:
    """Check a DeepSpeed config dict and map it to minillm's pieces; unknown keys and inconsistent batch sizes
    raise ValueError saying what to change."""
    _check_keys(cfg, "")
    train, micro, accum = resolve_batch(cfg.get("train_batch_size"), cfg.get("train_micro_batch_size_per_gpu"),
                                        cfg.get("gradient_accumulation_steps"), world_size)
    fp16 = _check_keys(cfg.get("fp16", {}), "fp16")
    bf16 = _check_keys(cfg.get("bf16", {}), "bf16")
    if fp16.get("enabled") and bf16.get("enabled"):
        raise ValueError("fp16 and bf16 are both enabled: DeepSpeed allows one of them; disable the other")
    precision = "fp16" if fp16.get("enabled") else "bf16" if bf16.get("enabled") else "fp32"
    scale = {**FP16_DEFAULTS, **{k: v for k, v in fp16.items() if k != "enabled"}} if precision == "fp16" else {}
    zero = _check_keys(cfg.get("zero_optimization", {}), "zero_optimization")
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_optimization.stage must be 0, 1, 2 or 3, got {stage!r}")
    off_opt = _check_keys(zero.get("offload_optimizer", {}), "zero_optimization.offload_optimizer")
    off_par = _check_keys(zero.get("offload_param", {}), "zero_optimization.offload_param")
    for name, sec in (("offload_optimizer", off_opt), ("offload_param", off_par)):
        if sec.get("device", "none") not in ("none", "cpu", "nvme"):
            raise ValueError(f"{name}.device must be 'none', 'cpu' or 'nvme', got {sec['device']!r}")
    if off_opt.get("device", "none") != "none" and stage == 0:
        raise ValueError("offload_optimizer needs zero_optimization.stage 1, 2 or 3 (ZeRO-Offload builds on ZeRO's "
                         "partitioned optimizer): set a stage")
    if off_par.get("device", "none") != "none" and stage != 3:
        raise ValueError(f"offload_param needs zero_optimization.stage 3 (only ZeRO-3 partitions the parameters), "
                         f"got stage {stage}")
    opt = _check_keys(cfg.get("optimizer", {}), "optimizer")
    params = _check_keys(opt.get("params", {}), "optimizer.params")
    if opt and opt.get("type", "").lower() not in ("adam", "adamw"):
        raise ValueError(f"optimizer.type {opt.get('type')!r} is not mapped: use Adam or AdamW")
    clip = cfg.get("gradient_clipping")
    return DSConfig(train, micro, accum, world_size, grad_clip=float(clip) if clip else None, precision=precision,
                    loss_scale=scale, zero_stage=stage,
                    offload_optimizer=None if off_opt.get("device", "none") == "none" else off_opt["device"],
                    offload_param=None if off_par.get("device", "none") == "none" else off_par["device"],
                    comm={k: v for k, v in zero.items() if k not in ("stage", "offload_optimizer", "offload_param")},
                    optimizer={"type": opt.get("type", "AdamW"), **params} if opt else {})


class DeepSpeedLossScale:
    """DeepSpeed's dynamic loss-scale rule, written out to compare with torch's GradScaler: `update(overflow)`
    after each step; `scale` is the scale for the next step. Default: the ZeRO optimizers' rule
    (`loss_scaler.DynamicLossScaler.update_scale`); `stage0=True`: `FP16_Optimizer._update_scale` (fp16 without
    ZeRO), which has no hysteresis and grows one clean step later (see the module docstring)."""

    def __init__(self, initial_scale_power: int = 16, loss_scale_window: int = 1000, hysteresis: int = 2,
                 min_loss_scale: float = 1.0, consecutive_hysteresis: bool = False, stage0: bool = False) -> None:
        if loss_scale_window < 1 or hysteresis < 1:
            raise ValueError(f"loss_scale_window and hysteresis must be >= 1, got {loss_scale_window}, {hysteresis}")
        self.scale = 2.0 ** initial_scale_power
        self.window, self.hysteresis, self.min_scale = loss_scale_window, hysteresis, min_loss_scale
        self.consecutive, self.stage0 = consecutive_hysteresis, stage0
        self.left = hysteresis  # overflows still absorbed before the next backoff (1: the next one halves)
        self.iter, self.last_overflow = 0, -1

    def update(self, overflow: bool) -> None:
        if overflow:  # the step is skipped in any case
            if self.stage0 or self.left <= 1:
                self.scale = max(self.scale / 2, self.min_scale)
            else:
                self.left -= 1  # absorbed: same scale next step
            self.last_overflow = self.iter
        elif self.stage0:
            stable = self.iter - self.last_overflow - 1  # clean steps before this one since the last overflow
            if stable > 0 and stable % self.window == 0:
                self.scale *= 2
        else:
            if self.consecutive:
                self.left = self.hysteresis  # any clean step refills the counter
            if (self.iter - self.last_overflow) % self.window == 0:  # `window` clean steps since the last overflow
                self.scale *= 2
                self.left = self.hysteresis  # refilled at each growth
        self.iter += 1
