"""Fused segmentation losses: Triton kernels for CUDA tensors, the same math in PyTorch for CPU tensors.

Functional:
    bce_dice_loss(input, target, *, bce_weight=0.5, smooth=1.0, from_logits=True, per_image=False,
                  reduction='mean')
    mixed_loss(inputs, target, *, weights=None, mean_weight=1.0, paper_scaling=False, bce_weight=0.5,
               smooth=1.0, from_logits=True, per_image=False, reduction='mean')
    size_adaptive_cross_entropy(input, target, weight=None, *, alpha=1.0, ignore_index=-100,
                                reduction='mean', per_image=True, normalize='pixels', check_labels=False)
Modules: BCEDiceLoss, MixedLoss, SizeAdaptiveCELoss (same arguments).

Triton is optional: without it (or for CPU tensors) every loss runs its PyTorch path
(``hybridops.losses.reference``, also the test reference and the benchmark baseline). Set
``HYBRIDOPS_LOSSES_BACKEND=torch`` to force that path on CUDA tensors too.
"""
from hybridops.losses import _reference as reference
from hybridops.losses._common import HAS_TRITON
from hybridops.losses.bce_dice import BCEDiceLoss, bce_dice_loss
from hybridops.losses.mixed import MixedLoss, mixed_loss
from hybridops.losses.size_adaptive_ce import SizeAdaptiveCELoss, size_adaptive_cross_entropy

__all__ = [
    "bce_dice_loss", "mixed_loss", "size_adaptive_cross_entropy",
    "BCEDiceLoss", "MixedLoss", "SizeAdaptiveCELoss",
    "reference", "HAS_TRITON",
]
