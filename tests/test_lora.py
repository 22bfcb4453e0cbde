"""minillm.peft.lora: a hand-worked case, equality with `peft`'s LoraModel (logits, gradients, merged weights) on
the same weights, merge / unmerge, adapter-only checkpoints that training continues from, the parameter formula
(built models, a 7B model on the meta device, ChatGLM-6B), `to_fast` on adapted models, and the error messages."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minillm.checkpoint import load_checkpoint, restore_model, save_checkpoint
from minillm.fast import to_fast
from minillm.model import GPT, GPTConfig, count_params
from minillm.peft import (
    LoraConfig,
    LoRALinear,
    apply_lora,
    base_param_count,
    linear_shapes,
    load_lora_state_dict,
    lora_layers,
    lora_param_count,
    lora_scaling,
    lora_size_table,
    lora_state_dict,
    merge_and_unload,
    merge_lora,
    unmerge_lora,
)

IDX = torch.tensor([[1, 5, 9, 3, 7, 2, 8, 4], [0, 2, 4, 6, 8, 10, 12, 14]])  # (2, 8)
ALL_OURS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate", "up", "down")
OURS_TO_HF = {"mlp.gate": "mlp.gate_proj", "mlp.up": "mlp.up_proj", "mlp.down": "mlp.down_proj"}


def _tiny(dtype=torch.float64, seed=0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.preset("tiny-llama", **overrides)).to(dtype)


def _randomize_adapters(model: nn.Module, seed: int = 1) -> None:
    """Nonzero A and B (B starts at zero: a check at init would not see B, nor the scaling)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora_layers(model).values():
            m.lora_A.copy_(torch.randn(m.lora_A.shape, generator=g, dtype=torch.float64))
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g, dtype=torch.float64) * 0.1)


# ---------------------------------------------------------------------------------------------- by hand


def test_hand_worked_2x2_rank_1():
    # W = [[1, 2], [3, 4]], A = [[1, -1]] (1 x 2), B = [[2], [0.5]] (2 x 1), alpha = 3, r = 1: s = 3
    base = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        base.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    lora = LoRALinear(base, r=1, alpha=3.0)
    with torch.no_grad():
        lora.lora_A.copy_(torch.tensor([[1.0, -1.0]]))
        lora.lora_B.copy_(torch.tensor([[2.0], [0.5]]))
    x = torch.tensor([[2.0, 1.0]], dtype=torch.float64)
    # W x = [4, 10]; A x = 1; B A x = [2, 0.5]; s B A x = [6, 1.5] -> [10, 11.5]
    torch.testing.assert_close(lora(x), torch.tensor([[10.0, 11.5]], dtype=torch.float64), rtol=0, atol=0)
    # s B A = 3 [[2, -2], [0.5, -0.5]] = [[6, -6], [1.5, -1.5]]
    torch.testing.assert_close(lora.delta_weight(), torch.tensor([[6.0, -6.0], [1.5, -1.5]], dtype=torch.float64))
    lora.merge()
    torch.testing.assert_close(base.weight, torch.tensor([[7.0, -4.0], [4.5, 2.5]], dtype=torch.float64))
    torch.testing.assert_close(lora(x), torch.tensor([[10.0, 11.5]], dtype=torch.float64), rtol=0, atol=0)
    lora.unmerge()
    torch.testing.assert_close(base.weight, torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64),
                               rtol=0, atol=0)
    # rsLoRA: s = alpha / sqrt(r); with r = 4, alpha = 8: 4 instead of 2
    assert lora_scaling(4, 8.0) == 2.0 and lora_scaling(4, 8.0, use_rslora=True) == 4.0


def test_init_starts_at_the_base_layer_and_only_adapters_train():
    model = _tiny()
    ref = model(IDX)[0].detach()
    cfg = LoraConfig(r=4, alpha=8.0, target_modules=ALL_OURS)
    apply_lora(model, cfg)
    torch.testing.assert_close(model(IDX)[0], ref, rtol=0, atol=0)  # B = 0: the same function
    for m in lora_layers(model).values():
        bound = 1 / math.sqrt(m.in_features)  # Kaiming-uniform with a = sqrt(5), as nn.Linear and peft
        assert m.lora_A.abs().max() <= bound and m.lora_A.abs().max() > 0.8 * bound
        assert torch.count_nonzero(m.lora_B) == 0 and m.lora_A.dtype == torch.float64
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    assert len(lora_layers(model)) == 2 * 7  # every projection of both layers; lm_head is not a target
    _, loss = model(IDX[:, :-1], IDX[:, 1:])
    loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
    # at init B = 0, so dL/dA = 0 and dL/dB != 0: the first step moves B only
    m = lora_layers(model)["layers.0.self_attn.q_proj"]
    assert torch.count_nonzero(m.lora_A.grad) == 0 and torch.count_nonzero(m.lora_B.grad) > 0


def test_dropout_only_on_the_adapter_path():
    torch.manual_seed(0)
    base = nn.Linear(16, 8).double()
    lora = LoRALinear(base, r=2, alpha=4.0, dropout=0.5)
    with torch.no_grad():
        lora.lora_B.normal_()
    x = torch.randn(64, 16, dtype=torch.float64)
    want = base(x) + lora.scaling * (x @ lora.lora_A.T @ lora.lora_B.T)
    torch.testing.assert_close(lora.eval()(x), want)  # eval: no dropout
    torch.manual_seed(3)
    got = lora.train()(x)
    torch.manual_seed(3)
    dropped = F.dropout(x, 0.5, training=True)  # the same mask: the first random draw of the forward
    torch.testing.assert_close(got, base(x) + lora.scaling * (dropped @ lora.lora_A.T @ lora.lora_B.T))


# ---------------------------------------------------------------------------------------------- vs peft


def _peft_name(ours: str) -> str:
    for a, b in OURS_TO_HF.items():
        ours = ours.replace(a, b)
    return "base_model.model." + (ours if ours.startswith("lm_head") else "model." + ours)


@pytest.mark.parametrize(("targets", "r", "rslora"), [(("q_proj", "v_proj"), 4, False),
                                                       (ALL_OURS, 2, True), (ALL_OURS, 8, False)])
def test_equals_peft_logits_gradients_and_merge(targets, r, rslora):
    peft = pytest.importorskip("peft")
    from minillm.hf import to_hf

    model = _tiny(seed=r, vocab_size=101)
    hf = to_hf(model).double()
    with torch.no_grad():
        base_logits = hf(input_ids=IDX).logits
    hf_targets = [OURS_TO_HF.get(f"mlp.{t}", t).split(".")[-1] for t in targets]
    theirs = peft.get_peft_model(hf, peft.LoraConfig(r=r, lora_alpha=2.0 * r + 1, target_modules=hf_targets,
                                                     lora_dropout=0.0, use_rslora=rslora, bias="none"))
    apply_lora(model, LoraConfig(r=r, alpha=2.0 * r + 1, target_modules=targets, use_rslora=rslora))
    _randomize_adapters(model, seed=r)
    their_params = dict(theirs.named_parameters())
    ours = lora_layers(model)
    with torch.no_grad():
        for name, m in ours.items():
            their_params[_peft_name(name) + ".lora_A.default.weight"].copy_(m.lora_A)
            their_params[_peft_name(name) + ".lora_B.default.weight"].copy_(m.lora_B)
    n_theirs = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert n_theirs == sum(p.numel() for p in model.parameters() if p.requires_grad) == lora_param_count(
        LoraConfig(r=r, target_modules=targets), model)
    model.train(), theirs.train()
    logits = model(IDX)[0]
    ref = theirs(input_ids=IDX).logits
    assert (ref - base_logits).abs().max() > 1e-2  # the adapters change the function
    # transformers computes RoPE's angles in float32 (our float64 model does not): ~1e-7 apart before any adapter
    torch.testing.assert_close(logits, ref, rtol=0, atol=1e-6)
    w = torch.randn(logits.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    (logits * w).sum().backward()
    (ref * w).sum().backward()
    for name, m in ours.items():
        ga, gb = (their_params[_peft_name(name) + f".lora_{x}.default.weight"].grad for x in "AB")
        assert m.lora_B.grad.abs().max() > 0 and m.lora_A.grad.abs().max() > 0
        for g, want in ((m.lora_A.grad, ga), (m.lora_B.grad, gb)):  # within 1e-5 of the largest entry
            torch.testing.assert_close(g, want, rtol=0, atol=1e-5 * want.abs().max().item())
    # merged weights equal peft's merge_and_unload
    merged_theirs = theirs.merge_and_unload().state_dict()
    merge_and_unload(model)
    for name in ours:
        want = merged_theirs[_peft_name(name).removeprefix("base_model.model.") + ".weight"]
        torch.testing.assert_close(model.get_submodule(name).weight, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("rslora", [False, True])
def test_equals_peft_exactly_on_a_float64_mlp(rslora):
    # no RoPE in the way: an MLP in float64, both wrapped by their own apply, the same A and B
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)

    def mlp() -> nn.Sequential:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(12, 20), nn.Tanh(), nn.Linear(20, 5)).double()

    ours = apply_lora(mlp(), LoraConfig(r=3, alpha=5.0, target_modules=("0", "2"), use_rslora=rslora))
    _randomize_adapters(ours)
    theirs = peft.get_peft_model(mlp(), peft.LoraConfig(r=3, lora_alpha=5.0, target_modules=["0", "2"],
                                                        use_rslora=rslora))
    their_params = dict(theirs.named_parameters())
    with torch.no_grad():
        for name, m in lora_layers(ours).items():
            their_params[f"base_model.model.{name}.lora_A.default.weight"].copy_(m.lora_A)
            their_params[f"base_model.model.{name}.lora_B.default.weight"].copy_(m.lora_B)
    x = torch.randn(7, 12, dtype=torch.float64)
    a, b = ours(x), theirs(x)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-13)
    a.pow(2).sum().backward()
    b.pow(2).sum().backward()
    for name, m in lora_layers(ours).items():
        for x_ in "AB":
            torch.testing.assert_close(getattr(m, f"lora_{x_}").grad,
                                       their_params[f"base_model.model.{name}.lora_{x_}.default.weight"].grad,
                                       rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------- merge


def test_merge_unmerge_and_unload():
    model = _tiny()
    apply_lora(model, LoraConfig(r=4, alpha=16.0, target_modules=("q_proj", "k_proj", "v_proj", "o_proj", "down")))
    _randomize_adapters(model)
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}
    adapted = model(IDX)[0].detach()
    assert (adapted - _tiny()(IDX)[0]).abs().max() > 1e-3  # the adapters change the function
    merge_lora(model)
    assert all(m.merged for m in lora_layers(model).values())
    torch.testing.assert_close(model(IDX)[0], adapted, rtol=0, atol=1e-12)
    merge_lora(model)  # twice is once
    torch.testing.assert_close(model(IDX)[0], adapted, rtol=0, atol=1e-12)
    deltas = {n + ".base_layer.weight": m.delta_weight().detach() for n, m in lora_layers(model).items()}
    unmerge_lora(model)
    eps = torch.finfo(torch.float64).eps
    for n, p in model.named_parameters():
        if n in base_before:  # one add and one subtract: within a rounding of |W| + |s B A| per weight
            err = (p - base_before[n]).abs()
            assert (err <= 2 * eps * (base_before[n].abs() + deltas[n].abs())).all(), n
            assert err.max() < 1e-14
    torch.testing.assert_close(model(IDX)[0], adapted, rtol=0, atol=1e-12)
    # merge_and_unload: a plain GPT again, with a plain GPT's state_dict names
    merge_and_unload(model)
    assert not lora_layers(model)
    plain = _tiny()
    assert set(model.state_dict()) == set(plain.state_dict())
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(plain(IDX)[0], adapted, rtol=0, atol=1e-12)


def test_merge_float32_close_and_tied_head_refused():
    model = _tiny(dtype=torch.float32)
    apply_lora(model, LoraConfig(r=8, target_modules=("q_proj", "v_proj", "up")))
    _randomize_adapters(model)
    adapted = model(IDX)[0].detach()
    merge_lora(model)
    torch.testing.assert_close(model(IDX)[0], adapted, rtol=1e-5, atol=1e-5)
    tied = _tiny(tie_embeddings=True)
    apply_lora(tied, LoraConfig(target_modules=("lm_head",)))
    _randomize_adapters(tied)
    with pytest.raises(ValueError, match="tied"):
        merge_lora(tied)
    tied(IDX)[0].sum().backward()  # unmerged, an adapter on a tied head trains
    assert tied.lm_head.lora_B.grad is not None and tied.embed_tokens.weight.grad is None


# ---------------------------------------------------------------------------------------------- save / load


def _batches(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 128, (4, 17), generator=g) for _ in range(n)]


def _steps(model: nn.Module, opt: torch.optim.Optimizer, batches: list[torch.Tensor]) -> None:
    for b in batches:
        _, loss = model(b[:, :-1], b[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_adapter_checkpoint_is_small_and_training_continues(tmp_path):
    cfg = LoraConfig(r=4, alpha=8.0, target_modules=("q_proj", "v_proj"))
    batches = _batches(6)

    def fresh() -> tuple[GPT, torch.optim.Optimizer]:
        m = apply_lora(_tiny(dtype=torch.float32, seed=5), cfg)
        return m, torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)

    straight, opt = fresh()
    _steps(straight, opt, batches)  # six steps without a break

    model, opt = fresh()
    _steps(model, opt, batches[:3])
    sd = lora_state_dict(model)
    assert set(sd) == {f"layers.{i}.self_attn.{p}_proj.lora_{x}" for i in range(2) for p in "qv" for x in "AB"}
    save_checkpoint(tmp_path / "adapter.pt", model, opt, 3, model_state=lora_state_dict,
                    extra={"lora_config": cfg.to_dict()})
    save_checkpoint(tmp_path / "full.pt", model, opt, 3)
    small, full = (tmp_path / "adapter.pt").stat().st_size, (tmp_path / "full.pt").stat().st_size
    assert small < full / 3

    state = load_checkpoint(tmp_path / "adapter.pt")
    resumed, opt2 = fresh()  # the same base weights, new adapters (A random, B zero)
    restore_model(resumed, state, strict=False)
    opt2.load_state_dict(state["optimizer"])
    assert LoraConfig(**state["lora_config"]) == cfg
    for k, v in sd.items():
        torch.testing.assert_close(lora_state_dict(resumed)[k], v, rtol=0, atol=0)
    _steps(resumed, opt2, batches[3:])
    for (n, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=n)

    # load_lora_state_dict: the same tensors, with the checks of this module
    other, _ = fresh()
    load_lora_state_dict(other, lora_state_dict(resumed))
    torch.testing.assert_close(other(IDX)[0], resumed(IDX)[0], rtol=0, atol=0)
    wrong_r = apply_lora(_tiny(dtype=torch.float32), LoraConfig(r=2, target_modules=("q_proj", "v_proj")))
    with pytest.raises(ValueError, match="same r and target_modules"):
        load_lora_state_dict(wrong_r, sd)
    with pytest.raises(ValueError, match="unexpected"):
        restore_model(_tiny(dtype=torch.float32), state, strict=False)  # no adapters to load into


# ---------------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize("name", ["tiny", "tiny-llama", "base"])
@pytest.mark.parametrize("targets", [("q_proj", "v_proj"), ALL_OURS[:4] + ("up", "down"), ("lm_head",)])
def test_param_count_formula_equals_built_model(name, targets):
    cfg = LoraConfig(r=3, target_modules=targets)
    model = GPT(GPTConfig.preset(name, n_layer=2) if name == "base" else GPTConfig.preset(name))
    want = lora_param_count(cfg, model.cfg)  # by formula, from the config
    apply_lora(model, cfg)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == want == lora_param_count(cfg, model)
    assert linear_shapes(model) == linear_shapes(model.cfg)


def test_published_sizes():
    # Llama-2-7B, q and v at r = 8: 32 layers x 2 x 8 x (4096 + 4096) = 4,194,304 (peft prints the same)
    q_v = LoraConfig(r=8, target_modules=("q_proj", "v_proj"))
    assert lora_param_count(q_v, "llama2-7b") == 32 * 2 * 8 * (4096 + 4096) == 4_194_304
    with torch.device("meta"):  # the real module tree, no memory
        big = GPT(GPTConfig.preset("llama2-7b"))
    apply_lora(big, q_v)
    assert sum(p.numel() for p in big.parameters() if p.requires_grad) == 4_194_304
    # ChatGLM-6B, the fused query_key_value (4096 -> 12288) at r = 8: 28 x 8 x (4096 + 12288) = 3,670,016
    qkv = LoraConfig(r=8, target_modules=("query_key_value",))
    assert lora_param_count(qkv, "chatglm-6b") == 28 * 8 * (4096 + 12288) == 3_670_016
    # its base: 28 x (linears with biases + 2 LayerNorms) + final LayerNorm + one 130528 x 4096 embedding
    assert base_param_count("chatglm-6b") == 6_173_286_400
    assert base_param_count("llama2-7b") == count_params(GPTConfig.preset("llama2-7b"))["total"] == 6_738_415_616
    rows = lora_size_table([("llama2-7b", ("q_proj", "v_proj")), ("chatglm-6b", ("query_key_value",))], r=8)
    assert rows[0]["MB"] == pytest.approx(4_194_304 * 2 / 1e6) and rows[1]["lora_params"] == 3_670_016
    assert rows[0]["percent"] == pytest.approx(100 * 4_194_304 / 6_738_415_616)
    assert lora_param_count(LoraConfig(r=16, target_modules=("q_proj", "v_proj")), "llama2-7b") == 2 * 4_194_304


# ---------------------------------------------------------------------------------------------- to_fast


@pytest.mark.parametrize("order", ["lora_then_fast", "fast_then_lora"])
@pytest.mark.parametrize("T", [8, 40])  # 2 x 8 rows run the projections separately anyway; 2 x 40 would fuse
def test_to_fast_on_a_lora_model(order, T):
    idx = torch.randint(0, 128, (2, T), generator=torch.Generator().manual_seed(T))
    cfg = LoraConfig(r=4, target_modules=("q_proj", "k_proj", "gate", "up"))
    teaching = apply_lora(_tiny(), cfg)
    _randomize_adapters(teaching)
    fast = _tiny()
    if order == "lora_then_fast":
        to_fast(apply_lora(fast, cfg))
    else:
        apply_lora(to_fast(fast), cfg)
    fast.load_state_dict(teaching.state_dict())
    assert type(fast.layers[0].self_attn).__name__ == "FastAttention"
    a, b = teaching(idx)[0], fast(idx)[0]
    torch.testing.assert_close(b, a, rtol=0, atol=1e-10)
    a.pow(2).sum().backward()
    b.pow(2).sum().backward()
    for (n, p), q in zip(teaching.named_parameters(), fast.parameters(), strict=True):
        if p.requires_grad:
            assert p.grad.abs().max() > 0
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-10, msg=n)


# ---------------------------------------------------------------------------------------------- errors


class _FakeQuantLinear(nn.Module):
    """A frozen 'quantized' linear: int8 codes and a float scale, no float weight (like an NF4 layer)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.scale = weight.abs().max() / 127
        self.register_buffer("codes", torch.round(weight / self.scale).to(torch.int8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.codes.to(x.dtype) * self.scale)


def test_wraps_any_linear_like_module():
    torch.manual_seed(0)
    q = _FakeQuantLinear(torch.randn(6, 10))
    lora = LoRALinear(q, r=2, alpha=4.0)
    assert lora.lora_A.dtype == torch.float32  # not the base's int8
    with torch.no_grad():
        lora.lora_B.normal_()
    x = torch.randn(3, 10)
    torch.testing.assert_close(lora(x), q(x) + 2.0 * x @ lora.lora_A.T @ lora.lora_B.T)
    with pytest.raises(TypeError, match="dequantize"):
        lora.merge()
    model = nn.Sequential(nn.Linear(10, 10))
    model.append(_FakeQuantLinear(torch.randn(4, 10)))
    apply_lora(model, LoraConfig(r=2, target_modules=("1",)))
    assert isinstance(model[1], LoRALinear) and isinstance(model[0], nn.Linear)


def test_errors():
    for bad, msg in [(dict(r=0), "positive int"), (dict(r=2.0), "positive int"), (dict(alpha=0), "alpha"),
                     (dict(dropout=1.0), "dropout"), (dict(target_modules=()), "target_modules")]:
        with pytest.raises(ValueError, match=msg):
            LoraConfig(**bad)
    assert LoraConfig(target_modules="q_proj").target_modules == ("q_proj",)  # a string is one name
    with pytest.raises(ValueError, match=r"matches no linear layer.*'k_proj'.*'q_proj'"):
        apply_lora(_tiny(), LoraConfig(target_modules=("query_key_value",)))
    with pytest.raises(ValueError, match="a Attention, not a linear layer"):
        apply_lora(_tiny(), LoraConfig(target_modules=("self_attn",)))
    model = apply_lora(_tiny(), LoraConfig())
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        apply_lora(model, LoraConfig())
    for fn in (merge_lora, unmerge_lora, lora_state_dict):
        with pytest.raises(ValueError, match="apply_lora"):
            fn(_tiny())
    with pytest.raises(TypeError, match="linear layer"):
        LoRALinear(nn.LayerNorm(4), r=1, alpha=1.0)
    merge_lora(model)
    with pytest.raises(ValueError, match="unmerge_lora"):
        load_lora_state_dict(model, lora_state_dict(model))
    # "up" is a component name: it matches mlp.up, not a name merely ending in the letters "up"
    model = apply_lora(_tiny(), LoraConfig(target_modules=("up",)))
    assert sorted(lora_layers(model)) == ["layers.0.mlp.up", "layers.1.mlp.up"]
