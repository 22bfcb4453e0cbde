"""Exercise notebooks: the builder (solution source -> learner notebook), freshness of the committed
learner notebooks, `minillm grade` on the learner (0 points) and solution (full marks) notebooks, and the
checks every exercise of every chapter gets (sources found by glob, exercises read from their check cells):
the registry matches the check cells, the solution passes, the stub is "not attempted" (its own stub, named
by its NotImplementedError), junk answers fail with a hint and never make a check raise, and each simulated
mistake of a checker gets its own hint. What is particular to a chapter (plausible wrong solutions,
acceptable variants, hand-worked values) is in tests/test_grading.py (chapter 1) and test_exercises_chNN.py.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import exercise_kit as kit
import nbformat
import pytest
import torch

from minillm.commands import grade
from minillm.grading import check, core, runner

build = kit.build

ROOT = kit.ROOT
SOURCES = kit.SOURCES

SAMPLE = '''# header for maintainers: not part of the notebook
import this_is_ignored

# %% [markdown]
# # Title
#
# Some *text*.

# %%
def f(xs):
    """Docstring stays."""
    total = 0
    for x in xs:
        # BEGIN SOLUTION 09.1: add up xs
        total += x
        # END SOLUTION
    return total


# %%
def g():
    # BEGIN SOLUTION
    return 1
    # END SOLUTION
'''


def test_build_replaces_solutions_by_a_stub_at_their_indentation():
    cells = build.parse_source(SAMPLE)
    assert [c.kind for c in cells] == ["markdown", "code", "code"]
    assert cells[0].source(False) == "# Title\n\nSome *text*."
    learner = cells[1].source(solution=False)
    assert '        raise NotImplementedError("Exercise 09.1: add up xs")\n    return total' in learner
    assert "total += x" not in learner and "SOLUTION" not in learner and '"""Docstring stays."""' in learner
    solution = cells[1].source(solution=True)
    assert "        total += x\n    return total" in solution and "SOLUTION" not in solution
    assert cells[2].source(False) == 'def g():\n    raise NotImplementedError("Exercise: write your solution here")'
    assert "this_is_ignored" not in "".join(c.source(True) for c in cells)
    nb = build.make_notebook(cells, solution=False)
    nbformat.validate(nb)
    assert [c.id for c in nb.cells] == [c.id for c in build.make_notebook(cells, solution=True).cells]
    ns: dict = {}
    exec(cells[1].source(solution=True), ns)
    assert ns["f"]([1, 2, 3]) == 6
    exec(cells[1].source(solution=False), ns)
    with pytest.raises(NotImplementedError, match="09.1"):
        ns["f"]([1])


@pytest.mark.parametrize("bad,message", [
    ("# %%\nx = 1\n# BEGIN SOLUTION\ny = 2\n", "never closed"),
    ("# %%\n# END SOLUTION\n", "without a '# BEGIN SOLUTION'"),
    ("# %%\n# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION\n", "inside the block"),
    ("# %% [markdown]\n# text\nnot a comment\n", "must start with '# '"),
    ("# %% [markdown]\n# # BEGIN SOLUTION\n", "markdown"),
    ("# %% [raw]\nx\n", "unknown cell kind"),
    ("x = 1\n", "no cells found"),
])
def test_build_rejects_malformed_sources(bad, message):
    with pytest.raises(ValueError, match=message):
        build.parse_source(bad)


def test_there_are_exercise_sources():
    assert [s.name for s in SOURCES][:1] == ["01_tokenization.py"]


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_committed_learner_notebook_is_not_stale(src: Path):
    nb_path = build.learner_path(src)
    assert nb_path.exists(), f"{nb_path} is missing: run tools/build_exercises.py"
    diffs = build.stale_cells(src, nb_path)
    assert not diffs, f"{nb_path.name} is stale ({diffs[0]}): run tools/build_exercises.py, then execute it"


def test_stale_check_compares_cell_sources_only(tmp_path):
    src = ROOT / "exercises" / "src" / "01_tokenization.py"
    nb = build.build(src)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="hello")]
    nb.metadata["minillm"] = {"code_sha256": "x"}
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(path))
    assert build.stale_cells(src, path) == []
    nb.cells[3].source += "\n# edited"
    nbformat.write(nb, str(path))
    assert build.stale_cells(src, path) == ["cell 3: code cell differs"]
    nb.cells.pop()
    nbformat.write(nb, str(path))
    assert "cells" in build.stale_cells(src, path)[-1]


def test_build_exercises_tool_check_mode():
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "build_exercises.py"), "--check"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_learner_notebook_shape(src: Path):
    """Title first, no solution left, every exercise has a check cell showing one ⬜ line when executed."""
    nb = nbformat.read(str(build.learner_path(src)), as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# Exercises ")
    text = "\n".join(c.source for c in nb.cells)
    assert "SOLUTION" not in text
    chapter = src.name[:2]
    ids = [e.id for e in core.exercises_of(chapter)]
    checks = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("check(")]
    assert [runner.CHECK_CALL_RE.search(c.source).group(1) for c in checks] == ids
    for c in checks:  # the committed (executed) stub notebook: exactly one "not attempted" line per check
        lines = "".join(o.get("text", "") for o in c.outputs).splitlines()
        assert len(lines) == 1 and lines[0].startswith("⬜ ") and "not attempted" in lines[0], c.outputs


# a stub says what to write, never how: no operator, bracket or torch recipe in its message
RECIPE = re.compile(r"[=@*/^\[\]]|\b(softmax|masked_fill|topk|cumsum|repeat_interleave|gather|sqrt|exp|log|"
                    r"arange|tril|reshape|sum|scatter|sigmoid|erf|silu|itemsize|floor|ceil|sin|cos)\b")
STUB_RE = re.compile(r'raise NotImplementedError\("Exercise (\d\d\.\d+): ([^"]*)"\)')


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_stubs_state_what_to_write_not_how(src: Path):
    stubs = STUB_RE.findall("\n".join(c.source(False) for c in kit.cells(src) if c.kind == "code"))
    assert [i for i, _ in stubs] == list(kit.checked_functions(src))
    for ex_id, message in stubs:
        assert message.startswith("return ") and not RECIPE.search(message), (ex_id, message)


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_each_exercise_has_two_collapsed_hints_before_its_check(src: Path):
    """Hint 1 and Hint 2 in <details> (collapsed in JupyterLab and in the book), right above the check cell."""
    nb = nbformat.read(str(build.learner_path(src)), as_version=4)
    for k, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.source.startswith("check("):
            hints = nb.cells[k - 1]
            assert hints.cell_type == "markdown", cell.source
            assert hints.source.count("<details><summary>Hint ") == 2 == hints.source.count("</details>"), cell.source
            assert hints.source.index("Hint 1") < hints.source.index("Hint 2")


def test_report_card_format():
    ok = core.CheckResult("01.1", "Count adjacent pairs", "passed", 1, 1)
    bad = core.CheckResult("01.2", "Merge a pair", "failed", 0, 1, "overlapping merge")
    rep = runner.NotebookReport("a.ipynb", [ok, bad], cell_errors=["cell 3: ValueError: x"])
    broken = runner.NotebookReport("b.ipynb", error="no such file")
    card = grade.format_card([rep, broken])
    assert "✅ passed" in card and "❌ failed" in card and "hint: overlapping merge" in card
    assert "total" in card and "1/2" in card and "not graded: no such file" in card
    assert card.splitlines()[-1] == "overall: 1/2 points in 1 notebook(s); 1 could not be graded"
    assert json.loads(json.dumps(rep.to_json()))["points"] == 1


def test_default_notebooks_are_the_exercises():
    assert grade.default_notebooks(ROOT) == sorted((ROOT / "exercises").glob("*.ipynb"))


@pytest.mark.slow
def test_grade_learner_gives_zero_and_solution_full_marks(tmp_path):
    """One `minillm grade --json` run over the committed learner notebook and the built solution notebook."""
    src = ROOT / "exercises" / "src" / "01_tokenization.py"
    solution = tmp_path / "01_tokenization.ipynb"  # the NN_ prefix tells the grader the chapter
    nbformat.write(build.build(src, solution=True), str(solution))
    learner = build.learner_path(src)
    p = subprocess.run([sys.executable, "-m", "minillm.cli", "grade", "--json", "--timeout", "120",
                        str(learner), str(solution)], capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    report = json.loads(p.stdout)
    stub, sol = report["notebooks"]
    ids = [e.id for e in core.exercises_of("01")]
    assert [e["id"] for e in stub["exercises"]] == ids == [e["id"] for e in sol["exercises"]]
    assert {e["status"] for e in stub["exercises"]} == {"not attempted"}
    assert (stub["points"], stub["max_points"]) == (0, 10)
    assert {e["status"] for e in sol["exercises"]} == {"passed"}, sol["exercises"]
    assert (sol["points"], sol["max_points"]) == (10, 10)
    assert stub["error"] is None and sol["error"] is None and sol["cell_errors"] == []
    assert (report["points"], report["max_points"]) == (10, 20)


# ---------------------------------------------------------------------------------------------------
# what every exercise gets: registry, solution, stub, junk, simulated mistakes

POINTS = {"01": [1, 1, 2, 2, 2, 2], "02": [1, 2, 2, 2, 1, 1, 2], "03": [2, 1, 1, 2, 1, 3], "04": [1, 1, 1, 2, 2, 1, 2],
          "05": [2, 1, 1, 1, 3, 1], "06": [2, 1, 1, 2, 1, 1, 2], "07": [1, 2, 1, 2, 1, 2],
          "08": [1, 2, 2], "09": [1, 1, 2, 2, 1, 2, 2], "10": [2, 1, 2, 2, 2, 2], "11": [2, 1, 2, 2],
          "12": [1, 1, 2, 2, 2, 2, 1, 1, 1], "13": [2, 1, 1, 2, 2, 1, 1, 1, 1]}
EXERCISES = [(ex_id, src, name) for src in SOURCES for ex_id, name in kit.checked_functions(src).items()]
EX_IDS = [ex_id for ex_id, _, _ in EXERCISES]

# answers no checker may choke on: each must give a ❌ line with a hint of its own
JUNK = (lambda *a: None, lambda *a: 1 / 0, "not a function", lambda *a: "text", lambda *a: True,
        lambda *a: (None, None), lambda *a: (None, None, None), lambda *a: [1.0, 2.0], lambda *a: torch.zeros(0),
        lambda *a: float("nan"), lambda *a: math.inf, lambda *a: ([1], [2]), lambda *a: ("a", "b"),
        lambda *a: (torch.zeros(2), []), lambda *a: ([0.5], [1], [2]), lambda *a: ("a", "b", "c"),
        lambda *a: torch.zeros(2, 3, dtype=torch.long))

@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name)
def test_registry_matches_the_check_cells(src: Path):
    exercises = core.exercises_of(kit.chapter_of(src))
    assert [e.id for e in exercises] == list(kit.checked_functions(src))
    assert [e.points for e in exercises] == POINTS[kit.chapter_of(src)]


@pytest.mark.parametrize("ex_id,src,name", EXERCISES, ids=EX_IDS)
def test_solution_passes(ex_id, src, name, capsys):
    res = check(ex_id, kit.load_namespace(src, solution=True)[name])
    out = capsys.readouterr().out
    assert res.passed and res.points == res.max_points > 0, res.hint
    assert out.startswith(f"✅ {ex_id} ") and out.endswith(f"{res.points}/{res.max_points} points\n")
    assert out.count("\n") == 1


@pytest.mark.parametrize("ex_id,src,name", EXERCISES, ids=EX_IDS)
def test_stub_is_not_attempted(ex_id, src, name, capsys):
    stub = kit.load_namespace(src, solution=False)[name]
    res = check(ex_id, stub)
    assert (res.status, res.points) == ("not attempted", 0)
    assert capsys.readouterr().out.startswith(f"⬜ {ex_id} ")
    assert "NotImplementedError" in res.line()
    with pytest.raises(core.LearnerError) as raised:  # the checker's first call: the stub names its own exercise
        core.REGISTRY[ex_id].checker(stub)
    assert isinstance(raised.value.original, NotImplementedError)
    assert f"Exercise {ex_id}: " in str(raised.value.original)


@pytest.mark.parametrize("ex_id", EX_IDS)
def test_check_never_raises_on_junk(ex_id):
    for fn in JUNK:
        res = check(ex_id, fn)
        assert res.status == "failed" and res.hint, (ex_id, res)
        assert not res.hint.startswith(("internal", "checking what your function returned raised")), res.hint


def _simulated_mistakes(ex_id: str) -> tuple[tuple, ...]:
    """The (wrong function, hint) pairs declared with exercise `ex_id`."""
    core.load_chapter(ex_id[:2])
    return core.REGISTRY[ex_id].mistakes


@pytest.mark.parametrize("ex_id", EX_IDS)
def test_each_simulated_mistake_gets_its_own_hint(ex_id):
    """No simulated mistake is shadowed by an earlier one, or by the reference: checking it gives exactly its hint."""
    assert _simulated_mistakes(ex_id), f"{ex_id} declares no simulated mistakes"
    for fn, hint in _simulated_mistakes(ex_id):
        res = check(ex_id, fn)
        assert res.status == "failed" and res.hint.startswith(hint + ". "), (fn.__name__, res.hint)
        assert "\n" not in res.line() and "tensor([" not in res.line(), res.line()  # compact, one line


# ---------------------------------------------------------------------------------------------------
# the interview exercises (02.7, 03.6, 04.7, 06.7): the values their markdown shows, recomputed


def _markdown(chapter: str) -> str:
    return "\n".join(c.source(False) for c in kit.cells(kit.source(chapter)) if c.kind == "markdown")


def test_interview_worked_examples_match_the_references():
    from minillm import positional
    from minillm.ffn import GLUFFN
    from minillm.norms import rms_norm

    d64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    assert "`[[cos 3, sin 3]] = [[-0.98999, 0.14112]]`" in _markdown("02")
    for layout in ("halves", "adjacent"):
        cos, sin = positional.rope_cos_sin(torch.tensor([3]), d64([1.0]))
        got = positional.apply_rope(d64([[1.0, 0.0]]), cos, sin, layout)
        assert got.flatten().tolist() == pytest.approx([-0.98999, 0.14112], abs=5e-6)
    assert "the output `[0.8485, 1.1314]`" in _markdown("03") and "`[0.1810, -0.1358]`" in _markdown("03")
    x = d64([3.0, 4.0]).requires_grad_(True)
    y = rms_norm(x, d64([1.0, 1.0]), 0.0)
    y.backward(d64([1.0, 0.0]))
    assert y.tolist() == pytest.approx([0.8485, 1.1314], abs=5e-5)
    assert x.grad.tolist() == pytest.approx([0.1810, -0.1358], abs=5e-5)
    text = _markdown("04")
    for variant, shown in [("swiglu", "5.284782"), ("geglu", "5.863499"), ("reglu", "6")]:
        assert f"`[[{shown}]]` for {variant}" in text
        ffn = GLUFFN(1, 1, variant).double()
        with torch.no_grad():
            ffn.gate.weight.fill_(1.0), ffn.up.weight.fill_(3.0), ffn.down.weight.fill_(0.5)
            assert ffn(d64([[2.0]])).item() == pytest.approx(float(shown), abs=5e-7)


def test_training_step_flops_of_llama2_7b_is_6nd_plus_attention():
    """06.7 on Llama 2 7B at 4096 tokens: 6 * 6.74e9 (all but the input embedding) plus 12 L T d per token."""
    from minillm.grading import ch06

    n = 6_738_415_616 - 32000 * 4096  # count_params' total minus the input embedding table
    want = (6 * n + 12 * 32 * 4096 * 4096) * 4096
    assert ch06._ref_step_flops(32000, 32, 4096, 32, 32, 11008, 4096, 1) == want
