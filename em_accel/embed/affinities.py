"""Input affinities for t-SNE: exact kNN, perplexity calibration (native), symmetric sparse P."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..ops import tsne as ops


@dataclass
class Affinities:
    """Symmetric t-SNE input affinities P (sum 1, no diagonal) in CSR form, on one device.

    indptr [N+1] int64, indices [nnz] int64 (columns sorted per row), values [nnz] float.
    """

    indptr: torch.Tensor
    indices: torch.Tensor
    values: torch.Tensor
    n: int
    perplexity: float

    def to(self, device=None, dtype=None) -> "Affinities":
        return Affinities(self.indptr.to(device), self.indices.to(device),
                          self.values.to(device=device, dtype=dtype or self.values.dtype),
                          self.n, self.perplexity)

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    def plogp(self) -> float:
        """sum_ij p_ij ln p_ij [nats] (the constant part of KL(P || Q))."""
        v = self.values.double()
        v = v[v > 0]
        return float((v * torch.log(v)).sum())

    def dense(self) -> torch.Tensor:
        """The dense N x N matrix (small N only: tests and diagnostics)."""
        rows = torch.repeat_interleave(torch.arange(self.n, device=self.indptr.device),
                                       self.indptr[1:] - self.indptr[:-1])
        out = torch.zeros(self.n, self.n, dtype=self.values.dtype, device=self.values.device)
        out[rows, self.indices] = self.values
        return out


def knn(x: torch.Tensor, k: int, block_bytes: int = 64 << 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest neighbours of every row of ``x`` [N, D] (itself excluded), by blocked
    brute force (one GEMM and a top-k per block of rows), on x's device.

    Returns (d2 [N, k] squared Euclidean distances in x's units^2, ascending; idx [N, k] int64).
    """
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, N - 1 = {n - 1}], got {k}")
    xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
    sq = (xf * xf).sum(1)
    rows = max(1, min(n, block_bytes // (4 * n)))
    idx = torch.empty(n, k, dtype=torch.int64, device=x.device)
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        d = torch.addmm(sq[None, :], xf[i0:i1], xf.T, beta=1, alpha=-2).add_(sq[i0:i1, None])
        d[torch.arange(i1 - i0, device=x.device), torch.arange(i0, i1, device=x.device)] = math.inf
        idx[i0:i1] = torch.topk(d, k, dim=1, largest=False, sorted=True).indices
    # Recompute the kept distances directly: the GEMM form loses digits to cancellation.
    d2 = torch.empty(n, k, dtype=xf.dtype, device=x.device)
    step = max(1, (16 << 20) // max(1, k * x.shape[1] * 4))
    for i0 in range(0, n, step):
        diff = xf[i0:i0 + step, None, :] - xf[idx[i0:i0 + step]]
        d2[i0:i0 + step] = (diff * diff).sum(-1)
    d2, order = torch.sort(d2, dim=1)
    return d2, torch.gather(idx, 1, order)


def affinities(x: torch.Tensor, perplexity: float = 30.0, k: int | None = None,
               dtype: torch.dtype = torch.float32, tol: float = 1e-5, max_iter: int = 200,
               neighbors: tuple[torch.Tensor, torch.Tensor] | None = None) -> Affinities:
    """t-SNE input affinities of ``x`` [N, D].

    k = min(N - 1, floor(3 * perplexity)) exact nearest neighbours; per-point precision by
    native bisection so each row's entropy is ln(perplexity) nats; p_ij = (p_j|i + p_i|j) / 2N.
    ``neighbors`` = (d2, idx) skips the kNN search (e.g. a custom distance).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a tensor of shape [N, D], got {getattr(x, 'shape', type(x))}")
    n = x.shape[0]
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {n}")
    if k is None:
        k = int(3 * perplexity)
        if k > n - 1:
            raise ValueError(f"perplexity {perplexity} is too large for {n} points: t-SNE uses "
                             f"3 * perplexity = {k} neighbours, so it needs perplexity <= "
                             f"{(n - 1) / 3:.1f}")
    k = int(k)
    if not 1.0 < perplexity <= k:
        raise ValueError(f"perplexity must be in (1, k] with k = {k} neighbours for N = {n} "
                         f"points (perplexity < N/3), got {perplexity}")
    d2, idx = knn(x, k) if neighbors is None else neighbors
    pc, _ = ops.tsne_perplexity(d2.to(dtype).contiguous(), float(perplexity), tol, max_iter)
    rows = torch.arange(n, device=x.device).repeat_interleave(k)
    indptr, indices, values = ops.symmetric_csr(rows, idx.reshape(-1), pc.reshape(-1).double(), n)
    values = (values / (2.0 * n)).to(dtype)
    return Affinities(indptr, indices, values, n, float(perplexity))
