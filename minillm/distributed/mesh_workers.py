"""Worker for `minillm.distributed.launch`: a real 2-D run, data parallel x tensor parallel, on gloo.

`mesh_worker(rank, world, dp, tp, ...)` lays the `world = dp * tp` ranks out as `plan.device_mesh_layout(dp, tp,
pp=1)` (tp innermost: rank = i_dp * tp + i_tp), builds one process group per tp pair and per dp group with
`dist.new_group` (every rank creates every group, in the same order, as torch requires), shards the tiny GPT of
`ddp_workers.tiny_gpt` over its tp group with `tensor.apply_tensor_parallel` (Megatron, vocab-parallel), gives
each dp index its rows of the global batch, and after backward sums the gradients over its dp group and divides
by dp (the data-parallel average; the tp shards of one dp replica hold different slices, so each tp rank averages
its own slice with the same slice of the other replicas). AdamW is elementwise, so each rank steps its shards.
It returns the groups it built, the groups torch's `init_device_mesh(("dp", "pp", "tp"))` gives on the same
ranks, the loss of every step, the full gradients of step 1 and the full parameters after the last step
(gathered over tp) for comparison with `ddp_workers.single_process_run` (one process, the whole batch).

Leaves out: pipeline stages in the same run (see `pipeline_workers`), ZeRO over the dp group, bucketing and
overlap of the dp all-reduce (see `ddp.DDP`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from minillm.distributed.ddp_workers import global_batches, shard, tiny_gpt
from minillm.distributed.plan import device_mesh_layout
from minillm.distributed.tensor import CollectiveCounter, apply_tensor_parallel, gathered, tp_loss


def _torch_mesh_groups(dp: int, tp: int) -> dict[str, list[int]]:
    """This rank's dp / pp / tp group as torch's DeviceMesh builds it (mesh = arange(n).view(dp, pp, tp))."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (dp, 1, tp), mesh_dim_names=("dp", "pp", "tp"))
    return {name: dist.get_process_group_ranks(mesh[name].get_group()) for name in ("dp", "pp", "tp")}


def mesh_worker(rank: int, world: int, dp: int, tp: int, steps: int = 2, batch: int = 6, seq: int = 8,
                lr: float = 1e-2, torch_mesh: bool = True) -> dict[str, Any]:
    if dp * tp != world:
        raise ValueError(f"dp {dp} x tp {tp} = {dp * tp} must equal the {world} launched processes")
    layout = device_mesh_layout(dp, tp, 1)
    groups = {}
    for name in ("tp", "dp"):  # all ranks create all groups, in one order; each keeps the one it belongs to
        for ranks in layout[name]:
            g = dist.new_group(ranks)
            if rank in ranks:
                groups[name] = (g, ranks)
    tp_group, dp_group = groups["tp"][0], groups["dp"][0]
    i_dp = groups["dp"][1].index(rank)  # this rank's index along dp: which rows of the batch it reads
    model = apply_tensor_parallel(tiny_gpt(0), tp_group)  # every rank shards the same full model
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses, first_grads, counts = [], None, {}
    for step, tokens in enumerate(global_batches(steps, batch, seq)):
        rows = shard(tokens, i_dp, dp)  # (batch / dp, seq + 1): the same rows on both ranks of a tp pair
        opt.zero_grad(set_to_none=True)
        with CollectiveCounter() as counter:
            loss = tp_loss(model, rows[:, :-1], rows[:, 1:])
            loss.backward()
        for p in model.parameters():  # data-parallel average of this rank's slice, over its dp group only
            dist.all_reduce(p.grad, group=dp_group)
            p.grad /= dp
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss, group=dp_group)  # the loss of the whole batch: mean of the dp shards' means
        losses.append(mean_loss.item() / dp)
        if step == 0:
            first_grads = gathered(model, grads=True, group=tp_group)
            counts = dict(counter.counts)
        opt.step()
    out = {"rank": rank, "tp_group": groups["tp"][1], "dp_group": groups["dp"][1], "losses": losses,
           "grads": first_grads, "params": gathered(model, group=tp_group), "tp_collectives": counts}
    if torch_mesh:
        out["torch_groups"] = _torch_mesh_groups(dp, tp)
    return out
