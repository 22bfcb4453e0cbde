"""minillm.flash: the tiled online-softmax forward and the recomputing backward against torch's SDPA (values,
log-sum-exp, gradients), gradcheck, a hand-worked two-key case, the causal tile schedule, and measured memory.

Tolerances: float64 atol = rtol = 1e-10; float32 atol 1e-5, rtol 1e-5.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minillm.attention import causal_mask, sdpa
from minillm.flash import (
    attention_peak_memory,
    flash_attention,
    flash_attn_backward,
    flash_attn_forward,
    kv_blocks,
)

TOL = {torch.float64: dict(atol=1e-10, rtol=1e-10), torch.float32: dict(atol=1e-5, rtol=1e-5)}


def _qkv(B=2, H=3, T=37, S=37, D=8, dtype=torch.float64, seed=0, Hkv=None):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=g, dtype=dtype)
    k = torch.randn(B, Hkv or H, S, D, generator=g, dtype=dtype)
    v = torch.randn(B, Hkv or H, S, D, generator=g, dtype=dtype)
    return q, k, v


def _reference(q, k, v, is_causal):
    """torch's SDPA with an explicit bottom-right causal mask (its is_causal is top-left)."""
    T, S = q.shape[2], k.shape[2]
    mask = causal_mask(T, S) if is_causal else None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _ref_lse(q, k, is_causal):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if is_causal:
        scores = scores.masked_fill(~causal_mask(q.shape[2], k.shape[2]), float("-inf"))
    return torch.logsumexp(scores, dim=-1)


# ---------------------------------------------------------------------------------------------- forward


@pytest.mark.parametrize("block", [(1, 1), (7, 7), (16, 16), (64, 64), (100, 100), (5, 16), (16, 3)])
@pytest.mark.parametrize("is_causal", [False, True])
def test_forward_equals_sdpa_float64(block, is_causal):
    q, k, v = _qkv()
    o, lse = flash_attn_forward(q, k, v, is_causal, *block)
    torch.testing.assert_close(o, _reference(q, k, v, is_causal), **TOL[torch.float64])
    torch.testing.assert_close(lse, _ref_lse(q, k, is_causal), **TOL[torch.float64])


@pytest.mark.parametrize("is_causal", [False, True])
def test_forward_equals_sdpa_float32(is_causal):
    q, k, v = _qkv(T=70, S=70, D=16, dtype=torch.float32)
    o, _ = flash_attn_forward(q, k, v, is_causal, 16, 16)
    torch.testing.assert_close(o, F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), **TOL[torch.float32])


@pytest.mark.parametrize("T,S", [(13, 29), (29, 13), (1, 40)])
@pytest.mark.parametrize("is_causal", [False, True])
def test_forward_cross_shapes(T, S, is_causal):
    q, k, v = _qkv(T=T, S=S)
    o, lse = flash_attn_forward(q, k, v, is_causal, 8, 8)
    ref = _reference(q, k, v, is_causal)  # rows with no allowed key are zeros in torch's SDPA too
    torch.testing.assert_close(o, ref, **TOL[torch.float64])
    torch.testing.assert_close(o, sdpa(q, k, v, is_causal=is_causal), **TOL[torch.float64])
    torch.testing.assert_close(lse, _ref_lse(q, k, is_causal), **TOL[torch.float64])
    if is_causal and T > S:  # bottom-right alignment: the first T - S queries see nothing
        assert torch.equal(o[:, :, : T - S], torch.zeros_like(o[:, :, : T - S]))
        assert torch.isneginf(lse[:, :, : T - S]).all() and torch.isfinite(lse[:, :, T - S:]).all()


def test_causal_decoding_row_equals_full_row():
    # one new query against a cache of 40 keys = the last row of the full causal attention
    q, k, v = _qkv(T=40, S=40)
    full, _ = flash_attn_forward(q, k, v, True, 8, 8)
    last, _ = flash_attn_forward(q[:, :, -1:], k, v, True, 8, 8)
    torch.testing.assert_close(last, full[:, :, -1:], **TOL[torch.float64])


@pytest.mark.parametrize("order", [[0.0, math.log(3)], [math.log(3), 0.0]])
def test_hand_worked_two_keys_online(order):
    # scores [0, ln 3] -> weights [1/4, 3/4], lse = ln(1 + 3) = ln 4; block_k = 1 makes the second key rescale
    # the first key's partial sums (when the max grows) or be added under the old max (when it does not)
    q = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    k = torch.tensor(order, dtype=torch.float64).view(1, 1, 2, 1)
    v = torch.tensor([[1.0], [0.0]], dtype=torch.float64).view(1, 1, 2, 1)  # output = weight of key 0
    o, lse = flash_attn_forward(q, k, v, False, 1, 1, scale=1.0)
    w0 = 0.25 if order[0] == 0.0 else 0.75
    torch.testing.assert_close(o.view(()), torch.tensor(w0, dtype=torch.float64), **TOL[torch.float64])
    torch.testing.assert_close(lse.view(()), torch.tensor(math.log(4), dtype=torch.float64), **TOL[torch.float64])


def test_large_scores_do_not_overflow():
    q, k, v = _qkv(T=20, S=20, dtype=torch.float32)
    o, _ = flash_attn_forward(100 * q, k, v, False, 8, 8)  # scores ~ hundreds: exp would overflow without max
    assert torch.isfinite(o).all()
    torch.testing.assert_close(o, F.scaled_dot_product_attention(100 * q, k, v), atol=1e-4, rtol=1e-4)


def test_causal_tile_schedule():
    # T = S = 8, tiles of 4: query tile 0 needs only the diagonal tile (masked); query tile 1 a full tile + diagonal
    assert list(kv_blocks(0, 4, 8, 4, True, 0)) == [(0, 4, True)]
    assert list(kv_blocks(4, 8, 8, 4, True, 0)) == [(0, 4, False), (4, 8, True)]
    assert list(kv_blocks(0, 4, 8, 4, False, 0)) == [(0, 4, False), (4, 8, False)]
    # with 4 cached keys (S = 12, offset 4), query tile 0 (positions 4..7) sees tiles 0 and 1
    assert list(kv_blocks(0, 4, 12, 4, True, 4)) == [(0, 4, False), (4, 8, True)]
    # 16 x 16 tiles: the causal pass visits the 136 on or below the diagonal, not 256
    n = sum(len(list(kv_blocks(i, i + 64, 1024, 64, True, 0))) for i in range(0, 1024, 64))
    assert n == 16 * 17 // 2


def test_errors():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="block"):
        flash_attn_forward(q, k, v, False, 0, 8)
    with pytest.raises(ValueError, match="repeat"):
        flash_attn_forward(q, k[:, :1], v[:, :1])


# ---------------------------------------------------------------------------------------------- backward


@pytest.mark.parametrize("T,S,is_causal,block", [(37, 37, True, (16, 16)), (37, 37, False, (7, 5)),
                                                 (13, 29, True, (4, 8)), (29, 13, False, (8, 4)),
                                                 (29, 13, True, (64, 64))])
def test_gradients_equal_sdpa_autograd(T, S, is_causal, block):
    q, k, v = _qkv(T=T, S=S)
    do = torch.randn_like(q)
    o, lse = flash_attn_forward(q, k, v, is_causal, *block)
    grads = flash_attn_backward(q, k, v, o, lse, do, is_causal, *block)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    _reference(*leaves, is_causal).backward(do)
    for ours, leaf in zip(grads, leaves, strict=True):
        torch.testing.assert_close(ours, leaf.grad, **TOL[torch.float64])


def test_autograd_function_and_gqa():
    q, k, v = _qkv(H=4, Hkv=2, T=21, S=21)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    refs = [t.clone().requires_grad_() for t in (q, k, v)]
    out = flash_attention(*leaves, is_causal=True, block_q=8, block_k=8)
    ref = F.scaled_dot_product_attention(*refs, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(out, ref, **TOL[torch.float64])
    g = torch.randn_like(out)
    out.backward(g)
    ref.backward(g)
    for a, b in zip(leaves, refs, strict=True):  # dk, dv summed over the query heads of each group
        torch.testing.assert_close(a.grad, b.grad, **TOL[torch.float64])


@pytest.mark.parametrize("is_causal", [False, True])
def test_gradcheck(is_causal):
    q, k, v = (t.requires_grad_() for t in _qkv(B=1, H=2, T=5, S=6, D=3))
    assert torch.autograd.gradcheck(lambda q, k, v: flash_attention(q, k, v, is_causal, 2, 4), (q, k, v))


# ---------------------------------------------------------------------------------------------- memory


@pytest.fixture
def one_thread():
    """Small ops under the profiler are slow when a second OpenMP thread competes for a busy core."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_measured_memory_naive_quadratic_flash_linear(one_thread):
    small = attention_peak_memory(256, B=1, H=2, D=32, block=32)
    large = attention_peak_memory(1024, B=1, H=2, D=32, block=32)
    # naive holds (T, T) matrices: at least one of them, and ~16x more for 4x the length
    assert large["naive_bytes"] >= large["scores_bytes"]
    assert 12 < large["naive_bytes"] / small["naive_bytes"] < 20
    # flash holds the output and a few (block, block) tiles: ~4x more for 4x the length, far below one matrix
    assert large["flash_bytes"] >= large["output_bytes"]
    assert large["flash_bytes"] / small["flash_bytes"] < 5
    assert large["flash_bytes"] < large["scores_bytes"] / 4
