"""Checkers of chapter 6 (the model and pretraining), the exercises of exercises/06_model_pretraining.ipynb.

| id | the learner writes | compared with |
|---|---|---|
| 06.1 | `next_token_loss(logits, idx)`, the shifted causal-LM loss | `F.cross_entropy`; a GPT's own loss |
| 06.2 | `prefix_lm_mask(T, prefix_len)` | `minillm.attention.prefix_lm_mask` |
| 06.3 | `gpt2_param_count(vocab_size, block_size, n_layer, d_model)` | `minillm.model.count_params` (GPT-2) |
| 06.4 | `llama_param_count(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden)` | `count_params` (Llama) |
| 06.5 | `lr_at(step, lr, warmup, total, min_ratio)`, warm-up then cosine | `minillm.train.lr_at` |
| 06.6 | `decay_groups(model)` -> `(decay, no_decay)` | the rule of `minillm.train.make_optimizer` |
| 06.7 | `train_step_flops(vocab_size, ..., seq_len, batch)`, Llama-style | `minillm.model.flops_per_token` |

Hand-worked cases come first (written out in the notebook), then random inputs (06.1), further sizes
(06.2-06.4), steps (06.5) or models (06.6). 06.1 also runs a case whose target tokens have probability
below e^-745, where log(softmax(...)) gives log(0) = -inf unless log_softmax is used. The models of 06.6
are shared between the calls of one check, not deep-copied, so that the returned parameters can be
recognised by identity. Tolerances: 1e-6 times max(1, |expected|) on the loss, 1e-6 times lr on a
learning rate; masks, counts and parameter groups must be equal. The `*_MISTAKES` lists pair simulated
wrong solutions with the hint naming each.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F
from torch import nn

from minillm.grading import answers
from minillm.grading.answers import generator
from minillm.grading.core import Exercise, Wrong, short

# Each section below defines its simulated wrong solutions (deliberately wrong: never references) next to
# the list that pairs each one with the hint naming it; EXERCISES at the end declares the exercises.

# ---------------------------------------------------------------------------------------------------
# helpers


def _int(got, args) -> int:
    if isinstance(got, float) and got.is_integer():
        raise Wrong(f"return an int (a number of parameters), got the float {got!r}: use // rather than /")
    return answers.integer(got, "a number of parameters")


def _shared(model: nn.Module) -> nn.Module:
    """Make copy.deepcopy(model) return model itself, so that run_cases' copies of the arguments keep it."""
    model.__deepcopy__ = lambda memo: model
    return model


# ---------------------------------------------------------------------------------------------------
# 06.1 next-token loss


def _logp_of(logits, targets):
    """log p(target) at each position: (B, T', V), (B, T') -> (B, T')."""
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None])[..., 0]


def loss_mean_over_vocab(logits, idx):
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    onehot = F.one_hot(idx[:, 1:], logits.shape[-1]).to(logp.dtype)
    return -(onehot * logp).mean()  # the mean also divides by V


def loss_probs_not_log(logits, idx):
    probs = torch.softmax(logits[:, :-1], dim=-1)
    return -probs.gather(-1, idx[:, 1:, None]).mean()


def loss_log_of_softmax(logits, idx):
    probs = torch.softmax(logits[:, :-1], dim=-1)
    return -torch.log(probs).gather(-1, idx[:, 1:, None]).mean()  # log(0) = -inf once a probability underflows


LOSS_MISTAKES = [
    (lambda logits, idx:
         -_logp_of(logits, idx).mean(),  # position t scored on its own token, not the next one
     "no shift: the logits at position t predict the NEXT token, idx[:, t + 1]; score "
     "logits[:, :-1] against idx[:, 1:] (yours scores each position on its own token)"),
    (lambda logits, idx: -_logp_of(logits[:, 1:], idx[:, :-1]).mean(),  # position t + 1 predicts token t
     "shifted the wrong way: logits[:, :-1] (positions 0 .. T-2) predict idx[:, 1:] "
     "(tokens 1 .. T-1); yours pairs logits[:, 1:] with idx[:, :-1]"),
    (loss_mean_over_vocab, "the mean also runs over the vocabulary (a one-hot times log-probs, then .mean()), "
                                 "which divides the loss by V: average only over the B * (T - 1) predictions"),
    (loss_probs_not_log, "cross-entropy averages -log p(target), not -p(target): take log_softmax, not softmax"),
    (lambda logits, idx:
         -logits[:, :-1].gather(-1, idx[:, 1:, None]).mean(),  # no log-softmax: not a log-probability
     "a logit is not a log-probability: take log_softmax(logits) (logits minus their "
     "logsumexp) before picking the target's entry"),
    (lambda logits, idx: -_logp_of(logits[:, :-1], idx[:, 1:]).sum(),
     "average over the B * (T - 1) predictions (mean), not the sum"),
    (lambda logits, idx: _logp_of(logits[:, :-1], idx[:, 1:]).mean(),
     "the sign: the loss is MINUS the mean log-probability of the targets (it is >= 0)"),
    (loss_log_of_softmax, "log(softmax(x)) underflows: a probability below ~1e-308 becomes 0 and its log "
                                "-inf; use torch.log_softmax (x - logsumexp(x)), which stays finite"),
]


def _ref_loss(logits: torch.Tensor, idx: torch.Tensor) -> float:
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), idx[:, 1:].reshape(-1)).item()


def _loss_out(got, args) -> float | str:
    return answers.canonical(answers.number(got, "the mean of -log p(next token) over the B * (T - 1) predictions"))


def _close_number(got, want, args) -> bool:
    return answers.same_number(got, want, lambda w: answers.TOL * max(1.0, abs(w)))


# hand-worked example of 06.1: probabilities (1/4, 1/4, 1/2) and (2/9, 6/9, 1/9); the last row is never scored
HAND_LOGITS = [[0.0, 0.0, math.log(2.0)], [math.log(2.0), math.log(6.0), 0.0], [5.0, 0.0, 0.0]]
HAND_IDX = [0, 2, 1]


def _underflowing_loss_case(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (2, 6, 7) whose targets at positions 1 and 3 sit 1000 below the rest: their probability is
    e^-1000, 0 in float64, so log(softmax) gives -inf while log_softmax gives about -1000."""
    logits = torch.randn(2, 6, 7, generator=gen, dtype=torch.float64)
    idx = torch.randint(7, (2, 6), generator=gen)
    for t in (1, 3):
        logits[torch.arange(2), t, idx[:, t + 1]] -= 1000.0
    return logits, idx


def _cases_next_token_loss() -> list:
    from minillm.model import GPT, GPTConfig

    gen = generator()
    inputs = [(torch.tensor([HAND_LOGITS], dtype=torch.float64), torch.tensor([HAND_IDX]))]
    for B, T, V, scale in [(2, 5, 4, 2.0), (3, 8, 11, 3.0), (1, 2, 6, 1.0), (4, 3, 3, 5.0)]:
        inputs.append((scale * torch.randn(B, T, V, generator=gen, dtype=torch.float64),
                       torch.randint(V, (B, T), generator=gen)))
    cases = [(args, _loss_out(_ref_loss(*args), args)) for args in inputs]
    # a GPT's logits: the reference is the model's own loss on idx[:, :-1] with targets idx[:, 1:]
    with torch.random.fork_rng(devices=[]):  # the learner's global RNG is left as it was
        torch.manual_seed(random.randrange(2**31))
        model = GPT(GPTConfig.preset("tiny", init_std=0.1)).double().eval()
    idx = torch.randint(128, (2, 9), generator=gen)
    with torch.no_grad():
        logits = model(idx)[0]
        cases.append(((logits, idx), _loss_out(model(idx[:, :-1], idx[:, 1:])[1], None)))
    args = _underflowing_loss_case(gen)
    cases.append((args, _loss_out(_ref_loss(*args), args)))
    return cases


# ---------------------------------------------------------------------------------------------------
# 06.2 prefix-LM mask


def _ij(T):
    return torch.arange(T)[:, None], torch.arange(T)[None, :]


def prefix_causal_only(T, prefix_len):
    i, j = _ij(T)
    return j <= i


def prefix_transposed(T, prefix_len):
    i, j = _ij(T)
    return (i <= j) | (i < prefix_len)


def prefix_queries_see_all(T, prefix_len):
    i, j = _ij(T)
    return (j <= i) | (i < prefix_len)  # the prefix sees the target tokens, which it must predict


def prefix_off_by_one(T, prefix_len):
    i, j = _ij(T)
    return (j <= i) | (j <= prefix_len)


def prefix_inverted(T, prefix_len):
    i, j = _ij(T)
    return ~((j <= i) | (j < prefix_len))


def prefix_block_diagonal(T, prefix_len):
    i, j = _ij(T)
    in_prefix = (i < prefix_len) & (j < prefix_len)
    return in_prefix | ((i >= prefix_len) & (j >= prefix_len) & (j <= i))  # the rest never sees the prefix


PREFIX_MISTAKES = [
    (lambda T, prefix_len: torch.ones(T, T, dtype=torch.bool),
     "that is fully bidirectional (an encoder): only the prefix is; after it, token i "
     "must not see the later tokens j > i it is going to predict"),
    (prefix_causal_only, "that is the plain causal mask: inside the prefix every token sees the WHOLE prefix "
                               "(j < prefix_len), later ones included"),
    (prefix_transposed, "yours is transposed: row i is the QUERY, column j the key; query i sees "
                              "j <= i or j < prefix_len"),
    (prefix_queries_see_all, "a prefix query must not see the tokens after the prefix (they are the targets): "
                                   "the bidirectional part is the KEYS j < prefix_len, not the queries i < prefix_len"),
    (prefix_off_by_one, "off by one: the prefix is tokens 0 .. prefix_len - 1, so use j < prefix_len "
                              "(not <=)"),
    (prefix_inverted, "polarity inverted: True must mean 'may attend'"),
    (prefix_block_diagonal, "the tokens after the prefix see the prefix too (j < prefix_len is allowed for "
                                  "every query), plus the causal part j <= i"),
]


def _mask_out(got, args) -> tuple:
    T = args[0]
    mask = answers.bool_mask(got, (T, T), "(T, T)", "comparisons such as j <= i give one, and | combines them")
    return (T, T), tuple(int(b) for b in mask.flatten().tolist())


def _cases_prefix_lm_mask() -> list:
    from minillm.attention import prefix_lm_mask

    sizes = [(5, 2), (4, 0), (4, 4), (6, 3), (1, 1), (1, 0), (7, 1), (8, 5)]
    sizes += [(T, random.randrange(T + 1)) for T in (random.randrange(2, 10), random.randrange(2, 10))]
    return [((T, P), _mask_out(prefix_lm_mask(T, P), (T, P))) for T, P in sizes]


# ---------------------------------------------------------------------------------------------------
# 06.3 GPT-2 parameter count


def _gpt2(vocab_size, block_size, n_layer, d_model, *, linear_bias=True, ln=2, final_ln=True, positions=True,
          head=False):
    d = d_model
    per_layer = 12 * d * d + (9 * d if linear_bias else 0) + 2 * ln * d
    return (vocab_size * d + (block_size * d if positions else 0) + n_layer * per_layer
            + (ln * d if final_ln else 0) + (vocab_size * d if head else 0))


GPT2_MISTAKES = [
    (lambda vocab_size, block_size, n_layer, d_model:
         _gpt2(vocab_size, block_size, n_layer, d_model, linear_bias=False),
     "the linear layers' biases are missing: q, k, v, o have d each (4d) and the MLP's "
     "up and down 4d and d, so 9d per layer"),
    (lambda vocab_size, block_size, n_layer, d_model:
         _gpt2(vocab_size, block_size, n_layer, d_model, linear_bias=False, ln=1),
     "the biases are missing: 9d per layer in the linear layers (q, k, v, o: 4d; MLP: "
     "4d + d) and d in each LayerNorm (LayerNorm has a gain AND a bias: 2d)"),
    (lambda vocab_size, block_size, n_layer, d_model: _gpt2(vocab_size, block_size, n_layer, d_model, head=True),
     "the head is tied: lm_head.weight IS the token embedding, so count V * d once"),
    (lambda vocab_size, block_size, n_layer, d_model:
         _gpt2(vocab_size, block_size, n_layer, d_model, positions=False),
     "GPT-2's positions are learned: add the position embedding, block_size * d"),
    (lambda vocab_size, block_size, n_layer, d_model: _gpt2(vocab_size, block_size, n_layer, d_model, final_ln=False),
     "the final LayerNorm (before lm_head) is missing: + 2d"),
    (lambda vocab_size, block_size, n_layer, d_model:
         _gpt2(vocab_size, block_size, n_layer, d_model, ln=0, final_ln=False),
     "the LayerNorms are missing: two per layer and a final one, 2d each (gain and bias)"),
    (lambda vocab_size, block_size, n_layer, d_model: _gpt2(vocab_size, block_size, n_layer, d_model, ln=1),
     "a LayerNorm has a gain AND a bias: 2d parameters, not d"),
    (lambda vocab_size, block_size, n_layer, d_model:
         _gpt2(vocab_size, block_size, n_layer, d_model, linear_bias=False, ln=0, final_ln=False),
     "12 L d^2 (+ embeddings) counts only the matrices; add the biases (9d per layer) "
     "and the LayerNorms (2 x 2d per layer, + 2d final)"),
]


def _ref_gpt2(vocab_size: int, block_size: int, n_layer: int, d_model: int) -> int:
    from minillm.model import GPTConfig, count_params

    cfg = GPTConfig.preset("gpt2", vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=1,
                           d_model=d_model)
    return count_params(cfg)["total"]


def _cases_gpt2_params() -> list:
    cases = [((10, 8, 1, 4), 324), ((50257, 1024, 12, 768), 124_439_808), ((50257, 1024, 24, 1024), 354_823_168)]
    more = [(50257, 1024, 36, 1280), (50257, 1024, 48, 1600), (65, 256, 6, 384), (128, 64, 2, 64), (3, 2, 1, 1),
            (random.randrange(2, 500), random.randrange(1, 300), random.randrange(1, 6), random.randrange(1, 100))]
    cases += [(args, _ref_gpt2(*args)) for args in more]
    return cases


# ---------------------------------------------------------------------------------------------------
# 06.4 Llama parameter count


def _llama(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, *, kv_heads=None, kv_width=None,
           ffn_mats=3, norm=1, bias=False, head=True, final_norm=True):
    d, hd = d_model, d_model // n_head
    kv = (n_kv_head if kv_heads is None else kv_heads) * hd if kv_width is None else kv_width
    attn = 2 * d * d + 2 * d * kv + ((2 * d + 2 * kv) if bias else 0)
    mlp = ffn_mats * d * ffn_hidden + (((ffn_mats - 1) * ffn_hidden + d) if bias else 0)
    per_layer = attn + mlp + 2 * norm * d
    return vocab_size * d * (2 if head else 1) + n_layer * per_layer + (norm * d if final_norm else 0)


LLAMA_MISTAKES = [
    (lambda vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden:
         _llama(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, kv_heads=n_head),
     "with GQA, k_proj and v_proj have n_kv_head * head_dim outputs, not n_head * head_dim "
     "(q_proj and o_proj keep d x d)"),
    (lambda vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden:
         _llama(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, kv_width=n_kv_head),
     "k_proj and v_proj are d x (n_kv_head * head_dim), head_dim = d_model // n_head: "
     "each key/value head has head_dim outputs"),
    (lambda vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden:
         _llama(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, ffn_mats=2),
     "SwiGLU has THREE matrices (gate, up, down): 3 * d * ffn_hidden per layer"),
    (lambda vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden:
         _llama(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, head=False),
     "Llama's head is NOT tied: lm_head is its own V x d matrix, on top of the embedding"),
    (lambda vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden:
         _llama(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, norm=2),
     "RMSNorm has a gain only (d parameters), no bias: not 2d"),
    (lambda vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden:
         _llama(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, bias=True),
     "Llama's linear layers have no biases"),
    (lambda vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden:
         _llama(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, final_norm=False),
     "the final RMSNorm (before lm_head) is missing: + d"),
    (lambda vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden:
         _llama(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, norm=0, final_norm=False),
     "the RMSNorms are missing: two per layer and a final one, d each"),
]


def _ref_llama(vocab_size: int, n_layer: int, d_model: int, n_head: int, n_kv_head: int, ffn_hidden: int) -> int:
    from minillm.model import GPTConfig, count_params

    cfg = GPTConfig.preset("llama2-7b", vocab_size=vocab_size, n_layer=n_layer, d_model=d_model, n_head=n_head,
                           n_kv_head=n_kv_head, ffn_hidden=ffn_hidden)
    return count_params(cfg)["total"]


def _cases_llama_params() -> list:
    cases = [((32000, 32, 4096, 32, 32, 11008), 6_738_415_616), ((32000, 80, 8192, 64, 8, 28672), 68_976_648_192),
             ((128256, 32, 4096, 32, 8, 14336), 8_030_261_248)]
    more = [(32000, 40, 5120, 40, 40, 13824), (128, 2, 64, 4, 2, 172), (100, 3, 48, 6, 3, 128), (50, 1, 16, 4, 1, 40),
            (7, 2, 8, 2, 2, 5)]
    n_head = random.choice([4, 6, 8])
    more.append((random.randrange(2, 1000), random.randrange(1, 5), n_head * random.choice([2, 4, 8]), n_head,
                 random.choice([k for k in range(1, n_head + 1) if n_head % k == 0 and k < n_head]),
                 random.randrange(1, 200)))
    cases += [(args, _ref_llama(*args)) for args in more]
    return cases


# ---------------------------------------------------------------------------------------------------
# 06.5 warm-up + cosine learning rate


def _lr(step, lr, warmup, total, min_ratio, *, warm0=False, warm_plus_one=False, to_zero=False, over_total=False,
        clamp=True, no_half=False, linear=False, add_min=False):
    if warmup and step < warmup:
        return lr * (step if warm0 else step + 1) / (warmup + 1 if warm_plus_one else warmup)
    progress = step / total if over_total else (step - warmup) / max(total - warmup, 1)
    if clamp:
        progress = min(progress, 1.0)
    shape = 1 - progress if linear else (math.cos(math.pi * progress) if no_half
                                         else 0.5 * (1 + math.cos(math.pi * progress)))
    if to_zero:
        return lr * shape
    if add_min:
        return lr * shape + min_ratio * lr
    return lr * (min_ratio + (1 - min_ratio) * shape)


LR_MISTAKES = [
    (lambda step, lr, warmup, total, min_ratio: _lr(step, lr, warmup, total, min_ratio, warm0=True),
     "the warm-up starts at lr / warmup, not 0: lr * (step + 1) / warmup (a step with "
     "learning rate 0 is wasted)"),
    (lambda step, lr, warmup, total, min_ratio:
         _lr(step, lr, warmup, total, min_ratio, warm_plus_one=True),  # nanoGPT's (step + 1) / (warmup + 1)
     "divide by warmup, not warmup + 1 (nanoGPT's convention): the warm-up reaches the "
     "full lr at step warmup - 1, lr * (step + 1) / warmup"),
    (lambda step, lr, warmup, total, min_ratio: _lr(step, lr, warmup, total, min_ratio, to_zero=True),
     "the cosine ends at min_ratio * lr, not 0: lr * (min_ratio + (1 - min_ratio) * "
     "0.5 * (1 + cos(pi * progress)))"),
    (lambda step, lr, warmup, total, min_ratio: _lr(step, lr, warmup, total, min_ratio, over_total=True),
     "the cosine runs over the steps AFTER the warm-up: progress = (step - warmup) / "
     "(total - warmup), not step / total"),
    (lambda step, lr, warmup, total, min_ratio: _lr(step, lr, warmup, total, min_ratio, clamp=False),
     "after step total the rate stays at min_ratio * lr: clamp progress to at most 1 (the "
     "cosine would rise again)"),
    (lambda step, lr, warmup, total, min_ratio: _lr(step, lr, warmup, total, min_ratio, no_half=True),
     "the cosine factor is 0.5 * (1 + cos(pi * progress)), which goes from 1 to 0; cos(pi * "
     "progress) alone goes to -1"),
    (lambda step, lr, warmup, total, min_ratio: _lr(step, lr, warmup, total, min_ratio, linear=True),
     "that is a linear decay; the schedule here is a cosine: 0.5 * (1 + cos(pi * progress))"),
    (lambda step, lr, warmup, total, min_ratio: _lr(step, lr, warmup, total, min_ratio, add_min=True),
     "interpolate between lr and min_ratio * lr: lr * (min_ratio + (1 - min_ratio) * factor); "
     "adding min_ratio * lr on top starts the decay above lr"),
]


def _lr_out(got, args) -> float | str:
    return answers.canonical(answers.number(got, "the learning rate at this step"), significant=10)


def _close_lr(got, want, args) -> bool:
    return answers.same_number(got, want, lambda w: answers.TOL * args[1])


def _cases_lr_at() -> list:
    from minillm.train import lr_at

    inputs = [(step, 1e-3, 10, 110, 0.1) for step in (0, 4, 9, 10, 35, 60, 110, 150)]
    inputs += [(0, 3e-4, 0, 1000, 0.1), (250, 3e-4, 0, 1000, 0.1), (7, 1.0, 5, 105, 0.0), (80, 1.0, 5, 105, 0.0),
               (1999, 6e-4, 2000, 600_000, 0.1), (300_000, 6e-4, 2000, 600_000, 0.1), (3, 0.5, 4, 9, 0.2),
               (12, 0.5, 4, 9, 0.2)]
    for _ in range(4):
        warmup = random.randrange(0, 50)
        total = warmup + random.randrange(1, 500)
        inputs.append((random.randrange(0, total + 100), 10 ** random.uniform(-5, 0), warmup, total,
                       random.choice([0.0, 0.05, 0.1, 0.5])))
    return [(args, _lr_out(lr_at(*args), args)) for args in inputs]


# ---------------------------------------------------------------------------------------------------
# 06.6 weight-decay groups


def _trainable(model):
    return [p for p in model.parameters() if p.requires_grad]


def decay_by_bias_name(model):
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [p for n, p in named if "bias" not in n], [p for n, p in named if "bias" in n]


def decay_swapped(model):
    params = _trainable(model)
    return [p for p in params if p.dim() < 2], [p for p in params if p.dim() >= 2]


def decay_linear_only(model):
    """minGPT's older rule: decay nn.Linear weights only (embeddings are left out)."""
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    params = _trainable(model)
    return [p for p in params if id(p) in linear], [p for p in params if id(p) not in linear]


DECAY_MISTAKES = [
    (lambda model: (_trainable(model), []),
     "not everything is decayed: biases and norm gains (dim < 2) go in no_decay, since "
     "pulling a LayerNorm/RMSNorm gain towards 0 would shrink the activations"),
    (decay_by_bias_name, "the norms' gains (e.g. input_layernorm.weight) are 1-D too and must not be "
                               "decayed; a name test for 'bias' misses them: decide by p.dim() >= 2"),
    (decay_swapped, "the groups are swapped: return (decay, no_decay), decay holding the matrices and "
                          "embeddings (dim >= 2)"),
    (decay_linear_only, "embeddings are matrices too: the rule here decays every parameter with dim >= 2, "
                              "embeddings included (GPT-3, Llama, minillm.train.make_optimizer); decaying only "
                              "nn.Linear weights leaves them out"),
]


class _Conv1dWithScale(nn.Module):
    """A 3-D weight (decayed), a 0-D scalar parameter and a bias (not decayed)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3)
        self.scale = nn.Parameter(torch.ones(()))


def _decay_models() -> list[nn.Module]:
    from minillm.model import GPT, GPTConfig

    frozen = GPT(GPTConfig.preset("tiny", n_layer=1))
    frozen.embed_positions.weight.requires_grad_(False)
    for p in frozen.layers[0].self_attn.parameters():
        p.requires_grad_(False)
    seq = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 10, bias=False))
    models = [GPT(GPTConfig.preset("tiny")), GPT(GPTConfig.preset("tiny-llama")), seq, frozen, _Conv1dWithScale()]
    return [_shared(m) for m in models]


def _ref_groups(model: nn.Module) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Names of make_optimizer's two groups: trainable parameters with dim >= 2, and the other trainable ones.
    (The rule is applied here directly: building the AdamW would import torch._dynamo, seconds of a check;
    tests/test_exercises_ch06.py checks that make_optimizer's groups are these.)"""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return tuple(sorted(n for n, p in named if p.dim() >= 2)), tuple(sorted(n for n, p in named if p.dim() < 2))


def _groups_out(got, args) -> tuple[tuple[str, ...], tuple[str, ...]]:
    model = args[0]
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise Wrong(f"return a pair (decay, no_decay) of lists of parameters, got {type(got).__name__} "
                    f"{short(got, 40)}")
    names = {id(p): n for n, p in model.named_parameters()}
    groups = []
    for which, group in zip(("decay", "no_decay"), got, strict=True):
        if isinstance(group, torch.Tensor) or isinstance(group, (str, bytes)):
            raise Wrong(f"{which} must be a list of parameters, got a {type(group).__name__}")
        try:
            items = list(group)
        except TypeError as e:
            raise Wrong(f"{which} must be a list of parameters, got {type(group).__name__}") from e
        found = []
        for p in items:
            if not isinstance(p, torch.Tensor) or id(p) not in names:
                raise Wrong(f"{which} holds {short(p, 40)}, which is not one of the model's parameters: put the "
                            "parameters themselves in the lists (p from model.parameters()), not names or copies")
            found.append(names[id(p)])
        groups.append(found)
    both = groups[0] + groups[1]
    twice = sorted({n for n in both if both.count(n) > 1})
    if twice:
        raise Wrong(f"{twice[0]} appears twice: each parameter goes in exactly one group, once (a tied lm_head.weight "
                    "IS embed_tokens.weight; model.parameters() yields it once)")
    frozen = sorted(n for n, p in model.named_parameters() if not p.requires_grad and n in both)
    if frozen:
        raise Wrong(f"{frozen[0]} is frozen (requires_grad=False): leave it out, the optimizer must not update it")
    missing = sorted(n for n, p in model.named_parameters() if p.requires_grad and n not in both)
    if missing:
        raise Wrong(f"{missing[0]} is in neither group: every trainable parameter goes in one of them")
    return tuple(sorted(groups[0])), tuple(sorted(groups[1]))


def _cases_decay_groups() -> list:
    with torch.random.fork_rng(devices=[]):  # building the models must not move the learner's global RNG
        models = _decay_models()
    return [((m,), _ref_groups(m)) for m in models]


# ---------------------------------------------------------------------------------------------------
# 06.7 FLOPs of one training step (interview question)


def _ref_step_flops(vocab_size, n_layer, d_model, n_head, n_kv_head, ffn_hidden, seq_len, batch, *,
                    fwd_bwd=6, attention=12, head=True, embedding=False, n_kv=None, causal=1.0) -> float:
    """flops_per_token(count_params(...)) * tokens; each keyword set otherwise is one simulated mistake."""
    from minillm.model import GPTConfig, count_params, flops_per_token

    cfg = GPTConfig.preset("llama2-7b", vocab_size=vocab_size, n_layer=n_layer, d_model=d_model, n_head=n_head,
                           n_kv_head=n_kv or n_kv_head, ffn_hidden=ffn_hidden)
    parts = count_params(cfg)
    n = parts["non_embedding"] - (0 if head else parts["lm_head"]) + (parts["embed_tokens"] if embedding else 0)
    per_token = fwd_bwd / 6 * flops_per_token(n, n_layer, seq_len, d_model) \
        + (attention * causal - 12 * fwd_bwd / 6) * n_layer * seq_len * d_model
    return per_token * seq_len * batch


def _flops_out(got, args) -> float | str:
    return answers.canonical(answers.number(got, "FLOPs of one training step"), significant=10)


def _close_flops(got, want, args) -> bool:
    return answers.same_number(got, want, lambda w: 1e-6 * abs(w))


def _cases_step_flops() -> list:
    shapes = [(32000, 32, 4096, 32, 32, 11008, 4096, 1), (128256, 32, 4096, 32, 8, 14336, 8192, 4),
              (32000, 80, 8192, 64, 8, 28672, 4096, 2), (128, 2, 64, 4, 2, 172, 64, 8), (50, 1, 16, 4, 1, 40, 10, 3)]
    n_head = random.choice([4, 6, 8])
    shapes.append((random.randrange(2, 50000), random.randrange(1, 9), n_head * random.choice([2, 4, 16]), n_head,
                   random.choice([k for k in range(1, n_head + 1) if n_head % k == 0]), random.randrange(1, 2000),
                   random.randrange(1, 4096), random.randrange(1, 64)))
    return [(args, _flops_out(_ref_step_flops(*args), args)) for args in shapes]


STEP_FLOPS_MISTAKES = [
    (lambda *a: _ref_step_flops(*a, fwd_bwd=2),
     "that is the forward pass only: the backward pass costs twice the forward, so a training "
     "step is three forward passes"),
    (lambda *a: _ref_step_flops(*a, attention=0),
     "attention's own products (q against every key, the weighted sum of the values) are "
     "missing: they grow with seq_len and are not parameters"),
    (lambda *a: _ref_step_flops(*a, head=False),
     "the untied lm_head is a d_model x vocab_size matrix every token multiplies: count it"),
    (lambda *a: _ref_step_flops(*a, embedding=True),
     "looking up an embedding row is free: leave the input embedding table out"),
    (lambda *a: _ref_step_flops(*a, n_kv=a[3]),
     "with GQA the k and v projections have n_kv_head heads, not n_head: they are smaller"),
    (lambda *a: _ref_step_flops(*a, causal=0.5),
     "the estimate counts every query against all seq_len keys (no saving for the causal "
     "mask)"),
]


EXERCISES = (
    Exercise("06.1", "Next-token loss", 2, cases=_cases_next_token_loss, name="next_token_loss", normalize=_loss_out,
             same=_close_number, mistakes=LOSS_MISTAKES),
    Exercise("06.2", "Prefix-LM mask", 1, cases=_cases_prefix_lm_mask, name="prefix_lm_mask", normalize=_mask_out,
             mistakes=PREFIX_MISTAKES),
    Exercise("06.3", "GPT-2 parameter count", 1, cases=_cases_gpt2_params, name="gpt2_param_count", normalize=_int,
             mistakes=GPT2_MISTAKES),
    Exercise("06.4", "Llama parameter count", 2, cases=_cases_llama_params, name="llama_param_count", normalize=_int,
             mistakes=LLAMA_MISTAKES),
    Exercise("06.5", "Warm-up and cosine learning rate", 1, cases=_cases_lr_at, name="lr_at", normalize=_lr_out,
             same=_close_lr, mistakes=LR_MISTAKES),
    Exercise("06.6", "Weight-decay groups", 1, cases=_cases_decay_groups, name="decay_groups", normalize=_groups_out,
             mistakes=DECAY_MISTAKES),
    Exercise("06.7", "FLOPs of one training step", 2, cases=_cases_step_flops, name="train_step_flops",
             normalize=_flops_out, same=_close_flops, mistakes=STEP_FLOPS_MISTAKES),
)
