"""Extending an English tokenizer with Chinese tokens, and growing the embedding to match.

An English-trained byte-level BPE splits each Chinese character (3 UTF-8 bytes) into 1-3 tokens, so
Chinese text costs several tokens per character: slower training and inference, shorter context.
The recipe of Chinese-LLaMA (Cui et al. 2023, "Efficient and Effective Text Encoding for Chinese LLaMA
and Alpaca", section 2.2) is: train a tokenizer on Chinese text, add its tokens that the original
vocab lacks AFTER the original ones (so every old id keeps its meaning), then resize the embedding
(and LM head) and continue pre-training.

Implements
- `merge_tokenizers(base, extra)`: base's merges, then extra's merges whose result base lacks
  (compared by bytes, so ids of the two tokenizers need not agree).
- `resize_embedding(emb, new_tok, old_tok)`: old rows copied; each new token's row is the mean of the
  rows of the old tokens that the OLD tokenizer splits it into (a common, better-than-random init).
- `tokens_per_char`, `bytes_per_token`: compression measures to compare tokenizers on a text.

Leaves out: merging SentencePiece models (Chinese-LLaMA merges `.model` protobufs; the idea is the same),
resizing the LM head (`resize_embedding` works on its weight the same way when it is tied).
"""

from __future__ import annotations

import copy

import torch

from .bpe import BPETokenizer


def merge_tokenizers(base: BPETokenizer, extra: BPETokenizer) -> BPETokenizer:
    """A new tokenizer: base's merges unchanged, then each merge of `extra` that makes new bytes."""
    if not isinstance(base, BPETokenizer) or not isinstance(extra, BPETokenizer):
        raise TypeError("merge_tokenizers needs two BPETokenizer objects")
    merged = copy.deepcopy(base)
    by_bytes = {}  # bytes -> id in the merged tokenizer (first id wins if base has duplicates)
    for i, b in merged.vocab.items():
        by_bytes.setdefault(b, i)
    for a, b in extra.merges:
        left, right = extra.vocab[a], extra.vocab[b]
        if left + right in by_bytes:
            continue  # base already has this token (maybe built from a different pair)
        # both halves exist: they are bytes or results of earlier extra merges (added or already in base)
        new_id = 256 + len(merged.merges)
        merged.merges.append((by_bytes[left], by_bytes[right]))
        by_bytes[left + right] = new_id
    clash = {s: i for s, i in merged.special_tokens.items() if 256 + len(base.merges) <= i < 256 + len(merged.merges)}
    if clash:
        raise ValueError(
            f"base's special tokens {clash} have ids that the appended merges need "
            f"({256 + len(base.merges)}..{255 + len(merged.merges)}); give them ids >= {256 + len(merged.merges)}"
        )
    merged._rebuild()
    return merged


def resize_embedding(emb: torch.nn.Embedding, new_tok: BPETokenizer, old_tok: BPETokenizer) -> torch.nn.Embedding:
    """An embedding for `new_tok`: rows of old ids copied, each new token = mean of its old pieces' rows.

    New special tokens (and unused ids) get the mean of all old rows.
    """
    if not isinstance(emb, torch.nn.Embedding):
        raise TypeError(f"emb must be a torch.nn.Embedding, got {type(emb).__name__}")
    old_n = emb.num_embeddings
    if old_n < old_tok.vocab_size:
        raise ValueError(f"emb has {old_n} rows but the old tokenizer has {old_tok.vocab_size} ids")
    for i, b in old_tok.vocab.items():
        if new_tok.vocab.get(i) != b:
            raise ValueError(f"id {i} means different bytes in new_tok and old_tok; merge with merge_tokenizers()")
    new_n = max(new_tok.vocab_size, old_n)
    w_old = emb.weight.detach()
    w = w_old.mean(dim=0, keepdim=True).repeat(new_n, 1)  # (new_n, dim): default row = mean of all rows
    w[:old_n] = w_old
    for i, b in new_tok.vocab.items():
        if i not in old_tok.vocab:
            parts = old_tok.encode_bytes(b)  # how the old tokenizer would have spelled this token
            w[i] = w_old[parts].mean(dim=0)
    out = torch.nn.Embedding(new_n, emb.embedding_dim, padding_idx=emb.padding_idx,
                             device=w_old.device, dtype=w_old.dtype)
    with torch.no_grad():
        out.weight.copy_(w)
    out.weight.requires_grad_(emb.weight.requires_grad)
    return out


def _n_tokens(tok, text: str) -> int:
    if not isinstance(text, str) or not text:
        raise ValueError("text must be a non-empty str")
    return len(tok.encode(text))


def tokens_per_char(tok, text: str) -> float:
    """Tokens per Unicode character (lower = better compression). Any object with .encode(text) -> ids."""
    return _n_tokens(tok, text) / len(text)


def bytes_per_token(tok, text: str) -> float:
    """UTF-8 bytes per token (higher = better compression); 1.0 means no merge was used at all."""
    return len(text.encode("utf-8")) / _n_tokens(tok, text)
