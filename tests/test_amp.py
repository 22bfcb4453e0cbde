"""Number formats (minillm.formats) against torch.finfo and torch's casts; dynamic loss scaling and the
mixed-precision step (minillm.amp) against torch.amp.GradScaler and fp32 training; hand-worked cases."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minillm.amp import (
    AUTOCAST_FP32_OPS,
    AUTOCAST_LOW_OPS,
    AUTOCAST_PASSTHROUGH_OPS,
    DynamicLossScaler,
    MixedPrecision,
    copy_grads_to_master,
    master_params,
)
from minillm.formats import BF16, E4M3, E5M2, FP16, FP32, FloatFormat, decode, encode

TORCH_DTYPE = {FP32: torch.float32, FP16: torch.float16, BF16: torch.bfloat16,
               E4M3: torch.float8_e4m3fn, E5M2: torch.float8_e5m2}
INT_VIEW = {32: torch.int32, 16: torch.int16, 8: torch.uint8}
ALL = [FP32, FP16, BF16, E4M3, E5M2]
# torch's float8_e4m3fn cast saturates on overflow / +-inf in recent releases (2.13 here); older ones give NaN
E4M3_SATURATES = not math.isnan(torch.tensor(1e9).to(torch.float8_e4m3fn).float().item())


def torch_bits(x: torch.Tensor, fmt: FloatFormat) -> list[int]:
    """Unsigned bit patterns of torch's cast of float tensor x to fmt's dtype."""
    ints = x.to(TORCH_DTYPE[fmt]).view(INT_VIEW[fmt.bits]).long()
    return (ints & (2**fmt.bits - 1)).tolist()


def torch_decode(bits: list[int], fmt: FloatFormat) -> list[float]:
    ints = torch.tensor(bits, dtype=torch.int64)
    ints = torch.where(ints >= 2 ** (fmt.bits - 1), ints - 2**fmt.bits, ints) if fmt.bits > 8 else ints
    return ints.to(INT_VIEW[fmt.bits]).view(TORCH_DTYPE[fmt]).double().tolist()


def same(a: float, b: float) -> bool:
    """Equal including the sign of zero; NaN equals NaN."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b and math.copysign(1, a) == math.copysign(1, b)


# ---------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ALL, ids=lambda f: f.name)
def test_derived_constants_match_torch_finfo(fmt):
    fi = torch.finfo(TORCH_DTYPE[fmt])
    assert (fmt.bits, fmt.max, fmt.eps, fmt.min_normal) == (fi.bits, fi.max, fi.eps, fi.smallest_normal)
    assert fmt.min_subnormal == torch_decode([1], fmt)[0]  # bit pattern 0...01
    assert fmt.max == torch_decode([encode(fmt.max, fmt)], fmt)[0]


def test_hand_worked_constants_and_one_third_in_bf16():
    assert (E4M3.max, E5M2.max, FP16.max) == (448.0, 57344.0, 65504.0)
    assert FP16.min_subnormal == 2.0**-24 and E4M3.min_subnormal == 2.0**-9 and BF16.eps == 2.0**-7
    # 1/3 = 1.010101...b * 2^-2: exponent field 127 - 2 = 125; mantissa .0101010|1010... -> the dropped
    # bits are above half an ulp, so round up to 0101011: 0 01111101 0101011 = 0x3EAB = 171/512
    assert encode(1 / 3, BF16) == 0b0_01111101_0101011 == 0x3EAB
    assert decode(0x3EAB, BF16) == 171 / 512 == 0.333984375
    assert torch_bits(torch.tensor([1 / 3]), BF16) == [0x3EAB]
    # ties to even in fp16: 1 + eps/2 -> 1 (mantissa 0 is even), 1 + 3 eps/2 -> 1 + 2 eps
    assert decode(encode(1 + 2.0**-11, FP16), FP16) == 1.0
    assert decode(encode(1 + 3 * 2.0**-11, FP16), FP16) == 1 + 2.0**-9
    # e4m3fn: 448 = 0 1111 110; 0 1111 111 is NaN; no inf, so torch saturates
    assert encode(448.0, E4M3) == 0x7E and math.isnan(decode(0x7F, E4M3)) and encode(1e9, E4M3) == 0x7E
    assert encode(math.inf, E4M3) == 0x7E and encode(-math.inf, E4M3) == 0xFE
    assert math.isnan(decode(encode(500.0, E4M3, saturate=False), E4M3))
    assert encode(61440.0, E5M2) == 0x7C  # 57344 + half an ulp: the tie goes to inf (even)
    with pytest.raises(ValueError, match="nan must be"):
        FloatFormat("bad", 4, 3, 7, False, nan="x")


@pytest.mark.parametrize("fmt", [FP16, BF16, E4M3, E5M2], ids=lambda f: f.name)
def test_decode_every_bit_pattern_matches_torch(fmt):
    bits = list(range(2**fmt.bits))
    ref = torch_decode(bits, fmt)
    bad = [(b, decode(b, fmt), r) for b, r in zip(bits, ref, strict=True) if not same(decode(b, fmt), r)]
    assert not bad, bad[:5]


def test_decode_fp32_matches_torch():
    g = torch.Generator().manual_seed(0)
    bits = torch.randint(0, 2**32, (20000,), generator=g).tolist()
    bits += [0, 1, 2**23 - 1, 2**23, 0x7F7FFFFF, 0x7F800000, 0x7FC00000, 0x80000000, 0x80000001, 0xFF800000]
    ref = torch_decode(bits, FP32)
    assert all(same(decode(b, FP32), r) for b, r in zip(bits, ref, strict=True))


def probe_values(fmt: FloatFormat, g: torch.Generator) -> torch.Tensor:
    """float32 values for cast tests: representable values, midpoints (ties) and their float32 neighbours,
    subnormals, the overflow boundary, random magnitudes over the whole range, inf, NaN."""
    if fmt.bits == 8:
        pos = list(range(2**7))
    else:
        pos = torch.randint(0, 2 ** (fmt.bits - 1), (3000,), generator=g).tolist() + list(range(64))
    vals = sorted({decode(b, fmt) for b in pos} | {decode(b + 1, fmt) for b in pos if b + 1 < 2 ** (fmt.bits - 1)})
    vals = [v for v in vals if math.isfinite(v)]
    mids = [(a + b) / 2 for a, b in itertools.pairwise(vals)]
    ulp_top = fmt.max - decode(encode(fmt.max, fmt) - 1, fmt)
    edges = [fmt.max, fmt.max + ulp_top / 2, fmt.max + ulp_top, 2 * fmt.max, fmt.min_subnormal / 2,
             fmt.min_subnormal * 0.75, fmt.min_subnormal / 4, math.inf, math.nan, 0.0]
    edges = [e for e in edges if e <= 3.4e38 or not math.isfinite(e)]
    x = torch.tensor(vals + mids + edges, dtype=torch.float32)
    x = torch.cat([x, torch.nextafter(x, torch.full_like(x, math.inf)), torch.nextafter(x, torch.zeros_like(x))])
    lo, hi = math.log2(fmt.min_subnormal) - 2, math.log2(min(fmt.max, 3e38)) + 1
    rand = torch.exp2(torch.rand(3000, generator=g, dtype=torch.float64) * (hi - lo) + lo).float()
    x = torch.cat([x, rand])
    return torch.cat([x, -x])


@pytest.mark.parametrize("fmt", [FP16, BF16, E4M3, E5M2], ids=lambda f: f.name)
def test_encode_matches_torch_cast(fmt):
    x = probe_values(fmt, torch.Generator().manual_seed(1))
    ref = torch_bits(x, fmt)
    bad = []
    for v, r in zip(x.double().tolist(), ref, strict=True):
        mine = encode(v, fmt, saturate=E4M3_SATURATES) if fmt is E4M3 else encode(v, fmt)
        if mine != r and not (math.isnan(decode(mine, fmt)) and math.isnan(decode(r, fmt))):
            bad.append((v, hex(mine), hex(r)))
    assert not bad, bad[:5]


def test_encode_fp32_from_float64_matches_torch_cast():
    g = torch.Generator().manual_seed(2)
    x = torch.exp2(torch.rand(5000, generator=g, dtype=torch.float64) * 300 - 160)  # subnormals to 2^140
    f32 = x.float().double()
    ties = (f32 + torch.nextafter(x.float(), torch.tensor(math.inf)).double()) / 2  # exact midpoints
    x = torch.cat([x, ties, torch.tensor([3.4028235677973366e38, 3.5e38, 2.0**-150, 2.0**-149 * 1.5])])
    x = torch.cat([x, -x])
    ref = torch_bits(x, FP32)
    assert [encode(v, FP32) for v in x.tolist()] == ref


# ---------------------------------------------------------------------------------------- loss scaling


def counting(optimizer_cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """`optimizer_cls` that counts the steps it took in `.taken` (a scaler skips the call on an overflow)."""

    class Counting(optimizer_cls):
        def __init__(self, params, **kw):
            super().__init__(params, **kw)
            self.taken = 0

        def step(self, closure=None):
            self.taken += 1
            return super().step(closure)

    return Counting


CountingSGD = counting(torch.optim.SGD)


def run_scaler(scaler, overflow_steps: set[int], n_steps: int, explicit_unscale: bool):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = CountingSGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(3)
    scales, skipped = [], []
    for t in range(n_steps):
        x, y = torch.randn(8, 4, generator=g), torch.randn(8, 3, generator=g)
        loss = F.mse_loss(model(x), y)
        if t in overflow_steps:
            loss = loss * math.inf  # every gradient becomes inf or NaN
        scaler.scale(loss).backward()
        if explicit_unscale:
            scaler.unscale_(opt)
        before = opt.taken
        scaler.step(opt)
        if opt.taken == before:
            skipped.append(t)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        scales.append(scaler.get_scale())
    return scales, skipped, [p.detach().clone() for p in model.parameters()]


FACTORS = {"pow2": (2.0**10, 2.0, 0.5), "odd": (3.0**7, 1.7, 0.3)}  # odd: the rounding of S * factor matters


@pytest.mark.parametrize("factors", FACTORS.values(), ids=FACTORS.keys())
@pytest.mark.parametrize("explicit_unscale", [False, True])
def test_scaler_matches_torch_gradscaler_step_for_step(explicit_unscale, factors):
    overflow = {0, 1, 4, 9, 10, 17}  # 4 and 17 come after 2 clean steps: the run must reset
    init, growth, backoff = factors
    kw = dict(init_scale=init, growth_factor=growth, backoff_factor=backoff, growth_interval=3)
    mine = run_scaler(DynamicLossScaler(**kw), overflow, 26, explicit_unscale)
    ref = run_scaler(torch.amp.GradScaler("cpu", **kw), overflow, 26, explicit_unscale)
    assert mine[0] == ref[0]  # scale trajectory
    assert mine[1] == ref[1] == sorted(overflow)  # skipped steps
    assert all(torch.equal(a, b) for a, b in zip(mine[2], ref[2], strict=True))  # parameters, bit for bit
    steps = list(itertools.pairwise([init] + mine[0]))
    assert any(b > a for a, b in steps) and any(b < a for a, b in steps)  # growth and backoff both happen


def test_scaler_odd_factor_rounds_in_double_then_float():
    # 3^7 * 0.3 in float32 arithmetic differs from double arithmetic rounded to float32; GradScaler does the latter
    s = DynamicLossScaler(init_scale=3.0**7, backoff_factor=0.3)
    s.scale(torch.tensor(1.0, requires_grad=True) * math.inf).backward()
    want = float(torch.tensor(3.0**7 * 0.3, dtype=torch.float64).float())
    opt = torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=1.0)
    opt.param_groups[0]["params"][0].grad = torch.tensor([math.inf])
    s.step(opt)
    s.update()
    assert s.get_scale() == want


def test_scaler_errors_match_gradscaler():
    p = nn.Parameter(torch.ones(2, dtype=torch.float16))
    p.grad = torch.ones(2, dtype=torch.float16)
    opt = torch.optim.SGD([p], lr=1.0)
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients.*copy_grads_to_master"):
        DynamicLossScaler().unscale_(opt)
    ref = torch.amp.GradScaler("cpu")
    ref.scale(torch.ones(1))
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients"):
        ref.unscale_(opt)  # the reference raises too
    q = nn.Parameter(torch.ones(2))
    q.grad = torch.ones(2)
    opt = torch.optim.SGD([q], lr=1.0)
    for scaler in (DynamicLossScaler(), torch.amp.GradScaler("cpu")):
        scaler.scale(q.sum())
        scaler.step(opt)
        with pytest.raises(RuntimeError, match=r"step\(\) has already been called since the last update\(\)"):
            scaler.step(opt)
        scaler.update()
        scaler.step(opt)  # fine again after update()


def test_unscale_checks_finiteness_before_the_multiply():
    # S = 2^-126 < 1: 1/S = 2^126 turns the finite grad 2^100 into inf; GradScaler checks the input, not the product
    ref_found = []
    for scaler in (DynamicLossScaler(init_scale=2.0**-126), torch.amp.GradScaler("cpu", init_scale=2.0**-126)):
        q = nn.Parameter(torch.ones(1))
        q.grad = torch.tensor([2.0**100])
        opt = torch.optim.SGD([q], lr=1.0)
        scaler.scale(torch.ones(1))  # GradScaler creates its scale tensor lazily here
        scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
        ref_found.append(scaler.get_scale())
    assert ref_found[0] == ref_found[1] == 2.0**-126  # not backed off: the input grad was finite


def test_disabled_scaler_state_dict_is_empty():
    off = DynamicLossScaler(enabled=False)
    assert off.state_dict() == {} == torch.amp.GradScaler("cpu", enabled=False).state_dict()
    off.load_state_dict({})  # no-op
    off.load_state_dict(DynamicLossScaler().state_dict())  # no-op too: disabled stays disabled
    assert off.get_scale() == 1.0 and off.state_dict() == {}


def test_scaler_hand_worked_interval_two():
    # interval 2, scale 8: clean -> (8, run 1); clean -> (16, run 0); overflow -> (8, skipped)
    scales, skipped, _ = run_scaler(DynamicLossScaler(init_scale=8.0, growth_interval=2), {2}, 3, False)
    assert scales == [8.0, 16.0, 8.0] and skipped == [2]
    # clean (run 1), overflow (4, run reset to 0), clean (run 1), clean (8): growth needs 2 clean in a row
    scales, skipped, _ = run_scaler(DynamicLossScaler(init_scale=8.0, growth_interval=2), {1}, 4, False)
    assert scales == [8.0, 4.0, 4.0, 8.0] and skipped == [1]
    s = DynamicLossScaler(init_scale=8.0, growth_interval=2)
    assert s.state_dict() == {"scale": 8.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                              "growth_interval": 2, "_growth_tracker": 0}
    s2 = DynamicLossScaler()
    s2.load_state_dict({**s.state_dict(), "scale": 4.0, "_growth_tracker": 1})
    assert (s2.get_scale(), s2.growth_interval, s2._growth_tracker) == (4.0, 2, 1)
    with pytest.raises(RuntimeError, match="needs a step"):
        s.update()
    assert DynamicLossScaler(enabled=False).get_scale() == 1.0


# ---------------------------------------------------------------------------------------- mixed precision


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))


# (loss, master) tolerances over 20 steps; measured: bf16 0.04 % and 7.3e-4, fp16 (scale 2^16) 0.004 % and 8.4e-5
TRACK_TOL = {torch.bfloat16: (5e-3, 5e-3), torch.float16: (1e-3, 1e-3)}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_training_tracks_fp32(dtype):
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(64, 8, generator=g), torch.randn(64, 1, generator=g)
    ref = tiny_model()
    opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    ref_losses = []
    for _ in range(20):
        loss = F.mse_loss(ref(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        ref_losses.append(loss.item())
    mp = MixedPrecision(tiny_model(), dtype, lambda ps: torch.optim.SGD(ps, lr=0.1))
    assert mp.master[0].dtype == torch.float32 and next(mp.model.parameters()).dtype == dtype
    assert mp.scaler.enabled == (dtype == torch.float16)  # bf16 has fp32's range: no scaling
    # the loss is computed in fp32 from the low-precision output (what autocast does for losses)
    out = [mp.step(lambda m: F.mse_loss(m(x.to(dtype)).float(), y)) for _ in range(20)]
    losses = [loss for loss, _ in out]
    assert all(taken for _, taken in out)
    loss_tol, master_tol = TRACK_TOL[dtype]
    assert all(abs(a - b) <= loss_tol * b for a, b in zip(losses, ref_losses, strict=True)), (losses, ref_losses)
    diff = max((m - p).abs().max().item() for m, p in zip(mp.master, ref.parameters(), strict=True))
    assert diff < master_tol
    assert losses[-1] < 0.9 * losses[0]  # and training made progress


def test_overflow_skips_the_master_update_and_halves_the_scale():
    mp = MixedPrecision(tiny_model(), torch.float16, lambda ps: torch.optim.SGD(ps, lr=0.1))
    before = [m.detach().clone() for m in mp.master]
    x = torch.randn(4, 8, dtype=torch.float16)
    loss, taken = mp.step(lambda m: m(x).float().sum() * 1e30)  # scaled by 2^16 the fp16 grads overflow
    assert not taken and mp.scaler.get_scale() == 2.0**15
    assert all(torch.equal(a, b) for a, b in zip(before, mp.master, strict=True))
    assert all(p.grad is None for p in mp.model.parameters())


def test_master_weights_keep_updates_below_bf16_resolution():
    w = torch.ones(1, dtype=torch.bfloat16)
    assert (w + 1e-4).item() == 1.0  # 1e-4 < eps/2 = 2^-8: lost in bf16
    mp = MixedPrecision(nn.Linear(1, 1, bias=False), torch.bfloat16, lambda ps: torch.optim.SGD(ps, lr=1e-4))
    with torch.no_grad():
        mp.master[0].fill_(1.0)
    for _ in range(100):  # each step adds lr * 1 = 1e-4 to the master weight (loss = -w)
        mp.step(lambda m: -m.weight.float().sum())
    assert mp.master[0].item() == pytest.approx(1.01, abs=1e-5)  # fp32 accumulated 100 small steps
    assert mp.model.weight.item() == 1.0078125  # 1.01 rounded to bf16 (1 + 1/128)


class Chain(nn.Module):
    """loss = w * a * b with a = b = 2^-14: dloss/dw = 2^-28, below fp16's smallest subnormal 2^-24."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.register_buffer("a", torch.tensor([2.0**-14]))

    def forward(self):
        return ((self.w * self.a) * self.a).float().sum()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_fp16_gradient_underflows_without_scaling_and_survives_with_it(dtype):
    assert 2.0**-28 < FP16.min_subnormal
    results = {}
    for scale in (None, 2.0**10):
        model = Chain().to(dtype)
        master = master_params(model)
        opt = torch.optim.SGD(master, lr=1.0)
        scaler = DynamicLossScaler(init_scale=scale or 1.0, enabled=scale is not None)
        scaler.scale(model()).backward()  # the backward multiplies by 2^-14 twice, in `dtype`
        copy_grads_to_master(model, master)
        scaler.unscale_(opt)
        results[scale] = master[0].grad.item()
    if dtype == torch.float32:  # the reference: fp32 holds 2^-28 with or without scaling
        assert results == {None: 2.0**-28, 2.0**10: 2.0**-28}
    else:
        assert results == {None: 0.0, 2.0**10: 2.0**-28}  # scaled: 2^10 * 2^-28 = 2^-18, unscaled in fp32


def test_autocast_cpu_bf16_op_dtypes():
    g = torch.Generator().manual_seed(5)
    x, w = torch.randn(4, 8, generator=g), torch.randn(8, 8, generator=g)
    tgt = torch.zeros(4, dtype=torch.long)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = x @ w
        out = {"cross_entropy": F.cross_entropy(y, tgt), "mse_loss": F.mse_loss(y, y),
               "nll_loss": F.nll_loss(y, tgt), "binary_cross_entropy_with_logits":
               F.binary_cross_entropy_with_logits(y, torch.ones_like(x)),
               "linear": F.linear(x, w), "matmul": torch.matmul(x, w), "softmax": F.softmax(x, -1),
               "log_softmax": F.log_softmax(x, -1), "layer_norm": F.layer_norm(x, (8,))}  # fp32 x
        yb = y.detach()  # bf16 (the matmul's output)
        passthrough_bf16 = {"softmax": F.softmax(yb, -1), "log_softmax": F.log_softmax(yb, -1),
                            "layer_norm": F.layer_norm(yb, (8,))}
    assert y.dtype == torch.bfloat16
    fp32 = {k for k, v in out.items() if v.dtype == torch.float32}
    assert fp32 == set(AUTOCAST_FP32_OPS) | set(AUTOCAST_PASSTHROUGH_OPS)  # passthrough: fp32 in -> fp32 out
    assert {k for k, v in out.items() if v.dtype == torch.bfloat16} == set(AUTOCAST_LOW_OPS)
    assert {k for k, v in passthrough_bf16.items() if v.dtype == torch.bfloat16} == set(AUTOCAST_PASSTHROUGH_OPS)


def test_mixed_precision_with_gradscaler_equals_dynamic_loss_scaler_on_real_overflows():
    """The same fp16 training driven by minillm's scaler and by torch.amp.GradScaler: no scripted overflow, the
    scale starts high (2^24) and grows every 2 clean steps, so real fp16 gradients overflow, back it off and
    let it grow again. Losses, scales, skipped steps (from step()'s flag and from an optimizer that counts its
    steps) and the final master weights must be identical."""

    CountingAdam = counting(torch.optim.Adam)
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(32, 8, generator=g), 10 * torch.randn(32, 1, generator=g)
    runs = []
    for scaler in (DynamicLossScaler(init_scale=2.0**24, growth_interval=2),
                   torch.amp.GradScaler("cpu", init_scale=2.0**24, growth_interval=2)):
        mp = MixedPrecision(tiny_model(), torch.float16, lambda ps: CountingAdam(ps, lr=1e-2), scaler=scaler)
        losses, scales, flags, counted = [], [], [], []
        for t in range(30):
            before = mp.optimizer.taken
            loss, taken = mp.step(lambda m: F.mse_loss(m(x.half()).float(), y))
            losses.append(loss)
            scales.append(mp.scaler.get_scale())
            flags.append(taken)
            counted.append(mp.optimizer.taken > before)
            assert isinstance(taken, bool), t
        assert flags == counted  # the flag is right for both scalers
        runs.append((losses, scales, flags, [m.detach().clone() for m in mp.master]))
    (l1, s1, f1, m1), (l2, s2, f2, m2) = runs
    assert l1 == l2 and s1 == s2 and f1 == f2
    assert all(torch.equal(a, b) for a, b in zip(m1, m2, strict=True))
    assert not all(f1) and any(b > a for a, b in itertools.pairwise(s1))  # real overflows, and growth after them
