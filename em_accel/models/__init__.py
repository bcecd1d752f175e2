"""Networks and their building blocks (the atrous denoiser of thesis ch. 6 first)."""
from __future__ import annotations

from .blocks import (ASPP, ChannelAffine, ConvBlock, SepBlock, SeparableConv2d, UpBlock,
                     XceptionBlock, make_norm, spectral_normalize, weight_normalize)
from .denoiser import (PRETRAINED_HIGH, PRETRAINED_LOW, AtrousDenoiser, count_parameters,
                       load_pretrained, load_weights)
from .exit_wave import (AmplitudeError, AmplitudeTypeError, ExitWaveDiscriminator, ExitWaveNet,
                        LSGANBalance, load_exit_wave_weights, load_pretrained_exit_wave,
                        reconstruct_exit_wave)
from .tiling import apply_tiled, denoise_image, denoise_tiled, overlap_cost, tile_layout

__all__ = ["AmplitudeError", "AmplitudeTypeError", "ExitWaveDiscriminator", "ExitWaveNet",
           "LSGANBalance", "apply_tiled", "load_exit_wave_weights", "load_pretrained_exit_wave",
           "reconstruct_exit_wave", "PRETRAINED_HIGH", "PRETRAINED_LOW", "ASPP", "AtrousDenoiser", "ChannelAffine", "ConvBlock", "SepBlock",
           "SeparableConv2d", "UpBlock", "XceptionBlock", "count_parameters", "denoise_image",
           "denoise_tiled", "load_pretrained", "load_weights", "make_norm", "overlap_cost", "spectral_normalize",
           "tile_layout", "weight_normalize"]
