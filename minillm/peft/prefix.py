"""Prefix tuning and P-tuning v2: P trainable keys and values in every attention layer of a frozen GPT.

Implements:
- prefix tuning (Li & Liang 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation",
  arXiv:2101.00190, sec. 4.2, eq. 4-5): every layer's attention also sees P extra key/value pairs that no input
  token produced; they are trained, the model is not. Training the prefix directly was unstable in the paper, so
  it is reparameterised, P_theta = MLP(P'_theta) (sec. 4.3): here `projection=True`, an embedding (P, w) then
  Linear(w, h), tanh, Linear(h, L 2 w), w = n_kv_head * head_dim the width of one layer's keys (peft's
  `prefix_projection`, same layout). After training only the MLP's outputs are kept;
- P-tuning v2 (Liu et al. 2022, "P-Tuning v2: Prompt Tuning Can Be Comparable to Fine-tuning Universally Across
  Scales and Tasks", arXiv:2110.07602, sec. 3.2, "deep prompt tuning"): the same per-layer prefixes trained
  directly, without the reparameterisation (`projection=False`);
- `PrefixModel`: forward(idx, targets) -> (logits (B, T, V), loss). Without touching GPT: the prefixes fill
  one `minillm.attention.KVCache(max_len=None)` per layer (it concatenates, so gradients reach them) and the GPT
  runs as if it continued P cached tokens: real tokens at positions P .. P + T - 1, every query sees the P
  prefix keys and the causal real keys, and the prefix keys are not rotated by RoPE. This is what HF
  transformers does with peft's past_key_values. A `mask` over the real keys is extended with the P prefix
  columns (True); packed batches (`positions=`) are refused: a restarting position under a shared, unrotated
  prefix is not the example alone, so pack with `padding` instead;
- `apply_mam`: He et al. 2022's MAM adapter (arXiv:2110.04366, sec. 4.6): prefix tuning on attention (l = 30) plus a
  scaled parallel adapter on the FFN (`minillm.peft.adapters`) with bottleneck d_model // 2 by default, their
  r / d = 512 / 1024, so the FFN holds most of the kept parameters;
- `prefix_state_dict` / `load_prefix_state_dict`, `prefix_param_count(cfg, model)`: P L 2 w directly;
  P w + (w h + h) + (h L 2 w + L 2 w) reparameterised.

Init: N(0, 1) for the embedding (nn.Embedding's default, as peft), or, without the projection, Li & Liang's
init from real words' activations (their sec. 7.4, "Initialization"): `init_ids` sets the prefix to the keys and
values the frozen model computes for those tokens, so at the start the model reads the prefix as if those tokens
had come first (exactly: the cached keys are already rotated; the test suite checks this equality).

Leaves out: several prefixes (multi-task), encoder-decoder models and the cross-attention prefixes of the paper's
BART experiments.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from minillm.attention import KVCache
from minillm.model import GPTConfig
from minillm.peft.adapters import AdapterConfig, apply_adapters
from minillm.peft.lora import copy_matching_


@dataclass
class PrefixTuningConfig:
    n_virtual: int = 20  # P, prefix length (keys and values per layer)
    projection: bool = True  # True: prefix tuning's MLP reparameterisation; False: P-tuning v2 (deep prompts)
    encoder_hidden: int = 0  # h of the MLP; 0 = the key width w = n_kv_head * head_dim
    init_ids: tuple[int, ...] | None = None  # projection=False: start from the model's k, v of these P tokens
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.n_virtual, int) or isinstance(self.n_virtual, bool) or self.n_virtual < 1:
            raise ValueError(f"n_virtual must be a positive int (the prefix length), got {self.n_virtual!r}")
        if not isinstance(self.encoder_hidden, int) or self.encoder_hidden < 0:
            raise ValueError(f"encoder_hidden must be an int >= 0 (0 = key width), got {self.encoder_hidden!r}")
        if self.encoder_hidden and not self.projection:
            raise ValueError("encoder_hidden sizes the reparameterisation MLP: set projection=True or drop it")
        if self.init_ids is not None:
            self.init_ids = tuple(int(i) for i in self.init_ids)
            if self.projection or len(self.init_ids) != self.n_virtual:
                raise ValueError(f"init_ids needs projection=False and exactly n_virtual={self.n_virtual} token ids, "
                                 f"got projection={self.projection} and {len(self.init_ids)} ids")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PrefixEncoder(nn.Module):
    """forward() -> (P, L * 2 * w): per virtual token, layer 0's key (w), layer 0's value, layer 1's key, ...;
    w = H_kv * hd, each head's hd entries contiguous (peft's layout of past_key_values)."""

    def __init__(self, P: int, n_layer: int, width: int, projection: bool, hidden: int = 0,
                 device: torch.device | None = None, dtype: torch.dtype | None = None, seed: int = 0):
        super().__init__()
        out = n_layer * 2 * width
        g = torch.Generator().manual_seed(seed)
        kw = {"device": device, "dtype": dtype}
        self.embedding = nn.Parameter(torch.randn(P, width if projection else out, generator=g).to(**kw))
        self.mlp = nn.Sequential(nn.Linear(width, hidden or width, **kw), nn.Tanh(),
                                 nn.Linear(hidden or width, out, **kw)) if projection else None

    def forward(self) -> torch.Tensor:
        return self.embedding if self.mlp is None else self.mlp(self.embedding)


class PrefixModel(nn.Module):
    """A frozen GPT whose attention layers see P trained keys and values first."""

    def __init__(self, model: nn.Module, encoder: PrefixEncoder, n_virtual: int, config: PrefixTuningConfig):
        super().__init__()
        self.model, self.prefix_encoder, self.n_virtual, self.config = model, encoder, n_virtual, config

    @property
    def cfg(self) -> GPTConfig:
        """The GPT's config with block_size less the P positions the prefix takes (for `generate`)."""
        return replace(self.model.cfg, block_size=self.model.cfg.block_size - self.n_virtual)

    def prefix_kv(self, batch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (k, v), each (B, H_kv, P, hd), expanded (not copied) over the batch."""
        c = self.model.cfg
        flat = self.prefix_encoder()  # (P, L * 2 * w)
        kv = flat.view(self.n_virtual, c.n_layer, 2, c.n_kv_head, c.head_dim)  # (P, L, k|v, H_kv, hd)
        kv = kv.permute(1, 2, 3, 0, 4)  # (L, 2, H_kv, P, hd)
        return [(kv[i, 0].expand(batch, -1, -1, -1), kv[i, 1].expand(batch, -1, -1, -1)) for i in range(c.n_layer)]

    def _fill(self, caches: list[KVCache], batch: int, like: torch.Tensor) -> None:
        for cache, (k, v) in zip(caches, self.prefix_kv(batch), strict=True):
            cache.update(k.to(like.dtype), v.to(like.dtype))

    def make_kv_caches(self, max_len: int | None = None) -> list[KVCache]:
        """The GPT's caches with P more slots; the first forward on them writes the prefix in first."""
        return self.model.make_kv_caches((max_len or self.cfg.block_size) + self.n_virtual)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, kv_caches: list | None = None,
                mask: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                start_pos: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T = idx.shape
        P = self.n_virtual
        if positions is not None:
            raise ValueError("prefix tuning does not support positions= (packed batches): the prefix keys are not "
                             "rotated, so a restarting position is not the example alone; use padded batches "
                             "(e.g. minillm.sft.SFTData(..., packing=False))")
        if start_pos is not None:
            raise ValueError("start_pos is not supported with a prefix (the real tokens start at P); leave it out")
        if kv_caches is None:
            kv_caches = [KVCache(None) for _ in self.model.layers]  # concatenating caches: gradients flow
        if len(kv_caches[0]) == 0:
            self._fill(kv_caches, B, self.model.lm_head.weight)
            if mask is not None:
                if mask.dtype != torch.bool:
                    raise ValueError("prefix tuning extends boolean masks only (True = may attend)")
                m = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape)) if mask.dim() < 4 else mask
                m = m.expand(*m.shape[:2], T, m.shape[-1])
                mask = torch.cat([torch.ones(*m.shape[:3], P, dtype=torch.bool, device=m.device), m], dim=-1)
        elif mask is not None:
            raise ValueError("mask= applies to the first (prefill) call only, not to cached decoding")
        return self.model(idx, targets, kv_caches=kv_caches, mask=mask)


@torch.no_grad()
def prefix_from_tokens(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """(P,) token ids -> (P, L * 2 * w): the keys and values a GPT computes for them, in PrefixEncoder's layout."""
    caches = [KVCache(None) for _ in model.layers]
    was_training = model.training
    model.eval()  # no dropout in the activations we copy
    model(ids.reshape(1, -1), kv_caches=caches)  # each cache: k, v (1, H_kv, P, hd), keys already rotated
    model.train(was_training)
    kv = torch.stack([torch.stack([c.k[0], c.v[0]]) for c in caches])  # (L, 2, H_kv, P, hd)
    return kv.permute(3, 0, 1, 2, 4).reshape(ids.numel(), -1)


def apply_prefix_tuning(model: nn.Module, cfg: PrefixTuningConfig) -> PrefixModel:
    """Freeze a GPT and return it wrapped with per-layer trainable prefixes (prefix tuning with
    cfg.projection=True, P-tuning v2 with False). The GPT itself is not modified beyond requires_grad."""
    if isinstance(model, PrefixModel):
        raise ValueError("the model already has a prefix: apply prefix tuning once per model")
    if not hasattr(model, "make_kv_caches") or not hasattr(model, "cfg"):
        raise TypeError(f"expected a minillm GPT (with make_kv_caches), got {type(model).__name__}")
    c = model.cfg
    if c.pos == "learned" and cfg.n_virtual >= c.block_size:
        raise ValueError(f"n_virtual={cfg.n_virtual} leaves no room in block_size={c.block_size}")
    for p in model.parameters():
        p.requires_grad_(False)
    w = next(model.parameters())
    enc = PrefixEncoder(cfg.n_virtual, c.n_layer, c.n_kv_head * c.head_dim, cfg.projection, cfg.encoder_hidden,
                        device=w.device, dtype=w.dtype, seed=cfg.seed)
    if cfg.init_ids is not None:
        bad = [i for i in cfg.init_ids if not 0 <= i < c.vocab_size]
        if bad:
            raise ValueError(f"init_ids contains {bad[0]}, outside the vocabulary 0 .. {c.vocab_size - 1}")
        with torch.no_grad():
            enc.embedding.copy_(prefix_from_tokens(model, torch.tensor(cfg.init_ids, device=w.device)))
    return PrefixModel(model, enc, cfg.n_virtual, cfg)


def apply_mam(model: nn.Module, prefix: PrefixTuningConfig | None = None,
              adapter: AdapterConfig | None = None) -> PrefixModel:
    """He et al.'s MAM adapter: prefix tuning (default P = 30, as their sec. 4.6 uses l = 30) and a parallel adapter
    on the FFN with s = 4. The default bottleneck is d_model // 2, their ratio (r = 512 at d = 1024), so that, as in
    their design, most of the kept parameters sit in the FFN adapters (base model: 4 x 37,152 = 148,608 against a
    kept prefix of 30 x 4 x 2 x 192 = 46,080; the prefix's MLP trains more, but is dropped after training)."""
    wrapped = apply_prefix_tuning(model, prefix or PrefixTuningConfig(n_virtual=30))  # checks it is a GPT
    adapter = adapter or AdapterConfig(kind="parallel", where=("mlp",), scaling=4.0,
                                       bottleneck=max(1, wrapped.model.cfg.d_model // 2))
    apply_adapters(wrapped.model, adapter)  # freezes the GPT again; the prefix lives outside it, so stays trainable
    return wrapped


def prefix_state_dict(model: PrefixModel) -> dict[str, torch.Tensor]:
    """The prefix encoder's tensors only."""
    if not isinstance(model, PrefixModel):
        raise TypeError(f"expected the PrefixModel of apply_prefix_tuning, got {type(model).__name__}")
    return {k: v.detach() for k, v in model.prefix_encoder.state_dict().items()}


def load_prefix_state_dict(model: PrefixModel, state: dict[str, torch.Tensor]) -> None:
    """Copy tensors from `prefix_state_dict` into a model built with the same config."""
    copy_matching_(prefix_state_dict(model), state, "the prefix does not fit this model",
                   "build it with the config it was trained with (same n_virtual, projection and encoder_hidden)")


def prefix_param_count(cfg: PrefixTuningConfig, model: nn.Module | GPTConfig | str) -> int:
    """Trainable parameters: P L 2 w (P-tuning v2), or P w + (w h + h) + (h L 2 w + L 2 w) (prefix tuning)."""
    c = model.cfg if isinstance(model, nn.Module) else GPTConfig.preset(model) if isinstance(model, str) else model
    if isinstance(model, PrefixModel):
        c = model.model.cfg
    w = c.n_kv_head * c.head_dim
    out = c.n_layer * 2 * w
    if not cfg.projection:
        return cfg.n_virtual * out
    h = cfg.encoder_hidden or w
    return cfg.n_virtual * w + (w * h + h) + (h * out + out)
