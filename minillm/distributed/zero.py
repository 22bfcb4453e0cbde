"""ZeRO stages 1 and 2 from scratch: the optimizer states (and gradients) partitioned over the data-parallel ranks.

Data parallelism (`minillm.distributed.ddp`) keeps a full copy of every model state on every rank: weights,
gradients and optimizer states. ZeRO (Rajbhandari et al. 2020) removes the redundancy one state at a time:

- stage 1, P_os: the optimizer states are partitioned. Each rank still runs forward and backward on the full
  model and all-reduces the full gradient (as DDP), but keeps AdamW's states (and the fp32 master weights in
  mixed precision) only for its 1/N of the parameters, steps that shard, then all-gathers the updated shards so
  that every rank has the full new weights again;
- stage 2, P_os+g: the gradients are partitioned too. Instead of all-reduce, a reduce-scatter leaves each rank
  with the averaged gradient of its own shard only, and the full gradient is freed. Reduce-scatter + all-gather
  move the same bytes as one all-reduce (a ring all-reduce IS a reduce-scatter followed by an all-gather), so
  stage 2 costs DDP's communication: 2 (N-1)/N Psi elements per rank per step (paper, section 7.2.1). Stage 1
  as built here (all-reduce, then all-gather of the updated shards) moves 3 (N-1)/N Psi, 1.5x DDP, as torch's
  ZeroRedundancyOptimizer (DDP's all-reduce, then one broadcast per parameter, or per rank's bucket with
  `parameters_as_bucket_view=True`); the paper's 2 Psi for P_os assumes the
  gradient is reduce-scattered (a rank only steps its shard), i.e. stage 2's communication.

`ZeroOptimizer(params, optimizer_cls=torch.optim.AdamW, stage=1|2, **defaults)` wraps an ordinary optimizer;
the model is unchanged and knows nothing (torchtitan's rule):

1. Layout. Each parameter group is flattened, per dtype, into one buffer of `numel` elements padded with zeros
   to a multiple of N (`shard_layout`): rank r owns elements [r S, (r+1) S) with S = padded / N. A shard may cut
   a parameter in two; that is fine because Adam-style optimizers are element-wise. (torch's
   `ZeroRedundancyOptimizer` instead gives each rank whole parameters, balanced greedily by size: no padding,
   but unequal shards, and it broadcasts each of its parameters instead of one all-gather of a flat buffer.)
2. Weight decay groups: one flat buffer per (parameter group, dtype), so every shard lies in one group and the
   inner optimizer gets that group's hyperparameters unchanged. Pass `minillm.train.param_groups(model, cfg)`
   (matrices decayed, vectors not) exactly as to AdamW. The price: each group is padded separately.
3. Shards. Rank r copies its slice of the flat parameters into a shard tensor (the "master" shard: in mixed
   precision this is the fp32 copy; here it has the parameters' dtype) and builds `optimizer_cls` over the shard
   tensors only, so the inner optimizer's states exist for 1/N of the parameters.
4. `step()` (after `loss.backward()`, on every rank; no DDP wrapper: ZeRO does the gradient averaging):
   flatten each buffer's gradients (a missing `.grad` counts as zeros); stage 1 all-reduces the flat gradient,
   and every `.grad` becomes a view into that one averaged buffer (each rank keeps the full gradient), the shard
   gradient too; stage 2 reduce-scatters it into the shard's gradient and sets every `.grad` to None (what is
   left is the shard's gradient: `memory_bytes()`). The inner optimizer steps the shards, then
   `all_gather_single` collects every rank's updated shard and the slices are copied into the parameters.

Collectives: `dist.reduce_scatter_single` / `dist.all_gather_single` (torch 2.13's names for
`reduce_scatter_tensor` / `all_gather_into_tensor`, which it deprecates); gloo implements both for CPU tensors
(checked on torch 2.13 with 2 ranks), so nothing is emulated with all_reduce.

Memory per rank (`zero_memory`; the paper's figure 1 and section 5, mixed precision: 2-byte weights and
gradients, K = 12 bytes of fp32 master weights + Adam's m and v per parameter): baseline (2 + 2 + K) Psi; P_os:
2 Psi + 2 Psi + K Psi / N; P_os+g: 2 Psi + (2 + K) Psi / N; P_os+g+p (stage 3): (2 + 2 + K) Psi / N. For
Psi = 7.5e9, N = 64: 120, 31.4, 16.6, 1.9 GB. For the float64 model of the tests the same accounting holds with
8-byte weights and gradients and K = 24 (the float64 master shard + m + v), counted on the padded buffers.

Training with it (`minillm train --zero 1|2`, `minillm.train.train`): `clip_grad_norm_(max_norm)` clips by the norm
of the averaged gradient (it averages first, then all-reduces the shards' squared norms: one number); `state_dict()`
is this rank's shard (master shard, inner optimizer state, and the layout: world size, flat sizes, parameter names
and shapes), `load_state_dict` restores it on the same rank of a run with the same layout (else a one-line error);
`consolidate_optimizer(shards)` turns the N shards into one full state keyed by parameter (what a single-process
AdamW's state_dict holds; DeepSpeed's zero_to_fp32 does the same for the weights) and `load_full_state_dict`
re-shards such a state onto any world size (those offline functions are in `zero_checkpoint.py`, re-exported here).
`ZeroDataParallel` is the model's data-parallel shell (no hooks).

Leaves out: stage 3 (parameters partitioned and gathered layer by layer: `fsdp.py`, and `zero3.py` for training);
reducing gradient buckets during backward as they become ready (DeepSpeed's stage 2 does, so the full gradient never
exists at once; here it exists until `step()` frees it, so the PEAK is stage 1's, only what stays between steps is
smaller); overlapping the all-gather with the next forward; a master shard in a dtype other than the parameters'
(bf16 model + fp32 master); learning-rate schedulers (set `lr` in `param_groups` yourself). A parameter
that gets no gradient on any rank is stepped with a zero gradient (its buffer slice is shared with others, so it
cannot be skipped): AdamW's weight decay and old momentum still move it, where plain AdamW skips a `.grad = None`.

References: Rajbhandari, Rasley, Ruwase, He 2020, "ZeRO: Memory Optimizations Toward Training Trillion
Parameter Models" (SC20), section 5 and figure 1 (memory), section 7 (communication volume); PyTorch docs,
"ZeroRedundancyOptimizer" (torch.distributed.optim).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from minillm.distributed.ddp import sync_module_states

# the offline checkpoint half lives in zero_checkpoint.py; re-exported so `from minillm.distributed.zero import` works
from minillm.distributed.zero_checkpoint import (  # noqa: F401
    check_full_state_keys,
    check_shard_state,
    consolidate_optimizer,
    shard_of_full_state,
)

GB = 10 ** 9  # the paper's GB are decimal


def zero_memory(psi: float, n_ranks: int, stage: int, k: float = 12, weight_bytes: float = 2,
                grad_bytes: float = 2, pad: bool = False) -> float:
    """Bytes of model states (weights + gradients + optimizer states) per rank for ZeRO `stage` 0 (plain data
    parallel), 1 (P_os), 2 (P_os+g) or 3 (P_os+g+p); Rajbhandari et al. 2020, figure 1. `k`: optimizer bytes per
    parameter (12 = fp32 master + m + v). `pad=True` counts what flat buffers padded to a multiple of N hold
    (`psi` an int): a shard has ceil(psi / N) elements, a full flat gradient (stages 0-1) N ceil(psi / N); the
    weights of stages 0-2 are the model's own tensors, psi elements."""
    if stage not in (0, 1, 2, 3):
        raise ValueError(f"stage must be 0 (data parallel), 1, 2 or 3, got {stage!r}")
    if not (isinstance(n_ranks, int) and n_ranks >= 1):
        raise ValueError(f"n_ranks must be an int >= 1, got {n_ranks!r}")
    per_rank = math.ceil(psi / n_ranks) if pad else psi / n_ranks  # elements of one shard
    weights = weight_bytes * (per_rank if stage >= 3 else psi)
    grads = grad_bytes * (per_rank if stage >= 2 else (per_rank * n_ranks if pad else psi))
    states = k * (per_rank if stage >= 1 else psi)
    return weights + grads + states


@dataclass(frozen=True)
class ShardLayout:
    """One flat buffer of `numel` elements padded to `padded` = N x `shard`; rank r owns [r shard, (r+1) shard)."""

    numel: int
    n_ranks: int
    shard: int
    padded: int

    def bounds(self, rank: int) -> tuple[int, int]:
        """[start, end) of `rank`'s shard in the flat buffer (end may pass numel: the padding)."""
        return rank * self.shard, (rank + 1) * self.shard

    def owned(self, rank: int, sizes: Iterable[int]) -> list[tuple[int, int, int]]:
        """(parameter index, start, end) within each parameter of the elements `rank` owns, for parameters of
        `sizes` elements laid out one after another."""
        lo, hi = self.bounds(rank)
        pieces, offset = [], 0
        for i, n in enumerate(sizes):
            a, b = max(lo, offset), min(hi, offset + n)
            if a < b:
                pieces.append((i, a - offset, b - offset))
            offset += n
        return pieces


def shard_layout(numel: int, n_ranks: int) -> ShardLayout:
    """Pad `numel` up to a multiple of `n_ranks` and split it into equal shards."""
    if numel < 1 or n_ranks < 1:
        raise ValueError(f"need numel >= 1 and n_ranks >= 1, got numel={numel}, n_ranks={n_ranks}")
    shard = math.ceil(numel / n_ranks)
    return ShardLayout(numel, n_ranks, shard, shard * n_ranks)


class _Bucket:
    """The parameters of one (group, dtype): their flat layout and this rank's shard tensor."""

    def __init__(self, params: list[torch.Tensor], n_ranks: int, rank: int):
        self.params = params
        self.names: list[Any] = list(range(len(params)))  # state-dict keys of the parameters (set by the optimizer)
        self.sizes = [p.numel() for p in params]
        self.layout = shard_layout(sum(self.sizes), n_ranks)
        lo, hi = self.layout.bounds(rank)
        # the master shard [S]: a leaf tensor the inner optimizer owns; the padding elements are zeros
        self.shard = self.flat([p.detach() for p in params])[lo:hi].clone()

    def flat(self, tensors: list[torch.Tensor | None]) -> torch.Tensor:
        """The tensors (None = zeros) flattened, concatenated and zero-padded: [padded]."""
        p0 = self.params[0]
        parts = [p0.new_zeros(n) if t is None else t.detach().reshape(-1)
                 for t, n in zip(tensors, self.sizes, strict=True)]
        parts.append(p0.new_zeros(self.layout.padded - self.layout.numel))
        return torch.cat(parts)

    def pieces(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views of `flat` [padded] shaped as the parameters."""
        return [piece.view_as(p) for p, piece in
                zip(self.params, flat[:self.layout.numel].split(self.sizes), strict=True)]


class ZeroOptimizer:
    """ZeRO stage 1 or 2 around `optimizer_cls` (default AdamW): see the module docstring. `params` are tensors
    or param-group dicts, as for any torch optimizer; `**defaults` go to `optimizer_cls`."""

    def __init__(self, params: Iterable[Any], optimizer_cls: type[torch.optim.Optimizer] = torch.optim.AdamW,
                 stage: int = 1, process_group: dist.ProcessGroup | None = None, **defaults: Any):
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 (optimizer states sharded) or 2 (states and gradients sharded), "
                             f"got {stage!r}; stage 3 shards the parameters too and needs the model: "
                             "minillm.distributed.fsdp")
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("ZeroOptimizer needs torch.distributed initialised: call dist.init_process_group "
                               "first (or run under torchrun / minillm.distributed.launch)")
        self.stage, self.group = stage, process_group
        self.world, self.rank = dist.get_world_size(process_group), dist.get_rank(process_group)
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.buckets: list[_Bucket] = []
        inner_groups = []
        index = 0  # parameters are named by a group's "param_names" (torch's convention), else by their index
        for g in groups:
            given = list(g["params"])
            names = list(g.get("param_names") or range(index, index + len(given)))
            index += len(given)
            trainable = [(n, p) for n, p in zip(names, given, strict=True) if p.requires_grad]
            for dtype in dict.fromkeys(p.dtype for _, p in trainable):  # one flat buffer per (group, dtype)
                chosen = [(n, p) for n, p in trainable if p.dtype == dtype]
                bucket = _Bucket([p for _, p in chosen], self.world, self.rank)
                bucket.names = [n for n, _ in chosen]
                self.buckets.append(bucket)
                inner_groups.append({**{k: v for k, v in g.items() if k not in ("params", "param_names")},
                                     "params": [bucket.shard]})
        if not self.buckets:
            raise ValueError("ZeroOptimizer got no trainable parameters (all have requires_grad=False?)")
        self.optimizer = optimizer_cls(inner_groups, **defaults)

    @property
    def param_groups(self) -> list[dict]:
        """The inner optimizer's groups (one per buffer): set `lr` here, as on any optimizer."""
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._reduced = False  # a clip_grad_norm_ whose step was skipped: the next step averages its own gradients
        for b in self.buckets:
            for p in b.params:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()
            b.shard.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """Average the gradients over the ranks, step this rank's shards, all-gather the new parameters."""
        if not self._reduced:  # clip_grad_norm_ may have averaged them already
            self._reduce()
        self._reduced = False
        self.optimizer.step()
        for b in self.buckets:
            full = b.shard.new_empty(b.layout.padded)  # [padded] = every rank's updated shard, in rank order
            dist.all_gather_single(full, b.shard.detach(), group=self.group)
            for p, piece in zip(b.params, b.pieces(full), strict=True):
                p.copy_(piece)

    _reduced = False  # set by _reduce (the gradients of this step are averaged), cleared by step

    @torch.no_grad()
    def _reduce(self) -> None:
        """The communication half of `step`: every bucket's gradient averaged (stage 1: all, stage 2: the shard)."""
        self._reduced = True
        for b in self.buckets:
            flat_grad = b.flat([p.grad for p in b.params])  # [padded]: this rank's local gradient
            lo, hi = b.layout.bounds(self.rank)
            if self.stage == 1:
                dist.all_reduce(flat_grad, group=self.group)  # the sum over ranks, every element
                flat_grad /= self.world
                # .grad tensors become views into the averaged buffer: one full (padded) gradient, no second copy
                for p, piece in zip(b.params, b.pieces(flat_grad), strict=True):
                    p.grad = piece
                b.shard.grad = flat_grad[lo:hi]  # [S], a view as well
            else:
                shard_grad = flat_grad.new_empty(b.layout.shard)  # [S]
                dist.reduce_scatter_single(shard_grad, flat_grad, group=self.group)  # the sum, this rank's slice
                shard_grad /= self.world
                b.shard.grad = shard_grad
                for p in b.params:
                    p.grad = None  # the full gradient is dropped: only the shard's S elements stay
                del flat_grad

    def memory_bytes(self) -> dict[str, int]:
        """Bytes this rank holds, measured from the tensors: `weights` (the model's full parameters), `grads`
        (every distinct storage behind the parameters' and the shards' `.grad`), `master` (the shard copies),
        `optimizer` (the inner optimizer's state tensors the size of a shard, e.g. AdamW's m and v) and
        `scalars` (its one-element states, e.g. AdamW's step counters: not in the formula)."""
        out = dict.fromkeys(("weights", "grads", "master", "optimizer", "scalars"), 0)
        grad_storages: dict[int, int] = {}  # views share a storage: count each storage once
        for b in self.buckets:
            out["weights"] += sum(p.numel() * p.element_size() for p in b.params)
            for g in [p.grad for p in b.params] + [b.shard.grad]:
                if g is not None:
                    grad_storages[g.untyped_storage().data_ptr()] = g.untyped_storage().nbytes()
            out["master"] += b.shard.numel() * b.shard.element_size()
            for value in self.optimizer.state.get(b.shard, {}).values():
                if isinstance(value, torch.Tensor):
                    big = value.numel() == b.layout.shard and value.numel() > 1
                    out["optimizer" if big else "scalars"] += value.numel() * value.element_size()
        out["grads"] = sum(grad_storages.values())
        return out

    # -- gradient clipping and sharded checkpoints (added for `minillm train --zero`) ----------------------------
    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """`torch.nn.utils.clip_grad_norm_` of the AVERAGED gradient (call it between backward and `step`): averages
        now (the communication `step` would do), sums the squares of this rank's shard, all-reduces that one number
        and scales the gradients by min(1, max_norm / (norm + 1e-6)). Returns the total norm, the same on every
        rank. (Clipping the model's `.grad` instead would use each rank's local gradient: a different norm.)"""
        if not self._reduced:
            self._reduce()
        square = sum(b.shard.grad.double().square().sum() for b in self.buckets)  # padding: zeros
        square = torch.as_tensor(square, dtype=torch.float64, device=self.buckets[0].shard.device)
        dist.all_reduce(square, group=self.group)
        norm = square.sqrt()
        coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        for b in self.buckets:
            # stage 1: the .grad views and the shard's view share one buffer; scale each element once
            for g in ([p.grad for p in b.params] if self.stage == 1 else [b.shard.grad]):
                g.mul_(coef.to(g.dtype))
        return norm.to(self.buckets[0].shard.dtype)

    per_rank_state = True  # `minillm.train` saves `state_dict()` once per rank (optim_shard_<rank>.pt)

    def state_dict(self) -> dict[str, Any]:
        """This rank's shard of the optimizer: the master shards, the inner optimizer's state_dict (AdamW's m, v and
        step of the shard elements), and the layout (world size, flat sizes, parameter names and shapes) they need.
        Save one per rank; `load_state_dict` on the same rank of a run with the same layout resumes bit for bit.
        The tensors are the live ones, as in torch's `Optimizer.state_dict()` (no second copy of the states in device
        memory at each checkpoint, which ZeRO exists to avoid): save it before the next step."""
        return {"format": "minillm-zero-shard", "stage": self.stage, "rank": self.rank, "world": self.world,
                "layout": self._layout(), "master": [b.shard.detach() for b in self.buckets],
                "optimizer": self.optimizer.state_dict()}

    def _layout(self) -> list[dict[str, Any]]:
        return [{"names": list(b.names), "shapes": [tuple(p.shape) for p in b.params], "numel": b.layout.numel,
                 "padded": b.layout.padded, "shard": b.layout.shard, "dtype": str(b.shard.dtype)}
                for b in self.buckets]

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore this rank's shard from `state_dict()` (same world size and layout; stage 1 and 2 shards are the
        same thing, so either loads into either). A different world size or layout: one-line ValueError."""
        check_shard_state(state, self.world, self.rank, self._layout())
        for b, master in zip(self.buckets, state["master"], strict=True):
            b.shard.copy_(master)
        self.optimizer.load_state_dict(state["optimizer"])

    @torch.no_grad()
    def load_full_state_dict(self, full: dict[str, Any]) -> None:
        """Re-shard a full optimizer state ({"state": {name: {...}}, ...} as `consolidate_optimizer` returns, any
        world size) onto this run's ranks. The master shards are copied from the parameters: restore the model's
        weights first."""
        check_full_state_keys(full, [n for b in self.buckets for n in b.names])
        for b in self.buckets:
            lo, hi = b.layout.bounds(self.rank)
            b.shard.copy_(b.flat([p.detach() for p in b.params])[lo:hi])
            state = shard_of_full_state(full, b.names, [p.shape for p in b.params], b.layout, self.rank)
            if state is not None:
                self.optimizer.state[b.shard] = state


class ZeroDataParallel(nn.Module):
    """The data-parallel shell of a ZeRO run: `forward` is the module's; nothing happens in backward (the gradients
    are averaged by `ZeroOptimizer.step` / `clip_grad_norm_`, or by fsdp's reduce-scatter), so `no_sync()` has
    nothing to suspend. It gives `minillm.train` what it expects of a data-parallel model (`.module`, `no_sync`)
    and broadcasts rank 0's parameters and buffers at construction, as DDP does."""

    def __init__(self, module: nn.Module, process_group: dist.ProcessGroup | None = None):
        super().__init__()
        self.module = module
        sync_module_states(module, process_group)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    @contextmanager
    def no_sync(self) -> Iterator[None]:
        yield
