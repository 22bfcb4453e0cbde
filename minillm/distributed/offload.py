"""ZeRO-Offload from scratch: 16-bit weights and backward on the device, the optimizer and its states on the host.

ZeRO-Offload (Ren et al. 2021) splits mixed-precision training between the accelerator and the CPU so that the
parts that cost memory but little compute leave the GPU (the paper's figure 2, its data-flow graph, and figure 3):

- device (GPU): the 16-bit weights (2 Psi bytes) and the forward and backward passes, which need them; the 16-bit
  gradients (2 Psi) as backward produces them;
- device -> host: each gradient is copied to the CPU as soon as backward has produced it (here per parameter, or
  per bucket of `bucket_numel` elements, from a post-accumulate-grad hook), 2 bytes per parameter over PCIe, and
  the device copy is freed;
- host (CPU): the fp32 master weights and Adam's m and v (K Psi = 12 Psi bytes), the gradients (fp32 by default,
  4 Psi, as DeepSpeed accumulates them; the paper, section 4.1, keeps them in fp16, 2 Psi: `host_grad_dtype`)
  and the Adam step itself: O(Psi) element-wise work, cheap next to the O(tokens x Psi) of forward and backward;
- host -> device: the updated master weights rounded to 16 bits on the CPU and copied back, 2 bytes per parameter.

So the device holds at most 2 Psi + 2 Psi (a full 16-bit gradient buffer when every gradient waits for the step,
`bucket_numel=inf`; the paper copies them out during backward, so for good only the 2 Psi weights stay, its 8x
saving; with per-parameter hooks only the gradients not yet copied live there, `peak_device_grad_bytes`), the host
12 Psi + 4 Psi, and 4 Psi bytes cross the link per step. `offload_memory` is the formula, `placement_bytes` what
the tensors hold, by role (on a CPU-only machine host and device are the same memory, so the split is by the role
each tensor plays; with a GPU, `placement_bytes` also reads the tensors' devices).

`OffloadAdam(model, lr, betas, eps, weight_decay, dtype)`: casts the model to `dtype` in place, keeps the master
copy and `torch.optim.AdamW` on the host. Per step: `loss.backward()` (the hooks copy the gradients out),
`opt.step()`, `opt.zero_grad()`. Several backward passes before one step accumulate on the host (gradient
accumulation). `step(scaler)` takes a `minillm.amp.DynamicLossScaler` (or torch GradScaler) for fp16: the scaler
unscales the host fp32 gradients, skips the step on inf / NaN, and adjusts its scale, as in `minillm.amp`.
The trajectory is that of `minillm.amp.MixedPrecision` with AdamW (tests/test_offload.py: bit for bit on the CPU).

Delayed parameter update (DPU, the paper's section 5.2): on a real system the CPU step of iteration t overlaps
the GPU's forward and backward of iteration t + 1, which therefore runs on weights that miss the last update.
`delayed_update=True` reproduces the numbers of that schedule (without the overlap): the step computes
p_t = AdamW(p_{t-1}, g_t) on the host but gives the device p_{t-1}, so g_{t+1} is computed at p_{t-1}: each
gradient is one step stale. `finish()` copies the newest weights to the device at the end. The paper runs the
first N - 1 steps without DPU (gradients change fast early in training) and switches it on at step N; here it is
on from the first step (set `opt.delayed_update = True` after a warm-up for the paper's schedule: that step's update
then reaches the device one step later, as at the paper's step N). A float64 model keeps its master and Adam states
in float64 (exactness tests: the float32 gaps between schedules shrink to float64 rounding).

With N data-parallel ranks (the paper's section 4.2) ZeRO-Offload sits on ZeRO-2: `ShardedOffloadAdam` flattens the
gradients at `step()` into one buffer padded to a multiple of N (`zero.shard_layout`, the layout of ZeRO-1/2),
reduce-scatters it so that rank r keeps the averaged gradient of its 1/N shard, copies that shard to the host,
steps its fp32 master shard there (12 Psi / N + 4 Psi / N bytes of host memory per rank), sends the 16-bit shard
back (2 Psi / N bytes) and all-gathers the shards into every rank's full weights. Per rank the PCIe traffic is
4 Psi / N bytes per step and the CPU work is 1/N of the update. One parameter group (one weight decay for all).

Leaves out: the overlap itself (copies on a side CUDA stream from pinned memory while backward continues, the
CPU step in a thread), DeepSpeed's vectorised CPU Adam (AVX SIMD, several threads: here torch's AdamW on CPU
tensors), bucketed reduce-scatter during backward in the sharded version (here one reduce-scatter at `step()`),
ZeRO-Infinity's NVMe offload and parameter offload (ZeRO-3 weights fetched from the CPU per layer), gradient
clipping (a norm over the host gradients), state_dict / checkpoints of the host states.

References: Ren, Rajbhandari, Aminabadi, Ruwase, Yang, Zhang, Li, He 2021, "ZeRO-Offload: Democratizing
Billion-Scale Model Training" (USENIX ATC), figures 2-3 (data flow, placement),
sections 4.1-4.2 (single- and multi-GPU schedule), 5.2 (DPU);
Rajbhandari et al. 2020 (ZeRO, K = 12); Micikevicius et al. 2018 (master weights); DeepSpeed docs,
"ZeRO-Offload" tutorial and `zero_optimization.offload_optimizer`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from minillm.distributed.zero import shard_layout

ROLES_DEVICE = ("weights", "grads")
ROLES_HOST = ("master", "exp_avg", "exp_avg_sq", "grads")


def offload_memory(psi: float, weight_bytes: float = 2, grad_bytes: float = 2, k: float = 12,
                   host_grad_bytes: float = 4) -> dict[str, float]:
    """Bytes of model states by placement for ZeRO-Offload on one GPU (Ren et al. 2021, figure 2): `device` =
    16-bit weights + 16-bit gradients, `host` = K Psi (fp32 master, m, v) + the host gradients, `link` = bytes
    over PCIe per step (gradients down, weights up)."""
    if psi < 0:
        raise ValueError(f"psi (the number of parameters) must be >= 0, got {psi}")
    return {"device": (weight_bytes + grad_bytes) * psi, "host": (k + host_grad_bytes) * psi,
            "link": (grad_bytes + weight_bytes) * psi}


def _master_dtype(dtype: torch.dtype) -> torch.dtype:
    """The host's dtype for the master weights, Adam's states and gradients: fp32, or fp64 for a float64 model."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _nbytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


class OffloadAdam:
    """AdamW with ZeRO-Offload's placement: see the module docstring. `groups`: optional parameter groups of
    the model's parameters (e.g. `minillm.train.param_groups(model, cfg)`), each with its own hyperparameters;
    default one group of every trainable parameter. `bucket_numel`: gradients are copied to the host once this
    many elements are ready (None: each parameter as soon as its gradient is ready; `float("inf")`: all at
    `step()`, the paper's full device gradient buffer). `host`: where the master and optimizer live."""

    def __init__(self, model: nn.Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, dtype: torch.dtype = torch.bfloat16,
                 groups: Iterable[dict] | None = None, bucket_numel: float | None = None,
                 host: str | torch.device = "cpu", host_grad_dtype: torch.dtype | None = None,
                 delayed_update: bool = False) -> None:
        if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float16, torch.bfloat16, torch.float32 (or torch.float64, for "
                             f"exactness tests), got {dtype}")
        master_dtype = _master_dtype(dtype)
        host_grad_dtype = master_dtype if host_grad_dtype is None else host_grad_dtype
        if host_grad_dtype not in (master_dtype, dtype):
            raise ValueError(f"host_grad_dtype must be {master_dtype} or the model's dtype {dtype}, got "
                             f"{host_grad_dtype}")
        if bucket_numel is not None and not bucket_numel >= 1:
            raise ValueError(f"bucket_numel must be >= 1 (or None: one parameter at a time), got {bucket_numel}")
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("OffloadAdam got a model with no trainable parameters (all requires_grad=False?)")
        self.model, self.params, self.dtype = model, params, dtype
        self.host = torch.device(host)
        self.device = params[0].device
        pin = self.device.type == "cuda" and self.host.type == "cpu"  # page-locked: faster, async-capable copies
        # host state, in parameters() order: master [shape] fp32 (fp64 for a float64 model), host gradient [shape]
        self.master = [nn.Parameter(p.detach().to(self.host, master_dtype, copy=True)) for p in params]
        self.host_grads = [torch.zeros(p.shape, dtype=host_grad_dtype, device=self.host, pin_memory=pin)
                           for p in params]
        model.to(dtype)  # after copying the master: it keeps the fp32 values
        index = {id(p): i for i, p in enumerate(params)}
        if groups is None:
            groups = [{"params": params}]
        inner = []
        for g in groups:
            ids = [index[id(p)] for p in g["params"] if p.requires_grad]
            inner.append({**{k: v for k, v in g.items() if k != "params"}, "params": [self.master[i] for i in ids]})
        if sum(len(g["params"]) for g in inner) != len(params):
            raise ValueError("groups must hold every trainable parameter of the model exactly once")
        self.optimizer = torch.optim.AdamW(inner, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self.bucket_numel, self.delayed_update = bucket_numel, delayed_update
        self._filled = [False] * len(params)  # host_grads[i] holds a gradient since the last zero_grad
        self._pending: list[int] = []  # parameters whose device gradient waits for its bucket
        self._pending_numel = 0
        self._live_grad_bytes = 0  # bytes of parameter gradients now on the device
        self.peak_device_grad_bytes = 0
        self._stale: list[torch.Tensor] | None = None  # DPU: the 16-bit weights the device gets next step
        self.seconds = dict.fromkeys(("grad_to_host", "host_step", "param_to_device"), 0.0)
        self._hooks = [p.register_post_accumulate_grad_hook(self._make_hook(i)) for i, p in enumerate(params)]

    # ---- device -> host, during backward

    def _make_hook(self, i: int):
        def hook(p: torch.Tensor) -> None:  # runs when p.grad [shape] is complete for this backward
            self._live_grad_bytes += _nbytes(p.grad)
            self.peak_device_grad_bytes = max(self.peak_device_grad_bytes, self._live_grad_bytes)
            self._pending.append(i)
            self._pending_numel += p.numel()
            if self.bucket_numel is None or self._pending_numel >= self.bucket_numel:
                self._flush()
        return hook

    @torch.no_grad()
    def _flush(self) -> None:
        """Copy the pending device gradients to the host (accumulating) and free them on the device."""
        start = self._clock()
        for i in self._pending:
            p, buf = self.params[i], self.host_grads[i]
            if p.grad is None:
                continue
            if self._filled[i]:
                buf.add_(p.grad.to(self.host, buf.dtype))  # gradient accumulation over micro-batches
            else:
                buf.copy_(p.grad)  # one transfer (2 bytes / element) and a cast to the host dtype
                self._filled[i] = True
            self._live_grad_bytes -= _nbytes(p.grad)
            p.grad = None  # the device gradient is gone: the memory ZeRO-Offload saves
        self._pending, self._pending_numel = [], 0
        self.seconds["grad_to_host"] += self._clock() - start

    def _clock(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # time the copies themselves, not their launch
        return time.perf_counter()

    # ---- the step on the host, weights back to the device

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the accumulated gradients (host buffers are kept, zeroed lazily by the next copy)."""
        self._flush()
        self._filled = [False] * len(self.params)
        for m in self.master:
            m.grad = None

    @property
    def param_groups(self) -> list[dict]:
        """The host AdamW's groups: set `lr` here, as on any optimizer."""
        return self.optimizer.param_groups

    @torch.no_grad()
    def step(self, scaler: Any = None) -> bool:
        """One AdamW step on the host with the accumulated gradients; returns whether it was taken (False when
        `scaler` found an inf / NaN). Parameters that got no gradient are skipped, as torch's AdamW does."""
        self._flush()  # what a bucket still holds
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        for m, buf, filled in zip(self.master, self.host_grads, self._filled, strict=True):
            m.grad = (buf if buf.dtype == m.dtype else buf.to(m.dtype)) if filled else None
        if scaler is None:
            self.optimizer.step()
            taken = True
        else:
            before = scaler.get_scale()
            taken = scaler.step(self.optimizer)
            scaler.update()
            if not isinstance(taken, bool):  # a torch GradScaler returns no flag: skipped <=> it backed off
                taken = not scaler.get_scale() < before
        self.seconds["host_step"] += time.perf_counter() - start
        if taken:
            self._to_device()
        self.zero_grad()
        return taken

    @torch.no_grad()
    def _to_device(self) -> None:
        start = self._clock()
        fresh = [m.detach().to(self.dtype) for m in self.master]  # float2half on the host: 2 bytes / element move
        if self.delayed_update:
            fresh, self._stale = self._stale, fresh  # the device gets last step's weights (None at the first step)
        if fresh is not None:
            for p, w in zip(self.params, fresh, strict=True):
                p.copy_(w)
        self.seconds["param_to_device"] += self._clock() - start

    @torch.no_grad()
    def finish(self) -> None:
        """With `delayed_update`: copy the newest weights (the last step's) to the device. A no-op otherwise."""
        if self._stale is not None:
            for p, w in zip(self.params, self._stale, strict=True):
                p.copy_(w)
            self._stale = None

    def remove_hooks(self) -> None:
        """Detach the gradient hooks from the model (the model then trains as an ordinary 16-bit model)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    # ---- accounting

    def placement_bytes(self) -> dict[str, dict[str, int]]:
        """Bytes held now, by placement and role, measured from the tensors: `device` {weights: the model's
        16-bit parameters, grads: parameter gradients not yet copied}, `host` {master, exp_avg, exp_avg_sq (Adam's
        m and v, once the first step made them), grads (the host gradient buffers)}. Optimizer scalars (step
        counters) are left out, as in the formula."""
        dev = {"weights": sum(_nbytes(p) for p in self.params), "grads": sum(_nbytes(p.grad) for p in self.params)}
        host = {"master": sum(_nbytes(m) for m in self.master), "exp_avg": 0, "exp_avg_sq": 0,
                "grads": sum(_nbytes(b) for b in self.host_grads)}
        for m in self.master:
            for key in ("exp_avg", "exp_avg_sq"):
                host[key] += _nbytes(self.optimizer.state.get(m, {}).get(key))
        return {"device": dev, "host": host}

    def devices(self) -> dict[str, set[str]]:
        """The device types the tensors of each placement live on ({"device": {"cuda"}, "host": {"cpu"}} on a GPU)."""
        return {"device": {p.device.type for p in self.params},
                "host": {t.device.type for t in self.master + self.host_grads}}


class ShardedOffloadAdam:
    """ZeRO-Offload over data-parallel ranks (ZeRO-2 + offload): see the module docstring. Call `step()` after
    `loss.backward()` on every rank, each on its own rows; no DDP wrapper (the reduce-scatter averages)."""

    def __init__(self, model: nn.Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, dtype: torch.dtype = torch.bfloat16,
                 host: str | torch.device = "cpu", process_group: dist.ProcessGroup | None = None) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("ShardedOffloadAdam needs torch.distributed initialised (torchrun or "
                               "minillm.distributed.launch); on one process use OffloadAdam")
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("ShardedOffloadAdam got a model with no trainable parameters")
        self.group, self.dtype, self.host = process_group, dtype, torch.device(host)
        self.world, self.rank = dist.get_world_size(process_group), dist.get_rank(process_group)
        self.sizes = [p.numel() for p in self.params]
        self.layout = shard_layout(sum(self.sizes), self.world)
        lo, hi = self.layout.bounds(self.rank)
        master_dtype = _master_dtype(dtype)  # fp32 (fp64 for a float64 model: exactness tests)
        flat = self._flat([p.detach() for p in self.params], master_dtype)  # [padded], before the cast
        self.master = nn.Parameter(flat[lo:hi].to(self.host, copy=True))  # [S] this rank's shard only
        self.host_grad = torch.zeros(self.layout.shard, dtype=master_dtype, device=self.host)  # [S]
        model.to(dtype)
        self.optimizer = torch.optim.AdamW([self.master], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def _flat(self, tensors: list[torch.Tensor | None], dtype: torch.dtype) -> torch.Tensor:
        """The tensors (None = zeros) flattened, concatenated, zero-padded: [padded]."""
        dev = self.params[0].device
        parts = [torch.zeros(n, dtype=dtype, device=dev) if t is None else t.detach().reshape(-1).to(dtype)
                 for t, n in zip(tensors, self.sizes, strict=True)]
        parts.append(torch.zeros(self.layout.padded - self.layout.numel, dtype=dtype, device=dev))
        return torch.cat(parts)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """Reduce-scatter the gradients, step this rank's shard on the host, all-gather the new 16-bit weights."""
        flat = self._flat([p.grad for p in self.params], self.dtype)  # [padded] this rank's local gradient
        shard = flat.new_empty(self.layout.shard)  # [S]
        dist.reduce_scatter_single(shard, flat, group=self.group)  # the sum over ranks of this rank's slice
        del flat
        self.zero_grad()
        self.host_grad.copy_(shard)  # 2 Psi / N bytes down, cast to fp32 on the host
        self.host_grad /= self.world  # the mean, in fp32
        self.master.grad = self.host_grad
        self.optimizer.step()
        new = self.master.detach().to(self.dtype).to(self.params[0].device)  # [S] 2 Psi / N bytes up
        full = new.new_empty(self.layout.padded)  # [padded] every rank's shard, in rank order
        dist.all_gather_single(full, new, group=self.group)
        for p, piece in zip(self.params, full[:self.layout.numel].split(self.sizes), strict=True):
            p.copy_(piece.view_as(p))

    def placement_bytes(self) -> dict[str, dict[str, int]]:
        """Bytes this rank holds between steps: `device` {weights: the full 16-bit model}, `host` {master, exp_avg,
        exp_avg_sq, grads: one shard of S = padded / N elements each}."""
        state = self.optimizer.state.get(self.master, {})
        return {"device": {"weights": sum(_nbytes(p) for p in self.params)},
                "host": {"master": _nbytes(self.master), "exp_avg": _nbytes(state.get("exp_avg")),
                         "exp_avg_sq": _nbytes(state.get("exp_avg_sq")), "grads": _nbytes(self.host_grad)}}
