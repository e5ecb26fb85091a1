"""``models.complexity``: parameters, MACs by op type (forward hooks) and state-dict size.

MAC conventions (per forward of the given input shape, batch included):

* ``conv``              ``nn.Conv2d``: ``out.numel() * C_in/groups * kH * kW`` (bias adds go to ``bias``).
* ``deform_conv``       the DCN's main convolution, counted as the plain conv it replaces.
* ``dcn_offset_mask``   the DCN's offset/mask predictor conv (an ``nn.Conv2d`` inside the DCN).
* ``mixconv``           mixed depthwise conv: ``sum_i N * C_i * k_i^2 * H_out * W_out``.
* ``conv_transpose``    ``nn.ConvTranspose2d``: ``in.numel() * C_out/groups * kH * kW``.
* ``linear``            ``nn.Linear``: ``in.numel() * out_features``.
* ``bias``              one add per output element of every conv/linear with a bias.
* ``bn``                BatchNorm: 2 per input element (1 without affine).
* ``act``               ReLU, ReLU6, LeakyReLU, ELU, PReLU: 1 per output element.
* ``pool``              max/avg/adaptive pooling: 1 per input element.
* ``upsample``          ``nn.Upsample`` / :class:`models.blocks.Resize`: 1 per output element.

These add up to ``macs_ptflops`` (the ptflops convention: it counts the same modules the same
way, with conv biases). ``macs_conv`` is conv-type work only (conv + deform_conv +
dcn_offset_mask + mixconv + conv_transpose + linear, no bias). Reported but in *neither* total:

* ``sigmoid``           1 per output element (ptflops does not count ``nn.Sigmoid``).
* ``dcn_gather``        the DCN's bilinear gather: ``N * C_in * kH * kW * H_out * W_out`` sampled values,
                        each 4 MACs of bilinear interpolation + 1 mask multiply = 5 per sample.

Residual adds, the SE multiply and concatenations are not counted (nor by ptflops).
"""
from __future__ import annotations

import copy
import io
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

import hybridops
from models.blocks import Resize

__all__ = ["Complexity", "complexity", "PTFLOPS_TYPES", "CONV_TYPES"]

CONV_TYPES = ("conv", "deform_conv", "dcn_offset_mask", "mixconv", "conv_transpose", "linear")
PTFLOPS_TYPES = CONV_TYPES + ("bias", "bn", "act", "pool", "upsample")
EXTRA_TYPES = ("sigmoid", "dcn_gather")

_ACTS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.PReLU)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
          nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
          nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)


@dataclass
class Complexity:
    """What :func:`complexity` measured. ``macs`` maps op type -> MACs; ``macs_by_module`` maps the
    name of each counted module -> ``{type: MACs}``."""

    params: int
    macs: dict[str, int]
    state_dict_bytes: int
    input_shape: tuple[int, ...]
    macs_by_module: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)

    @property
    def macs_ptflops(self) -> int:
        """Total MACs by the ptflops convention (see the module docstring)."""
        return sum(self.macs.get(k, 0) for k in PTFLOPS_TYPES)

    @property
    def macs_conv(self) -> int:
        """Conv-type MACs only (conv, DCN incl. its offset/mask conv, MixConv, transposed conv, linear)."""
        return sum(self.macs.get(k, 0) for k in CONV_TYPES)

    @property
    def state_dict_mb(self) -> float:
        """Size of ``torch.save(model.state_dict())`` in MB (10^6 bytes)."""
        return self.state_dict_bytes / 1e6

    def by_prefix(self, depth: int = 1) -> dict[str, int]:
        """ptflops-convention MACs summed per module-name prefix of ``depth`` components."""
        out: dict[str, int] = {}
        for name, d in self.macs_by_module.items():
            key = ".".join(name.split(".")[:depth]) or "<root>"
            out[key] = out.get(key, 0) + sum(v for k, v in d.items() if k in PTFLOPS_TYPES)
        return out

    def __str__(self) -> str:
        lines = [f"input {tuple(self.input_shape)}: {self.params:,} params, {self.state_dict_mb:.2f} MB state dict",
                 f"  ptflops-style {self.macs_ptflops / 1e9:.3f} GMACs, conv-only {self.macs_conv / 1e9:.3f} GMACs"]
        for k in PTFLOPS_TYPES + EXTRA_TYPES:
            if self.macs.get(k):
                note = "" if k in PTFLOPS_TYPES else "   (not in the totals)"
                lines.append(f"  {k:<16} {self.macs[k] / 1e6:12.2f} MMACs{note}")
        return "\n".join(lines)


def _conv_macs(m: nn.Conv2d, out: Tensor) -> int:
    kh, kw = m.kernel_size
    return out.numel() * (m.in_channels // m.groups) * kh * kw


def _module_macs(m: nn.Module, x: Tensor, out: Tensor, offset_convs: set) -> list[tuple[str, int]]:
    """``(kind, MACs)`` of one forward call of ``m`` (first input ``x``, output ``out``), by the rules of the
    module docstring; ``offset_convs``: the offset/mask convs of the model's DCNs (counted apart)."""
    found: list[tuple[str, int]] = []
    if isinstance(m, hybridops.DeformConv2dV2):
        kh, kw = m.kernel_size
        found.append(("deform_conv", out.numel() * (m.in_channels // m.groups) * kh * kw))
        if m.bias is not None:
            found.append(("bias", out.numel()))
        samples = x.shape[0] * m.in_channels * kh * kw * out.shape[-2] * out.shape[-1]
        found.append(("dcn_gather", 5 * samples))
    elif isinstance(m, hybridops.MixedDepthwiseConv2d):
        n, _, ho, wo = out.shape
        found.append(("mixconv", sum(n * w.shape[0] * w.shape[-2] * w.shape[-1] * ho * wo for w in m.weights)))
        if getattr(m, "bias", None) is not None:
            found.append(("bias", out.numel()))
    elif isinstance(m, nn.Conv2d):
        found.append(("dcn_offset_mask" if m in offset_convs else "conv", _conv_macs(m, out)))
        if m.bias is not None:
            found.append(("bias", out.numel()))
    elif isinstance(m, nn.ConvTranspose2d):
        kh, kw = m.kernel_size
        found.append(("conv_transpose", x.numel() * (m.out_channels // m.groups) * kh * kw))
        if m.bias is not None:
            found.append(("bias", out.numel()))
    elif isinstance(m, nn.Linear):
        found.append(("linear", x.numel() * m.out_features))
        if m.bias is not None:
            found.append(("bias", out.numel()))
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        found.append(("bn", x.numel() * (2 if m.affine else 1)))
    elif isinstance(m, _ACTS):
        found.append(("act", out.numel()))
    elif isinstance(m, nn.Sigmoid):
        found.append(("sigmoid", out.numel()))
    elif isinstance(m, _POOLS):
        found.append(("pool", x.numel()))
    elif isinstance(m, (nn.Upsample, Resize)):
        found.append(("upsample", out.numel()))
    return found


def complexity(model: nn.Module, input_shape: Sequence[int], *, device: Union[str, torch.device, None] = "meta",
               training: bool = False) -> Complexity:
    """Counts the parameters, MACs by op type and state-dict size of ``model``.

    Args:
        model: any model built from standard modules, :class:`hybridops.DeformConv2dV2` (counted as
            its main conv + its offset/mask conv) and :class:`hybridops.MixedDepthwiseConv2d` (or the
            reference subclasses).
        input_shape: ``(C, H, W)`` (batch 1) or ``(N, C, H, W)``.
        device: where to run the counting forward. ``"meta"`` (default) runs on a meta-device copy of
            the model: no memory, no compute. ``None`` runs ``model`` itself on its own device.
        training: count in training mode (e.g. HybridNetSeg's side outputs); default eval mode, as ptflops.

    Returns:
        :class:`Complexity` (``params``, ``macs`` by type, ``macs_ptflops``, ``macs_conv``, ``state_dict_mb``).

    Example:
        >>> c = models.complexity(models.create_model("hybridnetseg"), (3, 512, 512))
        >>> c.params, round(c.macs_ptflops / 1e9, 2)
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1,) + shape
    if len(shape) != 4:
        raise ValueError(f"complexity: input_shape must be (C, H, W) or (N, C, H, W), got {tuple(input_shape)}")
    params = sum(p.numel() for p in model.parameters())
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    state_bytes = buf.getbuffer().nbytes

    if device is not None:
        net = copy.deepcopy(model).to(device)
    else:
        net = model
    p0 = next(net.parameters(), None)
    run_device = p0.device if p0 is not None else torch.device("cpu" if device is None else device)
    dtype = p0.dtype if p0 is not None and p0.is_floating_point() else torch.float32

    names = {m: n for n, m in net.named_modules()}
    offset_convs = {m.offset_mask for m in net.modules() if isinstance(m, hybridops.DeformConv2dV2)}
    by_module: dict[str, dict[str, int]] = {}

    def add(m: nn.Module, kind: str, value: int) -> None:
        d = by_module.setdefault(names[m], {})
        d[kind] = d.get(kind, 0) + int(value)

    def hook(m: nn.Module, inputs: tuple, out: Tensor) -> None:
        for kind, value in _module_macs(m, inputs[0], out, offset_convs):
            add(m, kind, value)

    counted = (hybridops.DeformConv2dV2, nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.modules.batchnorm._BatchNorm,
               nn.Sigmoid, nn.Upsample, Resize, hybridops.MixedDepthwiseConv2d) + _ACTS + _POOLS
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, counted)]
    was_training = net.training
    try:
        net.train(training)
        with torch.no_grad():
            net(torch.zeros(shape, device=run_device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)

    macs: dict[str, int] = {}
    for d in by_module.values():
        for k, v in d.items():
            macs[k] = macs.get(k, 0) + v
    return Complexity(params, macs, state_bytes, shape, by_module)
