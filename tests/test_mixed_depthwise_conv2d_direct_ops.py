"""Direct ``torch.ops.hybridops.mixed_depthwise_conv2d*`` calls are as safe as the wrapper.

A tensor argument on another device (a meta bias beside a CPU input would otherwise select the
fake kernel and return uninitialised memory), a channel count beyond the int32 group table, empty
weight lists, zero channels and other bad arguments raise clear errors that name the argument,
before any data is touched (stride-0 expanded tensors fake huge sizes without memory).
"""
from __future__ import annotations

import re

import pytest
import torch

from tests._mdc_cases import OP

BWD = torch.ops.hybridops.mixed_depthwise_conv2d_backward.default
S1 = [1, 1]


def _x_ws():
    return torch.randn(1, 6, 8, 8), [torch.randn(3, 1, 3, 3), torch.randn(3, 1, 5, 5)]


@pytest.mark.parametrize("where", ["bias", "weights[1]", "weights[0]"])
def test_meta_tensor_beside_cpu_input_raises(where):
    x, ws = _x_ws()
    b = torch.randn(6)
    if where == "bias":
        b = b.to("meta")
    else:
        i = int(where[-2])
        ws[i] = ws[i].to("meta")
    pattern = re.escape(where) + " is on meta but input is on cpu"
    for _ in range(2):  # used to return uninitialised memory that changed between calls
        with pytest.raises((RuntimeError, ValueError), match=pattern):
            OP(x, ws, b, S1, S1)


def test_meta_grad_output_or_weight_in_backward_raises():
    x, ws = _x_ws()
    g = torch.randn(1, 6, 8, 8)
    with pytest.raises((RuntimeError, ValueError), match="grad_output is on meta but input is on cpu"):
        BWD(g.to("meta"), x, ws, S1, S1, [True, True])
    with pytest.raises((RuntimeError, ValueError), match=r"weights\[1\] is on meta but input is on cpu"):
        BWD(g, x, [ws[0], ws[1].to("meta")], S1, S1, [True, True])


def test_meta_input_beside_cpu_weights_raises():
    x, ws = _x_ws()
    with pytest.raises((RuntimeError, ValueError), match=r"weights\[0\] is on cpu but input is on meta"):
        OP(x.to("meta"), ws, None, S1, S1)


def test_all_meta_still_gives_shapes():
    x, ws = _x_ws()
    out = OP(x.to("meta"), [w.to("meta") for w in ws], None, [3, 3], S1)
    assert out.shape == (1, 6, 4, 4) and out.device.type == "meta"  # timm: (8 - 1 + 2) // 3 + 1


def _huge_channels(c):
    """[1, c, 2, 2] input and a [c, 1, 3, 3] weight without memory (stride-0 expanded)."""
    x = torch.zeros(1, 1, 2, 2).expand(1, c, 2, 2)
    w = torch.zeros(1, 1, 3, 3).expand(c, 1, 3, 3)
    return x, w


@pytest.mark.parametrize("c", [2**31, 2**31 + 5, 2**32 + 1])
def test_channels_beyond_int32_rejected(c):
    x, w = _huge_channels(c)
    with pytest.raises(RuntimeError, match=rf"input has {c} channels; at most 2147483647"):
        OP(x, [w], None, S1, S1)
    with pytest.raises(RuntimeError, match=rf"input has {c} channels; at most 2147483647"):
        BWD(torch.zeros(1, 1, 2, 2).expand(1, c, 2, 2), x, [w], S1, S1, [True, True])
    # two groups whose sum crosses 2^31
    w_half = torch.zeros(1, 1, 3, 3).expand(c // 2, 1, 3, 3)
    w_rest = torch.zeros(1, 1, 3, 3).expand(c - c // 2, 1, 3, 3)
    with pytest.raises(RuntimeError, match="channels; at most 2147483647"):
        OP(x, [w_half, w_rest], None, S1, S1)


def test_huge_kernel_or_dilation_rejected():
    x = torch.randn(1, 2, 4, 4)
    w = torch.zeros(1, 1, 1, 1).expand(2, 1, 65537, 65537)
    with pytest.raises(RuntimeError, match=r"weights\[0\] has kernel size 65537; at most 32767"):
        OP(x, [w], None, S1, S1)
    with pytest.raises(RuntimeError, match=r"dilation \* \(kernel_size - 1\) must be below 2\^30"):
        OP(x, [torch.randn(2, 1, 3, 3)], None, S1, [2**29, 1])
    with pytest.raises(RuntimeError, match=r"dilation must be below 2\^30"):
        OP(x, [torch.randn(2, 1, 3, 3)], None, S1, [1, 2**62])
    with pytest.raises(RuntimeError, match=r"stride must be below 2\^30"):
        OP(x, [torch.randn(2, 1, 3, 3)], None, [2**31, 1], S1)


def test_degenerate_arguments_rejected():
    x, ws = _x_ws()
    cases = [
        (lambda: OP(x, [], None, S1, S1), "weights must hold at least one tensor"),
        (lambda: OP(x, [torch.randn(0, 1, 3, 3), torch.randn(6, 1, 3, 3)], None, S1, S1),
         r"weights\[0\] has no channels"),
        (lambda: OP(x[:, :0], [torch.randn(0, 1, 3, 3)], None, S1, S1), r"weights\[0\] has no channels"),
        (lambda: OP(x, [torch.randn(6, 1, 0, 0)], None, S1, S1), r"weights\[0\] has kernel size 0"),
        (lambda: OP(x, [torch.randn(6, 1, 3)], None, S1, S1), r"weights\[0\] must be \[C_i, 1, k, k\]"),
        (lambda: OP(x, ws, None, [0, 1], S1), "stride must be positive"),
        (lambda: OP(x, ws, None, S1, [1, -1]), "dilation must be positive"),
        (lambda: OP(x, ws, None, [1], S1), "stride and dilation must have 2 values"),
        (lambda: OP(x.long(), [w.long() for w in ws], None, S1, S1), "input must be floating point"),
        (lambda: OP(x[0], ws, None, S1, S1), "input must be 4-D"),
        (lambda: OP(x, ws, torch.randn(6, 1), S1, S1), r"bias must be \[6\]"),
        (lambda: OP(x, [torch.randn(1, 1, 3, 3)] * 33, None, S1, S1), "at most 32 kernel groups"),
        (lambda: BWD(torch.randn(1, 6, 8, 8).double(), x, ws, S1, S1, [True, True]),
         "grad_output has dtype Double but input has dtype Float"),
    ]
    for call, pattern in cases:
        with pytest.raises(RuntimeError, match=pattern):
            call()


def test_fake_kernel_checks_like_the_real_one():
    """Under FakeTensorMode (torch.compile tracing) the fake kernels reject the same arguments."""
    x, ws = _x_ws()
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fx, fws = mode.from_tensor(x), [mode.from_tensor(w) for w in ws]
        with pytest.raises(ValueError, match=r"channel split \[3, 3\] of weights sums to 6, but input has 5"):
            OP(fx[:, :5], fws, None, S1, S1)
        with pytest.raises(ValueError, match=r"bias must have shape \(6,\)"):
            OP(fx, fws, mode.from_tensor(torch.randn(4)), S1, S1)
        with pytest.raises(ValueError, match=r"grad_output must have shape \(1, 6, 4, 4\)"):
            BWD(mode.from_tensor(torch.randn(1, 6, 8, 8)), fx, fws, [2, 2], S1, [True, True])
