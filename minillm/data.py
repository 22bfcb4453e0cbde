"""The course corpora, shipped inside the package so nothing is ever downloaded.

| name | what | size |
|---|---|---|
| `shakespeare` | 11 plays, Project Gutenberg texts without headers (ASCII) | 1.39 MB |
| `tang300` | 唐诗三百首: title line, author line, poem lines; blank line between poems | 29,577 characters |
| `song100` | 宋诗一百首 (Song *shi*, e.g. 苏轼《题西林壁》, 陆游《示儿》), same format | 9,659 characters |

All three are in the public domain; where each file came from is in `book/howto.md`.
Chapter 6 adds `CharTokenizer`, `build_tokenizer` and `TokenData`: token ids and random batches for pretraining;
`CharData` is the character-level `TokenData` of the experiments of chapters 2-4. `MixedData` samples windows
from several corpora with given weights (the course's base model, Part II), each corpus split 90/10 on its own.
"""

from __future__ import annotations

from pathlib import Path

CORPORA: dict[str, str] = {
    "shakespeare": "11 Shakespeare plays (English, ASCII)",
    "tang300": "唐诗三百首, 313 Tang poems (Chinese)",
    "song100": "宋诗一百首, 95 Song shi poems (Chinese)",
}


def corpus_path(name: str) -> Path:
    """Path of a bundled corpus file (package data in `minillm/corpora/`)."""
    if name not in CORPORA:
        known = ", ".join(repr(k) for k in CORPORA)
        raise ValueError(f"unknown corpus {name!r}; choose one of {known}")
    return Path(__file__).resolve().parent / "corpora" / f"{name}.txt"


def load_corpus(name: str, max_chars: int | None = None) -> str:
    """The text of a bundled corpus (UTF-8), optionally cut to its first `max_chars` characters."""
    if max_chars is not None and (not isinstance(max_chars, int) or max_chars <= 0):
        raise ValueError(f"max_chars must be a positive int or None, got {max_chars!r}")
    text = corpus_path(name).read_text(encoding="utf-8")
    return text if max_chars is None else text[:max_chars]


def poems(name: str = "tang300") -> list[str]:
    """The poems of a Chinese corpus as a list, each 'title\nauthor\nlines...'.

    A poem starts at a title line, the line just above an author line ("作者"). Blank lines inside a
    long poem separate stanzas or a preface, not poems, so splitting on blank lines alone would cut
    some poems in two.
    """
    if name not in ("tang300", "song100"):
        raise ValueError(f"poems() splits the Chinese poem corpora 'tang300' and 'song100', not {name!r}")
    lines = load_corpus(name).splitlines()
    starts = [i for i in range(len(lines) - 1) if lines[i + 1].startswith("作者")]
    ends = starts[1:] + [len(lines)]
    return ["\n".join(lines[a:b]).strip() for a, b in zip(starts, ends, strict=True)]


# ---------------------------------------------------------------------------------------------------
# Chapter 6: tokenised corpora and batches for pretraining


class CharTokenizer:
    """One id per distinct character of a text: the smallest tokenizer that can train a model."""

    def __init__(self, chars: str):
        if not chars or len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer needs a non-empty string of distinct characters; use from_text(text)")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self.stoi.keys())
        if unknown:
            raise ValueError(f"characters not in this tokenizer's vocabulary: {unknown[:10]!r}; "
                             "a character model can only read the characters it was trained on")
        return [self.stoi[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)


def tokenizer_state(tok) -> dict:
    """A JSON-able description of a CharTokenizer or a BPETokenizer (saved inside checkpoints)."""
    from minillm.tokenizer import BPETokenizer

    if isinstance(tok, CharTokenizer):
        return {"kind": "char", "chars": tok.chars}
    if isinstance(tok, BPETokenizer):
        return {"kind": "bpe", **tok.to_dict()}
    raise TypeError(f"cannot save a {type(tok).__name__}; use a CharTokenizer or a minillm BPETokenizer")


def tokenizer_from_state(state: dict):
    """The inverse of `tokenizer_state`."""
    from minillm.tokenizer import BPETokenizer

    if state.get("kind") == "char":
        return CharTokenizer(state["chars"])
    if state.get("kind") == "bpe":
        return BPETokenizer.from_dict(state)
    raise ValueError(f"unknown tokenizer state {state.get('kind')!r}: expected 'char' or 'bpe'")


def build_tokenizer(text: str, kind: str = "char", vocab_size: int = 512):
    """A tokenizer for `text`: "char" (one id per character) or "bpe" (byte-level BPE trained on `text`)."""
    if kind == "char":
        return CharTokenizer.from_text(text)
    if kind == "bpe":
        from minillm.tokenizer import BPETokenizer

        if vocab_size < 257:
            raise ValueError(f"a byte-level BPE needs vocab_size > 256 (256 bytes + merges), got {vocab_size}")
        return BPETokenizer(pattern="gpt4").train(text, vocab_size)
    raise ValueError(f"unknown tokenizer kind {kind!r}: choose 'char' or 'bpe'")


class TokenData:
    """A corpus as token ids, split into train (first 90%) and val (last 10%), with random (B, T) windows.

    `batch(split, B, T, generator)` returns x (B, T) and y (B, T) = x shifted by one: the next-token targets.
    The split is by position, not by shuffling, so validation text is never seen in training.
    """

    def __init__(self, text: str, tokenizer, val_fraction: float = 0.1):
        if not text:
            raise ValueError("the text is empty")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        import torch

        self.tokenizer = tokenizer
        ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
        n_val = max(int(len(ids) * val_fraction), 1)
        self.train, self.val = ids[:-n_val], ids[-n_val:]

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def batch(self, split: str, batch_size: int, seq_len: int, generator=None):
        import torch

        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        data = self.train if split == "train" else self.val
        if len(data) < seq_len + 2:
            raise ValueError(f"the {split} split has {len(data)} tokens, too few for seq_len={seq_len}; "
                             "lower seq_len or use a longer corpus")
        start = torch.randint(len(data) - seq_len - 1, (batch_size, 1), generator=generator)  # (B, 1)
        idx = start + torch.arange(seq_len + 1)  # (B, T+1)
        window = data[idx]
        return window[:, :-1], window[:, 1:]


class CharData(TokenData):
    """A character-level `TokenData`: one id per distinct character of `text`, a train/val split by position
    and random (B, T) windows with `batch(split, B, T, generator)` (the data of chapters 2-4's experiments)."""

    def __init__(self, text: str, val_fraction: float = 0.1):
        if not text or not 0 < val_fraction < 1:
            raise ValueError("need a non-empty text and 0 < val_fraction < 1")
        super().__init__(text, CharTokenizer.from_text(text), val_fraction)

    def encode(self, s: str) -> list[int]:
        return self.tokenizer.encode(s)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)


class MixedData:
    """Several corpora under one tokenizer, sampled by weight: each row of a batch first draws its corpus
    (probability proportional to `weights[name]`), then a window of it. Each corpus is split into train / val
    on its own (`parts[name]` is its `TokenData`), so every language has held-out text.

    A weight is a sampling rate, not a size: the small Chinese corpora can be seen more often than their share
    of the characters (their ~7%), the usual way pretraining mixes (e.g. Llama's epochs per source, Touvron et
    al. 2023, table 1)."""

    def __init__(self, texts: dict[str, str], tokenizer, weights: dict[str, float], val_fraction: float = 0.1):
        import torch

        if not texts or set(texts) != set(weights):
            raise ValueError(f"need one weight per corpus: texts {sorted(texts)}, weights {sorted(weights)}")
        if any(not (w > 0) for w in weights.values()):
            raise ValueError(f"every weight must be > 0, got {weights}")
        self.tokenizer = tokenizer
        self.names = list(texts)
        self.parts = {n: TokenData(texts[n], tokenizer, val_fraction) for n in self.names}
        total = sum(weights.values())
        self.weights = {n: weights[n] / total for n in self.names}
        self._probs = torch.tensor([self.weights[n] for n in self.names], dtype=torch.float64)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def train(self):
        import torch

        return torch.cat([p.train for p in self.parts.values()])

    @property
    def val(self):
        import torch

        return torch.cat([p.val for p in self.parts.values()])

    def batch(self, split: str, batch_size: int, seq_len: int, generator=None):
        import torch

        which = torch.multinomial(self._probs, batch_size, replacement=True, generator=generator)  # (B,)
        rows = [self.parts[self.names[i]].batch(split, 1, seq_len, generator) for i in which.tolist()]
        return torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])  # (B, T), (B, T)
