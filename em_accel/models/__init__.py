"""Networks and their building blocks (the atrous denoiser of thesis ch. 6 first)."""
from __future__ import annotations

from .blocks import (ASPP, ChannelAffine, ConvBlock, SepBlock, SeparableConv2d, UpBlock,
                     XceptionBlock, make_norm, spectral_normalize, weight_normalize)
from .denoiser import (PRETRAINED_HIGH, PRETRAINED_LOW, AtrousDenoiser, count_parameters,
                       load_pretrained, load_weights)
from .tiling import denoise_image, denoise_tiled, overlap_cost, tile_layout

__all__ = ["PRETRAINED_HIGH", "PRETRAINED_LOW", "ASPP", "AtrousDenoiser", "ChannelAffine", "ConvBlock", "SepBlock",
           "SeparableConv2d", "UpBlock", "XceptionBlock", "count_parameters", "denoise_image",
           "denoise_tiled", "load_pretrained", "load_weights", "make_norm", "overlap_cost", "spectral_normalize",
           "tile_layout", "weight_normalize"]
