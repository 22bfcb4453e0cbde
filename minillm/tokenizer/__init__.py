"""Chapter 1, tokenization: byte-level BPE, WordPiece, Unigram (SentencePiece), Chinese vocab extension.

- `patterns`: GPT-2's and GPT-4's pre-tokenization regexes.
- `bpe`: `BPETokenizer` (train / encode / decode / save / load / to_hf), `get_pair_counts`, `merge_pair`.
- `wordpiece`: `WordPiece`, BERT's greedy longest-match-first tokenizer.
- `unigram`: `Unigram`, SentencePiece's Viterbi segmentation under a unigram language model.
- `extend`: `merge_tokenizers`, `resize_embedding`, `tokens_per_char`, `bytes_per_token`.
- `hf`: conversion to Hugging Face `tokenizers` objects, used to check our results against it.
"""

from .bpe import BPETokenizer, get_pair_counts, merge_pair
from .extend import bytes_per_token, merge_tokenizers, resize_embedding, tokens_per_char
from .hf import bytes_to_unicode
from .patterns import GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN
from .unigram import Unigram
from .wordpiece import WordPiece, bert_pre_tokenize

__all__ = [
    "GPT2_SPLIT_PATTERN",
    "GPT4_SPLIT_PATTERN",
    "BPETokenizer",
    "get_pair_counts",
    "merge_pair",
    "WordPiece",
    "bert_pre_tokenize",
    "Unigram",
    "merge_tokenizers",
    "resize_embedding",
    "tokens_per_char",
    "bytes_per_token",
    "bytes_to_unicode",
]
