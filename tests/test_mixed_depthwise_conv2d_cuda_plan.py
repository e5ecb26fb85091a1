"""The CUDA launch plan of MixConv, checked without a GPU (issue #12, items 9 and 11).

* Tiles come from the device's real shared-memory limit: every layer of the CUDA tests fits the
  48 KiB of Pascal (sm_61, which cannot opt in to more) in every dtype, and takes bigger tiles
  where 227 KiB (H100) is available. The CUDA emulation runs the same planner with a configurable
  limit, so the reduced tiles are checked numerically against the reference.
* grad_weight's summation order depends on the shapes only: its tile is planned for 48 KiB on every
  GPU, its chunks never depend on the SM count, and the emulation with different SM counts gives
  the same bits.
"""
from __future__ import annotations

import pytest
import torch

import hybridops
from hybridops.nn.mixed_conv import split_channels
from tests._mdc_cases import AWKWARD, make_case, ref64, run, assert_close_all

PLAN = torch.ops.hybridops._mixed_depthwise_conv2d_plan
FORWARD, GATHER, GRAD_WEIGHT = 0, 1, 2
PASCAL, H100 = 48 * 1024, 227 * 1024


def _pair(v):
    return [v, v] if isinstance(v, int) else list(v)


def _layers():
    """(kernel sizes, stride, dilation, out_h, out_w, batch, channels) of every CUDA test layer."""
    out = []
    for p in AWKWARD:
        n, splits, ks, h, w, stride, dilation = p.values
        out.append((list(ks), _pair(stride), _pair(dilation), h, w, n, sum(splits)))
    for n, c, h, w, ks, stride in [(1, 480, 32, 32, (3, 5, 7, 9), 2), (2, 144, 64, 64, (3, 5, 7), 1),
                                   (1, 240, 40, 40, (3, 5), 1), (2, 96, 48, 48, (3,), 2), (2, 4, 7, 6, (3, 5, 7), 2),
                                   (2, 80, 64, 64, (3, 5), 1), (2, 8, 16, 16, (3, 5, 7, 9), (2, 2))]:
        out.append((list(ks), _pair(stride), [1, 1], h, w, n, c))
    # the DESIGN-kernels.md MixConv layers and the issue's fp64 cases (s2 k9, s2 d2 k9)
    out += [([3, 5, 7, 9], [2, 2], [2, 2], 64, 64, 1, 480), ([9], [2, 2], [1, 1], 64, 64, 1, 96),
            ([3, 5, 7], [1, 1], [2, 2], 128, 128, 1, 144),
            # tests/test_mixed_depthwise_conv2d_timm_padding.py (strides 3 to 5 as timm pads them)
            ([3, 5], [3, 3], [1, 1], 7, 7, 2, 6), ([3, 5, 7], [4, 4], [1, 1], 5, 5, 2, 7),
            ([3, 5, 7], [3, 3], [2, 2], 7, 8, 2, 7), ([3, 5, 7, 9], [5, 5], [1, 1], 8, 7, 2, 8)]
    return out


def plan(pass_, elem, ks, stride, dilation, limit, batch=1, channels=1, out_h=1, out_w=1):
    rpt, tile_h, tile_w, smem, chunks = PLAN(pass_, elem, ks, stride, dilation, limit, batch, channels, out_h, out_w)
    return dict(rpt=rpt, tile_h=tile_h, tile_w=tile_w, smem=smem, chunks=chunks)


@pytest.mark.parametrize("elem", [4, 8], ids=["fp32-fp16-bf16", "fp64"])
def test_every_test_layer_fits_pascal_and_grows_on_h100(elem):
    for ks, stride, dilation, *_ in _layers():
        passes = [FORWARD, GRAD_WEIGHT] + ([GATHER] if stride != [1, 1] else [])
        for p in passes:
            small = plan(p, elem, ks, stride, dilation, PASCAL)
            big = plan(p, elem, ks, stride, dilation, H100)
            where = (p, elem, ks, stride, dilation)
            assert small["rpt"] in (1, 2, 4) and small["smem"] <= PASCAL, where
            assert small["tile_h"] == 8 * small["rpt"] and small["tile_w"] in (8, 16, 32), where
            assert small["rpt"] == 1 or small["tile_w"] == 32, where  # narrower only at 8 rows
            assert big["smem"] <= H100, where
            if p == GRAD_WEIGHT:
                assert big == small, where  # one tile (one summation order) on every GPU
            else:
                assert (big["rpt"], big["tile_w"]) == (4, 32), where  # the full tile where memory allows


def test_issue_cases_shrink_on_pascal_only():
    """fp64 grad_weight at stride 2, k=9 needed 49,736 B and forward at stride 2, dilation 2, k=9
    about 50 KB with 32 x 32 tiles: above Pascal's 48 KiB."""
    gw = plan(GRAD_WEIGHT, 8, [3, 5, 7, 9], [2, 2], [1, 1], H100)
    assert gw["rpt"] == 2 and gw["smem"] <= PASCAL
    assert torch.ops.hybridops._mixed_depthwise_conv2d_plan(GRAD_WEIGHT, 8, [9], [2, 2], [1, 1], 10**9)[3] <= PASCAL
    fwd_pascal = plan(FORWARD, 8, [3, 5, 7, 9], [2, 2], [2, 2], PASCAL)
    fwd_h100 = plan(FORWARD, 8, [3, 5, 7, 9], [2, 2], [2, 2], H100)
    assert fwd_pascal["rpt"] < 4 and fwd_pascal["smem"] <= PASCAL
    assert fwd_h100["rpt"] == 4 and fwd_h100["smem"] > PASCAL
    # fp32 needs half: the full tile fits Pascal
    assert plan(FORWARD, 4, [3, 5, 7, 9], [2, 2], [2, 2], PASCAL)["rpt"] == 4
    # stride 5, k=9, fp64: even 8 x 32 outputs need 58,728 B; an 8 x 16 tile fits Pascal
    s5 = plan(FORWARD, 8, [3, 5, 7, 9], [5, 5], [1, 1], PASCAL)
    assert (s5["tile_h"], s5["tile_w"]) == (8, 16) and s5["smem"] <= PASCAL
    assert plan(FORWARD, 8, [3, 5, 7, 9], [5, 5], [1, 1], H100)["tile_w"] == 32


def test_plan_reports_when_nothing_fits():
    assert plan(FORWARD, 4, [3], [1, 1], [4096, 1], PASCAL)["rpt"] == 0
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="tile needs .* bytes of shared memory even at its smallest"):
        with _emulated(smem=PASCAL):
            hybridops.mixed_depthwise_conv2d(x, [torch.randn(2, 1, 3, 3, dtype=torch.float64)], None, 1, (4096, 1))


def test_chunks_depend_on_shapes_only():
    """The grad_weight chunk plan has no SM-count input; it only grows with the work."""
    a = plan(GRAD_WEIGHT, 4, [3, 5], [1, 1], [1, 1], PASCAL, batch=2, channels=80, out_h=64, out_w=64)
    b = plan(GRAD_WEIGHT, 4, [3, 5], [1, 1], [1, 1], H100, batch=2, channels=80, out_h=64, out_w=64)
    assert a == b and a["chunks"] == 2 * 2 * 2  # min(items, ceil(2048 / 80)) = min(8, 26)
    c = plan(GRAD_WEIGHT, 4, [3], [1, 1], [1, 1], PASCAL, batch=8, channels=16, out_h=256, out_w=256)
    assert c["chunks"] == 128  # ceil(2048 / 16)


class _emulated:
    """HYBRIDOPS_MDC_EMULATE_CUDA=1 with the given emulated device (restores the environment)."""

    def __init__(self, smem=None, sms=None, chunks=None):
        self.env = {"HYBRIDOPS_MDC_EMULATE_CUDA": "1"}
        for key, value in (("SMEM", smem), ("SMS", sms), ("CHUNKS", chunks)):
            if value is not None:
                self.env[f"HYBRIDOPS_MDC_EMULATE_{key}"] = str(value)

    def __enter__(self):
        import os
        self.saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)

    def __exit__(self, *exc):
        import os
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# (case, shared-memory limits in bytes): each limit leaves every pass some tile (fp64).
REDUCED = [
    pytest.param(1, [2, 2, 2, 2], (3, 5, 7, 9), 37, 35, 2, 1, (20 * 1024, 24 * 1024, 40 * 1024), id="k3579-s2"),
    pytest.param(2, [2, 1], (5, 9), 30, 33, 2, 2, (24 * 1024, 40 * 1024), id="k59-s2-d2"),
    pytest.param(1, [2, 2], (3, 7), 41, 34, 1, (2, 1), (12 * 1024, 16 * 1024, 24 * 1024), id="k37-s1-d2x1"),
    pytest.param(1, [1, 2], (3, 5), 29, 40, (3, 2), 1, (20 * 1024, 40 * 1024), id="k35-s3x2"),
    pytest.param(1, [2, 1], (9, 5), 21, 83, 5, 1, (24 * 1024, 40 * 1024), id="k95-s5-narrow"),
]


@pytest.mark.parametrize("n,splits,ks,h,w,stride,dilation,limits", REDUCED)
def test_emulated_reduced_tiles_match_reference(n, splits, ks, h, w, stride, dilation, limits):
    """The emulation with a small shared-memory limit takes 16- and 8-row tiles (checked through the
    plan) and still matches the float64 reference in every pass."""
    x, ws, b = make_case(n, splits, ks, h, w, dtype=torch.float64)
    out_ref, grads_ref = run(ref64, x, ws, b, stride, dilation)
    for limit in limits:
        rpts = [plan(p, 8, list(ks), _pair(stride), _pair(dilation), limit)["rpt"] for p in (FORWARD, GRAD_WEIGHT)]
        assert min(rpts) >= 1, (limit, rpts)
        with _emulated(smem=limit, chunks=3):
            out, grads = run(hybridops.mixed_depthwise_conv2d, x, ws, b, stride, dilation)
        assert_close_all([out] + grads, [out_ref] + grads_ref, rtol=1e-10, atol=1e-10)


def test_reduced_tile_limits_cover_every_size():
    """The limits above pick every tile (32, 16, 8 rows; 32, 16, 8 columns) for the forward and
    grad_weight."""
    seen = {FORWARD: set(), GRAD_WEIGHT: set()}
    for p in REDUCED:
        _, _, ks, _, _, stride, dilation, limits = p.values
        for limit in limits:
            for ps in seen:
                pl = plan(ps, 8, list(ks), _pair(stride), _pair(dilation), limit)
                seen[ps].add((pl["tile_h"], pl["tile_w"]))
    everything = {(32, 32), (16, 32), (8, 32), (8, 16), (8, 8)}
    assert seen[FORWARD] | seen[GRAD_WEIGHT] == everything, seen


def test_emulated_reduced_gather_tile_matches_reference():
    """The grad_input gather (stride > 1) on a 16-row tile: its window is smaller than the forward's
    tile, so only a limit that leaves no forward tile reduces it; the backward op runs it alone."""
    x, ws, _ = make_case(1, [2, 1], (9, 7), 40, 37, dtype=torch.float64)
    stride, dilation, limit = [2, 2], [4, 4], 8 * 1024
    assert plan(GATHER, 8, [9, 7], stride, dilation, limit)["rpt"] == 2
    assert plan(FORWARD, 8, [9, 7], stride, dilation, limit)["rpt"] == 0
    out_ref = ref64(x, ws, None, stride, dilation)
    g = torch.randn(out_ref.shape, dtype=torch.float64)
    expected = torch.autograd.grad(ref64(x.requires_grad_(), ws, None, stride, dilation), x, g)[0]
    with _emulated(smem=limit):
        grad_input, grad_ws = torch.ops.hybridops.mixed_depthwise_conv2d_backward(
            g, x.detach(), ws, stride, dilation, [True, False])
    assert grad_ws == []
    torch.testing.assert_close(grad_input, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_emulated_grad_weight_bits_do_not_depend_on_sm_count(dtype):
    """Same chunks on a 1-SM, 7-SM, 28-SM (GTX 1080 Ti) and 132-SM (H100) "GPU": the grid differs, the
    grad_weight bits do not."""
    splits = split_channels(12, 3)
    x, ws, b = make_case(3, splits, (3, 5, 7), 70, 45, dtype=dtype)
    results = []
    for sms in (1, 7, 28, 132):
        with _emulated(sms=sms):
            _, grads = run(hybridops.mixed_depthwise_conv2d, x, ws, b, 2, 1)
        results.append(grads[1:4])
    chunks = plan(GRAD_WEIGHT, 4, [3, 5, 7], [2, 2], [1, 1], PASCAL, batch=3, channels=12, out_h=35, out_w=23)["chunks"]
    assert chunks == 3 * 2  # every item its own chunk here; the grid takes min(chunks, 32 * SMs / C) of them
    for other in results[1:]:
        for a, c in zip(results[0], other):
            assert torch.equal(a, c)
