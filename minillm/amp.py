"""Mixed-precision training from scratch: fp32 master weights, low-precision compute, dynamic loss scaling.

The recipe of Micikevicius et al. 2018, "Mixed Precision Training" (section 3):

1. Master weights: the optimizer updates an fp32 copy of every parameter (`master_params`). An update
   lr * g is often below half an ulp of the weight in fp16/bf16 (bf16 eps = 2^-7: adding 1e-4 to 1.0 does
   nothing), so updating low-precision weights in place would silently drop it.
2. Compute in low precision: the model's forward and backward run on a bf16 / fp16 copy of the weights;
   `copy_grads_to_master` casts its gradients up to fp32, `copy_master_to_model` casts the updated master
   weights back down (round to nearest even) after the step.
3. Loss scaling (fp16 only): fp16's smallest subnormal is 2^-24 ~ 6e-8, and small activation gradients
   fall below it and become 0. Multiplying the loss by S multiplies every gradient of the backward pass by
   S (chain rule is linear), shifting them into range; the fp32 master gradients are divided by S before the
   step. `DynamicLossScaler` picks S as torch.amp.GradScaler does: start at 2^16; if any gradient is inf /
   NaN (S too large), skip the step and halve S; after `growth_interval` (2000) clean steps in a row, double
   S. bf16 has fp32's exponent range (Kalamkar et al. 2019), so it needs no scaling.

`DynamicLossScaler` has GradScaler's interface (`scale`, `unscale_`, `step`, `update`, `get_scale`,
`state_dict`) and update rule (`torch._amp_update_scale_`: a found inf resets the run of clean steps; the
scale grows only to a finite value); tests/test_amp.py checks the scale trajectory, the skipped steps and
the final parameters against `torch.amp.GradScaler("cpu")` on a scripted overflow pattern, bit for bit.

Which ops autocast keeps in fp32: `torch.autocast` runs matmul-like ops (linear, matmul, conv) in the low
dtype, where tensor cores give the speed and the fp32 accumulation inside the kernel keeps the error small,
and runs reductions whose result is sensitive to rounding (sums of many terms, exp / log: losses, softmax,
norms) in fp32. The lists differ by device and torch version: on CUDA, softmax, log_softmax and layer_norm
are fp32 ops; on the CPU with bf16 (checked with torch 2.13 here; other releases may differ), the losses run
in fp32 while softmax / log_softmax / layer_norm are not cast at all and run in their input's dtype (fp32 in,
fp32 out). `AUTOCAST_FP32_OPS`, `AUTOCAST_LOW_OPS` and `AUTOCAST_PASSTHROUGH_OPS` name the CPU ops the tests
check; this module does not reimplement autocast.

Leaves out: autocast itself (per-op casting), fp8 training (per-tensor scaling, `minillm.formats` has the
formats), optimizer-state precision (8-bit Adam), gradient clipping with a scaler (clip after `unscale_`),
several optimizers sharing one scaler beyond what `unscale_` / `step` bookkeeping handles.

References: Micikevicius et al. 2018, "Mixed Precision Training" (ICLR; master weights, loss scaling);
Kalamkar et al. 2019, "A Study of BFLOAT16 for Deep Learning Training"; Micikevicius et al. 2022, "FP8
Formats for Deep Learning"; PyTorch docs, "Automatic Mixed Precision" (torch.amp.GradScaler, autocast op
reference).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

# ops that torch.autocast("cpu", dtype=torch.bfloat16) runs in float32 (checked by tests/test_amp.py with
# torch 2.13; the CPU lists change between releases)
AUTOCAST_FP32_OPS = ("cross_entropy", "mse_loss", "nll_loss", "binary_cross_entropy_with_logits")
# ops that run in the low dtype under the same autocast (fp32 inputs are cast down)
AUTOCAST_LOW_OPS = ("linear", "matmul")
# ops the CPU autocast does not cast: they run in their input's dtype (fp32 in -> fp32, bf16 in -> bf16);
# on CUDA they are fp32 ops
AUTOCAST_PASSTHROUGH_OPS = ("softmax", "log_softmax", "layer_norm")


class DynamicLossScaler:
    """Dynamic loss scaling with torch.amp.GradScaler's rule. Usage per step:
    `scaler.scale(loss).backward(); scaler.step(opt); scaler.update()` (optionally `scaler.unscale_(opt)`
    before `step` to clip or read true gradients)."""

    def __init__(self, init_scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, enabled: bool = True) -> None:
        if not growth_factor > 1.0:
            raise ValueError(f"growth_factor must be > 1, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"backoff_factor must be in (0, 1), got {backoff_factor}")
        if growth_interval < 1:
            raise ValueError(f"growth_interval must be a positive int, got {growth_interval}")
        self.enabled = enabled
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        # the scale lives in float32 as GradScaler's does, so growth / backoff round identically
        self._scale = torch.tensor(init_scale, dtype=torch.float32)
        self._growth_tracker = 0  # clean steps in a row since the last growth or overflow
        self._per_opt: dict[int, dict[str, bool]] = {}  # id(optimizer) -> {"unscaled", "found_inf", "stepped"}

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """loss * S (a power of two with the defaults: exact in any float format)."""
        if not self.enabled:
            return loss
        return loss * self._scale.to(loss.device)

    def unscale_(self, optimizer: torch.optim.Optimizer) -> bool:
        """Divide the optimizer's gradients by S in place; returns whether any is inf / NaN."""
        if not self.enabled:
            return False
        state = self._per_opt.setdefault(id(optimizer), {"unscaled": False, "found_inf": False, "stepped": False})
        if state["unscaled"]:
            raise RuntimeError("unscale_() was already called on this optimizer since the last update()")
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if any(g.dtype == torch.float16 for g in grads):
            # as GradScaler: unscaling in fp16 would lose the small gradients the scaling was meant to save
            raise ValueError("Attempting to unscale FP16 gradients: give the optimizer fp32 master parameters "
                             "(copy_grads_to_master, or MixedPrecision does it for you)")
        inv = self._scale.double().reciprocal().float()  # 1/S computed once, as GradScaler does
        found = False
        for g in grads:
            # checked BEFORE the multiply, as GradScaler does (a finite g * inv could overflow if S < 1)
            found = found or not bool(torch.isfinite(g).all())
            g.mul_(inv.to(g.device, g.dtype))
        state.update(unscaled=True, found_inf=found)
        return found

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Unscale (if not done) and step unless a gradient overflowed. Returns True if the step was taken."""
        if not self.enabled:
            optimizer.step()
            return True
        state = self._per_opt.get(id(optimizer))
        if state and state["stepped"]:
            raise RuntimeError("step() has already been called since the last update(): call update() after "
                               "each step()")
        found = state["found_inf"] if state and state["unscaled"] else self.unscale_(optimizer)
        self._per_opt[id(optimizer)]["stepped"] = True
        if found:
            return False  # skipped: the weights keep their values, the scale backs off in update()
        optimizer.step()
        return True

    def update(self) -> None:
        """Back off after an overflow in any optimizer, otherwise count a clean step and grow every
        growth_interval clean steps (to a finite value only)."""
        if not self.enabled:
            return
        if not self._per_opt:
            raise RuntimeError("update() needs a step() or unscale_() since the last update()")
        found = any(s["found_inf"] for s in self._per_opt.values())
        if found:
            # in double, then rounded to float, as torch._amp_update_scale_ does (matters for factors like 0.3)
            self._scale = (self._scale.double() * self.backoff_factor).float()
            self._growth_tracker = 0
        else:
            self._growth_tracker += 1
            if self._growth_tracker == self.growth_interval:
                grown = (self._scale.double() * self.growth_factor).float()
                if torch.isfinite(grown):
                    self._scale = grown
                self._growth_tracker = 0
        self._per_opt.clear()

    def get_scale(self) -> float:
        return float(self._scale) if self.enabled else 1.0

    def state_dict(self) -> dict[str, float | int]:
        """The scaler's state; {} when disabled (as GradScaler)."""
        if not self.enabled:
            return {}
        return {"scale": self.get_scale(), "growth_factor": self.growth_factor,
                "backoff_factor": self.backoff_factor, "growth_interval": self.growth_interval,
                "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        """Restore a state_dict(); a no-op when disabled or given {} (a disabled scaler's state)."""
        if not self.enabled or not state:
            return
        self._scale = torch.tensor(float(state["scale"]), dtype=torch.float32)
        self.growth_factor = float(state["growth_factor"])
        self.backoff_factor = float(state["backoff_factor"])
        self.growth_interval = int(state["growth_interval"])
        self._growth_tracker = int(state["_growth_tracker"])


def master_params(model: nn.Module) -> list[nn.Parameter]:
    """fp32 copies of the model's trainable parameters (the optimizer's tensors), in parameters() order."""
    return [nn.Parameter(p.detach().clone().float()) for p in model.parameters() if p.requires_grad]


def _trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def copy_grads_to_master(model: nn.Module, master: Iterable[nn.Parameter]) -> None:
    """master.grad = model grad cast to fp32 (exact: every fp16 / bf16 value is an fp32 value)."""
    params, master = _trainable(model), list(master)
    if len(params) != len(master):
        raise ValueError(f"model has {len(params)} trainable parameters, master has {len(master)}: "
                         "build master with master_params(model)")
    for p, m in zip(params, master, strict=True):
        m.grad = None if p.grad is None else p.grad.detach().float()


def copy_master_to_model(master: Iterable[nn.Parameter], model: nn.Module) -> None:
    """Model weights = master weights rounded to the model's dtype; the model's grads are cleared."""
    params, master = _trainable(model), list(master)
    if len(params) != len(master):
        raise ValueError(f"model has {len(params)} trainable parameters, master has {len(master)}: "
                         "build master with master_params(model)")
    with torch.no_grad():
        for p, m in zip(params, master, strict=True):
            p.copy_(m)  # fp32 -> low dtype, round to nearest even
            p.grad = None


class MixedPrecision:
    """One mixed-precision training step on `model` (whose weights are cast to `dtype` in place).

    `step(loss_fn)`: loss = loss_fn(model) in low precision; backward of the (scaled) loss; grads cast to
    the fp32 master copy; unscale + inf check; optimizer step on the master (skipped on overflow); master
    rounded back into the model. `optimizer_factory(master_params)` builds the optimizer over the master.
    Loss scaling defaults to on for fp16 and off for bf16. `loss_fn` should return an fp32 loss (cast the
    output up before the loss, as autocast does for losses): the gradient entering an fp16 loss would be S
    itself, and 2^16 is already inf in fp16 (max 65504), so every step would overflow at first.

    `scaler` may also be a `torch.amp.GradScaler` (same interface; tests/test_amp.py runs both on the same
    fp16 training and gets the same numbers). GradScaler.step returns no flag, so for it a step counts as
    skipped when update() lowered the scale, which it does exactly when it found an inf / NaN."""

    def __init__(self, model: nn.Module, dtype: torch.dtype, optimizer_factory,
                 scaler: DynamicLossScaler | torch.amp.GradScaler | None = None) -> None:
        if dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise ValueError(f"dtype must be torch.float16, torch.bfloat16 or torch.float32, got {dtype}")
        self.master = master_params(model)  # copied before the cast: the master keeps the fp32 values
        self.model = model.to(dtype)
        self.optimizer = optimizer_factory(self.master)
        self.scaler = scaler if scaler is not None else DynamicLossScaler(enabled=dtype == torch.float16)

    def step(self, loss_fn) -> tuple[float, bool]:
        """Returns (the unscaled loss, whether the optimizer step was taken)."""
        loss = loss_fn(self.model)
        self.scaler.scale(loss).backward()
        copy_grads_to_master(self.model, self.master)
        before = self.scaler.get_scale()
        taken = self.scaler.step(self.optimizer)
        self.scaler.update()
        if not isinstance(taken, bool):  # a GradScaler: skipped <=> the scale backed off
            taken = not self.scaler.get_scale() < before
        copy_master_to_model(self.master, self.model)
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()), taken
