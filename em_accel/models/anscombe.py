"""The Anscombe transform of Poisson counts and its algebraic inverse, shared by the conditioned
denoiser (:mod:`em_accel.models.conditioned`) and its post-filter (:mod:`em_accel.models.sure`)."""
from __future__ import annotations

import torch


def anscombe(counts: torch.Tensor) -> torch.Tensor:
    """``2·sqrt(c + 3/8)`` (clamped at c = −3/8): Poisson noise → unit variance."""
    return 2.0 * torch.sqrt((counts + 0.375).clamp_min(0.0))


def inverse_anscombe(z: torch.Tensor) -> torch.Tensor:
    """Algebraic inverse of :func:`anscombe` for a *clean* estimate, clamped at 0 counts."""
    return ((z.clamp_min(0.0) / 2.0) ** 2 - 0.375).clamp_min(0.0)
