"""ZeRO-3 for the training loop: an `fsdp.fully_shard` model and its optimizer, as `minillm train --zero 3` uses them.

`fsdp.fully_shard` shards an unchanged GPT's parameters into one flat 1-D shard per unit (the root, each Block); a
plain AdamW over those shards would decay every element or none (`param_groups` decides by ndim, and a shard mixes
matrices with norm gains). This module adds what `minillm.train.train` needs on top, without touching fsdp.py:

- `FullyShardedDataParallel(model)`: broadcasts rank 0's weights, `fully_shard`s the model in place, and is the
  data-parallel shell `train` expects (`.module`, a no-op `no_sync`: the reduce-scatter runs in every backward, so
  with gradient accumulation each micro-batch reduce-scatters and the shard gradients add up, which is correct,
  only costlier than FSDP2's `set_requires_gradient_sync(False)`). `full_state_dict()` gathers the plain GPT's
  state dict to rank 0 (a collective: every rank calls it); `load_full_state_dict(ckpt)` copies each rank's slice
  of a full checkpoint into its shards (resume, or start from a single-process checkpoint).
- `ShardedOptimizer(model)` (the shell above, or a `fully_shard`ed GPT): `optimizer_cls` (AdamW) over the shards
  with weight_decay 0, plus AdamW's decoupled decay applied element by element where the element belongs to a
  matrix (2+ dimensions, `param_groups`' rule): p *= 1 - lr wd before the inner step, the same operation and order
  as torch's AdamW, so the trajectory equals single-process AdamW with minillm.train's two groups.
  `clip_grad_norm_` uses the global norm (the shards' squared norms all-reduced); `state_dict` / `load_state_dict` /
  `load_full_state_dict` use ZeroOptimizer's shard format (units as flat buffers, parameters named by their
  state-dict keys), so `zero.consolidate_optimizer` gathers them; `load_full_state_dict` also takes a plain
  `make_optimizer` AdamW state (keyed by index: the shell remembers each index's name), so a run without ZeRO
  resumes with --zero 3.

Leaves out: the inner optimizer's hyperparameters in the consolidated state are the shards' (weight_decay 0; the
decay lives in this class); mixed precision; offload.
References: Rajbhandari et al. 2020 (ZeRO), section 5.3; Loshchilov & Hutter 2019 (AdamW's decoupled decay).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from minillm.distributed.fsdp import fully_shard
from minillm.distributed.fsdp_checkpoint import full_state_dict
from minillm.distributed.zero import (
    ZeroDataParallel,
    check_full_state_keys,
    check_shard_state,
    shard_layout,
    shard_of_full_state,
)


def _unit_layout(u: Any, world: int) -> dict[str, Any]:
    lay = shard_layout(u.numel, world)
    return {"names": [keys[0] for keys in u.names], "shapes": [tuple(s) for s in u.shapes], "numel": u.numel,
            "padded": u.padded, "shard": lay.shard, "dtype": str(u.shard.dtype)}


class FullyShardedDataParallel(ZeroDataParallel):
    """`fully_shard(module)` (ZeRO-3) in the shell `minillm.train` expects; see the module docstring."""

    def __init__(self, module: nn.Module, prefetch: bool = True):
        from minillm.train import TrainConfig, param_groups

        super().__init__(module)  # rank 0's full weights everywhere, before they are cut into shards
        # the name of each index of a plain `minillm.train.make_optimizer` state (its groups' order), read before
        # fully_shard removes the parameters: a run without ZeRO resumes onto ZeRO-3 through it
        names = {p: n for n, p in module.named_parameters()}
        self.index_names = [names[p] for g in param_groups(module, TrainConfig()) for p in g["params"]]
        fully_shard(module, prefetch=prefetch)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """The plain GPT's state dict on rank 0 ({} elsewhere). Collective: call it on every rank."""
        return full_state_dict(self.module)

    @torch.no_grad()
    def load_full_state_dict(self, state: dict[str, Any]) -> None:
        """Copy this rank's slice of a full checkpoint (`minillm.checkpoint`'s dict) into the shards; one-line
        ValueError when it was written by another model."""
        from minillm.checkpoint import check_model_config

        check_model_config(self.module, state)
        weights, st = state["model"], self.module.fsdp
        for u in st.units:
            missing = [keys[0] for keys in u.names if keys[0] not in weights]
            if missing:
                raise ValueError(f"the checkpoint has no {missing[0]!r}: use the model configuration it was "
                                 "trained with")
            flat = torch.zeros(u.padded, dtype=u.dtype)  # [P_u] on the CPU: the full unit, then this rank's slice
            for k, keys in enumerate(u.names):
                flat[u.offsets[k]:u.offsets[k] + u.shapes[k].numel()] = weights[keys[0]].reshape(-1)
            lo, hi = shard_layout(u.numel, st.world).bounds(st.rank)
            u.shard.copy_(flat[lo:hi])


class ShardedOptimizer:
    """`optimizer_cls` over the shards of a `fully_shard`ed model with per-element decoupled weight decay (matrices
    only); see the module docstring. `defaults` go to `optimizer_cls` (lr, betas, ...)."""

    per_rank_state = True  # minillm.train saves state_dict() once per rank
    stage = 3

    def __init__(self, model: nn.Module, optimizer_cls: type[torch.optim.Optimizer] = torch.optim.AdamW,
                 weight_decay: float = 0.0, **defaults: Any):
        # the FullyShardedDataParallel shell (it knows the plain optimizer's index -> name) or the sharded model
        self.index_names: list[str] | None = getattr(model, "index_names", None)
        model = model.module if isinstance(model, FullyShardedDataParallel) else model
        if not hasattr(model, "fsdp"):
            raise ValueError("ShardedOptimizer needs a model sharded by minillm.distributed.fsdp.fully_shard")
        self.st, self.weight_decay = model.fsdp, weight_decay
        self.decay = []  # per unit [S] bool: this rank's elements that belong to a matrix (decayed)
        for u in self.st.units:
            mask = torch.zeros(u.padded, dtype=torch.bool)
            for k, shape in enumerate(u.shapes):
                mask[u.offsets[k]:u.offsets[k] + shape.numel()] = len(shape) >= 2
            lo, hi = shard_layout(u.numel, self.st.world).bounds(self.st.rank)
            self.decay.append(mask[lo:hi].to(u.shard.device))
        self.optimizer = optimizer_cls([{"params": [u.shard]} for u in self.st.units], weight_decay=0.0, **defaults)

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        for u, mask, group in zip(self.st.units, self.decay, self.optimizer.param_groups, strict=True):
            if self.weight_decay and u.shard.grad is not None:  # AdamW skips (and does not decay) a gradless one
                # [S]: times the Python scalar, as AdamW's param.mul_(1 - lr wd) (computed in the op's float type:
                # a factor tensor in the shard's dtype would round 0.999 to 1.0 in bf16 and never decay)
                u.shard.copy_(torch.where(mask, u.shard * (1 - group["lr"] * self.weight_decay), u.shard))
        self.optimizer.step()

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        """Clip by the norm of the whole averaged gradient: the shards' squared norms all-reduced (padding: 0)."""
        grads = [u.shard.grad for u in self.st.units if u.shard.grad is not None]
        square = torch.zeros((), dtype=torch.float64, device=self.st.units[0].shard.device)
        for g in grads:
            square += g.double().square().sum()
        dist.all_reduce(square)
        norm = square.sqrt()
        coef = (max_norm / (norm + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.to(g.dtype))
        return norm

    def _layout(self) -> list[dict[str, Any]]:
        return [_unit_layout(u, self.st.world) for u in self.st.units]

    def state_dict(self) -> dict[str, Any]:
        """This rank's shard, in ZeroOptimizer's format (`zero.consolidate_optimizer` reads it); live tensors, as
        `ZeroOptimizer.state_dict`: save it before the next step."""
        return {"format": "minillm-zero-shard", "stage": 3, "rank": self.st.rank, "world": self.st.world,
                "layout": self._layout(), "master": [u.shard.detach() for u in self.st.units],
                "optimizer": self.optimizer.state_dict()}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        check_shard_state(state, self.st.world, self.st.rank, self._layout())
        for u, master in zip(self.st.units, state["master"], strict=True):
            u.shard.copy_(master)
        self.optimizer.load_state_dict(state["optimizer"])

    def load_full_state_dict(self, full: dict[str, Any]) -> None:
        """Re-shard a full state onto this rank: consolidated ({"state": {name: ...}}, any world size), or a plain
        `minillm.train.make_optimizer` AdamW's (keyed by index; needs the FullyShardedDataParallel shell)."""
        keys = list(full.get("state", {}))
        if self.index_names is not None and keys and all(isinstance(k, int) for k in keys):
            if max(keys) >= len(self.index_names):
                raise ValueError(f"the optimizer state has parameter index {max(keys)}, this model "
                                 f"{len(self.index_names)} parameters: it was saved for another model")
            full = {**full, "state": {self.index_names[k]: v for k, v in full["state"].items()}}
        check_full_state_keys(full, [keys[0] for u in self.st.units for keys in u.names])
        for u in self.st.units:
            names = [keys[0] for keys in u.names]
            state = shard_of_full_state(full, names, list(u.shapes), shard_layout(u.numel, self.st.world),
                                        self.st.rank)
            if state is not None:
                self.optimizer.state[u.shard] = state
