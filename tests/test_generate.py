"""minillm.generate: cache == no cache, equal to Hugging Face's greedy and beam search, hand-worked beams."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from minillm.generate import beam_search, generate, inference_memory
from minillm.model import GPT, GPTConfig
from minillm.sampling import SamplingParams


def model(preset: str, **kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.preset(preset, **kw)).double().eval()


@pytest.mark.parametrize("preset", ["tiny", "tiny-llama"])
def test_cache_gives_the_same_tokens_as_rerunning(preset):
    m = model(preset)
    prompt = torch.randint(0, 128, (3, 5))
    greedy = SamplingParams(temperature=0.0, max_tokens=30)
    assert torch.equal(generate(m, prompt, greedy), generate(m, prompt, greedy, use_cache=False))
    sampled = SamplingParams(temperature=1.0, top_k=20, top_p=0.9, repetition_penalty=1.3, max_tokens=30)
    runs = [generate(m, prompt, sampled, use_cache=c, generator=torch.Generator().manual_seed(1)) for c in (1, 0)]
    assert torch.equal(*runs) and runs[0].shape == (3, 35) and torch.equal(runs[0][:, :5], prompt)


def test_without_cache_the_context_is_cropped_to_block_size():
    m = model("tiny")  # learned positions, block_size 64
    out = generate(m, torch.zeros(1, 60, dtype=torch.long), SamplingParams(temperature=0, max_tokens=10),
                   use_cache=False)
    assert out.shape == (1, 70)
    with pytest.raises(ValueError, match="use_cache=False"):
        generate(m, torch.zeros(1, 60, dtype=torch.long), SamplingParams(max_tokens=10))


def test_eos_stops_and_pads_finished_rows():
    m = model("tiny")
    prompt = torch.randint(0, 128, (2, 4))
    free = generate(m, prompt, SamplingParams(temperature=0, max_tokens=12))
    eos = int(free[0, 6])  # the third token row 0 generates, used as the stop token
    out = generate(m, prompt, SamplingParams(temperature=0, max_tokens=12), eos_id=eos)
    first = (free[0, 4:] == eos).nonzero()[0].item()
    assert torch.equal(out[0, : 4 + first + 1], free[0, : 4 + first + 1])
    assert (out[0, 4 + first:] == eos).all()  # nothing after eos but eos


# ------------------------------------------------------------------ Hugging Face


@pytest.fixture(scope="module")
def hf_models():
    pytest.importorskip("transformers")
    from minillm.hf import to_hf

    out = {}
    for preset in ("tiny", "tiny-llama"):
        m = model(preset).float()
        hf = to_hf(m).eval()
        hf.generation_config.eos_token_id = None
        hf.generation_config.pad_token_id = 0
        out[preset] = (m, hf)
    return out


@pytest.mark.parametrize("preset", ["tiny", "tiny-llama"])
def test_greedy_equals_hugging_face(hf_models, preset):
    m, hf = hf_models[preset]
    prompt = torch.randint(1, 128, (2, 6), generator=torch.Generator().manual_seed(3))
    want = hf.generate(prompt, do_sample=False, max_new_tokens=15, attention_mask=torch.ones_like(prompt))
    assert torch.equal(generate(m, prompt, SamplingParams(temperature=0, max_tokens=15)), want)


@pytest.mark.parametrize("preset", ["tiny", "tiny-llama"])
def test_beam_search_equals_hugging_face(hf_models, preset):
    m, hf = hf_models[preset]
    prompt = torch.randint(1, 128, (1, 5), generator=torch.Generator().manual_seed(4))
    want = hf.generate(prompt, do_sample=False, num_beams=3, max_new_tokens=8, early_stopping=False,
                       attention_mask=torch.ones_like(prompt))
    got, _ = beam_search(m, prompt, num_beams=3, max_tokens=8)
    assert torch.equal(got, want)
    greedy = generate(m, prompt, SamplingParams(temperature=0, max_tokens=8))
    with torch.no_grad():  # beam search never finds a less likely continuation than greedy
        def logp(seq):
            return torch.log_softmax(m(seq)[0][0, 4:-1].double(), -1).gather(-1, seq[0, 5:, None]).sum().item()
    assert logp(got) >= logp(greedy) - 1e-9


# ------------------------------------------------------------------ beam search by hand


class Bigram(nn.Module):
    """A fake model whose next-token distribution depends only on the last token: table[last] = probs."""

    def __init__(self, table: list[list[float]]):
        super().__init__()
        self.table = torch.tensor(table, dtype=torch.float64).log()
        self.cfg = SimpleNamespace(block_size=64)

    def forward(self, idx, targets=None, **kw):
        return self.table[idx], None


def test_beam_search_by_hand():
    # prompt [2] (b): step 1 -> eos .5, a .3, b .2; from a: a .9; from b: eos .5
    m = Bigram([[0.2, 0.5, 0.3], [0.05, 0.9, 0.05], [0.5, 0.3, 0.2]])
    prompt = torch.tensor([[2]])
    greedy = generate(m, prompt, SamplingParams(temperature=0, max_tokens=2), use_cache=False)
    assert greedy.tolist() == [[2, 0, 1]]  # eos first (.5): greedy takes it (no eos_id given, it goes on)
    best, score = beam_search(m, prompt, num_beams=2, max_tokens=2, eos_id=0)
    # finished [2, 0] scores ln .5 / 1 = -0.693; live after 2 steps: [2,1,1] ln(.3*.9)/2 = -0.655 wins
    assert best.tolist() == [[2, 1, 1]] and score == pytest.approx(math.log(0.27) / 2)
    best, score = beam_search(m, prompt, num_beams=2, max_tokens=2, eos_id=0, length_penalty=0.0)
    assert best.tolist() == [[2, 0]] and score == pytest.approx(math.log(0.5))  # no length bonus: eos wins
    best, _ = beam_search(m, prompt, num_beams=1, max_tokens=2)  # one beam is greedy
    assert best.tolist() == greedy.tolist()


def test_inference_memory_by_hand():
    mem = inference_memory(7e9, 2)
    assert mem["weights"] == 14e9 and mem["kv_cache"] == 0
    # Llama-2-7B, fp16 cache, 4096 tokens: 2 * 32 * 32 * 128 * 2 B = 0.5 MiB per token -> 2 GiB
    mem = inference_memory(6.74e9, 2, n_layer=32, n_kv_head=32, head_dim=128, tokens=4096)
    assert mem["kv_cache"] == 2 * 1024**3 and mem["total"] == 6.74e9 * 2 + 2 * 1024**3


def test_the_last_new_token_needs_no_position():
    """n new tokens from a T-token prompt feed the model T + n - 1 tokens: the last one is sampled, never read.
    So a prompt of block_size - 4 tokens can get 5 new tokens with the cache, the same as re-running."""
    m = model("tiny")  # learned positions, block_size 64: a position past 63 would raise
    prompt = torch.randint(0, m.cfg.vocab_size, (1, m.cfg.block_size - 4), generator=torch.Generator().manual_seed(0))
    greedy = SamplingParams(temperature=0.0, max_tokens=5)
    cached = generate(m, prompt, greedy)
    assert cached.shape == (1, m.cfg.block_size + 1)
    assert torch.equal(cached, generate(m, prompt, greedy, use_cache=False))
    with pytest.raises(ValueError, match="65 positions exceed the model's block_size=64"):
        generate(m, prompt, SamplingParams(temperature=0.0, max_tokens=6))
