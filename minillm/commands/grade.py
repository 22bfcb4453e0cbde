"""`minillm grade [NOTEBOOK ...] [--json] [--timeout S]`: grade exercise notebooks and print a report card.

The grading itself (executing the notebook, running the checks outside the learner's kernel, points from
the registry) is `minillm.grading.runner`; this module parses the arguments and prints the card or JSON.
Bad input (a missing file, not a notebook, a kernel that dies) is one line on stderr per notebook and exit
code 1; the other notebooks are still graded. A cell or check that runs past --timeout is noted on the
card, keeps the points earned elsewhere, and also makes the exit code 1 (the run was incomplete).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from minillm.grading import core
from minillm.grading.runner import NotebookReport, grade_notebook


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_card(reports: list[NotebookReport]) -> str:
    lines = []
    graded = [r for r in reports if r.error is None]
    for rep in reports:
        lines.append(rep.path)
        if rep.error is not None:
            lines += [f"  not graded: {rep.error}", ""]
            continue
        lines.append(f"  {'id':<6} {'exercise':<34} {'status':<18} {'points':>6}")
        for r in rep.results:
            status = f"{core.MARKS.get(r.status, '❌')} {r.status}"
            lines.append(f"  {r.id:<6} {_fit(r.title, 34):<34} {status:<18} {f'{r.points}/{r.max_points}':>6}")
            if r.hint and (r.status == "failed" or "longer than" in r.hint):
                wrapped = textwrap.wrap(_fit(r.hint, 400), 90) or [""]
                lines += [f"  {'':<6} {'hint:' if k == 0 else '':<5} {w}" for k, w in enumerate(wrapped)]
        lines.append(f"  {'total':<60} {f'{rep.points}/{rep.max_points}':>6}")
        if rep.note:
            lines.append(f"  note: {rep.note}")
        if rep.cell_errors:
            lines.append(f"  note: {len(rep.cell_errors)} cell(s) raised errors; first: {rep.cell_errors[0]}")
        lines.append("")
    total = sum(r.points for r in graded)
    most = sum(r.max_points for r in graded)
    skipped = len(reports) - len(graded)
    lines.append(f"overall: {total}/{most} points in {len(graded)} notebook(s)"
                 + (f"; {skipped} could not be graded" if skipped else ""))
    return "\n".join(lines)


def default_notebooks(cwd: Path) -> list[Path]:
    return sorted((cwd / "exercises").glob("*.ipynb"))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                   help="exercise notebooks to grade (default: exercises/*.ipynb under the current folder)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("--timeout", type=int, default=120, metavar="S",
                   help="seconds one cell, or one check, may run (default: 120)")


def run(args: argparse.Namespace) -> int:
    if args.timeout is not None and args.timeout <= 0:
        print("minillm grade: --timeout must be a positive number of seconds", file=sys.stderr)
        return 1
    paths = [Path(p) for p in args.notebooks] or default_notebooks(Path.cwd())
    if not paths:
        print("minillm grade: no notebooks given and none found in ./exercises/", file=sys.stderr)
        return 1
    reports = []
    for path in paths:
        if not args.json:
            print(f"grading {path} ...", file=sys.stderr, flush=True)
        rep = grade_notebook(path, args.timeout)
        if rep.error:
            print(f"minillm grade: {path}: {rep.error}", file=sys.stderr, flush=True)
        elif rep.note or any("longer than" in r.hint for r in rep.results):
            print(f"minillm grade: {path}: {rep.note or 'a check ran longer than the timeout'} "
                  "(raise the limit with --timeout); the points earned still count", file=sys.stderr, flush=True)
        reports.append(rep)
    graded = [r for r in reports if r.error is None]
    if args.json:
        print(json.dumps({"notebooks": [r.to_json() for r in reports],
                          "points": sum(r.points for r in graded),
                          "max_points": sum(r.max_points for r in graded)}, ensure_ascii=False, indent=1))
    else:
        print(format_card(reports))
    timed_out = any(r.note or any("longer than" in x.hint for x in r.results) for r in graded)
    return 0 if len(graded) == len(reports) and not timed_out else 1
