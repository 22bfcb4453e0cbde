"""minillm.peft.adalora: hand-worked cases (the SVD forward, the importance and its EMAs, the regulariser, the
budget schedule), equality with `peft` 0.21's AdaLoRA (the budget schedule at every step; on the same weights of
a Llama: logits, gradients, regularised loss, smoothed importance, masks and rank patterns over a whole
schedule), the start-unchanged property, a run through minillm.train that ends at exactly the target budget
(and its adapter saved and loaded back), and the error messages."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from minillm.data import CharTokenizer, TokenData, load_corpus
from minillm.model import GPT, GPTConfig
from minillm.peft.adalora import (
    AdaLoraConfig,
    RankAllocator,
    SVDLinear,
    adalora_layers,
    adalora_state_dict,
    apply_adalora,
    budget_schedule,
    load_adalora_state_dict,
    orth_regularizer,
    rank_table,
)
from minillm.peft.lora import LoraConfig, apply_lora
from minillm.train import TrainConfig, train

IDX = torch.tensor([[1, 5, 9, 3, 7, 2, 8, 4], [0, 2, 4, 6, 8, 10, 12, 14]])  # (2, 8)
OURS_TO_HF = {"mlp.gate": "mlp.gate_proj", "mlp.up": "mlp.up_proj", "mlp.down": "mlp.down_proj"}


def _tiny(seed: int = 0, dtype=torch.float64, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.preset("tiny-llama", **overrides)).to(dtype)


def _cfg(**kw) -> AdaLoraConfig:
    return AdaLoraConfig(**{**dict(init_r=4, target_r=2, total_step=10, tinit=2, tfinal=3), **kw})


# ---------------------------------------------------------------------------------------------- by hand


def test_svd_linear_forward_by_hand():
    # W = [[1, 0], [0, 1], [2, 2]] (out 3, in 2); Q = [[1, 1], [1, -1]], lambda = [2, -1], P = [[1, 0], [0, 1], [1, 1]]
    base = nn.Linear(2, 3, bias=False).double()
    with torch.no_grad():
        base.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]]))
    m = SVDLinear(base, r=2, alpha=4.0)  # scaling 4 / 2 = 2
    with torch.no_grad():
        m.lora_A.copy_(torch.tensor([[1.0, 1.0], [1.0, -1.0]]))
        m.lora_E.copy_(torch.tensor([[2.0], [-1.0]]))
        m.lora_B.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    x = torch.tensor([[3.0, 1.0]], dtype=torch.float64)
    # W x = [3, 1, 8]; Q x = [4, 2]; lambda * Q x = [8, -2]; P (.) = [8, -2, 6]; x 2 -> [16, -4, 12]
    torch.testing.assert_close(m(x), torch.tensor([[19.0, -3.0, 20.0]], dtype=torch.float64), rtol=0, atol=0)
    # delta_weight = 2 P diag(lambda) Q
    want = 2 * torch.tensor([[1.0, 0], [0, 1], [1, 1]]) @ torch.diag(torch.tensor([2.0, -1])) @ torch.tensor(
        [[1.0, 1], [1, -1]])
    torch.testing.assert_close(m.delta_weight(), want.double(), rtol=0, atol=0)
    torch.testing.assert_close(m(x), x @ (base.weight + m.delta_weight()).T, rtol=0, atol=1e-12)


def test_starts_unchanged_and_only_adapters_train():
    model = _tiny(vocab_size=101)
    before = model(IDX)[0]
    apply_adalora(model, _cfg(target_modules=("q_proj", "v_proj", "down")))
    assert torch.equal(model(IDX)[0], before)  # lambda = 0: the update is exactly zero
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.rsplit(".", 1)[-1] in ("lora_A", "lora_E", "lora_B") for n in trainable)
    layers = adalora_layers(model)
    assert len(layers) == 6 and all(m.lora_E.abs().max() == 0 for m in layers.values())
    for m in layers.values():  # P and Q drawn from N(0, 0.02^2)
        assert 0.01 < m.lora_A.std().item() < 0.03 and 0.01 < m.lora_B.std().item() < 0.03


def test_importance_and_its_smoothing_by_hand():
    # one 2 -> 1 linear, init_r = 1: Q = [1, -2], lambda = 0.5, P = 2, with fixed gradients every step
    cfg = AdaLoraConfig(target_modules=("0",), init_r=1, target_r=1, total_step=10, beta1=0.8, beta2=0.5)
    model = apply_adalora(nn.Sequential(nn.Linear(2, 1, bias=False)).double(), cfg)
    m = model[0]
    with torch.no_grad():
        m.lora_A.copy_(torch.tensor([[1.0, -2.0]]))
        m.lora_E.copy_(torch.tensor([[0.5]]))
        m.lora_B.copy_(torch.tensor([[2.0]]))
    m.lora_A.grad = torch.tensor([[0.1, 0.3]], dtype=torch.float64)
    m.lora_E.grad = torch.tensor([[-2.0]], dtype=torch.float64)
    m.lora_B.grad = torch.tensor([[0.25]], dtype=torch.float64)
    # I = |w * grad|: Q [0.1, 0.6], lambda 1.0, P 0.5
    alloc = RankAllocator(model, cfg)
    alloc.update_ipt()
    torch.testing.assert_close(alloc.ipt["0.lora_A"], torch.tensor([[0.1, 0.6]], dtype=torch.float64))
    # step 1: I_bar = 0.2 I, U_bar = 0.5 |I - 0.2 I| = 0.4 I, s = 0.08 I^2
    torch.testing.assert_close(alloc.exp_avg_ipt["0.lora_A"], torch.tensor([[0.02, 0.12]], dtype=torch.float64))
    torch.testing.assert_close(alloc.exp_avg_unc["0.lora_A"], torch.tensor([[0.04, 0.24]], dtype=torch.float64))
    # triplet: s(lambda) + mean s(Q) + mean s(P) = 0.08 (1 + (0.01 + 0.36) / 2 + 0.25) = 0.1148
    assert alloc.scores()["0"].item() == pytest.approx(0.1148, rel=1e-12)
    alloc.update_ipt()
    # step 2: I_bar = 0.8 * 0.2 I + 0.2 I = 0.36 I, U_bar = 0.5 * 0.4 I + 0.5 * 0.64 I = 0.52 I: s = 0.1872 I^2
    torch.testing.assert_close(alloc.exp_avg_unc["0.lora_E"], torch.tensor([[0.52]], dtype=torch.float64))
    assert alloc.scores()["0"].item() == pytest.approx(0.1872 * 1.435, rel=1e-12)


def test_masking_keeps_the_best_triplets_model_wide():
    model = apply_adalora(nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3)).double(),
                          AdaLoraConfig(target_modules=("0", "1"), init_r=3, target_r=1, total_step=10))
    alloc = RankAllocator(model, AdaLoraConfig(target_modules=("0", "1"), init_r=3, target_r=1, total_step=10))
    for m in adalora_layers(model).values():
        with torch.no_grad():
            m.lora_E.fill_(1.0)
    # hand-set scores: only lambda's importance counts here (P and Q scores zero)
    for key, p in alloc._params():
        alloc.exp_avg_ipt[key] = torch.zeros_like(p)
        alloc.exp_avg_unc[key] = torch.ones_like(p)
    alloc.exp_avg_ipt["0.lora_E"] = torch.tensor([[0.5], [0.1], [0.9]], dtype=torch.float64)
    alloc.exp_avg_ipt["1.lora_E"] = torch.tensor([[0.2], [0.8], [0.3]], dtype=torch.float64)
    pattern = alloc.mask_to_budget(3)  # keep 0.9, 0.8, 0.5
    assert pattern["0"].tolist() == [True, False, True] and pattern["1"].tolist() == [False, True, False]
    assert model[0].lora_E.view(-1).tolist() == [1.0, 0.0, 1.0] and alloc.ranks() == {"0": 2, "1": 1}
    rows, cols, grid = rank_table({"layers.0.attn.q": 3, "layers.1.attn.q": 1, "layers.1.mlp.up": 2})
    assert rows == ["layer 0", "layer 1"] and cols == ["attn.q", "mlp.up"]
    assert grid[1] == [1.0, 2.0] and math.isnan(grid[0][1])


def test_orth_regularizer_by_hand():
    model = apply_adalora(nn.Sequential(nn.Linear(2, 3, bias=False)).double(),
                          AdaLoraConfig(target_modules=("0",), init_r=2, target_r=1, total_step=4))
    m = model[0]
    with torch.no_grad():
        m.lora_A.copy_(torch.tensor([[0.6, 0.8], [-0.8, 0.6]], dtype=torch.float64))  # orthonormal rows
        m.lora_B.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]))  # orthonormal columns
    assert orth_regularizer(model).item() == pytest.approx(0.0, abs=1e-15)
    with torch.no_grad():
        m.lora_A.mul_(2)  # Q Q^T = 4 I: ||3 I||_F = 3 sqrt(2); P^T P - I = 0; mean of the two = 1.5 sqrt(2)
    assert orth_regularizer(model).item() == pytest.approx(1.5 * math.sqrt(2), rel=1e-12)


def test_budget_schedule_by_hand():
    # b_0 = 24, b_T = 8, tinit 2, tfinal 3, T = 10: the fall spans steps 3..7, 1 - (t - 2) / 5 = 0.8 ... 0
    # 16 x 0.512 + 8 = 16.192 -> 16; 16 x 0.216 + 8 = 11.456 -> 11; 9.024 -> 9; 8.128 -> 8; 8
    got = [budget_schedule(t, 24, 8, 2, 3, 10) for t in range(0, 12)]
    assert got == [24, 24, 24, 16, 11, 9, 8, 8, 8, 8, 8, 8]


# ---------------------------------------------------------------------------------------------- vs peft


CONFIGS = [dict(init_r=12, target_r=8, tinit=0, tfinal=0, deltaT=1, total_step=50),
           dict(init_r=6, target_r=2, tinit=5, tfinal=7, deltaT=3, total_step=40),
           dict(init_r=9, target_r=1, tinit=17, tfinal=0, deltaT=10, total_step=213),
           dict(init_r=4, target_r=4, tinit=1, tfinal=1, deltaT=1, total_step=3)]


@pytest.mark.parametrize("kw", CONFIGS)
def test_budget_schedule_equals_peft(kw):
    peft = pytest.importorskip("peft")

    def mlp() -> nn.Sequential:
        return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3), nn.Linear(3, 4))

    theirs = peft.get_peft_model(mlp(), peft.AdaLoraConfig(target_modules=["0", "2", "3"], **kw))
    ours = RankAllocator(apply_adalora(mlp(), AdaLoraConfig(target_modules=("0", "2", "3"), **kw)),
                         AdaLoraConfig(target_modules=("0", "2", "3"), **kw))
    ref = theirs.base_model.rankallocator
    assert (ours.init_budget, ours.target_budget) == (ref.init_bgt, ref.target_bgt)
    for step in range(kw["total_step"] + 5):
        assert ours.budget(step) == ref.budget_schedule(step)[0], step


def _peft_name(ours: str) -> str:
    for a, b in OURS_TO_HF.items():
        ours = ours.replace(a, b)
    return "base_model.model.model." + ours


@pytest.mark.parametrize("kw", [dict(init_r=4, target_r=2, tinit=2, tfinal=3, deltaT=2, total_step=12),
                                dict(init_r=3, target_r=1, tinit=0, tfinal=0, deltaT=1, total_step=6)])
def test_equals_peft_logits_grads_importance_and_masks(kw):
    peft = pytest.importorskip("peft")
    from minillm.hf import to_hf

    targets = ("q_proj", "v_proj", "up", "down")
    model = _tiny(seed=kw["init_r"], vocab_size=101)
    hf = to_hf(model).double()
    cfg = AdaLoraConfig(target_modules=targets, lora_alpha=5.0, orth_reg_weight=0.3, **kw)
    theirs = peft.get_peft_model(hf, peft.AdaLoraConfig(
        target_modules=["q_proj", "v_proj", "up_proj", "down_proj"], lora_alpha=5.0, orth_reg_weight=0.3, **kw))
    apply_adalora(model, cfg)
    alloc = RankAllocator(model, cfg)
    ref = theirs.base_model
    their = dict(theirs.named_parameters())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, m in adalora_layers(model).items():
            m.lora_E.copy_(torch.randn(m.lora_E.shape, generator=g, dtype=torch.float64))
            for part in ("lora_A", "lora_E", "lora_B"):
                their[f"{_peft_name(name)}.{part}.default"].copy_(getattr(m, part))
    # (peft's ranknum, one number per matrix, is a Parameter that its set_adapter marks trainable; never updated)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == sum(
        p.numel() for n, p in theirs.named_parameters() if p.requires_grad and "ranknum" not in n)
    model.train(), theirs.train()
    # the regularised loss: peft adds orth_reg_weight x R to the model's loss inside forward
    with torch.no_grad():
        hf_loss = ref(input_ids=IDX, labels=IDX).loss  # AdaLoraModel.forward adds it
        theirs.peft_config["default"].orth_reg_weight = 0.0
        hf_plain = ref(input_ids=IDX, labels=IDX).loss
        theirs.peft_config["default"].orth_reg_weight = 0.3
    assert alloc.regularizer().item() > 0.01
    # (transformers' cross-entropy is float32: the difference of two losses near 4.6 is good to ~1e-6)
    assert (hf_loss - hf_plain).item() == pytest.approx(alloc.regularizer().item(), abs=2e-6)
    w = torch.randn(2, 8, 101, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for step in range(1, kw["total_step"] + 3):  # no optimizer: new gradients on fixed (masked) weights
        x = torch.randint(0, 101, (2, 8), generator=g)
        model.zero_grad(), theirs.zero_grad()
        logits, ref_logits = model(x)[0], theirs(input_ids=x).logits
        # transformers computes RoPE's angles in float32 (our float64 model does not): ~1e-7 apart
        torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-5)
        (logits * w).sum().backward()
        (ref_logits * w).sum().backward()
        for name, m in adalora_layers(model).items():
            for part in ("lora_A", "lora_E", "lora_B"):
                want = their[f"{_peft_name(name)}.{part}.default"].grad
                # peft divides by ranknum + 1e-5, not by r: ~3e-6 relative apart (and RoPE's float32 angles)
                torch.testing.assert_close(getattr(m, part).grad, want, rtol=0,
                                           atol=1e-5 * want.abs().max().item() + 1e-12)
        alloc.update_and_allocate(step)
        ref.update_and_allocate(step)
        for name, m in adalora_layers(model).items():
            key = f"{_peft_name(name)}.lora_A.default".removeprefix("base_model.model.")
            if key in ref.rankallocator.exp_avg_ipt:
                want = ref.rankallocator.exp_avg_ipt[key]
                torch.testing.assert_close(alloc.exp_avg_ipt[f"{name}.lora_A"], want, rtol=1e-4,
                                           atol=1e-6 * want.abs().max().item())
            # the masks: the same lambdas zeroed after every step
            theirs_e = their[f"{_peft_name(name)}.lora_E.default"]
            assert torch.equal(m.lora_E == 0, theirs_e == 0), (step, name)
        pattern = theirs.peft_config["default"].rank_pattern
        if pattern is not None:
            assert {n: alloc.rank_pattern[n].tolist() for n in alloc.rank_pattern} == {
                n: pattern[f"{_peft_name(n)}.lora_E.default".removeprefix("base_model.model.")]
                for n in alloc.rank_pattern}
    assert sum(alloc.ranks().values()) == alloc.target_budget == ref.rankallocator.target_bgt


# ---------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def data() -> TokenData:
    text = load_corpus("shakespeare", max_chars=20_000)
    return TokenData(text, CharTokenizer.from_text(text))


def test_a_training_run_ends_at_the_target_budget(data):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=data.vocab_size, block_size=32, n_layer=2, n_head=2, d_model=32,
                          pos="learned"))
    base = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = AdaLoraConfig(target_modules=("q_proj", "v_proj", "up"), init_r=6, target_r=3, tinit=4, tfinal=5,
                        deltaT=2, total_step=30)
    apply_adalora(model, cfg)
    alloc = RankAllocator(model, cfg)
    tcfg = TrainConfig(steps=30, batch_size=4, seq_len=16, lr=3e-2, warmup=2, eval_every=0, eval_batches=2,
                       progress=False)
    hist = train(model, data, tcfg, regularizer=alloc.regularizer, after_step=alloc.update_and_allocate)
    assert sum(hist.train_loss[-5:]) < sum(hist.train_loss[:5])
    assert alloc.history["step"] == list(range(1, 31))
    assert alloc.history["budget"][:4] == [36] * 4 and alloc.history["budget"][-6:] == [18] * 6
    assert alloc.history["rank"][-6:] == [18] * 6 and sum(alloc.ranks().values()) == 18
    ranks = alloc.ranks()
    assert len(set(ranks.values())) > 1  # the budget went to some matrices more than others
    for name, m in adalora_layers(model).items():  # the masked lambdas are zero, the kept ones not
        assert int((m.lora_E != 0).sum()) == ranks[name]
    # the frozen base did not move
    after = {k.replace(".base_layer", ""): v for k, v in model.state_dict().items() if "lora_" not in k}
    assert after.keys() == base.keys() and all(torch.equal(v, after[k]) for k, v in base.items())
    # save the kept triplets, load them into a fresh adapted model: the same function, fewer numbers
    state = adalora_state_dict(model, alloc.rank_pattern)
    assert sum(v.numel() for k, v in state.items() if k.endswith("lora_E")) == 18
    torch.manual_seed(0)
    fresh = apply_adalora(GPT(model.cfg), cfg)
    fresh.load_state_dict({k: v for k, v in model.state_dict().items() if "lora_" not in k}, strict=False)
    assert {k: v.tolist() for k, v in load_adalora_state_dict(fresh, state).items()} == {
        k: v.tolist() for k, v in alloc.rank_pattern.items()}
    model.eval(), fresh.eval()
    torch.testing.assert_close(fresh(IDX % data.vocab_size)[0], model(IDX % data.vocab_size)[0])


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("kw", "msg"), [
    (dict(total_step=None), "total_step must be set"), (dict(init_r=0), "init_r must be a positive int"),
    (dict(target_r=5), r"target_r must be an int in \[1, init_r=4\]"), (dict(tinit=4, tfinal=6), "leave no steps"),
    (dict(tinit=-1), "tinit and tfinal"), (dict(deltaT=0), "deltaT"), (dict(beta1=1.0), "beta1 and beta2"),
    (dict(orth_reg_weight=-0.1), "orth_reg_weight"), (dict(lora_alpha=0), "lora_alpha"),
    (dict(lora_dropout=1.0), "lora_dropout"), (dict(target_modules=()), "target_modules")])
def test_bad_configs(kw, msg):
    with pytest.raises(ValueError, match=msg):
        _cfg(**kw)


def test_errors():
    with pytest.raises(ValueError, match=r"matches no linear layer.*'q_proj'"):
        apply_adalora(_tiny(), _cfg(target_modules=("query_key_value",)))
    model = apply_adalora(_tiny(), _cfg())
    with pytest.raises(ValueError, match="already has adapters"):
        apply_adalora(model, _cfg())
    with pytest.raises(ValueError, match="already has adapters"):
        apply_adalora(apply_lora(_tiny(), LoraConfig()), _cfg())
    for fn in (orth_regularizer, adalora_state_dict):
        with pytest.raises(ValueError, match="apply_adalora"):
            fn(_tiny())
    alloc = RankAllocator(model, _cfg())
    with pytest.raises(RuntimeError, match="after backward"):
        alloc.update_and_allocate(1)
    with pytest.raises(RuntimeError, match="no importance yet"):
        alloc.scores()
    with pytest.raises(TypeError, match="linear layer"):
        SVDLinear(nn.LayerNorm(4), r=1, alpha=1.0)
    with pytest.raises(ValueError, match="rank r >= 1"):
        SVDLinear(nn.Linear(3, 3), r=0, alpha=1.0)
    state = adalora_state_dict(model)
    bigger = apply_adalora(_tiny(), _cfg(init_r=5, target_r=2))
    with pytest.raises(ValueError, match="do not fit this layer"):
        load_adalora_state_dict(bigger, state)
    with pytest.raises(ValueError, match="does not fit"):
        load_adalora_state_dict(apply_adalora(_tiny(), _cfg(target_modules=("q_proj",))), state)
