"""How much to smooth a denoiser's output, chosen per image by Stein's unbiased risk estimate.

For an image ``y = x + n`` with white Gaussian noise of known standard deviation σ and any
(weakly differentiable) estimate ``f(y)``, Stein's lemma gives an unbiased estimate of the mean
squared error against the unknown ``x`` from ``y`` alone (Stein 1981):

    SURE(f) = ‖f(y) − y‖²/N − σ² + 2σ²·div f(y)/N.

The divergence of a network is estimated by one random probe (Monte-Carlo SURE, Ramani, Blu &
Unser 2008): ``div f ≈ bᵀ(f(y + εb) − f(y))/ε`` with ``b`` standard normal. A ReLU network is
piecewise linear, so a small ε makes this the exact directional derivative; one probe suffices
for the images of 10⁴ px and more that micrographs are.

Used here to pick a Gaussian post-smoothing width ``t`` of the conditioned denoiser's output,
``G_t * f(y)`` with ``t`` in :data:`SMOOTHING_PX` (``t = 0``: the network alone). Blurring is
linear, so one extra network pass prices every width: ``div(G_t f) = bᵀ G_t (f(y+εb) − f(y))/ε``.
Why: at low dose the small shipped network under-smooths images whose detail is buried in the
noise (it leaves mottled residual noise where an oracle-tuned Gaussian filter leaves a smooth
image); the risk estimate sees that from the image itself, with no reference. In the network's
domain (scaled Anscombe counts) the noise is close to Gaussian with σ = 1/s, except below ~1
count/px, where the true variance is lower and the estimate errs towards more smoothing.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch.nn import functional as F

#: Gaussian post-smoothing widths tried [px] (0 = none).
SMOOTHING_PX = (0.0, 0.4, 0.7, 1.0, 1.5, 2.2, 3.0)
#: Probe step as a fraction of σ (small: the network is piecewise linear).
PROBE_STEP = 0.02


class SureChoice(NamedTuple):
    """The width picked by :func:`sure_smoothing` and the risk of every width tried."""

    width_px: float                  # Gaussian σ of the post-smoothing [px] (0: none)
    risks: dict[float, float]        # estimated MSE per px in the denoiser's domain, per width


def blur(image: torch.Tensor, width_px: float) -> torch.Tensor:
    """``image`` [H, W] blurred by a Gaussian of σ = ``width_px`` px (0: a copy), separably, in
    float32 (float64 convolutions are ~10x slower on CPU), reflect edges. The kernel is cut at
    3σ and at the image size (reflect padding needs pad < size)."""
    if width_px <= 0:
        return image.clone()
    half = min(math.ceil(3 * width_px), min(image.shape) - 1)
    x = torch.arange(-half, half + 1, dtype=torch.float64)
    k = torch.exp(-x * x / (2 * width_px ** 2))
    k = (k / k.sum()).float().to(image.device)
    y = F.pad(image.float()[None, None], (half, half, half, half), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    return F.conv2d(y, k.view(1, 1, -1, 1))[0, 0]


def sure_smoothing(z: torch.Tensor, denoise: Callable[[torch.Tensor], torch.Tensor],
                   sigma: float, widths: tuple[float, ...] = SMOOTHING_PX,
                   seed: int = 0) -> tuple[torch.Tensor, SureChoice]:
    """Denoise ``z`` [H, W] and post-smooth the result by the width of least estimated risk.

    Args:
        z: noisy image whose noise is white with standard deviation ``sigma`` (same units).
        denoise: maps an [H, W] image to its estimate (called twice: on ``z`` and on a
            probe-perturbed ``z``).
        sigma: the noise standard deviation, > 0.
        widths: Gaussian post-smoothing widths to choose from [px]; include 0 to allow none.
        seed: seed of the Monte-Carlo probe.

    Returns ``(estimate [H, W] float64, SureChoice)``.
    """
    if z.dim() != 2:
        raise ValueError(f"z must be 2-D [H, W], got shape {list(z.shape)}")
    if not sigma > 0 or not math.isfinite(sigma):
        raise ValueError(f"sigma must be a positive finite noise level, got {sigma}")
    if not widths or min(widths) < 0:
        raise ValueError(f"widths must be a non-empty tuple of widths >= 0 px, got {widths}")
    g = torch.Generator(device="cpu").manual_seed(seed)
    probe = torch.randn(z.shape, generator=g, dtype=torch.float64).to(z.device)
    eps = PROBE_STEP * sigma
    f0 = denoise(z).double()
    response = (denoise((z.double() + eps * probe).to(z.dtype)).double() - f0) / eps
    zd, n = z.double(), z.numel()
    risks, best = {}, None
    for w in widths:
        est = blur(f0, w).double()
        div = float((probe * blur(response, w).double()).sum())
        risk = float(((est - zd) ** 2).mean()) - sigma ** 2 + 2 * sigma ** 2 * div / n
        risks[float(w)] = risk
        if best is None or risk < best[0]:
            best = (risk, float(w), est)
    return best[2], SureChoice(best[1], risks)
