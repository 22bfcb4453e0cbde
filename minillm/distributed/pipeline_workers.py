"""Worker functions for `minillm.distributed.launch`: minillm's pipeline vs one process and vs torch's pipelining.

Every rank builds the same float64 untied 4-layer GPT (`pipe_gpt`), keeps its stage (`split_gpt`) and trains
it with AdamW on its own parameters (AdamW is elementwise, so per-stage optimisers equal one over the model).

- `single_process_reference(...)`: the whole batch in one process (run it in the caller's process).
- `pipeline_worker(rank, world, ...)`: for each schedule ("gpipe", "1f1b"): the stage's gradients (by
  parameter name) of each step, its parameters after the steps, the losses, the peak number of micro-batches
  whose activations it held; then torch's
  `torch.distributed.pipelining` (`PipelineStage` + `ScheduleGPipe` / `Schedule1F1B`) on the same split.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from minillm.distributed.ddp_workers import global_batches, tiny_gpt
from minillm.distributed.pipeline import run_pipeline, split_gpt
from minillm.distributed.schedules import gpipe_schedule, one_f_one_b_schedule
from minillm.model import GPT

N_LAYER = 4
SCHEDULES = {"gpipe": gpipe_schedule, "1f1b": one_f_one_b_schedule}


def pipe_gpt(seed: int = 0) -> GPT:
    """The pipeline test model: tiny_gpt with 4 layers and an untied head (stage 0 and the last own one each)."""
    return tiny_gpt(seed, n_layer=N_LAYER, tie_embeddings=False)


def _names(model: GPT, module: torch.nn.Module) -> list[str]:
    ids = {id(p) for p in module.parameters()}
    return [n for n, p in model.named_parameters() if id(p) in ids]


def single_process_reference(steps: int, batch: int, seq: int, lr: float = 1e-2) -> dict[str, Any]:
    """One process, whole batch: {"grads": [{name: grad}] per step, "params": {name: tensor}, "losses"}."""
    model = pipe_gpt(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    out: dict[str, Any] = {"grads": [], "losses": []}
    for tokens in global_batches(steps, batch, seq):
        opt.zero_grad(set_to_none=True)
        loss = model(tokens[:, :-1], tokens[:, 1:])[1]
        loss.backward()
        out["grads"].append({n: p.grad.clone() for n, p in model.named_parameters()})
        out["losses"].append(loss.item())
        opt.step()
    out["params"] = {n: p.detach().clone() for n, p in model.named_parameters()}
    return out


def _minillm_run(rank: int, world: int, name: str, steps: int, batch: int, seq: int, m: int,
                 lr: float) -> dict[str, Any]:
    model = pipe_gpt(0)
    stage = split_gpt(model, world)[rank]
    names = _names(model, stage)
    params = dict(model.named_parameters())
    opt = torch.optim.AdamW(stage.parameters(), lr=lr)
    schedule = SCHEDULES[name](world, m)
    act_shape = (batch // m, seq, model.cfg.d_model)  # (b, T, d)
    out: dict[str, Any] = {"grads": [], "losses": [], "peak_saved": []}
    for tokens in global_batches(steps, batch, seq):
        opt.zero_grad(set_to_none=True)
        stats: dict[str, int] = {}
        out["losses"].append(run_pipeline(stage, rank, world, schedule, tokens, act_shape, stats=stats))
        out["peak_saved"].append(stats["peak_saved"])
        out["grads"].append({n: params[n].grad.clone() for n in names})
        opt.step()
    out["params"] = {n: params[n].detach().clone() for n in names}
    return out


def _torch_run(rank: int, world: int, name: str, steps: int, batch: int, seq: int, m: int,
               lr: float) -> dict[str, Any]:
    """The same split and steps through torch.distributed.pipelining; losses are summed over micro-batches / m."""
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    model = pipe_gpt(0)
    stage_mod = split_gpt(model, world)[rank]
    names = _names(model, stage_mod)
    params = dict(model.named_parameters())
    opt = torch.optim.AdamW(stage_mod.parameters(), lr=lr)
    b = batch // m
    x_in = torch.zeros(b, seq, dtype=torch.long) if rank == 0 else torch.zeros(b, seq, model.cfg.d_model,
                                                                                dtype=torch.float64)
    stage = PipelineStage(stage_mod, rank, world, torch.device("cpu"), input_args=(x_in,))

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())  # (b*T, V), (b*T,)

    cls = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[name]
    sched = cls(stage, n_microbatches=m, loss_fn=loss_fn)  # scale_grads=True: gradients / m
    out: dict[str, Any] = {"grads": [], "losses": []}
    for tokens in global_batches(steps, batch, seq):
        opt.zero_grad(set_to_none=True)
        losses: list[torch.Tensor] = []
        if rank == 0:
            sched.step(tokens[:, :-1].contiguous())
        elif rank == world - 1:
            sched.step(target=tokens[:, 1:].contiguous(), losses=losses)
        else:
            sched.step()
        out["losses"].append(sum(x.item() for x in losses) / m if losses else None)
        out["grads"].append({n: params[n].grad.clone() for n in names})
        opt.step()
    out["params"] = {n: params[n].detach().clone() for n in names}
    return out


def pipeline_worker(rank: int, world: int, steps: int = 3, batch: int = 8, seq: int = 8, m: int = 4,
                    lr: float = 1e-2, with_torch: bool = True) -> dict[str, Any]:
    """minillm's GPipe and 1F1B runs, then torch's (or the exception text if torch's pipelining fails)."""
    out: dict[str, Any] = {name: _minillm_run(rank, world, name, steps, batch, seq, m, lr) for name in SCHEDULES}
    if with_torch:
        for name in SCHEDULES:
            try:
                out["torch_" + name] = _torch_run(rank, world, name, steps, batch, seq, m, lr)
            except Exception as e:  # noqa: BLE001 - reported to the test, which skips with the reason
                out["torch_" + name] = f"{type(e).__name__}: {e}"
                break  # a failing rank could leave its peers' sends unmatched; stop the torch part
    return out
