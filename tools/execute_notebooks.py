"""Execute notebooks in place, keep widget state, and stamp each with a hash of its code cells.

    python tools/execute_notebooks.py [NOTEBOOK ...]      # default: every notebook and exercise

The stamp (`metadata.minillm.code_sha256`) lets `tests/test_notebooks_fresh.py` fail when a notebook's
code changed after its outputs were made. Each notebook runs in its own folder with
MINILLM_DEVICE=cpu unless the caller set it, so committed outputs are the CPU ones.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def code_hash(nb) -> str:
    """sha256 over the sources of the code cells, in order (outputs and metadata excluded)."""
    h = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            h.update(cell.source.encode("utf-8"))
            h.update(b"\x00")
    return h.hexdigest()


def all_notebooks() -> list[Path]:
    return sorted(ROOT.glob("notebooks/*/*.ipynb")) + sorted(ROOT.glob("exercises/*.ipynb"))


def execute(path: Path, timeout: int = 600) -> float:
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        store_widget_state=True,
    )
    client.execute()
    seconds = time.perf_counter() - t0
    nb.metadata["minillm"] = {"code_sha256": code_hash(nb)}
    if not _has_widgets(nb):
        nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)
    return seconds


def _has_widgets(nb) -> bool:
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    return bool(state.get("state"))


def main(argv: list[str]) -> int:
    os.environ.setdefault("MINILLM_DEVICE", "cpu")
    paths = [Path(a).resolve() for a in argv] or all_notebooks()
    missing = [p for p in paths if not p.exists()]
    if missing:
        print("no such notebook: " + ", ".join(map(str, missing)), file=sys.stderr)
        return 2
    for p in paths:
        s = execute(p)
        print(f"{s:7.1f} s  {p.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
