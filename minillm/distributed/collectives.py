"""Collectives from point-to-point: ring, tree and naive all-reduce over `dist.send/recv`, and their α–β costs.

All three are in-place all-reduces of one tensor, like `dist.all_reduce(t)`: afterwards every rank holds the
elementwise sum (or mean) of the N ranks' tensors. They differ in who sends what to whom:

- **naive** (`naive_all_reduce`): every rank sends its whole tensor (S bytes) to rank 0, which adds them up and
  sends the result back to each. Rank 0 sends (N−1)·S bytes and receives as many: its link is the bottleneck.
- **tree** (`tree_all_reduce`): a binomial-tree reduce to rank 0 (at round k, a rank whose lowest set bit is
  2^k sends its partial sum to rank − 2^k) then a binomial-tree broadcast back down: 2⌈log2 N⌉ rounds, each
  moving the whole S bytes.
- **ring** (`ring_all_reduce`) = ring **reduce-scatter** + ring **all-gather** over a flat tensor cut into N
  chunks (`chunk_sizes`: the first numel % N chunks hold one element more, as `torch.tensor_split`). In the
  reduce-scatter, at step s = 0 .. N−2 rank r sends chunk (r − s) mod N to rank r + 1 and adds the chunk
  (r − s − 1) mod N it gets from rank r − 1 to its own; after N − 1 steps rank r holds the full sum of chunk
  (r + 1) mod N. In the all-gather, at step s rank r sends chunk (r + 1 − s) mod N and overwrites chunk
  (r − s) mod N with what it receives. Each rank sends 2(N−1) messages of ~S/N bytes: 2(N−1)/N·S in all,
  a bandwidth term that Patarasuk & Yuan prove no all-reduce can beat.

Deadlock: in a ring every rank sends and receives at each step. If all N ranks called the blocking
`dist.send` first, each would wait for its neighbour to post the matching receive, and none would (a cycle).
The classic fix alternates by parity (even ranks send then receive, odd ranks receive then send; with N odd
two even ranks are neighbours and the ring serialises for a step, but still completes). Here every step
**posts the send with `dist.isend` (non-blocking), then blocks in `dist.recv`, then waits for the send**:
all sends are posted before anyone blocks, so no cycle of waits can form. The tree and naive algorithms
have no cycle (a child sends only to its parent, which is waiting for it), so blocking send/recv suffice.

Counting bytes: every algorithm talks through a `P2P` object that counts the bytes and messages this rank
sends (received bytes were counted by their sender). `bytes_sent(algo, numel, n, rank)` gives the exact
count: for the ring, rank r sends every chunk but (r + 1) mod N in the reduce-scatter and every chunk but
(r + 2) mod N in the all-gather, i.e. 2·numel − size[(r+1) % N] − size[(r+2) % N] elements. With uneven
chunks that differs from 2(N−1)/N·numel by less than 2 elements on each rank, and the sum over ranks is
exactly 2(N−1)·numel, so the mean over ranks is exactly 2(N−1)/N·numel.

The α–β (latency–bandwidth, "Hockney") cost model: a message of m bytes takes α + m·β seconds; a rank
sends one message and receives one at a time, both at once (full duplex); γ is the time to add one byte
(0 by default). For S bytes over N ranks (Thakur, Rabenseifner & Gropp 2005's model: the ring is their ring
all-gather after a reduce-scatter of the same (N−1)α + (N−1)/N·S·β cost; the tree is their binomial-tree reduce
followed by a binomial-tree broadcast):

    ring_time  = 2(N−1)·α + 2·(N−1)/N·S·β + (N−1)/N·S·γ
    tree_time  = 2⌈log2 N⌉·(α + S·β) + ⌈log2 N⌉·S·γ         (binomial reduce, then binomial broadcast)
    naive_time = 2(N−1)·(α + S·β) + (N−1)·S·γ                 (rank 0 receives N−1, then sends N−1, one at a time)

The ring's latency term grows with N while its bandwidth term stays below 2·S·β: it wins for large messages
(gradients), the tree wins for small ones, naive never wins for N > 2. NCCL picks ring or tree by size.

Leaves out: subgroups (everything runs on the default group), ops other than sum and mean, Rabenseifner's
recursive-halving reduce-scatter, pipelining chunks along the tree (NCCL's double binary tree), GPUs.

References: P. Patarasuk and X. Yuan, "Bandwidth optimal all-reduce algorithms for clusters of workstations",
J. Parallel Distrib. Comput. 69(2), 2009 (the lower bound and the ring); R. Thakur, R. Rabenseifner and
W. Gropp, "Optimization of collective communication operations in MPICH", IJHPCA 19(1), 2005 (the α, β, γ
model and the costs of the reduce-scatter, all-gather, reduce and broadcast algorithms above).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

OPS = ("sum", "mean")


def chunk_sizes(numel: int, n: int) -> list[int]:
    """Sizes of the n chunks of a flat tensor of numel elements: the first numel % n are one element longer."""
    if n < 1 or numel < 0:
        raise ValueError(f"need n >= 1 chunks and numel >= 0, got n={n}, numel={numel}")
    q, extra = divmod(numel, n)
    return [q + 1 if i < extra else q for i in range(n)]


def chunk_bounds(numel: int, n: int) -> list[tuple[int, int]]:
    """[(start, stop)] of each chunk of `chunk_sizes(numel, n)` in the flat tensor."""
    bounds, start = [], 0
    for size in chunk_sizes(numel, n):
        bounds.append((start, start + size))
        start += size
    return bounds


@dataclass
class P2P:
    """This rank's point-to-point messages (default process group), counting the bytes and messages it sends."""

    bytes_sent: int = 0
    messages_sent: int = 0

    @property
    def rank(self) -> int:
        return dist.get_rank()

    @property
    def world_size(self) -> int:
        return dist.get_world_size()

    def _count(self, tensor: torch.Tensor) -> None:
        self.bytes_sent += tensor.numel() * tensor.element_size()
        self.messages_sent += 1

    def send(self, tensor: torch.Tensor, dst: int) -> None:
        """Blocking send: returns once `tensor` may be reused."""
        self._count(tensor)
        dist.send(tensor, dst)

    def isend(self, tensor: torch.Tensor, dst: int) -> dist.Work:
        """Non-blocking send: `tensor` must not change until the returned handle's `wait()` returns."""
        self._count(tensor)
        return dist.isend(tensor, dst)

    def recv(self, tensor: torch.Tensor, src: int) -> None:
        """Blocking receive into `tensor` (a contiguous tensor of the sent size and dtype)."""
        dist.recv(tensor, src)

    def reset(self) -> None:
        self.bytes_sent = self.messages_sent = 0


def _exchange(comm: P2P, out: torch.Tensor, dst: int, into: torch.Tensor, src: int) -> None:
    """Send `out` to dst while receiving `into` from src: post the send, block in the receive, wait for the send.
    Empty chunks (numel < N) are skipped on both sides: both ranks know the sizes."""
    work = comm.isend(out, dst) if out.numel() else None
    if into.numel():
        comm.recv(into, src)
    if work is not None:
        work.wait()


def ring_reduce_scatter(flat: torch.Tensor, comm: P2P) -> int:
    """In place on a flat (1-D, contiguous) tensor: afterwards this rank's chunk (rank + 1) % N is the sum over
    ranks; the other chunks hold partial sums. Returns the index of the chunk this rank owns."""
    n, r = comm.world_size, comm.rank
    bounds = chunk_bounds(flat.numel(), n)
    right, left = (r + 1) % n, (r - 1) % n
    for s in range(n - 1):
        a, b = bounds[(r - s) % n]  # the chunk this rank sends: its partial sum of s + 1 ranks
        c, d = bounds[(r - s - 1) % n]  # the chunk it receives from the left and adds to
        incoming = torch.empty(d - c, dtype=flat.dtype, device=flat.device)  # (size of that chunk,)
        _exchange(comm, flat[a:b], right, incoming, left)
        flat[c:d] += incoming  # a different chunk from the one being sent, so the pending isend is safe
    return (r + 1) % n


def ring_all_gather(flat: torch.Tensor, comm: P2P) -> None:
    """In place: rank r starts with the final chunk (r + 1) % N, and passes chunks around the ring until every
    rank has all N (each received chunk overwrites the rank's stale partial sum)."""
    n, r = comm.world_size, comm.rank
    bounds = chunk_bounds(flat.numel(), n)
    right, left = (r + 1) % n, (r - 1) % n
    for s in range(n - 1):
        a, b = bounds[(r + 1 - s) % n]  # the final chunk it got at the previous step (its own at s = 0)
        c, d = bounds[(r - s) % n]
        _exchange(comm, flat[a:b], right, flat[c:d], left)  # receive straight into the (contiguous) slice


def _flat_view(tensor: torch.Tensor, op: str) -> torch.Tensor:
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    if op == "mean" and not tensor.is_floating_point():
        raise ValueError(f"op='mean' needs a floating-point tensor, got {tensor.dtype}; use op='sum'")
    # a view shares memory with `tensor`, so in-place work on it is the in-place all-reduce
    return tensor.view(-1) if tensor.is_contiguous() else tensor.reshape(-1).clone()


def _finish(tensor: torch.Tensor, flat: torch.Tensor, op: str, n: int) -> torch.Tensor:
    if op == "mean":
        flat /= n  # sum first, then divide: the same as dist.all_reduce(SUM) / N
    if not tensor.is_contiguous():  # flat was a copy
        tensor.copy_(flat.view(tensor.shape))
    return tensor


def ring_all_reduce(tensor: torch.Tensor, op: str = "sum", comm: P2P | None = None) -> torch.Tensor:
    """All-reduce `tensor` in place (every rank calls it with the same shape): ring reduce-scatter, then ring
    all-gather. Returns `tensor`. `comm` counts the bytes this rank sends (pass one to read them)."""
    flat = _flat_view(tensor, op)
    comm = comm if comm is not None else P2P()
    ring_reduce_scatter(flat, comm)
    ring_all_gather(flat, comm)
    return _finish(tensor, flat, op, comm.world_size)


def naive_all_reduce(tensor: torch.Tensor, op: str = "sum", comm: P2P | None = None) -> torch.Tensor:
    """All-reduce through rank 0: everyone sends it the whole tensor, rank 0 adds them (in rank order) and sends
    the sum back to each rank."""
    flat = _flat_view(tensor, op)  # checks op before any message
    comm = comm if comm is not None else P2P()
    n, r = comm.world_size, comm.rank
    if r == 0:
        incoming = torch.empty_like(flat)
        for src in range(1, n):
            comm.recv(incoming, src)
            flat += incoming
        works = [comm.isend(flat, dst) for dst in range(1, n)]
        for w in works:
            w.wait()
    else:
        comm.send(flat, 0)
        comm.recv(flat, 0)
    return _finish(tensor, flat, op, n)


def tree_all_reduce(tensor: torch.Tensor, op: str = "sum", comm: P2P | None = None) -> torch.Tensor:
    """All-reduce by a binomial-tree reduce to rank 0, then a binomial-tree broadcast (any N, not only 2^k)."""
    flat = _flat_view(tensor, op)  # checks op before any message
    comm = comm if comm is not None else P2P()
    n, r = comm.world_size, comm.rank
    incoming = torch.empty_like(flat)
    mask = 1
    while mask < n:  # reduce: round k has mask = 2^k
        if r & mask:  # this rank's lowest set bit: hand the partial sum to the parent, and stop
            comm.send(flat, r - mask)
            break
        if r + mask < n:
            comm.recv(incoming, r + mask)
            flat += incoming
        mask <<= 1
    mask = 1 << max(n - 1, 0).bit_length()
    while mask > 1:  # broadcast, top round first: a rank receives at its lowest set bit, then passes on below it
        mask >>= 1
        if r % (2 * mask) == 0 and r + mask < n:
            comm.send(flat, r + mask)
        elif r % (2 * mask) == mask:
            comm.recv(flat, r - mask)
    return _finish(tensor, flat, op, n)


ALGORITHMS: dict[str, Callable[..., torch.Tensor]] = {
    "ring": ring_all_reduce, "tree": tree_all_reduce, "naive": naive_all_reduce}


def all_reduce(tensor: torch.Tensor, algo: str = "ring", op: str = "sum", comm: P2P | None = None) -> torch.Tensor:
    """`ALGORITHMS[algo](tensor, op, comm)`."""
    if algo not in ALGORITHMS:
        raise ValueError(f"algo must be one of {sorted(ALGORITHMS)}, got {algo!r}")
    return ALGORITHMS[algo](tensor, op, comm)


def simulate_ring_all_reduce(buffers: list[torch.Tensor], phases: str = "all") -> list[torch.Tensor]:
    """The ring schedule in one process, on N equal-length 1-D tensors (buffers[r] = rank r's): new tensors
    after the reduce-scatter (`phases="reduce_scatter"`) or after both phases (`"all"`), the inputs untouched.
    Same chunks and same order of additions as `ring_all_reduce`, so the results are bitwise equal to it."""
    if phases not in ("reduce_scatter", "all"):
        raise ValueError(f"phases must be 'reduce_scatter' or 'all', got {phases!r}")
    n = len(buffers)
    if n < 1 or any(b.dim() != 1 or b.shape != buffers[0].shape for b in buffers):
        raise ValueError("need a non-empty list of 1-D tensors of one length")
    bufs = [b.clone() for b in buffers]
    bounds = chunk_bounds(bufs[0].numel(), n)
    for s in range(n - 1):  # reduce-scatter: all sends of a step read values from before the step
        sent = [bufs[r][slice(*bounds[(r - s) % n])].clone() for r in range(n)]
        for r in range(n):
            bufs[(r + 1) % n][slice(*bounds[(r - s) % n])] += sent[r]
    if phases == "all":
        for s in range(n - 1):  # all-gather: overwrite with the final chunk coming from the left
            sent = [bufs[r][slice(*bounds[(r + 1 - s) % n])].clone() for r in range(n)]
            for r in range(n):
                bufs[(r + 1) % n][slice(*bounds[(r + 1 - s) % n])] = sent[r]
    return bufs


# ---------------------------------------------------------------------------------------------------
# exact bytes sent, and the α–β model


def _log2_ceil(n: int) -> int:
    return (n - 1).bit_length()  # ⌈log2 n⌉ for n >= 1


def bytes_sent(algo: str, numel: int, n: int, rank: int, element_size: int = 1) -> int:
    """Exactly what `rank` sends in one all-reduce of `numel` elements over n ranks (in elements when
    element_size = 1)."""
    if not 0 <= rank < n:
        raise ValueError(f"rank must be in 0..{n - 1}, got {rank}")
    if n == 1:
        return 0
    if algo == "ring":
        sizes = chunk_sizes(numel, n)
        return element_size * (2 * numel - sizes[(rank + 1) % n] - sizes[(rank + 2) % n])
    if algo == "naive":
        return element_size * numel * (n - 1 if rank == 0 else 1)
    if algo == "tree":
        low = rank & -rank if rank else 1 << _log2_ceil(n)  # rank 0 is the root: it sends to 1, 2, 4, ... < n
        children = sum(1 for m in range(_log2_ceil(n)) if (1 << m) < low and rank + (1 << m) < n)
        return element_size * numel * (children + (1 if rank else 0))  # broadcast sends + one reduce send
    raise ValueError(f"algo must be one of {sorted(ALGORITHMS)}, got {algo!r}")


def _check_model(nbytes: float, n: int) -> None:
    if n < 1 or nbytes < 0:
        raise ValueError(f"need n >= 1 ranks and nbytes >= 0, got n={n}, nbytes={nbytes}")


def ring_time(nbytes: float, n: int, alpha: float, beta: float, gamma: float = 0.0) -> float:
    """2(N−1)·α + 2(N−1)/N·S·β + (N−1)/N·S·γ seconds (2(N−1) steps, each one message of S/N bytes)."""
    _check_model(nbytes, n)
    return 2 * (n - 1) * alpha + 2 * (n - 1) / n * nbytes * beta + (n - 1) / n * nbytes * gamma


def tree_time(nbytes: float, n: int, alpha: float, beta: float, gamma: float = 0.0) -> float:
    """2⌈log2 N⌉·(α + S·β) + ⌈log2 N⌉·S·γ seconds (binomial reduce + broadcast of the whole S bytes)."""
    _check_model(nbytes, n)
    rounds = _log2_ceil(n)
    return 2 * rounds * (alpha + nbytes * beta) + rounds * nbytes * gamma


def naive_time(nbytes: float, n: int, alpha: float, beta: float, gamma: float = 0.0) -> float:
    """2(N−1)·(α + S·β) + (N−1)·S·γ seconds (rank 0 receives, then sends, N−1 whole messages one at a time)."""
    _check_model(nbytes, n)
    return 2 * (n - 1) * (alpha + nbytes * beta) + (n - 1) * nbytes * gamma


COST_MODELS: dict[str, Callable[..., float]] = {"ring": ring_time, "tree": tree_time, "naive": naive_time}
