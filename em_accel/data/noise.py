"""Poisson dose noise (thesis ch. 6 noise model, SEED_SPEC §4.2).

A clean image ``img`` min–max scaled to [0, 1] is read as the expected electron counts per
pixel divided by the dose: ``counts ~ Poisson(img · dose)`` with ``dose`` in counts per pixel
(e⁻/px at the brightest pixel). The network sees the counts min–max rescaled to [0, 1]; its
target is the clean image rescaled to the noisy input's mean, ``img · mean(noisy)/mean(img)``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

#: Dose ranges, counts per pixel. Low: 25 + Exp(mean 75), as the released training code.
LOW_DOSE_OFFSET, LOW_DOSE_MEAN = 25.0, 75.0
#: Ordinary ("high") doses for fine-tuning, from the paper's abstract; U(200, 2500).
HIGH_DOSE_RANGE = (200.0, 2500.0)


class NoisyPair(NamedTuple):
    noisy: torch.Tensor   # min–max scaled counts, [..., H, W], in [0, 1]
    target: torch.Tensor  # clean image scaled to the noisy mean, [..., H, W]
    dose: torch.Tensor    # counts per pixel used, shape [...] (one per image)


def minmax(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each image (last two dims) to [0, 1]; a constant image becomes 0."""
    lo = x.amin((-2, -1), keepdim=True)
    hi = x.amax((-2, -1), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(eps)


def sample_dose(n: int, regime: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` doses [counts/px] for ``regime`` ``"low"`` (25 + Exp(75)) or ``"high"``
    (U(200, 2500)), float64."""
    if regime == "low":
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        return LOW_DOSE_OFFSET - LOW_DOSE_MEAN * torch.log1p(-u)
    if regime == "high":
        lo, hi = HIGH_DOSE_RANGE
        return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)
    raise ValueError(f"regime must be 'low' or 'high', got {regime!r}")


def poisson_noise(clean: torch.Tensor, dose: float | torch.Tensor,
                  generator: torch.Generator | None = None) -> NoisyPair:
    """Make a (noisy, target) pair from ``clean`` images [..., H, W] at ``dose`` counts/px.

    ``clean`` is min–max scaled first. ``dose`` is a number or one value per image (shape
    ``clean.shape[:-2]``). Deterministic for a given ``generator`` state.
    """
    if clean.dim() < 2:
        raise ValueError(f"clean must have shape [..., H, W], got {list(clean.shape)}")
    if not clean.is_floating_point():
        raise TypeError(f"clean must be a floating tensor, got {clean.dtype}")
    dose_t = torch.as_tensor(dose, dtype=torch.float64)
    if (dose_t <= 0).any() or not torch.isfinite(dose_t).all():
        raise ValueError(f"dose must be finite and > 0 counts/px, got {dose}")
    dose_t = torch.broadcast_to(dose_t, clean.shape[:-2])
    img = minmax(clean.to(torch.float64))
    rate = img * dose_t.to(img.device)[..., None, None]
    counts = torch.poisson(rate, generator=generator)
    noisy = minmax(counts)
    scale = noisy.mean((-2, -1), keepdim=True) / img.mean((-2, -1), keepdim=True).clamp_min(1e-12)
    target = img * scale
    return NoisyPair(noisy.to(clean.dtype), target.to(clean.dtype), dose_t)
