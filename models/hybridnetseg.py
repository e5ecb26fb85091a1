"""HybridNetSeg: a MixNet-style encoder with deformable convolutions and an M2U-Net decoder, for
binary retinal-vessel segmentation (as its authors' first release defines it; see issue 5).

Layout (channels@resolution for an ``H x W`` input)::

    stem   3x3 conv s2 3->16, BN, ReLU                                   -> s0  16@H/2
    stage1 DCN(16); MNBlocks 16->24 s2, 24->24, 24->40 (se), 40->40 (se)  -> b1  40@H/4
    stage2 DCN(40); MNBlocks 40->80 s2, 3 x 80->80 (se)                   -> b2  80@H/8
    stage3 DCN(80); MNBlocks 80->80 s2, 80->120, 120->120 (se)            -> b3 120@H/16
    d4 = dec(up(b3), b2: 200->100)  @H/8     side4 = 1x1 conv(d4) -> 1
    d3 = dec(up(d4), b1: 140->70)   @H/4     side3 = 1x1 conv(d3) -> 1
    d2 = dec(up(d3), s0: 86->43)    @H/2     side2 = 1x1 conv(d2) -> 1
    d1 = dec(up(d2), x: 46->1)      @H       (ends in BN: the logits)
"""
from __future__ import annotations

from typing import Union

import torch
from torch import Tensor, nn

from models.blocks import (ConvBNAct, DecoderBlock, MNBlock, OpsArg, check_spatial, deform_conv, ops_repr, resolve_ops,
                           stage_features)
from models.registry import register_model

__all__ = ["HybridNetSegEncoder", "HybridNetSegDecoder", "HybridNetSeg", "hybridnetseg"]

# (in, out, kernel_sizes, exp_groups, proj_groups, stride, expand, se) per MNBlock, per stage.
# Each stage starts with DeformConv2dV2(in, in, 3, padding=1) on its input.
STAGES = (
    ((16, 24, (3,), 2, 2, 2, 6, 0.0),
     (24, 24, (3,), 2, 2, 1, 3, 0.0),
     (24, 40, (3, 5, 7), 1, 1, 1, 6, 0.5),
     (40, 40, (3, 5), 2, 2, 1, 6, 0.5)),
    ((40, 80, (3, 5, 7), 1, 2, 2, 6, 0.25),)
    + ((80, 80, (3, 5), 1, 2, 1, 6, 0.25),) * 3,
    ((80, 80, (3, 5, 7, 9), 2, 2, 2, 6, 0.5),
     (80, 120, (3, 5), 2, 2, 1, 3, 0.5),
     (120, 120, (3, 5), 2, 2, 1, 3, 0.5)),
)


class HybridNetSegEncoder(nn.Module):
    """Stem + three stages (a DCN then MNBlocks). ``forward(x)`` returns the skips
    ``[s0 16@H/2, b1 40@H/4, b2 80@H/8, b3 120@H/16]``.

    Args:
        in_chans: image channels (3).
        ops: "hybridops" (compiled DCN/MixConv), "reference" (pure PyTorch, same state dict), or a
            mapping ``{"deform_conv": ..., "mixconv": ...}`` choosing per op; the DCN also takes
            "torchvision" (``torchvision.ops.deform_conv2d``, the benchmarks' peer).
    """

    out_channels = (16, 40, 80, 120)
    reductions = (2, 4, 8, 16)

    def __init__(self, in_chans: int = 3, ops: OpsArg = "hybridops") -> None:
        super().__init__()
        ops = resolve_ops(ops)
        self.stem = ConvBNAct(in_chans, 16, 3, stride=2)
        self.stages = nn.ModuleList()
        for blocks in STAGES:
            layers = [deform_conv(blocks[0][0], ops["deform_conv"])]
            layers += [MNBlock(i, o, k, eg, pg, s, e, se, ops=ops["mixconv"]) for i, o, k, eg, pg, s, e, se in blocks]
            self.stages.append(nn.Sequential(*layers))

    def forward(self, x: Tensor) -> list[Tensor]:
        return stage_features(x, self.stem, self.stages)


class HybridNetSegDecoder(nn.Module):
    """M2U-Net decoder: four :class:`DecoderBlock` (``expand_ratio`` 0.15), the last one taking the raw
    image as its skip and ending in BN (the logits).

    ``forward(x, feats)`` with ``feats = [s0, b1, b2, b3]`` returns ``[d1, d2, d3, d4]``:
    ``d1 [N, num_classes, H, W]``, ``d2 [N, 43, H/2, W/2]``, ``d3 [N, 70, H/4, W/4]``, ``d4 [N, 100, H/8, W/8]``.
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 1, expand_ratio: float = 0.15,
                 encoder_channels: tuple[int, ...] = (16, 40, 80, 120)) -> None:
        super().__init__()
        s0, b1, b2, b3 = encoder_channels
        d4 = (b3 + b2) // 2
        d3 = (d4 + b1) // 2
        d2 = (d3 + s0) // 2
        self.channels = (num_classes, d2, d3, d4)
        self.dec4 = DecoderBlock(b3, b2, d4, expand_ratio)
        self.dec3 = DecoderBlock(d4, b1, d3, expand_ratio)
        self.dec2 = DecoderBlock(d3, s0, d2, expand_ratio)
        self.dec1 = DecoderBlock(d2, in_chans, num_classes, expand_ratio)

    def forward(self, x: Tensor, feats: list[Tensor]) -> list[Tensor]:
        s0, b1, b2, b3 = feats
        d4 = self.dec4(b3, b2)
        d3 = self.dec3(d4, b1)
        d2 = self.dec2(d3, s0)
        d1 = self.dec1(d2, x)
        return [d1, d2, d3, d4]


class HybridNetSeg(nn.Module):
    """HybridNetSeg for binary vessel segmentation (709,946 parameters with the defaults).

    Args:
        in_chans: input image channels (default 3).
        num_classes: output logit channels (default 1, binary).
        decoder_expand_ratio: hidden width of the decoder's inverted residuals, ``round(C_in * ratio)``
            (default 0.15 as in M2U-Net).
        ops: "hybridops" (default; compiled :class:`hybridops.DeformConv2dV2` and
            :class:`hybridops.MixedDepthwiseConv2d`) or "reference" (the pure-PyTorch references with
            the same parameters, so state dicts move freely between the two), or a mapping choosing
            per op, e.g. ``{"deform_conv": "hybridops", "mixconv": "reference"}``.

    Inputs:
        ``x [N, in_chans, H, W]``, H and W divisible by 16 (else ``ValueError``).

    Outputs:
        eval mode: the logits ``d1 [N, num_classes, H, W]``;
        training mode: the list ``[d1 [N, nc, H, W], side2 [N, 1, H/2, W/2], side3 [N, 1, H/4, W/4],
        side4 [N, 1, H/8, W/8]]`` of logits for the deep-supervision loss (side outputs are computed at
        their block's resolution; the loss upsamples them).

    Example:
        >>> model = models.create_model("hybridnetseg").eval()
        >>> model(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """

    input_divisor = 16

    def __init__(self, in_chans: int = 3, num_classes: int = 1, decoder_expand_ratio: float = 0.15,
                 ops: OpsArg = "hybridops") -> None:
        super().__init__()
        self.in_chans, self.num_classes, self.ops = in_chans, num_classes, ops_repr(resolve_ops(ops))
        self.decoder_expand_ratio = decoder_expand_ratio
        self.encoder = HybridNetSegEncoder(in_chans, ops)
        self.decoder = HybridNetSegDecoder(in_chans, num_classes, decoder_expand_ratio,
                                           self.encoder.out_channels)
        _, d2, d3, d4 = self.decoder.channels
        self.side2 = nn.Conv2d(d2, 1, 1, bias=True)
        self.side3 = nn.Conv2d(d3, 1, 1, bias=True)
        self.side4 = nn.Conv2d(d4, 1, 1, bias=True)

    def forward(self, x: Tensor) -> Union[Tensor, list[Tensor]]:
        check_spatial(x, type(self).__name__, self.in_chans, self.input_divisor)
        feats = self.encoder(x)
        d1, d2, d3, d4 = self.decoder(x, feats)
        if not self.training:
            return d1
        return [d1, self.side2(d2), self.side3(d3), self.side4(d4)]

    def extra_repr(self) -> str:
        s = f"in_chans={self.in_chans}, num_classes={self.num_classes}, ops={self.ops!r}"
        if self.decoder_expand_ratio != 0.15:
            s += f", decoder_expand_ratio={self.decoder_expand_ratio}"
        return s


@register_model
def hybridnetseg(**kwargs) -> HybridNetSeg:
    """HybridNetSeg (retinal vessels, binary): 709,946 params, ~3.5 GMACs at 3x512x512."""
    return HybridNetSeg(**kwargs)
