"""Benchmarks whose Markdown tables make the book's appendix "Measured results".

    python -m minillm.bench [--out FILE.md] [--quick] [--only SECTION ...]

One module per chapter (`ch01` tokenizers, `ch03` norms, `ch05` attention, `ch06` training and generation,
`fast` the teaching vs fused training path, `peft` the chapter-9 comparison of fine-tuning methods, `memory`
chapter 10's activation bytes (formula vs measured, recomputation) and mixed-precision steps, `ddp` chapter 11's
1-vs-N-process training steps and all-reduce, `zero` chapter 12's bytes per rank for DDP and ZeRO-1/2/3),
each with a `section_*(quick) -> str` function that returns Markdown (a heading, a sentence on what was
measured, a table); later chapters add a module and one line to `SECTIONS`. Every timing goes through
`minillm.bench.timer.best_time`. `--quick` shrinks every section to a smoke test of a few seconds (the unit
tests use it); numbers from a quick run are not for the book. Section modules are imported only when they run.

This package is the harness layer: it may import any minillm module, and no library module imports it.
Tables are formatted by `minillm.utils.markdown_table`; notebooks import a chapter's helpers from its
module (`minillm.bench.ch01`, ...).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import os
import platform
import sys
from collections.abc import Sequence

# (name, "module:function"); the function takes `quick` and returns Markdown. Later chapters append theirs.
SECTIONS: list[tuple[str, str]] = [
    ("tokenizers", "minillm.bench.ch01:section_tokenizers"),
    ("norms", "minillm.bench.ch03:section_norms"),
    ("attention", "minillm.bench.ch05:section_attention"),
    ("training", "minillm.bench.ch06:section_training"),
    ("generation", "minillm.bench.ch06:section_generation"),
    ("fast", "minillm.bench.fast:section_fast"),
    ("peft", "minillm.bench.peft:section_peft"),
    ("memory", "minillm.bench.memory:section_memory"),
    ("ddp", "minillm.bench.ddp:section_ddp"),
    ("sharding", "minillm.bench.zero:section_sharding"),
]


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo on Linux, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version_of(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, str]:
    """What the numbers were measured on: CPU, cores, torch, device, date."""
    import torch

    dev = os.environ.get("MINILLM_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = torch.cuda.get_device_name(0) if dev.startswith("cuda") and torch.cuda.is_available() else "none"
    return {
        "date": _dt.date.today().isoformat(),
        "cpu": _cpu_name(),
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "tokenizers": _version_of("tokenizers"),
        "device": dev,
        "gpu": gpu,
    }


def _section(target: str):
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def run(quick: bool = False, only: Sequence[str] | None = None) -> str:
    """All sections (or those named in `only`) as one Markdown document with the machine description."""
    known = [n for n, _ in SECTIONS]
    bad = [n for n in (only or []) if n not in known]
    if bad:
        raise ValueError(f"unknown section {bad[0]!r}; choose from {known}")
    info = machine_info()
    head = "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + (" (quick run)" if quick else "") + "\n\n"
    parts = [_section(target)(quick) for name, target in SECTIONS if not only or name in only]
    return head + "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minillm.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="also write the Markdown to this file")
    ap.add_argument("--quick", action="store_true", help="tiny inputs: a smoke test, not numbers for the book")
    ap.add_argument("--only", nargs="*", metavar="SECTION", help=f"sections to run: {[n for n, _ in SECTIONS]}")
    args = ap.parse_args(argv)
    try:
        md = run(args.quick, args.only)
    except ValueError as e:
        print(f"python -m minillm.bench: error: {e}", file=sys.stderr)
        return 2
    print(md)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(md)
    return 0
