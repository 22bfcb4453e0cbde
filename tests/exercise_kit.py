"""What the exercise tests share: the solution sources in exercises/src, run the way their notebooks run them.

`load_namespace(source, solution)` executes the code cells of a solution source (the solution, or the stubs
the learner starts from) except the check cells; `checked_functions(source)` reads which function each
check cell grades. Used by tests/test_exercises.py (the checks every exercise of every chapter gets: the
solution passes, the stub is "not attempted", junk never makes a check raise, each simulated mistake gets
its own hint), by tests/conftest.py (the `solution` and `stubs` fixtures) and by the chapter test files
(tests/test_grading.py for chapter 1, tests/test_exercises_chNN.py) that read their notebook's cells.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the authoring tool that turns a solution source into notebooks (tools/, not part of the package)
_spec = importlib.util.spec_from_file_location("exercise_notebooks", ROOT / "tools" / "exercise_notebooks.py")
build = importlib.util.module_from_spec(_spec)
sys.modules["exercise_notebooks"] = build
_spec.loader.exec_module(build)
SOURCES = sorted((ROOT / "exercises" / "src").glob("*.py"))
CHECK_CELL_RE = re.compile(r"""^check\(\s*["'](\d\d\.\d+)["']\s*,\s*(\w+)\s*\)""", re.MULTILINE)


def chapter_of(source: Path) -> str:
    """"05" for exercises/src/05_attention.py."""
    return source.name[:2]


def source(chapter: str) -> Path:
    """The solution source of chapter "NN", exercises/src/NN_*.py."""
    (found,) = [s for s in SOURCES if chapter_of(s) == chapter]
    return found


def cells(source: Path) -> list[build.Cell]:
    """The markdown and code cells of a solution source."""
    return build.parse_source(source.read_text(encoding="utf-8"))


def load_namespace(source: Path, solution: bool) -> dict:
    """Execute the code cells of `source` (solution or stub version), except the check cells; return the names."""
    ns: dict = {}
    for cell in cells(source):
        src = cell.source(solution)
        if cell.kind == "code" and "check(" not in src:
            exec(compile(src, str(source), "exec"), ns)
    return ns


def checked_functions(source: Path) -> dict[str, str]:
    """{exercise id: the name of the function its check cell grades}, in the order of the check cells."""
    found = {}
    for cell in cells(source):
        if cell.kind == "code":
            found.update(CHECK_CELL_RE.findall(cell.source(False)))
    return found
