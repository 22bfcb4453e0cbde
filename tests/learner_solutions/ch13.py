"""Learner solutions for exercises 13.x (pipeline, tensor and 3D parallelism), written from the notebook text only."""
# ruff: noqa: B905, B007

import math
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------------------------------------------------------
# 13.1 The 1F1B order of one stage
# ---------------------------------------------------------------------------------------------------------------


def valid_13_1_phases(p: int, m: int, s: int) -> list[tuple[str, int]]:
    """Warm-up, steady pairs, drain."""
    w = min(p - 1 - s, m)
    out = [("F", i) for i in range(w)]
    for k in range(m - w):
        out += [("F", w + k), ("B", k)]
    out += [("B", i) for i in range(m - w, m)]
    return out


def valid_13_1_counters(p: int, m: int, s: int) -> list[tuple[str, int]]:
    """Two counters, a flag saying whether the next step of the steady state is a backward."""
    nf = nb = 0
    out = []
    while nf < m and nf < p - 1 - s:
        out.append(("F", nf))
        nf += 1
    while nf < m:
        out.append(("F", nf))
        nf += 1
        out.append(("B", nb))
        nb += 1
    while nb < m:
        out.append(("B", nb))
        nb += 1
    return out


def valid_13_1_max_zero(p: int, m: int, s: int) -> list[tuple[str, int]]:
    """Same, with the warm-up clipped at both ends and the list built by index arithmetic."""
    w = max(0, min(p - 1 - s, m))
    fwd = [("F", i) for i in range(m)]
    bwd = [("B", i) for i in range(m)]
    steady = [a for pair in zip(fwd[w:], bwd[: m - w]) for a in pair]
    return fwd[:w] + steady + bwd[m - w:]


# Breaks "a warm-up of p - 1 - s forwards": uses p - s (one forward too many).
def wrong_13_1_warmup_p_minus_s(p: int, m: int, s: int) -> list[tuple[str, int]]:
    w = min(p - s, m)
    out = [("F", i) for i in range(w)]
    for k in range(m - w):
        out += [("F", w + k), ("B", k)]
    out += [("B", i) for i in range(m - w, m)]
    return out


# Breaks "then alternates: one forward, then one backward": backward first in each pair.
def wrong_13_1_b_then_f(p: int, m: int, s: int) -> list[tuple[str, int]]:
    w = min(p - 1 - s, m)
    out = [("F", i) for i in range(w)]
    for k in range(m - w):
        out += [("B", k), ("F", w + k)]
    out += [("B", i) for i in range(m - w, m)]
    return out


# Breaks "a warm-up of p - 1 - s forwards": warm-up of s forwards (stage numbering reversed).
def wrong_13_1_warmup_s(p: int, m: int, s: int) -> list[tuple[str, int]]:
    w = min(s, m)
    out = [("F", i) for i in range(w)]
    for k in range(m - w):
        out += [("F", w + k), ("B", k)]
    out += [("B", i) for i in range(m - w, m)]
    return out


# Breaks "(all m of them when m is smaller)": no clipping at m, so it emits forwards of micro-batches that don't exist.
def wrong_13_1_no_min(p: int, m: int, s: int) -> list[tuple[str, int]]:
    w = p - 1 - s
    out = [("F", i) for i in range(w)]
    for k in range(max(m - w, 0)):
        out += [("F", w + k), ("B", k)]
    out += [("B", i) for i in range(max(m - w, 0), m)]
    return out


# Breaks the 1F1B order altogether: GPipe (all forwards, then all backwards).
def wrong_13_1_gpipe(p: int, m: int, s: int) -> list[tuple[str, int]]:
    return [("F", i) for i in range(m)] + [("B", i) for i in range(m)]


# ---------------------------------------------------------------------------------------------------------------
# 13.2 The bubble of a pipeline timeline
# ---------------------------------------------------------------------------------------------------------------


def valid_13_2_busy(tl) -> float:
    makespan = max(end for row in tl for _, _, end in row)
    busy = sum(end - start for row in tl for _, start, end in row)
    return float(1 - busy / (len(tl) * makespan))


def valid_13_2_idle_gaps(tl) -> float:
    """Add up the idle pieces explicitly: before the first action, gaps, after the last."""
    makespan = max(max(e for _, _, e in row) for row in tl)
    idle = 0.0
    for row in tl:
        acts = sorted(row, key=lambda a: a[1])
        t = 0.0
        for _, st, en in acts:
            idle += st - t
            t = en
        idle += makespan - t
    return idle / (len(tl) * makespan)


def valid_13_2_fraction(tl) -> float:
    """Exact arithmetic with Fraction, then a float."""
    makespan = max(Fraction(e).limit_denominator(10**9) for row in tl for _, _, e in row)
    busy = sum(Fraction(e).limit_denominator(10**9) - Fraction(st).limit_denominator(10**9)
               for row in tl for _, st, e in row)
    return float(1 - busy / (len(tl) * makespan))


# Breaks "after its last": each stage's time counted only up to its own last action.
def wrong_13_2_own_end(tl) -> float:
    busy = sum(e - st for row in tl for _, st, e in row)
    total = sum(max(e for _, _, e in row) for row in tl)
    return float(1 - busy / total)


# Breaks "before its first action": each stage's window starts at its own first action.
def wrong_13_2_own_start(tl) -> float:
    makespan = max(e for row in tl for _, _, e in row)
    busy = sum(e - st for row in tl for _, st, e in row)
    total = sum(makespan - min(st for _, st, _ in row) for row in tl)
    return float(1 - busy / total)


# Breaks "Do not assume every action takes the same time": uses the first action's length for all.
def wrong_13_2_equal_actions(tl) -> float:
    makespan = max(e for row in tl for _, _, e in row)
    _, st0, e0 = tl[0][0]
    busy = sum(len(row) for row in tl) * (e0 - st0)
    return float(1 - busy / (len(tl) * makespan))


# Breaks "the fraction ... during which a stage does nothing": returns the busy fraction.
def wrong_13_2_busy_fraction(tl) -> float:
    makespan = max(e for row in tl for _, _, e in row)
    busy = sum(e - st for row in tl for _, st, e in row)
    return float(busy / (len(tl) * makespan))


# ---------------------------------------------------------------------------------------------------------------
# 13.3 Activations one stage holds at once
# ---------------------------------------------------------------------------------------------------------------


def valid_13_3_set(actions) -> int:
    held: set[int] = set()
    peak = 0
    for kind, i in actions:
        if kind == "F":
            held.add(i)
        else:
            held.discard(i)
        peak = max(peak, len(held))
    return peak


def valid_13_3_counter(actions) -> int:
    """A running count (+1 per forward, -1 per backward): which micro-batch doesn't matter for the size."""
    n = peak = 0
    for kind, _ in actions:
        n += 1 if kind == "F" else -1
        peak = max(peak, n)
    return peak


def valid_13_3_cumsum(actions) -> int:
    steps = torch.tensor([1 if k == "F" else -1 for k, _ in actions], dtype=torch.int64)
    if steps.numel() == 0:
        return 0
    return int(max(0, int(torch.cumsum(steps, 0).max())))


# Breaks "the backwards may come in any order": assumes backward i frees micro-batches up to i.
def wrong_13_3_in_order(actions) -> int:
    held: set[int] = set()
    peak = 0
    for kind, i in actions:
        if kind == "F":
            held.add(i)
        else:
            held = {j for j in held if j > i}
        peak = max(peak, len(held))
    return peak


# Breaks "the largest number ... at the same time": the longest run of consecutive forwards.
def wrong_13_3_longest_f_run(actions) -> int:
    run = best = 0
    for kind, _ in actions:
        run = run + 1 if kind == "F" else 0
        best = max(best, run)
    return best


# Breaks "holds from the moment its forward has run until its backward has run": the peak measured only
# just after backwards (the micro-batch just freed is not counted, the one just run forward is missed).
def wrong_13_3_after_backward_only(actions) -> int:
    n = peak = 0
    for kind, _ in actions:
        n += 1 if kind == "F" else -1
        if kind == "B":
            peak = max(peak, n)
    return peak


# Breaks "until its backward has run": counts held ones before the backward, plus one (off by one).
def wrong_13_3_off_by_one(actions) -> int:
    n = peak = 0
    for kind, _ in actions:
        n += 1 if kind == "F" else -1
        peak = max(peak, n)
    return peak - 1


# ---------------------------------------------------------------------------------------------------------------
# 13.4 The Megatron MLP, rank by rank
# ---------------------------------------------------------------------------------------------------------------


def valid_13_4_loop(x, a_shards, b_shards):
    return [F.gelu(x @ a) @ b for a, b in zip(a_shards, b_shards)]


def valid_13_4_batched(x, a_shards, b_shards):
    """All ranks at once: stack the shards and use a batched matmul, then unbind."""
    a = torch.stack(a_shards)                 # (N, h, f/N)
    b = torch.stack(b_shards)                 # (N, f/N, h)
    hid = F.gelu(torch.matmul(x.unsqueeze(0), a))  # (N, b, f/N)
    out = torch.matmul(hid, b)                # (N, b, h)
    return [o.clone() for o in out.unbind(0)]


def valid_13_4_erf(x, a_shards, b_shards):
    """Exact GeLU written with erf, einsum for the products."""
    outs = []
    for a, b in zip(a_shards, b_shards):
        z = torch.einsum("bh,hf->bf", x, a)
        g = 0.5 * z * (1 + torch.erf(z / math.sqrt(2.0)))
        outs.append(torch.einsum("bf,fh->bh", g, b))
    return outs


# Breaks "before that all-reduce": returns the summed Y on every rank.
def wrong_13_4_all_reduced(x, a_shards, b_shards):
    parts = [F.gelu(x @ a) @ b for a, b in zip(a_shards, b_shards)]
    y = torch.stack(parts).sum(0)
    return [y.clone() for _ in parts]


# Breaks "The GeLU is the exact one": uses the tanh approximation.
def wrong_13_4_tanh_gelu(x, a_shards, b_shards):
    return [F.gelu(x @ a, approximate="tanh") @ b for a, b in zip(a_shards, b_shards)]


# Breaks "Y = GeLU(xA) B": GeLU applied after the second product.
def wrong_13_4_gelu_after_b(x, a_shards, b_shards):
    return [F.gelu(x @ a @ b) for a, b in zip(a_shards, b_shards)]


# Breaks "Nothing is summed or divided": divides each partial by N (an averaging all-reduce in mind).
def wrong_13_4_divided(x, a_shards, b_shards):
    n = len(a_shards)
    return [F.gelu(x @ a) @ b / n for a, b in zip(a_shards, b_shards)]


# Breaks "leave the inputs as they were": zeroes the A shards in place after using them (to "free" them).
def wrong_13_4_inplace(x, a_shards, b_shards):
    outs = [F.gelu(x @ a) @ b for a, b in zip(a_shards, b_shards)]
    for a in a_shards:
        a.zero_()
    return outs


# ---------------------------------------------------------------------------------------------------------------
# 13.5 Vocab-parallel cross-entropy
# ---------------------------------------------------------------------------------------------------------------


def valid_13_5_ranks(shards, target):
    v = shards[0].shape[-1]
    m = torch.stack([s.max(dim=-1).values for s in shards]).max(dim=0).values      # all-reduce max
    sums = sum(torch.exp(s - m[:, None]).sum(dim=-1) for s in shards)               # all-reduce sum
    zt = torch.zeros_like(m)
    for r, s in enumerate(shards):
        own = (target >= r * v) & (target < (r + 1) * v)
        local = (target - r * v).clamp(0, v - 1)
        zr = s.gather(-1, local[:, None]).squeeze(-1) - m
        zt = zt + torch.where(own, zr, torch.zeros_like(zr))                       # all-reduce sum
    return torch.log(sums) - zt


def valid_13_5_float64_loop(shards, target):
    """Per token, per rank, in float64, cast back at the end."""
    n_tok = target.shape[0]
    v = shards[0].shape[-1]
    out = torch.empty(n_tok, dtype=torch.float64)
    for t in range(n_tok):
        mx = max(float(s[t].double().max()) for s in shards)
        tot = 0.0
        zt = 0.0
        for r, s in enumerate(shards):
            row = s[t].double()
            tot += float(torch.exp(row - mx).sum())
            if r * v <= int(target[t]) < (r + 1) * v:
                zt += float(row[int(target[t]) - r * v]) - mx
        out[t] = math.log(tot) - zt
    return out.to(shards[0].dtype)


def valid_13_5_owner_div(shards, target):
    """Owner rank found with integer division, global max as amax of maxima."""
    v = shards[0].shape[-1]
    maxima = torch.stack([s.amax(-1) for s in shards], 0)
    m = maxima.amax(0)
    partial_sums = torch.stack([(s - m.unsqueeze(-1)).exp().sum(-1) for s in shards], 0)
    owner = torch.div(target, v, rounding_mode="floor")
    contrib = []
    for r, s in enumerate(shards):
        idx = torch.where(owner == r, target - r * v, torch.zeros_like(target))
        val = s.gather(1, idx.unsqueeze(1)).squeeze(1) - m
        contrib.append(val * (owner == r).to(s.dtype))
    return partial_sums.sum(0).log() - torch.stack(contrib, 0).sum(0)


# Breaks "the maximum m over the whole vocabulary": each rank uses its own maximum.
def wrong_13_5_local_max(shards, target):
    v = shards[0].shape[-1]
    sums = 0
    zt = torch.zeros(target.shape[0], dtype=shards[0].dtype)
    ms = []
    for r, s in enumerate(shards):
        mr = s.max(-1).values
        ms.append(mr)
        sums = sums + torch.exp(s - mr[:, None]).sum(-1)
        own = (target >= r * v) & (target < (r + 1) * v)
        local = (target - r * v).clamp(0, v - 1)
        zt = zt + torch.where(own, s.gather(1, local[:, None]).squeeze(1) - mr, torch.zeros_like(mr))
    return torch.log(sums) - zt


# Breaks "It must stay finite for logits in the hundreds": no max subtracted.
def wrong_13_5_no_max(shards, target):
    v = shards[0].shape[-1]
    sums = sum(torch.exp(s).sum(-1) for s in shards)
    zt = torch.zeros(target.shape[0], dtype=shards[0].dtype)
    for r, s in enumerate(shards):
        own = (target >= r * v) & (target < (r + 1) * v)
        local = (target - r * v).clamp(0, v - 1)
        zt = zt + torch.where(own, s.gather(1, local[:, None]).squeeze(1), torch.zeros_like(zt))
    return torch.log(sums) - zt


# Breaks "rank r holds the logits of ids rV/N ... (r+1)V/N - 1": uses the global id as the local index
# (modulo v) on every rank and adds all of them.
def wrong_13_5_no_owner(shards, target):
    v = shards[0].shape[-1]
    m = torch.stack([s.max(-1).values for s in shards]).max(0).values
    sums = sum(torch.exp(s - m[:, None]).sum(-1) for s in shards)
    zt = sum(s.gather(1, (target % v)[:, None]).squeeze(1) - m for s in shards)
    return torch.log(sums) - zt


# Breaks "return the M per-token losses, a tensor of shape (M,)": returns the mean loss.
def wrong_13_5_mean(shards, target):
    return valid_13_5_ranks(shards, target).mean()


# Breaks "the loss is log sum - z_target": forgets to add m back (uses log of shifted sum minus raw z_target).
def wrong_13_5_forgot_m(shards, target):
    v = shards[0].shape[-1]
    m = torch.stack([s.max(-1).values for s in shards]).max(0).values
    sums = sum(torch.exp(s - m[:, None]).sum(-1) for s in shards)
    zt = torch.zeros_like(m)
    for r, s in enumerate(shards):
        own = (target >= r * v) & (target < (r + 1) * v)
        local = (target - r * v).clamp(0, v - 1)
        zt = zt + torch.where(own, s.gather(1, local[:, None]).squeeze(1), torch.zeros_like(m))
    return torch.log(sums) - zt


# ---------------------------------------------------------------------------------------------------------------
# 13.6 Bytes a GPU sends for one tensor-parallel layer
# ---------------------------------------------------------------------------------------------------------------


def valid_13_6_formula(b: int, s: int, h: int, t: int, nbytes: int) -> float:
    return 4 * 2 * (t - 1) / t * b * s * h * nbytes


def valid_13_6_counted(b: int, s: int, h: int, t: int, nbytes: int) -> float:
    """Count the all-reduces: g after attention and MLP (forward), f before both (backward)."""
    buf = b * s * h * nbytes
    per_allreduce = Fraction(2 * (t - 1), t) * buf
    n_allreduce = 2 + 2
    return float(n_allreduce * per_allreduce)


# Breaks "forward and backward together": counts only the forward's two all-reduces.
def wrong_13_6_forward_only(b: int, s: int, h: int, t: int, nbytes: int) -> float:
    return 2 * 2 * (t - 1) / t * b * s * h * nbytes


# Breaks "it sends 2(t-1)/t of the buffer": uses (t-1)/t (reduce-scatter only).
def wrong_13_6_no_factor2(b: int, s: int, h: int, t: int, nbytes: int) -> float:
    return 4 * (t - 1) / t * b * s * h * nbytes


# Breaks "One GPU sends nothing" / the ring fraction: uses 2 (t-1) (the whole buffer each step).
def wrong_13_6_t_minus_1(b: int, s: int, h: int, t: int, nbytes: int) -> float:
    return 4 * 2 * (t - 1) * b * s * h * nbytes


# Breaks "with nbytes bytes per activation value": counts values, not bytes.
def wrong_13_6_no_nbytes(b: int, s: int, h: int, t: int, nbytes: int) -> float:
    return 4 * 2 * (t - 1) / t * b * s * h


# ---------------------------------------------------------------------------------------------------------------
# 13.7 The groups of a rank in a dp x pp x tp mesh
# ---------------------------------------------------------------------------------------------------------------


def valid_13_7_formula(rank: int, dp: int, tp: int, pp: int) -> dict[str, list[int]]:
    i_tp = rank % tp
    i_pp = (rank // tp) % pp
    i_dp = rank // (tp * pp)
    return {
        "tp": [(i_dp * pp + i_pp) * tp + k for k in range(tp)],
        "pp": [(i_dp * pp + k) * tp + i_tp for k in range(pp)],
        "dp": [(k * pp + i_pp) * tp + i_tp for k in range(dp)],
    }


def valid_13_7_enumerate(rank: int, dp: int, tp: int, pp: int) -> dict[str, list[int]]:
    """List every coordinate, find the rank's, filter (reversed order, allowed: any order)."""
    coords = {}
    for a in range(dp):
        for b in range(pp):
            for c in range(tp):
                coords[(a * pp + b) * tp + c] = (a, b, c)
    d0, p0, t0 = coords[rank]
    groups = {"tp": [], "pp": [], "dp": []}
    for r, (a, b, c) in sorted(coords.items(), reverse=True):
        if a == d0 and b == p0:
            groups["tp"].append(r)
        if a == d0 and c == t0:
            groups["pp"].append(r)
        if b == p0 and c == t0:
            groups["dp"].append(r)
    return groups


def valid_13_7_numpy(rank: int, dp: int, tp: int, pp: int) -> dict[str, list[int]]:
    grid = np.arange(dp * pp * tp).reshape(dp, pp, tp)
    a, b, c = (int(v) for v in np.argwhere(grid == rank)[0])
    return {"tp": grid[a, b, :].tolist(), "pp": grid[a, :, c].tolist(), "dp": grid[:, b, c].tolist()}


# Breaks "tp innermost, then pp": numbers with pp innermost.
def wrong_13_7_pp_inner(rank: int, dp: int, tp: int, pp: int) -> dict[str, list[int]]:
    grid = np.arange(dp * pp * tp).reshape(dp, tp, pp)
    a, c, b = (int(v) for v in np.argwhere(grid == rank)[0])
    return {"tp": grid[a, :, b].tolist(), "pp": grid[a, c, :].tolist(), "dp": grid[:, c, b].tolist()}


# Breaks "dp group: ranks that share its i_pp and i_tp": dp group steps by tp instead of tp * pp.
def wrong_13_7_dp_step(rank: int, dp: int, tp: int, pp: int) -> dict[str, list[int]]:
    g = valid_13_7_formula(rank, dp, tp, pp)
    i_tp = rank % tp
    i_pp = (rank // tp) % pp
    g["dp"] = [i_pp * tp + i_tp + k * tp for k in range(dp)]
    return g


# Breaks the definitions of the groups: tp and pp groups swapped.
def wrong_13_7_swapped(rank: int, dp: int, tp: int, pp: int) -> dict[str, list[int]]:
    g = valid_13_7_formula(rank, dp, tp, pp)
    return {"tp": g["pp"], "pp": g["tp"], "dp": g["dp"]}


# Breaks "(rank included)": leaves the rank itself out of each group.
def wrong_13_7_exclude_self(rank: int, dp: int, tp: int, pp: int) -> dict[str, list[int]]:
    g = valid_13_7_formula(rank, dp, tp, pp)
    return {k: [r for r in v if r != rank] for k, v in g.items()}


# ---------------------------------------------------------------------------------------------------------------
# 13.8 Model-state bytes per GPU of a 3D plan
# ---------------------------------------------------------------------------------------------------------------


def valid_13_8_cases(psi: float, dp: int, tp: int, pp: int, zero_stage: int) -> float:
    q = psi / (tp * pp)
    if zero_stage == 0:
        return 16 * q
    if zero_stage == 1:
        return (2 + 2 + 12 / dp) * q
    if zero_stage == 2:
        return (2 + 14 / dp) * q
    return 16 * q / dp


def valid_13_8_per_kind(psi: float, dp: int, tp: int, pp: int, zero_stage: int) -> float:
    """Each kind (weights 2, grads 2, optimizer 12) divided by dp when the stage reaches it."""
    q = psi / tp / pp
    total = 0.0
    # (bytes per parameter, first ZeRO stage that shards it)
    for nb, stage in ((12, 1), (2, 2), (2, 3)):
        total += nb * q / (dp if zero_stage >= stage else 1)
    return total


# Breaks "each GPU is responsible for psi / (tp * pp)": ignores pipeline parallelism.
def wrong_13_8_no_pp(psi: float, dp: int, tp: int, pp: int, zero_stage: int) -> float:
    return valid_13_8_cases(psi * pp, dp, tp, pp, zero_stage)


# Breaks "(stage 2) also the gradients": stage 2 treated like stage 1.
def wrong_13_8_stage2_as_1(psi: float, dp: int, tp: int, pp: int, zero_stage: int) -> float:
    return valid_13_8_cases(psi, dp, tp, pp, 1 if zero_stage == 2 else zero_stage)


# Breaks "12 bytes of optimizer states (the fp32 master copy and the two moments)": counts 8 (moments only).
def wrong_13_8_opt8(psi: float, dp: int, tp: int, pp: int, zero_stage: int) -> float:
    q = psi / (tp * pp)
    total = 0.0
    for nb, stage in ((8, 1), (2, 2), (2, 3)):
        total += nb * q / (dp if zero_stage >= stage else 1)
    return total


# Breaks "stage 0 splits nothing": divides everything by dp in every stage (data parallel as if model parallel).
def wrong_13_8_all_by_dp(psi: float, dp: int, tp: int, pp: int, zero_stage: int) -> float:
    return 16 * psi / (tp * pp * dp)


# ---------------------------------------------------------------------------------------------------------------
# 13.9 A pipeline step: time and bubble
# ---------------------------------------------------------------------------------------------------------------


def valid_13_9_formula(m: int, p: int, slot: float, t_dp: float) -> tuple[float, float]:
    n = m + p - 1
    return n * slot + t_dp, (p - 1) / n


def valid_13_9_simulated(m: int, p: int, slot: float, t_dp: float) -> tuple[float, float]:
    """Stage s busy from slot s to s + m; the step ends when the last stage finishes."""
    end_slots = max(s + m for s in range(p))
    busy = m
    return end_slots * slot + t_dp, float(Fraction(end_slots - busy, end_slots))


# Breaks "the share of the slots of a stage spent idle": (p - 1) / m (idle relative to busy).
def wrong_13_9_over_m(m: int, p: int, slot: float, t_dp: float) -> tuple[float, float]:
    return (m + p - 1) * slot + t_dp, (p - 1) / m


# Breaks "then the data-parallel gradient all-reduce takes t_dp seconds": leaves t_dp out.
def wrong_13_9_no_tdp(m: int, p: int, slot: float, t_dp: float) -> tuple[float, float]:
    return (m + p - 1) * slot, (p - 1) / (m + p - 1)


# Breaks "each later stage one slot after the one before": m + p slots (off by one).
def wrong_13_9_m_plus_p(m: int, p: int, slot: float, t_dp: float) -> tuple[float, float]:
    return (m + p) * slot + t_dp, p / (m + p)


# Breaks "the share of the slots of a stage": counts t_dp as idle time in the bubble.
def wrong_13_9_tdp_in_bubble(m: int, p: int, slot: float, t_dp: float) -> tuple[float, float]:
    total = (m + p - 1) * slot + t_dp
    return total, 1 - m * slot / total
