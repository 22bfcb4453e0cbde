"""minillm.bench.zero (chapter 12's appendix table) on a tiny GPT in 2 processes: the bytes each rank holds after a
step, measured from the tensors, equal hand-worked multiples of Psi for minillm's DDP and ZeRO-1/2/3 (float32,
AdamW: weights 4 Psi, gradients 4 Psi, m + v 8 Psi, ZeroOptimizer's shard copy 4 Psi; stages shard them over N = 2),
torch's ZeRO-1 and FSDP2 hold what the formula says within their padding, all six methods take the same first steps
(same losses), and the Markdown has the table. No timing assertions: times only have to be positive.
"""

from __future__ import annotations

import pytest

import minillm.bench as bench_driver
from minillm.bench import zero as bz
from minillm.distributed.launch import launch

MODEL = dict(vocab_size=64, block_size=16, n_layer=2, n_head=2, d_model=16)


@pytest.fixture(scope="module")
def results() -> dict:
    return launch(bz.sharding_worker, 2, (MODEL, 4, 8, 2), timeout=180)


def test_registered():
    assert bench_driver._section(dict(bench_driver.SECTIONS)["sharding"]) is bz.section_sharding


def test_minillm_bytes_hand_worked(results):
    for r in results:
        psi = r["ddp"]["psi"]
        assert psi % 2 == 0
        # stage 0: 4 + 4 + 8 = 16 bytes per parameter on every rank
        assert (r["ddp"]["params"], r["ddp"]["grads"], r["ddp"]["optimizer"]) == (4 * psi, 4 * psi, 8 * psi)
        # stage 1: the shard copy + m + v (12 bytes) over 2 ranks
        assert (r["zero1"]["params"], r["zero1"]["grads"], r["zero1"]["optimizer"]) == (4 * psi, 4 * psi, 6 * psi)
        # stage 2: the gradient sharded too
        assert (r["zero2"]["params"], r["zero2"]["grads"], r["zero2"]["optimizer"]) == (4 * psi, 2 * psi, 6 * psi)
        # stage 3: everything sharded (per-unit padding: at most one element per unit and rank)
        z3 = r["zero3"]
        units = 1 + MODEL["n_layer"]
        assert 2 * psi <= z3["params"] <= 2 * psi + 4 * units and z3["grads"] == z3["params"]
        assert z3["optimizer"] == 2 * z3["params"]


def test_torch_methods_match_formula(results):
    for r in results:
        psi = r["ddp"]["psi"]
        fsdp2 = r["torch-fsdp2"]
        assert fsdp2["params"] >= 2 * psi and fsdp2["params"] <= 2.2 * psi  # dim-0 padding per parameter
        assert fsdp2["optimizer"] == 2 * fsdp2["params"]
    # torch's ZeRO-1 partitions whole parameters: the two ranks' m + v add up to the whole model's 8 Psi
    psi = results[0]["ddp"]["psi"]
    assert results[0]["torch-zero1"]["optimizer"] + results[1]["torch-zero1"]["optimizer"] == 8 * psi
    assert results[0]["torch-zero1"]["params"] == 4 * psi


def test_same_trajectory(results):
    losses = [results[0][m]["loss"] for m in bz.METHODS]
    assert max(losses) - min(losses) < 1e-5, losses


def test_markdown(results):
    md = bz.sharding_markdown(results[0], 2, MODEL, 4, 8, 2)
    assert md.startswith("## Chapter 12")
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert [r.split("|")[1].strip() for r in rows] == list(bz.METHODS)
    for row in bz.sharding_rows(results[0], 2):
        assert row["ms / step"] > 0
        if row["method"] in ("ddp", "zero1", "zero2"):
            assert row["held / formula"] == pytest.approx(1.0, abs=1e-12)
        else:
            assert row["held / formula"] == pytest.approx(1.0, abs=0.1)
