"""SFT batches: padding, or packing several examples into one window with per-example positions and a
block-diagonal causal mask; optionally mixed with pretraining windows.

Padding (Hugging Face's `DataCollatorForSeq2Seq` style, to the longest row of the batch): each row is one example,
right-padded with `<|end|>` and targets -100. Right padding needs no attention mask in a causal model: a real
token never attends to a later pad. The pads still cost compute: with examples of 20 to 250 tokens most of
the batch can be padding.

Packing: examples are laid end to end in windows of `seq_len` tokens. To make a window compute exactly what
the examples would alone, (1) each example's positions restart at 0 (`GPT.forward(positions=...)`), and (2) a
token attends only to earlier tokens of its own example: the mask is block-diagonal with a causal block per
example (`packing_mask(segment_ids)`), what FlashAttention's varlen kernels and HF's
`DataCollatorWithFlattening` (position_ids restart per example) compute without materialising it (Krell et
al. 2021, "Efficient Sequence Packing without Cross-contamination", arXiv:2107.02027). Each example's targets
end with -100, so no token learns to predict the next example's first token. The unfilled tail of a window is
its own segment of pads (targets -100), so no row of the mask is empty.

`SFTData.batch(split, B, T, generator)` has the shape `minillm.train.train` calls: it returns (x, y) when
padding and (x, y, {"positions", "mask"}) when packing, the extra forward arguments `train` passes on.

Leaves out: packing by sorted length (first-fit decreasing; first fit in draw order is used), varlen kernels that skip
the masked blocks (the mask here is dense, (B, 1, T, T)), loss weighting per example (the loss is the mean over
counted tokens of the batch, as in TRL and HF).
"""

from __future__ import annotations

from typing import Any

import torch

from minillm.data import MixedData, load_corpus
from minillm.pretrained import read_meta
from minillm.sft.instructions import to_messages
from minillm.sft.template import IGNORE, ChatTokenizer, encode_chat, labels_to_targets

Encoded = tuple[list[int], list[int]]  # (ids, targets): targets already shifted for GPT.forward


def encode_examples(tok: ChatTokenizer, examples: list[dict[str, Any]]) -> list[Encoded]:
    """Each example's (ids, targets) for GPT.forward: the chat template, labels shifted by one."""
    out = []
    for e in examples:
        ids, labels = encode_chat(tok, to_messages(e))
        out.append((ids, labels_to_targets(labels)))
    return out


def packing_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) segment ids -> (B, 1, T, T) bool: query i may attend key j iff j <= i and both are in one segment."""
    T = segment_ids.shape[-1]
    same = segment_ids[:, :, None] == segment_ids[:, None, :]  # (B, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=segment_ids.device).tril()
    return (same & causal)[:, None]  # (B, 1, T, T): one mask for every head


def positions_from_segments(segment_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) segment ids (equal ids contiguous) -> (B, T) positions restarting at 0 at each segment's start."""
    B, T = segment_ids.shape
    idx = torch.arange(T, device=segment_ids.device).expand(B, T)
    new = torch.ones_like(segment_ids, dtype=torch.bool)
    new[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]  # True where a segment starts
    start = torch.where(new, idx, torch.zeros_like(idx)).cummax(dim=1).values  # (B, T) index of the segment start
    return idx - start


def pad_batch(examples: list[Encoded], pad_id: int, seq_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One example per row, cut to seq_len, right-padded to the longest row: x (B, L), y (B, L)."""
    rows = [(ids[:seq_len], tg[:seq_len]) for ids, tg in examples]
    L = max(len(ids) for ids, _ in rows)
    x = torch.full((len(rows), L), pad_id, dtype=torch.long)
    y = torch.full((len(rows), L), IGNORE, dtype=torch.long)
    for b, (ids, tg) in enumerate(rows):
        x[b, : len(ids)] = torch.tensor(ids)
        y[b, : len(tg)] = torch.tensor(tg)
    return x, y


def pack_batch(examples: list[Encoded], seq_len: int, pad_id: int, n_rows: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Examples (each cut to seq_len) packed first-fit into rows of seq_len tokens: each goes into the first row
    with room for it, else opens a new row (with n_rows rows at most: an example that fits nowhere is dropped).

    Returns x, y (B, T) and {"positions": (B, T), "mask": (B, 1, T, T)}; missing rows (n_rows) are all padding.
    Segment ids count the examples of a row from 0; the padded tail gets -1. First fit, not "start a new row
    when the next example does not fit the last one": long examples then no longer strand half-empty rows."""
    rows: list[list[Encoded]] = []
    room: list[int] = []  # free tokens left in each row
    for ids, tg in examples:
        ids, tg = ids[:seq_len], tg[:seq_len]
        r = next((i for i, free in enumerate(room) if len(ids) <= free), None)
        if r is None:
            if n_rows is not None and len(rows) == n_rows:
                continue  # no room anywhere: dropped
            rows.append([])
            room.append(seq_len)
            r = len(rows) - 1
        rows[r].append((ids, tg))
        room[r] -= len(ids)
    if n_rows is not None:
        rows += [[] for _ in range(n_rows - len(rows))]
    B = len(rows)
    x = torch.full((B, seq_len), pad_id, dtype=torch.long)
    y = torch.full((B, seq_len), IGNORE, dtype=torch.long)
    seg = torch.full((B, seq_len), -1, dtype=torch.long)
    for b, row in enumerate(rows):
        t = 0
        for s, (ids, tg) in enumerate(row):
            x[b, t: t + len(ids)], y[b, t: t + len(ids)] = torch.tensor(ids), torch.tensor(tg)
            seg[b, t: t + len(ids)] = s
            t += len(ids)
    return x, y, {"positions": positions_from_segments(seg), "mask": packing_mask(seg)}


def pretraining_mix(tok: Any, weights: dict[str, float] | None = None) -> MixedData:
    """The pretraining corpora as MixedData (90/10 split as in pretraining), for replay during SFT. Default
    weights: the base model's recipe, as recorded in its meta.json. Corpora with characters tok lacks are left
    out (a model trained on one corpus replays that one)."""
    weights = dict(weights or read_meta()["mixture"])
    texts = {n: load_corpus(n) for n in weights}
    keep = {n: t for n, t in texts.items() if set(t) <= set(tok.stoi)}
    if not keep:
        raise ValueError(f"the tokenizer cannot encode any of the corpora {list(weights)}: no pretraining data to mix")
    return MixedData(keep, tok, {n: weights[n] for n in keep})


def n_tokens(examples: list[Encoded], seq_len: int) -> int:
    """The real (non-padding) tokens the examples put into a batch of seq_len-token rows."""
    return sum(min(len(ids), seq_len) for ids, _ in examples)


class SFTData:
    """Instruction examples as batches for `minillm.train.train`, padded or packed, optionally mixed.

    split: "train" draws from the examples whose split is "train"; "val" from "heldout" ones (a loss on
    instructions SFT never trains on). mix (a `minillm.data.MixedData` or `TokenData`) with mix_ratio p: about p
    of the rows (of the packed windows, or of the padded rows) are pretraining windows instead (each one segment,
    every token counted), the replay that limits forgetting (e.g. InstructGPT's PPO-ptx, Ouyang et al. 2022)."""

    def __init__(self, tok: ChatTokenizer, examples: list[dict[str, Any]], packing: bool = True,
                 mix: Any = None, mix_ratio: float = 0.0):
        if not 0.0 <= mix_ratio < 1.0 or (mix_ratio > 0 and mix is None):
            raise ValueError(f"mix_ratio must be in [0, 1) and needs mix= pretraining data, got {mix_ratio}")
        self.tokenizer, self.packing, self.mix, self.mix_ratio = tok, packing, mix, mix_ratio
        self.splits = {"train": encode_examples(tok, [e for e in examples if e.get("split", "train") == "train"]),
                       "val": encode_examples(tok, [e for e in examples if e.get("split") == "heldout"])}
        if not self.splits["train"]:
            raise ValueError("no training examples: every example has a split other than 'train'")
        if not self.splits["val"]:
            self.splits["val"] = self.splits["train"]  # e.g. a JSONL file without a held-out part

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def batch(self, split: str, batch_size: int, seq_len: int, generator: torch.Generator | None = None):
        if split not in self.splits:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        pool = self.splits[split]
        n_mix = int(torch.binomial(torch.tensor(float(batch_size)), torch.tensor(self.mix_ratio),
                                   generator=generator)) if self.mix_ratio else 0
        n_mix = min(n_mix, batch_size - 1)  # at least one row of instructions
        n_sft = batch_size - n_mix
        pad = self.tokenizer.end_id
        if self.packing:
            # enough examples to fill n_sft windows: about seq_len / mean length each, drawn with replacement
            mean_len = sum(len(i) for i, _ in pool[:256]) / min(len(pool), 256)
            n_draw = max(n_sft * (int(seq_len / mean_len) + 2), 1)
            draw = torch.randint(len(pool), (n_draw,), generator=generator).tolist()
            x, y, kw = pack_batch([pool[i] for i in draw], seq_len, pad, n_rows=n_sft)
        else:
            draw = torch.randint(len(pool), (n_sft,), generator=generator).tolist()
            x, y = pad_batch([pool[i] for i in draw], pad, seq_len)
            kw = {}
        if n_mix:
            px, py = self.mix.batch(split, n_mix, x.shape[1], generator)  # (n_mix, L) whole windows
            if self.packing:
                pos = torch.arange(seq_len).expand(n_mix, seq_len)
                kw = {"positions": torch.cat([kw["positions"], pos]),
                      "mask": torch.cat([kw["mask"], packing_mask(torch.zeros(n_mix, seq_len, dtype=torch.long))])}
            x, y = torch.cat([x, px]), torch.cat([y, py])
        return (x, y, kw) if kw else (x, y)
