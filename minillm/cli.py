"""The `minillm` command line: `minillm grade`, `minillm train`, `minillm generate`, `minillm sft`, `minillm chat`, ...

Each subcommand lives in its own module, which provides `add_arguments(parser)` and `run(args) -> int`
(the exit code). Only the module of the command being run is imported, so `minillm --help` is fast even
when a command needs torch. To add a command, add one line to COMMANDS.
Errors the commands expect are printed as one line by the commands themselves; anything unexpected is
shown as one line too (set MINILLM_DEBUG=1 to see the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# name -> (module providing add_arguments/run, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "grade": ("minillm.commands.grade", "execute exercise notebooks and print a report card"),
    "train": ("minillm.commands.train", "pretrain a GPT preset on a bundled corpus, with checkpoints and a loss plot"),
    "generate": ("minillm.commands.generate", "sample text from a checkpoint of `minillm train`"),
    "sft": ("minillm.commands.sft", "fine-tune a base checkpoint on instructions (chat template, masked loss)"),
    "chat": ("minillm.commands.chat", "talk to a checkpoint of `minillm sft`, the reply streamed token by token"),
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("minillm")
    except PackageNotFoundError:
        return "(not installed)"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported to add its arguments."""
    parser = argparse.ArgumentParser(prog="minillm", description="minillm: the command line of the course.")
    parser.add_argument("--version", action="version", version=f"minillm {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is not None and command not in COMMANDS:
        print(f"minillm: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        args = build_parser(command).parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors: argparse already printed
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    if args.command is None:
        build_parser().print_help()
        return 2
    try:
        return importlib.import_module(COMMANDS[args.command][0]).run(args)
    except KeyboardInterrupt:
        print("minillm: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - one clear line instead of a traceback
        if os.environ.get("MINILLM_DEBUG"):
            raise
        print(f"minillm {args.command}: unexpected error {type(e).__name__}: {e} "
              "(set MINILLM_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
