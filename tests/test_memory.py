"""minillm.memory: the peak-allocation probe, on a hand-worked sequence of allocations."""

from __future__ import annotations

import os

import pytest
import torch

from minillm.memory import peak_allocated_bytes


def test_peak_allocated_bytes_hand_worked():
    def fn():
        a = torch.ones(1024)  # 4 KiB live
        b = torch.ones(2048)  # + 8 KiB: the peak, 12 KiB
        del a
        c = torch.ones(512)  # 8 + 2 KiB
        del b
        return c

    peak, out = peak_allocated_bytes(fn)
    assert peak == 4096 + 8192 and out.shape == (512,)
    assert peak_allocated_bytes(lambda: torch.empty(1000, dtype=torch.float64))[0] == 8000
    with pytest.raises(ValueError, match="cpu"):
        peak_allocated_bytes(lambda: None, "meta")


def test_only_the_profilers_own_log_lines_are_silenced(capfd):
    def fn():
        os.write(2, b"from fn\n")  # fd 2 directly, as C++ code writes
        return torch.ones(4)

    peak_allocated_bytes(fn)
    err = capfd.readouterr().err
    assert "from fn" in err  # fn's stderr is not hidden
    assert "profiler_start" not in err and "profiler_stop" not in err
