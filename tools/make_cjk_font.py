"""Make the small Chinese font that ships with minillm, so matplotlib figures can draw 汉字 anywhere.

    python tools/make_cjk_font.py [/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc]

Takes Noto Sans CJK SC (SIL Open Font License 1.1; Debian package fonts-noto-cjk) and keeps only the
glyphs the course draws: every character of the bundled Chinese corpora and of the notebooks, ASCII,
CJK punctuation and full-width forms. The result (minillm/fonts/) is about 1 MB instead of 16 MB.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTCollection

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "minillm" / "fonts" / "NotoSansSC-minillm.otf"


def wanted_characters() -> set[str]:
    chars = {chr(c) for c in range(0x20, 0x7F)}
    chars |= {chr(c) for c in range(0x3000, 0x3040)} | {chr(c) for c in range(0xFF00, 0xFFF0)}
    chars |= set("–—‘’“”…·•《》〈〉「」『』【】")
    sources = list((ROOT / "minillm" / "corpora").glob("*.txt")) + list(ROOT.glob("notebooks/*/*.ipynb"))
    sources += list(ROOT.glob("exercises/*.ipynb")) + list((ROOT / "minillm").rglob("*.py"))
    for p in sources:
        chars |= {c for c in p.read_text(encoding="utf-8") if ord(c) >= 0x2E80}
    return chars


def main(argv: list[str]) -> int:
    ttc = Path(argv[0] if argv else "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
    if not ttc.exists():
        print(f"{ttc} not found: install Debian's fonts-noto-cjk (apt-get install fonts-noto-cjk)", file=sys.stderr)
        return 2
    collection = TTCollection(str(ttc))
    font = next(f for f in collection.fonts if f["name"].getDebugName(1) == "Noto Sans CJK SC")
    chars = wanted_characters()
    opts = subset.Options()
    opts.name_IDs = ["*"]
    opts.notdef_outline = True
    opts.layout_features = ["*"]
    sub = subset.Subsetter(opts)
    sub.populate(unicodes={ord(c) for c in chars})
    sub.subset(font)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    font.save(str(OUT))
    print(f"{OUT.relative_to(ROOT)}: {len(chars)} characters, {OUT.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
