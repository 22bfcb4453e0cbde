"""Imports point one way: the import-linter contracts of pyproject.toml, and no command line in library modules."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "minillm"
# the harness layer may parse arguments and read config files; the library below it may not
HARNESS = ("cli.py", "commands/", "bench/", "grading/")
COMMAND_LINE = {"argparse", "yaml"}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module `path` imports (lazy imports inside functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_library_modules_hold_no_command_line():
    offenders = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        if rel.startswith(HARNESS):
            continue
        found = imported_modules(path) & COMMAND_LINE
        if found:
            offenders[rel] = sorted(found)
    assert not offenders, f"move argument parsing / config reading to minillm/commands/: {offenders}"


def test_the_checker_sees_a_lazy_import():
    tree = PKG / "commands" / "train.py"
    assert "yaml" in imported_modules(tree) and "argparse" in imported_modules(tree)


@pytest.mark.skipif((PKG / "toy.py").exists(), reason="minillm/toy.py (deleted with issue 8) still closes a cycle")
def test_import_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this tree's minillm, not another checkout's
    p = subprocess.run([exe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "0 broken" in p.stdout
