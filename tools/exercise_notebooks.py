"""Build exercise notebooks from a solution source written in the "percent" format.

The solution source (`exercises/src/NN_slug.py`) is a plain Python file:

    # %% [markdown]            <- a markdown cell; its lines start with "# " (or are a bare "#")
    # # Exercises 1: Tokenization
    # %%                       <- a code cell
    def merge_pair(ids, pair, new_id):
        # BEGIN SOLUTION 01.2: merge every non-overlapping (a, b), left to right
        ...the solution...
        # END SOLUTION

Lines before the first `# %%` are a header for maintainers and are not part of the notebook. In the
learner notebook, everything from `# BEGIN SOLUTION` to `# END SOLUTION` becomes one line, at the
marker's indentation:  raise NotImplementedError("Exercise 01.2: merge every ...").
In the solution notebook the marker lines are dropped and the code stays.

`write_notebooks` leaves an existing learner notebook untouched when its cell sources already match,
so the executed outputs committed with it survive a rebuild. `stale_cells` compares cell sources
only (not outputs or metadata); the test of the committed notebooks uses it.
Leaves out: cell metadata/tags and raw cells (not needed by the course's exercises).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

CELL_RE = re.compile(r"^# %%(?:\s*\[(?P<kind>\w+)\])?\s*$")
BEGIN_RE = re.compile(r"^(?P<indent>\s*)# BEGIN SOLUTION\b[:\s]*(?P<what>.*?)\s*$")
END_RE = re.compile(r"^\s*# END SOLUTION\s*$")


@dataclass
class Cell:
    kind: str  # "markdown" | "code"
    lines: list[str]  # source lines as written in the solution source (markdown already un-commented)
    line_no: int  # 1-based line of the "# %%" marker, for error messages

    def source(self, solution: bool) -> str:
        if self.kind == "markdown":
            return _strip_blank("\n".join(self.lines))
        return _strip_blank("\n".join(_code_lines(self.lines, solution, self.line_no)))

    @property
    def has_solution(self) -> bool:
        return any(BEGIN_RE.match(line) for line in self.lines)


def _strip_blank(text: str) -> str:
    return text.strip("\n").rstrip()


def _code_lines(lines: list[str], solution: bool, first_line: int) -> list[str]:
    out: list[str] = []
    inside: int | None = None  # line number of the open BEGIN marker
    for k, line in enumerate(lines, start=first_line + 1):
        begin, end = BEGIN_RE.match(line), END_RE.match(line)
        if begin:
            if inside is not None:
                raise ValueError(f"line {k}: '# BEGIN SOLUTION' inside the block opened on line {inside}; "
                                 "close it with '# END SOLUTION' first")
            inside = k
            if not solution:
                what = begin["what"]
                msg = f"Exercise {what}" if what else "Exercise: write your solution here"
                out.append(f"{begin['indent']}raise NotImplementedError({json.dumps(msg, ensure_ascii=False)})")
        elif end:
            if inside is None:
                raise ValueError(f"line {k}: '# END SOLUTION' without a '# BEGIN SOLUTION' before it")
            inside = None
        elif inside is None or solution:
            out.append(line)
    if inside is not None:
        raise ValueError(f"line {inside}: '# BEGIN SOLUTION' is never closed; add '# END SOLUTION'")
    return out


def parse_source(text: str) -> list[Cell]:
    """Split a percent-format solution source into cells (markdown lines un-commented)."""
    cells: list[Cell] = []
    for k, line in enumerate(text.splitlines(), start=1):
        m = CELL_RE.match(line)
        if m:
            kind = m["kind"] or "code"
            if kind not in ("markdown", "code"):
                raise ValueError(f"line {k}: unknown cell kind [{kind}]; use '# %%' or '# %% [markdown]'")
            cells.append(Cell(kind, [], k))
        elif line.startswith("# %%"):
            raise ValueError(f"line {k}: cell marker {line!r} not understood; use '# %%' or '# %% [markdown]'")
        elif cells and cells[-1].kind == "markdown":
            if line and not (line == "#" or line.startswith("# ")):
                raise ValueError(f"line {k}: a markdown cell's lines must start with '# ' (got {line!r})")
            cells[-1].lines.append(line[2:])
        elif cells:
            cells[-1].lines.append(line)
    if not cells:
        raise ValueError("no cells found: start each cell with a line '# %%' or '# %% [markdown]'")
    for c in cells:
        if c.kind == "markdown" and any(x.lstrip("# ").startswith(("BEGIN SOLUTION", "END SOLUTION")) for x in c.lines):
            raise ValueError(f"line {c.line_no}: solution markers belong in code cells, not markdown")
        c.source(solution=True)  # raises on unbalanced markers
    return [c for c in cells if c.source(solution=True) or c.source(solution=False)]


def make_notebook(cells: list[Cell], solution: bool) -> nbformat.NotebookNode:
    """A v4 notebook of `cells`; cell ids are derived from position and kind so rebuilds are stable."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, c in enumerate(cells):
        new = nbformat.v4.new_markdown_cell if c.kind == "markdown" else nbformat.v4.new_code_cell
        cell = new(c.source(solution))
        cell["id"] = hashlib.sha1(f"{i}-{c.kind}".encode()).hexdigest()[:8]
        nb.cells.append(cell)
    return nb


def build(src: Path | str, solution: bool = False) -> nbformat.NotebookNode:
    """The learner notebook (or, with solution=True, the solution notebook) of a solution source."""
    return make_notebook(parse_source(Path(src).read_text(encoding="utf-8")), solution)


def _sources(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in nb.cells]


def stale_cells(src: Path | str, ipynb: Path | str) -> list[str]:
    """Differences between the learner notebook built from `src` and the file `ipynb` (empty: fresh)."""
    want = _sources(build(src))
    have = _sources(nbformat.read(str(ipynb), as_version=4))
    diffs = [f"cell {i}: {w[0]} cell differs" for i, (w, h) in enumerate(zip(want, have, strict=False)) if w != h]
    if len(want) != len(have):
        diffs.append(f"the source has {len(want)} cells, the notebook {len(have)}")
    return diffs


def learner_path(src: Path) -> Path:
    """exercises/src/01_tokenization.py -> exercises/01_tokenization.ipynb"""
    return src.parent.parent / f"{src.stem}.ipynb"


def write_notebooks(src: Path | str, solution_out: Path | str | None = None) -> tuple[Path, bool]:
    """Write the learner notebook next to `src`'s folder; return (path, whether it was (re)written).

    With `solution_out`, also write the solution notebook there (tests execute it).
    """
    src = Path(src)
    out = learner_path(src)
    changed = not out.exists() or bool(stale_cells(src, out))
    if changed:
        nbformat.write(build(src), str(out))
    if solution_out is not None:
        nbformat.write(build(src, solution=True), str(solution_out))
    return out, changed
