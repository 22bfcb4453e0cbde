"""Checkers of chapter 8 (supervised fine-tuning), the exercises of exercises/08_sft.ipynb.

| id | the learner writes | compared with |
|---|---|---|
| 08.1 | `assistant_labels(ids, assistant_id, end_id)` -> labels | a scan of the tokens (= `sft.encode_chat`'s) |
| 08.2 | `packing_inputs(lengths, T)` -> (positions (T,), mask (T, T)) | `sft.positions_from_segments`, `packing_mask` |
| 08.3 | `causal_lm_loss(logits, labels)`, HF's unshifted labels | cross-entropy on `sft.labels_to_targets(labels)` |

Hand-worked cases come first (written out in the notebook), then random ones: conversations of 1-6 turns in
any role order with random contents and special ids (08.1; some end in an unfinished reply, which counts to the
end of the sequence), 1-5 lengths with or without a padded tail (08.2), float64 logits (B, T, V) with random
-100 patterns, every row keeping at least one counted label (08.3). Labels, positions and the mask must be
exact; the loss within 1e-6 times max(1, |expected|). The `*_MISTAKES` lists pair simulated wrong solutions
with the hint naming each.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from minillm.grading import answers
from minillm.grading.answers import generator, randn64
from minillm.grading.core import Exercise, Wrong, short

IGNORE = -100

# ---------------------------------------------------------------------------------------------------
# 08.1 the label mask of a chat example

# hand-worked: <|user|>=6, <|assistant|>=7, <|end|>=8; "ab" -> "c", then "x" -> "yz"
HAND_IDS = [6, 0, 1, 8, 7, 2, 8, 6, 3, 8, 7, 4, 5, 8]
HAND_LABELS = [-100, -100, -100, -100, -100, 2, 8, -100, -100, -100, -100, 4, 5, 8]


def _ref_labels(ids: list[int], assistant_id: int, end_id: int) -> list[int]:
    out, inside = [], False
    for t in ids:
        if inside:
            out.append(t)
            inside = t != end_id
        else:
            out.append(IGNORE)
            inside = t == assistant_id
    return out


def labels_with_role_token(ids, a, e):
    out, inside = [], False
    for t in ids:
        inside = inside or t == a
        out.append(t if inside else IGNORE)
        inside = inside and t != e
    return out


def labels_without_end(ids, a, e):
    return [IGNORE if t == e else v for t, v in zip(ids, _ref_labels(ids, a, e), strict=True)]


def labels_first_reply_only(ids, a, e):
    out, state = [], 0  # 0 before, 1 inside the first reply, 2 after it
    for t in ids:
        out.append(t if state == 1 else IGNORE)
        state = 1 if (state == 0 and t == a) else 2 if (state == 1 and t == e) else state
    return out


def labels_shifted(ids, a, e):  # the targets GPT.forward takes (labels[t + 1]), not Hugging Face's labels
    lab = _ref_labels(ids, a, e)
    return [*lab[1:], IGNORE]


def labels_prompt_side(ids, a, e):
    return [IGNORE if v != IGNORE else t for t, v in zip(ids, _ref_labels(ids, a, e), strict=True)]


def labels_zero_not_ignore(ids, a, e):
    return [0 if v == IGNORE else v for v in _ref_labels(ids, a, e)]


LABEL_MISTAKES = [
    (labels_with_role_token, "the <|assistant|> token itself is written by the template (it is in the prompt at "
                             "inference time): label it -100; count from the token after it"),
    (labels_without_end, "keep the <|end|> that closes each reply as a label: the model must learn to stop"),
    (labels_first_reply_only, "every assistant turn counts, not only the first: after an <|end|>, look for the "
                              "next <|assistant|>"),
    (labels_shifted, "return the labels aligned with ids (labels[t] = ids[t] where counted), Hugging Face's "
                     "convention; the shift to next-token targets happens in the loss, not here"),
    (labels_prompt_side, "you kept the prompt side: the user turns and the template tokens are -100, the "
                         "replies keep their ids"),
    (labels_zero_not_ignore, "tokens that do not count are -100 (cross-entropy's ignore_index), not 0: 0 is a "
                             "real token id"),
]


def _labels_out(got, args) -> tuple:
    if isinstance(got, torch.Tensor):
        got = got.detach()
        if got.is_floating_point() or got.dim() != 1:
            raise Wrong(f"return a list (or 1-D integer tensor) of labels, got a tensor {got.dtype} of shape "
                        f"{tuple(got.shape)}")
        got = got.tolist()
    if not isinstance(got, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in got):
        raise Wrong(f"return a list of ints, one label per token, got {short(got, 40)}")
    if len(got) != len(args[0]):
        raise Wrong(f"return one label per token: {len(args[0])} ids, {len(got)} labels")
    return tuple(got)


def _random_chat(rng: random.Random) -> tuple[list[int], int, int]:
    """A rendered conversation with random special ids; contents never contain them."""
    specials = rng.sample(range(10), 3)  # user, assistant, end among 0..9
    u, a, e = specials
    plain = [t for t in range(12) if t not in specials]
    ids: list[int] = []
    for _ in range(rng.randint(1, 6)):
        ids += [rng.choice((u, a))] + [rng.choice(plain) for _ in range(rng.randint(0, 4))] + [e]
    if rng.random() < 0.3:  # an unfinished reply at the end (cut by the window, or being generated)
        ids += [a] + [rng.choice(plain) for _ in range(rng.randint(0, 3))]
    return ids, a, e


def _cases_labels() -> list:
    inputs = [(HAND_IDS, 7, 8), ([6, 0, 8, 7, 8], 7, 8), ([7, 1, 2], 7, 8), ([6, 0, 1, 8], 7, 8)]
    rng = random.Random(random.randrange(2**31))
    inputs += [_random_chat(rng) for _ in range(30)]
    return [((list(ids), a, e), tuple(_ref_labels(ids, a, e))) for ids, a, e in inputs]


# ---------------------------------------------------------------------------------------------------
# 08.2 positions and mask of a packed window


def _segments(lengths: list[int], T: int) -> torch.Tensor:
    seg = torch.full((T,), -1, dtype=torch.long)
    t = 0
    for s, n in enumerate(lengths):
        seg[t: t + n] = s
        t += n
    return seg


def _ref_packing(lengths: list[int], T: int) -> tuple[torch.Tensor, torch.Tensor]:
    from minillm.sft import packing_mask, positions_from_segments

    seg = _segments(lengths, T)[None]
    return positions_from_segments(seg)[0], packing_mask(seg)[0, 0]


def pack_plain_causal(lengths, T):
    pos, _ = _ref_packing(lengths, T)
    return pos, torch.ones(T, T, dtype=torch.bool).tril()


def pack_blocks_not_causal(lengths, T):
    seg = _segments(lengths, T)
    return _ref_packing(lengths, T)[0], seg[:, None] == seg[None, :]


def pack_positions_not_restarting(lengths, T):
    return torch.arange(T), _ref_packing(lengths, T)[1]


def pack_tail_attends_nothing(lengths, T):
    pos, mask = _ref_packing(lengths, T)
    seg = _segments(lengths, T)
    return pos, mask & (seg[:, None] >= 0)


def pack_boundary_off_by_one(lengths, T):
    shifted = [n + 1 for n in lengths[:1]] + [max(n - 1, 1) for n in lengths[1:]]
    if sum(shifted) > T:
        shifted = lengths
    return _ref_packing(shifted, T)


def pack_positions_from_one(lengths, T):
    pos, mask = _ref_packing(lengths, T)
    return pos + 1, mask


PACK_MISTAKES = [
    (pack_plain_causal, "a token must not see the examples packed before it: allow key j for query i only when "
                        "both are in the same example (block-diagonal), and j <= i"),
    (pack_blocks_not_causal, "inside an example the mask stays causal: a query may not see later tokens of its "
                             "own example (j <= i)"),
    (pack_positions_not_restarting, "positions restart at 0 at the start of each example, as if it were alone"),
    (pack_tail_attends_nothing, "the padded tail is one more segment: its tokens attend causally among "
                                "themselves (a row with no allowed key gives NaN in the softmax)"),
    (pack_boundary_off_by_one, "an example of length n covers exactly n tokens: check where each one starts "
                               "(the running sum of the lengths before it)"),
    (pack_positions_from_one, "the first token of each example has position 0, not 1"),
]


def _pack_out(got, args) -> tuple:
    T = args[1]
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise Wrong(f"return a pair (positions, mask), got {type(got).__name__} {short(got, 40)}")
    pos, mask = got
    if not isinstance(pos, torch.Tensor) or pos.is_floating_point() or pos.dtype == torch.bool:
        raise Wrong(f"positions must be an integer tensor of shape ({T},), got {short(pos, 40)}")
    if tuple(pos.shape) != (T,):
        raise Wrong(f"positions have shape {tuple(pos.shape)}, expected ({T},): one per token of the window")
    answers.bool_mask(mask, (T, T), "(T, T)", "compare segment ids / indices to get booleans")
    rows = tuple("".join("1" if v else "0" for v in r) for r in mask.tolist())  # "110000": row i, 1 = may attend
    return {"positions": tuple(pos.tolist()), "mask": rows}


def _cases_packing() -> list:
    inputs = [([2, 3], 6), ([3], 3), ([1, 1, 1], 4), ([4, 2], 6)]
    rng = random.Random(random.randrange(2**31))
    for _ in range(25):
        lengths = [rng.randint(1, 6) for _ in range(rng.randint(1, 5))]
        inputs.append((lengths, sum(lengths) + rng.choice((0, 0, 1, 3))))
    return [((list(n), T), _pack_out(_ref_packing(n, T), (n, T))) for n, T in inputs]


# ---------------------------------------------------------------------------------------------------
# 08.3 the causal-LM loss with Hugging Face's labels

HAND_LOGITS = [[[0.0, 0.0], [1.0986123, 0.0], [0.0, 0.0]]]  # [ln 3, 0] at t = 1
HAND_LOSS_LABELS = [[-100, 0, 1]]


def _ref_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    from minillm.sft import labels_to_targets

    targets = labels_to_targets(labels)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)


def loss_no_shift(logits, labels):
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)


def loss_wrong_direction(logits, labels):
    return F.cross_entropy(logits[:, 1:].flatten(0, 1), labels[:, :-1].flatten(), ignore_index=IGNORE)


def loss_mean_over_all(logits, labels):
    t = labels[:, 1:]
    ce = F.cross_entropy(logits[:, :-1].flatten(0, 1), t.clamp(min=0).flatten(), reduction="none")
    return (ce * (t.flatten() != IGNORE)).sum() / t.numel()  # divides by every position, counted or not


def loss_per_row_mean(logits, labels):
    rows = [F.cross_entropy(logits[b, :-1], labels[b, 1:], ignore_index=IGNORE) for b in range(labels.shape[0])]
    return torch.stack(rows).mean()


def loss_sum(logits, labels):
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE,
                           reduction="sum")


LOSS_MISTAKES = [
    (loss_no_shift, "labels are not shifted yet: the logits at position t predict labels[t + 1], so compare "
                    "logits[:, :-1] with labels[:, 1:]"),
    (loss_wrong_direction, "shift the other way: the logits at t predict the NEXT token, labels[t + 1] "
                           "(logits[:, :-1] with labels[:, 1:])"),
    (loss_mean_over_all, "average over the counted labels only: the -100 positions are neither in the sum nor "
                         "in the count"),
    (loss_per_row_mean, "one mean over every counted token of the batch (Hugging Face's), not a mean of per-row "
                        "means: rows with more answer tokens weigh more"),
    (loss_sum, "return the mean over the counted tokens, not the sum"),
]


def _loss_out(got, args) -> float | str:
    return answers.canonical(answers.number(got, "the mean cross-entropy over the counted labels"))


def _same_loss(got, want, args) -> bool:
    return answers.same_number(got, want, lambda b: answers.TOL * max(1.0, abs(b)))


def _cases_loss() -> list:
    inputs = [(torch.tensor(HAND_LOGITS, dtype=torch.float64), torch.tensor(HAND_LOSS_LABELS))]
    gen = generator()
    for B, T, V in [(1, 5, 4), (2, 6, 3), (3, 4, 7), (4, 8, 5), (2, 10, 2)]:
        logits = randn64(B, T, V, gen=gen, scale=2.0)
        labels = torch.randint(V, (B, T), generator=gen)
        drop = torch.rand(B, T, generator=gen) < 0.5
        drop[:, 0] = True  # the first label is never predicted
        drop[torch.arange(B), torch.randint(1, T, (B,), generator=gen)] = False  # a counted label per row
        inputs.append((logits, labels.masked_fill(drop, IGNORE)))
    return [((lg, lab), _loss_out(_ref_loss(lg, lab), (lg, lab))) for lg, lab in inputs]


EXERCISES = (
    Exercise("08.1", "The label mask of a chat example", 1, cases=_cases_labels, name="assistant_labels",
             normalize=_labels_out, mistakes=LABEL_MISTAKES),
    Exercise("08.2", "Positions and mask of a packed window", 2, cases=_cases_packing, name="packing_inputs",
             normalize=_pack_out, mistakes=PACK_MISTAKES),
    Exercise("08.3", "The causal-LM loss with Hugging Face's labels", 2, cases=_cases_loss, name="causal_lm_loss",
             normalize=_loss_out, same=_same_loss, mistakes=LOSS_MISTAKES),
)
