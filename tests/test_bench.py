"""Tests of `minillm.bench` (the driver, the timer, the chapter-1 section) and `minillm.tokenizer.viz` on tiny inputs.

No timing assertions: we check the tables' structure and that their numbers agree with each other and
with direct counts (bytes/token == bytes / len(ids)), plus hand-worked cases.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import minillm.bench as bench_driver
from minillm.bench import ch01 as bench
from minillm.bench.timer import best_time
from minillm.data import load_corpus
from minillm.tokenizer import BPETokenizer, viz
from minillm.utils import markdown_table

EN, ZH = load_corpus("shakespeare", max_chars=4000), load_corpus("tang300", max_chars=1500)
HELD_CORPORA = {"en": (EN[:3000], EN[3000:]), "zh": (ZH[:1200], ZH[1200:])}
TEXT = "To be, or not to be: that is the question. 床前明月光，疑是地上霜。 To be or not."


@pytest.fixture(scope="module")
def tiny_rows():
    return bench.tokenizer_sweep(HELD_CORPORA, [256, 270, 300])


def test_hf_setup_matches_hand_worked_merge():
    # "aaabdaaabac": the pair counts are aa:4 (two per "aaa"), ab:2, bd:1, da:1, ba:1, ac:1,
    # so with one merge (vocab 257) both tokenizers must learn exactly b"aa" on top of the 256 bytes.
    hf = bench.train_hf_bpe("aaabdaaabac", 257)
    ours = BPETokenizer("gpt2").train("aaabdaaabac", 257)
    assert hf.get_vocab_size() == 257
    assert bench.vocab_bytes(hf) - {bytes([b]) for b in range(256)} == {b"aa"}
    assert bench.vocab_bytes(ours) == bench.vocab_bytes(hf)
    # both encode with the learned merge: "aaa" -> [aa, a]
    assert len(bench.encode_ids(hf, "aaa")) == len(bench.encode_ids(ours, "aaa")) == 2


def test_hf_bpe_rejects_small_vocab():
    with pytest.raises(ValueError, match="256"):
        bench.train_hf_bpe("abc", 100)


def test_sweep_rows_are_consistent(tiny_rows):
    assert len(tiny_rows) == 2 * 3 * 2  # corpora x sizes x implementations
    for r in tiny_rows:
        assert set(bench.CH1_COLUMNS) <= set(r)
        assert r["bytes_per_token"] == pytest.approx(r["eval_bytes"] / r["eval_tokens"])
        assert 0.0 <= r["shared_vocab"] <= 1.0
        assert r["train_s"] >= 0 and r["encode_kb_s"] > 0
    assert [r["vocab_size"] for r in tiny_rows] == [v for _ in "ez" for v in (256, 256, 270, 270, 300, 300)]
    for r in tiny_rows:
        assert r["eval_bytes"] == len(HELD_CORPORA[r["corpus"]][1].encode("utf-8"))
    # 256 = bytes only: every token is one byte, and both vocabularies are the same 256 bytes
    for r in (r for r in tiny_rows if r["vocab_size"] == 256):
        assert r["eval_tokens"] == r["eval_bytes"] and r["shared_vocab"] == 1.0
    # more merges never make the held-out text longer in tokens here (same corpus, growing vocab)
    for corpus in HELD_CORPORA:
        ours = [r["eval_tokens"] for r in tiny_rows if r["corpus"] == corpus and r["impl"] == "minillm"]
        assert ours == sorted(ours, reverse=True) and ours[-1] < ours[0]


def test_compression_matches_direct_count():
    tok = BPETokenizer("gpt2").train(TEXT * 5, 300)
    c = bench.compression(tok, TEXT)
    ids = tok.encode(TEXT)
    assert c["tokens"] == len(ids)
    assert c["bytes_per_token"] == len(TEXT.encode("utf-8")) / len(ids)
    assert c["tokens_per_char"] == len(ids) / len(TEXT)
    with pytest.raises(ValueError):
        bench.compression(tok, "")


def test_markdown_table_structure():
    rows = [{"a": 1, "b": 0.123456, "c": "x"}, {"a": 23456, "b": 12345.6, "c": "y"}, {"a": 3, "b": 1.0, "c": True},
            {"a": 4, "b": 710.2, "c": 5.0}]
    md = markdown_table(rows, ["a", "b", "c"]).strip().splitlines()
    assert md[0] == "| a | b | c |" and md[1] == "|---|---|---|"
    assert md[2] == "| 1 | 0.123 | x |" and md[3] == "| 23,456 | 12,346 | y |" and md[4] == "| 3 | 1.00 | True |"
    assert md[5] == "| 4 | 710 | 5.00 |"
    with pytest.raises(ValueError, match="column"):
        markdown_table(rows, ["a", "zz"])


def test_cli_quick_writes_table(tmp_path, capsys):
    out = tmp_path / "bench.md"
    assert bench_driver.main(["--quick", "--only", "tokenizers", "--out", str(out)]) == 0
    md = out.read_text(encoding="utf-8")
    assert capsys.readouterr().out == md + "\n"  # printed and written: the same Markdown
    assert md.startswith("Machine: ") and "## Chapter 1" in md
    table = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert table[0] == "| " + " | ".join(bench.CH1_COLUMNS) + " |"
    assert len(table) == 2 + 2 * 2 * 2  # header + rule + corpora x quick sizes x impls
    for ln in table[2:]:
        assert ln.count("|") == len(bench.CH1_COLUMNS) + 1


def test_every_chapter_section_is_registered():
    names = [n for n, _ in bench_driver.SECTIONS]
    assert len(names) == len(set(names)) and names[0] == "tokenizers"
    assert {"norms", "attention", "training", "generation"} <= set(names)


def test_cli_unknown_section(capsys):
    assert bench_driver.main(["--quick", "--only", "nope"]) == 2
    assert "unknown section 'nope'" in capsys.readouterr().err


def test_python_dash_m_runs_the_package():
    p = subprocess.run([sys.executable, "-m", "minillm.bench", "--only", "nope"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2 and "unknown section 'nope'" in p.stderr


def test_every_minillm_import_of_the_notebooks_resolves():
    """Modules move (bench became a package, markdown_table went to utils): each `from minillm... import ...`
    line in a notebook or exercise must name a module and attributes that exist."""
    import importlib.util
    import json
    import re

    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"^from (minillm[\w.]*) import ([\w, ]+)$", re.M)
    seen = 0
    for nb in sorted(root.glob("notebooks/*/*.ipynb")) + sorted(root.glob("exercises/*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        for module, names in pattern.findall(code):
            mod = importlib.import_module(module)
            for name in (n.split(" as ")[0].strip() for n in names.split(",")):  # "NF4_CODE as NF4"
                assert hasattr(mod, name) or importlib.util.find_spec(f"{module}.{name}"), f"{nb.name}: {module}.{name}"
                seen += 1
    assert seen > 50  # the notebooks do import from minillm


def test_best_time_takes_the_minimum_and_warms_up():
    calls = []
    sleeps = iter([0.03, 0.0, 0.01])  # the second run is the fastest

    def fn():
        calls.append(1)
        time.sleep(next(sleeps, 0.0))
        return len(calls)

    out, secs = best_time(fn, 3)
    assert out == 3 and len(calls) == 3 and secs < 0.01  # the 0 s run, not the mean (~13 ms)
    calls.clear()
    out, secs = best_time(lambda: calls.append(1) or len(calls), 2, "cpu", warmup=2)
    assert out == 4 and len(calls) == 4  # 2 untimed + 2 timed
    with pytest.raises(ValueError, match="repeats >= 1"):
        best_time(fn, 0)


# ------------------------------------------------------------------ viz


def test_gpt2_byte_table_hand_cases():
    t = viz.gpt2_unicode_to_byte()
    assert len(t) == 256 and sorted(t.values()) == list(range(256))
    # GPT-2's well-known stand-ins: space -> 'Ġ' (U+0120), newline -> 'Ċ' (U+010A), 'a' -> 'a'
    assert t["Ġ"] == 32 and t["Ċ"] == 10 and t["a"] == 97


def test_pieces_cover_the_text_bytes():
    ours = BPETokenizer("gpt2").train(TEXT * 5, 300)
    hf = bench.train_hf_bpe(TEXT * 5, 300)
    for tok in (ours, hf):
        pieces = viz.token_pieces(tok, TEXT)
        assert [p.id for p in pieces] == bench.encode_ids(tok, TEXT)
        assert b"".join(p.raw for p in pieces) == TEXT.encode("utf-8")


def test_bytes_label_partial_character():
    assert viz.bytes_label("床".encode()) == "床"
    assert viz.bytes_label("床".encode()[:2]) == "<e5 ba>"


def test_unknown_tokens_flagged_for_wordpiece():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.train_from_iterator(["to be or not to be"], trainers.WordPieceTrainer(vocab_size=60, special_tokens=["[UNK]"],
                                                                            show_progress=False))
    pieces = viz.token_pieces(wp, "to be 🤗")
    assert [p.unknown for p in pieces] == [False, False, True]
    assert "1 unknown" in viz.summary(pieces, "to be 🤗")


def test_html_widget_and_figure():
    tok = BPETokenizer("gpt2").train(TEXT * 5, 300)
    html = viz.color_tokens_html(tok, TEXT, name="ours")
    ids = tok.encode(TEXT)
    assert html.count("<br>") >= len(ids)  # one label/id line break per token box
    assert f"{len(ids)} tokens" in html
    assert ">␣<" in viz.color_tokens_html(tok, " ")  # a lone space token is drawn as ␣
    w = viz.token_widget({"a": tok, "b": tok}, TEXT)
    text_box, pick, out = w.children
    assert pick.value == viz.ALL and out.value == viz.compare_html({"a": tok, "b": tok}, TEXT)
    text_box.value = "be"
    assert out.value == viz.compare_html({"a": tok, "b": tok}, "be")
    pick.value = "a"
    assert out.value == viz.color_tokens_html(tok, "be", "a")
    with pytest.raises(ValueError):
        viz.compare_html({"a": tok}, TEXT, "zz")
    with pytest.raises(TypeError):
        viz.token_pieces(object(), TEXT)
    import matplotlib

    matplotlib.use("Agg")
    fig = viz.token_figure({"ours": tok}, TEXT)
    assert len(fig.axes[0].patches) == len(ids)


def test_training_and_generation_sections_quick():
    from minillm.bench.ch06 import section_generation, section_training
    from minillm.model import flops_per_token

    assert flops_per_token(1000, 2, 8, 4) == 6 * 1000 + 12 * 2 * 8 * 4
    md = section_training(quick=True)
    row = [ln for ln in md.splitlines() if ln.startswith("| tiny")]
    assert len(row) == 1 and row[0].endswith("| n/a |")  # CPU: no MFU
    md = section_generation(quick=True)
    rows = [ln for ln in md.splitlines() if ln.startswith("| 32") or ln.startswith("| 64")]
    assert len(rows) == 2
