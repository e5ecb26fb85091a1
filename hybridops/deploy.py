"""ONNX export of networks that use the hybridops ops (needs the optional ``[deploy]`` extra:
``pip install onnx onnxscript onnxruntime``).

* ``hybridops::deform_conv2d`` becomes ONNX's standard ``DeformConv`` (opset 19), which ONNX
  Runtime runs on CPU and CUDA.
* ``hybridops::mixed_depthwise_conv2d`` becomes standard ``Conv`` nodes: either one depthwise
  ``Conv`` per channel group (``Slice`` + ``Conv`` + ``Concat``) or a single depthwise ``Conv`` whose
  kernels are zero-padded to the largest size (``mixconv="padded"``). Both give the same numbers;
  ``benchmarks/onnx_mixconv.py`` measures which ONNX Runtime runs faster, and the default follows
  that measurement.

Only inference graphs export: the ops' backward and training-only outputs (HybridNetSeg's side
outputs in train mode) have no ONNX form. Call ``model.eval()`` first.

Example:
    >>> model = models.create_model("hybridnetseg").eval()
    >>> hybridops.deploy.export_onnx(model, torch.randn(1, 3, 512, 512), "hybridnetseg.onnx")
"""
from __future__ import annotations

import os
from typing import Callable, Literal, Optional

import torch
from torch import nn

from hybridops.ops.mixed_depthwise_conv2d import same_padding

MixConvStyle = Literal["per_group", "padded"]
# ONNX Runtime (CPU) ran the padded form 1.1-2.5x faster than per-group Convs on every HybridNetSeg
# MixConv shape: benchmarks/results/onnx_mixconv-cpu-20261123T165801.json (benchmarks/onnx_mixconv.py).
DEFAULT_MIXCONV_STYLE: MixConvStyle = "padded"
OPSET = 19


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ImportError("ONNX export needs the optional deploy extra: pip install onnx onnxscript onnxruntime "
                          "(or pip install 'hybridops[deploy]')") from exc


def _translations(mixconv: MixConvStyle) -> dict:
    """The custom translation table for ``torch.onnx.export(..., dynamo=True)``."""
    from onnxscript import opset19 as op

    def deform_conv2d(input, offset, weight, mask, bias, stride, padding, dilation):
        kh, kw = int(weight.shape[2]), int(weight.shape[3])
        groups = int(input.shape[1]) // int(weight.shape[1])
        offset_groups = int(offset.shape[1]) // (2 * kh * kw)
        return op.DeformConv(input, weight, offset, bias, mask, dilations=list(dilation), group=groups,
                             kernel_shape=[kh, kw], offset_group=offset_groups,
                             pads=[padding[0], padding[1], padding[0], padding[1]], strides=list(stride))

    def same_pads(k: int, stride, dilation) -> list[int]:
        # timm's rule, as the op (zero-padding the kernels to kmax keeps every group's taps where
        # its own padding puts them: d * (k - 1) is even).
        ph, pw = (same_padding(k, s, d) for s, d in zip(stride, dilation))
        return [ph, pw, ph, pw]

    def mixed_per_group(input, weights, bias, stride, dilation):
        outs, start = [], 0
        for w in weights:
            c, k = int(w.shape[0]), int(w.shape[2])
            part = op.Slice(input, op.Constant(value_ints=[start]), op.Constant(value_ints=[start + c]),
                            op.Constant(value_ints=[1]))
            outs.append(op.Conv(part, w, group=c, kernel_shape=[k, k], pads=same_pads(k, stride, dilation),
                                strides=list(stride), dilations=list(dilation)))
            start += c
        out = outs[0] if len(outs) == 1 else op.Concat(*outs, axis=1)
        if bias is not None:
            out = op.Add(out, op.Unsqueeze(bias, op.Constant(value_ints=[1, 2])))
        return out

    def mixed_padded(input, weights, bias, stride, dilation):
        kmax = max(int(w.shape[2]) for w in weights)
        padded = []
        for w in weights:
            p = (kmax - int(w.shape[2])) // 2
            padded.append(op.Pad(w, op.Constant(value_ints=[0, 0, p, p, 0, 0, p, p])) if p else w)
        weight = padded[0] if len(padded) == 1 else op.Concat(*padded, axis=0)
        channels = sum(int(w.shape[0]) for w in weights)
        return op.Conv(input, weight, bias, group=channels, kernel_shape=[kmax, kmax],
                       pads=same_pads(kmax, stride, dilation), strides=list(stride), dilations=list(dilation))

    table = {torch.ops.hybridops.deform_conv2d.default: deform_conv2d}
    if hasattr(torch.ops.hybridops, "mixed_depthwise_conv2d"):
        table[torch.ops.hybridops.mixed_depthwise_conv2d.default] = (
            mixed_per_group if mixconv == "per_group" else mixed_padded)
    return table


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike, *,
                dynamic_batch: bool = True, dynamic_size: bool = True, mixconv: Optional[MixConvStyle] = None,
                check: bool = True, atol: float = 1e-4) -> str:
    """Exports ``model`` (eval mode, one image batch in, one tensor out) to ONNX at ``path``.

    Args:
        model: an ``nn.Module`` in eval mode whose forward takes ``[N, C, H, W]``.
        example_input: ``[N, C, H, W]`` used for tracing (and for the check).
        path: output ``.onnx`` file.
        dynamic_batch, dynamic_size: export N and/or H, W as dynamic dimensions.
        mixconv: ``"per_group"`` or ``"padded"`` (see module doc); default: the measured faster one.
        check: run the file in ONNX Runtime (CPU) on ``example_input`` and raise if it differs from
            PyTorch by more than ``atol``.

    Returns:
        the path written.
    """
    _require_onnx()
    if model.training:
        raise ValueError("export_onnx: call model.eval() first (training-mode outputs have no ONNX export)")
    style = mixconv or DEFAULT_MIXCONV_STYLE
    if style not in ("per_group", "padded"):
        raise ValueError(f"export_onnx: mixconv must be 'per_group' or 'padded', got {style!r}")
    dims = {}
    if dynamic_batch:
        dims[0] = torch.export.Dim("batch", min=1)
    if dynamic_size:
        dims[2] = torch.export.Dim.AUTO
        dims[3] = torch.export.Dim.AUTO
    path = os.fspath(path)
    program = torch.onnx.export(model, (example_input,), dynamo=True, opset_version=OPSET,
                                custom_translation_table=_translations(style),
                                dynamic_shapes=(dims,) if dims else None, input_names=["image"],
                                output_names=["output"], verbose=False)
    program.save(path)
    if check:
        max_err = check_onnx(model, path, example_input)
        if max_err > atol:
            raise RuntimeError(f"export_onnx: ONNX Runtime output differs from PyTorch by {max_err:.3g} > {atol}")
    return path


def check_onnx(model: nn.Module, path: str, example_input: torch.Tensor) -> float:
    """Largest absolute difference between ONNX Runtime (CPU) and PyTorch on ``example_input``."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: example_input.detach().cpu().numpy()})[0]
    with torch.no_grad():
        expected = model(example_input).detach().cpu().numpy()
    return float(abs(got - expected).max())


def onnx_session(path: str, device: str = "cpu") -> "object":
    """An ONNX Runtime session for ``path`` on ``cpu`` or ``cuda``."""
    import onnxruntime as ort

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    return ort.InferenceSession(path, providers=providers)
