"""Worker functions for `minillm.distributed.launch` (tests of `minillm.distributed.tensor`): Megatron tensor
parallelism against one process and against torch's DTensor `parallelize_module`.

- `LLAMA` / `GPT2`: GPTConfig overrides of `ddp_workers.tiny_gpt` (float64): RoPE + RMSNorm + SwiGLU + GQA
  without biases and tied embeddings, and learned positions + LayerNorm + GELU with biases, untied.
- `tp_worker`: for each config, the sharded model's gathered logits, loss, gathered parameters and gradients and
  the all-reduces counted in forward and backward; vocab-parallel cross-entropy on random logits (loss and this
  rank's gradient slice); `layers_run` (the two linear layers alone); the error for heads that do not split;
  and, when asked, the DTensor comparison.
- `notebook_worker`: what notebooks/13_parallelism/02_tensor_parallel.ipynb shows, in one launch: both configs
  sharded (with the elements of every all-reduce and this rank's parameter shapes) and the DTensor comparison.
- `dtensor_run`: the same model parallelised by `torch.distributed.tensor.parallel.parallelize_module` with
  ColwiseParallel / RowwiseParallel on a CPU DeviceMesh: logits, loss, full gradients. DTensor's own count of
  collectives is not taken: torch 2.13's CommDebugMode fails on the model's blocks (IndexError in its module hook).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from minillm.distributed.ddp_workers import global_batches, tiny_gpt
from minillm.distributed.tensor import (
    CollectiveCounter,
    ColumnParallelLinear,
    RowParallelLinear,
    apply_tensor_parallel,
    gathered,
    tp_loss,
    vocab_parallel_cross_entropy,
)

LLAMA: dict[str, Any] = {"n_head": 4, "n_kv_head": 2, "pos": "rope", "norm": "rmsnorm", "ffn": "swiglu",
                         "bias": False, "ffn_hidden": 32}
GPT2: dict[str, Any] = {"n_head": 4, "ffn": "gelu", "bias": True, "tie_embeddings": False}
BATCH, SEQ = 3, 8


def tokens(vocab: int = 32) -> torch.Tensor:
    """The one batch (BATCH, SEQ + 1) every rank and the reference use."""
    return global_batches(1, BATCH, SEQ, vocab)[0]


def _gather_last(x: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts, dim=-1)


def sharded_run(overrides: dict[str, Any], vocab_parallel: bool = True) -> dict[str, Any]:
    """One forward + backward of the sharded tiny GPT on `tokens()`; everything gathered; collectives counted."""
    model = apply_tensor_parallel(tiny_gpt(0, **overrides), vocab_parallel=vocab_parallel)
    x = tokens()
    with CollectiveCounter() as fwd:
        if vocab_parallel:
            logits = model(x[:, :-1])[0]  # (B, T, V/N)
            loss = vocab_parallel_cross_entropy(logits, x[:, 1:])
        else:
            logits, loss = model(x[:, :-1], x[:, 1:])
    with CollectiveCounter() as bwd:
        loss.backward()
    refused = ""
    if vocab_parallel:
        assert torch.equal(tp_loss(model, x[:, :-1], x[:, 1:]), loss.detach())
        try:  # the model's own loss would be a cross-entropy over this rank's slice only: refused
            model(x[:, :-1], x[:, 1:])
        except ValueError as e:
            refused = str(e)
    return {"refused": refused, "logits": _gather_last(logits) if vocab_parallel else logits.detach(),
            "loss": loss.item(),
            "params": gathered(model), "grads": gathered(model, grads=True),
            "forward": dict(fwd.counts), "backward": dict(bwd.counts),
            "forward_elements": dict(fwd.elements), "backward_elements": dict(bwd.elements),
            "local_shapes": {n: tuple(p.shape) for n, p in model.named_parameters()},
            "local_heads": (model.layers[0].self_attn.cfg.n_head, model.layers[0].self_attn.cfg.n_kv_head)}


def ce_run(rank: int, world: int, rows: int = 7, vocab_per_rank: int = 5) -> dict[str, Any]:
    """vocab_parallel_cross_entropy on random float64 logits (every rank draws the same full (rows, V) and keeps
    its slice), two targets ignored (-100); large offsets check the max-subtraction."""
    gen = torch.Generator().manual_seed(1)
    full = torch.randn(rows, vocab_per_rank * world, generator=gen, dtype=torch.float64) * 3 + 500.0
    target = torch.randint(0, vocab_per_rank * world, (rows,), generator=gen)
    target[[1, 4]] = -100
    mine = full[:, rank * vocab_per_rank:(rank + 1) * vocab_per_rank].clone().requires_grad_()
    with CollectiveCounter() as fwd:
        loss = vocab_parallel_cross_entropy(mine, target)
    with CollectiveCounter() as bwd:
        loss.backward()
    return {"full": full, "target": target, "loss": loss.item(), "grad": _gather_last(mine.grad),
            "forward": fwd.total("forward"), "backward": bwd.total("backward")}


def hand_ce_run(rank: int, world: int) -> float:
    """Hand case (2 ranks): logits [0, ln 3 | 0, 0] (rank 0 | rank 1), target 1: loss = ln(1+3+1+1) - ln 3 = ln 2."""
    mine = torch.tensor([[0.0, math.log(3.0)]] if rank == 0 else [[0.0, 0.0]],
                        dtype=torch.float64)
    return vocab_parallel_cross_entropy(mine, torch.tensor([1])).item()


def layers_run(rank: int, world: int) -> dict[str, Any]:
    """The two layers on their own (bias on, f inside the column layer): Column(gather_output) == the full
    Linear; Row(Column(x)) == the full two-layer product, with x's gradient (f's all-reduce) equal too."""
    torch.manual_seed(3)
    first, second = nn.Linear(6, 4 * world, dtype=torch.float64), nn.Linear(4 * world, 5, dtype=torch.float64)
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    gathered_y = ColumnParallelLinear(first, gather_output=True)(x)
    y = RowParallelLinear(second)(torch.tanh(ColumnParallelLinear(first)(x)))  # (3, 5) replicated
    y.pow(2).sum().backward()
    return {"x": x.detach(), "gather": gathered_y.detach(), "y": y.detach(), "x_grad": x.grad,
            "first": first.state_dict(), "second": second.state_dict()}


def dtensor_run(overrides: dict[str, Any], world: int) -> dict[str, Any]:
    """The tiny GPT with torch's tensor parallel plan (q/k/v, gate/up Colwise; o_proj, down Rowwise) on a CPU
    DeviceMesh; attention configs get local head counts as torchtitan does. Logits, loss, full gradients."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    mesh = init_device_mesh("cpu", (world,))
    model = tiny_gpt(0, **overrides)
    plan = {}
    for i, block in enumerate(model.layers):
        for name in ("q_proj", "k_proj", "v_proj"):
            plan[f"layers.{i}.self_attn.{name}"] = ColwiseParallel()
        plan[f"layers.{i}.self_attn.o_proj"] = RowwiseParallel()
        for name in ("gate", "up"):
            if hasattr(block.mlp, name):
                plan[f"layers.{i}.mlp.{name}"] = ColwiseParallel()
        plan[f"layers.{i}.mlp.down"] = RowwiseParallel()
        local = copy.copy(block.self_attn.cfg)
        local.n_head, local.n_kv_head = local.n_head // world, local.n_kv_head // world
        block.self_attn.cfg = local
    parallelize_module(model, mesh, plan)
    x = tokens()
    logits, loss = model(x[:, :-1], x[:, 1:])
    loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        g = p.grad
        grads[name] = g.full_tensor() if isinstance(g, DTensor) else g.detach().clone()
    return {"logits": logits.detach(), "loss": loss.item(), "grads": grads}


def tp_worker(rank: int, world: int, configs: dict[str, dict[str, Any]], dtensor: bool = True) -> dict[str, Any]:
    """Everything the tests read, in one launch: per config name, `sharded_run`; "ce", "hand_ce"; "head_error";
    "dtensor" (per config) or "dtensor_skip" (the reason it could not run)."""
    out: dict[str, Any] = {name: sharded_run(cfg) for name, cfg in configs.items()}
    out["replicated_vocab"] = sharded_run(LLAMA if world == 2 else {**LLAMA, "n_kv_head": 4}, vocab_parallel=False)
    out["ce"] = ce_run(rank, world)
    out["layers"] = layers_run(rank, world)
    out["hand_ce"] = hand_ce_run(rank, world) if world == 2 else None
    try:
        apply_tensor_parallel(tiny_gpt(0, n_head=2 * world + 1, d_model=8 * world + 4))
        out["head_error"] = ""
    except ValueError as e:
        out["head_error"] = str(e)
    odd = tiny_gpt(0, n_head=world, ffn="gelu", ffn_hidden=4 * world + 1)
    try:
        apply_tensor_parallel(odd)
        out["ffn_error"] = ""
    except ValueError as e:
        out["ffn_error"] = str(e)
    out["ffn_error_left_whole"] = type(odd.layers[0].self_attn.q_proj) is nn.Linear
    if dtensor:
        try:
            out["dtensor"] = {name: dtensor_run(cfg, world) for name, cfg in configs.items()}
        except Exception as e:  # noqa: BLE001 - reported to the test, which skips with the reason
            out["dtensor_skip"] = f"{type(e).__name__}: {e}"
    return out


def notebook_worker(rank: int, world: int) -> dict[str, Any]:
    """One launch for the notebook: `sharded_run` of LLAMA and GPT2, `layers_run`, `ce_run`, and `dtensor_run` of
    both (or "dtensor_skip" with the reason it could not run)."""
    out: dict[str, Any] = {"llama": sharded_run(LLAMA), "gpt2": sharded_run(GPT2), "layers": layers_run(rank, world),
                           "ce": ce_run(rank, world)}
    try:
        out["dtensor"] = {"llama": dtensor_run(LLAMA, world), "gpt2": dtensor_run(GPT2, world)}
    except Exception as e:  # noqa: BLE001 - shown by the notebook
        out["dtensor_skip"] = f"{type(e).__name__}: {e}"
    return out
