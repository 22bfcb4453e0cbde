"""`minillm grade`: execute exercise notebooks and print a report card.

Each notebook is read into memory and executed with nbclient (the file itself is never modified), in
the notebook's folder, with `MINILLM_GRADE_LOG` pointing the kernel's `check()` calls at a temporary
file. Cells that raise do not stop the run, so every check cell gets its chance. The card lists every
registered exercise of the notebook's chapter (from the file name "NN_slug.ipynb" and the ids its check
cells use); an exercise whose check never ran counts as "not run", 0 points.

Bad input gives one line on stderr and exit code 1, never a traceback: a missing file, a file that is
not a notebook, a kernel that dies, a cell that runs past --timeout. Other notebooks are still graded.
Leaves out: sandboxing the learner's code (it runs with the learner's own rights, like the notebook).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from minillm.grading import core

CHECK_CALL_RE = re.compile(r"""check\(\s*["'](\d\d\.\d+)["']""")


class GradeError(Exception):
    """Bad input or a failed run; the message is the one line shown to the user."""


@dataclass
class NotebookReport:
    path: str
    results: list[core.CheckResult] = field(default_factory=list)
    error: str | None = None  # why the notebook could not be graded
    cell_errors: list[str] = field(default_factory=list)  # "cell 5: ValueError: ..." (the run went on)

    @property
    def points(self) -> int:
        return sum(r.points for r in self.results)

    @property
    def max_points(self) -> int:
        return sum(r.max_points for r in self.results)

    def to_json(self) -> dict:
        return {"path": self.path, "points": self.points, "max_points": self.max_points, "error": self.error,
                "cell_errors": self.cell_errors, "exercises": [r.to_json() for r in self.results]}


# ---------------------------------------------------------------------------------------------------
# reading and running one notebook


def read_notebook(path: Path):
    import nbformat

    if not path.exists():
        raise GradeError("no such file")
    if path.is_dir():
        raise GradeError("is a folder; give notebook files (or no argument for exercises/*.ipynb)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise GradeError(f"cannot be read as a text file ({type(e).__name__})") from None
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        raise GradeError(f"is not a Jupyter notebook (not valid JSON: {e.msg}, line {e.lineno})") from None
    try:
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # noqa: BLE001 - nbformat raises several kinds
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GradeError(f"is not a valid Jupyter notebook ({msg[:150]})") from None
    return nb


def expected_exercises(path: Path, nb) -> list[core.Exercise]:
    """Registered exercises of the chapters this notebook belongs to (file name prefix, check ids)."""
    chapters = set()
    m = re.match(r"(\d\d)_", path.name)
    if m:
        chapters.add(m.group(1))
    for cell in nb.cells:
        if cell.cell_type == "code":
            chapters.update(i.split(".")[0] for i in CHECK_CALL_RE.findall(cell.source))
    out: list[core.Exercise] = []
    for ch in sorted(chapters):
        try:
            out += core.exercises_of(ch)
        except Exception:  # noqa: BLE001 - a broken chapter grader shows up in the check lines instead
            continue
    return out


def _cell_errors(nb) -> list[str]:
    errors = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                errors.append(f"cell {i}: {out.get('ename')}: {str(out.get('evalue'))[:100]}")
    return errors


def execute(path: Path, nb, timeout: int, log: Path) -> list[str]:
    """Run all cells of `nb` (errors do not stop the run); return the cells that raised."""
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    env = dict(os.environ, **{core.LOG_ENV: str(log), "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    kernel_log = log.with_name("kernel-stderr.txt")  # the kernel process's own stderr, not the cells'
    try:
        with open(kernel_log, "w") as err:
            client.execute(env=env, stderr=err)
    except CellTimeoutError:
        raise GradeError(f"a cell ran longer than {timeout} s (raise the limit with --timeout)") from None
    except DeadKernelError:
        last = _last_line(kernel_log)
        raise GradeError("the kernel died while running the notebook (a cell crashed Python or exhausted "
                         "memory)" + (f"; its last words: {last}" if last else "")) from None
    except NoSuchKernel:
        raise GradeError("no Jupyter kernel 'python3' is installed; run "
                         "'python -m ipykernel install --sys-prefix --name python3'") from None
    except RuntimeError as e:  # e.g. "Kernel didn't respond in 60 seconds"
        raise GradeError(f"the kernel failed to start or respond ({e})") from None
    return _cell_errors(nb)


def _last_line(path: Path) -> str:
    """The last line of the kernel's stderr that is not a routine warning (or "")."""
    try:
        lines = [x.strip() for x in path.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [x for x in lines if x and "WARNING" not in x]
    return lines[-1][:150] if lines else ""


def read_log(log: Path) -> dict[str, core.CheckResult]:
    """The last result of each exercise id found in a grade log."""
    found: dict[str, core.CheckResult] = {}
    if not log.exists():
        return found
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            d = json.loads(line)
            res = core.CheckResult(**{k: d[k] for k in ("id", "title", "status", "points", "max_points", "hint")})
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
        found[res.id] = res
    return found


def grade_notebook(path: Path, timeout: int) -> NotebookReport:
    report = NotebookReport(str(path))
    try:
        nb = read_notebook(path)
        expected = expected_exercises(path, nb)
        with tempfile.TemporaryDirectory(prefix="minillm-grade-") as tmp:
            log = Path(tmp) / "grade.jsonl"
            report.cell_errors = execute(path, nb, timeout, log)
            ran = read_log(log)
    except GradeError as e:
        report.error = str(e)
        return report
    for ex in expected:
        got = ran.pop(ex.id, None)
        report.results.append(got or core.CheckResult(ex.id, ex.title, "not run", 0, ex.points))
    report.results += sorted(ran.values(), key=lambda r: r.id)  # checks of other chapters, if any
    return report


# ---------------------------------------------------------------------------------------------------
# the report card


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
            if r.status == "failed" and r.hint:
                wrapped = textwrap.wrap(_fit(r.hint, 400), 90) or [""]
                lines += [f"  {'':<6} {'hint:' if k == 0 else '':<5} {w}" for k, w in enumerate(wrapped)]
        lines.append(f"  {'total':<60} {f'{rep.points}/{rep.max_points}':>6}")
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
                   help="seconds one cell may run before grading stops (default: 120)")


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
        reports.append(rep)
    graded = [r for r in reports if r.error is None]
    if args.json:
        print(json.dumps({"notebooks": [r.to_json() for r in reports],
                          "points": sum(r.points for r in graded),
                          "max_points": sum(r.max_points for r in graded)}, ensure_ascii=False, indent=1))
    else:
        print(format_card(reports))
    return 0 if len(graded) == len(reports) else 1
