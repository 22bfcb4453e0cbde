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


def part_tests(src: Path, exercises, junk, recipe: re.Pattern, *, forbidden: tuple[str, ...] = (),
               min_mistakes: int = 2, draws: int = 3, mistake_draws: int = 3) -> dict:
    """The checks every part file of chapters 11-13 makes, for `globals().update(...)` in that file.

    Returns the module-scoped `solution` / `stubs` fixtures and four tests, parametrized over `exercises`
    (ids = exercise ids): the check cells of `src` grade these exercises' functions; the solution passes
    with full points on `draws` draws of the random cases and the stub is "not attempted", its
    NotImplementedError message starting "Exercise <id>: return " and matching neither `recipe` nor any of
    the `forbidden` words (rules a stub must not give away); each exercise has `min_mistakes` simulated
    mistakes or more and each is caught with its own hint, on one line, on `mistake_draws` draws; each
    function of `junk` fails with a hint that is no internal error.
    """
    import pytest  # only the tests use pytest; the kit itself is also read by tools

    from minillm.grading import check

    exercises = tuple(exercises)
    per_exercise = pytest.mark.parametrize("ex", exercises, ids=lambda e: e.id)

    def test_check_cells_grade_these_exercises():
        ids = {e.id for e in exercises}
        assert {k: v for k, v in checked_functions(src).items() if k in ids} == {e.id: e.name for e in exercises}

    @per_exercise
    def test_solution_passes_and_stub_is_not_attempted(ex, solution, stubs):
        for _ in range(draws):
            res = check(ex.id, solution[ex.name])
            assert res.passed and res.points == ex.points, res.hint
        res = check(ex.id, stubs[ex.name])
        assert res.status == "not attempted"
        with pytest.raises(NotImplementedError) as e:
            stubs[ex.name](*ex.cases()[0][0])
        msg = str(e.value)
        assert msg.startswith(f"Exercise {ex.id}: return ") and not recipe.search(msg), msg
        assert not [w for w in forbidden if w in msg], (forbidden, msg)

    @per_exercise
    def test_simulated_mistakes_are_caught_with_their_hint_on_every_draw(ex):
        assert_mistakes_caught(ex.id, min_mistakes=min_mistakes, draws=mistake_draws)

    @per_exercise
    def test_junk_gets_a_hint(ex):
        assert_junk_gets_a_hint(ex.id, junk)

    return {**namespace_fixtures(src),
            "test_check_cells_grade_these_exercises": test_check_cells_grade_these_exercises,
            "test_solution_passes_and_stub_is_not_attempted": test_solution_passes_and_stub_is_not_attempted,
            "test_simulated_mistakes_are_caught_with_their_hint_on_every_draw":
                test_simulated_mistakes_are_caught_with_their_hint_on_every_draw,
            "test_junk_gets_a_hint": test_junk_gets_a_hint}


def assert_mistakes_caught(ex_id: str, *, min_mistakes: int, draws: int = 3, not_in_line: tuple[str, ...] = ()) -> None:
    """Exercise `ex_id` has `min_mistakes` simulated mistakes or more, and on each of `draws` draws of its random
    cases every one fails with its own hint, the result on one line holding none of `not_in_line`."""
    from minillm.grading import check, core

    mistakes = core.REGISTRY[ex_id].mistakes
    assert len(mistakes) >= min_mistakes
    for _ in range(draws):  # the random cases differ per draw
        for fn, hint in mistakes:
            res = check(ex_id, fn)
            assert res.status == "failed" and res.hint.startswith(hint + ". "), (hint, res.hint)
            line = res.line()
            assert "\n" not in line and not [s for s in not_in_line if s in line], line


def assert_junk_gets_a_hint(ex_id: str, junk) -> None:
    """Each function of `junk` fails exercise `ex_id` with a hint, never an internal error of the checker."""
    from minillm.grading import check

    for fn in junk:
        res = check(ex_id, fn)
        assert res.status == "failed" and res.hint, (ex_id, res)
        assert not res.hint.startswith(("internal", "checking what your function returned raised")), res.hint


def namespace_fixtures(src: Path) -> dict:
    """The module-scoped `solution` and `stubs` fixtures of a test file: `src`'s names, solution or stub version
    (for `globals().update(...)`)."""
    import pytest

    @pytest.fixture(scope="module", name="solution")
    def solution() -> dict:
        return load_namespace(src, solution=True)

    @pytest.fixture(scope="module", name="stubs")
    def stubs() -> dict:
        return load_namespace(src, solution=False)

    return {"solution": solution, "stubs": stubs}
