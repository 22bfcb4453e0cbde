"""The interview-question index (book/interview_index.md) and the glossary (book/glossary.md).

The index is hand-maintained, so these tests check it for internal consistency:

- every row is either a topic heading (bold, no answer) or a question entry with Chinese text, an English
  rendering, and either ✅ plus links to files that exist, or 🗓 plus a chapter of the page's chapter table;
- the "N questions, M answered so far" line and the per-chapter counts match the entries;
- the Chapter-1 groups (Tokenizer 篇, 支持中文（一）) are fully answered by existing notebooks;
- links and {ref} targets resolve;
- when the seed list 《LLMs 千面郎君》 is next to the repository (../shared/seeds/), the page has its groups
  in its order and every one of its question lines, word for word; exact duplicate groups may point back.

The checks are functions returning a list of problems, so the tests below can also show that they catch
broken pages (a wrong count, a dead link, a missing question).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
PAGE = BOOK / "interview_index.md"
GLOSSARY = BOOK / "glossary.md"
SEED = ROOT.parent / "shared" / "seeds" / "002_b1d39f28a1107c7a.txt"

CJK = re.compile(r"[\u3400-\u9fff]")
HEADING = re.compile(r"^(#{2,3}) (.+?) · (.+)$")  # "## 中文标题 · English title"
LABEL_LINE = re.compile(r"^\((iq-[a-z0-9-]+)\)=$")
COUNT_LINE = re.compile(r"\*\*(\d+) questions, (\d+) answered so far\.\*\*")
MD_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
PLANNED = re.compile(r"^🗓 Chapter (\d\d) \(([^)]+)\) — planned(?:; see also .+)?$")
ANSWERED = re.compile(r"^✅ \[[^\]]+\]\([^)]+\)")
CHAPTER1_GROUPS = ("LLMs Tokenizer 篇", "怎么让英文大语言模型支持中文？（一）")


def norm(text: str) -> str:
    """Compare text as rendered: drop Markdown escapes and bold markers, collapse whitespace."""
    text = re.sub(r"\\([^\w\s])", r"\1", text).replace("**", "")
    return re.sub(r"\s+", " ", text).strip()


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


@dataclass
class Row:
    label: str
    zh: str
    en: str
    answer: str
    line: int

    @property
    def is_topic(self) -> bool:
        return self.zh.startswith("**") and self.answer == ""


@dataclass
class Group:
    level: int
    zh: str
    en: str
    slug: str | None
    line: int
    rows: list[Row] = field(default_factory=list)
    text: str = ""  # the prose between the heading and the next heading


@dataclass
class Page:
    lines: list[str]
    groups: list[Group]
    chapters: dict[str, str]  # "06" -> title
    chapter_counts: dict[str, int]
    count_line: tuple[int, int] | None


def parse_page(text: str) -> Page:
    lines = text.splitlines()
    groups: list[Group] = []
    chapters: dict[str, str] = {}
    counts: dict[str, int] = {}
    pending_label = None
    in_chapters = False
    for i, line in enumerate(lines, start=1):
        if m := LABEL_LINE.match(line):
            pending_label = m.group(1)
            continue
        if line.startswith("#"):
            in_chapters = line.strip() == "## Chapters"
            if m := HEADING.match(line):
                groups.append(
                    Group(len(m.group(1)), m.group(2).strip(), m.group(3).strip(), pending_label, i)
                )
            pending_label = None
            continue
        if in_chapters and line.startswith("|"):
            c = cells(line)
            if re.fullmatch(r"\d\d", c[0]):
                chapters[c[0]] = c[1]
                counts[c[0]] = int(c[3])
            continue
        if groups:
            g = groups[-1]
            if line.startswith("|"):
                c = cells(line)
                if c[:2] == ["#", "中文"] or set("".join(c)) <= set("-:"):
                    continue  # header and separator rows
                if len(c) != 4:
                    raise ValueError(
                        f"line {i}: a question row needs 4 cells (#, 中文, English, answer): {line}"
                    )
                g.rows.append(Row(*c, line=i))
            else:
                g.text += line + "\n"
    m = COUNT_LINE.search(text)
    return Page(lines, groups, chapters, counts, (int(m.group(1)), int(m.group(2))) if m else None)


def link_target(href: str) -> Path | None:
    """The file a relative Markdown link from book/ points to (None for web links and in-page anchors)."""
    if re.match(r"^[a-z]+:", href) or href.startswith("#"):
        return None
    return (BOOK / href.split("#")[0]).resolve()


def check_links(text: str) -> list[str]:
    problems = []
    for m in MD_LINK.finditer(text):
        target = link_target(m.group(2))
        if target is not None and not target.exists():
            problems.append(f"link [{m.group(1)}]({m.group(2)}) points to a missing file {target}")
    for m in re.finditer(r"\{doc\}`(?:[^`<]*<)?([^`>]+)>?`", text):
        stem = (BOOK / m.group(1)).resolve()
        if not any(stem.with_suffix(s).exists() for s in (".md", ".ipynb")):
            problems.append(f"{{doc}} link {m.group(1)} points to no .md or .ipynb file")
    return problems


def check_page(page: Page) -> list[str]:
    """Internal consistency of the index; returns the problems found (empty when the page is fine)."""
    problems: list[str] = []
    if not page.lines or page.lines[0] != "# Interview-question index":
        problems.append("the first line must be '# Interview-question index'")
    expected = [f"{k:02d}" for k in range(1, 20)]
    if sorted(page.chapters) != expected:
        problems.append(f"the chapter table must list chapters 01..19, found {sorted(page.chapters)}")
    slugs = [g.slug for g in page.groups]
    if None in slugs or len(set(slugs)) != len(slugs):
        problems.append("every group heading needs its own (iq-...)= label")
    for m in re.finditer(r"\{ref\}`(?:[^`<]*<)?([^`>]+)>?`", "\n".join(page.lines)):
        if m.group(1) not in slugs:
            problems.append(f"{{ref}} target {m.group(1)} is not a label on the page")

    n_entries = n_answered = 0
    per_chapter = dict.fromkeys(page.chapters, 0)
    for g in page.groups:
        where = f"group '{g.zh}' (line {g.line})"
        if not g.en or CJK.search(g.en) or not re.search(r"[A-Za-z]", g.en):
            problems.append(f"{where}: the heading needs an English rendering after ' · '")
        for r in g.rows:
            at = f"line {r.line}"
            if r.is_topic:
                if not (r.en.startswith("**") and r.en.endswith("**")):
                    problems.append(f"{at}: a topic row is bold in both languages")
                continue
            n_entries += 1
            if not r.zh or "**" in r.zh:
                problems.append(f"{at}: the Chinese text is missing (or bold without being a topic row)")
            if not re.search(r"[A-Za-z]", r.en) or CJK.search(r.en):
                problems.append(f"{at}: the English rendering must be English: {r.en!r}")
            if r.answer.startswith("✅"):
                n_answered += 1
                if not ANSWERED.match(r.answer):
                    problems.append(f"{at}: an answered entry starts with '✅ [title](path)'")
                hrefs = [h for _, h in MD_LINK.findall(r.answer)]
                chapter = re.search(r"(?:^|/)(\d\d)_", hrefs[0]) if hrefs else None
                if chapter is None:
                    problems.append(
                        f"{at}: an answered entry must first link to a chapter's page or notebook"
                    )
                else:
                    per_chapter[chapter.group(1)] = per_chapter.get(chapter.group(1), 0) + 1
            elif m := PLANNED.match(r.answer):
                ch, title = m.groups()
                if page.chapters.get(ch) != title:
                    problems.append(
                        f"{at}: Chapter {ch} ({title}) is not in the chapter table under that title"
                    )
                per_chapter[ch] = per_chapter.get(ch, 0) + 1
            else:
                problems.append(f"{at}: the answer must be '✅ [..](..)' or '🗓 Chapter NN (title) — planned'")
    if page.count_line is None:
        problems.append("the '**N questions, M answered so far.**' line is missing")
    elif page.count_line != (n_entries, n_answered):
        problems.append(
            f"the count line says {page.count_line[0]} questions, {page.count_line[1]} answered; "
            f"the page has {n_entries} and {n_answered}"
        )
    if per_chapter != page.chapter_counts:
        bad = {
            k: (page.chapter_counts.get(k), v)
            for k, v in per_chapter.items()
            if page.chapter_counts.get(k) != v
        }
        problems.append(f"chapter table counts (table, entries) disagree: {bad}")
    problems += check_links("\n".join(page.lines))
    return problems


def check_chapter1(page: Page) -> list[str]:
    problems = []
    found = [g for g in page.groups if g.rows and g.zh.startswith(CHAPTER1_GROUPS)]
    if len(found) != len(CHAPTER1_GROUPS):
        problems.append(f"expected the Chapter-1 groups {CHAPTER1_GROUPS} with questions, found {len(found)}")
    for g in found:
        for r in g.rows:
            if r.is_topic:
                continue
            hrefs = [h for _, h in MD_LINK.findall(r.answer)]
            first = link_target(hrefs[0]) if hrefs else None
            if not r.answer.startswith("✅") or first is None or "01_tokenization" not in str(first):
                problems.append(
                    f"line {r.line}: Chapter-1 question '{r.zh}' must link to a Chapter-1 notebook"
                )
            elif first.suffix != ".ipynb" or not first.exists():
                problems.append(f"line {r.line}: {first} is not an existing notebook")
    return problems


# --- the seed list ---------------------------------------------------------------------------------------


def parse_seed(text: str) -> list[tuple[int, str, list[str]]]:
    """(heading level, title, normalised item texts) per group, in order; the table of contents is skipped."""
    groups: list[tuple[int, str, list[str]]] = []
    for line in text.splitlines():
        if m := re.match(r"^(#{2,3})\s+(.*\S)", line):
            title = re.sub(r"^\[(.*)\]\([^)]*\)$", r"\1", m.group(2))
            groups.append((len(m.group(1)), norm(title), []))
        elif groups and (m := re.match(r"^\s*(?:-|\d+\.)\s+(.*\S)", line)) and "点击查看答案" not in line:
            item = re.sub(r"^(?:\d+(?:\.\d+)*\.?(?=\s)|[一二三四五六七八九十]+、)\s*", "", m.group(1))
            groups[-1][2].append(norm(item))
    return groups


def check_against_seed(page: Page, seed: list[tuple[int, str, list[str]]]) -> list[str]:
    problems = []
    page_heads = [(g.level, norm(g.zh)) for g in page.groups]
    seed_heads = [(lvl, title) for lvl, title, _ in seed]
    if page_heads != seed_heads:
        diff = next((i for i, (a, b) in enumerate(zip(page_heads, seed_heads, strict=False)) if a != b), None)
        problems.append(
            f"groups differ from the seed ({len(page_heads)} vs {len(seed_heads)} headings), first at #{diff}"
        )
        return problems
    by_slug = {g.slug: i for i, g in enumerate(page.groups)}
    for i, (g, (_, title, items)) in enumerate(zip(page.groups, seed, strict=True)):
        got = [norm(r.zh) for r in g.rows]
        if got == items:
            continue
        ref = re.search(r"Same questions as above: see \{ref\}`([^`]+)`", g.text)
        j = by_slug.get(ref.group(1)) if ref else None
        if not g.rows and j is not None and j < i and seed[j][1:] == (title, items):
            continue  # an exact duplicate group of the seed, pointing back to its first copy
        missing = [q for q in items if q not in got]
        extra = [q for q in got if q not in items]
        problems.append(
            f"group '{title}': missing {missing[:3]}, not in the seed {extra[:3]}, or out of order"
        )
    return problems


# --- tests -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page() -> Page:
    return parse_page(PAGE.read_text(encoding="utf-8"))


def test_index_is_consistent(page):
    assert page.groups, "no '## 中文 · English' group headings found"
    assert check_page(page) == []


def test_chapter1_questions_link_to_existing_notebooks(page):
    assert check_chapter1(page) == []


def test_every_seed_question_is_on_the_page(page):
    if not SEED.exists():
        pytest.skip(f"the seed list is not next to the repository ({SEED})")
    seed = parse_seed(SEED.read_text(encoding="utf-8"))
    assert sum(len(items) for _, _, items in seed) > 400, "the seed parser found too few questions"
    assert check_against_seed(page, seed) == []


def test_seed_parser_on_a_hand_made_list():
    seed = parse_seed(
        "- [目录](#x)\n## [基础面](https://example.org)\n1. 什么是 A？\n2. B\n   1. 子问题 \\& C？\n"
        "### 篇\n- 一、为什么 D？\n  - 1.2. 什么是 E?\n- [点击查看答案](https://example.org)\n"
    )
    assert seed == [
        (2, "基础面", ["什么是 A？", "B", "子问题 & C？"]),
        (3, "篇", ["为什么 D？", "什么是 E?"]),
    ]


SMALL_PAGE = """# Interview-question index

**2 questions, 1 answered so far.**

## Chapters

| Chapter | Title | Status | Questions |
|---|---|---|---|
{chapters}

(iq-a)=
## 基础面 · Basics

| # | 中文 | English | Answered in |
|---|---|---|---|
| 1 | **话题** | **A topic** | |
| 1.1 | 什么是 BPE？ | What is BPE? | ✅ [1.1](01_tokenization.md) |
| 2 | 什么是 RoPE？ | What is RoPE? | 🗓 Chapter 02 (Position encoding) — planned |

(iq-b)=
## 基础面 · Basics again

Same questions as above: see {{ref}}`iq-a`.
"""


def small_page_text() -> str:
    rows = "\n".join(
        f"| {k:02d} | {'Position encoding' if k == 2 else f'Chapter {k}'} | planned | {int(k <= 2)} |"
        for k in range(1, 20)
    )
    return SMALL_PAGE.format(chapters=rows)


def test_checks_accept_a_good_small_page():
    page = parse_page(small_page_text())
    assert [r.is_topic for r in page.groups[0].rows] == [True, False, False]
    assert check_page(page) == []


@pytest.mark.parametrize(
    "old, new, expected",
    [
        (
            "**2 questions, 1 answered so far.**",
            "**3 questions, 1 answered so far.**",
            "the count line says 3",
        ),
        ("(01_tokenization.md)", "(01_no_such_page.md)", "missing file"),
        ("(01_tokenization.md)", "(glossary.md)", "must first link to a chapter"),
        ("Chapter 02 (Position encoding) —", "Chapter 02 (Positions) —", "not in the chapter table"),
        ("Chapter 02 (Position encoding) —", "Chapter 20 (Position encoding) —", "not in the chapter table"),
        ("| 02 | Position encoding | planned | 1 |", "| 02 | Position encoding | planned | 5 |", "counts"),
        ("| What is RoPE? |", "| 什么是 RoPE |", "must be English"),
        ("🗓 Chapter 02 (Position encoding) — planned", "soon", "the answer must be"),
        ("{ref}`iq-a`", "{ref}`iq-z`", "is not a label"),
        ("## 基础面 · Basics again", "## 基础面 · 再来", "needs an English rendering"),
    ],
)
def test_checks_catch_a_broken_small_page(old, new, expected):
    text = small_page_text()
    assert old in text
    problems = check_page(parse_page(text.replace(old, new)))
    assert any(expected in p for p in problems), problems


def test_seed_check_catches_a_missing_question():
    page = parse_page(small_page_text())
    group = (2, "基础面", ["话题", "什么是 BPE？", "什么是 RoPE？"])
    seed = [group, group]
    assert check_against_seed(page, seed) == []  # the second group is an exact duplicate and points back
    seed_more = [(2, "基础面", ["话题", "什么是 BPE？", "什么是 RoPE？", "什么是 ALiBi？"]), seed[1]]
    assert check_against_seed(page, seed_more), "a question missing from the page must be reported"
    seed_differs = [seed[0], (2, "基础面", ["另一个问题？"])]
    assert check_against_seed(page, seed_differs), "a non-identical group cannot point back"


# --- glossary --------------------------------------------------------------------------------------------

REQUIRED_EN = [
    "BPE", "byte-level", "merge", "vocabulary", "WordPiece", "Unigram", "SentencePiece", "pre-tokenization",
    "special tokens", "OOV", "compression ratio", "embedding resize", "RoPE", "ALiBi", "RMSNorm", "SwiGLU",
    "GQA", "KV cache", "LoRA", "AMP", "DDP", "ZeRO", "pipeline parallelism", "tensor parallelism", "RLHF",
    "PPO", "DPO", "PagedAttention", "continuous batching", "quantization", "hallucination", "chain-of-thought",
]  # fmt: skip
REQUIRED_ZH = ["位置编码", "流水线并行", "张量并行", "连续批处理", "量化", "幻觉", "思维链", "词表", "分词"]


def glossary_rows(text: str) -> list[list[str]]:
    rows = [cells(ln) for ln in text.splitlines() if ln.startswith("|")]
    return [r for r in rows if r[:2] != ["术语", "English"] and not set("".join(r)) <= set("-:")]


def test_glossary():
    text = GLOSSARY.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "# Glossary 中英"
    rows = glossary_rows(text)
    # grows with the chapters (about 10 terms each); the bounds catch a lost table or a duplicated file
    assert 40 <= len(rows) <= 250, f"{len(rows)} glossary rows; expected 40-250"
    for r in rows:
        assert len(r) == 3 and all(r), f"a glossary row needs 术语, English and a definition: {r}"
        assert re.search(r"[A-Za-z]", r[1]) and not CJK.search(r[1] + r[2]), f"English columns: {r}"
        assert len(r[2].split()) >= 6, f"the definition of {r[1]} is too short to be a definition"
    english = [r[1].lower() for r in rows]
    assert len(set(english)) == len(english), "a term appears twice"
    for term in REQUIRED_EN:
        assert any(term.lower() in e for e in english), f"the glossary lacks {term}"
    for term in REQUIRED_ZH:
        assert any(term in r[0] for r in rows), f"the glossary lacks {term}"
    assert check_links(text) == []
