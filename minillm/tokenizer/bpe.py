"""Byte-level byte-pair encoding (BPE), as in GPT-2 / GPT-4: train, encode, decode, save, load.

Implements
- `get_pair_counts` and `merge_pair`, the two primitives of BPE (Sennrich et al. 2016, Algorithm 1).
- `BPETokenizer`: byte-level BPE over UTF-8 bytes (Radford et al. 2019, "GPT-2", section 2.2), with an
  optional regex pre-tokenization (`"gpt2"` or `"gpt4"`), special tokens with tiktoken-style
  `allowed_special`, a readable JSON file format, and `to_hf()` (a `tokenizers` object with the same ids).

Training rule (deterministic): every step merges the adjacent pair with the highest count; ties go to
the pair that occurs FIRST in the (partly merged) training text. This is what a plain loop over the text
with `max(counts, key=counts.get)` does, because a dict keeps insertion order.

Fast training: with a pattern the text is cut into chunks ("words"); we keep each unique chunk once with
its frequency, an index pair -> set of chunks containing it, and a heap of counts. A merge then touches
only the chunks that contain the merged pair and updates the counts incrementally; `_PairIndex` explains
how ties are broken without scanning all pairs.

Leaves out: BPE-dropout, byte-fallback for SentencePiece-style vocabularies, tiktoken's rank files,
parallel training. Without a pattern the whole text is one chunk, so training is O(len(text)) per merge:
use it for small texts only.
"""

from __future__ import annotations

import heapq
import json
import warnings
from collections import Counter
from itertools import pairwise
from pathlib import Path

import regex

from .patterns import PATTERNS

FILE_FORMAT = "minillm-bpe"


def get_pair_counts(ids: list[int], counts: dict | None = None) -> dict[tuple[int, int], int]:
    """Count adjacent pairs: [1, 2, 3, 1, 2] -> {(1, 2): 2, (2, 3): 1, (3, 1): 1}. Updates `counts` in place."""
    counts = {} if counts is None else counts
    for pair in pairwise(ids):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace each occurrence of `pair` by `new_id`, scanning left to right without overlaps.

    merge_pair([97, 97, 97], (97, 97), 256) == [256, 97]
    """
    out, i, n = [], 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def resolve_pattern(pattern: str | None) -> str | None:
    """A pattern name ("gpt2", "gpt4") or a regex -> the regex; None stays None (no pre-tokenization)."""
    if pattern is None:
        return None
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be None, 'gpt2', 'gpt4' or a regex string, got {type(pattern).__name__}")
    if regex.fullmatch(r"\w+", pattern):  # looks like a name, not a regex
        if pattern.lower() not in PATTERNS:
            raise ValueError(f"unknown pattern name {pattern!r}; use None, 'gpt2', 'gpt4' or a regex string")
        return PATTERNS[pattern.lower()]
    try:
        regex.compile(pattern)
    except regex.error as e:
        raise ValueError(f"pattern {pattern!r} is not a valid regex: {e}") from e
    return pattern


class BPETokenizer:
    """Byte-level BPE. Ids 0..255 are the bytes; merge i creates id 256 + i; special tokens come after.

    `vocab` maps every byte-token id to its bytes (special tokens are kept in `special_tokens` only).
    """

    def __init__(self, pattern: str | None = None, special_tokens: dict[str, int] | None = None):
        self.pattern = resolve_pattern(pattern)
        self._compiled = regex.compile(self.pattern) if self.pattern else None
        self.merges: list[tuple[int, int]] = []
        self.vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}
        self.special_tokens: dict[str, int] = {}
        self._merge_ids: dict[tuple[int, int], int] = {}  # pair -> new id (= 256 + rank)
        self._cache: dict[str, list[int]] = {}  # chunk -> ids, cleared whenever the merges change
        if special_tokens:
            self.register_special_tokens(special_tokens)

    # ---- bookkeeping -------------------------------------------------------------------------------------
    def _rebuild(self) -> None:
        """Recompute vocab and lookup tables from `merges` (call after changing merges)."""
        self.vocab = {i: bytes([i]) for i in range(256)}
        self._merge_ids = {}
        for i, (a, b) in enumerate(self.merges):
            if a not in self.vocab or b not in self.vocab:
                raise ValueError(f"merge {i} = ({a}, {b}) uses an id that no earlier merge created")
            self.vocab[256 + i] = self.vocab[a] + self.vocab[b]
            self._merge_ids[(a, b)] = 256 + i
        self._cache = {}

    def _ensure_built(self) -> None:
        """Rebuild the tables if `merges` was replaced or extended by hand."""
        if len(self._merge_ids) != len(self.merges) or len(self.vocab) != 256 + len(self.merges):
            self._rebuild()

    @property
    def vocab_size(self) -> int:
        """Number of ids (largest id + 1): 256 bytes + merges + special tokens."""
        self._ensure_built()
        return max([len(self.vocab) - 1, *self.special_tokens.values()]) + 1

    def register_special_tokens(self, tokens: dict[str, int]) -> None:
        """Add special tokens such as {"<|endoftext|>": 100257}; ids must not clash with byte/merge ids."""
        if not isinstance(tokens, dict):
            raise TypeError(f"special tokens must be a dict str -> int, got {type(tokens).__name__}")
        taken = {i: s for s, i in self.special_tokens.items()}
        for s, i in tokens.items():
            if not isinstance(s, str) or not s or not isinstance(i, int) or i < 0:
                raise ValueError(f"special token {s!r}: {i!r} must be a non-empty str -> non-negative int")
            if i in self.vocab:
                raise ValueError(
                    f"special token {s!r} has id {i}, already a byte/merge token; use an id >= {len(self.vocab)}"
                )
            if taken.get(i, s) != s:
                raise ValueError(f"special tokens {taken[i]!r} and {s!r} share id {i}")
            taken[i] = s
        self.special_tokens.update(tokens)

    def _split(self, text: str) -> list[str]:
        """Pre-tokenize ordinary text (no special tokens) into chunks that merges never cross."""
        return self._compiled.findall(text) if self._compiled else ([text] if text else [])

    def _split_special(self, text: str, allowed: dict[str, int]) -> list[str]:
        """Cut text at the allowed special tokens (kept as separate parts; longest match first)."""
        if not allowed:
            return [text]
        alternation = "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True))
        return [part for part in regex.split(f"({alternation})", text) if part]

    # ---- training ----------------------------------------------------------------------------------------
    def train(self, text: str, vocab_size: int, verbose: bool = False) -> BPETokenizer:
        """Learn `vocab_size - 256` merges from `text` (special tokens in the text are skipped). Returns self."""
        from tqdm.auto import tqdm

        if not isinstance(text, str):
            raise TypeError(f"train() needs the training text as a str, got {type(text).__name__}")
        if not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(f"vocab_size must be an int >= 256 (the 256 byte tokens), got {vocab_size!r}")
        clash = [s for s, i in self.special_tokens.items() if 256 <= i < vocab_size]
        if clash:
            raise ValueError(f"special tokens {clash} have ids inside the merge range 256..{vocab_size - 1}")

        # 1. Unique chunks in order of first appearance (Counter keeps insertion order) and their counts.
        chunk_freq: Counter[str] = Counter()
        for part in self._split_special(text, self.special_tokens):
            if part not in self.special_tokens:
                chunk_freq.update(self._split(part))
        words = [list(c.encode("utf-8")) for c in chunk_freq]  # words[w] = ids of unique chunk w
        freqs = list(chunk_freq.values())

        # 2. Pair counts weighted by chunk frequency, which chunks hold each pair, a heap of counts.
        index = _PairIndex(words, freqs)

        self.merges = []
        self._rebuild()
        bar = tqdm(range(vocab_size - 256), desc="BPE merges", disable=not verbose)
        for i in bar:
            pair = index.pop_best()
            if pair is None:
                warnings.warn(f"training text ran out of pairs after {i} merges; vocab_size is {256 + i}",
                              stacklevel=2)
                break
            new_id = 256 + i
            self.merges.append(pair)
            self.vocab[new_id] = self.vocab[pair[0]] + self.vocab[pair[1]]
            self._merge_ids[pair] = new_id
            # 3. Re-merge only the chunks containing `pair` and update the counts that changed.
            index.merge(pair, new_id, len(self.vocab[new_id]))
            if verbose and i % 32 == 0:
                bar.set_postfix_str(repr(self.vocab[new_id].decode("utf-8", errors="replace")))
        self._cache = {}
        return self

    # ---- encoding / decoding -----------------------------------------------------------------------------
    def encode_bytes(self, data: bytes) -> list[int]:
        """Apply the merges to raw bytes (no pre-tokenization): lowest-rank pair first, like training."""
        self._ensure_built()
        ids = list(data)
        while len(ids) >= 2:
            # the pair that was merged earliest in training (smallest new id); absent pairs rank as inf
            pair = min(pairwise(ids), key=lambda p: self._merge_ids.get(p, float("inf")))
            if pair not in self._merge_ids:
                break
            ids = merge_pair(ids, pair, self._merge_ids[pair])
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text, treating special-token strings as plain text."""
        if not isinstance(text, str):
            raise TypeError(f"encode() needs a str, got {type(text).__name__}")
        out: list[int] = []
        for chunk in self._split(text):
            ids = self._cache.get(chunk)
            if ids is None:
                ids = self.encode_bytes(chunk.encode("utf-8"))
                if len(self._cache) < 200_000:
                    self._cache[chunk] = ids
            out.extend(ids)
        return out

    def encode(self, text: str, allowed_special: str | set = "none_raise") -> list[int]:
        """Text -> ids. `allowed_special` (as in tiktoken): "all", "none" (specials are plain text),
        "none_raise" (error if the text contains a special token), or a set of special tokens to honour."""
        if not isinstance(text, str):
            raise TypeError(f"encode() needs a str, got {type(text).__name__}")
        if allowed_special == "all":
            allowed = dict(self.special_tokens)
        elif allowed_special == "none":
            allowed = {}
        elif allowed_special == "none_raise":
            allowed = {}
            found = [s for s in self.special_tokens if s in text]
            if found:
                raise ValueError(
                    f"text contains special token(s) {found}; pass allowed_special='all' (or a set) to encode "
                    "them as special ids, or 'none' to encode them as plain text"
                )
        elif isinstance(allowed_special, (set, frozenset)):
            unknown = set(allowed_special) - set(self.special_tokens)
            if unknown:
                raise ValueError(f"allowed_special names unknown special tokens {sorted(unknown)}; "
                                 f"registered: {sorted(self.special_tokens)}")
            allowed = {s: self.special_tokens[s] for s in allowed_special}
        else:
            raise ValueError(f"allowed_special must be 'all', 'none', 'none_raise' or a set, got {allowed_special!r}")
        out: list[int] = []
        for part in self._split_special(text, allowed):
            if part in allowed:
                out.append(allowed[part])
            else:
                out.extend(self.encode_ordinary(part))
        return out

    def decode(self, ids: list[int]) -> str:
        """Ids -> text; byte sequences that are not valid UTF-8 become U+FFFD."""
        self._ensure_built()
        inverse = {i: s.encode("utf-8") for s, i in self.special_tokens.items()}
        parts = []
        for i in ids:
            if i in self.vocab:
                parts.append(self.vocab[i])
            elif i in inverse:
                parts.append(inverse[i])
            else:
                raise ValueError(f"id {i!r} is not in this tokenizer (vocab_size {self.vocab_size})")
        return b"".join(parts).decode("utf-8", errors="replace")

    # ---- files and conversion ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-able description: pattern, special tokens, merges (+ each merge's text, for reading)."""
        self._ensure_built()
        return {
            "format": FILE_FORMAT,
            "version": 1,
            "pattern": self.pattern,
            "special_tokens": self.special_tokens,
            "merges": [[a, b] for a, b in self.merges],
            "merged_text": [self.vocab[256 + i].decode("utf-8", errors="replace") for i in range(len(self.merges))],
        }

    @classmethod
    def from_dict(cls, data: dict) -> BPETokenizer:
        """The inverse of `to_dict` (`merged_text` is only for reading and is ignored)."""
        tok = cls(pattern=data["pattern"])
        tok.merges = [(int(a), int(b)) for a, b in data["merges"]]
        tok._rebuild()
        tok.register_special_tokens(data.get("special_tokens", {}))
        return tok

    def save(self, path) -> None:
        """Write `to_dict()` as a readable JSON file."""
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path) -> BPETokenizer:
        """Read a file written by `save`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not a minillm BPE JSON file (not JSON: {e})") from e
        if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
            raise ValueError(f"{path} is not a minillm BPE file (expected 'format': {FILE_FORMAT!r})")
        return cls.from_dict(data)

    def to_hf(self):
        """The same tokenizer as a `tokenizers.Tokenizer` (BPE model, ByteLevel pre-tokenizer and decoder)."""
        from .hf import bpe_to_hf

        self._ensure_built()
        return bpe_to_hf(self)

    def __repr__(self) -> str:
        name = next((k for k, v in PATTERNS.items() if v == self.pattern), "custom" if self.pattern else None)
        return f"BPETokenizer(pattern={name!r}, merges={len(self.merges)}, special_tokens={len(self.special_tokens)})"


class _PairIndex:
    """Training state: unique chunks (as ids) with frequencies, pair counts, pair -> chunks, and a heap.

    Heap entries are (-count, first, pair), where `first` = (chunk, byte offset) is a LOWER BOUND of the
    pair's first occurrence in the text. It stays a lower bound because, once a pair exists, merges can
    only remove its occurrences (byte offsets inside a chunk never move). An entry whose count is stale is
    dropped; one whose bound is not exact is re-pushed with the exact value. So the first valid, exact
    entry is the most frequent pair, ties broken by first occurrence, with no scan over all pairs.
    """

    def __init__(self, words: list[list[int]], freqs: list[int]):
        self.words, self.freqs = words, freqs
        self.length = {i: 1 for i in range(256)}  # token id -> length in bytes (for byte offsets)
        self.counts: dict[tuple[int, int], int] = {}
        self.where: dict[tuple[int, int], set[int]] = {}
        self.first: dict[tuple[int, int], tuple[int, int]] = {}
        for w, (ids, f) in enumerate(zip(words, freqs, strict=True)):
            for j, pair in enumerate(pairwise(ids)):  # all tokens are 1 byte now: offset = j
                self.counts[pair] = self.counts.get(pair, 0) + f
                self.where.setdefault(pair, set()).add(w)
                self.first.setdefault(pair, (w, j))  # chunks are scanned in text order: exact
        self.heap = [(-c, self.first[p], p) for p, c in self.counts.items()]
        heapq.heapify(self.heap)

    def first_occurrence(self, pair: tuple[int, int]) -> tuple[int, int]:
        w = min(self.where[pair])
        offset, ids = 0, self.words[w]
        for j in range(len(ids) - 1):
            if ids[j] == pair[0] and ids[j + 1] == pair[1]:
                return w, offset
            offset += self.length[ids[j]]
        raise AssertionError(f"pair {pair} indexed in chunk {w} but not found there")

    def pop_best(self) -> tuple[int, int] | None:
        while self.heap:
            negc, bound, pair = self.heap[0]
            if self.counts.get(pair) != -negc:
                heapq.heappop(self.heap)  # stale: the pair's count changed after this was pushed
                continue
            exact = self.first_occurrence(pair)
            if exact == bound:
                heapq.heappop(self.heap)
                return pair
            self.first[pair] = exact
            heapq.heapreplace(self.heap, (negc, exact, pair))
        return None

    def merge(self, pair: tuple[int, int], new_id: int, new_len: int) -> None:
        self.length[new_id] = new_len
        delta: dict[tuple[int, int], int] = {}
        for w in self.where.pop(pair):
            old, f = self.words[w], self.freqs[w]
            new = merge_pair(old, pair, new_id)
            self.words[w] = new
            for p in pairwise(old):
                delta[p] = delta.get(p, 0) - f
            for p in pairwise(new):
                delta[p] = delta.get(p, 0) + f
            old_pairs, new_pairs = set(pairwise(old)), set(pairwise(new))
            for p in old_pairs - new_pairs:
                if p in self.where:
                    self.where[p].discard(w)
            for p in new_pairs - old_pairs:  # only pairs with new_id: a merge creates no other adjacency
                self.where.setdefault(p, set()).add(w)
                self.first[p] = min(self.first.get(p, (w, 0)), (w, 0))  # offset 0: a valid lower bound
        for p, d in delta.items():
            if d == 0:
                continue
            c = self.counts.get(p, 0) + d
            if c > 0:
                self.counts[p] = c
                heapq.heappush(self.heap, (-c, self.first[p], p))
            else:
                self.counts.pop(p, None)
                self.where.pop(p, None)
                self.first.pop(p, None)
