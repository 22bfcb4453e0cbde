"""`minillm train`: pretrain a GPT preset on a bundled corpus, with checkpoints and a loss plot.

    minillm train --preset tiny --corpus tang300 --steps 300 --out runs/tang
    minillm train --config my.yaml --out runs/exp1 [--resume]
    minillm train --batch-size 32 --grad-accum 4 --precision bf16 --out runs/small-steps
    torchrun --nproc-per-node 2 -m minillm.cli train --steps 100 --out runs/dp [--ddp minillm]
    torchrun --nproc-per-node 2 -m minillm.cli train --steps 100 --out runs/zero --zero 1|2|3 [--resume]

Under torchrun (the environment has WORLD_SIZE, RANK, LOCAL_RANK) the command trains data-parallel: it joins
the process group (gloo on CPU; NCCL on CUDA, rank r on cuda:LOCAL_RANK), wraps the model in torch's
DistributedDataParallel (`--ddp torch`, the default) or minillm's from-scratch one (`--ddp minillm`), and
`minillm.train.train` gives each rank its rows of every batch; rank 0 prints, plots and writes the checkpoint
(of the plain model: it loads into a single-process run). The loss curve equals the single-process run's with
the same --batch-size (which must be a multiple of the number of processes x --grad-accum).
`--zero 1|2` (instead of --ddp) trains with `minillm.distributed.zero.ZeroOptimizer` (no DDP: its step averages
the gradients), `--zero 3` shards the parameters too (`minillm.distributed.fsdp.fully_shard`); ckpt.pt still holds
the full model (gathered for stage 3: `minillm generate` reads it as any other), and every rank writes its
optimizer shard to optim_shard_<rank>.pt next to it. The losses equal --ddp's up to float32 rounding.

A config file (YAML or JSON) has up to three sections: `model:` (fields of `minillm.model.GPTConfig`,
on top of --preset), `train:` (fields of `minillm.train.TrainConfig`) and `data:` (corpus, tokenizer,
vocab_size). Flags given on the command line win over the file. Every input is checked before the first
step: --out must be writable, every key must be known (a misspelt one gets the closest known name), the
numbers must make sense; a wrong input is one line `minillm train: error: ...` and exit status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

PROG = "minillm train"
SECTIONS = ("model", "train", "data")
DATA_KEYS = ("corpus", "tokenizer", "vocab_size")
TRAIN_FLAGS = ("steps", "batch_size", "seq_len", "warmup", "eval_every", "ckpt_every", "seed", "grad_accum", "lr",
               "precision")
INT_FLAGS = TRAIN_FLAGS[:-2]


class InputError(ValueError):
    """A problem with what the user gave: printed as one line, exit status 1."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help="a minillm.model preset: tiny, tiny-llama, small, ...")
    p.add_argument("--corpus", default="shakespeare",
                   help="shakespeare | tang300 | song100 (bundled); a config file may give {name: weight, ...}")
    p.add_argument("--tokenizer", default="char", choices=["char", "bpe"])
    p.add_argument("--vocab-size", type=int, default=512, help="for --tokenizer bpe")
    p.add_argument("--config", help="a YAML or JSON file with sections model: {...}, train: {...}, data: {...}")
    p.add_argument("--out", default="runs/minillm", help="directory for ckpt.pt and loss.png (default runs/minillm)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    for name in INT_FLAGS:
        p.add_argument(f"--{name.replace('_', '-')}", type=int,
                       help=("micro-batches per step: --batch-size rows are split into grad-accum pieces "
                             "(less activation memory, same gradients)") if name == "grad_accum" else None)
    p.add_argument("--lr", type=float, help="peak learning rate (a finite number > 0)")
    p.add_argument("--precision", help="fp32 (default) | bf16 | fp16: autocast forward; fp16 with loss scaling")
    p.add_argument("--ddp", choices=["torch", "minillm"], default=None,
                   help="under torchrun: torch's DistributedDataParallel (default) or minillm's from-scratch DDP")
    p.add_argument("--zero", type=int, choices=[1, 2, 3],
                   help="under torchrun, instead of --ddp: ZeRO stage 1 (optimizer states sharded), 2 (+ gradients) "
                        "or 3 (+ parameters, minillm.distributed.fsdp); optimizer shards saved per rank")
    p.add_argument("--no-fast", action="store_true",
                   help="train with the teaching ops instead of minillm.fast.to_fast (same numbers, slower)")


def _closest(key: str, known: list[str]) -> str:
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f"did you mean {near[0]!r}?" if near else f"known: {', '.join(known)}"


def check_keys(where: str, given: dict[str, Any], known: list[str]) -> None:
    """One line for the first unknown key, with the closest known one (difflib) or the list of known ones."""
    for key in given:
        if key not in known:
            raise InputError(f"{where}: unknown key {key!r}; {_closest(str(key), known)}")


def read_config(path: str) -> dict[str, Any]:
    """The file's sections, each checked for unknown keys; bad YAML/JSON is reported with its line."""
    from minillm.model import GPTConfig
    from minillm.train import TrainConfig

    p = Path(path)
    if not p.is_file():
        raise InputError(f"--config {path}: no such file")
    text = p.read_text(encoding="utf-8")
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise InputError("reading YAML needs pyyaml (pip install pyyaml), or write the config as JSON") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or type(e).__name__
            raise InputError(f"{path} is not valid YAML{where} ({problem}): fix that line") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{path} is not valid JSON at line {e.lineno}, column {e.colno} ({e.msg}): fix that "
                             "line, or name the file .yaml to write YAML") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping with sections model, train, data; got {type(data).__name__}")
    check_keys(f"{path}: section", data, list(SECTIONS))
    for section, known in (("model", [f.name for f in dataclasses.fields(GPTConfig) if f.init]),
                           ("train", [f.name for f in dataclasses.fields(TrainConfig) if f.name != "out_dir"]),
                           ("data", list(DATA_KEYS))):
        body = data.get(section) or {}
        if not isinstance(body, dict):
            raise InputError(f"{path}: section {section!r} must be a mapping of keys to values, got {body!r}")
        check_keys(f"{path}: {section}", body, known)
        data[section] = body
    return data


def check_writable(out: Path) -> None:
    """Fail now, not after training, when --out cannot hold the checkpoint."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as e:
        raise InputError(f"--out {out} is not writable ({e.strerror or e}): choose a directory you can write to"
                         ) from None


def build(args: argparse.Namespace) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(model config, train config, data, data settings) from the flags and the config file; no training."""
    from minillm.data import MixedData, TokenData, build_tokenizer, load_corpus
    from minillm.model import GPTConfig
    from minillm.train import TrainConfig

    file_cfg = read_config(args.config) if args.config else {s: {} for s in SECTIONS}
    data_cfg = {"corpus": args.corpus, "tokenizer": args.tokenizer, "vocab_size": args.vocab_size,
                **file_cfg["data"]}
    flags = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None}
    out = Path(args.out)
    if args.resume and not (out / "ckpt.pt").is_file():
        raise InputError(f"--resume: no checkpoint {out / 'ckpt.pt'}; drop --resume to start a new run there")
    check_writable(out)
    try:
        corpus = data_cfg["corpus"]
        if isinstance(corpus, dict):  # {name: sampling weight}: a mixture, each corpus split on its own
            texts = {name: load_corpus(name) for name in corpus}
            text = "".join(texts.values())
        else:
            text = load_corpus(corpus)
        tok = build_tokenizer(text, data_cfg["tokenizer"], data_cfg["vocab_size"])
        data = MixedData(texts, tok, corpus) if isinstance(corpus, dict) else TokenData(text, tok)
        model_cfg = GPTConfig.preset(args.preset, **{**file_cfg["model"], "vocab_size": tok.vocab_size})
        train_kw = {"seq_len": min(model_cfg.block_size, 256), **file_cfg["train"], **flags}
        cfg = TrainConfig(**{**train_kw, "out_dir": str(out)})
    except TypeError as e:  # a value of the wrong type in the config file ("steps: ten")
        raise InputError(f"a config value has the wrong type ({e}): check the numbers in {args.config}") from None
    if cfg.seq_len > model_cfg.block_size:
        raise InputError(f"seq_len={cfg.seq_len} exceeds the model's block_size={model_cfg.block_size}: "
                         "lower --seq-len or raise block_size")
    return model_cfg, cfg, data, data_cfg


def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from the variables torchrun sets, or None outside torchrun."""
    import os

    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise InputError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun)") from None
    return rank, world, local


def start_data_parallel(env: tuple[int, int, int]):
    """Join the process group torchrun prepared (env:// rendezvous); returns this rank's device: cuda:LOCAL_RANK with
    NCCL when the run would use CUDA (`minillm.utils.get_device`, so MINILLM_DEVICE=cpu forces gloo), else the CPU."""
    import torch
    import torch.distributed as dist

    from minillm.utils import get_device

    rank, world, local = env
    if get_device().type == "cuda":  # CUDA present and not overridden by MINILLM_DEVICE=cpu
        if local >= torch.cuda.device_count():
            raise InputError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s): use "
                             f"--nproc-per-node {torch.cuda.device_count()} or fewer, or MINILLM_DEVICE=cpu")
        torch.cuda.set_device(local)  # before the group: NCCL binds this rank to its GPU
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=world)  # MASTER_ADDR / MASTER_PORT from torchrun
    return device


def wrap_data_parallel(model, kind: str, device):
    """torch's DistributedDataParallel or minillm's DDP around `model` (already on `device`)."""
    import torch

    if kind == "minillm":
        from minillm.distributed.ddp import DDP

        return DDP(model)
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                     else None)


ZERO_STAGES = {1: "optimizer states sharded", 2: "optimizer states + gradients sharded",
               3: "optimizer states + gradients + parameters sharded"}


def check_zero(args: argparse.Namespace, env: tuple[int, int, int] | None) -> None:
    """--zero needs torchrun with 2+ processes and excludes --ddp and fp16; one line saying what to run instead."""
    if not getattr(args, "zero", None):
        return
    if env is None or env[1] < 2:
        raise InputError(f"--zero {args.zero} shards the training state over processes: launch 2 or more with "
                         f"torchrun --nproc-per-node 2 -m minillm.cli train --zero {args.zero} ...")
    if args.ddp:
        raise InputError(f"--zero and --ddp are exclusive: ZeRO averages the gradients itself (in its optimizer "
                         f"step), drop --ddp {args.ddp}")
    if args.precision == "fp16":
        raise InputError("--zero with --precision fp16 is not supported (the loss scaler cannot unscale sharded "
                         "gradients): use --precision bf16 or fp32")


def wrap_zero(model, stage: int):
    """(the ZeRO data-parallel model, the optimizer factory for `minillm.train.train`) for `stage`."""
    from minillm.distributed.zero import ZeroDataParallel, ZeroOptimizer
    from minillm.train import param_groups, unwrap

    if stage == 3:
        from minillm.distributed.zero3 import FullyShardedDataParallel, ShardedOptimizer

        return FullyShardedDataParallel(model), lambda m, cfg: ShardedOptimizer(  # m: the shell (see zero3)
            m, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return ZeroDataParallel(model), lambda m, cfg: ZeroOptimizer(param_groups(unwrap(m), cfg), stage=stage, lr=cfg.lr,
                                                                 betas=cfg.betas)


def run(args: argparse.Namespace) -> int:
    import torch

    from minillm.fast import to_fast
    from minillm.model import GPT
    from minillm.train import plot_history, train
    from minillm.utils import get_device

    env, rank = None, 0
    try:
        env = torchrun_env()
        rank = env[0] if env else 0
        check_zero(args, env)
        device = start_data_parallel(env) if env else get_device()
        model_cfg, cfg, data, data_cfg = build(args)
        if env and cfg.batch_size % (env[1] * cfg.grad_accum):
            raise InputError(f"--batch-size {cfg.batch_size} must split into {env[1]} processes x grad-accum "
                             f"{cfg.grad_accum}: use a multiple of {env[1] * cfg.grad_accum}")
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        model = GPT(model_cfg).to(device)
        if not getattr(args, "no_fast", False):  # fused norms, activations, projections, attention: same numbers
            model = to_fast(model)  # checkpoints are the same either way, so a run resumes with or without it
        zero = getattr(args, "zero", None)
        how = f"ZeRO-{zero} ({ZERO_STAGES[zero]})" if zero else f"{args.ddp or 'torch'} DDP"
        if rank == 0:
            print(f"model {args.preset}: {model.num_params():,} parameters; {data_cfg['corpus']}: "
                  f"{len(data.train):,} train / {len(data.val):,} val tokens ({data_cfg['tokenizer']}, "
                  f"vocab {data.vocab_size})" + (f"; data parallel: {env[1]} processes, {how}, "
                                                 f"{device.type}" if env else ""))
        make_optimizer = None
        if zero:
            model, make_optimizer = wrap_zero(model, zero)
        elif env:
            model = wrap_data_parallel(model, args.ddp or "torch", device)
        hist = train(model, data, cfg, resume=args.resume,
                     **({"optimizer": make_optimizer} if make_optimizer else {}))
    except (ValueError, FileNotFoundError, FloatingPointError) as e:  # InputError is a ValueError
        where = f" (rank {rank})" if env else ""
        print(f"{PROG}: error{where}: {' '.join(str(e).splitlines())}", file=sys.stderr)
        return 1
    finally:
        if env:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    if rank != 0:  # rank 0 plots, prints the summary and (in train) wrote the checkpoint
        return 0
    import matplotlib

    matplotlib.use("Agg")
    out = Path(args.out)
    ax = plot_history(hist)
    ax.set_title(f"{args.preset} on {data_cfg['corpus']}")
    ax.figure.savefig(out / "loss.png", dpi=120, bbox_inches="tight")
    summary = {"steps": hist.step[-1] if hist.step else 0,
               "train_loss": hist.train_loss[-1] if hist.train_loss else None,
               "val_loss": hist.val_loss[-1] if hist.val_loss else None,
               "tokens_per_s": round(hist.tokens_per_s, 1)}
    if cfg.precision == "fp16":
        summary["skipped_steps"] = len(hist.skipped_steps)  # steps the loss scaler skipped (inf/NaN gradients)
    print(json.dumps(summary))
    print(f"checkpoint: {out / 'ckpt.pt'}; loss curve: {out / 'loss.png'}")
    if getattr(args, "zero", None):
        print(f"optimizer shards: {out / 'optim_shard_0.pt'} .. optim_shard_{env[1] - 1}.pt (one per rank; "
              "--resume needs the same number of processes)")
    return 0
