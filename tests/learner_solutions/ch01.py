"""Learner solutions for exercises 01.x, written from the notebook text only.

Functions named ``valid_*`` satisfy the task text; ``wrong_*`` break a named clause of it.
The exercise id is in the name: ``valid_01_1_zip`` is a valid solution of 01.1.
"""
# Learner-style code on purpose (zip over ids and ids[1:], unused loop counters):
# ruff: noqa: B905, B007
import functools
from collections import Counter

# ---- 01.1 get_pair_counts -------------------------------------------------------------------------

# valid: zip of the list with its tail; plain dict keeps first-occurrence order
def valid_01_1_zip(ids):
    out = {}
    for a, b in zip(ids, ids[1:]):
        out[(a, b)] = out.get((a, b), 0) + 1
    return out


# valid: a Counter (a dict subclass, keys in insertion order) over an index loop
def valid_01_1_counter(ids):
    c = Counter()
    for i in range(len(ids) - 1):
        c[(ids[i], ids[i + 1])] += 1
    return c


# wrong: stops one pair early (range(len - 2)) -- breaks "every position but the last starts one pair"
def wrong_01_1_off_by_one(ids):
    out = {}
    for i in range(len(ids) - 2):
        out[(ids[i], ids[i + 1])] = out.get((ids[i], ids[i + 1]), 0) + 1
    return out


# wrong: non-overlapping counting (steps by 2) -- breaks "overlapping pairs both count" ([97,97,97] -> 2)
def wrong_01_1_step_two(ids):
    out = {}
    for i in range(0, len(ids) - 1, 2):
        out[(ids[i], ids[i + 1])] = out.get((ids[i], ids[i + 1]), 0) + 1
    return out


# wrong: keys sorted instead of first-occurrence order -- breaks "keys come in order of first occurrence"
def wrong_01_1_sorted_keys(ids):
    c = valid_01_1_zip(ids)
    return {k: c[k] for k in sorted(c)}


# ---- 01.2 merge_pair ------------------------------------------------------------------------------

# valid: while loop with a manual index
def valid_01_2_while(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


# valid: iterator with a "skip next" flag; accepts tuples as input too
def valid_01_2_skip_flag(ids, pair, new_id):
    ids = list(ids)
    out, skip = [], False
    for i, x in enumerate(ids):
        if skip:
            skip = False
            continue
        if i + 1 < len(ids) and (x, ids[i + 1]) == tuple(pair):
            out.append(new_id)
            skip = True
        else:
            out.append(x)
    return out


# wrong: overlapping replacement ([97,97,97] -> [256,256]) -- breaks "occurrences never overlap"
def wrong_01_2_overlap(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            out.append(new_id)
            if i + 2 < len(ids) and (ids[i + 1], ids[i + 2]) == tuple(pair):
                i += 1
            else:
                i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


# wrong: edits the input list in place -- breaks "a new list ... Leave the input list unchanged"
def wrong_01_2_in_place(ids, pair, new_id):
    i = 0
    while i < len(ids) - 1:
        if ids[i] == pair[0] and ids[i + 1] == pair[1]:
            ids[i:i + 2] = [new_id]
        i += 1
    return ids


# wrong: drops the last id when it is not part of a pair (loop to len-1) -- breaks "every occurrence of pair is
# replaced by new_id" (the other ids stay)
def wrong_01_2_drop_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


# ---- 01.3 train_bpe -------------------------------------------------------------------------------

# valid: the obvious loop with own helpers, ties by max over the ordered dict
def valid_01_3_max_dict(text, num_merges):
    ids = list(text.encode("utf-8"))
    merges = []
    for i in range(num_merges):
        counts = valid_01_1_zip(ids)
        if not counts:
            break
        top = max(counts, key=counts.get)
        merges.append(top)
        ids = valid_01_2_while(ids, top, 256 + i)
    return merges


# valid: explicit scan keeping the first pair of strictly larger count (same tie rule, no max())
def valid_01_3_scan(text, num_merges):
    ids = list(bytearray(text, "utf-8"))
    merges = []
    for i in range(num_merges):
        if len(ids) < 2:
            break
        counts = {}
        for p in zip(ids, ids[1:]):
            counts[p] = counts.get(p, 0) + 1
        best, best_n = None, 0
        for p, n in counts.items():
            if n > best_n:
                best, best_n = p, n
        merges.append(best)
        ids = valid_01_2_skip_flag(ids, best, 256 + len(merges) - 1)
    return merges


# wrong: uses 256 for every merge -- breaks "merge i makes id 256 + i"
def wrong_01_3_same_new_id(text, num_merges):
    ids = list(text.encode("utf-8"))
    merges = []
    for _ in range(num_merges):
        counts = valid_01_1_zip(ids)
        if not counts:
            break
        top = max(counts, key=counts.get)
        merges.append(top)
        ids = valid_01_2_while(ids, top, 256)
    return merges


# wrong: ties go to the largest pair (max over (count, pair)) -- breaks "take the one that occurs first"
def wrong_01_3_tie_largest(text, num_merges):
    ids = list(text.encode("utf-8"))
    merges = []
    for i in range(num_merges):
        counts = valid_01_1_zip(ids)
        if not counts:
            break
        top = max(counts, key=lambda p: (counts[p], p))
        merges.append(top)
        ids = valid_01_2_while(ids, top, 256 + i)
    return merges


# wrong: works on characters (ord) instead of UTF-8 bytes -- breaks "ids = list(text.encode('utf-8'))"
def wrong_01_3_chars(text, num_merges):
    ids = [ord(c) for c in text]
    merges = []
    for i in range(num_merges):
        counts = valid_01_1_zip(ids)
        if not counts:
            break
        top = max(counts, key=counts.get)
        merges.append(top)
        ids = valid_01_2_while(ids, top, 256 + i)
    return merges


# ---- 01.4 bpe_encode ------------------------------------------------------------------------------

# valid: apply each merge once, in order
def valid_01_4_in_order(text, merges):
    ids = list(text.encode("utf-8"))
    for i, pair in enumerate(merges):
        ids = valid_01_2_while(ids, tuple(pair), 256 + i)
    return ids


# valid: GPT-2 style "lowest rank present pair" loop
def valid_01_4_lowest_rank(text, merges):
    ranks = {tuple(p): i for i, p in enumerate(merges)}
    ids = list(text.encode("utf-8"))
    while len(ids) >= 2:
        present = set(zip(ids, ids[1:]))
        cand = [p for p in present if p in ranks]
        if not cand:
            break
        p = min(cand, key=ranks.get)
        ids = valid_01_2_while(ids, p, 256 + ranks[p])
    return ids


# wrong: merges by frequency in the text -- breaks "apply the merges by rank ... not most frequent"
def wrong_01_4_by_frequency(text, merges):
    ranks = {tuple(p): i for i, p in enumerate(merges)}
    ids = list(text.encode("utf-8"))
    while True:
        counts = valid_01_1_zip(ids)
        cand = [p for p in counts if p in ranks]
        if not cand:
            return ids
        p = max(cand, key=counts.get)
        ids = valid_01_2_while(ids, p, 256 + ranks[p])


# wrong: ids numbered from 255 -- breaks "merge i makes the id 256 + i"
def wrong_01_4_id_255(text, merges):
    ids = list(text.encode("utf-8"))
    for i, pair in enumerate(merges):
        ids = valid_01_2_while(ids, tuple(pair), 255 + i)
    return ids


# wrong: merges applied in reverse order -- breaks "merge 0 first, then merge 1"
def wrong_01_4_reversed(text, merges):
    ids = list(text.encode("utf-8"))
    for i in reversed(range(len(merges))):
        ids = valid_01_2_while(ids, tuple(merges[i]), 256 + i)
    return ids


# ---- 01.5 wordpiece_tokenize ----------------------------------------------------------------------

# valid: shrink the end from the right
def valid_01_5_shrink(word, vocab, unk="[UNK]"):
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        found = None
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                found = piece
                break
            end -= 1
        if found is None:
            return [unk]
        pieces.append(found)
        start = end
    return pieces


# valid: recursion, longest first via a for loop over lengths
def valid_01_5_recursive(word, vocab, unk="[UNK]"):
    def rec(start):
        if start == len(word):
            return []
        for end in range(len(word), start, -1):
            piece = ("##" if start else "") + word[start:end]
            if piece in vocab:
                rest = rec(end)
                return None if rest is None else [piece] + rest
        return None
    out = rec(0)
    return [unk] if out is None else out


# wrong: shortest match first -- breaks "take the longest vocabulary entry"
def wrong_01_5_shortest(word, vocab, unk="[UNK]"):
    pieces, start = [], 0
    while start < len(word):
        for end in range(start + 1, len(word) + 1):
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                pieces.append(piece)
                start = end
                break
        else:
            return [unk]
    return pieces


# wrong: unk replaces only the failing piece, keeps the others -- breaks "the whole word becomes unk"
def wrong_01_5_partial_unk(word, vocab, unk="[UNK]"):
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                pieces.append(piece)
                start = end
                break
        else:
            pieces.append(unk)
            start += 1
    return pieces


# wrong: ignores the unk argument and always uses "[UNK]" -- breaks the `unk` parameter
def wrong_01_5_ignore_unk(word, vocab, unk="[UNK]"):
    return valid_01_5_shrink(word, vocab, "[UNK]")


# ---- 01.6 viterbi_segment -------------------------------------------------------------------------

# valid: forward DP with back-pointers
def valid_01_6_forward(text, scores):
    n = len(text)
    best = [float("-inf")] * (n + 1)
    back = [0] * (n + 1)
    best[0] = 0.0
    for end in range(1, n + 1):
        for start in range(end):
            piece = text[start:end]
            if piece in scores and best[start] + scores[piece] > best[end]:
                best[end] = best[start] + scores[piece]
                back[end] = start
    out, end = [], n
    while end > 0:
        out.append(text[back[end]:end])
        end = back[end]
    return out[::-1]


# valid: memoised recursion from the right storing whole segmentations
def valid_01_6_memo(text, scores):

    @functools.cache
    def best_from(i):
        if i == len(text):
            return 0.0, ()
        cands = []
        for j in range(i + 1, len(text) + 1):
            if text[i:j] in scores:
                s, rest = best_from(j)
                cands.append((s + scores[text[i:j]], (text[i:j],) + rest))
        return max(cands, key=lambda c: c[0])
    return list(best_from(0)[1])


# wrong: greedy longest match -- breaks "returns the segmentation with the highest total"
def wrong_01_6_greedy(text, scores):
    out, i = [], 0
    while i < len(text):
        for j in range(len(text), i, -1):
            if text[i:j] in scores:
                out.append(text[i:j])
                i = j
                break
    return out


# wrong: minimises the total (treats scores as costs) -- breaks "highest total"
def wrong_01_6_minimise(text, scores):
    neg = {k: -v for k, v in scores.items()}
    return valid_01_6_forward(text, neg)


# wrong: multiplies scores instead of summing -- breaks "a segmentation's score is the sum"
def wrong_01_6_product(text, scores):
    n = len(text)
    best = [None] * (n + 1)
    back = [0] * (n + 1)
    best[0] = 1.0
    for end in range(1, n + 1):
        for start in range(end):
            piece = text[start:end]
            if piece in scores and best[start] is not None:
                v = best[start] * scores[piece]
                if best[end] is None or v > best[end]:
                    best[end], back[end] = v, start
    out, end = [], n
    while end > 0:
        out.append(text[back[end]:end])
        end = back[end]
    return out[::-1]


# ---- second round: subtler cases ------------------------------------------------------------------

# wrong: returns the input list itself when the pair does not occur -- breaks "a **new** list"
def wrong_01_2_same_object_if_absent(ids, pair, new_id):
    if tuple(pair) not in set(zip(ids, ids[1:])):
        return ids
    return valid_01_2_while(ids, pair, new_id)


# wrong: stops as soon as the top count is 1 -- breaks "Stop early if no pair is left" (a count-1 pair is left)
def wrong_01_3_stop_at_count_one(text, num_merges):
    ids = list(text.encode("utf-8"))
    merges = []
    for i in range(num_merges):
        counts = valid_01_1_zip(ids)
        if not counts or max(counts.values()) < 2:
            break
        top = max(counts, key=counts.get)
        merges.append(top)
        ids = valid_01_2_while(ids, top, 256 + i)
    return merges


# valid: merges given as lists (e.g. read back from JSON) are handled by tuple(); dict of ranks
def valid_01_4_ranks_dict(text, merges):
    ids = list(text.encode("utf-8"))
    for i, (a, b) in enumerate(merges):
        ids = valid_01_2_skip_flag(ids, (a, b), 256 + i)
    return ids


# wrong: "##" on the first piece too -- breaks "Pieces that do not start the word are looked up with ##"
def wrong_01_5_prefix_first(word, vocab, unk="[UNK]"):
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            if "##" + word[start:end] in vocab:
                pieces.append("##" + word[start:end])
                start = end
                break
        else:
            return [unk]
    return pieces


# ---- third round ----------------------------------------------------------------------------------

# wrong: ties go to the last occurrence (>= in the scan) -- breaks "take the one that occurs first"
def wrong_01_3_tie_last(text, num_merges):
    ids = list(text.encode("utf-8"))
    merges = []
    for i in range(num_merges):
        counts = valid_01_1_zip(ids)
        if not counts:
            break
        best, best_n = None, 0
        for p, n in counts.items():
            if n >= best_n:
                best, best_n = p, n
        merges.append(best)
        ids = valid_01_2_while(ids, best, 256 + i)
    return merges


# wrong: tries candidates of at most 8 characters -- breaks "take the longest vocabulary entry that matches"
def wrong_01_5_max_len_8(word, vocab, unk="[UNK]"):
    pieces, start = [], 0
    while start < len(word):
        for end in range(min(len(word), start + 8), start, -1):
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                pieces.append(piece)
                start = end
                break
        else:
            return [unk]
    return pieces


# wrong: considers pieces of at most 4 characters -- breaks "the segmentation with the highest total"
def wrong_01_6_max_len_4(text, scores):
    short = {k: v for k, v in scores.items() if len(k) <= 4}
    return valid_01_6_forward(text, short)


# ---- fourth round ---------------------------------------------------------------------------------

# wrong: train with an overlapping merge (aaa -> 256 256) -- breaks 01.2's "occurrences never overlap", which
# 01.3's step 2 ("merge it") uses
def wrong_01_3_overlapping_merge(text, num_merges):
    ids = list(text.encode("utf-8"))
    merges = []
    for i in range(num_merges):
        counts = valid_01_1_zip(ids)
        if not counts:
            break
        top = max(counts, key=counts.get)
        merges.append(top)
        ids = wrong_01_2_overlap(ids, top, 256 + i)
    return merges


# wrong: encode with an overlapping merge -- same clause, in 01.4 ("aaa" with [(97, 97)] must give [256, 97])
def wrong_01_4_overlapping_merge(text, merges):
    ids = list(text.encode("utf-8"))
    for i, pair in enumerate(merges):
        ids = wrong_01_2_overlap(ids, tuple(pair), 256 + i)
    return ids


# wrong: at most 10 merges -- breaks "num_merges times" (train_bpe("ab" * 30 + "cdefghijklmnop" * 3, 20) needs 20)
def wrong_01_3_cap_10(text, num_merges):
    return valid_01_3_max_dict(text, min(num_merges, 10))


# wrong: applies only the first 8 merges -- breaks "apply the merges by rank ... and so on" (all of them)
def wrong_01_4_first_8_merges(text, merges):
    return valid_01_4_in_order(text, list(merges)[:8])
