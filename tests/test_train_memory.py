"""Chapter 10 (first part): where training memory goes.

`minillm.memory.saved_activation_bytes` (autograd's saved-tensor hooks) is checked on a hand-worked MLP and
against an independent count (walking the autograd graph's `_saved_*` attributes); the activation formula of
`minillm.train_memory` is checked against that measurement, exactly, for several block shapes and dtypes, and
the memory table against `count_params`, a model built on the meta device, and `minillm.peft.qlora`."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from minillm.memory import saved_activation_bytes, saved_tensors
from minillm.model import GPT, Block, GPTConfig, count_params
from minillm.positional import RoPE
from minillm.train_memory import (
    activation_bytes_per_layer,
    activation_terms,
    inference_memory,
    memory_table,
    model_activation_bytes,
    training_memory,
)

# ---------------------------------------------------------------------------------------------- the probe


def test_saved_tensors_hand_worked_mlp():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2))
    x = torch.randn(5, 3)
    records, y = saved_tensors(lambda: mlp(x), mlp)
    # by hand: Linear 1 saves its input x (for W1's gradient; x needs none), GELU its input h = x W1^T + b1,
    # Linear 2 its input GELU(h); the weights (saved as W^T views) are parameters and left out, biases unused
    assert [(shape, dtype) for shape, dtype, _ in records] == [((5, 3), torch.float32), ((5, 4), torch.float32),
                                                               ((5, 4), torch.float32)]
    nbytes, _ = saved_activation_bytes(lambda: mlp(x), mlp)
    assert nbytes == 4 * (5 * 3 + 5 * 4 + 5 * 4) == 220
    assert saved_activation_bytes(lambda: mlp(x), list(mlp.parameters()))[0] == 220
    # without excluding parameters W2 (2 x 4) counts too: Linear 2 needs it for GELU(h)'s gradient; W1 is not
    # saved at all, x needs no gradient
    assert saved_activation_bytes(lambda: mlp(x))[0] == 220 + 4 * 8
    assert y.shape == (5, 2)
    y.sum().backward()  # the graph is intact: the hooks hand the tensors back unchanged
    assert mlp[0].weight.grad is not None


def test_saved_storages_are_counted_once():
    x = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    assert saved_activation_bytes(lambda: x * x)[0] == 6 * 8 * 8  # x saved twice: one storage
    assert saved_activation_bytes(lambda: x[:2] * x[2:4])[0] == 6 * 8 * 8  # two views: x's whole storage
    assert saved_activation_bytes(lambda: x.exp() * 3.0)[0] == 6 * 8 * 8  # exp saves its output; * 3 nothing
    assert saved_activation_bytes(lambda: (x + 1).sum())[0] == 0


def _graph_saved_bytes(out: torch.Tensor, params: nn.Module) -> int:
    """Independent count: walk out's autograd graph and collect the tensors each node exposes as `_saved_*`,
    but not 0-dim ones: Python numbers an op saves (`scores * scale`) are 0-dim float64 tensors stored without
    the hooks (8 bytes each, on the CPU), which the hooks therefore do not count."""
    skip = {p.untyped_storage().data_ptr() for p in params.parameters()}
    seen: dict[int, int] = {}
    stack, visited = [out.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in visited:
            continue
        visited.add(node)
        for name in dir(node):
            if not name.startswith("_saved_"):
                continue
            value = getattr(node, name)
            for t in value if isinstance(value, tuple | list) else (value,):
                if isinstance(t, torch.Tensor) and t.ndim and t.untyped_storage().data_ptr() not in skip:
                    seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        stack.extend(fn for fn, _ in node.next_functions)
    return sum(seen.values())


# ---------------------------------------------------------------------------------------------- one block

CONFIGS = {
    "base": GPTConfig.preset("base"),  # RMSNorm, SwiGLU, RoPE, MHA
    "gqa": GPTConfig.preset("base", n_kv_head=2),
    "layernorm-gelu": GPTConfig.preset("tiny"),  # LayerNorm with bias, exact GeLU, learned positions
    "tanh-relu": GPTConfig.preset("tiny", ffn="gelu_tanh", norm="rmsnorm"),
    "relu-nobias": GPTConfig.preset("tiny", ffn="relu", bias=False),
    "geglu-postln": GPTConfig.preset("tiny-llama", ffn="geglu", norm_position="post"),
}


def _block_saved(cfg: GPTConfig, B: int, T: int, dtype: torch.dtype) -> tuple[int, torch.Tensor, Block]:
    torch.manual_seed(0)
    block = Block(cfg).to(dtype).train()
    x = torch.randn(B, T, cfg.d_model, dtype=dtype, requires_grad=True)  # a layer's input carries a gradient
    rotate = RoPE(cfg.rope_theta).rotate if cfg.pos == "rope" else None
    records, y = saved_tensors(lambda: block(x, rotate=rotate, is_causal=True), block)
    assert all(shape != () for shape, _, _ in records)  # a block saves no 0-dim tensor through the hooks
    return sum(n for _, _, n in records), y, block


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("B,T", [(2, 16), (3, 7)])
def test_block_formula_equals_measurement(name, dtype, B, T):
    cfg = CONFIGS[name]
    nbytes, y, block = _block_saved(cfg, B, T, dtype)
    assert nbytes == activation_bytes_per_layer(cfg, B, T, dtype.itemsize)
    assert nbytes == _graph_saved_bytes(y, block)


def test_block_hand_worked_base():
    # base preset, B=2, T=16, float32: s b h = 6144, s b f = 16384, a s^2 b = 3072, p = c = 4
    hand = (6144 * (4 * 4 + 6 * 4)  # norms (x, x-hat) + linear inputs + q, k, v: 10 s b h elements
            + 5 * 16384 * 4  # SwiGLU: gate, sigmoid, silu, up, product
            + 3 * 3072 * 4  # scores, exp, weights
            + 16 * 16  # the bool causal mask
            + 6 * 16 * 2 * (2 * 4 + 2)  # row max and sum (float), two bool conditions
            + 2 * 16 * 2 * 4  # the two norms' 1 / rms
            + 4 * 16 * 32 * 4)  # RoPE's cos and sin for q and for k, (T, head_dim) each
    assert hand == 620928 == activation_bytes_per_layer(CONFIGS["base"], 2, 16, 4)
    assert _block_saved(CONFIGS["base"], 2, 16, torch.float32)[0] == hand
    terms = activation_terms(CONFIGS["base"], 2, 16, 4)
    assert terms["scores, exp, weights"] == 36864 and sum(terms.values()) == hand
    # GQA leaves activations unchanged: the keys and values are saved after repeat_kv
    assert activation_bytes_per_layer(CONFIGS["gqa"], 2, 16, 4) == hand


# ---------------------------------------------------------------------------------------------- whole model


WHOLE = {"base": GPTConfig.preset("base"),  # RoPE, RMSNorm, SwiGLU, Pre-LN
         "tiny": GPTConfig.preset("tiny"),  # learned positions, LayerNorm, GeLU, biases
         "post-norm": GPTConfig.preset("base", norm_position="post")}  # no final norm


@pytest.mark.parametrize("name", WHOLE)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B,T", [(2, 12), (1, 33)])
def test_model_is_layers_plus_embedding_and_head(name, dtype, B, T):
    cfg = WHOLE[name]
    torch.manual_seed(0)
    model = GPT(cfg).to(dtype).train()
    idx, targets = torch.randint(0, cfg.vocab_size, (2, B, T))
    nbytes, (_, loss) = saved_activation_bytes(lambda: model(idx, targets), model)
    p = dtype.itemsize
    parts = model_activation_bytes(cfg, B, T, p)
    # by hand: int64 ids (8 B T) and, if learned, int64 positions (8 T); the final norm if Pre-LN (2 B T d +
    # B T elements), lm_head input (B T d), log-softmax (B T V), int64 targets (8 B T), the loss's total weight
    d, V = cfg.d_model, cfg.vocab_size
    assert parts["embedding"] == 8 * B * T + (8 * T if cfg.pos == "learned" else 0)
    final = 2 * B * T * d + B * T if cfg.norm_position == "pre" else 0
    assert parts["head"] == p * (final + B * T * d + B * T * V + 1) + 8 * B * T
    # the loss's total weight is 0-dim: the graph walk leaves it out (see _graph_saved_bytes)
    assert nbytes == parts["total"] == _graph_saved_bytes(loss, model) + p


def test_unmodelled_configs_raise():
    for cfg in (GPTConfig.preset("tiny", parallel_block=True), GPTConfig.preset("tiny", pos="alibi"),
                GPTConfig.preset("small")):  # dropout 0.2
        with pytest.raises(ValueError, match="sequential blocks"):
            activation_bytes_per_layer(cfg, 1, 8)
    with pytest.raises(ValueError, match="dtype_bytes"):
        activation_bytes_per_layer(CONFIGS["base"], 1, 8, 3)
    with pytest.raises(ValueError, match="precision"):
        training_memory(CONFIGS["base"], 1, 8, precision="fp8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_allocated_after_forward_is_saved_plus_output():
    # what stays allocated after a forward is what autograd saved plus the output; the caching allocator
    # rounds each block up to 512 bytes
    cfg, B, T = CONFIGS["base"], 4, 64
    torch.manual_seed(0)
    block = Block(cfg).cuda().train()
    x = torch.randn(B, T, cfg.d_model, device="cuda", requires_grad=True)
    rotate = RoPE(cfg.rope_theta).rotate
    block(x, rotate=rotate, is_causal=True).sum().backward()  # warm-up: cuBLAS workspaces
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    # x is saved too (by the float32 RMSNorm) but was allocated before the call: leave its storage out
    records, y = saved_tensors(lambda: block(x, rotate=rotate, is_causal=True), [*block.parameters(), x])
    torch.cuda.synchronize()
    held = torch.cuda.memory_allocated() - before
    new = [n for _, _, n in records]
    assert sum(new) + x.nbytes == activation_bytes_per_layer(cfg, B, T, 4)
    out = y.numel() * 4
    rounded = sum(-(-n // 512) * 512 for n in new) + -(-out // 512) * 512
    assert sum(new) + out <= held <= rounded


# ---------------------------------------------------------------------------------------------- the table


def test_training_memory_hand_worked_7b():
    cfg = GPTConfig.preset("llama2-7b")
    n = count_params(cfg)["total"]
    assert n == 6_738_415_616  # Llama-2-7B's published count
    mixed = training_memory(cfg, 1, 2048, "mixed")
    # 2 (fp16 weights) + 2 (fp16 gradients) + 4 (fp32 master) + 4 + 4 (Adam m, v) = 16 bytes per parameter
    assert mixed["weights"] + mixed["gradients"] + mixed["optimizer states"] == 16 * n == 107_814_649_856
    assert training_memory(cfg, 1, 2048, "fp32")["optimizer states"] == 8 * n
    assert training_memory(cfg, 1, 2048, "bf16", "sgd")["optimizer states"] == 0
    # the activations at s = 2048, bf16 (h 4096, a 32, f 11008, d 128, V 32000), per layer by hand:
    # norms 2 (2 s h 4 + s 4 + h 4) = 134,266,880; linear inputs and q, k, v 6 s h 2 = 100,663,296;
    # RoPE 4 s d 2 = 2,097,152; softmax terms 3 a s^2 2 = 805,306,368; mask s^2 = 4,194,304;
    # row max / sum a s 6 = 393,216; SwiGLU 5 s f 2 = 225,443,840
    per_layer = 134_266_880 + 100_663_296 + 2_097_152 + 805_306_368 + 4_194_304 + 393_216 + 225_443_840
    assert activation_bytes_per_layer(cfg, 1, 2048, 2) == per_layer == 1_272_365_056
    assert activation_terms(cfg, 1, 2048, 2)["scores, exp, weights"] == 805_306_368
    # head: final norm 67,133,440 + lm_head input s h 2 + log-softmax s V 2 + int64 targets 8 s + 2; ids 8 s
    parts = model_activation_bytes(cfg, 1, 2048, 2)
    assert parts["head"] == 67_133_440 + 16_777_216 + 131_072_000 + 16_384 + 2 == 214_999_042
    assert parts["embedding"] == 16_384
    assert mixed["activations"] == 32 * 1_272_365_056 + 214_999_042 + 16_384 == 40_930_697_218
    assert mixed["total"] == 16 * 6_738_415_616 + 40_930_697_218
    row = next(r for r in memory_table(("llama2-7b",)) if r["precision"] == "mixed")
    assert row["train GB"] == (16 * 6_738_415_616 + 40_930_697_218) / 1e9
    # inference in bf16: 13.5 GB of weights; KV cache 2 (k, v) x 32 layers x 4096 (32 heads x 128) x 2 B
    # = 0.5 MiB per token, 2 GiB for 4096 tokens
    inf = inference_memory(cfg, 1, 4096, "bf16")
    assert inf["weights"] == 2 * n and inf["kv cache"] == 2 * 32 * 4096 * 2 * 4096 == 2**31


def test_mixed_matches_qlora_full_finetune_with_master_weights():
    from minillm.peft.qlora import LLAMA_SHAPES, finetune_memory

    ref = finetune_memory(LLAMA_SHAPES["7b"], "full", master_weights=True)["total"]  # GB, LLaMA-1 7B shape
    ours = training_memory(GPTConfig.preset("llama2-7b"), 1, 1, "mixed")
    assert ref * 1e9 == pytest.approx(ours["total"] - ours["activations"], rel=1e-12)


def test_memory_table_counts_equal_built_models():
    rows = memory_table()
    assert [(r["model"], r["precision"]) for r in rows[:3]] == [("llama2-7b", p) for p in ("fp32", "mixed", "bf16")]
    assert len(rows) == 9
    for name in ("llama2-7b", "llama2-13b", "llama2-70b"):
        cfg = GPTConfig.preset(name)
        with torch.device("meta"):  # shapes only, no memory
            built = GPT(cfg).num_params()
        for row in (r for r in rows if r["model"] == name):
            assert row["params"] == built == count_params(cfg)["total"]
    big = {r["precision"]: r for r in rows if r["model"] == "llama2-70b"}
    # GQA: 8 kv heads of 128 -> 2 x 80 x 1024 x 2 B = 320 KiB per token in bf16 (1.34 GB for 4096 tokens)
    assert big["bf16"]["kv cache GB"] * 1e9 == 2 * 80 * 1024 * 2 * 4096
    assert big["mixed"]["train GB"] > big["bf16"]["train GB"] > big["bf16"]["infer GB"]


# ---------------------------------------------------------------------------------------------- FLOPs, MFU, GPUs


def test_flops_per_token_hand_worked():
    from minillm.flops import flops_per_token, matmul_params

    # GPT-2 shape, L 2, d 64, 4 heads, GeLU 4d, biases, learned positions, tied head, V 100:
    # per layer q, k, v, o 4 (64 x 64 + 64) = 16,640, MLP 2 x 64 x 256 + 256 + 64 = 33,088 (norms left out);
    # the tied head's 100 x 64 = 6,400 counts (a matmul per token), the embedding tables do not
    cfg = GPTConfig(vocab_size=100, n_layer=2, n_head=4, d_model=64)
    assert matmul_params(cfg) == 2 * (16_640 + 33_088) + 6_400 == 105_856
    # at T = 32: 6N = 635,136; attention 12 L T d = 49,152 (PaLM) or 6 L T d = 24,576 (Kaplan's causal half)
    assert flops_per_token(cfg, 32) == 635_136 + 49_152 == 684_288
    assert flops_per_token(cfg, 32, "kaplan") == 659_712
    with pytest.raises(ValueError, match="form"):
        flops_per_token(cfg, 32, "chinchilla")


@pytest.mark.parametrize("tied", [True, False])
def test_flops_per_token_equals_torch_flop_counter(tied):
    # independent reference: torch's FlopCounterMode counts every mm / bmm of forward and backward; without biases
    # or a fused kernel the matmuls are exactly 6N + the full T x T square of q k^T and weights @ v
    from torch.utils.flop_counter import FlopCounterMode

    from minillm.flops import flops_per_token

    cfg = GPTConfig(vocab_size=37, n_layer=2, n_head=4, n_kv_head=2, d_model=32, pos="rope", norm="rmsnorm",
                    ffn="swiglu", bias=False, tie_embeddings=tied)
    torch.manual_seed(0)
    model = GPT(cfg)
    B, T = 3, 16
    idx = torch.randint(0, cfg.vocab_size, (B, T))
    with FlopCounterMode(display=False) as counter:
        model(idx, idx)[1].backward()
    assert counter.get_total_flops() == B * T * flops_per_token(cfg, T)


def test_mfu_and_training_time_hand_worked():
    from minillm.flops import GPUS, mfu, training_time

    cfg = GPTConfig(vocab_size=100, n_layer=2, n_head=4, d_model=64)
    # 1,000 tokens/s x 684,288 FLOPs per token on a 684,288,000 FLOP/s machine: all of it; at 10x the peak, 10 %
    assert mfu(1000, cfg, 32, 684_288_000) == pytest.approx(1.0, rel=1e-15)
    assert mfu(1000, cfg, 32, 6_842_880_000) == pytest.approx(0.1, rel=1e-15)
    # 7B on 1T tokens: 6 x 7e9 x 1e12 = 4.2e22 FLOPs; 1,024 A100s at 312 TFLOPS and 40 % MFU: 328,651 s (3.8 days)
    a100 = GPUS["A100 80GB"]["bf16 flops"]
    assert a100 == 312e12
    t = training_time(7e9, 1e12, 1024, a100, 0.4)
    assert t == pytest.approx(4.2e22 / (1024 * 312e12 * 0.4), rel=1e-15)
    assert t == pytest.approx(328_651, rel=1e-6)
    # one GPU takes 1,024 times as long; twice the MFU half as long
    assert training_time(7e9, 1e12, 1, a100, 0.4) == pytest.approx(1024 * t, rel=1e-12)
    assert training_time(7e9, 1e12, 1024, a100, 0.8) == pytest.approx(t / 2, rel=1e-12)
    with pytest.raises(ValueError, match="mfu"):
        training_time(7e9, 1e12, 8, a100, 40)


def test_gpus_needed_hand_worked():
    from minillm.flops import GPUS, gpu_peak_flops, gpu_table, gpus_needed

    assert set(GPUS) == {"V100 32GB", "A100 40GB", "A100 80GB", "H100 80GB", "H200 141GB", "RTX 4090 24GB"}
    # 7B, mixed precision + Adam, batch 1 x 2048: 16 B x 6,738,415,616 + 40.93 GB activations = 148.7 GB;
    # an "80 GB" card holds 80 GiB (binary); 90 % of it is 72 GiB = 77.31e9 bytes: 2 cards (1.92 -> 2); of a
    # 24 GiB card 21.6 GiB = 23.19e9 bytes: 7 cards (6.41 -> 7). Read as decimal GB it would be 3 and 7.
    total = 16 * 6_738_415_616 + 40_930_697_218
    assert gpus_needed(total, "A100 80GB") == 2 and gpus_needed(total, "RTX 4090 24GB") == 7
    assert gpus_needed(72 * 2**30, "A100 80GB") == 1 and gpus_needed(72 * 2**30 + 1, "A100 80GB") == 2
    assert gpus_needed(72e9 + 1, "A100 80GB") == 1  # not decimal GB
    rows = {(r["model"], r["setting"]): r for r in gpu_table()}
    assert rows["llama2-7b", "train mixed+Adam"]["A100 80GB"] == 2
    assert rows["llama2-7b", "train mixed+Adam"]["GB"] == total / 1e9
    # 70B bf16 inference: 2 x 68.98e9 weights + 1.34 GB of GQA KV cache = 139.3 GB: 2 x 80 GiB cards (1.80 -> 2)
    assert rows["llama2-70b", "infer bf16"]["H100 80GB"] == 2
    assert gpu_peak_flops("NVIDIA H200") == 989e12 and gpu_peak_flops("NVIDIA GeForce RTX 4090") == 165.2e12
    assert gpu_peak_flops("Tesla T4") is None
    with pytest.raises(ValueError, match="unknown gpu"):
        gpus_needed(1e9, "B200")
