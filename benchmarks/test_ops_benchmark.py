"""pytest-benchmark suite over the op benchmarks' cases, for comparing runs over time:

    pytest benchmarks/ --benchmark-only [--benchmark-autosave] [--benchmark-compare]

Each op is timed against its peer on the same inputs (group = op and case), forward and
forward+backward, on CUDA when present (synchronised inside the timed call), else on the CPU at
reduced sizes. The case builders are the ones the `python -m benchmarks.*` scripts use.
"""
from __future__ import annotations

import pytest
import torch

import hybridops
from benchmarks import deform_conv2d as dcn_bench
from benchmarks import mixconv as mix_bench
from hybridops.losses import reference as loss_reference

pytest.importorskip("pytest_benchmark")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SCALE = 1 if DEVICE.type == "cuda" else 4  # CPU: spatial sizes / 4


def _synced(fn):
    def run():
        fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
    return run


# ------------------------------------------------------------------------------------------------ DCN

DCN_CASES = [(name, b, c, s // SCALE) for name, b, c, s in dcn_bench.CASES[:3]]


@pytest.mark.parametrize("mode", ["forward", "fwd+bwd"])
@pytest.mark.parametrize("impl", ["hybridops", "torchvision"])
@pytest.mark.parametrize("case", DCN_CASES, ids=[c[0] for c in DCN_CASES])
def test_deform_conv2d(benchmark, case, impl, mode):
    name, batch, channels, size = case
    if impl == "torchvision":
        tv_ops = pytest.importorskip("torchvision.ops")
        op = tv_ops.deform_conv2d
    else:
        op = hybridops.deform_conv2d
    inputs = dcn_bench.make_inputs(batch, channels, size, torch.float32, DEVICE)
    benchmark.group = f"deform_conv2d {name} (/{SCALE}) {mode}"
    benchmark(_synced(dcn_bench._step(op, inputs, mode == "fwd+bwd")))


# --------------------------------------------------------------------------------------------- MixConv

MIX_CASES = [(144, 128, (3, 5, 7), 1), (240, 128, (3, 5, 7), 2), (480, 64, (3, 5), 1)]


@pytest.mark.parametrize("mode", ["forward", "fwd+bwd"])
@pytest.mark.parametrize("impl", ["ours", "composition", "padded"])
@pytest.mark.parametrize("case", MIX_CASES, ids=lambda c: f"{c[0]}@{c[1]}k{''.join(map(str, c[2]))}s{c[3]}")
def test_mixed_depthwise_conv2d(benchmark, case, impl, mode):
    channels, size, kernels, stride = case
    x, ws, w_pad, impls = mix_bench.make_problem(channels, size // SCALE, kernels, stride, 2, torch.float32,
                                                 DEVICE.type, False)
    benchmark.group = f"mixconv {channels}@{size // SCALE} k{kernels} s{stride} {mode}"
    benchmark(_synced(mix_bench.make_runner(impls[impl], x, ws, w_pad, mode)))


# ---------------------------------------------------------------------------------------------- losses

@pytest.mark.parametrize("mode", ["forward", "fwd+bwd"])
@pytest.mark.parametrize("impl", ["hybridops", "eager"])
@pytest.mark.parametrize("loss", ["bce_dice", "mixed", "size_adaptive_ce"])
def test_losses(benchmark, loss, impl, mode):
    s = 512 // SCALE
    g = torch.Generator().manual_seed(0)
    label = (torch.rand(2, 1, s, s, generator=g) > 0.7).float().to(DEVICE)
    if loss == "size_adaptive_ce":
        xs = [torch.randn(4, 8, s, s, generator=g).to(DEVICE)]
        target = torch.randint(0, 8, (4, s, s), generator=g).to(DEVICE)
        fn = hybridops.losses.size_adaptive_cross_entropy if impl == "hybridops" else \
            loss_reference.size_adaptive_cross_entropy
        call = lambda ts: fn(ts[0], target)  # noqa: E731
    elif loss == "mixed":
        xs = [torch.randn(2, 1, s // f, s // f, generator=g).to(DEVICE) for f in (1, 1, 2, 4, 8)]
        fn = hybridops.losses.mixed_loss if impl == "hybridops" else loss_reference.mixed_loss
        call = lambda ts: fn(ts, label)  # noqa: E731
    else:
        xs = [torch.randn(2, 1, s, s, generator=g).to(DEVICE)]
        fn = hybridops.losses.bce_dice_loss if impl == "hybridops" else loss_reference.bce_dice_loss
        call = lambda ts: fn(ts[0], label)  # noqa: E731
    if mode == "fwd+bwd":
        leaves = [t.requires_grad_() for t in xs]
        run = lambda: torch.autograd.grad(call(leaves), leaves)  # noqa: E731
    else:
        def run():
            with torch.no_grad():
                call(xs)
    benchmark.group = f"loss {loss} {s}x{s} {mode}"
    benchmark(_synced(run))
