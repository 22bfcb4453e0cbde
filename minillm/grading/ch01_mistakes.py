"""Simulated wrong solutions of the chapter 1 exercises, used by ch01.py to name a learner's mistake.

Each function reproduces one common mistake (counting overlapping pairs wrongly, merging overlaps, ids
off by one, ties broken the wrong way, WordPiece's shortest match, a Viterbi search that minimises...).
When a learner's answers equal those of one of these on every case tried, ch01.py shows its hint.
They are deliberately wrong: never use them as references.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from itertools import pairwise

from minillm.tokenizer.bpe import merge_pair

# ---------------------------------------------------------------------------------------------------
# 01.1 pair counts


def count_presence_only(ids):
    return {p: 1 for p in pairwise(ids)}


def count_skipping_last(ids):
    out: dict = {}
    for i in range(len(ids) - 2):
        out[(ids[i], ids[i + 1])] = out.get((ids[i], ids[i + 1]), 0) + 1
    return out


def count_unordered(ids):
    out: dict = {}
    for a, b in pairwise(ids):
        out[(min(a, b), max(a, b))] = out.get((min(a, b), max(a, b)), 0) + 1
    return out


def count_without_overlaps(ids):
    out: dict = {}
    i = 0
    while i < len(ids) - 1:
        p = (ids[i], ids[i + 1])
        out[p] = out.get(p, 0) + 1
        i += 2 if i + 2 < len(ids) and (ids[i + 1], ids[i + 2]) == p else 1
    return out


def count_wrapping_around(ids):
    out = {}
    for p in zip(ids, ids[1:] + ids[:1], strict=True):
        out[p] = out.get(p, 0) + 1
    return out


# ---------------------------------------------------------------------------------------------------
# 01.2 merging a pair


def merge_overlapping(ids, pair, new_id):
    """Forgets to skip the second id of a merged pair: [a, a, a] -> [X, X, a]."""
    out = []
    for i, x in enumerate(ids):
        out.append(new_id if i + 1 < len(ids) and (x, ids[i + 1]) == tuple(pair) else x)
    return out


def merge_dropping_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def merge_right_to_left(ids, pair, new_id):
    out, i = [], len(ids) - 1
    while i >= 0:
        if i >= 1 and (ids[i - 1], ids[i]) == tuple(pair):
            out.append(new_id)
            i -= 2
        else:
            out.append(ids[i])
            i -= 1
    return out[::-1]


def merge(ids, pair, new_id, overlapping=False):
    """A correct merge (or, with overlapping=True, the overlapping mistake), for the simulations below."""
    return merge_overlapping(ids, pair, new_id) if overlapping else merge_pair(ids, pair, new_id)


# ---------------------------------------------------------------------------------------------------
# 01.3 and 01.4: BPE training and encoding, each with one switchable deviation


def train(text, num_merges, *, first_id=256, chars=False, overlapping=False, tie: Callable | None = None,
          recount=True):
    """BPE training with one deviation: ids from `first_id`, characters instead of bytes, overlapping
    merges, another tie rule (`tie(counts) -> pair`), or counting the pairs only once (recount=False)."""
    ids = [ord(c) for c in text] if chars else list(text.encode("utf-8"))
    merges: list[tuple[int, int]] = []
    counts0 = {}
    for p in pairwise(ids):
        counts0[p] = counts0.get(p, 0) + 1
    if not recount:  # the most common pairs of the raw text, counted once
        return sorted(counts0, key=lambda p: -counts0[p])[:num_merges]
    for i in range(num_merges):
        counts: dict = {}
        for p in pairwise(ids):
            counts[p] = counts.get(p, 0) + 1
        if not counts:
            break
        pair = tie(counts) if tie else max(counts, key=counts.get)
        merges.append(pair)
        ids = merge(ids, pair, first_id + i, overlapping)
    return merges


def encode(text, merges, *, first_id=256, chars=False, by_frequency=False, reverse=False, overlapping=False):
    """BPE encoding with one deviation: merging by frequency in this text instead of by rank, merges in
    reverse, ids from `first_id`, characters instead of bytes, or overlapping merges."""
    ids = [ord(c) for c in text] if chars else list(text.encode("utf-8"))
    ranked = [(i, tuple(p)) for i, p in enumerate(merges)]
    if by_frequency:  # merge the most frequent known pair of THIS text, again and again
        known = {p: i for i, p in ranked}
        while True:
            counts: dict = {}
            for p in pairwise(ids):
                if p in known:
                    counts[p] = counts.get(p, 0) + 1
            if not counts:
                return ids
            p = max(counts, key=counts.get)
            ids = merge(ids, p, first_id + known[p], overlapping)
    for i, p in reversed(ranked) if reverse else ranked:
        ids = merge(ids, p, first_id + i, overlapping)
    return ids


# ---------------------------------------------------------------------------------------------------
# 01.5 and 01.6: WordPiece and Viterbi


def wordpiece(word, vocab, unk="[UNK]", *, shortest=False, prefix="##", first_prefix=False, unk_per_piece=False):
    """WordPiece with one deviation: shortest match, no (or another) prefix, a prefix on the first piece
    too, or [UNK] for the unmatched character only instead of the whole word."""
    pieces, start = [], 0
    while start < len(word):
        ends = range(start + 1, len(word) + 1) if shortest else range(len(word), start, -1)
        match = None
        for end in ends:
            piece = word[start:end]
            if start > 0 or first_prefix:
                piece = prefix + piece
            if piece in vocab:
                match, start = piece, end
                break
        if match is None:
            if not unk_per_piece:
                return [unk]
            match, start = unk, start + 1
        pieces.append(match)
    return pieces


def viterbi(text, scores, *, combine=operator.add, empty=0.0, better=operator.gt, weight=lambda s: s):
    """DP over end positions (best[i] covers text[:i]) with one deviation: another way to `combine`
    scores (`empty` is its neutral value), another comparison (`better`), or each score `weight`ed."""
    n, longest = len(text), max(map(len, scores))
    best: list[float | None] = [None] * (n + 1)
    back = [0] * (n + 1)
    best[0] = empty  # the value of covering nothing: 0 for a sum, 1 for a product
    for end in range(1, n + 1):
        for start in range(max(0, end - longest), end):
            piece = text[start:end]
            if piece in scores and best[start] is not None:
                cand = combine(best[start], weight(scores[piece]))
                if best[end] is None or better(cand, best[end]):
                    best[end], back[end] = cand, start
    pieces, end = [], n
    while end > 0:
        pieces.append(text[back[end]:end])
        end = back[end]
    return pieces[::-1]


def greedy_longest(text, scores):
    """Longest piece first, left to right, ignoring the scores."""
    pieces, start = [], 0
    while start < len(text):
        end = next(e for e in range(len(text), start, -1) if text[start:e] in scores)
        pieces.append(text[start:end])
        start = end
    return pieces
