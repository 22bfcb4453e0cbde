"""`minillm sft`: supervised fine-tuning of a base checkpoint on instructions, written as a chat checkpoint.

    minillm sft --out runs/chat                                   # the shipped base model, built-in instructions
    minillm sft --base runs/tang --data my.jsonl --steps 300 --out runs/mine
    minillm sft --tasks author,next --mix-ratio 0.25 --out runs/poems

--base is a checkpoint of `minillm train` (its ckpt.pt or run directory); without it the course's base model
(`minillm.pretrained.load_base`). --data is a JSONL file, one {"prompt": ..., "response": ...} or
{"messages": [...]} object a line; without it the built-in 唐诗 / Shakespeare instructions (`minillm.sft.
instructions`), of which those whose characters the tokenizer knows are kept. The chat tokens are added, the
embedding grown, and the checkpoint (`--out`/ckpt.pt) holds the model and the chat tokenizer: `minillm chat`
reads it. Every input is checked first; a wrong one is one line `minillm sft: error: ...` and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from minillm.commands.train import check_writable

PROG = "minillm sft"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", help="a checkpoint of `minillm train` (default: the course's shipped base model)")
    p.add_argument("--data", help="a JSONL file of {prompt, response} or {messages} (default: built-in instructions)")
    p.add_argument("--tasks", help="built-in tasks to keep, comma-separated: author,write,next,play,next_en,reply")
    p.add_argument("--out", required=True, help="the run directory; ckpt.pt is written there")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=0, help="window length (default: the model's block_size)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=None, help="default: min(10, steps // 10)")
    p.add_argument("--mix-ratio", type=float, default=0.0,
                   help="share of batch rows that are pretraining text (against forgetting; needs the base corpora)")
    p.add_argument("--no-packing", action="store_true", help="one example per row, padded (slower)")
    p.add_argument("--seed", type=int, default=0)


def _load_base(path: str | None, device: Any) -> tuple[Any, Any]:
    if path is None:
        from minillm.pretrained import load_base

        try:
            return load_base(device)
        except FileNotFoundError as e:
            raise ValueError(f"{e}; or pass --base with a checkpoint of `minillm train`") from None
    from minillm.checkpoint import load_for_generation

    model, tok = load_for_generation(path, device)
    return model.train(), tok


def _examples(args: argparse.Namespace, tok: Any) -> tuple[list[dict[str, Any]], int]:
    """The examples to train on, and how many built-in ones were dropped for unknown characters."""
    from minillm.sft import build_instructions, load_jsonl, to_messages
    from minillm.sft.instructions import TASKS

    if args.data:
        if args.tasks:
            raise ValueError("--tasks selects built-in tasks; with --data the file's examples are all used")
        examples = load_jsonl(args.data)
    else:
        tasks = args.tasks.split(",") if args.tasks else list(TASKS)
        bad = [t for t in tasks if t not in TASKS]
        if bad:
            raise ValueError(f"unknown task {bad[0]!r} in --tasks; choose from {','.join(TASKS)}")
        examples = [e for e in build_instructions() if e["task"] in tasks]
    known = set(tok.stoi)
    ok = [e for e in examples if all(set(m["content"]) <= known for m in to_messages(e))]
    if args.data and len(ok) < len(examples):
        i = next(i for i, e in enumerate(examples) if e not in ok)
        chars = sorted({c for m in to_messages(examples[i]) for c in m["content"]} - known)
        raise ValueError(f"example {i + 1} of {args.data} uses characters the base model's tokenizer lacks "
                         f"({''.join(chars[:10])!r}): remove them or fine-tune a model whose vocabulary has them")
    if not [e for e in ok if e["split"] == "train"]:
        raise ValueError("no training example is left: the base tokenizer knows none of their characters; "
                         "choose other --tasks or give --data")
    return ok, len(examples) - len(ok)


def run(args: argparse.Namespace) -> int:
    import torch

    from minillm.sft import SFTData, prepare_for_chat, sft_config
    from minillm.train import train
    from minillm.utils import get_device

    try:
        if not 0.0 <= args.mix_ratio < 1.0:
            raise ValueError(f"--mix-ratio must be in [0, 1), got {args.mix_ratio}")
        out = Path(args.out)
        check_writable(out)
        device = get_device()
        model, tok = _load_base(args.base, device)
        examples, dropped = _examples(args, tok)
        seq_len = args.seq_len or model.cfg.block_size
        if seq_len > model.cfg.block_size:
            raise ValueError(f"--seq-len {seq_len} exceeds the model's block_size {model.cfg.block_size}")
        warmup = args.warmup if args.warmup is not None else min(10, args.steps // 10)
        cfg = sft_config(steps=args.steps, batch_size=args.batch_size, seq_len=seq_len, lr=args.lr, warmup=warmup,
                         seed=args.seed, out_dir=str(out))
        mix = None
        if args.mix_ratio:
            from minillm.sft.batching import pretraining_mix

            mix = pretraining_mix(tok)
        model, chat_tok = prepare_for_chat(model, tok)
        data = SFTData(chat_tok, examples, packing=not args.no_packing, mix=mix, mix_ratio=args.mix_ratio)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"{PROG}: error: {' '.join(str(e).splitlines())}", file=sys.stderr)
        return 1
    n_train = len(data.splits["train"])
    note = f" ({dropped} built-in examples skipped: characters the tokenizer lacks)" if dropped else ""
    print(f"{n_train} training examples{note}; vocabulary {tok.vocab_size} -> {chat_tok.vocab_size} "
          f"with {', '.join(chat_tok.special_ids)}")
    torch.manual_seed(args.seed)
    history = train(model, data, cfg)
    print(f"train loss {history.train_loss[-1]:.3f}, held-out instruction loss {history.val_loss[-1]:.3f}; "
          f"{history.tokens_per_s:,.0f} tokens/s")
    print(f"wrote {out / 'ckpt.pt'}; talk to it with: minillm chat {out}")
    return 0
