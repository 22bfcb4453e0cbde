"""Learner solutions for exercises 11.x (data parallelism), written from the notebook text only."""
# ruff: noqa: B905, B007

from fractions import Fraction

import numpy as np
import torch

# ---------------------------------------------------------------------------------------------------------------
# 11.1 The ring reduce-scatter, simulated
# ---------------------------------------------------------------------------------------------------------------


def valid_11_1_snapshot_loop(buffers: list[torch.Tensor]) -> list[torch.Tensor]:
    """Simulate the steps: take every rank's message first (simultaneous sends), then deliver them."""
    n = len(buffers)
    bufs = [b.clone() for b in buffers]
    for s in range(n - 1):
        sent = []
        for r in range(n):
            c = (r - s) % n
            sent.append((c, torch.tensor_split(bufs[r], n)[c].clone()))
        for r in range(n):
            c, msg = sent[r]
            torch.tensor_split(bufs[(r + 1) % n], n)[c].add_(msg)
    return bufs


def valid_11_1_index_ranges(buffers: list[torch.Tensor]) -> list[torch.Tensor]:
    """Chunk boundaries computed by hand (first length % n chunks one longer), out-of-place writes."""
    n = len(buffers)
    length = buffers[0].numel() if n else 0
    q, rem = divmod(length, n) if n else (0, 0)
    bounds = []
    start = 0
    for c in range(n):
        size = q + (1 if c < rem else 0)
        bounds.append((start, start + size))
        start += size
    bufs = [b.detach().clone() for b in buffers]
    for s in range(n - 1):
        msgs = []
        for r in range(n):
            c = (r - s) % n
            lo, hi = bounds[c]
            msgs.append((r, c, bufs[r][lo:hi].clone()))
        for r, c, msg in msgs:
            lo, hi = bounds[c]
            dst = (r + 1) % n
            bufs[dst][lo:hi] = bufs[dst][lo:hi] + msg
    return bufs


def valid_11_1_follow_chunk(buffers: list[torch.Tensor]) -> list[torch.Tensor]:
    """Closed form by following each chunk: chunk c starts at rank c and picks up ranks c+1, c+2, ... in turn.
    Rank (c + k) % n ends with chunk c = x_c + x_{c+1} + ... + x_{c+k}, summed in that order."""
    n = len(buffers)
    out = [b.clone() for b in buffers]
    src_chunks = [torch.tensor_split(b, n) for b in buffers]
    out_chunks = [torch.tensor_split(b, n) for b in out]
    for c in range(n):
        acc = src_chunks[c][c].clone()
        for k in range(1, n):
            r = (c + k) % n
            acc = src_chunks[r][c] + acc  # the receiver adds the message to its own copy
            out_chunks[r][c].copy_(acc)
    return out


def valid_11_1_numpy(buffers: list[torch.Tensor]) -> list[torch.Tensor]:
    """Same schedule in numpy (np.array_split cuts like torch.tensor_split)."""
    n = len(buffers)
    arrs = [b.detach().cpu().numpy().copy() for b in buffers]
    for s in range(n - 1):
        msgs = [np.array_split(arrs[r], n)[(r - s) % n].copy() for r in range(n)]
        for r in range(n):
            dst = np.array_split(arrs[(r + 1) % n], n)[(r - s) % n]  # a view into arrs[(r+1)%n]
            dst += msgs[r]
    return [torch.from_numpy(a) for a in arrs]


def valid_11_1_stacked(buffers: list[torch.Tensor]) -> list[torch.Tensor]:
    """Vectorised over ranks: one stacked (n, len) tensor; at step s every rank r receives chunk (r-1-s) % n."""
    n = len(buffers)
    if n == 0:
        return []
    st = torch.stack([b.clone() for b in buffers])
    cols = torch.tensor_split(torch.arange(st.shape[1]), n)
    for s in range(n - 1):
        before = st.clone()
        for r in range(n):
            src = (r - 1) % n
            c = (src - s) % n
            st[r, cols[c]] = st[r, cols[c]] + before[src, cols[c]]
    return [st[r].clone() for r in range(n)]


# wrong clause: "rank r sends only to rank (r + 1) mod N" -- this learner sends to the left neighbour
def wrong_11_1_send_left(buffers: list[torch.Tensor]) -> list[torch.Tensor]:
    n = len(buffers)
    bufs = [b.clone() for b in buffers]
    for s in range(n - 1):
        msgs = [torch.tensor_split(bufs[r], n)[(r + s) % n].clone() for r in range(n)]
        for r in range(n):
            torch.tensor_split(bufs[(r - 1) % n], n)[(r + s) % n].add_(msgs[r])
    return bufs


# wrong clause: "The reduce-scatter runs in N - 1 steps" -- this learner runs N steps
def wrong_11_1_n_steps(buffers: list[torch.Tensor]) -> list[torch.Tensor]:
    n = len(buffers)
    bufs = [b.clone() for b in buffers]
    for s in range(n):
        msgs = [torch.tensor_split(bufs[r], n)[(r - s) % n].clone() for r in range(n)]
        for r in range(n):
            torch.tensor_split(bufs[(r + 1) % n], n)[(r - s) % n].add_(msgs[r])
    return bufs


# wrong clause: "the neighbour **adds** it to its own copy" -- this learner overwrites its copy
def wrong_11_1_overwrite(buffers: list[torch.Tensor]) -> list[torch.Tensor]:
    n = len(buffers)
    bufs = [b.clone() for b in buffers]
    for s in range(n - 1):
        msgs = [torch.tensor_split(bufs[r], n)[(r - s) % n].clone() for r in range(n)]
        for r in range(n):
            torch.tensor_split(bufs[(r + 1) % n], n)[(r - s) % n].copy_(msgs[r])
    return bufs


# wrong clause: "At step 0 rank r sends its chunk r" -- this learner starts with chunk r + 1
def wrong_11_1_start_chunk_r_plus_1(buffers: list[torch.Tensor]) -> list[torch.Tensor]:
    n = len(buffers)
    bufs = [b.clone() for b in buffers]
    for s in range(n - 1):
        msgs = [torch.tensor_split(bufs[r], n)[(r + 1 - s) % n].clone() for r in range(n)]
        for r in range(n):
            torch.tensor_split(bufs[(r + 1) % n], n)[(r + 1 - s) % n].add_(msgs[r])
    return bufs


# wrong clause: chunking "the way torch.tensor_split cuts it: ... the first chunks are one element longer"
# -- this learner gives the remainder to the last chunk
def wrong_11_1_remainder_last(buffers: list[torch.Tensor]) -> list[torch.Tensor]:
    n = len(buffers)
    length = buffers[0].numel()
    q = length // n
    bounds = [(c * q, (c + 1) * q if c < n - 1 else length) for c in range(n)]
    bufs = [b.clone() for b in buffers]
    for s in range(n - 1):
        msgs = []
        for r in range(n):
            lo, hi = bounds[(r - s) % n]
            msgs.append(bufs[r][lo:hi].clone())
        for r in range(n):
            lo, hi = bounds[(r - s) % n]
            bufs[(r + 1) % n][lo:hi] += msgs[r]
    return bufs


# wrong clause: "leave the inputs unchanged" -- this learner works in place on the inputs and returns them
def wrong_11_1_in_place(buffers: list[torch.Tensor]) -> list[torch.Tensor]:
    n = len(buffers)
    for s in range(n - 1):
        msgs = [torch.tensor_split(buffers[r], n)[(r - s) % n].clone() for r in range(n)]
        for r in range(n):
            torch.tensor_split(buffers[(r + 1) % n], n)[(r - s) % n].add_(msgs[r])
    return list(buffers)


# wrong clause: "the other chunks hold partial sums, whatever the schedule left" -- this learner does a full
# all-reduce (every chunk of every rank holds the total), i.e. reduce-scatter + all-gather
def wrong_11_1_full_allreduce(buffers: list[torch.Tensor]) -> list[torch.Tensor]:
    total = torch.stack(list(buffers)).sum(dim=0)
    return [total.clone() for _ in buffers]


# wrong clause: "every rank sends one chunk of its buffer" (its current buffer, holding what it received so far)
# -- this learner sends the chunk as it was in the original input, so partial sums are not forwarded
def wrong_11_1_sends_original(buffers: list[torch.Tensor]) -> list[torch.Tensor]:
    n = len(buffers)
    bufs = [b.clone() for b in buffers]
    for s in range(n - 1):
        for r in range(n):
            c = (r - s) % n
            torch.tensor_split(bufs[(r + 1) % n], n)[c].add_(torch.tensor_split(buffers[r], n)[c])
    return bufs


# ---------------------------------------------------------------------------------------------------------------
# 11.2 How long does a ring all-reduce take?
# ---------------------------------------------------------------------------------------------------------------


def valid_11_2_formula(nbytes: float, n: int, alpha: float, beta: float) -> float:
    return 2 * (n - 1) * (alpha + beta * nbytes / n)


def valid_11_2_step_loop(nbytes: float, n: int, alpha: float, beta: float) -> float:
    chunk = nbytes / n
    t = 0.0
    for _phase in ("reduce-scatter", "all-gather"):
        for _step in range(n - 1):
            t += alpha + chunk * beta
    return t


def valid_11_2_fraction(nbytes: float, n: int, alpha: float, beta: float) -> float:
    steps = 2 * (n - 1)
    t = steps * (Fraction(alpha) + Fraction(beta) * Fraction(nbytes) / n)
    return float(t)


def valid_11_2_split_terms(nbytes: float, n: int, alpha: float, beta: float) -> float:
    if n == 1:
        return 0.0
    latency = 2 * (n - 1) * alpha
    bandwidth = 2 * (n - 1) / n * nbytes * beta
    return latency + bandwidth


# wrong clause: "the whole algorithm, reduce-scatter and all-gather" -- this learner times the reduce-scatter only
def wrong_11_2_reduce_scatter_only(nbytes: float, n: int, alpha: float, beta: float) -> float:
    return (n - 1) * (alpha + beta * nbytes / n)


# wrong clause: "every chunk taken as exactly nbytes / n bytes" -- this learner sends the whole message each step
def wrong_11_2_whole_message(nbytes: float, n: int, alpha: float, beta: float) -> float:
    return 2 * (n - 1) * (alpha + beta * nbytes)


# wrong clause: "(no rounding)" -- this learner rounds the chunk up to whole bytes
def wrong_11_2_ceil_chunk(nbytes: float, n: int, alpha: float, beta: float) -> float:
    chunk = -(-int(nbytes) // n)
    return 2 * (n - 1) * (alpha + beta * chunk)


# wrong clause: "N - 1 steps" per phase (and "one rank has nothing to exchange") -- this learner counts 2N steps
def wrong_11_2_2n_steps(nbytes: float, n: int, alpha: float, beta: float) -> float:
    return 2 * n * (alpha + beta * nbytes / n)


# wrong clause: "a step costs one message's time" (alpha paid per step) -- this learner pays the latency once
def wrong_11_2_alpha_once(nbytes: float, n: int, alpha: float, beta: float) -> float:
    if n == 1:
        return 0.0
    return alpha + 2 * (n - 1) * beta * nbytes / n


# wrong clause: "in a step every rank sends one message and receives one at the same time, so a step costs one
# message's time" -- this learner charges send and receive separately (two messages per step)
def wrong_11_2_send_plus_receive(nbytes: float, n: int, alpha: float, beta: float) -> float:
    return 2 * 2 * (n - 1) * (alpha + beta * nbytes / n)


# wrong clause: "with every chunk taken as exactly nbytes / n bytes (no rounding)" -- integer floor division
def wrong_11_2_floor_chunk(nbytes: float, n: int, alpha: float, beta: float) -> float:
    return 2 * (n - 1) * (alpha + beta * (nbytes // n))


# wrong clause: "every chunk taken as exactly nbytes / n bytes" -- this learner uses the large-N approximation of
# the bandwidth term, 2 * nbytes * beta, instead of 2 * (n - 1) / n * nbytes * beta
def wrong_11_2_bandwidth_approx(nbytes: float, n: int, alpha: float, beta: float) -> float:
    if n == 1:
        return 0.0
    return 2 * (n - 1) * alpha + 2 * nbytes * beta


# ---------------------------------------------------------------------------------------------------------------
# 11.3 DDP's gradient buckets
# ---------------------------------------------------------------------------------------------------------------


def valid_11_3_loop(sizes: list[int], cap: int) -> list[list[int]]:
    buckets, cur, total = [], [], 0
    for i in reversed(range(len(sizes))):
        cur.append(i)
        total += sizes[i]
        if total >= cap:
            buckets.append(cur)
            cur, total = [], 0
    if cur:
        buckets.append(cur)
    return buckets


def valid_11_3_sorted_inside(sizes: list[int], cap: int) -> list[list[int]]:
    """Indices inside a bucket in ascending order (the task says the order inside is free)."""
    buckets = []
    i = len(sizes) - 1
    while i >= 0:
        total = 0
        j = i
        while j >= 0:
            total += sizes[j]
            j -= 1
            if total >= cap:
                break
        buckets.append(list(range(j + 1, i + 1)))
        i = j
    return buckets


def valid_11_3_numpy_cumsum(sizes: list[int], cap: int) -> list[list[int]]:
    """Walk a reversed cumulative sum, cutting where the running size since the last cut reaches cap."""
    order = np.arange(len(sizes))[::-1]
    rev = np.asarray(sizes, dtype=np.int64)[::-1]
    csum = np.cumsum(rev)
    buckets, start, base = [], 0, 0
    for k in range(len(rev)):
        if csum[k] - base >= cap:
            buckets.append([int(x) for x in order[start:k + 1]])
            start, base = k + 1, int(csum[k])
    if start < len(rev):
        buckets.append([int(x) for x in order[start:]])
    return buckets


def valid_11_3_generator(sizes: list[int], cap: int) -> list[list[int]]:
    def gen():
        cur, total = [], 0
        for i in range(len(sizes) - 1, -1, -1):
            cur.insert(0, i)
            total += sizes[i]
            if not total < cap:
                yield cur
                cur, total = [], 0
        if cur:
            yield cur

    return list(gen())


# wrong clause: "visit the parameters from the **last** registered to the first" -- this learner goes forward
def wrong_11_3_forward_order(sizes: list[int], cap: int) -> list[list[int]]:
    buckets, cur, total = [], [], 0
    for i in range(len(sizes)):
        cur.append(i)
        total += sizes[i]
        if total >= cap:
            buckets.append(cur)
            cur, total = [], 0
    if cur:
        buckets.append(cur)
    return buckets


# wrong clause: "reaches or passes cap" -- this learner closes a bucket only when it passes cap (strict >)
def wrong_11_3_strict_greater(sizes: list[int], cap: int) -> list[list[int]]:
    buckets, cur, total = [], [], 0
    for i in reversed(range(len(sizes))):
        cur.append(i)
        total += sizes[i]
        if total > cap:
            buckets.append(cur)
            cur, total = [], 0
    if cur:
        buckets.append(cur)
    return buckets


# wrong clause: "each visited parameter joins the current bucket ... (so a bucket may end above the cap, by its last
# parameter)" -- this learner checks before adding and starts a new bucket when the parameter would not fit
def wrong_11_3_check_before_adding(sizes: list[int], cap: int) -> list[list[int]]:
    buckets, cur, total = [], [], 0
    for i in reversed(range(len(sizes))):
        if cur and total + sizes[i] > cap:
            buckets.append(cur)
            cur, total = [], 0
        cur.append(i)
        total += sizes[i]
    if cur:
        buckets.append(cur)
    return buckets


# wrong clause: "the bucket still open at the end, if it holds any parameter, is the last bucket" -- dropped
def wrong_11_3_drop_open_bucket(sizes: list[int], cap: int) -> list[list[int]]:
    buckets, cur, total = [], [], 0
    for i in reversed(range(len(sizes))):
        cur.append(i)
        total += sizes[i]
        if total >= cap:
            buckets.append(cur)
            cur, total = [], 0
    return buckets


# wrong clause: "if it holds any parameter" -- this learner always appends the open bucket, even empty
def wrong_11_3_append_empty(sizes: list[int], cap: int) -> list[list[int]]:
    buckets, cur, total = [], [], 0
    for i in reversed(range(len(sizes))):
        cur.append(i)
        total += sizes[i]
        if total >= cap:
            buckets.append(cur)
            cur, total = [], 0
    buckets.append(cur)
    return buckets


# wrong clause: "the buckets are listed in the order they were completed" -- this learner lists them in
# registration order (reverses the list at the end)
def wrong_11_3_registration_order(sizes: list[int], cap: int) -> list[list[int]]:
    buckets, cur, total = [], [], 0
    for i in reversed(range(len(sizes))):
        cur.append(i)
        total += sizes[i]
        if total >= cap:
            buckets.append(cur)
            cur, total = [], 0
    if cur:
        buckets.append(cur)
    return buckets[::-1]


# wrong clause: "and the next parameter starts a new one" with the size reset -- this learner forgets to reset the
# running total, so after the first bucket every parameter closes a bucket of its own
def wrong_11_3_no_reset_total(sizes: list[int], cap: int) -> list[list[int]]:
    buckets, cur, total = [], [], 0
    for i in reversed(range(len(sizes))):
        cur.append(i)
        total += sizes[i]
        if total >= cap:
            buckets.append(cur)
            cur = []
    if cur:
        buckets.append(cur)
    return buckets


# wrong clause: "Return the list of buckets, each a list of parameter indices" -- this learner empties the current
# bucket with cur.clear() after appending it, so every completed bucket is the same (finally emptied) list object
def wrong_11_3_clear_aliasing(sizes: list[int], cap: int) -> list[list[int]]:
    buckets, cur, total = [], [], 0
    for i in reversed(range(len(sizes))):
        cur.append(i)
        total += sizes[i]
        if total >= cap:
            buckets.append(cur)
            cur.clear()
            total = 0
    if cur:
        buckets.append(cur)
    return buckets


# ---------------------------------------------------------------------------------------------------------------
# 11.4 Averaging the ranks' gradients as DDP does
# ---------------------------------------------------------------------------------------------------------------


def valid_11_4_loop(rank_grads: list[list[torch.Tensor | None]]) -> list[torch.Tensor | None]:
    n = len(rank_grads)
    out = []
    for i in range(len(rank_grads[0])):
        acc = None
        for r in range(n):
            g = rank_grads[r][i]
            if g is None:
                continue
            acc = g.clone() if acc is None else acc + g
        out.append(None if acc is None else acc / n)
    return out


def valid_11_4_stack_mean(rank_grads: list[list[torch.Tensor | None]]) -> list[torch.Tensor | None]:
    """Fill missing gradients with zeros and take the mean over all ranks."""
    out = []
    for grads in zip(*rank_grads):
        present = [g for g in grads if g is not None]
        if not present:
            out.append(None)
            continue
        ref = present[0]
        full = [g if g is not None else torch.zeros_like(ref) for g in grads]
        out.append(torch.stack(full).mean(dim=0))
    return out


def valid_11_4_divide_first(rank_grads: list[list[torch.Tensor | None]]) -> list[torch.Tensor | None]:
    """As PyTorch's default comm hook does: each rank divides by world size, then the all-reduce sums."""
    n = len(rank_grads)
    n_params = len(rank_grads[0]) if rank_grads else 0
    out = []
    for i in range(n_params):
        acc = None
        for r in range(n):
            g = rank_grads[r][i]
            if g is not None:
                part = g / n
                acc = part if acc is None else acc + part
        out.append(acc)
    return out


def valid_11_4_float64_accumulate(rank_grads: list[list[torch.Tensor | None]]) -> list[torch.Tensor | None]:
    """Accumulate in float64, then cast back to the gradients' dtype."""
    n = len(rank_grads)
    out = []
    for i in range(len(rank_grads[0])):
        present = [rank_grads[r][i] for r in range(n) if rank_grads[r][i] is not None]
        if not present:
            out.append(None)
            continue
        s = torch.zeros_like(present[0], dtype=torch.float64)
        for g in present:
            s += g.double()
        out.append((s / n).to(present[0].dtype))
    return out


def valid_11_4_sum_builtin(rank_grads: list[list[torch.Tensor | None]]) -> list[torch.Tensor | None]:
    n = len(rank_grads)
    result = []
    for i in range(len(rank_grads[0])):
        gs = [rg[i] for rg in rank_grads if rg[i] is not None]
        result.append(sum(gs[1:], gs[0].clone()).div(n) if gs else None)
    return result


# wrong clause: "a rank without a gradient counts as zeros" (divide by all N ranks) -- this learner divides by the
# number of ranks that had a gradient
def wrong_11_4_divide_by_present(rank_grads: list[list[torch.Tensor | None]]) -> list[torch.Tensor | None]:
    out = []
    for grads in zip(*rank_grads):
        present = [g for g in grads if g is not None]
        out.append(torch.stack(present).mean(dim=0) if present else None)
    return out


# wrong clause: "or None when no rank had a gradient for that parameter" -- this learner returns None as soon as one
# rank lacks the gradient
def wrong_11_4_none_if_any_missing(rank_grads: list[list[torch.Tensor | None]]) -> list[torch.Tensor | None]:
    n = len(rank_grads)
    out = []
    for grads in zip(*rank_grads):
        if any(g is None for g in grads):
            out.append(None)
        else:
            out.append(torch.stack(list(grads)).sum(dim=0) / n)
    return out


# wrong clause: "the gradient every rank holds after DDP's synchronisation" (averaged) -- this learner returns the
# all-reduce sum without dividing
def wrong_11_4_sum_only(rank_grads: list[list[torch.Tensor | None]]) -> list[torch.Tensor | None]:
    out = []
    for grads in zip(*rank_grads):
        present = [g for g in grads if g is not None]
        out.append(torch.stack(present).sum(dim=0) if present else None)
    return out


# wrong clause: "Leave the inputs unchanged" -- this learner accumulates in place into the first rank's tensor
def wrong_11_4_mutates_input(rank_grads: list[list[torch.Tensor | None]]) -> list[torch.Tensor | None]:
    n = len(rank_grads)
    out = []
    for i in range(len(rank_grads[0])):
        acc = None
        for r in range(n):
            g = rank_grads[r][i]
            if g is None:
                continue
            if acc is None:
                acc = g
            else:
                acc.add_(g)
        out.append(None if acc is None else acc.div_(n))
    return out


# wrong clause: "or None when no rank had a gradient for that parameter" -- this learner starts every sum from a
# scalar zero, so a parameter with no gradient anywhere comes back as tensor(0.) instead of None
def wrong_11_4_zero_instead_of_none(rank_grads: list[list[torch.Tensor | None]]) -> list[torch.Tensor | None]:
    n = len(rank_grads)
    out = []
    for grads in zip(*rank_grads):
        acc = torch.tensor(0.0)
        for g in grads:
            if g is not None:
                acc = acc + g
        out.append(acc / n)
    return out


# wrong clause: "a rank without a gradient counts as zeros" -- this learner thinks a gradient present on a single
# rank needs no reduction and copies it unchanged (divides only when two or more ranks contributed)
def wrong_11_4_single_rank_not_divided(rank_grads: list[list[torch.Tensor | None]]) -> list[torch.Tensor | None]:
    n = len(rank_grads)
    out = []
    for grads in zip(*rank_grads):
        present = [g for g in grads if g is not None]
        if not present:
            out.append(None)
        elif len(present) == 1:
            out.append(present[0].clone())
        else:
            out.append(torch.stack(present).sum(dim=0) / n)
    return out


# wrong clause: "exactly as DDP computes it" (average over ranks) -- this learner divides by the number of
# parameters instead of the number of ranks
def wrong_11_4_divide_by_params(rank_grads: list[list[torch.Tensor | None]]) -> list[torch.Tensor | None]:
    n_params = len(rank_grads[0])
    out = []
    for grads in zip(*rank_grads):
        present = [g for g in grads if g is not None]
        out.append(torch.stack(present).sum(dim=0) / n_params if present else None)
    return out
