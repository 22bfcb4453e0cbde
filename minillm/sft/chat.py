"""Talking to a fine-tuned model: streaming replies with a KV cache, a chat session, accuracy on instructions.

- `stream(model, ids, params)`: yields one new token id at a time (prefill once, then one token per step with
  the KV cache, as `minillm.generate.generate`), stopping at `<|end|>`, at max_tokens or at the context's end;
  what `minillm chat` prints as it goes.
- `ChatSession`: the conversation so far, rendered with the template and `<|assistant|>` appended (the
  generation prompt); when it no longer fits the context, the oldest exchanges are dropped first.
- `reply(model, tok, prompt)`, `native_answer(model, tok, prompt, stops)` and `accuracy(...)`: greedy answers
  with and without the template, and exact-match accuracy on the instruction sets of `minillm.sft.instructions`.

Leaves out: batched decoding of many chats (left padding), stop strings, system prompts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from minillm.sampling import SamplingParams, sample
from minillm.sft.instructions import to_messages
from minillm.sft.template import ChatTokenizer, encode_chat

GREEDY = SamplingParams(temperature=0.0, max_tokens=64)


@torch.no_grad()
def stream(model: nn.Module, ids: list[int], params: SamplingParams = GREEDY, stop_ids: tuple[int, ...] = (),
           generator: torch.Generator | None = None) -> Iterator[int]:
    """Yield new token ids one by one for the prompt ids; the first id in stop_ids ends it (and is not yielded).

    At most params.max_tokens ids, and never past the model's block_size (the prompt must leave room)."""
    block = model.cfg.block_size
    if not ids or len(ids) >= block:
        raise ValueError(f"the prompt has {len(ids)} tokens; it needs between 1 and {block - 1} (block_size={block})")
    device = next(model.parameters()).device
    n_new = min(params.max_tokens, block - len(ids) + 1)  # the last token is sampled, never fed back
    was_training = model.training
    model.eval()
    caches = model.make_kv_caches(len(ids) + n_new)
    out = torch.tensor([ids], device=device)
    step_input = out
    try:
        for _ in range(n_new):
            logits, _ = model(step_input, kv_caches=caches)
            nxt = sample(logits[:, -1, :], out, params, generator)  # (1,)
            token = int(nxt)
            if token in stop_ids:
                return
            yield token
            out = torch.cat([out, nxt[:, None]], dim=1)
            step_input = nxt[:, None]
    finally:
        model.train(was_training)


def reply(model: nn.Module, tok: ChatTokenizer, prompt: str | list[dict[str, str]],
          params: SamplingParams = GREEDY, generator: torch.Generator | None = None) -> str:
    """The assistant's answer to a prompt (or a list of messages ending with a user turn), up to <|end|>."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    ids, _ = encode_chat(tok, messages, add_generation_prompt=True)
    return tok.decode(list(stream(model, ids, params, (tok.end_id,), generator)))


def native_answer(model: nn.Module, tok: Any, prompt: str, stops: str, max_tokens: int = 64) -> str:
    """Greedy continuation of prompt in the pretraining format, up to the first character of `stops`."""
    stop_ids = tuple(tok.stoi[c] for c in stops if c in tok.stoi)
    ids = tok.encode(prompt)
    return tok.decode(list(stream(model, ids, SamplingParams(temperature=0.0, max_tokens=max_tokens), stop_ids)))


def accuracy(model: nn.Module, tok: Any, examples: list[dict[str, Any]], native: bool = False,
             max_tokens: int = 32) -> float:
    """Exact-match accuracy of greedy answers (stripped) on examples; native=True asks in the pretraining
    format (`example["native"]`, skipped where None) instead of the chat template."""
    hits, n = 0, 0
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    for e in examples:
        if native:
            if e.get("native") is None:
                continue
            got = native_answer(model, tok, e["native"][0], e["native"][1], max_tokens)
        else:
            got = reply(model, tok, to_messages(e)[:-1], params)
        hits += got.strip() == e["response"].strip()
        n += 1
    if n == 0:
        raise ValueError("no examples to score (native=True skips those without a pretraining-format prompt)")
    return hits / n


class ChatSession:
    """A conversation with a chat model: `send(text)` yields the reply's pieces of text as they come.

    The history is kept as messages; `reset()` forgets it. Text the tokenizer cannot encode is dropped (a
    character model knows only its corpus's characters) and reported in `self.dropped`."""

    def __init__(self, model: nn.Module, tok: ChatTokenizer, params: SamplingParams | None = None,
                 generator: torch.Generator | None = None):
        if not isinstance(tok, ChatTokenizer):
            tok = ChatTokenizer(tok.chars)  # raises a one-line error when the chat tokens are missing
        self.model, self.tok, self.generator = model, tok, generator
        self.params = params or SamplingParams(temperature=0.7, top_p=0.9, max_tokens=200)
        self.messages: list[dict[str, str]] = []
        self.dropped = ""

    def reset(self) -> None:
        self.messages = []

    def _prompt_ids(self) -> list[int]:
        """The history with the generation prompt, oldest exchanges dropped until a reply has room."""
        room = min(self.params.max_tokens, self.model.cfg.block_size // 2)
        while True:
            ids, _ = encode_chat(self.tok, self.messages, add_generation_prompt=True)
            if len(ids) + room <= self.model.cfg.block_size or len(self.messages) == 1:
                break
            self.messages = self.messages[2:]  # the oldest user turn and its answer
        if len(ids) >= self.model.cfg.block_size:
            self.messages.pop()
            raise ValueError(f"the message is {len(ids)} tokens, too long for the model's context of "
                             f"{self.model.cfg.block_size}: send a shorter one")
        return ids

    def send(self, text: str) -> Iterator[str]:
        """Add a user turn and return an iterator over the assistant's reply, piece by piece (a token each).

        Raises ValueError now (not while iterating) when the text has no known character or cannot fit."""
        clean = self.tok.known(text)
        self.dropped = "".join(sorted(set(text) - set(clean) - {"\n"}))
        if not clean.strip():
            raise ValueError("the model knows none of these characters: write in English or in 唐诗 characters")
        self.messages.append({"role": "user", "content": clean})
        return self._reply(self._prompt_ids())

    def _reply(self, ids: list[int]) -> Iterator[str]:
        got: list[int] = []
        for token in stream(self.model, ids, self.params, (self.tok.end_id, self.tok.user_id), self.generator):
            got.append(token)
            yield self.tok.decode([token])
        self.messages.append({"role": "assistant", "content": self.tok.decode(got, skip_special=True)})
