"""Checkers of chapter 1 (tokenization), the exercises of exercises/01_tokenization.ipynb.

| id | the learner writes | compared with |
|---|---|---|
| 01.1 | `get_pair_counts(ids)` | `minillm.tokenizer.get_pair_counts` |
| 01.2 | `merge_pair(ids, pair, new_id)` | `minillm.tokenizer.merge_pair` |
| 01.3 | `train_bpe(text, num_merges)` | `BPETokenizer().train(text, 256 + num_merges).merges` |
| 01.4 | `bpe_encode(text, merges)` | `BPETokenizer.encode` with the same merges |
| 01.5 | `wordpiece_tokenize(word, vocab, unk)` | `WordPiece(vocab).tokenize_word` |
| 01.6 | `viterbi_segment(text, scores)` | `Unigram(pieces).viterbi`, by total log-probability |

Each checker runs hand-worked cases first (their answers are written out below and in the notebook),
then fresh random inputs compared with the minillm reference. Results must match exactly (01.1: the dict's
key order too, first occurrence), except 01.6: any segmentation whose total log-probability is within
1e-9 of the best one passes (ties are allowed). 01.2 must return a new list and leave its input as it was
(`fresh`); 01.5 and 01.6 include entries and pieces longer than 8 characters.
The `*_MISTAKES` lists pair simulated wrong solutions with the hint naming each;
when the learner's answers match one of them on every case tried, that hint is shown.
"""

from __future__ import annotations

import math
import numbers
import operator
import random
import warnings
from collections.abc import Callable
from itertools import pairwise

from minillm.grading.core import Exercise, Wrong
from minillm.tokenizer.bpe import merge_pair

# Each section below defines its simulated wrong solutions (deliberately wrong: never references) next to
# the list that pairs each one with the hint naming it; EXERCISES at the end declares the exercises.

# ---------------------------------------------------------------------------------------------------
# shape checks (turn acceptable answers into canonical ones, or raise Wrong with a hint)


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)  # numpy ints are fine too


def _int_list(got, args, what="a list of ints") -> list[int]:
    if not isinstance(got, (list, tuple)):
        raise Wrong(f"return {what}, got a {type(got).__name__}")
    bad = [x for x in got if not _is_int(x)]
    if bad:
        raise Wrong(f"return {what}; found the item {bad[0]!r} ({type(bad[0]).__name__})")
    return [int(x) for x in got]


def _pairs(got, args) -> list[tuple[int, int]]:
    if isinstance(got, dict):
        raise Wrong("return the merges as a list of pairs in the order they were learned, not a dict")
    if not isinstance(got, (list, tuple)):
        raise Wrong(f"return a list of pairs (a, b), got a {type(got).__name__}")
    out = []
    for p in got:
        if not (isinstance(p, (list, tuple)) and len(p) == 2 and all(map(_is_int, p))):
            raise Wrong(f"each merge must be a pair (a, b) of two int ids; found {p!r}")
        out.append((int(p[0]), int(p[1])))
    return out


def _counts(got, args) -> dict[tuple[int, int], int]:
    if not isinstance(got, dict):
        raise Wrong(f"return a dict {{(a, b): count}}, got a {type(got).__name__}")
    out = {}
    for k, v in got.items():
        if not (isinstance(k, tuple) and len(k) == 2):
            raise Wrong(f"keys must be tuples (a, b) of two ids, found the key {k!r}")
        if not _is_int(v):
            raise Wrong(f"counts must be ints, found {k!r}: {v!r}")
        if v != 0:  # a zero entry (e.g. from a defaultdict lookup) is harmless
            out[k] = int(v)
    return out


def _str_list(got, args) -> list[str]:
    if not isinstance(got, (list, tuple)) or not all(isinstance(x, str) for x in got):
        raise Wrong(f"return a list of str pieces, got {type(got).__name__} {got!r:.60}")
    return list(got)


# ---------------------------------------------------------------------------------------------------
# 01.1 get_pair_counts


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


def count_sorted_keys(ids):
    """Right counts, keys sorted instead of in order of first occurrence."""
    out: dict = {}
    for p in pairwise(ids):
        out[p] = out.get(p, 0) + 1
    return dict(sorted(out.items()))


PAIR_COUNT_MISTAKES = [
    (count_presence_only,
     "every count is 1: count how many times each pair occurs, not only whether it occurs"),
    (count_without_overlaps,
     "counting must include overlapping pairs: [97, 97, 97] holds (97, 97) twice (only merging skips overlaps)"),
    (count_skipping_last,
     "the last pair (ids[-2], ids[-1]) is missing: there are len(ids) - 1 pairs"),
    (count_unordered,
     "pairs are ordered: (1, 2) and (2, 1) are different pairs, don't sort them"),
    (count_wrapping_around,
     "you counted a pair that wraps from the last id to the first; the text has no such pair"),
    (count_sorted_keys,
     "the keys must come in order of first occurrence (fill the dict left to right; do not sort or rebuild it): "
     "01.3 breaks ties by that order"),
]


def _same_in_order(got: dict, want: dict, args: tuple) -> bool:
    """Equal counts, and the keys in the same order (first occurrence)."""
    return got == want and list(got) == list(want)


def _cases_pair_counts() -> list:
    from minillm.tokenizer import get_pair_counts

    cases = [  # hand-worked
        (([1, 2, 3, 1, 2],), {(1, 2): 2, (2, 3): 1, (3, 1): 1}),
        (([97, 97, 97],), {(97, 97): 2}),
        (([1, 2, 1, 2, 1],), {(1, 2): 2, (2, 1): 2}),
        (([7],), {}),
        (([],), {}),
        (([3, 1, 2],), {(3, 1): 1, (1, 2): 1}),  # keys in order of first occurrence, not sorted
        (([5, 9, 2, 5, 9, 1],), {(5, 9): 2, (9, 2): 1, (2, 5): 1, (9, 1): 1}),
    ]
    rng = random.Random()
    for k in range(25):  # few distinct ids (many repeats and overlaps) up to ids far beyond one byte
        hi = (3, 5, 300, 100_000)[k % 4]
        ids = [rng.randrange(hi) for _ in range(rng.randrange(2, 40))]
        cases.append(((ids,), get_pair_counts(list(ids))))
    return cases


# ---------------------------------------------------------------------------------------------------
# 01.2 merge_pair


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


def merge_same_list_if_absent(ids, pair, new_id):
    """Hands back the caller's list itself when the pair does not occur."""
    return ids if tuple(pair) not in set(pairwise(ids)) else merge_pair(ids, pair, new_id)


def merge_in_place(ids, pair, new_id):
    """Rewrites the caller's list and returns it."""
    ids[:] = merge_pair(ids, pair, new_id)
    return ids


NEW_LIST = ("return a NEW list and leave the list you were given unchanged (build the output in a list of its own, "
            "also when the pair does not occur)")

MERGE_MISTAKES = [
    (merge_overlapping,
     "overlapping merge: after replacing a pair, skip BOTH of its ids (i += 2), so [97, 97, 97] becomes [256, 97]"),
    (merge_dropping_last,
     "the last id is dropped when it is not part of a merge: keep going until i == len(ids) and copy the "
     "final id too"),
    (merge_right_to_left,
     "scan from left to right: [97, 97, 97] -> [256, 97], not [97, 256]"),
    (merge_same_list_if_absent, NEW_LIST),
    (merge_in_place, NEW_LIST),
]


def _cases_merge_pair() -> list:
    from minillm.tokenizer import merge_pair

    cases = [  # hand-worked
        (([1, 2, 3, 1, 2], (1, 2), 99), [99, 3, 99]),
        (([97, 97, 97], (97, 97), 256), [256, 97]),
        (([97, 97, 97, 97], (97, 97), 256), [256, 256]),
        (([3, 1, 2], (1, 2), 9), [3, 9]),
        (([1, 2, 3], (2, 1), 9), [1, 2, 3]),
        (([], (1, 2), 9), []),
    ]
    rng = random.Random()
    for k in range(25):  # small and wide id ranges; the pair drawn from ids (so it occurs) or at random
        hi = (4, 4, 300, 100_000)[k % 4]
        ids = [rng.randrange(hi) for _ in range(rng.randrange(1, 40))]
        at = rng.randrange(len(ids) - 1) if len(ids) > 1 and hi > 4 else None
        pair = (ids[at], ids[at + 1]) if at is not None else (rng.randrange(hi), rng.randrange(hi))
        new_id = rng.randrange(256, 200_000)
        cases.append(((ids, pair, new_id), merge_pair(list(ids), pair, new_id)))
    return cases


# ---------------------------------------------------------------------------------------------------
# 01.3 train_bpe (plain byte-level BPE, no pre-tokenization)


def train(text, num_merges, *, first_id=256, chars=False, overlapping=False, tie: Callable | None = None,
          recount=True, min_count=1):
    """BPE training with one deviation: ids from `first_id`, characters instead of bytes, overlapping
    merges, another tie rule (`tie(counts) -> pair`), counting the pairs only once (recount=False), or
    stopping when the top count is below `min_count`."""
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
        if not counts or max(counts.values()) < min_count:
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


def _ref_merges(text: str, num_merges: int) -> list[tuple[int, int]]:
    from minillm.tokenizer import BPETokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "ran out of pairs": the shorter list is the answer then
        return [tuple(p) for p in BPETokenizer().train(text, 256 + num_merges).merges]


def _random_text(rng: random.Random, alphabet: str, lo: int, hi: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(lo, hi)))


def _corpus_slice(rng: random.Random, name: str, n: int) -> str:
    from minillm.data import load_corpus

    text = load_corpus(name, max_chars=60_000)
    start = rng.randrange(len(text) - n)
    return text[start:start + n]


BPE_TRAIN_MISTAKES = [
    (lambda t, n: train(t, n, first_id=257),
     "merge i must create the id 256 + i: the first new id is 256"),
    (lambda t, n: train(t, n, first_id=255),
     "merge i must create the id 256 + i: the first new id is 256 (255 is still a byte)"),
    (lambda t, n: train(t, n, chars=True),
     "work on UTF-8 bytes, list(text.encode('utf-8')), not on characters (ord(c))"),
    (lambda t, n: train(t, n, overlapping=True),
     "overlapping merge: after replacing a pair skip both of its ids, so [97, 97, 97] becomes [256, 97]"),
    (lambda t, n: train(t, n, recount=False),
     "recount the pairs after every merge: a merge creates new pairs and removes old ones"),
    (lambda t, n: train(t, n, tie=lambda c: max(c, key=lambda p: (c[p], p))),
     "ties: among pairs with the top count take the one that occurs FIRST in the text (max(counts, "
     "key=counts.get) on a dict filled left to right does that), not the largest pair"),
    (lambda t, n: train(t, n, tie=lambda c: min(c, key=lambda p: (-c[p], p))),
     "ties: among pairs with the top count take the one that occurs FIRST in the text, not the smallest pair"),
    (lambda t, n: train(t, n, tie=lambda c: max(reversed(c), key=c.get)),
     "ties: among pairs with the top count take the one that occurs FIRST in the text, not the last one"),
    (lambda t, n: train(t, n, min_count=2),
     "stop early only when NO pair is left: a pair that occurs once is still merged (train_bpe('abcd', 2) == "
     "[(97, 98), (256, 99)])"),
]


def _cases_train_bpe() -> list:
    cases = [  # hand-worked: see the notebook
        (("aaabdaaabac", 3), [(97, 97), (256, 97), (257, 98)]),
        (("ab ab ab", 2), [(97, 98), (256, 32)]),
        (("ééé", 1), [(195, 169)]),  # é is the two bytes c3 a9 in UTF-8
        (("abcd", 2), [(97, 98), (256, 99)]),  # every count is 1: still merged, the first pair first
        (("ab", 3), [(97, 98)]),  # stops early: after one merge no pair is left
    ]
    rng = random.Random()
    for _ in range(6):
        text = _random_text(rng, "aab c", 40, 200)
        n = rng.randrange(3, 12)
        cases.append(((text, n), _ref_merges(text, n)))
    for name, n_chars, n in (("shakespeare", 1500, 25), ("tang300", 400, 10)):
        text = _corpus_slice(rng, name, n_chars)
        cases.append(((text, n), _ref_merges(text, n)))
    return cases


# ---------------------------------------------------------------------------------------------------
# 01.4 bpe_encode


BPE_ENCODE_MISTAKES = [
    (lambda t, m: encode(t, m, by_frequency=True),
     "apply merges by rank (merge 0 first, in the order of `merges`), not by how often a pair occurs in "
     "this text"),
    (lambda t, m: encode(t, m, reverse=True),
     "apply merges from the first learned to the last, not in reverse"),
    (lambda t, m: encode(t, m, first_id=257),
     "merge i makes the id 256 + i (the first new id is 256)"),
    (lambda t, m: encode(t, m, chars=True),
     "start from UTF-8 bytes, list(text.encode('utf-8')), not from ord(c) of each character"),
    (lambda t, m: encode(t, m, overlapping=True),
     "overlapping merge: after replacing a pair skip both of its ids"),
]


def _cases_bpe_encode() -> list:
    from minillm.tokenizer import BPETokenizer

    hand = [(97, 97), (256, 97), (257, 98)]
    cases = [  # hand-worked
        (("aaabdaaabac", hand), [258, 100, 258, 97, 99]),
        (("ababc", [(98, 99), (97, 98)]), [257, 97, 256]),  # rank order: "bc" before "ab"
        (("aaa", [(97, 97)]), [256, 97]),
        (("héllo", []), [104, 195, 169, 108, 108, 111]),
        (("", hand), []),
    ]
    rng = random.Random()
    trainers = [(_random_text(rng, "aab c", 150, 300), rng.randrange(5, 15)) for _ in range(3)]
    trainers += [(_corpus_slice(rng, "shakespeare", 2000), 40), (_corpus_slice(rng, "tang300", 500), 15)]
    for k, (train_text, n) in enumerate(trainers):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tok = BPETokenizer().train(train_text, 256 + n)
        merges = [tuple(p) for p in tok.merges]
        for _ in range(2):
            text = _random_text(rng, "aab c", 10, 80) if k < 3 else train_text[rng.randrange(len(train_text) // 2):]
            cases.append(((text, merges), tok.encode(text)))
    return cases


# ---------------------------------------------------------------------------------------------------
# 01.5 WordPiece


def wordpiece(word, vocab, unk="[UNK]", *, shortest=False, prefix="##", first_prefix=False, unk_per_piece=False,
              max_len=None):
    """WordPiece with one deviation: shortest match, no (or another) prefix, a prefix on the first piece
    too, [UNK] for the unmatched character only instead of the whole word, or pieces of at most `max_len`
    characters."""
    pieces, start = [], 0
    while start < len(word):
        last = len(word) if max_len is None else min(len(word), start + max_len)
        ends = range(start + 1, last + 1) if shortest else range(last, start, -1)
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


def viterbi(text, scores, *, combine=operator.add, empty=0.0, better=operator.gt, weight=lambda s: s,
            longest=None):
    """DP over end positions (best[i] covers text[:i]) with one deviation: another way to `combine`
    scores (`empty` is its neutral value), another comparison (`better`), each score `weight`ed, or pieces
    of at most `longest` characters."""
    n, longest = len(text), longest or max(map(len, scores))
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


WORDPIECE_MISTAKES = [
    (lambda w, v, u="[UNK]": wordpiece(w, v, u, shortest=True),
     "greedy SHORTEST match: take the LONGEST vocab entry that matches at each position (try the whole rest "
     "of the word first, then shrink it)"),
    (lambda w, v, u="[UNK]": wordpiece(w, v, u, prefix=""),
     "forgot the '##' prefix: a piece that does not start the word is looked up as '##' + piece"),
    (lambda w, v, u="[UNK]": wordpiece(w, v, u, first_prefix=True),
     "the first piece of a word has no '##'; only the pieces after it do"),
    (lambda w, v, u="[UNK]": wordpiece(w, v, u, unk_per_piece=True),
     "when some part of the word has no match, the WHOLE word becomes [UNK] (BERT gives up on the word)"),
    (lambda w, v, u="[UNK]": wordpiece(w, v, u, max_len=8),
     "a vocabulary entry can be longer than 8 characters: at each position try the whole rest of the word first, "
     "however long, then shrink it"),
]


def _cases_wordpiece() -> list:
    from minillm.tokenizer import WordPiece

    v1 = {"[UNK]", "un", "##aff", "##able"}
    v2 = {"[UNK]", "u", "un", "una", "##f", "##ff", "##a", "##able", "##b", "##l", "##e"}
    v3 = {"[UNK]", "a", "b", "##b"}
    v4 = {"[UNK]", "abcdefghij", "a", *("##" + c for c in "bcdefghij")}  # an entry of 10 characters
    v5 = {"[UNK]", "un", "u", "##n", "##believ", "##able", "##believable"}  # a continuation of 12 characters
    cases = [  # hand-worked
        (("unaffable", v1), ["un", "##aff", "##able"]),
        (("unaffable", v2), ["una", "##ff", "##able"]),
        (("abb", v3), ["a", "##b", "##b"]),
        (("abc", v3), ["[UNK]"]),
        (("bab", v3), ["[UNK]"]),  # "##a" is missing, so the whole word is unknown
        (("abcdefghij", v4), ["abcdefghij"]),  # the longest entry, however long
        (("unbelievable", v5), ["un", "##believable"]),
    ]
    cases += [(("abc", v3, "<unk>"), ["<unk>"]), (("abb", v3, "<unk>"), ["a", "##b", "##b"])]  # unk passed
    rng = random.Random()
    for k in range(4):
        unk = "[UNK]" if k < 2 else "<unk>"  # the optional argument: default, then passed
        vocab = {unk}
        for _ in range(rng.randrange(6, 20)):  # pieces of 1 to 3 characters, some of 9 to 13
            piece = _random_text(rng, "abcd", 1, 4) if rng.random() < 0.8 else _random_text(rng, "abcd", 9, 14)
            vocab.add(piece if rng.random() < 0.5 else "##" + piece)
        ref = WordPiece({t: i for i, t in enumerate(sorted(vocab))}, unk_token=unk)
        entries = sorted(vocab - {unk})
        for j in range(10):  # random words, and words glued from entries (so long entries match)
            word = _random_text(rng, "abcd", 1, 9) if j % 2 else \
                "".join(rng.choice(entries).removeprefix("##") for _ in range(rng.randrange(1, 4)))
            args = (word, frozenset(vocab)) if k < 2 else (word, frozenset(vocab), unk)
            cases.append((args, ref.tokenize_word(word)))
    return cases


# ---------------------------------------------------------------------------------------------------
# 01.6 Viterbi segmentation with a unigram model


def _score(pieces: list[str], scores: dict[str, float]) -> float:
    return sum(scores[p] for p in pieces)


VITERBI_MISTAKES = [
    (lambda t, s: viterbi(t, s, better=operator.lt),
     "you picked the LOWEST total; log-probabilities are <= 0 and the best segmentation has the HIGHEST sum"),
    (greedy_longest,
     "this is greedy longest-match (WordPiece style); Viterbi compares every segmentation by its total "
     "log-probability"),
    (lambda t, s: viterbi(t, s, combine=operator.mul, empty=1.0),
     "you multiplied log-probabilities; add log-probs (which is multiplying probabilities)"),
    (lambda t, s: viterbi(t, s, weight=math.exp),
     "you added probabilities (exp of the scores); add the log-probs instead"),
    (lambda t, s: viterbi(t, s, weight=lambda _: -1.0),
     "you minimised the number of pieces and ignored the scores; maximise the sum of log-probs"),
    (lambda t, s: viterbi(t, s, longest=4),
     "a piece can be longer than 4 characters: at each end position try every vocabulary piece that ends there, "
     "up to the longest piece in the vocabulary"),
]


def _cases_viterbi() -> list:
    from minillm.tokenizer import Unigram

    s1 = {"a": -1.0, "b": -1.0, "c": -1.0, "ab": -1.5, "bc": -0.5}
    s2 = {"h": -3.0, "u": -3.0, "g": -3.0, "s": -3.0, "hug": -2.0, "hu": -1.0, "gs": -1.5, "ugs": -2.5}
    cases = [  # hand-worked
        (("abc", s1), ["a", "bc"]),  # a|bc = -1.5 beats ab|c = -2.5 and a|b|c = -3
        (("hugs", s2), ["hu", "gs"]),  # hu|gs = -2.5 beats hug|s = -5 and h|ugs = -5.5
        (("cab", s1), ["c", "ab"]),
        (("abcdefgh", {"abcdefgh": -1.0, **dict.fromkeys("abcdefgh", -3.0)}), ["abcdefgh"]),  # a piece of 8
    ]
    rng = random.Random()
    for _ in range(6):
        scores = {c: rng.uniform(-8.0, -3.0) for c in "abc"}
        for _ in range(rng.randrange(3, 12)):  # pieces of 2 to 4 characters, some of 5 to 10
            piece = _random_text(rng, "abc", 2, 5) if rng.random() < 0.7 else _random_text(rng, "abc", 5, 11)
            scores[piece] = rng.uniform(-9.0, -0.5)
        ref = Unigram([("<unk>", -20.0), *scores.items()], unk_id=0)
        pieces = sorted(scores)
        for j in range(4):  # random texts, and texts glued from pieces (so long pieces occur)
            text = _random_text(rng, "abc", 3, 25) if j % 2 else \
                "".join(rng.choice(pieces) for _ in range(rng.randrange(2, 6)))
            cases.append(((text, scores), list(ref.viterbi(text))))

    return cases


def _segmentation(got, args) -> list[str]:
    text, scores = args
    got = _str_list(got, args)
    if "".join(got) != text:
        raise Wrong(f"the pieces must join back to the text; they join to {''.join(got)!r}")
    missing = [p for p in got if p not in scores]
    if missing:
        raise Wrong(f"every piece must be in the vocabulary; {missing[0]!r} is not")
    return got


def _same_score(got, want, args) -> bool:
    """Any segmentation with the best total log-prob (to 1e-9) passes."""
    _, scores = args
    return abs(_score(got, scores) - _score(want, scores)) <= 1e-9 * max(1.0, abs(_score(want, scores)))


EXERCISES = (
    Exercise("01.1", "Count adjacent pairs", 1, cases=_cases_pair_counts, name="get_pair_counts", normalize=_counts,
             same=_same_in_order, mistakes=PAIR_COUNT_MISTAKES),
    Exercise("01.2", "Merge a pair", 1, cases=_cases_merge_pair, name="merge_pair", normalize=_int_list,
             mistakes=MERGE_MISTAKES, fresh=NEW_LIST),
    Exercise("01.3", "Train BPE merges", 2, cases=_cases_train_bpe, name="train_bpe", normalize=_pairs,
             mistakes=BPE_TRAIN_MISTAKES),
    Exercise("01.4", "Encode with BPE merges", 2, cases=_cases_bpe_encode, name="bpe_encode", normalize=_int_list,
             mistakes=BPE_ENCODE_MISTAKES),
    Exercise("01.5", "WordPiece greedy longest match", 2, cases=_cases_wordpiece, name="wordpiece_tokenize",
             normalize=_str_list, mistakes=WORDPIECE_MISTAKES),
    Exercise("01.6", "Viterbi segmentation (Unigram LM)", 2, cases=_cases_viterbi, name="viterbi_segment",
             normalize=_segmentation, same=_same_score, mistakes=VITERBI_MISTAKES),
)
