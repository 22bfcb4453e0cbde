"""The checks that count: run outside the learner's kernel, on the learner's definitions only.

`minillm grade` (runner.py) first executes the notebook in a Jupyter kernel, as the learner would. That
kernel is the learner's: whatever it prints or writes, and whatever it does to the grading modules there,
counts for nothing. Then the grader starts this module in a fresh Python process:

    python -m minillm.grading.worker  < request.json      (one JSON object on stdin)

The request holds the notebook's code cells and the `(exercise id, function expression)` of each check
cell, read from `check("NN.k", fn)` calls by the grader. The worker

1. imports the registry (every chapter's EXERCISES) and takes its own copy, and keeps the stdout file
   descriptor as its private report channel (the learner's prints go to stderr);
2. snapshots the attributes of the modules and classes the checks rely on (`minillm.*`, `torch`, math,
   random, builtins);
3. executes, from every code cell, only the statements that define things: `import`, `def`, `class` and
   assignments of constants (literals, constructors such as `float("-inf")`, math/torch calls).
   Anything else a cell does (patching a checker, writing a log, calling `check`) is never run here; a
   statement that fails is skipped;
4. for each exercise: restores the snapshot (undoing what the learner's definitions changed), evaluates
   the function expression, runs the pristine checker, and writes one JSON line `{"id", "status", "hint"}`.

Points and titles are not reported: the grader takes them from its own registry.
Leaves out: code that runs inside the learner's graded function when the check calls it is not sandboxed
(it runs with the learner's rights in this process); the grader defeats forged logs and notebooks that
patch the grading modules, not a function written to attack the process that calls it. Time limits are
the grader's: it kills this process when a check runs past `--timeout` and starts a new one for the rest.
"""

from __future__ import annotations

import ast
import builtins
import json
import math
import os
import random
import sys
import types
from typing import Any

Snapshot = list[tuple[Any, dict[str, Any]]]


def definitions(sources: list[str]) -> list[ast.stmt]:
    """The top-level `import`, `def`, `class` and literal assignments of the cells, in order."""
    kept: list[ast.stmt] = []
    for src in sources:
        try:
            tree = ast.parse(_python(src))
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                kept.append(node)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None and _literal(node):
                kept.append(node)
    return kept


SAFE_CALLS = {"float", "int", "complex", "bool", "str", "tuple", "list", "dict", "set", "frozenset", "range"}
SAFE_MODULES = {"math", "torch", "np", "numpy", "F"}


def _literal(node: ast.Assign | ast.AnnAssign) -> bool:
    """`NAME = value` where value is built from literals, names, arithmetic, containers and calls of
    constructors (`float("-inf")`) or of math/torch functions (`math.sqrt(2)`, `torch.tensor([...])`)."""
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    if not all(isinstance(t, ast.Name) for t in targets):
        return False
    allowed = (ast.Constant, ast.Name, ast.Load, ast.Attribute, ast.Call, ast.keyword, ast.BinOp, ast.UnaryOp,
               ast.operator, ast.unaryop, ast.Tuple, ast.List, ast.Dict, ast.Set, ast.Subscript, ast.Slice)
    for sub in ast.walk(node.value):
        if not isinstance(sub, allowed):
            return False
        if isinstance(sub, ast.Call):
            root = sub.func
            while isinstance(root, ast.Attribute):
                root = root.value
            if not isinstance(root, ast.Name):
                return False
            if root is sub.func and root.id not in SAFE_CALLS:
                return False
            if root is not sub.func and root.id not in SAFE_MODULES:
                return False
    return True


def _python(src: str) -> str:
    """A cell's source with IPython magics (`%time`, `!pip`) turned into Python (which is then dropped)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(src)
    except Exception:  # noqa: BLE001 - without IPython, plain Python cells still work
        return src


def check_calls(sources: list[str]) -> dict[str, str]:
    """{exercise id: the source of the function expression} of every `check("NN.k", fn)` call (last one wins)."""
    found: dict[str, str] = {}
    for src in sources:
        try:
            tree = ast.parse(_python(src))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and _called_name(node.func) == "check" and len(node.args) >= 2
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                found[node.args[0].value.strip()] = ast.unparse(node.args[1])
    return found


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    return func.attr if isinstance(func, ast.Attribute) else None


# ---------------------------------------------------------------------------------------------------
# undoing what the learner's definitions did to the modules the checks use


def _import_references() -> None:
    """Import the minillm modules the chapter modules name (some only inside functions), so they are snapshot."""
    import importlib
    import re
    from pathlib import Path

    here = Path(__file__).parent
    names = set()
    for path in here.glob("ch[0-9][0-9].py"):
        text = path.read_text(encoding="utf-8")
        names.update(re.findall(r"from (minillm(?:\.\w+)+) import", text))
        names.update(f"minillm.{m}" for m in re.findall(r"from minillm import (\w+)", text))
    for name in sorted(names):
        try:
            importlib.import_module(name)
        except ImportError:
            continue


def snapshot() -> Snapshot:
    """The attribute dicts of the minillm modules and their classes, torch, math, random and builtins."""
    import torch
    import torch.nn.functional

    _import_references()

    mods = [m for name, m in list(sys.modules.items()) if m is not None and (name == "minillm"
                                                                              or name.startswith("minillm."))]
    mods += [torch, torch.nn, torch.nn.functional, math, random, builtins]
    owners: list[Any] = list(mods)
    for m in mods:
        owners += [v for v in vars(m).values()
                   if isinstance(v, type) and getattr(v, "__module__", "").startswith("minillm")]
    owners += [torch.Tensor, torch.nn.Module]
    seen: set[int] = set()
    out: Snapshot = []
    for o in owners:
        if id(o) not in seen:
            seen.add(id(o))
            out.append((o, dict(vars(o))))
    return out


def restore(snap: Snapshot) -> None:
    """Put back every attribute of the snapshot: rebound names, patched methods, added attributes."""
    for owner, saved in snap:
        now = vars(owner)
        for k in [k for k in now if k not in saved and not isinstance(now[k], types.ModuleType)]:
            try:
                delattr(owner, k)
            except (AttributeError, TypeError):
                pass
        for k, v in saved.items():
            if now.get(k, _MISSING) is not v:
                try:
                    setattr(owner, k, v)
                except (AttributeError, TypeError):
                    pass


_MISSING = object()


def run(request: dict, report) -> None:
    from minillm.grading import core

    core.load_all()
    exercises = {ex_id: ex for ex_id, ex in core.REGISTRY.items()}  # our own copy, taken before learner code
    fields = {ex_id: dict(vars(ex)) for ex_id, ex in exercises.items()}
    run_checker = core._run_checker
    snap = snapshot()
    ns: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    for node in definitions(request["sources"]):
        try:
            exec(compile(ast.Module(body=[node], type_ignores=[]), "<notebook>", "exec"), ns)  # noqa: S102
        except BaseException:  # noqa: BLE001 - a definition that fails is skipped (the check will say so)
            continue
    def pristine() -> None:
        restore(snap)
        for key, saved in fields.items():
            for k, v in saved.items():
                object.__setattr__(exercises[key], k, v)
        core.REGISTRY.clear()
        core.REGISTRY.update(exercises)

    for ex_id, expr in request["checks"]:
        pristine()
        ex = exercises[ex_id]
        try:
            fn = eval(expr, ns)  # noqa: S307 - the learner's own expression, e.g. a function name
        except Exception as e:  # noqa: BLE001
            line = {"id": ex_id, "status": "failed",
                    "hint": f"{expr} is not defined outside the notebook's other cells ({type(e).__name__}: {e}); "
                            "define it with def in a cell of its own"}
        else:
            pristine()
            res = run_checker(ex, fn)
            hint = res.hint
            if "NameError" in hint:
                hint += ("; the grader runs only the imports, def/class statements and constant assignments of "
                         "your cells: compute that value inside the function (or define it as a constant)")
            line = {"id": ex_id, "status": res.status, "hint": hint}
        report.write(json.dumps(line, ensure_ascii=False) + "\n")
        report.flush()
    pristine()


def main() -> int:
    request = json.loads(sys.stdin.read())
    report = os.fdopen(os.dup(1), "w", encoding="utf-8")  # private channel; the learner's prints go to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    os.environ.pop("MINILLM_GRADE_LOG", None)
    run(request, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
