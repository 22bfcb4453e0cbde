"""`minillm generate`: sample text from a checkpoint of `minillm train`.

    minillm generate runs/tang --prompt 床前 --temperature 0.8 --top-p 0.95
    minillm generate base --prompt "ROMEO:"        # the course's shipped base model (minillm.pretrained)

Every flag is checked before the model runs; a wrong one is one line `minillm generate: error: ...` and
exit status 1. The context is never dropped silently: with the KV cache (the default) prompt + --max-tokens
must fit the model's block_size; --no-cache lifts that limit by re-running a sliding block_size window of
the most recent tokens every step (slower, and the model then sees only that window), and says so.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

PROG = "minillm generate"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpt", help="a checkpoint written by `minillm train` (its ckpt.pt, or the run's directory), "
                                "or `base` for the course's shipped base model")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="1 = off")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-cache", action="store_true",
                   help="re-run the last block_size tokens every step (slower; allows going past the context)")


def check_args(args: argparse.Namespace) -> None:
    """Raise ValueError (one line, what to change) for flags no model could use."""
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.max_tokens < 1:
        raise ValueError(f"--max-tokens must be >= 1, got {args.max_tokens}")
    for flag, value in (("--temperature", args.temperature), ("--top-p", args.top_p),
                        ("--repetition-penalty", args.repetition_penalty)):
        if not math.isfinite(value):
            raise ValueError(f"{flag} must be a finite number, got {value}")
    if args.prompt == "":
        raise ValueError("--prompt is empty: give at least one character to continue (the default is a newline)")


def context_plan(prompt_len: int, max_tokens: int, block_size: int, no_cache: bool) -> str | None:
    """None when the model's input fits the context; else a note (--no-cache) or a ValueError saying what to do.

    The model reads the prompt and every new token but the last (sampled, never fed back): prompt + new - 1."""
    seen = prompt_len + max_tokens - 1
    if seen <= block_size:
        return None
    if not no_cache:
        room = block_size - prompt_len + 1
        fix = f"lower --max-tokens to {room}" if room >= 1 else f"shorten the prompt to at most {block_size} tokens"
        raise ValueError(f"prompt ({prompt_len} tokens) + --max-tokens {max_tokens} - 1 = {seen} positions exceed "
                         f"the model's context of {block_size} tokens: {fix}, or pass --no-cache to slide a "
                         f"{block_size}-token window (slower: the window is re-run for every token)")
    return (f"note: the model would read {seen} tokens, more than its context of {block_size}: each step sees only "
            f"the last {block_size} tokens (--no-cache window)")


def run(args: argparse.Namespace) -> int:
    import torch

    from minillm.checkpoint import load_for_generation
    from minillm.fast import to_fast
    from minillm.generate import generate
    from minillm.sampling import SamplingParams
    from minillm.utils import get_device

    try:
        check_args(args)
        params = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                repetition_penalty=args.repetition_penalty, max_tokens=args.max_tokens)
        device = get_device()
        if args.ckpt == "base" and not Path(args.ckpt).exists():
            from minillm.pretrained import load_base

            model, tok = load_base(device)
        else:
            model, tok = load_for_generation(args.ckpt, device)
        model = to_fast(model)  # the fused ops: same numbers, faster
        prompt = tok.encode(args.prompt)
        if not prompt:
            raise ValueError("the prompt encodes to no tokens: give at least one character")
        note = context_plan(len(prompt), args.max_tokens, model.cfg.block_size, args.no_cache)
        if note:
            print(note, file=sys.stderr)
        ids = torch.tensor([prompt] * args.num_samples, device=device)
        g = torch.Generator(device=device).manual_seed(args.seed)
        out = generate(model, ids, params, use_cache=not args.no_cache, generator=g)
    except (ValueError, FileNotFoundError) as e:
        print(f"{PROG}: error: {' '.join(str(e).splitlines())}", file=sys.stderr)
        return 1
    for i, row in enumerate(out.tolist()):
        if args.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        print(tok.decode(row))
    return 0
