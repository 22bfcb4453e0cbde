"""Bottleneck adapters: small trainable MLPs inserted into each block of a frozen GPT, by module replacement.

Implements:
- `Bottleneck(d, m)`: z -> up(act(down(z))), d -> m -> d, with `up` initialised at zero so the adapted model
  starts as the base model exactly;
- the serial adapter of Houlsby et al. 2019 ("Parameter-Efficient Transfer Learning for NLP", arXiv:1902.00751,
  sec. 2.1 and Fig. 2): after a sub-layer f, before the residual add, y = f(x) + up(act(down(f(x)))) (the
  adapter has its own skip connection). In a GPT block the sub-layer outputs are `self_attn.o_proj`'s and
  `mlp.down`'s, so those two linears are wrapped (`SerialAdapter`);
- the parallel adapter of He et al. 2022 ("Towards a Unified View of Parameter-Efficient Transfer Learning",
  arXiv:2110.04366, sec. 3 and eq. 9-10, "Parallel Adapter"): the adapter reads the sub-layer's input and its
  scaled output is added to the sub-layer's, y = f(x) + s * up(act(down(x))); the `self_attn` and / or `mlp`
  modules are wrapped (`ParallelAdapter`), so in a Pre-LN block x is the normalised hidden state that f reads.
  He et al.'s best "MAM adapter" is a parallel adapter on the FFN with s = 4 and a wide bottleneck (r = 512 at
  d = 1024) plus a small prefix (l = 30) on attention (`minillm.peft.prefix.apply_mam`);
- `AdapterConfig` + `apply_adapters(model, cfg)`: freeze every parameter, then wrap the chosen sub-layers of the
  chosen layers, in place (a GPT keeps its class, forward and weight names; the new tensors sit under
  `...adapter.down` / `...adapter.up`). `layers=` skips the lower layers, AdapterDrop's saving at inference
  (Rücklé et al. 2021, "AdapterDrop: On the Efficiency of Adapters in Transformers", arXiv:2010.11918, sec. 3);
- `adapter_state_dict` / `load_adapter_state_dict`, and `adapter_param_count(cfg, model)`: the trainable
  parameters by formula, (2 d m + m + d) per adapter (down and up with their biases).

Init. Houlsby et al. draw both projections from a near-zero normal ("near-identity initialisation"); here `down`
is drawn like an nn.Linear (U(+-1/sqrt(d))) and `up` is zero, so the start is the identity exactly and, as with
LoRA's B = 0, the first step moves `up` only.

Leaves out: training the LayerNorms with the adapters (Houlsby et al. do), AdapterFusion's attention over several
task adapters (Pfeiffer et al. 2021, arXiv:2005.00247) and AdapterDrop's random dropping during training (both in
the chapter's notebook as figures and answer cards), Compacter / LoRA-style factorised adapters, several
adapters per model and switching between them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from minillm.ffn import ACTIVATIONS, get_activation
from minillm.model import GPTConfig
from minillm.peft.lora import copy_matching_

KINDS = ("houlsby", "parallel")
WHERE = ("attn", "mlp")
DEFAULT_WHERE = {"houlsby": ("attn", "mlp"), "parallel": ("mlp",)}


@dataclass
class AdapterConfig:
    kind: str = "houlsby"  # "houlsby" (serial, after the sub-layer) | "parallel" (beside it, He et al.)
    bottleneck: int = 16  # m: the adapter's hidden width (d -> m -> d)
    scaling: float = 1.0  # s, multiplies the adapter's output (He et al. use 4 for the FFN's parallel adapter)
    activation: str = "relu"  # a name of minillm.ffn.ACTIVATIONS
    where: tuple[str, ...] | None = None  # sub-layers: "attn", "mlp"; None = houlsby both, parallel ("mlp",)
    layers: tuple[int, ...] | None = None  # layer indices that get adapters; None = all (AdapterDrop: skip some)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not one of {KINDS}")
        if not isinstance(self.bottleneck, int) or isinstance(self.bottleneck, bool) or self.bottleneck < 1:
            raise ValueError(f"bottleneck must be a positive int (the adapter's hidden width), got {self.bottleneck!r}")
        if not self.scaling > 0:
            raise ValueError(f"scaling must be > 0, got {self.scaling!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r} is not one of {sorted(ACTIVATIONS)}")
        if isinstance(self.where, str):  # "mlp" means ("mlp",)
            self.where = (self.where,)
        self.where = tuple(DEFAULT_WHERE[self.kind] if self.where is None else self.where)
        if not self.where or any(w not in WHERE for w in self.where) or len(set(self.where)) != len(self.where):
            raise ValueError(f"where must name distinct sub-layers among {WHERE}, got {self.where!r}")
        if self.layers is not None:
            self.layers = tuple(self.layers)
            if not self.layers or any(not isinstance(i, int) or i < 0 for i in self.layers):
                raise ValueError(f"layers must be non-negative layer indices (or None for all), got {self.layers!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Bottleneck(nn.Module):
    """z (..., d) -> s * up(act(down(z))) (..., d); down: d -> m, up: m -> d, both with biases; up starts at 0."""

    def __init__(self, d: int, m: int, activation: str = "relu", scaling: float = 1.0,
                 device: torch.device | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.down = nn.Linear(d, m, device=device, dtype=dtype)  # drawn like any Linear: U(+-1/sqrt(d))
        self.up = nn.Linear(m, d, device=device, dtype=dtype)
        self.act = get_activation(activation)
        self.scaling = scaling
        nn.init.zeros_(self.up.weight)  # the adapter adds exactly 0 at the start
        nn.init.zeros_(self.up.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.scaling * self.up(self.act(self.down(z)))


def _like(module: nn.Module) -> dict[str, Any]:
    p = next(iter(module.parameters()))
    return {"device": p.device, "dtype": p.dtype}


class SerialAdapter(nn.Module):
    """Houlsby: y = f(x); y + adapter(y). Wraps a sub-layer's last linear (`o_proj`, `mlp.down`)."""

    def __init__(self, base: nn.Module, adapter: Bottleneck):
        super().__init__()
        self.base_layer, self.adapter = base, adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)  # (..., d): the sub-layer's output, before the block's residual add
        return y + self.adapter(y)


class ParallelAdapter(nn.Module):
    """He et al.: f(x) + adapter(x). Wraps a whole sub-layer (`self_attn` or `mlp`); keyword arguments (rotate,
    mask, kv_cache, ...) go to the sub-layer only."""

    def __init__(self, base: nn.Module, adapter: Bottleneck):
        super().__init__()
        self.base_layer, self.adapter = base, adapter

    def forward(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.base_layer(x, **kwargs) + self.adapter(x)


def _targets(cfg: AdapterConfig, n_layer: int) -> list[tuple[int, str]]:
    layers = range(n_layer) if cfg.layers is None else cfg.layers
    bad = [i for i in layers if i >= n_layer]
    if bad:
        raise ValueError(f"layers={cfg.layers} names layer {bad[0]} but the model has {n_layer} (0 .. {n_layer - 1})")
    # the module each (layer, sub-layer) wraps: serial after the last linear, parallel around the sub-layer
    attr = {("houlsby", "attn"): "self_attn.o_proj", ("houlsby", "mlp"): "mlp.down",
            ("parallel", "attn"): "self_attn", ("parallel", "mlp"): "mlp"}
    return [(i, attr[cfg.kind, w]) for i in sorted(set(layers)) for w in cfg.where]


def adapter_modules(model: nn.Module) -> dict[str, SerialAdapter | ParallelAdapter]:
    """Qualified name -> wrapper, for every adapter in `model`."""
    return {n: m for n, m in model.named_modules() if isinstance(m, SerialAdapter | ParallelAdapter)}


def apply_adapters(model: nn.Module, cfg: AdapterConfig) -> nn.Module:
    """Freeze every parameter of a GPT and insert bottleneck adapters, in place; returns the model.

    The adapters live on the model's device and in its dtype; the model's forward is unchanged (and equal to
    the base model's until the adapters train)."""
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not hasattr(model, "cfg"):
        raise TypeError(f"apply_adapters expects a minillm GPT (blocks in .layers), got {type(model).__name__}; "
                        "for a prompt / prefix wrapper pass its .model")
    if adapter_modules(model):
        raise ValueError("the model already has adapters: apply_adapters once per model")
    targets = _targets(cfg, len(layers))
    for p in model.parameters():
        p.requires_grad_(False)
    d = model.cfg.d_model
    for i, path in targets:
        parent_path, _, child = f"layers.{i}.{path}".rpartition(".")
        parent = model.get_submodule(parent_path)
        base = getattr(parent, child)
        adapter = Bottleneck(d, cfg.bottleneck, cfg.activation, cfg.scaling, **_like(base))
        wrapper = SerialAdapter if cfg.kind == "houlsby" else ParallelAdapter
        setattr(parent, child, wrapper(base, adapter))
    return model


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors only: {"layers.0.mlp.down.adapter.down.weight": (m, d), ...}."""
    mods = adapter_modules(model)
    if not mods:
        raise ValueError(f"{type(model).__name__} has no adapter: call apply_adapters(model, cfg) first")
    return {f"{n}.adapter.{k}": v.detach() for n, m in mods.items() for k, v in m.adapter.state_dict().items()}


def load_adapter_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy adapter tensors (from `adapter_state_dict`) into a model built with the same AdapterConfig."""
    copy_matching_(adapter_state_dict(model), state, "the adapters do not fit this model",
                   "apply_adapters with the AdapterConfig they were trained with "
                   "(same kind, bottleneck, where and layers)")


def adapter_param_count(cfg: AdapterConfig, model: nn.Module | GPTConfig | str) -> int:
    """Trainable parameters of apply_adapters(model, cfg): (2 d m + m + d) per adapter, one adapter per chosen
    sub-layer of each chosen layer (`model`: a GPT, a GPTConfig or a preset name)."""
    c = model.cfg if isinstance(model, nn.Module) else GPTConfig.preset(model) if isinstance(model, str) else model
    d, m = c.d_model, cfg.bottleneck
    return len(_targets(cfg, c.n_layer)) * (2 * d * m + m + d)
