"""Building blocks shared by the em-accel networks.

Separable and atrous convolutions, the normaliser choice of the thesis's TF code, Xception-style
residual blocks, atrous spatial pyramid pooling (ASPP) and spectral/weight normalisation
helpers. Spatial sizes are in pixels; every block keeps ``padding = dilation * (k // 2)`` so a
stride-1 block preserves the size and a stride-2 block halves an even size.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

Norm = Literal["affine", "batch", "none"]


class ChannelAffine(nn.Module):
    """Learned per-channel ``x * weight + bias``.

    This is what the thesis's batch-norm layers compute: they were built with
    ``is_training=False``, so their moving statistics stay at mean 0, variance 1 (a quirk of
    the released code). Unlike real batch norm it behaves the same for batch size 1 and for
    tiles.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def make_norm(kind: Norm, channels: int) -> nn.Module:
    """Normaliser by name: ``"affine"`` (the released code's effective BN), ``"batch"``
    (``nn.BatchNorm2d``, ε 1e-3 as in tf.contrib), or ``"none"``."""
    if kind == "affine":
        return ChannelAffine(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.001)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'affine', 'batch' or 'none', got {kind!r}")


class SeparableConv2d(nn.Module):
    """Depthwise (optionally atrous, optionally strided) k×k convolution then 1×1 pointwise.

    Depth multiplier 1, no bias (a normaliser follows), as slim's ``separable_conv2d``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        pad = dilation * (kernel_size // 2)
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride, pad, dilation,
                                   groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class SepBlock(nn.Sequential):
    """The thesis's "sep" unit: separable conv → norm → ReLU6 (atrous rate ``dilation``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1,
                 norm: Norm = "affine") -> None:
        super().__init__(SeparableConv2d(in_channels, out_channels, 3, stride, dilation),
                         make_norm(norm, out_channels), nn.ReLU6())


class ConvBlock(nn.Sequential):
    """Plain k×k convolution (stride, atrous rate) → norm → ReLU6."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 dilation: int = 1, norm: Norm = "affine", activation: bool = True) -> None:
        pad = dilation * (kernel_size // 2)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad,
                                             dilation, bias=norm == "none"),
                                   make_norm(norm, out_channels)]
        if activation:
            layers.append(nn.ReLU6())
        super().__init__(*layers)


class UpBlock(nn.Sequential):
    """3×3 transposed convolution, stride 2 (doubles H and W) → norm → ReLU6."""

    def __init__(self, in_channels: int, out_channels: int, norm: Norm = "affine") -> None:
        super().__init__(nn.ConvTranspose2d(in_channels, out_channels, 3, 2, 1, output_padding=1,
                                            bias=False),
                         make_norm(norm, out_channels), nn.ReLU6())


class XceptionBlock(nn.Module):
    """A stack of sep units with a residual shortcut.

    ``channels`` lists each unit's output width; the last unit has stride ``stride``. The shortcut
    is the identity when input and output shapes agree, otherwise a 1×1 convolution with the
    same stride → norm → ReLU6 (the thesis's 'res').
    """

    def __init__(self, in_channels: int, channels: list[int], stride: int = 1, dilation: int = 1,
                 norm: Norm = "affine") -> None:
        super().__init__()
        if not channels:
            raise ValueError("channels must list at least one unit width")
        units, c = [], in_channels
        for i, out in enumerate(channels):
            last = i == len(channels) - 1
            units.append(SepBlock(c, out, stride if last else 1, dilation, norm))
            c = out
        self.units = nn.Sequential(*units)
        if stride == 1 and in_channels == c:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = ConvBlock(in_channels, c, 1, stride, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.units(x) + self.shortcut(x)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabv3+), as in the thesis's denoiser.

    Branches: 1×1 conv; a sep 3×3 unit at each atrous rate; and the "image-level" branch, which
    in ``pool="identity"`` mode is the input itself + norm + ReLU6 (the released code resizes
    the input to its own size, a quirk we keep), or in ``pool="global"`` mode DeepLab's
    global average pool + 1×1 conv broadcast back. Branches are concatenated and projected by a
    1×1 conv → norm → ReLU6.
    """

    def __init__(self, in_channels: int, branch_channels: int, out_channels: int,
                 rates: tuple[int, ...] = (6, 12, 18), norm: Norm = "affine",
                 pool: Literal["identity", "global"] = "identity") -> None:
        super().__init__()
        if pool not in ("identity", "global"):
            raise ValueError(f"pool must be 'identity' or 'global', got {pool!r}")
        self.pool = pool
        self.conv1 = ConvBlock(in_channels, branch_channels, 1, norm=norm)
        self.atrous = nn.ModuleList(SepBlock(in_channels, branch_channels, 1, r, norm) for r in rates)
        if pool == "identity":
            self.image = nn.Sequential(make_norm(norm, in_channels), nn.ReLU6())
            image_channels = in_channels
        else:
            self.image = ConvBlock(in_channels, branch_channels, 1, norm=norm)
            image_channels = branch_channels
        total = branch_channels * (1 + len(rates)) + image_channels
        self.project = ConvBlock(total, out_channels, 1, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool == "identity":
            image = self.image(x)
        else:
            image = self.image(x.mean((2, 3), keepdim=True)).expand(-1, -1, *x.shape[2:])
        branches = [self.conv1(x), *(a(x) for a in self.atrous), image]
        return self.project(torch.cat(branches, 1))


def spectral_normalize(module: nn.Module, n_power_iterations: int = 1) -> nn.Module:
    """Apply spectral normalisation (1 power iteration, as the thesis's GANs) to every conv and
    linear layer in ``module``, in place; returns ``module``."""
    for name, child in list(module.named_modules()):
        if isinstance(child, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.utils.parametrizations.spectral_norm(child, n_power_iterations=n_power_iterations)
    return module


def weight_normalize(module: nn.Module) -> nn.Module:
    """Apply weight normalisation ``w = g · v / ||v||`` to every conv and linear layer, in place,
    with ``g`` initialised so the layer's function is unchanged; returns ``module``."""
    for _, child in list(module.named_modules()):
        if isinstance(child, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.utils.parametrizations.weight_norm(child)
    return module


def upsample_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize without corner alignment (tf.image.resize_images' default)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
