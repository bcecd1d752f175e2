"""Poisson shot noise at a given number of counts per pixel (the thesis's ch. 6 noise model).

A clean image ``img`` min–max scaled to [0, 1] is read as the expected detected counts per
pixel divided by ``counts_per_px``: ``counts ~ Poisson(img · counts_per_px)``, so
``counts_per_px`` is the expected count at the brightest pixel [counts/px]. (This is not the
electron dose in e⁻/Å² of :func:`em_accel.sim.imaging.dose_noise`.) The network sees the counts min–max rescaled to [0, 1]; its
target is the clean image rescaled to the noisy input's mean, ``img · mean(noisy)/mean(img)``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .._api import Seed, as_generator

#: The "low dose" regime [counts/px]: 25 + Exp(mean 75), as the released training code.
LOW_COUNTS_OFFSET, LOW_COUNTS_MEAN = 25.0, 75.0
#: The ordinary ("high dose") regime for fine-tuning [counts/px], from the paper's abstract;
#: U(200, 2500).
HIGH_COUNTS_RANGE = (200.0, 2500.0)


class NoisyPair(NamedTuple):
    noisy: torch.Tensor   # min–max scaled counts, [..., H, W], in [0, 1]
    target: torch.Tensor  # clean image scaled to the noisy mean, [..., H, W]
    counts_per_px: torch.Tensor  # counts per pixel used [counts/px], shape [...] (one per image)


def minmax(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each image (last two dims) to [0, 1]; a constant image becomes 0."""
    lo = x.amin((-2, -1), keepdim=True)
    hi = x.amax((-2, -1), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(eps)


def sample_counts_per_px(n: int, regime: str, seed: Seed = None) -> torch.Tensor:
    """``n`` counts per pixel [counts/px] for the dose ``regime`` ``"low"`` (25 + Exp(75)) or
    ``"high"`` (U(200, 2500)), float64; ``seed``: int, None or a CPU torch.Generator."""
    g = as_generator(seed) if regime in ("low", "high") else None
    if regime == "low":
        u = torch.rand(n, generator=g, dtype=torch.float64)
        return LOW_COUNTS_OFFSET - LOW_COUNTS_MEAN * torch.log1p(-u)
    if regime == "high":
        lo, hi = HIGH_COUNTS_RANGE
        return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)
    raise ValueError(f"regime must be 'low' or 'high', got {regime!r}")


def poisson_noise(clean: torch.Tensor, counts_per_px: float | torch.Tensor,
                  seed: Seed = None) -> NoisyPair:
    """Make a (noisy, target) pair from ``clean`` images [..., H, W] at ``counts_per_px``.

    ``clean`` is min–max scaled first. ``counts_per_px`` [counts/px] is a number or one value
    per image (shape ``clean.shape[:-2]``). ``seed``: int, None or a CPU torch.Generator
    (deterministic for a given generator state).
    """
    if clean.dim() < 2:
        raise ValueError(f"clean must have shape [..., H, W], got {list(clean.shape)}")
    if not clean.is_floating_point():
        raise TypeError(f"clean must be a floating tensor, got {clean.dtype}")
    c = torch.as_tensor(counts_per_px, dtype=torch.float64)
    if (c <= 0).any() or not torch.isfinite(c).all():
        raise ValueError(f"counts_per_px must be finite and > 0 counts/px, got {counts_per_px}")
    c = torch.broadcast_to(c, clean.shape[:-2])
    img = minmax(clean.to(torch.float64))
    rate = img * c.to(img.device)[..., None, None]
    counts = torch.poisson(rate, generator=as_generator(seed))
    noisy = minmax(counts)
    scale = noisy.mean((-2, -1), keepdim=True) / img.mean((-2, -1), keepdim=True).clamp_min(1e-12)
    target = img * scale
    return NoisyPair(noisy.to(clean.dtype), target.to(clean.dtype), c)
