"""Char vs byte-level BPE for the base model: the same recipe for a short run, held-out bits per byte compared.

    python tools/compare_base_tokenizers.py --steps 300 --bpe-vocab 2048

Both runs use the base preset, the recipe's data mixture and learning rate, and the same number of steps and
tokens per step; a BPE token covers more text, so BPE sees more bytes per step, and its larger context in bytes
helps too. Bits per byte (minillm.pretrained) make the two comparable. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from minillm.data import MixedData, build_tokenizer, load_corpus  # noqa: E402
from minillm.fast import to_fast  # noqa: E402
from minillm.model import GPT, GPTConfig  # noqa: E402
from minillm.pretrained import RECIPE, evaluate_corpora  # noqa: E402
from minillm.train import TrainConfig, train  # noqa: E402
from minillm.utils import markdown_table  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--bpe-vocab", type=int, default=2048)
    args = ap.parse_args()
    recipe = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    weights = recipe["data"]["corpus"]
    texts = {n: load_corpus(n) for n in weights}
    rows = []
    for kind in ("char", "bpe"):
        t0 = time.perf_counter()
        tok = build_tokenizer("".join(texts.values()), kind, args.bpe_vocab)
        t_tok = time.perf_counter() - t0
        data = MixedData(texts, tok, weights)
        train_kw = {**recipe["train"], "steps": args.steps, "warmup": min(recipe["train"]["warmup"], args.steps // 10),
                    "eval_every": 0, "ckpt_every": 0, "progress": True}
        cfg = TrainConfig(**train_kw)
        torch.manual_seed(cfg.seed)
        model = to_fast(GPT(GPTConfig.preset("base", vocab_size=tok.vocab_size, **recipe["model"])))
        hist = train(model, data, cfg)
        val = evaluate_corpora(model, tok)
        chars = sum(len(t) for t in texts.values())
        rows.append({"tokenizer": f"{kind} ({tok.vocab_size:,} ids)",
                     "chars / token": f"{chars / sum(len(p.train) + len(p.val) for p in data.parts.values()):.2f}",
                     "parameters": f"{model.num_params():,}",
                     **{f"{n} bits/byte": f"{v['bits_per_byte']:.3f}" for n, v in val.items()},
                     "train s": f"{hist.seconds:.0f}", "tokenizer s": f"{t_tok:.1f}"})
        print(rows[-1], flush=True)
    print(f"\n{args.steps} steps x {recipe['train']['batch_size']} x {recipe['train']['seq_len']} tokens, "
          f"{torch.get_num_threads()} thread(s)\n")
    print(markdown_table(rows, list(rows[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
