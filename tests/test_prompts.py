"""minillm.peft.prompts / prefix: prompt tuning, P-tuning v1 (MLP and LSTM encoders), prefix tuning and P-tuning v2
equal `peft`'s PeftModelForCausalLM on the HF export of the same GPT (logits, gradients, parameter counts, padded
batches with an attention mask); prompt tuning equals "grow the vocabulary by P rows and prepend them"; a prefix
set to the keys and values of real tokens equals running those tokens first; packed batches; generation with and
without the KV cache; training moves only the prompt; state dicts; errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minillm.attention import causal_mask
from minillm.generate import generate
from minillm.model import GPT, GPTConfig
from minillm.peft.adapters import adapter_modules
from minillm.peft.prompts import (
    PrefixModel,
    PrefixTuningConfig,
    PromptModel,
    PromptTuningConfig,
    PTuningConfig,
    apply_mam,
    apply_p_tuning,
    apply_prefix_tuning,
    apply_prompt_tuning,
    load_prefix_state_dict,
    load_prompt_state_dict,
    prefix_param_count,
    prefix_state_dict,
    prompt_param_count,
    prompt_state_dict,
)
from minillm.sampling import SamplingParams

IDX = torch.tensor([[1, 5, 9, 3, 7, 2, 8, 4], [0, 2, 4, 6, 8, 10, 12, 14]])  # (2, 8)
V = 101


def _tiny(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig.preset("tiny-llama", vocab_size=V, **overrides)).double()  # GQA: 4 heads, 2 kv heads


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------------------------------------- vs peft

def _peft_name(ours: str) -> str:
    """Our encoder parameter name -> peft's (the same modules, other names)."""
    tail = ours.split("encoder.", 1)[1]  # "embedding", "mlp.0.weight", "lstm.weight_ih_l0", ...
    if tail == "embedding":
        return "prompt_encoder.default.embedding.weight"
    prompt = ours.startswith("model.embed_tokens")
    tail = tail.replace("lstm.", "lstm_head.").replace("mlp.", "mlp_head." if prompt else "transform.")
    return "prompt_encoder.default." + tail


CASES = {
    "prompt": (lambda: apply_prompt_tuning, PromptTuningConfig(n_virtual=3),
               lambda peft: peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3)),
    "p-tuning mlp": (lambda: apply_p_tuning, PTuningConfig(n_virtual=4, encoder="mlp", encoder_hidden=24),
                     lambda peft: peft.PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=4,
                                                           encoder_reparameterization_type="MLP",
                                                           encoder_hidden_size=24)),
    "p-tuning lstm": (lambda: apply_p_tuning, PTuningConfig(n_virtual=3, encoder="lstm", encoder_hidden=12),
                      lambda peft: peft.PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=3,
                                                            encoder_reparameterization_type="LSTM",
                                                            encoder_hidden_size=12, encoder_dropout=0.0)),
    "prefix": (lambda: apply_prefix_tuning, PrefixTuningConfig(n_virtual=3, projection=True, encoder_hidden=24),
               lambda peft: peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3,
                                                    prefix_projection=True, encoder_hidden_size=24)),
    "p-tuning v2": (lambda: apply_prefix_tuning, PrefixTuningConfig(n_virtual=5, projection=False),
                    lambda peft: peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5,
                                                         prefix_projection=False)),
}


def _pair(case: str, seed: int = 0):
    peft = pytest.importorskip("peft")
    from minillm.hf import to_hf

    apply, cfg, their_cfg = CASES[case]
    model = _tiny(seed)
    theirs = peft.get_peft_model(to_hf(model).double(), their_cfg(peft))
    theirs.prompt_encoder.double()  # peft builds its encoder in float32 whatever the model's dtype
    ours = apply()(model, cfg)
    their_params = dict(theirs.named_parameters())
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in _trainable(ours).items():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)  # new values in both
            their_params[_peft_name(name)].copy_(p)
    return ours, theirs, their_params


@pytest.mark.parametrize("case", list(CASES))
def test_equals_peft_logits_gradients_and_size(case):
    ours, theirs, their_params = _pair(case)
    P = ours.n_virtual
    n = sum(p.numel() for p in _trainable(ours).values())
    assert n == sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    count = (prefix_param_count(ours.config, ours) if isinstance(ours, PrefixModel)
             else prompt_param_count(ours.config, ours.model.cfg.d_model))
    assert count == n
    ours.train(), theirs.train()
    logits = ours(IDX)[0]
    ref = theirs(input_ids=IDX).logits
    assert logits.shape == (2, 8, V)
    if isinstance(ours, PromptModel):  # peft returns the virtual tokens' logits too
        assert ref.shape == (2, P + 8, V)
        ref = ref[:, P:]
    with torch.no_grad():
        plain = ours.model(IDX)[0] if isinstance(ours, PrefixModel) else None
    if plain is not None:
        assert (plain - logits).abs().max() > 1e-2  # the prefix changes the function
    # transformers computes RoPE's angles in float32 (our float64 model does not): ~1e-7 apart
    torch.testing.assert_close(logits, ref, rtol=0, atol=1e-6)
    w = torch.randn(logits.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    (logits * w).sum().backward()
    (ref * w).sum().backward()
    for name, p in _trainable(ours).items():
        want = their_params[_peft_name(name)].grad
        assert p.grad is not None and p.grad.abs().max() > 0, name
        torch.testing.assert_close(p.grad, want, rtol=0, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize("case", ["prompt", "p-tuning v2"])
def test_left_padded_batch_with_mask_equals_peft_attention_mask(case):
    ours, theirs, _ = _pair(case, seed=3)
    am = torch.ones(2, 8, dtype=torch.long)
    am[1, :3] = 0  # row 1 is left-padded by 3
    keep = am.bool()
    mask = causal_mask(8)[None, None] & keep[:, None, None, :]  # (B, 1, T, T): causal, never a pad key
    logits = ours(IDX, mask=mask)[0]
    ref = theirs(input_ids=IDX, attention_mask=am).logits[:, -8:]
    torch.testing.assert_close(logits[keep], ref[keep], rtol=0, atol=1e-6)  # the real tokens' rows


# ---------------------------------------------------------------------------------------------- by hand


def test_prompt_tuning_is_a_grown_vocabulary_with_p_rows_prepended():
    model = _tiny(tie_embeddings=True)
    base = _tiny(tie_embeddings=True)
    ours = apply_prompt_tuning(model, PromptTuningConfig(n_virtual=3, init="random"))
    rows = ours.virtual_embeddings()  # (3, d)
    # the reference: a GPT with V + 3 rows, the last 3 being the prompt, fed [V, V+1, V+2, idx...]
    grown = GPT(GPTConfig.preset("tiny-llama", vocab_size=V + 3, tie_embeddings=True)).double()
    sd = base.state_dict()
    sd["embed_tokens.weight"] = torch.cat([sd["embed_tokens.weight"], rows])
    sd["lm_head.weight"] = sd["embed_tokens.weight"]  # tied
    grown.load_state_dict(sd)
    full = torch.cat([torch.tensor([[V, V + 1, V + 2]]).expand(2, 3), IDX], dim=1)
    want = grown(full)[0][:, 3:, :V]  # the real tokens, the real vocabulary
    torch.testing.assert_close(ours(IDX)[0], want, rtol=0, atol=1e-12)
    # the loss: targets over the real tokens only, the same mean cross-entropy
    loss = ours(IDX[:, :-1], IDX[:, 1:])[1]
    torch.testing.assert_close(loss, F.cross_entropy(want[:, :-1].reshape(-1, V), IDX[:, 1:].reshape(-1)))


def test_vocab_init_copies_embedding_rows_and_text_is_repeated():
    model = _tiny(tie_embeddings=True)
    emb = model.embed_tokens.weight.detach().clone()
    ours = apply_prompt_tuning(model, PromptTuningConfig(n_virtual=5, init_ids=(7, 3)))
    torch.testing.assert_close(ours.virtual_embeddings(), emb[[7, 3, 7, 3, 7]], rtol=0, atol=0)
    assert ours.model.embed_tokens.weight is ours.model.lm_head.weight  # still tied, still frozen
    assert not ours.model.embed_tokens.weight.requires_grad


def test_prefix_of_real_tokens_equals_running_them_first():
    # P-tuning v2 started from the keys and values of u = [11, 12, 13]: the same as reading u before idx
    u = (11, 12, 13)
    base = _tiny()
    with torch.no_grad():
        want = base(torch.cat([torch.tensor([u]).expand(2, 3), IDX], dim=1))[0][:, 3:]
    ours = apply_prefix_tuning(_tiny(), PrefixTuningConfig(n_virtual=3, projection=False, init_ids=u))
    torch.testing.assert_close(ours(IDX)[0], want, rtol=0, atol=1e-12)
    # the prefix keys are not rotated again: a prefix of zeros is a query-independent average of zero values
    with torch.no_grad():
        ours.prefix_encoder.embedding.zero_()
    k, v = ours.prefix_kv(2)[0]
    assert k.shape == (2, 2, 3, 16) and torch.count_nonzero(k) == 0


def test_packed_row_equals_each_example_alone():
    ours = apply_prompt_tuning(_tiny(), PromptTuningConfig(n_virtual=2, init="random"))
    a, b = IDX[0, :5], IDX[1, :3]
    seg = torch.tensor([0] * 5 + [1] * 3)
    positions = torch.cat([torch.arange(5), torch.arange(3)])[None]  # (1, 8), restarting
    mask = ((seg[:, None] == seg[None, :]) & causal_mask(8))[None, None]  # (1, 1, 8, 8) block-diagonal causal
    packed = ours(torch.cat([a, b])[None], positions=positions, mask=mask)[0]
    torch.testing.assert_close(packed[:, :5], ours(a[None])[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(packed[:, 5:], ours(b[None])[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("make", [
    lambda m: apply_prompt_tuning(m, PromptTuningConfig(n_virtual=3, init="random")),
    lambda m: apply_p_tuning(m, PTuningConfig(n_virtual=3, encoder="lstm")),
    lambda m: apply_prefix_tuning(m, PrefixTuningConfig(n_virtual=3)),
    lambda m: apply_mam(m, PrefixTuningConfig(n_virtual=3))])
def test_generate_with_and_without_cache(make):
    ours = make(_tiny())
    params = SamplingParams(max_tokens=6, temperature=0)
    with_cache = generate(ours, IDX[:, :4], params)
    assert with_cache.tolist() == generate(ours, IDX[:, :4], params, use_cache=False).tolist()
    # greedy from the full forward, token by token
    seq = IDX[:, :4]
    for _ in range(6):
        seq = torch.cat([seq, ours(seq)[0][:, -1].argmax(-1, keepdim=True)], dim=1)
    assert with_cache.tolist() == seq.tolist()
    assert ours.cfg.block_size == 64 - 3


@pytest.mark.parametrize("make", [
    lambda m: apply_prompt_tuning(m, PromptTuningConfig(n_virtual=4)),
    lambda m: apply_p_tuning(m, PTuningConfig(n_virtual=4)),
    lambda m: apply_prefix_tuning(m, PrefixTuningConfig(n_virtual=4, projection=False))])
def test_training_moves_only_the_prompt_and_state_dict_round_trips(make):
    model = _tiny()
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    ours = make(model)
    opt = torch.optim.AdamW(_trainable(ours).values(), lr=1e-2)
    first = None
    for _ in range(20):
        loss = ours(IDX[:, :-1], IDX[:, 1:])[1]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.05
    now = ours.model.state_dict()
    for k, v in frozen.items():  # the GPT's own tensors: the same names, unchanged values
        torch.testing.assert_close(now[k], v, rtol=0, atol=0)
    save, load = ((prefix_state_dict, load_prefix_state_dict) if isinstance(ours, PrefixModel)
                  else (prompt_state_dict, load_prompt_state_dict))
    state = save(ours)
    fresh = make(_tiny())
    load(fresh, state)
    torch.testing.assert_close(fresh(IDX)[0], ours(IDX)[0], rtol=0, atol=0)


def test_mam_trains_the_prefix_and_the_ffn_adapters_only():
    ours = apply_mam(_tiny())
    names = set(_trainable(ours))
    assert any(n.startswith("prefix_encoder.") for n in names)
    assert names - {n for n in names if n.startswith("prefix_encoder.")} == {
        f"model.layers.{i}.mlp.adapter.{x}.{w}" for i in (0, 1) for x in ("down", "up") for w in ("weight", "bias")}
    assert len(adapter_modules(ours.model)) == 2 and ours.n_virtual == 30


def test_errors():
    with pytest.raises(ValueError, match="n_virtual must be a positive int"):
        PromptTuningConfig(n_virtual=0)
    with pytest.raises(ValueError, match="init='vocab'"):
        PromptTuningConfig(init="random", init_ids=(1,))
    with pytest.raises(ValueError, match="encoder='gru'"):
        PTuningConfig(encoder="gru")
    with pytest.raises(ValueError, match="set projection=True"):
        PrefixTuningConfig(projection=False, encoder_hidden=8)
    with pytest.raises(ValueError, match="exactly n_virtual=2"):
        PrefixTuningConfig(n_virtual=2, projection=False, init_ids=(1, 2, 3))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        apply_prompt_tuning(_tiny(), PromptTuningConfig(init_ids=(V,)))
    with pytest.raises(TypeError, match="PTuningConfig"):
        apply_p_tuning(_tiny(), PromptTuningConfig())
    ours = apply_prompt_tuning(_tiny(), PromptTuningConfig(n_virtual=2))
    with pytest.raises(ValueError, match="already has virtual tokens"):
        apply_prompt_tuning(ours.model, PromptTuningConfig())
    with pytest.raises(ValueError, match="boolean masks only"):
        ours(IDX, mask=torch.zeros(8, 8))
    pre = apply_prefix_tuning(_tiny(), PrefixTuningConfig(n_virtual=2))
    with pytest.raises(ValueError, match="packing=False"):
        pre(IDX, positions=torch.arange(8))
    with pytest.raises(ValueError, match="no room in block_size"):
        apply_prefix_tuning(_tiny(pos="learned", norm="layernorm", ffn="gelu"), PrefixTuningConfig(n_virtual=64))
    with pytest.raises(ValueError, match="same n_virtual, projection"):
        load_prefix_state_dict(apply_prefix_tuning(_tiny(), PrefixTuningConfig(n_virtual=3)), prefix_state_dict(pre))
    with pytest.raises(TypeError, match="minillm GPT"):
        apply_prefix_tuning(nn.Linear(2, 2), PrefixTuningConfig())
