"""Extra memory of hybridops.mixed_depthwise_conv2d stays a small multiple of the working set.

The CPU kernels used to allocate a zero-padded tile of the whole padded plane (dilation 65,536 on a
4x4 image: a 131k x 131k tile, bad_alloc) and, for channels-last fp16/bf16, fp32 copies of the
whole input and output. Peaks are measured in a fresh subprocess as ``ru_maxrss`` deltas around
one call (the inputs are allocated before the first reading).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import hybridops
from hybridops import reference
from tests._mdc_cases import assert_close_all, make_case, ref64, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_huge_dilation_on_small_image_matches_split_conv_cat(layout, stride):
    """Dilation 65,536 on 4x4 (only the centre tap can reach the image), and a dilation that
    leaves two taps per dimension in reach, forward and gradients vs the float64 composition."""
    for dilation, hw in ((65536, (4, 4)), ((3, 65536), (7, 5)), (4, (9, 6))):
        x, ws, b = make_case(2, [2, 3], (3, 5), *hw)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        out, grads = run(hybridops.mixed_depthwise_conv2d, x, ws, b, stride, dilation)
        out_ref, grads_ref = run(ref64, x, ws, b, stride, dilation)
        assert_close_all([out] + grads, [out_ref] + grads_ref, rtol=1e-5, atol=1e-5)


def test_no_tap_reaches_the_image():
    """1x2 image at stride 3 with k=1: timm's padding makes every output read the padding."""
    x, ws, b = make_case(1, [2], (1,), 1, 2)
    out, grads = run(hybridops.mixed_depthwise_conv2d, x, ws, b, 3, 1)
    out_ref, grads_ref = run(ref64, x, ws, b, 3, 1)
    assert out.shape == (1, 2, 1, 2)  # rows read -1 (pad), columns -1 and 2 (pad): bias only
    assert_close_all([out] + grads, [out_ref] + grads_ref, rtol=1e-6, atol=1e-6)


_PROBE = textwrap.dedent("""
    import json, resource, sys, torch
    import hybridops
    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(cfg["threads"])
    n, c, h, w = cfg["shape"]
    dtype = getattr(torch, cfg["dtype"])
    fmt = torch.channels_last if cfg["channels_last"] else torch.contiguous_format
    x = torch.empty(n, c, h, w, dtype=dtype, memory_format=fmt).normal_()
    splits = [c // len(cfg["ks"])] * len(cfg["ks"])
    splits[0] += c - sum(splits)
    ws = [torch.randn(ci, 1, k, k, dtype=dtype) / k for ci, k in zip(splits, cfg["ks"])]
    g = None
    if cfg["backward"]:
        x.requires_grad_()
        for wt in ws: wt.requires_grad_()
    # warm-up on a tiny problem exactly as below (loads the kernels and the thread pools; the first
    # backward with an explicit gradient costs torch about 35 MiB once), then read the high-water mark
    xs = torch.randn(1, c, 5, 5, dtype=dtype).contiguous(memory_format=fmt).requires_grad_(cfg["backward"])
    small = hybridops.mixed_depthwise_conv2d(xs, [wt.detach().requires_grad_(cfg["backward"]) for wt in ws], None,
                                             cfg["stride"], cfg["dilation"])
    if cfg["backward"]:
        small.backward(torch.ones_like(small))
    del xs, small
    out_bytes = 0
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = hybridops.mixed_depthwise_conv2d(x, ws, None, cfg["stride"], cfg["dilation"])
    out_bytes = out.numel() * out.element_size()
    if cfg["backward"]:
        out.backward(torch.ones_like(out))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"extra_mib": (peak - base) / 1024, "in_mib": x.numel() * x.element_size() / 2**20,
                      "out_mib": out_bytes / 2**20}))
""")


def _extra_memory(**cfg):
    cfg.setdefault("threads", 2)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(cfg)], capture_output=True, text=True, env=env,
                         timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_extra_memory_large_dilation_nchw():
    """A dilation far beyond the image used to cost a (H + 2 pad) x (W + 2 pad) float tile per
    thread (dilation 8,192: about 1 GB); now the tile spans only the taps that reach the image."""
    m = _extra_memory(shape=[1, 8, 64, 64], dtype="float32", channels_last=False, ks=[3, 5], stride=1,
                      dilation=8192, backward=True)
    assert m["extra_mib"] < 8, m


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_extra_memory_channels_last_low_precision(dtype):
    """Channels-last fp16/bf16 used to convert the whole input and output to fp32 (extra peak about
    3x the input); now the kernels read the storage type and convert output rows as they go."""
    m = _extra_memory(shape=[1, 64, 512, 512], dtype=dtype, channels_last=True, ks=[3, 5, 7], stride=1, dilation=1,
                      backward=False)
    # the output itself (32 MiB) plus small per-thread buffers (was 128 MiB: fp32 input and output)
    assert m["extra_mib"] < m["out_mib"] + 8, m
    # backward: grad_output (ones, 32 MiB) and grad_input (32 MiB) beside the output, plus small buffers
    m = _extra_memory(shape=[1, 64, 512, 512], dtype=dtype, channels_last=True, ks=[3, 5, 7], stride=2, dilation=1,
                      backward=True)
    assert m["extra_mib"] < m["in_mib"] + 2 * m["out_mib"] + 8, m


def test_benchmark_peak_memory_column_measures_real_allocations():
    """benchmarks/mixconv.py's CPU peak column (VmHWM after clear_refs) sees a 64 MiB allocation
    made inside the step and not the memory allocated before it."""
    from benchmarks._harness import Step
    from benchmarks.mixconv import cpu_peak_extra_mib

    before = torch.ones(32 * 2**20 // 4)  # resident before the call: not counted
    peak = cpu_peak_extra_mib(Step(run=lambda _: torch.ones(64 * 2**20 // 4).sum()))
    if peak is None:
        pytest.skip("no /proc/self/clear_refs here")
    assert 60 <= peak < 64 + 24, peak
    del before
