"""The pre-tokenization regexes of GPT-2 and GPT-4, shared by `bpe` and the Hugging Face converters in `hf`.

A leaf module (it imports nothing), so `bpe` can convert to Hugging Face through `hf` and `hf` can check a
tokenizer's pattern without importing `bpe` back. The patterns need the `regex` module (\\p{L} classes,
possessive quantifiers), not `re`.
"""

from __future__ import annotations

# GPT-2's pre-tokenization (openai/gpt-2, encoder.py): contractions, letters, numbers, other symbols,
# each optionally led by one space; runs of whitespace stay separate.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# cl100k_base (GPT-3.5/4): case-insensitive contractions, numbers of at most 3 digits, newlines kept apart.
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s+"""
)
PATTERNS = {"gpt2": GPT2_SPLIT_PATTERN, "gpt4": GPT4_SPLIT_PATTERN}
