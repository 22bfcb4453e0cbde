"""The chat template: special tokens added to a character tokenizer, the embedding grown to match, label masks.

A conversation is rendered as

    <|user|>床前明月光下一句是？<|end|><|assistant|>疑是地上霜<|end|>

`<|user|>`, `<|assistant|>` and `<|end|>` are single tokens that no text can contain: a character tokenizer's
vocabulary is a string, so each special token is stored as one character of Unicode's Private Use Area
(U+E000..U+E002: code points Unicode promises never to assign). The vocabulary grows AFTER the existing ids
(every old id keeps its meaning, chapter 1's vocabulary extension) and the checkpoint's tokenizer state stays a
plain `{"kind": "char", "chars": ...}` (`minillm.data.tokenizer_state`), so a fine-tuned checkpoint loads with
`minillm.checkpoint.load_for_generation` like any other. `ChatTokenizer` shows the names instead of the private
characters, and maps the names typed in `encode(..., allow_special=True)` (the default for training data; chat
input from a person uses allow_special=False so that nobody can forge a turn, the injection Hugging Face's
`split_special_tokens=True` guards against).

`resize_token_embeddings(model, n)` grows `embed_tokens` (and the tied or untied `lm_head`) to n rows; the new rows
are the mean of the old ones (Hewitt 2021, "Initializing New Word Embeddings for Pretrained Language Models"):
the new token's logit is then the average logit, far below the log-sum-exp, so its probability starts tiny and
the model's next-token distribution barely moves (the KL to the old model is bounded), whereas a random row of
the wrong size can dominate or vanish; as an input, the mean row is a vector of the kind the layers have seen.

`encode_chat(tok, messages)` returns (ids, labels) in Hugging Face's convention: labels[t] = ids[t] on the tokens
the loss counts (each assistant reply and the `<|end|>` that closes it, so the model learns to stop), -100
elsewhere (the user's turns and the `<|assistant|>` token the template itself writes), not yet shifted; a
causal LM predicts labels[t + 1] from position t (`labels_to_targets`). This is what InstructGPT-style SFT and
TRL's `assistant_only_loss` / completion-only collator compute (Ouyang et al. 2022, arXiv:2203.02155).

Leaves out: system prompts, tool calls, multi-template support (Jinja chat templates of `transformers`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from minillm.data import CharTokenizer

USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS: tuple[str, ...] = (USER, ASSISTANT, END)
# one Private Use Area code point per special token: the character the CharTokenizer stores for it
PRIVATE: dict[str, str] = {name: chr(0xE000 + i) for i, name in enumerate(SPECIAL_TOKENS)}
ROLES = ("user", "assistant")
IGNORE = -100  # the label cross-entropy skips (PyTorch's and Hugging Face's ignore_index)


class ChatTokenizer(CharTokenizer):
    """A CharTokenizer whose vocabulary holds the chat special tokens (as Private Use Area characters).

    `encode` reads the names (`<|user|>` ...) as the special ids when allow_special; `decode` writes the names
    back (or drops them with skip_special). It is a CharTokenizer, so `minillm.data.tokenizer_state` saves it."""

    def __init__(self, chars: str):
        missing = [name for name, c in PRIVATE.items() if c not in chars]
        if missing:
            raise ValueError(f"the vocabulary lacks the chat tokens {missing}: build it with add_chat_tokens(tok), "
                             "or fine-tune the checkpoint with `minillm sft` first")
        super().__init__(chars)
        self.special_ids = {name: self.stoi[c] for name, c in PRIVATE.items()}
        self.user_id, self.assistant_id, self.end_id = (self.special_ids[n] for n in SPECIAL_TOKENS)

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        """Ids of text; with allow_special the names `<|user|>` etc. become their one id each."""
        if any(c in text for c in PRIVATE.values()):
            raise ValueError("the text holds Private Use Area characters U+E000..U+E002, reserved for chat tokens")
        if allow_special:
            for name, c in PRIVATE.items():
                text = text.replace(name, c)
        return super().encode(text)

    def decode(self, ids: list[int], skip_special: bool = False) -> str:
        text = super().decode(ids)
        for name, c in PRIVATE.items():
            text = text.replace(c, "" if skip_special else name)
        return text

    def known(self, text: str) -> str:
        """text without the characters this vocabulary cannot encode (for free-form chat input)."""
        return "".join(c for c in text if c in self.stoi and c not in PRIVATE.values())


def add_chat_tokens(tok: CharTokenizer) -> ChatTokenizer:
    """tok's vocabulary followed by the chat tokens it lacks: old ids unchanged, new ids vocab_size, +1, ..."""
    if not isinstance(tok, CharTokenizer):
        raise TypeError(f"add_chat_tokens extends a minillm CharTokenizer, got {type(tok).__name__}")
    return ChatTokenizer(tok.chars + "".join(c for c in PRIVATE.values() if c not in tok.stoi))


@torch.no_grad()
def resize_token_embeddings(model: nn.Module, new_vocab_size: int, noise_std: float = 0.0,
                            seed: int = 0) -> nn.Module:
    """Grow a GPT's token embedding (and lm_head, tied or not) to new_vocab_size rows, in place; returns model.

    Old rows are kept; each new row is the mean of the old rows, plus N(0, noise_std^2) noise drawn from a
    generator seeded with `seed` when noise_std > 0. Identical rows are fine when the embedding trains (full SFT),
    but a method that freezes it (LoRA, adapters, prompts: chapter 9) could then never tell the new tokens apart,
    as inputs or, with a tied head, as predictions: noise_std = 0.02 (GPT-2's init scale) separates them.
    model.cfg becomes a copy with the new vocab_size, so checkpoints record the grown shape."""
    emb: nn.Embedding = model.embed_tokens
    old_n, d = emb.weight.shape
    if new_vocab_size < old_n:
        raise ValueError(f"new_vocab_size={new_vocab_size} < the current {old_n}: the vocabulary can only grow")
    if new_vocab_size == old_n:
        return model

    if not noise_std >= 0:
        raise ValueError(f"noise_std must be >= 0 (0: every new row is the mean row), got {noise_std!r}")
    gen = torch.Generator().manual_seed(seed)

    def grown(w: torch.Tensor) -> torch.Tensor:  # (old_n, d) -> (new_n, d)
        new_rows = w.mean(dim=0, keepdim=True).expand(new_vocab_size - old_n, d)
        if noise_std > 0:  # drawn on the CPU so that every device gets the same rows
            new_rows = new_rows + noise_std * torch.randn(new_rows.shape, generator=gen).to(w)
        return torch.cat([w, new_rows], dim=0)

    tied = model.lm_head.weight is emb.weight
    new_emb = nn.Embedding(new_vocab_size, d, device=emb.weight.device, dtype=emb.weight.dtype)
    new_emb.weight.copy_(grown(emb.weight))
    model.embed_tokens = new_emb
    head = nn.Linear(d, new_vocab_size, bias=False, device=emb.weight.device, dtype=emb.weight.dtype)
    if tied:
        head.weight = new_emb.weight  # one tensor again
    else:
        head.weight.copy_(grown(model.lm_head.weight))
    model.lm_head = head
    model.cfg = replace(model.cfg, vocab_size=new_vocab_size)
    return model


def prepare_for_chat(model: nn.Module, tok: CharTokenizer, noise_std: float = 0.0,
                     seed: int = 0) -> tuple[nn.Module, ChatTokenizer]:
    """(model with grown embedding, ChatTokenizer): both steps of adding the template's tokens, in place.

    noise_std, seed: see `resize_token_embeddings` (use noise_std > 0 before a method that freezes the embedding)."""
    chat_tok = tok if isinstance(tok, ChatTokenizer) else add_chat_tokens(tok)
    return resize_token_embeddings(model, max(chat_tok.vocab_size, model.cfg.vocab_size), noise_std, seed), chat_tok


def _check_messages(messages: list[dict[str, Any]]) -> None:
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': 'user'|'assistant', 'content': str}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"message {i} must be {{'role': 'user'|'assistant', 'content': str}}, got {m!r:.80}")


def render(messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> str:
    """The conversation as text with the special tokens' names (what `encode_chat` tokenises)."""
    _check_messages(messages)
    text = "".join(f"{USER if m['role'] == 'user' else ASSISTANT}{m['content']}{END}" for m in messages)
    return text + (ASSISTANT if add_generation_prompt else "")


def encode_chat(tok: ChatTokenizer, messages: list[dict[str, Any]], add_generation_prompt: bool = False,
                allow_special: bool = False) -> tuple[list[int], list[int]]:
    """(ids, labels) of a conversation; labels are -100 except each assistant reply and its closing <|end|>.

    Unshifted, as Hugging Face's `labels=` (the model shifts them: position t predicts labels[t + 1]).
    allow_special: read `<|...|>` names inside the contents as special tokens (off: they must be plain text)."""
    _check_messages(messages)
    ids: list[int] = []
    labels: list[int] = []
    for m in messages:
        body = tok.encode(m["content"], allow_special=allow_special)
        if m["role"] == "user":
            piece = [tok.user_id, *body, tok.end_id]
            ids += piece
            labels += [IGNORE] * len(piece)
        else:
            ids += [tok.assistant_id, *body, tok.end_id]
            labels += [IGNORE, *body, tok.end_id]  # the role token is written by the template, not learned
    if add_generation_prompt:
        ids.append(tok.assistant_id)
        labels.append(IGNORE)
    return ids, labels


def labels_to_targets(labels: list[int] | torch.Tensor) -> list[int] | torch.Tensor:
    """HF labels -> the targets `GPT.forward` takes: targets[t] = labels[t + 1], and -100 at the end."""
    if isinstance(labels, torch.Tensor):
        return torch.cat([labels[..., 1:], torch.full_like(labels[..., :1], IGNORE)], dim=-1)
    return [*labels[1:], IGNORE]
