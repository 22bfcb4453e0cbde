"""minillm.formats.bit_string: the fields of a bit pattern written out, checked by hand and against torch's bits."""

from __future__ import annotations

import struct

import pytest
import torch

from minillm.formats import BF16, E4M3, E5M2, FP16, FP32, bit_string, encode


def test_bit_string_hand_worked():
    assert bit_string(encode(1.0, FP16), FP16) == "0 01111 0000000000"  # exponent field 15 = bias
    assert bit_string(encode(-2.0, BF16), BF16) == "1 10000000 0000000"
    assert bit_string(encode(448.0, E4M3), E4M3, sep="|") == "0|1111|110"  # e4m3fn's largest finite value
    assert bit_string(encode(2.0**-16, E5M2), E5M2) == "0 00000 01"  # the smallest subnormal 2^-14 * 1/4
    assert bit_string(encode(float("inf"), FP32), FP32) == "0 11111111 " + "0" * 23


@pytest.mark.parametrize("x", [1.0, -0.1, 3.14159, 65504.0, 1e-7, 2.0**-126])
def test_bit_string_of_fp32_matches_struct(x):
    (raw,) = struct.unpack(">I", struct.pack(">f", x))  # the IEEE bits of the fp32 value, from the C library
    assert bit_string(encode(x, FP32), FP32, sep="") == f"{raw:032b}"


@pytest.mark.parametrize("fmt,dtype", [(FP16, torch.float16), (BF16, torch.bfloat16)])
def test_bit_string_matches_torch_bits(fmt, dtype):
    for x in (1.0, -0.1, 3.14159, 1e-6, 300.0):
        raw = torch.tensor([x], dtype=dtype).view(torch.int16).item() & 0xFFFF
        assert bit_string(encode(x, fmt), fmt, sep="") == f"{raw:016b}"


def test_bit_string_rejects_out_of_range_bits():
    with pytest.raises(ValueError, match="unsigned 8-bit"):
        bit_string(256, E4M3)
