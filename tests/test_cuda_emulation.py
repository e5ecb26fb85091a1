"""What only the CUDA emulation can test without a GPU (issue #13, item 3): the launchers' switches
and schedules that normal shapes never reach, on the real .cu kernels.

* the 64-bit-index instantiations, forced by HYBRIDOPS_FORCE_INT64_INDEX=1, give the 32-bit bits;
* grid-stride loops with a forced grid of 3 blocks (HYBRIDOPS_MAX_GRID_BLOCKS) give the same bits,
  and the launches really use 3 blocks;
* every deterministic pass gives the same bits with the threads and blocks run in reverse order
  (a shared-memory race or an order-dependent sum would not);
* low precision, batch 0, images smaller than the kernel, on both device profiles;
* the ops' schemas are exactly torch.ops.hybridops's, and bad emulation settings raise clearly.
The CUDA test cases themselves (forward and all gradients against the CPU kernels) run on the
emulation through the ``cuda_backend`` fixture in their own files.
"""
from __future__ import annotations

import os

import pytest
import torch

import hybridops
from hybridops import cuda_emulation
from tests._cuda_backends import needs_emulation
from tests._dcn_cases import make_dcn_inputs
from tests._mdc_cases import make_case, ref64, run

pytestmark = needs_emulation
PROFILES = ["sm61", "h100"]


def dcn_outputs(args, order="forward", device="sm61", padding=1, stride=1):
    """Output and all gradients of the emulated deform_conv2d (args from make_dcn_inputs)."""
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in args]
    x, offset, weight, bias, mask = leaves
    with cuda_emulation.emulated_cuda(device, order):
        out = hybridops.deform_conv2d(x, offset, weight, bias, stride, padding, 1, mask)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(out.dtype)
    return [out.detach()] + list(torch.autograd.grad(out, [t for t in leaves if t is not None], grad_out))


def mdc_outputs(x, ws, b, stride=1, dilation=1, order="forward", device="sm61"):
    def fn(*a):
        with cuda_emulation.emulated_cuda(device, order):
            return hybridops.mixed_depthwise_conv2d(*a)
    out, grads = run(fn, x, ws, b, stride, dilation)
    return [out] + grads


def assert_bitwise(a, b):
    for u, v in zip(a, b):
        assert torch.equal(u, v) or (torch.isnan(u).any() and torch.equal(u.nan_to_num(), v.nan_to_num()))


# ---- the module and its settings ---------------------------------------------------------------
def test_build_info_and_profiles():
    assert hybridops.build_info()["cuda_emulation"] is True
    with cuda_emulation.emulated_cuda("sm61"):
        assert cuda_emulation.device_name() == "NVIDIA GeForce GTX 1080 Ti (emulated)"
    with cuda_emulation.emulated_cuda("h100", "reverse"):
        assert cuda_emulation.device_name() == "NVIDIA H100 (emulated)"


def test_schemas_are_exactly_the_real_ones():
    for op in ("deform_conv2d", "deform_conv2d_backward", "mixed_depthwise_conv2d", "mixed_depthwise_conv2d_backward"):
        real = str(getattr(torch.ops.hybridops, op).default._schema)
        emu = str(getattr(torch.ops.hybridops_emu, op).default._schema)
        assert emu == real.replace("hybridops::", "hybridops_emu::", 1)


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="device must be one of"):
        with cuda_emulation.emulated_cuda("sm_61"):
            pass
    with pytest.raises(ValueError, match="order must be one of"):
        with cuda_emulation.emulated_cuda("sm61", "random"):
            pass
    x, ws, b = make_case(1, [2], (3,), 5, 5)
    with cuda_emulation.emulated_cuda():
        os.environ["HYBRIDOPS_EMU_DEVICE"] = "gtx1080"  # emulated_cuda() restores it
        with pytest.raises(RuntimeError, match="HYBRIDOPS_EMU_DEVICE must be 'sm61' or 'h100', got 'gtx1080'"):
            hybridops.mixed_depthwise_conv2d(x, ws, b)


def test_wrappers_go_back_to_the_real_ops_after_the_block():
    x, ws, b = make_case(1, [2], (3,), 5, 5)
    cuda_emulation.reset_counters()
    with cuda_emulation.emulated_cuda():
        hybridops.mixed_depthwise_conv2d(x, ws, b)
    launches = cuda_emulation.counters()["launches"]
    assert launches == 1
    hybridops.mixed_depthwise_conv2d(x, ws, b)
    assert cuda_emulation.counters()["launches"] == launches


# ---- switches the launchers read -----------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dcn_64bit_index_kernels_give_the_32bit_bits(dtype, monkeypatch):
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "im2col")
    args = make_dcn_inputs(n=2, c_in=4, c_out=3, h=9, w=7, dtype=dtype)
    cuda_emulation.reset_counters()
    narrow = dcn_outputs(args)
    assert not any("int64_t" in k for k in cuda_emulation.kernels())
    monkeypatch.setenv("HYBRIDOPS_FORCE_INT64_INDEX", "1")
    cuda_emulation.reset_counters()
    wide = dcn_outputs(args)
    assert sorted(cuda_emulation.kernels()) == ["col2im_scatter_kernel<scalar_t, int64_t, grad_t, AddFn>",
                                                "im2col_kernel<scalar_t, int64_t>",
                                                "offset_mask_grad_kernel<scalar_t, int64_t>"]
    assert_bitwise(wide, narrow)
    torch.use_deterministic_algorithms(True)
    try:
        assert_bitwise(dcn_outputs(args)[1:2], dcn_outputs(args, order="reverse")[1:2])
    finally:
        torch.use_deterministic_algorithms(False)


def test_dcn_grid_stride_loops_with_a_forced_small_grid(monkeypatch):
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "im2col")
    args = make_dcn_inputs(n=2, c_in=6, c_out=4, h=13, w=11, dtype=torch.float64)
    normal = dcn_outputs(args)
    monkeypatch.setenv("HYBRIDOPS_MAX_GRID_BLOCKS", "3")
    cuda_emulation.reset_counters()
    small = dcn_outputs(args)
    c = cuda_emulation.counters()
    assert c["blocks"] == 3 * c["launches"] and c["launches"] >= 4  # im2col, offset/mask grad, col2im
    for a, b in zip(small, normal):  # only col2im's atomic sum order may differ (float64: ~1e-16)
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)


def test_mdc_grad_weight_chunks_loop_over_a_forced_small_grid(monkeypatch):
    x, ws, b = make_case(3, [3, 2], (3, 5), 40, 36, dtype=torch.float64)
    normal = mdc_outputs(x, ws, b)
    monkeypatch.setenv("HYBRIDOPS_MAX_GRID_BLOCKS", "1")
    assert_bitwise(mdc_outputs(x, ws, b), normal)  # chunk sums never depend on the grid


# ---- schedules -----------------------------------------------------------------------------------
@pytest.mark.parametrize("device", PROFILES)
@pytest.mark.parametrize("stride", [1, 2])
def test_mdc_every_pass_has_the_same_bits_in_reverse_order(stride, device):
    x, ws, b = make_case(2, [3, 2, 2], (3, 5, 7), 37, 35)
    assert_bitwise(mdc_outputs(x, ws, b, stride, order="reverse", device=device),
                   mdc_outputs(x, ws, b, stride, device=device))


def test_dcn_deterministic_backward_has_the_same_bits_in_reverse_order():
    args = make_dcn_inputs(n=2, c_in=4, c_out=4, h=10, w=9, dtype=torch.float32)
    torch.use_deterministic_algorithms(True)
    try:
        assert_bitwise(dcn_outputs(args, order="reverse"), dcn_outputs(args))
    finally:
        torch.use_deterministic_algorithms(False)


# ---- low precision and degenerate shapes on both profiles -----------------------------------------
@pytest.mark.parametrize("device", PROFILES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_both_ops(dtype, device):
    x, ws, b = make_case(2, [3, 2], (3, 7), 19, 21, dtype=dtype)
    ours = mdc_outputs(x, ws, b, 2, device=device)
    exact = run(ref64, x, ws, b, 2, 1)
    exact = [exact[0]] + exact[1]
    for o, e in zip(ours, exact):
        assert o.dtype == dtype
        assert (o.double() - e).abs().max() <= 2e-2 * e.abs().max() + 1e-3
    args = make_dcn_inputs(n=2, c_in=4, c_out=4, h=9, w=9, dtype=dtype)
    for t in dcn_outputs(args, device=device):
        assert t.dtype == dtype and torch.isfinite(t).all()


@pytest.mark.parametrize("device", PROFILES)
def test_batch_zero_and_tiny_images(device):
    x, ws, b = make_case(0, [2, 2], (3, 5), 6, 6)
    outs = mdc_outputs(x, ws, b, device=device)
    assert outs[0].shape == (0, 4, 6, 6) and all(torch.equal(g, torch.zeros_like(g)) for g in outs[2:4])
    x, ws, b = make_case(2, [2, 1], (7, 9), 1, 2, dtype=torch.float64)  # a 1x2 image, 9x9 kernel
    outs = mdc_outputs(x, ws, b, device=device)
    exact = run(ref64, x, ws, b, 1, 1)
    for o, e in zip(outs, [exact[0]] + exact[1]):
        torch.testing.assert_close(o, e, rtol=1e-10, atol=1e-10)
    args = make_dcn_inputs(n=0, c_in=2, c_out=2, h=5, w=5)
    outs = dcn_outputs(args, device=device)
    assert outs[0].shape == (0, 2, 5, 5) and torch.equal(outs[3], torch.zeros_like(outs[3]))  # grad_weight
    args = make_dcn_inputs(n=1, c_in=2, c_out=3, h=1, w=1, dtype=torch.float64)
    outs = dcn_outputs(args, device=device)
    cpu = [t.detach().clone().requires_grad_() if t is not None else None for t in args]
    out = hybridops.deform_conv2d(cpu[0], cpu[1], cpu[2], cpu[3], 1, 1, 1, cpu[4])
    grads = torch.autograd.grad(out, [t for t in cpu if t is not None],
                                torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=out.dtype))
    for o, e in zip(outs, [out.detach(), *grads]):
        torch.testing.assert_close(o, e, rtol=1e-10, atol=1e-10)


# ---- the fused deform_conv2d forward (issue #16) -------------------------------------------------
def _forward_kernels(args, **kw):
    cuda_emulation.reset_counters()
    x, offset, weight, bias, mask = args
    with cuda_emulation.emulated_cuda():
        out = hybridops.deform_conv2d(x, offset, weight, bias, 1, 1, 1, mask, **kw)
    return out, cuda_emulation.kernels()


def test_dcn_auto_rule(monkeypatch):
    """auto (deform_conv2d_fused_plan.h), where the traffic model predicts the fused kernels win: the
    (FMA) forward up to 64 channels per group, the backward up to 16."""
    monkeypatch.delenv("HYBRIDOPS_DCN_ALGO", raising=False)

    def backward_is_fused(args):
        cuda_emulation.reset_counters()
        dcn_outputs(args)
        return any(k.startswith("fused_backward") for k in cuda_emulation.kernels())

    small = make_dcn_inputs(n=1, c_in=16, c_out=16, h=6, w=6, dtype=torch.float32)
    assert _forward_kernels(small)[1] == ["fused_forward_kernel<scalar_t>"] and backward_is_fused(small)
    middle = make_dcn_inputs(n=1, c_in=64, c_out=8, h=4, w=4, dtype=torch.float32)
    assert _forward_kernels(middle)[1] == ["fused_forward_kernel<scalar_t>"] and not backward_is_fused(middle)
    wide = make_dcn_inputs(n=1, c_in=72, c_out=8, h=3, w=3, dtype=torch.float32)
    assert _forward_kernels(wide)[1] == ["im2col_kernel<scalar_t, int32_t>"] and not backward_is_fused(wide)


@pytest.mark.parametrize("device", PROFILES)
def test_dcn_fused_has_the_same_bits_in_reverse_order(device, monkeypatch):
    """Forward, offset/mask/weight gradients always; grad_input too in deterministic mode."""
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "fused")
    args = make_dcn_inputs(n=2, c_in=12, c_out=70, h=11, w=13, offset_groups=3, dtype=torch.float32)
    forward, reverse = dcn_outputs(args, "forward", device), dcn_outputs(args, "reverse", device)
    assert_bitwise(reverse[:1] + reverse[2:4] + reverse[5:], forward[:1] + forward[2:4] + forward[5:])
    torch.use_deterministic_algorithms(True)
    try:
        assert_bitwise(dcn_outputs(args, "reverse", device), dcn_outputs(args, "forward", device))
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_dcn_fused_covers_partial_tiles_and_chunks(dtype, monkeypatch):
    """Output channels past one tile (70 > 64), channel chunks that stop at offset-group borders
    (12 channels, 3 offset groups), weight-gradient chunks of one channel (9 channels per group), a
    pixel tile past the image's end, a 5x5 kernel, two weight groups: forward and every gradient."""
    args = make_dcn_inputs(n=2, c_in=18, c_out=70, h=11, w=13, offset_groups=3, groups=2, kh=5, kw=5,
                           padding=(2, 2), dtype=torch.float64)
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "fused")
    cuda_emulation.reset_counters()
    fused = dcn_outputs([t.to(dtype) for t in args], padding=2)
    assert "fused_backward_sampling_kernel<scalar_t, grad_t, decltype(add)>" in cuda_emulation.kernels()
    cpu = [t.detach().to(dtype).double().requires_grad_() for t in args]  # the inputs the op saw, exactly
    out = hybridops.deform_conv2d(cpu[0], cpu[1], cpu[2], cpu[3], 1, 2, 1, cpu[4])
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(dtype)
    expected = [out.detach()] + list(torch.autograd.grad(out, cpu, grad_out.double()))
    tol = 1e-12 if dtype == torch.float64 else 2e-2
    for f, e in zip(fused, expected):
        assert f.dtype == dtype
        torch.testing.assert_close(f.double(), e, rtol=tol, atol=tol * e.abs().max().item())


def test_dcn_fused_forced_on_an_uncovered_shape_raises(monkeypatch):
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "fused")
    args = make_dcn_inputs(n=1, c_in=2, c_out=2, h=13, w=13, kh=13, kw=13, padding=(6, 6), dtype=torch.float32)
    x, offset, weight, bias, mask = args
    with cuda_emulation.emulated_cuda():
        with pytest.raises(RuntimeError, match="HYBRIDOPS_DCN_ALGO=fused, but the fused CUDA kernels do not cover a "
                                               "kernel of more than 128 taps"):
            hybridops.deform_conv2d(x, offset, weight, bias, 1, 6, 1, mask)
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "tiled")
    with cuda_emulation.emulated_cuda():
        with pytest.raises(RuntimeError, match="HYBRIDOPS_DCN_ALGO must be 'fused', 'im2col' or 'auto', got 'tiled'"):
            hybridops.deform_conv2d(x, offset, weight, bias, 1, 6, 1, mask)


# ---- the fused forward on tensor cores (fp16/bf16, sm_80+; deform_conv2d_fused_tc_cuda.cuh) -------
TC_KERNEL, FMA_KERNEL = "fused_forward_tc_kernel<scalar_t>", "fused_forward_kernel<scalar_t>"


def _emulated_forward(args, device, padding=1):
    cuda_emulation.reset_counters()
    x, offset, weight, bias, mask = args
    with cuda_emulation.emulated_cuda(device):
        out = hybridops.deform_conv2d(x, offset, weight, bias, 1, padding, 1, mask)
    return out, cuda_emulation.kernels()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dcn_tensor_cores_only_for_16_bit_types_on_sm80_and_newer(dtype, monkeypatch):
    """The h100 profile (compute capability 9.0) takes the wmma kernel for fp16/bf16; the sm61 profile,
    fp32, a kernel of more than 32 taps (pixel tiles under 16) and HYBRIDOPS_DCN_TENSOR_CORES=0 take
    the FMA kernel; a bad value of the switch raises."""
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "fused")
    args = [t.to(dtype) for t in make_dcn_inputs(n=1, c_in=16, c_out=16, h=6, w=7)]
    assert _emulated_forward(args, "h100")[1] == [TC_KERNEL]
    assert _emulated_forward(args, "sm61")[1] == [FMA_KERNEL]
    assert _emulated_forward([t.float() for t in args], "h100")[1] == [FMA_KERNEL]
    wide = [t.to(dtype) for t in make_dcn_inputs(n=1, c_in=2, c_out=3, h=7, w=7, kh=7, kw=7, padding=(3, 3))]
    assert _emulated_forward(wide, "h100", padding=3)[1] == [FMA_KERNEL]
    monkeypatch.setenv("HYBRIDOPS_DCN_TENSOR_CORES", "0")
    assert _emulated_forward(args, "h100")[1] == [FMA_KERNEL]
    monkeypatch.setenv("HYBRIDOPS_DCN_TENSOR_CORES", "yes")
    with pytest.raises(RuntimeError, match="HYBRIDOPS_DCN_TENSOR_CORES must be '0' or '1', got 'yes'"):
        _emulated_forward(args, "h100")


# (kernel size, output channels, weight groups, offset groups): the three pixel tiles (64 for a 1x1
# kernel, 32 for 3x3, 16 for 5x5), each with two output-channel tiles, the second partial (1x1: 32 +
# 8; 3x3: 64 + 16; 5x5: 128 + 12), and two weight groups with 3 offset groups (chunks that stop at
# their borders, a padded 48-channel tile).
EXACT_SHAPES = [(1, 40, 1, 1), (3, 80, 1, 1), (5, 140, 1, 1), (3, 70, 2, 3)]


def _exact_samples_case(dtype, init_state: bool, k: int, c_out: int, groups: int, offset_groups: int):
    """Inputs whose samples are exact in fp16/bf16, so the wmma kernel's only rounding is the final
    one: a module at init (offsets 0, mask 0.5 = sigmoid(0)) or integer offsets (some landing
    outside the image) with mask 1. Values are small integers: every product and partial sum is
    exact in float too."""
    g = torch.Generator().manual_seed(5)
    n, c_in, h, w = 2, 18, 11, 13
    x = torch.randint(-4, 5, (n, c_in, h, w), generator=g).double()
    weight = torch.randint(-3, 4, (c_out, c_in // groups, k, k), generator=g).double()
    bias = torch.randint(-8, 9, (c_out,), generator=g).double()
    taps = offset_groups * k * k
    if init_state:
        offset = torch.zeros(n, 2 * taps, h, w, dtype=torch.float64)
        mask = torch.full((n, taps, h, w), 0.5, dtype=torch.float64)
    else:
        offset = torch.randint(-3, 4, (n, 2 * taps, h, w), generator=g).double()
        mask = torch.ones(n, taps, h, w, dtype=torch.float64)
    return [t.to(dtype) for t in (x, offset, weight, bias, mask)]


@pytest.mark.parametrize("shape", EXACT_SHAPES, ids=lambda s: f"k{s[0]}-co{s[1]}-g{s[2]}-og{s[3]}")
@pytest.mark.parametrize("init_state", [True, False], ids=["module-at-init", "integer-offsets"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dcn_tensor_cores_exact_where_the_samples_are(dtype, init_state, shape, monkeypatch):
    """The result is the float64 convolution rounded once to the dtype, as on the FMA kernel, and the
    same bits in reverse thread order."""
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "fused")
    k = shape[0]
    args = _exact_samples_case(dtype, init_state, *shape)
    x, offset, weight, bias, mask = [t.double() for t in args]
    expected = hybridops.deform_conv2d(x, offset, weight, bias, 1, k // 2, 1, mask).to(dtype)
    tc, kernels = _emulated_forward(args, "h100", padding=k // 2)
    assert kernels == [TC_KERNEL]
    assert torch.equal(tc, expected)
    with cuda_emulation.emulated_cuda("h100", "reverse"):
        assert torch.equal(hybridops.deform_conv2d(*args[:4], 1, k // 2, 1, args[4]), tc)
    monkeypatch.setenv("HYBRIDOPS_DCN_TENSOR_CORES", "0")
    fma, kernels = _emulated_forward(args, "h100", padding=k // 2)
    assert kernels == [FMA_KERNEL] and torch.equal(fma, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dcn_tensor_cores_cover_partial_tiles_and_chunks(dtype, monkeypatch):
    """The shape of test_dcn_fused_covers_partial_tiles_and_chunks (5x5 kernel: pixel tiles of 16,
    35 channels per group) with random fractional offsets: the samples are rounded to the dtype in
    shared memory as the im2col path rounds its columns, so the two agree to float rounding (a
    dropped or doubled (channel, tap) row would be off by a whole term)."""
    args = make_dcn_inputs(n=2, c_in=18, c_out=70, h=11, w=13, offset_groups=3, groups=2, kh=5, kw=5,
                           padding=(2, 2), dtype=torch.float64)
    low = [t.to(dtype) for t in args]
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "fused")
    out, kernels = _emulated_forward(low, "h100", padding=2)
    assert kernels == [TC_KERNEL]
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "im2col")
    ref, kernels = _emulated_forward(low, "h100", padding=2)
    assert kernels == ["im2col_kernel<scalar_t, int32_t>"]
    ulp = torch.finfo(dtype).eps * ref.double().abs()  # one unit in the last place of each output
    assert ((out.double() - ref.double()).abs() <= ulp + 1e-6).all()


@pytest.mark.parametrize("k, c_out", [(7, 70), (11, 9)], ids=["7x7-tile8", "11x11-tile4"])
def test_dcn_fma_forward_register_tiles_at_small_pixel_tiles(k, c_out, monkeypatch):
    """The register-tiled FMA forward at its smallest pixel tiles (49 taps: 8 pixels, 121 taps: 4)
    with channel tiles that are not a multiple of its 4-channel register tile (70 and 9 channels):
    exact integer data gives the float64 result exactly in fp32 on both profiles."""
    monkeypatch.setenv("HYBRIDOPS_DCN_ALGO", "fused")
    g = torch.Generator().manual_seed(11)
    n, c_in, h, w = 2, 5, 9, 10
    x = torch.randint(-4, 5, (n, c_in, h, w), generator=g).double()
    weight = torch.randint(-3, 4, (c_out, c_in, k, k), generator=g).double()
    bias = torch.randint(-8, 9, (c_out,), generator=g).double()
    offset = torch.randint(-3, 4, (n, 2 * k * k, h, w), generator=g).double()
    mask = torch.ones(n, k * k, h, w, dtype=torch.float64)
    expected = hybridops.deform_conv2d(x, offset, weight, bias, 1, k // 2, 1, mask)
    args = [t.float() for t in (x, offset, weight, bias, mask)]
    for device in PROFILES:
        out, kernels = _emulated_forward(args, device, padding=k // 2)
        assert kernels == [FMA_KERNEL]
        assert torch.equal(out.double(), expected)
