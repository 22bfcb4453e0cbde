"""minillm.optim8bit: the dynamic map, block-wise quantisation by hand, Adam8bit vs torch AdamW and bitsandbytes."""

from __future__ import annotations

import pytest
import torch

from minillm.optim8bit import (
    Adam8bit,
    dequantize_blockwise,
    dynamic_map,
    expected_state_bytes,
    linear_map,
    quantize_blockwise,
    state_bytes,
)
from minillm.peft.nf4 import dynamic_code_values


def round_trip(x: torch.Tensor, code: torch.Tensor, block: int) -> torch.Tensor:
    q, absmax = quantize_blockwise(x, code, block)
    return dequantize_blockwise(q, absmax, code, x.shape, block)


# ------------------------------------------------------------------ the maps and quantisation by hand


def test_dynamic_map_by_hand():
    signed, unsigned = dynamic_map(True), dynamic_map(False)
    for code in (signed, unsigned):
        assert code.shape == (256,) and torch.all(code[1:] > code[:-1]) and 0.0 in code and code[-1] == 1.0
    # signed: the top decade has 64 fractions of width 0.9 / 64 = 0.0140625; its largest midpoint 0.99296875
    # is also the most negative code (there is +1.0 but no -1.0); the smallest positive is 0.55e-6 (1 fraction)
    assert signed[0].item() == pytest.approx(-0.99296875) and signed[-2].item() == pytest.approx(0.99296875)
    assert signed[signed > 0].min().item() == pytest.approx(0.55e-6) and (signed < 0).sum() == 127
    # unsigned: 2 fractions in the lowest decade (midpoints 0.325e-6, 0.775e-6), 128 in the top one
    assert unsigned.min() == 0 and unsigned[1].item() == pytest.approx(0.325e-6) and (unsigned > 0.1).sum() == 129
    assert linear_map(True)[128] == 0 and linear_map(True)[-1] == 1 and linear_map(False)[255] == 1
    assert torch.equal(signed, dynamic_code_values())  # the table chapter 9's double quantisation uses


def test_quantise_dequantise_by_hand():
    x = torch.tensor([0.5, -2.0, 0.0, 2.0, 3.0, -0.3])  # blocks of 4: absmax 2, then 3 (padded with zeros)
    q, absmax = quantize_blockwise(x, dynamic_map(True), block=4)
    assert absmax.tolist() == [2.0, 3.0] and q.dtype == torch.uint8 and q.shape == (6,)
    # 0.25 -> the top decade's 11th midpoint 0.1 + 10.5 * 0.0140625 = 0.24765625; -1 -> -0.99296875 (no -1 code);
    # -0.1 -> -0.09859375 (decade 0.1's top midpoint, 0.0014 away) rather than -0.10703125 (0.0070 away)
    expect = [0.24765625 * 2, -0.99296875 * 2, 0.0, 2.0, 3.0, -0.09859375 * 3]
    torch.testing.assert_close(dequantize_blockwise(q, absmax, dynamic_map(True), x.shape, 4),
                               torch.tensor(expect), rtol=1e-6, atol=1e-7)
    # the linear (int8 absmax) grid: round(127 * 0.25) = 32, so 0.5 comes back as 32 / 127 * 2
    assert round_trip(x, linear_map(True), 4)[0].item() == pytest.approx(64 / 127)


def test_each_value_gets_the_nearest_code():
    torch.manual_seed(0)
    x = torch.randn(3000) * torch.logspace(-7, 0, 3000)
    for code in (dynamic_map(True), linear_map(True)):
        q, absmax = quantize_blockwise(x, code, 256)
        normed = x * (1 / absmax).repeat_interleave(256)[:3000]  # times the reciprocal, as the quantiser does
        brute = (normed[:, None] - code[None, :]).abs().argmin(dim=1)  # (3000,): an independent nearest search
        assert torch.equal(q.long(), brute)


def test_blocks_keep_an_outlier_local():
    torch.manual_seed(0)
    x = torch.randn(4096) * 1e-3
    x[0] = 100.0  # one outlier in the first block
    per_block = (round_trip(x, dynamic_map(True), 256) - x)[256:].abs().mean()
    per_tensor = (round_trip(x, dynamic_map(True), 4096) - x)[256:].abs().mean()
    assert per_tensor > 20 * per_block  # one absmax for the whole tensor: 1e-3 values are 1e-5 of it


def test_dynamic_map_keeps_small_second_moments():
    v = torch.logspace(-8, 0, 4096) * torch.rand(4096, generator=torch.Generator().manual_seed(0))
    small = (v > 1e-6) & (v < 1e-3)  # 1e-6..1e-3 of the block's absmax
    rel = {name: ((round_trip(v, code, 4096) - v).abs() / v)[small].median().item()
           for name, code in (("dynamic", dynamic_map(False)), ("linear", linear_map(False)))}
    assert rel["dynamic"] < 0.1 and rel["linear"] == 1.0  # a linear grid rounds every v < 1/510 to 0


# ------------------------------------------------------------------ the optimizer


def regression(seed: int = 0) -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    x, w = torch.randn(512, 128), torch.randn(128, 64) / 11
    return torch.nn.Linear(128, 64), x, x @ w + 0.1 * torch.randn(512, 64)


def run(opt_fn, steps: int = 100, seed: int = 0) -> tuple[list[float], torch.nn.Linear]:
    model, x, y = regression(seed)
    opt = opt_fn(model.parameters())
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, model


def test_fp32_states_give_exactly_adamw():
    kw = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    ref, m_ref = run(lambda p: torch.optim.AdamW(p, foreach=False, **kw), steps=30)
    ours, m_ours = run(lambda p: Adam8bit(p, min_8bit_size=10**9, **kw), steps=30)
    assert ours == ref and all(map(torch.equal, m_ref.parameters(), m_ours.parameters()))


def test_8bit_states_train_like_adamw():
    kw = dict(lr=1e-2, betas=(0.9, 0.999), weight_decay=0.0)
    ref, m_ref = run(lambda p: torch.optim.AdamW(p, **kw))
    ours, m_ours = run(lambda p: Adam8bit(p, min_8bit_size=0, **kw))
    lin, m_lin = run(lambda p: Adam8bit(p, min_8bit_size=0, dynamic=False, **kw))
    assert ours[-1] < 0.05 * ours[0] and abs(ours[-1] - ref[-1]) < 0.05 * ref[-1]
    moved = (m_ref.weight - regression()[0].weight).abs().mean()
    off = (m_ours.weight - m_ref.weight).abs().mean()
    assert off < 0.05 * moved  # within 5% of how far AdamW moved the weights
    assert (m_lin.weight - m_ref.weight).abs().mean() > 3 * off  # the linear grid drifts further


def test_state_bytes_measured_equal_the_formula():
    model = torch.nn.Linear(1024, 1024)  # weight 1,048,576 elements (8-bit), bias 1,024 (< 4096: fp32)
    opt = Adam8bit(model.parameters())
    model(torch.randn(2, 1024)).sum().backward()
    opt.step()
    st = opt.state[model.weight]
    assert st["m_q"].dtype == torch.uint8 and st["m_absmax"].shape == (4096,) and "m" in opt.state[model.bias]
    # by hand: 2 bytes * 1,048,576 + 2 absmax vectors * 4096 blocks * 4 bytes, + bias 8 * 1,024
    assert state_bytes(opt) == 2_097_152 + 32_768 + 8_192 == expected_state_bytes(1024 * 1024) + 8 * 1024
    adamw = torch.optim.AdamW(model.parameters())
    adamw.step()
    assert state_bytes(adamw) == expected_state_bytes(1024 * 1024 + 1024, bits8=False) == 8 * 1_049_600


def test_state_dict_round_trip_resumes_exactly():
    a_losses, a = run(lambda p: Adam8bit(p, lr=1e-2, min_8bit_size=0), steps=10)
    model, x, y = regression()
    opt = Adam8bit(model.parameters(), lr=1e-2, min_8bit_size=0)
    for i in range(10):
        if i == 5:  # a fresh optimizer from the saved state
            saved = opt.state_dict()
            opt = Adam8bit(model.parameters(), lr=1e-2, min_8bit_size=0)
            opt.load_state_dict(saved)
            assert opt.state[model.weight]["v_q"].dtype == torch.uint8
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(model.weight, a.weight)


@pytest.mark.parametrize(("kw", "msg"), [({"lr": 0}, "lr must be > 0"), ({"betas": (0.9, 1.0)}, "betas"),
                                         ({"block": 0}, "block >= 1")])
def test_bad_arguments(kw, msg):
    with pytest.raises(ValueError, match=msg):
        Adam8bit([torch.nn.Parameter(torch.zeros(3))], **kw)
    with pytest.raises(ValueError, match="256 entries"):
        quantize_blockwise(torch.zeros(3), torch.zeros(16))


# ------------------------------------------------------------------ bitsandbytes, when installed


def test_against_bitsandbytes():
    bnbf = pytest.importorskip("bitsandbytes.functional")
    import bitsandbytes as bnb

    for signed in (True, False):
        assert torch.equal(dynamic_map(signed), bnbf.create_dynamic_map(signed=signed))  # bit for bit
    torch.manual_seed(0)
    x = torch.randn(10_000) * torch.logspace(-6, 0, 10_000)
    code = dynamic_map(True)
    q, absmax = quantize_blockwise(x, code)
    qb, st = bnbf.quantize_blockwise(x, code=code, blocksize=256)
    torch.testing.assert_close(absmax, st.absmax)
    differ = q != qb  # bitsandbytes' CPU kernel rounds a few values near a boundary to the farther code
    assert differ.float().mean() < 0.01
    normed = x / absmax.repeat_interleave(256)[:10_000]
    assert torch.all((normed - code[q.long()]).abs()[differ] <= (normed - code[qb.long()]).abs()[differ])
    # the optimizers: 50 steps on the regression, the same init
    ours, m_ours = run(lambda p: Adam8bit(p, lr=1e-2, weight_decay=0.0, min_8bit_size=0), steps=50)
    theirs, m_bnb = run(lambda p: bnb.optim.Adam8bit(p, lr=1e-2, min_8bit_size=0), steps=50)
    moved = (m_bnb.weight - regression()[0].weight).abs().mean()
    assert (m_ours.weight - m_bnb.weight).abs().mean() < 0.02 * moved and abs(ours[-1] - theirs[-1]) < 0.02 * theirs[-1]
