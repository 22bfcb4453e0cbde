"""ZeRO-3 / FSDP from scratch: parameters sharded over N ranks, gathered one unit at a time, freed after use.

`fully_shard(model)` turns an unchanged minillm `GPT` into a fully sharded data-parallel model (ZeRO stage 3,
Rajbhandari et al. 2020, section 5.3; PyTorch FSDP, Zhao et al. 2023, section 3):

1. Units. Each `Block` of `model.layers` is one unit; the root unit holds every other parameter (token embedding,
   positions, final norm, head). A parameter reached twice (tied embeddings: `lm_head.weight is embed_tokens.weight`)
   is stored ONCE in the root unit and both module slots get the same view of it, so gradients from the embedding
   and from the head add up in one place, exactly as in the plain model (that is why the tied matrix must sit in
   the one unit that owns both modules; a tie across two units is refused).
2. Flat shards. A unit's Psi_u parameters are flattened (registration order) into one buffer, zero-padded to
   P_u = N * ceil(Psi_u / N), and rank r keeps only elements r*P_u/N .. (r+1)*P_u/N as an `nn.Parameter`
   (`unit.shard`, registered on the unit's module as `fsdp_shard`). The original parameters are removed from the
   modules, so `model.parameters()` yields only shards and a plain `torch.optim.AdamW(model.parameters())` steps the
   shards (AdamW is elementwise: a shard's step is the slice of the full step; padding stays 0).
   Bytes each rank holds between steps: sum_u P_u / N * bytes_per_element (`shard_bytes`). Every shard is 1-D
   and mixes matrices with norm gains, so `minillm.train.param_groups` (decay by ndim) would put all of them in
   its no-decay group: use `minillm.distributed.zero3.ShardedOptimizer` (AdamW that decays only the elements of
   matrices, equal to `param_groups` + AdamW), one AdamW group (decay on everything) or weight_decay=0. FSDP2
   keeps one DTensor per parameter with its shape, so per-parameter groups still work there.
3. Forward. A pre-hook on a unit all-gathers its full flat buffer (a storage kept at size 0 when free) and points
   each module slot at a view of it; `_Unshard` (an autograd Function) sits between the shard and that buffer, so
   autograd routes every view's gradient to it. A post-hook frees a Block's buffer (`storage.resize_(0)`): the
   views the autograd graph saved stay valid objects, their memory is gone until backward re-gathers it.
   The root is gathered at `model`'s forward pre-hook and kept until the end of backward (the head runs last in
   forward and first in backward, the embedding runs first and last: freeing it would mean gathering it again at
   once; FSDP2 does the same for its root). So the unsharded parameters alive at a time are root + at most two
   Blocks (the running one and the prefetched next one).
4. Backward. The post-hook also wraps the Block's output in `_RegatherBeforeBackward`, an identity whose backward
   runs just before the Block's own backward: it re-gathers the Block (autograd's tensors saved in forward point
   into that storage) and starts the prefetch of the Block before it. When autograd has the summed gradient of the
   whole flat buffer, `_Unshard.backward` reduce-scatters it (sum, then / N: the mean over ranks, as DDP), returns
   rank r's slice as the shard's gradient, and frees the buffer; the full gradient dies with that call.
   (torch's FSDP2 finds the same two moments differently: a tensor `register_hook` on the module's forward
   outputs for "before backward", an identity autograd Function on the module's INPUTS whose backward means "this
   module's backward is done", and a final callback queued on the autograd engine by the root; here the gradient
   of the flat buffer itself, complete only after the unit's backward, marks the end.)
5. Prefetch (`prefetch=True`): every gather is `async_op=True`; in forward, Block i's pre-hook waits for its own
   gather and starts Block i+1's; in backward, Block i's re-gather starts Block i-1's. Collectives are issued in
   the same order on every rank (the model's order), which is what keeps them matched.

Timeline (`record=True`): `model.fsdp.timeline` collects (seconds, event, unit) of the last step: "gather" when an
all-gather is issued, "gathered" when it completed (a callback on its future, run by the communication thread),
"compute" / "computed" around a Block's forward, "backward" / "backwarded" around its backward, "reduce" /
"reduced" around its reduce-scatter: enough to draw when communication runs and whether it hides behind compute.

Checkpoints live in `minillm.distributed.fsdp_checkpoint`: `full_state_dict` gathers a plain `GPT` state dict
(every original key, tied keys included) to rank 0; `save_sharded` writes each rank's shards with the layout;
`consolidate_sharded` rebuilds the full state dict from the N files offline (what DeepSpeed's `zero_to_fp32.py`
does); `load_sharded` restores a rank's shards.

Leaves out: mixed precision (param / reduce dtypes), CPU offload, hybrid sharding (HSDP), gradient accumulation
without a reduce-scatter per backward (FSDP2's `set_requires_gradient_sync`), several forwards before one backward
(the first graph's backward frees the root the other still reads: a "storage of size 0" error), units other than
`model.layers`, and a unit whose parameters mix dtypes. Activation checkpointing of a Block (torch.utils.checkpoint
around the Block's call) works: its recompute runs inside backward, where the hooks neither prefetch nor free.
Tested on CPU with gloo only (buffers follow the parameters' device, so NCCL should work, untested here). Calling a
sharded model outside forward hooks' control (e.g. a Block alone) fails: its slots point at freed storage.
References: Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models" (2020),
section 5.3 (parameter partitioning) and figure 1 (P_os+g+p: (2 + 2 + K) Psi / N_d bytes per rank); Zhao et al.,
"PyTorch FSDP: Experiences on Scaling Fully Sharded Data Parallel" (2023), sections 3-4 (FlatParameter, prefetch);
PyTorch docs, `torch.distributed.fsdp.fully_shard` (FSDP2, per-parameter DTensor shards on dim 0, not flat).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from minillm.distributed.zero import shard_layout


@dataclass
class Unit:
    """One sharded unit: its module, the module slots of its parameters and the flat layout."""

    name: str  # "" for the root, "layers.3" for a Block
    module: nn.Module
    slots: list[tuple[nn.Module, str, int]]  # (owner module, attribute, index of the distinct parameter)
    names: list[list[str]]  # full state-dict keys of each distinct parameter (two for a tied one)
    shapes: list[torch.Size]
    offsets: list[int]
    numel: int  # Psi_u, without padding
    padded: int  # P_u = N * ceil(Psi_u / N)
    dtype: torch.dtype
    shard: nn.Parameter = None  # (P_u / N,): this rank's slice
    storage: Any = None  # the full buffer's UntypedStorage; nbytes() == 0 while freed
    handle: Any = None  # a pending async all-gather
    state: str = "free"  # free | pending | full
    version: int = -1  # shard._version when the current gather started (an optimizer step bumps it)
    log: list | None = None  # FSDPState.timeline when recording, else None

    def event(self, what: str) -> None:
        if self.log is not None:
            self.log.append((time.perf_counter(), what, self.name))

    def layout(self) -> dict[str, Any]:
        return {"name": self.name, "names": self.names, "shapes": [tuple(s) for s in self.shapes],
                "offsets": self.offsets, "numel": self.numel, "padded": self.padded}


@dataclass
class FSDPState:
    """What `fully_shard` attaches to the model as `model.fsdp`."""

    units: list[Unit]  # root first, then the Blocks in order
    rank: int
    world: int
    prefetch: bool
    trace: list[tuple[str, int]] = field(default_factory=list)  # (event, unsharded parameter bytes), last step
    timeline: list[tuple[float, str, str]] | None = None  # (perf_counter s, event, unit), last step; record=True

    @property
    def root(self) -> Unit:
        return self.units[0]

    @property
    def blocks(self) -> list[Unit]:
        return self.units[1:]

    def unsharded_bytes(self) -> int:
        """Bytes of full (gathered) parameter buffers alive now, read from the storages themselves."""
        return sum(u.storage.nbytes() for u in self.units)

    def shard_bytes(self) -> int:
        """Bytes of parameters this rank holds between steps: its shards."""
        return sum(u.shard.numel() * u.shard.element_size() for u in self.units)


_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor  # renamed in torch 2.13


def _full(u: Unit) -> torch.Tensor:
    """A fresh tensor (own version counter) over the unit's full storage: writes through it are invisible to
    autograd's version checks on the views saved in forward."""
    return torch.empty(0, dtype=u.dtype, device=u.storage.device).set_(u.storage, 0, (u.padded,), (1,))


def _start_gather(u: Unit, world: int) -> None:
    if u.state != "free":
        return
    u.storage.resize_(u.padded * u.shard.element_size())
    u.version = u.shard._version
    # (P_u,) as N chunks (P_u / N,): chunk r receives rank r's shard
    u.handle = dist.all_gather(list(_full(u).chunk(world)), u.shard.detach(), async_op=True)
    u.state = "pending"
    u.event("gather")
    if u.log is not None:  # the future completes in the communication thread: the honest end time
        u.handle.get_future().then(lambda _f, u=u: u.event("gathered"))


def _wait(u: Unit, world: int) -> None:
    if u.state != "free" and u.version != u.shard._version:
        # gathered before the shard changed in place (e.g. the root kept by a grad-enabled forward with no
        # backward, then opt.step()): those values are stale, gather again. Every rank steps the same shards.
        _free(u)
    _start_gather(u, world)
    if u.state == "pending":
        u.handle.wait()
        u.handle, u.state = None, "full"


def _free(u: Unit) -> None:
    if u.state == "pending":
        u.handle.wait()
        u.handle = None
    u.storage.resize_(0)
    u.state = "free"


def _in_backward() -> bool:
    """True inside autograd's backward (FSDP2's `is_bw` asks the same): a Block called now is an activation-
    checkpoint recompute, not a forward."""
    return torch._C._current_graph_task_id() != -1


class _Unshard(torch.autograd.Function):
    """shard (P/N,) -> full flat buffer (P,) (already gathered); backward: reduce-scatter the full gradient."""

    @staticmethod
    def forward(ctx, shard: torch.Tensor, u: Unit, world: int) -> torch.Tensor:
        ctx.u, ctx.world = u, world
        return _full(u)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        u, world = ctx.u, ctx.world
        u.event("backwarded")
        out = torch.empty(u.padded // world, dtype=grad.dtype, device=grad.device)  # (P/N,)
        u.event("reduce")
        _reduce_scatter(out, grad.contiguous(), op=dist.ReduceOp.SUM)  # out = sum over ranks of grad chunk r
        u.event("reduced")
        _free(u)  # the unit's backward is over: its parameters go back to shards
        return out / world, None, None


class _RegatherBeforeBackward(torch.autograd.Function):
    """Identity on a Block's output; its backward (= just before the Block's backward) re-gathers the Block."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, st: FSDPState, i: int) -> torch.Tensor:
        ctx.st, ctx.i = st, i
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        st, i = ctx.st, ctx.i
        _wait(st.blocks[i], st.world)
        if st.prefetch and i > 0:
            _start_gather(st.blocks[i - 1], st.world)  # overlaps Block i's backward
        st.trace.append((f"{st.blocks[i].name} backward", st.unsharded_bytes()))
        st.blocks[i].event("backward")
        return g, None, None


def _bind(u: Unit, world: int) -> None:
    """Point every module slot of `u` at its view of the (gathered) flat buffer."""
    full = _Unshard.apply(u.shard, u, world)  # (P_u,)
    for owner, attr, k in u.slots:
        n = u.shapes[k].numel()
        setattr(owner, attr, full[u.offsets[k]:u.offsets[k] + n].view(u.shapes[k]))


def _make_unit(name: str, module: nn.Module, params: list[tuple[str, nn.Module, str, nn.Parameter]],
               rank: int, world: int) -> Unit:
    distinct: list[nn.Parameter] = []
    slots, names = [], []
    for full_name, owner, attr, p in params:
        k = next((i for i, q in enumerate(distinct) if q is p), None)
        if k is None:
            distinct.append(p)
            names.append([])
            k = len(distinct) - 1
        slots.append((owner, attr, k))
        names[k].append(full_name)
    dtypes = {p.dtype for p in distinct}
    if len(dtypes) != 1:
        raise ValueError(f"unit {name or 'root'!r} mixes dtypes {sorted(map(str, dtypes))}: cast the model to one "
                         "dtype (model.to(torch.float32)) before fully_shard")
    shapes = [p.shape for p in distinct]
    offsets = [0]
    for p in distinct:
        offsets.append(offsets[-1] + p.numel())
    numel = offsets.pop()
    layout = shard_layout(numel, world)  # ZeRO's layout: padded to N equal shards, rank r owns the r-th
    flat = torch.zeros(layout.padded, dtype=distinct[0].dtype, device=distinct[0].device)  # (P_u,)
    torch.cat([p.detach().reshape(-1) for p in distinct], out=flat[:numel])
    lo, hi = layout.bounds(rank)
    u = Unit(name, module, slots, names, shapes, offsets, numel, layout.padded, flat.dtype)
    u.shard = nn.Parameter(flat[lo:hi].clone())  # (P_u / N,): all this rank keeps
    u.storage = torch.empty(layout.padded, dtype=flat.dtype, device=flat.device).untyped_storage()
    u.storage.resize_(0)
    return u


def fully_shard(model: nn.Module, prefetch: bool = True, record: bool = False) -> nn.Module:
    """Shard `model` (a minillm GPT, same parameters on every rank) in place over the default process group;
    returns it. Build the optimizer AFTER this call, from `model.parameters()` (the shards). `record`: keep the
    last step's timeline in `model.fsdp.timeline`."""
    if not dist.is_initialized():
        raise RuntimeError("fully_shard needs torch.distributed: run under minillm.distributed.launch or torchrun")
    if hasattr(model, "fsdp"):
        raise ValueError("model is already sharded: call fully_shard once per model")
    if not isinstance(getattr(model, "layers", None), nn.ModuleList):
        raise ValueError(f"{type(model).__name__} has no `layers` ModuleList: fully_shard expects a minillm GPT")
    rank, world = dist.get_rank(), dist.get_world_size()
    everything = [(f"{mn}.{pn}" if mn else pn, m, pn, p) for mn, m in model.named_modules(remove_duplicate=False)
                  for pn, p in m.named_parameters(recurse=False, remove_duplicate=False)]
    groups: dict[str, list] = {f"layers.{i}": [] for i in range(len(model.layers))}
    root: list = []
    for item in everything:
        parts = item[0].split(".")
        key = ".".join(parts[:2]) if parts[0] == "layers" else None
        (groups[key] if key in groups else root).append(item)
    for key, items in groups.items():  # a parameter shared between a Block and anything else cannot be sharded
        ids = {id(p) for *_, p in items}
        if any(id(p) in ids for k2, other in [("", root), *groups.items()] if k2 != key for *_, p in other):
            raise ValueError(f"a parameter of {key} is shared with another unit: untie it before fully_shard")
    units = [_make_unit("", model, root, rank, world)]
    units += [_make_unit(k, model.layers[i], groups[k], rank, world) for i, k in enumerate(groups)]
    for u in units:
        for owner, attr, _ in u.slots:
            owner._parameters.pop(attr, None)  # the module forgets its parameter; a view goes there in forward
            setattr(owner, attr, None)
        u.module.register_parameter("fsdp_shard", u.shard)
    st = FSDPState(units, rank, world, prefetch, timeline=[] if record else None)
    for u in units:
        u.log = st.timeline
    object.__setattr__(model, "fsdp", st)  # not a submodule, not in the state dict

    def root_pre(mod, args, kwargs):
        st.trace.clear()
        if st.timeline is not None:
            st.timeline.clear()
        _wait(st.root, world)
        _bind(st.root, world)
        if prefetch and st.blocks:
            _start_gather(st.blocks[0], world)
        st.trace.append(("root", st.unsharded_bytes()))

    def root_post(mod, args, kwargs, out):
        if not torch.is_grad_enabled():  # no backward will come to free it
            _free(st.root)

    model.register_forward_pre_hook(root_pre, with_kwargs=True)
    model.register_forward_hook(root_post, with_kwargs=True)
    for i, u in enumerate(st.blocks):
        def pre(mod, args, kwargs, u=u, i=i):
            _wait(u, world)
            _bind(u, world)
            if _in_backward():  # checkpoint recompute: Block i+1's backward is over, prefetching it would leak
                return
            if prefetch and i + 1 < len(st.blocks):
                _start_gather(st.blocks[i + 1], world)  # overlaps this Block's forward
            st.trace.append((f"{u.name} forward", st.unsharded_bytes()))
            u.event("compute")

        def post(mod, args, kwargs, out, u=u, i=i):
            if _in_backward():  # checkpoint recompute: its backward comes next and needs the buffer; it frees it
                return out
            u.event("computed")
            _free(u)
            if torch.is_grad_enabled() and isinstance(out, torch.Tensor) and out.requires_grad:
                return _RegatherBeforeBackward.apply(out, st, i)
            return out

        u.module.register_forward_pre_hook(pre, with_kwargs=True)
        u.module.register_forward_hook(post, with_kwargs=True)
    return model


def _slices(u: Unit, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    out = {}
    for k, keys in enumerate(u.names):
        t = flat[u.offsets[k]:u.offsets[k] + u.shapes[k].numel()].view(u.shapes[k]).clone()
        out.update(dict.fromkeys(keys, t))
    return out


def expected_shard_bytes(unit_numels: list[int], world: int, bytes_per_element: int) -> int:
    """The formula: sum_u ceil(Psi_u / N) * bytes (Psi / N per rank plus at most N - 1 padding elements per unit)."""
    return sum(shard_layout(n, world).shard for n in unit_numels) * bytes_per_element
