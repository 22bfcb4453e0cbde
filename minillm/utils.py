"""Small helpers every notebook uses: seeding, picking the device, showing the package's source.

- `setup(seed)` seeds Python, NumPy and torch, picks the device (the environment variable
  `MINILLM_DEVICE` overrides: "cpu", "cuda", "cuda:1", "mps"), prints what it chose and returns it.
- `by_device(cpu=..., gpu=...)` picks a value (a preset name, a step count) for the device in use, so a
  notebook runs in about a minute on a laptop CPU and scales up on a GPU by itself.
- `use_cjk_font()` registers the small Chinese font that ships with minillm (a subset of Noto Sans CJK
  SC, SIL OFL 1.1) as matplotlib's fallback, so figures draw 汉字 on any machine; `setup` calls it.
- `markdown_table(rows, columns)` formats a list of dicts as a GitHub-Markdown table (every benchmark and
  notebook table of the book).
- `show_source(obj)` renders the source of a function or class as highlighted code, both in
  JupyterLab and in the built book (it emits a Markdown code block, which both render with colours).

Leaves out: deterministic-algorithm switches (`torch.use_deterministic_algorithms`), which slow
training down and are only needed for bit-exact GPU reruns; see the AMP chapter.
"""

from __future__ import annotations

import inspect
import os
import platform
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")

_DEVICE: torch.device | None = None


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy and torch (all devices) with one integer."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_device(name: str | None = None) -> torch.device:
    """The device to run on: `name`, else $MINILLM_DEVICE, else CUDA if present, else CPU.

    MPS (Apple GPUs) is only used when asked for by name, because some ops the course uses
    (float64 checks, a few scatter ops) are missing or slow there.
    """
    name = name or os.environ.get("MINILLM_DEVICE") or None
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"MINILLM_DEVICE={name!r} is not a torch device; use 'cpu', 'cuda', 'cuda:0' or 'mps'"
        ) from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU; unset MINILLM_DEVICE or use 'cpu'")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} asked for, but MPS is not available here; use 'cpu'")
    return dev


CJK_FONT = Path(__file__).resolve().parent / "fonts" / "NotoSansSC-minillm.otf"


def use_cjk_font() -> str:
    """Make matplotlib fall back to the bundled Chinese font for glyphs its default font lacks.

    Returns the font's family name. Latin text keeps matplotlib's default font (DejaVu Sans); only
    characters it cannot draw come from the bundled subset (the corpora's and notebooks' characters).
    """
    from matplotlib import font_manager, rcParams

    font_manager.fontManager.addfont(str(CJK_FONT))
    name = font_manager.FontProperties(fname=str(CJK_FONT)).get_name()
    for key in ("font.sans-serif", "font.monospace", "font.serif"):
        if name not in rcParams[key]:
            rcParams[key] = [*rcParams[key], name]
    families = list(rcParams["font.family"])
    if name not in families:
        rcParams["font.family"] = [*families, name]
    return name


def setup(seed: int = 0, device: str | None = None, quiet: bool = False) -> torch.device:
    """Seed everything, choose the device, let figures draw Chinese, print a summary, return the device."""
    global _DEVICE
    seed_everything(seed)
    use_cjk_font()
    _DEVICE = get_device(device)
    if not quiet:
        gpu = f" ({torch.cuda.get_device_name(_DEVICE)})" if _DEVICE.type == "cuda" else ""
        print(
            f"minillm: device={_DEVICE}{gpu} seed={seed} | python {platform.python_version()} "
            f"torch {torch.__version__} numpy {np.__version__}"
        )
    return _DEVICE


def current_device() -> torch.device:
    """The device chosen by the last `setup()` call (or picked now if none ran yet)."""
    return _DEVICE if _DEVICE is not None else get_device()


def by_device(cpu: T, gpu: T, device: torch.device | str | None = None) -> T:
    """Return `gpu` when running on a GPU (CUDA or MPS), else `cpu`."""
    dev = torch.device(device) if device is not None else current_device()
    return gpu if dev.type in ("cuda", "mps") else cpu


def source_of(obj: Any) -> str:
    """The source text of a function, method, class or module, dedented."""
    try:
        return _dedent(inspect.getsource(obj))
    except (OSError, TypeError) as e:
        raise TypeError(f"show_source needs a Python function, class or module defined in a file, got {obj!r}") from e


def _dedent(src: str) -> str:
    import textwrap

    return textwrap.dedent(src).rstrip() + "\n"


class _SourceView:
    """A display object: Markdown code block for Jupyter and the book, plain text elsewhere."""

    def __init__(self, title: str, src: str):
        self.title, self.src = title, src

    def _repr_markdown_(self) -> str:
        return f"**{self.title}**\n\n```python\n{self.src}```\n"

    def __repr__(self) -> str:
        return f"# {self.title}\n{self.src}"


def show_source(obj: Any) -> _SourceView:
    """Show where `obj` lives in minillm and its source, highlighted (returns a displayable object)."""
    src = source_of(obj)
    mod = inspect.getmodule(obj)
    qual = getattr(obj, "__qualname__", getattr(obj, "__name__", ""))
    modname = mod.__name__ if mod else "?"
    try:
        line = inspect.getsourcelines(obj)[1]
        where = f"{modname.replace('.', '/')}.py, line {line}"
    except (OSError, TypeError):
        where = modname
    title = f"{modname}.{qual}" if qual and qual != modname else modname
    return _SourceView(f"{title}  ({where})", src)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub-Markdown table of `rows` (dicts) in the given column order.

    Floats below 100 get 3 significant digits (trailing zeros kept); ints and larger floats are rounded
    to whole numbers with thousands separators."""
    if not columns:
        raise ValueError("markdown_table needs at least one column")

    def fmt(v: Any) -> str:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, int) or abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:#.3g}"  # '#' keeps trailing zeros: 1.0 -> 1.00

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        missing = [c for c in columns if c not in r]
        if missing:
            raise ValueError(f"row {r} has no column {missing[0]!r}")
        lines.append("| " + " | ".join(fmt(r[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"
