"""pytest-benchmark suite over the op benchmarks' cases, for comparing runs over time:

    pytest benchmarks/ --benchmark-only [--benchmark-autosave] [--benchmark-compare]

Each op is timed against its peers on the same inputs (group = op, case and mode), in the three
modes of ``benchmarks._harness.MODES`` (forward, backward, full), on CUDA when present (synchronised
inside the timed call), else on the CPU at reduced sizes. The case builders and the steps are the
ones the ``python -m benchmarks.*`` scripts use (``op_step``): a step's ``prepare`` (for backward,
the untimed forward; for every mode with gradients, clearing ``.grad``) runs as pytest-benchmark's
untimed ``setup``, so the suite uses ``benchmark.pedantic`` with a fixed number of rounds (``ROUNDS``;
``--benchmark-min-rounds`` does not apply).
"""
from __future__ import annotations

import pytest
import torch

import hybridops
from benchmarks import deform_conv2d as dcn_bench
from benchmarks import losses as loss_bench
from benchmarks import mixconv as mix_bench
from benchmarks._harness import MODES, Step

pytest.importorskip("pytest_benchmark")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SCALE = 1 if DEVICE.type == "cuda" else 4  # CPU: spatial sizes / 4
ROUNDS, WARMUP_ROUNDS = (50, 5) if DEVICE.type == "cuda" else (10, 2)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _bench(benchmark, step: Step) -> None:
    """Times ``step.run`` (synchronised) with ``step.prepare`` (synchronised) as the untimed setup."""
    def setup():
        arg = step.prepare() if step.prepare is not None else None
        _sync()
        return (arg,), {}

    def target(arg):
        step.run(arg)
        _sync()

    benchmark.pedantic(target, setup=setup, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS, iterations=1)


# ------------------------------------------------------------------------------------------------ DCN

DCN_CASES = [(name, b, c, s // SCALE) for name, b, c, s in dcn_bench.CASES[:3]]


@pytest.mark.parametrize("mode", MODES)
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
    _bench(benchmark, dcn_bench.make_step(op, inputs, mode))


# --------------------------------------------------------------------------------------------- MixConv

MIX_CASES = [(144, 128, (3, 5, 7), 1), (240, 128, (3, 5, 7), 2), (480, 64, (3, 5), 1)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", mix_bench.IMPLS)
@pytest.mark.parametrize("case", MIX_CASES, ids=lambda c: f"{c[0]}@{c[1]}k{''.join(map(str, c[2]))}s{c[3]}")
def test_mixed_depthwise_conv2d(benchmark, case, impl, mode):
    channels, size, kernels, stride = case
    x, ws, w_pad, impls = mix_bench.make_problem(channels, size // SCALE, kernels, stride, 2, torch.float32,
                                                 DEVICE, False)
    benchmark.group = f"mixconv {channels}@{size // SCALE} k{kernels} s{stride} {mode}"
    _bench(benchmark, mix_bench.make_step(impls[impl], x, ws, w_pad, mode, impl))


# ---------------------------------------------------------------------------------------------- losses

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", ["ours", "eager"])
@pytest.mark.parametrize("loss", ["bce_dice", "mixed", "sace"])
def test_losses(benchmark, loss, impl, mode):
    cases = {c["op"]: c for c in loss_bench.make_cases(DEVICE, quick=SCALE > 1)}  # quick: H, W / 4
    case = cases[loss]
    benchmark.group = f"loss {loss} {case['case']} {mode}"
    _bench(benchmark, loss_bench.make_step(case[impl], case["inputs"], case["target"], mode))
