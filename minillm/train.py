"""Pretraining loop: AdamW, warm-up + cosine learning rate, gradient clipping, evaluation, checkpoints.

`train(model, data, cfg)` trains any model whose `forward(idx, targets)` returns `(logits, loss)` (the
`minillm.model.GPT`) on a `minillm.data.TokenData` (or any object whose `batch(split, B, T, generator)` gives
(x, y), or (x, y, kwargs) with extra forward arguments such as packed SFT batches), and returns a `History`
(loss of every step, validation loss every `eval_every` steps, tokens per second). With `cfg.out_dir` it writes
`ckpt.pt` (`minillm.checkpoint`) every `ckpt_every` steps and at the end; `train(..., resume=True)` continues from
it and gives bit-for-bit the same weights as a run that was never interrupted, because the checkpoint holds
everything that decides the next step: weights, AdamW's moments, the step, the RNG states of torch
(dropout) and of the batch sampler.

Choices (and where they come from):
- AdamW (Loshchilov & Hutter 2019) with betas (0.9, 0.95) and weight decay 0.1 on matrices only
  (not on norms' gains or biases), as in GPT-3 (Brown et al. 2020, appendix B) and Llama;
- linear warm-up, then cosine decay to 10% of the peak learning rate (GPT-3, Llama);
- the gradient's global norm clipped to 1.0.

Saving memory (chapter 10):
- `grad_accum` > 1 splits each batch of `batch_size` rows into `grad_accum` micro-batches of
  `batch_size // grad_accum` rows, runs forward + backward on each in turn and steps once. Each micro-batch's
  loss is divided by `grad_accum`, so the summed gradients are the full batch's (the mean of equal-sized
  micro-batch means is the batch mean; with masked targets of unequal counts it is the mean of the means).
  Activations are held for one micro-batch at a time. The batch is drawn once and split, so the data stream
  does not depend on `grad_accum`. Every micro-batch but the last runs inside `model.no_sync()` when the model
  has one (DistributedDataParallel: no all-reduce until the last backward); a plain module has none.
- `precision` "bf16" / "fp16" runs forward and loss under `torch.autocast(device_type, dtype)` (weights,
  gradients and AdamW states stay fp32: Micikevicius et al. 2018); backward runs outside autocast. fp16 adds
  `torch.amp.GradScaler` (dynamic loss scaling, `minillm.amp` builds it from scratch): gradients are unscaled
  before clipping, and the steps it skips (inf / NaN gradients) are listed in `History.skipped_steps`. Its
  state is saved in the checkpoint (`grad_scaler`), so an fp16 run resumes bit for bit. Validation runs in fp32.

Data parallel (chapter 11): when `torch.distributed` is initialised (torchrun, `minillm.distributed.launch`) and the
model is wrapped in a DDP (torch's or `minillm.distributed.ddp`'s), every rank draws the same global batch of
`batch_size` rows from the same generator and keeps rows r*B/N .. (r+1)*B/N (then splits those into `grad_accum`
micro-batches; extra batch arguments such as packed SFT batches' positions [B, T] and masks [B, 1, T, T] are sliced
along the same rows), so N ranks x B/N rows take exactly the step one process takes on B rows; the logged loss is the
mean over ranks (an all-reduce). Exactly, when every row counts the same number of targets: with masked targets (SFT)
the averaged gradient, like torch's DDP's, is the mean of the ranks' mean losses, not the mean over all the batch's
targets (as with `grad_accum`). A model that is not wrapped while a process group of N > 1 ranks is initialised is
refused (its ranks would drift apart). Every rank evaluates, identically (the same fixed windows, on the unwrapped
model, no communication): the number is the same everywhere, and no rank waits for rank 0 to finish evaluating before
the next collective. Only rank 0 shows the progress bar and writes checkpoints, of the unwrapped model (`.module`),
so a data-parallel checkpoint loads into a plain GPT and resumes on any world size that divides the batch. With
dropout the ranks draw their masks from the same seed, so a DDP run with dropout is not bit-equal to the
single-process one (the masks fall on different rows).

ZeRO (chapter 12): an optimizer that holds only this rank's slice of the state (`per_rank_state = True`, e.g.
`minillm.distributed.zero.ZeroOptimizer` around a `ZeroDataParallel` model, which averages nothing in backward)
averages the gradients itself, so clipping calls its `clip_grad_norm_` (the norm of the averaged gradient over all
shards: the number DDP's clipping sees). Checkpoints: rank 0 writes ckpt.pt with the full model as always (it loads
into a plain GPT; a model wrapper with `full_state_dict()`, ZeRO-3's, gathers it first on every rank and takes it
back on resume with `load_full_state_dict(checkpoint)`), and every rank writes `optim_shard_<rank>.pt` next to it,
before ckpt.pt (`minillm.checkpoint.save_train_checkpoint`: a crash in between resumes from the previous pair);
resuming needs the same number of ranks (else: one line saying to consolidate), and a full optimizer state (a run
without ZeRO) is re-sharded on resume.

The command line (`minillm train`) is `minillm.commands.train`; this module takes Python arguments and
prints nothing but an optional progress bar.

Leaves out: tensor / pipeline parallelism (chapter 13), ZeRO with fp16 loss scaling, fp8, 8-bit optimizer states
(`minillm.optim8bit`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from minillm.checkpoint import (
    load_checkpoint,
    load_optimizer_state,
    restore_model,
    restore_rng,
    save_train_checkpoint,
)


def lr_at(step: int, lr: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay from `lr` to `min_ratio * lr` at `total`."""
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


# precision -> the autocast dtype (None: no autocast, plain fp32)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    steps: int = 300
    batch_size: int = 16
    seq_len: int = 64
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int | None = None  # None: min(30, steps // 10), so a short run still gets a schedule that fits
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0
    eval_every: int = 100
    eval_batches: int = 8
    seed: int = 0
    out_dir: str | None = None
    ckpt_every: int = 0  # 0: only at the end
    progress: bool = True
    grad_accum: int = 1  # micro-batches per optimizer step; batch_size stays the rows of one step
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16" (autocast; fp16 with a GradScaler)

    def __post_init__(self):
        for name in ("steps", "batch_size", "seq_len", "eval_batches", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup is None:
            self.warmup = min(30, self.steps // 10)
        if not (math.isfinite(self.lr) and self.lr > 0) or not 0 <= self.min_lr_ratio <= 1:  # NaN fails both tests
            raise ValueError(f"need a finite lr > 0 and 0 <= min_lr_ratio <= 1, got lr={self.lr}, "
                             f"min_lr_ratio={self.min_lr_ratio}")
        if self.warmup < 0 or self.warmup > self.steps:
            raise ValueError(f"warmup must be in [0, steps={self.steps}], got {self.warmup}: lower warmup "
                             "or leave it unset (then it is min(30, steps // 10))")
        if self.eval_every < 0 or self.ckpt_every < 0:
            raise ValueError("eval_every and ckpt_every must be >= 0 (0 = only at the end)")
        self.betas = tuple(self.betas)
        if self.batch_size % self.grad_accum:
            raise ValueError(f"batch_size={self.batch_size} is not divisible by grad_accum={self.grad_accum}: "
                             "choose a grad_accum that divides batch_size (each micro-batch has "
                             "batch_size // grad_accum rows)")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")


@dataclass
class History:
    step: list[int] = field(default_factory=list)  # 1-based step numbers of train_loss
    train_loss: list[float] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    skipped_steps: list[int] = field(default_factory=list)  # fp16: steps the GradScaler skipped (inf/NaN grads)
    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Two groups of the trainable parameters: 2+ dimensions (matrices, embeddings) with cfg.weight_decay,
    the rest (norm gains, biases) without."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on parameters of 2 or more dimensions (matrices, embeddings) only."""
    return torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, betas=cfg.betas)


def unpack_batch(batch: tuple, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(x, y) or (x, y, kwargs) from `data.batch` -> x, y and the extra forward arguments, all on `device`.

    The third item carries what a batch needs beyond tokens and targets, e.g. the position ids and
    block-diagonal mask of packed SFT examples (`minillm.sft`): `model(x, y, **kwargs)`."""
    x, y, *rest = batch
    kwargs = rest[0] if rest else {}
    return x.to(device), y.to(device), {k: v.to(device) for k, v in kwargs.items()}


def split_batch(x: torch.Tensor, y: torch.Tensor, kwargs: dict[str, torch.Tensor], n: int
                ) -> list[tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]]:
    """`n` micro-batches of `len(x) // n` rows each (views, no copy); kwargs are split along their rows too."""
    rows = x.shape[0] // n
    if rows * n != x.shape[0]:
        raise ValueError(f"a batch of {x.shape[0]} rows cannot be split into {n} equal micro-batches")
    for k, v in kwargs.items():
        if v.shape[0] != x.shape[0]:
            raise ValueError(f"batch argument {k!r} has {v.shape[0]} rows, the tokens {x.shape[0]}: "
                             "gradient accumulation splits every batch tensor along its first dimension")
    return [(x[i * rows:(i + 1) * rows], y[i * rows:(i + 1) * rows],
             {k: v[i * rows:(i + 1) * rows] for k, v in kwargs.items()}) for i in range(n)]


def autocast_context(device: torch.device, precision: str) -> AbstractContextManager:
    """`torch.autocast(device.type, dtype)` for "bf16" / "fp16", a no-op context for "fp32"."""
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def backward_micro_batches(model: nn.Module, micro: list, cfg: TrainConfig, step: int,
                           scaler: torch.amp.GradScaler | None = None,
                           regularizer: Callable[[], torch.Tensor] | None = None) -> float:
    """Forward + backward over the micro-batches of one optimizer step; gradients add up in `.grad`.

    Each micro-batch's loss (plus the regulariser) is divided by the number of micro-batches, so the
    accumulated gradient is that of the mean loss. All but the last backward run under `model.no_sync()`
    when the model has it (DDP: one all-reduce per step). Returns the mean loss (the model's own)."""
    device = micro[0][0].device
    no_sync = getattr(model, "no_sync", nullcontext)
    n, total = len(micro), 0.0
    for i, (x, y, kwargs) in enumerate(micro):
        with nullcontext() if i == n - 1 else no_sync():
            with autocast_context(device, cfg.precision):
                _, loss = model(x, y, **kwargs)  # the loss is fp32 under autocast (cross_entropy is an fp32 op)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss.item()} at step {step}: lower lr "
                                         f"(now {cfg.lr}) or raise warmup (now {cfg.warmup})")
            obj = loss if regularizer is None else loss + regularizer()
            if n > 1:
                obj = obj / n
            (obj if scaler is None else scaler.scale(obj)).backward()
        total += loss.item()  # .item() waits for the device, so the step's clock is honest
    return total / n


def data_parallel_rank() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a data-parallel wrapper (anything with `.module` and `no_sync`), else the model."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) and hasattr(model, "no_sync") else model


@torch.no_grad()
def evaluate(model: nn.Module, data, cfg: TrainConfig, split: str = "val") -> float:
    """Mean cross-entropy over `cfg.eval_batches` windows, always the same ones (a fixed generator)."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(1234)
    was_training = model.training
    model.eval()
    total = 0.0
    for _ in range(cfg.eval_batches):
        x, y, kwargs = unpack_batch(data.batch(split, cfg.batch_size, cfg.seq_len, gen), device)
        total += model(x, y, **kwargs)[1].item()
    model.train(was_training)
    return total / cfg.eval_batches


def train(model: nn.Module, data, cfg: TrainConfig, resume: bool = False, until: int | None = None, *,
          regularizer: Callable[[], torch.Tensor] | None = None,
          after_step: Callable[[int], None] | None = None,
          optimizer: Callable[[nn.Module, TrainConfig], torch.optim.Optimizer] = make_optimizer) -> History:
    """Train `model` on `data` for `cfg.steps` steps (in total, counting the resumed ones).

    `until` stops early after that step (the schedule still runs to cfg.steps), as an interrupted run would.
    Two seams for methods that change the update without changing the model (e.g. AdaLoRA, chapter 9):
    `regularizer()` returns a scalar added to the loss before backward (the logged loss stays the model's);
    `after_step(step)` runs after each optimizer step, with step = 1, 2, ... and the gradients still in place.
    With `cfg.grad_accum` > 1, `regularizer()` is called once per micro-batch and divided like the loss.
    `optimizer(model, cfg)` builds the optimizer (default AdamW, `make_optimizer`; e.g. 8-bit Adam from
    `param_groups(model, cfg)`); the training loop sets each group's "lr" before every step.
    """
    device = next(model.parameters()).device
    rank, world = data_parallel_rank()
    if cfg.batch_size % (world * cfg.grad_accum):
        raise ValueError(f"batch_size={cfg.batch_size} must split into {world} ranks x grad_accum={cfg.grad_accum} "
                         f"equal micro-batches: use a multiple of {world * cfg.grad_accum}")
    plain = unwrap(model)  # what is saved, restored and evaluated: the model without its DDP wrapper
    if world > 1 and plain is model:
        raise ValueError(f"torch.distributed has {world} processes but the model is not wrapped in a DDP: wrap it "
                         "(torch.nn.parallel.DistributedDataParallel or minillm.distributed.ddp.DDP) or train "
                         "outside the process group")
    opt = optimizer(model, cfg)
    if getattr(opt, "per_rank_state", False) and cfg.precision == "fp16":  # ZeRO: each rank holds a slice
        raise ValueError("fp16's GradScaler cannot unscale a sharded optimizer's gradients: use precision bf16 "
                         "or fp32 with ZeRO")
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    history, start = History(), 0
    data_gen = torch.Generator().manual_seed(cfg.seed)
    ckpt = Path(cfg.out_dir) / "ckpt.pt" if cfg.out_dir else None
    if resume:
        if ckpt is None:
            raise ValueError("resume=True needs cfg.out_dir, the directory holding ckpt.pt")
        state = load_checkpoint(ckpt, device)
        # one-line error when the saved run used another model; a sharded model (ZeRO-3) takes its slice itself
        getattr(model, "load_full_state_dict", lambda st: restore_model(plain, st))(state)
        load_optimizer_state(opt, state, ckpt, rank, world, device)
        start, history = state["step"], History(**state["history"])
        restore_rng(state, data_gen)
        if scaler is not None and state.get("grad_scaler") is not None:  # absent: the saved run was not fp16
            scaler.load_state_dict(state["grad_scaler"])
    else:
        torch.manual_seed(cfg.seed)  # dropout draws the same masks in every run with this seed
    stop = cfg.steps if until is None else min(until, cfg.steps)
    steps = range(start, stop)
    if cfg.progress and rank == 0:
        from tqdm.auto import tqdm

        # leave=True: a closed (leave=False) notebook bar is saved as a hidden widget, an empty box in the book
        steps = tqdm(steps, desc="train", initial=start, total=cfg.steps, leave=True)
    tokenizer = getattr(data, "tokenizer", None)
    model.train()
    for step in steps:
        t0 = time.perf_counter()  # tokens/s counts the training step only, not evaluation or checkpoints
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr_ratio)
        x, y, kwargs = unpack_batch(data.batch("train", cfg.batch_size, cfg.seq_len, data_gen), device)
        if world > 1:  # the same global batch on every rank (same generator): keep this rank's rows
            x, y, kwargs = split_batch(x, y, kwargs, world)[rank]
        opt.zero_grad(set_to_none=True)
        loss = backward_micro_batches(model, split_batch(x, y, kwargs, cfg.grad_accum), cfg, step + 1, scaler,
                                      regularizer)
        if world > 1:  # the mean over ranks of the shards' mean losses = the global batch's mean loss
            mean = torch.tensor(loss, dtype=torch.float64, device=device)
            dist.all_reduce(mean)
            loss = mean.item() / world
        if scaler is not None:
            scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
        if cfg.grad_clip:  # a sharded optimizer (ZeRO) clips the global norm of the averaged gradient itself
            getattr(opt, "clip_grad_norm_", lambda c: nn.utils.clip_grad_norm_(model.parameters(), c))(cfg.grad_clip)
        if scaler is None:
            opt.step()
        else:
            scale = scaler.get_scale()
            scaler.step(opt)  # skipped when a gradient is inf / NaN
            scaler.update()
            if scaler.get_scale() < scale:  # the scale backs off exactly when the step was skipped
                history.skipped_steps.append(step + 1)
        if after_step is not None:
            after_step(step + 1)
        history.step.append(step + 1)
        history.train_loss.append(loss)
        history.tokens += x.numel() * world  # tokens of the global batch
        history.seconds += time.perf_counter() - t0
        done = step + 1 == cfg.steps
        if (cfg.eval_every and (step + 1) % cfg.eval_every == 0) or done:
            history.val_step.append(step + 1)
            history.val_loss.append(evaluate(plain, data, cfg))  # on every rank, the same number
            if cfg.progress and rank == 0:
                steps.set_postfix(train=f"{loss:.3f}", val=f"{history.val_loss[-1]:.3f}")
        if ckpt is not None and ((cfg.ckpt_every and (step + 1) % cfg.ckpt_every == 0) or done or step + 1 == stop):
            save_train_checkpoint(ckpt, model, plain, opt, step + 1, cfg, history, data_gen, tokenizer, scaler, rank,
                                  world)
    return history


def plot_history(history: History, ax=None, label: str = ""):
    """Training loss per step (thin) and validation loss (markers) on one axes; returns the axes."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(7, 4))[1]
    line = ax.plot(history.step, history.train_loss, lw=0.8, alpha=0.7, label=f"{label} train".strip())[0]
    ax.plot(history.val_step, history.val_loss, "o-", color=line.get_color(), label=f"{label} val".strip())
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.legend()
    return ax
