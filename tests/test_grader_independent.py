"""Independent test of the exercise grader: learner-written solutions, valid and wrong, through `check`.

The solutions in tests/learner_solutions/chNN.py were written from the notebook text alone (without the
grader's list of anticipated mistakes or the reference solutions). A function named
``valid_NN_k_*`` satisfies the task text of exercise NN.k and must pass; ``wrong_NN_k_*`` breaks a clause of
it (named in the comment above the function) and must fail. Cases where the grader disagrees, verified by
hand, are marked xfail(strict=True) in GRADER_DEFECTS, so the suite passes now and flags the fix.
"""
from __future__ import annotations

import importlib
import inspect
import random
import re
import sys
from pathlib import Path

import pytest
import torch

from minillm.grading import check

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # tests/ is not a package: import learner_solutions from here
CHAPTERS = sorted(p.stem for p in (HERE / "learner_solutions").glob("ch0*.py"))
NAME = re.compile(r"^(valid|wrong)_(\d\d)_(\d+)_\w+$")

# name -> reason; each verified: a valid solution the grader rejects, or a wrong one it accepts
GRADER_DEFECTS: dict[str, str] = {
    # 01.1 "Fill the dict ... so that its keys come in order of first occurrence": dict == ignores key order;
    # [3, 1, 2] must give keys [(3, 1), (1, 2)], this gives [(1, 2), (3, 1)] (01.3's tie rule relies on the order)
    "wrong_01_1_sorted_keys": "01.1 key order (first occurrence) not checked; [3, 1, 2] -> keys sorted",
    # 01.2 "a **new** list": merge_pair([1, 2, 3], (5, 6), 256) returns the input list object itself
    # 01.3 "Stop early if no pair is left": stopping when the top count is 1 gives [] for train_bpe("abcd", 2)
    # (reference and text: [(97, 98), (256, 99)]); the check catches it only on some draws (2 of 6 seeds here)
    "wrong_01_3_stop_at_count_one": "01.3 stopping at top count 1 accepted on most draws ('abcd', 2 -> [])",
    # 01.5 "take the longest vocabulary entry": no case has a piece longer than 8 characters;
    # "abcdefghij" with {"abcdefghij", "a", "##b", ..., "##j"} must be one piece, this gives ten
    "wrong_01_5_max_len_8": "01.5 no vocabulary entry longer than 8 chars in the cases (greedy capped at 8 passes)",
    # 01.6 "the segmentation with the highest total": no piece longer than 4 characters in the cases;
    # "abcdefgh" with {"abcdefgh": -1, each letter: -3} must be one piece, this gives eight letters (-24)
    "wrong_01_6_max_len_4": "01.6 no scored piece longer than 4 chars in the cases (pieces capped at 4 pass)",
    "wrong_01_2_same_object_if_absent": "01.2 'a new list' not checked when the pair is absent ([1, 2, 3], (5, 6))",
    # 02.4 "keys after the query (rel > 0) are offset by half": rel = 0 bidirectional must be bucket 0, this gives 16
    "wrong_02_4_offset_rel_zero": "02.4 rel = 0 with bidirectional=True never checked (bucket 0 vs 16 for 32/128)",
    # 05.5 "lse (..., T)": an lse of shape (..., T, 1) is accepted (q (2,5,4), k (2,7,4) gives (2,5,1))
    "wrong_05_5_lse_keepdim": "05.5 the shape of lse is not checked: (..., T, 1) accepted for (..., T)",
    # 07.1 "returning a new (B, V) tensor": masked_fill_ mutates the caller's logits
    "wrong_07_1_in_place": "07.1 in-place masked_fill_ on the input accepted (input logits mutated)",
    # 07.1 same clause for k == V; minillm.sampling.top_k_filter itself returns its input when k == V
    "wrong_07_1_same_object_full_k": "07.1 k == V returns the input object (the minillm reference does too)",
    # 07.3 "returning new (B, V) logits": scatter_ into the input; logits [[2, -1, 0.5, -3, 1]] with history
    # [[0, 1, 1, 3]] are left as [[1, -2, 0.5, -6, 1]] in the caller's tensor
    "wrong_07_3_in_place": "07.3 in-place scatter_ on the input accepted (input logits mutated)",
    # 07.4 "n calls in all for n new tokens": an extra final call is accepted; with T + n = block_size + 1 it
    # raises ValueError (positions up to 64 but block_size=64) on the tiny preset, where the valid one works
    "wrong_07_4_extra_call": "07.4 n + 1 model calls accepted (the text asks n); fails at T + n = block_size + 1",
}


def _cases() -> list:
    cases = []
    for ch in CHAPTERS:
        mod = importlib.import_module(f"learner_solutions.{ch}")
        for name, fn in inspect.getmembers(mod, inspect.isfunction):
            m = NAME.match(name)
            if not m or fn.__module__ != mod.__name__:
                continue
            kind, nn, k = m.groups()
            marks = []
            if name in GRADER_DEFECTS:
                marks.append(pytest.mark.xfail(strict=True, reason="grader defect: " + GRADER_DEFECTS[name]))
            cases.append(pytest.param(f"{nn}.{k}", fn, kind == "valid", id=name, marks=marks))
    return cases


# The checks draw fresh random cases (from `random`) at every call, so a learner's one run sees one draw: a
# solution must get the same verdict on every seed. Fixed seeds keep this suite repeatable.
SEEDS = (0, 1, 2, 3, 4, 5)


@pytest.mark.parametrize(("exercise_id", "fn", "is_valid"), _cases())
def test_learner_solution(exercise_id: str, fn, is_valid: bool) -> None:
    verdicts = []
    for seed in SEEDS:
        random.seed(seed)
        torch.manual_seed(seed)
        res = check(exercise_id, fn)
        ok = (res.status == "passed" and res.points == res.max_points) if is_valid else \
            (res.status == "failed" and res.points == 0)
        verdicts.append((seed, ok, res.line()))
    bad = [f"seed {seed}: {line}" for seed, ok, line in verdicts if not ok]
    assert not bad, f"{len(bad)}/{len(SEEDS)} seeds: " + " | ".join(bad)


def test_every_exercise_has_two_valid_and_two_wrong() -> None:
    counts: dict[tuple[str, str], int] = {}
    for p in _cases():
        exercise_id, fn, is_valid = p.values
        key = (exercise_id, "valid" if is_valid else "wrong")
        counts[key] = counts.get(key, 0) + 1
    ids = {e for e, _ in counts}
    assert len(ids) >= 45, sorted(ids)
    for e in ids:
        assert counts.get((e, "valid"), 0) >= 2 and counts.get((e, "wrong"), 0) >= 2, e
