"""Unigram language-model tokenization (SentencePiece): the most probable segmentation by Viterbi.

Implements
- `Unigram.viterbi`: each piece x has a log-probability score log p(x); a segmentation x_1..x_k of a
  string has log-likelihood sum_i log p(x_i) (Kudo 2018, "Subword Regularization", eq. 1-2). Dynamic
  programming over end positions finds the best one: best[e] = max_{s<e} best[s] + log p(text[s:e]).
- A character that no piece covers becomes an unknown piece with score min_score - 10 (the penalty used
  by SentencePiece and `tokenizers`); a run of unknown characters is fused into one unknown token.
- `Unigram.tokenize`: SentencePiece-style pre-tokenization as `tokenizers.pre_tokenizers.Metaspace()`
  does by default: spaces become "▁" (U+2581), "▁" is prepended, and the text is cut before each "▁".

SentencePiece in one line: treat the text as a raw stream of Unicode characters (the space is just the
symbol "▁"), so no language-specific word splitter is needed and decoding is lossless.

Leaves out: training (EM over the lattice and pruning; `tokenizers.trainers.UnigramTrainer` does it
here), sampling segmentations (subword regularization), NFKC normalization and byte fallback.
Tie-breaking follows `tokenizers`: among equal scores, the path whose last piece starts earliest wins.
"""

from __future__ import annotations

import math

SPACE = "\u2581"  # "▁", SentencePiece's visible space
UNK_PENALTY = 10.0


class Unigram:
    """A Unigram LM tokenizer from (piece, log-prob score) pairs; piece i has id i."""

    def __init__(self, pieces: list[tuple[str, float]], unk_id: int = 0):
        if not isinstance(pieces, (list, tuple)) or not pieces:
            raise TypeError("pieces must be a non-empty list of (piece, score) pairs")
        for item in pieces:
            if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)
                    and item[0] and isinstance(item[1], (int, float))):
                raise ValueError(f"each piece must be (non-empty str, float score), got {item!r}")
        if not isinstance(unk_id, int) or not 0 <= unk_id < len(pieces):
            raise ValueError(f"unk_id must index a piece (0..{len(pieces) - 1}), got {unk_id!r}")
        self.pieces = [(p, float(s)) for p, s in pieces]
        self.unk_id = unk_id
        self.piece_to_id: dict[str, int] = {}
        for i, (p, _) in enumerate(self.pieces):
            self.piece_to_id.setdefault(p, i)
        self.max_len = max(len(p) for p, _ in self.pieces)
        self.min_score = min(s for _, s in self.pieces)
        self.unk_score = self.min_score - UNK_PENALTY

    def viterbi(self, text: str) -> list[str]:
        """Best segmentation of one chunk into pieces (unknown characters kept as their own text)."""
        n = len(text)
        # best[e] = (score of the best segmentation of text[:e], start of its last piece, that piece's id)
        best: list[tuple[float, int, int] | None] = [None] * (n + 1)
        best[0] = (0.0, -1, -1)
        for s in range(n):
            if best[s] is None:
                continue
            base = best[s][0]
            single = False  # does a real piece cover the single character text[s]?
            for e in range(s + 1, min(n, s + self.max_len) + 1):  # shorter pieces first, as a trie gives them
                i = self.piece_to_id.get(text[s:e])
                if i is None:
                    continue
                single |= e == s + 1
                score = base + self.pieces[i][1]
                if best[e] is None or score > best[e][0]:  # strict: on a tie the earlier start stays
                    best[e] = (score, s, i)
            if not single:
                score = base + self.unk_score
                if best[s + 1] is None or score > best[s + 1][0]:
                    best[s + 1] = (score, s, self.unk_id)
        # walk back from the end, then fuse neighbouring unknowns
        spans: list[tuple[int, int, int]] = []
        e = n
        while e > 0:
            _, s, i = best[e]
            spans.append((s, e, i))
            e = s
        spans.reverse()
        out: list[str] = []
        prev_unk = False
        for s, e, i in spans:
            if i == self.unk_id and prev_unk:
                out[-1] += text[s:e]
            else:
                out.append(text[s:e])
            prev_unk = i == self.unk_id
        return out

    def score(self, pieces: list[str]) -> float:
        """Log-likelihood of a segmentation (unknown pieces count min_score - 10 per piece)."""
        return sum(self.pieces[self.piece_to_id[p]][1] if p in self.piece_to_id else self.unk_score for p in pieces)

    @staticmethod
    def pre_tokenize(text: str) -> list[str]:
        """' Hello  world' -> ['▁Hello', '▁', '▁world'] (Metaspace: replace, prepend, split before ▁)."""
        if not text:
            return []
        s = text.replace(" ", SPACE)
        if not s.startswith(SPACE):
            s = SPACE + s
        return [SPACE + part for part in s.split(SPACE)[1:]]

    def tokenize(self, text: str) -> list[str]:
        if not isinstance(text, str):
            raise TypeError(f"tokenize() needs a str, got {type(text).__name__}")
        return [p for chunk in self.pre_tokenize(text) for p in self.viterbi(chunk)]

    def encode(self, text: str) -> list[int]:
        return [self.piece_to_id.get(p, self.unk_id) for p in self.tokenize(text)]

    def decode(self, ids: list[int]) -> str:
        """Concatenate pieces, turn '▁' back into spaces and drop the one space tokenize() prepended."""
        parts = []
        for i in ids:
            if not isinstance(i, int) or not 0 <= i < len(self.pieces):
                raise ValueError(f"id {i!r} is not a piece id (0..{len(self.pieces) - 1})")
            parts.append(self.pieces[i][0])
        text = "".join(parts).replace(SPACE, " ")
        return text[1:] if text.startswith(" ") else text

    def probability(self, pieces: list[str]) -> float:
        """exp(score): the probability the unigram LM gives this segmentation."""
        return math.exp(self.score(pieces))

    def __repr__(self) -> str:
        return f"Unigram(pieces={len(self.pieces)}, unk={self.pieces[self.unk_id][0]!r})"
