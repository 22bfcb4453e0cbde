"""minillm.tokenizer.wordpiece and .unigram: hand-worked cases and equality with `tokenizers`."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from minillm.data import load_corpus
from minillm.tokenizer import Unigram, WordPiece, bert_pre_tokenize
from minillm.tokenizer.hf import unigram_pieces_from_hf, unigram_to_hf, wordpiece_to_hf, wordpiece_vocab_from_hf

# odd characters: unknown to the vocabs, Unicode whitespace/punctuation BERT treats specially, emoji
ODD = ["你好", "世界", "😀", "é", "\xa0", "\u3000", "\x1c", "«", "»", "¿", "$", "—", "\u200b", "…", "ß", "\t", "\n"]


def random_mix(rng: random.Random, words: list[str]) -> str:
    parts = [rng.choice(words) if rng.random() < 0.6 else rng.choice(ODD) for _ in range(rng.randint(0, 12))]
    return "".join(p + rng.choice(["", " ", "  ", ",", ". "]) for p in parts)


# ---------------------------------------------------------------------------------------------------------
# WordPiece
# ---------------------------------------------------------------------------------------------------------

HAND_VOCAB = {"[UNK]": 0, "un": 1, "##aff": 2, "##able": 3, "a": 4, "ab": 5, "##bcd": 6, "aff": 7, "##a": 8, ",": 9}


def test_wordpiece_by_hand():
    wp = WordPiece(HAND_VOCAB)
    # "unaffable": longest prefix in vocab is "un" (no "una", "unaf", ...), then "##aff", then "##able"
    assert wp.tokenize_word("unaffable") == ["un", "##aff", "##able"]
    # greedy is not search: "abcd" takes "ab" first, then neither "##cd" nor "##c" exists -> the whole word
    # is [UNK], although "a" + "##bcd" would have covered it
    assert wp.tokenize_word("abcd") == ["[UNK]"]
    assert wp.tokenize_word("affa") == ["aff", "##a"]
    assert wp.tokenize_word("xyz") == ["[UNK]"]
    # pre-tokenization splits off punctuation and drops whitespace
    assert wp.tokenize("unaffable, aff") == ["un", "##aff", "##able", ",", "aff"]
    assert wp.encode("unaffable, aff") == [1, 2, 3, 9, 7]
    assert wp.decode([1, 2, 3, 9, 7]) == "unaffable , aff"
    assert WordPiece(HAND_VOCAB, max_input_chars_per_word=5).tokenize_word("unaffable") == ["[UNK]"]
    assert WordPiece(HAND_VOCAB, lowercase=True).tokenize("UNAFFABLE") == ["un", "##aff", "##able"]


def test_bert_pre_tokenize_by_hand():
    assert bert_pre_tokenize("Hello, world!  $5") == ["Hello", ",", "world", "!", "$", "5"]
    # U+001C is whitespace to Python's str.split() but not to BERT (Rust char::is_whitespace)
    assert bert_pre_tokenize("a\x1cb\xa0c«d»") == ["a\x1cb", "c", "«", "d", "»"]


@pytest.fixture(scope="module")
def hf_wordpiece() -> Tokenizer:
    hf = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=800, special_tokens=["[UNK]"], show_progress=False)
    hf.train_from_iterator(load_corpus("shakespeare", 100_000).splitlines(), trainer)
    return hf


def test_wordpiece_matches_tokenizers(hf_wordpiece):
    vocab = wordpiece_vocab_from_hf(hf_wordpiece)
    assert len(vocab) > 500 and any(t.startswith("##") for t in vocab)
    wp = WordPiece(vocab)
    fresh = wordpiece_to_hf(wp)  # the same vocab in a tokenizers WordPiece + BertPreTokenizer
    rng = random.Random(0)
    lines = [ln for ln in load_corpus("shakespeare").splitlines()[30_000:] if ln.strip()]
    words = load_corpus("shakespeare", 50_000).split()
    n_unk = 0
    for k in range(1500):
        s = rng.choice(lines) if k % 2 else random_mix(rng, words)
        ours = wp.tokenize(s)
        assert ours == hf_wordpiece.encode(s).tokens, repr(s)
        assert wp.encode(s) == fresh.encode(s).ids, repr(s)
        n_unk += ours.count("[UNK]")
    assert n_unk > 100  # the unknown-word path was exercised


# ---------------------------------------------------------------------------------------------------------
# Unigram
# ---------------------------------------------------------------------------------------------------------

# 5 pieces; "c" is missing, so a "c" is unknown and scores min_score - 10 = -4 - 10 = -14.
HAND_PIECES = [("<unk>", 0.0), ("a", -2.0), ("b", -2.5), ("ab", -3.0), ("bc", -4.0)]


def test_unigram_viterbi_by_hand():
    u = Unigram(HAND_PIECES, unk_id=0)
    assert u.unk_score == -14.0
    # "abc": a|b|c = -2 - 2.5 - 14 = -18.5;  ab|c = -3 - 14 = -17;  a|bc = -2 - 4 = -6  -> a|bc
    assert u.viterbi("abc") == ["a", "bc"]
    # "abab": ab|ab = -6;  a|b|ab = ab|a|b = -7.5;  a|b|a|b = -9  -> ab|ab
    assert u.viterbi("abab") == ["ab", "ab"]
    assert u.score(["ab", "ab"]) == -6.0
    # "ccab": two unknown c's are fused into one unknown token: -14 - 14 - 3
    assert u.viterbi("ccab") == ["cc", "ab"]
    # encode() first prepends "▁", which this vocab lacks too: "▁cc" is one fused unknown, then "ab"
    assert u.tokenize("ccab") == ["▁cc", "ab"] and u.encode("ccab") == [0, 3]


def test_unigram_tie_goes_to_longest_last_piece_like_tokenizers():
    pieces = [("<unk>", 0.0), ("a", -1.0), ("b", -1.0), ("ab", -2.0)]  # a|b and ab both score -2
    u = Unigram(pieces)
    assert u.viterbi("ab") == ["ab"]
    assert Tokenizer(models.Unigram(pieces, 0, False)).encode("ab").tokens == ["ab"]


def test_unigram_metaspace_by_hand():
    assert Unigram.pre_tokenize(" Hello  world ") == ["▁Hello", "▁", "▁world", "▁"]
    assert Unigram.pre_tokenize("ab") == ["▁ab"] and Unigram.pre_tokenize("") == []
    for s in [" Hello  world ", "ab", "a▁b", "  x", "春 眠"]:
        assert Unigram.pre_tokenize(s) == [p for p, _ in pre_tokenizers.Metaspace().pre_tokenize_str(s)]
    u = Unigram(HAND_PIECES + [("▁", -1.0), ("▁ab", -2.0)])
    # "ab ca": chunks "▁ab" (one piece, -2 beats ▁|ab = -4) and "▁ca" (▁ | c unknown | a)
    assert u.tokenize("ab ca") == ["▁ab", "▁", "c", "a"]
    assert u.encode("ab ca") == [6, 5, 0, 1]
    assert u.decode([6, 5, 1]) == "ab a"


@pytest.fixture(scope="module")
def hf_unigram() -> Tokenizer:
    hf = Tokenizer(models.Unigram())
    hf.pre_tokenizer = pre_tokenizers.Metaspace()
    corpus = load_corpus("shakespeare", 40_000).splitlines() + load_corpus("tang300").splitlines()
    trainer = trainers.UnigramTrainer(vocab_size=5000, unk_token="<unk>", special_tokens=["<unk>"],
                                      show_progress=False)
    hf.train_from_iterator(corpus, trainer)
    return hf


def test_unigram_matches_tokenizers(hf_unigram):
    pieces, unk_id = unigram_pieces_from_hf(hf_unigram)
    assert len(pieces) == 5000 and pieces[unk_id][0] == "<unk>"
    assert sum(sum("\u4e00" <= c <= "\u9fff" for c in p) >= 2 for p, _ in pieces) > 100  # Chinese words
    u = Unigram(pieces, unk_id)
    fresh = unigram_to_hf(u)  # same (piece, score) list in a tokenizers Unigram + Metaspace
    rng = random.Random(0)
    english = [ln for ln in load_corpus("shakespeare").splitlines()[30_000:] if ln.strip()]
    chinese = [ln for ln in load_corpus("tang300").splitlines() + load_corpus("song100").splitlines() if ln.strip()]
    words = load_corpus("shakespeare", 30_000).split() + list(load_corpus("tang300", 3000))
    n_unk = 0
    for k in range(1500):
        s = [rng.choice(english), rng.choice(chinese), random_mix(rng, words)][k % 3]
        ours = u.tokenize(s)
        assert ours == hf_unigram.encode(s).tokens, repr(s)  # the trained tokenizer itself
        enc = fresh.encode(s)
        assert ours == enc.tokens and u.encode(s) == enc.ids, repr(s)
        n_unk += u.encode(s).count(unk_id)
    assert n_unk > 50  # unknown characters were exercised (song100 has characters tang300 lacks)


def test_unigram_decode_roundtrip(hf_unigram):
    u = Unigram(*unigram_pieces_from_hf(hf_unigram))
    for s in ["To be, or not to be", "春眠不觉晓，处处闻啼鸟。", "a  b   c"]:
        assert u.decode(u.encode(s)) == s


# ---------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------


def test_bad_input_errors():
    with pytest.raises(ValueError, match="unk_token"):
        WordPiece({"a": 0})
    with pytest.raises(TypeError, match="non-empty dict"):
        WordPiece({})
    with pytest.raises(TypeError, match="str"):
        WordPiece(HAND_VOCAB).tokenize(None)
    with pytest.raises(ValueError, match="not in the vocab"):
        WordPiece(HAND_VOCAB).decode([99])
    with pytest.raises(TypeError, match="non-empty list"):
        Unigram([])
    with pytest.raises(ValueError, match="unk_id"):
        Unigram(HAND_PIECES, unk_id=7)
    with pytest.raises(ValueError, match="piece"):
        Unigram([("a", "high")])
    with pytest.raises(TypeError, match="str"):
        Unigram(HAND_PIECES).tokenize(3)
    with pytest.raises(ValueError, match="not a piece id"):
        Unigram(HAND_PIECES).decode([5])
