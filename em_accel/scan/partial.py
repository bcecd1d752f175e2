"""Partial scans: sample an image along a path and form the completion network's input.

``partial_scan`` reads an image along a :class:`~em_accel.scan.paths.ScanPath` with the native
sampler (optionally with shot/detector noise) and rasterises the probes, with the thesis's
nearest-neighbour infill. ``blur_path`` and ``low_dwell_noise`` reproduce the thesis's
"blurred path" input variant (ch. 4, train.py of arXiv:1905.13667): a 3x3 Gaussian blur of the
path (sigma 0.8, OpenCV's automatic sigma for 3x3) gives a fractional dwell mask m in [0, 1], and
pixels with little dwell get extra noise, detection = m*(m*img + 2*(1 - m)*U(0,1)*img_blurred).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from .._api import Seed, as_generator
from ..errors import InvalidInputError, expect_number, expect_type
from ..ops.scan import Raster, scan_rasterize, scan_sample
from .paths import ScanPath


class PartialScan(NamedTuple):
    values: torch.Tensor  # [B, P] probe values in scan order
    raster: Raster        # image / mask / infilled / counts / source, each [B, H, W]


def gaussian_kernel(size: int, sigma: float, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised 2-D Gaussian [size, size]; sigma [px]."""
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    g = g / g.sum()
    return torch.outer(g, g).to(dtype)


def gaussian_blur(images: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Blur [B, H, W] (or [H, W]) with a size x size Gaussian, reflect padding (no edge repeat,
    like OpenCV's default border)."""
    expect_type("images", images, torch.Tensor)
    size = int(expect_number("size", size, 1, 1 << 16, integer=True))
    expect_number("sigma", sigma, 0.0, 1e6, unit="px", low_open=True)
    if images.dim() not in (2, 3) or images.numel() == 0:
        raise InvalidInputError(f"images must be a non-empty [B, H, W] or [H, W] tensor, got "
                                f"shape {list(images.shape)}")
    squeeze = images.dim() == 2
    x = images[None] if squeeze else images
    k = gaussian_kernel(size, sigma, dtype=x.dtype, device=x.device)[None, None]
    pad = size // 2
    out = F.conv2d(F.pad(x[:, None], (pad,) * 4, mode="reflect"), k)[:, 0]
    return out[0] if squeeze else out


def partial_scan(images: torch.Tensor, path: ScanPath, *, mode: str = "nearest",
                 counts_per_intensity: float | None = None, read_noise: float = 0.0,
                 seed: int = 0) -> PartialScan:
    """Sample images [B, H, W] (or [H, W]) along ``path`` and rasterise with infill.

    Args:
        images: intensities, float32/float64 (CPU or CUDA); shape must match path.shape.
        path: probe positions (the same path for every image).
        mode, counts_per_intensity, read_noise, seed: as :func:`em_accel.ops.scan_sample`.
    """
    expect_type("images", images, torch.Tensor)
    expect_type("path", path, ScanPath)
    squeeze = images.dim() == 2
    x = images[None] if squeeze else images
    if tuple(x.shape[-2:]) != tuple(path.shape):
        raise ValueError(f"images must have spatial shape {list(path.shape)} (the path's), "
                         f"got {list(x.shape[-2:])}")
    pos = path.positions.to(x.device)[None].expand(x.shape[0], -1, -1)
    values = scan_sample(x, pos, mode, counts_per_intensity=counts_per_intensity,
                         read_noise=read_noise, seed=seed)
    raster = scan_rasterize(values, pos, path.shape)
    if squeeze:
        values, raster = values[0], Raster(*(t[0] for t in raster))
    return PartialScan(values, raster)


def dwell_mask(path: ScanPath, *, device: torch.device | str | None = None) -> torch.Tensor:
    """[H, W] mask of the time spent on each pixel, clipped to [0, 1] (thesis gridlike masks).

    Each probe deposits its dwell (1 when the path has none) in the pixel it lands in; the sum
    per pixel is clipped to 1, as the thesis clips its deposited random walks.
    """
    dwell = path.dwell if path.dwell is not None else torch.ones(len(path))
    pos = path.positions.to(device)[None].double()
    r = scan_rasterize(dwell.to(device)[None].double(), pos, path.shape)
    return (r.image * r.counts)[0].clamp(0.0, 1.0).float()


def blur_path(mask: torch.Tensor) -> torch.Tensor:
    """The thesis's blurred path: 3x3 Gaussian (sigma 0.8) of a binary mask, in [0, 1]."""
    return gaussian_blur(mask, 3, 0.8).clamp(0.0, 1.0)


def low_dwell_noise(images: torch.Tensor, dwell_mask: torch.Tensor, seed: Seed = None
                    ) -> torch.Tensor:
    """Thesis input with extra noise on low-dwell pixels, rescaled to [0, 1].

    detection = m*(m*img + 2*(1 - m)*U(0,1)*img_b) with img_b the 5x5 (sigma 2.5) blurred image
    min-max normalised to [-1, 1]; pixels with m = 0 are set to -1; the result is min-max
    rescaled to [0, 1] per image. ``images`` are expected in [-1, 1] (thesis normalisation).
    ``seed`` (int, None or a CPU torch.Generator) draws U(0,1).
    """
    blurred = gaussian_blur(images, 5, 2.5)
    lo = blurred.amin(dim=(-2, -1), keepdim=True)
    hi = blurred.amax(dim=(-2, -1), keepdim=True)
    img_b = 2 * (blurred - lo) / (hi - lo).clamp(min=1e-12) - 1
    u = torch.rand(images.shape, generator=as_generator(seed), dtype=images.dtype).to(images.device)
    m = dwell_mask
    det = m * (m * images + 2 * (1 - m) * u * img_b)
    det = torch.where(m > 0, det, torch.full_like(det, -1.0))
    lo = det.amin(dim=(-2, -1), keepdim=True)
    hi = det.amax(dim=(-2, -1), keepdim=True)
    return (det - lo) / (hi - lo).clamp(min=1e-12)
