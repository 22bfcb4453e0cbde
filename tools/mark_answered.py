"""Mark interview questions as answered in book/interview_index.md.

    python tools/mark_answered.py NOTEBOOK "TITLE" "中文 question" ["中文 question" ...]

NOTEBOOK is the notebook's path from the repository root (notebooks/03_normalization/01_layernorm_rmsnorm.ipynb),
TITLE the link text ("3.1 LayerNorm and RMSNorm"). Each question must match the 中文 cell of a row exactly
(after stripping spaces at the ends); a question that matches no row, or more than one row in different
groups, is an error, so a typo never passes silently. The "N answered so far" line is recounted.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

INDEX = Path(__file__).resolve().parent.parent / "book" / "interview_index.md"
COUNT = re.compile(r"\*\*(\d+) questions, (\d+) answered so far\.\*\*")


def mark(text: str, notebook: str, title: str, questions: list[str]) -> str:
    link = f"../{notebook}"
    answer = f"✅ [{title}]({link}) · [answer card]({link}#answer-cards)"
    lines = text.split("\n")
    for q in questions:
        hits = []
        for i, line in enumerate(lines):
            cells = line.split("|")
            # | # | 中文 | English | Answered in |  -> ['', ' # ', ' 中文 ', ' English ', ' Answered in ', '']
            if len(cells) == 6 and cells[2].strip() == q.strip():
                hits.append(i)
        if not hits:
            raise SystemExit(f"no row of {INDEX.name} has the question {q!r}: copy it from the index exactly")
        for i in hits:
            cells = lines[i].split("|")
            cells[4] = f" {answer} "
            lines[i] = "|".join(cells)
    text = "\n".join(lines)
    answered = sum(1 for line in text.split("\n") if line.count("|") == 5 and "| ✅ [" in line)
    m = COUNT.search(text)
    if m is None:
        raise SystemExit(f"{INDEX.name} has lost its '**N questions, M answered so far.**' line")
    return COUNT.sub(f"**{m.group(1)} questions, {answered} answered so far.**", text, count=1)


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        raise SystemExit(__doc__)
    notebook, title, *questions = argv
    if not (INDEX.parent.parent / notebook).is_file():
        raise SystemExit(f"{notebook} does not exist (give the path from the repository root)")
    INDEX.write_text(mark(INDEX.read_text(encoding="utf-8"), notebook, title, questions), encoding="utf-8")
    print(COUNT.search(INDEX.read_text(encoding="utf-8")).group(0))


if __name__ == "__main__":
    main(sys.argv[1:])
