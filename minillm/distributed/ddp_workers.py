"""Worker functions for `minillm.distributed.launch` (tests and notebook 11.3): DDP against torch's and one process.

Spawned processes import these by name (a notebook cell cannot be pickled), so they live in the package. Each runs
on every rank with `torch.distributed` already initialised and returns plain tensors / numbers (rank 0's result is
what the caller usually reads; tests compare all ranks).

- `tiny_gpt(seed)` and `global_batches(...)`: the float64 model and the data every rank draws identically;
  `shard(x, rank, world)` is rank r's rows r*B/N .. (r+1)*B/N.
- `single_process_run(...)`: the reference, one process on the whole batch (run it in the caller's process).
- `equivalence_worker`: minillm's DDP and torch's DDP side by side (gradients of each step, parameters after
  AdamW steps), the broadcast of differently initialised replicas, `no_sync` accumulation, unused parameters.
- `torch_bucket_schedule`: the bytes of each bucket torch's own DDP all-reduces, iteration by iteration.
- `overlap_worker`: the recorded event timeline of one backward (gradient ready / all-reduce start and done).
- `timing_worker`: seconds per step with and without gradient synchronisation, for the 1-vs-N table.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from minillm.distributed.ddp import DDP, bucket_summary
from minillm.model import GPT, GPTConfig
from minillm.train import TrainConfig, train, unwrap


def tiny_gpt(seed: int, dtype: torch.dtype = torch.float64, **overrides: Any) -> GPT:
    """A 2-layer GPT (d 16, vocab 32, tied embeddings) initialised from `seed`, in `dtype`."""
    torch.manual_seed(seed)
    cfg = GPTConfig(**{"vocab_size": 32, "block_size": 16, "n_layer": 2, "n_head": 2, "d_model": 16, **overrides})
    return GPT(cfg).to(dtype)


def global_batches(steps: int, batch: int, seq: int, vocab: int = 32, seed: int = 0) -> list[torch.Tensor]:
    """`steps` token batches [batch, seq + 1], the same on every rank (one generator, one seed)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (batch, seq + 1), generator=gen) for _ in range(steps)]


def shard(x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank `rank`'s rows of a global batch: rows rank*B/N .. (rank+1)*B/N."""
    if x.shape[0] % world:
        raise ValueError(f"batch of {x.shape[0]} rows does not split over {world} ranks: use a multiple of {world}")
    n = x.shape[0] // world
    return x[rank * n:(rank + 1) * n]


def _loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return model(tokens[:, :-1], tokens[:, 1:])[1]  # mean cross-entropy over the rows given


def _grads(model: nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _run(model: nn.Module, batches: list[torch.Tensor], lr: float) -> tuple[list[list[torch.Tensor]], list[float]]:
    """AdamW steps on `batches`: the gradients of every step and the losses (of this process's rows)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    grads, losses = [], []
    for tokens in batches:
        opt.zero_grad(set_to_none=True)
        loss = _loss(model, tokens)
        loss.backward()
        grads.append(_grads(model))
        losses.append(loss.item())
        opt.step()
    return grads, losses


def single_process_run(steps: int, batch: int, seq: int, lr: float = 1e-2) -> dict[str, Any]:
    """The reference: one process, the whole global batch, the same model, data and AdamW steps."""
    model = tiny_gpt(0)
    batches = global_batches(steps, batch, seq)
    grads, losses = _run(model, batches, lr)
    return {"grads": grads, "params": _params(model), "losses": losses}


class PartlyUsed(nn.Module):
    """Three linear layers; `b` is used only when asked, `c` never: for the unused-parameter case."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, use_b: bool) -> torch.Tensor:
        h = self.a(x)
        return (self.b(h) if use_b else h).pow(2).mean()


def equivalence_worker(rank: int, world: int, steps: int = 3, batch: int = 18, seq: int = 8, lr: float = 1e-2,
                       bucket_cap_mb: float = 0.002, micro: int = 3,
                       overlap: dict[str, Any] | None = None) -> dict[str, Any]:
    """minillm's DDP vs torch's on the same shards; broadcast; no_sync; unused parameters; the overlap timeline
    (`overlap_worker(**overlap)`), all in one launch. `batch` rows are split over the ranks, then into `micro`
    micro-batches."""
    if batch % world or (batch // world) % micro:
        raise ValueError(f"batch={batch} must split into {world} ranks x {micro} equal micro-batches")
    batches = global_batches(steps, batch, seq)
    local = [shard(x, rank, world) for x in batches]
    out: dict[str, Any] = {}

    # broadcast: each rank starts from its own seed; after DDP(...) all hold rank 0's (seed 0) parameters
    model = tiny_gpt(seed=rank)
    out["before"] = _params(model)
    ddp = DDP(model, bucket_cap_mb=bucket_cap_mb)
    out["after_broadcast"] = _params(model)
    out["buckets"] = bucket_summary(ddp)
    out["grads"], out["losses"] = _run(ddp, local, lr)
    ref = nn.parallel.DistributedDataParallel(tiny_gpt(seed=0), bucket_cap_mb=bucket_cap_mb)
    out["unwrap"] = [unwrap(ddp) is model, unwrap(ref) is ref.module]
    try:  # minillm.train.train refuses a batch that does not split over the ranks (before touching the data)
        train(ddp, None, TrainConfig(steps=1, batch_size=world + 1, progress=False))
        out["batch_error"] = ""
    except ValueError as e:
        out["batch_error"] = str(e)
    try:  # ... and a model with no DDP around it, under a process group of several ranks
        train(tiny_gpt(0), None, TrainConfig(steps=1, batch_size=world, progress=False))
        out["unwrapped_error"] = ""
    except ValueError as e:
        out["unwrapped_error"] = str(e)
    bn = nn.BatchNorm1d(3)  # buffers are broadcast too: each rank starts with running_mean = its rank
    bn.running_mean.fill_(float(rank))
    DDP(bn)
    out["buffer_after_broadcast"] = bn.running_mean.clone()
    out["params"] = _params(model)

    out["torch_grads"], _ = _run(ref, local, lr)
    out["torch_params"] = _params(ref.module)

    # no_sync: the local shard as `micro` micro-batches, communication only on the last; loss / micro each
    model = DDP(tiny_gpt(seed=0), bucket_cap_mb=bucket_cap_mb)
    parts = local[0].chunk(micro)
    for i, part in enumerate(parts):
        if i < micro - 1:
            with model.no_sync():
                (_loss(model, part) / micro).backward()
            if i == 0:  # still local: this rank's own micro-batch gradient, not averaged
                out["no_sync_local"] = _grads(model.module)
        else:
            (_loss(model, part) / micro).backward()
    out["no_sync_grads"] = _grads(model.module)

    # no_sync is decided at the forward, in both wrappers: forward inside + backward outside stays local,
    # forward outside + backward inside is synchronised
    for name, wrap in (("minillm", DDP), ("torch", nn.parallel.DistributedDataParallel)):
        m = wrap(tiny_gpt(seed=0), bucket_cap_mb=bucket_cap_mb)
        with m.no_sync():
            loss = _loss(m, local[0])
        loss.backward()
        inside = _grads(m.module)
        m.zero_grad(set_to_none=True)
        loss = _loss(m, local[0])
        with m.no_sync():
            loss.backward()
        out[f"{name}_no_sync_at_forward"] = (inside, _grads(m.module))

    # unused parameters: b used on rank 0 only, c nowhere; compare with torch's find_unused_parameters=True
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(rank))
    results = []
    for wrap in (lambda m: DDP(m), lambda m: nn.parallel.DistributedDataParallel(m, find_unused_parameters=True)):
        torch.manual_seed(0)
        m = wrap(PartlyUsed())
        m(x, use_b=rank == 0).backward()
        results.append({n: None if p.grad is None else p.grad.clone() for n, p in m.module.named_parameters()})
    out["unused"], out["torch_unused"] = results
    out["overlap"] = overlap_worker(rank, world, **(overlap or {}))
    schedules = {"default": {}, "bucket_cap_mb=1": {"bucket_cap_mb": 1}, "find_unused_parameters=True":
                 {"find_unused_parameters": True, "unused": 1}}  # torch's own DDP: its buckets, iteration by iteration
    out["torch_schedule"] = {name: torch_bucket_schedule(**kw) for name, kw in schedules.items()}
    return out


class _Layers(nn.Module):
    """`n` Linear(256, 256) layers in float32 (263,168 bytes each), of which forward uses the first `used`."""

    def __init__(self, n: int, used: int):
        super().__init__()
        self.layers, self.used = nn.ModuleList(nn.Linear(256, 256) for _ in range(n)), used

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:self.used]:
            x = layer(x)
        return x


def torch_bucket_schedule(iterations: int = 3, layers: int = 12, unused: int = 0, **ddp_kwargs: Any
                          ) -> list[list[int]]:
    """Bytes of every bucket torch's DistributedDataParallel all-reduces in each of `iterations` backwards, in the
    order it reduces them (a communication hook that records `bucket.buffer()` and then does the default
    all-reduce of gradient / N). The model: `layers` used + `unused` unused Linear(256, 256) layers."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    torch.manual_seed(0)
    ddp = nn.parallel.DistributedDataParallel(_Layers(layers + unused, layers), **ddp_kwargs)
    seen: list[list[int]] = []

    def hook(state, bucket):
        seen[-1].append(bucket.buffer().numel() * bucket.buffer().element_size())
        return allreduce_hook(state, bucket)

    ddp.register_comm_hook(None, hook)
    for _ in range(iterations):
        seen.append([])
        ddp(torch.randn(2, 256)).sum().backward()
    return seen


def overlap_worker(rank: int, world: int, bucket_cap_mb: float = 0.01, batch: int = 8, seq: int = 16,
                   repeats: int = 3, model: dict[str, Any] | None = None) -> dict[str, Any]:
    """Events of the last of `repeats` recorded backwards (times relative to its start), buckets and sizes.
    `model`: GPTConfig fields on top of `tiny_gpt`'s; `batch` rows per rank."""
    net = tiny_gpt(0, torch.float32, **(model or {}))
    ddp = DDP(net, bucket_cap_mb=bucket_cap_mb, record=True)
    x = shard(global_batches(1, batch * world, seq, net.cfg.vocab_size)[0], rank, world)
    for _ in range(repeats):  # the first backward pays one-off costs; keep the last
        ddp.events.clear()
        loss = _loss(ddp, x)
        t0 = time.perf_counter()
        loss.backward()
    # "done" callbacks run in the communication thread: give a late one a moment before reading the list
    time.sleep(0.01)
    events = [(t - t0, kind, i) for t, kind, i in sorted(ddp.events)]
    return {"events": events, "buckets": bucket_summary(ddp), "n_params": len(ddp.param_index)}


def timing_worker(rank: int, world: int, steps: int = 8, batch: int = 16, seq: int = 64, bucket_cap_mb: float = 1.0,
                  wrappers: tuple[str, ...] = ("minillm", "torch"), model: dict[str, Any] | None = None
                  ) -> dict[str, dict[str, float]]:
    """The fastest of `steps` training steps (forward, backward, AdamW; seconds) on this rank's batch / world rows, with
    gradient synchronisation ("step_s") and under `no_sync` ("compute_s": the same work, no communication),
    for each DDP in `wrappers` (world 1: the plain model, once, as "none"). `model`: GPTConfig fields."""
    out = {}
    for which in wrappers if world > 1 else ("none",):
        net = tiny_gpt(0, torch.float32, **(model or {}))
        x = shard(global_batches(1, batch, seq, net.cfg.vocab_size)[0], rank, world)
        if which == "minillm":
            net = DDP(net, bucket_cap_mb)
        elif which == "torch":
            net = nn.parallel.DistributedDataParallel(net, bucket_cap_mb=bucket_cap_mb)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        times: dict[str, list[float]] = {"synced": [], "local": []}
        for i in range(2 * steps + 2):
            mode = "synced" if i % 2 == 0 else "local"
            if world > 1:
                dist.barrier()  # start together, so waiting for a slower rank is not counted in the step
            t0 = time.perf_counter()
            with net.no_sync() if (mode == "local" and world > 1) else nullcontext():
                opt.zero_grad(set_to_none=True)
                _loss(net, x).backward()
            opt.step()
            if i >= 2:  # two warm-up steps
                times[mode].append(time.perf_counter() - t0)
        best = {k: min(v) for k, v in times.items()}  # the fastest step: the least disturbed by other jobs
        if world == 1:  # no communication either way: both kinds of step are the same work
            best = dict.fromkeys(best, min(times["synced"] + times["local"]))
        out[which] = {"step_s": best["synced"], "compute_s": best["local"],
                      "comm_share": max(0.0, 1 - best["local"] / best["synced"])}
    return out


def resume_run(out_dir: str, until: int | None, resume: bool, rank: int = 0, world: int = 1) -> dict[str, Any]:
    """`minillm.train.train` on a small char corpus (float64 tiny GPT, 4 steps of 4 rows): the run stopped after
    `until` steps, or resumed from `out_dir`; wrapped in minillm's DDP when world > 1. History and weights."""
    from minillm.data import CharData, load_corpus

    data = CharData(load_corpus("tang300", max_chars=4000))
    model = tiny_gpt(rank, vocab_size=data.vocab_size)  # each rank's own seed: the broadcast makes them equal
    net = DDP(model) if world > 1 else model
    cfg = TrainConfig(steps=4, batch_size=4, seq_len=8, warmup=1, eval_every=2, eval_batches=2, progress=False,
                      out_dir=out_dir)
    hist = train(net, data, cfg, resume=resume, until=until)
    return {"train_loss": hist.train_loss, "val_loss": hist.val_loss, "params": _params(model)}


def resume_worker(rank: int, world: int, out_dir: str) -> dict[str, Any]:
    """Data-parallel: 2 of 4 steps, then a fresh process state resumes from rank 0's checkpoint to step 4."""
    resume_run(out_dir, 2, False, rank, world)
    return resume_run(out_dir, None, True, rank, world)
