"""LoRA: low-rank adapters added to the frozen linear layers of a finished model.

Implements (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685):
- `LoRALinear(base, r, alpha)`: h = base(x) + s * B A dropout(x) (paper eq. 3), with A (r, in) drawn like
  a Linear's weight (Kaiming-uniform, a = sqrt(5), the init `peft` uses) and B (out, r) zeros, so the
  wrapped layer starts as the base layer exactly; s = alpha / r (paper sec. 4.1), or alpha / sqrt(r) with
  rsLoRA (Kalajdzievski 2023, "A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA",
  arXiv:2312.03732, eq. 4: the scale that keeps the update's size steady as r grows). `base` is any module
  with `in_features`, `out_features` and `forward(x)`: an nn.Linear, or a frozen quantized linear (QLoRA);
- `LoraConfig` and `apply_lora(model, cfg)`: freeze every parameter of the model, then wrap each linear whose
  qualified name is a target or ends with "." + target (peft's rule), in place;
- `merge_lora` / `unmerge_lora` / `merge_and_unload`: W <- W + s B A for inference without extra latency
  (paper sec. 4.2), and back; the merged model computes what the adapted one does;
- `lora_state_dict` / `load_lora_state_dict`: the adapter tensors only (a few MB for a 7B model). Through
  `minillm.checkpoint`: `save_checkpoint(..., model_state=lora_state_dict)` writes them with the optimizer
  state, `restore_model(model, state, strict=False)` loads them over a freshly built base and adapters;
- `linear_shapes`, `lora_param_count`, `lora_size_table`: trainable parameters by formula, r (in + out) per
  wrapped linear, for a model, a `GPTConfig`, a preset or a published shape (ChatGLM-6B's fused
  `query_key_value` is not a `GPTConfig`: its linears are listed in `CHATGLM_6B`).

Merging adds s B A to W and unmerging subtracts it: the merged forward equals the adapted forward, and
unmerge gives W back, up to one rounding of each weight (exact when s B A is zero). A weight shared by two
modules (a tied lm_head) is refused by merge, since adding to it would change the embedding too.

Leaves out: several adapters per layer and switching between them, LoRA on embeddings and convolutions,
DoRA / PiSSA / LoftQ inits, AdaLoRA's rank allocation (later in chapter 9), QLoRA's NF4 base (`minillm.peft`'s
NF4 module).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from minillm.model import GLU, GPTConfig, count_params


def lora_scaling(r: int, alpha: float, use_rslora: bool = False) -> float:
    """The factor s of h = W x + s B A x: alpha / r, or alpha / sqrt(r) with rsLoRA."""
    return alpha / math.sqrt(r) if use_rslora else alpha / r


@dataclass
class LoraConfig:
    r: int = 8  # the rank of B A
    alpha: float = 16.0  # s = alpha / r (alpha / sqrt(r) with use_rslora)
    dropout: float = 0.0  # on the adapter's input only (the base path sees x unchanged)
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")  # module names, or suffixes of qualified names
    use_rslora: bool = False

    def __post_init__(self):
        if isinstance(self.target_modules, str):  # "q_proj" means ("q_proj",), not its letters
            self.target_modules = (self.target_modules,)
        self.target_modules = tuple(self.target_modules)
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise ValueError(f"LoRA rank r must be a positive int, got {self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0 (the update is scaled by alpha / r), got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not self.target_modules or not all(isinstance(t, str) and t.strip(".") for t in self.target_modules):
            raise ValueError(f"target_modules must be non-empty module names such as ('q_proj', 'v_proj'), "
                             f"got {self.target_modules!r}")

    @property
    def scaling(self) -> float:
        return lora_scaling(self.r, self.alpha, self.use_rslora)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_linear(m: nn.Module) -> bool:
    """nn.Linear, or any module that says it maps in_features -> out_features (a quantized linear)."""
    return not isinstance(m, LoRALinear) and (
        isinstance(m, nn.Linear) or (isinstance(getattr(m, "in_features", None), int)
                                     and isinstance(getattr(m, "out_features", None), int)))


class LoRALinear(nn.Module):
    """base(x) + s * B A dropout(x): a frozen linear plus a trainable rank-r update.

    x (..., in) -> (..., out). `base_layer` keeps its parameters (peft's name for the wrapped layer);
    `lora_A` (r, in) and `lora_B` (out, r) are the only new parameters."""

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0, use_rslora: bool = False):
        super().__init__()
        if not _is_linear(base):
            raise TypeError(f"LoRALinear wraps a linear layer (a module with int in_features and out_features), "
                            f"got {type(base).__name__}")
        LoraConfig(r=r, alpha=alpha, dropout=dropout)  # the same checks, written once
        self.base_layer = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha, self.use_rslora = r, alpha, use_rslora
        self.scaling = lora_scaling(r, alpha, use_rslora)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        # the adapter lives where the base does, in its float dtype (float32 over a quantized uint8 weight)
        ref = next(iter(base.parameters()), None)
        ref = ref if ref is not None else next(iter(base.buffers()), None)
        device = ref.device if ref is not None else None
        w = getattr(base, "weight", None)
        dtype = w.dtype if isinstance(w, torch.Tensor) and w.is_floating_point() else torch.get_default_dtype()
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, device=device, dtype=dtype))
        self.merged = False
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """A like nn.Linear's weight (Kaiming-uniform with a = sqrt(5): U(+-1/sqrt(in))), B = 0: B A = 0 at start."""
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B)

    def delta_weight(self) -> torch.Tensor:
        """s B A, (out, in): what merging adds to the base weight."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)  # (..., out)
        if self.merged:  # s B A is inside the base weight already
            return y
        h = self.dropout(x).to(self.lora_A.dtype)
        # two thin matmuls, (..., in) -> (..., r) -> (..., out): r (in + out) per token, never the (out, in) B A
        lora = F.linear(F.linear(h, self.lora_A), self.lora_B)
        return y + (self.scaling * lora).to(y.dtype)

    def _weight(self) -> nn.Parameter:
        w = getattr(self.base_layer, "weight", None)
        if not isinstance(w, torch.Tensor) or not w.is_floating_point() or tuple(w.shape) != (
                self.out_features, self.in_features):
            raise TypeError(f"cannot merge into a {type(self.base_layer).__name__}: merging needs a float weight of "
                            f"shape (out, in); dequantize the base layer first, or keep the adapter separate")
        return w

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + s B A; the forward then skips the adapter (the same function, one matmul)."""
        if not self.merged:
            w = self._weight()
            w += self.delta_weight().to(w.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - s B A: the base weight back (to one rounding), the adapter separate again."""
        if self.merged:
            w = self._weight()
            w -= self.delta_weight().to(w.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, alpha={self.alpha}, "
                f"scaling={self.scaling:.4g}{', merged' if self.merged else ''}")


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def _linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if n and _is_linear(m)]


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Qualified name -> LoRALinear, for every adapter in `model`."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def apply_lora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """Freeze every parameter of `model` and wrap each target linear in a `LoRALinear`, in place; returns it.

    A target matches a module whose qualified name is the target or ends with "." + target ("q_proj" matches
    "layers.0.self_attn.q_proj"; "mlp.up" only the MLPs' up projections)."""
    if lora_layers(model):
        raise ValueError("the model already has LoRA adapters: apply_lora once per model (merge_and_unload first "
                         "to start a new adapter on top of the merged weights)")
    linears = _linear_names(model)
    names = sorted({n.rsplit(".", 1)[-1] for n in linears})  # what a target may name
    for t in cfg.target_modules:
        if not any(_matches(n, t) for n in linears):
            others = [n for n, _ in model.named_modules() if n and _matches(n, t)]
            if others:
                kind = type(model.get_submodule(others[0])).__name__
                raise ValueError(f"target {t!r} matches {others[0]!r}, a {kind}, not a linear layer; "
                                 f"target its linears instead, e.g. one of {names}")
            raise ValueError(f"target {t!r} matches no linear layer of {type(model).__name__}; its linear layers are "
                             f"named {names} (qualified like {linears[0]!r})" if linears else
                             f"{type(model).__name__} has no linear layer to adapt")
    for p in model.parameters():
        p.requires_grad_(False)
    for name in linears:
        if any(_matches(name, t) for t in cfg.target_modules):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, LoRALinear(getattr(parent, child), cfg.r, cfg.alpha, cfg.dropout, cfg.use_rslora))
    return model


def _shared_weights(model: nn.Module) -> set[int]:
    """ids of parameters reachable under two names (tied weights)."""
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    return {i for i, n in seen.items() if n > 1}


def _adapters(model: nn.Module) -> dict[str, LoRALinear]:
    layers = lora_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no LoRA adapter: call apply_lora(model, cfg) first")
    return layers


def merge_lora(model: nn.Module) -> nn.Module:
    """Add s B A into every adapted base weight, in place (the forward then costs what the base model's does)."""
    shared = _shared_weights(model)
    layers = _adapters(model)
    for name, m in layers.items():
        if id(getattr(m.base_layer, "weight", None)) in shared:
            raise ValueError(f"{name}'s weight is tied to another module's (e.g. lm_head to embed_tokens): merging "
                             "would change both; keep that adapter unmerged or untie the weights first")
    for m in layers.values():
        m.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Subtract s B A from every merged base weight, in place: the adapters are separate (and trainable) again."""
    for m in _adapters(model).values():
        m.unmerge()
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge, then put each base layer back in place of its wrapper: a plain model (its usual state_dict names)."""
    merge_lora(model)
    for name, m in lora_layers(model).items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, m.base_layer)
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors only: {"<module>.lora_A": (r, in), "<module>.lora_B": (out, r), ...} (a model_state)."""
    out = {}
    for name, m in _adapters(model).items():
        out[f"{name}.lora_A"] = m.lora_A.detach()
        out[f"{name}.lora_B"] = m.lora_B.detach()
    return out


def copy_matching_(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], what: str, advice: str) -> None:
    """Copy `state` into the tensors `own` in place, or raise (copying nothing) if a name is missing or unexpected
    or a shape differs. `what` says what does not fit ("the adapter does not fit this model"), `advice` how to build
    a model it fits. Shared by every adapter-only loader of minillm.peft (LoRA, adapters, prompts, prefixes)."""
    missing, unknown = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    wrong = [k for k in sorted(own.keys() & state.keys()) if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unknown or wrong:
        why = (f"missing {missing[0]!r}" if missing else f"unexpected {unknown[0]!r}" if unknown else
               f"{wrong[0]!r} is {tuple(state[wrong[0]].shape)} in the file, {tuple(own[wrong[0]].shape)} here")
        raise ValueError(f"{what} ({why}): {advice}")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)


def load_lora_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy adapter tensors (from `lora_state_dict`) into a model with the same adapters; every one must fit."""
    if any(m.merged for m in lora_layers(model).values()):
        raise ValueError("unmerge_lora(model) before loading adapters: the merged weights hold the old ones")
    copy_matching_(lora_state_dict(model), state, "the adapter does not fit this model",
                   "apply_lora with the LoraConfig it was trained with (same r and target_modules)")


# ---------------------------------------------------------------------------------------------- sizes

# ChatGLM-6B (THUDM/chatglm-6b config.json: 28 layers, hidden 4096, 32 heads, inner_hidden_size 16384,
# vocab 130528; modeling_chatglm.py: a fused query_key_value 4096 -> 3 x 4096, dense, dense_h_to_4h and
# dense_4h_to_h, all with biases; two LayerNorms per layer and a final one; one word-embedding matrix that
# the output layer shares). GLM's 2D positions and its residual scaling are not GPTConfig's, so its linears
# are listed here: name -> (in_features, out_features), for every layer.
CHATGLM_6B = dict(n_layer=28, d_model=4096, ffn_hidden=16384, vocab_size=130528,
                  linears={"attention.query_key_value": (4096, 3 * 4096), "attention.dense": (4096, 4096),
                           "mlp.dense_h_to_4h": (4096, 16384), "mlp.dense_4h_to_h": (16384, 4096)})
PUBLISHED_LINEARS = {"chatglm-6b": CHATGLM_6B}
SOURCES = {"chatglm-6b": "THUDM/chatglm-6b config.json and modeling_chatglm.py (Du et al. 2022, GLM, arXiv:2103.10360)"}


def _chatglm_params(s: dict[str, Any]) -> int:
    """ChatGLM-6B's parameter count: linears with biases, 2 LayerNorms (weight, bias) a layer + a final one,
    one embedding (shared with the output layer)."""
    per_layer = sum(i * o + o for i, o in s["linears"].values()) + 2 * 2 * s["d_model"]
    return s["n_layer"] * per_layer + 2 * s["d_model"] + s["vocab_size"] * s["d_model"]


def linear_shapes(model: nn.Module | GPTConfig | str) -> dict[str, tuple[int, int]]:
    """Qualified name -> (in_features, out_features) of every linear layer, without building a GPTConfig model.

    `model`: a module (its linears as they are), a GPTConfig, a preset name or a name in PUBLISHED_LINEARS."""
    if isinstance(model, nn.Module):
        return {n: (m.in_features, m.out_features) for n, m in model.named_modules()
                if n and (_is_linear(m) or isinstance(m, LoRALinear)) and not n.endswith(".base_layer")}
    if isinstance(model, str) and model in PUBLISHED_LINEARS:
        s = PUBLISHED_LINEARS[model]
        return {f"transformer.layers.{i}.{k}": v for i in range(s["n_layer"]) for k, v in s["linears"].items()}
    c = GPTConfig.preset(model) if isinstance(model, str) else model
    d, q, kv, h = c.d_model, c.n_head * c.head_dim, c.n_kv_head * c.head_dim, c.ffn_hidden
    per_layer = {"self_attn.q_proj": (d, q), "self_attn.k_proj": (d, kv), "self_attn.v_proj": (d, kv),
                 "self_attn.o_proj": (q, d), **({"mlp.gate": (d, h)} if c.ffn in GLU else {}),
                 "mlp.up": (d, h), "mlp.down": (h, d)}
    out = {f"layers.{i}.{k}": v for i in range(c.n_layer) for k, v in per_layer.items()}
    out["lm_head"] = (d, c.vocab_size)
    return out


def lora_param_count(cfg: LoraConfig, model: nn.Module | GPTConfig | str) -> int:
    """Trainable parameters of apply_lora(model, cfg): r (in + out) summed over the target linears."""
    shapes = linear_shapes(model)
    hits = [s for n, s in shapes.items() if any(_matches(n, t) for t in cfg.target_modules)]
    if not hits:
        raise ValueError(f"no linear layer matches {cfg.target_modules}; the names are like {sorted(shapes)[:6]}")
    return sum(cfg.r * (i + o) for i, o in hits)


def base_param_count(model: GPTConfig | str) -> int:
    """All parameters of the base model (a preset, a GPTConfig or a PUBLISHED_LINEARS name)."""
    if isinstance(model, str) and model in PUBLISHED_LINEARS:
        return _chatglm_params(PUBLISHED_LINEARS[model])
    return count_params(GPTConfig.preset(model) if isinstance(model, str) else model)["total"]


def lora_size_table(models: Iterable[tuple[str, tuple[str, ...]]], r: int = 8,
                    dtype_bytes: float = 2) -> list[dict[str, Any]]:
    """One row per (model, target_modules): LoRA parameters, their share of the base model, adapter megabytes."""
    rows = []
    for name, targets in models:
        n = lora_param_count(LoraConfig(r=r, target_modules=targets), name)
        base = base_param_count(name)
        rows.append({"model": name, "targets": ", ".join(targets), "r": r, "lora_params": n, "base_params": base,
                     "percent": 100 * n / base, "MB": n * dtype_bytes / 1e6})
    return rows
