"""Principal component analysis (exact, deterministic signs) for t-SNE inputs and inits."""
from __future__ import annotations

from typing import NamedTuple

import torch


class PCAResult(NamedTuple):
    """A fitted PCA: ``scores`` [N, K] (units of x), ``components`` [K, D] (unit axes) and
    ``explained_variance`` [K] (units of x²), all in x's dtype."""

    scores: torch.Tensor
    components: torch.Tensor
    explained_variance: torch.Tensor


def pca(x: torch.Tensor, n_components: int = 50, center: bool = True) -> torch.Tensor:
    """Scores [N, n_components] of ``x`` [N, D] on its first principal axes, in x's dtype
    (see :func:`pca_fit` for the axes and variances)."""
    return pca_fit(x, n_components, center).scores


def pca_fit(x: torch.Tensor, n_components: int = 50, center: bool = True) -> PCAResult:
    """Project ``x`` [N, D] onto its first ``n_components`` principal axes.

    Exact: eigendecomposition of the D x D covariance in float64 (D <= 4096), else a thin SVD.
    Each axis's sign is fixed so that its largest-magnitude loading is positive, so results are
    reproducible across runs and devices.

    Returns:
        :class:`PCAResult` (scores, components, explained_variance).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"x must have shape [N, D], got {list(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"x must be floating point, got {x.dtype}")
    n, d = x.shape
    if not 1 <= n_components <= min(n, d):
        raise ValueError(f"n_components must be in [1, min(N, D) = {min(n, d)}], got {n_components}")
    xd = x.double()
    if center:
        xd = xd - xd.mean(0)
    if d <= 4096:
        cov = xd.T @ xd / max(n - 1, 1)
        evals, evecs = torch.linalg.eigh(cov)
        order = torch.argsort(evals, descending=True)[:n_components]
        axes, var = evecs[:, order].T, evals[order]
    else:
        _, s, vh = torch.linalg.svd(xd, full_matrices=False)
        axes, var = vh[:n_components], s[:n_components] ** 2 / max(n - 1, 1)
    idx = axes.abs().argmax(1)
    signs = torch.sign(axes.gather(1, idx[:, None]))
    signs[signs == 0] = 1
    axes = axes * signs
    scores = (xd @ axes.T).to(x.dtype)
    return PCAResult(scores, axes.to(x.dtype), var.clamp_min(0).to(x.dtype))
