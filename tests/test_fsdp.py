"""ZeRO-3 / FSDP from scratch (minillm.distributed.fsdp) against one process and torch's FSDP2 `fully_shard`.

One launch per process count (2 and 3 gloo processes, `fsdp_worker`) feeds every multi-process test; the
single-process reference runs here. float64 throughout, so "equal" means 1e-10. FSDP2 runs on CPU with gloo in
torch 2.13 (a DeviceMesh of "cpu"; its reduce-scatter and all-gather are gloo collectives).
"""

from __future__ import annotations

import pytest
import torch

from minillm.distributed import launch
from minillm.distributed.ddp_workers import global_batches, tiny_gpt
from minillm.distributed.fsdp import expected_shard_bytes, fully_shard
from minillm.distributed.fsdp_checkpoint import consolidate_sharded
from minillm.distributed.fsdp_workers import fsdp_worker

STEPS, BATCH, SEQ, LR = 4, 6, 8, 1e-2
TOL = {"atol": 1e-10, "rtol": 0}


@pytest.fixture(scope="module", params=[2, 3], ids=["2proc", "3proc"])
def run(request, tmp_path_factory):
    world = request.param
    ckpt = str(tmp_path_factory.mktemp(f"fsdp{world}"))
    return world, ckpt, launch(fsdp_worker, nprocs=world, args=(STEPS, BATCH, SEQ, LR, ckpt), timeout=180)


@pytest.fixture(scope="module")
def single():
    """One process, the concatenated batch, plain AdamW: losses and the final state dict."""
    model = tiny_gpt(0)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    losses = []
    for tokens in global_batches(STEPS, BATCH, SEQ):
        opt.zero_grad(set_to_none=True)
        loss = model(tokens[:, :-1], tokens[:, 1:])[1]
        loss.backward()
        losses.append(loss.item())
        opt.step()
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_dict(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], **TOL, msg=k)


def test_trajectory_equals_single_process(run, single):
    world, _, results = run
    losses, sd = single
    for r in range(world):  # every rank saw the same global losses
        torch.testing.assert_close(results[r]["losses"], losses, **TOL)
        torch.testing.assert_close(results[r]["losses_no_prefetch"], losses, **TOL)
    _same_dict(results[0]["sd"], sd)
    assert results[0]["sd"]["lm_head.weight"] is results[0]["sd"]["embed_tokens.weight"]  # tied: one tensor
    assert results[0]["losses"][0] != results[0]["losses"][-1]  # it trained


def test_shard_gradient_is_its_slice_of_the_mean_gradient(run):
    world, _, results = run
    model = tiny_gpt(0)  # one process, the whole first batch: the gradient every rank's shard must be a slice of
    x = global_batches(STEPS, BATCH, SEQ)[0]
    model(x[:, :-1], x[:, 1:])[1].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}  # a tied matrix once, under embed_tokens.weight
    for j, lay in enumerate(results[0]["layouts"]):
        flat = torch.zeros(lay["padded"], dtype=torch.float64)  # (P_u,), padding 0
        for names, off, shape in zip(lay["names"], lay["offsets"], lay["shapes"], strict=True):
            n = torch.Size(shape).numel()
            flat[off:off + n] = grads[next(k for k in names if k in grads)].reshape(-1)
        assert lay["padded"] % world == 0 and lay["padded"] - lay["numel"] < world
        for r, part in enumerate(flat.chunk(world)):
            torch.testing.assert_close(results[r]["first_grads"][j], part, **TOL)


@pytest.mark.parametrize("reentrant", [False, True])
def test_activation_checkpointing(run, reentrant):
    # every Block under torch.utils.checkpoint: its recompute in backward calls the hooks again; the gradients are
    # the plain run's (themselves checked against one process above) and nothing stays gathered after backward
    world, _, results = run
    for r in range(world):
        assert results[r][f"ckpt_unsharded_{reentrant}"] == 0
        for got, want in zip(results[r][f"ckpt_grads_{reentrant}"], results[r]["first_grads"], strict=True):
            torch.testing.assert_close(got, want, **TOL)


def test_equals_torch_fsdp2(run):
    world, _, results = run
    for r in range(world):
        torch.testing.assert_close(results[r]["losses"], results[r]["torch_losses"], **TOL)
    _same_dict(results[0]["sd"], results[0]["torch_sd"])


def test_bytes_held_between_steps(run):
    world, _, results = run
    # hand count of tiny_gpt: root = embed 32x16 + learned positions 16x16 + final LayerNorm 2x16 = 800 (the tied
    # head adds nothing); Block = attention 4(16x16+16) + MLP (16x64+64 + 64x16+16) + 2 LayerNorms 2x16 = 3280
    assert results[0]["unit_numels"] == [800, 3280, 3280]
    assert sum(results[0]["unit_numels"]) == tiny_gpt(0).num_params()
    # padded to a multiple of N: N=2 -> (400 + 1640 + 1640) x 8 B; N=3 -> (267 + 1094 + 1094) x 8 B (1 + 2 + 2 pads)
    hand = {2: 29440, 3: 19640}[world]
    for r in range(world):
        o = results[r]
        assert o["shard_bytes_after"] == o["shard_bytes_before"] == hand
        assert hand == expected_shard_bytes(o["unit_numels"], world, 8)
        assert o["param_bytes"] == hand  # model.parameters() yields only the shards
        assert o["unsharded_after"] == 0  # every full buffer freed between steps
    # FSDP2 shards each parameter on dim 0 without padding in its local tensors: over all ranks exactly Psi x 8 B
    assert sum(results[r]["torch_local_bytes"] for r in range(world)) == 8 * sum(results[0]["unit_numels"])


def test_peak_unsharded_in_forward(run):
    world, _, results = run
    root, block = results[0]["unit_bytes"][0], results[0]["unit_bytes"][1]
    for r in range(world):
        with_pf = [b for e, b in results[r]["trace_prefetch"] if not e.endswith("backward")]
        without = [b for e, b in results[r]["trace_no_prefetch"] if not e.endswith("backward")]
        assert max(with_pf) == root + 2 * block  # the root, the running Block, the prefetched next Block
        assert max(without) == root + block  # one Block at a time
        assert with_pf[-1] == root + block  # the last Block has nothing to prefetch
        # backward walks the Blocks in reverse, each re-gathered just before its own backward (the one after it
        # already reduce-scattered and freed): root + Block i (+ Block i-1 prefetched)
        events = [e for e, _ in results[r]["trace_prefetch"]]
        assert events[-2:] == ["layers.1 backward", "layers.0 backward"]
        back = [b for e, b in results[r]["trace_prefetch"] if e.endswith("backward")]
        assert back == [root + 2 * block, root + block]
        back = [b for e, b in results[r]["trace_no_prefetch"] if e.endswith("backward")]
        assert back == [root + block, root + block]


def test_full_state_dict_loads_into_plain_gpt(run, single):
    _, _, results = run
    plain = tiny_gpt(7)
    plain.load_state_dict(results[0]["sd"])
    assert plain.lm_head.weight is plain.embed_tokens.weight
    ref = tiny_gpt(7)
    ref.load_state_dict(single[1])
    x0 = global_batches(STEPS, BATCH, SEQ)[0]
    with torch.no_grad():  # the sharded model evaluated under no_grad (whole batch on every rank) = the plain one
        want = ref(x0[:, :-1], x0[:, 1:])[1].item()
    for r in range(len(results)):
        assert results[r]["eval_loss"] == pytest.approx(want, abs=1e-10)
        assert results[r]["unsharded_after_eval"] == 0
    x = global_batches(1, 2, SEQ, seed=9)[0]
    torch.testing.assert_close(plain(x[:, :-1], x[:, 1:])[1], ref(x[:, :-1], x[:, 1:])[1], **TOL)


def test_step_after_a_forward_without_backward(run):
    # the root stays gathered after a grad-enabled forward that no backward follows; after opt.step() the next
    # forward must gather it again (a stale copy gives the pre-step embedding and head)
    world, _, results = run
    model = tiny_gpt(0)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    x, y = global_batches(STEPS, BATCH, SEQ)[:2]
    model(x[:, :-1], x[:, 1:])[1].backward()
    opt.step()
    with torch.no_grad():
        want = model(y[:, :-1], y[:, 1:])[1].item()
    for r in range(world):
        assert results[r]["after_step_loss"] == pytest.approx(want, abs=1e-10)


def test_sharded_checkpoint(run):
    world, ckpt, results = run
    assert results[0]["ckpt_files"] == [f"shard_{r}.pt" for r in range(world)]
    _same_dict(consolidate_sharded(ckpt), results[0]["sd"])  # the N files gathered offline = the full state
    _same_dict(results[0]["sd_reloaded"], results[0]["sd"])  # a fresh sharded model restored from them


def test_errors(run):
    _, _, results = run
    msgs = results[0]["errors"]
    assert "already sharded" in msgs["twice"]
    assert "layers" in msgs["no_layers"]
    assert "mixes dtypes" in msgs["mixed_dtype"] and "model.to" in msgs["mixed_dtype"]
    with pytest.raises(RuntimeError, match="torch.distributed"):
        fully_shard(tiny_gpt(0))


@pytest.mark.parametrize("prefetch", [True, False])
def test_recorded_timeline(run, prefetch):
    # record=True: every unit's events of one step, in a consistent order; with prefetch the next Block's gather is
    # issued before this Block computes, without it only after this Block's forward is over
    world, _, results = run
    for r in range(world):
        tl = results[r]["timeline"][prefetch]
        ev = [(e, u) for _, e, u in tl["events"]]
        times = [t for t, _, _ in tl["events"]]
        assert times == sorted(times) and times[0] >= 0
        for u in ("layers.0", "layers.1"):
            mine = [e for e, v in ev if v == u]
            assert mine.count("gather") == mine.count("gathered") == 2  # forward, then again for backward
            for a, b in [("compute", "computed"), ("backward", "backwarded"), ("reduce", "reduced")]:
                assert mine.count(a) == mine.count(b) == 1 and mine.index(a) < mine.index(b)
            assert mine.index("computed") < mine.index("backward") < mine.index("reduce")
        assert [e for e, v in ev if v == ""].count("gather") == 1  # the root: once, kept to the end of backward
        issue = ev.index(("gather", "layers.1"))
        assert (issue < ev.index(("compute", "layers.0"))) == prefetch
        assert (issue > ev.index(("computed", "layers.0"))) == (not prefetch)
        root, block = tl["unit_bytes"][:2]
        assert tl["peak_unsharded"] == root + (2 if prefetch else 1) * block
        # the events are those of the fastest step after the warm-up one (3 steps recorded), not of the last
        k, durations = tl["kept_step"], tl["step_s"]
        assert len(durations) == 3 and k >= 1 and durations[k] == min(durations[1:])
        assert times[-1] <= durations[k] + 0.01  # every event inside that step (callbacks land within 10 ms)
