"""`minillm chat CKPT`: talk to a fine-tuned checkpoint on the terminal, the reply printed token by token.

    minillm chat runs/chat
    you> 《静夜思》作者是谁？
    bot> 李白

Each line you type is a user turn; the conversation is rendered with the chat template (`minillm.sft.template`)
and the model's reply streams until it writes `<|end|>`. /reset forgets the conversation, /quit (or end of
input, Ctrl-D) leaves. When the history outgrows the model's context the oldest exchanges are dropped.
Characters the model's vocabulary lacks are skipped, with a note on stderr. A checkpoint without the chat
tokens (one of `minillm train`, not `minillm sft`) is one line `minillm chat: error: ...` and exit status 1.
"""

from __future__ import annotations

import argparse
import math
import sys

PROG = "minillm chat"
HELP = "type a message; /reset clears the conversation, /quit (or Ctrl-D) leaves"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpt", help="a checkpoint written by `minillm sft` (its ckpt.pt, or the run's directory)")
    p.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=200, help="the longest reply")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    import torch

    from minillm.checkpoint import load_for_generation
    from minillm.sampling import SamplingParams
    from minillm.sft import ChatSession, ChatTokenizer
    from minillm.utils import get_device

    try:
        if not math.isfinite(args.temperature):
            raise ValueError(f"--temperature must be a finite number, got {args.temperature}")
        params = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                max_tokens=args.max_tokens)
        device = get_device()
        model, tok = load_for_generation(args.ckpt, device)
        try:
            tok = ChatTokenizer(tok.chars)
        except (ValueError, AttributeError):
            raise ValueError(f"{args.ckpt} has no chat tokens: it is a pretrained model; fine-tune it first with "
                             f"`minillm sft --base {args.ckpt} --out DIR`") from None
        session = ChatSession(model, tok, params, torch.Generator(device=device).manual_seed(args.seed))
    except (ValueError, FileNotFoundError) as e:
        print(f"{PROG}: error: {' '.join(str(e).splitlines())}", file=sys.stderr)
        return 1
    interactive = sys.stdin.isatty()
    if interactive:
        print(HELP)
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:  # end of input
            break
        text = line.rstrip("\n")
        if text.strip() == "/quit":
            break
        if text.strip() == "/reset":
            session.reset()
            print("(conversation cleared)", flush=True)
            continue
        if not text.strip():
            continue
        if text.strip().startswith("/"):
            print(f"(unknown command {text.strip()!r}: {HELP})", flush=True)
            continue
        try:
            pieces = session.send(text)
        except ValueError as e:
            print(f"(error: {e})", flush=True)
            continue
        if session.dropped:
            print(f"(skipped characters the model does not know: {session.dropped!r})", file=sys.stderr)
        print("bot> ", end="", flush=True)
        for piece in pieces:
            print(piece, end="", flush=True)  # one token at a time, as it is sampled
        print(flush=True)
    return 0
