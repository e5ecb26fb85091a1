"""Arguments the ops must refuse with a clear error, through the wrappers and through direct
``torch.ops.hybridops.*`` calls (what torch.compile and other libraries call): never a crash,
never uninitialised memory, never a silently truncated value."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import hybridops
from tests._dcn_cases import make_dcn_inputs

INT_ARGS = [
    ("stride", (2.9, 1), TypeError, r"stride must be an int or a pair of ints, got \(2\.9, 1\)"),
    ("padding", (0.9, 0), TypeError, r"padding must be an int or a pair of ints, got \(0\.9, 0\)"),
    ("dilation", [1, 1.0], TypeError, r"dilation must be an int or a pair of ints"),
    ("stride", (True, 1), TypeError, r"stride must be an int or a pair of ints"),
    ("stride", 2 ** 63, ValueError, r"stride must be at most 2147483647, got \(9223372036854775808,"),
    ("padding", (0, 2 ** 40), ValueError, r"padding must be at most 2147483647"),
    ("dilation", -(2 ** 70), ValueError, r"dilation must be positive"),
]


@pytest.mark.parametrize("name,value,exc,match", INT_ARGS)
def test_deform_conv2d_int_arguments(name, value, exc, match):
    x, offset, weight, bias, mask = make_dcn_inputs(n=1, c_in=2, c_out=2, h=5, w=5, dtype=torch.float32)
    kwargs = dict(stride=1, padding=1, dilation=1)
    kwargs[name] = value
    with pytest.raises(exc, match=match):
        hybridops.deform_conv2d(x, offset, weight, bias, mask=mask, **kwargs)


@pytest.mark.parametrize("name,value,exc,match", [a for a in INT_ARGS if a[0] != "padding"])
def test_mixed_depthwise_conv2d_int_arguments(name, value, exc, match):
    x = torch.randn(1, 4, 8, 8)
    weights = [torch.randn(2, 1, 3, 3), torch.randn(2, 1, 5, 5)]
    kwargs = dict(stride=1, dilation=1)
    kwargs[name] = value
    with pytest.raises(exc, match=match):
        hybridops.mixed_depthwise_conv2d(x, weights, **kwargs)


def test_int_like_values_are_accepted():
    """numpy and 0-d integer tensors are ints (operator.index), as in torch.nn.functional."""
    np = pytest.importorskip("numpy")
    x, offset, weight, bias, mask = make_dcn_inputs(n=1, c_in=2, c_out=2, h=5, w=5, dtype=torch.float64)
    out = hybridops.deform_conv2d(x, offset, weight, bias, stride=(np.int64(1), torch.tensor(1)), padding=1,
                                  mask=mask)
    torch.testing.assert_close(out, hybridops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask))


def test_module_int_arguments():
    with pytest.raises(TypeError, match=r"kernel_size must be an int or a pair of ints"):
        hybridops.DeformConv2dV2(2, 2, (3.5, 3))
    with pytest.raises(TypeError, match=r"padding must be an int or a pair of ints"):
        hybridops.DeformConv2dV2(2, 2, 3, padding=(0.9, 0))


# ---------------------------------------------------------------------------- deform_conv2d, direct calls


def _run_isolated(code: str) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter, so a crash (SIGFPE, SIGSEGV) fails the test instead of
    killing the test run."""
    return subprocess.run([sys.executable, "-c", "import torch, hybridops\n" + code], capture_output=True,
                          text=True, timeout=120)


def test_zero_input_channels_direct_call_raises():
    proc = _run_isolated(
        "x = torch.randn(1, 0, 4, 4); w = torch.randn(2, 1, 3, 3); off = torch.zeros(1, 18, 4, 4)\n"
        "try:\n"
        "    torch.ops.hybridops.deform_conv2d(x, off, w, None, None, [1, 1], [1, 1], [1, 1])\n"
        "except RuntimeError as e:\n"
        "    print('RAISED', e)\n")
    assert proc.returncode == 0, f"process died with {proc.returncode}: {proc.stderr[-2000:]}"
    assert "RAISED" in proc.stdout and "input must have at least one channel" in proc.stdout


def test_zero_input_channels_wrapper_raises():
    x = torch.randn(1, 0, 4, 4)
    with pytest.raises(ValueError, match=r"input must have at least one channel"):
        hybridops.deform_conv2d(x, torch.zeros(1, 18, 4, 4), torch.randn(2, 1, 3, 3), padding=1)


def test_zero_output_channels_is_an_empty_result():
    x, offset, _, _, mask = make_dcn_inputs(n=1, c_in=2, c_out=2, h=5, w=5, dtype=torch.float64)
    weight = torch.randn(0, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    out = hybridops.deform_conv2d(x, offset, weight, padding=1, mask=mask)
    assert out.shape == (1, 0, 5, 5)
    torch.testing.assert_close(out, torch.ops.hybridops.deform_conv2d(x, offset, weight, mask, None, [1, 1],
                                                                       [1, 1], [1, 1]))


@pytest.mark.parametrize("arg", ["offset", "weight", "mask", "bias"])
def test_meta_tensor_beside_cpu_input_raises(arg):
    """A meta tensor among CPU tensors dispatches to the fake kernel: it must refuse, not return
    uninitialised memory."""
    x, offset, weight, bias, mask = make_dcn_inputs(n=1, c_in=2, c_out=2, h=5, w=5, dtype=torch.float32)
    args = dict(offset=offset, weight=weight, mask=mask, bias=bias)
    args[arg] = args[arg].to("meta")
    with pytest.raises(RuntimeError, match=rf"{arg} is on meta but input is on cpu"):
        torch.ops.hybridops.deform_conv2d(x, args["offset"], args["weight"], args["mask"], args["bias"], [1, 1],
                                          [1, 1], [1, 1])
    with pytest.raises(ValueError, match=rf"{arg} is on meta but input is on cpu"):
        hybridops.deform_conv2d(x, args["offset"], args["weight"], args["bias"], 1, 1, 1, args["mask"])


@pytest.mark.parametrize("arg", ["grad_output", "offset", "weight", "mask"])
def test_meta_tensor_beside_cpu_input_raises_in_backward_op(arg):
    x, offset, weight, _, mask = make_dcn_inputs(n=1, c_in=2, c_out=2, h=5, w=5, dtype=torch.float32)
    args = dict(grad_output=torch.randn(1, 2, 5, 5), offset=offset, weight=weight, mask=mask)
    args[arg] = args[arg].to("meta")
    with pytest.raises(RuntimeError, match=rf"{arg} is on meta but input is on cpu"):
        torch.ops.hybridops.deform_conv2d_backward(args["grad_output"], x, args["offset"], args["weight"],
                                                   args["mask"], [1, 1], [1, 1], [1, 1])


def test_all_meta_still_gives_shapes():
    """Meta tensors on their own are shape propagation: that keeps working."""
    x, offset, weight, bias, mask = (t.to("meta") for t in make_dcn_inputs(n=1, c_in=2, c_out=3, h=5, w=5))
    out = torch.ops.hybridops.deform_conv2d(x, offset, weight, mask, bias, [1, 1], [1, 1], [1, 1])
    assert out.device.type == "meta" and out.shape == (1, 3, 5, 5)


@pytest.mark.parametrize("name,index,value,match", [
    ("stride", 5, [2 ** 40, 1], r"stride must be at most 2147483647"),
    ("padding", 6, [2 ** 62, 1], r"padding must be at most 2147483647"),
    ("dilation", 7, [1, 2 ** 33], r"dilation must be at most 2147483647"),
])
def test_huge_int_arguments_direct_call(name, index, value, match):
    """int64 arithmetic on the output size must not overflow: the C++ check bounds them first."""
    x, offset, weight, bias, mask = make_dcn_inputs(n=1, c_in=2, c_out=2, h=5, w=5, dtype=torch.float32)
    args = [x, offset, weight, mask, bias, [1, 1], [1, 1], [1, 1]]
    args[index] = value
    with pytest.raises(RuntimeError, match=match):
        torch.ops.hybridops.deform_conv2d(*args)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_accepts_mixed_float_dtypes(dtype):
    """Inside a network under autocast the input arrives in the low dtype while the weights are
    fp32: the op's autocast kernel casts them, so the wrapper must not refuse the mix."""
    x, offset, weight, bias, mask = make_dcn_inputs(n=1, c_in=4, c_out=4, h=8, w=8, dtype=torch.float32)
    with torch.autocast("cpu", dtype=dtype):
        out = hybridops.deform_conv2d(x.to(dtype), offset, weight, bias, padding=1, mask=mask.to(dtype))
    assert out.dtype == dtype
    expected = hybridops.deform_conv2d(*[t.to(dtype) for t in (x, offset, weight, bias)], padding=1,
                                       mask=mask.to(dtype))
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"weight has dtype torch.float32 but input has dtype"):
        hybridops.deform_conv2d(x.to(dtype), offset.to(dtype), weight, padding=1)


def test_autocast_module_in_low_precision():
    m = hybridops.DeformConv2dV2(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(torch.nn.functional.conv2d(x, torch.randn(4, 4, 1, 1)))  # bf16 activations, fp32 weights
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_meta_tensors_work_through_the_wrapper():
    """Shape propagation on meta tensors (models/complexity.py counts MACs that way) goes through
    the wrapper's checks, including the autocast query that meta has no answer for."""
    x, offset, weight, bias, mask = (t.to("meta") for t in make_dcn_inputs(n=1, c_in=2, c_out=3, h=5, w=5))
    out = hybridops.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
    assert out.device.type == "meta" and out.shape == (1, 3, 5, 5)


@pytest.mark.parametrize("name", ["deform_conv2d", "mixed_depthwise_conv2d"])
def test_reference_takes_the_ops_arguments(name):
    """``hybridops.reference.<op>`` is called exactly as ``hybridops.<op>`` (same names, order, kinds and
    defaults), so tests and benchmarks swap one for the other; the two signatures are written twice on
    purpose and this keeps them from drifting."""
    import inspect

    def shape(fn):
        return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]

    assert shape(getattr(hybridops.reference, name)) == shape(getattr(hybridops, name))
