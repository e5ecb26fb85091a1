"""Segmentation models built on hybridops: HybridNetSeg, the lumbar MSFF network and a U-Net baseline.

    models.list_models()                      -> ['hybridnetseg', 'msffnet', 'unet']
    models.create_model(name, **kwargs)       -> nn.Module
    models.complexity(model, input_shape)     -> params, MACs by op type, state-dict MB
"""
from models.registry import create_model, is_model, list_models, register_model
from models.blocks import MNBlock, DecoderBlock, InvertedResidual, SqueezeExcite
from models.hybridnetseg import HybridNetSeg
from models.msffnet import MSFFNet
from models.unet import UNet
from models.complexity import Complexity, complexity

__all__ = ["create_model", "list_models", "is_model", "register_model", "complexity", "Complexity",
           "HybridNetSeg", "MSFFNet", "UNet", "MNBlock", "DecoderBlock", "InvertedResidual", "SqueezeExcite"]
