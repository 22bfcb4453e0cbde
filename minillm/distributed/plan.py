"""A 3D-parallelism calculator: memory per GPU, bytes per step and an estimated step time for (dp, tp, pp, ZeRO).

Implements (pure arithmetic, no processes):
- `ClusterSpec` (GPUs per node, memory in GiB, per-GPU bandwidth inside and between nodes, peak FLOP/s) with
  presets `DGX_A100` and `DGX_H100`; `ParallelPlan(dp, tp, pp, zero_stage, micro_batches, micro_batch_size,
  recompute)`; `GPT3_175B`, the GPT-3 175B shape (Brown et al. 2020, arXiv:2005.14165, table 2.1: 96 layers,
  d 12288, 96 heads of 128, context 2048; the GPT-2 BPE vocabulary of 50257);
- `estimate(cfg, cluster, plan)`: memory of the busiest pipeline stage, communication per GPU per step,
  the bubble (p - 1) / (m + p - 1) and a step time; `enumerate_plans(cfg, cluster, n_gpus, global_batch)` ->
  (feasible estimates sorted by time, infeasible plans with their reasons); `plan_table(...)` in Markdown;
- `device_mesh_layout(dp, tp, pp)`: the ranks of every tp / pp / dp group.

Memory (mixed precision Adam, 2 + 2 + 12 bytes per parameter: `minillm.train_memory.PRECISIONS["mixed"]`).
A stage holds n_layer / pp layers, the first also the embeddings, the last the final norm and lm_head (a tied
head keeps its own copy there, as Megatron does); tensor parallelism splits the matrices, the embedding and
the head by t (norms stay whole). ZeRO over the dp group (Rajbhandari et al. 2020, arXiv:1910.02054, sec. 5):
stage 1 divides the 12 bytes of optimizer states by dp, stage 2 also the gradients, stage 3 also the weights
(and gathers two layers' 16-bit weights at a time: the one computing and the one prefetched). Activations per
layer are `minillm.train_memory.activation_terms` at 2 bytes; under tensor parallelism without sequence
parallelism the norms, the inputs of the QKV and first MLP matmuls and the causal mask are replicated and the
rest is divided by t (Korthikanti et al. 2022, arXiv:2205.05198, sec. 4.2: sbh(10 + 24/t) + 5as^2b/t); the
first stage adds `model_activation_bytes`' embedding part, the last its head part (the logits split by t).
1F1B keeps p micro-batches in flight on the first stage (min(p, m)), one on the last (Narayanan et al. 2021,
arXiv:2104.04473, sec. 2.2.1). Full recomputation keeps each layer's s b h input and one layer's activations.

Communication (bytes one GPU sends per step, ring algorithms, 2-byte values): tensor parallel, 4 all-reduces
of b s h per layer per micro-batch (2 forward, 2 backward; 6 with recomputation, which re-runs the forward),
2 (t - 1)/t of the buffer each (Shoeybi et al. 2019, arXiv:1909.08053, sec. 3); pipeline, a middle stage
sends b s h forward and b s h backward per micro-batch; data parallel, 2 (d - 1)/d 2Psi for DP and ZeRO-1/2
(all-reduce = reduce-scatter + all-gather), 3 (d - 1)/d 2Psi for ZeRO-3 (ZeRO sec. 7), Psi the stage's
parameters on one GPU; those are per forward-backward: with m micro-batches of gradient accumulation ZeRO-2
reduce-scatters each micro-batch's gradients ((m + 1)(d - 1)/d 2Psi) and ZeRO-3 gathers and reduces every
micro-batch (3m (d - 1)/d 2Psi), as DeepSpeed and FSDP do when gradients stay sharded.
A group is inside one node when its ranks are (`device_mesh_layout`): tp always,
pp if tp pp <= gpus per node, dp if the whole mesh fits in a node; its bytes then move at the NVLink rate.

Time (a bandwidth-only model: no latency term alpha, no overlap of communication with computation):
  step = (m + p - 1) x (t_compute + t_tp + t_pp) + t_dp,
t_compute = flops_per_token(cfg, s) b s / (t p) / (peak x efficiency) per micro-batch (x 4/3 with recompute);
MFU = model FLOPs of the step / (n_gpus x peak x step) (`minillm.flops.flops_per_token`, no recompute credit).

Leaves out: sequence parallelism and selective recomputation, interleaved schedules, the vocab-parallel
embedding's and cross-entropy's own all-reduces, the tied embedding's all-reduce between first and last
stage, Megatron's scatter/gather of pipeline sends over tp, overlap, latency, stragglers, imbalanced stages,
and memory a framework or the CUDA context holds beyond `usable`. ZeRO-2/3 with pp > 1 is reported infeasible
(DeepSpeed allows only ZeRO-1 with its pipeline engine: stage 2/3 would reduce gradients every micro-batch).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from minillm.flops import GPUS, GiB, flops_per_token
from minillm.model import GPTConfig, count_params
from minillm.train_memory import OPTIMIZER_STATES, PRECISIONS, activation_terms, model_activation_bytes

# GPT-3 175B, Brown et al. 2020 table 2.1 (GPT-2 style: learned positions, LayerNorm, GeLU 4d MLP, tied head)
GPT3_175B = GPTConfig(vocab_size=50257, block_size=2048, n_layer=96, n_head=96, d_model=12288, pos="learned",
                      norm="layernorm", ffn="gelu", bias=True, tie_embeddings=True)
MIXED = PRECISIONS["mixed"]  # bytes per parameter: 2 weights, 2 grads, 4 master, 4 per Adam state
ACT_BYTES = MIXED["act"]  # 2: activations and what the collectives move are 16-bit


@dataclass(frozen=True)
class ClusterSpec:
    """A cluster of identical nodes. Bandwidths are per GPU and per direction, in bytes/s."""
    name: str
    gpus_per_node: int
    memory_gib: float  # a data sheet's "80 GB" is 80 GiB
    intra_node_bw: float  # NVLink
    inter_node_bw: float  # the node's network cards shared by its GPUs
    peak_flops: float  # dense 16-bit


# DGX A100: NVLink 3 600 GB/s per GPU both ways (300 each way), 8 HDR 200 Gb/s cards = 25 GB/s per GPU;
# DGX H100: NVLink 4 900 GB/s both ways (450), 8 NDR 400 Gb/s cards = 50 GB/s per GPU (NVIDIA DGX data sheets)
_A100, _H100 = GPUS["A100 80GB"], GPUS["H100 80GB"]
DGX_A100 = ClusterSpec("DGX A100 80GB", 8, _A100["memory GiB"], 300e9, 25e9, _A100["bf16 flops"])
DGX_H100 = ClusterSpec("DGX H100", 8, _H100["memory GiB"], 450e9, 50e9, _H100["bf16 flops"])


@dataclass(frozen=True)
class ParallelPlan:
    dp: int
    tp: int
    pp: int
    zero_stage: int = 1
    micro_batches: int = 1  # m, per pipeline (gradient accumulation steps when pp = 1)
    micro_batch_size: int = 1
    recompute: bool = False  # full activation recomputation

    @property
    def n_gpus(self) -> int:
        return self.dp * self.tp * self.pp

    @property
    def global_batch(self) -> int:
        return self.dp * self.micro_batches * self.micro_batch_size

    def bubble(self) -> float:
        """The idle fraction of 1F1B / GPipe: (p - 1) / (m + p - 1)."""
        return (self.pp - 1) / (self.micro_batches + self.pp - 1)


@dataclass
class PlanEstimate:
    plan: ParallelPlan
    memory: dict[str, float] = field(default_factory=dict)  # bytes on the busiest GPU, by part, and "total"
    comm: dict[str, float] = field(default_factory=dict)  # bytes sent per GPU per step: "tp", "pp", "dp"
    times: dict[str, float] = field(default_factory=dict)  # seconds: "compute", "tp", "pp", "dp", "step"
    bubble: float = 0.0
    mfu: float = 0.0
    reasons: list[str] = field(default_factory=list)  # why infeasible; empty when it fits


def device_mesh_layout(dp: int, tp: int, pp: int) -> dict[str, list[list[int]]]:
    """Ranks of each group with tp innermost, then pp, then dp: rank = (i_dp pp + i_pp) tp + i_tp.
    This is `init_device_mesh(dev, (dp, pp, tp), mesh_dim_names=("dp", "pp", "tp"))`: the mesh is
    arange(n).view(dp, pp, tp) and a dimension's groups are its 1-D slices with the other indices fixed
    Megatron-LM's default order differs: tp-dp-pp, pp outermost (Narayanan et al. 2021 sec. 3 and
    megatron/core/parallel_state.py: 16 GPUs, tp 2, pp 4 -> pipelines [0, 4, 8, 12], ...); both keep tp
    innermost. Consecutive ranks share a node, so tp <= gpus per node keeps the tensor-parallel all-reduces on
    NVLink; the bandwidth model in `estimate` assumes this module's order (dp outermost)."""
    if min(dp, tp, pp) < 1:
        raise ValueError(f"dp, tp, pp must be >= 1, got {dp}, {tp}, {pp}")
    rank = lambda d, p, t: (d * pp + p) * tp + t  # noqa: E731
    return {
        "tp": [[rank(d, p, t) for t in range(tp)] for d in range(dp) for p in range(pp)],
        "pp": [[rank(d, p, t) for p in range(pp)] for d in range(dp) for t in range(tp)],
        "dp": [[rank(d, p, t) for d in range(dp)] for p in range(pp) for t in range(tp)],
    }


def _structure_reasons(cfg: GPTConfig, cluster: ClusterSpec, plan: ParallelPlan) -> list[str]:
    r = []
    if min(plan.dp, plan.tp, plan.pp, plan.micro_batches, plan.micro_batch_size) < 1:
        r.append(f"dp, tp, pp, micro_batches and micro_batch_size must all be >= 1, got {plan}")
        return r
    if plan.tp > cluster.gpus_per_node:
        r.append(f"tp {plan.tp} > {cluster.gpus_per_node} GPUs per node (its all-reduces would cross the network)")
    if cfg.n_layer % plan.pp:
        r.append(f"n_layer {cfg.n_layer} % pp {plan.pp} != 0 (stages of unequal depth)")
    if cfg.n_head % plan.tp or cfg.n_kv_head % plan.tp:
        r.append(f"heads {cfg.n_head} (kv {cfg.n_kv_head}) % tp {plan.tp} != 0 (heads are split across tp)")
    if cfg.ffn_hidden % plan.tp:
        r.append(f"ffn_hidden {cfg.ffn_hidden} % tp {plan.tp} != 0 (the MLP's columns are split across tp)")
    if plan.zero_stage not in (0, 1, 2, 3):
        r.append(f"zero_stage must be 0-3, got {plan.zero_stage}")
    elif plan.zero_stage >= 2 and plan.pp > 1:
        r.append(f"ZeRO-{plan.zero_stage} with pp {plan.pp} > 1 (gradients would be reduced every micro-batch)")
    return r


def _stage_params(cfg: GPTConfig, tp: int, pp: int) -> dict[str, float]:
    """Parameters one GPU holds on the first and on the last stage (tp splits matrices, not norms)."""
    c = count_params(cfg)
    one_norm = cfg.d_model * (2 if cfg.norm == "layernorm" and cfg.bias else 1)
    norms_layer = one_norm * (1 if cfg.parallel_block else 2)
    final_norm = c["norms"] - cfg.n_layer * norms_layer
    layer = (c["per_layer"] - norms_layer) / tp + norms_layer
    layers = cfg.n_layer // pp * layer
    first = layers + c["embed_tokens"] / tp + c["embed_positions"]
    if pp == 1:  # one stage holds everything; a tied head is the embedding itself
        first = last = first + final_norm + c["lm_head"] / tp
    else:  # a tied head keeps its own copy of the embedding on the last stage
        last = layers + final_norm + cfg.vocab_size * cfg.d_model / tp
    return {"first": first, "last": last, "layer": layer}


def _layer_activations(cfg: GPTConfig, b: int, s: int, tp: int) -> float:
    """Bytes one layer saves per micro-batch on one tp rank (no sequence parallelism: see module docstring)."""
    terms = activation_terms(cfg, b, s, ACT_BYTES)
    replicated = terms["norms"] + terms["linear inputs"] * 2 / 3 + terms["causal mask"] + terms["rope"]
    return replicated + (sum(terms.values()) - replicated) / tp


def _states(psi: float, zero: int, dp: int) -> dict[str, float]:
    w, g = MIXED["weights"] * psi, MIXED["grads"] * psi
    o = (MIXED["master"] + OPTIMIZER_STATES["adamw"] * MIXED["state"]) * psi
    return {"weights": w / dp if zero >= 3 else w, "gradients": g / dp if zero >= 2 else g,
            "optimizer states": o / dp if zero >= 1 else o}


def estimate(cfg: GPTConfig, cluster: ClusterSpec, plan: ParallelPlan, seq: int | None = None,
             efficiency: float = 0.6, usable: float = 0.9) -> PlanEstimate:
    """Memory, bytes and time of one optimizer step of `plan` (module docstring). `efficiency`: the fraction of
    peak the matmuls reach; `usable`: the fraction of GPU memory a plan may fill."""
    s = seq or cfg.block_size
    b, m, t, p, d = plan.micro_batch_size, plan.micro_batches, plan.tp, plan.pp, plan.dp
    est = PlanEstimate(plan, reasons=_structure_reasons(cfg, cluster, plan))
    if est.reasons:
        return est
    est.bubble = plan.bubble()
    params = _stage_params(cfg, t, p)
    layer_act = _layer_activations(cfg, b, s, t)
    n_stage = cfg.n_layer // p
    bsh = b * s * cfg.d_model * ACT_BYTES  # one micro-batch's hidden states, bytes
    # model_activation_bytes' embedding (int64 ids) and head (final norm, lm_head input, log-softmax of the
    # logits, targets); tensor parallelism splits only the (b, s, V) log-softmax
    outside = model_activation_bytes(cfg, b, s, ACT_BYTES)
    embed_terms = outside["embedding"]
    head_terms = outside["head"] - cfg.vocab_size * b * s * ACT_BYTES * (1 - 1 / t)

    def stage_memory(psi: float, in_flight: int, head: float) -> dict[str, float]:
        out = _states(psi, plan.zero_stage, d)
        if plan.zero_stage == 3:
            out["gathered layers"] = 2 * MIXED["weights"] * params["layer"]
        if plan.recompute:  # the layer inputs of every micro-batch in flight + one layer being recomputed
            out["activations"] = in_flight * n_stage * bsh + layer_act + head
        else:
            out["activations"] = in_flight * n_stage * layer_act + head
        out["total"] = sum(out.values())
        return out

    first = stage_memory(params["first"], min(p, m), embed_terms + (head_terms if p == 1 else 0))
    last = stage_memory(params["last"], 1, head_terms) if p > 1 else first
    est.memory = max(first, last, key=lambda x: x["total"])
    budget = usable * cluster.memory_gib * GiB
    if est.memory["total"] > budget:
        est.reasons.append(f"memory {est.memory['total'] / GiB:.1f} GiB > {usable:.0%} of "
                           f"{cluster.memory_gib:g} GiB per GPU")
    psi = max(params["first"], params["last"])
    n_ar = 6 if plan.recompute else 4
    est.comm = {
        "tp": m * n_stage * n_ar * 2 * (t - 1) / t * bsh,
        "pp": 2 * m * bsh if p > 1 else 0.0,
        # ZeRO-2/3 keep only a gradient shard, so each micro-batch's backward reduce-scatters (no accumulation
        # in full gradients); ZeRO-3 also all-gathers the weights in every micro-batch's forward and backward
        "dp": {0: 2, 1: 2, 2: m + 1, 3: 3 * m}[plan.zero_stage] * (d - 1) / d * MIXED["grads"] * psi,
    }
    node = cluster.gpus_per_node
    bw = {"tp": cluster.intra_node_bw,
          "pp": cluster.intra_node_bw if t * p <= node else cluster.inter_node_bw,
          "dp": cluster.intra_node_bw if plan.n_gpus <= node else cluster.inter_node_bw}
    model_flops_mb = flops_per_token(cfg, s) * b * s  # one micro-batch, all GPUs of a pipeline together
    slots = m + p - 1
    compute = model_flops_mb * (4 / 3 if plan.recompute else 1) / (t * p) / (cluster.peak_flops * efficiency)
    est.times = {"compute": slots * compute, "tp": slots * est.comm["tp"] / m / bw["tp"],
                 "pp": slots * est.comm["pp"] / m / bw["pp"], "dp": est.comm["dp"] / bw["dp"]}
    est.times["step"] = sum(est.times.values())
    est.mfu = model_flops_mb * m * d / (plan.n_gpus * cluster.peak_flops * est.times["step"])
    return est


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def enumerate_plans(cfg: GPTConfig, cluster: ClusterSpec, n_gpus: int, global_batch: int,
                    micro_batch_sizes: tuple[int, ...] = (1, 2, 4, 8), zero_stages: tuple[int, ...] = (0, 1, 2, 3),
                    seq: int | None = None, efficiency: float = 0.6,
                    usable: float = 0.9) -> tuple[list[PlanEstimate], list[PlanEstimate]]:
    """Every (dp, tp, pp) with dp tp pp = n_gpus, ZeRO stage, micro-batch size and recompute on / off:
    (feasible estimates, fastest first; infeasible ones with their reasons)."""
    if n_gpus < 1 or global_batch < 1:
        raise ValueError(f"need n_gpus >= 1 and global_batch >= 1, got {n_gpus}, {global_batch}")
    feasible, infeasible = [], []
    for tp in _divisors(n_gpus):
        for pp in _divisors(n_gpus // tp):
            dp = n_gpus // (tp * pp)
            for mbs in micro_batch_sizes:
                for zero in zero_stages:
                    for rec in (False, True):
                        if global_batch % (dp * mbs):
                            plan = ParallelPlan(dp, tp, pp, zero, 0, mbs, rec)
                            infeasible.append(PlanEstimate(plan, reasons=[
                                f"global batch {global_batch} % (dp {dp} x micro-batch {mbs}) != 0"]))
                            continue
                        plan = ParallelPlan(dp, tp, pp, zero, global_batch // (dp * mbs), mbs, rec)
                        est = estimate(cfg, cluster, plan, seq, efficiency, usable)
                        (infeasible if est.reasons else feasible).append(est)
    feasible.sort(key=lambda e: e.times["step"])
    return feasible, infeasible


_REASON_LABELS = (("tp", "tp > node"), ("n_layer", "layers % pp"), ("heads", "heads % tp"), ("ffn_hidden", "ffn % tp"),
                  ("ZeRO", "ZeRO-2/3 with pp"), ("global", "batch % (dp b)"), ("memory", "memory"))


def plan_table(cfg: GPTConfig = GPT3_175B, cluster: ClusterSpec = DGX_A100, n_gpus: int = 1024,
               global_batch: int = 1536, top: int = 10, **kwargs) -> str:
    """A Markdown table of the `top` fastest feasible plans (default: GPT-3 175B on 1,024 A100-80GB,
    batch 1536 as in Narayanan et al. 2021, sec. 5.1; NVIDIA's Megatron-LM example script for it,
    examples/gpt3/train_gpt3_175b_distributed.sh, uses tp 8, pp 16, micro-batch 1), with the count of
    infeasible plans by first reason."""
    feasible, infeasible = enumerate_plans(cfg, cluster, n_gpus, global_batch, **kwargs)
    rows = ["| dp | tp | pp | ZeRO | m | b | recompute | memory GiB | TP GB | PP GB | DP GB | bubble | step s | MFU |",
            "|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in feasible[:top]:
        q = e.plan
        rows.append(f"| {q.dp} | {q.tp} | {q.pp} | {q.zero_stage} | {q.micro_batches} | {q.micro_batch_size} | "
                    f"{'yes' if q.recompute else 'no'} | {e.memory['total'] / GiB:.1f} | {e.comm['tp'] / 1e9:.1f} | "
                    f"{e.comm['pp'] / 1e9:.2f} | {e.comm['dp'] / 1e9:.1f} | {e.bubble:.3f} | "
                    f"{e.times['step']:.1f} | {e.mfu:.1%} |")
    counts: dict[str, int] = {}
    for e in infeasible:
        key = next((label for prefix, label in _REASON_LABELS if e.reasons[0].startswith(prefix)), "other")
        counts[key] = counts.get(key, 0) + 1
    rows.append("")
    rows.append(f"{len(feasible)} feasible plans, {len(infeasible)} infeasible (first reason: "
                + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ").")
    return "\n".join(rows)
