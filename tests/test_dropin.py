"""Drop-in for torchvision and mmcv users: torch.fx, torchvision's DeformConv2d module, mmcv weights."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import hybridops
from tests._dcn_cases import make_dcn_inputs

tv_ops = pytest.importorskip("torchvision.ops")


# ------------------------------------------------------------------------------------------- torch.fx


class _UsesFunctional(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.offset = torch.nn.Conv2d(4, 18, 3, padding=1)
        self.weight = torch.nn.Parameter(torch.randn(6, 4, 3, 3))

    def forward(self, x):
        y = hybridops.deform_conv2d(x, self.offset(x), self.weight, padding=1)
        return torch.relu(y)


def test_fx_symbolic_trace_makes_the_op_a_leaf():
    m = _UsesFunctional()
    gm = torch.fx.symbolic_trace(m)
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert hybridops.deform_conv2d in targets
    x = torch.randn(2, 4, 7, 8)
    torch.testing.assert_close(gm(x), m(x))


def test_fx_traces_modules():
    # As the root, DeformConv2dV2's optional offset/mask need concrete_args (plain FX behaviour);
    # inside a model (HybridNetSeg below) they are simply not passed.
    cases = [(hybridops.DeformConv2dV2(4, 6, 3, padding=1), {"offset": None, "mask": None}),
             (_ModuleWithTvPort(), None)]
    for m, concrete in cases:
        gm = torch.fx.symbolic_trace(m, concrete_args=concrete)
        x = torch.randn(1, 4, 9, 9)
        torch.testing.assert_close(gm(x), m(x))


class _ModuleWithTvPort(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.dcn = hybridops.DeformConv2d(4, 6, 3, padding=1)
        self.offset = torch.nn.Conv2d(4, 18, 3, padding=1)

    def forward(self, x):
        return self.dcn(x, self.offset(x))


def test_fx_traced_graph_still_checks_arguments():
    gm = torch.fx.symbolic_trace(_UsesFunctional())
    with pytest.raises(ValueError, match=r"input must be 4-D"):
        gm(torch.randn(4, 7, 8))


def test_create_feature_extractor_on_hybridnetseg():
    feature_extraction = pytest.importorskip("torchvision.models.feature_extraction")
    from models import create_model
    model = create_model("hybridnetseg").eval()
    train_nodes, eval_nodes = feature_extraction.get_graph_node_names(model)
    leaf = [n for n in eval_nodes if "deform_conv2d" in n]
    assert leaf, "deform_conv2d should appear as one node per layer"
    assert any("mixed_depthwise_conv2d" in n for n in eval_nodes)  # MixConv is a leaf too
    extractor = feature_extraction.create_feature_extractor(model, return_nodes={leaf[0]: "dcn0"})
    x = torch.randn(1, 3, 64, 64)
    feats = extractor(x)
    assert feats["dcn0"].dim() == 4 and torch.isfinite(feats["dcn0"]).all()


def test_torch_export_still_works():
    m = hybridops.DeformConv2dV2(4, 6, 3, padding=1).eval()
    x = torch.randn(1, 4, 9, 9)
    ep = torch.export.export(m, (x,))
    torch.testing.assert_close(ep.module()(x), m(x))


# ----------------------------------------------------------------------- torchvision's DeformConv2d


@pytest.mark.parametrize("use_mask", [False, True], ids=["dcnv1", "dcnv2"])
@pytest.mark.parametrize("offset_groups", [1, 2])
def test_deform_conv2d_module_matches_torchvision(use_mask, offset_groups):
    torch.manual_seed(0)
    tv = tv_ops.DeformConv2d(4, 6, 3, stride=1, padding=1, groups=2).double()
    ours = hybridops.DeformConv2d.from_torchvision(tv)
    assert isinstance(ours, hybridops.DeformConv2d) and ours.weight.dtype == torch.float64
    assert list(ours.state_dict()) == list(tv.state_dict())
    assert repr(ours) == repr(tv)
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64)
    offset = torch.randn(2, 2 * offset_groups * 9, 7, 6, dtype=torch.float64)
    mask = torch.rand(2, offset_groups * 9, 7, 6, dtype=torch.float64) if use_mask else None
    grad_out = torch.randn(2, 6, 7, 6, dtype=torch.float64)
    results = []
    for m in (ours, tv):
        xi, oi = x.clone().requires_grad_(True), offset.clone().requires_grad_(True)
        out = m(xi, oi, mask)
        results.append((out, *torch.autograd.grad(out, [xi, oi, m.weight, m.bias], grad_out)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_deform_conv2d_module_constructor_and_init_like_torchvision():
    torch.manual_seed(3)
    tv = tv_ops.DeformConv2d(6, 4, (3, 2), stride=2, padding=(1, 0), dilation=2, groups=2, bias=False)
    torch.manual_seed(3)
    ours = hybridops.DeformConv2d(6, 4, (3, 2), stride=2, padding=(1, 0), dilation=2, groups=2, bias=False)
    assert ours.bias is None and repr(ours) == repr(tv)
    torch.testing.assert_close(ours.weight, tv.weight)  # same init, same RNG draws
    ours.load_state_dict(tv.state_dict())
    with pytest.raises(ValueError, match=r"divisible by groups"):
        hybridops.DeformConv2d(6, 4, 3, groups=4)


def test_v2_from_torchvision_returns_the_faithful_port():
    """DeformConv2dV2(x, offset) would use its predicted mask; torchvision's module without a mask
    is DCNv1. from_torchvision therefore returns a DeformConv2d (documented)."""
    tv = tv_ops.DeformConv2d(4, 4, 3, padding=1)
    port = hybridops.DeformConv2dV2.from_torchvision(tv)
    assert type(port) is hybridops.DeformConv2d
    x, offset = torch.randn(1, 4, 6, 6), torch.randn(1, 18, 6, 6)
    torch.testing.assert_close(port(x, offset), tv(x, offset), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ mmcv


def _mmcv_state_dict(in_ch, out_ch, k, og, bias, seed=0):
    """The keys and shapes of mmcv's ModulatedDeformConv2dPack, with non-zero predictor weights."""
    g = torch.Generator().manual_seed(seed)
    sd = {"weight": torch.randn(out_ch, in_ch, k, k, generator=g, dtype=torch.float64),
          "conv_offset.weight": torch.randn(3 * og * k * k, in_ch, k, k, generator=g, dtype=torch.float64) * 0.3,
          "conv_offset.bias": torch.randn(3 * og * k * k, generator=g, dtype=torch.float64) * 0.3}
    if bias:
        sd["bias"] = torch.randn(out_ch, generator=g, dtype=torch.float64)
    return sd


def _mmcv_formula(sd, x, stride, padding, og):
    """mmcv's ModulatedDeformConv2dPack.forward, written with torchvision's op."""
    out = F.conv2d(x, sd["conv_offset.weight"], sd["conv_offset.bias"], stride, padding)
    o1, o2, mask = torch.chunk(out, 3, dim=1)
    offset = torch.cat((o1, o2), dim=1)
    return tv_ops.deform_conv2d(x, offset, sd["weight"], sd.get("bias"), stride, padding, 1, torch.sigmoid(mask))


@pytest.mark.parametrize("og,bias,stride", [(1, True, 1), (2, False, 2)])
def test_load_mmcv_state_dict_computes_what_mmcv_does(og, bias, stride):
    sd = _mmcv_state_dict(4, 6, 3, og, bias)
    m = hybridops.DeformConv2dV2(4, 6, 3, stride=stride, padding=1, offset_groups=og, bias=bias).double()
    m.load_mmcv_state_dict(sd)
    x = torch.randn(2, 4, 9, 8, dtype=torch.float64)
    torch.testing.assert_close(m(x), _mmcv_formula(sd, x, stride, 1, og), rtol=1e-10, atol=1e-10)


def test_load_mmcv_state_dict_with_prefix_and_bad_keys():
    sd = {f"backbone.layer1.conv2.{k}": v for k, v in _mmcv_state_dict(4, 4, 3, 1, True).items()}
    sd["backbone.other.weight"] = torch.zeros(1)
    m = hybridops.DeformConv2dV2(4, 4, 3, padding=1).double()
    m.load_mmcv_state_dict(sd, prefix="backbone.layer1.conv2.")
    torch.testing.assert_close(m.offset_mask.bias, sd["backbone.layer1.conv2.conv_offset.bias"])
    del sd["backbone.layer1.conv2.conv_offset.bias"]
    with pytest.raises(KeyError, match=r"missing \['backbone.layer1.conv2.conv_offset.bias'\]"):
        m.load_mmcv_state_dict(sd, prefix="backbone.layer1.conv2.")
    with pytest.raises(RuntimeError, match=r"size mismatch"):
        hybridops.DeformConv2dV2(4, 4, 3, padding=1, offset_groups=2).load_mmcv_state_dict(
            _mmcv_state_dict(4, 4, 3, 1, True))


# ---------------------------------------------------------------------------------------------- errors


def test_argument_errors_are_value_and_runtime_errors():
    """Code written for torchvision catches RuntimeError; Python code catches ValueError: both work."""
    x, offset, weight, bias, mask = make_dcn_inputs(n=1, c_in=4, c_out=4, h=6, w=6, dtype=torch.float32)
    assert issubclass(hybridops.InvalidArgumentError, ValueError)
    assert issubclass(hybridops.InvalidArgumentError, RuntimeError)
    for exc in (RuntimeError, ValueError, hybridops.InvalidArgumentError):
        with pytest.raises(exc, match=r"offset must have shape"):
            hybridops.deform_conv2d(x, offset[:, :, :5], weight, padding=1)
    with pytest.raises(RuntimeError, match=r"divisible by groups"):
        hybridops.DeformConv2d(6, 4, 3, groups=4)
    with pytest.raises(RuntimeError, match=r"stride must be positive"):
        hybridops.deform_conv2d(x, offset, weight, padding=1, stride=0)


@pytest.mark.parametrize("bad", ["offset_spatial", "mask_channels"])
def test_shapes_are_checked_before_dtypes_like_torchvision(bad):
    """A call with a wrong shape AND a wrong dtype reports the shape, as torchvision does."""
    x, offset, weight, _, mask = make_dcn_inputs(n=1, c_in=4, c_out=4, h=6, w=6, dtype=torch.float32)
    if bad == "offset_spatial":
        offset, match = offset[:, :, :5].double(), r"offset must have shape"
    else:
        mask, match = mask[:, :8].double(), r"mask must have shape"
    with pytest.raises(RuntimeError, match=match):
        hybridops.deform_conv2d(x, offset, weight, padding=1, mask=mask)
    with pytest.raises(RuntimeError, match=r"(offset output dims|mask.shape\[1\] is not valid)"):
        tv_ops.deform_conv2d(x, offset, weight, padding=1, mask=mask)


def test_direct_op_call_checks_shapes_before_dtypes():
    x, offset, weight, _, mask = make_dcn_inputs(n=1, c_in=4, c_out=4, h=6, w=6, dtype=torch.float32)
    with pytest.raises(RuntimeError, match=r"offset must be \[1, 18, 6, 6\]"):
        torch.ops.hybridops.deform_conv2d(x, offset[:, :, :5].double(), weight, mask, None, [1, 1], [1, 1], [1, 1])
    with pytest.raises(RuntimeError, match=r"mask must be \[1, 9, 6, 6\]"):
        torch.ops.hybridops.deform_conv2d(x, offset, weight, mask[:, :8].double(), None, [1, 1], [1, 1], [1, 1])
