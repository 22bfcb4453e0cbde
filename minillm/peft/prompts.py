"""Soft prompts: P trainable "virtual tokens" prepended to every input of a frozen GPT.

Implements:
- prompt tuning (Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning",
  arXiv:2104.08691, sec. 2): the virtual tokens' embeddings P (n_virtual, d) are the only parameters; the input
  becomes [P; E x] (their sec. 2.1, the prompt matrix before the embedded input). Init "vocab" copies the embeddings of
  random (or given) vocabulary tokens, their sec. 3.2 "sampled vocab" / class-label init (peft's TEXT init is
  the given-ids case). Lester et al. sample from the 5,000 most common tokens of T5's vocabulary; here the random
  tokens come from the whole vocabulary (the course's char vocabulary has 2,917 entries and no frequency list;
  pass `init_ids` to restrict the draw); "random" draws N(0, 1) rows (nn.Embedding's default, peft's RANDOM);
- P-tuning v1 (Liu et al. 2021, "GPT Understands, Too", arXiv:2103.10385, sec. 3.2, eq. 2-3): the virtual
  tokens are produced by a prompt encoder over trainable inputs h_i, either an MLP (d -> h -> h -> d with ReLU)
  or a two-layer bidirectional LSTM followed by a ReLU MLP; after training the encoder can be discarded and
  its P (n_virtual, d) outputs kept (`PromptModel.virtual_embeddings`). Only the "prepend" template: the
  paper's prompts may interleave with anchor tokens;
- `PromptModel`: the wrapper both return. Without touching GPT: `model.embed_tokens` becomes a
  `VirtualTokenEmbedding` that looks up ids < V in the original (frozen, still tied to lm_head) weight and maps
  ids V .. V + P - 1 to the virtual rows; forward(idx, targets) prepends those ids (targets -100 there), runs the
  GPT and returns the logits of the real tokens only (B, T, V), so `minillm.train.train` and
  `minillm.generate` work on it. The virtual tokens take positions 0 .. P - 1 and the real ones P .. P + T - 1,
  as peft's `PeftModelForCausalLM` does; packed batches (`positions=` restarting per example and a
  block-diagonal `mask`) are supported: every example sees the virtual tokens as it would alone;
- `prompt_state_dict` / `load_prompt_state_dict` and `prompt_param_count(cfg, d)` (P d; for P-tuning plus the
  encoder's weights).

Prefix tuning and P-tuning v2 (per-layer keys and values instead of input tokens) are `minillm.peft.prefix`.

Leaves out: several prompts (multi-task, peft's task_ids), prompt ensembling, anchors inside the template,
P-tuning's manual template search, encoder-decoder models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from minillm.attention import causal_mask
from minillm.model import GPTConfig
from minillm.peft.lora import copy_matching_

ENCODERS = ("mlp", "lstm")
INITS = ("vocab", "random")


@dataclass
class PromptTuningConfig:
    n_virtual: int = 20  # P, the number of virtual tokens
    init: str = "vocab"  # "vocab": copy embedding rows of init_ids (or random tokens); "random": N(0, 1)
    init_ids: tuple[int, ...] | None = None  # token ids for init="vocab" (repeated to n_virtual), e.g. a task text
    seed: int = 0  # draws the random tokens / rows

    def __post_init__(self):
        if not isinstance(self.n_virtual, int) or isinstance(self.n_virtual, bool) or self.n_virtual < 1:
            raise ValueError(f"n_virtual must be a positive int (the number of virtual tokens), got {self.n_virtual!r}")
        if self.init not in INITS:
            raise ValueError(f"init={self.init!r} is not one of {INITS}")
        if self.init_ids is not None:
            self.init_ids = tuple(int(i) for i in self.init_ids)
            if self.init != "vocab" or not self.init_ids:
                raise ValueError("init_ids needs init='vocab' and at least one token id")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PTuningConfig(PromptTuningConfig):
    encoder: str = "mlp"  # "mlp" | "lstm" (a 2-layer bidirectional LSTM, then an MLP)
    encoder_hidden: int = 0  # h; 0 = d_model
    init: str = "random"  # the encoder's inputs are not embeddings: N(0, 1) by default, as in peft

    def __post_init__(self):
        super().__post_init__()
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder={self.encoder!r} is not one of {ENCODERS}")
        if not isinstance(self.encoder_hidden, int) or self.encoder_hidden < 0:
            raise ValueError(f"encoder_hidden must be an int >= 0 (0 = d_model), got {self.encoder_hidden!r}")


class PromptEmbedding(nn.Module):
    """Prompt tuning's parameters: forward() -> the (P, d) virtual-token embeddings themselves."""

    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.embedding = nn.Parameter(init.clone())  # (P, d)

    def forward(self) -> torch.Tensor:
        return self.embedding


class PromptEncoder(nn.Module):
    """P-tuning v1: forward() -> encoder(h_1 .. h_P), (P, d), from trainable inputs h (P, d)."""

    def __init__(self, init: torch.Tensor, kind: str = "mlp", hidden: int = 0):
        super().__init__()
        P, d = init.shape
        h = hidden or d
        kw = {"device": init.device, "dtype": init.dtype}
        self.kind = kind
        self.embedding = nn.Parameter(init.clone())  # (P, d): the encoder's inputs h_i
        if kind == "mlp":
            self.lstm = None
            self.mlp = nn.Sequential(nn.Linear(d, h, **kw), nn.ReLU(), nn.Linear(h, h, **kw), nn.ReLU(),
                                     nn.Linear(h, d, **kw))
        else:  # the tokens see each other both ways (their eq. 3), then a ReLU MLP back to d
            self.lstm = nn.LSTM(d, h, num_layers=2, bidirectional=True, batch_first=True, **kw)
            self.mlp = nn.Sequential(nn.Linear(2 * h, 2 * h, **kw), nn.ReLU(), nn.Linear(2 * h, d, **kw))

    def forward(self) -> torch.Tensor:
        h = self.embedding
        if self.lstm is not None:
            h = self.lstm(h[None])[0][0]  # (1, P, d) -> (1, P, 2h) -> (P, 2h)
        return self.mlp(h)  # (P, d)


class VirtualTokenEmbedding(nn.Module):
    """The GPT's token embedding plus P virtual rows: ids < V read `weight` (the original, frozen Parameter, still
    the tied lm_head's), ids V .. V + P - 1 read `encoder()`'s rows. Keeps the name `embed_tokens.weight`."""

    def __init__(self, base: nn.Embedding, encoder: nn.Module):
        super().__init__()
        self.weight = base.weight  # the same Parameter: the tied head and the base state dict are unchanged
        self.num_embeddings, self.embedding_dim = base.weight.shape
        self.encoder = encoder

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        V = self.num_embeddings
        virtual = idx >= V  # (B, T)
        x = F.embedding(idx.clamp(max=V - 1), self.weight)  # (B, T, d); virtual positions filled below
        if not virtual.any():
            return x
        rows = self.encoder().to(x.dtype)  # (P, d), computed once per forward
        return torch.where(virtual[..., None], rows[(idx - V).clamp(min=0, max=rows.shape[0] - 1)], x)


def _extend_mask(mask: torch.Tensor, P: int, T: int) -> torch.Tensor:
    """A bool mask broadcastable to (B, H, T, T) over the real tokens -> (B', H', P + T, P + T) with the virtual
    tokens first: they attend causally among themselves, every real token attends to all of them."""
    if mask.dtype != torch.bool:
        raise ValueError("prompt tuning extends boolean masks only (True = may attend); got a float mask")
    m = mask if mask.dim() == 4 else mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))
    m = m.expand(*m.shape[:2], T, T)
    out = torch.zeros(*m.shape[:2], P + T, P + T, dtype=torch.bool, device=m.device)
    out[..., :P, :P] = causal_mask(P, device=m.device)
    out[..., P:, :P] = True
    out[..., P:, P:] = m
    return out


class PromptModel(nn.Module):
    """A frozen GPT with P virtual tokens before every input: forward(idx, targets) -> (logits (B, T, V), loss)."""

    def __init__(self, model: nn.Module, encoder: nn.Module, n_virtual: int, config: Any):
        super().__init__()
        self.model, self.n_virtual, self.config = model, n_virtual, config
        self.model.embed_tokens = VirtualTokenEmbedding(model.embed_tokens, encoder)

    @property
    def prompt_encoder(self) -> nn.Module:
        return self.model.embed_tokens.encoder

    @property
    def cfg(self) -> GPTConfig:
        """The GPT's config with block_size less the P positions the virtual tokens take (for `generate`)."""
        return replace(self.model.cfg, block_size=self.model.cfg.block_size - self.n_virtual)

    def virtual_ids(self, batch: int, device: torch.device) -> torch.Tensor:
        V = self.model.embed_tokens.num_embeddings
        return torch.arange(V, V + self.n_virtual, device=device).expand(batch, self.n_virtual)  # (B, P)

    @torch.no_grad()
    def virtual_embeddings(self) -> torch.Tensor:
        """The (P, d) rows the model reads: all that inference needs (P-tuning's encoder can be dropped)."""
        return self.prompt_encoder().detach().clone()

    def make_kv_caches(self, max_len: int | None = None) -> list:
        """The GPT's caches with P more slots: the first forward on them prefills the virtual tokens too."""
        return self.model.make_kv_caches((max_len or self.cfg.block_size) + self.n_virtual)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, kv_caches: list | None = None,
                mask: torch.Tensor | None = None, positions: torch.Tensor | None = None,
                start_pos: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T = idx.shape
        P = self.n_virtual
        if start_pos is not None:
            raise ValueError("start_pos is not supported with virtual tokens; use kv_caches (from make_kv_caches)")
        if kv_caches is not None and len(kv_caches[0]) > 0:  # decoding: the virtual tokens are in the cache
            if mask is not None or positions is not None:
                raise ValueError("mask= and positions= apply to the first (prefill) call only, not to cached decoding")
            logits, loss = self.model(idx, targets, kv_caches=kv_caches)
            return logits, loss
        full = torch.cat([self.virtual_ids(B, idx.device), idx], dim=1)  # (B, P + T)
        kw: dict[str, Any] = {}
        if positions is not None:  # packed rows: each example restarts at P, after the shared virtual tokens
            positions = torch.as_tensor(positions, device=idx.device)
            virt = torch.arange(P, device=idx.device)
            virt = virt if positions.dim() == 1 else virt.expand(positions.shape[0], P)
            kw["positions"] = torch.cat([virt, positions + P], dim=-1)
        if mask is not None:
            kw["mask"] = _extend_mask(mask, P, T)
        if kv_caches is not None:
            kw["kv_caches"] = kv_caches
        tgt = None if targets is None else torch.cat([targets.new_full((B, P), -100), targets], dim=1)
        logits, loss = self.model(full, tgt, **kw)
        return logits[:, P:], loss  # the real tokens' logits, (B, T, V)


# ---------------------------------------------------------------------------------------------- building


def _init_rows(cfg: PromptTuningConfig, weight: torch.Tensor) -> torch.Tensor:
    """(P, d) starting rows: copies of vocabulary embeddings, or N(0, 1)."""
    V, d = weight.shape
    g = torch.Generator().manual_seed(cfg.seed)
    if cfg.init == "random":
        return torch.randn(cfg.n_virtual, d, generator=g).to(weight)
    if cfg.init_ids is not None:
        bad = [i for i in cfg.init_ids if not 0 <= i < V]
        if bad:
            raise ValueError(f"init_ids contains {bad[0]}, outside the vocabulary 0 .. {V - 1}")
        ids = torch.tensor(cfg.init_ids)
        ids = ids.repeat(-(-cfg.n_virtual // len(ids)))[:cfg.n_virtual]  # repeat the text to fill P rows
    else:
        ids = torch.randint(V, (cfg.n_virtual,), generator=g)
    return weight.detach()[ids.to(weight.device)].clone()


def _wrap(model: nn.Module, encoder_fn: Callable[[torch.Tensor], nn.Module], cfg: PromptTuningConfig) -> PromptModel:
    if isinstance(model, PromptModel) or isinstance(getattr(model, "embed_tokens", None), VirtualTokenEmbedding):
        raise ValueError("the model already has virtual tokens: apply prompt tuning / P-tuning once per model")
    emb = getattr(model, "embed_tokens", None)
    if not isinstance(emb, nn.Embedding) or not hasattr(model, "cfg"):
        raise TypeError(f"expected a minillm GPT (with .embed_tokens, an nn.Embedding), got {type(model).__name__}")
    if model.cfg.pos == "learned" and cfg.n_virtual >= model.cfg.block_size:
        raise ValueError(f"n_virtual={cfg.n_virtual} leaves no room in block_size={model.cfg.block_size}")
    for p in model.parameters():
        p.requires_grad_(False)
    return PromptModel(model, encoder_fn(_init_rows(cfg, emb.weight)), cfg.n_virtual, cfg)


def apply_prompt_tuning(model: nn.Module, cfg: PromptTuningConfig) -> PromptModel:
    """Freeze a GPT and return it wrapped with cfg.n_virtual trainable virtual tokens (the GPT is changed in place:
    its embed_tokens becomes a VirtualTokenEmbedding, with the same weight)."""
    return _wrap(model, PromptEmbedding, cfg)


def apply_p_tuning(model: nn.Module, cfg: PTuningConfig) -> PromptModel:
    """Like `apply_prompt_tuning`, the virtual tokens coming out of a trainable MLP / LSTM prompt encoder."""
    if not isinstance(cfg, PTuningConfig):
        raise TypeError(f"apply_p_tuning takes a PTuningConfig, got {type(cfg).__name__}")
    return _wrap(model, lambda rows: PromptEncoder(rows, cfg.encoder, cfg.encoder_hidden), cfg)


def prompt_state_dict(model: PromptModel) -> dict[str, torch.Tensor]:
    """The trainable tensors only (the encoder's), keyed by their names in the encoder."""
    if not isinstance(model, PromptModel):
        raise TypeError(f"expected the PromptModel of apply_prompt_tuning / apply_p_tuning, got {type(model).__name__}")
    return {k: v.detach() for k, v in model.prompt_encoder.state_dict().items()}


def load_prompt_state_dict(model: PromptModel, state: dict[str, torch.Tensor]) -> None:
    """Copy tensors from `prompt_state_dict` into a model built with the same config."""
    copy_matching_(prompt_state_dict(model), state, "the prompt does not fit this model",
                   "build it with the config it was trained with (same n_virtual, encoder and encoder_hidden)")


def prompt_param_count(cfg: PromptTuningConfig, d_model: int) -> int:
    """Trainable parameters: P d for prompt tuning; P-tuning adds its encoder (MLP: d h + h + h h + h + h d + d;
    LSTM: 2 directions x [4h (d + h) + 8h + 4h (2h + h) + 8h], then 2h 2h + 2h + 2h d + d)."""
    P, d = cfg.n_virtual, d_model
    n = P * d
    if not isinstance(cfg, PTuningConfig):
        return n
    h = cfg.encoder_hidden or d
    if cfg.encoder == "mlp":
        return n + (d * h + h) + (h * h + h) + (h * d + d)
    lstm = 2 * ((4 * h * (d + h) + 8 * h) + (4 * h * (2 * h + h) + 8 * h))  # two layers, each gate 4h, two biases
    return n + lstm + (2 * h * 2 * h + 2 * h) + (2 * h * d + d)


# prefix tuning / P-tuning v2 live in their own module; importable from here too (one place for "prompt methods")
from minillm.peft.prefix import (  # noqa: E402
    PrefixEncoder,
    PrefixModel,
    PrefixTuningConfig,
    apply_mam,
    apply_prefix_tuning,
    load_prefix_state_dict,
    prefix_from_tokens,
    prefix_param_count,
    prefix_state_dict,
)

__all__ = [
    "PTuningConfig", "PrefixEncoder", "PrefixModel", "PrefixTuningConfig", "PromptEmbedding", "PromptEncoder",
    "PromptModel", "PromptTuningConfig", "VirtualTokenEmbedding", "apply_mam", "apply_p_tuning",
    "apply_prefix_tuning", "apply_prompt_tuning", "load_prefix_state_dict", "load_prompt_state_dict",
    "prefix_from_tokens", "prefix_param_count", "prefix_state_dict", "prompt_param_count", "prompt_state_dict",
]
