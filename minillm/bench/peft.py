"""Chapter 9 benchmark: every fine-tuning method on one SFT task, at similar trainable-parameter budgets.

`compare_methods(names, steps, setup)` trains each method of `METHODS` from the same chat-ready base model on
chapter 8's instructions (padded batches: one example per row, so prompt and prefix methods can prepend their
virtual tokens; the loss counts response tokens only, as `minillm.sft` masks them) and returns one row per
method: trainable parameters (and their share of the model), the held-out loss after `steps` steps (the
`val` split of `minillm.sft.SFTData`, i.e. instructions SFT never trains on), the median step time after a
warm-up, and the memory of one training step. `lr_sweep` chooses each method's learning rate; `lora_sweep`
varies LoRA's rank and target modules. `section_peft(quick)` is the `python -m minillm.bench --only peft`
section (appendix table). All ten methods are registered at import (`register` adds or replaces one).

Memory, measured honestly: weights, gradients and AdamW states are COUNTED from the tensors that exist
(parameters and buffers; `p.grad` after a backward; the optimizer's state tensors); activations are MEASURED as
the allocator's peak during a forward pass with autograd on (what is saved for backward plus transients), and
the step peak is MEASURED over one whole step (forward, backward, clipping, AdamW) above the weights and
optimizer states already allocated (`minillm.memory.peak_allocated_bytes`: torch.profiler's allocator events
on a CPU, `max_memory_allocated` on CUDA). total = weights + optimizer + step peak.

Learning rates are chosen by the loss on a fixed set of TRAINING examples after a short run (the same examples
for every method and lr; a 40-step run of 8 rows has seen only a fifth of the 1,638), not by the held-out loss
the table reports, so the table's validation loss is not the number the choice was fitted to.

The three chat tokens' embedding rows start at the mean row plus N(0, 0.02^2) noise (`prepare_for_chat(...,
noise_std=0.02)`): with identical rows a frozen, tied embedding could never tell <|user|>, <|assistant|> and <|end|>
apart, nor predict <|end|> above the other two.

Leaves out: trainable chat-token embeddings for the frozen-base methods (peft's `modules_to_save` /
`trainable_token_indices`: the PEFT rows keep the three rows frozen and learn around them, which handicaps them
against full fine-tuning, e.g. in predicting <|end|>); packed batches; mixed precision; several seeds (one seed
per run: differences of a few hundredths in loss are within run-to-run noise at these step counts).
References: Hu et al. 2021 (LoRA), Dettmers et al. 2023 (QLoRA), Zhang et al. 2023 (AdaLoRA), Houlsby et al.
2019 (adapters), He et al. 2022 (parallel adapters, "Towards a Unified View of PEFT", arXiv:2110.04366),
Lester et al. 2021 (prompt tuning), Li & Liang 2021 (prefix tuning), Liu et al. 2021 (P-tuning, and v2).
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from minillm.memory import peak_allocated_bytes
from minillm.peft import adalora, adapters, prompts
from minillm.peft.lora import LoraConfig, apply_lora, linear_shapes, lora_param_count
from minillm.peft.qlora import apply_qlora
from minillm.train import TrainConfig, evaluate, make_optimizer, train, unpack_batch
from minillm.utils import markdown_table

MB = 1e6
ALL_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate", "up", "down")
TARGET_SETS: dict[str, tuple[str, ...]] = {"q, v": ("q_proj", "v_proj"),
                                           "q, k, v, o": ("q_proj", "k_proj", "v_proj", "o_proj"),
                                           "MLP": ("gate", "up", "down"), "all linear": ALL_LINEARS}

# {"regularizer": () -> scalar, "after_step": (step) -> None} for minillm.train.train, plus anything a method wants
# to expose for inspection (AdaLoRA: "allocator", its RankAllocator)
Hooks = dict[str, Any]

# The setting of the recorded CPU learning-rate sweep the defaults come from (`section_peft` on a CPU): batches of
# `batch_size` rows cut to `seq_len` tokens, `steps` steps, the loss on `eval_examples` fixed training examples.
RECORDED_SWEEP: dict[str, int] = {"batch_size": 8, "seq_len": 128, "steps": 40, "eval_examples": 32,
                                  "compare_steps": 100}


@dataclass
class Method:
    """One row of the comparison: how to turn the chat-ready base model into the model that trains.

    build(model) -> model: changes a fresh copy (freezing the base, adding the new weights) and returns it;
    expected(model) -> int: the method's trainable-parameter count by formula, from the base model (None: no
    formula); hooks(model, steps, warmup) -> {"regularizer", "after_step", ...} for `train` (AdaLoRA); lr: the
    default learning rate (the best of the grid in the recorded CPU sweep, `RECORDED_SWEEP`: `section_peft`);
    lr_grid: the learning rates `lr_sweep` tries (extended upwards while the best sat at the top; in the recorded
    sweep P-tuning v1's best, 0.03, is still its grid's top by 0.01 in loss: a higher rate is untried)."""
    name: str
    build: Callable[[nn.Module], nn.Module]
    lr: float
    lr_grid: tuple[float, ...]
    expected: Callable[[nn.Module], int] | None = None
    hooks: Callable[[nn.Module, int, int], Hooks] | None = None
    note: str = ""


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _lora_cfg(r: int = 8) -> LoraConfig:
    return LoraConfig(r=r, alpha=2.0 * r, target_modules=("q_proj", "v_proj"))


def _full(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add (or replace) a method of the comparison; returns it."""
    METHODS[method.name] = method
    return method


register(Method("full fine-tuning", _full, lr=1e-3, lr_grid=(3e-4, 1e-3, 3e-3), expected=_n_params,
                note="every weight, the chat tokens' embedding rows included"))
register(Method("LoRA", lambda m: apply_lora(m, _lora_cfg()), lr=1e-2, lr_grid=(3e-3, 1e-2, 3e-2),
                expected=lambda m: lora_param_count(_lora_cfg(), m), note="r = 8, alpha = 16, q and v"))
register(Method("QLoRA", lambda m: apply_qlora(m, _lora_cfg()), lr=1e-2, lr_grid=(3e-3, 1e-2, 3e-2),
                expected=lambda m: lora_param_count(_lora_cfg(), m),
                note="NF4 base (blocks of 64, double quantisation), LoRA r = 8 on q and v"))


def _register_adalora() -> None:
    """AdaLoRA on q and v: 12 triplets per matrix at the start, an average of 8 kept at the end (the LoRA budget
    once pruned; 1.5x it while training), the budget falling after the first tenth of the run (and never before
    the learning-rate warm-up is over: in a 16-step run a tenth is one step) and fixed for the last fifth,
    orthogonality weight 0.5 (peft's defaults for the rest)."""

    def config(steps: int, warmup: int = 0) -> adalora.AdaLoraConfig:
        tinit, tfinal = max(steps // 10, warmup), steps // 5
        return adalora.AdaLoraConfig(target_modules=("q_proj", "v_proj"), init_r=12, target_r=8, tinit=tinit,
                                     tfinal=tfinal, total_step=max(steps, tinit + tfinal + 1), lora_alpha=16.0)

    def hooks(model: nn.Module, steps: int, warmup: int) -> Hooks:
        alloc = adalora.RankAllocator(model, config(steps, warmup))
        return {"regularizer": alloc.regularizer, "after_step": alloc.update_and_allocate, "allocator": alloc}

    def expected(model: nn.Module) -> int:  # r (in + out + 1) per adapted matrix: Q, P and the r lambdas
        return sum(12 * (i + o + 1) for n, (i, o) in linear_shapes(model).items()
                   if n.endswith((".q_proj", ".v_proj")))

    register(Method("AdaLoRA", lambda m: adalora.apply_adalora(m, config(10**6)), lr=3e-2,
                    lr_grid=(1e-2, 3e-2, 1e-1, 3e-1),
                    expected=expected, hooks=hooks, note="q, v: rank 12 -> 8 on average (SVD form, pruned)"))


def _register_adapters() -> None:
    """Houlsby (serial, after attention and MLP) at bottleneck 8, parallel (beside the MLP, He et al.) at 16."""
    houlsby = adapters.AdapterConfig(kind="houlsby", bottleneck=8)
    parallel = adapters.AdapterConfig(kind="parallel", bottleneck=16)
    for name, cfg, lr, note in (("Houlsby adapter", houlsby, 1e-2, "bottleneck 8, after attn and MLP"),
                                ("parallel adapter", parallel, 3e-2, "bottleneck 16, beside the MLP")):
        register(Method(name, lambda m, cfg=cfg: adapters.apply_adapters(m, cfg), lr=lr,
                        lr_grid=(3e-3, 1e-2, 3e-2, 1e-1),
                        expected=lambda m, cfg=cfg: adapters.adapter_param_count(cfg, m), note=note))


def _register_prompts() -> None:
    """Prompt tuning (128 virtual tokens: P d = the LoRA budget, but every sequence grows by 128), P-tuning v1
    (64 tokens from an MLP encoder of width 32), prefix tuning (16 tokens, MLP width 12) and P-tuning v2 (16)."""
    d = lambda m: m.cfg.d_model  # noqa: E731
    prompt = prompts.PromptTuningConfig(n_virtual=128)
    p1 = prompts.PTuningConfig(n_virtual=64, encoder="mlp", encoder_hidden=32)
    prefix = prompts.PrefixTuningConfig(n_virtual=16, projection=True, encoder_hidden=12)
    p2 = prompts.PrefixTuningConfig(n_virtual=16, projection=False)
    register(Method("prompt tuning", lambda m: prompts.apply_prompt_tuning(m, prompt), lr=3e-2,
                    lr_grid=(1e-2, 3e-2, 1e-1, 3e-1), expected=lambda m: prompts.prompt_param_count(prompt, d(m)),
                    note="128 virtual tokens, initialised from vocabulary rows"))
    register(Method("P-tuning v1", lambda m: prompts.apply_p_tuning(m, p1), lr=3e-2,
                    lr_grid=(1e-3, 3e-3, 1e-2, 3e-2),
                    expected=lambda m: prompts.prompt_param_count(p1, d(m)),
                    note="64 virtual tokens, MLP encoder width 32"))
    register(Method("prefix tuning", lambda m: prompts.apply_prefix_tuning(m, prefix), lr=1e-1,
                    lr_grid=(1e-2, 3e-2, 1e-1, 3e-1), expected=lambda m: prompts.prefix_param_count(prefix, m),
                    note="16 prefix keys / values per layer from an MLP of width 12"))
    register(Method("P-tuning v2", lambda m: prompts.apply_prefix_tuning(m, p2), lr=3e-1,
                    lr_grid=(3e-2, 1e-1, 3e-1, 1.0), expected=lambda m: prompts.prefix_param_count(p2, m),
                    note="16 prefix keys / values per layer, direct"))


_register_adalora()
_register_adapters()
_register_prompts()


# ---------------------------------------------------------------------------------------------- the data


@dataclass
class Setup:
    """The task every method trains on: a chat-ready base model and chapter 8's instructions, padded."""
    model: nn.Module  # the base model with the chat tokens (never trained: each method gets a deep copy)
    data: Any  # minillm.sft.SFTData(packing=False)
    batch_size: int = 8
    seq_len: int = 128
    eval_batches: int = 4
    warmup: int = 2  # learning-rate warm-up steps
    timing_warmup: int = 2  # steps left out of the median step time
    fast: bool = True  # minillm.fast.to_fast on each built model (fused norms / attention; same numbers)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_base(self) -> int:
        return _n_params(self.model)


def sft_setup(device: torch.device | str = "cpu", batch_size: int = 8, seq_len: int = 128, eval_batches: int = 4,
              model: nn.Module | None = None, tok: Any = None, examples: list[dict] | None = None) -> Setup:
    """The course's base model (`minillm.pretrained.load_base`) made chat-ready, and chapter 8's instructions
    as padded batches; pass model / tok / examples to use others (the tests use a tiny model)."""
    from minillm.sft import SFTData, build_instructions, prepare_for_chat

    if model is None:
        from minillm.pretrained import load_base

        model, tok = load_base(device=device)
    model, chat_tok = prepare_for_chat(model.to(device), tok, noise_std=0.02)
    data = SFTData(chat_tok, examples if examples is not None else build_instructions(), packing=False)
    return Setup(model.requires_grad_(False), data, batch_size, seq_len, eval_batches)


def _train_config(s: Setup, steps: int, lr: float, progress: bool = False) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=s.batch_size, seq_len=s.seq_len, lr=lr, warmup=min(s.warmup, steps),
                       weight_decay=0.0, eval_every=0, eval_batches=s.eval_batches, progress=progress)


# ---------------------------------------------------------------------------------------------- measuring


def frozen_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every tensor training must not change: parameters that do not require grad, and buffers."""
    out = {f"param:{n}": p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    out.update({f"buffer:{n}": b.detach().clone() for n, b in model.named_buffers()})
    return out


def unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    """True when every tensor of `before` is bitwise equal to the model's tensor of that name now."""
    now = dict(model.named_parameters())
    bufs = dict(model.named_buffers())
    for key, t in before.items():
        kind, name = key.split(":", 1)
        cur = now.get(name) if kind == "param" else bufs.get(name)
        if cur is None or cur.shape != t.shape or not torch.equal(cur.detach(), t):
            return False
    return True


def _bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is not None and id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def step_memory(model: nn.Module, batch: tuple, lr: float, hooks: Hooks | None = None) -> dict[str, float]:
    """MB of one training step: weights, gradients and AdamW states counted from tensors; activations (peak of
    a forward with autograd) and the step's peak above weights + optimizer states measured by the allocator."""
    device = next(model.parameters()).device
    x, y, kw = unpack_batch(batch, device)
    reg = (hooks or {}).get("regularizer")
    cfg = TrainConfig(steps=1, lr=lr, weight_decay=0.0, warmup=0)
    opt = make_optimizer(model, cfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    lr_before = [g["lr"] for g in opt.param_groups]

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = model(x, y, **kw)[1]
        (loss if reg is None else loss + reg()).backward()
        nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()

    for g in opt.param_groups:  # a step at lr 0: the optimizer states exist, the weights do not move
        g["lr"] = 0.0
    step()  # AdamW allocates its moments on the first step
    grads = _bytes(p.grad for p in trainable)
    opt.zero_grad(set_to_none=True)
    weights = _bytes(list(model.parameters()) + list(model.buffers()))
    states = _bytes(t for st in opt.state.values() for t in st.values() if isinstance(t, torch.Tensor))
    acts, _ = peak_allocated_bytes(lambda: model(x, y, **kw)[1].detach(), device)
    peak, _ = peak_allocated_bytes(step, device)
    opt.zero_grad(set_to_none=True)
    for g, v in zip(opt.param_groups, lr_before, strict=True):
        g["lr"] = v
    return {"weights MB": weights / MB, "grads MB": grads / MB, "optimizer MB": states / MB,
            "activations MB": acts / MB, "step peak MB": peak / MB, "total MB": (weights + states + peak) / MB}


def run_method(method: Method, s: Setup, steps: int, lr: float | None = None, seed: int = 0,
               memory: bool = True, progress: bool = False) -> tuple[dict[str, Any], nn.Module]:
    """Train one method for `steps` steps; returns (its row, the trained model)."""
    lr = method.lr if lr is None else lr
    torch.manual_seed(seed)  # the same adapter / prompt initialisation in every run with this seed
    model = method.build(copy.deepcopy(s.model))
    if s.fast:
        from minillm.fast import to_fast

        to_fast(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    expected = method.expected(s.model) if method.expected is not None else None
    if expected is not None and expected != trainable:
        raise AssertionError(f"{method.name}: {trainable:,} trainable parameters, its formula says {expected:,}")
    frozen = frozen_tensors(model) if method.name != "full fine-tuning" else {}
    cfg = _train_config(s, steps, lr, progress)
    val_start = evaluate(model, s.data, cfg)
    hooks = method.hooks(model, steps, cfg.warmup) if method.hooks is not None else {}
    device = next(model.parameters()).device
    stamps: list[float] = []

    def after_step(step: int) -> None:
        if hooks.get("after_step") is not None:
            hooks["after_step"](step)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())

    hist = train(model, s.data, cfg, regularizer=hooks.get("regularizer"), after_step=after_step)
    # step k's time = stamp[k] - stamp[k - 1]: batch, forward, backward, AdamW (the first step has no start stamp)
    times = [b - a for a, b in zip(stamps[:-1], stamps[1:], strict=True)][max(s.timing_warmup - 1, 0):]
    row: dict[str, Any] = {
        "method": method.name, "trainable": trainable, "% of model": 100 * trainable / s.n_base, "lr": lr,
        "val loss (start)": val_start, "val loss": hist.val_loss[-1],
        "train loss (last quarter)": statistics.fmean(hist.train_loss[-max(steps // 4, 1):]),
        "train-split loss": evaluate(model, s.data, cfg, split="train"),
        "ms / step": 1000 * statistics.median(times) if times else float("nan"), "steps": steps,
    }
    if memory:
        gen = torch.Generator().manual_seed(4321)  # the same batch for every method
        row.update(step_memory(model, s.data.batch("train", s.batch_size, s.seq_len, gen), lr, hooks))
    row["base unchanged"] = unchanged(model, frozen) if frozen else "n/a (trains it)"
    return row, model


def compare_methods(names: Sequence[str], steps: int, s: Setup, lrs: dict[str, float] | None = None,
                    memory: bool = True, progress: bool = False) -> list[dict[str, Any]]:
    """One row per method (see `run_method`), each at `lrs[name]` or its default learning rate."""
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; registered: {list(METHODS)}")
    rows = []
    for n in names:
        rows.append(run_method(METHODS[n], s, steps, (lrs or {}).get(n), memory=memory, progress=progress)[0])
    return rows


def lr_sweep(names: Sequence[str], steps: int, s: Setup) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Each method at each learning rate of its grid; returns (rows, {method: the lr with the lowest loss on
    `eval_batches` fixed batches of the TRAIN split after the run}). A run whose loss became NaN / inf counts as
    the worst."""
    rows, best = [], {}
    for n in names:
        for lr in METHODS[n].lr_grid:
            try:
                row = run_method(METHODS[n], s, steps, lr, memory=False)[0]
            except FloatingPointError:
                row = {"method": n, "lr": lr, "train loss (last quarter)": float("inf"), "val loss": float("inf"),
                       "train-split loss": float("inf")}
            rows.append(row)
        mine = [r for r in rows if r["method"] == n]
        best[n] = min(mine, key=lambda r: r["train-split loss"])["lr"]
    return rows, best


def lora_sweep(steps: int, s: Setup, ranks: Sequence[int] = (1, 2, 4, 8, 16, 32), lr: float | None = None,
               targets: dict[str, tuple[str, ...]] | None = None) -> list[dict[str, Any]]:
    """LoRA at each rank (on q, v) and at r = 8 on each target set: rows with sweep, setting, trainable, val loss."""
    lr = METHODS["LoRA"].lr if lr is None else lr
    rows = []
    configs = [("rank", f"r = {r}", LoraConfig(r=r, alpha=2.0 * r, target_modules=TARGET_SETS["q, v"]))
               for r in ranks]
    configs += [("targets", name, LoraConfig(r=8, alpha=16.0, target_modules=t))
                for name, t in (targets or TARGET_SETS).items()]
    done: dict[tuple, dict[str, Any]] = {}  # r = 8 on q, v is in both sweeps: trained once
    for sweep, setting, cfg in configs:
        key = (cfg.r, cfg.alpha, cfg.target_modules)
        if key not in done:
            m = Method(f"LoRA {setting}", lambda model, cfg=cfg: apply_lora(model, cfg), lr=lr, lr_grid=(lr,),
                       expected=lambda model, cfg=cfg: lora_param_count(cfg, model))
            done[key] = run_method(m, s, steps, memory=False)[0]
        row = done[key]
        rows.append({"sweep": sweep, "setting": setting, "r": cfg.r, "targets": ", ".join(cfg.target_modules),
                     **{k: row[k] for k in ("trainable", "% of model", "val loss", "ms / step")}})
    return rows


# ---------------------------------------------------------------------------------------------- the section

COLUMNS = ["method", "trainable", "% of model", "lr", "val loss", "ms / step", "weights MB", "grads MB",
           "optimizer MB", "activations MB", "step peak MB", "total MB", "base unchanged"]


def section_peft(quick: bool = False) -> str:
    """The appendix's chapter-9 table: the learning-rate sweep, the comparison, the LoRA sweeps."""
    from minillm.utils import by_device, get_device

    device = get_device()
    rec = RECORDED_SWEEP
    s = sft_setup(device, batch_size=2 if quick else by_device(rec["batch_size"], 32, device),
                  seq_len=48 if quick else rec["seq_len"],
                  eval_batches=1 if quick else rec["eval_examples"] // rec["batch_size"])
    names = list(METHODS)
    steps, sweep_steps = (3, 3) if quick else (by_device(rec["compare_steps"], 400, device),
                                               by_device(rec["steps"], 150, device))
    if quick:
        names = names[:2]
    t0 = time.perf_counter()
    sweep, best = lr_sweep(names, sweep_steps, s)
    rows = compare_methods(names, steps, s, best)
    lora_rows = lora_sweep(steps, s, ranks=(1, 8) if quick else (1, 2, 4, 8, 16, 32), lr=best.get("LoRA"),
                           targets=None if not quick else {"q, v": TARGET_SETS["q, v"]})
    seconds = time.perf_counter() - t0
    return (
        "## Chapter 9: fine-tuning methods compared\n\n"
        f"Every method fine-tunes the course's base model ({s.n_base:,} parameters with the chat tokens) on chapter "
        f"8's instructions, padded batches of {s.batch_size} examples cut to {s.seq_len} tokens, AdamW without weight "
        f"decay, {s.warmup} warm-up steps then cosine decay, on {device.type}. Learning rate: the best of each "
        f"method's grid by the loss on {s.eval_batches * s.batch_size} fixed training examples after a "
        f"{sweep_steps}-step run (first table). "
        f"Validation loss: response tokens of {s.eval_batches * s.batch_size} held-out instructions after {steps} "
        f"steps. ms / step: median after {s.timing_warmup} warm-up steps (one run each, on a machine that may be "
        "shared: small differences can be noise; notebook 9.5 measures the spread of identical steps). "
        "Weights, grads and optimizer states are counted from tensors; activations (a forward with autograd) and "
        "the step peak (forward + backward + AdamW, above weights and optimizer states) are measured by the "
        f"allocator; total = weights + optimizer + step peak. One seed. {seconds:.0f} s in all.\n\n"
        "Learning-rate sweep:\n\n"
        + markdown_table(sweep, ["method", "lr", "train-split loss", "val loss"])
        + "\nComparison:\n\n" + markdown_table(rows, COLUMNS)
        + "\nLoRA rank (q, v) and target-module (r = 8) sweeps:\n\n"
        + markdown_table(lora_rows, ["sweep", "setting", "trainable", "% of model", "val loss", "ms / step"])
    )
