"""The check() function learners call in exercise notebooks, and the registry of checkers behind it.

Each exercise is an `Exercise` (declared in its chapter module's EXERCISES) whose checker receives the
learner's function and returns `(ok, hint)`. `check(exercise_id, fn)` runs it and prints one line:

    ✅ 01.3 Train BPE merges — 2/2 points
    ❌ 01.3 Train BPE merges — hint: ...
    ⬜ 01.3 Train BPE merges — not attempted (the stub still raises NotImplementedError)

`check` never raises: an exception from the learner's code (or from checking what it returned) becomes a
❌ line naming the exception. It only prints: `minillm grade` does not read what the learner's kernel
prints or writes, it runs the checks again in a process of its own (see runner.py and worker.py).

Checkers live in one module per chapter (`minillm/grading/ch01.py`, ...), imported the first time an
exercise of that chapter is checked, so `from minillm.grading import check` stays fast.
Leaves out: partial credit inside an exercise (an exercise earns all its points or none) and time limits
on the learner's code (`minillm grade` has a per-cell timeout).
"""

from __future__ import annotations

import copy
import importlib
import math
import pkgutil
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

ID_RE = re.compile(r"^(\d\d)\.(\d+)$")
MAX_REPR = 120  # characters of an input/output shown in a hint

# status -> mark at the start of the line
MARKS = {"passed": "✅", "failed": "❌", "not attempted": "⬜", "unknown exercise": "❌", "not run": "⬜"}


Case = tuple[tuple, Any]  # (arguments, expected answer as `normalize` returns it)
Checker = Callable[[Callable], tuple[bool, str]]


def _same(got: Any, want: Any, args: tuple) -> bool:
    return got == want


def _as_is(got: Any, args: tuple) -> Any:
    return got


@dataclass(frozen=True)
class Exercise:
    """One graded exercise, declared in its chapter module's `EXERCISES` tuple.

    `cases()` returns fresh `(args, want)` pairs: hand-worked ones first, then random inputs whose answer
    comes from the minillm `reference` (named in the chapter module's table). `normalize(got, args)` reads the
    learner's answer into the canonical form of `want` (or raises Wrong with a hint); `same(got, want, args)`
    compares (tolerances live there). `mistakes` pairs each simulated wrong solution with the hint that names
    it. `check(exercise, fn)` replaces the default run when an exercise needs more. `fresh`, when set, is the
    hint for a task that asks for a new list or tensor: an answer that is one of its arguments, or a call that
    changed an argument, fails with it. `separate`, when set, is the hint for a task whose answer is several
    tensors that must not share memory with each other (each rank keeps only its own piece).
    """

    id: str
    title: str
    points: int
    name: str  # the learner's function, as hints call it
    cases: Callable[[], list[Case]]
    normalize: Callable[[Any, tuple], Any] = _as_is
    same: Callable[[Any, Any, tuple], bool] = _same
    mistakes: tuple[tuple[Callable, str], ...] = ()
    check: Callable[[Exercise, Callable], tuple[bool, str]] | None = None
    fresh: str = ""
    separate: str = ""

    def __post_init__(self) -> None:
        if not ID_RE.match(self.id):
            raise ValueError(f"exercise id must look like '01.3' (chapter.number), got {self.id!r}")
        if not isinstance(self.points, int) or self.points < 1:
            raise ValueError(f"points must be a positive int, got {self.points!r}")
        object.__setattr__(self, "mistakes", tuple(self.mistakes))

    @property
    def chapter(self) -> str:
        return self.id.split(".")[0]

    def run_cases(self, fn: Callable) -> tuple[bool, str]:
        """The default check: every case of `cases()`, the first failure named (with a mistake's hint)."""
        return run_cases(fn, self.cases(), name=self.name, normalize=self.normalize, same=self.same,
                         mistakes=self.mistakes, fresh=self.fresh, separate=self.separate)

    def checker(self, fn: Callable) -> tuple[bool, str]:
        return self.check(self, fn) if self.check is not None else self.run_cases(fn)


REGISTRY: dict[str, Exercise] = {}


def register(*exercises: Exercise) -> None:
    """Add exercises to the registry (a chapter module's EXERCISES are added when it is first loaded)."""
    for ex in exercises:
        if ex.id in REGISTRY and REGISTRY[ex.id] is not ex:
            raise ValueError(f"exercise {ex.id} is registered twice")
        REGISTRY[ex.id] = ex


class LearnerError(Exception):
    """The learner's function raised `original`, when called with `call` (a short text)."""

    def __init__(self, original: BaseException, call: str):
        super().__init__(f"{type(original).__name__}: {original}")
        self.original, self.call = original, call


def _num(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else repr(x)


def _compact(obj: Any) -> str:
    """A one-line text of obj: tensors as `tensor(2x3 float64: [0.1, ...])`, floats to 4 digits."""
    if hasattr(obj, "shape") and hasattr(obj, "dtype") and hasattr(obj, "tolist"):  # a tensor or an array
        flat = obj.reshape(-1).tolist() if hasattr(obj, "reshape") else []
        dims = "x".join(map(str, tuple(obj.shape))) or "scalar"
        vals = ", ".join(_num(v) for v in flat[:6]) + (", ..." if len(flat) > 6 else "")
        return f"tensor({dims} {str(obj.dtype).replace('torch.', '')}: [{vals}])"
    if isinstance(obj, float):
        return _num(obj)
    if isinstance(obj, (list, tuple)) and len(obj) <= 64:
        inner = ", ".join(_compact(x) for x in obj)
        return f"[{inner}]" if isinstance(obj, list) else f"({inner}{',' if len(obj) == 1 else ''})"
    if isinstance(obj, type(lambda: 0)):
        return f"<function {getattr(obj, '__name__', '?')}>"
    return repr(obj)


def short(obj: Any, limit: int = MAX_REPR) -> str:
    """A compact one-line text of obj (see _compact), cut to `limit` characters so hints stay one line."""
    try:
        text = _compact(obj)
    except Exception:  # noqa: BLE001 - a learner's object with a broken repr
        text = f"<{type(obj).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 4] + " ..."


def _where(name: str, args: tuple, got: Any, want: Any) -> str:
    """`name(args) returned got, expected want`; for tensor answers ((shape, values)), the first wrong element."""
    call_text = f"{name}({', '.join(short(a, 60) for a in args)})"
    if (isinstance(got, tuple) and isinstance(want, tuple) and len(got) == len(want) == 2
            and isinstance(want[0], tuple) and isinstance(want[1], tuple) and got[0] == want[0]
            and isinstance(got[1], tuple) and len(got[1]) == len(want[1]) and all(isinstance(d, int) for d in want[0])
            and math.prod(want[0]) == len(want[1])):  # (shape, values), not a pair such as (indices, values)
        bad = next((i for i, (a, b) in enumerate(zip(got[1], want[1], strict=True)) if a != b), None)
        if bad is not None:
            index, rest = [], bad
            for d in reversed(want[0]):
                index.insert(0, rest % d)
                rest //= d
            at = ", ".join(map(str, index))
            n_bad = sum(1 for a, b in zip(got[1], want[1], strict=True) if a != b)
            a, b = got[1][bad], want[1][bad]
            digits = next((d for d in range(4, 12) if f"{a:.{d}g}" != f"{b:.{d}g}"), 12) \
                if isinstance(a, float) and isinstance(b, float) else 4
            a, b = (f"{x:.{digits}g}" if isinstance(x, float) else repr(x) for x in (a, b))
            return (f"{call_text}: element [{at}] is {a}, expected {b} "
                    f"(shape {want[0]}, {n_bad} of {len(want[1])} elements differ)")
    if (isinstance(got, (int, float)) and isinstance(want, (int, float)) and not isinstance(got, bool)
            and not isinstance(want, bool) and got != want and f"{float(got):.4g}" == f"{float(want):.4g}"):
        # equal to 4 digits: show as many as it takes to see the difference (e.g. a result rounded to whole bytes)
        digits = next((d for d in range(5, 18) if f"{float(got):.{d}g}" != f"{float(want):.{d}g}"), 17)
        return f"{call_text} returned {float(got):.{digits}g}, expected {float(want):.{digits}g}"
    return f"{call_text} returned {short(got, 80)}, expected {short(want, 80)}"


def call(fn: Callable, *args: Any, name: str | None = None) -> Any:
    """Call the learner's `fn(*args)`; wrap any exception in LearnerError (so check can tell it apart)."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - every learner exception becomes a ❌ line
        label = name or getattr(fn, "__name__", "fn")
        raise LearnerError(e, f"{label}({', '.join(short(a, 60) for a in args)})") from e


class Wrong(Exception):
    """Raised by a checker's `normalize` when the learner's result has the wrong shape; the message is the hint."""


def run_cases(
    fn: Callable,
    cases: list[tuple[tuple, Any]],
    *,
    name: str,
    normalize: Callable[[Any, tuple], Any] = lambda got, args: got,
    same: Callable[[Any, Any, tuple], bool] = lambda got, want, args: got == want,
    mistakes: list[tuple[Callable, str]] = (),
    fresh: str = "",
    separate: str = "",
) -> tuple[bool, str]:
    """Check `fn(*args) == want` on each `(args, want)` case; return (ok, hint) for the first failure.

    `normalize(got, args)` turns an acceptable answer into a canonical one (e.g. tuples of ints) or raises
    Wrong(hint). `mistakes` are simulated wrong solutions with the hint naming each: when one of them
    reproduces what the learner returned on every case tried so far, its hint is given.
    Arguments are deep-copied for each call, so a function that mutates its input cannot hurt later cases.
    With `fresh` (the hint), the answer must be a new object and the arguments must come back unchanged.
    With `separate` (the hint), no two tensors of the answer may share memory.
    """
    seen: list[tuple[tuple, Any]] = []
    for k, (args, want) in enumerate(cases):
        given = copy.deepcopy(args)
        got = call(fn, *given, name=name)
        if fresh:
            problem = _not_fresh(got, given, args)
            if problem:
                return False, f"{fresh}. {name}({', '.join(short(a, 60) for a in args)}) {problem}"
        addresses = [a for a in map(_storage, _tensors(got)) if a] if separate else []
        try:
            got = normalize(got, args)
        except Wrong as e:
            return False, f"{e} (on {name}({', '.join(short(a, 60) for a in args)}))"
        seen.append((args, got))
        if same(got, want, args):
            if len(set(addresses)) < len(addresses):  # right values, but the pieces share one buffer
                return False, (f"{separate}. {name}({', '.join(short(a, 60) for a in args)}) returned tensors that "
                               "share one buffer (views from split or chunk): each rank would keep the whole buffer "
                               "alive; clone each piece")
            continue
        where = _where(name, args, got, want)
        hint = _diagnose(fn, name, normalize, mistakes, seen, [a for a, _ in cases[k + 1:]])
        return False, f"{hint}. {where}" if hint else where
    return True, ""


_CONTAINERS = (list, dict, set, bytearray)


def _equal(a: Any, b: Any) -> bool:
    """a and b hold the same values (tensors: shape, dtype and values, nan equal to nan); other objects: True."""
    if hasattr(a, "shape") and hasattr(a, "dtype") and hasattr(a, "tolist"):  # a tensor
        import torch  # only the chapters that pass tensors get here

        return (isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype
                and bool(torch.equal(a.nan_to_num(), b.nan_to_num()) if a.is_floating_point() else torch.equal(a, b)))
    if isinstance(a, (list, tuple)):
        return isinstance(b, type(a)) and len(a) == len(b) and all(map(_equal, a, b))
    if isinstance(a, (dict, set, bytearray, str, bytes, int, float)):
        return a == b
    return True  # e.g. a model: not compared


def _tensors(obj: Any, depth: int = 0) -> list[Any]:
    """The tensors in obj and in the lists, tuples and dict values it holds (a few levels deep)."""
    if hasattr(obj, "untyped_storage"):
        return [obj]
    if depth < 4 and isinstance(obj, (list, tuple)):
        return [t for x in obj for t in _tensors(x, depth + 1)]
    if depth < 4 and isinstance(obj, dict):
        return [t for x in obj.values() for t in _tensors(x, depth + 1)]
    return []


def _storage(t: Any) -> int:
    """The address of t's memory (0 for an empty one, which shares nothing)."""
    try:
        s = t.untyped_storage()
        return s.data_ptr() if s.nbytes() else 0
    except Exception:  # noqa: BLE001 - a learner's object that only looks like a tensor
        return 0


def _not_fresh(got: Any, given: tuple, args: tuple) -> str:
    """"" when `got` is none of the arguments `given`, holds no tensor sharing memory with them, and the call left
    them equal to `args`; else what is wrong."""
    for i, a in enumerate(given):
        if got is a and (isinstance(a, _CONTAINERS) or hasattr(a, "data_ptr")):
            return f"returned its argument {i + 1} itself, not a new {type(a).__name__}"
    inputs = {_storage(t): i for i, a in enumerate(given) for t in _tensors(a)}
    inputs.pop(0, None)
    for t in _tensors(got):
        i = inputs.get(_storage(t))
        if i is not None:
            return (f"returned a tensor that shares its memory with argument {i + 1} (the argument itself or a view "
                    "of it, e.g. from split or chunk): writing into the answer would change the input; return a copy")
    for i, (before, after) in enumerate(zip(args, given, strict=True)):
        if not _equal(before, after):
            return f"changed its argument {i + 1} (now {short(after, 60)})"
    return ""


def _diagnose(fn, name, normalize, mistakes, seen, more_args) -> str:
    """The hint of the simulated mistake that reproduces the learner's answers; "" if none does.

    When several mistakes fit the cases seen so far, the learner's function is run on further cases
    until one is left (or the cases run out; then the first one listed wins).
    """

    def fits(wrong, args, got) -> bool:
        try:
            return normalize(wrong(*copy.deepcopy(args)), args) == got
        except Exception:  # noqa: BLE001 - a simulated mistake may not apply to every input
            return False

    candidates = [(w, h) for w, h in mistakes if all(fits(w, a, g) for a, g in seen)]
    for args in more_args:
        if len(candidates) <= 1:
            break
        try:
            got = normalize(call(fn, *copy.deepcopy(args), name=name), args)
        except (LearnerError, Wrong):
            break
        narrower = [(w, h) for w, h in candidates if fits(w, args, got)]
        candidates = narrower or candidates
    return candidates[0][1] if candidates else ""


# ---------------------------------------------------------------------------------------------------
# chapter modules are imported on demand


def _chapter_modules() -> list[str]:
    pkg = importlib.import_module("minillm.grading")
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if re.fullmatch(r"ch\d\d", m.name))


def load_chapter(chapter: str) -> None:
    """Import the checkers of chapter "NN" (a no-op when that chapter has none)."""
    name = f"ch{chapter}"
    if name in _chapter_modules():
        register(*importlib.import_module(f"minillm.grading.{name}").EXERCISES)


def load_all() -> list[str]:
    """Import every chapter's checkers; return the names of the modules that failed to import."""
    failed = []
    for name in _chapter_modules():
        try:
            register(*importlib.import_module(f"minillm.grading.{name}").EXERCISES)
        except Exception:  # noqa: BLE001 - reported by the caller
            failed.append(name)
    return failed


def exercises_of(chapter: str) -> list[Exercise]:
    """The registered exercises of chapter "NN", in id order."""
    load_chapter(chapter)
    found = [e for e in REGISTRY.values() if e.chapter == chapter]
    return sorted(found, key=lambda e: int(e.id.split(".")[1]))


# ---------------------------------------------------------------------------------------------------
# results


@dataclass
class CheckResult:
    """What one check found. Displays as nothing in Jupyter (check already printed the line)."""

    id: str
    title: str
    status: str  # "passed" | "failed" | "not attempted" | "unknown exercise" | "not run"
    points: int
    max_points: int
    hint: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def line(self) -> str:
        head = f"{MARKS.get(self.status, '❌')} {self.id} {self.title}".rstrip()
        if self.status == "passed":
            return f"{head} — {self.points}/{self.max_points} points"
        if self.status in ("not attempted", "not run"):
            return f"{head} — {self.status}" + (f" ({self.hint})" if self.hint else "")
        return f"{head} — hint: {self.hint}"

    def to_json(self) -> dict:
        return asdict(self)

    def __repr__(self) -> str:  # short, for plain Python; Jupyter shows nothing (see below)
        return f"<CheckResult {self.id} {self.status} {self.points}/{self.max_points}>"

    def _ipython_display_(self) -> None:
        """The line was printed by check(); showing it again as the cell's value would repeat it."""


def _not_attempted_hint(exercise_id: str, err: NotImplementedError) -> str:
    hint = "the stub still raises NotImplementedError"
    other = re.search(r"Exercise (\d\d\.\d+)", str(err))
    if other and other.group(1) != exercise_id:
        hint += f"; it comes from the stub of exercise {other.group(1)}, which this one calls"
    return hint


def _run_checker(ex: Exercise, fn: Callable) -> CheckResult:
    def result(status: str, hint: str = "") -> CheckResult:
        return CheckResult(ex.id, ex.title, status, ex.points if status == "passed" else 0, ex.points, hint)

    if not callable(fn):
        return result("failed", f"check needs your function itself (no parentheses), got {short(fn, 60)}")
    try:
        verdict = ex.checker(fn)
    except LearnerError as e:
        if isinstance(e.original, NotImplementedError):
            return result("not attempted", _not_attempted_hint(ex.id, e.original))
        return result("failed", f"your function raised {e} (on {e.call})")
    except NotImplementedError as e:  # raised outside call(): treat the same
        return result("not attempted", _not_attempted_hint(ex.id, e))
    except RecursionError:
        return result("failed", "RecursionError: your function recursed too deeply")
    except Exception as e:  # noqa: BLE001 - e.g. the checker choked on what the function returned
        return result("failed", f"checking what your function returned raised {type(e).__name__}: {e}")
    try:
        ok, hint = verdict
    except (TypeError, ValueError):
        return result("failed", f"internal: checker of {ex.id} returned {short(verdict, 60)}")
    return result("passed") if ok else result("failed", str(hint) or "wrong result")


def check(exercise_id: str, fn: Callable) -> CheckResult:
    """Grade the learner's `fn` for exercise `exercise_id`; print one ✅/❌/⬜ line; never raise."""
    try:
        res = _check(exercise_id, fn)
    except BaseException as e:  # noqa: BLE001 - last resort: check must never raise
        if isinstance(e, KeyboardInterrupt):
            res = CheckResult(str(exercise_id), "", "failed", 0, 0, "interrupted (KeyboardInterrupt)")
        else:
            res = CheckResult(str(exercise_id), "", "failed", 0, 0, f"internal error {type(e).__name__}: {e}")
    print(res.line(), flush=True)
    return res


def _check(exercise_id: Any, fn: Callable) -> CheckResult:
    ex_id = str(exercise_id).strip()
    m = ID_RE.match(ex_id)
    if m:
        try:
            load_chapter(m.group(1))
        except Exception as e:  # noqa: BLE001 - a broken grader must not break the notebook
            return CheckResult(ex_id, "", "failed", 0, 0,
                               f"the checkers of chapter {m.group(1)} failed to load ({type(e).__name__}: {e})")
    if ex_id not in REGISTRY:
        load_all()
        known = ", ".join(sorted(REGISTRY)) or "none"
        return CheckResult(ex_id, "", "unknown exercise", 0, 0, f"unknown exercise id {ex_id!r}; known ids: {known}")
    return _run_checker(REGISTRY[ex_id], fn)
