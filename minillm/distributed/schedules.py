"""Pipeline schedules as data: their orders, timelines, bubbles, activations held, and send/receive plans.

A model's layers are cut into p consecutive stages, one per process; a batch is cut into m micro-batches.
Stage s runs the forward of micro-batch i once stage s-1 has sent it the activation, and the backward of i
once stage s+1 has sent back the gradient of that activation. What remains is the order each stage takes its
actions in, the schedule:

- GPipe (Huang et al. 2019, "GPipe: Efficient Training of Giant Neural Networks using Pipeline Parallelism",
  NeurIPS, sec. 2.3): all m forwards, then all m backwards ("fill-drain"). Each stage keeps the activations of
  all m micro-batches until their backward (GPipe itself recomputes them in backward instead).
- 1F1B (Narayanan et al. 2019, "PipeDream: Generalized Pipeline Parallelism for DNN Training", SOSP; the
  synchronous flushed form is PipeDream-Flush, Narayanan et al. 2021, "Memory-Efficient Pipeline-Parallel DNN
  Training", ICML, and Megatron-LM's default, Narayanan et al. 2021 SC, sec. 2.2.1): stage s runs
  min(p-1-s, m) warm-up forwards, then alternates one forward and one backward, then drains the backwards.
  Same bubble, but at most min(p-s, m) micro-batches in flight on stage s instead of m.

`gpipe_schedule` / `one_f_one_b_schedule` return, per stage, the ordered actions ("F", i) / ("B", i);
`timeline` plays a schedule with forward time t_f and backward time t_b, each action starting as soon as its
stage is free and its inputs exist; `bubble_fraction` = idle stage-time / total stage-time (p x makespan),
measured on that timeline. Two definitions of "bubble" are in use and this module names which: GPipe's is this
idle share of the step, (p-1)/(m+p-1) for both schedules and any t_b/t_f (each stage is busy m(t_f + t_b) of a
makespan (m+p-1)(t_f + t_b)); Narayanan et al.'s "bubble time fraction" divides the same idle time by the ideal
time m(t_f + t_b) instead, (p-1)/m. 1F1B does not shrink the bubble, it bounds the activations kept
(`peak_in_flight`).

Two schedules that shrink the bubble are generated as timelines only (`minillm.distributed.pipeline.run_pipeline`
runs GPipe and 1F1B): `interleaved_schedule` (Narayanan et al. 2021 SC, sec. 2.2.2: v model chunks per device,
bubble (p-1)/(v m) of the ideal time instead of (p-1)/m, for v times the point-to-point messages; stage 0 holds
(1 + (p-1)/(p v)) p micro-batches' worth of activations instead of p, as Korthikanti et al. 2022, "Reducing
Activation Recomputation in Large Transformer Models", count it) and
`zero_bubble_h1_schedule` (Qi et al. 2023, "Zero Bubble Pipeline Parallelism", ICLR 2024, sec. 2.1, ZB-H1: backward
split into B, the input gradient, and W, the weight gradient; idle time per stage (p-1)(t_F + t_B - t_W) instead of
1F1B's (p-1)(t_F + t_B + t_W), for t_W <= t_F, with 1F1B's peak memory); the tests check both formulas on the
timeline.

Communication without deadlock, on gloo and on NCCL. `p2p_plan` groups a rank's point-to-point operations:
group k, posted before action k, holds the send of action k-1's result and the receive of action k's input (what
Megatron's p2p_communication.py calls send_forward_recv_backward and friends); `run_pipeline` posts each group at
once with `dist.batch_isend_irecv` and waits for all of it. The argument, for the strictest transport, where a
send finishes only when its receive is posted (NCCL for large messages; gloo buffers sends and forgives more):
(1) order: on link s -> s+1 the activations leave s in F order and s+1 takes them in its F order; gradients go
back in B order on both sides; GPipe and 1F1B run F0..F(m-1) and B0..B(m-1) in order on every stage, so the i-th
send meets the i-th receive (NCCL ignores tags and matches a rank pair's operations in one direction by order, as
`batch_isend_irecv`'s documentation says; within one batch the order of sends vs receives does not matter);
(2) progress: a rank waits inside one group at a time, and a group finishes once every operation in it has its
partner posted in the peer's current group. `p2p_deadlock` plays exactly this rule on all ranks and reports the
groups they would wait in forever; for GPipe and 1F1B every rank reaches the end (tested over p <= 6, m <= 8).
The same play with each operation posted alone (the blocking send-then-receive order) deadlocks for 1F1B as soon
as a stage has a steady state: stage s sends F(w+k)'s output and then would receive B(k)'s gradient, while stage
s+1 sends B(k)'s gradient and then would receive F(w+k)'s input; each send waits for a receive its peer posts
only after its own send. In one group each, both pairs complete. This is a check per schedule, not a proof for
any order: a new schedule should pass `p2p_deadlock` first.

Leaves out: ZB-H2 / ZB-V and DualPipe, uneven micro-batches, communication time in `timeline`.
"""

from __future__ import annotations

from collections.abc import Sequence

Action = tuple  # ("F", i) / ("B", i): forward / backward of micro-batch i; ("W", i): its weight gradient when B
# computes only the input gradient (zero bubble); (kind, i, c) for model chunk c (interleaved, virtual stages)
Schedule = list[list[Action]]  # schedule[s] = stage s's actions in order


def _check(p: int, m: int) -> None:
    if not (isinstance(p, int) and isinstance(m, int) and p >= 1 and m >= 1):
        raise ValueError(f"need p >= 1 stages and m >= 1 micro-batches (ints), got p={p!r}, m={m!r}")


def gpipe_schedule(p: int, m: int) -> Schedule:
    """GPipe's fill-drain order: every stage does F0..F(m-1), then B0..B(m-1)."""
    _check(p, m)
    return [[("F", i) for i in range(m)] + [("B", i) for i in range(m)] for _ in range(p)]


def one_f_one_b_schedule(p: int, m: int) -> Schedule:
    """1F1B (PipeDream-Flush): stage s does w = min(p-1-s, m) warm-up forwards, then F(w+k), B(k) pairs, then
    the remaining backwards."""
    _check(p, m)
    out = []
    for s in range(p):
        w = min(p - 1 - s, m)
        acts: list[Action] = [("F", i) for i in range(w)]
        for k in range(m - w):
            acts += [("F", w + k), ("B", k)]
        acts += [("B", i) for i in range(m - w, m)]
        out.append(acts)
    return out


def interleaved_schedule(p: int, m: int, v: int) -> Schedule:
    """Interleaved 1F1B (Narayanan et al. 2021 SC, sec. 2.2.2; Megatron's order): device s holds v model chunks,
    chunk c being virtual stage c*p + s. Actions (kind, i, c); micro-batches go in groups of p through chunk 0,
    then 1, ...; backwards visit the chunks in reverse. Warm-up: 2(p-1-s) + (v-1)p forwards. Needs m % p == 0."""
    _check(p, m)
    if not (isinstance(v, int) and v >= 2) or m % p:
        raise ValueError(f"need v >= 2 chunks per device (v=1 is one_f_one_b_schedule) and m a multiple of p, "
                         f"got p={p}, m={m}, v={v}")

    def fwd(k: int) -> Action:  # the k-th forward on any device: micro-batch, chunk
        return ("F", k // (p * v) * p + k % p, k // p % v)

    def bwd(k: int) -> Action:
        return ("B", k // (p * v) * p + k % p, v - 1 - k // p % v)

    total, out = m * v, []
    for s in range(p):
        w = min(2 * (p - 1 - s) + (v - 1) * p, total)
        acts = [fwd(k) for k in range(w)]
        for k in range(total - w):
            acts += [fwd(w + k), bwd(k)]
        out.append(acts + [bwd(k) for k in range(total - w, total)])
    return out


def zero_bubble_h1_schedule(p: int, m: int) -> Schedule:
    """ZB-H1 (Qi et al. 2023, "Zero Bubble Pipeline Parallelism", sec. 2.1): B is only the input gradient, W the
    weight gradient, which nobody waits for. 1F1B's order with stage s deferring its first s W's to the drain,
    so every stage holds p micro-batches until their W (1F1B's stage-0 peak) and W's fill the drain bubbles."""
    _check(p, m)
    out = []
    for s in range(p):
        w, nw = min(p - 1 - s, m), 0
        acts: list[Action] = [("F", i) for i in range(w)]
        for k in range(m - w):
            acts += [("F", w + k), ("B", k)]
            if k >= s:
                acts.append(("W", nw))
                nw += 1
        for j in range(m - w, m):
            acts.append(("B", j))
            if nw <= j:
                acts.append(("W", nw))
                nw += 1
        out.append(acts + [("W", i) for i in range(nw, m)])
    return out


def _deps(s: int, act: Action, p: int, v: int) -> list[tuple[int, Action]]:
    kind, i, c = act[0], act[1], act[2] if len(act) > 2 else 0

    def at(stage: int, k: str, chunk: int) -> tuple[int, Action]:
        return stage, ((k, i, chunk) if len(act) > 2 else (k, i))

    if kind == "W":
        return [at(s, "B", c)]
    if kind == "F":  # from the previous virtual stage: device s-1, or the last device's previous chunk
        return [at(s - 1, "F", c)] if s > 0 else [at(p - 1, "F", c - 1)] if c > 0 else []
    nxt = [at(s + 1, "B", c)] if s < p - 1 else [at(0, "B", c + 1)] if c < v - 1 else []
    return nxt + [at(s, "F", c)]


def timeline(schedule: Schedule, t_f: float = 1.0, t_b: float = 2.0,
             t_w: float = 0.0) -> list[list[tuple[Action, float, float]]]:
    """Play `schedule`: per stage, [(action, start, end)] in order. An action starts when its stage has finished
    the previous one and its inputs exist (F(i) on s after F(i) on s-1; B(i) on s after B(i) on s+1 and F(i)
    on s; W(i) after B(i)). With v chunks per device each action takes 1/v of t_f, t_b or t_w. Communication is
    taken as free. Raises if the schedule deadlocks or misses an action."""
    p = len(schedule)
    v = 1 + max((a[2] for a in schedule[0] if len(a) > 2), default=0) if p else 1
    m = sum(a[0] == "F" for a in schedule[0]) // v if p else 0
    kinds = ("F", "B", "W") if p and any(a[0] == "W" for a in schedule[0]) else ("F", "B")
    want = sorted((k, i, c) if v > 1 else (k, i) for k in kinds for i in range(m) for c in range(v))
    for s, acts in enumerate(schedule):
        if sorted(acts) != want:
            raise ValueError(f"stage {s} must run {'/'.join(kinds)} of each micro-batch 0..{m - 1} exactly once, "
                             f"got {acts}")
    dur = {"F": t_f / v, "B": t_b / v, "W": t_w / v}
    end: dict[tuple[int, Action], float] = {}
    out: list[list[tuple[Action, float, float]]] = [[] for _ in range(p)]
    nxt, free = [0] * p, [0.0] * p  # next action index and the time each stage is free
    while any(nxt[s] < len(schedule[s]) for s in range(p)):
        progressed = False
        for s in range(p):
            while nxt[s] < len(schedule[s]):
                act = schedule[s][nxt[s]]
                deps = _deps(s, act, p, v)
                if any(d not in end for d in deps):
                    break
                start = max([free[s]] + [end[d] for d in deps])
                stop = start + dur[act[0]]
                end[(s, act)], free[s] = stop, stop
                out[s].append((act, start, stop))
                nxt[s] += 1
                progressed = True
        if not progressed:
            waiting = {s: schedule[s][nxt[s]] for s in range(p) if nxt[s] < len(schedule[s])}
            raise ValueError(f"schedule deadlocks: stages wait forever on {waiting}")
    return out


def bubble_fraction(tl: Sequence[Sequence[tuple[Action, float, float]]]) -> float:
    """Idle stage-time / total stage-time, where total = p x makespan (first start 0 to last end)."""
    makespan = max(e for row in tl for _, _, e in row)
    busy = sum(e - b for row in tl for _, b, e in row)
    return 1.0 - busy / (len(tl) * makespan)


def peak_in_flight(schedule: Schedule) -> list[int]:
    """Per stage, the most micro-batches whose forward has run and backward has not (activations kept); with W
    actions, until their W (the weight gradient still needs the layer inputs); with chunks, in chunk units."""
    peaks = []
    for acts in schedule:
        free_at = "W" if any(a[0] == "W" for a in acts) else "B"
        live = peak = 0
        for a in acts:
            live += 1 if a[0] == "F" else -1 if a[0] == free_at else 0
            peak = max(peak, live)
        peaks.append(peak)
    return peaks


# -- point-to-point plan: which sends and receives each rank posts together ----------------------------------
P2P = tuple[str, int, str, int]  # ("send" | "recv", peer rank, "act" | "grad", micro-batch i)


def p2p_plan(schedule: Schedule, rank: int) -> list[list[P2P]]:
    """Rank `rank`'s point-to-point operations in len(schedule[rank]) + 1 groups: group k is posted (all at once)
    before action k and holds the send of action k-1's result and the receive of action k's input; the last
    group sends the last action's result. Activations go s -> s+1, gradients s+1 -> s."""
    p, acts = len(schedule), schedule[rank]
    if any(len(a) != 2 or a[0] not in ("F", "B") for a in acts):
        raise ValueError("p2p_plan and run_pipeline take (kind, i) orders with F and B only (GPipe, 1F1B); the "
                         "interleaved and zero-bubble schedules here are timelines only")
    groups: list[list[P2P]] = [[] for _ in range(len(acts) + 1)]
    for k, (kind, i) in enumerate(acts):
        src, dst = (rank - 1, rank + 1) if kind == "F" else (rank + 1, rank - 1)  # inputs from, results to
        what = "act" if kind == "F" else "grad"
        if 0 <= src < p:
            groups[k].append(("recv", src, what, i))
        if 0 <= dst < p:
            groups[k + 1].append(("send", dst, what, i))
    return groups


def p2p_deadlock(schedule: Schedule, batched: bool = True) -> dict[int, list[P2P]] | None:
    """Play every rank's `p2p_plan` with rendezvous sends (a send finishes only when its receive is posted, as on
    NCCL): a group finishes once each of its operations' partners is posted in the peer's current group.
    batched=False posts each operation alone, in the group's order (send, then receive). Returns None if all ranks
    finish, else {rank: the group it waits in forever}. Raises if a link's sends and receives disagree on order
    (NCCL matches the i-th send with the i-th receive between a pair of ranks)."""
    p = len(schedule)
    plans = [p2p_plan(schedule, r) for r in range(p)]
    if not batched:
        plans = [[[op] for group in plan for op in group] for plan in plans]
    for a in range(p):
        for b in (a - 1, a + 1):
            if 0 <= b < p:
                sent = [(w, i) for g in plans[a] for o, peer, w, i in g if o == "send" and peer == b]
                got = [(w, i) for g in plans[b] for o, peer, w, i in g if o == "recv" and peer == a]
                if sent != got:
                    raise ValueError(f"rank {a} sends {sent} to rank {b}, which receives {got}: orders differ")

    def message(r: int, op: P2P) -> tuple[int, int, str, int]:  # (src, dst, what, i): both sides name it alike
        o, peer, what, i = op
        return (r, peer, what, i) if o == "send" else (peer, r, what, i)

    pos, done = [0] * p, set()
    while True:
        moved = False
        for r in range(p):  # finish groups whose messages are all matched (empty groups at once)
            while pos[r] < len(plans[r]) and all(message(r, op) in done for op in plans[r][pos[r]]):
                pos[r] += 1
                moved = True
        if all(pos[r] == len(plans[r]) for r in range(p)):
            return None
        posted: dict[tuple[int, int, str, int], int] = {}
        for r in range(p):
            for op in plans[r][pos[r]] if pos[r] < len(plans[r]) else []:
                posted[message(r, op)] = posted.get(message(r, op), 0) + 1
        matched = {msg for msg, n in posted.items() if n == 2} - done  # both ends posted now
        done |= matched
        if not matched and not moved:
            return {r: plans[r][pos[r]] for r in range(p) if pos[r] < len(plans[r])}
