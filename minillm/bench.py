"""Benchmarks whose Markdown tables make the book's appendix "Measured results".

    python -m minillm.bench [--out FILE.md] [--quick]

Each chapter that has something worth measuring adds one section function to `SECTIONS`; a section
returns Markdown (a heading, a sentence on what was measured, a table). `--quick` shrinks every section
to a smoke test of a few seconds (the unit tests use it); numbers from a quick run are not for the book.

Chapter 1 (tokenization): our byte-level BPE (`minillm.tokenizer.BPETokenizer`) against the Hugging Face
`tokenizers` ByteLevel BPE, trained on the same text with the same GPT-2 pre-tokenization and the same
vocabulary size (256 byte tokens + merges, no special tokens), on English (Shakespeare) and Chinese
(唐诗三百首; 宋词一百首 held out). Measured: training seconds, compression on held-out text (UTF-8 bytes per
token), encoding throughput, and how many of the two vocabularies' tokens coincide.

Leaves out: GPU numbers for chapter 1 (tokenizer training runs on the CPU on every machine).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from minillm.bench_ch03 import section_norms
from minillm.bench_ch05 import section_attention
from minillm.bench_ch06 import section_generation, section_training
from minillm.data import load_corpus

# ------------------------------------------------------------------ helpers shared by the sections


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub-Markdown table of `rows` (dicts) in the given column order.

    Floats below 100 get 3 significant digits (trailing zeros kept); ints and larger floats are rounded
    to whole numbers with thousands separators."""
    if not columns:
        raise ValueError("markdown_table needs at least one column")

    def fmt(v: Any) -> str:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, int) or abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:#.3g}"  # '#' keeps trailing zeros: 1.0 -> 1.00

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        missing = [c for c in columns if c not in r]
        if missing:
            raise ValueError(f"row {r} has no column {missing[0]!r}")
        lines.append("| " + " | ".join(fmt(r[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo on Linux, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version_of(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, str]:
    """What the numbers were measured on: CPU, cores, torch, device, date."""
    dev = os.environ.get("MINILLM_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = torch.cuda.get_device_name(0) if dev.startswith("cuda") and torch.cuda.is_available() else "none"
    return {
        "date": _dt.date.today().isoformat(),
        "cpu": _cpu_name(),
        "cores": str(os.cpu_count()),
        "torch threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "tokenizers": _version_of("tokenizers"),
        "device": dev,
        "gpu": gpu,
    }


# ------------------------------------------------------------------ chapter 1: tokenizers


def train_hf_bpe(text: str, vocab_size: int) -> Any:
    """Hugging Face `tokenizers` byte-level BPE set up like ours: GPT-2 regex split, 256 byte tokens first,
    no special tokens, so `vocab_size` = 256 + number of merges for both."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 256:
        raise ValueError(f"a byte-level vocabulary needs at least the 256 byte tokens; got vocab_size={vocab_size}")
    tok = Tokenizer(models.BPE())
    # add_prefix_space=False: our BPETokenizer does not prepend a space either; use_regex: GPT-2 pattern
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, even unseen ones
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer=trainer)  # one document, as our trainer sees it
    return tok


def encode_ids(tok: Any, text: str) -> list[int]:
    """Token ids of `text` for a minillm tokenizer or a `tokenizers.Tokenizer`."""
    if type(tok).__module__.startswith("tokenizers"):
        return tok.encode(text, add_special_tokens=False).ids
    return tok.encode(text)


def vocab_bytes(tok: Any) -> set[bytes]:
    """The set of byte strings a byte-level tokenizer's vocabulary holds (minillm or HF ByteLevel)."""
    if type(tok).__module__.startswith("tokenizers"):
        from minillm.tokenizer.viz import gpt2_unicode_to_byte

        table = gpt2_unicode_to_byte()
        return {bytes(table[c] for c in s) for s in tok.get_vocab()}
    return set(tok.vocab.values())


def compression(tok: Any, text: str) -> dict[str, float]:
    """Counts for one text: UTF-8 bytes, characters, tokens, bytes/token, tokens/char."""
    if not text:
        raise ValueError("compression needs a non-empty text")
    ids = encode_ids(tok, text)
    nb = len(text.encode("utf-8"))
    return {"bytes": nb, "chars": len(text), "tokens": len(ids), "bytes_per_token": nb / len(ids),
            "tokens_per_char": len(ids) / len(text)}


def tokenizer_corpora(quick: bool = False, n_train_en: int | None = None) -> dict[str, tuple[str, str]]:
    """{corpus label: (training text, held-out text)} for chapter 1.

    English: a prefix of the Shakespeare file to train, its last 100,000 characters (the end of the last
    play) held out. Chinese: all of 唐诗三百首 to train, 宋词一百首 held out.
    """
    en = load_corpus("shakespeare")
    n_eval = 20_000 if quick else 100_000
    n_train = n_train_en or (20_000 if quick else 300_000)
    if n_train > len(en) - n_eval:
        raise ValueError(f"n_train_en={n_train} overlaps the held-out tail; use at most {len(en) - n_eval}")
    zh_train = load_corpus("tang300", max_chars=4_000 if quick else None)
    zh_eval = load_corpus("song100", max_chars=2_000 if quick else None)
    return {"English": (en[:n_train], en[-n_eval:]), "Chinese": (zh_train, zh_eval)}


def best_time(fn: Callable[[], Any], repeats: int = 1) -> tuple[Any, float]:
    """Run `fn` `repeats` times; return its (last) result and the smallest wall-clock time in seconds."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def tokenizer_sweep(
    corpora: dict[str, tuple[str, str]],
    vocab_sizes: Sequence[int],
    pattern: str = "gpt2",
    progress: Callable[[str], None] | None = None,
    repeats: int = 1,
) -> list[dict[str, Any]]:
    """Train minillm's and HF's byte-level BPE for every corpus and vocab size; one row per (corpus, impl, size).

    Training times are the best of `repeats` runs (the minimum is the least disturbed by other work on the
    machine); encoding is timed once, cold, because both libraries cache the words they have encoded.

    Row fields: corpus, impl, vocab_size, train_s, eval_bytes, eval_tokens, bytes_per_token (held-out),
    encode_kb_s (held-out KB encoded per second), shared_vocab (fraction of the vocabulary, as byte
    strings, that the other implementation also learned).
    """
    from minillm.tokenizer import BPETokenizer

    if not vocab_sizes or min(vocab_sizes) < 256:
        raise ValueError(f"vocab_sizes must be non-empty and each >= 256, got {list(vocab_sizes)}")
    rows = []
    for corpus, (train, held) in corpora.items():
        for v in vocab_sizes:
            toks, secs = {}, {}
            toks["minillm"], secs["minillm"] = best_time(
                lambda train=train, v=v: BPETokenizer(pattern=pattern).train(train, v), repeats)
            toks["tokenizers (HF)"], secs["tokenizers (HF)"] = best_time(
                lambda train=train, v=v: train_hf_bpe(train, v), repeats)
            vocabs = {k: vocab_bytes(t) for k, t in toks.items()}
            for impl, tok in toks.items():
                # one cold pass: both tokenizers cache encoded words, so a repeat would time the cache
                c, enc_s = best_time(lambda tok=tok, held=held: compression(tok, held), 1)
                other = vocabs["tokenizers (HF)" if impl == "minillm" else "minillm"]
                rows.append({
                    "corpus": corpus, "impl": impl, "vocab_size": len(vocabs[impl]), "train_s": secs[impl],
                    "eval_bytes": c["bytes"], "eval_tokens": c["tokens"], "bytes_per_token": c["bytes_per_token"],
                    "encode_kb_s": c["bytes"] / 1000 / max(enc_s, 1e-9),
                    "shared_vocab": len(vocabs[impl] & other) / len(vocabs[impl]),
                })
            if progress:
                progress(f"{corpus} vocab {v}: minillm {secs['minillm']:.2f} s, HF {secs['tokenizers (HF)']:.2f} s")
    return rows


CH1_COLUMNS = ["corpus", "impl", "vocab_size", "train_s", "bytes_per_token", "eval_tokens", "encode_kb_s",
               "shared_vocab"]


def section_tokenizers(quick: bool = False) -> str:
    """Chapter 1: minillm BPE vs HF tokenizers BPE, compression and speed by vocabulary size."""
    sizes = [300, 512] if quick else [300, 512, 1024, 2048, 4096]
    corpora = tokenizer_corpora(quick)
    rows = tokenizer_sweep(corpora, sizes, progress=lambda s: print("  " + s, file=sys.stderr, flush=True),
                           repeats=1 if quick else 3)
    (en_tr, en_ev), (zh_tr, zh_ev) = corpora["English"], corpora["Chinese"]
    return (
        "## Chapter 1: byte-level BPE, minillm vs Hugging Face tokenizers\n\n"
        f"Both trained on the same text with the GPT-2 split pattern, vocab = 256 bytes + merges, no special "
        f"tokens. English: first {len(en_tr):,} characters of the Shakespeare file, evaluated on its last "
        f"{len(en_ev):,}. Chinese: 唐诗三百首 ({len(zh_tr):,} characters), evaluated on 宋词一百首 "
        f"({len(zh_ev):,} characters). `bytes_per_token` is on the held-out text (higher = better compression); "
        "`train_s` is wall-clock seconds of training (best of 3 runs); `encode_kb_s` is held-out kilobytes "
        "encoded per second (one pass, word caches cold); "
        "`shared_vocab` is the fraction of the vocabulary (as byte strings) the other implementation also "
        "learned.\n\n" + markdown_table(rows, CH1_COLUMNS)
    )


# ------------------------------------------------------------------ the command line

# (name, function(quick) -> markdown); later chapters append theirs
SECTIONS: list[tuple[str, Callable[[bool], str]]] = [
    ("tokenizers", section_tokenizers),
    ("norms", section_norms),
    ("attention", section_attention),
    ("training", section_training),
    ("generation", section_generation),
]


def run(quick: bool = False, only: Sequence[str] | None = None) -> str:
    """All sections (or those named in `only`) as one Markdown document with the machine description."""
    known = [n for n, _ in SECTIONS]
    bad = [n for n in (only or []) if n not in known]
    if bad:
        raise ValueError(f"unknown section {bad[0]!r}; choose from {known}")
    info = machine_info()
    head = "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()) + (" (quick run)" if quick else "") + "\n\n"
    parts = [fn(quick) for name, fn in SECTIONS if not only or name in only]
    return head + "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m minillm.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="also write the Markdown to this file")
    ap.add_argument("--quick", action="store_true", help="tiny inputs: a smoke test, not numbers for the book")
    ap.add_argument("--only", nargs="*", metavar="SECTION", help=f"sections to run: {[n for n, _ in SECTIONS]}")
    args = ap.parse_args(argv)
    try:
        md = run(args.quick, args.only)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(md)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
