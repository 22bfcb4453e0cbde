"""minillm.utils and minillm.data: seeding, device choice, show_source, bundled corpora."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from minillm import data, utils
from minillm.data import load_corpus


def test_setup_seeds_python_numpy_torch(capsys):
    utils.setup(123)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    utils.setup(123, quiet=True)
    b = (random.random(), np.random.rand(), torch.rand(1).item())
    assert a == b
    utils.setup(124, quiet=True)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) != a
    assert "device=" in capsys.readouterr().out


def test_device_env_override(monkeypatch):
    monkeypatch.setenv("MINILLM_DEVICE", "cpu")
    assert utils.setup(0, quiet=True) == torch.device("cpu")
    assert utils.by_device(cpu="small", gpu="big") == "small"
    assert utils.by_device(cpu=1, gpu=2, device="cuda") == 2


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "tpu0"])
def test_bad_device_names_get_a_clear_error(monkeypatch, bad):
    monkeypatch.setenv("MINILLM_DEVICE", bad)
    with pytest.raises(ValueError, match="MINILLM_DEVICE|CUDA|torch device"):
        utils.get_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_says_what_to_do():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        utils.get_device("cuda")


def test_bad_seed():
    with pytest.raises(ValueError, match="non-negative int"):
        utils.setup(-1)


def test_show_source_renders_markdown_code_block():
    view = utils.show_source(data.load_corpus)
    md = view._repr_markdown_()
    assert md.count("```python") == 1 and md.rstrip().endswith("```")
    assert "def load_corpus(" in md and "minillm.data.load_corpus" in md
    # the line number in the title is the real one
    import inspect

    assert f"line {inspect.getsourcelines(data.load_corpus)[1]}" in md
    with pytest.raises(TypeError, match="show_source needs"):
        utils.show_source(3)


def test_corpora_ship_with_the_package():
    shakespeare = data.load_corpus("shakespeare")
    assert len(shakespeare.encode()) == 1_394_164 and shakespeare.isascii()
    assert "To be, or not to be" in shakespeare
    tang = data.load_corpus("tang300")
    assert "床前明月光" in tang
    tang_poems = data.poems("tang300")
    assert len(tang_poems) == 313  # the corpus README's count
    assert tang_poems[0].splitlines()[:2] == ["《感遇・其一》", "作者：张九龄"]
    # 琵琶行 has a preface and stanza breaks separated by blank lines: still one poem
    pipa = next(p for p in tang_poems if p.startswith("《琵琶行"))
    assert pipa.rstrip().endswith("江州司马清衫湿。")  # this edition writes 清衫
    song = data.poems("song100")
    assert len(song) > 90 and all(p.splitlines()[1].startswith("作者") for p in song)
    assert data.load_corpus("song100", max_chars=10) == data.load_corpus("song100")[:10]


def test_corpus_errors():
    with pytest.raises(ValueError, match="choose one of 'shakespeare'"):
        data.load_corpus("hamlet")
    with pytest.raises(ValueError, match="positive int"):
        data.load_corpus("tang300", max_chars=0)
    with pytest.raises(ValueError, match="tang300"):
        data.poems("shakespeare")


def test_bundled_cjk_font_draws_every_corpus_character():
    from fontTools.ttLib import TTFont
    from matplotlib import font_manager, rcParams

    name = utils.use_cjk_font()
    assert name in rcParams["font.family"] and name in rcParams["font.monospace"]
    path = font_manager.findfont(font_manager.FontProperties(family=name), fallback_to_default=False)
    assert path == str(utils.CJK_FONT)
    cmap = TTFont(path).getBestCmap()
    text = data.load_corpus("tang300") + data.load_corpus("song100")
    missing = sorted({c for c in text if not c.isspace() and ord(c) not in cmap})
    assert not missing, f"run tools/make_cjk_font.py: the font lacks {missing[:10]}"
    assert ord("\u4e00") in cmap and ord("A") in cmap


def test_matplotlib_draws_chinese_without_missing_glyph_warnings(recwarn):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    utils.use_cjk_font()
    fig, ax = plt.subplots()
    ax.set_title("床前明月光 — moonlight")
    fig.canvas.draw()
    plt.close(fig)
    assert not [w for w in recwarn if "missing from font" in str(w.message)]


def test_char_data_round_trip_and_windows():
    from minillm.data import CharData

    data = CharData("hello world, hello moon" * 10)
    assert data.vocab_size == len(set("hello world, hello moon"))
    assert data.decode(data.encode("hello moon")) == "hello moon"
    x, y = data.batch("train", 4, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8)
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    with pytest.raises(ValueError, match="too few"):
        data.batch("val", 1, 1000)
    with pytest.raises(ValueError, match="non-empty"):
        CharData("")


def test_toy_gpt_learns_characters_with_minillm_train():
    """Chapters 2-4's setup: a "toy" GPT on CharData trained by minillm.train (formerly toy.train_toy)."""
    from minillm.data import CharData
    from minillm.model import GPT, GPTConfig
    from minillm.train import TrainConfig, evaluate, train

    torch.manual_seed(0)
    data = CharData(load_corpus("shakespeare", max_chars=20_000))
    model = GPT(GPTConfig.preset("toy", vocab_size=data.vocab_size, d_model=32, n_head=2, n_layer=1, pos="rope"))
    cfg = TrainConfig(steps=60, batch_size=8, seq_len=32, lr=1e-2, warmup=0, eval_batches=2, progress=False)
    start = evaluate(model, data, cfg)
    assert start == pytest.approx(math.log(data.vocab_size), rel=0.1)  # near uniform at init
    history = train(model, data, cfg)
    assert len(history.train_loss) == 60 and history.val_loss[-1] < start - 0.8
