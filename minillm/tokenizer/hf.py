"""Conversion between minillm tokenizers and Hugging Face `tokenizers` objects (used to cross-check).

Implements
- `bytes_to_unicode()`: GPT-2's table mapping each of the 256 bytes to a printable character, so a
  byte-level token can be written as a string in a vocab file (openai/gpt-2, encoder.py).
- `bpe_to_hf(tok)`: a `BPETokenizer` with the GPT-2 pattern -> `tokenizers` BPE + ByteLevel, same ids.
- `wordpiece_to_hf`, `unigram_to_hf`: our WordPiece / Unigram -> `tokenizers` with the matching
  pre-tokenizer (BertPreTokenizer / Metaspace).
- `wordpiece_vocab_from_hf`, `unigram_pieces_from_hf`: read a trained `tokenizers` model back out.

Leaves out: normalizers (lower-casing, accent stripping, NFKC) and post-processors ([CLS] ... [SEP]).
`tokenizers` is imported lazily inside each function.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - annotations only; at run time hf never imports bpe (bpe imports hf)
    from .bpe import BPETokenizer
    from .unigram import Unigram
    from .wordpiece import WordPiece


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """byte -> printable char. Printable Latin-1 bytes map to themselves; the other 68 bytes (controls,
    space, ...) are shifted to chr(256 + k) in byte order, so e.g. the space byte 32 becomes 'Ġ'."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    table, k = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + k)
            k += 1
    return table


def bpe_to_hf(tok: BPETokenizer):
    """A `tokenizers.Tokenizer` giving the same ids as `tok` (which must use the GPT-2 split pattern)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    from .patterns import GPT2_SPLIT_PATTERN

    if tok.pattern != GPT2_SPLIT_PATTERN:
        raise ValueError(
            "to_hf() needs a tokenizer trained with pattern='gpt2': the ByteLevel pre-tokenizer of `tokenizers` "
            f"has GPT-2's regex built in, so other patterns (this one: {tok.pattern!r}) would split text "
            "differently and give different ids"
        )
    b2u = bytes_to_unicode()

    def as_str(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    vocab = {as_str(b): i for i, b in tok.vocab.items()}
    if len(vocab) != len(tok.vocab):
        raise ValueError("two ids of this tokenizer have the same bytes; a `tokenizers` vocab cannot hold that")
    for s, i in tok.special_tokens.items():
        vocab[s] = i  # in the model vocab too, so the added special tokens keep our ids
    merges = [(as_str(tok.vocab[a]), as_str(tok.vocab[b])) for a, b in tok.merges]
    hf = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    if tok.special_tokens:
        hf.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in tok.special_tokens])
    return hf


def wordpiece_to_hf(wp: WordPiece):
    """`tokenizers` WordPiece model + BertPreTokenizer with the same vocab (lowercase is not carried over)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    model = models.WordPiece(
        vocab=dict(wp.vocab), unk_token=wp.unk_token, continuing_subword_prefix=wp.prefix,
        max_input_chars_per_word=wp.max_input_chars_per_word,
    )
    hf = Tokenizer(model)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return hf


def unigram_to_hf(u: Unigram):
    """`tokenizers` Unigram model + Metaspace pre-tokenizer and decoder with the same pieces and scores."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    hf = Tokenizer(models.Unigram(list(u.pieces), unk_id=u.unk_id, byte_fallback=False))
    hf.pre_tokenizer = pre_tokenizers.Metaspace()
    hf.decoder = decoders.Metaspace()
    return hf


def wordpiece_vocab_from_hf(hf) -> dict[str, int]:
    """The vocab (token -> id) of a `tokenizers` WordPiece tokenizer, e.g. one just trained."""
    return dict(sorted(hf.get_vocab(with_added_tokens=False).items(), key=lambda kv: kv[1]))


def unigram_pieces_from_hf(hf) -> tuple[list[tuple[str, float]], int]:
    """(pieces with log-prob scores, unk_id) of a `tokenizers` Unigram tokenizer."""
    model = json.loads(hf.to_str())["model"]
    if model.get("type") != "Unigram":
        raise ValueError(f"expected a Unigram model, got {model.get('type')!r}")
    return [(p, float(s)) for p, s in model["vocab"]], model.get("unk_id") or 0
