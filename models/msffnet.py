"""Lumbar MSFF network: ResNet-18 encoder, a multi-scale feature-fusion (MSFF) bottleneck and a
LinkNet-style transposed-conv decoder, for multi-class lumbar MRI segmentation (8 classes:
background + 7 anatomies).

Layout (channels@resolution for an ``H x W`` input, default widths)::

    encoder  conv1 7x7 s2, BN, ReLU              -> e0  64@H/2
             maxpool, layer1                     -> e1  64@H/4
             layer2                              -> e2 128@H/8
             layer3                              -> e3 256@H/16
             layer4                              -> e4 512@H/32
    msff     8 branches on e4, concat (8*128 = 1024), 1x1 conv -> 512@H/32
    decoder  up4(512 -> 256) ++ e3 -> 512@H/16;  up3(512 -> 128) ++ e2 -> 256@H/8
             up2(256 -> 64) ++ e1 -> 128@H/4;    up1(128 -> 64) ++ e0 -> 128@H/2
    head     bilinear x2 -> 3x3 conv 128->64, BN, ReLU -> 3x3 conv 64->8 (bias)  -> [N, 8, H, W]

The paper leaves the MSFF widths open; the choices made here (all arguments) are: every branch
outputs ``branch_chans=128`` channels (the atrous branches reduce 512->128 with a 1x1 conv first),
the fusion conv maps ``8*128=1024 -> 512``; the pooling branches use ``AvgPool2d(k, stride=k,
ceil_mode=True)`` then a 1x1 conv *with bias and ReLU, no BN* (their maps can be 1x1, where BN
would fail in training at batch size 1), then bilinear upsampling back to the input size.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from models.blocks import ConvBNAct, Resize, check_spatial
from models.registry import register_model

__all__ = ["ResNet18Encoder", "MSFF", "MSFFDecoderBlock", "MSFFNet", "msffnet"]


class ResNet18Encoder(nn.Module):
    """torchvision's ResNet-18 trunk (no avgpool/fc), returning ``[e0, e1, e2, e3, e4]``:
    ``64@H/2, 64@H/4, 128@H/8, 256@H/16, 512@H/32``.

    Args:
        in_chans: 1 (single-channel MRI) or 3.
        pretrained: optional path to a torchvision-format ``resnet18`` state dict (ImageNet weights
            cannot be downloaded here); ``fc.*`` keys are ignored. With ``in_chans=1`` the RGB
            ``conv1`` weight is summed over its input channels (timm's ``adapt_input_conv``).
            ``None`` (default): random init.
    """

    out_channels = (64, 64, 128, 256, 512)
    reductions = (2, 4, 8, 16, 32)

    def __init__(self, in_chans: int = 3, pretrained: Optional[str] = None) -> None:
        super().__init__()
        from torchvision.models import resnet18

        if in_chans not in (1, 3):
            raise ValueError(f"ResNet18Encoder: in_chans must be 1 or 3, got {in_chans}")
        net = resnet18(weights=None)
        if in_chans != 3:
            net.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        if pretrained is not None:
            self.load_torchvision(pretrained)

    def load_torchvision(self, path: str) -> None:
        """Loads a torchvision ``resnet18`` state dict from ``path`` (strict, ``fc.*`` dropped)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        w = state.get("conv1.weight")
        if w is not None and w.shape[1] != self.conv1.in_channels:
            if self.conv1.in_channels != 1:
                raise ValueError(f"cannot adapt conv1.weight {tuple(w.shape)} to {self.conv1.in_channels} channels")
            state["conv1.weight"] = w.sum(dim=1, keepdim=True)
        self.load_state_dict(state, strict=True)

    def forward(self, x: Tensor) -> list[Tensor]:
        e0 = self.relu(self.bn1(self.conv1(x)))
        e1 = self.layer1(self.maxpool(e0))
        e2 = self.layer2(e1)
        e3 = self.layer3(e2)
        e4 = self.layer4(e3)
        return [e0, e1, e2, e3, e4]


class _PoolBranch(nn.Module):
    def __init__(self, in_chans: int, out_chans: int, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.pool = nn.AvgPool2d(kernel_size, stride=kernel_size, ceil_mode=True, count_include_pad=False)
        self.conv = nn.Conv2d(in_chans, out_chans, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.resize = Resize()

    def forward(self, x: Tensor) -> Tensor:
        return self.resize(self.act(self.conv(self.pool(x))), x.shape[-2:])

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


class MSFF(nn.Module):
    """Multi-scale feature fusion: 8 parallel branches on the deepest map, concatenated and fused.

    Branches (each to ``branch_chans``): for each rate in ``rates`` an atrous depthwise-separable branch
    (1x1 conv ``in -> b``, BN, ReLU; 3x3 depthwise at that dilation, BN, ReLU; 1x1 conv ``b -> b``, BN,
    ReLU); one plain 1x1 conv branch (BN, ReLU); for each ``k`` in ``pool_sizes``: ``AvgPool2d(k, k,
    ceil_mode=True)``, 1x1 conv (bias) + ReLU, bilinear upsampling back. Fusion: 1x1 conv
    ``b * n_branches -> out_chans``, BN, ReLU.

    Args:
        in_chans: input channels (512). out_chans: output channels (512).
        branch_chans: width of every branch (128).
        rates: dilation rates of the atrous branches ((1, 3, 5)).
        pool_sizes: average-pooling kernels ((2, 3, 4, 5)).

    Shapes: ``[N, in_chans, h, w] -> [N, out_chans, h, w]``.
    """

    def __init__(self, in_chans: int = 512, out_chans: int = 512, branch_chans: int = 128,
                 rates: Sequence[int] = (1, 3, 5), pool_sizes: Sequence[int] = (2, 3, 4, 5)) -> None:
        super().__init__()
        b = branch_chans
        self.in_chans, self.out_chans, self.branch_chans = in_chans, out_chans, b
        self.rates, self.pool_sizes = tuple(rates), tuple(pool_sizes)
        self.atrous = nn.ModuleList(
            nn.Sequential(ConvBNAct(in_chans, b, 1), ConvBNAct(b, b, 3, groups=b, dilation=r), ConvBNAct(b, b, 1))
            for r in self.rates)
        self.pointwise = ConvBNAct(in_chans, b, 1)
        self.pools = nn.ModuleList(_PoolBranch(in_chans, b, k) for k in self.pool_sizes)
        self.fuse = ConvBNAct(b * (len(self.rates) + 1 + len(self.pool_sizes)), out_chans, 1)

    def forward(self, x: Tensor) -> Tensor:
        outs = [branch(x) for branch in self.atrous]
        outs.append(self.pointwise(x))
        outs += [branch(x) for branch in self.pools]
        return self.fuse(torch.cat(outs, dim=1))

    def extra_repr(self) -> str:
        return (f"{self.in_chans}, {self.out_chans}, branch_chans={self.branch_chans}, rates={self.rates}, "
                f"pool_sizes={self.pool_sizes}")


class MSFFDecoderBlock(nn.Sequential):
    """1x1 conv ``in -> in/4``; 3x3 transposed conv stride 2 (``in/4 -> in/4``); 1x1 conv ``in/4 -> out``;
    each followed by BN and ReLU. Shapes: ``[N, in, h, w] -> [N, out, 2h, 2w]``."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        mid = in_chans // 4
        super().__init__(
            ConvBNAct(in_chans, mid, 1),
            nn.ConvTranspose2d(mid, mid, 3, stride=2, padding=1, output_padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            ConvBNAct(mid, out_chans, 1),
        )


class MSFFNet(nn.Module):
    """Lumbar MSFF network (ResNet-18 + MSFF bottleneck + transposed-conv decoder).

    Args:
        in_chans: 1 (single-channel MRI) or 3 (default 1).
        num_classes: logit channels (default 8: background + 7 anatomies).
        branch_chans: width of each MSFF branch (128).
        rates: MSFF atrous rates ((1, 3, 5)). pool_sizes: MSFF pooling kernels ((2, 3, 4, 5)).
        decoder_chans: output widths of the four decoder blocks, deepest first ((256, 128, 64, 64):
            equal to the skip they are concatenated with).
        head_chans: width of the first 3x3 head conv (64).
        pretrained: optional path to a torchvision ``resnet18`` state dict (see :class:`ResNet18Encoder`).

    Inputs:
        ``x [N, in_chans, H, W]``, H and W divisible by 32 (else ``ValueError``).

    Outputs:
        logits ``[N, num_classes, H, W]`` (train and eval alike).
    """

    input_divisor = 32

    def __init__(self, in_chans: int = 1, num_classes: int = 8, branch_chans: int = 128,
                 rates: Sequence[int] = (1, 3, 5), pool_sizes: Sequence[int] = (2, 3, 4, 5),
                 decoder_chans: Sequence[int] = (256, 128, 64, 64), head_chans: int = 64,
                 pretrained: Optional[str] = None) -> None:
        super().__init__()
        self.in_chans, self.num_classes = in_chans, num_classes
        self.encoder = ResNet18Encoder(in_chans, pretrained)
        enc = self.encoder.out_channels
        self.msff = MSFF(enc[-1], enc[-1], branch_chans, rates, pool_sizes)
        blocks, c = [], enc[-1]
        for out, skip in zip(decoder_chans, enc[-2::-1]):
            blocks.append(MSFFDecoderBlock(c, out))
            c = out + skip
        self.decoder = nn.ModuleList(blocks)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.head = nn.Sequential(ConvBNAct(c, head_chans, 3), nn.Conv2d(head_chans, num_classes, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        check_spatial(x, type(self).__name__, self.in_chans, self.input_divisor)
        feats = self.encoder(x)
        y = self.msff(feats[-1])
        for block, skip in zip(self.decoder, feats[-2::-1]):
            y = torch.cat([block(y), skip], dim=1)
        return self.head(self.upsample(y))

    def extra_repr(self) -> str:
        return f"in_chans={self.in_chans}, num_classes={self.num_classes}"


@register_model
def msffnet(**kwargs) -> MSFFNet:
    """Lumbar MSFF network (ResNet-18 encoder, 1-channel MRI in, 8 classes out)."""
    return MSFFNet(**kwargs)
