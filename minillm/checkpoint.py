"""Checkpoints: one file that holds everything needed to resume training or to generate.

`save_checkpoint(path, model, optimizer, step, ...)` writes a dict of tensors and plain containers:

| key | what |
|---|---|
| `format`, `version` | "minillm-checkpoint", 1 |
| `model` | the weights (`model_state(model)`, by default the full `state_dict`) |
| `model_config` | the model's config as a dict (`GPTConfig.to_dict()`), so `model_from_checkpoint` can rebuild it |
| `optimizer` | the optimizer's `state_dict` (AdamW's moments and step counts) |
| `step` | how many optimizer steps are done |
| `train_config`, `history` | the training loop's config and loss history, as dicts |
| `rng_torch`, `rng_cuda`, `rng_data` | RNG states: torch's CPU one (dropout), each CUDA device's, the batch sampler's |
| `tokenizer` | `minillm.data.tokenizer_state(tokenizer)`, a dict of strings and ints |
| `grad_scaler` | fp16 runs of `minillm.train` (via `extra=`): the GradScaler's `state_dict()` (scale, clean steps) |

`load_checkpoint(path, map_location)` reads it back with `torch.load(..., weights_only=True)` only: the
unpickler then accepts tensors, numbers, strings and containers and refuses every other object, so a
checkpoint someone shared cannot run code when it is opened (a pickle can name any importable function
to call while loading; `weights_only=False` would call it). A file that tries gets a one-line ValueError.
Any extra entry a caller adds must therefore be made of those types too.

The seam later chapters extend:
- adapter-only checkpoints (the LoRA chapter): pass `model_state=` a function returning only the adapter
  tensors, and `restore_model(..., strict=False)` loads them on top of the base weights;
- sharded optimizers (ZeRO, chapter 12): rank 0 writes the full model weights to ckpt.pt as always (with
  `optimizer` None and an `optimizer_shards` entry {world, stage}); every rank writes its optimizer shard to
  `optim_shard_<rank>.pt` next to it (`save_optimizer_shard`, with the step, checked at load; the previous shard is
  kept as `.prev`, so a crash between the shards and ckpt.pt leaves a resumable pair). `save_train_checkpoint` and
  `load_optimizer_state` are that protocol as `minillm.train` runs it on every rank (shards, then ckpt.pt; a shard
  that fails to load on one rank fails on all, so no rank is left waiting in a collective).
Leaves out: safetensors output (`minillm.hf.save_safetensors` writes weights for Hugging Face), async writes.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

FORMAT = "minillm-checkpoint"
VERSION = 1
CKPT_NAME = "ckpt.pt"  # the file name inside a run directory


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight and buffer of `model` (the default `model_state`)."""
    return model.state_dict()


def _as_dict(obj: Any) -> dict[str, Any] | None:
    """A config or history as a plain dict: its `to_dict()`, a dataclass's fields, or a dict as is."""
    if obj is None or isinstance(obj, dict):
        return obj
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint: give a dict or a dataclass")


def _model_config(model: nn.Module) -> dict[str, Any] | None:
    """The model's config as a dict, or None for a model without a dataclass `cfg`."""
    cfg = getattr(model, "cfg", None)
    return _as_dict(cfg) if hasattr(cfg, "to_dict") or dataclasses.is_dataclass(cfg) else None


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    step: int,
    *,
    train_config: Any = None,
    history: Any = None,
    data_generator: torch.Generator | None = None,
    tokenizer: Any = None,
    model_state: Callable[[nn.Module], dict[str, torch.Tensor]] = full_model_state,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint to `path` (a temporary file first, then renamed: a crash never leaves half a file)."""
    from minillm.data import tokenizer_state

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model": model_state(model),
        "model_config": _model_config(model),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": int(step),
        "train_config": _as_dict(train_config),
        "history": _as_dict(history),
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "rng_data": data_generator.get_state() if data_generator is not None else None,
        "tokenizer": tokenizer_state(tokenizer) if tokenizer is not None else None,
        **(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def optimizer_shard_file(ckpt: str | Path, rank: int) -> Path:
    """Where rank `rank` of a sharded-optimizer run (ZeRO) keeps its optimizer shard: next to ckpt.pt."""
    return checkpoint_file(ckpt).parent / f"optim_shard_{rank}.pt"


def save_optimizer_shard(path: str | Path, shard: dict[str, Any], step: int) -> None:
    """Write one rank's optimizer shard (a dict of tensors and containers) with the step it belongs to, atomically.

    The file it replaces (the shard that goes with the ckpt.pt on disk now) is kept as `<name>.prev` until the next
    save: the shards and ckpt.pt are separate files that no rename updates together, so a run killed after the
    shards of step s were written but before rank 0 replaced ckpt.pt (step s') still resumes from step s' (and a
    run killed mid-rename finds the one that is left). `minillm.train` writes ckpt.pt only after every rank's shard."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({**shard, "step": int(step)}, tmp)
    if path.is_file():
        path.replace(_previous(path))
    tmp.replace(path)


def _previous(path: Path) -> Path:
    return path.with_name(path.name + ".prev")


def load_optimizer_shard(path: str | Path, step: int, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The shard `save_optimizer_shard` wrote for checkpoint step `step` (weights_only): the file, else the previous
    one it replaced (the run stopped between the shards and ckpt.pt). One-line error when neither is of `step`."""
    path = Path(path)
    found = [p for p in (path, _previous(path)) if p.is_file()]
    if not found:
        raise FileNotFoundError(f"no optimizer shard {path}: a ZeRO checkpoint needs every rank's "
                                "optim_shard_<rank>.pt next to ckpt.pt; copy them all")
    steps = []
    for p in found:
        shard = torch.load(p, map_location=map_location, weights_only=True)
        if shard.get("step") == step:
            return shard
        steps.append(shard.get("step"))
    which = f"{steps[0]} (its .prev from step {steps[1]})" if len(steps) == 2 else f"{steps[0]}"
    raise ValueError(f"{found[0]} is from step {which}, ckpt.pt from step {step}: "
                     "these shards belong to another checkpoint; resume from a run directory whose files were "
                     "written together")


def load_optimizer_state(opt, state: dict, ckpt: Path, rank: int, world: int, device: torch.device) -> None:
    """Resume the optimizer from a checkpoint: its full state, or (ZeRO) this rank's `optim_shard_<rank>.pt`.
    A full state re-shards into a sharded optimizer (`load_full_state_dict`); shards need the same world size.
    A shard that fails on one rank (missing, of another step) fails on every rank, so none waits in a collective."""
    saved = state.get("optimizer_shards")
    if saved is None:
        load_full = getattr(opt, "load_full_state_dict", None) if getattr(opt, "per_rank_state", False) else None
        (load_full or opt.load_state_dict)(state["optimizer"])
        return
    if not getattr(opt, "per_rank_state", False) or saved["world"] != world or (saved["stage"] == 3) != (
            getattr(opt, "stage", None) == 3):  # ZeRO-1 and -2 shards are the same; ZeRO-3's units are not
        raise ValueError(f"{ckpt} has its optimizer sharded over {saved['world']} processes (ZeRO-{saved['stage']}):"
                         f" resume with torchrun --nproc-per-node {saved['world']} ... --zero {saved['stage']}, or "
                         "consolidate the optim_shard_*.pt files (minillm.distributed.zero.consolidate_optimizer)")
    error = None
    try:
        opt.load_state_dict(load_optimizer_shard(optimizer_shard_file(ckpt, rank), state["step"], device))
    except Exception as e:  # noqa: BLE001 - any failure (a truncated file too) is re-raised below, once all ranks know
        error = e
    failed = torch.tensor([error is not None], dtype=torch.int32, device=device)
    if world > 1:
        dist.all_reduce(failed)  # how many ranks failed: the same answer on every rank
    if error is not None:
        raise error
    if failed.item():
        raise ValueError(f"{int(failed.item())} other rank(s) could not load their optim_shard_<rank>.pt for step "
                         f"{state['step']} (their error says why): every rank stops")


def save_train_checkpoint(ckpt: Path, model: nn.Module, plain: nn.Module, opt, step: int, cfg: Any, history: Any,
                          data_gen: torch.Generator, tokenizer: Any, scaler: torch.amp.GradScaler | None, rank: int,
                          world: int) -> None:
    """`minillm.train`'s checkpoint, called on every rank: rank 0 writes ckpt.pt of `plain` (the model without its
    data-parallel wrapper `model`) with the optimizer, `cfg`, `history`, RNG states and the GradScaler's state.
    A sharded optimizer (ZeRO) first has every rank write `optim_shard_<rank>.pt`, and ckpt.pt, the file resume
    starts from, is written only after all of them (a crash in between leaves the previous ckpt.pt with the shards'
    `.prev` files: still resumable); a wrapper with `full_state_dict()` (ZeRO-3) gathers the weights from every
    rank first."""
    sharded = getattr(opt, "per_rank_state", False)
    extra = {"grad_scaler": scaler.state_dict()} if scaler is not None else {}
    if sharded:
        save_optimizer_shard(optimizer_shard_file(ckpt, rank), opt.state_dict(), step)
        extra["optimizer_shards"] = {"world": world, "stage": getattr(opt, "stage", None)}
        if world > 1:
            dist.barrier()  # every shard of this step is on disk before ckpt.pt names the step
    gather = getattr(model, "full_state_dict", None)  # a collective: every rank calls it
    weights = gather() if gather is not None else None
    if rank == 0:
        save_checkpoint(ckpt, plain, None if sharded else opt, step, train_config=cfg, history=history,
                        data_generator=data_gen, tokenizer=tokenizer, extra=extra,
                        **({"model_state": lambda _: weights} if gather is not None else {}))
    if world > 1:
        dist.barrier()  # the file is complete before any rank goes on (and, say, resumes from it)


def checkpoint_file(path: str | Path) -> Path:
    """`path` itself, or `path/ckpt.pt` when `path` is a run directory."""
    p = Path(path)
    return p / CKPT_NAME if p.is_dir() else p


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The dict `save_checkpoint` wrote. Never unpickles arbitrary objects (`weights_only=True`).

    Raises FileNotFoundError when there is no file, ValueError (one line) when the file is not a minillm
    checkpoint: truncated, not written by torch.save, or holding objects other than tensors and containers."""
    path = checkpoint_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train first, or give the run's directory")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is a page long; keep the one fact that matters: what the file asked to load
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e)) or re.search(r"Unsupported operand \d+", str(e))
        why = f"it asks for {found.group(1)}" if found and found.groups() else (found.group(0) if found else "")
        raise ValueError(f"refused to load {path}: it is not a plain checkpoint of tensors and containers "
                         f"({why or 'unreadable pickle'}), and unpickling it could run code; "
                         "use a checkpoint written by `minillm train`") from None
    except Exception as e:  # noqa: BLE001 - a foreign file fails in many ways (RuntimeError, EOFError, KeyError...)
        first = type(e).__name__ + (f": {str(e).strip().splitlines()[0]}" if str(e).strip() else "")
        raise ValueError(f"{path} is truncated or not a torch checkpoint ({first[:120]}); "
                         "re-run training or copy the file again") from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise ValueError(f"{path} is not a minillm checkpoint (no 'model' and 'step' entries)")
    return state


def config_mismatch(saved: dict[str, Any] | None, current: dict[str, Any] | None) -> list[str]:
    """The config fields that differ, as 'name: saved -> current' strings (empty when either is unknown)."""
    if not saved or not current:
        return []
    # fields both know: a field added to the config later is not a mismatch (the weights' shapes still are)
    return [f"{k}: {saved[k]!r} in the checkpoint, {current[k]!r} now" for k in sorted(saved.keys() & current.keys())
            if saved[k] != current[k]]


def check_model_config(model: nn.Module, state: dict[str, Any]) -> None:
    """A one-line ValueError when the checkpoint's model config differs from `model.cfg` (no-op when unknown)."""
    diff = config_mismatch(state.get("model_config"), _model_config(model))
    if diff:
        raise ValueError(f"the checkpoint was written by a different model ({'; '.join(diff[:4])}): "
                         "use the same --preset/--config as the saved run, or a new --out directory")


def restore_model(model: nn.Module, state: dict[str, Any], *, strict: bool = True) -> None:
    """Load the checkpoint's weights into `model`, with a one-line error when the shapes do not fit.

    (`load_state_dict`'s own error lists every mismatching tensor: pages for a changed preset.)"""
    check_model_config(model, state)
    own = model.state_dict()
    saved = state["model"]
    missing = [k for k in own if k not in saved] if strict else []
    unknown = [k for k in saved if k not in own]
    wrong = [k for k in saved if k in own and tuple(saved[k].shape) != tuple(own[k].shape)]
    if missing or unknown or wrong:
        what = (f"missing {missing[0]!r}" if missing else f"unexpected {unknown[0]!r}" if unknown else
                f"{wrong[0]!r} is {tuple(saved[wrong[0]].shape)} in the file, {tuple(own[wrong[0]].shape)} here")
        raise ValueError(f"the checkpoint does not fit this model ({what}; {len(missing) + len(unknown) + len(wrong)}"
                         " tensors differ): use the model configuration it was trained with")
    model.load_state_dict(saved, strict=strict)


def restore_rng(state: dict[str, Any], data_generator: torch.Generator | None = None) -> None:
    """Set torch's, CUDA's and the batch sampler's RNG states from a checkpoint.

    Generator states must be CPU ByteTensors whatever `map_location` moved them to, hence `.cpu()`."""
    torch.set_rng_state(state["rng_torch"].cpu())
    if state.get("rng_cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
    if data_generator is not None and state.get("rng_data") is not None:
        data_generator.set_state(state["rng_data"].cpu())


def model_from_checkpoint(state: dict[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """A `minillm.model.GPT` rebuilt from the checkpoint's `model_config`, with its weights."""
    from minillm.model import GPT, GPTConfig

    if state.get("model_config") is None:
        raise ValueError("the checkpoint has no model config: was it written by `minillm train`?")
    model = GPT(GPTConfig.from_dict(state["model_config"])).to(device)
    restore_model(model, state)
    return model


def load_for_generation(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """(model in eval mode, tokenizer) from a checkpoint of `minillm train` (its ckpt.pt or the run directory)."""
    from minillm.data import tokenizer_from_state

    state = load_checkpoint(path, device)
    if state.get("model_config") is None or state.get("tokenizer") is None:
        raise ValueError(f"{path} has no model config or tokenizer: was it written by `minillm train`?")
    return model_from_checkpoint(state, device).eval(), tokenizer_from_state(state["tokenizer"])
