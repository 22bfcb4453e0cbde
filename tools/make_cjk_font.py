"""Make the small Chinese font that ships with minillm, so matplotlib figures can draw 汉字 anywhere.

    python tools/make_cjk_font.py [/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc]
    python tools/make_cjk_font.py --rename-only     # only rewrite the family name of the committed font

Takes Noto Sans CJK SC (SIL Open Font License 1.1; Debian package fonts-noto-cjk) and keeps only the
glyphs the course draws: every character of the bundled Chinese corpora and of the notebooks, ASCII,
CJK punctuation and full-width forms. The result (minillm/fonts/) is about 1 MB instead of 16 MB.

The subset gets a family name of its own, FAMILY ("Noto Sans SC minillm"), in the name table and in the CFF
table: under the original name, matplotlib would resolve the family to the system's NotoSansCJK-Regular.ttc
on a machine with fonts-noto-cjk installed (same family, full glyph set elsewhere), so `use_cjk_font` would
silently use another file. (Noto declares no Reserved Font Name, so the OFL allows the modified font to keep
"Noto" in its name.)
"""

from __future__ import annotations

import sys
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTCollection, TTFont

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "minillm" / "fonts" / "NotoSansSC-minillm.otf"
FAMILY = "Noto Sans SC minillm"
POSTSCRIPT = "NotoSansSCminillm-Regular"  # no spaces allowed in a PostScript name


def wanted_characters() -> set[str]:
    chars = {chr(c) for c in range(0x20, 0x7F)}
    chars |= {chr(c) for c in range(0x3000, 0x3040)} | {chr(c) for c in range(0xFF00, 0xFFF0)}
    chars |= set("–—‘’“”…·•《》〈〉「」『』【】")
    sources = list((ROOT / "minillm" / "corpora").glob("*.txt")) + list(ROOT.glob("notebooks/*/*.ipynb"))
    sources += list(ROOT.glob("exercises/*.ipynb")) + list((ROOT / "minillm").rglob("*.py"))
    for p in sources:
        chars |= {c for c in p.read_text(encoding="utf-8") if ord(c) >= 0x2E80}
    return chars


def rename_family(font: TTFont, family: str = FAMILY, postscript: str = POSTSCRIPT) -> None:
    """Give `font` (a Regular CFF-flavoured OpenType font) the family `family` everywhere a font matcher looks."""
    name = font["name"]
    for rec in list(name.names):
        if rec.nameID in (16, 17, 21, 22):  # typographic / WWS family names would override ID 1 in some matchers
            name.removeNames(nameID=rec.nameID)
    version = font["head"].fontRevision
    for name_id, value in ((1, family), (2, "Regular"), (3, f"{version:.3f};minillm;{postscript}"),
                           (4, f"{family} Regular"), (6, postscript)):
        name.setName(value, name_id, 3, 1, 0x409)  # Windows, Unicode BMP, English (US): what the subset keeps
    if "CFF " in font:
        cff = font["CFF "].cff
        top = cff.topDictIndex[0]
        top.FamilyName, top.FullName = family, f"{family} Regular"
        cff.fontNames = [postscript]


def main(argv: list[str]) -> int:
    if argv == ["--rename-only"]:
        font = TTFont(str(OUT))
        rename_family(font)
        font.save(str(OUT))
        print(f"{OUT.relative_to(ROOT)}: family renamed to {FAMILY!r}")
        return 0
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
    rename_family(font)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    font.save(str(OUT))
    print(f"{OUT.relative_to(ROOT)}: {len(chars)} characters, {OUT.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
