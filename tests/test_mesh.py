"""A real 2-D run (minillm.distributed.mesh_workers): dp 2 x tp 2 on 4 gloo processes equals one process on the
whole batch (float64), and its groups are device_mesh_layout's and torch's init_device_mesh's."""

from __future__ import annotations

import pytest
import torch

from minillm.distributed import launch
from minillm.distributed.ddp_workers import single_process_run, tiny_gpt
from minillm.distributed.mesh_workers import mesh_worker


@pytest.fixture(scope="module")
def runs():
    return launch(mesh_worker, 4, args=(2, 2, 2, 6, 8), timeout=240)


def test_groups_match_layout_and_torch(runs):
    # hand-worked: rank = i_dp * tp + i_tp -> tp pairs {0,1}, {2,3}; dp pairs {0,2}, {1,3}
    assert [r["tp_group"] for r in runs] == [[0, 1], [0, 1], [2, 3], [2, 3]]
    assert [r["dp_group"] for r in runs] == [[0, 2], [1, 3], [0, 2], [1, 3]]
    for r in runs:
        assert r["torch_groups"] == {"dp": r["dp_group"], "pp": [r["rank"]], "tp": r["tp_group"]}


def test_dp_x_tp_equals_one_process(runs):
    ref = single_process_run(2, 6, 8)
    names = [n for n, _ in tiny_gpt(0).named_parameters()]
    for r in runs:
        assert list(r["grads"]) == names
        for i, n in enumerate(names):
            torch.testing.assert_close(r["grads"][n], ref["grads"][0][i], rtol=0, atol=1e-12)
            torch.testing.assert_close(r["params"][n], ref["params"][i], rtol=0, atol=1e-10)
        assert r["losses"] == pytest.approx(ref["losses"], abs=1e-12)
        # tensor parallel inside the pair: one g per sub-layer forward (2 layers x 2), one f per sub-layer backward
        # plus the lm_head's f (vocab parallel)
        assert r["tp_collectives"][("g", "forward")] == 4 and r["tp_collectives"][("f", "backward")] == 5


def test_dp_without_averaging_would_differ():
    # the check can fail: gradients of one dp shard alone are not the batch's gradient
    from minillm.distributed.ddp_workers import global_batches, shard
    model = tiny_gpt(0)
    x = global_batches(1, 6, 8)[0]
    model(x[:3, :-1], x[:3, 1:])[1].backward()
    half = model.embed_tokens.weight.grad.clone()
    ref = single_process_run(1, 6, 8)["grads"][0][0]
    assert (half - ref).abs().max() > 1e-3 and shard(x, 0, 2).shape[0] == 3
