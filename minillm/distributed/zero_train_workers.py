"""Worker functions for `minillm.distributed.launch` (tests of ZeRO's checkpoints and of `minillm.train` with ZeRO).

- `zero_checkpoint_worker`: on every rank, for stages 1 and 2 (float64 tiny GPT): this rank's `state_dict()` after
  the steps (the test consolidates them), a run interrupted, saved through a file and resumed into a fresh optimizer
  (its parameters must equal the uninterrupted run's exactly), the same state re-sharded with `load_full_state_dict`,
  the errors of a mismatched load, and a run with `clip_grad_norm_`;
- `zero_train_worker`: `minillm.train.train` on a `ZeroDataParallel` model with a `ZeroOptimizer` (ZeRO-1, -2) and
  on a `FullyShardedDataParallel` one with a `ShardedOptimizer` (ZeRO-3), straight through and interrupted + resumed
  from its checkpoint directory;
- `zero_resume_error_worker`: a shard missing on one rank at resume fails every rank.
`RandomTokens` is the tiny data source both use (and the single-process references in the tests).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from minillm.distributed.ddp_workers import global_batches, shard, tiny_gpt
from minillm.distributed.zero import ZeroDataParallel, ZeroOptimizer
from minillm.train import TrainConfig, param_groups, train, unwrap


def named_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """minillm.train's two weight-decay groups, with torch's "param_names" so states are keyed by name."""
    names = {p: n for n, p in model.named_parameters()}
    groups = param_groups(model, TrainConfig(weight_decay=weight_decay))
    return [{**g, "param_names": [names[p] for p in g["params"]]} for g in groups]


def _loss(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    return model(tokens[:, :-1], tokens[:, 1:])[1]


def run_steps(model: nn.Module, opt: Any, batches: list[torch.Tensor], clip: float | None = None) -> None:
    for x in batches:
        opt.zero_grad(set_to_none=True)
        _loss(model, x).backward()
        if clip is not None:
            if isinstance(opt, ZeroOptimizer):
                opt.clip_grad_norm_(clip)
            else:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()


def _through_file(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def zero_checkpoint_worker(rank: int, world: int, steps: int, batch: int, seq: int, lr: float, wd: float,
                           clip: float) -> dict[str, Any]:
    import torch.distributed as dist

    from minillm.distributed.zero import consolidate_optimizer

    local = [shard(x, rank, world) for x in global_batches(steps, batch, seq)]
    out: dict[str, Any] = {}
    for stage in (1, 2):
        model = tiny_gpt(0)
        opt = ZeroOptimizer(named_groups(model, wd), stage=stage, lr=lr)
        run_steps(model, opt, local)
        full_params = _params(model)
        state = _through_file(opt.state_dict())

        half = steps // 2  # interrupted after `half` steps, saved, resumed into a fresh model and optimizer
        model = tiny_gpt(0)
        opt = ZeroOptimizer(named_groups(model, wd), stage=stage, lr=lr)
        run_steps(model, opt, local[:half])
        saved_state, saved_weights = _through_file(opt.state_dict()), _through_file(model.state_dict())
        run_steps(model, opt, local[half:half + 1])  # the run goes on a little after the save: must not matter
        model = tiny_gpt(1)  # other initial weights: all of them must come from the checkpoint
        model.load_state_dict(saved_weights)
        opt = ZeroOptimizer(named_groups(model, wd), stage=3 - stage, lr=lr)  # a stage-1 shard loads into stage 2
        opt.load_state_dict(saved_state)
        run_steps(model, opt, local[half:])
        resumed = _params(model)

        # re-shard: the consolidated full state (all ranks' shards) loaded into a new optimizer, then two more steps
        shards: list[Any] = [None] * world
        dist.all_gather_object(shards, state)
        model = tiny_gpt(0)
        model.load_state_dict(dict(zip([n for n, _ in model.named_parameters()], full_params, strict=True)),
                              strict=False)
        opt = ZeroOptimizer(named_groups(model, wd), stage=stage, lr=lr)
        opt.load_full_state_dict(consolidate_optimizer(shards))
        run_steps(model, opt, local[:2])
        resharded = _params(model)

        errors = []
        for bad in ({**state, "world": world + 1}, {**state, "rank": (rank + 1) % world}, {"state": {}}):
            try:
                opt.load_state_dict(bad)
            except ValueError as e:
                errors.append(str(e))
        model = tiny_gpt(0)
        opt = ZeroOptimizer(named_groups(model, wd), stage=stage, lr=lr)
        run_steps(model, opt, local, clip=clip)
        out[f"stage{stage}"] = {"state": state, "params": full_params, "resumed": resumed, "resharded": resharded,
                                "errors": errors, "clipped": _params(model)}
    return out


class RandomTokens:
    """Uniform random tokens over a vocabulary of 32: `batch(split, B, T, gen)` -> (x, y), as minillm.data's."""

    vocab_size = 32

    def batch(self, split: str, batch: int, seq: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randint(0, self.vocab_size, (batch, seq + 1), generator=gen)
        return x[:, :-1], x[:, 1:]


def zero_train_worker(rank: int, world: int, out_dir: str, cfg_kw: dict[str, Any]) -> dict[str, Any]:
    """`minillm.train.train` with ZeRO-1, -2 and -3: straight through, and stopped at step 2 then resumed."""
    from minillm.distributed.zero3 import FullyShardedDataParallel, ShardedOptimizer

    out: dict[str, Any] = {}
    for stage in (1, 2, 3):
        def make(model: nn.Module, cfg: TrainConfig, stage: int = stage) -> Any:
            if stage == 3:
                return ShardedOptimizer(model, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
            return ZeroOptimizer(param_groups(unwrap(model), cfg), stage=stage, lr=cfg.lr, betas=cfg.betas)

        results = {}
        for name, until in (("straight", None), ("stopped", 2), ("resumed", None)):
            cfg = TrainConfig(**cfg_kw, out_dir=str(Path(out_dir) / f"stage{stage}" / name.replace("resumed",
                                                                                                   "stopped")))
            # stage 3 resumes into other initial weights: every one must come from the checkpoint
            gpt = tiny_gpt(1 if name == "resumed" else 0)
            model = FullyShardedDataParallel(gpt) if stage == 3 else ZeroDataParallel(gpt)
            hist = train(model, RandomTokens(), cfg, resume=name == "resumed", until=until, optimizer=make)
            params = model.full_state_dict() if stage == 3 else dict(gpt.named_parameters())
            results[name] = {"loss": hist.train_loss, "val": hist.val_loss,
                             "params": {k: v.detach().clone() for k, v in params.items()}}
        out[f"stage{stage}"] = results
    return out


def zero_checkpoint_and_train_worker(rank: int, world: int, ckpt_args: tuple, out_dir: str,
                                     cfg_kw: dict[str, Any]) -> dict[str, Any]:
    """Both workers above in one launch (each spawn costs seconds of imports)."""
    return {"ckpt": zero_checkpoint_worker(rank, world, *ckpt_args), "train": zero_train_worker(rank, world, out_dir,
                                                                                                  cfg_kw)}


def zero_resume_error_worker(rank: int, world: int, out_dir: str, cfg_kw: dict[str, Any]) -> str:
    """ZeRO-1 trained 2 steps, then rank 1's optimizer shard goes missing and every rank resumes: returns the error
    each rank raised (every rank must raise: one that went on would wait for the others in a collective)."""
    import torch.distributed as dist

    from minillm.checkpoint import optimizer_shard_file

    def make(model: nn.Module, cfg: TrainConfig) -> ZeroOptimizer:
        return ZeroOptimizer(param_groups(unwrap(model), cfg), stage=1, lr=cfg.lr, betas=cfg.betas)

    cfg = TrainConfig(**cfg_kw, out_dir=out_dir)
    train(ZeroDataParallel(tiny_gpt(0)), RandomTokens(), cfg, until=2, optimizer=make)
    if rank == 1:
        optimizer_shard_file(Path(out_dir) / "ckpt.pt", 1).unlink()
    dist.barrier()
    try:
        train(ZeroDataParallel(tiny_gpt(0)), RandomTokens(), cfg, resume=True, optimizer=make)
    except (ValueError, FileNotFoundError) as e:
        return f"{type(e).__name__}: {e}"
    return "resumed"
