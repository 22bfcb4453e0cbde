"""The bundled CJK font has a family name of its own, so matplotlib picks it whatever fonts the system has.

With Debian's fonts-noto-cjk installed, a bundled font named "Noto Sans CJK SC" lost to the system's
NotoSansCJK-Regular.ttc. These tests hold with and without system CJK fonts: one registers a decoy font of the
original family name (what the system package would add), one builds matplotlib's font list from scratch
in a subprocess, so every font installed on this machine right now takes part.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minillm import utils

ROOT = Path(__file__).resolve().parents[1]
FAMILY = "Noto Sans SC minillm"


def test_the_font_file_names_its_own_family():
    from fontTools.ttLib import TTFont

    font = TTFont(str(utils.CJK_FONT))
    names = {r.nameID: r.toUnicode() for r in font["name"].names if r.platformID == 3}
    assert names[1] == FAMILY and names[4] == f"{FAMILY} Regular" and " " not in names[6]
    assert 16 not in names  # no typographic family that a matcher could prefer over ID 1
    assert font["CFF "].cff.topDictIndex[0].FamilyName == FAMILY


def test_bundled_font_wins_over_a_system_font_of_the_original_name(tmp_path):
    from fontTools.ttLib import TTFont
    from matplotlib import font_manager

    decoy = TTFont(str(utils.CJK_FONT))  # what fonts-noto-cjk adds: the same glyphs, family "Noto Sans CJK SC"
    decoy["name"].setName("Noto Sans CJK SC", 1, 3, 1, 0x409)
    decoy.save(str(tmp_path / "decoy.otf"))
    font_manager.fontManager.addfont(str(tmp_path / "decoy.otf"))
    name = utils.use_cjk_font()
    assert name == FAMILY
    found = font_manager.findfont(font_manager.FontProperties(family=name), fallback_to_default=False)
    assert found == str(utils.CJK_FONT)
    # the control: the decoy's own family resolves to the decoy, so a shared name would have been ambiguous
    found = font_manager.findfont(font_manager.FontProperties(family="Noto Sans CJK SC"), fallback_to_default=False)
    assert Path(found).name in ("decoy.otf", "NotoSansCJK-Regular.ttc")


def test_a_fresh_font_cache_with_every_system_font_still_picks_the_bundled_file(tmp_path):
    code = """if True:
        import json
        from matplotlib import font_manager
        from minillm import utils
        name = utils.use_cjk_font()
        path = font_manager.findfont(font_manager.FontProperties(family=name), fallback_to_default=False)
        system_cjk = sorted({f.name for f in font_manager.fontManager.ttflist if "CJK" in f.name})
        print(json.dumps({"name": name, "path": path, "system_cjk": system_cjk}))
    """
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}  # empty cache: rescans fonts
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["name"] == FAMILY and out["path"] == str(utils.CJK_FONT), out
    print("system CJK fonts seen:", out["system_cjk"] or "none")


@pytest.mark.parametrize("text", ["床前明月光", "宋诗：题西林壁"])
def test_every_character_drawn_comes_from_the_bundled_font(text):
    from fontTools.ttLib import TTFont

    cmap = TTFont(str(utils.CJK_FONT)).getBestCmap()
    assert all(ord(c) in cmap for c in text if not c.isspace())
