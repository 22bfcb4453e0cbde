"""Pipeline parallelism run for real: a GPT cut into stages, and one rank's schedule over send/recv.

The schedules themselves (GPipe, 1F1B, interleaved, ZB-H1), their timelines, bubbles, activation counts and
send/receive plans are pure data in `minillm.distributed.schedules` (read its docstring for the papers and the
NCCL-safety argument); they are re-exported here, so `from minillm.distributed.pipeline import timeline` works.

`split_gpt` cuts an unchanged `minillm.model.GPT` into stage modules (stage 0 owns the embeddings, the last the
final norm, head and loss), and `run_pipeline` executes a schedule on one rank: receive the input activation,
forward, send onwards; receive the output gradient, `torch.autograd.backward`, send the input gradient backwards.
Each group of `p2p_plan` is posted at once with `dist.batch_isend_irecv` and waited for, which `p2p_deadlock`
shows cannot hang for GPipe and 1F1B even where sends wait for their receives (NCCL). On NCCL, also
`torch.cuda.set_device(rank)` and one collective over all ranks before the first step (torch's documentation of
`batch_isend_irecv`: if it is the first collective call in the group, all ranks must take part; here rank 0's
first group is always empty and its second involves rank 1 only).
Tied embeddings: stage 0's table and the last stage's head would be one tensor on two processes; this module
refuses them (`split_gpt` raises) and the tests use an untied model. (Megatron instead keeps a copy on both stages
and all-reduces their gradients every step.)

Leaves out: running interleaved or zero-bubble schedules, activation recomputation, data parallelism across
pipelines, uneven micro-batches, kv caches / masks / T5 and ALiBi positions in `split_gpt`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from minillm.distributed.schedules import (  # noqa: F401 - re-exported: the old home of the schedule code
    P2P,
    Action,
    Schedule,
    bubble_fraction,
    gpipe_schedule,
    interleaved_schedule,
    one_f_one_b_schedule,
    p2p_deadlock,
    p2p_plan,
    peak_in_flight,
    timeline,
    zero_bubble_h1_schedule,
)


# -- a real pipeline ------------------------------------------------------------------------------------------
class GPTStage(nn.Module):
    """Layers [lo, hi) of a GPT; stage 0 also embeds tokens, the last stage normalises and projects to logits.
    Holds references to the model's own modules (the model is not changed)."""

    def __init__(self, model: nn.Module, lo: int, hi: int, first: bool, last: bool):
        super().__init__()
        self.first, self.last = first, last
        self.embed_tokens = model.embed_tokens if first else None
        self.embed_positions = model.embed_positions if first else None
        self.layers = nn.ModuleList(model.layers[lo:hi])
        self.norm = model.norm if last else None
        self.lm_head = model.lm_head if last else None
        self.rope = model.rope  # no parameters; every stage rotates its own queries and keys

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """stage 0: token ids (b, T) -> (b, T, d); middle: (b, T, d) -> (b, T, d); last: -> logits (b, T, V)."""
        T = x.shape[1]
        pos = torch.arange(T, device=x.device)  # (T,)
        if self.first:
            x = self.embed_tokens(x)  # (b, T, d)
            if self.embed_positions is not None:
                x = self.embed_positions.embed(x, pos)
        rotate = self.rope.rotate if self.rope is not None else None
        for layer in self.layers:
            x = layer(x, rotate=rotate, mask=None, is_causal=True, kv_cache=None, pos=pos)
        if self.last:
            if self.norm is not None:
                x = self.norm(x)
            x = self.lm_head(x)  # (b, T, V)
        return x


def split_gpt(model: nn.Module, p: int) -> list[GPTStage]:
    """Cut `model.layers` into p consecutive stages as evenly as possible (the first stages get the extra layer)."""
    cfg = model.cfg
    if cfg.tie_embeddings:
        raise ValueError("tied embeddings would put one tensor on stage 0 and the last stage: build the model with "
                         "tie_embeddings=False for the pipeline (or all-reduce the two copies' gradients)")
    if cfg.pos not in ("learned", "rope", "none") or cfg.dropout:
        raise ValueError(f"split_gpt supports pos in learned/rope/none without dropout, got pos={cfg.pos!r}, "
                         f"dropout={cfg.dropout}")
    n = len(model.layers)
    if not 1 <= p <= n:
        raise ValueError(f"cannot cut {n} layers into p={p} stages: need 1 <= p <= {n}")
    sizes = [n // p + (s < n % p) for s in range(p)]
    bounds = [sum(sizes[:s]) for s in range(p + 1)]
    return [GPTStage(model, bounds[s], bounds[s + 1], s == 0, s == p - 1) for s in range(p)]


def run_pipeline(stage: GPTStage, rank: int, world: int, schedule: Schedule, tokens: torch.Tensor,
                 act_shape: tuple[int, ...], dtype: torch.dtype = torch.float64,
                 stats: dict[str, int] | None = None) -> float | None:
    """One training step's forward and backward on this rank (stage `rank` of `world`), in `schedule[rank]`'s
    order. tokens: (B, T+1), the whole batch (stage 0 reads the inputs, the last stage the targets); B splits
    into m equal micro-batches. act_shape: (B/m, T, d), the activation sent between stages. Gradients
    accumulate in the stage's .grad (scaled by 1/m, so they equal the whole batch's mean loss when every
    micro-batch has the same number of targets: ignore_index -100 tokens make it a mean of means). Returns the
    mean loss on the last stage, None elsewhere. stats (optional dict) gets "peak_saved": the most micro-batches
    whose activations this rank held at once (to compare with `peak_in_flight`)."""
    m = sum(a[0] == "F" for a in schedule[rank])
    if tokens.shape[0] % m:
        raise ValueError(f"batch of {tokens.shape[0]} rows does not split into m={m} micro-batches")
    device = next(stage.parameters()).device  # receive buffers live where the stage computes (cuda for NCCL)
    inputs, targets = tokens[:, :-1].chunk(m), tokens[:, 1:].chunk(m)  # m x (B/m, T)
    first, last = rank == 0, rank == world - 1
    plan = p2p_plan(schedule, rank)
    inbox: dict[tuple[str, int], torch.Tensor] = {}  # ("act" | "grad", i) -> received tensor
    outbox: dict[tuple[str, int], torch.Tensor] = {}  # results waiting for the next group's send
    saved: dict[int, tuple[torch.Tensor | None, torch.Tensor]] = {}  # i -> (input activation, output or loss)
    loss_sum, peak = 0.0, 0

    def exchange(group: list[P2P]) -> None:  # post the whole group together, then wait for all of it
        ops = []
        for o, peer, what, i in group:
            tag = i if what == "act" else m + i  # gloo matches tags; NCCL matches order (p2p_deadlock checks it)
            if o == "send":
                ops.append(dist.P2POp(dist.isend, outbox.pop((what, i)), peer, tag=tag))
            else:
                inbox[(what, i)] = torch.empty(act_shape, dtype=dtype, device=device)
                ops.append(dist.P2POp(dist.irecv, inbox[(what, i)], peer, tag=tag))
        if ops:
            for work in dist.batch_isend_irecv(ops):
                work.wait()

    for k, (kind, i) in enumerate(schedule[rank]):
        exchange(plan[k])
        if kind == "F":
            x = inputs[i].to(device) if first else inbox.pop(("act", i)).requires_grad_(True)
            y = stage(x)  # (b, T, d) or logits (b, T, V)
            if last:
                y = F.cross_entropy(y.flatten(0, 1), targets[i].to(device).flatten()) / m  # this micro-batch's share
                loss_sum += y.item()
            else:
                outbox[("act", i)] = y.detach().contiguous()
            saved[i] = (None if first else x, y)
            peak = max(peak, len(saved))
        else:
            x, y = saved.pop(i)  # activations freed after their backward
            if last:
                torch.autograd.backward(y)
            else:
                torch.autograd.backward(y, inbox.pop(("grad", i)))
            if not first:
                outbox[("grad", i)] = x.grad.contiguous()
    exchange(plan[-1])
    if stats is not None:
        stats["peak_saved"] = peak
    return loss_sum if last else None
