"""σ-aware distances between VAE encodings (thesis ch. 2, "t-SNE with standard deviations").

Two encodings (μ_i, σ_i), (μ_j, σ_j) [D] are compared dimension by dimension, trusting the
dimensions both are sure of:

    d²(i, j) = Σ_d w_d (μ_id - μ_jd)² / Σ_d w_d,   w_d = 1 / (σ_id² + σ_jd² + 0.01)

(units of μ², a weighted mean of squared differences). The thesis's exact-gradient path omitted
w_d in the numerator; this is the formula as its Barnes-Hut path used it. It is not a metric
(no triangle inequality), so tree searches are not exact for it; here the search is brute
force over row blocks (exact), or re-ranks Euclidean candidates (``candidates`` > 0: approximate,
much cheaper on CPU). Tiled torch on any device: a [rows, N, D] block at a time.
"""
from __future__ import annotations

import math

import torch

from .affinities import Affinities, affinities, knn

#: The constant in w_d (units of σ²) that keeps weights finite where both σ are ~0.
SIGMA_FLOOR = 0.01


def _check(mu: torch.Tensor, sigma: torch.Tensor) -> None:
    if not isinstance(mu, torch.Tensor) or not isinstance(sigma, torch.Tensor):
        raise TypeError("mu and sigma must be torch tensors")
    if mu.dim() != 2 or mu.shape != sigma.shape:
        raise ValueError(f"mu and sigma must both have shape [N, D], got {list(mu.shape)} "
                         f"and {list(sigma.shape)}")


def _pair_d2(mu_a: torch.Tensor, sigma_a: torch.Tensor, mu_b: torch.Tensor,
             sigma_b: torch.Tensor) -> torch.Tensor:
    """The σ-aware d² of broadcast pairs over the last dimension ([..., D] -> [...])."""
    w = 1.0 / (sigma_a * sigma_a + sigma_b * sigma_b + SIGMA_FLOOR)
    diff = mu_a - mu_b
    return (w * diff * diff).sum(-1) / w.sum(-1)


def sigma_d2(mu_a: torch.Tensor, sigma_a: torch.Tensor, mu_b: torch.Tensor,
             sigma_b: torch.Tensor, block_bytes: int = 64 << 20) -> torch.Tensor:
    """σ-aware squared distances [A, B] between encodings a [A, D] and b [B, D] (see the module
    docstring), computed in blocks of rows of a, in float32 or float64 as the input."""
    _check(mu_a, sigma_a)
    _check(mu_b, sigma_b)
    if mu_a.shape[1] != mu_b.shape[1]:
        raise ValueError(f"a has {mu_a.shape[1]} dimensions, b has {mu_b.shape[1]}")
    nb, d = mu_b.shape
    rows = max(1, block_bytes // max(1, 4 * nb * d))
    out = torch.empty(mu_a.shape[0], nb, dtype=mu_a.dtype, device=mu_a.device)
    for i0 in range(0, mu_a.shape[0], rows):
        i1 = min(mu_a.shape[0], i0 + rows)
        out[i0:i1] = _pair_d2(mu_a[i0:i1, None], sigma_a[i0:i1, None], mu_b[None], sigma_b[None])
    return out


def sigma_knn(mu: torch.Tensor, sigma: torch.Tensor, k: int, *, candidates: int = 0,
              block_bytes: int = 64 << 20) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest neighbours of every encoding under the σ-aware distance (itself excluded).

    candidates: 0 = exact brute force (O(N² D)); m > k = re-rank each point's m Euclidean
    nearest neighbours of μ (O(N m D) after a Euclidean kNN): approximate, exact whenever the
    true σ-aware neighbours are among them.

    Returns (d2 [N, k] ascending, idx [N, k] int64) as :func:`em_accel.embed.knn` does, so the
    result can be passed as ``neighbors`` to :func:`em_accel.embed.affinities`.
    """
    _check(mu, sigma)
    n = mu.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, N - 1 = {n - 1}], got {k}")
    if candidates and candidates <= k:
        raise ValueError(f"candidates must be 0 (exact) or > k = {k}, got {candidates}")
    if candidates and candidates < n - 1:
        _, cand = knn(mu, candidates)                                   # [N, m]
        rows = max(1, block_bytes // max(1, 4 * candidates * mu.shape[1]))
        d2 = torch.empty(n, candidates, dtype=mu.dtype, device=mu.device)
        for i0 in range(0, n, rows):
            i1 = min(n, i0 + rows)
            c = cand[i0:i1]
            d2[i0:i1] = _pair_d2(mu[i0:i1, None], sigma[i0:i1, None], mu[c], sigma[c])
        best, order = torch.topk(d2, k, dim=1, largest=False, sorted=True)
        return best, torch.gather(cand, 1, order)
    rows = max(1, block_bytes // max(1, 4 * n * mu.shape[1]))
    d2 = torch.empty(n, k, dtype=mu.dtype, device=mu.device)
    idx = torch.empty(n, k, dtype=torch.int64, device=mu.device)
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        block = sigma_d2(mu[i0:i1], sigma[i0:i1], mu, sigma, block_bytes)
        block[torch.arange(i1 - i0, device=mu.device), torch.arange(i0, i1, device=mu.device)] = math.inf
        d2[i0:i1], idx[i0:i1] = torch.topk(block, k, dim=1, largest=False, sorted=True)
    return d2, idx


def sigma_affinities(mu: torch.Tensor, sigma: torch.Tensor, perplexity: float = 30.0, *,
                     candidates: int = 0, dtype: torch.dtype = torch.float32) -> Affinities:
    """t-SNE input affinities P of VAE encodings under the σ-aware distance: pass the result
    as ``affinities=`` to :func:`em_accel.embed.tsne` (or ``TSNE(affinities=...)``).
    k = 3·perplexity neighbours from :func:`sigma_knn` (``candidates`` as there)."""
    _check(mu, sigma)
    k = int(3 * perplexity)
    if k > mu.shape[0] - 1:
        raise ValueError(f"perplexity {perplexity} is too large for {mu.shape[0]} points "
                         f"(needs 3 * perplexity < N)")
    neighbors = sigma_knn(mu.float(), sigma.float(), k, candidates=candidates)
    return affinities(mu, perplexity, k=k, dtype=dtype, neighbors=neighbors)
