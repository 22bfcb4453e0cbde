"""minillm.bench.peft: the method comparison on a tiny model for 2 steps.

Checked: the rows' keys; each method's trainable count against its formula AND against the parameters that
require grad; full fine-tuning trains every parameter; for every PEFT method the frozen base is bitwise what it
was before training (each base weight found in the trained model, by name, or as the NF4 codes QLoRA made of it)
while the new weights did move; the memory split is positive and adds up. No timing assertions.
"""

from __future__ import annotations

import copy

import pytest
import torch

from minillm.bench import peft as bp
from minillm.data import CharTokenizer
from minillm.model import GPT, GPTConfig
from minillm.utils import markdown_table

CHARS = "abcdefghij"
ROW_KEYS = {"method", "trainable", "% of model", "lr", "val loss (start)", "val loss", "train loss (last quarter)",
            "train-split loss", "ms / step", "steps", "weights MB", "grads MB", "optimizer MB", "activations MB",
            "step peak MB", "total MB", "base unchanged"}


def tiny_setup() -> bp.Setup:
    torch.manual_seed(0)
    tok = CharTokenizer(CHARS)
    cfg = GPTConfig.preset("base", vocab_size=tok.vocab_size, block_size=64, n_layer=2, n_head=2, d_model=64,
                           ffn_hidden=128)
    g = torch.Generator().manual_seed(0)

    def text(n: int) -> str:
        return "".join(CHARS[i] for i in torch.randint(len(CHARS), (n,), generator=g).tolist())

    examples = [{"prompt": text(6), "response": text(5), "split": "train" if i < 24 else "heldout"} for i in range(32)]
    s = bp.sft_setup("cpu", batch_size=4, seq_len=24, eval_batches=1, model=GPT(cfg), tok=tok, examples=examples)
    s.timing_warmup = 0
    return s


@pytest.fixture(scope="module")
def setup() -> bp.Setup:
    return tiny_setup()


def names() -> list[str]:
    return list(bp.METHODS)


@pytest.fixture(scope="module")
def trained(setup):
    base_before = copy.deepcopy(setup.model)
    out = {}
    for n in names():
        row, model = bp.run_method(bp.METHODS[n], setup, steps=2, lr=1e-2)
        out[n] = (row, model)
    assert all(torch.equal(a, b) for a, b in zip(base_before.parameters(), setup.model.parameters(), strict=True))
    return out


def test_registry_has_all_ten_methods_at_import_and_a_row_per_method(setup, trained):
    assert list(bp.METHODS) == ["full fine-tuning", "LoRA", "QLoRA", "AdaLoRA", "Houlsby adapter", "parallel adapter",
                                "prompt tuning", "P-tuning v1", "prefix tuning", "P-tuning v2"]
    rows = bp.compare_methods(["LoRA"], 2, setup, memory=False)
    assert len(rows) == 1 and rows[0]["method"] == "LoRA" and "weights MB" not in rows[0]
    for n, (row, _) in trained.items():
        assert set(row) == ROW_KEYS, n
        assert row["steps"] == 2 and row["lr"] == 1e-2
    markdown_table([r for r, _ in trained.values()], bp.COLUMNS)  # every column the section prints is there


def test_unknown_method_is_a_clear_error(setup):
    with pytest.raises(ValueError, match="unknown method 'DoRA'; registered: .*'P-tuning v2'"):
        bp.compare_methods(["DoRA"], 2, setup)


@pytest.mark.parametrize("steps, warmup, tinit", [(16, 2, 2), (16, 0, 1), (100, 2, 10), (40, 5, 5)])
def test_adalora_budget_falls_only_after_the_warmup(setup, steps, warmup, tinit):
    model = bp.METHODS["AdaLoRA"].build(copy.deepcopy(setup.model))
    alloc = bp.METHODS["AdaLoRA"].hooks(model, steps, warmup)["allocator"]
    assert (alloc.cfg.tinit, alloc.cfg.tfinal, alloc.cfg.total_step) == (tinit, steps // 5, steps)
    assert alloc.budget(tinit) == alloc.init_budget  # the full budget through the warm-up


def test_trainable_counts_equal_formula_and_requires_grad(setup, trained):
    n_base = sum(p.numel() for p in setup.model.parameters())
    for n, (row, model) in trained.items():
        grad = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert row["trainable"] == grad, n
        assert row["% of model"] == pytest.approx(100 * grad / n_base)
        expected = bp.METHODS[n].expected
        if expected is not None:
            assert expected(setup.model) == grad, n
    # hand-worked: LoRA r = 8 on q and v of 2 layers, d 64 -> 2 layers x 2 matrices x 8 x (64 + 64) = 4,096
    assert trained["LoRA"][0]["trainable"] == 2 * 2 * 8 * (64 + 64) == trained["QLoRA"][0]["trainable"]


def test_full_finetuning_trains_every_parameter(setup, trained):
    row, model = trained["full fine-tuning"]
    assert row["trainable"] == sum(p.numel() for p in setup.model.parameters())
    assert row["% of model"] == pytest.approx(100.0)
    moved = [not torch.equal(a, b) for a, b in zip(model.parameters(), setup.model.parameters(), strict=True)]
    assert all(moved)  # AdamW's first step moves every weight by about lr (sign of its gradient)


def _strip(name: str) -> str:
    """A wrapped model's parameter name -> the base model's name (LoRA's base_layer, wrappers' prefixes)."""
    return name.replace(".base_layer", "")


@pytest.mark.parametrize("method", [n for n in names() if n != "full fine-tuning"])
def test_frozen_base_is_bitwise_unchanged(setup, trained, method):
    row, model = trained[method]
    assert row["base unchanged"] is True
    base = dict(setup.model.named_parameters())
    now = {_strip(n): p for n, p in model.named_parameters()}
    found = 0
    for name, w in base.items():
        hit = [p for n, p in now.items() if n == name or n.endswith("." + name)]
        if hit:
            assert not hit[0].requires_grad and torch.equal(hit[0], w), f"{method}: {name} changed"
            found += 1
        elif method == "QLoRA":  # the linear became NF4 codes: they must still be the codes of the base weight
            from minillm.peft.nf4 import LinearNF4

            layer = model.get_submodule(name.rsplit(".", 1)[0])
            layer = getattr(layer, "base_layer", layer)
            fresh = LinearNF4.from_linear(setup.model.get_submodule(name.rsplit(".", 1)[0]))
            assert isinstance(layer, LinearNF4) and torch.equal(layer.dequantize(), fresh.dequantize()), name
            found += 1
    assert found == len(base), f"{method}: {len(base) - found} base weights not found in the trained model"
    new = [p for p in model.parameters() if p.requires_grad]
    assert new and any(p.abs().sum() > 0 for p in new)


def test_unchanged_detects_a_changed_tensor(setup):
    model = bp.METHODS["LoRA"].build(copy.deepcopy(setup.model))
    before = bp.frozen_tensors(model)
    assert bp.unchanged(model, before)
    with torch.no_grad():
        next(p for p in model.parameters() if not p.requires_grad).view(-1)[0] += 1e-3
    assert not bp.unchanged(model, before)


def test_memory_split_is_positive_and_consistent(setup, trained):
    for n, (row, model) in trained.items():
        trainable = [p for p in model.parameters() if p.requires_grad]
        n_train_bytes = sum(p.numel() * p.element_size() for p in trainable)
        assert row["grads MB"] == pytest.approx(n_train_bytes / 1e6), n  # one gradient per trained number
        assert row["optimizer MB"] >= 2 * n_train_bytes / 1e6, n  # AdamW: m and v (plus a step counter each)
        assert row["weights MB"] > 0 and row["activations MB"] > 0 and row["step peak MB"] > 0, n
        assert row["total MB"] == pytest.approx(row["weights MB"] + row["optimizer MB"] + row["step peak MB"])
    full, lora = trained["full fine-tuning"][0], trained["LoRA"][0]
    assert lora["grads MB"] < full["grads MB"] / 5 and lora["optimizer MB"] < full["optimizer MB"] / 5
    assert trained["QLoRA"][0]["weights MB"] < lora["weights MB"]  # 4-bit linears


def test_lr_and_lora_sweeps(setup):
    rows, best = bp.lr_sweep(["LoRA"], 2, setup)
    assert [r["lr"] for r in rows] == list(bp.METHODS["LoRA"].lr_grid)
    assert best["LoRA"] == min(rows, key=lambda r: r["train-split loss"])["lr"]
    sweep = bp.lora_sweep(2, setup, ranks=(1, 4), targets={"q, v": ("q_proj", "v_proj"), "MLP": ("gate", "up", "down")})
    assert [r["setting"] for r in sweep] == ["r = 1", "r = 4", "q, v", "MLP"]
    assert sweep[1]["trainable"] == 4 * sweep[0]["trainable"] == 4 * 2 * 2 * (64 + 64)
    # MLP at r = 8: gate and up 64 -> 128, down 128 -> 64, 2 layers
    assert sweep[3]["trainable"] == 2 * 3 * 8 * (64 + 128)


def test_quick_section_is_markdown():
    md = bp.section_peft(quick=True)
    assert md.startswith("## Chapter 9") and "| method |" in md and "| sweep |" in md
