"""Networks and their building blocks (the atrous denoiser of thesis ch. 6 first)."""
from __future__ import annotations

from .blocks import (ASPP, ChannelAffine, ConvBlock, SepBlock, SeparableConv2d, UpBlock,
                     XceptionBlock, make_norm, spectral_normalize, weight_normalize)
from .adapt import Adapted, adapt
from .completion import (CompletionResult, PartialScanCompleter, complete_scan,
                         completion_notes)
from .conditioned import (PRETRAINED_CONDITIONED, ConditionedUNet, Denoised, conditioned_notes,
                          denoise_micrograph, load_conditioned)
from .denoiser import (PRETRAINED_HIGH, PRETRAINED_LOW, AtrousDenoiser, LoadedModel,
                       count_parameters, load_pretrained, load_weights, pretrained_notes)
from .exit_wave import (AmplitudeError, AmplitudeTypeError, ExitWaveDiscriminator, ExitWaveNet,
                        LSGANBalance, exit_wave_notes, load_exit_wave_weights,
                        load_pretrained_exit_wave, reconstruct_exit_wave)
from .tiling import apply_tiled, denoise_image, denoise_tiled, overlap_cost, tile_layout

__all__ = ["adapt", "Adapted", "CompletionResult", "PartialScanCompleter", "complete_scan",
           "completion_notes", "ConditionedUNet", "conditioned_notes", "Denoised",
           "denoise_micrograph", "load_conditioned", "PRETRAINED_CONDITIONED", "AmplitudeError", "AmplitudeTypeError", "apply_tiled", "ASPP", "AtrousDenoiser",
           "ChannelAffine", "ConvBlock", "count_parameters", "denoise_image", "denoise_tiled",
           "ExitWaveDiscriminator", "ExitWaveNet", "load_exit_wave_weights", "load_pretrained",
           "load_pretrained_exit_wave", "load_weights", "LoadedModel", "LSGANBalance", "make_norm",
           "overlap_cost", "PRETRAINED_HIGH", "PRETRAINED_LOW", "pretrained_notes",
           "reconstruct_exit_wave", "SeparableConv2d", "SepBlock", "spectral_normalize",
           "tile_layout", "UpBlock", "weight_normalize", "XceptionBlock"]
