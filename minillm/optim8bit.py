"""8-bit Adam: the optimizer's two moment tensors stored in 8 bits with block-wise quantisation.

Adam keeps two fp32 tensors per parameter (first moment m, second moment v): 8 bytes per parameter, twice
the fp32 weights. Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization" (ICLR), store each
in 1 byte per element plus one fp32 scale per block, and lose no accuracy in their experiments:

1. Block-wise absmax (section 2.1): the flat state is cut into blocks of `block` elements (the paper uses
   2048; bitsandbytes' current optimizers 256, the default here). Each block is divided by its own absmax
   N_b = max|x| over the block, so every normalised value lies in [-1, 1] and an outlier spoils only the
   precision of its own block, not of the whole tensor. Overhead: 4 bytes / block = 1/64 byte per element.
2. Dynamic quantisation map (the background section's "dynamic tree quantisation", from Dettmers 2016, "8-Bit
   Approximations for Parallelism in Deep Learning"; section 2.2 extends it to unsigned tensors): the 256 codes
   are not evenly spaced.
   A code is sign * 10^-E * f: E (0..6) picks a decade and f a linearly spaced fraction in (0.1, 1), with
   more fractions in the larger decades (1, 2, 4, ..., 64 per sign and decade). The codes span 1e-7..1, so
   the small entries of v (which spreads over many decades) keep a few significant digits instead of all
   rounding to 0 as on a linear grid. v >= 0 uses the unsigned map (no sign bit: twice the fractions per
   decade). `dynamic_map` builds both (the signed one is `minillm.peft.nf4.dynamic_code_values`, which QLoRA's
   double quantisation uses); `linear_map` is the plain int8 grid (absmax quantisation) to compare.
   quantise: index of the nearest code to x / N_b; dequantise: code[index] * N_b (nearest = round). The
   quantiser itself is chapter 9's `minillm.peft.nf4.quantize_blockwise`, generic in its code table.
3. The update (figure 1): dequantise m and v to fp32, do the ordinary Adam(W) step in fp32, quantise
   the new m and v back. Only the stored state is 8-bit; the arithmetic is fp32. Tensors with fewer than
   `min_8bit_size` elements (norm gains, biases) keep fp32 states, as bitsandbytes does (they cost little
   and are the most sensitive).

`Adam8bit` takes torch.optim.AdamW's arguments (decoupled weight decay: weight_decay=0 is Adam) and, with
all states in fp32 (`min_8bit_size` above every tensor), computes exactly AdamW's step; tests compare its
8-bit run with torch.optim.AdamW and, when installed, with bitsandbytes' Adam8bit. `state_bytes` measures
what the states hold: 2 bytes per parameter + 8 bytes per block of the two absmax vectors.

Paged optimizers (Dettmers et al. 2023, QLoRA, section 3) are not implemented: bitsandbytes allocates the
states in CUDA unified memory, which the driver pages out to CPU RAM when the GPU runs short (a long
sequence's activation spike) and back on the next access, so a spike slows a step down instead of
crashing it with out-of-memory. It needs CUDA's cudaMallocManaged; there is nothing to page on a CPU.

Leaves out: the fused CUDA kernel (one pass dequantise-update-quantise in registers, no fp32 copy of the
states in memory: here the fp32 copy of one tensor's states exists during its step), the stable embedding
layer (section 2.3), percentile clipping, 4-bit states.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from minillm.peft import nf4

BLOCK = 256  # elements per absmax block (bitsandbytes' optimizers; the paper's experiments use 2048)
MIN_8BIT_SIZE = 4096  # smaller tensors keep fp32 states (bitsandbytes' default)


def dynamic_map(signed: bool = True) -> torch.Tensor:
    """The 256 codes of the dynamic tree map (Dettmers et al. 2022; unsigned: sec. 2.2), sorted ascending, fp32.

    Signed: `minillm.peft.nf4.dynamic_code_values()`, 2 * 127 codes + 0 + 1.0 (decade 10^-e, e = 6..0, has
    2^(6-e) fractions per sign). Unsigned (no sign bit, one more fraction bit): 2^(7-e) fractions per decade,
    254 codes + 0 + 1.0. The fractions are the midpoints of equal intervals of [0.1, 1], in float32 as the
    published table (and bitsandbytes' `create_dynamic_map`) computes them."""
    if signed:
        return nf4.dynamic_code_values()
    values = [0.0, 1.0]
    for e in range(6, -1, -1):
        edges = torch.linspace(0.1, 1, 2 ** (7 - e) + 1)  # (n + 1,) float32
        mids = (edges[:-1] + edges[1:]) / 2  # (n,) each code at the middle of its interval
        values += (10.0**-e * mids).tolist()
    return torch.tensor(sorted(values), dtype=torch.float32)


def linear_map(signed: bool = True) -> torch.Tensor:
    """Evenly spaced codes: k / 127 for k = -128..127 (signed: int8 absmax quantisation), k / 255 (unsigned)."""
    k = torch.arange(-128, 128) if signed else torch.arange(256)
    return (k / (127.0 if signed else 255.0)).float()


def quantize_blockwise(x: torch.Tensor, code: torch.Tensor, block: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices uint8 of shape (numel,), absmax fp32 of shape (ceil(numel / block),)) for tensor `x`.

    Each block of the flattened `x` is divided by its absmax and each value replaced by the index of the
    nearest code (`code` sorted ascending, 256 entries). The quantiser is chapter 9's (`minillm.peft.nf4`, there
    with NF4's 16 codes); an all-zero block gets absmax 0 and the index of code 0."""
    if code.numel() != 256:
        raise ValueError(f"an 8-bit code table has 256 entries, got {code.numel()}")
    return nf4.quantize_blockwise(x, code, block)


def dequantize_blockwise(q: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, shape: torch.Size | tuple,
                         block: int = BLOCK) -> torch.Tensor:
    """Inverse of `quantize_blockwise`: code[q] * absmax of its block, reshaped to `shape` (fp32)."""
    return nf4.dequantize_blockwise(q, absmax, code, block).view(shape)


class Adam8bit(torch.optim.Optimizer):
    """AdamW whose m and v live in 8 bits (block-wise dynamic quantisation) between steps.

    State per parameter with >= `min_8bit_size` elements: `m_q`, `v_q` (uint8, one byte per element),
    `m_absmax`, `v_absmax` (fp32, one per block), `step`. Smaller parameters: fp32 `m`, `v`, `step`."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, *, block: int = BLOCK,
                 min_8bit_size: int = MIN_8BIT_SIZE, dynamic: bool = True) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if block < 1 or min_8bit_size < 0:
            raise ValueError(f"need block >= 1 and min_8bit_size >= 0, got {block} and {min_8bit_size}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.block, self.min_8bit_size = block, min_8bit_size
        # code tables: signed for m, unsigned for v >= 0 (the linear grid only to show why it is worse)
        self.code_m = dynamic_map(signed=True) if dynamic else linear_map(signed=True)
        self.code_v = dynamic_map(signed=False) if dynamic else linear_map(signed=False)

    def _init_state(self, p: torch.Tensor) -> dict:
        state = self.state[p]
        state["step"] = 0
        if p.numel() >= self.min_8bit_size:
            zero = torch.zeros_like(p, dtype=torch.float32)
            state["m_q"], state["m_absmax"] = quantize_blockwise(zero, self.code_m, self.block)
            state["v_q"], state["v_absmax"] = quantize_blockwise(zero, self.code_v, self.block)
        else:
            state["m"] = torch.zeros_like(p, dtype=torch.float32)
            state["v"] = torch.zeros_like(p, dtype=torch.float32)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's loader casts every state tensor to its parameter's dtype (uint8 codes would become floats,
        absmax would lose bits with bf16 weights): put the saved tensors back as they were."""
        super().load_state_dict(state_dict)
        params = [p for group in self.param_groups for p in group["params"]]  # the saved state's numbering
        for i, saved in state_dict["state"].items():
            for key, value in saved.items():
                if isinstance(value, torch.Tensor):
                    self.state[params[i]][key] = value.to(params[i].device, copy=True)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Adam8bit does not support sparse gradients; use torch.optim.SparseAdam")
                state = self.state[p] if self.state[p] else self._init_state(p)
                eight = "m_q" in state
                g = p.grad.float()
                # 1. dequantise the moments to fp32 (shape of p)
                if eight:
                    m = dequantize_blockwise(state["m_q"], state["m_absmax"], self.code_m, p.shape, self.block)
                    v = dequantize_blockwise(state["v_q"], state["v_absmax"], self.code_v, p.shape, self.block)
                else:
                    m, v = state["m"], state["v"]
                # 2. the AdamW step in fp32, in torch.optim.AdamW's order of operations
                state["step"] += 1
                t = state["step"]
                p.mul_(1 - lr * wd)  # decoupled weight decay (Loshchilov & Hutter 2019)
                m.lerp_(g, 1 - beta1)  # m = beta1 m + (1 - beta1) g
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # v = beta2 v + (1 - beta2) g^2
                denom = (v.sqrt() / (1 - beta2**t) ** 0.5).add_(eps)
                p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))
                # 3. store the new moments back in 8 bits
                if eight:
                    state["m_q"], state["m_absmax"] = quantize_blockwise(m, self.code_m, self.block)
                    state["v_q"], state["v_absmax"] = quantize_blockwise(v, self.code_v, self.block)
        return loss


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held by the optimizer's per-parameter state tensors (code tables and step counters excluded)."""
    return sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
               if isinstance(v, torch.Tensor) and v.dim() > 0)


def expected_state_bytes(numel: int, block: int = BLOCK, bits8: bool = True) -> int:
    """The formula: 8-bit: 2 * numel + 2 * 4 * ceil(numel / block); fp32 Adam: 8 * numel."""
    return 2 * numel + 8 * -(-numel // block) if bits8 else 8 * numel
