"""Image-quality metrics: MSE, PSNR and SSIM.

SSIM comes from established implementations: scikit-image's ``structural_similarity`` (the
one the thesis used, then ``compare_ssim``) for NumPy evaluation, and pytorch-msssim for
differentiable batched tensors.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error over the last two dims; shape ``pred.shape[:-2]``."""
    if pred.shape != target.shape:
        raise ValueError(f"pred {list(pred.shape)} and target {list(target.shape)} differ")
    return ((pred - target) ** 2).mean((-2, -1))


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image peak signal-to-noise ratio [dB] for a signal range ``data_range``."""
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    return 10.0 * torch.log10(data_range ** 2 / mse(pred, target).clamp_min(1e-20))


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image SSIM of [B, C, H, W] tensors (pytorch-msssim, 11-px Gaussian window σ 1.5);
    differentiable; shape [B]."""
    from pytorch_msssim import ssim as _ssim

    if pred.dim() != 4 or pred.shape != target.shape:
        raise ValueError(f"pred and target must both be [B, C, H, W], got {list(pred.shape)} "
                         f"and {list(target.shape)}")
    return _ssim(pred, target, data_range=data_range, size_average=False)


def ssim_numpy(pred: np.ndarray, target: np.ndarray, data_range: float | None = None) -> float:
    """SSIM of two 2-D arrays with scikit-image (7×7 uniform window, its defaults).

    ``data_range`` defaults to the target's range (max − min).
    """
    from skimage.metrics import structural_similarity

    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if data_range is None:
        data_range = float(target.max() - target.min()) or 1.0
    return float(structural_similarity(pred, target, data_range=data_range))


def mean_and_sem(values: np.ndarray | list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std / sqrt(n))."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("values must not be empty")
    sem = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")
    return float(v.mean()), sem


class Comparison(NamedTuple):
    """Paired comparison of per-item errors A against B on the same items (images, waves)."""

    mean_a: float
    mean_b: float
    diff: float              # mean(A - B)
    ci_low: float            # bootstrap 95% interval of diff
    ci_high: float
    relative: float          # diff / mean_b
    ratio_low: float         # bootstrap 95% interval of mean(A) / mean(B)
    ratio_high: float
    lower: int               # items where A < B

    @property
    def ratio(self) -> float:
        return self.mean_a / self.mean_b


def paired_bootstrap(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, *,
                     resamples: int = 10_000, seed: int = 0) -> Comparison:
    """Bootstrap 95% intervals of mean(a - b) and of mean(a) / mean(b) over paired per-item
    errors a, b [N] (one resampling of the items serves both)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"a and b must be equal non-empty 1-D arrays, got {a.shape} and {b.shape}")
    d = a - b
    idx = np.random.default_rng(seed).integers(0, len(d), (resamples, len(d)))
    lo, hi = np.percentile(d[idx].mean(1), [2.5, 97.5])
    with np.errstate(divide="ignore", invalid="ignore"):
        rlo, rhi = np.percentile(a[idx].mean(1) / b[idx].mean(1), [2.5, 97.5])
    return Comparison(float(a.mean()), float(b.mean()), float(d.mean()), float(lo), float(hi),
                      float(d.mean() / b.mean()), float(rlo), float(rhi), int((d < 0).sum()))
