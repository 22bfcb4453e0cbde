"""minillm.fast: the torch SDPA kernel gives what minillm's own attention gives, in the model too."""

from __future__ import annotations

import pytest
import torch

from minillm.attention import causal_mask, padding_mask, sdpa
from minillm.fast import torch_sdpa, use_kernel
from minillm.model import GPT, GPTConfig


@pytest.mark.parametrize(("T", "S", "Hkv"), [(5, 5, 4), (3, 7, 2), (1, 9, 1), (6, 6, 1)])
@pytest.mark.parametrize("kind", ["none", "bool", "float"])
def test_torch_sdpa_equals_minillm_sdpa(T, S, Hkv, kind):
    g = torch.Generator().manual_seed(T * 100 + S)
    q = torch.randn(2, 4, T, 8, generator=g, dtype=torch.float64)
    k, v = (torch.randn(2, Hkv, S, 8, generator=g, dtype=torch.float64) for _ in range(2))
    mask = None
    if kind != "none":
        mask = padding_mask(torch.tensor([S, S - 1]), S)  # (2, 1, 1, S): the second row's last key is padding
        if kind == "float":
            mask = torch.zeros(mask.shape, dtype=torch.float64).masked_fill(~mask, float("-inf"))
    for causal in (False, True):
        want = sdpa(q, k, v, mask=mask, is_causal=causal)
        torch.testing.assert_close(torch_sdpa(q, k, v, mask=mask, is_causal=causal), want, atol=1e-12, rtol=0)


def test_bottom_right_alignment_differs_from_torch_is_causal():
    # the reason torch_sdpa builds the mask itself: with S > T torch aligns is_causal top-left
    q, k, v = torch.randn(1, 1, 2, 4), torch.randn(1, 1, 5, 4), torch.randn(1, 1, 5, 4)
    ours = torch_sdpa(q, k, v, is_causal=True)
    top_left = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert not torch.allclose(ours, top_left)
    torch.testing.assert_close(ours, sdpa(q, k, v, mask=causal_mask(2, 5)))


@pytest.mark.parametrize("preset", ["tiny", "tiny-llama"])
def test_gpt_same_logits_loss_and_grads_with_either_kernel(preset):
    torch.manual_seed(0)
    a = GPT(GPTConfig.preset(preset)).double()
    b = GPT(GPTConfig.preset(preset)).double()
    b.load_state_dict(a.state_dict())
    use_kernel(b, "torch")
    idx = torch.randint(0, 128, (2, 20))
    la, loss_a = a(idx, idx)
    lb, loss_b = b(idx, idx)
    torch.testing.assert_close(lb, la, atol=1e-10, rtol=0)
    loss_a.backward()
    loss_b.backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pb.grad, pa.grad, atol=1e-10, rtol=0, msg=name)
    caches = b.make_kv_caches()  # cached decoding with the torch kernel (S > T: bottom-right mask)
    b(idx[:, :12], kv_caches=caches)
    step, _ = b(idx[:, 12:13], kv_caches=caches)
    torch.testing.assert_close(step[:, 0], la[:, 12], atol=1e-10, rtol=0)


def test_use_kernel_errors():
    with pytest.raises(ValueError, match="choose one of"):
        use_kernel(GPT(GPTConfig.preset("tiny")), "triton")
    with pytest.raises(ValueError, match="no minillm.attention.Attention"):
        use_kernel(torch.nn.Linear(2, 2))
