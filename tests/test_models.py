"""Tests of models/: HybridNetSeg, the lumbar MSFF network, the U-Net baseline, the registry and the
complexity counter. CPU with small inputs (the 512x512 MAC counts run on the meta device); the CUDA
test runs where CUDA is available. ``HYBRIDOPS_TEST_INDUCTOR=1`` adds the slow CPU inductor compile."""
from __future__ import annotations

import copy
import os

import pytest
import torch
from torch import nn

import hybridops
import models
from models.blocks import (GroupedConv1x1, ReferenceDeformConv2dV2, ReferenceMixedDepthwiseConv2d, deform_conv,
                           mixed_depthwise_conv, split_channels)
from models.msffnet import MSFF

# Compiled DCN, reference MixConv (the per-op form of the ``ops`` switch).
DCN_ONLY = {"deform_conv": "hybridops", "mixconv": "reference"}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def perturb_offsets(model: nn.Module, scale: float = 0.3) -> None:
    """Non-zero, fractional DCN offsets and non-constant masks (the predictor is zero-initialised)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, hybridops.DeformConv2dV2):
                w = m.offset_mask.weight
                w.copy_(torch.randn(w.shape, generator=g, dtype=w.dtype) * scale / w[0].numel() ** 0.5)
                m.offset_mask.bias.copy_(torch.randn(m.offset_mask.bias.shape, generator=g, dtype=w.dtype))


def randomize_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics so eval-mode outputs are not just the init."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def freeze_bn(model: nn.Module) -> nn.Module:
    """BN on its running statistics while the model stays in training mode."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()
    return model


# ----------------------------------------------------------------------------------------------- registry


def test_registry():
    assert models.list_models() == ["hybridnetseg", "msffnet", "unet"]
    assert models.list_models("*net") == ["msffnet", "unet"]
    assert models.is_model("unet") and not models.is_model("resnet")
    assert isinstance(models.create_model("unet", widths=(8, 16)), models.UNet)
    with pytest.raises(ValueError, match="unknown model 'nope'; available: hybridnetseg"):
        models.create_model("nope")
    with pytest.raises(ValueError, match="ops must be one of"):
        models.create_model("hybridnetseg", ops="cuda")
    with pytest.raises(ValueError, match="torchvision has no mixconv op"):
        models.create_model("hybridnetseg", ops="torchvision")


def test_torchvision_dcn_peer_gives_the_same_outputs():
    pytest.importorskip("torchvision")
    torch.manual_seed(0)
    ours = models.create_model("hybridnetseg").eval()
    with torch.no_grad():
        for m in ours.modules():
            if isinstance(m, hybridops.DeformConv2dV2):
                m.offset_mask.weight.normal_(0, 0.05)
    peer = models.create_model("hybridnetseg", ops={"deform_conv": "torchvision", "mixconv": "reference"}).eval()
    peer.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(peer(x), ours(x), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------- counts


def test_hybridnetseg_parameter_count():
    m = models.create_model("hybridnetseg", ops="reference")
    assert n_params(m) == 709_946  # the target, exactly (spec: 709,946 +- 1%)
    # Per part, so a regression points at the layer that moved.
    parts = {name: n_params(mod) for name, mod in m.named_children()}
    assert parts == {"encoder": 692_963, "decoder": 16_767, "side2": 44, "side3": 71, "side4": 101}
    assert [n_params(s) for s in m.encoder.stages] == [54_195, 318_777, 319_527]
    assert n_params(m.encoder.stem) == 464
    # DCN(c) = c*c*9 weight + (c*27*9 + 27) offset/mask predictor.
    assert n_params(m.encoder.stages[0][0]) == 16 * 16 * 9 + 16 * 27 * 9 + 27


def test_hybridnetseg_parameter_count_hybridops():
    ref = models.create_model("hybridnetseg", ops="reference")
    hyb = models.create_model("hybridnetseg", ops="hybridops")
    assert n_params(hyb) == 709_946
    assert {k: v.shape for k, v in hyb.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


def test_unet_and_msffnet_parameter_counts():
    assert n_params(models.create_model("unet")) == 31_037_633  # "about 31.0M"
    assert n_params(models.create_model("msffnet")) == 12_904_264
    # 3-channel input only changes conv1: 64 * 7 * 7 * 2 more weights.
    assert n_params(models.create_model("msffnet", in_chans=3)) == 12_904_264 + 64 * 49 * 2


def test_hybridnetseg_macs_at_512():
    m = models.create_model("hybridnetseg", ops="reference")
    c = models.complexity(m, (3, 512, 512))  # meta device: no compute
    assert c.params == 709_946
    # Equal to ptflops 0.7.5 (module hooks, count_functional=False, DCN counted as its two convs).
    assert c.macs_ptflops == 3_473_968_812
    assert abs(c.macs_ptflops / 3.52e9 - 1) < 0.015  # spec: "about 3.52 GMACs"
    assert c.macs["deform_conv"] == sum(c_ * c_ * 9 * (256 // s) ** 2 for c_, s in ((16, 1), (40, 2), (80, 4)))
    assert c.macs["dcn_offset_mask"] == sum(c_ * 27 * 9 * (256 // s) ** 2 for c_, s in ((16, 1), (40, 2), (80, 4)))
    assert c.macs_conv == sum(c.macs[k] for k in ("conv", "deform_conv", "dcn_offset_mask", "mixconv"))
    assert 2.9 < c.state_dict_mb < 3.2
    # Training mode adds the three side-output convs (with bias).
    t = models.complexity(m, (3, 512, 512), training=True)
    assert t.macs_ptflops - c.macs_ptflops == sum((ch + 1) * (512 // s) ** 2 for ch, s in ((43, 2), (70, 4), (100, 8)))


def test_complexity_matches_ptflops():
    """Our ptflops-style total is what ptflops itself counts (module hooks only; ptflops' default
    count_functional=True also counts the F.relu / F.interpolate / F.adaptive_avg_pool2d calls made
    inside nn.ReLU / nn.Upsample / nn.AdaptiveAvgPool2d a second time)."""
    ptflops = pytest.importorskip("ptflops")

    def dcn_hook(m, inputs, out):  # the DCN as its two convs (ptflops does not descend into it)
        k = m.kernel_size[0] * m.kernel_size[1]
        m.__flops__ += out.numel() * m.in_channels * k + out[:, :1].numel() * m.offset_mask.out_channels * (
            m.in_channels * k + 1)

    def mix_hook(m, inputs, out):
        m.__flops__ += sum(out[:, :1].numel() * w.shape[0] * w.shape[-1] ** 2 for w in m.weights)

    m = models.create_model("hybridnetseg", ops="reference")
    macs, params = ptflops.get_model_complexity_info(
        m, (3, 128, 128), as_strings=False, print_per_layer_stat=False, backend="pytorch",
        custom_modules_hooks={ReferenceDeformConv2dV2: dcn_hook, ReferenceMixedDepthwiseConv2d: mix_hook},
        backend_specific_config={"count_functional": False})
    c = models.complexity(m, (3, 128, 128))
    assert (macs, params) == (c.macs_ptflops, c.params)


def test_complexity_same_for_both_ops():
    ref = models.complexity(models.create_model("hybridnetseg", ops="reference"), (3, 64, 64))
    hyb = models.complexity(models.create_model("hybridnetseg", ops="hybridops"), (3, 64, 64))
    assert ref.macs == hyb.macs


def test_complexity_counts_by_hand():
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Upsample(scale_factor=2), nn.ConvTranspose2d(8, 4, 2, stride=2, bias=False))
    c = models.complexity(m, (2, 3, 10, 10), device=None)
    assert c.macs == {"conv": 2 * 8 * 100 * 27, "bias": 2 * 800, "bn": 2 * 2 * 800, "act": 2 * 800,
                      "pool": 2 * 800, "upsample": 2 * 800, "conv_transpose": 2 * 800 * 4 * 4}
    assert c.macs_conv == 2 * 8 * 100 * 27 + 2 * 800 * 16
    mix = ReferenceMixedDepthwiseConv2d(10, (3, 5, 7), stride=2)  # split 4, 3, 3
    assert mix.split_channels == [4, 3, 3]
    c = models.complexity(mix, (10, 8, 8))
    assert c.macs == {"mixconv": 16 * (4 * 9 + 3 * 25 + 3 * 49)}
    with pytest.raises(ValueError, match=r"input_shape must be \(C, H, W\) or \(N, C, H, W\)"):
        models.complexity(mix, (8, 8))


def test_complexity_other_models():
    u = models.complexity(models.create_model("unet"), (3, 64, 64))
    assert u.params == 31_037_633 and 124 < u.state_dict_mb < 125
    assert u.macs["conv_transpose"] > 0 and u.macs_ptflops > u.macs_conv
    s = models.complexity(models.create_model("msffnet"), (1, 64, 64))
    assert s.macs["upsample"] > 0 and s.macs["pool"] > 0


# ----------------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("shape", [(2, 3, 32, 48), (1, 3, 16, 80)])
def test_hybridnetseg_shapes(shape):
    torch.manual_seed(0)
    m = models.create_model("hybridnetseg", ops="hybridops")
    n, _, h, w = shape
    x = torch.randn(shape)
    outs = m.train()(x)
    assert isinstance(outs, list) and len(outs) == 4
    assert [tuple(o.shape) for o in outs] == [(n, 1, h, w), (n, 1, h // 2, w // 2), (n, 1, h // 4, w // 4),
                                             (n, 1, h // 8, w // 8)]
    y = m.eval()(x)
    assert isinstance(y, torch.Tensor) and y.shape == (n, 1, h, w) and torch.isfinite(y).all()
    feats = m.encoder(x)
    assert [tuple(f.shape[1:]) for f in feats] == [(c, h // r, w // r) for c, r in
                                                   zip(m.encoder.out_channels, m.encoder.reductions)]


def test_hybridnetseg_options():
    m = models.create_model("hybridnetseg", ops="hybridops", in_chans=1, num_classes=2).eval()
    assert m(torch.randn(1, 1, 32, 32)).shape == (1, 2, 32, 32)
    assert "num_classes=2" in repr(m) and "ops='hybridops'" in repr(m)
    assert models.create_model("hybridnetseg", ops={"mixconv": "reference", "deform_conv": "reference"}).ops \
        == "reference"
    mixed = models.create_model("hybridnetseg", ops=DCN_ONLY)
    assert type(mixed.encoder.stages[1][0]) is hybridops.DeformConv2dV2
    assert type(mixed.encoder.stages[1][1].conv_dw) is ReferenceMixedDepthwiseConv2d
    assert "ops={'deform_conv': 'hybridops', 'mixconv': 'reference'}" in repr(mixed)
    with pytest.raises(ValueError, match=r"unknown op names \['dcn'\]"):
        models.create_model("hybridnetseg", ops={"dcn": "reference"})


@pytest.mark.parametrize("in_chans, shape", [(1, (1, 64, 64)), (3, (2, 96, 64))])
def test_msffnet_shapes(in_chans, shape):
    m = models.create_model("msffnet", in_chans=in_chans)
    n, h, w = shape
    x = torch.randn(n, in_chans, h, w)
    assert m.train()(x).shape == (n, 8, h, w)
    assert m.eval()(x).shape == (n, 8, h, w)


def test_msff_arguments_and_pretrained(tmp_path):
    from torchvision.models import resnet18

    msff = MSFF(64, 32, branch_chans=8, rates=(1, 2), pool_sizes=(2,))
    assert msff.fuse[0].in_channels == 8 * 4
    assert msff(torch.randn(2, 64, 5, 7)).shape == (2, 32, 5, 7)
    assert "rates=(1, 2)" in repr(msff)
    tv = resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    m = models.create_model("msffnet", in_chans=1, pretrained=str(tmp_path / "r18.pth"))
    torch.testing.assert_close(m.encoder.conv1.weight, tv.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(m.encoder.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (2, 3, 48, 16)])
def test_unet_shapes(shape):
    m = models.create_model("unet")
    n, _, h, w = shape
    assert m(torch.randn(shape)).shape == (n, 1, h, w)


@pytest.mark.parametrize("name, shape, match", [
    ("hybridnetseg", (1, 3, 60, 64), "HybridNetSeg: input height and width must be divisible by 16, got H=60, W=64"),
    ("hybridnetseg", (1, 3, 64, 8), "divisible by 16, got H=64, W=8"),
    ("hybridnetseg", (1, 4, 64, 64), "HybridNetSeg: expected 3 input channels, got 4"),
    ("hybridnetseg", (3, 64, 64), r"expected a 4-D input \[N, 3, H, W\]"),
    ("unet", (1, 3, 40, 40), "UNet: input height and width must be divisible by 16, got H=40"),
    ("msffnet", (1, 1, 48, 64), "MSFFNet: input height and width must be divisible by 32, got H=48"),
])
def test_bad_input_size(name, shape, match):
    kwargs = {"ops": "reference"} if name == "hybridnetseg" else {}
    m = models.create_model(name, **kwargs)
    with pytest.raises(ValueError, match=match):
        m(torch.randn(shape))


# ----------------------------------------------------------------------------------------------- train / eval


def test_train_and_eval_outputs_agree():
    """With BN in eval mode, the training-mode d1 equals the eval-mode output, and the side outputs are
    the 1x1 convs of d2..d4 (the extra outputs do not change the main path)."""
    torch.manual_seed(0)
    m = models.create_model("hybridnetseg", ops="hybridops")
    perturb_offsets(m)
    randomize_bn(m)
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        y_eval = m.eval()(x)
        d1, side2, side3, side4 = freeze_bn(m.train())(x)
        _, d2, d3, d4 = m.decoder(x, m.encoder(x))
    torch.testing.assert_close(d1, y_eval)
    torch.testing.assert_close(side2, m.side2(d2))
    torch.testing.assert_close(side3, m.side3(d3))
    torch.testing.assert_close(side4, m.side4(d4))
    # Real training mode (batch statistics) gives different logits.
    with torch.no_grad():
        assert not torch.allclose(m.train()(x)[0], y_eval)


@pytest.mark.parametrize("name", ["hybridnetseg", "msffnet", "unet"])
def test_backward(name):
    torch.manual_seed(0)
    kwargs = {"hybridnetseg": {"ops": "hybridops"}, "unet": {"widths": (8, 16, 32, 64, 128)}}.get(name, {})
    m = models.create_model(name, **kwargs).train()
    if name == "hybridnetseg":
        perturb_offsets(m)
    x = torch.randn(2, m.in_chans, 32, 32, requires_grad=True)
    out = m(x)
    loss = sum(o.square().mean() for o in out) if isinstance(out, list) else out.square().mean()
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert x.grad is not None and x.grad.abs().sum() > 0
    if name == "hybridnetseg":  # gradients reach the offset/mask predictors
        assert all(mod.offset_mask.weight.grad.abs().sum() > 0 for mod in m.modules()
                   if isinstance(mod, hybridops.DeformConv2dV2))


# ----------------------------------------------------------------------------------------------- ops


def test_deform_conv_reference_matches_hybridops():
    torch.manual_seed(0)
    hyb = deform_conv(8, "hybridops").double()
    ref = deform_conv(8, "reference").double()
    assert type(hyb) is hybridops.DeformConv2dV2 and isinstance(ref, ReferenceDeformConv2dV2)
    perturb_offsets(hyb, scale=2.0)
    ref.load_state_dict(hyb.state_dict())
    x = torch.randn(2, 8, 9, 11, dtype=torch.float64)
    off, _ = hyb.offsets_and_mask(x)
    assert off.abs().mean() > 0.3 and (off.frac().abs() > 1e-3).float().mean() > 0.9  # fractional, non-zero
    torch.testing.assert_close(hyb(x), ref(x))


def test_reference_mixconv_and_grouped_conv():
    assert split_channels(10, 3) == [4, 3, 3] and split_channels(480, 4) == [120] * 4
    mix = ReferenceMixedDepthwiseConv2d(10, (3, 5, 7))
    x = torch.randn(1, 10, 9, 9)
    y = mix(x)
    expected = torch.cat([nn.functional.conv2d(p, w, padding=w.shape[-1] // 2, groups=w.shape[0])
                          for p, w in zip(x.split([4, 3, 3], 1), mix.weights)], 1)
    torch.testing.assert_close(y, expected)
    assert list(mix.state_dict()) == ["weights.0", "weights.1", "weights.2"]
    g = GroupedConv1x1(10, 6, groups=2)  # in 5+5, out 3+3
    assert n_params(g) == 2 * 5 * 3
    torch.testing.assert_close(g(x)[:, 3:], g.convs[1](x[:, 5:]))
    with pytest.raises(ValueError, match="ops must be one of"):
        mixed_depthwise_conv(8, (3,), ops="triton")


def test_mixconv_reference_matches_hybridops():
    hyb = mixed_depthwise_conv(30, (3, 5, 7, 9), stride=2, ops="hybridops").double()
    ref = mixed_depthwise_conv(30, (3, 5, 7, 9), stride=2, ops="reference").double()
    assert list(hyb.split_channels) == ref.split_channels
    ref.load_state_dict(hyb.state_dict())
    x = torch.randn(2, 30, 13, 10, dtype=torch.float64)
    torch.testing.assert_close(hyb(x), ref(x))


@pytest.mark.parametrize("ops", ["hybridops"])
def test_hybridnetseg_reference_matches_hybridops(ops):
    """Same state dict, compiled vs reference ops: same eval outputs, same training-mode outputs, same
    parameter gradients (with BN frozen for those).

    float32, because float64 depthwise convs take PyTorch's slow path on CPU (the ops themselves are
    compared in float64 above). Eval outputs and frozen-BN gradients agree to ~1e-7 / ~1e-6 relative.
    With batch statistics, the 2x2 maps of the deepest stage (8 values per channel) amplify float32
    rounding to ~1e-4 in the training-mode logits, hence the looser tolerance there; in float64 the
    two builds give identical outputs and gradients equal to 2e-15 relative."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    hyb = models.create_model("hybridnetseg", ops=ops)
    perturb_offsets(hyb)
    randomize_bn(hyb)
    ref = models.create_model("hybridnetseg", ops="reference")
    ref.load_state_dict(hyb.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(hyb.eval()(x), ref.eval()(x), rtol=1e-5, atol=1e-5)
        for a, b in zip(hyb.train()(x), ref.train()(x)):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    for m in (freeze_bn(hyb.train()), freeze_bn(ref.train())):
        m.zero_grad()
        sum(o.square().mean() for o in m(x)).backward()
    grads_r = dict(ref.named_parameters())
    for n, p in hyb.named_parameters():
        g = grads_r[n].grad
        assert g.abs().max() > 0, n
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-4 * g.abs().max().item(),
                                   msg=lambda s: f"{n}: {s}")


INDUCTOR = pytest.param("inductor", id="inductor", marks=pytest.mark.skipif(
    os.environ.get("HYBRIDOPS_TEST_INDUCTOR") != "1",
    reason="CPU inductor takes 1-3 min on 2 cores; set HYBRIDOPS_TEST_INDUCTOR=1"))


@pytest.mark.parametrize("backend", ["aot_eager", INDUCTOR])
def test_hybridnetseg_compile_fullgraph(backend):
    """No graph break anywhere (fullgraph=True); aot_eager also runs the ops' fake kernels and autograd
    registration through AOTAutograd."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = models.create_model("hybridnetseg", ops="hybridops").eval()
    perturb_offsets(m)
    randomize_bn(m)
    x = torch.randn(1, 3, 32, 32)
    compiled = torch.compile(m, fullgraph=True, backend=backend)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), m(x))


# ----------------------------------------------------------------------------------------------- state dict


@pytest.mark.parametrize("name", ["hybridnetseg", "msffnet", "unet"])
def test_state_dict_round_trip(name, tmp_path):
    torch.manual_seed(0)
    kwargs = {"ops": "hybridops"} if name == "hybridnetseg" else {}
    m = models.create_model(name, **kwargs)
    perturb_offsets(m)
    randomize_bn(m)
    m.eval()
    torch.save(m.state_dict(), tmp_path / "m.pth")
    state = torch.load(tmp_path / "m.pth", weights_only=True)
    fresh = models.create_model(name, **kwargs).eval()
    fresh.load_state_dict(state, strict=True)
    x = torch.randn(1, m.in_chans, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), m(x), rtol=0, atol=0)
    if name == "hybridnetseg":  # a reference-ops model loads the same file
        other = models.create_model(name, ops="reference").eval()
        other.load_state_dict(state, strict=True)
        with torch.no_grad():
            torch.testing.assert_close(other(x), m(x))


# ----------------------------------------------------------------------------------------------- CUDA


@pytest.mark.parametrize("name", ["hybridnetseg", "msffnet", "unet"])
def test_cuda_matches_cpu(name, cuda_backend):
    """Forward (eval and train) and backward on CUDA, against the CPU model (TF32 off). On the CUDA
    emulation: HybridNetSeg, whose DCNv2 and MixConv layers run the emulated CUDA kernels (the other
    two models are plain PyTorch, nothing of ours to emulate)."""
    if cuda_backend.emulated and name != "hybridnetseg":
        pytest.skip("plain PyTorch model: no hybridops CUDA kernel to emulate")
    torch.manual_seed(0)
    kwargs = {"hybridnetseg": {"ops": "hybridops"}, "unet": {"widths": (8, 16, 32, 64, 128)}}.get(name, {})
    cpu = models.create_model(name, **kwargs)
    perturb_offsets(cpu)
    randomize_bn(cpu)
    gpu = copy.deepcopy(cpu).to(cuda_backend.device)
    x = torch.randn(2, cpu.in_chans, 64, 64)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False), cuda_backend.active():
        with torch.no_grad():
            torch.testing.assert_close(gpu.eval()(cuda_backend.to(x)).cpu(), cpu.eval()(x), rtol=1e-4, atol=1e-4)
        outs = [o if isinstance(o, list) else [o] for o in (cpu.train()(x), gpu.train()(cuda_backend.to(x)))]
        for a, b in zip(*outs):
            torch.testing.assert_close(b.cpu(), a, rtol=1e-3, atol=1e-3)
        sum(o.square().mean() for o in outs[1]).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in gpu.parameters())


# ------------------------------------------------------------------------------------------ export CLI errors


def _export_err(argv, capsys) -> str:
    """``python -m models.export`` with ``argv``: exit 2, no traceback, exactly one ``error:`` line (returned)."""
    from models.export import main

    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def _unet_ckpt(**changes) -> dict:
    from train.checkpoint import FORMAT

    ck = {"format": FORMAT, "model": "unet", "model_kwargs": {"widths": [4, 8]},
          "state_dict": models.create_model("unet", widths=(4, 8)).state_dict()}
    ck.update(changes)
    return ck


def test_export_cli_user_errors(tmp_path, capsys):
    out = ["--out", str(tmp_path / "m.onnx"), "--size", "32", "32"]
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert f"cannot read checkpoint {str(empty)!r}: the file is empty" in _export_err(
        ["--checkpoint", str(empty)] + out, capsys)
    junk = tmp_path / "list.pt"
    torch.save([1, 2], junk)
    assert "is neither a training checkpoint nor a state dict" in _export_err(["--checkpoint", str(junk)] + out, capsys)
    bad = tmp_path / "kwargs.pt"
    torch.save(_unet_ckpt(model_kwargs={"widths": [4, 8], "depth": 3}), bad)
    line = _export_err(["--checkpoint", str(bad)] + out, capsys)
    assert f"cannot build model 'unet' with the arguments stored in checkpoint {str(bad)!r}" in line, line
    assert "'depth'" in line and "unet takes: in_chans, num_classes, widths" in line, line
    torch.save(_unet_ckpt(model_kwargs=[1, 2]), bad)
    assert "'model_kwargs' must be a dict" in _export_err(["--checkpoint", str(bad)] + out, capsys)
    ck = _unet_ckpt()
    key = [k for k, v in ck["state_dict"].items() if v.is_floating_point()][2]
    ck["state_dict"][key].view(-1)[1] = float("nan")
    torch.save(ck, bad)
    assert f"holds non-finite weights: {key} (1 of" in _export_err(["--checkpoint", str(bad)] + out, capsys)
    state = models.create_model("hybridnetseg").state_dict()       # a plain state dict is checked the same way
    key = [k for k, v in state.items() if v.is_floating_point()][2]
    state[key].view(-1)[1] = float("inf")
    torch.save(state, bad)
    assert f"holds non-finite weights: {key} (1 of" in _export_err(["--model", "hybridnetseg", "--checkpoint",
                                                                    str(bad)] + out, capsys)
    assert "H and W must be in 1..16384" in _export_err(["--model", "unet", "--out", str(tmp_path / "m.onnx"),
                                                         "--size", "160000", "160000"], capsys)
    assert not (tmp_path / "m.onnx").exists()


def test_export_cli_without_torchvision(tmp_path, capsys, monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")] + ["torchvision"]:
        monkeypatch.setitem(sys.modules, name, None)        # import torchvision now fails as if not installed
    assert _export_err(["--model", "msffnet", "--out", str(tmp_path / "m.onnx")], capsys) == \
        "error: model 'msffnet' needs torchvision (pip install torchvision==0.29.1)"
