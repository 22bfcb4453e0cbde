"""Tensor parallelism (Megatron-LM) from scratch on `torch.distributed`: each matrix split over N ranks.

Shoeybi et al. 2019, "Megatron-LM: Training Multi-Billion Parameter Language Models Using Model Parallelism"
(arXiv:1909.08053), sec. 3. Two conjugate operators carry all the communication:

- f (`copy_to_parallel`): identity forward, all-reduce (sum) backward: before a column-parallel layer, whose
  every rank reads the whole (replicated) input and so gets only part of the input's gradient;
- g (`reduce_from_parallel`): all-reduce forward, identity backward: after a row-parallel layer, whose ranks
  each hold a partial sum of the output.

`ColumnParallelLinear` keeps rows r*O/N .. (r+1)*O/N of the weight (O, I) (output features split: its output
stays split); `RowParallelLinear` keeps columns r*I/N .. of the weight (its input is already split) and adds
the bias once, after g. Both are built from a full `nn.Linear`, so a trained model can be sharded.
Column then row (MLP: gate / up then down; attention: q / k / v by heads then o_proj) needs one g in
forward and one f in backward per sub-layer: 2 all-reduces forward and 2 backward per block (Megatron fig. 4).

`apply_tensor_parallel(model, group)` shards a minillm GPT in place, without changing its class:
- the q / k / v projections column-parallel by heads (n_head and n_kv_head divisible by N), o_proj
  row-parallel; MLP gate / up (or up) column-parallel, down row-parallel;
- `Attention.forward` reshapes with `self.cfg.n_head`, `n_kv_head` and `head_dim`: the transform gives each
  attention a copy of its config with the LOCAL head counts (head_dim unchanged; `cfg.d_model` keeps the model
  width), which is all the module needs to run on its heads only;
- one f per sub-layer (a forward pre-hook on the attention and on the MLP), not one per column-parallel linear:
  q, k and v (and gate, up) read the same input, so their input gradients are summed locally first and
  all-reduced once;
- `vocab_parallel=True` (default): `VocabParallelEmbedding` (rows of the table split; ids outside this rank's
  range look up zeros; g sums) and the lm_head column-parallel WITHOUT gathering: the model then returns this
  rank's slice of the logits (B, T, V/N); compute the loss with `vocab_parallel_cross_entropy` (or `tp_loss`),
  which never gathers the full logits (max, sum of exps and the target logit are all-reduced: 3 small
  all-reduces of (B, T) numbers). Tied embeddings stay tied (the lm_head shares the embedding shard).
`CollectiveCounter` records every all-reduce these operators issue, with its phase (forward / backward) and size.

Leaves out: sequence parallelism (Korthikanti et al. 2022: norms and dropout split along the sequence, g
becomes reduce-scatter and f all-gather), the RNG tracker for dropout in split regions (dropout > 0 is refused),
position schemes with per-head biases (T5, ALiBi: refused), fused / overlapped communication, 2-D mesh (TP x DP).
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

_COUNTERS: list[CollectiveCounter] = []


class CollectiveCounter:
    """`with CollectiveCounter() as c:` counts the all-reduces issued by this module's operators, by
    (name, phase): c.counts[("g", "forward")] etc.; `c.elements` sums the elements they reduced (the same keys;
    bytes = elements x element size); `c.total(phase)` sums a phase's counts."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.elements: Counter[tuple[str, str]] = Counter()

    def __enter__(self) -> CollectiveCounter:
        _COUNTERS.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _COUNTERS.remove(self)

    def total(self, phase: str) -> int:
        return sum(n for (_, p), n in self.counts.items() if p == phase)


def _all_reduce(x: torch.Tensor, group: Any, name: str, phase: str, op: Any = dist.ReduceOp.SUM) -> torch.Tensor:
    """All-reduce `x` in place over `group` (a no-op for one rank), and count it (and its elements)."""
    for c in _COUNTERS:
        c.counts[(name, phase)] += 1
        c.elements[(name, phase)] += x.numel()
    if dist.get_world_size(group) > 1:
        dist.all_reduce(x, op=op, group=group)
    return x


class _Copy(torch.autograd.Function):
    """Megatron's f: identity forward, all-reduce of the gradient backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _all_reduce(grad.contiguous().clone(), ctx.group, "f", "backward"), None


class _Reduce(torch.autograd.Function):
    """Megatron's g: all-reduce forward, identity backward (`name` labels the count: "g", "embedding")."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: Any, name: str) -> torch.Tensor:
        return _all_reduce(x.contiguous().clone(), group, name, "forward")

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return grad, None, None


def copy_to_parallel(x: torch.Tensor, group: Any = None) -> torch.Tensor:
    """f: x unchanged; its gradient is summed over the group in backward."""
    return _Copy.apply(x, group)


def reduce_from_parallel(x: torch.Tensor, group: Any = None, name: str = "g") -> torch.Tensor:
    """g: the sum of x over the group; the gradient passes unchanged."""
    return _Reduce.apply(x, group, name)


def _split(n: int, world: int, what: str) -> int:
    if n % world:
        raise ValueError(f"{what}={n} does not split over {world} ranks: use a multiple of {world}")
    return n // world


class ColumnParallelLinear(nn.Module):
    """y_r = x W_r^T + b_r with W_r rows r*O/N .. (r+1)*O/N of the full weight (O, I): output features split.

    x (..., I) replicated -> y_r (..., O/N). copy_input=True puts f in front (leave it False when the caller
    applies one f to an input shared by several column-parallel layers). gather_output=True all-gathers the
    slices into (..., O) (not differentiable here: for inspection only)."""

    def __init__(self, linear: nn.Linear, group: Any = None, copy_input: bool = True, gather_output: bool = False):
        super().__init__()
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        n = _split(linear.out_features, world, "out_features")
        self.group, self.copy_input, self.gather_output = group, copy_input, gather_output
        self.in_features, self.out_features = linear.in_features, n
        self.weight = nn.Parameter(linear.weight.detach()[rank * n:(rank + 1) * n].clone())  # (O/N, I)
        self.bias = (None if linear.bias is None
                     else nn.Parameter(linear.bias.detach()[rank * n:(rank + 1) * n].clone()))  # (O/N,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.copy_input:
            x = copy_to_parallel(x, self.group)
        y = F.linear(x, self.weight, self.bias)  # (..., O/N)
        if self.gather_output:
            parts = [torch.empty_like(y) for _ in range(dist.get_world_size(self.group))]
            dist.all_gather(parts, y.detach().contiguous(), group=self.group)
            y = torch.cat(parts, dim=-1)
        return y


class RowParallelLinear(nn.Module):
    """y = g(x_r W_r^T) + b with W_r columns r*I/N .. (r+1)*I/N of the full weight (O, I): input features split.

    x_r (..., I/N) (the output of a column-parallel layer) -> y (..., O) replicated; the bias is added once,
    after the all-reduce."""

    def __init__(self, linear: nn.Linear, group: Any = None):
        super().__init__()
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        n = _split(linear.in_features, world, "in_features")
        self.group, self.in_features, self.out_features = group, n, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach()[:, rank * n:(rank + 1) * n].clone())  # (O, I/N)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())  # (O,) whole

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = reduce_from_parallel(F.linear(x, self.weight), self.group)  # (..., O): partial sums summed
        return y if self.bias is None else y + self.bias


class VocabParallelEmbedding(nn.Module):
    """Rows r*V/N .. (r+1)*V/N of the table (V, d): ids in range look up their row, others give zeros; g sums.

    idx (B, T) -> (B, T, d) replicated: exactly one rank contributes each token's row."""

    def __init__(self, emb: nn.Embedding, group: Any = None):
        super().__init__()
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        n = _split(emb.num_embeddings, world, "vocab_size")
        self.group, self.start, self.end = group, rank * n, (rank + 1) * n
        self.weight = nn.Parameter(emb.weight.detach()[self.start:self.end].clone())  # (V/N, d)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        outside = (idx < self.start) | (idx >= self.end)  # (B, T) tokens another rank holds
        local = torch.where(outside, torch.zeros_like(idx), idx - self.start)
        x = F.embedding(local, self.weight).masked_fill(outside[..., None], 0.0)  # (B, T, d), zeros outside
        return reduce_from_parallel(x, self.group, "embedding")


class _VocabParallelCE(torch.autograd.Function):
    """Per-token cross-entropy from this rank's logits (M, V/N); the gradient needs no communication."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, start: int, group: Any) -> torch.Tensor:
        m = logits.detach().amax(-1)  # (M,) local max, then the global max: for a stable exp only
        _all_reduce(m, group, "ce_max", "forward", dist.ReduceOp.MAX)
        z = logits.detach() - m[:, None]  # (M, V/N)
        n = logits.shape[-1]
        inside = (target >= start) & (target < start + n)  # (M,) the rank holding each target's logit
        local = torch.where(inside, target - start, torch.zeros_like(target))
        picked = z.gather(1, local[:, None])[:, 0] * inside  # (M,) z_target on its rank, 0 elsewhere
        _all_reduce(picked, group, "ce_target", "forward")
        e = z.exp()
        sum_e = _all_reduce(e.sum(-1), group, "ce_sumexp", "forward")  # (M,) sum over the whole vocab
        ctx.save_for_backward(e / sum_e[:, None], local, inside)  # this rank's slice of softmax
        return sum_e.log() - picked  # (M,) log sum exp z - z_target

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        softmax, local, inside = ctx.saved_tensors
        g = softmax.clone()  # d loss / d logits = softmax - onehot(target), the onehot on its rank only
        rows = torch.arange(g.shape[0], device=g.device)
        g[rows, local] -= inside.to(g.dtype)
        return g * grad[:, None], None, None, None


def vocab_parallel_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, group: Any = None,
                                 ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy of (..., V/N) logits slices (rank r holds vocab ids r*V/N ..) against (...) targets,
    equal to F.cross_entropy on the gathered logits; the full logits are never formed (Megatron sec. 3)."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    if logits.shape[:-1] != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)}: targets must be logits' "
                         "shape without the last (vocab) dim")
    n = logits.shape[-1]
    flat, t = logits.reshape(-1, n), targets.reshape(-1)
    keep = t != ignore_index
    if ((t[keep] < 0) | (t[keep] >= n * world)).any():
        raise ValueError(f"targets must lie in [0, {n * world}) (V/N={n} x {world} ranks) or be {ignore_index}")
    losses = _VocabParallelCE.apply(flat, torch.where(keep, t, torch.zeros_like(t)), rank * n, group)  # (M,)
    return (losses * keep).sum() / keep.sum().clamp(min=1)


def _copy_input_hook(group: Any):
    """A forward pre-hook that applies f to a module's first positional input (kwargs pass through)."""

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return (copy_to_parallel(args[0], group), *args[1:]), kwargs

    return hook


def _refuse_targets(module: nn.Module, args: tuple, kwargs: dict) -> None:
    if (len(args) > 1 and args[1] is not None) or kwargs.get("targets") is not None:
        raise ValueError("a vocab-parallel model returns only this rank's logits slice: call model(idx) without "
                         "targets and use tensor.tp_loss(model, idx, targets) / vocab_parallel_cross_entropy")


def apply_tensor_parallel(model: nn.Module, group: Any = None, vocab_parallel: bool = True) -> nn.Module:
    """Shard a minillm GPT in place over `group` (Megatron layout, see the module docstring); returns it.

    Every rank must call it on the same full model (same weights). vocab_parallel=False keeps the embedding
    and lm_head replicated (the model then returns full logits and its own loss)."""
    world = dist.get_world_size(group)
    cfg = model.cfg
    if cfg.n_head % world or cfg.n_kv_head % world:
        raise ValueError(f"n_head={cfg.n_head} and n_kv_head={cfg.n_kv_head} must both be divisible by the "
                         f"{world} tensor-parallel ranks (each rank keeps whole heads): pick a divisor of both")
    if cfg.ffn_hidden % world:  # checked before any module is replaced: an error leaves the model whole
        raise ValueError(f"ffn_hidden={cfg.ffn_hidden} must be divisible by the {world} tensor-parallel ranks (the "
                         "MLP's hidden units are split): pick a multiple of the tensor-parallel size")
    if cfg.pos in ("t5", "alibi"):
        raise ValueError(f"pos={cfg.pos!r} adds a per-head bias over all heads; tensor parallelism here supports "
                         "rope / learned / sinusoidal / none")
    if cfg.dropout > 0:
        raise ValueError(f"dropout={cfg.dropout}: split regions need a per-rank RNG tracker, left out; use dropout=0")
    if vocab_parallel:
        _split(cfg.vocab_size, world, "vocab_size")
    for block in model.layers:
        attn = block.self_attn
        for name in ("q_proj", "k_proj", "v_proj"):  # rows of each are (head, head_dim): whole heads per rank
            setattr(attn, name, ColumnParallelLinear(getattr(attn, name), group, copy_input=False))
        attn.o_proj = RowParallelLinear(attn.o_proj, group)
        local = copy.copy(attn.cfg)  # the instance's own config, with this rank's head counts
        local.n_head, local.n_kv_head = attn.cfg.n_head // world, attn.cfg.n_kv_head // world
        attn.cfg = local
        attn.register_forward_pre_hook(_copy_input_hook(group), with_kwargs=True)
        mlp = block.mlp
        for name in ("gate", "up"):
            if hasattr(mlp, name):
                setattr(mlp, name, ColumnParallelLinear(getattr(mlp, name), group, copy_input=False))
        mlp.down = RowParallelLinear(mlp.down, group)
        mlp.register_forward_pre_hook(_copy_input_hook(group), with_kwargs=True)
    if vocab_parallel:
        tied = model.lm_head.weight is model.embed_tokens.weight
        emb = VocabParallelEmbedding(model.embed_tokens, group)
        head = ColumnParallelLinear(model.lm_head, group)  # f in front; the logits stay split (B, T, V/N)
        model.embed_tokens = emb
        if tied:
            head.weight = emb.weight  # the same (V/N, d) shard: the tie survives the split
        model.lm_head = head
        model.register_forward_pre_hook(_refuse_targets, with_kwargs=True)
    model.tp_group = group
    return model


def tp_loss(model: nn.Module, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss of a vocab-parallel model: its logits slice through vocab_parallel_cross_entropy."""
    return vocab_parallel_cross_entropy(model(idx)[0], targets, model.tp_group)


def gather_param(p: torch.Tensor, module: nn.Module, name: str, group: Any = None) -> torch.Tensor:
    """The full tensor of parameter (or gradient) `p` of `module` (named `name` in it): shards all-gathered
    along their split dim (dim 0 for column-parallel weights / biases and the vocab table, dim 1 for
    row-parallel weights); replicated tensors are returned as they are."""
    if isinstance(module, ColumnParallelLinear | VocabParallelEmbedding):
        dim = 0
    elif isinstance(module, RowParallelLinear) and name == "weight":
        dim = 1
    else:
        return p.detach().clone()
    parts = [torch.empty_like(p) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, p.detach().contiguous(), group=group)
    return torch.cat(parts, dim=dim)


def gathered(model: nn.Module, grads: bool = False, group: Any = None) -> dict[str, torch.Tensor]:
    """Full parameters (or their gradients) of a sharded model, by the names of the unsharded model."""
    out, seen = {}, set()
    for mod_name, mod in model.named_modules():
        for name, p in mod.named_parameters(recurse=False):
            full = f"{mod_name}.{name}" if mod_name else name
            if id(p) in seen:  # a tied weight: listed once, under its first name (as named_parameters does)
                continue
            seen.add(id(p))
            t = p.grad if grads else p
            if t is None:
                raise ValueError(f"{full} has no gradient: run a backward first")
            out[full] = gather_param(t, mod, name, group)
    return out
