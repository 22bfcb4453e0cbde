"""Instruction data built from the bundled corpora, in Chinese and English, and JSONL files of your own.

Each example is a dict {"prompt", "response", "task", "lang", "split", "native"}:

| task | prompt | response |
|---|---|---|
| `author` | 《静夜思》作者是谁？ | 李白 |
| `write` | 以《静夜思》为题作诗。 | the poem's lines |
| `next` | “床前明月光”下一句是？ | 疑是地上霜 |
| `play` | Which play is this line from? To be, or not to be... | Hamlet |
| `next_en` | What line comes after this one? ... | the next line of the speech |
| `reply` | Hor.: <a speech> / Answer as Ham. | the next speech |

The Chinese prompts use only characters the base model's tokenizer knows (it has no 的, 什 or 么: it read only
Tang and Song poems and Shakespeare), so they are phrased in a classical register.

`split` says what the base model and the SFT run saw: the base model was pretrained on the first 90% of each
corpus (`minillm.data.MixedData`); items from there are divided, by poem or by speech, into "train" (SFT
examples) and "heldout" (instructions SFT never shows, about text pretraining did show); items from the last
10% are "unseen" (neither saw them: no fine-tuning can know the author of a poem it never read).
`native` is the same question in the pretraining format, (prompt, stop characters), e.g. ("《静夜思》\\n作者：",
"\\n") for `author`: what measures the base model's knowledge without a template (any stop character ends the
answer); None where the corpus has no such format (`play`, `reply`).

Leaves out: instruction data written by people (Alpaca, BELLE, ...), deduplication and quality filters.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from minillm.data import load_corpus, poems

PLAYS = {  # the title line in the corpus -> the name an answer uses
    "HAMLET, PRINCE OF DENMARK": "Hamlet", "MACBETH": "Macbeth", "THE TRAGEDY OF KING LEAR": "King Lear",
    "OTHELLO, THE MOOR OF VENICE": "Othello", "ROMEO AND JULIET": "Romeo and Juliet",
    "JULIUS CAESAR": "Julius Caesar", "THE TEMPEST": "The Tempest",
    "A MIDSUMMER NIGHT'S DREAM": "A Midsummer Night's Dream", "THE MERCHANT OF VENICE": "The Merchant of Venice",
    "TWELFTH NIGHT; OR, WHAT YOU WILL": "Twelfth Night", "MUCH ADO ABOUT NOTHING": "Much Ado About Nothing",
}
TASKS = ("author", "write", "next", "play", "next_en", "reply")
CLAUSE_END = "，。？！；、\n"  # the characters that end a clause of a poem
PRETRAIN_FRACTION = 0.9  # the base model read the first 90% of each corpus (MixedData's val_fraction = 0.1)


def _pretrain_split(offset: int, length: int, total: int, key: str, heldout: float, seed: int) -> str:
    """'unseen' if the item reaches into the last 10% of its corpus, else 'heldout' / 'train' by a seeded draw."""
    if offset + length > int(total * PRETRAIN_FRACTION):
        return "unseen"
    return "heldout" if random.Random(f"{seed}:{key}").random() < heldout else "train"


def _example(prompt: str, response: str, task: str, lang: str, split: str, native: tuple[str, str] | None
             ) -> dict[str, Any]:
    return {"prompt": prompt, "response": response, "task": task, "lang": lang, "split": split, "native": native}


def poem_instructions(name: str = "tang300", heldout: float = 0.2, seed: int = 0) -> list[dict[str, Any]]:
    """author / write / next questions about each poem of a Chinese corpus (one split per poem)."""
    text = load_corpus(name)
    out = []
    for poem in poems(name):
        lines = poem.split("\n")
        title, author, body = lines[0], lines[1].removeprefix("作者："), [x for x in lines[2:] if x.strip()]
        if not body:
            continue
        split = _pretrain_split(text.find(poem), len(poem), len(text), title, heldout, seed)
        head = f"{title}\n作者：{author}\n"
        out.append(_example(f"{title}作者是谁？", author, "author", "zh", split, (f"{title}\n作者：", "\n")))
        out.append(_example(f"以{title}为题作诗。", "\n".join(body), "write", "zh", split, (head, "《")))
        # the first pair of clauses of the poem: "床前明月光，疑是地上霜。" -> ask for the second
        clauses = [c for c in re.split(r"[，。？！；、]", body[0]) if c]
        if len(clauses) >= 2:
            native = (head + body[0][: len(clauses[0]) + 1], CLAUSE_END)  # "...床前明月光，" -> "疑是地上霜"
            out.append(_example(f"“{clauses[0]}”下一句是？", clauses[1], "next", "zh", split, native))
    return out


def speeches() -> list[dict[str, Any]]:
    """Shakespeare's speeches in order: {"play", "speaker", "lines", "offset"} (stage directions dropped)."""
    text = load_corpus("shakespeare")
    out, play = [], None
    offset = 0
    for block in text.split("\n\n"):
        start = offset
        offset += len(block) + 2
        rows = block.strip("\n").split("\n")
        if rows[0].strip() in PLAYS:
            play = PLAYS[rows[0].strip()]
            continue
        speaker = rows[0].strip()
        lines = [r.strip() for r in rows[1:] if r.strip() and not r.strip().startswith("[")]
        # a speech: an abbreviated name ending in "." on its own line, then verse or prose
        if play and lines and speaker.endswith(".") and len(speaker) <= 24 and not speaker.startswith(("ACT", "Scene")):
            out.append({"play": play, "speaker": speaker, "lines": lines, "offset": start})
    return out


def shakespeare_instructions(heldout: float = 0.2, seed: int = 0, max_examples: int = 1200) -> list[dict[str, Any]]:
    """play / next_en / reply questions about Shakespeare's speeches, at most max_examples (a seeded sample)."""
    total = len(load_corpus("shakespeare"))
    sp = speeches()
    out = []
    for i, s in enumerate(sp):
        split = _pretrain_split(s["offset"], sum(len(x) + 1 for x in s["lines"]), total, f"sp{i}", heldout, seed)
        first = s["lines"][0]
        if 25 <= len(first) <= 80:
            out.append(_example(f"Which play is this line from? {first}", s["play"], "play", "en", split, None))
        if len(s["lines"]) >= 2 and 20 <= len(first) <= 80:
            out.append(_example(f"What line comes after this one? {first}", s["lines"][1], "next_en", "en", split,
                                (f"{s['speaker']}\n{first}\n", "\n")))
        prev = sp[i - 1] if i else None
        if prev and prev["play"] == s["play"] and len(prev["lines"]) <= 3 and len(s["lines"]) <= 3:
            said = " ".join(prev["lines"])
            out.append(_example(f"{prev['speaker']}: {said}\nAnswer as {s['speaker']}", "\n".join(s["lines"]),
                                "reply", "en", split, None))
    rng = random.Random(seed)
    rng.shuffle(out)
    return sorted(out[:max_examples], key=lambda e: e["task"])


def build_instructions(heldout: float = 0.2, seed: int = 0, max_english: int = 1200) -> list[dict[str, Any]]:
    """The course's instruction set: tang300 + song100 questions, then Shakespeare's (about half and half)."""
    return (poem_instructions("tang300", heldout, seed) + poem_instructions("song100", heldout, seed)
            + shakespeare_instructions(heldout, seed, max_english))


def to_messages(example: dict[str, Any]) -> list[dict[str, str]]:
    """An example's chat messages: the prompt as the user turn, the response as the assistant's."""
    if "messages" in example:
        return example["messages"]
    return [{"role": "user", "content": example["prompt"]}, {"role": "assistant", "content": example["response"]}]


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Examples from a JSONL file: one {"prompt": ..., "response": ...} or {"messages": [...]} object a line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no data file at {path}: give a JSONL file, or leave --data out for the built-in set")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n} is not JSON ({e.msg}): write one object per line") from None
        ok_pair = isinstance(obj, dict) and isinstance(obj.get("prompt"), str) and isinstance(obj.get("response"), str)
        ok_chat = isinstance(obj, dict) and isinstance(obj.get("messages"), list) and any(
            isinstance(m, dict) and m.get("role") == "assistant" for m in obj["messages"])
        if not (ok_pair or ok_chat):
            raise ValueError(f"{path}:{n} needs string fields \"prompt\" and \"response\", or \"messages\" with an "
                             "assistant turn")
        out.append({**obj, "split": obj.get("split", "train"), "task": obj.get("task", "jsonl")})
    if not out:
        raise ValueError(f"{path} holds no examples")
    return out
