"""minillm.grading: check() never raises, the registry, the chapter 1 checkers (invert tests), CLI errors.

Invert tests: plausible wrong solutions of every chapter 1 exercise fail with a hint naming the mistake.
That the solution from exercises/src (written independently of the minillm reference the checkers compare
with) passes and the stub gives "not attempted", for every chapter, is checked in tests/test_exercises.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import exercise_kit as kit
import nbformat
import pytest

from minillm import cli
from minillm.grading import check, core

CHAPTER = "01"
SOURCE = kit.source(CHAPTER)
IDS = list(kit.checked_functions(SOURCE))


# ---------------------------------------------------------------------------------------------------
# check(): output line, never raises, log


def _cell_defining(name: str, solution: bool) -> str:
    return next(c.source(solution) for c in kit.cells(SOURCE) if f"def {name}(" in c.source(solution))


def test_calling_an_earlier_stub_names_it():
    """train_bpe written with the learner's (still stubbed) get_pair_counts: the hint names 01.1."""
    ns: dict = {}
    exec(_cell_defining("get_pair_counts", solution=False), ns)
    exec(_cell_defining("merge_pair", solution=True), ns)
    exec(_cell_defining("train_bpe", solution=True), ns)
    res = check("01.3", ns["train_bpe"])
    assert res.status == "not attempted" and "exercise 01.1" in res.hint


def test_check_never_raises(capsys):
    def boom(*args):
        raise ZeroDivisionError("oops")

    def garbage(*args):
        return object()

    def deep(*args):
        return deep(*args)

    for fn in (boom, garbage, deep, None, "get_pair_counts"):
        for ex_id in IDS:
            res = check(ex_id, fn)
            assert res.status == "failed" and res.points == 0 and res.hint
    assert "ZeroDivisionError: oops" in check("01.2", boom).hint
    assert "RecursionError" in check("01.1", deep).hint
    lines = capsys.readouterr().out.splitlines()
    assert all(line.startswith("❌ ") for line in lines)


def test_unknown_exercise_names_the_known_ids(capsys):
    res = check("99.1", lambda: None)
    assert res.status == "unknown exercise" and "01.3" in res.hint and "99.1" in res.hint
    res = check("one", lambda: None)
    assert res.status == "unknown exercise"
    assert capsys.readouterr().out.startswith("❌ 99.1")


def test_result_displays_once_in_jupyter(solution, capsys):
    res = check("01.2", solution["merge_pair"])
    printed = capsys.readouterr().out
    assert res._ipython_display_() is None and capsys.readouterr().out == ""  # the cell shows only `printed`
    assert printed.strip() == res.line() and "01.2" in repr(res)


def test_check_writes_no_log(tmp_path, monkeypatch, solution):
    """The kernel's check() only prints: the grade is computed elsewhere (see the forging tests below)."""
    monkeypatch.setenv("MINILLM_GRADE_LOG", str(tmp_path / "log.jsonl"))
    assert check("01.1", solution["get_pair_counts"]).passed
    assert not (tmp_path / "log.jsonl").exists()


def test_exercise_rejects_bad_ids_and_points():
    with pytest.raises(ValueError, match="01.3"):
        core.Exercise("1.3", "x", 1, name="f", cases=list)
    with pytest.raises(ValueError, match="points"):
        core.Exercise("98.1", "x", 0, name="f", cases=list)


def test_run_cases_names_a_simulated_mistake():
    def wrong(x):
        return x + 2

    ok, hint = core.run_cases(wrong, [((1,), 2), ((5,), 6)], name="inc",
                              mistakes=[(lambda x: x * 2, "doubled"), (lambda x: x + 2, "added two")])
    assert not ok and hint.startswith("added two") and "inc(1) returned 3, expected 2" in hint
    ok, hint = core.run_cases(lambda x: x + 1, [((1,), 2), ((5,), 6)], name="inc")
    assert ok and hint == ""


# ---------------------------------------------------------------------------------------------------
# invert tests: plausible wrong solutions fail with the expected hint


def count_presence_only(ids):
    return {(a, b): 1 for a, b in zip(ids, ids[1:], strict=False)}


def count_skips_last(ids):
    counts = {}
    for i in range(len(ids) - 2):
        counts[(ids[i], ids[i + 1])] = counts.get((ids[i], ids[i + 1]), 0) + 1
    return counts


def count_sorted_pairs(ids):
    counts = {}
    for a, b in zip(ids, ids[1:], strict=False):
        key = tuple(sorted((a, b)))
        counts[key] = counts.get(key, 0) + 1
    return counts


def count_as_list(ids):
    from collections import Counter

    return Counter(zip(ids, ids[1:], strict=False)).most_common()


def merge_overlapping(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
        else:
            out.append(ids[i])
        i += 1
    return out


def merge_drops_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_in_place(ids, pair, new_id):
    i = 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            ids[i:i + 2] = [new_id]
        i += 1
    return ids


def merge_no_return(ids, pair, new_id):
    [new_id if x == pair[0] else x for x in ids]


def _counts(ids):
    c = {}
    for p in zip(ids, ids[1:], strict=False):
        c[p] = c.get(p, 0) + 1
    return c


def _merge(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_ids_from_257(text, n):
    ids, merges = list(text.encode()), []
    for i in range(n):
        c = _counts(ids)
        if not c:
            break
        merges.append(max(c, key=c.get))
        ids = _merge(ids, merges[-1], 257 + i)
    return merges


def train_on_chars(text, n):
    ids, merges = [ord(ch) for ch in text], []
    for i in range(n):
        c = _counts(ids)
        if not c:
            break
        merges.append(max(c, key=c.get))
        ids = _merge(ids, merges[-1], 256 + i)
    return merges


def train_count_once(text, n):
    c = _counts(list(text.encode()))
    return sorted(c, key=c.get, reverse=True)[:n]


def train_ties_by_largest_pair(text, n):
    ids, merges = list(text.encode()), []
    for i in range(n):
        c = _counts(ids)
        if not c:
            break
        merges.append(max(sorted(c), key=lambda p: (c[p], p)))
        ids = _merge(ids, merges[-1], 256 + i)
    return merges


def encode_by_frequency(text, merges):
    ids, rank = list(text.encode()), {tuple(p): i for i, p in enumerate(merges)}
    while True:
        c = {p: k for p, k in _counts(ids).items() if p in rank}
        if not c:
            return ids
        p = max(c, key=c.get)
        ids = _merge(ids, p, 256 + rank[p])


def encode_ids_from_257(text, merges):
    ids = list(text.encode())
    for i, p in enumerate(merges):
        ids = _merge(ids, tuple(p), 257 + i)
    return ids


def encode_chars(text, merges):
    ids = [ord(ch) for ch in text]
    for i, p in enumerate(merges):
        ids = _merge(ids, tuple(p), 256 + i)
    return ids


def wordpiece_shortest(word, vocab, unk="[UNK]"):
    out, start = [], 0
    while start < len(word):
        for end in range(start + 1, len(word) + 1):
            piece = ("##" if start else "") + word[start:end]
            if piece in vocab:
                out.append(piece)
                start = end
                break
        else:
            return [unk]
    return out


def wordpiece_no_prefix(word, vocab, unk="[UNK]"):
    out, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            if word[start:end] in vocab:
                out.append(word[start:end])
                start = end
                break
        else:
            return [unk]
    return out


def wordpiece_unk_per_char(word, vocab, unk="[UNK]"):
    out, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            piece = ("##" if start else "") + word[start:end]
            if piece in vocab:
                out.append(piece)
                start = end
                break
        else:
            out.append(unk)
            start += 1
    return out


def _viterbi(text, scores, better):
    best = {0: (0.0, 0)}
    for end in range(1, len(text) + 1):
        for start in range(end):
            piece = text[start:end]
            if piece in scores and start in best:
                cand = best[start][0] + scores[piece]
                if end not in best or better(cand, best[end][0]):
                    best[end] = (cand, start)
    out, end = [], len(text)
    while end:
        out.append(text[best[end][1]:end])
        end = best[end][1]
    return out[::-1]


def viterbi_minimising(text, scores):
    return _viterbi(text, scores, lambda a, b: a < b)


def viterbi_greedy(text, scores):
    out, start = [], 0
    while start < len(text):
        end = max(e for e in range(start + 1, len(text) + 1) if text[start:e] in scores)
        out.append(text[start:end])
        start = end
    return out


def viterbi_characters(text, scores):
    return list(text)


def viterbi_joined(text, scores):
    return " ".join(_viterbi(text, scores, lambda a, b: a > b))


WRONG = [
    ("01.1", count_presence_only, "every count is 1"),
    ("01.1", count_skips_last, "last pair"),
    ("01.1", count_sorted_pairs, "pairs are ordered"),
    ("01.1", count_as_list, "return a dict"),
    ("01.2", merge_overlapping, "overlapping merge"),
    ("01.2", merge_drops_last, "last id is dropped"),
    ("01.2", merge_in_place, "return a NEW list"),
    ("01.2", merge_no_return, "got a NoneType"),
    ("01.3", train_ids_from_257, "256 + i"),
    ("01.3", train_on_chars, "UTF-8 bytes"),
    ("01.3", train_count_once, "recount the pairs"),
    ("01.3", train_ties_by_largest_pair, "ties"),
    ("01.4", encode_by_frequency, "by rank"),
    ("01.4", encode_ids_from_257, "256 + i"),
    ("01.4", encode_chars, "UTF-8 bytes"),
    ("01.5", wordpiece_shortest, "SHORTEST"),
    ("01.5", wordpiece_no_prefix, "'##' prefix"),
    ("01.5", wordpiece_unk_per_char, "WHOLE word"),
    ("01.6", viterbi_minimising, "LOWEST total"),
    ("01.6", viterbi_greedy, "greedy longest-match"),
    ("01.6", viterbi_characters, "returned"),
    ("01.6", viterbi_joined, "list of str"),
]


@pytest.mark.parametrize("ex_id,fn,fragment", WRONG, ids=[w[1].__name__ for w in WRONG])
def test_wrong_solution_fails_with_hint(ex_id, fn, fragment, capsys):
    res = check(ex_id, fn)
    assert res.status == "failed" and res.points == 0
    assert fragment in res.hint, res.hint
    assert capsys.readouterr().out.startswith(f"❌ {ex_id} ")


def test_every_exercise_has_wrong_solutions():
    assert {w[0] for w in WRONG} == set(IDS)


# ---------------------------------------------------------------------------------------------------
# CLI: bad input gives one clear line and a non-zero exit


def test_cli_missing_file_and_not_a_notebook(tmp_path, capsys):
    assert cli.main(["grade", str(tmp_path / "nope.ipynb")]) == 1
    err = capsys.readouterr().err
    assert "no such file" in err and "Traceback" not in err
    (tmp_path / "text.ipynb").write_text("this is not json")
    (tmp_path / "json.ipynb").write_text('{"cells": 3}')
    assert cli.main(["grade", str(tmp_path / "text.ipynb"), str(tmp_path / "json.ipynb")]) == 1
    err = capsys.readouterr().err
    assert "text.ipynb: is not a Jupyter notebook (not valid JSON" in err
    assert "json.ipynb: is not a valid Jupyter notebook" in err and "Traceback" not in err


def test_cli_usage_errors(capsys, tmp_path, monkeypatch):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert cli.main(["grade", "--timeout", "0", "x.ipynb"]) == 1
    monkeypatch.chdir(tmp_path)  # no exercises/ here
    assert cli.main(["grade"]) == 1
    assert "none found" in capsys.readouterr().err


def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, str(path))
    return path


@pytest.mark.slow
def test_cli_kernel_crash_and_cell_errors(tmp_path):
    """Run through the real entry point: a crashing notebook exits 1, a notebook with an error is graded."""
    crash = _notebook(tmp_path / "crash.ipynb", "import os; os._exit(1)")
    errors = _notebook(tmp_path / "01_mine.ipynb", "1 / 0", "from minillm.grading import check\n"
                       "check('01.2', lambda ids, pair, new_id: ids)")
    p = subprocess.run([sys.executable, "-m", "minillm.cli", "grade", str(crash), str(errors)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    assert "crash.ipynb: the kernel died" in p.stderr and "Traceback" not in p.stderr + p.stdout
    card = p.stdout
    assert "01.2" in card and "failed" in card and "01.1" in card and "not run" in card
    assert "overall: 0/10 points in 1 notebook(s); 1 could not be graded" in card
    assert "ZeroDivisionError" in card  # the note about cells that raised


@pytest.mark.slow
def test_cli_cell_timeout(tmp_path, capsys):
    slow = _notebook(tmp_path / "slow.ipynb", "import time; time.sleep(120)")
    assert cli.main(["grade", "--timeout", "2", str(slow)]) == 1
    err = capsys.readouterr().err
    assert "slow.ipynb: a cell ran longer than 2 s" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------------
# a notebook cannot grade itself: forged logs and patched graders change nothing

FORGE_LOG = """import json, os
line = json.dumps({"id": "01.1", "title": "x", "status": "passed", "points": 1000, "max_points": 1})
open(os.environ.get("MINILLM_GRADE_LOG") or "grade.jsonl", "a").write(line + "\\n")
print(line)"""
PATCH_REGISTRY = """import dataclasses
from minillm.grading import core
core.load_all()
for key, ex in list(core.REGISTRY.items()):
    core.REGISTRY[key] = dataclasses.replace(ex, points=1000, check=lambda ex, fn: (True, ""))
core.CheckResult.passed = property(lambda self: True)
core._run_checker = lambda ex, fn: core.CheckResult(ex.id, ex.title, "passed", 1000, 1000)
core.check = lambda *args, **kwargs: print("✅ forged")
check("01.3", None)
check("99.9", None)"""
PATCH_AT_DEFINITION = """from minillm.grading import core as _core

def _always(ex, fn):
    return True, ""

def get_pair_counts(ids, _patched=[object.__setattr__(e, "check", _always) for e in
                                   (_core.load_all() or list(_core.REGISTRY.values()))],
                    _more=setattr(_core, "run_cases", lambda *a, **k: (True, ""))):
    raise NotImplementedError("Exercise 01.1: left as a stub")

@(lambda f: setattr(_core.Exercise, "run_cases", lambda self, fn: (True, "")) or f)
def merge_pair(ids, pair, new_id):
    raise NotImplementedError("Exercise 01.2: left as a stub")"""


def _grade_json(*paths: Path, timeout: int = 120, cwd: Path) -> tuple[int, dict]:
    p = subprocess.run([sys.executable, "-m", "minillm.cli", "grade", "--json", "--timeout", str(timeout),
                        *map(str, paths)], capture_output=True, text=True, timeout=600, cwd=cwd)
    assert "Traceback" not in p.stderr, p.stderr
    return p.returncode, json.loads(p.stdout)


def test_worker_keeps_definitions_only():
    from minillm.grading import worker

    src = ("import math\nNEG = float('-inf')\nS = math.sqrt(2) * 3\nX = open('f').read()\n"
           "Y = [i for i in range(3)]\ndef f(x):\n    return x\nclass C:\n    pass\nprint(1)\n%time f(1)\n")
    kept = [type(n).__name__ for n in worker.definitions([src, "this is not python ("])]
    assert kept == ["Import", "Assign", "Assign", "FunctionDef", "ClassDef"]
    calls = worker.check_calls(["check('01.1', f)\ncheck(\"01.2\", lambda ids, p, n: ids)", "x = 1",
                                "minillm.grading.check('01.1', g)"])
    assert calls == {"01.1": "g", "01.2": "lambda ids, p, n: ids"}  # the last check of an id wins


def test_worker_undoes_patches_made_while_defining(solution):
    """In-process: definitions that patch the grader (default arguments, decorators) change no status."""
    import io

    from minillm.grading import worker

    report = io.StringIO()
    checks = [["01.1", "get_pair_counts"], ["01.2", "merge_pair"], ["01.3", "undefined_name"]]
    worker.run({"sources": [PATCH_AT_DEFINITION], "checks": checks}, report)
    rows = [json.loads(line) for line in report.getvalue().splitlines()]
    assert [(r["id"], r["status"]) for r in rows] == [("01.1", "not attempted"), ("01.2", "not attempted"),
                                                      ("01.3", "failed")]
    assert "not defined" in rows[2]["hint"]
    assert check("01.1", solution["get_pair_counts"]).passed  # the registry of this process is intact too


@pytest.mark.slow
def test_forged_logs_and_patched_graders_change_no_grade(tmp_path):
    """The learner notebook (all stubs) plus cells that forge a log line, replace the registry's checkers,
    patch CheckResult, core.check and core._run_checker, and patch the grader from inside definitions."""
    nb = nbformat.read(str(kit.build.learner_path(SOURCE)), as_version=4)
    nb.cells += [nbformat.v4.new_code_cell(s) for s in (FORGE_LOG, PATCH_REGISTRY, PATCH_AT_DEFINITION)]
    nb.cells += [nbformat.v4.new_code_cell(f'check("{i}", {n})') for i, n in kit.checked_functions(SOURCE).items()]
    path = tmp_path / "01_forged.ipynb"
    nbformat.write(nb, str(path))
    rc, report = _grade_json(path, cwd=tmp_path)
    (card,) = report["notebooks"]
    assert rc == 0 and (card["points"], card["max_points"]) == (0, 10), card
    assert [e["id"] for e in card["exercises"]] == IDS  # the unknown id 99.9 is dropped
    assert {e["status"] for e in card["exercises"]} == {"not attempted"}
    assert [e["max_points"] for e in card["exercises"]] == [e.points for e in core.exercises_of(CHAPTER)]


@pytest.mark.slow
def test_a_check_past_the_timeout_keeps_the_points_earned(tmp_path):
    """01.1 solved, 01.2 loops for ever: 01.1 keeps its point, 01.2 is "not run", every maximum counts."""
    nb = nbformat.read(str(kit.build.learner_path(SOURCE)), as_version=4)
    for cell in nb.cells:
        if "def get_pair_counts(" in cell.source:
            cell.source = _cell_defining("get_pair_counts", solution=True)
        elif "def merge_pair(" in cell.source:
            cell.source = "import time\n\ndef merge_pair(ids, pair, new_id):\n    time.sleep(1000)"
    path = tmp_path / "01_slow.ipynb"
    nbformat.write(nb, str(path))
    rc, report = _grade_json(path, timeout=5, cwd=tmp_path)
    (card,) = report["notebooks"]
    status = {e["id"]: e["status"] for e in card["exercises"]}
    assert rc == 1 and card["error"] is None and "longer than 5 s" in card["note"]
    assert status == {"01.1": "passed", "01.2": "not run", "01.3": "not attempted", "01.4": "not attempted",
                      "01.5": "not attempted", "01.6": "not attempted"}
    assert (card["points"], card["max_points"]) == (1, 10) and (report["points"], report["max_points"]) == (1, 10)


def test_where_tells_a_pair_of_answers_from_a_tensor_answer():
    from minillm.grading.core import _where

    # (indices, (shape, values)) is not a (shape, values) tensor answer: its "shape" (7, 7, 0, 12) has no elements
    got, want = ((7, 7, 0, 12), ((2,), (1.0, 0.25))), ((7, 7, 0, 12), ((2,), (0.0, 0.25)))
    assert "returned" in _where("f", (), got, want)
    # a real (shape, values) answer still names its first wrong element
    assert "element [1, 0]" in _where("f", (), ((2, 2), (1.0, 2.0, 9.0, 4.0)), ((2, 2), (1.0, 2.0, 3.0, 4.0)))
