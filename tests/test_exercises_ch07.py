"""Chapter 7 exercises: plausible wrong solutions fail with the hint naming the mistake, acceptable variants
pass, 07.4 leaves the learner's RNG and thread count alone, and every hand-worked value the notebook's
markdown shows is what the `minillm` references compute (the numbers are read from the markdown itself). What
every exercise gets (the solution passes, the stub is "not attempted", junk answers and the checker's
simulated mistakes) is checked in test_exercises.py."""

from __future__ import annotations

import re

import exercise_kit as kit
import pytest
import torch
import torch.nn.functional as F

from minillm.generate import beam_search, generate, inference_memory
from minillm.grading import ch07, check
from minillm.model import GPT, GPTConfig
from minillm.sampling import SamplingParams, repetition_penalty, top_k_filter, top_p_filter

CHAPTER = "07"
CELLS = kit.cells(kit.source(CHAPTER))
NEG_INF = float("-inf")


@pytest.fixture(scope="module")
def tiny() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.preset("tiny", init_std=0.3)).double().eval()


def test_greedy_check_leaves_rng_and_threads_alone(solution):
    torch.manual_seed(7)
    want = torch.rand(3)
    threads = torch.get_num_threads()
    torch.manual_seed(7)
    assert check("07.4", solution["greedy_generate"]).passed
    assert torch.equal(torch.rand(3), want) and torch.get_num_threads() == threads


# ---------------------------------------------------------------------------------------------------
# the hand-worked values written in the notebook's markdown, read from it and recomputed


MARKDOWN = "\n".join(c.source(False) for c in CELLS if c.kind == "markdown")


def _shown(snippet: str) -> list[float]:
    """The numbers of `snippet` ('inf' counts as a number), which must appear verbatim in the markdown."""
    assert snippet in MARKDOWN, f"the markdown no longer shows {snippet!r}"
    found = re.findall(r"-inf|-?\d+(?:\.\d+)?", snippet.replace("{,}", ""))
    return [NEG_INF if x == "-inf" else float(x) for x in found]


def _flat(t: torch.Tensor) -> list[float]:
    return t.flatten().tolist()


def test_hand_worked_top_k():
    logits = torch.tensor(ch07.HAND_TOPK, dtype=torch.float64)
    assert _shown("`logits = [[1, 3, -0.5, 2, 0], [0.5, -1, 2, 1.5, -2]]`") == _flat(logits)
    assert _shown("`k = 2`: `[[-inf, 3, -inf, 2, -inf], [-inf, -inf, 2, 1.5, -inf]]`") == [2] + _flat(
        top_k_filter(logits, 2))
    assert _shown("`k = 1` (greedy, as a filter): `[[-inf, 3, -inf, -inf, -inf], [-inf, -inf, 2, -inf, -inf]]`") == [
        1] + _flat(top_k_filter(logits, 1))
    assert torch.equal(top_k_filter(logits, 5), logits)


def test_hand_worked_top_p():
    logits = torch.log(torch.tensor([ch07.HAND_PROBS], dtype=torch.float64))
    assert _shown("`[0.1, 0.4, 0.05, 0.3, 0.15]`") == ch07.HAND_PROBS
    assert _shown("`[-2.302585, -0.916291, -2.995732, -1.203973, -1.897120]`") == pytest.approx(
        _flat(logits), abs=5e-7)
    mass = ch07._mass_above(logits)
    assert _shown("the mass above them is 0, 0.4, 0.7, 0.85, 0.95") == pytest.approx(_flat(mass), abs=1e-9)
    assert _shown("`[-inf, -0.916291, -inf, -1.203973, -1.897120]`") == pytest.approx(
        _flat(top_p_filter(logits, 0.75)), abs=5e-7)
    assert _shown("`[-inf, -0.916291, -inf, -1.203973, -inf]`") == pytest.approx(
        _flat(top_p_filter(logits, 0.5)), abs=5e-7)
    assert _shown("`[-inf, -0.916291, -inf, -inf, -inf]`") == pytest.approx(
        _flat(top_p_filter(logits, 0.3)), abs=5e-7)


def test_safe_p_keeps_away_from_the_boundaries():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        logits = torch.randn(3, 20, generator=gen, dtype=torch.float64) * 3
        p = ch07._safe_p(logits, gen)
        assert 0.05 <= p <= 0.95 and (ch07._mass_above(logits) - p).abs().min() > 1e-4
        # far from the boundaries, float32 (the reference's softmax) and float64 keep the same tokens
        s, order = logits.sort(-1, descending=True)
        probs = s.softmax(-1)
        drop64 = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, probs.cumsum(-1) - probs >= p)
        assert torch.equal(torch.isinf(top_p_filter(logits, p)), drop64)


def test_hand_worked_repetition_penalty():
    logits = torch.tensor([ch07.HAND_REP], dtype=torch.float64)
    assert _shown("`theta = 2`, `logits = [[2, -1, 0.5, -3, 1]]`") == [2] + _flat(logits)
    out = repetition_penalty(logits, torch.tensor([[0, 1, 1, 3]]), 2.0)
    assert _shown("`prev_ids = [[0, 1, 1, 3]]`") == [0, 1, 1, 3]
    assert _shown("`[[1, -2, 0.5, -6, 1]]`") == _flat(out)
    assert _shown("dividing $-1$ by 2 would give $-0.5$") == [-1, 2, -0.5]
    out2 = repetition_penalty(logits, torch.tensor([[4, 4, 2, 2]]), 2.0)
    assert _shown("history `[4, 4, 2, 2]`: `[[2, -1, 0.25, -3, 0.5]]`") == [4, 4, 2, 2] + _flat(out2)


def test_hand_worked_call_pattern(solution, tiny):
    """The table of 07.4: a 3-token prompt and n = 3 feed 3, 1, 1 tokens with 0, 3, 4 cached."""
    for row in ("| 1 (prefill) | 3 (the prompt) | 0 | 0, 1, 2 | new token 1 |", "| 2 | 1 (new token 1) | 3 | 3 |",
                "| 3 | 1 (new token 2) | 4 | 4 | new token 3 |"):
        assert row in MARKDOWN, row
    rec = ch07._Recorder(tiny, "tiny")
    idx = torch.tensor([[5, 6, 7]])
    out = solution["greedy_generate"](rec, idx, 3)
    assert rec.calls == [(3, 0), (1, 3), (1, 4)]
    assert torch.equal(out, generate(tiny, idx, SamplingParams(temperature=0.0, max_tokens=3)))


def test_cached_and_uncached_generation_agree(tiny):
    """The reference of 07.4 (generate with the cache) gives the tokens of re-running the whole sequence."""
    idx = torch.randint(128, (3, 5), generator=torch.Generator().manual_seed(1))
    params = SamplingParams(temperature=0.0, max_tokens=8)
    assert torch.equal(generate(tiny, idx, params), generate(tiny, idx, params, use_cache=False))


def test_greedy_path_has_clear_argmax_gaps():
    """The check's float64 tiny models leave far more than rounding between the best and second-best logit."""
    for seed in range(5):
        torch.manual_seed(seed)
        for model, _ in ch07._tiny_models():
            idx = torch.randint(128, (2, 5))
            out = generate(model, idx, SamplingParams(temperature=0.0, max_tokens=8), use_cache=False)
            with torch.no_grad():
                logits = model(out[:, :-1])[0][:, 4:]
            top2 = logits.topk(2, dim=-1).values
            assert (top2[..., 0] - top2[..., 1]).min() > 1e-9


def test_hand_worked_memory():
    def gb(n, size, L, H, D, tokens, batch):
        return inference_memory(n, size, n_layer=L, n_kv_head=H, head_dim=D, tokens=tokens, batch=batch,
                                kv_bytes=size)

    assert _shown("$7\\cdot10^9 \\cdot 2 / 10^9 = 14$ GB") == [7, 10, 9, 2, 10, 9, 14]
    assert gb(7e9, 2, 32, 32, 128, 0, 1)["total"] == 14e9
    m7 = gb(6_738_415_616, 2, 32, 32, 128, 4096, 1)
    assert _shown("weights $13.476831$ GB + cache $2{,}147{,}483{,}648$ bytes $= 2.147484$ GB: $15.624315$ GB") == (
        pytest.approx([m7["weights"] / 1e9, m7["kv_cache"], m7["kv_cache"] / 1e9, m7["total"] / 1e9], abs=5e-7))
    m7f = gb(6_738_415_616, 4, 32, 32, 128, 4096, 1)
    assert _shown("$26.953662 + 4.294967 = 31.248630$ GB") == pytest.approx(
        [m7f["weights"] / 1e9, m7f["kv_cache"] / 1e9, m7f["total"] / 1e9], abs=5e-7)
    m70 = gb(68_976_648_192, 2, 80, 8, 128, 4096, 8)
    assert _shown("$137.953296 + 10.737418 = 148.690715$ GB") == pytest.approx(
        [m70["weights"] / 1e9, m70["kv_cache"] / 1e9, m70["total"] / 1e9], abs=5e-7)
    assert "Llama-2-7B ($6{,}738{,}415{,}616$ parameters" in MARKDOWN
    assert "Llama-2-70B ($68{,}976{,}648{,}192$ parameters" in MARKDOWN
    assert torch.bfloat16.itemsize == 2 and torch.float32.itemsize == 4


def test_hand_worked_beam_step():
    scores = torch.tensor(ch07.HAND_BEAM_SCORES, dtype=torch.float64)
    logp = torch.log(torch.tensor(ch07.HAND_BEAM_PROBS, dtype=torch.float64))
    assert _shown("`scores = [-1.0, -0.5]`") == ch07.HAND_BEAM_SCORES
    assert _shown("`[[0.6, 0.3, 0.1], [0.5, 0.45, 0.05]]`") == [p for row in ch07.HAND_BEAM_PROBS for p in row]
    total = scores[:, None] + logp
    assert _shown("| beam 0 ($-1.0$) | $-1.510826$ | $-2.203973$ | $-3.302585$ |") == pytest.approx(
        [0, -1.0] + _flat(total[0]), abs=5e-7)
    assert _shown("| beam 1 ($-0.5$) | $-1.193147$ | $-1.298508$ | $-3.495732$ |") == pytest.approx(
        [1, -0.5] + _flat(total[1]), abs=5e-7)
    beam, token, new = ch07._ref_beam_step(scores, logp, 2)
    assert _shown("`beam_idx = [1, 1]`, `token_idx = [0, 1]`,\n`new_scores = [-1.193147, -1.298508]`") == (
        pytest.approx(_flat(beam) + _flat(token) + _flat(new), abs=5e-7))
    beam3, token3, new3 = ch07._ref_beam_step(scores, logp, 3)
    assert _shown("the third is beam 0, token 0, $-1.510826$") == pytest.approx(
        [beam3[2].item(), token3[2].item(), new3[2].item()], abs=5e-7)


def test_reference_beam_step_rebuilds_minillm_beam_search(tiny):
    """A beam search looping ch07's reference step gives minillm.generate.beam_search's best sequence (no eos)."""
    idx = torch.tensor([[3, 1, 4]])
    for num_beams, steps in [(3, 5), (2, 4), (4, 3)]:
        want, want_score = beam_search(tiny, idx, num_beams=num_beams, max_tokens=steps)
        beams, scores = idx, torch.zeros(1, dtype=torch.float64)
        with torch.no_grad():
            for _ in range(steps):
                logp = F.log_softmax(tiny(beams)[0][:, -1].float(), -1).double()
                b, t, scores = ch07._ref_beam_step(scores, logp, num_beams)
                beams = torch.cat([beams[b], t[:, None]], dim=1)
        assert torch.equal(beams[:1], want)
        assert scores[0].item() / steps == pytest.approx(want_score, abs=1e-5)


# ---------------------------------------------------------------------------------------------------
# plausible wrong solutions, written the way a learner might


def tk_k_plus_1(logits, k):
    v, _ = torch.topk(logits, k + 1)
    out = logits.clone()
    out[out < v[:, [-1]]] = NEG_INF
    return out


def tk_strict(logits, k):
    v, _ = torch.topk(logits, k)
    return torch.where(logits > v[:, -1:], logits, torch.full_like(logits, NEG_INF))


def tk_zero(logits, k):
    v, _ = torch.topk(logits, k)
    return logits * (logits >= v[:, -1:])


def tk_ascending(logits, k):
    s, i = torch.sort(logits, dim=-1)
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, i[:, :k], True)
    return logits.masked_fill(~keep, NEG_INF)


def tk_global(logits, k):
    thresh = logits.flatten().topk(k).values.min()
    return torch.where(logits >= thresh, logits, NEG_INF)


def tk_probs(logits, k):
    v, _ = torch.topk(logits, k)
    return F.softmax(logits.masked_fill(logits < v[:, -1:], NEG_INF), dim=-1)


def tk_dim0(logits, k):
    kth = torch.topk(logits, min(k, logits.shape[0]), dim=0).values[-1:]
    return logits.masked_fill(logits < kth, NEG_INF)  # not a recognised mistake, still wrong


def _sorted(logits):
    s, order = torch.sort(logits, descending=True, dim=-1)
    return s, order, F.softmax(s, dim=-1)


def tp_exclusive(logits, p):
    _, order, probs = _sorted(logits)
    keep = torch.cumsum(probs, -1) < p
    keep[..., 0] = True
    return logits.masked_fill(~keep.scatter(-1, order, keep), NEG_INF)


def tp_no_shift(logits, p):
    _, order, probs = _sorted(logits)
    remove = probs.cumsum(-1) > p
    return logits.masked_fill(remove.scatter(-1, order, remove), NEG_INF)


def tp_ascending_rule(logits, p):
    s, order = torch.sort(logits, dim=-1)  # ascending, then the descending rule
    probs = F.softmax(s, -1)
    remove = probs.cumsum(-1) - probs >= p
    remove[..., 0] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), NEG_INF)


def tp_logits(logits, p):
    s, order, _ = _sorted(logits)
    remove = torch.cumsum(s, -1) - s >= p
    remove[..., 0] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), NEG_INF)


def tp_no_unsort(logits, p):
    _, _, probs = _sorted(logits)
    remove = probs.cumsum(-1) - probs >= p
    out = logits.clone()
    out[remove] = NEG_INF
    return out


def tp_sorted_result(logits, p):
    s, _, probs = _sorted(logits)
    remove = probs.cumsum(-1) - probs >= p
    return s.masked_fill(remove, NEG_INF)


def rp_divide(logits, prev_ids, theta):
    out = logits.clone()
    for b in range(out.shape[0]):
        out[b, prev_ids[b].unique()] /= theta
    return out


def rp_loop_each_occurrence(logits, prev_ids, theta):
    out = logits.clone()
    for b in range(out.shape[0]):
        for t in prev_ids[b].tolist():
            out[b, t] = out[b, t] / theta if out[b, t] > 0 else out[b, t] * theta
    return out


def rp_swapped(logits, prev_ids, theta):
    score = torch.gather(logits, 1, prev_ids)
    score = torch.where(score > 0, score * theta, score / theta)
    return logits.scatter(1, prev_ids, score)


def rp_unseen(logits, prev_ids, theta):
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(1, prev_ids, True)
    return torch.where(~seen, torch.where(logits > 0, logits / theta, logits * theta), logits)


def rp_one_set(logits, prev_ids, theta):
    out = logits.clone()
    ids = torch.unique(prev_ids)
    out[:, ids] = torch.where(out[:, ids] > 0, out[:, ids] / theta, out[:, ids] * theta)
    return out


def rp_subtract(logits, prev_ids, theta):
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(1, prev_ids, True)
    return logits - theta * seen  # a presence penalty: not a recognised mistake, still wrong


@torch.no_grad()
def gn_no_cache(model, idx, n):
    for _ in range(n):
        logits, _ = model(idx)
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return idx


@torch.no_grad()
def gn_refeed(model, idx, n):
    caches = model.make_kv_caches()
    for _ in range(n):
        logits, _ = model(idx, kv_caches=caches)
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return idx


@torch.no_grad()
def gn_cache_per_step(model, idx, n):
    for _ in range(n):
        logits, _ = model(idx, kv_caches=model.make_kv_caches())
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return idx


@torch.no_grad()
def gn_prompt_one_by_one(model, idx, n):
    caches = model.make_kv_caches()
    for t in range(idx.shape[1]):
        logits, _ = model(idx[:, t:t + 1], kv_caches=caches)
    out = idx
    for step in range(n):
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], 1)
        if step < n - 1:
            logits, _ = model(nxt, kv_caches=caches)
    return out


@torch.no_grad()
def gn_first_position(model, idx, n):
    caches = model.make_kv_caches()
    logits, _ = model(idx, kv_caches=caches)
    out = idx
    for step in range(n):
        nxt = logits[:, 0].argmax(-1)[:, None]
        out = torch.cat([out, nxt], 1)
        if step < n - 1:  # n calls in all, as the text asks: only the position is wrong
            logits, _ = model(nxt, kv_caches=caches)
    return out


@torch.no_grad()
def gn_stale(model, idx, n):
    caches = model.make_kv_caches()
    logits, _ = model(idx, kv_caches=caches)
    out = idx
    for step in range(n):
        out = torch.cat([out, logits[:, -1].argmax(-1, keepdim=True)], 1)
        if step < n - 1:
            logits, _ = model(idx[:, -1:], kv_caches=caches)
    return out


@torch.no_grad()
def gn_new_only(model, idx, n):
    caches = model.make_kv_caches()
    logits, _ = model(idx, kv_caches=caches)
    new = []
    for _ in range(n):
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        new.append(nxt)
        logits, _ = model(nxt, kv_caches=caches)
    return torch.cat(new, 1)


@torch.no_grad()
def gn_float(model, idx, n):
    return ok_gn_sized_caches(model, idx, n).float()


@torch.no_grad()
def gn_extra_call(model, idx, n):
    """Runs the model once more after the last token: n + 1 calls where the text asks for n."""
    caches = model.make_kv_caches()
    logits, _ = model(idx, kv_caches=caches)
    out = idx
    for _ in range(n):
        nxt = logits[:, -1, :].argmax(dim=-1, keepdim=True)
        out = torch.cat([out, nxt], dim=1)
        logits, _ = model(nxt, kv_caches=caches)
    return out


def tk_inplace(logits, k):
    """Fills the caller's logits (the text asks for a new tensor)."""
    kth = logits.topk(k).values[..., -1, None]
    logits[logits < kth] = NEG_INF
    return logits


@torch.no_grad()
def gn_sampling(model, idx, n):
    caches = model.make_kv_caches()
    logits, _ = model(idx, kv_caches=caches)
    out = idx
    for step in range(n):
        nxt = torch.multinomial(F.softmax(logits[:, -1], -1), 1)
        out = torch.cat([out, nxt], 1)
        if step < n - 1:
            logits, _ = model(nxt, kv_caches=caches)
    return out  # not a recognised mistake, still wrong


def im_bits(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch):
    bits = torch.finfo(dtype).bits
    return (n_params * bits + 2 * n_layer * n_kv_head * head_dim * tokens * batch * bits) / 1e9


def im_gib(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch):
    return (n_params + 2 * n_layer * n_kv_head * head_dim * tokens * batch) * dtype.itemsize / 1024**3


def im_no_2(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch):
    return (n_params + n_layer * n_kv_head * head_dim * tokens * batch) * dtype.itemsize / 1e9


def im_weights(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch):
    return n_params * dtype.itemsize / 1e9


def im_no_batch(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch):
    return (n_params + 2 * n_layer * n_kv_head * head_dim * tokens) * dtype.itemsize / 1e9


def im_no_layers(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch):
    return (n_params + 2 * n_kv_head * head_dim * tokens * batch) * dtype.itemsize / 1e9


def im_bytes(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch):
    return (n_params + 2 * n_layer * n_kv_head * head_dim * tokens * batch) * dtype.itemsize  # not a recognised one


def bs_logp_only(scores, logp, num_beams):
    v, i = logp.view(-1).topk(num_beams)
    b, t = i // logp.size(1), i % logp.size(1)
    return b, t, scores[b] + v


def bs_row_topk(scores, logp, num_beams):
    v, i = (scores.unsqueeze(1) + logp).topk(num_beams, dim=1)
    beams = torch.arange(len(scores)).repeat_interleave(num_beams)
    return beams[:num_beams], i.flatten()[:num_beams], v.flatten()[:num_beams]


def bs_each_best(scores, logp, num_beams):
    v, t = (scores[:, None] + logp).max(-1)
    order = v.argsort(descending=True)[:num_beams]
    return order, t[order], v[order]


def bs_mod_nlive(scores, logp, num_beams):
    v, i = (scores[:, None] + logp).flatten().topk(num_beams)
    return i % len(scores), i // len(scores), v


def bs_smallest(scores, logp, num_beams):
    v, i = (scores[:, None] + logp).flatten().topk(num_beams, largest=False)
    return i // logp.shape[1], i % logp.shape[1], v


def bs_probs(scores, logp, num_beams):
    v, i = (scores[:, None].exp() * logp.exp()).flatten().topk(num_beams)
    return i // logp.shape[1], i % logp.shape[1], v


def bs_float_beam(scores, logp, num_beams):
    v, i = (scores[:, None] + logp).flatten().topk(num_beams)
    return torch.floor(i / logp.shape[1]), i % logp.shape[1], v


def bs_triples(scores, logp, num_beams):
    v, i = (scores[:, None] + logp).flatten().topk(num_beams)
    return [(int(f) // logp.shape[1], int(f) % logp.shape[1], float(s)) for f, s in zip(i, v, strict=True)]


@pytest.mark.parametrize("ex_id,fn,hint", [
    ("07.1", tk_k_plus_1, "you keep k + 1 tokens"),
    ("07.1", tk_strict, "only k - 1 tokens"),
    ("07.1", tk_zero, "-inf, not 0"),
    ("07.1", tk_ascending, "keeps the smallest"),
    ("07.1", tk_global, "not over the whole batch"),
    ("07.1", tk_probs, "not probabilities"),
    ("07.1", tk_dim0, "expected"),
    ("07.1", tk_inplace, "return a NEW tensor"),
    ("07.2", tp_exclusive, "is KEPT"),
    ("07.2", tp_no_shift, "always kept"),
    ("07.2", tp_ascending_rule, "MOST likely token down"),
    ("07.2", tp_logits, "p is a probability mass"),
    ("07.2", tp_no_unsort, "your mask is in SORTED order"),
    ("07.2", tp_sorted_result, "yours are the sorted logits"),
    ("07.3", rp_divide, "MORE likely"),
    ("07.3", rp_loop_each_occurrence, "once per token"),
    ("07.3", rp_swapped, "swapped"),
    ("07.3", rp_unseen, "DID occur"),
    ("07.3", rp_one_set, "its own history"),
    ("07.3", rp_subtract, "expected"),
    ("07.4", gn_no_cache, "pass kv_caches=caches"),
    ("07.4", gn_refeed, "CacheMisuse: you fed"),
    ("07.4", gn_cache_per_step, "make the caches once"),
    ("07.4", gn_prompt_one_by_one, "feed the whole prompt"),
    ("07.4", gn_first_position, "LAST position's logits"),
    ("07.4", gn_stale, "feed the token you just chose"),
    ("07.4", gn_new_only, "the prompt followed by the"),
    ("07.4", gn_float, "integer tensor"),
    ("07.4", gn_sampling, "expected"),
    ("07.4", gn_extra_call, "exactly n times"),
    ("07.5", im_bits, "counts bits"),
    ("07.5", im_gib, "not GiB"),
    ("07.5", im_no_2, "keys AND the values"),
    ("07.5", im_weights, "add the KV cache"),
    ("07.5", im_no_batch, "multiply the KV cache by batch"),
    ("07.5", im_no_layers, "multiply the KV cache by n_layer"),
    ("07.5", im_bytes, "expected"),
    ("07.6", bs_logp_only, "TOTAL log-probability"),
    ("07.6", bs_row_topk, "flatten, then topk"),
    ("07.6", bs_each_best, "one beam may get several children"),
    ("07.6", bs_mod_nlive, "decodes as beam f // V"),
    ("07.6", bs_smallest, "HIGHEST"),
    ("07.6", bs_probs, "new_scores are log-probabilities"),
    ("07.6", bs_float_beam, "must be integers"),
    ("07.6", bs_triples, "return a triple"),
])
def test_wrong_solution_fails_with_its_hint(ex_id, fn, hint):
    res = check(ex_id, fn)
    assert res.status == "failed" and res.points == 0
    assert hint in res.hint, res.hint


# ---------------------------------------------------------------------------------------------------
# acceptable variants


def ok_tk_scatter(logits, k):
    v, i = logits.topk(k, dim=-1)
    return torch.full_like(logits, NEG_INF).scatter(-1, i, v)


def ok_tk_inplace(logits, k):
    kth = logits.topk(k).values[..., -1, None]
    logits[logits < kth] = NEG_INF
    return logits


def ok_tp_hf_ascending(logits, p):
    """Hugging Face's TopPLogitsWarper: sort ascending, drop while the cumulative mass is <= 1 - p."""
    s, order = torch.sort(logits, descending=False)
    cum = s.softmax(dim=-1).cumsum(dim=-1)
    remove = cum <= (1 - p)
    remove[..., -1:] = 0
    return logits.masked_fill(remove.scatter(1, order, remove), NEG_INF)


def ok_tp_hf_shifted(logits, p):
    """The older Hugging Face recipe: remove cumsum > p, shifted right by one so the crossing token stays."""
    s, order = torch.sort(logits, descending=True)
    remove = F.softmax(s, dim=-1).cumsum(-1) > p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    return logits.masked_fill(remove.scatter(1, order, remove), NEG_INF)


def ok_tp_inverse_permutation(logits, p):
    s, order = logits.sort(-1, descending=True)
    probs = s.softmax(-1)
    keep_sorted = probs.cumsum(-1) - probs < p
    keep = torch.gather(keep_sorted, -1, order.argsort(-1))
    return torch.where(keep, logits, NEG_INF)


def ok_rp_hf(logits, prev_ids, theta):
    """Hugging Face's RepetitionPenaltyLogitsProcessor: gather, penalise, scatter back."""
    score = torch.gather(logits, 1, prev_ids)
    score = torch.where(score < 0, score * theta, score / theta)
    return logits.scatter(1, prev_ids, score)


def ok_rp_loops(logits, prev_ids, theta):
    out = logits.clone()
    for b in range(out.shape[0]):
        for t in set(prev_ids[b].tolist()):
            out[b, t] = out[b, t] / theta if out[b, t] > 0 else out[b, t] * theta
    return out


@torch.no_grad()
def ok_gn_sized_caches(model, idx, n):
    """Caches sized to the T + n - 1 tokens they will hold, start_pos passed explicitly; n calls."""
    caches = model.make_kv_caches(idx.shape[1] + n - 1)
    logits, _ = model(idx, kv_caches=caches, start_pos=0)
    out = idx
    for step in range(n):
        nxt = logits[:, -1, :].argmax(dim=-1, keepdim=True)
        out = torch.cat([out, nxt], dim=1)
        if step < n - 1:
            logits, _ = model(nxt, kv_caches=caches)
    return out


def ok_gn_eval_first(model, idx, n):
    model = model.eval()
    with torch.no_grad():
        return ok_gn_sized_caches(model, idx, n).tolist()


def ok_im_bits_over_8(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch):
    bytes_ = torch.finfo(dtype).bits // 8
    return n_params * bytes_ / 1e9 + 2 * n_layer * n_kv_head * head_dim * tokens * batch * bytes_ / 1e9


def ok_im_tensor(n_params, dtype, n_layer, n_kv_head, head_dim, tokens, batch):
    size = torch.empty(0, dtype=dtype).element_size()
    return torch.tensor((n_params + 2 * n_layer * n_kv_head * head_dim * tokens * batch) * size / 1e9)


def ok_bs_argsort(scores, logp, num_beams):
    total = (scores[:, None] + logp).flatten()
    order = total.argsort(descending=True)[:num_beams]
    beam = torch.div(order, logp.shape[-1], rounding_mode="floor")
    return beam, order - beam * logp.shape[-1], total[order]


def ok_bs_lists(scores, logp, num_beams):
    V = logp.shape[-1]
    cands = sorted(((scores[b] + logp[b, t]).item(), b, t) for b in range(logp.shape[0]) for t in range(V))[::-1]
    best = cands[:num_beams]
    return [b for _, b, _ in best], [t for _, _, t in best], [s for s, _, _ in best]


@pytest.mark.parametrize("ex_id,fn", [
    ("07.1", ok_tk_scatter), ("07.1", top_k_filter),
    ("07.2", ok_tp_hf_ascending), ("07.2", ok_tp_hf_shifted), ("07.2", ok_tp_inverse_permutation),
    ("07.2", top_p_filter),
    ("07.3", ok_rp_hf), ("07.3", ok_rp_loops), ("07.3", repetition_penalty),
    ("07.4", ok_gn_sized_caches), ("07.4", ok_gn_eval_first),
    ("07.5", ok_im_bits_over_8), ("07.5", ok_im_tensor),
    ("07.6", ok_bs_argsort), ("07.6", ok_bs_lists),
])
def test_acceptable_variants_pass(ex_id, fn):
    res = check(ex_id, fn)
    assert res.passed, res.hint
