"""minillm.tokenizer.extend: adding Chinese merges to an English BPE and growing the embedding."""

from __future__ import annotations

import copy

import pytest
import torch

from minillm.data import load_corpus, poems
from minillm.tokenizer import (
    BPETokenizer,
    bytes_per_token,
    merge_tokenizers,
    resize_embedding,
    tokens_per_char,
)

# ---------------------------------------------------------------------------------------------------------
# Hand-worked cases
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture()
def hand_base() -> BPETokenizer:
    return BPETokenizer().train("aaabdaaabac", 259)  # 256 "aa", 257 "aaa", 258 "aaab" (see test_tokenizer_bpe)


def test_merge_tokenizers_by_hand(hand_base):
    # extra on "ccccdd": (c,c)=3 -> "cc"; then [cc cc d d] has three pairs once each; first is (cc,cc) -> "cccc"
    extra = BPETokenizer().train("ccccdd", 258)
    assert extra.merges == [(99, 99), (256, 256)]
    merged = merge_tokenizers(hand_base, extra)
    # base merges first and unchanged; extra's merges re-numbered after them: 259 "cc", 260 "cccc"
    assert merged.merges == [(97, 97), (256, 97), (257, 98), (99, 99), (259, 259)]
    assert merged.vocab[259] == b"cc" and merged.vocab[260] == b"cccc"
    assert merged.encode("ccccaaab") == [260, 258]
    assert hand_base.encode("ccccaaab") == [99, 99, 99, 99, 258]


def test_merge_tokenizers_skips_tokens_base_has(hand_base):
    # extra on "aaaa": (a,a)=3 -> "aa" (base already has it as id 256, so it is skipped), then (aa,aa) -> "aaaa",
    # which must be rewritten with BASE's id for "aa": (256, 256) -> 259
    extra = BPETokenizer().train("aaaa", 258)
    assert extra.merges == [(97, 97), (256, 256)]
    merged = merge_tokenizers(hand_base, extra)
    assert merged.merges[3:] == [(256, 256)] and merged.vocab[259] == b"aaaa"
    # ids of extra (e.g. its 256 = "aa") are NOT what the merged tokenizer uses for extra's own merges
    extra2 = BPETokenizer().train("xyxyxy", 257)  # 256 = "xy" in extra2's numbering
    merged2 = merge_tokenizers(hand_base, extra2)
    assert merged2.merges[3:] == [(120, 121)] and merged2.vocab[256] == b"aa"


def test_resize_embedding_by_hand(hand_base):
    # extra learns "aaabd" (aa, aaa, aaab, aaabd); only "aaabd" is new -> merged id 259 = (258 "aaab", 100 "d").
    extra = BPETokenizer().train("aaabd", 260)
    merged = merge_tokenizers(hand_base, extra)
    assert merged.merges[3:] == [(258, 100)]
    torch.manual_seed(0)
    emb = torch.nn.Embedding(259, 4, padding_idx=0)
    new = resize_embedding(emb, merged, hand_base)
    assert new.weight.shape == (260, 4) and new.padding_idx == 0
    torch.testing.assert_close(new.weight[:259], emb.weight)
    # the OLD tokenizer spells "aaabd" as "aaab" + "d" = ids [258, 100] -> mean of those two rows
    assert hand_base.encode("aaabd") == [258, 100]
    torch.testing.assert_close(new.weight[259], (emb.weight[258] + emb.weight[100]) / 2)
    assert new.weight.requires_grad


def test_compression_measures_by_hand(hand_base):
    raw = BPETokenizer()  # no merges: one token per byte
    assert tokens_per_char(raw, "你好") == 3.0  # each of these characters is 3 UTF-8 bytes
    assert bytes_per_token(raw, "你好") == 1.0
    assert tokens_per_char(hand_base, "aaabdaaabac") == 5 / 11
    assert bytes_per_token(hand_base, "aaabdaaabac") == 11 / 5
    with pytest.raises(ValueError, match="non-empty"):
        tokens_per_char(raw, "")


# ---------------------------------------------------------------------------------------------------------
# Realistic: English base + Chinese extra
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def en_zh():
    base = BPETokenizer("gpt2").train(load_corpus("shakespeare", 200_000), 256 + 400)
    train_poems = poems("tang300")[:250]
    extra = BPETokenizer("gpt2").train("\n\n".join(train_poems), 256 + 400)
    return base, extra, merge_tokenizers(base, extra)


def test_merged_keeps_base_and_compresses_chinese(en_zh):
    base, extra, merged = en_zh
    assert merged.merges[: len(base.merges)] == base.merges
    assert all(merged.vocab[i] == b for i, b in base.vocab.items())
    assert set(extra.vocab.values()) <= set(merged.vocab.values())  # every extra token is reachable
    assert len(set(merged.vocab.values())) == len(merged.vocab)  # no token twice
    held_out = "\n\n".join(poems("tang300")[250:])
    english = load_corpus("shakespeare")[-20_000:]
    for text in (held_out, english):
        assert merged.decode(merged.encode(text)) == text
    # base merges all come first, so merged never needs more tokens than base
    assert len(merged.encode(english)) <= len(base.encode(english))
    assert tokens_per_char(merged, held_out) < 0.7 * tokens_per_char(base, held_out)
    assert bytes_per_token(merged, held_out) > bytes_per_token(base, held_out)
    # an independent check that the merged merges list is a consistent BPE: tokenizers gives the same ids
    hf = merged.to_hf()
    for text in (held_out[:3000], english[:3000], "Hello 世界, 春眠不觉晓 😀"):
        assert merged.encode(text) == hf.encode(text).ids


def test_resize_embedding_realistic(en_zh):
    base, _, merged = en_zh
    emb = torch.nn.Embedding(base.vocab_size, 8, dtype=torch.float64)
    new = resize_embedding(emb, merged, base)
    assert new.weight.shape == (merged.vocab_size, 8) and new.weight.dtype == torch.float64
    torch.testing.assert_close(new.weight[: base.vocab_size], emb.weight)
    n_multi = 0
    for i in range(base.vocab_size, merged.vocab_size, 7):
        parts = base.encode_bytes(merged.vocab[i])  # how the English tokenizer spells this Chinese token
        n_multi += len(parts) > 1
        torch.testing.assert_close(new.weight[i], emb.weight[parts].mean(0))
    assert n_multi > 10
    # a special token added later has no old spelling: it gets the mean of all old rows
    with_special = copy.deepcopy(merged)
    with_special.register_special_tokens({"<|im_end|>": merged.vocab_size})
    bigger = resize_embedding(emb, with_special, base)
    assert bigger.num_embeddings == merged.vocab_size + 1
    torch.testing.assert_close(bigger.weight[-1], emb.weight.mean(0))


# ---------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------


def test_extend_errors(hand_base):
    with pytest.raises(TypeError, match="BPETokenizer"):
        merge_tokenizers(hand_base, {"cc": 1})
    base = BPETokenizer(special_tokens={"<|eot|>": 259}).train("aaabdaaabac", 259)
    with pytest.raises(ValueError, match="special tokens"):
        merge_tokenizers(base, BPETokenizer().train("ccccdd", 258))
    with pytest.raises(TypeError, match="Embedding"):
        resize_embedding(torch.zeros(3, 4), hand_base, hand_base)
    with pytest.raises(ValueError, match="rows"):
        resize_embedding(torch.nn.Embedding(10, 4), hand_base, hand_base)
    other = BPETokenizer().train("xyxyxy", 257)  # its id 256 is "xy", not "aa"
    with pytest.raises(ValueError, match="different bytes"):
        resize_embedding(torch.nn.Embedding(259, 4), other, hand_base)
