"""The course corpora, shipped inside the package so nothing is ever downloaded.

| name | what | size |
|---|---|---|
| `shakespeare` | 11 plays, Project Gutenberg texts without headers (ASCII) | 1.39 MB |
| `tang300` | 唐诗三百首: title line, author line, poem lines; blank line between poems | 29,577 characters |
| `song100` | 宋词一百首, same format | 9,659 characters |

All three are in the public domain; where each file came from is in `book/howto.md`.
Later chapters add the training data loader (chapter 6) to this module.
"""

from __future__ import annotations

from pathlib import Path

CORPORA: dict[str, str] = {
    "shakespeare": "11 Shakespeare plays (English, ASCII)",
    "tang300": "唐诗三百首, 313 Tang poems (Chinese)",
    "song100": "宋词一百首, 95 Song ci poems (Chinese)",
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
