"""ToyLM: the smallest causal transformer, for the experiments of chapters 2-4.

Chapters 2-4 each change one part of a transformer (how positions enter, which norm and where, which
FFN) and ask what that does to training. They need a model in which exactly that part is swappable and
everything else is plain and fixed; this module is that model and a 30-line training loop. Chapter 6's
`GPT` is the real model (fused attention, KV cache, presets, weight loading); ToyLM stays small on purpose.

Pluggable parts (all chosen by `ToyConfig`):
- position: any object with the three hooks of `PositionScheme` (added to the embeddings, rotating q and k,
  or biasing the attention scores), see `minillm.positional`; default `NoPosition`.
- norm: a factory `dim -> nn.Module` (`nn.LayerNorm` by default, `minillm.norms.RMSNorm`, ...).
- norm placement: "pre" (x + f(norm(x))) or "post" (norm(alpha * x + f(x))); `alpha` is DeepNorm's residual
  scale (1.0 = plain Post-LN).
- ffn: a factory `dim -> nn.Module` (a 4x GeLU MLP by default, `minillm.ffn` has the others).

Attention is written out (softmax(q k^T / sqrt(d) + bias) v with a causal mask) so that every position
scheme can reach inside it. Leaves out: dropout, KV cache, weight tying, fused/flash kernels (chapter 5).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from minillm.data import CharTokenizer, TokenData
from minillm.train import lr_at  # warm-up + cosine to 10%, shared with the real training loop


class PositionScheme:
    """How positions enter the model. Subclasses override one or more hooks; the defaults do nothing."""

    def setup(self, cfg: ToyConfig) -> nn.Module | None:
        """Called once by the model; return a module holding learned parameters (or None)."""
        return None

    def embed(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x: (B, T, d) token embeddings, pos: (T,) positions -> (B, T, d)."""
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q, k: (B, H, T, hd) -> rotated q, k (RoPE)."""
        return q, k

    def bias(self, n_head: int, t: int, device: torch.device) -> torch.Tensor | None:
        """Additive attention bias (H, T, T) for a causal sequence of length t, or None."""
        return None


class NoPosition(PositionScheme):
    """No position information at all (a causal model still infers some from the mask)."""


def gelu_mlp(dim: int) -> nn.Module:
    """The GPT-2 FFN: Linear(d, 4d) -> GeLU -> Linear(4d, d)."""
    return nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))


@dataclass
class ToyConfig:
    vocab_size: int = 128
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 64
    max_len: int = 64  # longest context the model is trained on (learned positions have this many rows)
    position: PositionScheme = field(default_factory=NoPosition)
    norm: Callable[[int], nn.Module] = nn.LayerNorm
    norm_position: str = "pre"  # "pre" | "post"
    alpha: float = 1.0  # residual scale of post-norm blocks (DeepNorm sets (2N)^(1/4))
    ffn: Callable[[int], nn.Module] = gelu_mlp

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_head={self.n_head}")
        if self.norm_position not in ("pre", "post"):
            raise ValueError(f"norm_position must be 'pre' or 'post', got {self.norm_position!r}")
        if min(self.vocab_size, self.n_layer, self.max_len) < 1:
            raise ValueError("vocab_size, n_layer and max_len must be positive")


class Attention(nn.Module):
    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.n_head, self.position = cfg.n_head, cfg.position
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.k = nn.Linear(cfg.d_model, cfg.d_model)
        self.v = nn.Linear(cfg.d_model, cfg.d_model)
        self.o = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        hd = d // self.n_head
        # (B, T, d) -> (B, H, T, hd)
        q, k, v = (proj(x).view(B, T, self.n_head, hd).transpose(1, 2) for proj in (self.q, self.k, self.v))
        q, k = self.position.rotate(q, k, pos)
        att = q @ k.transpose(-2, -1) / math.sqrt(hd)  # (B, H, T, T)
        bias = self.position.bias(self.n_head, T, x.device)
        if bias is not None:
            att = att + bias
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        return self.o((att @ v).transpose(1, 2).reshape(B, T, d))


class Block(nn.Module):
    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.pre, self.alpha = cfg.norm_position == "pre", cfg.alpha
        self.norm1, self.attn = cfg.norm(cfg.d_model), Attention(cfg)
        self.norm2, self.ffn = cfg.norm(cfg.d_model), cfg.ffn(cfg.d_model)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if self.pre:  # Pre-LN: the residual stream is never normalised
            x = x + self.attn(self.norm1(x), pos)
            return x + self.ffn(self.norm2(x))
        # Post-LN (and DeepNorm when alpha > 1): normalise after adding the (scaled) residual
        x = self.norm1(self.alpha * x + self.attn(x, pos))
        return self.norm2(self.alpha * x + self.ffn(x))


class ToyLM(nn.Module):
    """Token embedding -> n_layer blocks -> (final norm for pre-LN) -> logits over the vocabulary."""

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_params = cfg.position.setup(cfg)  # registered so learned positions train and move devices
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_f = cfg.norm(cfg.d_model) if cfg.norm_position == "pre" else nn.Identity()
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx: (B, T) token ids -> logits (B, T, V), and the mean cross-entropy if targets are given."""
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = self.cfg.position.embed(self.tok(idx), pos)  # (B, T, d)
        for block in self.blocks:
            x = block(x, pos)
        logits = self.head(self.norm_f(x))
        if targets is None:
            return logits
        return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())


# ---------------------------------------------------------------------------------------------- data, training


class CharData(TokenData):
    """A character-level `minillm.data.TokenData`: one id per distinct character of `text`, a train/val split
    by position and random (B, T) windows with `batch(split, B, T, generator)`."""

    def __init__(self, text: str, val_fraction: float = 0.1):
        if not text or not 0 < val_fraction < 1:
            raise ValueError("need a non-empty text and 0 < val_fraction < 1")
        super().__init__(text, CharTokenizer.from_text(text), val_fraction)

    def encode(self, s: str) -> list[int]:
        return self.tokenizer.encode(s)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)


def train_toy(
    model: ToyLM,
    data: CharData,
    steps: int,
    batch_size: int = 16,
    seq_len: int = 64,
    lr: float = 3e-3,
    warmup: int = 0,
    clip: float | None = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> list[float]:
    """Train with AdamW; return the training loss of every step (nan/inf losses are kept, not hidden)."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses: list[float] = []
    steps_iter: Iterator[int] = range(steps)
    if progress:
        from tqdm.auto import tqdm

        steps_iter = tqdm(steps_iter, desc="train", leave=False)
    model.train()
    for step in steps_iter:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, lr, warmup, steps)
        x, y = data.batch("train", batch_size, seq_len, gen)
        _, loss = model(x.to(device), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def eval_loss(model: ToyLM, data: CharData, seq_len: int, batches: int = 8, batch_size: int = 16, seed: int = 1):
    """Mean validation cross-entropy on `batches` random windows of length `seq_len`."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    total = 0.0
    for _ in range(batches):
        x, y = data.batch("val", batch_size, seq_len, gen)
        total += model(x.to(device), y.to(device))[1].item()
    model.train()
    return total / batches
