"""ONNX export of the hybridops ops (DeformConv, MixConv as Conv) run in ONNX Runtime on the CPU."""
from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

import hybridops

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="needs the [deploy] extra: onnx, onnxscript, onnxruntime")


class FunctionalDCN(nn.Module):
    """deform_conv2d with offsets/masks from a plain conv, exercising every argument."""

    def __init__(self, c_in, c_out, k, stride, padding, dilation, groups, offset_groups, use_mask, use_bias):
        super().__init__()
        kh, kw = k
        self.args = (stride, padding, dilation)
        self.weight = nn.Parameter(torch.randn(c_out, c_in // groups, kh, kw) * 0.3)
        self.bias = nn.Parameter(torch.randn(c_out)) if use_bias else None
        self.pred = nn.Conv2d(c_in, offset_groups * kh * kw * (3 if use_mask else 2), k, stride, padding, dilation)
        nn.init.normal_(self.pred.weight, 0, 0.5)
        self.n_off = 2 * offset_groups * kh * kw
        self.use_mask = use_mask

    def forward(self, x):
        p = self.pred(x)
        offset = p[:, :self.n_off]
        mask = torch.sigmoid(p[:, self.n_off:]) if self.use_mask else None
        return hybridops.deform_conv2d(x, offset, self.weight, self.bias, *self.args, mask=mask)


DCN_CASES = [
    dict(c_in=4, c_out=6, k=(3, 3), stride=1, padding=1, dilation=1, groups=1, offset_groups=1, use_mask=True, use_bias=True),
    dict(c_in=8, c_out=4, k=(3, 3), stride=2, padding=2, dilation=2, groups=2, offset_groups=4, use_mask=True, use_bias=False),
    dict(c_in=6, c_out=6, k=(1, 3), stride=(1, 2), padding=(0, 1), dilation=1, groups=3, offset_groups=3, use_mask=False, use_bias=True),
]


@pytest.mark.parametrize("cfg", DCN_CASES)
def test_deform_conv2d_exports_as_onnx_deformconv(tmp_path, cfg):
    from hybridops.deploy import check_onnx, export_onnx
    import onnx

    torch.manual_seed(0)
    model = FunctionalDCN(**cfg).eval()
    x = torch.randn(2, cfg["c_in"], 11, 13)
    path = export_onnx(model, x, tmp_path / "dcn.onnx", atol=1e-4)
    assert "DeformConv" in {n.op_type for n in onnx.load(path).graph.node}
    # dynamic batch and spatial size
    assert check_onnx(model, path, torch.randn(3, cfg["c_in"], 9, 16)) < 1e-4


@pytest.mark.parametrize("style", ["per_group", "padded"])
@pytest.mark.parametrize("stride,dilation,bias", [(1, 1, False), (2, 1, True), (1, 2, False)])
def test_mixed_depthwise_conv2d_exports_as_conv(tmp_path, style, stride, dilation, bias):
    from hybridops.deploy import check_onnx, export_onnx
    import onnx

    torch.manual_seed(0)
    model = hybridops.MixedDepthwiseConv2d(11, (3, 5, 7), stride=stride, dilation=dilation, bias=bias).eval()
    if bias:
        with torch.no_grad():
            model.bias.normal_()
    x = torch.randn(1, 11, 15, 12)
    path = export_onnx(model, x, tmp_path / "mix.onnx", mixconv=style)
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert ops.count("Conv") == (3 if style == "per_group" else 1)
    assert check_onnx(model, path, torch.randn(2, 11, 9, 20)) < 1e-4


def test_export_requires_eval_mode(tmp_path):
    from hybridops.deploy import export_onnx

    with pytest.raises(ValueError, match=r"call model.eval\(\) first"):
        export_onnx(hybridops.DeformConv2dV2(2, 2, 3, padding=1), torch.randn(1, 2, 8, 8), tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="mixconv must be"):
        export_onnx(hybridops.DeformConv2dV2(2, 2, 3, padding=1).eval(), torch.randn(1, 2, 8, 8), tmp_path / "x.onnx",
                    mixconv="fast")


def _hybridnetseg_with_offsets():
    models = pytest.importorskip("models")
    torch.manual_seed(0)
    model = models.create_model("hybridnetseg").eval()
    with torch.no_grad():  # non-zero offsets and masks: perturb every DCN's predictor
        for m in model.modules():
            if isinstance(m, hybridops.DeformConv2dV2):
                m.offset_mask.weight.normal_(0, 0.05)
                m.offset_mask.bias.normal_(0, 0.5)
    return model


def test_hybridnetseg_round_trip_in_onnxruntime(tmp_path):
    from hybridops.deploy import check_onnx, export_onnx

    model = _hybridnetseg_with_offsets()
    x = torch.randn(1, 3, 64, 64)
    path = export_onnx(model, x, tmp_path / "hybridnetseg.onnx", atol=1e-4)
    # dynamic batch and spatial size
    assert check_onnx(model, path, torch.randn(2, 3, 48, 80)) < 1e-4


def test_export_cli(tmp_path):
    from models.export import main

    model = _hybridnetseg_with_offsets()
    ckpt = tmp_path / "weights.pt"
    torch.save(model.state_dict(), ckpt)
    out = tmp_path / "m.onnx"
    assert main(["--model", "hybridnetseg", "--checkpoint", str(ckpt), "--out", str(out), "--size", "32", "32"]) == 0
    assert out.is_file()
    assert main(["--model", "unet", "--checkpoint", str(ckpt), "--out", str(out), "--size", "32", "32"]) == 2
    assert main(["--model", "nope", "--out", str(out)]) == 2
    assert main(["--model", "hybridnetseg", "--out", str(out), "--size", "30", "32"]) == 2
    assert main(["--checkpoint", str(tmp_path / "missing.pt"), "--model", "hybridnetseg", "--out", str(out)]) == 2
