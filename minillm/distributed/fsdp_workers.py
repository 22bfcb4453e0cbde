"""Worker functions for `minillm.distributed.launch` (tests, chapter 12): minillm's FSDP against torch's FSDP2.

- `fsdp_worker`: one launch gives everything tests/test_fsdp.py checks: minillm's fully_shard trained for a few
  AdamW steps (global losses, gathered parameters), the bytes held between steps, the forward trace of unsharded
  bytes with and without prefetch, the sharded checkpoint round trip, and torch's FSDP2 `fully_shard` on a CPU
  DeviceMesh (gloo) on the same model and data.
- `notebook_worker` (notebooks/12_zero_fsdp/02_fsdp.ipynb): `fsdp_worker`'s results plus the recorded timeline of
  the fastest of 4 training steps (after a warm-up one) of a larger float32 GPT with and without prefetch
  (`timeline_run`).
"""

from __future__ import annotations

import os
import time
from functools import partial
from typing import Any

import torch
import torch.distributed as dist

from minillm.distributed.ddp_workers import global_batches, shard, tiny_gpt
from minillm.distributed.fsdp import fully_shard
from minillm.distributed.fsdp_checkpoint import full_state_dict, load_sharded, save_sharded


def _global_loss(loss: torch.Tensor, world: int) -> float:
    t = loss.detach().clone()
    dist.all_reduce(t)  # mean of N equal shards' means = the mean over the concatenated batch
    return (t / world).item()


def _train(model: torch.nn.Module, local: list[torch.Tensor], lr: float, world: int) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for tokens in local:
        opt.zero_grad(set_to_none=True)
        loss = model(tokens[:, :-1], tokens[:, 1:])[1]
        loss.backward()
        losses.append(_global_loss(loss, world))
        opt.step()
    return losses


def fsdp_worker(rank: int, world: int, steps: int, batch: int, seq: int, lr: float, ckpt_dir: str) -> dict[str, Any]:
    batches = global_batches(steps, batch, seq)
    local = [shard(x, rank, world) for x in batches]
    out: dict[str, Any] = {}

    model = fully_shard(tiny_gpt(0), prefetch=True)
    st = model.fsdp
    out["unit_numels"] = [u.numel for u in st.units]
    out["unit_bytes"] = [u.padded * u.shard.element_size() for u in st.units]
    out["shard_bytes_before"] = st.shard_bytes()
    out["param_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
    out["layouts"] = [u.layout() for u in st.units]
    loss = model(local[0][:, :-1], local[0][:, 1:])[1]
    loss.backward()  # one backward alone: each shard's .grad is its slice of the averaged gradient
    out["first_grads"] = [u.shard.grad.detach().clone() for u in st.units]
    model.zero_grad(set_to_none=True)
    out["losses"] = _train(model, local, lr, world)
    out["unsharded_after"] = st.unsharded_bytes()
    out["shard_bytes_after"] = st.shard_bytes()
    out["trace_prefetch"] = list(st.trace)
    with torch.no_grad():  # evaluation: no backward will come, so the root is freed at the end of forward too
        out["eval_loss"] = model(batches[0][:, :-1], batches[0][:, 1:])[1].item()
    out["unsharded_after_eval"] = st.unsharded_bytes()
    out["sd"] = full_state_dict(model)

    # sharded checkpoint: each rank its file; a fresh sharded model loads them and gathers the same state
    save_sharded(model, ckpt_dir)
    dist.barrier()
    fresh = fully_shard(tiny_gpt(1))
    load_sharded(fresh, ckpt_dir)
    out["sd_reloaded"] = full_state_dict(fresh)

    # no prefetch: the same numbers, one Block at a time
    plain = fully_shard(tiny_gpt(0), prefetch=False)
    out["losses_no_prefetch"] = _train(plain, local, lr, world)
    out["trace_no_prefetch"] = list(plain.fsdp.trace)

    # torch's FSDP2 on a CPU mesh: each Block, then the root
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard as torch_fully_shard

    mesh = init_device_mesh("cpu", (world,))
    ref = tiny_gpt(0)
    for block in ref.layers:
        torch_fully_shard(block, mesh=mesh)
    torch_fully_shard(ref, mesh=mesh)
    out["torch_losses"] = _train(ref, local, lr, world)
    out["torch_local_bytes"] = sum(p.to_local().numel() * p.element_size() for p in ref.parameters())
    sd = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
          for k, v in ref.state_dict().items()}
    out["torch_sd"] = sd if rank == 0 else {}
    out["errors"] = _errors()
    out["timeline"] = {p: timeline_run(rank, world, p, {}, batch, seq, steps=3) for p in (True, False)}
    out["after_step_loss"] = _forward_without_backward_then_step(local, lr, world)
    for reentrant in (False, True):
        out[f"ckpt_grads_{reentrant}"], out[f"ckpt_unsharded_{reentrant}"] = _checkpointed_grads(local[0], reentrant)
    if rank == 0:
        out["ckpt_files"] = sorted(os.listdir(ckpt_dir))
    return out


def _errors() -> dict[str, str]:
    """The messages of the refusals fully_shard makes (each must name what to change)."""
    cases = {
        "twice": lambda: fully_shard(fully_shard(tiny_gpt(0))),
        "no_layers": lambda: fully_shard(torch.nn.Linear(2, 2)),
        "mixed_dtype": lambda: fully_shard(_mixed()),
    }
    msgs = {}
    for name, fn in cases.items():
        try:
            fn()
            msgs[name] = ""
        except ValueError as e:
            msgs[name] = str(e)
    return msgs


def _mixed() -> torch.nn.Module:
    m = tiny_gpt(0)
    m.layers[0].input_layernorm.float()
    return m


def _forward_without_backward_then_step(local: list[torch.Tensor], lr: float, world: int) -> float:
    """forward + backward, a grad-enabled forward with no backward (the root stays gathered), opt.step(), then
    an evaluation: it must see the stepped parameters, not the root's gathered copy from before the step."""
    model = fully_shard(tiny_gpt(0))
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    x, y = local[0], local[1]
    model(x[:, :-1], x[:, 1:])[1].backward()
    model(y[:, :-1], y[:, 1:])  # no backward follows
    opt.step()
    with torch.no_grad():
        return _global_loss(model(y[:, :-1], y[:, 1:])[1], world)


class _CheckpointedLayers(torch.nn.ModuleList):
    """Iterating yields each Block's call wrapped in torch.utils.checkpoint (the module, hooks included)."""

    reentrant = False

    def __iter__(self):
        from torch.utils.checkpoint import checkpoint

        for layer in super().__iter__():
            # the reentrant variant takes no keyword arguments: bind them (rotate, mask, ...) first
            yield lambda *a, layer=layer, **k: checkpoint(partial(layer, **k), *a, use_reentrant=self.reentrant)


def _checkpointed_grads(tokens: torch.Tensor, reentrant: bool) -> tuple[list[torch.Tensor], int]:
    """One backward with every Block activation-checkpointed: the shards' gradients and the bytes still gathered."""
    model = fully_shard(tiny_gpt(0))
    model.layers.__class__ = _CheckpointedLayers  # same modules and hooks; GPT.forward iterates model.layers
    model.layers.reentrant = reentrant
    model(tokens[:, :-1], tokens[:, 1:])[1].backward()
    return [u.shard.grad.detach().clone() for u in model.fsdp.units], model.fsdp.unsharded_bytes()


def timeline_run(rank: int, world: int, prefetch: bool, model: dict[str, Any], batch: int, seq: int,
                 steps: int = 3) -> dict[str, Any]:
    """`steps` AdamW steps of a float32 GPT (`model`: GPTConfig fields) sharded with `record=True`. Returns the
    timeline of this rank's fastest step after the first (the first warms up; with steps=1, that one): (seconds
    since its forward began, event, unit), every step's duration, which step was kept, the peak unsharded bytes.
    The fastest step is the one least disturbed by whatever else shares the cores."""
    net = fully_shard(tiny_gpt(0, torch.float32, **model), prefetch=prefetch, record=True)
    x = shard(global_batches(1, batch, seq, net.cfg.vocab_size)[0], rank, world)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    st = net.fsdp
    step_s: list[float] = []
    kept: tuple[int, float, list] = (-1, 0.0, [])
    for k in range(steps):
        dist.barrier()  # start together: waiting for the other rank is not part of the step
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        net(x[:, :-1], x[:, 1:])[1].backward()
        opt.step()
        step_s.append(time.perf_counter() - t0)
        time.sleep(0.01)  # let the last future callbacks land before the timeline is copied
        if (k >= 1 or steps == 1) and (kept[0] < 0 or step_s[k] < step_s[kept[0]]):
            kept = (k, t0, list(st.timeline))
    k, t0, timeline = kept
    return {"events": [(t - t0, e, u) for t, e, u in sorted(timeline)], "step_s": step_s, "kept_step": k,
            "peak_unsharded": max(b for _, b in st.trace), "trace": list(st.trace),
            "unit_bytes": [u.padded * u.shard.element_size() for u in st.units], "shard_bytes": st.shard_bytes()}


def notebook_worker(rank: int, world: int, steps: int, batch: int, seq: int, lr: float, ckpt_dir: str,
                    model: dict[str, Any], tl_batch: int, tl_seq: int) -> dict[str, Any]:
    """Everything the FSDP notebook shows, from one launch: `fsdp_worker` (float64 tiny GPT: trajectory, bytes,
    checkpoints, torch's FSDP2) and the timeline of a larger float32 GPT with and without prefetch."""
    out = fsdp_worker(rank, world, steps, batch, seq, lr, ckpt_dir)
    for prefetch in (True, False):
        out[f"timeline_{prefetch}"] = timeline_run(rank, world, prefetch, model, tl_batch, tl_seq, steps=5)
    return out
