"""DDP from scratch: data-parallel training as a transform of an unchanged model.

`DDP(model)` makes N processes (one per rank, launched by `torchrun` or `minillm.distributed.launch`) train one
model: each rank holds a full replica, runs forward and backward on its own shard of the batch, and the gradients
are averaged over the ranks before the optimizer step, so every replica takes the same step as a single process
would on the concatenated batch (mean loss over N equal shards = mean loss over the big batch). The model knows
nothing about it; the wrapper adds, in order:

1. Broadcast: at construction, rank 0's parameters and buffers are copied to every rank (`dist.broadcast`), so
   replicas start equal whatever each rank's seed was; equal start + equal averaged gradients = equal forever.
2. Buckets: trainable parameters are grouped, in REVERSE registration order, into buckets of about
   `bucket_cap_mb` MiB (`assign_buckets`). Backward produces gradients roughly in reverse order of the
   forward pass, so the last layer's bucket is full first. One all-reduce per bucket instead of one per parameter
   (latency alpha paid once per bucket) or one for the whole model (nothing could start before backward ends).
3. Hooks: `Tensor.register_post_accumulate_grad_hook` on every parameter fires once its `.grad` holds this
   backward's gradient. When the last parameter of a bucket is ready, the bucket is flattened into one buffer
   (each gradient divided by N on the way in, as torch does: a sum of N fp16 gradients could overflow where the
   sum of N fractions does not) and `dist.all_reduce(..., async_op=True)` starts; it returns a Work handle at
   once and the communication runs (in gloo's / NCCL's own thread or stream) while autograd keeps computing
   earlier layers' gradients: overlap.
   Buckets are launched strictly in index order (a bucket that is ready early waits for its predecessors), because
   collectives are matched by the order in which ranks issue them.
4. Finalize: a callback queued on the autograd engine runs when `loss.backward()` finishes: it launches any bucket
   still pending (see unused parameters), waits for every handle and copies the averages back into each `.grad`.
   So `loss.backward()` returns with synchronised gradients and an unchanged training loop (`opt.step()`) works.
5. `no_sync()`: a forward run inside it marks its backward as local (torch decides at forward time too, which is
   why its docs ask for the forward inside the context): the hooks do nothing, so gradients accumulate in `.grad`
   over micro-batches; the next forward + backward outside it all-reduces the accumulated sums (one communication
   per optimizer step).

Unused parameters: a parameter that gets no gradient in a backward (not used by the loss) never fires its hook, so
its bucket never fills. Torch's DDP raises at the next forward unless `find_unused_parameters=True`. Here the
finalize step launches such buckets anyway, counting a missing gradient as zeros, and every bucket carries one
extra number per parameter, 1 if this rank had a gradient: after the all-reduce a parameter with no gradient on
any rank keeps `.grad = None` (so AdamW skips it, as in single-process training), and one used on some ranks only
gets sum / N, exactly torch's `find_unused_parameters=True` result (torch's default, False, is cheaper: no walk of
the autograd graph after each forward). Every rank issues the same collectives in the same order either way, so no
rank hangs. (A backward in which NO parameter of this rank gets a gradient queues no
finalize callback: call `finish_gradient_synchronization()` yourself then.)

Leaves out (torch 2.13's DDP has them; see `_BucketCapacityConfig` in torch/nn/parallel/distributed.py):
- torch's bucket schedule: with the default `find_unused_parameters=False` the FIRST iteration puts every gradient
  in one bucket (one all-reduce after backward, no overlap: registration order may not be the order of use), then
  rebuilds the buckets once in the order the gradients actually arrived, with a small first bucket of
  `dist._DEFAULT_FIRST_BUCKET_BYTES` = 1 MiB only when `bucket_cap_mb` is left unset (None = 25 MiB); with
  `find_unused_parameters=True` the buckets are cut once, at construction, and never rebuilt. minillm cuts
  reverse-registration-order buckets under one cap at construction and keeps them;
- `gradient_as_bucket_view=True` (the `.grad` tensors are views into the buckets: no copy in or out, one gradient's
  worth of memory saved), `static_graph=True` (the set of used parameters never changes: unused parameters are
  found once, reentrant backward and repeated activation checkpointing work), communication hooks (fp16 / bf16
  compression, PowerSGD), sparse gradients, SyncBatchNorm, uneven inputs (`join`), reducing in a lower precision.
Buffers: broadcast at construction, and again before each synchronised forward unless `broadcast_buffers=False`
(torch's default behaviour; torch 2.13 renames the flag `forward_sync_buffers`, `broadcast_buffers` is deprecated).

References: Li et al. 2020, "PyTorch Distributed: Experiences on Accelerating Data Parallel Training" (VLDB),
section 3 (bucketing, overlap, no_sync, unused parameters); Goyal et al. 2017, "Accurate, Large Minibatch SGD"
(averaging gradients over workers = the large-batch gradient).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

MB = 1024 * 1024  # torch's DDP counts bucket_cap_mb in MiB


def assign_buckets(sizes: Sequence[int], cap_bytes: int, keys: Sequence[Any] | None = None) -> list[list[int]]:
    """Indices of parameters, grouped into buckets in reverse registration order under a byte cap.

    `sizes[i]` is parameter i's gradient size in bytes. Walking i = n-1, ..., 0, each parameter joins the open
    bucket of its key (dtype and device: one flat buffer holds one dtype), and that bucket is closed as soon as
    its size reaches `cap_bytes`, so a bucket may pass the cap by its last parameter (torch's rule,
    `dist._compute_bucket_assignment_by_size`). Buckets are listed in the order they were closed, then the
    open ones: the order backward fills them. E.g. sizes [12, 12, 12, 4, 20], cap 20 -> [[4], [3, 2, 1], [0]].
    """
    if cap_bytes < 1:
        raise ValueError(f"cap_bytes must be >= 1, got {cap_bytes}: use a positive bucket_cap_mb")
    keys = list(keys) if keys is not None else [None] * len(sizes)
    if len(keys) != len(sizes):
        raise ValueError(f"got {len(sizes)} sizes but {len(keys)} keys: give one key per parameter")
    buckets: list[list[int]] = []
    open_: dict[Any, tuple[list[int], int]] = {}  # key -> (indices, bytes so far)
    for i in reversed(range(len(sizes))):
        idx, nbytes = open_.get(keys[i], ([], 0))
        idx, nbytes = idx + [i], nbytes + sizes[i]
        if nbytes >= cap_bytes:
            buckets.append(idx)
            open_.pop(keys[i], None)
        else:
            open_[keys[i]] = (idx, nbytes)
    return buckets + [idx for idx, _ in open_.values()]


@dataclass
class Bucket:
    params: list[nn.Parameter]
    index: int
    ready: int = 0  # parameters whose gradient arrived in this backward
    work: Any = None  # the Work handle of the all-reduce in flight
    flat: torch.Tensor | None = None  # [sum of numels + len(params)]: the gradients, then one "had a grad" flag each
    numel: int = field(init=False)

    def __post_init__(self):
        self.numel = sum(p.numel() for p in self.params)


def _global(group, rank: int) -> int:
    """The global rank of `rank` in `group` (broadcast's src is a global rank)."""
    return dist.get_global_rank(group, rank) if group is not None else rank


def sync_module_states(module: nn.Module, group=None, src: int = 0) -> None:
    """Copy rank `src`'s parameters and buffers to every rank of `group`, in place (one broadcast per tensor)."""
    with torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=_global(group, src), group=group)


class DDP(nn.Module):
    """Data-parallel wrapper: `DDP(model)(x)` is `model(x)`; `loss.backward()` leaves gradients averaged over ranks.

    `bucket_cap_mb`: bucket size in MiB (torch's default 25; every bucket, no small first one).
    `process_group`: the ranks to average over (None:
    all). `broadcast_buffers`: also re-broadcast rank 0's buffers before each synchronised forward (as torch does;
    matters for BatchNorm's running statistics, not for a GPT). `record`: append (time, event, index) to
    `self.events`: ("grad", parameter index) when a gradient is ready, ("start"/"done", bucket) around each
    all-reduce, ("backward_end", -1) and ("synced", -1) around the final wait; for timelines and tests.
    The model is reachable as `.module` (save `ddp.module.state_dict()` to load it into a plain model;
    `minillm.train.unwrap(model)` finds it in either wrapper).
    """

    def __init__(self, module: nn.Module, bucket_cap_mb: float = 25.0, process_group=None, *,
                 broadcast_buffers: bool = True, record: bool = False):
        super().__init__()
        if not dist.is_initialized():
            raise RuntimeError("DDP needs torch.distributed initialised: run under torchrun or "
                               "minillm.distributed.launch, or call dist.init_process_group first")
        if not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be > 0, got {bucket_cap_mb}")
        self.module = module
        self.process_group = process_group
        self.world_size = dist.get_world_size(process_group)
        self.broadcast_buffers = broadcast_buffers
        self.require_sync = True
        self.record = record
        self.events: list[tuple[float, str, int]] = []
        sync_module_states(module, process_group)
        params = [p for p in module.parameters() if p.requires_grad]  # shared (tied) parameters appear once
        if not params:
            raise ValueError("the module has no parameter with requires_grad=True: nothing to synchronise")
        self.param_index = {p: i for i, p in enumerate(params)}
        groups = assign_buckets([p.numel() * p.element_size() for p in params], int(bucket_cap_mb * MB),
                                [(p.dtype, p.device) for p in params])
        self.buckets = [Bucket([params[i] for i in idx], b) for b, idx in enumerate(groups)]
        self.bucket_of = {p: b for b in self.buckets for p in b.params}
        self._next = 0  # the next bucket to launch: launches go in index order on every rank
        self._queued = False  # the end-of-backward callback is queued for this backward
        self._synced = True  # no backward since the last synchronisation
        self._sync_backward = True  # decided at each forward: was it run outside no_sync()?
        self._handles = [p.register_post_accumulate_grad_hook(self._on_grad) for p in params]

    # -- forward ---------------------------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        if torch.is_grad_enabled():  # this forward's backward syncs iff the forward ran outside no_sync (as torch)
            self._sync_backward = self.require_sync
            if self.require_sync:
                self._synced = False
        if self.broadcast_buffers and self.require_sync and torch.is_grad_enabled():
            for buf in self.module.buffers():
                dist.broadcast(buf.data, src=_global(self.process_group, 0), group=self.process_group)
        return self.module(*args, **kwargs)

    @contextmanager
    def no_sync(self) -> Iterator[None]:
        """Forward + backward passes inside accumulate `.grad` locally with no communication (gradient
        accumulation). As in torch, the forward decides: a forward run inside syncs nothing in its backward."""
        old, self.require_sync = self.require_sync, False
        try:
            yield
        finally:
            self.require_sync = old

    # -- backward: hooks, buckets, async all-reduce ----------------------------------------------------------
    def _log(self, event: str, index: int) -> None:
        if self.record:
            self.events.append((time.perf_counter(), event, index))

    def _on_grad(self, p: torch.Tensor) -> None:
        """Post-accumulate-grad hook: p.grad now holds this backward's gradient (summed into what was there)."""
        if not self._sync_backward:
            return
        if not self._queued:  # the first hook of this backward: run _finalize when autograd is done
            torch.autograd.Variable._execution_engine.queue_callback(self._finalize)
            self._queued = True
        self._log("grad", self.param_index[p])
        bucket = self.bucket_of[p]
        bucket.ready += 1
        while self._next < len(self.buckets) and self.buckets[self._next].ready == len(self.buckets[self._next].params):
            self._launch(self.buckets[self._next])
            self._next += 1

    def _launch(self, bucket: Bucket) -> None:
        """Flatten the bucket's gradients / N (zeros for a missing one) + one flag per parameter; start the all-reduce.
        Dividing before the sum, as torch's reducer does, keeps an fp16 sum of N gradients from overflowing."""
        p0 = bucket.params[0]
        flat = torch.zeros(bucket.numel + len(bucket.params), dtype=p0.dtype, device=p0.device)
        offset = 0
        for j, p in enumerate(bucket.params):
            if p.grad is not None:
                torch.div(p.grad.reshape(-1), self.world_size, out=flat[offset:offset + p.numel()])
                flat[bucket.numel + j] = 1.0  # "this rank has a gradient for parameter j"
            offset += p.numel()
        bucket.flat = flat
        self._log("start", bucket.index)
        bucket.work = dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.process_group, async_op=True)
        if self.record:  # the future completes in the communication thread: the honest end time
            bucket.work.get_future().then(lambda _f, b=bucket.index: self._log("done", b))

    def _finalize(self) -> None:
        """End of backward: launch what is left, wait for every bucket, write the averages back into .grad."""
        self._log("backward_end", -1)
        for bucket in self.buckets[self._next:]:  # buckets holding a parameter that got no gradient
            self._launch(bucket)
        for bucket in self.buckets:
            bucket.work.wait()
            flat, offset = bucket.flat, 0
            had_grad = flat[bucket.numel:].tolist()  # [len(params)]: how many ranks had each gradient
            for j, p in enumerate(bucket.params):
                if had_grad[j] > 0:  # some rank had a gradient: the sum of gradient / N, as torch's DDP
                    avg = flat[offset:offset + p.numel()].view_as(p)
                    if p.grad is None:
                        p.grad = avg.clone()  # its own storage, not a view into the bucket
                    else:
                        p.grad.copy_(avg)
                offset += p.numel()
            bucket.ready, bucket.work, bucket.flat = 0, None, None
        self._next, self._queued, self._synced = 0, False, True
        self._log("synced", -1)

    def finish_gradient_synchronization(self) -> None:
        """Synchronise by hand, on every rank, after a backward in which this rank got no gradient at all
        (then no hook queued the end-of-backward step); does nothing if this backward is already synchronised."""
        if self._sync_backward and not self._queued and not self._synced:
            self._finalize()

    def remove_hooks(self) -> nn.Module:
        """Detach the wrapper's hooks and return the plain model."""
        for h in self._handles:
            h.remove()
        self._handles = []
        return self.module


def bucket_summary(ddp: DDP) -> list[dict[str, Any]]:
    """One row per bucket, in launch order: its index, parameter indices (registration order) and MB."""
    return [{"bucket": b.index, "params": [ddp.param_index[p] for p in b.params],
             "MB": sum(p.numel() * p.element_size() for p in b.params) / MB} for b in ddp.buckets]
