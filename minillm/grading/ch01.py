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
then fresh random inputs compared with the minillm reference. Results must match exactly, except 01.6:
any segmentation whose total log-probability is within 1e-9 of the best one passes (ties are allowed).
The `*_MISTAKES` lists pair simulated wrong solutions (in `ch01_mistakes.py`) with the hint naming each;
when the learner's answers match one of them on every case tried, that hint is shown.
"""

from __future__ import annotations

import math
import numbers
import operator
import random
import warnings
from collections.abc import Callable

from minillm.grading import ch01_mistakes as wrong
from minillm.grading.core import Wrong, call, register, run_cases

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


PAIR_COUNT_MISTAKES = [
    (wrong.count_presence_only,
     "every count is 1: count how many times each pair occurs, not only whether it occurs"),
    (wrong.count_without_overlaps,
     "counting must include overlapping pairs: [97, 97, 97] holds (97, 97) twice (only merging skips overlaps)"),
    (wrong.count_skipping_last,
     "the last pair (ids[-2], ids[-1]) is missing: there are len(ids) - 1 pairs"),
    (wrong.count_unordered,
     "pairs are ordered: (1, 2) and (2, 1) are different pairs, don't sort them"),
    (wrong.count_wrapping_around,
     "you counted a pair that wraps from the last id to the first; the text has no such pair"),
]


@register("01.1", title="Count adjacent pairs", points=1)
def check_pair_counts(fn: Callable) -> tuple[bool, str]:
    from minillm.tokenizer import get_pair_counts

    cases = [  # hand-worked
        (([1, 2, 3, 1, 2],), {(1, 2): 2, (2, 3): 1, (3, 1): 1}),
        (([97, 97, 97],), {(97, 97): 2}),
        (([1, 2, 1, 2, 1],), {(1, 2): 2, (2, 1): 2}),
        (([7],), {}),
        (([],), {}),
    ]
    rng = random.Random()
    for _ in range(25):
        ids = [rng.randrange(5) for _ in range(rng.randrange(2, 40))]
        cases.append(((ids,), get_pair_counts(list(ids))))
    return run_cases(fn, cases, name="get_pair_counts", normalize=_counts, mistakes=PAIR_COUNT_MISTAKES)


# ---------------------------------------------------------------------------------------------------
# 01.2 merge_pair


MERGE_MISTAKES = [
    (wrong.merge_overlapping,
     "overlapping merge: after replacing a pair, skip BOTH of its ids (i += 2), so [97, 97, 97] becomes [256, 97]"),
    (wrong.merge_dropping_last,
     "the last id is dropped when it is not part of a merge: keep going until i == len(ids) and copy the "
     "final id too"),
    (wrong.merge_right_to_left,
     "scan from left to right: [97, 97, 97] -> [256, 97], not [97, 256]"),
]


@register("01.2", title="Merge a pair", points=1)
def check_merge_pair(fn: Callable) -> tuple[bool, str]:
    from minillm.tokenizer import merge_pair

    ids = [1, 2, 3, 1, 2]  # the input list must be left as it is
    call(fn, ids, (1, 2), 99, name="merge_pair")
    if ids != [1, 2, 3, 1, 2]:
        return False, f"merge_pair changed the list it was given (now {ids}); build and return a new list"
    cases = [  # hand-worked
        (([1, 2, 3, 1, 2], (1, 2), 99), [99, 3, 99]),
        (([97, 97, 97], (97, 97), 256), [256, 97]),
        (([97, 97, 97, 97], (97, 97), 256), [256, 256]),
        (([3, 1, 2], (1, 2), 9), [3, 9]),
        (([1, 2, 3], (2, 1), 9), [1, 2, 3]),
        (([], (1, 2), 9), []),
    ]
    rng = random.Random()
    for _ in range(25):
        ids = [rng.randrange(4) for _ in range(rng.randrange(1, 40))]
        pair = (rng.randrange(4), rng.randrange(4))
        new_id = rng.randrange(256, 1000)
        cases.append(((ids, pair, new_id), merge_pair(list(ids), pair, new_id)))
    return run_cases(fn, cases, name="merge_pair", normalize=_int_list, mistakes=MERGE_MISTAKES)


# ---------------------------------------------------------------------------------------------------
# 01.3 train_bpe (plain byte-level BPE, no pre-tokenization)


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
    (lambda t, n: wrong.train(t, n, first_id=257),
     "merge i must create the id 256 + i: the first new id is 256"),
    (lambda t, n: wrong.train(t, n, first_id=255),
     "merge i must create the id 256 + i: the first new id is 256 (255 is still a byte)"),
    (lambda t, n: wrong.train(t, n, chars=True),
     "work on UTF-8 bytes, list(text.encode('utf-8')), not on characters (ord(c))"),
    (lambda t, n: wrong.train(t, n, overlapping=True),
     "overlapping merge: after replacing a pair skip both of its ids, so [97, 97, 97] becomes [256, 97]"),
    (lambda t, n: wrong.train(t, n, recount=False),
     "recount the pairs after every merge: a merge creates new pairs and removes old ones"),
    (lambda t, n: wrong.train(t, n, tie=lambda c: max(c, key=lambda p: (c[p], p))),
     "ties: among pairs with the top count take the one that occurs FIRST in the text (max(counts, "
     "key=counts.get) on a dict filled left to right does that), not the largest pair"),
    (lambda t, n: wrong.train(t, n, tie=lambda c: min(c, key=lambda p: (-c[p], p))),
     "ties: among pairs with the top count take the one that occurs FIRST in the text, not the smallest pair"),
    (lambda t, n: wrong.train(t, n, tie=lambda c: max(reversed(c), key=c.get)),
     "ties: among pairs with the top count take the one that occurs FIRST in the text, not the last one"),
]


@register("01.3", title="Train BPE merges", points=2)
def check_train_bpe(fn: Callable) -> tuple[bool, str]:
    cases = [  # hand-worked: see the notebook
        (("aaabdaaabac", 3), [(97, 97), (256, 97), (257, 98)]),
        (("ab ab ab", 2), [(97, 98), (256, 32)]),
        (("ééé", 1), [(195, 169)]),  # é is the two bytes c3 a9 in UTF-8
    ]
    rng = random.Random()
    for _ in range(6):
        text = _random_text(rng, "aab c", 40, 200)
        n = rng.randrange(3, 12)
        cases.append(((text, n), _ref_merges(text, n)))
    for name, n_chars, n in (("shakespeare", 1500, 25), ("tang300", 400, 10)):
        text = _corpus_slice(rng, name, n_chars)
        cases.append(((text, n), _ref_merges(text, n)))
    return run_cases(fn, cases, name="train_bpe", normalize=_pairs, mistakes=BPE_TRAIN_MISTAKES)


# ---------------------------------------------------------------------------------------------------
# 01.4 bpe_encode


BPE_ENCODE_MISTAKES = [
    (lambda t, m: wrong.encode(t, m, by_frequency=True),
     "apply merges by rank (merge 0 first, in the order of `merges`), not by how often a pair occurs in "
     "this text"),
    (lambda t, m: wrong.encode(t, m, reverse=True),
     "apply merges from the first learned to the last, not in reverse"),
    (lambda t, m: wrong.encode(t, m, first_id=257),
     "merge i makes the id 256 + i (the first new id is 256)"),
    (lambda t, m: wrong.encode(t, m, chars=True),
     "start from UTF-8 bytes, list(text.encode('utf-8')), not from ord(c) of each character"),
    (lambda t, m: wrong.encode(t, m, overlapping=True),
     "overlapping merge: after replacing a pair skip both of its ids"),
]


@register("01.4", title="Encode with BPE merges", points=2)
def check_bpe_encode(fn: Callable) -> tuple[bool, str]:
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
    return run_cases(fn, cases, name="bpe_encode", normalize=_int_list, mistakes=BPE_ENCODE_MISTAKES)


# ---------------------------------------------------------------------------------------------------
# 01.5 WordPiece


WORDPIECE_MISTAKES = [
    (lambda w, v, u="[UNK]": wrong.wordpiece(w, v, u, shortest=True),
     "greedy SHORTEST match: take the LONGEST vocab entry that matches at each position (try the whole rest "
     "of the word first, then shrink it)"),
    (lambda w, v, u="[UNK]": wrong.wordpiece(w, v, u, prefix=""),
     "forgot the '##' prefix: a piece that does not start the word is looked up as '##' + piece"),
    (lambda w, v, u="[UNK]": wrong.wordpiece(w, v, u, first_prefix=True),
     "the first piece of a word has no '##'; only the pieces after it do"),
    (lambda w, v, u="[UNK]": wrong.wordpiece(w, v, u, unk_per_piece=True),
     "when some part of the word has no match, the WHOLE word becomes [UNK] (BERT gives up on the word)"),
]


@register("01.5", title="WordPiece greedy longest match", points=2)
def check_wordpiece(fn: Callable) -> tuple[bool, str]:
    from minillm.tokenizer import WordPiece

    v1 = {"[UNK]", "un", "##aff", "##able"}
    v2 = {"[UNK]", "u", "un", "una", "##f", "##ff", "##a", "##able", "##b", "##l", "##e"}
    v3 = {"[UNK]", "a", "b", "##b"}
    cases = [  # hand-worked
        (("unaffable", v1), ["un", "##aff", "##able"]),
        (("unaffable", v2), ["una", "##ff", "##able"]),
        (("abb", v3), ["a", "##b", "##b"]),
        (("abc", v3), ["[UNK]"]),
        (("bab", v3), ["[UNK]"]),  # "##a" is missing, so the whole word is unknown
    ]
    rng = random.Random()
    for _ in range(4):
        vocab = {"[UNK]"}
        for _ in range(rng.randrange(6, 20)):
            piece = _random_text(rng, "abcd", 1, 4)
            vocab.add(piece if rng.random() < 0.5 else "##" + piece)
        ref = WordPiece({t: i for i, t in enumerate(sorted(vocab))})
        for _ in range(10):
            word = _random_text(rng, "abcd", 1, 9)
            cases.append(((word, frozenset(vocab)), ref.tokenize_word(word)))
    return run_cases(fn, cases, name="wordpiece_tokenize", normalize=_str_list, mistakes=WORDPIECE_MISTAKES)


# ---------------------------------------------------------------------------------------------------
# 01.6 Viterbi segmentation with a unigram model


def _score(pieces: list[str], scores: dict[str, float]) -> float:
    return sum(scores[p] for p in pieces)


VITERBI_MISTAKES = [
    (lambda t, s: wrong.viterbi(t, s, better=operator.lt),
     "you picked the LOWEST total; log-probabilities are <= 0 and the best segmentation has the HIGHEST sum"),
    (wrong.greedy_longest,
     "this is greedy longest-match (WordPiece style); Viterbi compares every segmentation by its total "
     "log-probability"),
    (lambda t, s: wrong.viterbi(t, s, combine=operator.mul, empty=1.0),
     "you multiplied log-probabilities; add log-probs (which is multiplying probabilities)"),
    (lambda t, s: wrong.viterbi(t, s, weight=math.exp),
     "you added probabilities (exp of the scores); add the log-probs instead"),
    (lambda t, s: wrong.viterbi(t, s, weight=lambda _: -1.0),
     "you minimised the number of pieces and ignored the scores; maximise the sum of log-probs"),
]


@register("01.6", title="Viterbi segmentation (Unigram LM)", points=2)
def check_viterbi(fn: Callable) -> tuple[bool, str]:
    from minillm.tokenizer import Unigram

    s1 = {"a": -1.0, "b": -1.0, "c": -1.0, "ab": -1.5, "bc": -0.5}
    s2 = {"h": -3.0, "u": -3.0, "g": -3.0, "s": -3.0, "hug": -2.0, "hu": -1.0, "gs": -1.5, "ugs": -2.5}
    cases = [  # hand-worked
        (("abc", s1), ["a", "bc"]),  # a|bc = -1.5 beats ab|c = -2.5 and a|b|c = -3
        (("hugs", s2), ["hu", "gs"]),  # hu|gs = -2.5 beats hug|s = -5 and h|ugs = -5.5
        (("cab", s1), ["c", "ab"]),
    ]
    rng = random.Random()
    for _ in range(6):
        scores = {c: rng.uniform(-8.0, -3.0) for c in "abc"}
        for _ in range(rng.randrange(3, 12)):
            scores[_random_text(rng, "abc", 2, 5)] = rng.uniform(-9.0, -0.5)
        ref = Unigram([("<unk>", -20.0), *scores.items()], unk_id=0)
        for _ in range(4):
            text = _random_text(rng, "abc", 3, 25)
            cases.append(((text, scores), list(ref.viterbi(text))))

    def normalize(got, args):
        text, scores = args
        got = _str_list(got, args)
        if "".join(got) != text:
            raise Wrong(f"the pieces must join back to the text; they join to {''.join(got)!r}")
        missing = [p for p in got if p not in scores]
        if missing:
            raise Wrong(f"every piece must be in the vocabulary; {missing[0]!r} is not")
        return got

    def same(got, want, args):  # any segmentation with the best total log-prob (to 1e-9) passes
        _, scores = args
        return abs(_score(got, scores) - _score(want, scores)) <= 1e-9 * max(1.0, abs(_score(want, scores)))

    return run_cases(fn, cases, name="viterbi_segment", normalize=normalize, same=same, mistakes=VITERBI_MISTAKES)

