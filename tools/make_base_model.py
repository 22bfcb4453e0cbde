"""Build the course's base model: train it with the recipe, then write weights, meta.json and the report card.

    python tools/make_base_model.py                       # trains (about 25 min on 2 CPU cores), then exports
    python tools/make_base_model.py --run runs/base       # exports a finished `minillm train` run

Training is `minillm train --preset base --config minillm/base_model/recipe.yaml --out RUN`; the export evaluates
every corpus's held-out split in float32 and again from the bfloat16 file that ships, writes
`minillm/base_model/{model.safetensors, meta.json, card.md, loss.png}` and prints the card.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minillm.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from minillm.data import tokenizer_from_state  # noqa: E402
from minillm.generate import generate  # noqa: E402
from minillm.pretrained import BASE_DIR, RECIPE, evaluate_corpora, load_base, save_base  # noqa: E402
from minillm.sampling import SamplingParams  # noqa: E402
from minillm.utils import markdown_table  # noqa: E402

PROMPTS = ["ROMEO:\n", "KING HENRY V:\nOnce more", "静夜思\n作者：李白\n", "春晓\n作者："]
N_TRAJECTORY = 20  # the first steps whose losses the reproduction test replays


def samples(model, tok, n: int = 160, seed: int = 0) -> list[tuple[str, str]]:
    out = []
    for prompt in PROMPTS:
        g = torch.Generator().manual_seed(seed)
        idx = torch.tensor([tok.encode(prompt)])
        ids = generate(model, idx, SamplingParams(temperature=0.8, top_k=40, max_tokens=n), generator=g)
        out.append((prompt, tok.decode(ids[0, idx.shape[1]:].tolist())))
    return out


def card(meta: dict, shown: list[tuple[str, str]]) -> str:
    fp32 = meta["val_fp32"]
    rows = [{"corpus": name, "held-out tokens": f"{v['tokens']:,}",
             "nats/token (fp32)": f"{fp32[name]['nats_per_token']:.4f}",
             "nats/token (shipped bf16)": f"{v['nats_per_token']:.4f}", "bits/byte (bf16)": f"{v['bits_per_byte']:.4f}"}
            for name, v in meta["val"].items()]
    mc = meta["model_config"]
    t = meta["train"]
    lines = [
        "# The minillm base model: report card",
        "",
        f"A {meta['params']:,}-parameter Llama-shaped GPT (preset `base`: {mc['n_layer']} layers, d_model "
        f"{mc['d_model']}, {mc['n_head']} heads, SwiGLU, RMSNorm, RoPE, tied embeddings, context {mc['block_size']}) "
        f"trained from scratch on the three bundled corpora with a character tokenizer ({mc['vocab_size']:,} "
        "characters).",
        "",
        "## Recipe",
        "",
        "```",
        f"minillm train --preset base --config minillm/base_model/recipe.yaml --out {meta['run_dir_name']}",
        "```",
        "",
        "```yaml",
        RECIPE.read_text(encoding="utf-8").strip(),
        "```",
        "",
        f"- data mixture (sampling weights): {meta['mixture']}; each corpus's last 10% is held out",
        f"- {t['steps']:,} steps x {t['batch_size']} x {t['seq_len']} = {t['tokens']:,} training tokens; "
        f"{t['seconds'] / 60:.1f} minutes of training steps ({t['tokens_per_s']:,.0f} tokens/s) on {meta['machine']}",
        f"- training loss at the end {t['final_train_loss']:.4f}; mixture validation loss {t['final_val_loss']:.4f} "
        "nats/token",
        "",
        "## Held-out loss per corpus",
        "",
        "Every token of each corpus's held-out 10%, in consecutive windows of 256 (a token sees 0-255 tokens of "
        "context).",
        "Bits per byte divide the total by the text's UTF-8 size: an English character is 1 byte, a Chinese one 3.",
        "",
        markdown_table(rows, list(rows[0])),
        "",
        "![loss curve](loss.png)",
        "",
        "## Samples (temperature 0.8, top-k 40, seed 0, 160 characters)",
        "",
    ]
    for prompt, text in shown:
        lines += ["```text", prompt + text, "```", ""]
    lines += ["Written by `tools/make_base_model.py`; `tests/test_pretrained.py` checks the weights give these losses "
              "and that the recipe's first steps reproduce the recorded training losses."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a finished `minillm train` run directory (skip training)")
    ap.add_argument("--out", default=str(BASE_DIR), help="where to write the base model files")
    ap.add_argument("--machine", help="how the training machine is described in the card (default: this one)")
    args = ap.parse_args()
    run = Path(args.run) if args.run else ROOT / "runs" / "base"
    if not args.run:
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "minillm.cli", "train", "--preset", "base", "--config", str(RECIPE),
                        "--out", str(run)], check=True, cwd=ROOT)
        print(f"trained in {time.time() - t0:.0f} s")
    state = load_checkpoint(run, "cpu")
    model, tok = model_from_checkpoint(state), tokenizer_from_state(state["tokenizer"])
    model.eval()
    hist, tcfg = state["history"], state["train_config"]
    import yaml

    mixture = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))["data"]["corpus"]
    val_fp32 = evaluate_corpora(model, tok)
    meta = {
        "params": model.num_params(),
        "mixture": mixture,
        "run_dir_name": "runs/base",
        "machine": args.machine or f"{platform.machine()}, {torch.get_num_threads()} threads, "
                                   f"torch {torch.__version__}",
        "train": {"steps": state["step"], "batch_size": tcfg["batch_size"], "seq_len": tcfg["seq_len"],
                  "tokens": hist["tokens"], "seconds": hist["seconds"],
                  "tokens_per_s": hist["tokens"] / hist["seconds"],
                  "final_train_loss": hist["train_loss"][-1], "final_val_loss": hist["val_loss"][-1],
                  "val_step": hist["val_step"], "val_loss": hist["val_loss"]},
        "first_losses": hist["train_loss"][:N_TRAJECTORY],
        "val_fp32": val_fp32,
    }
    save_base(model, tok, args.out, **meta)
    shipped, tok = load_base("cpu", args.out)
    meta["val"] = evaluate_corpora(shipped, tok)
    save_base(model, tok, args.out, **{**meta, "val": meta["val"]})
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    k = 25  # a running mean over k steps: the raw per-step loss is noisy (one batch of 16 windows)
    tl = torch.tensor(hist["train_loss"])
    smooth = tl.unfold(0, k, 1).mean(1)
    ax.plot(hist["step"][k - 1:], smooth.tolist(), lw=1, label=f"train (mean of {k} steps)")
    ax.plot(hist["val_step"], hist["val_loss"], "o-", label="validation (mixture)")
    ax.set(xlabel="step", ylabel="nats / token", title="minillm base model")
    ax.legend()
    fig.savefig(Path(args.out) / "loss.png", dpi=100, bbox_inches="tight")
    shown = samples(shipped, tok)
    text = card({**meta, "model_config": model.cfg.to_dict()}, shown)
    (Path(args.out) / "card.md").write_text(text, encoding="utf-8")
    print(text)
    print(json.dumps(meta["val"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
