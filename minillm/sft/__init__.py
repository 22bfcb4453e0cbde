"""Supervised fine-tuning (SFT): a pretrained GPT taught to answer instructions through a chat template.

The recipe (InstructGPT's first stage, Ouyang et al. 2022, arXiv:2203.02155; LIMA, Zhou et al. 2023,
arXiv:2305.11206, for how little data the format needs):
1. add the template's special tokens to the tokenizer and grow the embedding (`template.prepare_for_chat`);
2. render each (prompt, response) pair with the template; the loss counts only the response and its closing
   `<|end|>` (labels -100 elsewhere, `template.encode_chat`);
3. batch by padding or by packing several examples per window with restarting positions and a block-diagonal
   causal mask (`batching`), optionally mixing pretraining windows back in (against forgetting);
4. train with the pretraining loop `minillm.train.train` at a lower learning rate (`finetune`).

Modules: `template` (tokens, embedding, masks), `instructions` (data from the bundled corpora, JSONL),
`batching` (pad / pack / mix), `chat` (streaming replies, sessions, accuracy). The commands are
`minillm sft` and `minillm chat` (`minillm.commands`).

Leaves out: LoRA (chapter 9, `minillm.peft`), preference tuning (RLHF / DPO chapters), NEFTune noise,
multi-turn data beyond what JSONL files bring.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from minillm.sft.batching import SFTData, pack_batch, packing_mask, pad_batch, positions_from_segments
from minillm.sft.chat import ChatSession, accuracy, native_answer, reply, stream
from minillm.sft.instructions import build_instructions, load_jsonl, to_messages
from minillm.sft.template import (
    END,
    IGNORE,
    SPECIAL_TOKENS,
    ChatTokenizer,
    add_chat_tokens,
    encode_chat,
    labels_to_targets,
    prepare_for_chat,
    render,
    resize_token_embeddings,
)
from minillm.train import History, TrainConfig, train

__all__ = [
    "END", "IGNORE", "SPECIAL_TOKENS", "ChatSession", "ChatTokenizer", "SFTData", "accuracy", "add_chat_tokens",
    "build_instructions", "encode_chat", "finetune", "labels_to_targets", "load_jsonl", "native_answer",
    "pack_batch", "packing_mask", "pad_batch", "positions_from_segments", "prepare_for_chat", "render", "reply",
    "resize_token_embeddings", "sft_config", "stream", "to_messages",
]


def sft_config(**overrides: Any) -> TrainConfig:
    """The course's SFT defaults: the pretraining loop's AdamW at half the base model's peak learning rate
    (1e-3 vs 2e-3; 3e-3 erases much of the pretraining in a few dozen steps), a short warm-up, windows of
    256 tokens, no weight decay (a short run from trained weights: decay would only pull them to zero)."""
    cfg = dict(steps=200, batch_size=8, seq_len=256, lr=1e-3, warmup=10, weight_decay=0.0, eval_every=0,
               eval_batches=4)
    return TrainConfig(**{**cfg, **overrides})


def finetune(model: nn.Module, tok: Any, examples: list[dict[str, Any]], cfg: TrainConfig | None = None, *,
             packing: bool = True, mix: Any = None, mix_ratio: float = 0.0) -> tuple[nn.Module, ChatTokenizer, History]:
    """SFT in place: add the chat tokens (if missing), then train on the examples' "train" split.

    Returns (model, chat tokenizer, History); with cfg.out_dir the checkpoint holds the chat tokenizer."""
    model, chat_tok = prepare_for_chat(model, tok)
    data = SFTData(chat_tok, examples, packing=packing, mix=mix, mix_ratio=mix_ratio)
    history = train(model, data, cfg or sft_config())
    return model, chat_tok, history
