"""ZeRO's sharded optimizer checkpoints, offline half: check a shard, consolidate N shards, cut one out of a full state.

`ZeroOptimizer.state_dict()` (and zero3's `ShardedOptimizer`) gives one rank's shard: {"format":
"minillm-zero-shard", "stage", "rank", "world", "layout" (per flat buffer: parameter names, shapes, numel, padded,
shard, dtype), "master" (the shard copies), "optimizer" (the inner optimizer's state_dict over the shard tensors)}.
This module holds what works on those dicts without a process group:

- `check_shard_state`: a one-line ValueError unless the shard fits this rank, world size and layout;
- `consolidate_optimizer(shards)`: the N shards -> one full state keyed by parameter name, what a single-process
  AdamW's state_dict holds (DeepSpeed's `zero_to_fp32.py` does the same for the fp32 master weights);
- `shard_of_full_state`: rank r's slice of such a full state for one flat buffer (re-sharding onto any world size).

Leaves out: consolidating the master weights (the model's full weights are in ckpt.pt already), optimizers whose
state is not element-wise (e.g. Adafactor's factored moments). References: Rajbhandari et al. 2020 (ZeRO), section
5; DeepSpeed, `deepspeed/utils/zero_to_fp32.py` (the offline consolidation it ships with each checkpoint).
Imported and re-exported by `minillm.distributed.zero` (split out to keep that module readable).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from minillm.distributed.zero import ShardLayout


def check_shard_state(state: Any, world: int, rank: int, layout: list[dict[str, Any]]) -> None:
    """One-line ValueError unless `state` is a ZeRO optimizer shard saved by rank `rank` of `world` ranks with
    `layout` (the flat buffers' sizes, parameter names and shapes)."""
    if not isinstance(state, dict) or state.get("format") != "minillm-zero-shard":
        raise ValueError("not a ZeroOptimizer shard (no format 'minillm-zero-shard'): for a full optimizer "
                         "state use load_full_state_dict")
    if state["world"] != world or state["layout"] != layout:
        what = (f"saved by {state['world']} ranks, loading on {world}" if state["world"] != world
                else "saved with another parameter layout (model or parameter groups changed)")
        raise ValueError(f"optimizer shard {what}: consolidate the shards (minillm.distributed.zero."
                         "consolidate_optimizer) and re-shard the full state with load_full_state_dict")
    if state["rank"] != rank:
        raise ValueError(f"optimizer shard of rank {state['rank']} given to rank {rank}: load "
                         f"optim_shard_{rank}.pt on rank {rank}")


def check_full_state_keys(full: dict[str, Any], names: list[Any]) -> None:
    """One-line ValueError when a full optimizer state has entries but none for `names` (this optimizer's parameter
    keys): e.g. a plain AdamW state keyed by index given to an optimizer keyed by name. Re-sharding it would find
    nothing and silently resume with fresh moments and step counters."""
    keys = list(full.get("state", {}))
    if keys and not any(n in full["state"] for n in names):
        raise ValueError(f"the full optimizer state is keyed by {keys[0]!r}, ..., this optimizer's parameters by "
                         f"{names[0]!r}, ...: none match, so no moment would load; key the state as this optimizer "
                         "does (consolidate_optimizer keys by name when the groups carry 'param_names')")


def shard_of_full_state(full: dict[str, Any], names: list[Any], shapes: list[torch.Size], layout: ShardLayout,
                        rank: int) -> dict[str, Any] | None:
    """Rank `rank`'s slice of the per-parameter states `full["state"][name]` of one flat buffer (parameters `names`
    of `shapes`, laid out by `layout`): per-element tensors flattened, padded and cut to [S]; scalars (AdamW's step)
    as they are. None when no parameter has a state yet (no step taken)."""
    saved = [full["state"].get(n) for n in names]
    if all(s is None for s in saved):
        return None
    if any(s is None for s in saved):
        missing = names[[s is None for s in saved].index(True)]
        raise ValueError(f"the full optimizer state has no entry for parameter {missing!r}: it was saved for "
                         "another model (or keyed otherwise: consolidate_optimizer's keys are what loads)")
    lo, hi = layout.bounds(rank)
    new = {}
    for key, value in saved[0].items():
        if isinstance(value, torch.Tensor) and value.dim() > 0:  # shaped as the parameter: m, v
            for n, s, shape in zip(names, saved, shapes, strict=True):
                if tuple(s[key].shape) != tuple(shape):
                    raise ValueError(f"the full optimizer state's {key} of {n!r} is {tuple(s[key].shape)}, the "
                                     f"parameter {tuple(shape)}: it was saved for another model")
            parts = [s[key].reshape(-1) for s in saved] + [value.new_zeros(layout.padded - layout.numel)]
            new[key] = torch.cat(parts)[lo:hi].clone()  # [S]
        else:
            new[key] = value.clone() if isinstance(value, torch.Tensor) else value  # e.g. AdamW's step
    return new


def consolidate_optimizer(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """One full optimizer state from the N per-rank `ZeroOptimizer.state_dict()`s (rank order): {"state": {name:
    {"step", "exp_avg", "exp_avg_sq"} shaped as the parameter}, "param_groups": [{hyperparameters, "params": names}]},
    with names from "param_names" (else parameter indices, torch's own keys). For AdamW it holds what a
    single-process `torch.optim.AdamW(...).state_dict()` holds after the same steps (DeepSpeed's zero_to_fp32 does
    this for the master weights). Offline: no process group."""
    if not shards:
        raise ValueError("no optimizer shards given")
    first = shards[0]
    world = first["world"]
    if [s["rank"] for s in shards] != list(range(world)) or any(s["layout"] != first["layout"] for s in shards):
        raise ValueError(f"need the {world} shards of one run in rank order 0..{world - 1}, got ranks "
                         f"{[s['rank'] for s in shards]}: load optim_shard_0.pt .. optim_shard_{world - 1}.pt")
    state: dict[Any, dict[str, Any]] = {}
    groups = []
    for j, lay in enumerate(first["layout"]):
        inner = [s["optimizer"]["state"].get(j, {}) for s in shards]  # bucket j's shard is inner parameter j
        sizes = [math.prod(shape) for shape in lay["shapes"]]
        per_param: list[dict[str, Any]] = [{} for _ in lay["names"]]
        for key, value in inner[0].items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:  # [S]: m, v
                flat = torch.cat([st[key] for st in inner])[:lay["numel"]]  # [numel]: padding dropped
                for d, piece, shape in zip(per_param, flat.split(sizes), lay["shapes"], strict=True):
                    d[key] = piece.reshape(shape).clone()
            else:  # a per-shard scalar (AdamW's step): the same on every rank and for every parameter
                for d in per_param:
                    d[key] = value.clone() if isinstance(value, torch.Tensor) else value
        if inner[0]:
            state.update(zip(lay["names"], per_param, strict=True))
        hyper = {k: v for k, v in first["optimizer"]["param_groups"][j].items() if k != "params"}
        groups.append({**hyper, "params": list(lay["names"])})
    return {"state": state, "param_groups": groups}
