"""Activation (gradient) checkpointing: keep a block's inputs, drop what it saves for backward, recompute it there.

Implements:
- `checkpoint(fn, *inputs, preserve_rng_state=True, params=())`: runs fn(*inputs) without building a graph and
  saves only `inputs`; in backward it restores the random-number state fn saw, runs fn again with gradients on
  (the recomputation), and back-propagates through that fresh graph. `params` (the weights fn reads) are passed
  to the autograd Function as inputs too, so their gradients come out of its backward and
  `torch.autograd.grad(loss, params)` works as well as `loss.backward()`;
- `apply_activation_checkpointing(model, mode, every, impl)`: a transform of a finished `minillm.model.GPT`
  (the gpt-fast style of `minillm.fast`: the model class stays, each `Block` becomes a subclass whose forward
  checkpoints; state_dict, parameters and optimizers are unchanged). `remove_activation_checkpointing` undoes it;
- `checkpointed_activation_bytes(cfg, batch, seq, dtype_bytes, mode)`: what the blocks then save, by formula.

Modes (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
arXiv:2205.05198, sec. 5):
- "full": each block keeps only its input x (s b h p bytes); everything else, s b h (4c + 6p) + 5 s b f p +
  3 p a s^2 b + ... of `minillm.train_memory.activation_bytes_per_layer`, is recomputed: one extra forward
  of every block, about 2N FLOPs per token on top of 6N (+33 %). `every=k` (Megatron's "uniform" method):
  groups of k consecutive blocks are one checkpoint that keeps the group's input; while one group is
  recomputed its k blocks' activations are all alive. Chen et al. 2016 ("Training Deep Nets with Sublinear
  Memory Cost", arXiv:1604.06174): n/k kept inputs of x bytes + k live layers of A bytes is smallest at
  k = sqrt(n x / A), i.e. sqrt(n) for a chain of layers that save about their input (memory O(sqrt n) for one
  extra forward). A transformer block saves tens of times its input (in Korthikanti's 16-bit count
  A / x = (34 s b h + 5 a s^2 b) / (2 s b h) = 17 + 2.5 a s / h), so k = sqrt(n x / A) is near or below 1 and
  for blocks k = 1 is the memory optimum; larger k only recomputes less often. Implemented by
  letting a group's first block run the whole group inside one checkpoint while the others pass their input
  through (only in a training forward: grad enabled, no KV cache; otherwise every block runs as usual).
  Call the GPT, not single blocks, when every > 1.
- "selective": recompute only the attention core, softmax(q k^T / sqrt(d) + mask) v, i.e. the `kernel` of
  each `minillm.attention.Attention`. Its saved tensors are the ones that grow with s^2 (scores, exp,
  weights: 3 p a s^2 b, the causal mask s^2, the row max and sum (2p + 2) a s b) and it has no weights, so
  recomputing it costs 4 s h FLOPs per token and layer (q k^T and weights @ v, 2 s h each), no matmul with
  a weight matrix. In exchange
  the checkpoint keeps q, k and v, which the kernel's matmuls would save anyway (with GQA it keeps k and v
  before `repeat_kv`, at n_kv_head heads: cheaper than without checkpointing). This is Korthikanti et al.'s
  choice: the s^2 parts are large in memory and cheap to recompute. The kernel may be minillm's written-out
  `sdpa` or a fused one set by `minillm.fast.use_kernel` (which already saves no s^2 term: then selective
  saves nothing more).

impl="torch" uses `torch.utils.checkpoint.checkpoint(..., use_reentrant=False)` instead of ours: the same
gradients and the same saved bytes (its non-reentrant form, in torch 2.13, saves the inputs as autograd saved tensors,
`torch._C._autograd._make_saved_tensor` in `_CheckpointFrame.save_inputs`, which pass through saved_tensors_hooks
like ours, and keeps everything else out of the graph); the tests check both. It recomputes a
little less: it stops as soon as the last tensor backward needs is back, skipping the block's final matmul, where
ours reruns the whole fn.

RNG: dropout inside a checkpoint draws its mask twice (forward, recomputation). Like torch's, our Function
saves the CPU generator state (and the CUDA one of each device the inputs live on) before the forward and
restores it, in a forked RNG so that the caller's stream is not disturbed, before recomputing: the masks agree.
The autocast state of the forward is re-entered for the recomputation.

Leaves out: offloading the kept inputs to the CPU, checkpointing inside a block other than the attention core,
non-tensor or multi-tensor outputs of fn (one tensor out), keyword tensors that need gradients (`mask` and `pos`
are held by the closure, they need none), and `torch.autograd.grad` w.r.t. intermediate tensors inside fn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from minillm.attention import Attention
from minillm.model import Block, GPTConfig
from minillm.train_memory import activation_bytes_per_layer, activation_terms

MODES = ("full", "selective")
IMPLS = ("minillm", "torch")


def _cuda_devices(tensors: Sequence[torch.Tensor]) -> list[int]:
    return sorted({t.device.index or 0 for t in tensors if t.is_cuda})


class _Checkpoint(torch.autograd.Function):
    """forward(ctx, fn, preserve_rng, n_inputs, *inputs_then_params) -> fn(*inputs), saving only the inputs."""

    @staticmethod
    def forward(ctx: Any, fn: Callable[..., torch.Tensor], preserve_rng: bool, n_inputs: int,
                *args: torch.Tensor) -> torch.Tensor:
        inputs, params = args[:n_inputs], args[n_inputs:]
        ctx.fn, ctx.preserve_rng, ctx.params = fn, preserve_rng, params  # params live in the module anyway
        ctx.devices = _cuda_devices(inputs)
        if preserve_rng:  # the generator states dropout will start from, for the recomputation
            ctx.cpu_rng = torch.get_rng_state()
            ctx.cuda_rng = [torch.cuda.get_rng_state(d) for d in ctx.devices]
        dev = inputs[0].device.type if inputs else "cpu"
        ctx.autocast = (dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
        ctx.save_for_backward(*inputs)  # the only activations kept: these go through saved_tensors_hooks
        with torch.no_grad():  # (autograd.Function.forward runs without grad already; explicit for the reader)
            return fn(*inputs)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        inputs = [x.detach().requires_grad_(x.requires_grad) for x in ctx.saved_tensors]  # fresh leaves
        with torch.random.fork_rng(devices=ctx.devices, enabled=ctx.preserve_rng):
            if ctx.preserve_rng:
                torch.set_rng_state(ctx.cpu_rng)
                for d, state in zip(ctx.devices, ctx.cuda_rng, strict=True):
                    torch.cuda.set_rng_state(state, d)
            dev, enabled, dtype = ctx.autocast
            with torch.enable_grad(), torch.autocast(dev, dtype=dtype, enabled=enabled):
                # through a view: hooks that a module tracker (FlopCounterMode) puts on fn's inputs then sit on
                # a non-leaf, which torch.autograd.grad allows
                out = ctx.fn(*(x.view_as(x) if x.requires_grad else x for x in inputs))  # the recomputed forward
        wrt = [t for t in (*inputs, *ctx.params) if t.requires_grad]
        grads = iter(torch.autograd.grad(out, wrt, grad_out, allow_unused=True) if wrt else ())
        per_arg = [next(grads) if t.requires_grad else None for t in (*inputs, *ctx.params)]
        return (None, None, None, *per_arg)


def checkpoint(fn: Callable[..., torch.Tensor], *inputs: torch.Tensor, preserve_rng_state: bool = True,
               params: Sequence[torch.Tensor] = ()) -> torch.Tensor:
    """fn(*inputs) that saves only `inputs` for backward and recomputes fn there. `params`: the tensors fn reads
    besides its inputs that need gradients (a module's parameters). Outside grad mode: plain fn(*inputs)."""
    if not torch.is_grad_enabled():
        return fn(*inputs)
    if not all(isinstance(x, torch.Tensor) for x in inputs):
        raise TypeError("checkpoint's positional inputs must be tensors; bind other arguments in fn (a closure)")
    params = [p for p in params if p.requires_grad]
    return _Checkpoint.apply(fn, preserve_rng_state, len(inputs), *inputs, *params)


def _run(impl: str, fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor],
         params: Sequence[torch.Tensor]) -> torch.Tensor:
    if impl == "torch":
        from torch.utils.checkpoint import checkpoint as torch_checkpoint
        return torch_checkpoint(fn, *inputs, use_reentrant=False, preserve_rng_state=True)
    return checkpoint(fn, *inputs, params=params)


class CheckpointedBlock(Block):
    """A `Block` whose training forward runs as one checkpoint (or, in a group of `every` blocks, either runs the
    whole group as one checkpoint or passes x through). Set by `apply_activation_checkpointing`."""

    _ckpt_group: list[Block]  # the blocks this one runs (itself first); empty: a pass-through member
    _ckpt_impl: str

    def forward(self, x: torch.Tensor, **attn_kwargs: Any) -> torch.Tensor:
        if not torch.is_grad_enabled() or attn_kwargs.get("kv_cache") is not None:
            return Block.forward(self, x, **attn_kwargs)  # inference: nothing to save, nothing to recompute
        if not self._ckpt_group:
            return x  # the group's first block has applied this one already

        def group(h: torch.Tensor) -> torch.Tensor:
            for blk in self._ckpt_group:
                h = Block.forward(blk, h, **attn_kwargs)
            return h

        params = [p for blk in self._ckpt_group for p in blk.parameters()]
        return _run(self._ckpt_impl, group, (x,), params)


class _SelectiveKernel:
    """An attention kernel wrapped in a checkpoint: keeps q, k, v, recomputes softmax(q k^T + mask) v."""

    def __init__(self, kernel: Callable[..., torch.Tensor], impl: str):
        self.kernel, self.impl = kernel, impl

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw: Any) -> torch.Tensor:
        return _run(self.impl, lambda q_, k_, v_: self.kernel(q_, k_, v_, **kw), (q, k, v), ())


def apply_activation_checkpointing(model: nn.Module, mode: str = "full", every: int = 1,
                                   impl: str = "minillm") -> nn.Module:
    """Checkpoint every `Block` of model in place ("full": whole blocks, in groups of `every`; "selective":
    the attention kernel only) and return the model. Undo with `remove_activation_checkpointing`."""
    if mode not in MODES or impl not in IMPLS:
        raise ValueError(f"mode must be one of {MODES} and impl one of {IMPLS}, got {mode!r}, {impl!r}")
    if every < 1 or (mode == "selective" and every != 1):
        raise ValueError(f"every must be >= 1 (and 1 for mode='selective'), got every={every}")
    remove_activation_checkpointing(model)
    blocks = [m for m in model.modules() if isinstance(m, Block)]
    if not blocks:
        raise ValueError("no minillm.model.Block in this model: activation checkpointing wraps GPT's blocks")
    if mode == "selective":
        for m in model.modules():
            if isinstance(m, Attention):
                m.kernel = _SelectiveKernel(m.kernel, impl)  # the instance attribute shadows the class kernel
        return model
    for i, blk in enumerate(blocks):
        blk.__class__ = CheckpointedBlock
        blk._ckpt_group = blocks[i:i + every] if i % every == 0 else []
        blk._ckpt_impl = impl
    return model


def remove_activation_checkpointing(model: nn.Module) -> nn.Module:
    """Undo `apply_activation_checkpointing`: plain blocks and the kernels they had before."""
    for m in model.modules():
        if isinstance(m, CheckpointedBlock):
            m.__class__ = Block
            del m._ckpt_group, m._ckpt_impl
        if isinstance(m, Attention) and isinstance(m.__dict__.get("kernel"), _SelectiveKernel):
            inner = m.kernel.kernel
            if inner is Attention.kernel:
                del m.kernel
            else:
                m.kernel = inner
    return model


def checkpointed_activation_bytes(cfg: GPTConfig, batch: int, seq: int, dtype_bytes: int = 4,
                                  mode: str | None = "full", every: int = 1) -> int:
    """Bytes all the blocks save for backward (n_layer blocks; the embedding and head are not included; add
    `minillm.train_memory.model_activation_bytes`'s "embedding" and "head"). mode None: no checkpointing.
    "full": one input per group, ceil(n_layer / every) s b h p; "selective": each block less its attention
    core's terms, with k and v kept at n_kv_head heads. Peak memory in backward adds one group's recomputed
    activations (every x activation_bytes_per_layer) on top of "full"."""
    s, b, p = seq, batch, dtype_bytes
    if mode is None:
        return cfg.n_layer * activation_bytes_per_layer(cfg, batch, seq, dtype_bytes)
    if mode == "full":
        activation_terms(cfg, batch, seq, dtype_bytes)  # the same validity checks
        return -(-cfg.n_layer // every) * s * b * cfg.d_model * p
    if mode != "selective":
        raise ValueError(f"mode must be None or one of {MODES}, got {mode!r}")
    t = activation_terms(cfg, batch, seq, dtype_bytes)
    core = t["scores, exp, weights"] + t["causal mask"] + t["softmax max, sum"]
    gqa = 2 * s * b * (cfg.n_head - cfg.n_kv_head) * cfg.head_dim * p  # k, v kept before repeat_kv
    return cfg.n_layer * (sum(t.values()) - core - gqa)
