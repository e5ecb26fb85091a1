"""MixConv padding follows timm at every stride: ``((s - 1) + d * (k - 1)) // 2`` per dimension.

The rule equals ``d * (k - 1) // 2`` at strides 1 and 2; at stride >= 3 it pads ``(s - 1) // 2``
more on each side, so the output is ``(H - 1 + 2 * ((s - 1) // 2)) // s + 1`` (17 at stride 3 -> 7,
16 at stride 4 -> 5). Checked against ``timm.layers.MixedConv2d(depthwise=True)`` itself, forward
and gradients, NCHW and channels-last, on the CPU kernels, the CUDA-tiling emulation, the reference,
the fake kernel and the ONNX export.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch

import hybridops
from hybridops import reference
from hybridops.ops.mixed_depthwise_conv2d import out_size
from tests._mdc_cases import OP, assert_close_all

timm_layers = pytest.importorskip("timm.layers")

# (channels, kernel sizes, H, W, stride, dilation)
STRIDE_CASES = [
    pytest.param(6, [3, 5], 17, 17, 3, 1, id="17x17-s3"),
    pytest.param(6, [3, 5, 7], 16, 16, 4, 1, id="16x16-s4"),
    pytest.param(7, [3, 5, 7], 19, 22, 3, 2, id="19x22-s3-d2"),
    pytest.param(5, [1, 3], 13, 9, 4, 1, id="k1-s4"),
    pytest.param(4, [3], 1, 2, 3, 1, id="1x2-s3-only-padding-read"),
    pytest.param(8, [3, 5, 7, 9], 35, 33, 5, 1, id="k3579-s5"),
]


def timm_mixed_conv(channels, ks, stride, dilation):
    torch.manual_seed(0)
    m = timm_layers.MixedConv2d(channels, channels, list(ks), stride=stride, dilation=dilation, depthwise=True)
    return m.double()


def ours_from(timm_module, stride, dilation):
    return hybridops.MixedDepthwiseConv2d.from_timm_state_dict(timm_module.state_dict(), stride=stride,
                                                               dilation=dilation).double()


def forward_backward(module, x):
    x = x.detach().clone().requires_grad_()
    out = module(x)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=out.dtype)
    out.backward(g.to(memory_format=torch.channels_last) if x.is_contiguous(memory_format=torch.channels_last)
                 else g)
    return [out.detach(), x.grad] + [p.grad for p in module.parameters()]


def test_timm_padding_rule_documented_sizes():
    assert out_size(17, 17, (3, 3)) == (7, 7)
    assert out_size(16, 16, (4, 4)) == (5, 5)
    for h in range(1, 40):
        for s in (1, 2):
            assert out_size(h, h, (s, s)) == ((h + s - 1) // s,) * 2  # unchanged at strides 1, 2


@pytest.mark.parametrize("emulate", [False, True], ids=["cpu-kernels", "cuda-emulation"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("channels,ks,h,w,stride,dilation", STRIDE_CASES)
def test_matches_timm_at_stride_3_and_more(channels, ks, h, w, stride, dilation, layout, emulate, monkeypatch):
    if emulate:
        monkeypatch.setenv("HYBRIDOPS_MDC_EMULATE_CUDA", "1")
    timm_m = timm_mixed_conv(channels, ks, stride, dilation)
    ours = ours_from(timm_m, stride, dilation)
    x = torch.randn(2, channels, h, w, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    expected = forward_backward(timm_m, x)
    actual = forward_backward(ours, x)
    assert actual[0].shape == expected[0].shape
    assert_close_all(actual, expected, rtol=1e-10, atol=1e-10)
    # the reference and the fake kernel agree with timm too
    ws = [w.detach() for w in ours.weights]
    torch.testing.assert_close(reference.mixed_depthwise_conv2d(x, ws, None, stride, dilation), expected[0])
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake = OP(mode.from_tensor(x), [mode.from_tensor(t) for t in ws], None, [stride] * 2, [dilation] * 2)
    assert fake.shape == expected[0].shape


def test_asymmetric_stride_matches_per_dimension_rule():
    """Each dimension pads by its own stride: (3, 4) stride, (2, 1) dilation vs F.conv2d per group."""
    x = torch.randn(1, 4, 20, 21, dtype=torch.float64)
    ws = [torch.randn(2, 1, k, k, dtype=torch.float64) for k in (3, 5)]
    stride, dilation = (3, 4), (2, 1)
    parts = []
    for xi, w in zip(x.split([2, 2], 1), ws):
        k = w.shape[-1]
        pad = [((s - 1) + d * (k - 1)) // 2 for s, d in zip(stride, dilation)]
        parts.append(torch.nn.functional.conv2d(xi, w, None, stride, pad, dilation, groups=2))
    expected = torch.cat(parts, 1)
    for layout in (torch.contiguous_format, torch.channels_last):
        out = hybridops.mixed_depthwise_conv2d(x.contiguous(memory_format=layout), ws, None, stride, dilation)
        torch.testing.assert_close(out, expected)


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
                    reason="needs the [deploy] extra: onnx, onnxscript, onnxruntime")
@pytest.mark.parametrize("style", ["per_group", "padded"])
@pytest.mark.parametrize("stride", [3, 4])
def test_onnx_export_matches_timm_at_stride_3_and_4(tmp_path, style, stride):
    from hybridops.deploy import export_onnx, onnx_session

    timm_m = timm_mixed_conv(9, (3, 5, 7), stride, 1).float().eval()
    ours = ours_from(timm_m, stride, 1).float().eval()
    x = torch.randn(1, 9, 17, 16)
    path = export_onnx(ours, x, tmp_path / "mix.onnx", mixconv=style, dynamic_size=False)
    got = onnx_session(path).run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        expected = timm_m(x)
    assert got.shape == tuple(expected.shape)
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-4)
