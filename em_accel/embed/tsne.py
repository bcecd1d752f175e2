"""t-SNE optimisation on the native gradient kernels, and a scikit-learn-style estimator.

Gradient convention: openTSNE/FIt-SNE (no factor 4), so learning rates are 4x smaller than
scikit-learn's for the same step. See docs/tsne.md.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import torch

from .. import _native
from .._api import progress_counter
from ..errors import expect_number
from ..ops import tsne as ops
from ..ops._common import torch_threads
from .affinities import Affinities, affinities as compute_affinities, knn, resolve_knn_method
from .fft_forces import bounding_box, choose_grid, convolve_grid, repulsive_forces
from .pca import pca

# Per-iteration cost model for method="auto": seconds per exact pair, per FFT grid node (padded,
# three charges) and per point spread and gathered. CPU: measured on the 2-core development
# machine (load ~2, 2 threads, a 50k-point map 166 units across subsampled to 10k/20k/50k:
# exact 1.44e-10 s/pair; FFT at m = 700 14.3, 15.2, 28.4 ms); CUDA: estimates. Only the ratios
# within a device matter.
_COST = {"cpu": (1.44e-10, 5.5e-9, 3.5e-7), "cuda": (1.0e-12, 2.0e-9, 0.0)}


@dataclass
class TSNEInfo:
    """What a run did: KL(P||Q) [nats] every ``kl_every`` iterations, phase timings [s]."""

    kl: list[tuple[int, float]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    methods: dict[str, int] = field(default_factory=dict)
    learning_rate: tuple[float, float] = (0.0, 0.0)

    @property
    def kl_divergence(self) -> float:
        return self.kl[-1][1] if self.kl else math.nan


def kl_divergence(P: Affinities, y: torch.Tensor, method: str = "exact") -> float:
    """KL(P || Q) [nats] of embedding ``y`` [N, 2] under affinities ``P``, with Z exact
    (method="exact", O(N^2)) or interpolated ("fft")."""
    y = y.to(device=P.values.device, dtype=P.values.dtype).contiguous()
    _, plogw = ops.tsne_attractive(y, P.indptr, P.indices, P.values, True)
    _, z = repulsive_forces(y, method)
    return P.plogp() - float(plogw.sum()) + math.log(z)


def knn_preservation(x: torch.Tensor, y: torch.Tensor, k: int = 10) -> float:
    """Mean fraction of each point's k nearest neighbours in ``x`` that are among its k
    nearest neighbours in ``y`` (exact kNN in both)."""
    _, ix = knn(x.float(), k)
    _, iy = knn(y.float(), k)
    hits = (ix[:, :, None] == iy[:, None, :]).any(-1).float()
    return float(hits.mean())


def _pick_method(method: str, n: int, grid_m: int, device: torch.device) -> str:
    if method != "auto":
        return method
    pair, node, point = _COST["cuda" if device.type == "cuda" else "cpu"]
    return "exact" if pair * n * n <= node * (2 * grid_m) ** 2 + point * n else "fft"


def _native_threads() -> int:
    """Threads of the native CPU kernels (EM_ACCEL_NUM_THREADS, else OpenMP's count)."""
    env = os.environ.get("EM_ACCEL_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else max(1, int(_native.max_threads()))


def locality_order(P: Affinities) -> torch.Tensor | None:
    """A relabelling of the points (new index r = old index perm[r]) that puts each point's
    neighbours in P at nearby indices: reverse Cuthill-McKee on P's graph (SciPy; None when
    SciPy is missing). The attractive pass then reads y_j from nearby memory (measured at 50k
    points: 17% faster), and so do spreading and gathering. Done once, in ~0.05 s at 50k."""
    try:
        import numpy as np
        import scipy.sparse as sp
        from scipy.sparse.csgraph import reverse_cuthill_mckee
    except ImportError:
        return None
    a = sp.csr_matrix((np.ones(P.nnz, dtype=np.int8), P.indices.cpu().numpy(),
                       P.indptr.cpu().numpy()), shape=(P.n, P.n))
    return torch.from_numpy(reverse_cuthill_mckee(a, symmetric_mode=True).astype(np.int64))


def initial_embedding(x: torch.Tensor, init: str | torch.Tensor, seed: int, *,
                      dtype: torch.dtype, device: torch.device | str | None = None
                      ) -> torch.Tensor:
    """PCA (first two components, rescaled to std(PC1) = 1e-4, Kobak & Berens 2019), random
    (N(0, 1e-4^2)), or a given [N, 2] array (used as is)."""
    n = x.shape[0]
    if isinstance(init, torch.Tensor):
        if tuple(init.shape) != (n, 2):
            raise ValueError(f"init must have shape [{n}, 2], got {list(init.shape)}")
        return init.to(device=device, dtype=dtype).contiguous().clone()
    if init == "pca":
        y = pca(x.double(), 2)
        y = y / y[:, 0].std() * 1e-4
    elif init == "random":
        g = torch.Generator().manual_seed(seed)
        y = torch.randn(n, 2, generator=g, dtype=torch.float64) * 1e-4
    else:
        raise ValueError(f"init must be 'pca', 'random' or an [N, 2] tensor, got {init!r}")
    return y.to(device=device, dtype=dtype).contiguous()


def tsne(x: torch.Tensor, perplexity: float = 30.0, n_iter: int = 750, *, device=None,
         init: str | torch.Tensor = "pca", learning_rate: float | str = "auto",
         early_exaggeration: float = 12.0, early_exaggeration_iter: int = 250,
         exaggeration: float = 1.0, initial_momentum: float = 0.5, final_momentum: float = 0.8,
         min_gain: float = 0.01, max_step_norm: float = 5.0, method: str = "auto",
         dtype: torch.dtype = torch.float32, seed: int = 0, kl_every: int = 50,
         progress: bool = True, affinities: Affinities | None = None,
         knn_method: str = "auto",
         fft_nodes: int = 4, fft_intervals_per_unit: float = 1.0, fft_min_intervals: int = 16,
         reorder: bool = True,
         callback: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Embed ``x`` [N, D] in 2-D with t-SNE (van der Maaten & Hinton 2008); returns y [N, 2]
    (float32 by default) on ``device``. :func:`tsne_with_info` takes the same arguments and
    also returns what the run did.

    Args:
        x: [N, D] features (any float dtype; numpy arrays accepted).
        perplexity: effective number of neighbours; k = 3 * perplexity neighbours.
        n_iter: total iterations, early exaggeration included.
        device: where to optimise ("cpu", "cuda", ...); default x's device.
        init: "pca", "random" or an [N, 2] array.
        learning_rate: "auto" = N / alpha in each phase (alpha the phase's exaggeration:
            N/12 during early exaggeration, N afterwards; Belkina et al. 2019, openTSNE >= 0.7),
            or a number used in both phases. No factor 4 (sklearn's rates are 4x larger).
        early_exaggeration, early_exaggeration_iter: alpha and length of the first phase.
        exaggeration: alpha after it (1: plain t-SNE).
        initial_momentum, final_momentum: momentum in the first and second phase.
        min_gain, max_step_norm: gain floor; per-point step clip [embedding units] (0: off).
        method: "exact" (tiled O(N^2)), "fft" (FIt-SNE interpolation) or "auto" (whichever
            costs less at the current grid size, re-chosen every iteration).
        dtype: optimisation dtype (float32 default; float64 for checks).
        seed: int, seed of the random init (the PCA init and the rest are deterministic).
        kl_every: compute KL(P||Q) every this many iterations (and at the end).
        progress: show a progress line on stderr (only when it is a terminal).
        affinities: precomputed P (skips kNN and calibration).
        knn_method: "auto" (approximate HNSW search via hnswlib on CPU for N >= 20k when it
            is installed, else exact), "exact" (brute force) or "approx" (HNSW; ImportError
            without hnswlib). See :func:`em_accel.embed.knn`.
        fft_nodes, fft_intervals_per_unit: interpolation nodes per box (4: about 0.5% force
            error, the same final KL as openTSNE's FFT; 3 as FIt-SNE: about 2%, ~1% worse
            KL, 20% faster), boxes per embedding unit.
        fft_min_intervals: at least this many boxes per dimension (16: the early, small map
            gets a small grid; FIt-SNE uses 50).
        reorder: on CPU, optimise in a locality order of P's graph (:func:`locality_order`;
            faster memory access, same result up to rounding); y is returned in input order.
        callback: called as callback(iteration, y) after each KL evaluation.
    """
    return tsne_with_info(x, perplexity, n_iter, device=device, init=init,
                          learning_rate=learning_rate, early_exaggeration=early_exaggeration,
                          early_exaggeration_iter=early_exaggeration_iter,
                          exaggeration=exaggeration, initial_momentum=initial_momentum,
                          final_momentum=final_momentum, min_gain=min_gain,
                          max_step_norm=max_step_norm, method=method, dtype=dtype, seed=seed,
                          kl_every=kl_every, progress=progress, affinities=affinities,
                          knn_method=knn_method, fft_nodes=fft_nodes,
                          fft_intervals_per_unit=fft_intervals_per_unit,
                          fft_min_intervals=fft_min_intervals, reorder=reorder,
                          callback=callback).embedding


class TSNEResult(NamedTuple):
    """An embedding y [N, 2] and what the run did (:class:`TSNEInfo`)."""

    embedding: torch.Tensor
    info: TSNEInfo


def tsne_with_info(x: torch.Tensor, perplexity: float = 30.0, n_iter: int = 750, *, device=None,
                   init: str | torch.Tensor = "pca", learning_rate: float | str = "auto",
                   early_exaggeration: float = 12.0, early_exaggeration_iter: int = 250,
                   exaggeration: float = 1.0, initial_momentum: float = 0.5,
                   final_momentum: float = 0.8, min_gain: float = 0.01,
                   max_step_norm: float = 5.0, method: str = "auto",
                   dtype: torch.dtype = torch.float32, seed: int = 0, kl_every: int = 50,
                   progress: bool = True, affinities: Affinities | None = None,
                   knn_method: str = "auto", fft_nodes: int = 4,
                   fft_intervals_per_unit: float = 1.0, fft_min_intervals: int = 16,
                   reorder: bool = True,
                   callback: Callable[[int, torch.Tensor], None] | None = None) -> TSNEResult:
    """:func:`tsne` (same arguments) that also returns the KL history, timings and learning
    rates: ``TSNEResult(embedding, info)``."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.dim() != 2:
        raise ValueError(f"x must have shape [N, D], got {list(x.shape)}")
    if dtype not in ops.REAL_DTYPES:
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    expect_number("n_iter", n_iter, 0, 10**7, integer=True)  # beyond: a hang, not a map
    expect_number("early_exaggeration_iter", early_exaggeration_iter, 0, 10**7, integer=True)
    if n_iter < 0 or early_exaggeration_iter < 0:
        raise ValueError(f"n_iter and early_exaggeration_iter must be >= 0, got {n_iter}, "
                         f"{early_exaggeration_iter}")
    resolve_knn_method(knn_method, x.shape[0], torch.device("cpu"))  # validate early
    if method not in ("auto", "exact", "fft"):
        raise ValueError(f"method must be 'auto', 'exact' or 'fft', got {method!r}")
    device = torch.device(device) if device is not None else x.device
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device} requested but CUDA is not available")
    x = x.to(device)
    if not x.is_floating_point():
        x = x.float()
    n = x.shape[0]
    info = TSNEInfo()
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    t0 = time.perf_counter()
    if affinities is None:
        P = compute_affinities(x, perplexity, dtype=dtype, knn_method=knn_method)
    else:
        if affinities.n != n:
            raise ValueError(f"affinities are for {affinities.n} points, x has {n}")
        P = affinities.to(device, dtype)
    sync()
    info.timings["affinities"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    y = initial_embedding(x, init, seed, dtype=dtype, device=device)
    update = torch.zeros_like(y)
    gains = torch.ones_like(y)
    if learning_rate == "auto":
        lr_ee, lr_final = max(n / early_exaggeration, 50.0), max(n / exaggeration, 50.0)
    else:
        lr_ee = lr_final = float(learning_rate)
        if not lr_ee > 0:
            raise ValueError(f"learning_rate must be > 0 or 'auto', got {learning_rate}")
    info.learning_rate = (lr_ee, lr_final)
    plogp = P.plogp()
    # Optimise in a locality order of P's graph (CPU); y is returned in the input order.
    perm = locality_order(P) if reorder and device.type == "cpu" else None
    indptr, cols, values = P.indptr, P.indices, P.values
    if perm is not None:
        indptr, cols, values = ops.permute_csr(indptr, cols, values, perm)
        y, inv = y[perm].contiguous(), torch.argsort(perm)
    unpermute = (lambda t: t) if perm is None else (lambda t: t[inv])
    # int32 column indices: the attractive pass streams 8 instead of 12 bytes per entry.
    if n < 2**31:
        cols = cols.to(torch.int32)
    y -= y.mean(0)
    bbox = bounding_box(y)
    bar = progress_counter(n_iter, progress, desc="t-SNE", unit="it")
    done = 0
    fft_threads = _native_threads() if device.type == "cpu" else 1
    with torch_threads(1 if device.type == "cpu" else None):  # see torch_threads
        for it in range(n_iter):
            ee = it < early_exaggeration_iter
            alpha = early_exaggeration if ee else exaggeration
            want_kl = (it + 1) % kl_every == 0 or it == n_iter - 1
            # the CSR is checked on the first pass only (it does not change)
            attr, plogw = ops.tsne_attractive(y, indptr, cols, values, want_kl, check=it == 0)
            grid = choose_grid(bbox, fft_nodes, fft_intervals_per_unit, fft_min_intervals)
            chosen = _pick_method(method, n, grid.m, device)
            info.methods[chosen] = info.methods.get(chosen, 0) + 1
            if chosen == "exact":
                rep, zrow = ops.tsne_repulsive_exact(y)
            else:
                args = (grid.n_boxes, grid.p, grid.lower_x, grid.lower_y, grid.box_width)
                pot = convolve_grid(ops.tsne_interp_spread(y, *args), grid, threads=fft_threads)
                rep, zrow = ops.tsne_interp_gather(y, pot, *args)
            z = float(zrow.sum())
            if want_kl:  # KL of the current y under the unexaggerated P
                kl = plogp - float(plogw.sum()) + math.log(z)
                info.kl.append((it + 1, kl))
                bar.update(it + 1 - done)
                done = it + 1
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(KL=f"{kl:.4f}", refresh=False)
                if callback is not None:
                    callback(it + 1, unpermute(y))
            y, update, gains, box = ops.tsne_step(
                y, update, gains, attr, rep, alpha, 1.0 / z,
                initial_momentum if ee else final_momentum, lr_ee if ee else lr_final, min_gain,
                max_step_norm)
            bbox = box.tolist()
    bar.close()
    y = unpermute(y)
    sync()
    info.timings["optimize"] = time.perf_counter() - t0
    return TSNEResult(y, info)


class TSNE:
    """scikit-learn-style t-SNE estimator over :func:`tsne`.

    ``TSNE(perplexity=30, n_iter=750, **kwargs).fit_transform(x)`` returns a numpy array
    [N, 2]; afterwards ``embedding_``, ``kl_divergence_`` [nats], ``n_iter_``,
    ``learning_rate_`` and ``info_`` are set. kwargs are those of :func:`tsne`.
    """

    def __init__(self, n_components: int = 2, perplexity: float = 30.0, n_iter: int = 750,
                 **kwargs):
        if n_components != 2:
            raise ValueError(f"only n_components=2 is supported, got {n_components}")
        self.n_components = n_components
        self.perplexity = perplexity
        self.n_iter = n_iter
        self.kwargs = kwargs

    def get_params(self, deep: bool = True) -> dict:
        return {"n_components": self.n_components, "perplexity": self.perplexity,
                "n_iter": self.n_iter, **self.kwargs}

    def fit(self, x, y=None) -> "TSNE":
        emb, info = tsne_with_info(x, self.perplexity, self.n_iter, **self.kwargs)
        self.embedding_ = emb.cpu().numpy()
        self.info_ = info
        self.kl_divergence_ = info.kl_divergence
        self.n_iter_ = self.n_iter
        self.learning_rate_ = info.learning_rate
        return self

    def fit_transform(self, x, y=None):
        return self.fit(x).embedding_
