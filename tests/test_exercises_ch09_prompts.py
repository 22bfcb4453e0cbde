"""Chapter 9's prompt-methods exercise (09.7, attention with a prefix of keys and values): valid variants pass
(loops, float32 SDPA with a boolean mask, the real keys first under an additive mask), the stub does not give the
recipe away, the worked example of the markdown is what minillm computes, and the reference is what a
PrefixModel's attention layer computes. What every exercise gets (the solution passes, the stub is "not
attempted", junk answers, each simulated mistake's hint) is checked in test_exercises.py; the chapter's own junk
answers and mistake counts in test_exercises_ch09.py."""

from __future__ import annotations

import math

import exercise_kit as kit
import pytest
import torch
import torch.nn.functional as F

from minillm.attention import KVCache
from minillm.grading import check
from minillm.grading.ch09_prompts import HAND_OUT, HAND_PREFIX_V, HAND_V, _hand_case, _reference
from minillm.model import GPT, GPTConfig

CHAPTER = "09"
CELLS = kit.cells(kit.source(CHAPTER))


def test_stub_says_what_not_how(stubs):
    with pytest.raises(NotImplementedError) as e:
        stubs["prefix_attention"](*_hand_case())
    msg = str(e.value)  # softmax and sqrt are refused for every stub by test_exercises.py
    assert msg.startswith("Exercise 09.7: ") and "cat" not in msg and "mask" not in msg


# ---------------------------------------------------------------------------------------------------
# valid variants: loops, float32, SDPA with a boolean mask, an additive mask, keys in the other order


def loops(q, k, v, pk, pv):
    B, H, T, D = q.shape
    P = pk.shape[2]
    out = torch.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                keys = [pk[b, h, j] for j in range(P)] + [k[b, h, j] for j in range(t + 1)]
                vals = [pv[b, h, j] for j in range(P)] + [v[b, h, j] for j in range(t + 1)]
                s = torch.stack([q[b, h, t] @ key / math.sqrt(D) for key in keys])
                w = torch.softmax(s, 0)
                out[b, h, t] = sum(wi * vi for wi, vi in zip(w, vals, strict=True))
    return out


def sdpa_f32(q, k, v, pk, pv):
    P, T = pk.shape[2], q.shape[2]
    allowed = torch.ones(T, P + T, dtype=torch.bool).tril(diagonal=P)
    return F.scaled_dot_product_attention(q.float(), torch.cat([pk, k], 2).float(), torch.cat([pv, v], 2).float(),
                                          attn_mask=allowed)


def real_keys_first(q, k, v, pk, pv):
    # the order of the keys does not matter as long as the mask follows it
    P, T = pk.shape[2], q.shape[2]
    keys, vals = torch.cat([k, pk], 2), torch.cat([v, pv], 2)
    bias = torch.zeros(T, T + P, dtype=q.dtype)
    bias[:, :T] = torch.zeros(T, T).masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    return torch.softmax(q @ keys.transpose(-2, -1) * q.shape[-1] ** -0.5 + bias, -1) @ vals


@pytest.mark.parametrize("fn", [loops, sdpa_f32, real_keys_first, _reference])
def test_valid_variants_pass(fn):
    res = check("09.7", fn)
    assert res.passed, res.hint


# ---------------------------------------------------------------------------------------------------
# the worked example, and the reference against a PrefixModel layer


MARKDOWN = "\n".join(c.source(False) for c in CELLS if c.kind == "markdown")


def test_hand_worked_values_shown_are_the_references():
    assert "`prefix_v = [6, 0]`, `v = [3, 1, 5]`" in MARKDOWN and "`[3, 2.5, 3]`" in MARKDOWN
    assert (HAND_PREFIX_V, HAND_V, HAND_OUT) == ([6.0, 0.0], [3.0, 1.0, 5.0], [3.0, 2.5, 3.0])
    assert "$P = 2$, $T = 3$, $D = 1$" in MARKDOWN
    assert _reference(*_hand_case()).flatten().tolist() == pytest.approx(HAND_OUT, abs=1e-12)


def test_reference_is_what_a_prefix_model_layer_computes():
    # one attention layer of a GPT, its cache holding a prefix: the output equals the reference on q, k, v
    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("tiny-llama", n_kv_head=4, pos="none")).double()
    attn = model.layers[0].self_attn
    x = torch.randn(2, 5, 64, dtype=torch.float64)
    pk, pv = torch.randn(2, 4, 3, 16, dtype=torch.float64), torch.randn(2, 4, 3, 16, dtype=torch.float64)
    cache = KVCache(None)
    cache.update(pk, pv)
    got = attn(x, kv_cache=cache)
    q, k, v = (t.view(2, 5, 4, 16).transpose(1, 2) for t in attn.project(x))
    want = attn.o_proj(_reference(q, k, v, pk, pv).transpose(1, 2).reshape(2, 5, 64))
    torch.testing.assert_close(got, want)
