"""Committed notebooks must be executed, fresh and clean (COURSE_DESIGN §5).

- fresh: the code-cell hash stamped by `make execute` equals the hash of the code as committed, so
  nobody edited code after its outputs were made;
- in order: execution counts run 1, 2, 3, ... down the notebook (a top-to-bottom run);
- clean: no error outputs, every non-empty code cell has run;
- shaped: the first cell is a Markdown title (`# ...`), which the book build needs;
- true to the package: every `show_source` reveal shows the package's current code.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(ROOT.glob("notebooks/*/*.ipynb")) + sorted(ROOT.glob("exercises/*.ipynb"))

_spec = importlib.util.spec_from_file_location("execute_notebooks", ROOT / "tools" / "execute_notebooks.py")
execute_notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(execute_notebooks)


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 2, "expected the chapter notebooks and exercises"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_is_fresh_in_order_and_clean(path: Path):
    nb = nbformat.read(path, as_version=4)
    rel = path.relative_to(ROOT)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("# "), (
        f"{rel}: the first cell must be a Markdown title '# N.M Title'"
    )
    stamp = nb.metadata.get("minillm", {}).get("code_sha256")
    assert stamp, f"{rel} was not executed with `make execute` (no code hash stamp)"
    assert stamp == execute_notebooks.code_hash(nb), (
        f"{rel}: code changed after the outputs were made; run `make execute` (or "
        f"`python tools/execute_notebooks.py {rel}`)"
    )
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{rel}: cells did not run top to bottom: {counts}"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{rel}: error output {errors[0].get('ename')}: {errors[0].get('evalue')}"


def test_code_hash_sees_code_changes_only():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"), nbformat.v4.new_code_cell("x = 1")])
    h = execute_notebooks.code_hash(nb)
    nb.cells[0].source = "# Other title"
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="hi")]
    assert execute_notebooks.code_hash(nb) == h
    nb.cells[1].source = "x = 2"
    assert execute_notebooks.code_hash(nb) != h


SHOWN = re.compile(r"\*\*([\w.]+)\s+\((minillm/[\w/]+)\.py, line \d+\)\*\*\s*```python\n(.*?)\n```", re.S)


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if "show_source" in p.read_text(encoding="utf-8")],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_revealed_source_is_the_package_source(path: Path):
    """Every `show_source` output committed in a notebook shows the code the package has now: a module edited
    after the notebook ran makes the reader see a stale reveal (re-run the notebook: `make execute`). The line
    number in the heading may drift; the code may not."""
    from minillm.utils import source_of

    nb = nbformat.read(path, as_version=4)
    shown = [m.groups() for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
             for m in SHOWN.finditer("".join(o.get("data", {}).get("text/markdown", "")))]
    for name, module, code in shown:
        modname = module.replace("/", ".")
        obj = importlib.import_module(modname)
        for part in name[len(modname) + 1:].split(".") if name != modname else []:
            obj = getattr(obj, part)
        assert source_of(obj).rstrip() == code.rstrip(), (
            f"{path.relative_to(ROOT)} shows an old {name}: re-execute it (make execute)")
