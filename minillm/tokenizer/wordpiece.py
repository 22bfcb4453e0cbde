"""WordPiece tokenization as in BERT: greedy longest-match-first over a fixed vocab with "##" pieces.

Implements
- BERT-style pre-tokenization (split on Unicode whitespace, each punctuation character becomes its own
  word), matching `tokenizers.pre_tokenizers.BertPreTokenizer`.
- `WordPiece.tokenize_word`: at each position take the longest vocab entry that matches (pieces inside a
  word carry the "##" prefix); a word that cannot be covered, or is too long, becomes one [UNK]
  (Devlin et al. 2019, BERT; Wu et al. 2016, GNMT, section 4.1; `tokenizers.models.WordPiece`).

WordPiece vs BPE: both build a subword vocab bottom-up by merging pairs. BPE merges the most FREQUENT
pair; the WordPiece trainer merges the pair that most increases the corpus likelihood, i.e. the highest
count(ab) / (count(a) count(b)). At inference BPE replays its merges, WordPiece needs only the vocab and
matches greedily. Training is left to `tokenizers.trainers.WordPieceTrainer` here.

Leaves out: BertNormalizer (accent stripping, spacing around CJK characters, control-character cleanup);
`lowercase=True` only calls `str.lower()`. `decode` does not undo the spaces around punctuation.
"""

from __future__ import annotations

import unicodedata

# Rust's char::is_whitespace (the Unicode White_Space property). Python's str.isspace() would also
# count U+001C..U+001F, which BertPreTokenizer does not split on.
WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
ASCII_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def is_bert_punctuation(ch: str) -> bool:
    """ASCII punctuation (this includes symbols such as $ + < = > ^ ` | ~) or a Unicode P* category."""
    return ch in ASCII_PUNCTUATION or unicodedata.category(ch).startswith("P")


def bert_pre_tokenize(text: str) -> list[str]:
    """Split on whitespace (dropped) and around punctuation (kept, one character per word)."""
    words, cur = [], []
    for ch in text:
        if ch in WHITESPACE:
            if cur:
                words.append("".join(cur))
                cur = []
        elif is_bert_punctuation(ch):
            if cur:
                words.append("".join(cur))
                cur = []
            words.append(ch)
        else:
            cur.append(ch)
    if cur:
        words.append("".join(cur))
    return words


class WordPiece:
    """Greedy longest-match-first WordPiece over `vocab` (token -> id)."""

    def __init__(self, vocab: dict[str, int], unk_token: str = "[UNK]", prefix: str = "##",
                 max_input_chars_per_word: int = 100, lowercase: bool = False):
        if not isinstance(vocab, dict) or not vocab:
            raise TypeError("vocab must be a non-empty dict token -> id")
        if unk_token not in vocab:
            raise ValueError(f"unk_token {unk_token!r} is not in the vocab; add it (BERT uses '[UNK]')")
        if not isinstance(max_input_chars_per_word, int) or max_input_chars_per_word < 1:
            raise ValueError(f"max_input_chars_per_word must be a positive int, got {max_input_chars_per_word!r}")
        self.vocab = dict(vocab)
        self.id_to_token = {i: t for t, i in vocab.items()}
        self.unk_token, self.prefix = unk_token, prefix
        self.max_input_chars_per_word = max_input_chars_per_word
        self.lowercase = lowercase
        self.max_len = max(len(t) for t in vocab)  # no match can be longer than this many characters

    def tokenize_word(self, word: str) -> list[str]:
        """'unaffable' -> ['un', '##aff', '##able'] with the BERT vocab; uncoverable -> ['[UNK]']."""
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_token]
        pieces, start = [], 0
        while start < len(word):
            # try the longest candidate first, then shrink it by one character at a time
            end = min(len(word), start + self.max_len)
            match = None
            while end > start:
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self.vocab:
                    match = piece
                    break
                end -= 1
            if match is None:
                return [self.unk_token]  # BERT gives up on the whole word, not just this character
            pieces.append(match)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Pre-tokenize like BertPreTokenizer, then WordPiece each word."""
        if not isinstance(text, str):
            raise TypeError(f"tokenize() needs a str, got {type(text).__name__}")
        if self.lowercase:
            text = text.lower()
        return [p for word in bert_pre_tokenize(text) for p in self.tokenize_word(word)]

    def encode(self, text: str) -> list[int]:
        return [self.vocab[t] for t in self.tokenize(text)]

    def decode(self, ids: list[int]) -> str:
        """Join pieces: a '##' piece is glued to the previous one, other pieces get a space before them."""
        out: list[str] = []
        for i in ids:
            if i not in self.id_to_token:
                raise ValueError(f"id {i!r} is not in the vocab (size {len(self.vocab)})")
            tok = self.id_to_token[i]
            if tok.startswith(self.prefix) and out:
                out.append(tok[len(self.prefix):])
            else:
                out.append((" " if out else "") + tok)
        return "".join(out)

    def __repr__(self) -> str:
        return f"WordPiece(vocab={len(self.vocab)}, unk_token={self.unk_token!r}, prefix={self.prefix!r})"
