"""Learner solutions for exercises 12.x (ZeRO, FSDP, ZeRO-Offload, DeepSpeed), written from the notebook text only."""
# ruff: noqa: B905, B007, E501
import math
from fractions import Fraction

import torch

# ---------------------------------------------------------------- 12.1


def valid_12_1_formula(psi, n, stage, k=12):
    return 2 * psi / (n if stage >= 3 else 1) + 2 * psi / (n if stage >= 2 else 1) + k * psi / (n if stage >= 1 else 1)


def valid_12_1_terms(psi, n, stage, k=12):
    total = 0.0
    for bytes_per, first_stage in ((k, 1), (2, 2), (2, 3)):
        part = bytes_per * psi
        if stage >= first_stage:
            part = part / n
        total += part
    return total


def valid_12_1_fraction(psi, n, stage, k=12):
    psi = Fraction(psi)
    w = 2 * psi / (n if stage >= 3 else 1)
    g = 2 * psi / (n if stage >= 2 else 1)
    o = Fraction(k) * psi / (n if stage >= 1 else 1)
    return float(w + g + o)


# breaks "stage 1 partitions the optimizer states, stage 2 the gradients as well": thresholds off by one
def wrong_12_1_off_by_one(psi, n, stage, k=12):
    return 2 * psi / (n if stage >= 2 else 1) + 2 * psi / (n if stage >= 1 else 1) + k * psi / (n if stage >= 1 else 1)


# breaks "stage 3 [partitions] the weights as well": weights never split
def wrong_12_1_weights_never_split(psi, n, stage, k=12):
    return 2 * psi + 2 * psi / (n if stage >= 2 else 1) + k * psi / (n if stage >= 1 else 1)


# breaks "`k` bytes of optimizer states": hard-codes 12
def wrong_12_1_ignores_k(psi, n, stage, k=12):
    return 2 * psi / (n if stage >= 3 else 1) + 2 * psi / (n if stage >= 2 else 1) + 12 * psi / (n if stage >= 1 else 1)


# breaks "each GPU holds exactly 1/n of it (no rounding)": floor division
def wrong_12_1_floor_division(psi, n, stage, k=12):
    psi = int(psi)
    return 2 * psi // (n if stage >= 3 else 1) + 2 * psi // (n if stage >= 2 else 1) + int(k * psi) // (n if stage >= 1 else 1)


# ---------------------------------------------------------------- 12.2


def valid_12_2_ceil(numel, n):
    size = math.ceil(numel / n)
    return [(min(r * size, numel), min((r + 1) * size, numel)) for r in range(n)]


def valid_12_2_loop(numel, n):
    size = -(-numel // n)
    out = []
    start = 0
    for r in range(n):
        stop = min(start + size, numel)
        out.append((start, stop))
        start = stop
    return out


# breaks "cuts it into n equal consecutive shards": array_split-style uneven shards
def wrong_12_2_array_split(numel, n):
    base, extra = divmod(numel, n)
    out, start = [], 0
    for r in range(n):
        stop = start + base + (1 if r < extra else 0)
        out.append((start, stop))
        start = stop
    return out


# breaks "the padding is not part of the slice": stop not clamped to numel
def wrong_12_2_includes_padding(numel, n):
    size = -(-numel // n)
    return [(min(r * size, numel), (r + 1) * size) for r in range(n)]


# breaks "a rank that owns no real parameter gets the empty slice (numel, numel)": gives (0, 0)
def wrong_12_2_empty_is_zero(numel, n):
    size = -(-numel // n)
    out = []
    for r in range(n):
        start, stop = r * size, min((r + 1) * size, numel)
        out.append((start, stop) if start < numel else (0, 0))
    return out


# breaks "appends zeros until its length is a multiple of n": shard size floor(numel / n), remainder to last rank
def wrong_12_2_floor_size(numel, n):
    size = numel // n
    out = [(r * size, (r + 1) * size) for r in range(n - 1)]
    out.append(((n - 1) * size, numel))
    return out


# ---------------------------------------------------------------- 12.3


def valid_12_3_hint(rank_grads):
    n = len(rank_grads)
    numel = rank_grads[0].numel()
    size = -(-numel // n)
    mean = rank_grads[0].new_zeros(n * size)
    mean[:numel] = torch.stack(rank_grads).sum(0) / n
    return [mean[r * size:(r + 1) * size].clone() for r in range(n)]


def valid_12_3_loop(rank_grads):
    n = len(rank_grads)
    numel = rank_grads[0].numel()
    size = -(-numel // n)
    total = torch.zeros(numel, dtype=rank_grads[0].dtype)
    for g in rank_grads:
        total = total + g
    mean = torch.nn.functional.pad(total / n, (0, n * size - numel))
    return [t.clone() for t in mean.split(size)]


# breaks "its own shard of the mean gradient": the sum
def wrong_12_3_sum(rank_grads):
    n = len(rank_grads)
    numel = rank_grads[0].numel()
    size = -(-numel // n)
    s = rank_grads[0].new_zeros(n * size)
    s[:numel] = torch.stack(rank_grads).sum(0)
    return [s[r * size:(r + 1) * size].clone() for r in range(n)]


# breaks "its whole shard, padding included (so every entry has the same length)": chunk without padding
def wrong_12_3_no_padding(rank_grads):
    n = len(rank_grads)
    numel = rank_grads[0].numel()
    size = -(-numel // n)
    mean = torch.stack(rank_grads).mean(0)
    return [mean[r * size:(r + 1) * size].clone() for r in range(n)]


# breaks "Leave the inputs unchanged": accumulates into rank_grads[0]
def wrong_12_3_inplace(rank_grads):
    n = len(rank_grads)
    numel = rank_grads[0].numel()
    size = -(-numel // n)
    acc = rank_grads[0]
    for g in rank_grads[1:]:
        acc += g
    acc /= n
    mean = acc.new_zeros(n * size)
    mean[:numel] = acc
    return [mean[r * size:(r + 1) * size].clone() for r in range(n)]


# breaks "n equal consecutive shards": strided (interleaved) shards
def wrong_12_3_interleaved(rank_grads):
    n = len(rank_grads)
    numel = rank_grads[0].numel()
    size = -(-numel // n)
    mean = rank_grads[0].new_zeros(n * size)
    mean[:numel] = torch.stack(rank_grads).mean(0)
    return [mean[r::n].clone() for r in range(n)]


# breaks "each entry is a separate tensor": for float64 inputs `.to(dtype)` is a no-op that returns the view itself,
# so every rank's shard is a view of one mean buffer (kept from the learner's first version, written before the task
# text said so; with float32 inputs it would pass)
def wrong_12_3_float64_to_is_a_view(rank_grads):
    # accumulate in float64, hand back the inputs' dtype
    n = len(rank_grads)
    numel = rank_grads[0].numel()
    size = -(-numel // n)
    mean = torch.zeros(n * size, dtype=torch.float64)
    mean[:numel] = torch.stack([g.double() for g in rank_grads]).mean(0)
    return [mean[r * size:(r + 1) * size].to(rank_grads[0].dtype) for r in range(n)]


# breaks "a new list of n new 1-D tensors": returns views of one buffer (the tensors share storage)
def wrong_12_3_views(rank_grads):
    n = len(rank_grads)
    numel = rank_grads[0].numel()
    size = -(-numel // n)
    mean = rank_grads[0].new_zeros(n * size)
    mean[:numel] = torch.stack(rank_grads).mean(0)
    return list(mean.split(size))


# breaks "Return a new list of n new 1-D tensors ... Leave the inputs unchanged": with one rank the mean is the
# gradient itself, so this shortcut hands back the caller's own tensor (writing into the result changes the input)
def wrong_12_3_alias_n1(rank_grads):
    if len(rank_grads) == 1:
        return [rank_grads[0]]
    return valid_12_3_hint(rank_grads)


# ---------------------------------------------------------------- 12.4


def valid_12_4_hint(params, rank_grads, momenta, lr, beta):
    n = len(rank_grads)
    numel = params.numel()
    size = -(-numel // n)
    g = params.new_zeros(n * size)
    g[:numel] = torch.stack(rank_grads).mean(0)
    p = params.new_zeros(n * size)
    p[:numel] = params
    new_bufs, new_shards = [], []
    for r in range(n):
        buf = beta * momenta[r] + g[r * size:(r + 1) * size]
        new_bufs.append(buf)
        new_shards.append(p[r * size:(r + 1) * size] - lr * buf)
    return torch.cat(new_shards)[:numel].clone(), new_bufs


def valid_12_4_full_vector(params, rank_grads, momenta, lr, beta):
    n = len(rank_grads)
    numel = params.numel()
    size = -(-numel // n)
    pad = n * size - numel
    g = torch.nn.functional.pad(sum(rank_grads) / n, (0, pad))
    m = torch.cat(momenta)
    buf = m * beta + g
    new_p = torch.nn.functional.pad(params, (0, pad)) - lr * buf
    return new_p[:numel].clone(), [b.clone() for b in buf.split(size)]


def valid_12_4_torch_sgd(params, rank_grads, momenta, lr, beta):
    # each rank runs torch.optim.SGD on its shard, with its momentum buffer loaded
    n = len(rank_grads)
    numel = params.numel()
    size = -(-numel // n)
    g = params.new_zeros(n * size)
    g[:numel] = torch.stack(rank_grads).mean(0)
    p = params.new_zeros(n * size)
    p[:numel] = params
    shards, bufs = [], []
    for r in range(n):
        w = torch.nn.Parameter(p[r * size:(r + 1) * size].clone())
        opt = torch.optim.SGD([w], lr=lr, momentum=beta)
        opt.state[w]["momentum_buffer"] = momenta[r].clone()
        w.grad = g[r * size:(r + 1) * size].clone()
        opt.step()
        shards.append(w.detach().clone())
        bufs.append(opt.state[w]["momentum_buffer"].clone())
    return torch.cat(shards)[:numel], bufs


# breaks "the ranks' local gradients are averaged over the ranks": summed
def wrong_12_4_sum(params, rank_grads, momenta, lr, beta):
    return valid_12_4_hint(params, [g * len(rank_grads) for g in rank_grads], momenta, lr, beta)


# breaks "first updates [the buffer] with the gradient and then uses it to move the parameter": old buffer used
def wrong_12_4_order(params, rank_grads, momenta, lr, beta):
    n = len(rank_grads)
    numel = params.numel()
    size = -(-numel // n)
    g = params.new_zeros(n * size)
    g[:numel] = torch.stack(rank_grads).mean(0)
    p = params.new_zeros(n * size)
    p[:numel] = params
    bufs, shards = [], []
    for r in range(n):
        shards.append(p[r * size:(r + 1) * size] - lr * momenta[r])
        bufs.append(beta * momenta[r] + g[r * size:(r + 1) * size])
    return torch.cat(shards)[:numel], bufs


# breaks "no dampening": buffer = beta * m + (1 - beta) * g
def wrong_12_4_dampening(params, rank_grads, momenta, lr, beta):
    n = len(rank_grads)
    numel = params.numel()
    size = -(-numel // n)
    g = params.new_zeros(n * size)
    g[:numel] = torch.stack(rank_grads).mean(0)
    p = params.new_zeros(n * size)
    p[:numel] = params
    bufs = [beta * momenta[r] + (1 - beta) * g[r * size:(r + 1) * size] for r in range(n)]
    shards = [p[r * size:(r + 1) * size] - lr * bufs[r] for r in range(n)]
    return torch.cat(shards)[:numel], bufs


# breaks "leave the inputs unchanged": updates params and momenta in place
def wrong_12_4_inplace(params, rank_grads, momenta, lr, beta):
    n = len(rank_grads)
    numel = params.numel()
    size = -(-numel // n)
    g = params.new_zeros(n * size)
    g[:numel] = torch.stack(rank_grads).mean(0)
    for r in range(n):
        momenta[r].mul_(beta).add_(g[r * size:(r + 1) * size])
        lo, hi = min(r * size, numel), min((r + 1) * size, numel)
        params[lo:hi] -= lr * momenta[r][:hi - lo]
    return params, momenta


# breaks "the ranks' local gradients are averaged over the ranks": rank r steps with its own local gradient
def wrong_12_4_local_grad(params, rank_grads, momenta, lr, beta):
    n = len(rank_grads)
    numel = params.numel()
    size = -(-numel // n)
    p = params.new_zeros(n * size)
    p[:numel] = params
    bufs, shards = [], []
    for r in range(n):
        g = params.new_zeros(n * size)
        g[:numel] = rank_grads[r]
        bufs.append(beta * momenta[r] + g[r * size:(r + 1) * size])
        shards.append(p[r * size:(r + 1) * size] - lr * bufs[r])
    return torch.cat(shards)[:numel], bufs


# ---------------------------------------------------------------- 12.5


def valid_12_5_hint(params, n):
    flat = torch.cat([p.reshape(-1) for p in params])
    numel = flat.numel()
    padded = torch.cat([flat, flat.new_zeros(n * math.ceil(numel / n) - numel)])
    return [c.clone() for c in padded.chunk(n)]


def valid_12_5_lists(params, n):
    values = []
    for p in params:
        values.extend(p.reshape(-1).tolist())
    size = -(-len(values) // n)
    values += [0.0] * (n * size - len(values))
    dtype = params[0].dtype
    return [torch.tensor(values[r * size:(r + 1) * size], dtype=dtype) for r in range(n)]


def valid_12_5_preallocated(params, n):
    numel = sum(p.numel() for p in params)
    size = -(-numel // n)
    buf = torch.zeros(n * size, dtype=params[0].dtype)
    off = 0
    for p in params:
        buf[off:off + p.numel()] = p.flatten()
        off += p.numel()
    return [buf[r * size:(r + 1) * size].clone() for r in range(n)]


# breaks "no padding when Psi_u is already a multiple of n": always pads n - numel % n
def wrong_12_5_always_pad(params, n):
    flat = torch.cat([p.reshape(-1) for p in params])
    padded = torch.cat([flat, flat.new_zeros(n - flat.numel() % n)])
    return [c.clone() for c in padded.chunk(n)]


# breaks "each in its own row-major order": flattens column-major
def wrong_12_5_column_major(params, n):
    return valid_12_5_hint([p.t() if p.dim() == 2 else p for p in params], n)


# breaks "padded with zeros **at the end**": pads at the front
def wrong_12_5_pad_front(params, n):
    flat = torch.cat([p.reshape(-1) for p in params])
    numel = flat.numel()
    padded = torch.cat([flat.new_zeros(n * math.ceil(numel / n) - numel), flat])
    return [c.clone() for c in padded.chunk(n)]


# breaks "n contiguous pieces of P_u / n elements": no padding, uneven chunk
def wrong_12_5_no_pad(params, n):
    flat = torch.cat([p.reshape(-1) for p in params])
    return [c.clone() for c in flat.chunk(n)]


# breaks "as new tensors": returns views of the padded buffer from chunk (no clone)
def wrong_12_5_views(params, n):
    flat = torch.cat([p.reshape(-1) for p in params])
    numel = flat.numel()
    padded = torch.cat([flat, flat.new_zeros(n * math.ceil(numel / n) - numel)])
    return list(padded.chunk(n))


# breaks "as new tensors; leave params unchanged": when nothing needs concatenating or padding, the pieces are
# views of the caller's parameter (reshape(-1) of a contiguous tensor is a view)
def wrong_12_5_alias_single(params, n):
    flat = torch.cat([p.reshape(-1) for p in params]) if len(params) > 1 else params[0].reshape(-1)
    numel = flat.numel()
    pad = n * math.ceil(numel / n) - numel
    padded = torch.cat([flat, flat.new_zeros(pad)]) if pad else flat
    return list(padded.chunk(n))


# ---------------------------------------------------------------- 12.6


def valid_12_6_hint(shards, names, shapes):
    flat = torch.cat(shards)
    out, offset = {}, 0
    for name, shape in zip(names, shapes):
        size = math.prod(shape)
        out[name] = flat[offset:offset + size].reshape(shape).clone()
        offset += size
    return out


def valid_12_6_split(shards, names, shapes):
    flat = torch.cat(list(shards))
    sizes = [math.prod(s) for s in shapes]
    pieces = flat.split(sizes + [flat.numel() - sum(sizes)])
    return {name: piece.view(*shape) if len(shape) else piece.reshape(()) for name, piece, shape in zip(names, pieces, shapes)}


# breaks "joins the pieces in rank order": concatenates in reverse
def wrong_12_6_reverse_order(shards, names, shapes):
    return valid_12_6_hint(list(reversed(shards)), names, shapes)


# breaks "in the order they were flattened": every parameter read from offset 0
def wrong_12_6_no_offset(shards, names, shapes):
    flat = torch.cat(shards)
    return {name: flat[:math.prod(shape)].reshape(shape) for name, shape in zip(names, shapes)}


# breaks the row-major flattening of 12.5: reshapes column-major
def wrong_12_6_column_major(shards, names, shapes):
    flat = torch.cat(shards)
    out, offset = {}, 0
    for name, shape in zip(names, shapes):
        size = math.prod(shape)
        out[name] = flat[offset:offset + size].reshape(tuple(reversed(shape))).permute(*reversed(range(len(shape)))).contiguous()
        offset += size
    return out


# breaks "all-gathers the unit's pieces" (contiguous): interleaves the pieces
def wrong_12_6_interleaved(shards, names, shapes):
    flat = torch.stack(shards).t().reshape(-1)
    out, offset = {}, 0
    for name, shape in zip(names, shapes):
        size = math.prod(shape)
        out[name] = flat[offset:offset + size].reshape(shape)
        offset += size
    return out


# ---------------------------------------------------------------- 12.7


def valid_12_7_hint(grads):
    n = len(grads)
    return [c.clone() for c in torch.stack(grads).mean(0).chunk(n)]


def valid_12_7_loop(grads):
    n = len(grads)
    size = grads[0].numel() // n
    out = []
    for r in range(n):
        acc = torch.zeros(size, dtype=grads[0].dtype)
        for g in grads:
            acc = acc + g[r * size:(r + 1) * size]
        out.append(acc / n)
    return out


# breaks "of the **mean**": the sum
def wrong_12_7_sum(grads):
    n = len(grads)
    return [c.clone() for c in torch.stack(grads).sum(0).chunk(n)]


# breaks "leave grads unchanged": averages into grads[0]
def wrong_12_7_inplace(grads):
    n = len(grads)
    acc = grads[0]
    for g in grads[1:]:
        acc.add_(g)
    acc.div_(n)
    return [c.clone() for c in acc.chunk(n)]


# breaks "the same contiguous pieces as in 12.5": strided pieces
def wrong_12_7_strided(grads):
    n = len(grads)
    mean = torch.stack(grads).mean(0)
    return [mean[r::n].clone() for r in range(n)]


# breaks "mean over the n ranks": averages over the wrong axis, and divides by numel
def wrong_12_7_wrong_axis(grads):
    n = len(grads)
    s = torch.stack(grads).sum(0) / grads[0].numel()
    return [c.clone() for c in s.chunk(n)]


# breaks "new, separate tensors": for float64 inputs `.to(dtype)` returns the chunk views themselves
def wrong_12_7_float64_to_is_a_view(grads):
    n = len(grads)
    mean = torch.stack(grads).double().sum(0) / n
    return [c.to(grads[0].dtype) for c in mean.chunk(n)]


# breaks "as new tensors": chunk views of one mean buffer
def wrong_12_7_views(grads):
    return list(torch.stack(grads).mean(0).chunk(len(grads)))


# breaks "as new tensors; leave grads unchanged": with one rank returns the caller's tensor itself
def wrong_12_7_alias_n1(grads):
    if len(grads) == 1:
        return [grads[0]]
    return valid_12_7_hint(grads)


# ---------------------------------------------------------------- 12.8


def valid_12_8_direct(psi, weight_bytes=2, grad_bytes=2, host_grad_bytes=4):
    return ((weight_bytes + grad_bytes) * psi, (12 + host_grad_bytes) * psi, (grad_bytes + weight_bytes) * psi)


def valid_12_8_listed(psi, weight_bytes=2, grad_bytes=2, host_grad_bytes=4):
    gpu = {"weights": weight_bytes * psi, "grads": grad_bytes * psi}
    cpu = {"master": 4 * psi, "m": 4 * psi, "v": 4 * psi, "grads": host_grad_bytes * psi}
    pcie = grad_bytes * psi + weight_bytes * psi
    return (float(sum(gpu.values())), float(sum(cpu.values())), float(pcie))


# breaks "the gradients go from the GPU to the CPU as the GPU made them": counts host_grad_bytes on PCIe
def wrong_12_8_pcie_host_format(psi, weight_bytes=2, grad_bytes=2, host_grad_bytes=4):
    return ((weight_bytes + grad_bytes) * psi, (12 + host_grad_bytes) * psi, (host_grad_bytes + weight_bytes) * psi)


# breaks "and the gradients as the CPU stores them": CPU holds only Adam's 12 bytes
def wrong_12_8_cpu_no_grads(psi, weight_bytes=2, grad_bytes=2, host_grad_bytes=4):
    return ((weight_bytes + grad_bytes) * psi, 12 * psi, (grad_bytes + weight_bytes) * psi)


# breaks "both directions together": only the gradients' way down
def wrong_12_8_one_direction(psi, weight_bytes=2, grad_bytes=2, host_grad_bytes=4):
    return ((weight_bytes + grad_bytes) * psi, (12 + host_grad_bytes) * psi, grad_bytes * psi)


# breaks "count them all" (gradients on the GPU): GPU only holds weights
def wrong_12_8_gpu_no_grads(psi, weight_bytes=2, grad_bytes=2, host_grad_bytes=4):
    return (weight_bytes * psi, (12 + host_grad_bytes) * psi, (grad_bytes + weight_bytes) * psi)


# ---------------------------------------------------------------- 12.9


def valid_12_9_cases(train_batch_size, micro, accum, world_size):
    tbs, ws = train_batch_size, world_size
    if tbs is None and micro is None:
        return None
    if tbs is not None and micro is not None and accum is not None:
        return (tbs, micro, accum) if tbs == micro * accum * ws else None
    if accum is None and (tbs is None or micro is None):
        accum = 1
    if tbs is None:
        return (micro * accum * ws, micro, accum)
    if micro is None:
        if tbs % (accum * ws):
            return None
        return (tbs, tbs // (accum * ws), accum)
    if tbs % (micro * ws):
        return None
    return (tbs, micro, tbs // (micro * ws))


def valid_12_9_fractions(train_batch_size, micro, accum, world_size):
    given = [x is not None for x in (train_batch_size, micro, accum)]
    if not given[0] and not given[1]:
        return None
    if sum(given) == 1:  # accum missing with one batch size
        accum = 1
    tbs, mb, ac = train_batch_size, micro, accum
    if tbs is None:
        tbs = mb * ac * world_size
    elif mb is None:
        q = Fraction(tbs, ac * world_size)
        if q.denominator != 1:
            return None
        mb = int(q)
    elif ac is None:
        q = Fraction(tbs, mb * world_size)
        if q.denominator != 1:
            return None
        ac = int(q)
    if tbs != mb * ac * world_size:
        return None
    return (int(tbs), int(mb), int(ac))


# breaks "must come out as a whole number": truncates instead of refusing
def wrong_12_9_truncates(train_batch_size, micro, accum, world_size):
    tbs, ws = train_batch_size, world_size
    if tbs is None and micro is None:
        return None
    if tbs is not None and micro is not None and accum is not None:
        return (tbs, micro, accum) if tbs == micro * accum * ws else None
    if accum is None and (tbs is None or micro is None):
        accum = 1
    if tbs is None:
        return (micro * accum * ws, micro, accum)
    if micro is None:
        return (tbs, tbs // (accum * ws), accum)
    return (tbs, micro, tbs // (micro * ws))


# breaks "all three given: they must satisfy the identity": returns them unchecked
def wrong_12_9_no_check(train_batch_size, micro, accum, world_size):
    if train_batch_size is not None and micro is not None and accum is not None:
        return (train_batch_size, micro, accum)
    return valid_12_9_cases(train_batch_size, micro, accum, world_size)


# breaks "accum missing together with one of the two batch sizes: accum is 1": gives up instead
def wrong_12_9_two_missing_none(train_batch_size, micro, accum, world_size):
    if sum(x is None for x in (train_batch_size, micro, accum)) >= 2:
        return None
    return valid_12_9_cases(train_batch_size, micro, accum, world_size)


# breaks "With world_size GPUs ... micro x accum x world_size": forgets world_size
def wrong_12_9_no_world(train_batch_size, micro, accum, world_size):
    return valid_12_9_cases(train_batch_size, micro, accum, 1)


# breaks "both batch sizes missing: nothing can be inferred": assumes micro = 1
def wrong_12_9_assume_micro1(train_batch_size, micro, accum, world_size):
    if train_batch_size is None and micro is None:
        micro = 1
    return valid_12_9_cases(train_batch_size, micro, accum, world_size)


def valid_12_3_float64_copied(rank_grads):
    """Accumulate in float64, then hand back the inputs' dtype as separate copies (copy=True even when no cast)."""
    n = len(rank_grads)
    numel = rank_grads[0].numel()
    size = -(-numel // n)
    mean = torch.zeros(n * size, dtype=torch.float64)
    mean[:numel] = torch.stack([g.double() for g in rank_grads]).mean(0)
    return [mean[r * size:(r + 1) * size].to(rank_grads[0].dtype, copy=True) for r in range(n)]


def valid_12_7_float64_copied(grads):
    n = len(grads)
    mean = torch.stack(grads).double().sum(0) / n
    return [c.to(grads[0].dtype, copy=True) for c in mean.chunk(n)]
