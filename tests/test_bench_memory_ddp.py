"""minillm.bench.memory and minillm.bench.ddp (chapters 10 and 11) on tiny inputs: the sections' tables have the
expected rows and columns, and the columns that must agree do, exactly (saved activation bytes formula == measured,
optimizer state bytes == formula, bytes sent by the ring == `bytes_sent`), with hand-worked values. No timing
assertions: times only have to be positive.
"""

from __future__ import annotations

import math

import pytest

import minillm.bench as bench_driver
from minillm.bench import ddp as bd
from minillm.bench import memory as bm


def parse_tables(md: str) -> list[list[dict[str, str]]]:
    """Every Markdown table in `md` as a list of {column: cell}."""
    tables, lines = [], md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---") and (
                i == 0 or not lines[i - 1].startswith("|")):
            head = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(head, (c.strip() for c in row.strip("|").split("|")), strict=True)))
            tables.append(rows)
    return tables


def num(cell: str) -> float:
    return float(cell.replace(",", ""))


def test_sections_registered():
    names = dict(bench_driver.SECTIONS)
    assert bench_driver._section(names["memory"]) is bm.section_memory
    assert bench_driver._section(names["ddp"]) is bd.section_ddp


@pytest.fixture(scope="module")
def memory_md() -> str:
    return bm.section_memory(quick=True)


def test_memory_section_tables(memory_md):
    assert memory_md.startswith("## Chapter 10")
    rec, prec = parse_tables(memory_md)
    assert list(rec[0]) == bm.RECOMPUTE_COLUMNS and list(prec[0]) == bm.PRECISION_COLUMNS
    assert [(r["config"], r["recompute"]) for r in rec] == [(c, m) for c in ("tiny", "tiny-llama")
                                                            for m in ("none", "selective", "full")]
    assert all(r["formula − measured (bytes)"] == "0" and r["formula MB"] == r["measured MB"] for r in rec)
    for c in ("tiny", "tiny-llama"):  # recomputation keeps less: none > selective > full
        mb = [num(r["measured MB"]) for r in rec if r["config"] == c]
        assert mb[0] > mb[1] > mb[2] > 0
    assert [(r["precision"], r["grad_accum"], r["optimizer"]) for r in prec] == [
        ("fp32", "1", "AdamW"), ("fp32", "2", "AdamW"), ("bf16", "1", "AdamW"), ("bf16", "2", "AdamW"),
        ("fp32", "1", "Adam8bit")]
    assert all(r["state MB"] == r["state formula MB"] for r in prec)
    assert all(num(r["ms / step"]) > 0 and num(r["step peak MB"]) > 0 for r in prec)


def test_full_recompute_bytes_hand_worked():
    # tiny (2 layers, d 64, vocab 128, learned positions, Pre-LN LayerNorm), B=2, T=16, float32; B T = 32:
    # embedding: int64 ids 8*32 + int64 positions 8*16 = 384; head: final norm (2 B T d + B T) + lm_head input
    # (B T d) + log-softmax (B T V) + total weight (1), all x4, + int64 targets 8*32 = 41,348;
    # full recomputation keeps each block's input only: 2 x B T d x 4 = 16,384. Total 58,116.
    (none, full) = bm.recompute_rows([("tiny", 2, 16)], "cpu", 1, modes=(None, "full"))
    assert full["formula_bytes"] == full["measured_bytes"] == 384 + 41_348 + 16_384 == 58_116
    assert none["formula_bytes"] == none["measured_bytes"] > full["measured_bytes"]
    assert none["time vs none"] == 1.0 and full["ms fwd+bwd"] > 0


def test_optimizer_state_bytes_exact():
    adamw, adam8 = bm.precision_rows(2, 8, "cpu", 1, config="tiny", accums=(1,), precisions=("fp32",))
    n = 112_384  # the tiny preset's parameters (vocab 128, d 64, 2 layers, GeLU, biases, untied head)
    assert adamw["state_bytes"] == adamw["state_formula_bytes"] == 8 * n  # m and v in fp32
    assert adam8["state_bytes"] == adam8["state_formula_bytes"] < adamw["state_bytes"] / 3
    assert adamw["first loss"] == pytest.approx(adam8["first loss"])  # same weights, same batch
    assert math.isfinite(adamw["first loss"])


def test_ddp_rows_hand_worked():
    results = {1: {"backend": "gloo", "steps": {"none": {"step_s": 0.2, "compute_s": 0.2, "params": 10}},
                   "collectives": {}},
               2: {"backend": "gloo", "steps": {"minillm": {"step_s": 0.125, "compute_s": 0.1, "params": 10}},
                   "collectives": {("ring", 1000): {"s": 0.002, "sent": 4000, "formula": 4000},
                                   ("torch", 1000): {"s": 0.001, "sent": float("nan"), "formula": float("nan")}}}}
    one, two = bd.ddp_rows(results, 8, 4)
    assert (one["comm share"], one["speed-up vs 1"], one["rows / rank"]) == (0.0, 1.0, 8)
    assert two["comm share"] == pytest.approx(0.2) and two["speed-up vs 1"] == pytest.approx(1.6)
    ring, torch_row = bd.collective_rows(results)
    assert ring["bytes sent (rank 0)"] == ring["formula"] == 4000
    assert ring["MB/s"] == pytest.approx(4000 / 2**20 / 0.002)
    assert torch_row["bytes sent (rank 0)"] == torch_row["formula"] == ""


def test_ddp_section_quick():
    md = bd.section_ddp(quick=True)
    assert md.startswith("## Chapter 11") and "What this measures" in md
    steps, coll = parse_tables(md)
    assert list(steps[0]) == bd.DDP_COLUMNS and list(coll[0]) == bd.COLLECTIVE_COLUMNS
    assert [(r["processes"], r["DDP"]) for r in steps] == [("2", "minillm"), ("2", "torch")]
    for r in steps:
        assert 0 <= num(r["comm share"]) < 1 and num(r["ms / step"]) > 0
    assert [r["algorithm"] for r in coll] == ["ring", "tree", "naive", "torch"]
    # 1000 float32 over 2 ranks: every algorithm's rank 0 sends the whole message once (ring: 2 (N-1)/N = 1)
    for r in coll[:3]:
        assert r["bytes sent (rank 0)"] == r["formula"] == "4,000"
