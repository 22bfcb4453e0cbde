"""Show how a tokenizer cuts a text: coloured token spans (HTML), a widget to try your own text, and the
same picture as a static matplotlib figure for the rendered book (which has no kernel).

- `token_pieces(tok, text)` -> one `Piece` per token: id, raw bytes (byte-level tokenizers) and a label.
  Works with minillm tokenizers (anything with `encode(text) -> list[int]` and `vocab: dict[int, bytes]`)
  and with Hugging Face `tokenizers.Tokenizer` objects (byte-level BPE, WordPiece, Unigram).
- `color_tokens_html(tok, text)` -> an HTML string: one coloured box per token with its id underneath
  (spaces drawn as ␣).
- `token_widget(tok_by_name, text)` -> an ipywidgets box (text input + tokenizer dropdown + HTML view);
  the default view is computed when the widget is built, so a notebook saved with widget state shows it.
- `token_figure(tok_by_name, text)` -> a matplotlib figure drawing the same boxes.

A byte-level token can hold part of a UTF-8 character (a Chinese character is 3 bytes and may be split
across tokens); such pieces are labelled by their bytes in hex, e.g. `<e5 85>`. A token that a
vocabulary-based tokenizer could not match (`[UNK]`) is drawn with a red frame.

Leaves out: the per-character alignment of pieces back to the input (we only need the token's own text).
Chinese is drawn with the font that ships with minillm (`minillm.utils.use_cjk_font`), so the figure
looks the same on every machine.
"""

from __future__ import annotations

import html
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from minillm.utils import use_cjk_font

# pastel backgrounds, cycled by token position so neighbours always differ
PALETTE = ["#ffd6a5", "#caffbf", "#9bf6ff", "#bdb2ff", "#ffc6ff", "#fdffb6", "#a0c4ff", "#ffadad"]
ALL = "(all)"


@dataclass(frozen=True)
class Piece:
    """One token of an encoded text."""

    id: int
    label: str  # what to draw: the token's text, `<e5 85>` for a partial UTF-8 character, or `[UNK]`
    raw: bytes | None  # the token's bytes for byte-level tokenizers, else None
    unknown: bool = False  # True for an unknown-token id such as BERT's [UNK]

    @property
    def partial(self) -> bool:
        """True when the token's bytes are not whole UTF-8 characters (labelled in hex)."""
        if self.raw is None:
            return False
        try:
            self.raw.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False


@lru_cache(maxsize=1)
def gpt2_unicode_to_byte() -> dict[str, int]:
    """Printable stand-in character -> byte: the inverse of GPT-2's table (`minillm.tokenizer.hf`), which
    HF ByteLevel tokenizers use to write byte-level tokens as strings (space byte 32 -> 'Ġ')."""
    from .hf import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def bytes_label(raw: bytes) -> str:
    """Readable label for a token's bytes: the text if it is valid UTF-8, else its bytes in hex."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "<" + " ".join(f"{b:02x}" for b in raw) + ">"
    return text.replace("\n", "↵").replace("\t", "⇥")


def _is_hf(tok: Any) -> bool:
    return type(tok).__module__.startswith("tokenizers") and hasattr(tok, "get_vocab_size")


def token_pieces(tok: Any, text: str) -> list[Piece]:
    """Encode `text` with `tok` and describe each token (see the module docstring for what `tok` may be)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if _is_hf(tok):
        enc = tok.encode(text, add_special_tokens=False)
        byte_level = type(tok.decoder).__name__ == "ByteLevel"
        table = gpt2_unicode_to_byte()
        unk = getattr(tok.model, "unk_token", None)
        pieces = []
        for i, t, (a, b) in zip(enc.ids, enc.tokens, enc.offsets, strict=True):
            if byte_level and all(c in table for c in t):
                raw = bytes(table[c] for c in t)
                pieces.append(Piece(i, bytes_label(raw), raw))
            elif unk is not None and t == unk:
                pieces.append(Piece(i, f"{unk}", None, unknown=True))
            else:  # WordPiece/Unigram: "##ing", "▁the" -> show the original text span
                pieces.append(Piece(i, text[a:b].replace("\n", "↵") or t, None))
        return pieces
    vocab = getattr(tok, "vocab", None)
    if not hasattr(tok, "encode") or not isinstance(vocab, dict):
        raise TypeError(
            f"token_pieces needs a minillm tokenizer (encode + vocab dict) or a tokenizers.Tokenizer, "
            f"got {type(tok).__name__}"
        )
    pieces = []
    for i in tok.encode(text):
        v = vocab[i]
        if isinstance(v, bytes):
            pieces.append(Piece(i, bytes_label(v), v))
        else:  # a string vocabulary (WordPiece / Unigram style)
            pieces.append(Piece(i, str(v), None, unknown=str(v) in ("[UNK]", "<unk>")))
    return pieces


def summary(pieces: list[Piece], text: str) -> str:
    """'N tokens · C chars · B bytes · x.xx bytes/token' for one encoded text."""
    nbytes = len(text.encode("utf-8"))
    n = len(pieces)
    per = f"{nbytes / n:.2f}" if n else "-"
    unk = sum(p.unknown for p in pieces)
    return f"{n} tokens · {len(text)} chars · {nbytes} bytes · {per} bytes/token" + (f" · {unk} unknown" if unk else "")


def _pieces_html(pieces: list[Piece]) -> str:
    boxes = []
    for k, p in enumerate(pieces):
        label = p.label if p.partial else p.label.replace(" ", "␣")  # make spaces visible
        frame = "border:2px solid #d00;" if p.unknown else "border:1px solid rgba(0,0,0,0.15);"
        title = f"id {p.id}" + (f" · bytes {p.raw.hex(' ')}" if p.raw is not None else "")
        boxes.append(
            f'<span title="{html.escape(title)}" style="display:inline-block;background:{PALETTE[k % len(PALETTE)]};'
            f'{frame}border-radius:4px;margin:2px 1px;padding:0 3px;text-align:center;vertical-align:top">'
            f'<span style="white-space:pre;font-family:monospace;font-size:1.05em">{html.escape(label)}</span><br>'
            f'<span style="font-size:0.7em;color:#444;font-family:monospace">{p.id}</span></span>'
        )
        if p.label.endswith("↵"):
            boxes.append("<br>")
    return "".join(boxes)


def color_tokens_html(tok: Any, text: str, name: str | None = None) -> str:
    """HTML for `text` cut by `tok`: coloured boxes, token id under each, a one-line summary on top."""
    pieces = token_pieces(tok, text)
    head = f"<b>{html.escape(name)}</b>: " if name else ""
    return (
        f'<div style="margin:4px 0 10px 0;line-height:1.25"><div style="font-size:0.85em;color:#333">{head}'
        f"{html.escape(summary(pieces, text))}</div><div>{_pieces_html(pieces)}</div></div>"
    )


def _check_tok_by_name(tok_by_name: dict) -> None:
    if not isinstance(tok_by_name, dict) or not tok_by_name:
        raise ValueError("tok_by_name must be a non-empty dict {display name: tokenizer}")


def compare_html(tok_by_name: dict[str, Any], text: str, which: str = ALL) -> str:
    """HTML for one tokenizer of `tok_by_name`, or for all of them stacked when `which` is '(all)'."""
    _check_tok_by_name(tok_by_name)
    names = list(tok_by_name) if which == ALL else [which]
    unknown = [n for n in names if n not in tok_by_name]
    if unknown:
        raise ValueError(f"no tokenizer named {unknown[0]!r}; choose one of {list(tok_by_name)}")
    return "".join(color_tokens_html(tok_by_name[n], text, n) for n in names)


def token_widget(tok_by_name: dict[str, Any], text: str) -> Any:
    """A text box + dropdown of tokenizers + live HTML view of the tokens.

    The HTML is filled in now, for `text` and all tokenizers, so the saved widget state (and the book,
    which has no kernel) shows the sample; in JupyterLab typing re-renders it.
    """
    import ipywidgets as w

    _check_tok_by_name(tok_by_name)
    options = ([ALL] if len(tok_by_name) > 1 else []) + list(tok_by_name)
    box = w.Text(value=text, description="text", layout=w.Layout(width="100%"), continuous_update=True)
    pick = w.Dropdown(options=options, value=options[0], description="tokenizer", layout=w.Layout(width="60%"))
    out = w.HTML(value=compare_html(tok_by_name, text, options[0]))

    def refresh(_change: Any = None) -> None:
        out.value = compare_html(tok_by_name, box.value, pick.value)

    box.observe(refresh, names="value")
    pick.observe(refresh, names="value")
    return w.VBox([box, pick, out])


# ---------------------------------------------------------------- static figure (matplotlib)


def _wide(c: str) -> bool:
    return unicodedata.east_asian_width(c) in ("W", "F")


def _width(label: str) -> float:
    # in monospace character cells; a CJK glyph is about 1 em wide = 1/0.6 cells
    return sum(1 / 0.6 if _wide(c) else 1.0 for c in label)


def token_figure(tok_by_name: dict[str, Any], text: str, wrap: int = 70, width_in: float = 10.0) -> Any:
    """Matplotlib figure of `text` cut by each tokenizer: coloured boxes with the id below each label.

    `wrap` is the line length in character cells; the figure is `width_in` inches wide.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    _check_tok_by_name(tok_by_name)
    if wrap < 10:
        raise ValueError(f"wrap must be at least 10 character cells, got {wrap}")
    cjk_font = use_cjk_font()
    # lay out every tokenizer's boxes first: (row, x, w, label, id, unknown, colour)
    blocks = []
    for name, tok in tok_by_name.items():
        pieces = token_pieces(tok, text)
        rows, x, row = [], 0.0, 0
        for k, p in enumerate(pieces):
            label = p.label if p.partial else p.label.replace(" ", "␣")
            w = max(_width(label), 0.6 * len(str(p.id))) + 0.5
            if x + w > wrap and x > 0:
                row, x = row + 1, 0.0
            rows.append((row, x, w, label, p.id, p.unknown, PALETTE[k % len(PALETTE)]))
            x += w + 0.2
        title = f"{name}: {summary(pieces, text)}"
        blocks.append((title, rows, row + 1))
    n_lines = sum(1 + nrows for _, _, nrows in blocks)  # a title line + rows per tokenizer
    unit_pt = width_in * 72 / (wrap + 1)  # points per character cell (half a cell of margin each side)
    total = n_lines * 2.6 + 0.4  # height in cells
    height_in = total * unit_pt / 72
    fig = plt.figure(figsize=(width_in, height_in))
    ax = fig.add_axes((0, 0, 1, 1))  # the axes fill the figure, so 1 data unit = 1 cell on both axes
    ax.set_xlim(-0.5, wrap + 0.5)
    ax.set_ylim(-total, 0)
    ax.axis("off")
    fs = unit_pt / 0.6  # font size whose monospace advance is one cell
    family = ["DejaVu Sans Mono", cjk_font]
    y = 0.0
    for title, rows, nrows in blocks:
        ax.text(0, y - 1.2, title, fontsize=fs * 0.8, va="center", ha="left", fontweight="bold")
        for row, x, w, label, i, unk, colour in rows:
            top = y - 2.6 * (row + 1)
            ax.add_patch(FancyBboxPatch((x, top - 2.2), w, 2.2, boxstyle="round,pad=0,rounding_size=0.3",
                                        fc=colour, ec="#d00" if unk else "#999", lw=1.5 if unk else 0.4))
            ax.text(x + w / 2, top - 0.7, label, fontsize=fs, ha="center", va="center", family=family)
            ax.text(x + w / 2, top - 1.75, str(i), fontsize=fs * 0.6, ha="center", va="center", color="#444",
                    family="DejaVu Sans Mono")
        y -= 2.6 * (1 + nrows)
    return fig
