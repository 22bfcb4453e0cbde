"""minillm.sft: chat tokens and embedding growth, label masks (by hand and against Hugging Face), packing equal to
one-by-one, batches, instruction data, streaming replies, and a tiny model that learns to answer."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from minillm.checkpoint import load_for_generation, save_checkpoint
from minillm.data import CharTokenizer, load_corpus, poems, tokenizer_from_state, tokenizer_state
from minillm.generate import generate
from minillm.model import GPT, GPTConfig
from minillm.sampling import SamplingParams
from minillm.sft import (
    IGNORE,
    ChatSession,
    ChatTokenizer,
    SFTData,
    add_chat_tokens,
    build_instructions,
    encode_chat,
    finetune,
    labels_to_targets,
    load_jsonl,
    pack_batch,
    packing_mask,
    pad_batch,
    positions_from_segments,
    prepare_for_chat,
    render,
    reply,
    resize_token_embeddings,
    sft_config,
    stream,
)
from minillm.sft.batching import encode_examples, pretraining_mix
from minillm.sft.instructions import PRETRAIN_FRACTION, poem_instructions, speeches

TOK = CharTokenizer("abcxyz")  # ids 0..5; the chat tokens get 6 (<|user|>), 7 (<|assistant|>), 8 (<|end|>)
U, A, E = 6, 7, 8


def small(pos: str = "rope", vocab: int = 9, **kw) -> GPT:
    cfg = GPTConfig.preset("base", vocab_size=vocab, block_size=64, n_layer=2, n_head=2, d_model=16, ffn_hidden=32,
                           pos=pos, **kw)
    return GPT(cfg)


# ------------------------------------------------------------------------------------------ tokens, embedding


def test_chat_tokens_come_after_the_old_ids_and_round_trip():
    tok = add_chat_tokens(TOK)
    assert tok.vocab_size == 9 and tok.chars[:6] == TOK.chars  # every old id keeps its meaning
    assert (tok.user_id, tok.assistant_id, tok.end_id) == (U, A, E)
    assert tok.encode("ab<|end|>") == [0, 1, E]
    with pytest.raises(ValueError, match="not in this tokenizer"):  # without allow_special the name is 7 characters
        tok.encode("<|end|>", allow_special=False)
    assert tok.decode([U, 2, E]) == "<|user|>c<|end|>" and tok.decode([U, 2, E], skip_special=True) == "c"
    back = tokenizer_from_state(json.loads(json.dumps(tokenizer_state(tok))))  # a checkpoint stores plain JSON
    assert ChatTokenizer(back.chars).encode("x<|user|>") == tok.encode("x<|user|>")
    assert add_chat_tokens(tok).chars == tok.chars  # adding twice adds nothing


def test_special_names_are_plain_text_without_allow_special():
    tok = add_chat_tokens(CharTokenizer.from_text("ab<|>enduser"))
    assert tok.encode("<|end|>") == [tok.end_id]
    assert len(tok.encode("<|end|>", allow_special=False)) == 7  # seven characters, no forged turn
    with pytest.raises(ValueError, match="Private Use Area"):
        tok.encode("a\ue002")
    with pytest.raises(ValueError, match="chat tokens"):
        ChatTokenizer("abc")


@pytest.mark.parametrize("tie", [True, False])
def test_resize_keeps_old_rows_and_adds_the_mean(tie):
    torch.manual_seed(0)
    model = small(vocab=6, tie_embeddings=tie).double()
    old_emb, old_head = model.embed_tokens.weight.detach().clone(), model.lm_head.weight.detach().clone()
    x = torch.tensor([[0, 1, 2, 3]])
    old_logits = model(x)[0].detach()
    resize_token_embeddings(model, 9)
    assert model.cfg.vocab_size == 9 and model.embed_tokens.weight.shape == (9, 16)
    assert (model.lm_head.weight is model.embed_tokens.weight) == tie
    torch.testing.assert_close(model.embed_tokens.weight[:6], old_emb, rtol=0, atol=0)
    for r in range(6, 9):
        torch.testing.assert_close(model.embed_tokens.weight[r], old_emb.mean(0))
        torch.testing.assert_close(model.lm_head.weight[r], old_head.mean(0))
    logits = model(x)[0].detach()
    torch.testing.assert_close(logits[..., :6], old_logits)  # old tokens' logits unchanged (to float64 rounding)
    # a new token's logit is the mean logit of the old ones (h . mean(W) = mean(h . W)): far below the top one
    torch.testing.assert_close(logits[..., 6], old_logits.mean(-1))
    with pytest.raises(ValueError, match="only grow"):
        resize_token_embeddings(model, 5)


def test_resize_noise_separates_the_new_rows():
    base = small(vocab=6)
    plain = resize_token_embeddings(copy.deepcopy(base), 9)
    noisy = resize_token_embeddings(copy.deepcopy(base), 9, noise_std=0.02, seed=3)
    again = resize_token_embeddings(copy.deepcopy(base), 9, noise_std=0.02, seed=3)
    mean = base.embed_tokens.weight.mean(0)
    new_plain, new_noisy = plain.embed_tokens.weight[6:], noisy.embed_tokens.weight[6:]
    assert torch.equal(new_plain, mean.expand(3, -1))  # identical rows: a frozen tied model cannot tell them apart
    assert len({tuple(r.tolist()) for r in new_noisy}) == 3 and torch.equal(new_noisy, again.embed_tokens.weight[6:])
    dev = new_noisy - mean
    assert 0.01 < float(dev.std()) < 0.04 and float(dev.mean().abs()) < 0.01  # N(0, 0.02^2) around the mean row
    assert torch.equal(noisy.embed_tokens.weight[:6], base.embed_tokens.weight)  # old rows untouched
    assert noisy.lm_head.weight is noisy.embed_tokens.weight
    with pytest.raises(ValueError, match="noise_std"):
        resize_token_embeddings(copy.deepcopy(base), 9, noise_std=-1.0)


def test_a_resized_model_trains_and_saves(tmp_path):
    model, tok = prepare_for_chat(small(vocab=6), TOK)
    _, loss = model(torch.tensor([[U, 0, E, A, 1, E]]), torch.tensor([[0, E, A, 1, E, IGNORE]]))
    loss.backward()
    assert model.embed_tokens.weight.grad[E].abs().sum() > 0  # the new rows learn
    save_checkpoint(tmp_path / "ckpt.pt", model, None, 0, tokenizer=tok)
    back, back_tok = load_for_generation(tmp_path)
    assert back.cfg.vocab_size == 9 and ChatTokenizer(back_tok.chars).end_id == E
    torch.testing.assert_close(back.embed_tokens.weight, model.embed_tokens.weight)


# ------------------------------------------------------------------------------------------ label masks


def test_encode_chat_by_hand():
    tok = add_chat_tokens(TOK)
    msgs = [{"role": "user", "content": "ab"}, {"role": "assistant", "content": "c"},
            {"role": "user", "content": "x"}, {"role": "assistant", "content": "yz"}]
    ids, labels = encode_chat(tok, msgs)
    assert ids == [U, 0, 1, E, A, 2, E, U, 3, E, A, 4, 5, E]
    assert labels == [-100, -100, -100, -100, -100, 2, E, -100, -100, -100, -100, 4, 5, E]
    assert render(msgs) == "<|user|>ab<|end|><|assistant|>c<|end|><|user|>x<|end|><|assistant|>yz<|end|>"
    gen_ids, gen_labels = encode_chat(tok, msgs[:1], add_generation_prompt=True)
    assert gen_ids == [U, 0, 1, E, A] and set(gen_labels) == {-100}
    assert labels_to_targets(labels) == [*labels[1:], -100]
    shifted = labels_to_targets(torch.tensor([labels, labels]))
    torch.testing.assert_close(shifted, torch.tensor([labels[1:] + [-100]] * 2))
    with pytest.raises(ValueError, match="role"):
        encode_chat(tok, [{"role": "system", "content": "a"}])


def mask_by_scanning(ids: list[int]) -> list[int]:
    """Independent reference: walk the tokens; count from after <|assistant|> through the <|end|> that closes it."""
    out, inside = [], False
    for t in ids:
        if inside:
            out.append(t)
            inside = t != E
        else:
            out.append(-100)
            inside = t == A
    return out


def test_encode_chat_equals_a_scan_of_the_tokens():
    tok = add_chat_tokens(TOK)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        n_turns = int(torch.randint(1, 6, (1,), generator=g))
        msgs = [{"role": ("user", "assistant")[i % 2],
                 "content": "".join(TOK.chars[int(c)] for c in torch.randint(6, (int(torch.randint(0, 5, (1,),
                                                                                               generator=g)),),
                                                                          generator=g))}
                for i in range(n_turns)]
        ids, labels = encode_chat(tok, msgs)
        assert labels == mask_by_scanning(ids)


def test_masked_loss_equals_hugging_face_labels():
    """transformers' LlamaForCausalLM(input_ids, labels=labels) shifts inside and skips -100: same loss."""
    pytest.importorskip("transformers")
    from minillm.hf import to_hf

    torch.manual_seed(0)
    model = small(vocab=9).double()
    tok = add_chat_tokens(TOK)
    rows = [encode_chat(tok, [{"role": "user", "content": "abc"}, {"role": "assistant", "content": "xyzab"}]),
            encode_chat(tok, [{"role": "user", "content": "zzzzzzz"}, {"role": "assistant", "content": "a"}])]
    x, labels = pad_batch([(i, lab) for i, lab in rows], pad_id=E)  # labels still unshifted: pads are -100
    hf = to_hf(model).double()
    with torch.no_grad():
        theirs = hf(input_ids=x, labels=labels).loss
        ours = model(x, labels_to_targets(labels))[1]
        # by hand: mean over the counted positions of -log p(label[t+1] | ids[:t+1])
        logp = F.log_softmax(model(x)[0], -1)
        picked = [-logp[b, t, labels[b, t + 1]] for b in range(2) for t in range(x.shape[1] - 1)
                  if labels[b, t + 1] >= 0]
    # transformers casts the logits to float32 inside its loss (ForCausalLMLoss): float32's tolerance
    torch.testing.assert_close(ours, theirs.double(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours, torch.stack(picked).mean(), rtol=1e-12, atol=1e-12)
    assert len(picked) == 6 + 2  # "xyzab" + <|end|>, "a" + <|end|>


# ------------------------------------------------------------------------------------------ packing


def test_first_fit_by_hand():
    ex = [([1] * n, [0] * n) for n in (5, 8, 3, 2, 7)]
    x, _, kw = pack_batch(ex, 10, pad_id=9)
    # rows: [5, 3, 2] (3 and 2 fill the first row's room), [8], [7]
    assert x.shape == (3, 10) and kw["positions"][0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 0, 1]
    assert kw["positions"][1].tolist() == [*range(8), 0, 1] and (x[2, 7:] == 9).all()  # the tail: its own segment
    x1, _, _ = pack_batch(ex, 10, pad_id=9, n_rows=1)
    assert x1.shape == (1, 10) and (x1 != 9).sum() == 10  # 5 + 3 + 2; the rest dropped


def test_packing_mask_and_positions_by_hand():
    seg = torch.tensor([[0, 0, 1, 1, 1, -1]])
    T = True
    expected = torch.tensor([[T, 0, 0, 0, 0, 0], [T, T, 0, 0, 0, 0], [0, 0, T, 0, 0, 0], [0, 0, T, T, 0, 0],
                             [0, 0, T, T, T, 0], [0, 0, 0, 0, 0, T]], dtype=torch.bool)
    assert torch.equal(packing_mask(seg)[0, 0], expected)
    assert positions_from_segments(seg).tolist() == [[0, 1, 0, 1, 2, 0]]
    assert positions_from_segments(torch.tensor([[3, 3, 3], [0, 1, 2]])).tolist() == [[0, 1, 2], [0, 0, 0]]


@pytest.mark.parametrize("pos", ["rope", "learned", "sinusoidal", "alibi", "t5"])
def test_packed_window_equals_examples_one_by_one(pos):
    torch.manual_seed(1)
    model = small(pos, vocab=9).double()
    g = torch.Generator().manual_seed(2)
    tok = add_chat_tokens(TOK)
    examples = [encode_chat(tok, [{"role": "user", "content": "abcxyz"[: 1 + i % 6]},
                                  {"role": "assistant", "content": "zyxcba"[: 1 + (i * 5) % 6]}]) for i in range(9)]
    examples = [(ids, labels_to_targets(lab)) for ids, lab in examples]
    order = torch.randperm(9, generator=g).tolist()
    examples = [examples[i] for i in order]
    n_rows = 1 if pos in ("alibi", "t5") else None  # their bias is one for the batch: positions (T,) only
    x, y, kw = pack_batch(examples, 40, pad_id=E, n_rows=n_rows)
    if n_rows:
        kw["positions"] = kw["positions"][0]
    logits, loss = model(x, y, **kw)
    # the same examples one at a time, found where first fit puts them (each in the first row with room)
    fill = [0] * x.shape[0]
    total, count = 0.0, 0
    for ids, tg in examples:
        b = next((r for r in range(x.shape[0]) if fill[r] + len(ids) <= 40), None)
        if b is None:
            continue  # dropped (n_rows=1)
        t = fill[b]
        fill[b] += len(ids)
        alone, loss_alone = model(torch.tensor([ids]), torch.tensor([tg]))
        torch.testing.assert_close(logits[b, t: t + len(ids)], alone[0], rtol=1e-12, atol=1e-12)
        k = sum(v != IGNORE for v in tg)
        total, count = total + loss_alone * k, count + k
    torch.testing.assert_close(loss, total / count, rtol=1e-12, atol=1e-12)
    for b, used in enumerate(fill):  # after the examples: padding, never counted
        assert (x[b, used:] == E).all() and (y[b, used:] == IGNORE).all()
    assert x.shape[0] < len(examples) / 2 or n_rows  # first fit shares rows
    # and a window without the mask or the positions is NOT the same (the test can fail)
    wrong = model(x, y)[0]
    assert (wrong - logits).abs().max() > 1e-3


def test_positions_argument():
    torch.manual_seed(0)
    model = small("rope").double()
    x = torch.randint(9, (2, 7))
    torch.testing.assert_close(model(x, positions=torch.arange(3, 10))[0], model(x, start_pos=3)[0])
    torch.testing.assert_close(model(x, positions=torch.arange(7).expand(2, 7))[0], model(x)[0])
    with pytest.raises(ValueError, match="kv_caches"):
        model(x, positions=torch.arange(7), kv_caches=model.make_kv_caches())
    with pytest.raises(ValueError, match="shape"):
        model(x, positions=torch.arange(6))
    with pytest.raises(ValueError, match="per-row"):
        small("alibi")(x, positions=torch.arange(7).expand(2, 7))
    with pytest.raises(ValueError, match="no learned row"):
        small("learned")(x, positions=torch.arange(7) + 60)


def test_padded_batch_loss_is_the_token_mean_of_the_examples():
    torch.manual_seed(0)
    model = small().double()
    tok = add_chat_tokens(TOK)
    ex = encode_examples(tok, [{"prompt": "ab", "response": "c"}, {"prompt": "x", "response": "yzyzyz"}])
    x, y = pad_batch(ex, tok.end_id)
    assert x.shape == (2, max(len(i) for i, _ in ex))
    losses = [(model(torch.tensor([i]), torch.tensor([t]))[1], sum(v >= 0 for v in t)) for i, t in ex]
    want = sum(loss * k for loss, k in losses) / sum(k for _, k in losses)
    torch.testing.assert_close(model(x, y)[1], want, rtol=1e-12, atol=1e-12)


def test_sft_data_batches_and_mixing():
    full = CharTokenizer.from_text("".join(load_corpus(n) for n in ("shakespeare", "tang300", "song100")))
    tok = add_chat_tokens(full)
    examples = build_instructions()[:400] + [e for e in build_instructions() if e["split"] == "heldout"][:50]
    g = torch.Generator().manual_seed(0)
    x, y, kw = SFTData(tok, examples, packing=True).batch("train", 4, 128, g)
    assert x.shape == y.shape == (4, 128) and kw["mask"].shape == (4, 1, 128, 128) and kw["positions"].shape == (4, 128)
    assert (y != IGNORE).sum() > 0 and x.max() < tok.vocab_size
    xp, yp = SFTData(tok, examples, packing=False).batch("val", 4, 128, g)
    assert xp.shape[0] == 4 and xp.shape[1] <= 128
    mixed = SFTData(tok, examples, packing=True, mix=pretraining_mix(full), mix_ratio=0.5)
    x, y, kw = mixed.batch("train", 16, 64, torch.Generator().manual_seed(0))
    whole = (y != IGNORE).all(dim=1) & (kw["positions"] == torch.arange(64)).all(dim=1)  # pretraining rows
    assert 2 <= int(whole.sum()) <= 14
    with pytest.raises(ValueError, match="mix_ratio"):
        SFTData(tok, examples, mix_ratio=0.5)


# ------------------------------------------------------------------------------------------ data


def test_instruction_splits_follow_pretraining():
    text = load_corpus("tang300")
    data = poem_instructions("tang300")
    cut = int(len(text) * PRETRAIN_FRACTION)
    authors = [e for e in data if e["task"] == "author"]
    assert len(authors) == len(poems("tang300"))
    for poem, e in zip(poems("tang300"), authors, strict=True):  # one author question per poem, in order
        assert poem.startswith(e["prompt"].removesuffix("作者是谁？") + "\n作者：" + e["response"])
        seen = text.find(poem) + len(poem) <= cut  # the whole poem lies in the base model's training 90%
        assert (e["split"] != "unseen") == seen
    train_titles = {e["prompt"] for e in data if e["split"] == "train" and e["task"] == "author"}
    held_titles = {e["prompt"] for e in data if e["split"] == "heldout" and e["task"] == "author"}
    assert train_titles and held_titles and not train_titles & held_titles
    assert {"unseen", "heldout", "train"} == {e["split"] for e in data}
    assert any(e["prompt"] == "《春晓》作者是谁？" and e["response"] == "孟浩然" for e in data)
    sp = speeches()
    assert sp[0]["play"] == "Hamlet" and sp[0]["speaker"] == "Ber." and sp[0]["lines"] == ["Who's there?"]


def test_builtin_instructions_use_only_the_base_vocabulary():
    vocab = set("".join(load_corpus(n) for n in ("shakespeare", "tang300", "song100")))
    for e in build_instructions():
        assert set(e["prompt"] + e["response"]) <= vocab, e["prompt"]
        if e["native"]:
            assert set(e["native"][0]) <= vocab


def test_load_jsonl(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a", "response": "b"}\n\n{"messages": [{"role": "user", "content": "x"}, '
                 '{"role": "assistant", "content": "y"}]}\n', encoding="utf-8")
    got = load_jsonl(p)
    assert len(got) == 2 and got[0]["split"] == "train"
    p.write_text('{"prompt": "a"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=":1 needs"):
        load_jsonl(p)
    p.write_text("not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not JSON"):
        load_jsonl(p)
    with pytest.raises(FileNotFoundError):
        load_jsonl(tmp_path / "none.jsonl")


# ------------------------------------------------------------------------------------------ replies


def test_stream_equals_generate_and_stops_at_end():
    torch.manual_seed(0)
    model = small("rope").eval()
    ids = [U, 0, 1, E, A]
    params = SamplingParams(temperature=0.0, max_tokens=12)
    got = list(stream(model, ids, params))
    ref = generate(model, torch.tensor([ids]), params)[0, len(ids):].tolist()
    assert got == ref
    first = got[0]
    assert list(stream(model, ids, params, stop_ids=(first,))) == []
    assert len(list(stream(model, list(range(9)) * 7, params))) == 64 - 63 + 1  # never past block_size
    with pytest.raises(ValueError, match="between 1 and"):
        list(stream(model, [0] * 64, params))


def test_a_tiny_model_learns_to_answer_and_chat_keeps_history():
    torch.manual_seed(0)
    examples = [{"prompt": p, "response": r, "split": "train"} for p, r in [("a", "xyz"), ("b", "zzx"), ("c", "ya")]]
    cfg = sft_config(steps=120, batch_size=4, seq_len=32, lr=1e-2, warmup=5, progress=False)
    model, tok, hist = finetune(small(vocab=6), TOK, examples, cfg)
    assert hist.train_loss[-1] < 0.2 < 1.0 < hist.train_loss[0]
    assert [reply(model, tok, e["prompt"]) for e in examples] == ["xyz", "zzx", "ya"]
    session = ChatSession(model, tok, SamplingParams(temperature=0.0, max_tokens=8))
    assert "".join(session.send("a!")) == "xyz" and session.dropped == "!"
    assert [m["role"] for m in session.messages] == ["user", "assistant"]
    for _ in range(10):  # the history outgrows block_size 64: old exchanges are dropped, never an error
        "".join(session.send("b"))
    assert len(session.messages) < 20
    session.reset()
    assert session.messages == []
    with pytest.raises(ValueError, match="none of these characters"):
        session.send("!!")
