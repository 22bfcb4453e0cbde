"""`minillm grade`'s engine: execute an exercise notebook, then grade it outside the learner's kernel.

1. The notebook is read into memory (the file is never modified) and executed with nbclient in the
   notebook's folder, as the learner would run it. Cells that raise do not stop the run. A cell that runs
   past the timeout ends the kernel run (noted on the card) but not the grading. This kernel is the
   learner's: its output, and whatever it does to the grading modules there, counts for nothing.
2. The grader reads the `check("NN.k", fn)` calls of the code cells, drops ids its registry does not
   know, and runs those checks in a fresh process (`minillm.grading.worker`) that loads only the
   notebook's definitions and restores the grading modules before each check. A check that runs past the
   timeout is marked "not run" and the worker is restarted for the checks after it.
3. Points, titles and maxima come from this process's registry; the worker reports only a status and a
   hint per id. The card lists every exercise of the notebook's chapter (file name "NN_slug.ipynb" and
   the check ids): one without a check call is "not run", 0 points, and its maximum still counts.

Bad input raises GradeError with one line: a missing file, a file that is not a notebook, a kernel that
dies, a kernel that cannot start. The printing and argument parsing are in minillm/commands/grade.py.
Leaves out: sandboxing the learner's code (it runs with the learner's own rights, like the notebook).
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import minillm
from minillm.grading import core, worker

CHECK_CALL_RE = re.compile(r"""check\(\s*["'](\d\d\.\d+)["']""")


class GradeError(Exception):
    """Bad input or a failed run; the message is the one line shown to the user."""


@dataclass
class NotebookReport:
    path: str
    results: list[core.CheckResult] = field(default_factory=list)
    error: str | None = None  # why the notebook could not be graded
    cell_errors: list[str] = field(default_factory=list)  # "cell 5: ValueError: ..." (the run went on)
    note: str | None = None  # e.g. a cell ran past the timeout (the grade still counts what was earned)

    @property
    def points(self) -> int:
        return sum(r.points for r in self.results)

    @property
    def max_points(self) -> int:
        return sum(r.max_points for r in self.results)

    def to_json(self) -> dict:
        return {"path": self.path, "points": self.points, "max_points": self.max_points, "error": self.error,
                "cell_errors": self.cell_errors, "note": self.note, "exercises": [r.to_json() for r in self.results]}


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


def execute(path: Path, nb, timeout: int, workdir: Path) -> tuple[list[str], str | None]:
    """Run all cells of `nb` (errors do not stop the run); return the cells that raised and a timeout note."""
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    env = {k: v for k, v in os.environ.items() if k != "MINILLM_GRADE_LOG"}
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    kernel_log = workdir / "kernel-stderr.txt"  # the kernel process's own stderr, not the cells'
    note = None
    try:
        with open(kernel_log, "w") as err:
            client.execute(env=env, stderr=err)
    except CellTimeoutError:
        note = f"a cell ran longer than {timeout} s; the cells after it did not run in the kernel"
    except DeadKernelError:
        last = _last_line(kernel_log)
        raise GradeError("the kernel died while running the notebook (a cell crashed Python or exhausted "
                         "memory)" + (f"; its last words: {last}" if last else "")) from None
    except NoSuchKernel:
        raise GradeError("no Jupyter kernel 'python3' is installed; run "
                         "'python -m ipykernel install --sys-prefix --name python3'") from None
    except RuntimeError as e:  # e.g. "Kernel didn't respond in 60 seconds"
        raise GradeError(f"the kernel failed to start or respond ({e})") from None
    return _cell_errors(nb), note


def _last_line(path: Path) -> str:
    """The last line of the kernel's stderr that is not a routine warning (or "")."""
    try:
        lines = [x.strip() for x in path.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [x for x in lines if x and "WARNING" not in x]
    return lines[-1][:150] if lines else ""


def _pump(stream, lines: queue.Queue) -> None:
    """Move the worker's report lines into a queue (then None), so the grader can wait with a timeout."""
    for line in stream:
        lines.put(line)
    lines.put(None)


def run_checks(path: Path, sources: list[str], checks: list[tuple[str, str]], timeout: int,
               workdir: Path) -> dict[str, tuple[str, str]]:
    """{id: (status, hint)} from the worker process; a check past `timeout` is "not run" and the rest go on."""
    results: dict[str, tuple[str, str]] = {}
    todo = list(checks)
    env = {k: v for k, v in os.environ.items() if k != "MINILLM_GRADE_LOG"}
    root = str(Path(minillm.__file__).resolve().parents[1])  # the minillm this grader runs
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    while todo:
        request = json.dumps({"sources": sources, "checks": todo})
        with open(workdir / "worker-stderr.txt", "w") as err:
            proc = subprocess.Popen([sys.executable, "-m", "minillm.grading.worker"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=err, cwd=path.parent.resolve(), env=env,
                                    text=True, encoding="utf-8")
            lines: queue.Queue = queue.Queue()
            threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
            proc.stdin.write(request)
            proc.stdin.close()
            first = True
            while todo:
                ex_id = todo[0][0]
                try:  # the first check also waits for the worker's start (imports, the definitions)
                    line = lines.get(timeout=timeout + (60 if first else 0))
                except queue.Empty:
                    results[ex_id] = ("not run", f"the check ran longer than {timeout} s (raise --timeout)")
                    todo.pop(0)
                    break
                if line is None:  # the worker ended before reporting this check
                    proc.wait()
                    results[ex_id] = ("failed", f"the grading process died during this check (exit code "
                                                f"{proc.returncode}); your function may have ended Python")
                    todo.pop(0)
                    break
                try:
                    d = json.loads(line)
                    got = d["id"], str(d["status"]), str(d["hint"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
                if got[0] == ex_id and got[1] in core.MARKS:
                    results[ex_id] = got[1:]
                    todo.pop(0)
                    first = False
            proc.kill()
            proc.wait()
    return results


def grade_notebook(path: Path, timeout: int) -> NotebookReport:
    report = NotebookReport(str(path))
    try:
        nb = read_notebook(path)
        expected = expected_exercises(path, nb)
        sources = [c.source for c in nb.cells if c.cell_type == "code"]
        calls = worker.check_calls(sources)
        core.load_all()
        known = {**{e.id: e for e in expected}, **{i: core.REGISTRY[i] for i in calls if i in core.REGISTRY}}
        with tempfile.TemporaryDirectory(prefix="minillm-grade-") as tmp:
            report.cell_errors, report.note = execute(path, nb, timeout, Path(tmp))
            checks = [(i, calls[i]) for i in sorted(known) if i in calls]
            ran = run_checks(path, sources, checks, timeout, Path(tmp))
    except GradeError as e:
        report.error = str(e)
        return report
    for ex_id in sorted(known, key=lambda i: (i.split(".")[0], int(i.split(".")[1]))):
        ex = known[ex_id]
        status, hint = ran.get(ex_id, ("not run", "no check cell calls this exercise"))
        points = ex.points if status == "passed" else 0
        report.results.append(core.CheckResult(ex.id, ex.title, status, points, ex.points,
                                               hint if status != "passed" else ""))
    return report
