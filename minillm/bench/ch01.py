"""Chapter 1 benchmark (tokenization): our byte-level BPE (`minillm.tokenizer.BPETokenizer`) against the Hugging Face
`tokenizers` ByteLevel BPE, trained on the same text with the same GPT-2 pre-tokenization and the same
vocabulary size (256 byte tokens + merges, no special tokens), on English (Shakespeare) and Chinese
(唐诗三百首; 宋诗一百首 held out). Measured: training seconds, compression on held-out text (UTF-8 bytes per
token), encoding throughput, and how many of the two vocabularies' tokens coincide.

`section_tokenizers(quick)` returns the appendix's Markdown section; `tokenizer_sweep(...)` the rows, which
notebook 1.3 shows. Leaves out: GPU numbers for chapter 1 (tokenizer training runs on the CPU on every machine).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from minillm.bench.timer import best_time
from minillm.data import load_corpus
from minillm.utils import markdown_table

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
    play) held out. Chinese: all of 唐诗三百首 to train, 宋诗一百首 held out.
    """
    en = load_corpus("shakespeare")
    n_eval = 20_000 if quick else 100_000
    n_train = n_train_en or (20_000 if quick else 300_000)
    if n_train > len(en) - n_eval:
        raise ValueError(f"n_train_en={n_train} overlaps the held-out tail; use at most {len(en) - n_eval}")
    zh_train = load_corpus("tang300", max_chars=4_000 if quick else None)
    zh_eval = load_corpus("song100", max_chars=2_000 if quick else None)
    return {"English": (en[:n_train], en[-n_eval:]), "Chinese": (zh_train, zh_eval)}


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
        f"{len(en_ev):,}. Chinese: 唐诗三百首 ({len(zh_tr):,} characters), evaluated on 宋诗一百首 "
        f"({len(zh_ev):,} characters). `bytes_per_token` is on the held-out text (higher = better compression); "
        "`train_s` is wall-clock seconds of training (best of 3 runs); `encode_kb_s` is held-out kilobytes "
        "encoded per second (one pass, word caches cold); "
        "`shared_vocab` is the fraction of the vocabulary (as byte strings) the other implementation also "
        "learned.\n\n" + markdown_table(rows, CH1_COLUMNS)
    )
