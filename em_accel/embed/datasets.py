"""Synthetic clustered data for tests and benchmarks (no downloads)."""
from __future__ import annotations

import torch

from .._api import Seed, as_generator


def gaussian_mixture(n: int, dim: int = 64, clusters: int = 10, rank: int = 8, seed: Seed = 0, *,
                     dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Clustered latents like a VAE's: a mixture of ``clusters`` Gaussians in ``dim`` dims with
    Dirichlet(5) weights, centres ~ N(0, I), each a rank-``rank`` factor covariance (scale
    U(0.6, 1.4)) plus 0.3^2 isotropic noise.

    ``seed``: int, None or a CPU torch.Generator. Returns (x [n, dim], labels [n] int64).
    """
    g = as_generator(seed)
    gamma = -torch.log(torch.rand(clusters, 5, generator=g, dtype=torch.float64)).sum(1)
    weights = gamma / gamma.sum()  # Dirichlet(5): normalised Gamma(5, 1) draws
    labels = torch.multinomial(weights, n, replacement=True, generator=g)
    centres = torch.randn(clusters, dim, generator=g, dtype=torch.float64)
    factors = torch.randn(clusters, dim, rank, generator=g, dtype=torch.float64) / dim ** 0.5
    scale = 0.6 + 0.8 * torch.rand(clusters, generator=g, dtype=torch.float64)
    z = torch.randn(n, rank, generator=g, dtype=torch.float64)
    x = centres[labels] + scale[labels, None] * torch.einsum("ndr,nr->nd", factors[labels], z)
    x = x + 0.3 * torch.randn(n, dim, generator=g, dtype=torch.float64)
    return x.to(dtype), labels
