"""Chapter 5 exercises: plausible wrong solutions fail with the hint naming the mistake, acceptable variants
pass, 05.3 calling a stubbed `attention` names exercise 05.1, and every hand-worked value the notebook's
markdown shows is what the `minillm` references compute (the numbers are read from the markdown itself). What
every exercise gets (the solution passes, the stub is "not attempted", junk answers and the checker's
simulated mistakes) is checked in test_exercises.py."""

from __future__ import annotations

import math
import re

import exercise_kit as kit
import pytest
import torch
import torch.nn.functional as F

from minillm import attention as A
from minillm.flash import flash_attn_forward
from minillm.grading import ch05, check

CHAPTER = "05"
CELLS = kit.cells(kit.source(CHAPTER))


def _d64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_gqa_calling_the_attention_stub_names_exercise_05_1(stubs, solution):
    """05.3 may call the learner's `attention`; while that is still a stub, the hint says where it comes from."""
    ns = dict(solution, attention=stubs["attention"])
    exec(compile(next(c.source(True) for c in CELLS if "def gqa_attention" in c.source(True)), "gqa", "exec"), ns)
    res = check("05.3", ns["gqa_attention"])
    assert res.status == "not attempted" and "stub of exercise 05.1" in res.hint, res.hint


# ---------------------------------------------------------------------------------------------------
# the hand-worked values written in the notebook's markdown, read from it and recomputed


MARKDOWN = "\n".join(c.source(False) for c in CELLS if c.kind == "markdown")


def _shown(snippet: str) -> list[float]:
    """The numbers of `snippet`, which must appear verbatim in the notebook's markdown ('{,}' = thousands)."""
    assert snippet in MARKDOWN, f"the markdown no longer shows {snippet!r}"
    return [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", snippet.replace("{,}", ""))]


def _flat(t: torch.Tensor) -> list[float]:
    return t.flatten().tolist()


def test_hand_worked_attention():
    q, k, v = _d64(ch05.HAND_Q), _d64(ch05.HAND_K), torch.eye(3, dtype=torch.float64)
    assert _shown("`q = [[2, 0, 0, 0], [0, 2, 0, 0], [2, 2, 0, 0]]`") == _flat(q)
    assert _shown("`k = [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]]`") == _flat(k)
    assert _shown("`[[1, 1, 0], [0, 1, 0], [1, 2, 0]]`") == _flat(q @ k.T / 2)
    plain = A.sdpa(q[None, None], k[None, None], v[None, None])
    assert _shown("`[[0.422319, 0.422319, 0.155362], [0.211942, 0.576117, 0.211942],\n  [0.244728, 0.665241, "
                  "0.090031]]`") == pytest.approx(_flat(plain), abs=5e-7)
    masked = A.sdpa(q[None, None], k[None, None], v[None, None], mask=A.causal_mask(3))
    assert _shown("`[[1, 0, 0], [0.268941, 0.731059, 0], [0.244728, 0.665241, 0.090031]]`") == pytest.approx(
        _flat(masked), abs=5e-7)
    assert torch.allclose(plain[0, 0], F.scaled_dot_product_attention(q, k, v), atol=1e-12)
    assert torch.allclose(masked[0, 0], F.scaled_dot_product_attention(q, k, v, attn_mask=A.causal_mask(3)),
                          atol=1e-12)


def test_hand_worked_causal_masks():
    for T, S, snippet in [(3, 3, "`causal_mask(3, 3)` = `[[1, 0, 0], [1, 1, 0], [1, 1, 1]]`"),
                          (2, 4, "= `[[1, 1, 1, 0], [1, 1, 1, 1]]`"), (1, 5, "= `[[1, 1, 1, 1, 1]]`")]:
        shown = _shown(snippet)[2:] if snippet.startswith("`causal") else _shown(snippet)
        assert shown == _flat(A.causal_mask(T, S).double()), (T, S)
    # top-left alignment (what the notebook warns about) differs from it as soon as S > T
    assert not torch.equal(torch.ones(2, 4, dtype=torch.bool).tril(), A.causal_mask(2, 4))


def test_hand_worked_gqa():
    q, k = torch.zeros(1, 4, 1, 2, dtype=torch.float64), torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    v = _d64([[[1, 0], [3, 0]], [[0, 10], [0, 30]]])[None]
    assert _shown("value head 0 =\n`[[1, 0], [3, 0]]` (mean `[2, 0]`)") == [0] + _flat(v[0, 0]) + _flat(v[0, 0].mean(0))
    assert _shown("value head 1 = `[[0, 10], [0, 30]]` (mean `[0, 20]`)") == [1] + _flat(v[0, 1]) + _flat(
        v[0, 1].mean(0))
    out = A.sdpa(q, k, v)
    assert _shown("`[2, 0], [2, 0], [0, 20], [0, 20]`") == _flat(out)
    tiled = A.sdpa(q, k.repeat(1, 2, 1, 1), v.repeat(1, 2, 1, 1))
    assert _shown("`[2, 0], [0, 20], [2, 0], [0, 20]`") == _flat(tiled)


def test_hand_worked_kv_cache_sizes():
    per = A.kv_cache_bytes_per_token
    assert _shown("$2\\cdot32\\cdot32\\cdot128\\cdot2 = 524{,}288$") == [2, 32, 32, 128, 2, per(32, 32, 128, 2)]
    assert _shown("4096 tokens: $2^{31}$ bytes = 2 GiB") == [4096, 2, 31, 2]
    assert per(32, 32, 128, 2) * 4096 == 2**31
    assert _shown("$327{,}680$ bytes per token $\\times\\, 4096 \\times 8 = 10{,}737{,}418{,}240$ bytes = 10 GiB") == [
        per(80, 8, 128, 2), 4096, 8, per(80, 8, 128, 2) * 4096 * 8, 10]
    assert per(80, 8, 128, 2) * 4096 * 8 == 10 * 2**30 and per(80, 64, 128, 2) * 4096 * 8 == 80 * 2**30
    assert "it would be 80 GiB" in MARKDOWN
    assert _shown("$131{,}072 \\times 32768 = 4{,}294{,}967{,}296$ bytes = 4 GiB") == [
        per(32, 8, 128, 2), 32768, per(32, 8, 128, 2) * 32768, 4]
    assert per(32, 8, 128, 2) * 32768 == 4 * 2**30
    assert torch.float16.itemsize == torch.bfloat16.itemsize == 2 and torch.finfo(torch.float16).bits == 16


def test_hand_worked_online_softmax():
    q, k, v = _d64([[1.0]]), _d64([[1.0], [3.0], [2.0]]), torch.eye(3, dtype=torch.float64)

    def flash(n):  # the reference on the first n keys, one key per block: o (3,), lse
        o, lse = ch05._ref_flash(q, k[:n], v[:n], 1)
        return o[0], lse.item()

    o2, lse2 = flash(2)  # after key 1: m = 3, l = exp(lse - m), acc = o * l
    l2 = math.exp(lse2 - 3)
    assert _shown("$\\alpha = e^{-2} = 0.135335$") == pytest.approx([-2, math.exp(-2)], abs=5e-7)
    assert _shown("$\\ell = 0.135335 + 1 = 1.135335$, acc = `[0.135335, 1, 0]`") == pytest.approx(
        [math.exp(-2), 1, l2] + _flat(o2 * l2), abs=5e-7)
    o3, lse3 = flash(3)
    l3 = math.exp(lse3 - 3)
    assert _shown("$p = e^{-1} = 0.367879$: $\\ell = 1.503215$, acc = `[0.135335, 1, 0.367879]`") == pytest.approx(
        [-1, math.exp(-1), l3] + _flat(o3 * l3), abs=5e-7)
    assert _shown("$o$ = acc / $\\ell$ = `[0.090031, 0.665241, 0.244728]` = softmax(`[1, 3, 2]`)") == pytest.approx(
        _flat(o3) + [1, 3, 2], abs=5e-7)
    assert torch.allclose(o3, torch.softmax(_d64([1.0, 3.0, 2.0]), 0), atol=1e-12)
    assert _shown("lse $= 3 + \\log 1.503215 = 3.407606 = \\log(e + e^3 + e^2)$") == pytest.approx(
        [3, l3, lse3, 3, 2], abs=5e-7)
    assert lse3 == pytest.approx(math.log(math.e + math.e**3 + math.e**2), abs=1e-12)


def test_reference_flash_pads_a_different_value_width_correctly():
    """ch05._ref_flash zero-pads q, k or v when v's width differs from D; the result is plain attention."""
    gen = torch.Generator().manual_seed(0)
    for D, Dv in [(1, 3), (4, 6), (8, 5), (4, 4)]:
        q, k, v = (torch.randn(2, n, d, generator=gen, dtype=torch.float64) for n, d in ((3, D), (7, D), (7, Dv)))
        o, lse = ch05._ref_flash(q, k, v, 3)
        s = q @ k.transpose(-2, -1) / math.sqrt(D)
        torch.testing.assert_close(o, torch.softmax(s, -1) @ v, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(lse, torch.logsumexp(s, -1), atol=1e-12, rtol=1e-12)
        if D == Dv:  # no padding: exactly minillm.flash's output
            o4, lse4 = flash_attn_forward(q[None], k[None], v[None], False, 3, 3)
            assert torch.equal(o, o4[0]) and torch.equal(lse, lse4[0])


def test_hand_worked_pooling():
    w = _d64([[1, 2, 0, 0], [3, 4, 0, 0], [0, 0, 5, 6], [0, 0, 7, 8]])
    assert _shown("`w = [[1, 2, 0, 0], [3, 4, 0, 0], [0, 0, 5, 6], [0, 0, 7, 8]]`") == _flat(w)
    assert _shown("give\n  `[[2, 3, 0, 0], [0, 0, 6, 7]]`") == _flat(ch05._ref_pool(w, 4, 2))
    assert _shown("`[[0.5, 1, 2.5, 3], [1.5, 2, 3.5, 4]]`") == _flat(ch05._ref_pool(w, 2, 1))


def test_far_scores_really_overflow_and_underflow():
    """The two 05.5 cases that punish a missing max: some score > 709 (exp overflows) / every score < -745."""
    for seed in range(20):
        gen = torch.Generator().manual_seed(seed)
        for sign in (1.0, -1.0):
            q, k, v = ch05._far_scores(gen, sign)
            s = q @ k.transpose(-2, -1) / 2  # D = 4
            if sign > 0:
                assert (s.amax(-1) > 710).any() and torch.isinf(torch.exp(s)).any()
            else:
                assert (s < -800).all() and (torch.exp(s) == 0).all() and (s.amax(-1) - s.amin(-1) > 1).all()
            o, lse = ch05._ref_flash(q, k, v, 3)
            assert torch.isfinite(o).all() and torch.isfinite(lse).all()
            torch.testing.assert_close(lse, torch.logsumexp(s, -1), atol=1e-9, rtol=1e-12)
            torch.testing.assert_close(o, torch.softmax(s, -1) @ v, atol=1e-9, rtol=1e-9)


# ---------------------------------------------------------------------------------------------------
# plausible wrong solutions, written the way a learner might


def _sc(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))


def att_no_scale(q, k, v, mask=None):
    s = q @ k.mT
    if mask is not None:
        s = s.masked_fill(mask == False, float("-inf"))  # noqa: E712 - as a learner writes it
    return F.softmax(s, dim=-1) @ v


def att_div_d(q, k, v, mask=None):
    s = torch.matmul(q, k.transpose(-1, -2)) / q.size(-1)
    return torch.softmax(s if mask is None else s.masked_fill(~mask, -math.inf), -1) @ v


def att_dk_from_k(q, k, v, mask=None):
    d_k = k.size(-2)
    s = q @ k.transpose(-2, -1) / d_k**0.5
    return torch.softmax(s if mask is None else s.masked_fill(~mask, -math.inf), -1) @ v


def att_softmax_dim_m2(q, k, v, mask=None):
    s = _sc(q, k)
    return F.softmax(s if mask is None else s.masked_fill(~mask, -math.inf), dim=-2) @ v


def att_mask_after(q, k, v, mask=None):
    w = torch.softmax(_sc(q, k), -1)
    return (w * mask if mask is not None else w) @ v


def att_polarity(q, k, v, mask=None):
    s = _sc(q, k)
    return torch.softmax(s if mask is None else s.masked_fill(mask, float("-inf")), -1) @ v


def att_polarity_finfo(q, k, v, mask=None):
    s = _sc(q, k)
    return torch.softmax(s if mask is None else s.masked_fill(mask, torch.finfo(s.dtype).min), -1) @ v


def att_bias_from_bool(q, k, v, mask=None):
    s = _sc(q, k)
    return torch.softmax(s if mask is None else s + mask.to(s.dtype), -1) @ v


def att_times_mask(q, k, v, mask=None):
    s = _sc(q, k)
    return torch.softmax(s if mask is None else s * mask, -1) @ v


def att_forgot_v(q, k, v, mask=None):
    s = _sc(q, k)
    return torch.softmax(s if mask is None else s.masked_fill(~mask, -math.inf), -1)


def cm_tril(T, S):
    return torch.tril(torch.ones(T, S)).bool()


def cm_strict(T, S):
    return torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T - 1)


def cm_triu(T, S):
    return torch.triu(torch.ones(T, S), diagonal=S - T).bool()


def cm_blocked(T, S):
    return torch.ones(T, S, dtype=torch.bool).triu(diagonal=S - T + 1)


def cm_minus_offset(T, S):
    return torch.ones(T, S).tril(T - S) == 1


def cm_float(T, S):
    return torch.ones(T, S).tril(S - T)


def cm_swapped(T, S):
    return torch.ones(S, T, dtype=torch.bool).tril()


def gqa_repeat(q, k, v):
    n = q.size(1) // k.size(1)
    return _gqa_sdpa(q, k.repeat(1, n, 1, 1), v.repeat(1, n, 1, 1))


def gqa_expand_wrong_axis(q, k, v):
    B, Hkv, S, D = k.shape
    n = q.shape[1] // Hkv
    k = k[:, None].expand(B, n, Hkv, S, D).reshape(B, n * Hkv, S, D)
    v = v[:, None].expand(B, n, Hkv, S, v.shape[-1]).reshape(B, n * Hkv, S, v.shape[-1])
    return _gqa_sdpa(q, k, v)


def gqa_unscaled(q, k, v):
    n = q.size(1) // k.size(1)
    k, v = k.repeat_interleave(n, 1), v.repeat_interleave(n, 1)
    return torch.softmax(q @ k.transpose(-2, -1), -1) @ v


def gqa_not_repeated(q, k, v):
    return _gqa_sdpa(q, k, v)


def gqa_mean_queries(q, k, v):
    B, H, T, D = q.shape
    return _gqa_sdpa(q.view(B, k.shape[1], H // k.shape[1], T, D).mean(2), k, v)


def _gqa_sdpa(q, k, v):
    return torch.softmax(_sc(q, k), -1) @ v


def kv_k_only(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    return n_layer * n_kv_head * head_dim * seq_len * batch * dtype.itemsize


def kv_query_heads(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    return 2 * n_layer * n_head * head_dim * seq_len * batch * torch.tensor([], dtype=dtype).element_size()


def kv_finfo_bits(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    return 2 * n_layer * n_kv_head * head_dim * seq_len * batch * torch.finfo(dtype).bits


def kv_float(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    return 2 * n_layer * n_kv_head * head_dim * seq_len * batch * torch.finfo(dtype).bits / 8


def kv_per_sequence(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    return 2 * n_layer * n_kv_head * head_dim * seq_len * dtype.itemsize


def kv_per_layer(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    return 2 * n_kv_head * head_dim * seq_len * batch * dtype.itemsize


def kv_per_token(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    return 2 * n_layer * n_kv_head * head_dim * batch * dtype.itemsize  # not a recognised mistake, still wrong


def _online(q, k, v, block, fix_acc=True, fix_l=True, flip=False, norm_each=False, use_max=True, m_init=-math.inf,
            add_m=True, scaled=True):
    """A learner's loop; each keyword set the wrong way is a mistake (independent of the simulated ones in ch05.py)."""
    sc = 1 / math.sqrt(q.shape[-1]) if scaled else 1.0
    T = q.shape[-2]
    m = torch.full(q.shape[:-2] + (T, 1), m_init, dtype=q.dtype)
    l = torch.zeros_like(m)
    o = torch.zeros(q.shape[:-1] + v.shape[-1:], dtype=q.dtype)
    for kb, vb in zip(torch.split(k, block, dim=-2), torch.split(v, block, dim=-2), strict=True):
        s = torch.einsum("...td,...sd->...ts", q, kb) * sc
        if use_max:
            new = torch.max(m, s.max(dim=-1, keepdim=True).values)
            c = torch.exp(new - m) if flip else torch.exp(m - new)
        else:
            new, c = m, 1.0
        e = torch.exp(s - new)
        l = (c * l if fix_l else l) + e.sum(-1, keepdim=True)
        o = (c * o if fix_acc else o) + e @ vb
        if norm_each:
            o = o / l
        m = new
    if not norm_each:
        o = o / l
    return o, ((m if add_m else 0) + l.log())[..., 0]


def fl_no_acc_rescale(q, k, v, block):
    return _online(q, k, v, block, fix_acc=False)


def fl_no_l_rescale(q, k, v, block):
    return _online(q, k, v, block, fix_l=False)


def fl_no_rescale(q, k, v, block):
    return _online(q, k, v, block, fix_acc=False, fix_l=False)


def fl_flipped(q, k, v, block):
    return _online(q, k, v, block, flip=True)


def fl_normalise_each_block(q, k, v, block):
    return _online(q, k, v, block, norm_each=True)


def fl_lse_log_l(q, k, v, block):
    return _online(q, k, v, block, add_m=False)


def fl_plain_exp(q, k, v, block):
    return _online(q, k, v, block, use_max=False, m_init=0.0)


def fl_m_zero(q, k, v, block):
    return _online(q, k, v, block, m_init=0.0)


def fl_unscaled(q, k, v, block):
    return _online(q, k, v, block, scaled=False)


def fl_only_o(q, k, v, block):
    return _online(q, k, v, block)[0]


def fl_swapped(q, k, v, block):
    o, lse = _online(q, k, v, block)
    return lse, o


def fl_lse_is_max(q, k, v, block):
    o, lse = _online(q, k, v, block)
    return o, (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).amax(-1)  # not a recognised mistake


def pk_sum(w, n_head, n_kv_head):
    hd = w.shape[0] // n_head
    return w.view(n_kv_head, n_head // n_kv_head, hd, -1).sum(1).flatten(0, 1)


def pk_first(w, n_head, n_kv_head):
    hd, g = w.shape[0] // n_head, n_head // n_kv_head
    return torch.cat([w[i * g * hd:(i * g + 1) * hd] for i in range(n_kv_head)])


def pk_strided(w, n_head, n_kv_head):
    hd = w.shape[0] // n_head
    return w.view(n_head // n_kv_head, n_kv_head, hd, -1).mean(0).flatten(0, 1)


def pk_bad_view(w, n_head, n_kv_head):
    hd = w.shape[0] // n_head
    return w.view(n_kv_head, hd, n_head // n_kv_head, -1).mean(2).reshape(-1, w.shape[1])


def pk_one_head(w, n_head, n_kv_head):
    return w.view(n_head, w.shape[0] // n_head, -1).mean(0)  # always MQA: wrong shape unless n_kv_head = 1


@pytest.mark.parametrize("ex_id,fn,hint", [
    ("05.1", att_no_scale, "not scaled"),
    ("05.1", att_div_d, "not 1 / D"),
    ("05.1", att_dk_from_k, "not the number of keys"),
    ("05.1", att_softmax_dim_m2, "over the keys, dim=-1"),
    ("05.1", att_mask_after, "mask BEFORE the softmax"),
    ("05.1", att_polarity, "polarity inverted"),
    ("05.1", att_polarity_finfo, "polarity inverted"),
    ("05.1", att_bias_from_bool, "not a bias"),
    ("05.1", att_times_mask, "scores * mask"),
    ("05.1", att_forgot_v, "softmax(...) @ v"),
    ("05.2", cm_tril, "align the diagonal bottom-right"),
    ("05.2", cm_strict, "off by one"),
    ("05.2", cm_triu, "transposed"),
    ("05.2", cm_blocked, "polarity inverted"),
    ("05.2", cm_minus_offset, "not diagonal=T - S"),
    ("05.2", cm_float, "dtype torch.bool"),
    ("05.2", cm_swapped, "expected (T, S)"),
    ("05.3", gqa_repeat, "grouped wrong"),
    ("05.3", gqa_expand_wrong_axis, "grouped wrong"),
    ("05.3", gqa_unscaled, "not scaled"),
    ("05.3", gqa_not_repeated, "RuntimeError"),
    ("05.3", gqa_mean_queries, "one output per QUERY head"),
    ("05.4", kv_k_only, "factor 2"),
    ("05.4", kv_query_heads, "not n_head"),
    ("05.4", kv_finfo_bits, "counts bits"),
    ("05.4", kv_float, "return an int"),
    ("05.4", kv_per_sequence, "multiply by batch"),
    ("05.4", kv_per_layer, "multiply by n_layer"),
    ("05.4", kv_per_token, "expected"),
    ("05.5", fl_no_acc_rescale, "rescale the old output accumulator"),
    ("05.5", fl_no_l_rescale, "rescale the old sum"),
    ("05.5", fl_no_rescale, "multiply both"),
    ("05.5", fl_flipped, "not exp(m_new - m_old)"),
    ("05.5", fl_normalise_each_block, "divided twice"),
    ("05.5", fl_lse_log_l, "log(l) alone"),
    ("05.5", fl_plain_exp, "subtract the running max"),
    ("05.5", fl_m_zero, "start the running max at -inf"),
    ("05.5", fl_unscaled, "not scaled"),
    ("05.5", fl_only_o, "return a pair (o, lse)"),
    ("05.5", fl_swapped, "o: q.shape[:-1]"),
    ("05.5", fl_lse_is_max, "expected"),
    ("05.6", pk_sum, "not their sum"),
    ("05.6", pk_first, "first head"),
    ("05.6", pk_strided, "CONSECUTIVE heads"),
    ("05.6", pk_bad_view, "mixes rows of different heads"),
    ("05.6", pk_one_head, "one block of head_dim rows per key/value head"),
])
def test_wrong_solution_fails_with_its_hint(ex_id, fn, hint):
    res = check(ex_id, fn)
    assert res.status == "failed" and res.points == 0
    assert hint in res.hint, res.hint


def test_top_left_causal_mask_is_caught_on_the_first_cache_case():
    res = check("05.2", cm_tril)
    assert "causal_mask(2, 4): element" in res.hint, res.hint


def test_missing_max_passes_ordinary_scores_but_not_far_ones():
    """The two 'max' mistakes are right on moderate scores: only the +-1500 cases of the check expose them."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    for fn in (fl_plain_exp, fl_m_zero):
        o, lse = fn(q, k, v, 2)
        ref_o, ref_lse = ch05._ref_flash(q, k, v, 2)
        torch.testing.assert_close(o, ref_o, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(lse, ref_lse, atol=1e-12, rtol=1e-12)
        assert check("05.5", fn).status == "failed"


# ---------------------------------------------------------------------------------------------------
# acceptable variants


def ok_att_torch(q, k, v, mask=None):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def ok_att_big_negative(q, k, v, mask=None):
    s = _sc(q, k)
    return torch.softmax(s if mask is None else s.masked_fill(~mask, -1e9), -1) @ v


def ok_att_where_einsum(q, k, v, mask=None):
    s = torch.einsum("...td,...sd->...ts", q, k) / q.shape[-1] ** 0.5
    if mask is not None:
        s = torch.where(mask, s, torch.tensor(float("-inf"), dtype=s.dtype))
    return torch.einsum("...ts,...sd->...td", s.softmax(-1), v)


def ok_att_renormalised_after(q, k, v, mask=None):
    w = torch.softmax(_sc(q, k), -1)
    if mask is not None:
        w = w * mask
        w = w / w.sum(-1, keepdim=True)
    return w @ v


def ok_att_float32(q, k, v, mask=None):
    return ok_att_big_negative(q.float(), k.float(), v.float(), mask)


def ok_cm_triu_not(T, S):
    return ~torch.ones(T, S, dtype=torch.bool).triu(S - T + 1)


def ok_cm_tril_offset(T, S):
    return torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)


def ok_gqa_repeat_kv(q, k, v):
    n = q.shape[1] // k.shape[1]
    return _gqa_sdpa(q, A.repeat_kv(k, n), A.repeat_kv(v, n))


def ok_gqa_grouped_view(q, k, v):
    B, H, T, D = q.shape
    Hkv = k.shape[1]
    qg = q.view(B, Hkv, H // Hkv, T, D)
    w = torch.softmax(qg @ k[:, :, None].transpose(-2, -1) / math.sqrt(D), -1)
    return (w @ v[:, :, None]).reshape(B, H, T, v.shape[-1])


def ok_gqa_torch(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)


def ok_kv_element_size(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    return 2 * n_layer * n_kv_head * head_dim * seq_len * batch * torch.empty(0, dtype=dtype).element_size()


def ok_kv_bits_over_8(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    return n_layer * 2 * n_kv_head * head_dim * (torch.finfo(dtype).bits // 8) * seq_len * batch


def ok_kv_tensor(n_layer, n_head, n_kv_head, head_dim, seq_len, batch, dtype):
    return torch.tensor(2 * n_layer * n_kv_head * head_dim * seq_len * batch * dtype.itemsize)


def ok_fl_full_softmax(q, k, v, block):
    s = _sc(q, k)
    return torch.softmax(s, -1) @ v, torch.logsumexp(s, -1)


def ok_fl_normalised_fa1(q, k, v, block):
    """FlashAttention-1 keeps o normalised: o = (alpha * l_old * o + p @ v) / l_new. Right."""
    sc = 1 / math.sqrt(q.shape[-1])
    m = torch.full(q.shape[:-1] + (1,), -math.inf, dtype=q.dtype)
    l = torch.zeros_like(m)
    o = torch.zeros(q.shape[:-1] + v.shape[-1:], dtype=q.dtype)
    for j in range(0, k.shape[-2], block):
        s = q @ k[..., j:j + block, :].transpose(-2, -1) * sc
        new = torch.maximum(m, s.amax(-1, keepdim=True))
        a, p = torch.exp(m - new), torch.exp(s - new)
        l_new = a * l + p.sum(-1, keepdim=True)
        o = (a * l * o + p @ v[..., j:j + block, :]) / l_new
        m, l = new, l_new
    return o, (m + torch.log(l)).squeeze(-1)


def ok_fl_pair_as_list(q, k, v, block):
    o, lse = _online(q, k, v, block)
    return [o, lse]  # a list instead of a tuple (an lse of shape (..., T, 1) is wrong: the task says (..., T))


def ok_pk_stack(w, n_head, n_kv_head):
    hd, g = w.shape[0] // n_head, n_head // n_kv_head
    heads = w.split(hd)
    return torch.cat([torch.stack(heads[i * g:(i + 1) * g]).mean(0) for i in range(n_kv_head)])


def ok_pk_module(w, n_head, n_kv_head):
    return ch05._ref_pool(w, n_head, n_kv_head)


@pytest.mark.parametrize("ex_id,fn", [
    ("05.1", ok_att_torch), ("05.1", ok_att_big_negative), ("05.1", ok_att_where_einsum),
    ("05.1", ok_att_renormalised_after), ("05.1", ok_att_float32),
    ("05.2", ok_cm_triu_not), ("05.2", ok_cm_tril_offset), ("05.2", A.causal_mask),
    ("05.3", ok_gqa_repeat_kv), ("05.3", ok_gqa_grouped_view), ("05.3", ok_gqa_torch),
    ("05.4", ok_kv_element_size), ("05.4", ok_kv_bits_over_8), ("05.4", ok_kv_tensor),
    ("05.5", ok_fl_full_softmax), ("05.5", ok_fl_normalised_fa1), ("05.5", ok_fl_pair_as_list),
    ("05.6", ok_pk_stack), ("05.6", ok_pk_module),
])
def test_acceptable_variants_pass(ex_id, fn):
    res = check(ex_id, fn)
    assert res.passed, res.hint
