# Solution source of exercises/01_tokenization.ipynb (percent format: "# %%" starts a code cell,
# "# %% [markdown]" a markdown cell). Regenerate the learner notebook with
#     .venv/bin/python tools/build_exercises.py
# then execute it with  .venv/bin/python tools/execute_notebooks.py exercises/01_tokenization.ipynb
# Code between "# BEGIN SOLUTION <id>: <task>" and "# END SOLUTION" becomes
# raise NotImplementedError("Exercise <id>: <task>") in the learner notebook.

# %% [markdown]
# # Exercises 1: Tokenization
#
# Six small functions, each the heart of a tokenizer from this chapter: counting and merging pairs,
# training and applying byte-pair encoding (BPE), WordPiece's greedy longest match, and the Viterbi
# search of a Unigram language model.
#
# How it works: each exercise is a function whose body is a stub that raises `NotImplementedError`.
# Replace the `raise` line with your code and run the check cell below it. The check compares your
# function with the `minillm` reference on the worked examples shown here and on fresh random inputs,
# and prints one line:
#
# - ✅ passed, with the points earned,
# - ❌ with a hint (it names the mistake when it recognises a common one, and shows a failing input),
# - ⬜ not attempted, while the stub still raises `NotImplementedError`.
#
# A check never raises, so you can run the whole notebook at any time. For a score report of the
# whole notebook, run `minillm grade exercises/01_tokenization.ipynb` in a terminal; see
# [How grading works](../book/grading.md).
#
# Read first: [1.1 BPE](../notebooks/01_tokenization/01_bpe.ipynb) for exercises 01.1 to 01.4, and
# [1.2 WordPiece and Unigram](../notebooks/01_tokenization/02_wordpiece_unigram.ipynb) for 01.5 and 01.6.

# %%
import math

from minillm.grading import check

# %% [markdown]
# ## 01.1 Count adjacent pairs (1 point)
#
# BPE starts from a list of ids (the UTF-8 bytes of the text, 0 to 255) and repeatedly merges the most
# frequent **adjacent pair**. Write `get_pair_counts(ids)`, which returns a dict mapping each pair
# `(a, b)` of neighbouring ids to the number of times it occurs.
#
# | `ids` | `get_pair_counts(ids)` |
# |---|---|
# | `[1, 2, 3, 1, 2]` | `{(1, 2): 2, (2, 3): 1, (3, 1): 1}` |
# | `[97, 97, 97]` | `{(97, 97): 2}`: counting looks at every position, so overlapping pairs both count |
# | `[7]` or `[]` | `{}` |
#
# The dict's keys must come in order of first occurrence (`(1, 2)` before `(2, 3)` above): exercise 01.3
# relies on that to break ties.

# %%
def get_pair_counts(ids):
    """Count each adjacent pair (ids[i], ids[i + 1]); keys in order of first occurrence."""
    # BEGIN SOLUTION 01.1: return the pair counts of ids as a dict
    counts = {}
    for i in range(len(ids) - 1):
        pair = (ids[i], ids[i + 1])
        counts[pair] = counts.get(pair, 0) + 1
    return counts
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Walk over neighbouring positions once; every position but the last starts one pair.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `return a dict {(a, b): number of times b directly follows a in ids}`
#
# </details>

# %%
check("01.1", get_pair_counts)

# %% [markdown]
# ## 01.2 Merge a pair (1 point)
#
# Write `merge_pair(ids, pair, new_id)`: a **new** list in which every occurrence of `pair` is replaced
# by the single id `new_id`. Scan from left to right; once a pair is replaced, both of its ids are used
# up, so occurrences never overlap. Leave the input list unchanged.
#
# | call | result |
# |---|---|
# | `merge_pair([1, 2, 3, 1, 2], (1, 2), 99)` | `[99, 3, 99]` |
# | `merge_pair([97, 97, 97], (97, 97), 256)` | `[256, 97]`, not `[256, 256]` |
# | `merge_pair([97, 97, 97, 97], (97, 97), 256)` | `[256, 256]` |
# | `merge_pair([3, 1, 2], (1, 2), 9)` | `[3, 9]` |

# %%
def merge_pair(ids, pair, new_id):
    """Replace each non-overlapping occurrence of `pair` in `ids` by `new_id`, left to right."""
    # BEGIN SOLUTION 01.2: return a new list with the pair merged
    out = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2  # both ids of the pair are used up
        else:
            out.append(ids[i])
            i += 1
    return out
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Scan with an index you advance yourself: by two after a merge, by one otherwise.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `build a new list, replacing each (non-overlapping) pair by new_id, left to right`
#
# </details>

# %%
check("01.2", merge_pair)

# %% [markdown]
# ## 01.3 Train BPE merges (2 points)
#
# Write `train_bpe(text, num_merges)`, the training of byte-level BPE (no pre-splitting of the text into
# words). It starts from the UTF-8 bytes of `text` and learns at most `num_merges` merges; merge `i`
# (counting from 0) replaces the most frequent adjacent pair of the current ids by the new id `256 + i`,
# so later merges may use ids made by earlier ones. Return the list of merged pairs, in the order they
# were learned; stop early when no pair is left (fewer than two ids).
#
# **Ties**: when several pairs share the top count, take the one whose first occurrence comes first in
# the current ids.
#
# Worked example, `train_bpe("aaabdaaabac", 3)` (a = 97, b = 98, c = 99, d = 100):
#
# | step | ids | top pair (count) | new id |
# |---|---|---|---|
# | 0 | `a a a b d a a a b a c` | `(97, 97)` (4) | 256 |
# | 1 | `256 a b d 256 a b a c` | `(256, 97)` (2, tied with `(97, 98)` but first) | 257 |
# | 2 | `257 b d 257 b a c` | `(257, 98)` (2) | 258 |
#
# so the answer is `[(97, 97), (256, 97), (257, 98)]`. Non-ASCII text works on bytes: `"ééé"` is
# six bytes `195 169 195 169 195 169`, and its first merge is `(195, 169)`. A pair that occurs only once
# is still merged: `train_bpe("abcd", 2)` is `[(97, 98), (256, 99)]`; `train_bpe("ab", 3)` stops early
# with `[(97, 98)]`, because after one merge no pair is left.

# %%
def train_bpe(text, num_merges):
    """Learn `num_merges` BPE merges from the UTF-8 bytes of `text`; merge i creates id 256 + i."""
    # BEGIN SOLUTION 01.3: return the merges learned from text, in order
    ids = list(text.encode("utf-8"))
    merges = []
    for i in range(num_merges):
        counts = get_pair_counts(ids)
        if not counts:
            break  # a single id is left: nothing to merge
        pair = max(counts, key=counts.get)  # first of the most frequent pairs
        merges.append(pair)
        ids = merge_pair(ids, pair, 256 + i)
    return merges
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Work on the UTF-8 bytes; each round counts the pairs of the current ids, picks one, and rewrites the ids with
# it. Your `get_pair_counts` and `merge_pair` do most of the work.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `ids = list(text.encode("utf-8"))`; then `num_merges` times: count the pairs (stop if there are none), take
# `max(counts, key=counts.get)` (a dict filled left to right keeps first-occurrence order and `max` returns the
# first of equal maxima, which is the tie rule), record it, and `merge_pair` it into `256 + i`.
#
# </details>

# %%
check("01.3", train_bpe)

# %% [markdown]
# ## 01.4 Encode with BPE merges (2 points)
#
# Write `bpe_encode(text, merges)`: the ids of `text` under a list of learned merges. Start from the
# UTF-8 bytes and apply the merges **by rank**, the order in which they were learned: merge 0 first,
# then merge 1 (which may use the id 256 that merge 0 created), and so on; merge `i` makes the id
# `256 + i`. GPT-2 and minbpe state the rule as "repeatedly merge the present pair of lowest rank".
#
# A tempting mistake is to merge the pair that is most frequent *in the text being encoded*. With
# `merges = [(98, 99), (97, 98)]` ("bc" was learned before "ab"), the text `"ababc"` encodes to
# `[257, 97, 256]`: first `b c -> 256` gives `a b a 256`, then `a b -> 257`. Merging by frequency would
# merge the two `a b` first and give `[257, 257, 99]`.
#
# Also: `bpe_encode("aaabdaaabac", [(97, 97), (256, 97), (257, 98)]) == [258, 100, 258, 97, 99]`.

# %%
def bpe_encode(text, merges):
    """Ids of `text`: its UTF-8 bytes with `merges` applied in rank order (merge i makes 256 + i)."""
    # BEGIN SOLUTION 01.4: return the ids of text encoded with the merges
    ids = list(text.encode("utf-8"))
    for i, pair in enumerate(merges):
        ids = merge_pair(ids, tuple(pair), 256 + i)
    return ids
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# The order of the merges is their priority: an earlier merge always wins, whatever the counts in this text.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Start from the UTF-8 bytes. For merges learned by `train_bpe`, "lowest rank first" gives the same ids as
# applying each merge once, in order: `merge_pair` merge `i` into `256 + i` for `i = 0, 1, ...`.
#
# </details>

# %%
check("01.4", bpe_encode)

# %% [markdown]
# ## 01.5 WordPiece: greedy longest match first (2 points)
#
# BERT's WordPiece splits a word with a fixed vocabulary: at the current position take the **longest**
# vocabulary entry that matches, move past it, repeat. Pieces that do not start the word are looked up
# with the prefix `"##"`. If at some position nothing matches, the **whole word** becomes `unk`.
# Write `wordpiece_tokenize(word, vocab, unk="[UNK]")`; `vocab` is a set of strings.
#
# | word | vocab | pieces |
# |---|---|---|
# | `"unaffable"` | `{"un", "##aff", "##able"}` | `["un", "##aff", "##able"]` |
# | `"unaffable"` | `V2` (below) | `["una", "##ff", "##able"]` |
# | `"abb"` | `{"a", "b", "##b"}` | `["a", "##b", "##b"]` |
# | `"bab"` | `{"a", "b", "##b"}` | `["[UNK]"]` (there is no `"##a"`) |
# | `"unbelievable"` | `{"un", "##believ", "##able", "##believable"}` | `["un", "##believable"]` |
#
# with `V2 = {"u", "un", "una", "##f", "##ff", "##a", "##able", "##b", "##l", "##e"}`. The second row shows
# that greedy is not "linguistic": `"una"` is longer than `"un"`, so it wins.

# %%
def wordpiece_tokenize(word, vocab, unk="[UNK]"):
    """Greedy longest-match-first WordPiece; non-initial pieces carry "##"; no match -> [unk]."""
    # BEGIN SOLUTION 01.5: return the WordPiece pieces of word
    pieces = []
    start = 0
    while start < len(word):
        match = None
        for end in range(len(word), start, -1):  # longest candidate first
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                match = piece
                break
        if match is None:
            return [unk]  # BERT gives up on the whole word
        pieces.append(match)
        start = end
    return pieces
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Try the longest candidate at the current position first and shorten it until it is in the vocabulary; pieces
# after the first carry a prefix.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# `at each position take the longest piece in vocab ("##" inside the word); else [unk]`
#
# </details>

# %%
check("01.5", wordpiece_tokenize)

# %% [markdown]
# ## 01.6 Viterbi segmentation with a Unigram model (2 points)
#
# A Unigram language model gives each piece a log-probability `scores[piece]` (a number <= 0); a
# segmentation's score is the **sum** of the scores of its pieces (the log of the product of their
# probabilities). Write `viterbi_segment(text, scores)`, which returns the segmentation with the
# highest total. Every single character of `text` is in `scores`, so a segmentation always exists.
#
# With `scores = {"h": -3, "u": -3, "g": -3, "s": -3, "hug": -2, "hu": -1, "gs": -1.5, "ugs": -2.5}`,
# `viterbi_segment("hugs", scores) == ["hu", "gs"]` (total -2.5), which beats `["hug", "s"]` (-5) and
# `["h", "ugs"]` (-5.5). Greedy longest match would have picked `"hug"`. Pieces can be of any length:
# with `"abcdefgh": -1` and each letter at -3, `"abcdefgh"` is one piece (-1, not -24). The check accepts any
# segmentation whose total is within 1e-9 of the best one.

# %%
def viterbi_segment(text, scores):
    """The segmentation of `text` into pieces of `scores` with the highest sum of log-probabilities."""
    # BEGIN SOLUTION 01.6: return the best segmentation of text
    n = len(text)
    longest = max(len(piece) for piece in scores)
    best = [-math.inf] * (n + 1)  # best[i]: highest total score of a segmentation of text[:i]
    best[0] = 0.0
    start_of = [0] * (n + 1)  # start_of[i]: where the last piece of that segmentation starts
    for end in range(1, n + 1):
        for start in range(max(0, end - longest), end):
            piece = text[start:end]
            if piece in scores and best[start] + scores[piece] > best[end]:
                best[end] = best[start] + scores[piece]
                start_of[end] = start
    pieces = []
    end = n
    while end > 0:
        pieces.append(text[start_of[end]:end])
        end = start_of[end]
    return pieces[::-1]
    # END SOLUTION


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Keep, for every end position, the best total that reaches it and where its last piece started.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Let `best[i]` be the best score of any segmentation of `text[:i]`, with `best[0] = 0`. Then
# `best[end] = max(best[start] + scores[text[start:end]])` over the `start` whose piece is in `scores`;
# remember the best `start` of each `end` and walk back from `len(text)`.
#
# </details>

# %%
check("01.6", viterbi_segment)

# %% [markdown]
# ## Your score
#
# Run `minillm grade exercises/01_tokenization.ipynb` in a terminal (from the course folder) for a report
# card of this notebook. The reference versions of these functions are in the package: `get_pair_counts`,
# `merge_pair` and `BPETokenizer` in `minillm/tokenizer/bpe.py`, `WordPiece` in
# `minillm/tokenizer/wordpiece.py`, and `Unigram` in the same package; `show_source(...)` from
# `minillm.utils` prints them.
