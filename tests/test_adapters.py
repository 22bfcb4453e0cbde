"""minillm.peft.adapters: Houlsby's serial and He et al.'s parallel adapters on an unchanged GPT: hand-worked cases, an
independent re-computation of one adapted block, the exact start at the base model, only adapters train, the
parameter formula, AdapterDrop's `layers`, state dicts, KV-cache decoding through a wrapped attention, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minillm.generate import generate
from minillm.model import GPT, GPTConfig
from minillm.peft.adapters import (
    AdapterConfig,
    Bottleneck,
    ParallelAdapter,
    SerialAdapter,
    adapter_modules,
    adapter_param_count,
    adapter_state_dict,
    apply_adapters,
    load_adapter_state_dict,
)
from minillm.sampling import SamplingParams

IDX = torch.tensor([[1, 5, 9, 3, 7, 2, 8, 4], [0, 2, 4, 6, 8, 10, 12, 14]])


def _tiny(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.preset("tiny-llama", **overrides)).double()


def _randomize(model: nn.Module, seed: int = 1) -> None:
    """Nonzero up projections (they start at zero: a check at init would not see them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in adapter_modules(model).values():
            for p in m.adapter.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)


def _hand_adapter(scaling: float = 1.0) -> Bottleneck:
    # d = 2, m = 1: down = [1, -1] + 0.5, relu, up = [[2], [1]] + [0, 1]
    a = Bottleneck(2, 1, "relu", scaling).double()
    with torch.no_grad():
        a.down.weight.copy_(torch.tensor([[1.0, -1.0]]))
        a.down.bias.fill_(0.5)
        a.up.weight.copy_(torch.tensor([[2.0], [1.0]]))
        a.up.bias.copy_(torch.tensor([0.0, 1.0]))
    return a


def _hand_linear() -> nn.Linear:
    f = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        f.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    return f


def test_hand_worked_serial_and_parallel():
    x = torch.tensor([[2.0, 1.0]], dtype=torch.float64)
    # serial: y = W x = [4, 10]; down: 4 - 10 + 0.5 = -5.5 -> relu 0 -> up: [0, 1]; y + [0, 1] = [4, 11]
    serial = SerialAdapter(_hand_linear(), _hand_adapter())
    torch.testing.assert_close(serial(x), torch.tensor([[4.0, 11.0]], dtype=torch.float64), rtol=0, atol=0)
    # parallel reads x: down 2 - 1 + 0.5 = 1.5 -> relu 1.5 -> up [3, 2.5], s = 4: [12, 10]; W x + that = [16, 20]
    parallel = ParallelAdapter(_hand_linear(), _hand_adapter(scaling=4.0))
    torch.testing.assert_close(parallel(x), torch.tensor([[16.0, 20.0]], dtype=torch.float64), rtol=0, atol=0)
    # the serial adapter reads the sub-layer's output, with x' = [1, -1]: W x' = [-1, -1], down 0.5 -> up [1, 1.5]
    xp = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    torch.testing.assert_close(serial(xp), torch.tensor([[0.0, 0.5]], dtype=torch.float64), rtol=0, atol=0)


def _block_by_hand(block: nn.Module, x: torch.Tensor, kind: str) -> torch.Tensor:
    """One Pre-LN Llama block recomputed from the weights, the adapters placed as the papers say."""
    attn, mlp = block.self_attn, block.mlp
    base = lambda m: m.base_layer if isinstance(m, SerialAdapter | ParallelAdapter) else m  # noqa: E731
    a_attn, mlp_mod = base(attn), base(mlp)
    o_proj, down = base(a_attn.o_proj), base(mlp_mod.down)

    def attention(h: torch.Tensor) -> torch.Tensor:
        B, T, _ = h.shape
        c = a_attn.cfg
        q = a_attn.q_proj(h).view(B, T, c.n_head, c.head_dim).transpose(1, 2)
        k = a_attn.k_proj(h).view(B, T, c.n_kv_head, c.head_dim).transpose(1, 2)
        v = a_attn.v_proj(h).view(B, T, c.n_kv_head, c.head_dim).transpose(1, 2)
        k, v = k.repeat_interleave(c.n_rep, 1), v.repeat_interleave(c.n_rep, 1)
        from minillm.positional import RoPE

        q, k = RoPE(10000.0, layout="halves").rotate(q, k, torch.arange(T))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = o_proj(y.transpose(1, 2).reshape(B, T, -1))
        if kind == "houlsby":
            y = y + a_attn.o_proj.adapter(y)
        return y

    h = block.input_layernorm(x)
    out = attention(h)
    if kind == "parallel":
        out = out + attn.adapter(h)
    x = x + out
    h = block.post_attention_layernorm(x)
    f = down(F.silu(mlp_mod.gate(h)) * mlp_mod.up(h))
    f = f + (mlp_mod.down.adapter(f) if kind == "houlsby" else mlp.adapter(h))
    return x + f


@pytest.mark.parametrize("kind", ["houlsby", "parallel"])
def test_block_equals_the_papers_placement_by_hand(kind):
    model = _tiny()
    apply_adapters(model, AdapterConfig(kind=kind, bottleneck=5, where=("attn", "mlp"), scaling=2.0))
    _randomize(model)
    block = model.layers[0]
    x = torch.randn(2, 6, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(block(x, rotate=model.rope.rotate), _block_by_hand(block, x, kind))


@pytest.mark.parametrize("cfg", [AdapterConfig(), AdapterConfig(kind="parallel", where=("attn", "mlp")),
                                 AdapterConfig(kind="parallel", scaling=4.0, bottleneck=3, activation="gelu")])
def test_starts_at_the_base_and_only_adapters_train(cfg):
    model = _tiny()
    ref = model(IDX)[0].detach()
    names_before = set(model.state_dict())
    apply_adapters(model, cfg)
    torch.testing.assert_close(model(IDX)[0], ref, rtol=0, atol=0)  # up = 0: exactly the base model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapter." in n for n in trainable)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert n_train == adapter_param_count(cfg, model) == adapter_param_count(cfg, "tiny-llama")
    # hand formula: 2 layers x |where| x (2 d m + m + d)
    assert n_train == 2 * len(cfg.where) * (2 * 64 * cfg.bottleneck + cfg.bottleneck + 64)
    _, loss = model(IDX[:, :-1], IDX[:, 1:])
    loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
    for m in adapter_modules(model).values():  # up = 0 at init: only up gets a gradient at the first step
        assert torch.count_nonzero(m.adapter.down.weight.grad) == 0 and m.adapter.up.weight.grad.abs().max() > 0
    # the base weights keep their names (under base_layer where wrapped)
    renamed = {n.replace(".base_layer", "") for n in model.state_dict() if ".adapter." not in n}
    assert renamed == names_before


def test_adapter_drop_layers_and_state_dict_round_trip():
    cfg = AdapterConfig(kind="houlsby", bottleneck=4, layers=(1,))
    model = apply_adapters(_tiny(), cfg)
    assert set(adapter_modules(model)) == {"layers.1.self_attn.o_proj", "layers.1.mlp.down"}
    assert adapter_param_count(cfg, model) == 2 * (2 * 64 * 4 + 4 + 64)
    _randomize(model)
    state = adapter_state_dict(model)
    assert set(state) == {f"layers.1.{s}.adapter.{p}.{w}" for s in ("self_attn.o_proj", "mlp.down")
                          for p in ("down", "up") for w in ("weight", "bias")}
    fresh = apply_adapters(_tiny(), cfg)
    load_adapter_state_dict(fresh, state)
    torch.testing.assert_close(fresh(IDX)[0], model(IDX)[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="same kind, bottleneck"):
        load_adapter_state_dict(apply_adapters(_tiny(), AdapterConfig(bottleneck=4)), state)


def test_parallel_attention_adapter_decodes_with_the_kv_cache():
    model = apply_adapters(_tiny(), AdapterConfig(kind="parallel", where=("attn", "mlp")))
    _randomize(model)
    params = SamplingParams(max_tokens=6, temperature=0)
    assert generate(model, IDX[:, :4], params).tolist() == generate(model, IDX[:, :4], params,
                                                                    use_cache=False).tolist()


def test_errors():
    with pytest.raises(ValueError, match="kind='lora'"):
        AdapterConfig(kind="lora")
    with pytest.raises(ValueError, match="bottleneck must be a positive int"):
        AdapterConfig(bottleneck=0)
    with pytest.raises(ValueError, match="where must name distinct sub-layers"):
        AdapterConfig(where=("ffn",))
    with pytest.raises(ValueError, match="activation='tanhh'"):
        AdapterConfig(activation="tanhh")
    with pytest.raises(ValueError, match="scaling must be > 0"):
        AdapterConfig(scaling=0)
    assert AdapterConfig(kind="parallel", where="attn").where == ("attn",)
    with pytest.raises(ValueError, match="the model has 2"):
        apply_adapters(_tiny(), AdapterConfig(layers=(2,)))
    model = apply_adapters(_tiny(), AdapterConfig())
    with pytest.raises(ValueError, match="already has adapters"):
        apply_adapters(model, AdapterConfig())
    with pytest.raises(TypeError, match="minillm GPT"):
        apply_adapters(nn.Linear(2, 2), AdapterConfig())
    with pytest.raises(ValueError, match="no adapter"):
        adapter_state_dict(_tiny())
