"""The CPU deform_conv2d forward under both algorithms (HYBRIDOPS_DCN_ALGO=fused|im2col): the DCN
CPU test cases of test_deform_conv2d.py and test_deform_conv2d_edge_values.py run under each, the two
forwards agree in every dtype, and the environment variable really selects the path.

The backward is the same code under both settings; it is exercised here because every case
differentiates the forward's output (gradcheck runs the float64 forward of each algorithm).
"""
from __future__ import annotations

import pytest
import torch

import hybridops
import tests.test_deform_conv2d as base
import tests.test_deform_conv2d_edge_values as edge
from tests._dcn_cases import make_dcn_inputs

ALGOS = ["fused", "im2col"]

# Beyond base.CONFIGS: several pixel tiles per image with a partial last one, and fewer pixels
# than a tile with a single image (the fused forward then splits the image to feed both threads).
TILING_CONFIGS = [
    ("multi_tile_partial", dict(n=1, c_in=64, c_out=5, h=20, w=20)),
    ("single_image_small", dict(n=1, c_in=2, c_out=3, h=9, w=11)),
    ("many_channels_groups", dict(n=3, c_in=96, c_out=12, h=7, w=9, groups=3, offset_groups=2)),
]
ALL_CONFIGS = base.CONFIGS + TILING_CONFIGS
# fused vs im2col: the sampled columns are bit-identical, only the GEMM's blocking differs.
DTYPE_TOL = [(torch.float64, 1e-12), (torch.float32, 1e-5), (torch.float16, 2e-3), (torch.bfloat16, 1.6e-2)]


@pytest.fixture(params=ALGOS)
def algo(request, monkeypatch):
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", request.param)
    return request.param


@pytest.mark.parametrize("name,cfg", ALL_CONFIGS, ids=[c[0] for c in ALL_CONFIGS])
def test_matches_reference_forward_and_backward(name, cfg, algo):
    base.test_matches_reference_forward_and_backward(name, cfg)


@pytest.mark.parametrize("name,cfg", base.CONFIGS, ids=[c[0] for c in base.CONFIGS])
def test_matches_torchvision(name, cfg, algo):
    base.test_matches_torchvision(name, cfg)


@pytest.mark.parametrize("cfg", [dict(), dict(use_mask=False), dict(stride=(2, 1), dilation=(1, 2), padding=(1, 2)),
                                 dict(c_in=4, c_out=4, groups=2, offset_groups=2)])
def test_gradcheck(cfg, algo):
    base.test_gradcheck(dict(cfg))


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 1e-2), (torch.bfloat16, 4e-2), (torch.float32, 1e-5)])
def test_low_precision_against_float64(dtype, tol, algo):
    base.test_low_precision_against_float64(dtype, tol)


def test_batch_zero(algo):
    base.test_batch_zero()


def test_non_contiguous_and_channels_last_inputs(algo):
    base.test_non_contiguous_and_channels_last_inputs()


def test_zero_offsets_unit_mask_equal_conv2d(algo):
    base.test_zero_offsets_unit_mask_equal_conv2d()


@pytest.mark.parametrize("use_mask", [True, False], ids=["mask", "no_mask"])
@pytest.mark.parametrize("name,spec", edge.CASES, ids=[c[0] for c in edge.CASES])
def test_edge_values_match_torchvision(name, spec, use_mask, algo):
    edge.test_matches_torchvision_on_integer_and_border_points(name, spec, use_mask)


@pytest.mark.parametrize("where", ["offset_dy", "offset_dx", "mask", "mask_outside"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_nan_offset_or_mask_propagates(where, dtype, algo):
    edge.test_nan_offset_or_mask_propagates(where, dtype)


def test_inf_offset_samples_zero(algo):
    edge.test_inf_offset_samples_zero()


def _forward(monkeypatch, algo_name, args, cfg):
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", algo_name)
    with torch.no_grad():
        out = base._ours(*args, cfg)
    return out


@pytest.mark.parametrize("dtype,tol", DTYPE_TOL, ids=[str(d).replace("torch.", "") for d, _ in DTYPE_TOL])
@pytest.mark.parametrize("name,cfg", ALL_CONFIGS, ids=[c[0] for c in ALL_CONFIGS])
def test_fused_matches_im2col(name, cfg, dtype, tol, monkeypatch):
    """Both forwards give the same output in every dtype (fp16/bf16 within an ulp of the output)."""
    args = make_dcn_inputs(**cfg, dtype=dtype)
    fused = _forward(monkeypatch, "fused", args, cfg)
    im2col = _forward(monkeypatch, "im2col", args, cfg)
    assert fused.dtype == dtype and fused.shape == im2col.shape
    torch.testing.assert_close(fused, im2col, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16],
                         ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("name,cfg", ALL_CONFIGS, ids=[c[0] for c in ALL_CONFIGS])
def test_fused_samples_bit_identical_to_im2col(name, cfg, dtype, monkeypatch):
    """With one-hot weights (output channel o of a group reads exactly column o of the group's
    columns) the GEMM is exact, so the output is the sampled columns themselves: both algorithms
    sample bit-identical values, in every dtype."""
    x, offset, weight, _, mask = make_dcn_inputs(**cfg, dtype=dtype)
    groups = cfg.get("groups", 1)
    cin_g, kh, kw = weight.shape[1:]
    rows_g = cin_g * kh * kw
    one_hot = torch.eye(rows_g, dtype=dtype).view(rows_g, cin_g, kh, kw).repeat(groups, 1, 1, 1)
    args = (x, offset, one_hot, None, mask)
    fused = _forward(monkeypatch, "fused", args, cfg)
    im2col = _forward(monkeypatch, "im2col", args, cfg)
    assert torch.equal(fused, im2col)


@pytest.mark.parametrize("threads", [1, 3])
def test_fused_independent_of_thread_count(threads, monkeypatch):
    """The fused forward gives the same bits whatever the number of threads (tiles change, the
    per-pixel arithmetic does not)."""
    args = make_dcn_inputs(n=2, c_in=64, c_out=8, h=21, w=19, dtype=torch.float32)
    before = torch.get_num_threads()
    try:
        expected = _forward(monkeypatch, "fused", args, {})
        torch.set_num_threads(threads)
        out = _forward(monkeypatch, "fused", args, {})
    finally:
        torch.set_num_threads(before)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def _gemm_ops(monkeypatch, algo_name, args):
    """The GEMM ops one forward under HYBRIDOPS_DCN_ALGO=algo_name calls: addmm_ per pixel tile
    (fused, with bias) or baddbmm per block of images (im2col)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        _forward(monkeypatch, algo_name, args, {})
    return {e.key for e in prof.key_averages()} & {"aten::addmm_", "aten::baddbmm"}


@pytest.mark.parametrize("algo_name,gemm_op", [("fused", "aten::addmm_"), ("im2col", "aten::baddbmm"),
                                               ("auto", "aten::addmm_")])
def test_env_var_selects_the_algorithm(algo_name, gemm_op, monkeypatch):
    """HYBRIDOPS_DCN_ALGO really switches the path (auto: fused at a HybridNetSeg-like shape)."""
    args = make_dcn_inputs(n=2, c_in=16, c_out=16, h=8, w=10, dtype=torch.float32)
    assert _gemm_ops(monkeypatch, algo_name, args) == {gemm_op}


def test_auto_takes_im2col_for_a_weight_too_large_for_the_cache(monkeypatch):
    """auto: a 1024x1024x3x3 fp32 weight (38 MB > 16 MB) would be re-read once per pixel tile."""
    args = make_dcn_inputs(n=1, c_in=1024, c_out=1024, h=3, w=3, dtype=torch.float32)
    assert _gemm_ops(monkeypatch, "auto", args) == {"aten::baddbmm"}
    assert _gemm_ops(monkeypatch, "fused", args) == {"aten::addmm_"}


@pytest.mark.parametrize("value", ["bogus", "FUSED", "im2col "])
def test_bad_env_value_raises(value, monkeypatch):
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", value)
    x, offset, weight, bias, mask = make_dcn_inputs(n=1, h=4, w=4, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="HYBRIDOPS_DCN_ALGO must be 'fused', 'im2col' or 'auto'"):
        hybridops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)


def test_auto_is_accepted(monkeypatch):
    args = make_dcn_inputs(n=1, h=5, w=6)
    expected = _forward(monkeypatch, "im2col", args, {})
    torch.testing.assert_close(_forward(monkeypatch, "auto", args, {}), expected, rtol=1e-12, atol=1e-12)
