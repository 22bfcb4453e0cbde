"""minillm.tokenizer.bpe: hand-worked BPE, a naive reference loop, round trips, and `tokenizers` equality."""

from __future__ import annotations

import copy
import json
import random

import pytest

from minillm.data import load_corpus
from minillm.tokenizer import GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN, BPETokenizer, get_pair_counts, merge_pair

# ---------------------------------------------------------------------------------------------------------
# Hand-worked cases
# ---------------------------------------------------------------------------------------------------------


def test_pair_counts_and_merge_by_hand():
    assert get_pair_counts([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    counts = {(1, 2): 5}
    out = get_pair_counts([1, 2], counts)
    assert out is counts and counts == {(1, 2): 6}  # updated in place
    assert get_pair_counts([7]) == {} and get_pair_counts([]) == {}
    # left to right, no overlaps: "aaa" -> "Z a", "aaaa" -> "Z Z"
    assert merge_pair([97, 97, 97], (97, 97), 256) == [256, 97]
    assert merge_pair([97, 97, 97, 97], (97, 97), 256) == [256, 256]
    assert merge_pair([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]
    assert merge_pair([1, 3, 2], (1, 2), 9) == [1, 3, 2]


def test_train_aaabdaaabac_by_hand():
    # The example of the Wikipedia BPE article, on bytes (a=97, b=98, c=99, d=100).
    # Step 1: a a a b d a a a b a c. Pair counts: (a,a)=4, (a,b)=2, (b,d)=1, (d,a)=1, (b,a)=1, (a,c)=1.
    #         (a,a) wins -> 256 = "aa". Left-to-right merging turns "aaa" into "aa a": 256 a b d 256 a b a c.
    # Step 2: counts (256,a)=2, (a,b)=2, (b,d)=1, (d,256)=1, (b,a)=1, (a,c)=1. A TIE at 2: the rule is
    #         "highest count, then the pair that occurs first in the (partly merged) text": (256,a) is at
    #         position 0, (a,b) at position 1, so 257 = "aaa". Text: 257 b d 257 b a c.
    # Step 3: (257,b)=2 is the unique maximum -> 258 = "aaab". Text: 258 d 258 a c = [258, 100, 258, 97, 99].
    tok = BPETokenizer().train("aaabdaaabac", 256 + 3)
    assert tok.merges == [(97, 97), (256, 97), (257, 98)]
    assert tok.vocab[256] == b"aa" and tok.vocab[257] == b"aaa" and tok.vocab[258] == b"aaab"
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert tok.decode([258, 100, 258, 97, 99]) == "aaabdaaabac"
    assert tok.vocab_size == 259
    # a new text uses the merges in the order they were learned: "aaaa" -> aa aa (no "aaa" is formed,
    # because merge 0 (a,a) applies everywhere first)
    assert tok.encode("aaaa") == [256, 256]
    assert tok.encode("aaaab") == [256, 256, 98]


def test_tie_break_is_first_occurrence_not_smallest_id():
    # "xyab": all three pairs occur once; the first one in the text is (x,y) although (a,b) has smaller ids.
    tok = BPETokenizer().train("xyab", 257)
    assert tok.merges == [(ord("x"), ord("y"))]


# ---------------------------------------------------------------------------------------------------------
# The fast trainer equals the plain loop (recount everything, merge everywhere) on real text
# ---------------------------------------------------------------------------------------------------------


def naive_train(text: str, pattern: str | None, n_merges: int) -> list[tuple[int, int]]:
    """The textbook loop: every step recount all pairs over all chunks (in text order), merge the top one.
    `max` over a dict returns the first key with the top count = the pair that occurs first in the text."""
    import regex

    chunks = regex.findall(pattern, text) if pattern else [text]
    ids = [list(c.encode("utf-8")) for c in chunks]
    merges = []
    for k in range(n_merges):
        counts: dict = {}
        for chunk in ids:
            get_pair_counts(chunk, counts)
        if not counts:
            break
        pair = max(counts, key=counts.get)
        merges.append(pair)
        ids = [merge_pair(chunk, pair, 256 + k) for chunk in ids]
    return merges


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4", None])
def test_fast_training_matches_naive_loop(pattern):
    n = 2000 if pattern is None else 6000
    text = load_corpus("shakespeare", n) + "\n" + load_corpus("tang300", n // 3)
    regex_str = {"gpt2": GPT2_SPLIT_PATTERN, "gpt4": GPT4_SPLIT_PATTERN, None: None}[pattern]
    tok = BPETokenizer(pattern).train(text, 256 + 150)
    assert tok.merges == naive_train(text, regex_str, 150)


def test_fast_training_matches_naive_loop_with_many_ties():
    # Chinese poems, many merges: from merge ~100 on, the top count (8, then 5, 4, 3) is shared by up to
    # ~80 pairs, so the first-occurrence tie-break decides most merges here
    text = load_corpus("tang300", 2500)
    tok = BPETokenizer("gpt2").train(text, 256 + 400)
    assert tok.merges == naive_train(text, GPT2_SPLIT_PATTERN, 400)


# ---------------------------------------------------------------------------------------------------------
# Round trips on random Unicode
# ---------------------------------------------------------------------------------------------------------

# code point ranges: ASCII, Latin-1, combining marks, CJK, Hangul, emoji (incl. skin tones), ZWJ, spaces
RANGES = [(0x20, 0x7E), (0x09, 0x0D), (0xA0, 0xFF), (0x300, 0x36F), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
          (0x1F300, 0x1F6FF), (0x1F3FB, 0x1F3FF), (0x200B, 0x200D), (0x3000, 0x303F), (0x0600, 0x06FF),
          (0x10000, 0x10FFFF)]


def random_text(rng: random.Random, max_len: int = 40) -> str:
    out = []
    for _ in range(rng.randint(0, max_len)):
        lo, hi = rng.choice(RANGES)
        cp = rng.randint(lo, hi)
        if 0xD800 <= cp <= 0xDFFF:  # lone surrogates cannot be UTF-8 encoded
            cp = 0x41
        out.append(chr(cp))
    return "".join(out)


@pytest.fixture(scope="module")
def trained() -> dict[str, BPETokenizer]:
    text = load_corpus("shakespeare", 60_000) + load_corpus("tang300")
    return {p: BPETokenizer(p).train(text, 256 + 500) for p in ("gpt2", "gpt4")}


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4", None])
def test_decode_encode_roundtrip_random_unicode(trained, pattern):
    tok = trained[pattern] if pattern else BPETokenizer().train(load_corpus("tang300", 1500), 300)
    rng = random.Random(1234)
    for _ in range(600):
        s = random_text(rng)
        ids = tok.encode(s)
        assert tok.decode(ids) == s
        assert all(0 <= i < tok.vocab_size for i in ids)
    corpus = load_corpus("shakespeare", 5000) + load_corpus("song100", 2000)
    assert tok.decode(tok.encode(corpus)) == corpus


def test_decode_of_partial_utf8_uses_replacement_char():
    tok = BPETokenizer()
    ids = tok.encode("中")  # 3 bytes, no merges -> 3 ids
    assert ids == list("中".encode())
    assert tok.decode(ids[:2]) == "\ufffd"


# ---------------------------------------------------------------------------------------------------------
# Equality with Hugging Face `tokenizers` (independent implementation of BPE encoding + GPT-2 regex)
# ---------------------------------------------------------------------------------------------------------


def test_to_hf_encodes_like_ours(trained):
    tok = BPETokenizer("gpt2", special_tokens={"<|endoftext|>": 1000})
    tok.train(load_corpus("shakespeare", 60_000) + load_corpus("tang300"), 256 + 500)
    hf = tok.to_hf()
    rng = random.Random(7)
    pieces = ["the", " king", "'s", "'ll", "'d", " ", "  ", "\n", "\n\n", "\t", " \n ", "!!", "...", "?!",
              "你好", "，", "明月", "春眠不觉晓",
              "😀", "👍🏽", "\U0001F468\u200d\U0001F469\u200d\U0001F467",
              "e\u0301", "123", "4567", "٣", "\u3000", "\xa0",
              "ABC", "Ünïcödé", "—", "(", ")", "#", "$5"]
    for _ in range(500):
        s = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12))) if rng.random() < 0.7 else random_text(rng)
        assert tok.encode(s) == hf.encode(s).ids, repr(s)
        assert hf.decode(tok.encode(s)) == s
    lines = load_corpus("shakespeare").splitlines()[20_000:20_300]
    text = "\n".join(lines)
    assert tok.encode(text) == hf.encode(text).ids
    s = "first<|endoftext|>second"
    assert tok.encode(s, allowed_special="all") == hf.encode(s).ids
    assert 1000 in tok.encode(s, allowed_special="all")


def test_to_hf_refuses_other_patterns(trained):
    with pytest.raises(ValueError, match="gpt2"):
        trained["gpt4"].to_hf()
    with pytest.raises(ValueError, match="gpt2"):
        BPETokenizer().train("aaabdaaabac", 258).to_hf()


# ---------------------------------------------------------------------------------------------------------
# Special tokens, files, errors
# ---------------------------------------------------------------------------------------------------------


def test_special_tokens_allowed_special_modes():
    tok = BPETokenizer("gpt2", special_tokens={"<|endoftext|>": 300, "<|pad|>": 301}).train("hello world " * 20, 262)
    s = "hi<|endoftext|>there<|pad|>"
    with pytest.raises(ValueError, match="special token"):
        tok.encode(s)  # default "none_raise"
    ids_all = tok.encode(s, allowed_special="all")
    assert 300 in ids_all and 301 in ids_all and tok.decode(ids_all) == s
    ids_none = tok.encode(s, allowed_special="none")
    assert 300 not in ids_none and tok.decode(ids_none) == s
    ids_one = tok.encode(s, allowed_special={"<|pad|>"})
    assert 301 in ids_one and 300 not in ids_one and tok.decode(ids_one) == s
    with pytest.raises(ValueError, match="unknown special"):
        tok.encode(s, allowed_special={"<|bos|>"})
    with pytest.raises(ValueError, match="allowed_special"):
        tok.encode(s, allowed_special="some")
    assert tok.vocab_size == 302


def test_training_skips_special_tokens_in_text():
    tok = BPETokenizer("gpt2", special_tokens={"<|endoftext|>": 999})
    with pytest.warns(UserWarning, match="ran out of pairs"):
        tok.train("hello<|endoftext|>" * 50, 300)
    # only "hello" was trained on: 4 merges (he, hel, hell, hello), nothing from the special token
    assert [tok.vocab[256 + i] for i in range(len(tok.merges))] == [b"he", b"hel", b"hell", b"hello"]


def test_register_special_tokens_errors():
    tok = BPETokenizer().train("aaabdaaabac", 259)
    with pytest.raises(ValueError, match="already a byte/merge token"):
        tok.register_special_tokens({"<s>": 257})
    with pytest.raises(ValueError, match="share id"):
        tok.register_special_tokens({"<s>": 400, "</s>": 400})
    fresh = BPETokenizer(special_tokens={"<s>": 300})
    with pytest.raises(ValueError, match="merge range"):
        fresh.train("aaabdaaabac" * 5, 400)


def test_save_load_roundtrip(tmp_path, trained):
    tok = copy.deepcopy(trained["gpt4"])
    tok.register_special_tokens({"<|eot|>": 5000})
    path = tmp_path / "tok.json"
    tok.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))  # readable JSON with each merge's text
    assert data["format"] == "minillm-bpe" and len(data["merged_text"]) == len(tok.merges)
    back = BPETokenizer.load(path)
    assert back.merges == tok.merges and back.vocab == tok.vocab and back.pattern == tok.pattern
    assert back.special_tokens == {"<|eot|>": 5000}
    s = "To be, or not to be: 春眠不觉晓 <|eot|>"
    assert back.encode(s, "all") == tok.encode(s, "all")


def test_bad_input_errors(tmp_path):
    with pytest.raises(ValueError, match=">= 256"):
        BPETokenizer().train("abc", 255)
    with pytest.raises(ValueError, match=">= 256"):
        BPETokenizer().train("abc", 300.0)
    with pytest.raises(TypeError, match="str"):
        BPETokenizer().train(b"abc", 300)
    with pytest.raises(TypeError, match="str"):
        BPETokenizer().encode(["a", "b"])
    with pytest.raises(ValueError, match="unknown pattern name"):
        BPETokenizer("gpt3")
    with pytest.raises(ValueError, match="not a valid regex"):
        BPETokenizer("(unclosed")
    with pytest.raises(ValueError, match="not in this tokenizer"):
        BPETokenizer().decode([256])
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"model": {"type": "BPE"}}))
    with pytest.raises(ValueError, match="not a minillm BPE file"):
        BPETokenizer.load(wrong)
    wrong.write_text("merges: [1, 2]")
    with pytest.raises(ValueError, match="not a minillm BPE JSON file"):
        BPETokenizer.load(wrong)


def test_custom_regex_pattern_and_verbose(capsys):
    # chunks: "ab" x3, " " x3, "cd": (a,b) has count 3, then (c,d) is the only pair left
    tok = BPETokenizer(r"\S+|\s+").train("ab ab ab cd", 258, verbose=True)
    assert tok.merges == [(97, 98), (99, 100)]
    assert tok.decode(tok.encode("ab cd")) == "ab cd"
