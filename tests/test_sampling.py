"""minillm.sampling: hand-worked cases, and equality with Hugging Face's logits processors."""

from __future__ import annotations

import math

import pytest
import torch

from minillm.sampling import (
    SamplingParams,
    apply_temperature,
    frequency_presence_penalty,
    next_token_probs,
    process_logits,
    repetition_penalty,
    sample,
    token_counts,
    top_k_filter,
    top_p_filter,
)

INF = float("-inf")
PROBS = torch.tensor([[0.05, 0.5, 0.15, 0.3]])  # sorted: 0.5 (id 1), 0.3 (id 3), 0.15 (id 2), 0.05 (id 0)
LOGITS = PROBS.log()


def kept(logits: torch.Tensor) -> list[int]:
    return torch.nonzero(torch.isfinite(logits[0])).flatten().tolist()


# ------------------------------------------------------------------ hand-worked


@pytest.mark.parametrize(("p", "want"), [(0.4, [1]), (0.75, [1, 3]), (0.9, [1, 2, 3]), (0.99, [0, 1, 2, 3])])
def test_top_p_by_hand(p, want):
    # masses above each token in rank order: 0 (id 1), 0.5 (id 3), 0.8 (id 2), 0.95 (id 0)
    assert kept(top_p_filter(LOGITS, p)) == want


def test_top_p_keeps_the_top_token_even_for_tiny_p():
    assert kept(top_p_filter(LOGITS, 1e-9)) == [1]


@pytest.mark.parametrize(("k", "want"), [(1, [1]), (2, [1, 3]), (3, [1, 2, 3]), (0, [0, 1, 2, 3]), (9, [0, 1, 2, 3])])
def test_top_k_by_hand(k, want):
    assert kept(top_k_filter(LOGITS, k)) == want


@pytest.mark.parametrize("k", [0, 2, 4, 9])  # k = 0 and k >= V remove nothing
def test_filters_return_a_new_tensor_and_leave_the_input_alone(k):
    logits = LOGITS.clone()
    for out in (top_k_filter(logits, k), top_p_filter(logits, 1.0), top_p_filter(logits, 0.6),
                repetition_penalty(logits, torch.tensor([[1, 3]]), 1.0 if k % 2 == 0 else 1.5),
                frequency_presence_penalty(logits, torch.tensor([[1, 3]]), 0.0, 0.0)):
        assert out is not logits and out.data_ptr() != logits.data_ptr()
        out.fill_(0.0)  # filling the answer must not reach the caller's logits
    assert torch.equal(logits, LOGITS)


def test_top_k_keeps_ties_with_the_kth():
    assert kept(top_k_filter(torch.tensor([[1.0, 3.0, 3.0, 0.0]]), 1)) == [1, 2]


def test_temperature_by_hand():
    # T = 2 on logits log p gives p^(1/2) renormalised: sqrt([.05,.5,.15,.3]) / sum
    probs = torch.softmax(apply_temperature(LOGITS, 2.0), -1)
    want = PROBS.sqrt() / PROBS.sqrt().sum()
    torch.testing.assert_close(probs, want)
    assert probs[0, 0] > PROBS[0, 0] and probs[0, 1] < PROBS[0, 1]  # flatter


def test_repetition_penalty_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    prev = torch.tensor([[0, 1, 1]])  # tokens 0 and 1 seen (1 twice: counted once)
    got = repetition_penalty(logits, prev, 2.0)
    assert got.tolist() == [[1.0, -2.0, 0.5, 3.0]]


def test_frequency_presence_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    prev = torch.tensor([[0, 1, 1]])
    got = frequency_presence_penalty(logits, prev, frequency=0.5, presence=1.0)
    # token 0: 2 - 0.5*1 - 1 = 0.5; token 1: -1 - 0.5*2 - 1 = -3
    assert got.tolist() == [[0.5, -3.0, 0.5, 3.0]]
    assert token_counts(prev, 4).tolist() == [[1, 2, 0, 0]]


def test_greedy_is_argmax_whatever_the_filters():
    params = SamplingParams(temperature=0.0, top_k=2, top_p=0.1)
    logits = torch.randn(5, 50)
    assert torch.equal(sample(logits, None, params), logits.argmax(-1))
    probs = next_token_probs(logits, None, params)
    assert torch.equal(probs.argmax(-1), logits.argmax(-1)) and torch.all(probs.sum(-1) == 1)


def test_sampling_frequencies_match_the_filtered_distribution():
    params = SamplingParams(temperature=1.0, top_p=0.75)
    g = torch.Generator().manual_seed(0)
    draws = sample(LOGITS.expand(20_000, 4), None, params, generator=g)
    freq = torch.bincount(draws, minlength=4).float() / draws.numel()
    want = torch.tensor([0.0, 0.5, 0.0, 0.3]) / 0.8  # renormalised nucleus {1, 3}
    assert freq[0] == 0 and freq[2] == 0
    torch.testing.assert_close(freq, want, atol=0.015, rtol=0)  # ~4 standard errors


def test_process_order_penalties_before_temperature():
    logits = torch.tensor([[2.0, 1.0]])
    prev = torch.tensor([[0]])
    got = process_logits(logits, prev, SamplingParams(temperature=0.5, repetition_penalty=4.0))
    assert got.tolist() == [[(2.0 / 4.0) / 0.5, 1.0 / 0.5]]


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [({"temperature": -1}, "temperature"), ({"top_k": -2}, "top_k"), ({"top_p": 0.0}, "top_p"),
     ({"top_p": 1.5}, "top_p"), ({"repetition_penalty": 0.0}, "repetition_penalty"), ({"max_tokens": 0}, "max_tokens")],
)
def test_bad_params_say_what_to_change(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        SamplingParams(**kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match="logits\\[:, -1, :\\]"):
        top_p_filter(torch.randn(2, 3, 5), 0.5)
    with pytest.raises(ValueError, match="greedy"):
        apply_temperature(LOGITS, 0.0)


# ------------------------------------------------------------------ Hugging Face's processors


@pytest.fixture(scope="module")
def hf():
    return pytest.importorskip("transformers.generation.logits_process")


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9, 0.95])
def test_top_p_equals_hugging_face(hf, p):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(16, 300, generator=g, dtype=torch.float64) * 3
    want = hf.TopPLogitsWarper(p)(None, logits)
    assert torch.equal(torch.isfinite(top_p_filter(logits, p)), torch.isfinite(want))


@pytest.mark.parametrize("k", [1, 5, 50])
def test_top_k_and_temperature_equal_hugging_face(hf, k):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(8, 100, generator=g)
    assert torch.equal(top_k_filter(logits, k), hf.TopKLogitsWarper(k)(None, logits))
    torch.testing.assert_close(apply_temperature(logits, 0.7), hf.TemperatureLogitsWarper(0.7)(None, logits))


@pytest.mark.parametrize("theta", [1.3, 0.8])
def test_repetition_penalty_equals_hugging_face(hf, theta):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 60, generator=g)
    prev = torch.randint(0, 60, (4, 25), generator=g)
    want = hf.RepetitionPenaltyLogitsProcessor(theta)(prev, logits.clone())
    torch.testing.assert_close(repetition_penalty(logits, prev, theta), want)


def test_full_pipeline_equals_hugging_face_chain(hf):
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(6, 80, generator=g, dtype=torch.float64)
    prev = torch.randint(0, 80, (6, 12), generator=g)
    params = SamplingParams(temperature=0.8, top_k=20, top_p=0.9, repetition_penalty=1.2)
    want = logits.clone()
    for proc in (hf.RepetitionPenaltyLogitsProcessor(1.2), hf.TemperatureLogitsWarper(0.8),
                 hf.TopKLogitsWarper(20), hf.TopPLogitsWarper(0.9)):
        want = proc(prev, want)
    got = process_logits(logits, prev, params)
    assert torch.equal(torch.isfinite(got), torch.isfinite(want))
    torch.testing.assert_close(got[torch.isfinite(got)], want[torch.isfinite(want)])
    assert math.isclose(next_token_probs(logits, prev, params).sum().item(), 6.0, rel_tol=1e-6)
