"""Chapter 8 exercises: the hand-worked values the notebook's markdown shows are what the `minillm` references
compute (read from the markdown itself), acceptable variants pass (tensors instead of lists, float32, other
algorithms), and plausible wrong solutions fail with the hint naming the mistake. What every exercise gets
(solution passes, stub "not attempted", junk answers, the checker's simulated mistakes) is in test_exercises.py."""

from __future__ import annotations

import math
import re

import exercise_kit as kit
import pytest
import torch
import torch.nn.functional as F

from minillm.data import CharTokenizer
from minillm.grading import ch08, check
from minillm.sft import add_chat_tokens, encode_chat, labels_to_targets, packing_mask, positions_from_segments

CHAPTER = "08"
CELLS = kit.cells(kit.source(CHAPTER))
MARKDOWN = "\n".join(c.source(False) for c in CELLS if c.kind == "markdown")


def _shown(snippet: str) -> list[int]:
    assert snippet in MARKDOWN, f"the markdown no longer shows {snippet!r}"
    return [int(x) for x in re.findall(r"-?\d+", snippet)]


def test_hand_worked_labels_are_what_encode_chat_gives():
    tok = add_chat_tokens(CharTokenizer("abcxyz"))  # <|user|> 6, <|assistant|> 7, <|end|> 8
    msgs = [{"role": "user", "content": "ab"}, {"role": "assistant", "content": "c"},
            {"role": "user", "content": "x"}, {"role": "assistant", "content": "yz"}]
    ids, labels = encode_chat(tok, msgs)
    assert _shown("`ids = [6, 0, 1, 8, 7, 2, 8, 6, 3, 8, 7, 4, 5, 8]`") == ids == ch08.HAND_IDS
    assert _shown("`[-100, -100, -100, -100, -100, 2, 8, -100, -100, -100, -100, 4, 5, 8]`") == labels
    empty_ids, empty_labels = encode_chat(tok, [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}])
    assert _shown("`ids = [6, 0, 8, 7, 8]` (an empty reply): `[-100, -100, -100, -100, 8]`") == empty_ids + empty_labels
    cut = _shown("`ids = [7, 1, 2]` (a reply cut off): `[-100, 1, 2]`")
    assert cut == [7, 1, 2] + ch08._ref_labels([7, 1, 2], 7, 8)


def test_hand_worked_packing():
    seg = torch.tensor([[0, 0, 1, 1, 1, -1]])
    assert _shown("`positions = [0, 1, 0, 1, 2, 0]`") == positions_from_segments(seg)[0].tolist()
    block = re.search(r"```\n((?:[01 ]+\n){6})```", MARKDOWN).group(1)
    rows = [[bool(int(v)) for v in line.split()] for line in block.strip().split("\n")]
    assert torch.equal(torch.tensor(rows), packing_mask(seg)[0, 0])


def test_hand_worked_loss():
    logits = torch.tensor(ch08.HAND_LOGITS, dtype=torch.float64)
    assert "`logits = [[[0, 0], [ln 3, 0], [0, 0]]]`" in MARKDOWN and "[[-100, 0, 1]]" in MARKDOWN
    assert logits[0, 1, 0] == pytest.approx(math.log(3), abs=1e-7)
    loss = F.cross_entropy(logits[0], labels_to_targets(torch.tensor(ch08.HAND_LOSS_LABELS))[0], ignore_index=-100)
    assert "1.5 \\ln 2 \\approx 1.039721" in MARKDOWN and float(loss) == pytest.approx(1.5 * math.log(2), abs=1e-7)


# ---------------------------------------------------------------------------------------------------
# valid variants pass


def labels_as_tensor(ids, a, e):
    """Vectorised: a token is inside a reply when the last <|assistant|> before it comes after the last <|end|>."""
    ids_t = torch.tensor(ids)
    idx = torch.arange(len(ids))
    before = torch.cat([torch.tensor([-1]), idx[:-1]])  # position t looks at the tokens < t

    def last(token):  # index of the latest `token` at a position < t, or -1
        seen = torch.where(ids_t == token, idx, torch.full_like(idx, -1)).cummax(0).values
        return torch.cat([torch.tensor([-1]), seen[:-1]])

    inside = (last(a) > last(e)) & (before >= 0)
    return torch.where(inside, ids_t, torch.full_like(ids_t, -100))


def packing_by_loops(lengths, T):
    seg = []
    for s, n in enumerate(lengths):
        seg += [s] * n
    seg += [-1] * (T - len(seg))
    positions, mask = [], [[False] * T for _ in range(T)]
    for i in range(T):
        positions.append(i - seg.index(seg[i]) if seg[i] >= 0 else i - sum(lengths))
        for j in range(i + 1):
            mask[i][j] = seg[i] == seg[j]
    return torch.tensor(positions), torch.tensor(mask)


def loss_float32_reshape(logits, labels):
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)


def loss_by_loops(logits, labels):
    total, n = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            y = int(labels[b, t + 1])
            if y != -100:
                total -= float(torch.log_softmax(logits[b, t], -1)[y])
                n += 1
    return total / n


@pytest.mark.parametrize(("ex_id", "fn"), [("08.1", labels_as_tensor), ("08.2", packing_by_loops),
                                           ("08.3", loss_float32_reshape), ("08.3", loss_by_loops)])
def test_valid_variants_pass(ex_id, fn):
    result = check(ex_id, fn)
    assert result.passed, result.hint


# ---------------------------------------------------------------------------------------------------
# plausible mistakes fail, each with its own hint


@pytest.mark.parametrize(("ex_id", "mistakes"), [("08.1", ch08.LABEL_MISTAKES), ("08.2", ch08.PACK_MISTAKES),
                                                 ("08.3", ch08.LOSS_MISTAKES)])
def test_mistakes_fail_with_their_hint(ex_id, mistakes):
    for fn, hint in mistakes:
        result = check(ex_id, fn)
        assert not result.passed and hint in result.hint, (fn.__name__, result.hint)


def test_stubs_and_solutions(solution, stubs):
    for ex_id, name in kit.checked_functions(kit.source(CHAPTER)).items():
        assert check(ex_id, solution[name]).passed
        assert check(ex_id, stubs[name]).status == "not attempted"
