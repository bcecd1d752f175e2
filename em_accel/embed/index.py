"""Exact top-k image search over a collection's features, saved beside its map, and the
placement of new images into an existing t-SNE map without recomputing it.

An :class:`Index` holds features [N, D] (e.g. encoder embeddings or VAE means μ), optionally
VAE standard deviations σ [N, D] for the σ-aware distance, the map coordinates [N, 2] (t-SNE
and uniformly separated), and per-item names and metadata. It is saved as
``index.safetensors`` (tensors) + ``index.json`` (names, metadata, settings), never pickle.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

from . import dihedral
from .sigma_distance import sigma_d2

METRICS = ("euclidean", "sigma")
METHODS = ("auto", "exhaustive", "dihedral")
TENSORS = "index.safetensors"
META = "index.json"


class SearchResult(NamedTuple):
    indices: torch.Tensor    # [Q, k] int64, nearest first
    distances: torch.Tensor  # [Q, k] (squared Euclidean, or σ-aware d²), ascending


class Placement(NamedTuple):
    map: torch.Tensor        # [Q, 2] t-SNE coordinates (the index's `embedding` space)
    uniform: torch.Tensor | None  # [Q, 2] in the uniformly separated map, if the index has one


def _as_tensor(a, name: str, dtype=torch.float32) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    if not t.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {t.dtype}")
    return t.to(dtype)


class Index:
    """Exact k-nearest-neighbour search over ``features`` [N, D].

    Args:
        features: [N, D] float features of the collection.
        sigma: optional [N, D] VAE standard deviations (enables ``metric="sigma"``).
        embedding: optional [N, 2] t-SNE map of the features (enables :meth:`place`).
        uniform: optional [N, 2] uniformly separated map (same points).
        names: N item names (file names); metadata: N JSON-serialisable dicts.
        info: JSON-serialisable settings (encoder, crop mode, ...), saved with the index.
        view_permutations: optional int [V, D]: query views that permute the feature
            coordinates (``q_v = q[perm_v]``, e.g. :func:`dihedral.dihedral_permutations` for
            raw 24x24 pixels under rotations and flips); with the 8 dihedral permutations of a
            square grid it enables the exact factorised search of 8-view queries
            (:mod:`em_accel.embed.dihedral`, ~5x fewer operations).
        device: where searches run (None: the features' device).
    """

    def __init__(self, features, *, sigma=None, embedding=None, uniform=None,
                 names: Sequence[str] | None = None,
                 metadata: Sequence[dict[str, Any]] | None = None,
                 info: dict[str, Any] | None = None, view_permutations=None, device=None):
        f = _as_tensor(features, "features")
        if f.dim() != 2 or f.shape[0] < 1:
            raise ValueError(f"features must have shape [N, D] with N >= 1, got {list(f.shape)}")
        if not torch.isfinite(f).all():
            raise ValueError("features contain NaN or infinite values")
        self.device = torch.device(device) if device is not None else f.device
        self.features = f.to(self.device).contiguous()
        n = f.shape[0]
        self.sigma = None if sigma is None else _as_tensor(sigma, "sigma").to(self.device)
        if self.sigma is not None and self.sigma.shape != self.features.shape:
            raise ValueError(f"sigma must have the features' shape {list(f.shape)}, "
                             f"got {list(self.sigma.shape)}")
        self.embedding = None if embedding is None else _as_tensor(embedding, "embedding")
        self.uniform = None if uniform is None else _as_tensor(uniform, "uniform")
        for nm, a in (("embedding", self.embedding), ("uniform", self.uniform)):
            if a is not None and tuple(a.shape) != (n, 2):
                raise ValueError(f"{nm} must have shape [{n}, 2], got {list(a.shape)}")
        self.names = list(names) if names is not None else [str(i) for i in range(n)]
        self.metadata = list(metadata) if metadata is not None else [{} for _ in range(n)]
        if len(self.names) != n or len(self.metadata) != n:
            raise ValueError(f"names and metadata must have {n} entries, got "
                             f"{len(self.names)} and {len(self.metadata)}")
        self.info = dict(info or {})
        self.view_permutations = None if view_permutations is None else \
            dihedral.check_permutations(view_permutations, f.shape[1])
        self._sq = (self.features.double() ** 2).sum(1).to(self.features.dtype)
        self._dihedral: dihedral.DihedralItems | None = None

    def __len__(self) -> int:
        return self.features.shape[0]

    # -- search -------------------------------------------------------------------------------
    def search(self, queries, k: int = 5, *, metric: str = "euclidean", query_sigma=None,
               batch_size: int = 1024, exclude: torch.Tensor | None = None,
               method: str = "auto") -> SearchResult:
        """The ``k`` nearest items of each query [Q, D] (or one [D]), exactly. Queries given
        as several views [Q, V, D] (e.g. the 8 dihedral transforms of each query image, see
        :func:`em_accel.embed.features.dihedral_views`) score each item by its nearest view.

        metric: "euclidean" (squared L2; a GEMM and a top-k per batch of ``batch_size``
        queries; for unit-norm features the same order as cosine similarity) or "sigma" (the
        σ-aware d² of :mod:`em_accel.embed.sigma_distance`; needs the index's ``sigma`` and
        ``query_sigma`` [Q, D]). exclude: [Q] item indices to leave out of each query's
        results (e.g. the query itself), or None.

        method: "exhaustive" (every item against every view), "dihedral" (the same distances
        from partial products in a symmetry-adapted basis, :mod:`em_accel.embed.dihedral`;
        needs the index's ``view_permutations`` to be a square grid's 8 dihedral permutations
        and queries [Q, 8, D] that are those permutations of their first view, as
        :func:`~em_accel.embed.features.encode_views` gives for raw pixels) or "auto"
        (dihedral when it applies and the metric is Euclidean, else exhaustive). Both give the
        same items up to float rounding (near-ties may swap).
        """
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        q = _as_tensor(queries, "queries").to(self.device)
        if q.dim() == 1:
            q = q[None]
        if q.dim() not in (2, 3) or q.shape[-1] != self.features.shape[1]:
            raise ValueError(f"queries must have shape [Q, {self.features.shape[1]}] or [Q, V, "
                             f"{self.features.shape[1]}], got {list(q.shape)}")
        views = q.shape[1] if q.dim() == 3 else 1
        q = q.reshape(-1, q.shape[-1]) if q.dim() == 3 else q
        n = len(self)
        if not 1 <= k <= n - (exclude is not None):
            raise ValueError(f"k must be in [1, {n - (exclude is not None)}], got {k}")
        if metric == "sigma":
            if self.sigma is None or query_sigma is None:
                raise ValueError("metric='sigma' needs the index's sigma and query_sigma")
            qs = _as_tensor(query_sigma, "query_sigma").to(self.device).reshape(q.shape)
        nq = q.shape[0] // views
        if method != "exhaustive":
            side = None if self.view_permutations is None else \
                dihedral.grid_side(self.view_permutations)
            usable = (metric == "euclidean" and side is not None and views == 8
                      and dihedral.views_match(q.reshape(nq, views, -1), self.view_permutations))
            if method == "dihedral" and not usable:
                raise ValueError("method='dihedral' needs metric='euclidean', index "
                                 "view_permutations that are a square grid's 8 dihedral "
                                 "permutations and queries [Q, 8, D] whose views are those "
                                 "permutations of the first view")
            if usable:
                return self._search_dihedral(q.reshape(nq, views, -1)[:, 0], k, batch_size,
                                             exclude, side)
        idx = torch.empty(nq, k, dtype=torch.int64, device=self.device)
        dist = torch.empty(nq, k, dtype=self.features.dtype, device=self.device)
        batch_size = max(1, batch_size // views)
        for i0 in range(0, nq, batch_size):
            i1 = min(nq, i0 + batch_size)
            qb = q[i0 * views:i1 * views]
            if metric == "euclidean":
                d = torch.addmm(self._sq[None], qb, self.features.T, beta=1, alpha=-2)
                d.add_((qb * qb).sum(1, keepdim=True)).clamp_min_(0)
            else:
                d = sigma_d2(qb, qs[i0 * views:i1 * views], self.features, self.sigma)
            if views > 1:
                d = d.view(i1 - i0, views, -1).amin(1)
            if exclude is not None:
                d[torch.arange(i1 - i0, device=self.device), exclude[i0:i1].to(self.device)] = math.inf
            dist[i0:i1], idx[i0:i1] = torch.topk(d, k, dim=1, largest=False, sorted=True)
        return SearchResult(idx, dist)

    def _search_dihedral(self, q: torch.Tensor, k: int, batch_size: int,
                         exclude: torch.Tensor | None, side: int) -> SearchResult:
        if self._dihedral is None:
            self._dihedral = dihedral.prepare(self.features, side)
        nq = q.shape[0]
        idx = torch.empty(nq, k, dtype=torch.int64, device=self.device)
        dist = torch.empty(nq, k, dtype=self.features.dtype, device=self.device)
        step = max(1, min(batch_size, dihedral.QUERY_BLOCK))
        for i0 in range(0, nq, step):
            i1 = min(nq, i0 + step)
            d = dihedral.nearest_view_d2(self._dihedral, q[i0:i1])
            if exclude is not None:
                d[torch.arange(i1 - i0, device=self.device), exclude[i0:i1].to(self.device)] = math.inf
            dist[i0:i1], idx[i0:i1] = torch.topk(d, k, dim=1, largest=False, sorted=True)
        return SearchResult(idx, dist)

    # -- placement into the map ---------------------------------------------------------------
    def place(self, features, *, k: int = 15, perplexity: float = 5.0, n_iter: int = 250,
              learning_rate: float = 0.5) -> Placement:
        """Map coordinates of new items ``features`` [Q, D] in this index's t-SNE map, with the
        map's points fixed (as openTSNE's ``transform``): each new point's affinities p_j|i to
        its k nearest items (perplexity calibrated, Euclidean), initialised at the median of
        those items' positions, then ``n_iter`` Adam steps on its own KL(p_·|i || q_·|i),
        q_j|i ∝ (1 + |y_i - y_j|²)^-1 over all N map points. Each new point is placed
        independently of the others (deterministic; any batch size). Uniform coordinates come
        from linear interpolation of the reference points' (t-SNE -> uniform) map.
        """
        if self.embedding is None:
            raise ValueError("this index has no map (embedding); build it with embedding=")
        from ..ops import tsne as ops

        q = _as_tensor(features, "features").to(self.device)
        if q.dim() == 1:
            q = q[None]
        k = min(k, len(self))
        if not 1.0 < perplexity <= k:
            raise ValueError(f"perplexity must be in (1, k = {k}], got {perplexity}")
        idx, d2 = self.search(q, k)
        p, _ = ops.tsne_perplexity(d2.double().contiguous(), float(perplexity), 1e-5, 200)
        p = p.to(torch.float64)
        ref = self.embedding.to(self.device, torch.float64)
        y0 = ref[idx].median(dim=1).values                                # [Q, 2]
        y = y0.clone().requires_grad_(True)
        opt = torch.optim.Adam([y], lr=learning_rate)
        for it in range(n_iter):
            for g in opt.param_groups:  # anneal to a tenth for a settled final position
                g["lr"] = learning_rate * (0.1 + 0.9 * (1 - it / max(1, n_iter)))
            w = 1.0 / (1.0 + torch.cdist(y, ref) ** 2)                     # [Q, N]
            logq = torch.log(w.gather(1, idx)) - torch.log(w.sum(1, keepdim=True))
            loss = -(p * logq).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        y = y.detach().to(torch.float32)
        uni = None
        if self.uniform is not None:
            uni = torch.as_tensor(self._to_uniform(y.cpu().numpy()), dtype=torch.float32)
        return Placement(y, uni)

    def _to_uniform(self, pts: np.ndarray) -> np.ndarray:
        from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

        src = self.embedding.double().cpu().numpy()
        dst = self.uniform.double().cpu().numpy()
        if not hasattr(self, "_interp"):
            self._interp = (LinearNDInterpolator(src, dst), NearestNDInterpolator(src, dst))
        out = self._interp[0](pts)
        bad = ~np.isfinite(out).all(1)
        if bad.any():
            out[bad] = self._interp[1](pts[bad])
        return out

    # -- files --------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write ``index.safetensors`` and ``index.json`` into ``folder``; returns it."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"features": self.features.cpu().contiguous()}
        for name in ("sigma", "embedding", "uniform", "view_permutations"):
            if getattr(self, name) is not None:
                tensors[name] = getattr(self, name).cpu().contiguous()
        save_file(tensors, str(folder / TENSORS))
        from ..io import jsonable

        meta = {"format": "em-accel index 1", "n": len(self), "dim": self.features.shape[1],
                "names": self.names, "metadata": jsonable(self.metadata), "info": jsonable(self.info)}
        (folder / META).write_text(json.dumps(meta))
        return folder

    @classmethod
    def load(cls, folder: str | Path, device=None) -> "Index":
        """Read an index written by :meth:`save` (FileNotFoundError if it is not there)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / TENSORS).exists() or not (folder / META).exists():
            raise FileNotFoundError(f"{folder} holds no index ({TENSORS} and {META})")
        t = load_file(str(folder / TENSORS))
        meta = json.loads((folder / META).read_text())
        return cls(t["features"], sigma=t.get("sigma"), embedding=t.get("embedding"),
                   uniform=t.get("uniform"), names=meta["names"], metadata=meta["metadata"],
                   info=meta.get("info"), view_permutations=t.get("view_permutations"),
                   device=device)
