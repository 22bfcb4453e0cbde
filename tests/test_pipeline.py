"""Pipeline parallelism (minillm.distributed.schedules, .pipeline): schedules, timelines, bubbles, a run on gloo.

One launch per process count (2 and 3) runs minillm's GPipe and 1F1B and torch.distributed.pipelining's
ScheduleGPipe / Schedule1F1B on the same split; the single-process reference runs here. float64: "equal" = 1e-10.
"""

from __future__ import annotations

import pytest
import torch

from minillm.distributed import launch, pipeline, schedules
from minillm.distributed.ddp_workers import tiny_gpt
from minillm.distributed.pipeline import (
    bubble_fraction,
    gpipe_schedule,
    interleaved_schedule,
    one_f_one_b_schedule,
    p2p_deadlock,
    p2p_plan,
    peak_in_flight,
    split_gpt,
    timeline,
    zero_bubble_h1_schedule,
)
from minillm.distributed.pipeline_workers import pipe_gpt, pipeline_worker, single_process_reference

STEPS, BATCH, SEQ, M = 3, 8, 8, 4
TOL = {"atol": 1e-10, "rtol": 0}
BOTH = [gpipe_schedule, one_f_one_b_schedule]


# -- schedules as data: no processes ---------------------------------------------------------------------------
def test_schedules_hand_case():
    assert gpipe_schedule(2, 2) == [[("F", 0), ("F", 1), ("B", 0), ("B", 1)]] * 2
    # p=3, m=4: stage 0 warms up with 2 forwards, stage 1 with 1, the last stage with none
    s = one_f_one_b_schedule(3, 4)
    assert s[0] == [("F", 0), ("F", 1), ("F", 2), ("B", 0), ("F", 3), ("B", 1), ("B", 2), ("B", 3)]
    assert s[1] == [("F", 0), ("F", 1), ("B", 0), ("F", 2), ("B", 1), ("F", 3), ("B", 2), ("B", 3)]
    assert s[2] == [("F", 0), ("B", 0), ("F", 1), ("B", 1), ("F", 2), ("B", 2), ("F", 3), ("B", 3)]


def test_timeline_hand_case():
    # p=2, m=2, t_f=1, t_b=2. Stage 1: F0 [1,2], F1 [2,3], B0 [3,5], B1 [5,7]; stage 0: F0 [0,1], F1 [1,2],
    # B0 [5,7] (waits for stage 1's B0), B1 [7,9]. Makespan 9, busy 6 per stage: bubble 1 - 12/18 = 1/3.
    tl = timeline(gpipe_schedule(2, 2), t_f=1, t_b=2)
    assert [(a, b, e) for a, b, e in tl[0]] == [(("F", 0), 0, 1), (("F", 1), 1, 2), (("B", 0), 5, 7),
                                                (("B", 1), 7, 9)]
    assert [(b, e) for _, b, e in tl[1]] == [(1, 2), (2, 3), (3, 5), (5, 7)]
    assert bubble_fraction(tl) == pytest.approx(1 / 3)
    # 1F1B, same p and m: stage 1 runs F0 [1,2], B0 [2,4], F1 [4,5], B1 [5,7]: same makespan, same bubble
    tl = timeline(one_f_one_b_schedule(2, 2), t_f=1, t_b=2)
    assert [(b, e) for _, b, e in tl[1]] == [(1, 2), (2, 4), (4, 5), (5, 7)]
    assert max(e for _, _, e in tl[0]) == 9 and bubble_fraction(tl) == pytest.approx(1 / 3)


@pytest.mark.parametrize("sched", BOTH, ids=["gpipe", "1f1b"])
@pytest.mark.parametrize(("p", "m", "want"), [(4, 4, 0.4286), (4, 16, 0.1579), (2, 4, 0.2), (3, 1, 2 / 3)])
def test_bubble_measured_equals_formula(sched, p, m, want):
    formula = (p - 1) / (m + p - 1)  # the GPipe paper's bubble, with t_b = t_f
    assert formula == pytest.approx(want, abs=5e-5)
    assert bubble_fraction(timeline(sched(p, m), t_f=1, t_b=1)) == pytest.approx(formula, abs=1e-12)
    # t_b = 2 t_f: every stage's busy time and the makespan both grow by 3/2 (makespan 3 (m + p - 1) t_f):
    # the fraction is unchanged, and 1F1B's bubble is GPipe's; 1F1B only keeps fewer activations
    tl = timeline(sched(p, m), t_f=1, t_b=2)
    assert bubble_fraction(tl) == pytest.approx(formula, abs=1e-12)
    assert max(e for row in tl for _, _, e in row) == 3 * (m + p - 1)


def test_peak_in_flight():
    assert peak_in_flight(gpipe_schedule(4, 8)) == [8, 8, 8, 8]  # GPipe keeps all m
    assert peak_in_flight(one_f_one_b_schedule(4, 8)) == [4, 3, 2, 1]  # 1F1B: p - s
    assert peak_in_flight(one_f_one_b_schedule(4, 2)) == [2, 2, 2, 1]  # min(p - s, m)
    for p, m in [(2, 1), (3, 5), (5, 3), (4, 16)]:
        assert peak_in_flight(one_f_one_b_schedule(p, m)) == [min(p - s, m) for s in range(p)]


def test_bad_schedules_refused():
    bad = [[("B", 0), ("F", 0)], [("F", 0), ("B", 0)]]  # stage 0 wants B0 before its own F0
    with pytest.raises(ValueError, match="deadlocks"):
        timeline(bad)
    with pytest.raises(ValueError, match="exactly once"):
        timeline([[("F", 0), ("B", 0)], [("F", 0)]])
    with pytest.raises(ValueError, match="p >= 1"):
        gpipe_schedule(0, 4)


def _idle_per_stage(tl) -> float:
    return max(e for row in tl for _, _, e in row) - sum(e - b for row in tl for _, b, e in row) / len(tl)


def test_interleaved_hand_case_and_bubble_formula():
    # p=2, m=2, v=2: device 0 holds chunks 0 and 2 of 4 virtual stages (c*p + s); warm-up 2(p-1-s) + (v-1)p = 4
    s = interleaved_schedule(2, 2, 2)
    assert s[0] == [("F", 0, 0), ("F", 1, 0), ("F", 0, 1), ("F", 1, 1), ("B", 0, 1), ("B", 1, 1), ("B", 0, 0),
                    ("B", 1, 0)]
    assert s[1][:3] == [("F", 0, 0), ("F", 1, 0), ("F", 0, 1)]
    # Narayanan et al. 2021 sec. 2.2.2: bubble time (p-1)(t_f + t_b)/v, i.e. (p-1)/(v m) of the ideal m(t_f + t_b)
    for p in (2, 3, 4, 8):
        for m in (p, 2 * p, 4 * p):
            for v in (2, 3, 4):
                for t_b in (1.0, 2.0, 3.0):
                    tl = timeline(interleaved_schedule(p, m, v), t_f=1, t_b=t_b)
                    assert _idle_per_stage(tl) == pytest.approx((p - 1) * (1 + t_b) / v, abs=1e-9)
                    assert bubble_fraction(tl) == pytest.approx((p - 1) / (v * m + p - 1), abs=1e-9)
            if m * v > 2 * (p - 1) + (v - 1) * p:  # the warm-up fits: stage 0 holds (1 + (p-1)/(p v)) p micro-
                # batches' worth (chunk units / v), Korthikanti et al. 2022's count; p = 4, v = 2: 5.5 instead of 4
                peak0 = peak_in_flight(interleaved_schedule(p, m, v))[0] / v
                assert peak0 == pytest.approx((1 + (p - 1) / (p * v)) * p)
    assert peak_in_flight(interleaved_schedule(4, 16, 2))[0] / 2 == 5.5
    one = timeline(one_f_one_b_schedule(4, 16), t_f=1, t_b=2)
    two = timeline(interleaved_schedule(4, 16, 2), t_f=1, t_b=2)
    assert _idle_per_stage(two) == pytest.approx(_idle_per_stage(one) / 2)  # v = 2 halves the bubble
    with pytest.raises(ValueError, match="multiple of p"):
        interleaved_schedule(4, 6, 2)
    with pytest.raises(ValueError, match="v >= 2"):
        interleaved_schedule(4, 8, 1)


def test_zero_bubble_h1_hand_case_and_bubble_formula():
    # p=2, m=3: the last stage defers its first W (s = 1) to fill the drain; stage 0 runs W right after each B
    s = zero_bubble_h1_schedule(2, 3)
    assert s[0] == [("F", 0), ("F", 1), ("B", 0), ("W", 0), ("F", 2), ("B", 1), ("W", 1), ("B", 2), ("W", 2)]
    assert s[1] == [("F", 0), ("B", 0), ("F", 1), ("B", 1), ("W", 0), ("F", 2), ("B", 2), ("W", 1), ("W", 2)]
    # Qi et al. 2023 sec. 2.1: idle per stage (p-1)(t_F + t_B - t_W) vs 1F1B's (p-1)(t_F + t_B + t_W) (B and W
    # fused); with equal times a third; every stage holds p micro-batches until their W, 1F1B's stage-0 peak
    for p in (2, 3, 4, 8):
        for m in (p, 2 * p, 3 * p + 1):
            for t_f, t_b, t_w in [(1, 1, 1), (1, 1.5, 0.5), (1, 2, 1), (2, 1, 1)]:
                zb = timeline(zero_bubble_h1_schedule(p, m), t_f=t_f, t_b=t_b, t_w=t_w)
                assert _idle_per_stage(zb) == pytest.approx((p - 1) * (t_f + t_b - t_w), abs=1e-9)
                fused = timeline(one_f_one_b_schedule(p, m), t_f=t_f, t_b=t_b + t_w)
                assert _idle_per_stage(fused) == pytest.approx((p - 1) * (t_f + t_b + t_w), abs=1e-9)
            assert peak_in_flight(zero_bubble_h1_schedule(p, m)) == [p] * p
    with pytest.raises(ValueError, match="timelines only"):
        p2p_plan(zero_bubble_h1_schedule(2, 2), 0)


def test_p2p_plan_hand_case():
    # p=2, m=2, 1F1B. Stage 0 runs F0 F1 B0 B1: it sends F1's output and receives B0's gradient in one group
    s = one_f_one_b_schedule(2, 2)
    assert p2p_plan(s, 0) == [[], [("send", 1, "act", 0)], [("send", 1, "act", 1), ("recv", 1, "grad", 0)],
                              [("recv", 1, "grad", 1)], []]
    # stage 1 runs F0 B0 F1 B1: it sends B0's gradient and receives F1's input together
    assert p2p_plan(s, 1) == [[("recv", 0, "act", 0)], [], [("send", 0, "grad", 0), ("recv", 0, "act", 1)], [],
                              [("send", 0, "grad", 1)]]
    assert p2p_plan(s, 0)[2] != [] and p2p_plan(gpipe_schedule(1, 3), 0) == [[]] * 7  # one stage: no messages


@pytest.mark.parametrize("sched", BOTH, ids=["gpipe", "1f1b"])
def test_batched_p2p_never_deadlocks(sched):
    # every send waits for its receive (NCCL's worst case); the plan's groups posted together always finish, and
    # per pair of neighbours the i-th send and the i-th receive name the same message (checked inside)
    for p in range(1, 7):
        for m in range(1, 9):
            assert p2p_deadlock(sched(p, m)) is None, (p, m)
            for r in range(p - 1):  # activations go r -> r+1 in the order r+1 takes them; gradients back alike
                sends = [op[2:] for g in p2p_plan(sched(p, m), r) for op in g if op[:2] == ("send", r + 1)]
                recvs = [op[2:] for g in p2p_plan(sched(p, m), r + 1) for op in g if op[:2] == ("recv", r)]
                assert sends == recvs == [("act", i) for i in range(m)]


def test_unbatched_1f1b_deadlocks_but_gpipe_does_not():
    # each operation alone, blocking, in the order send-then-receive: GPipe's fill-drain is fine, 1F1B's steady
    # state makes stage s send F(w+k) while s+1 sends B(k): both wait for a receive that comes after
    assert all(p2p_deadlock(gpipe_schedule(p, m), batched=False) is None for p in range(1, 6) for m in range(1, 7))
    assert p2p_deadlock(one_f_one_b_schedule(2, 2), batched=False) == {0: [("send", 1, "act", 1)],
                                                                      1: [("send", 0, "grad", 0)]}
    assert p2p_deadlock(one_f_one_b_schedule(4, 1), batched=False) is None  # m=1: no steady state
    assert all(p2p_deadlock(one_f_one_b_schedule(p, m), batched=False) is not None
               for p in range(2, 6) for m in range(2, 7))


def test_p2p_order_mismatch_refused():
    # stage 0 takes B1 before B0 while stage 1 sends B0's gradient first: NCCL would pair the wrong tensors
    bad = [[("F", 0), ("F", 1), ("B", 1), ("B", 0)], [("F", 0), ("F", 1), ("B", 0), ("B", 1)]]
    with pytest.raises(ValueError, match="orders differ"):
        p2p_deadlock(bad)


@pytest.mark.parametrize("sched", BOTH, ids=["gpipe", "1f1b"])
def test_run_pipeline_posts_the_plan_one_batch_per_group(monkeypatch, sched):
    # one process plays the middle rank of 3 with a fake transport that records each batch_isend_irecv call:
    # the calls must be exactly the non-empty groups of p2p_plan (checked deadlock-free above), each in one call
    calls = []

    class FakeOp:
        def __init__(self, op, tensor, peer, tag=0):
            self.op, self.tensor, self.peer, self.tag = op, tensor, peer, tag

    def fake_batch(ops):
        for o in ops:
            if o.op is torch.distributed.irecv:
                o.tensor.copy_(torch.randn_like(o.tensor) * 0.1)  # some activation / gradient arrives
        calls.append([("send" if o.op is torch.distributed.isend else "recv", o.peer, o.tag) for o in ops])
        return []

    monkeypatch.setattr(pipeline.dist, "P2POp", FakeOp)
    monkeypatch.setattr(pipeline.dist, "batch_isend_irecv", fake_batch)
    model, m = pipe_gpt(0), 4
    stage = split_gpt(model, 3)[1]
    schedule = sched(3, m)
    tokens = torch.randint(0, 32, (8, SEQ + 1))
    assert pipeline.run_pipeline(stage, 1, 3, schedule, tokens, (8 // m, SEQ, model.cfg.d_model)) is None
    want = [[(o, peer, i if what == "act" else m + i) for o, peer, what, i in g]
            for g in p2p_plan(schedule, 1) if g]
    assert calls == want and sum(len(c) for c in calls) == 4 * m  # F in, F out, B in, B out per micro-batch
    assert all(p.grad is not None for p in stage.parameters())


def test_split_gpt_composes_to_the_model():
    model = pipe_gpt(0)
    x = torch.randint(0, 32, (2, SEQ))
    for p in (1, 2, 3, 4):
        stages = split_gpt(model, p)
        assert [len(s.layers) for s in stages] == [4 // p + (s < 4 % p) for s in range(p)]
        h = x
        for s in stages:
            h = s(h)
        torch.testing.assert_close(h, model(x)[0], **TOL)
    with pytest.raises(ValueError, match="tie_embeddings=False"):
        split_gpt(tiny_gpt(0), 2)
    with pytest.raises(ValueError, match="p=5"):
        split_gpt(model, 5)


# -- a real pipeline on gloo -----------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=[2, 3], ids=["2proc", "3proc"])
def run(request):
    world = request.param
    return world, launch(pipeline_worker, nprocs=world, args=(STEPS, BATCH, SEQ, M), timeout=180)


@pytest.fixture(scope="module")
def single():
    return single_process_reference(STEPS, BATCH, SEQ)


def _check_against_single(results: list[dict], key: str, single: dict) -> None:
    names = [n for r in results for n in r[key]["params"]]
    assert sorted(names) == sorted(single["params"])  # every parameter on exactly one stage
    for r in results:
        for step in range(STEPS):
            for n, g in r[key]["grads"][step].items():
                torch.testing.assert_close(g, single["grads"][step][n], **TOL)
        for n, w in r[key]["params"].items():
            torch.testing.assert_close(w, single["params"][n], **TOL)
    assert results[-1][key]["losses"] == pytest.approx(single["losses"], abs=1e-12)
    assert all(loss is None for r in results[:-1] for loss in r[key]["losses"])  # only the last stage has it


@pytest.mark.parametrize("key", ["gpipe", "1f1b"])
def test_pipeline_equals_single_process(run, single, key):
    _check_against_single(run[1], key, single)


def test_real_run_keeps_the_predicted_activations(run):
    world, results = run
    for key, sched in (("gpipe", gpipe_schedule), ("1f1b", one_f_one_b_schedule)):
        held = [r[key]["peak_saved"] for r in results]  # per rank, per step
        assert held == [[p] * STEPS for p in peak_in_flight(sched(world, M))]
    assert [r["1f1b"]["peak_saved"][0] for r in results] == [min(world - s, M) for s in range(world)]


@pytest.mark.parametrize("key", ["torch_gpipe", "torch_1f1b"])
def test_torch_pipelining_same_split(run, single, key):
    results = run[1]
    if isinstance(results[0].get(key), str) or key not in results[0]:
        pytest.skip(f"torch.distributed.pipelining did not run on CPU/gloo: {results[0].get(key)}")
    _check_against_single(results, key, single)


def test_schedule_code_lives_in_schedules_and_old_imports_still_work():
    for name in ("gpipe_schedule", "one_f_one_b_schedule", "interleaved_schedule", "zero_bubble_h1_schedule",
                 "timeline", "bubble_fraction", "peak_in_flight", "p2p_plan", "p2p_deadlock"):
        assert getattr(pipeline, name) is getattr(schedules, name)
        assert getattr(schedules, name).__module__ == "minillm.distributed.schedules"
