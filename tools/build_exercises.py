"""Regenerate the learner notebooks exercises/NN_slug.ipynb from their solution sources exercises/src/*.py.

    python tools/build_exercises.py            # rebuild every learner notebook whose cells changed
    python tools/build_exercises.py --check    # only report stale notebooks (exit 1 if any)
    python tools/build_exercises.py --solutions DIR   # also write the solution notebooks into DIR

A notebook whose cell sources already match its source is left untouched, so its committed outputs
stay. A rewritten notebook has no outputs: execute it afterwards with tools/execute_notebooks.py.
The work is done by tools/exercise_notebooks.py (an authoring tool, not part of the minillm package).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import exercise_notebooks as build  # noqa: E402 - after the sys.path line


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sources", nargs="*", type=Path, help="solution sources (default: exercises/src/*.py)")
    p.add_argument("--check", action="store_true", help="report stale learner notebooks, write nothing")
    p.add_argument("--solutions", type=Path, metavar="DIR", help="also write solution notebooks into DIR")
    args = p.parse_args(argv)
    sources = [s.resolve() for s in args.sources] or sorted((ROOT / "exercises" / "src").glob("*.py"))
    stale, rewritten = [], []
    for src in sources:
        out = build.learner_path(src)
        try:
            if args.check:
                if not out.exists() or build.stale_cells(src, out):
                    stale.append(out)
                continue
            sol = args.solutions / f"{src.stem}.solution.ipynb" if args.solutions else None
            if sol is not None:
                sol.parent.mkdir(parents=True, exist_ok=True)
            path, changed = build.write_notebooks(src, solution_out=sol)
        except ValueError as e:
            print(f"{src}: {e}", file=sys.stderr)
            return 1
        print(f"{'rewrote' if changed else 'up to date':>10}  {path.relative_to(ROOT)}")
        if changed:
            rewritten.append(path)
    if stale:
        print("stale learner notebooks (run tools/build_exercises.py): " + ", ".join(map(str, stale)),
              file=sys.stderr)
        return 1
    if rewritten:
        names = " ".join(str(p.relative_to(ROOT)) for p in rewritten)
        print(f"now execute them: .venv/bin/python tools/execute_notebooks.py {names}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
