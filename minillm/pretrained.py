"""The course's base model: a small pretrained GPT shipped inside the package, the start of Parts II-VI.

Every experiment of chapters 2-7 trains a model of 0.1-0.3M parameters for seconds; its samples are noise.
Fine-tuning (SFT, LoRA, RLHF), serving and quantization need a model that already writes recognisable text, so
the course trains one once, with a recipe in the repository, and ships the weights:

| file in `minillm/base_model/` | what |
|---|---|
| `recipe.yaml` | the `minillm train --config` file: preset `base`, data mixture, steps, learning rate |
| `model.safetensors` | the weights in bfloat16 (half the bytes of float32; the loss they give is the recorded one) |
| `meta.json` | model config, tokenizer, losses (nats per token and bits per byte per corpus), the first steps' loss |
| `card.md` | the report card: config, data, time, losses, samples (written by `tools/make_base_model.py`) |

`load_base()` returns (GPT, tokenizer); `evaluate_corpora(model, tok)` measures the held-out loss of each corpus.

Bits per byte. A model's cross-entropy in nats per token depends on the tokenizer (a BPE token covers more text
than a character), so losses of different tokenizers or languages do not compare. Dividing the total
information by the text's size in UTF-8 bytes gives a tokenizer-free unit (used by e.g. the Pile, Gao et al. 2020,
sec. 5): bits/byte = (sum over tokens of -log p) / (ln 2 x number of bytes). For this character model an English
token is one byte and a Chinese character three, so Chinese nats per token are 3x its bits per byte x ln 2.

Leaves out: a bigger GPU recipe beyond a `preset` override (`--preset` on the same recipe), and tokenizer merges
(the tokenizer is per-character: one id for each of the 2,917 characters of the three corpora).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from minillm.data import TokenData, load_corpus, tokenizer_from_state
from minillm.model import GPT, GPTConfig

BASE_DIR = Path(__file__).resolve().parent / "base_model"
RECIPE = BASE_DIR / "recipe.yaml"
WEIGHTS = BASE_DIR / "model.safetensors"
META = BASE_DIR / "meta.json"


def read_meta(directory: str | Path = BASE_DIR) -> dict[str, Any]:
    """The base model's `meta.json`: config, tokenizer, recorded losses."""
    path = Path(directory) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"no {path}: the base model is not built; run `python tools/make_base_model.py`")
    return json.loads(path.read_text(encoding="utf-8"))


def load_base(device: str | torch.device | None = None, directory: str | Path = BASE_DIR,
              dtype: torch.dtype = torch.float32) -> tuple[GPT, Any]:
    """(model, tokenizer) of the shipped base model, in eval mode, weights cast to `dtype` (stored as bfloat16)."""
    from safetensors.torch import load_file

    meta = read_meta(directory)
    model = GPT(GPTConfig.from_dict(meta["model_config"]))
    state = load_file(str(Path(directory) / "model.safetensors"))
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)  # the tied head is one tensor
    missing = set(model.state_dict()) - set(state) - {"lm_head.weight"}
    if missing:
        raise ValueError(f"{directory}/model.safetensors lacks {sorted(missing)[:3]}: rebuild the base model")
    if device is None:
        from minillm.utils import get_device

        device = get_device()
    return model.to(device=device, dtype=dtype).eval(), tokenizer_from_state(meta["tokenizer"])


def save_base(model: GPT, tokenizer: Any, directory: str | Path, **meta: Any) -> None:
    """Write `model.safetensors` (bfloat16, tied head stored once) and `meta.json` into `directory`."""
    from safetensors.torch import save_file

    from minillm.data import tokenizer_state

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.bfloat16).contiguous() for k, v in model.state_dict().items()
             if not (model.cfg.tie_embeddings and k == "lm_head.weight")}
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "minillm-base"})
    body = {"model_config": model.cfg.to_dict(), "tokenizer": tokenizer_state(tokenizer), **meta}
    (directory / "meta.json").write_text(json.dumps(body, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def bits_per_byte(nats_per_token: float, n_tokens: int, n_bytes: int) -> float:
    """Total information (nats/token x tokens) per UTF-8 byte, in bits."""
    if n_tokens <= 0 or n_bytes <= 0:
        raise ValueError(f"need n_tokens > 0 and n_bytes > 0, got {n_tokens}, {n_bytes}")
    return nats_per_token * n_tokens / (n_bytes * math.log(2))


@torch.no_grad()
def heldout_loss(model: nn.Module, ids: torch.Tensor, seq_len: int = 256, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy (nats) over ALL of `ids` (1-D), cut into consecutive windows of seq_len + 1
    tokens overlapping by one (each token is predicted once; early tokens of a window see less context)."""
    device = next(model.parameters()).device
    n = (len(ids) - 1) // seq_len  # full windows
    if n < 1:
        raise ValueError(f"{len(ids)} tokens are too few for seq_len={seq_len}")
    windows = ids[: n * seq_len + 1].unfold(0, seq_len + 1, seq_len)  # (n, T+1), consecutive windows share one token
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, n, batch_size):
        w = windows[i: i + batch_size].to(device)
        logits, _ = model(w[:, :-1])
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 logits summed in float32
        total += nn.functional.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten(), reduction="sum").item()
    model.train(was_training)
    return total / (n * seq_len)


def corpus_val_split(name: str, tokenizer: Any, val_fraction: float = 0.1) -> TokenData:
    """The corpus tokenised and split exactly as in pretraining (`MixedData` splits each corpus on its own)."""
    return TokenData(load_corpus(name), tokenizer, val_fraction)


def evaluate_corpora(model: nn.Module, tokenizer: Any, names: tuple[str, ...] = ("shakespeare", "tang300", "song100"),
                     seq_len: int = 256) -> dict[str, dict[str, float]]:
    """Held-out loss of each corpus: {name: {"nats_per_token", "bits_per_byte", "tokens", "bytes"}}."""
    out = {}
    for name in names:
        val = corpus_val_split(name, tokenizer).val
        used = ((len(val) - 1) // min(seq_len, len(val) - 1)) * min(seq_len, len(val) - 1)  # tokens predicted
        nats = heldout_loss(model, val, min(seq_len, len(val) - 1))
        n_bytes = len(tokenizer.decode(val[1: used + 1].tolist()).encode("utf-8"))  # the predicted tokens' bytes
        out[name] = {"nats_per_token": nats, "bits_per_byte": bits_per_byte(nats, used, n_bytes),
                     "tokens": used, "bytes": n_bytes}
    return out
