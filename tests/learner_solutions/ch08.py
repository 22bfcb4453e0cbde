"""Learner solutions for exercises 08.x (supervised fine-tuning), written from the notebook text only.

``valid_NN_k_*`` satisfy the task text of exercise NN.k; ``wrong_NN_k_*`` break the clause named above them.
"""
# Learner-style code on purpose (zip without strict, loop counters, explicit Python loops):
# ruff: noqa: B905, B007
import math

import torch
import torch.nn.functional as F

# ---- 08.1 assistant_labels ------------------------------------------------------------------------

# valid: the hint's state machine (label decided before the state changes)
def valid_08_1_state_machine(ids, assistant_id, end_id):
    labels, inside = [], False
    for tok in ids:
        if inside:
            labels.append(tok)
            if tok == end_id:
                inside = False
        else:
            labels.append(-100)
            if tok == assistant_id:
                inside = True
    return labels


# valid: for each <|assistant|>, copy forward up to and including the next <|end|> (or the end of the list)
def valid_08_1_scan_from_role(ids, assistant_id, end_id):
    labels = [-100] * len(ids)
    for i, tok in enumerate(ids):
        if tok != assistant_id:
            continue
        j = i + 1
        while j < len(ids):
            labels[j] = ids[j]
            if ids[j] == end_id:
                break
            j += 1
    return labels


# valid: vectorised: the last special (assistant or end) strictly before t decides; forward-filled with cummax
def valid_08_1_vectorised(ids, assistant_id, end_id):
    t = torch.tensor(ids, dtype=torch.long)
    n = t.numel()
    if n == 0:
        return []
    special = (t == assistant_id) | (t == end_id)
    pos = torch.arange(n)
    last = torch.where(special, pos, torch.full_like(pos, -1)).cummax(0).values  # last special at or before t
    prev = torch.cat([torch.tensor([-1]), last[:-1]])  # last special strictly before t
    prev_tok = torch.where(prev >= 0, t[prev.clamp(min=0)], torch.full_like(t, -1))
    inside = prev_tok == assistant_id
    return torch.where(inside, t, torch.full_like(t, -100)).tolist()


# valid: split into turns at each <|end|> (inclusive); a turn starting with <|assistant|> keeps all but its role
def valid_08_1_split_turns(ids, assistant_id, end_id):
    labels, turn = [], []
    for tok in ids + [None]:
        if tok is not None:
            turn.append(tok)
        if tok is None or tok == end_id:
            if turn and turn[0] == assistant_id:
                labels += [-100] + turn[1:]
            else:
                labels += [-100] * len(turn)
            turn = []
    return labels


# wrong: only the first assistant turn is trained on -- breaks "Every assistant turn counts"
def wrong_08_1_first_turn_only(ids, assistant_id, end_id):
    labels = [-100] * len(ids)
    if assistant_id not in ids:
        return labels
    for j in range(ids.index(assistant_id) + 1, len(ids)):
        labels[j] = ids[j]
        if ids[j] == end_id:
            break
    return labels


# wrong: stops before the closing <|end|> -- breaks "up to **and including** the <|end|> that closes it"
def wrong_08_1_excludes_end(ids, assistant_id, end_id):
    labels, inside = [], False
    for tok in ids:
        if tok == end_id:
            inside = False
        labels.append(tok if inside else -100)
        if tok == assistant_id:
            inside = True
    return labels


# wrong: the state is updated before the label is decided, so <|assistant|> counts and <|end|> does not
# -- breaks "The <|assistant|> token itself ... -100" (and the <|end|> clause)
def wrong_08_1_update_before_label(ids, assistant_id, end_id):
    labels, inside = [], False
    for tok in ids:
        if tok == assistant_id:
            inside = True
        elif tok == end_id:
            inside = False
        labels.append(tok if inside else -100)
    return labels


# wrong: includes the <|assistant|> role token in the labels -- breaks "The <|assistant|> token itself ... -100"
def wrong_08_1_includes_role(ids, assistant_id, end_id):
    labels = valid_08_1_state_machine(ids, assistant_id, end_id)
    return [tok if tok == assistant_id else lab for tok, lab in zip(ids, labels)]


# wrong: only the last assistant turn is trained on -- breaks "Every assistant turn counts"
def wrong_08_1_last_turn_only(ids, assistant_id, end_id):
    labels = [-100] * len(ids)
    if assistant_id not in ids:
        return labels
    start = len(ids) - 1 - ids[::-1].index(assistant_id)
    for j in range(start + 1, len(ids)):
        labels[j] = ids[j]
        if ids[j] == end_id:
            break
    return labels


# wrong: a reply without its closing <|end|> is dropped -- breaks "a reply that the end of the sequence cuts off
# counts up to the last token"
def wrong_08_1_drops_cut_reply(ids, assistant_id, end_id):
    labels, pending, inside = [-100] * len(ids), [], False
    for i, tok in enumerate(ids):
        if inside:
            pending.append(i)
            if tok == end_id:
                for j in pending:
                    labels[j] = ids[j]
                pending, inside = [], False
        elif tok == assistant_id:
            inside = True
    return labels


# wrong: labels shifted to the next token -- breaks "Hugging Face's convention (not shifted)"
def wrong_08_1_shifted(ids, assistant_id, end_id):
    labels = valid_08_1_state_machine(ids, assistant_id, end_id)
    return labels[1:] + [-100]


# wrong: every <|end|> is counted, the user's too -- breaks "user turns and their <|end|> are -100"
def wrong_08_1_all_ends(ids, assistant_id, end_id):
    labels = valid_08_1_state_machine(ids, assistant_id, end_id)
    return [tok if tok == end_id else lab for tok, lab in zip(ids, labels)]


# ---- 08.2 packing_inputs --------------------------------------------------------------------------

def _segments(lengths, T):
    seg = []
    for k, n in enumerate(lengths):
        seg += [k] * n
    seg += [len(lengths)] * (T - len(seg))
    return torch.tensor(seg, dtype=torch.long)


# valid: the hint: segment ids, same_segment & causal, positions by arange per segment
def valid_08_2_segment_ids(lengths, T):
    seg = _segments(lengths, T)
    mask = (seg[:, None] == seg[None, :]) & torch.ones(T, T, dtype=torch.bool).tril()
    pieces = list(lengths) + ([T - sum(lengths)] if T > sum(lengths) else [])
    positions = torch.cat([torch.arange(n) for n in pieces]) if pieces else torch.zeros(0, dtype=torch.long)
    return positions, mask


# valid: one lower-triangular block per segment written into an all-False mask
def valid_08_2_blocks(lengths, T):
    mask = torch.zeros(T, T, dtype=torch.bool)
    positions = torch.zeros(T, dtype=torch.long)
    bounds = list(lengths) + ([T - sum(lengths)] if sum(lengths) < T else [])
    start = 0
    for n in bounds:
        end = start + n
        mask[start:end, start:end] = torch.tril(torch.ones(n, n, dtype=torch.bool))
        positions[start:end] = torch.arange(n)
        start = end
    return positions, mask


# valid: plain double loop over (i, j) with a start-of-segment table
def valid_08_2_loops(lengths, T):
    seg = _segments(lengths, T).tolist()
    positions = []
    for i in range(T):
        positions.append(0 if i == 0 or seg[i] != seg[i - 1] else positions[-1] + 1)
    mask = torch.zeros(T, T, dtype=torch.bool)
    for i in range(T):
        for j in range(i + 1):
            if seg[i] == seg[j]:
                mask[i, j] = True
    return torch.tensor(positions, dtype=torch.int64), mask


# valid: positions as arange minus the start of each token's segment (gathered through repeat_interleave)
def valid_08_2_start_offsets(lengths, T):
    sizes = torch.tensor(list(lengths) + [T - sum(lengths)], dtype=torch.long)
    starts = torch.cumsum(sizes, 0) - sizes
    seg = torch.repeat_interleave(torch.arange(len(sizes)), sizes)
    positions = torch.arange(T) - starts[seg]
    causal = torch.arange(T)[None, :] <= torch.arange(T)[:, None]
    return positions, causal & (seg[:, None] == seg[None, :])


# valid: torch.block_diag of one lower triangle per segment; int32 positions (an integer tensor)
def valid_08_2_block_diag_int32(lengths, T):
    sizes = [n for n in lengths] + ([T - sum(lengths)] if sum(lengths) < T else [])
    blocks = [torch.ones(n, n).tril() for n in sizes]
    mask = torch.block_diag(*blocks).bool() if blocks else torch.zeros(0, 0, dtype=torch.bool)
    positions = torch.cat([torch.arange(n, dtype=torch.int32) for n in sizes])
    return positions, mask


# wrong: the padding's positions continue from the last example -- breaks "0 for the first token ... of the padding"
def wrong_08_2_padding_positions_continue(lengths, T):
    positions, mask = valid_08_2_segment_ids(lengths, T)
    s = sum(lengths)
    if lengths and s < T:
        positions[s:] = torch.arange(lengths[-1], lengths[-1] + T - s)
    return positions, mask


# wrong: padding attends to nothing (its rows all False) -- breaks "the padding ... form one more segment of their
# own" (a segment that sees itself causally)
def wrong_08_2_padding_masked_out(lengths, T):
    positions, mask = valid_08_2_segment_ids(lengths, T)
    mask[sum(lengths):, :] = False
    return positions, mask


# wrong: float positions -- breaks "positions, an integer tensor"
def wrong_08_2_float_positions(lengths, T):
    positions, mask = valid_08_2_segment_ids(lengths, T)
    return positions.float(), mask


# wrong: the padding joins the last example (no segment of its own) -- breaks "the tokens after them ... form one
# more segment of their own"
def wrong_08_2_padding_joins_last(lengths, T):
    lens = list(lengths)
    if lens:
        lens[-1] += T - sum(lens)
    return valid_08_2_blocks(lens, T)


# wrong: positions run over the whole window -- breaks "each token's index inside its own segment"
def wrong_08_2_global_positions(lengths, T):
    _, mask = valid_08_2_segment_ids(lengths, T)
    return torch.arange(T), mask


# wrong: plain causal mask (attends across packed examples) -- breaks "both in the same segment"
def wrong_08_2_causal_only(lengths, T):
    positions, _ = valid_08_2_segment_ids(lengths, T)
    return positions, torch.ones(T, T, dtype=torch.bool).tril()


# wrong: block-diagonal but not causal -- breaks "and j <= i"
def wrong_08_2_not_causal(lengths, T):
    positions, _ = valid_08_2_segment_ids(lengths, T)
    seg = _segments(lengths, T)
    return positions, seg[:, None] == seg[None, :]


# wrong: upper triangle (mask[i, j] for j >= i) -- breaks "mask[i, j] True when query i may attend key j ... j <= i"
def wrong_08_2_transposed(lengths, T):
    positions, mask = valid_08_2_segment_ids(lengths, T)
    return positions, mask.T.contiguous()


# wrong: segment boundaries at cumsum - 1 (the last token of each example starts the next one) -- breaks "the
# examples have the given lengths (in order, starting at token 0)"
def wrong_08_2_off_by_one_bounds(lengths, T):
    seg = torch.zeros(T, dtype=torch.long)
    for b in torch.cumsum(torch.tensor(list(lengths), dtype=torch.long), 0).tolist():
        if 0 < b <= T:
            seg[b - 1:] += 1
    mask = (seg[:, None] == seg[None, :]) & torch.ones(T, T, dtype=torch.bool).tril()
    positions = torch.zeros(T, dtype=torch.long)
    for i in range(1, T):
        positions[i] = 0 if seg[i] != seg[i - 1] else positions[i - 1] + 1
    return positions, mask


# wrong: every padding token its own segment (attends only itself, position 0) -- breaks "form one more segment"
def wrong_08_2_padding_isolated(lengths, T):
    positions, mask = valid_08_2_segment_ids(lengths, T)
    s = sum(lengths)
    positions[s:] = 0
    mask[s:, :] = False
    idx = torch.arange(s, T)
    mask[idx, idx] = True
    return positions, mask


# wrong: returns a float 0/1 mask -- breaks "mask, a boolean tensor"
def wrong_08_2_float_mask(lengths, T):
    positions, mask = valid_08_2_segment_ids(lengths, T)
    return positions, mask.float()


# ---- 08.3 causal_lm_loss --------------------------------------------------------------------------

# valid: the hint's F.cross_entropy with ignore_index
def valid_08_3_cross_entropy(logits, labels):
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)


# valid: log_softmax, gather, masked sum over the count, in float64
def valid_08_3_manual_float64(logits, labels):
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    target = labels[:, 1:]
    keep = target != -100
    nll = -logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (nll * keep).sum() / keep.sum()


# valid: Python loops with logsumexp, returns a float
def valid_08_3_loops(logits, labels):
    B, T, _ = logits.shape
    total, count = 0.0, 0
    for b in range(B):
        for t in range(T - 1):
            y = int(labels[b, t + 1])
            if y == -100:
                continue
            row = logits[b, t].double()
            total += float(torch.logsumexp(row, 0) - row[y])
            count += 1
    return total / count


# valid: shift the labels left with a -100 pad (the HF way), keep all T positions of the logits
def valid_08_3_pad_labels(logits, labels):
    shifted = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], dim=1)
    return F.cross_entropy(logits.transpose(1, 2), shifted, ignore_index=-100)


# valid: nll_loss with reduction="sum" divided by the count of counted targets
def valid_08_3_nll_sum(logits, labels):
    V = logits.shape[-1]
    target = labels[:, 1:].reshape(-1)
    total = F.nll_loss(F.log_softmax(logits[:, :-1].reshape(-1, V), -1), target, ignore_index=-100, reduction="sum")
    return total / (target != -100).sum()


# wrong: only the first row of the batch -- breaks "over every position of the batch"
def wrong_08_3_first_row_only(logits, labels):
    return valid_08_3_cross_entropy(logits[:1], labels[:1])


# wrong: no shift (position t scored on labels[t]) -- breaks "the logits at position t are scored against
# labels[t + 1]"
def wrong_08_3_no_shift(logits, labels):
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100)


# wrong: shift the wrong way (logits[1:] against labels[:-1]) -- breaks "scored against labels[t + 1]"
def wrong_08_3_shift_backwards(logits, labels):
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, 1:].reshape(-1, V), labels[:, :-1].reshape(-1), ignore_index=-100)


# wrong: mean per row, then mean over rows -- breaks "mean ... over every position of the batch"
def wrong_08_3_mean_of_row_means(logits, labels):
    V = logits.shape[-1]
    rows = [F.cross_entropy(logits[b, :-1].reshape(-1, V), labels[b, 1:], ignore_index=-100)
            for b in range(logits.shape[0])]
    return torch.stack(rows).mean()


# wrong: divides by every position, counted or not -- breaks "mean ... over every position whose target label is
# not -100"
def wrong_08_3_divide_by_all(logits, labels):
    V = logits.shape[-1]
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100,
                          reduction="none")
    return nll.mean()


# wrong: the mask comes from the unshifted labels (labels[t] instead of the target labels[t + 1]) -- breaks
# "every position of the batch whose target label is not -100"
def wrong_08_3_mask_from_input_position(logits, labels):
    logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    target = labels[:, 1:].clamp(min=0)
    keep = labels[:, :-1] != -100
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    return (nll * keep).sum() / keep.sum().clamp(min=1)


# wrong: -100 replaced by token 0 and counted -- breaks "over every position ... whose target label is not -100"
def wrong_08_3_ignored_as_class0(logits, labels):
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].clamp(min=0).reshape(-1))


# wrong: log base 2 -- breaks "cross-entropy (natural log)"
def wrong_08_3_bits(logits, labels):
    return valid_08_3_cross_entropy(logits, labels) / math.log(2)
