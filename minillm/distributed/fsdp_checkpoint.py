"""Checkpoints of a model sharded by `minillm.distributed.fsdp.fully_shard` (ZeRO-3): full and sharded.

- `full_state_dict(model)`: the plain model's state dict, every key (tied ones too), gathered to rank 0 unit by unit
  (an all-gather per unit; only rank 0 keeps the slices). What FSDP's full state dict and DeepSpeed's
  `stage3_gather_16bit_weights_on_model_save` give: a file any plain `GPT` loads.
- `save_sharded(model, dir)` / `load_sharded(model, dir)`: each rank writes and reads only its own shards, with the
  units' layout (names, shapes, offsets, padding), so saving costs no communication and no full copy anywhere.
- `consolidate_sharded(dir)`: the full state dict rebuilt offline from the N shard files, without a process group
  (what DeepSpeed's `zero_to_fp32.py` does).

Leaves out: optimizer states (a plain AdamW over the shards has shard-shaped states: save them per rank; ZeRO's
sharded optimizer states and their consolidation are `minillm.distributed.zero_checkpoint`), loading a sharded
checkpoint on another number of ranks without consolidating first (refused with what to do), and asynchronous or
distributed-filesystem writes (torch.distributed.checkpoint).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from minillm.distributed.fsdp import FSDPState, Unit, _slices


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if not k.endswith("fsdp_shard") and isinstance(v, torch.Tensor)}


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The plain model's state dict (every key, tied ones too) on rank 0; {} on the other ranks. Collective."""
    st: FSDPState = model.fsdp
    sd = _buffers(model)
    for u in st.units:
        flat = torch.empty(u.padded, dtype=u.dtype, device=u.shard.device)
        dist.all_gather(list(flat.chunk(st.world)), u.shard.detach())
        if st.rank == 0:  # the other ranks only take part in the gather: no second full copy of the model there
            sd.update(_slices(u, flat))
        del flat
    return sd if st.rank == 0 else {}


def save_sharded(model: nn.Module, directory: str) -> str:
    """Rank r writes `directory/shard_r.pt`: its shards, the layout and (rank 0) the buffers. Returns the path."""
    st: FSDPState = model.fsdp
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"shard_{st.rank}.pt")
    torch.save({"rank": st.rank, "world": st.world, "units": [u.layout() for u in st.units],
                "shards": [u.shard.detach().clone() for u in st.units],
                "buffers": _buffers(model) if st.rank == 0 else {}}, path)
    return path


def load_sharded(model: nn.Module, directory: str) -> None:
    """Copy this rank's saved shards into the model's (same world size and layout)."""
    st: FSDPState = model.fsdp
    ck = torch.load(os.path.join(directory, f"shard_{st.rank}.pt"), weights_only=True)
    if ck["world"] != st.world:
        raise ValueError(f"checkpoint saved by {ck['world']} ranks, loading on {st.world}: consolidate_sharded it "
                         "and shard the full state dict again")
    with torch.no_grad():
        for u, s in zip(st.units, ck["shards"], strict=True):
            u.shard.copy_(s)


def consolidate_sharded(directory: str) -> dict[str, torch.Tensor]:
    """The full state dict from the N files of `save_sharded`, offline (no process group)."""
    first = torch.load(os.path.join(directory, "shard_0.pt"), weights_only=True)
    cks = [first] + [torch.load(os.path.join(directory, f"shard_{r}.pt"), weights_only=True)
                     for r in range(1, first["world"])]
    sd = dict(first["buffers"])
    for j, lay in enumerate(first["units"]):
        flat = torch.cat([ck["shards"][j] for ck in cks])  # (P_u,)
        u = Unit(lay["name"], None, [], lay["names"], [torch.Size(s) for s in lay["shapes"]], lay["offsets"],
                 lay["numel"], lay["padded"], flat.dtype)
        sd.update(_slices(u, flat))
    return sd
