"""Principal component analysis (exact, deterministic signs) for t-SNE inputs and inits."""
from __future__ import annotations

import torch


def pca(x: torch.Tensor, n_components: int = 50, center: bool = True,
        return_components: bool = False):
    """Project ``x`` [N, D] onto its first ``n_components`` principal axes.

    Exact: eigendecomposition of the D x D covariance in float64 (D <= 4096), else a thin SVD.
    Each axis's sign is fixed so that its largest-magnitude loading is positive, so results are
    reproducible across runs and devices.

    Returns:
        scores [N, n_components] in x's dtype (units of x); with ``return_components``, also
        the axes [n_components, D] and the explained variances [n_components] (units of x^2).
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
    if return_components:
        return scores, axes.to(x.dtype), var.clamp_min(0).to(x.dtype)
    return scores
