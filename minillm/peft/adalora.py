"""AdaLoRA: LoRA in SVD form, whose rank budget moves during training to the matrices that need it most.

Implements (Zhang et al. 2023, "AdaLoRA: Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning",
ICLR 2023, arXiv:2303.10512):
- `SVDLinear(base, r, alpha)`: h = base(x) + (alpha / r) P diag(lambda) Q x (paper eq. 3), with P = `lora_B`
  (out, r), lambda = `lora_E` (r, 1), Q = `lora_A` (r, in). lambda starts at zero and P, Q at N(0, 0.02^2)
  (peft's init), so the wrapped layer starts as the base layer exactly. The divisor stays the initial rank r
  after pruning (peft's `ranknum`), so switching a triplet off does not rescale the others;
- `AdaLoraConfig` and `apply_adalora(model, cfg)`: freeze the model, wrap the target linears (LoRA's rule:
  a qualified name equal to a target or ending with "." + target);
- `orth_regularizer(model)`: the mean of the 2n norms ||P^T P - I||_F and ||Q Q^T - I||_F of the n adapted
  matrices (for one matrix: half their sum). The paper's eq. 4 squares both norms and its objective adds
  gamma * sum_k R(P_k, Q_k); this module follows `peft` (plain norms, a mean), so a loss computed here equals
  peft's and `orth_reg_weight` is not the paper's gamma;
- `RankAllocator`: the sensitivity I(w) = |w * dL/dw| (eq. 7), its smoothed value I_bar (eq. 8) and uncertainty
  U_bar (eq. 9), the score s = I_bar * U_bar (eq. 10), the score of triplet i, s(lambda_i) + mean_j s(P_ji) +
  mean_j s(Q_ij) (eq. 11), the cubic budget schedule (eq. 12, `budget_schedule`), and masking: the lambdas of
  all but the `budget` best-scoring triplets across the model are set to zero (eq. 6, top-b);
- `adalora_state_dict` / `load_adalora_state_dict`: the kept triplets only, with each matrix's rank pattern.

The schedule is peft's, step for step (steps count from 1, after each optimizer step): the budget stays the
initial one for step <= tinit, falls as b_T + (b_0 - b_T) (1 - (t - tinit) / (T - tfinal - tinit))^3, truncated
to an int, and is b_T for step > T - tfinal; masks are applied every deltaT steps while it falls, at step
T - tfinal with the final budget, and with that final pattern after every later step. Masking keeps exactly
`budget` triplets (top-b, as the paper's eq. 6); peft masks every score <= the (b_0 - b)-th smallest one, which
is the same unless scores tie.

Leaves out: shrinking the matrices to the kept rank during training (the masked rows stay, zeroed, as in
peft), several adapters per layer, merging, embedding and convolution layers, DeepSpeed's sharded gradients.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from minillm.peft.lora import LoRALinear, _is_linear, _linear_names, _matches


@dataclass
class AdaLoraConfig:
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")  # module names, or suffixes of qualified names
    init_r: int = 12  # every matrix starts with this many triplets
    target_r: int = 8  # the final budget is target_r x (number of adapted matrices): an average rank
    tinit: int = 0  # steps of warm-up at the full budget
    tfinal: int = 0  # steps at the end with the final rank pattern fixed
    deltaT: int = 1  # re-mask every deltaT steps while the budget falls
    total_step: int | None = None  # the length of training (required: the schedule ends there)
    beta1: float = 0.85  # EMA of the sensitivity (eq. 8)
    beta2: float = 0.85  # EMA of the uncertainty (eq. 9)
    orth_reg_weight: float = 0.5  # weight of orth_regularizer in the loss
    lora_alpha: float = 8.0  # the update is scaled by lora_alpha / init_r
    lora_dropout: float = 0.0

    def __post_init__(self):
        if isinstance(self.target_modules, str):
            self.target_modules = (self.target_modules,)
        self.target_modules = tuple(self.target_modules)

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        if not self.target_modules or not all(isinstance(t, str) and t.strip(".") for t in self.target_modules):
            raise ValueError(f"target_modules must be non-empty module names such as ('q_proj', 'v_proj'), "
                             f"got {self.target_modules!r}")
        if not is_int(self.init_r) or self.init_r < 1:
            raise ValueError(f"init_r must be a positive int (the starting rank of every matrix), got {self.init_r!r}")
        if not is_int(self.target_r) or not 1 <= self.target_r <= self.init_r:
            raise ValueError(f"target_r must be an int in [1, init_r={self.init_r}] (the budget only shrinks), "
                             f"got {self.target_r!r}")
        if not is_int(self.total_step) or self.total_step < 1:
            raise ValueError(f"total_step must be set to the number of training steps (an int >= 1), "
                             f"got {self.total_step!r}")
        if not (is_int(self.tinit) and is_int(self.tfinal) and self.tinit >= 0 and self.tfinal >= 0):
            raise ValueError(f"tinit and tfinal must be ints >= 0, got tinit={self.tinit!r}, tfinal={self.tfinal!r}")
        if self.tinit >= self.total_step - self.tfinal:
            raise ValueError(f"tinit={self.tinit} + tfinal={self.tfinal} leave no steps to shrink the budget in "
                             f"total_step={self.total_step}: lower tinit or tfinal, or raise total_step")
        if not is_int(self.deltaT) or self.deltaT < 1:
            raise ValueError(f"deltaT must be an int >= 1 (steps between two maskings), got {self.deltaT!r}")
        if not (0 < self.beta1 < 1 and 0 < self.beta2 < 1):
            raise ValueError(f"beta1 and beta2 must lie in (0, 1), got {self.beta1!r}, {self.beta2!r}")
        if not self.orth_reg_weight >= 0:
            raise ValueError(f"orth_reg_weight must be >= 0 (0 turns the regulariser off), "
                             f"got {self.orth_reg_weight!r}")
        if not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha must be > 0 (the update is scaled by lora_alpha / init_r), "
                             f"got {self.lora_alpha!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SVDLinear(nn.Module):
    """base(x) + (alpha / r) P diag(lambda) Q dropout(x): a frozen linear plus an SVD-shaped update.

    x (..., in) -> (..., out). `lora_A` = Q (r, in), `lora_E` = lambda (r, 1), `lora_B` = P (out, r)."""

    def __init__(self, base: nn.Module, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if not _is_linear(base) or isinstance(base, SVDLinear):
            raise TypeError(f"SVDLinear wraps a linear layer (a module with int in_features and out_features), "
                            f"got {type(base).__name__}")
        if not isinstance(r, int) or isinstance(r, bool) or r < 1 or not alpha > 0:
            raise ValueError(f"SVDLinear needs an int rank r >= 1 and alpha > 0, got r={r!r}, alpha={alpha!r}")
        self.base_layer = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha = r, alpha
        self.ranknum = float(r)  # the divisor; stays r when triplets are masked (peft's ranknum)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        w = getattr(base, "weight", None)  # the adapter lives where the base weight does, in its float dtype
        float_w = isinstance(w, torch.Tensor) and w.is_floating_point()
        kw = dict(device=w.device if isinstance(w, torch.Tensor) else None,
                  dtype=w.dtype if float_w else torch.get_default_dtype())
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, **kw))  # Q: right singular vectors
        self.lora_E = nn.Parameter(torch.zeros(r, 1, **kw))  # lambda: singular values
        self.lora_B = nn.Parameter(torch.empty(self.out_features, r, **kw))  # P: left singular vectors
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """lambda = 0 (the update is zero at the start), P and Q ~ N(0, 0.02^2) (so gradients reach lambda)."""
        nn.init.zeros_(self.lora_E)
        nn.init.normal_(self.lora_A, std=0.02)
        nn.init.normal_(self.lora_B, std=0.02)

    @property
    def scaling(self) -> float:
        return self.alpha / self.ranknum

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) P diag(lambda) Q, (out, in)."""
        return self.scaling * (self.lora_B @ (self.lora_A * self.lora_E))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)  # (..., out)
        h = self.dropout(x).to(self.lora_A.dtype)
        # (..., in) -> (..., r) through diag(lambda) Q (a row scaling of Q), then -> (..., out) through P
        lora = F.linear(F.linear(h, self.lora_A * self.lora_E), self.lora_B)
        return y + (self.scaling * lora).to(y.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, alpha={self.alpha}"


def adalora_layers(model: nn.Module) -> dict[str, SVDLinear]:
    """Qualified name -> SVDLinear, for every AdaLoRA adapter in `model`."""
    return {n: m for n, m in model.named_modules() if isinstance(m, SVDLinear)}


def apply_adalora(model: nn.Module, cfg: AdaLoraConfig) -> nn.Module:
    """Freeze every parameter of `model` and wrap each target linear in an `SVDLinear` of rank init_r, in place."""
    if adalora_layers(model) or any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("the model already has adapters: apply_adalora once, to a model without LoRA adapters")
    linears = _linear_names(model)
    for t in cfg.target_modules:
        if not any(_matches(n, t) for n in linears):
            names = sorted({n.rsplit(".", 1)[-1] for n in linears})
            raise ValueError(f"target {t!r} matches no linear layer of {type(model).__name__}; its linear layers "
                             f"are named {names}")
    for p in model.parameters():
        p.requires_grad_(False)
    for name in linears:
        if any(_matches(name, t) for t in cfg.target_modules):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, SVDLinear(getattr(parent, child), cfg.init_r, cfg.lora_alpha, cfg.lora_dropout))
    return model


def _layers(model: nn.Module) -> dict[str, SVDLinear]:
    layers = adalora_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no AdaLoRA adapter: call apply_adalora(model, cfg) first")
    return layers


def orth_regularizer(model: nn.Module) -> torch.Tensor:
    """Mean of the 2n norms ||P^T P - I||_F and ||Q Q^T - I||_F over n adapted matrices (peft's form).

    Eq. 4 squares the norms and the paper's loss sums R over the matrices, so orth_reg_weight is not its gamma.
    Both Gram matrices are (r, r): zero when P's columns and Q's rows are orthonormal."""
    terms = []
    for m in _layers(model).values():
        eye = torch.eye(m.r, device=m.lora_A.device, dtype=m.lora_A.dtype)
        terms.append(torch.linalg.matrix_norm(m.lora_A @ m.lora_A.T - eye))  # Q Q^T, (r, r)
        terms.append(torch.linalg.matrix_norm(m.lora_B.T @ m.lora_B - eye))  # P^T P, (r, r)
    return torch.stack(terms).mean()


def budget_schedule(step: int, init_budget: int, target_budget: int, tinit: int, tfinal: int,
                    total_step: int) -> int:
    """The total rank kept after `step` (eq. 12): init_budget up to tinit, a cubic fall, target_budget after
    total_step - tfinal. The fall is truncated to an int, as peft does."""
    if step <= tinit:
        return init_budget
    if step > total_step - tfinal:
        return target_budget
    left = 1 - (step - tinit) / (total_step - tfinal - tinit)  # 1 -> 0 over the falling phase
    return int((init_budget - target_budget) * left ** 3 + target_budget)


class RankAllocator:
    """Scores every triplet (P_i, lambda_i, Q_i) and keeps the best `budget` of them, model-wide.

    Use: `train(model, data, tcfg, regularizer=alloc.regularizer, after_step=alloc.update_and_allocate)`.
    `update_and_allocate(step)` must run after the optimizer step and before the gradients are cleared."""

    def __init__(self, model: nn.Module, cfg: AdaLoraConfig):
        self.model, self.cfg = model, cfg
        self.layers = _layers(model)
        self.init_budget = sum(m.r for m in self.layers.values())
        self.target_budget = cfg.target_r * len(self.layers)
        self.rank_pattern: dict[str, torch.Tensor] = {n: torch.ones(m.r, dtype=torch.bool)
                                                      for n, m in self.layers.items()}
        self.history: dict[str, list[int]] = {"step": [], "budget": [], "rank": []}
        self.reset()

    def reset(self) -> None:
        """Forget the smoothed sensitivities (done once the final pattern is fixed, as peft does)."""
        self.ipt: dict[str, torch.Tensor] = {}  # I, |w * grad|, last step
        self.exp_avg_ipt: dict[str, torch.Tensor] = {}  # I_bar, eq. 8
        self.exp_avg_unc: dict[str, torch.Tensor] = {}  # U_bar, eq. 9

    def _params(self):
        for name, m in self.layers.items():
            for part in ("lora_A", "lora_E", "lora_B"):
                yield f"{name}.{part}", getattr(m, part)

    def budget(self, step: int) -> int:
        c = self.cfg
        return budget_schedule(step, self.init_budget, self.target_budget, c.tinit, c.tfinal, c.total_step)

    @torch.no_grad()
    def update_ipt(self) -> None:
        """I = |w * grad| for every adapter entry, then its EMA I_bar and the EMA U_bar of |I - I_bar|."""
        b1, b2 = self.cfg.beta1, self.cfg.beta2
        for key, p in self._params():
            if p.grad is None:
                raise RuntimeError(f"{key} has no gradient: call update_and_allocate after backward and the "
                                   "optimizer step, before zero_grad")
            ipt = (p * p.grad).abs()
            if key not in self.exp_avg_ipt:
                self.exp_avg_ipt[key] = torch.zeros_like(p)
                self.exp_avg_unc[key] = torch.zeros_like(p)
            self.ipt[key] = ipt
            self.exp_avg_ipt[key] = b1 * self.exp_avg_ipt[key] + (1 - b1) * ipt
            self.exp_avg_unc[key] = b2 * self.exp_avg_unc[key] + (1 - b2) * (ipt - self.exp_avg_ipt[key]).abs()

    def scores(self) -> dict[str, torch.Tensor]:
        """Module name -> (r,) triplet scores (eq. 11): s(lambda_i) + mean_j s(P_ji) + mean_j s(Q_ij)."""
        if not self.exp_avg_ipt:
            raise RuntimeError("no importance yet: update_ipt() needs at least one step's gradients")

        def s(key: str) -> torch.Tensor:  # eq. 10, same shape as the parameter
            return self.exp_avg_ipt[key] * self.exp_avg_unc[key]

        return {n: s(f"{n}.lora_E").view(-1) + s(f"{n}.lora_A").mean(1) + s(f"{n}.lora_B").mean(0)
                for n in self.layers}

    @torch.no_grad()
    def mask_to_budget(self, budget: int) -> dict[str, torch.Tensor]:
        """Keep the `budget` best-scoring triplets of the whole model, zero the other lambdas; the new pattern."""
        scores = self.scores()
        flat = torch.cat(list(scores.values()))  # (init_budget,)
        keep = torch.zeros_like(flat, dtype=torch.bool)
        keep[torch.topk(flat, budget).indices] = True
        start = 0
        for name, v in scores.items():
            self.rank_pattern[name] = keep[start:start + v.numel()].cpu()
            start += v.numel()
        self.apply_pattern()
        return self.rank_pattern

    @torch.no_grad()
    def apply_pattern(self) -> None:
        """Zero the lambdas that the current rank pattern drops."""
        for name, m in self.layers.items():
            m.lora_E.masked_fill_(~self.rank_pattern[name].to(m.lora_E.device)[:, None], 0.0)

    def update_and_allocate(self, step: int) -> None:
        """After optimizer step `step` (1, 2, ...): update the importance, and mask when the schedule says so."""
        c = self.cfg
        end = c.total_step - c.tfinal
        budget = self.budget(step)
        if step < end:
            self.update_ipt()
            if c.tinit < step and step % c.deltaT == 0:
                self.mask_to_budget(budget)
        elif step == end:  # fix the final pattern with the scores of the steps before
            self.mask_to_budget(budget)
            self.reset()
        else:
            self.apply_pattern()
        self.history["step"].append(step)
        self.history["budget"].append(budget)
        self.history["rank"].append(sum(self.ranks().values()))

    def regularizer(self) -> torch.Tensor:
        """orth_reg_weight * orth_regularizer(model): what to add to the loss (train's `regularizer`)."""
        return self.cfg.orth_reg_weight * orth_regularizer(self.model)

    def ranks(self) -> dict[str, int]:
        """Module name -> the number of triplets it keeps now."""
        return {n: int(v.sum()) for n, v in self.rank_pattern.items()}


def adalora_state_dict(model: nn.Module, rank_pattern: dict[str, torch.Tensor] | None = None
                       ) -> dict[str, torch.Tensor]:
    """The kept triplets only: "<m>.lora_A" (k, in), "<m>.lora_E" (k, 1), "<m>.lora_B" (out, k), and
    "<m>.rank_pattern" (init_r,) bool; without a pattern, the triplets whose lambda is nonzero."""
    out = {}
    for name, m in _layers(model).items():
        keep = rank_pattern[name] if rank_pattern is not None else (m.lora_E.detach().view(-1) != 0).cpu()
        idx = keep.nonzero().view(-1).to(m.lora_A.device)
        out[f"{name}.lora_A"] = m.lora_A.detach()[idx].clone()
        out[f"{name}.lora_E"] = m.lora_E.detach()[idx].clone()
        out[f"{name}.lora_B"] = m.lora_B.detach()[:, idx].clone()
        out[f"{name}.rank_pattern"] = keep.clone()
    return out


@torch.no_grad()
def load_adalora_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Put saved triplets into a model built by apply_adalora with the same config; the dropped lambdas are
    zeroed. Returns the rank pattern."""
    layers = _layers(model)
    want = {f"{n}.{k}" for n in layers for k in ("lora_A", "lora_E", "lora_B", "rank_pattern")}
    if want != set(state):
        diff = sorted(want ^ set(state))[0]
        raise ValueError(f"the adapter does not fit this model ({diff!r} is in one and not the other): "
                         "apply_adalora with the AdaLoraConfig it was trained with")
    pattern = {}
    for name, m in layers.items():
        keep = state[f"{name}.rank_pattern"].bool().cpu()
        k = int(keep.sum())
        shapes = [tuple(state[f"{name}.{p}"].shape) for p in ("lora_A", "lora_E", "lora_B")]
        if keep.numel() != m.r or shapes != [(k, m.in_features), (k, 1), (m.out_features, k)]:
            raise ValueError(f"{name}: the saved triplets {shapes} (init_r {keep.numel()}, {k} kept) do not fit "
                             f"this layer (init_r {m.r}, {m.in_features} -> {m.out_features}): apply_adalora with "
                             "the AdaLoraConfig the adapter was trained with")
        idx = keep.nonzero().view(-1).to(m.lora_A.device)
        m.lora_E.zero_()
        m.lora_A[idx] = state[f"{name}.lora_A"].to(m.lora_A)
        m.lora_E[idx] = state[f"{name}.lora_E"].to(m.lora_E)
        m.lora_B[:, idx] = state[f"{name}.lora_B"].to(m.lora_B)
        pattern[name] = keep
    return pattern


def rank_table(ranks: dict[str, int]) -> tuple[list[str], list[str], list[list[float]]]:
    """(row labels "layer i", column labels (module kinds), ranks[row][col]) for a layer x module heatmap;
    names without a "layers.<i>." part go in a row of their own, and a missing cell is nan."""
    rows: dict[str, dict[str, int]] = {}
    for name, r in ranks.items():
        parts = name.split(".")
        if "layers" in parts and parts.index("layers") + 1 < len(parts):
            i = parts.index("layers")
            row, col = f"layer {parts[i + 1]}", ".".join(parts[i + 2:])
        else:
            row, col = name, name
        rows.setdefault(row, {})[col] = r
    cols = list(dict.fromkeys(c for v in rows.values() for c in v))
    return list(rows), cols, [[float(v.get(c, math.nan)) for c in cols] for v in rows.values()]
