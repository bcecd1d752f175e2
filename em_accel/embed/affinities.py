"""Input affinities for t-SNE: kNN (exact, or approximate HNSW on CPU for large N), perplexity
calibration (native), symmetric sparse P."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import InvalidInputError, expect_number, expect_type
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


#: On CPU, ``knn_method="auto"`` switches from exact brute force to approximate HNSW search at
#: this many points. Measured (64-d 10-cluster data, k = 90, 2 shared cores): 10k exact 1.5 s vs
#: HNSW 1.2 s (not worth a recall below 1), 20k 4.2 s vs 2.8 s, 50k ~20 s vs 5.4 s.
APPROX_KNN_MIN_N = 20_000
KNN_METHODS = ("auto", "exact", "approx")


def _hnswlib():
    """The hnswlib module, or None if it is not installed."""
    try:
        import hnswlib
    except ImportError:
        return None
    return hnswlib


def resolve_knn_method(method: str, n: int, device: torch.device) -> str:
    """"exact" or "approx" for ``method`` in KNN_METHODS: "auto" is approx only on CPU, for
    n >= APPROX_KNN_MIN_N and with hnswlib installed (otherwise exact, silently)."""
    if method not in KNN_METHODS:
        raise ValueError(f"knn_method must be one of {KNN_METHODS}, got {method!r}")
    if method == "approx":
        if _hnswlib() is None:
            raise ImportError("knn_method='approx' needs the hnswlib package: "
                              "pip install 'em-accel[embed]' (or pip install hnswlib)")
        return "approx"
    if method == "auto" and device.type == "cpu" and n >= APPROX_KNN_MIN_N \
            and _hnswlib() is not None:
        return "approx"
    return "exact"


def _exact_idx(xf: torch.Tensor, k: int, block_bytes: int) -> torch.Tensor:
    """Indices [N, k] of the exact k nearest neighbours by blocked GEMM + top-k."""
    n = xf.shape[0]
    sq = (xf * xf).sum(1)
    rows = max(1, min(n, block_bytes // (4 * n)))
    idx = torch.empty(n, k, dtype=torch.int64, device=xf.device)
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        d = torch.addmm(sq[None, :], xf[i0:i1], xf.T, beta=1, alpha=-2).add_(sq[i0:i1, None])
        d[torch.arange(i1 - i0, device=xf.device), torch.arange(i0, i1, device=xf.device)] = math.inf
        idx[i0:i1] = torch.topk(d, k, dim=1, largest=False, sorted=True).indices
    return idx


#: Memory [bytes] one tile of the tiled exact kNN (:func:`_tiled_idx`) may use on a GPU: its
#: block of squared distances plus the top-k candidate buffers of its rows.
GPU_KNN_TILE_BYTES = 1 << 30


def knn_tile_shape(n: int, k: int, itemsize: int, budget_bytes: int) -> tuple[int, int]:
    """(rows, cols) of the distance tiles of :func:`_tiled_idx` for N = ``n`` points: the largest
    column count (all N if it fits with at least min(N, 1024) rows; at least k + 1), then as many
    rows as fit, so rows * (cols * itemsize + per-row top-k buffers) <= ``budget_bytes``."""
    per_row = 4 * k * (itemsize + 8)  # running best + tile top-k + their merge (values, int64)
    rows_wanted = min(n, 1024)
    cols = min(n, max(k + 1, (budget_bytes // rows_wanted - per_row) // itemsize))
    rows = min(n, budget_bytes // (cols * itemsize + per_row))
    if rows < 1:
        raise ValueError(f"tile_bytes={budget_bytes} is too small for k={k}: a tile needs at "
                         f"least {cols * itemsize + per_row} bytes")
    return rows, cols


def _tiled_idx(xf: torch.Tensor, k: int, budget_bytes: int) -> torch.Tensor:
    """Indices [N, k] of the exact k nearest neighbours, by tiles of ||x||^2 - 2 x.y^T + ||y||^2
    (one GEMM each) and top-k, merged across column tiles; memory bounded by ``budget_bytes``
    (see :func:`knn_tile_shape`) whatever N, so large N runs in few, large GPU launches."""
    n = xf.shape[0]
    rows, cols = knn_tile_shape(n, k, xf.element_size(), budget_bytes)
    sq = (xf * xf).sum(1)
    idx = torch.empty(n, k, dtype=torch.int64, device=xf.device)
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        best_d = best_i = None
        for j0 in range(0, n, cols):
            j1 = min(n, j0 + cols)
            d = torch.addmm(sq[None, j0:j1], xf[i0:i1], xf[j0:j1].T, beta=1, alpha=-2)
            d.add_(sq[i0:i1, None])
            lo, hi = max(i0, j0), min(i1, j1)
            if lo < hi:  # the tile holds the points themselves: exclude them
                r = torch.arange(lo, hi, device=xf.device)
                d[r - i0, r - j0] = math.inf
            td, ti = torch.topk(d, min(k, j1 - j0), dim=1, largest=False, sorted=False)
            ti += j0
            if best_d is None:
                best_d, best_i = td, ti
            else:
                md, pos = torch.topk(torch.cat((best_d, td), 1), k, dim=1, largest=False,
                                     sorted=False)
                best_d, best_i = md, torch.gather(torch.cat((best_i, ti), 1), 1, pos)
        idx[i0:i1] = best_i
    return idx


def _hnsw_idx(xf: torch.Tensor, k: int, m: int = 16, ef: int = 100) -> torch.Tensor:
    """Indices [N, k] of approximate k nearest neighbours from an hnswlib HNSW graph
    (Malkov & Yashunin 2018; M = m links, ef_construction = ef, query ef = max(ef, k + 1)),
    built and queried on CPU with torch's thread count."""
    import numpy as np

    hnswlib = _hnswlib()
    n, dim = xf.shape
    data = np.ascontiguousarray(xf.detach().to("cpu", torch.float32).numpy())
    index = hnswlib.Index(space="l2", dim=dim)
    index.init_index(max_elements=n, ef_construction=ef, M=m, random_seed=0)
    index.set_num_threads(max(1, torch.get_num_threads()))
    index.add_items(data, np.arange(n))
    index.set_ef(max(ef, k + 1))
    labels, _ = index.knn_query(data, k=k + 1)
    # Drop each point itself (normally first; with duplicates it may sit elsewhere or be
    # missing, in which case the (k+1)-th neighbour goes instead).
    not_self = labels != np.arange(n)[:, None]
    keep = np.argsort(~not_self, axis=1, kind="stable")[:, :k]
    idx = np.take_along_axis(labels, keep, axis=1).astype(np.int64)
    return torch.from_numpy(idx).to(xf.device)


def knn(x: torch.Tensor, k: int, block_bytes: int = 64 << 20,
        method: str = "exact", tile_bytes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest neighbours of every row of ``x`` [N, D] (itself excluded).

    method: "exact" = brute force on x's device: on CPU one GEMM and a top-k per block of rows
    (``block_bytes`` of distances each); on CUDA tiles of rows x columns of at most
    ``tile_bytes`` (default GPU_KNN_TILE_BYTES) with top-k merged across column tiles, so
    millions of points take a few thousand large launches; "approx" = HNSW graph search (hnswlib) on CPU, recall ~0.99 on clustered data
    (ImportError if hnswlib is missing); "auto" = approx on CPU for N >= APPROX_KNN_MIN_N when
    hnswlib is installed, exact otherwise (and always exact on GPU).

    Returns (d2 [N, k] squared Euclidean distances in x's units^2, ascending, computed exactly
    for the neighbours found; idx [N, k] int64), on x's device.
    """
    expect_type("x", x, torch.Tensor)
    if x.dim() != 2:
        raise InvalidInputError(f"x must have shape [N, D], got {list(x.shape)}")
    n = x.shape[0]
    k = int(expect_number("k", k, integer=True))
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, N - 1 = {n - 1}], got {k}")
    xf = x if x.dtype in (torch.float32, torch.float64) else x.float()
    if resolve_knn_method(method, n, x.device) == "approx":
        idx = _hnsw_idx(xf, k)
    elif xf.device.type == "cuda" or tile_bytes is not None:
        idx = _tiled_idx(xf, k, GPU_KNN_TILE_BYTES if tile_bytes is None else int(tile_bytes))
    else:
        idx = _exact_idx(xf, k, block_bytes)
    # Recompute the kept distances directly: the GEMM form loses digits to cancellation.
    d2 = ops.tsne_neighbor_d2(xf.contiguous(), idx.contiguous())
    d2, order = torch.sort(d2, dim=1)
    return d2, torch.gather(idx, 1, order)


def affinities(x: torch.Tensor, perplexity: float = 30.0, k: int | None = None, *,
               dtype: torch.dtype = torch.float32, tol: float = 1e-5, max_iter: int = 200,
               neighbors: tuple[torch.Tensor, torch.Tensor] | None = None,
               knn_method: str = "exact") -> Affinities:
    """t-SNE input affinities of ``x`` [N, D].

    k = min(N - 1, floor(3 * perplexity)) nearest neighbours (``knn_method`` as in :func:`knn`:
    "exact" default, "approx", "auto"); per-point precision by
    native bisection so each row's entropy is ln(perplexity) nats; p_ij = (p_j|i + p_i|j) / 2N.
    ``neighbors`` = (d2, idx) skips the kNN search (e.g. a custom distance).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a tensor of shape [N, D], got {getattr(x, 'shape', type(x))}")
    n = x.shape[0]
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {n}")
    expect_number("perplexity", perplexity, 1.0, n, low_open=True)
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
    d2, idx = knn(x, k, method=knn_method) if neighbors is None else neighbors
    pc, _ = ops.tsne_perplexity(d2.to(dtype).contiguous(), float(perplexity), tol, max_iter)
    rows = torch.arange(n, device=x.device).repeat_interleave(k)
    indptr, indices, values = ops.symmetric_csr(rows, idx.reshape(-1), pc.reshape(-1).double(), n)
    values = (values / (2.0 * n)).to(dtype)
    return Affinities(indptr, indices, values, n, float(perplexity))
