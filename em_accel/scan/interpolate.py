"""Piecewise-linear (Delaunay) interpolation of a partial scan onto the full pixel grid.

The sampled pixels (``mask > 0``) are triangulated at their centres with SciPy's Qhull; every
pixel inside a triangle is the barycentric mix of its three corners, and pixels outside the
convex hull of the samples take their nearest sample's value. The triangulation depends only on
the mask, so it is cached (``weights``: three flat source indices and three weights per pixel)
and reused: interpolating another image scanned along the same path is a gather, on CPU or
CUDA. This is the thesis's strongest classical baseline ("Delaunay-linear", ch. 4) and the
completion network's starting point.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import torch


class EmptyMaskError(ValueError):
    """A partial scan's mask has no sampled pixel (nothing to interpolate from)."""


class Triangulation(NamedTuple):
    """Per-pixel interpolation geometry of one mask (CPU tensors)."""

    sources: torch.Tensor   # [H*W, 3] int64 flat indices h*W + w of the corner (sampled) pixels
    weights: torch.Tensor   # [H*W, 3] float32 barycentric weights ([1, 0, 0] outside the hull)
    nearest: torch.Tensor   # [H*W] int64 flat index of the nearest sampled pixel
    distance: torch.Tensor  # [H*W] float32 distance to it [px]


_CACHE: OrderedDict[bytes, Triangulation] = OrderedDict()
_CACHE_SIZE = 48


def mask_key(mask: np.ndarray) -> bytes:
    """A digest of a bool mask and its shape: the key of caches of per-mask geometry."""
    return hashlib.blake2b(np.packbits(mask).tobytes() + str(mask.shape).encode(),
                           digest_size=16).digest()


def _rasterise_triangles(pts: np.ndarray, simplices: np.ndarray, shape: tuple[int, int]
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels covered by each triangle of integer points ``pts`` [N, 2]: returns the flat pixel
    indices, their triangle's corner indices [n, 3] and barycentric weights [n, 3].

    Scan-line rasterisation, vectorised over triangles: corners sorted top to bottom, each
    triangle's rows (integers, as the corners are), then each row's run of pixel centres
    between the long edge (corner 0 -> 2) and the short one (0 -> 1 above corner 1, 1 -> 2
    below); a pixel on a shared edge is kept once. (Qhull's own point location computes a
    LAPACK inverse per triangle, seconds for 50k triangles, and searches every triangle for
    each pixel outside the hull.)
    """
    H, W = shape
    order = np.argsort(pts[simplices][:, :, 0], axis=1, kind="stable")
    simplices = np.take_along_axis(simplices, order, 1)
    P = pts[simplices].astype(np.float64)                       # [T, 3, 2], rows ascending
    (y0, x0), (y1, x1), (y2, x2) = P[:, 0].T, P[:, 1].T, P[:, 2].T
    det = (y0 - y2) * (x1 - x2) - (x0 - x2) * (y1 - y2)
    keep = det != 0                                             # integer corners: exact test
    simplices = simplices[keep]
    y0, x0, y1, x1, y2, x2, det = (a[keep] for a in (y0, x0, y1, x1, y2, x2, det))
    ny = (y2 - y0).astype(np.int64) + 1
    rt = np.repeat(np.arange(len(det)), ny)
    ry = np.arange(int(ny.sum())) - np.repeat(np.cumsum(ny) - ny, ny) + y0[rt]
    with np.errstate(divide="ignore", invalid="ignore"):        # flat edges are never used
        slope_long = (x2 - x0) / (y2 - y0)
        slope_a = np.where(y1 > y0, (x1 - x0) / (y1 - y0), 0.0)
        slope_b = np.where(y2 > y1, (x2 - x1) / (y2 - y1), 0.0)
    x_long = x0[rt] + (ry - y0[rt]) * slope_long[rt]
    upper = (ry < y1[rt]) | (y2 == y1)[rt]
    x_short = np.where(upper, x0[rt] + (ry - y0[rt]) * slope_a[rt],
                       x1[rt] + (ry - y1[rt]) * slope_b[rt])
    xlo = np.ceil(np.minimum(x_long, x_short) - 1e-9).astype(np.int64)
    xhi = np.floor(np.maximum(x_long, x_short) + 1e-9).astype(np.int64)
    nx = np.maximum(xhi - xlo + 1, 0)
    pr = np.repeat(np.arange(len(rt)), nx)
    x = np.arange(int(nx.sum())) - np.repeat(np.cumsum(nx) - nx, nx) + xlo[pr]
    y = ry[pr].astype(np.int64)
    tid = rt[pr]
    # Barycentric weights are affine in (y, x): per-triangle coefficients, gathered per pixel.
    dy, dx = y - y2[tid], x - x2[tid]
    b0 = (dy * ((x1 - x2) / det)[tid] - dx * ((y1 - y2) / det)[tid])
    b1 = (dx * ((y0 - y2) / det)[tid] - dy * ((x0 - x2) / det)[tid])
    flat = y * W + x
    owner = np.full(H * W, -1, np.int64)                        # one covering triangle each
    owner[flat] = np.arange(len(flat))
    sel = owner[owner >= 0]
    bary = np.stack([b0[sel], b1[sel], 1.0 - b0[sel] - b1[sel]], 1)
    return flat[sel], simplices[tid[sel]], bary


def triangulate(mask: np.ndarray | torch.Tensor) -> Triangulation:
    """Delaunay interpolation weights for a 2-D mask [H, W] (nonzero = sampled); cached.

    Raises :class:`EmptyMaskError` for a mask without samples. With fewer than three samples,
    or all of them on one line, every pixel takes its nearest sample (no triangle exists).
    """
    from scipy import ndimage
    from scipy.spatial import Delaunay, QhullError

    m = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask) > 0
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D [H, W], got shape {list(m.shape)}")
    if not m.any():
        raise EmptyMaskError("mask has no sampled pixels (all zero)")
    key = mask_key(m)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    H, W = m.shape
    # Nearest sample of every pixel (used outside the hull and when no triangle exists).
    dist, (ni, nj) = ndimage.distance_transform_edt(~m, return_indices=True)
    nearest = (ni * W + nj).reshape(-1).astype(np.int64)
    sources = np.stack([nearest, nearest, nearest], 1)
    weights = np.zeros((H * W, 3), np.float32)
    weights[:, 0] = 1.0
    pts = np.argwhere(m)
    if len(pts) >= 3:
        try:
            simplices = Delaunay(pts.astype(np.float64)).simplices
        except QhullError:  # collinear samples: nearest-neighbour everywhere
            simplices = None
        if simplices is not None:
            flat, corners, bary = _rasterise_triangles(pts, simplices, (H, W))
            sources[flat] = (pts[:, 0] * W + pts[:, 1])[corners]
            w = np.clip(bary, 0.0, 1.0)
            weights[flat] = (w / w.sum(1, keepdims=True)).astype(np.float32)
    out = Triangulation(torch.from_numpy(sources), torch.from_numpy(weights),
                        torch.from_numpy(nearest), torch.from_numpy(dist.astype(np.float32).ravel()))
    _CACHE[key] = out
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return out


def _per_image(image: torch.Tensor, mask: torch.Tensor | np.ndarray, name: str):
    """(images [B, H, W], squeeze flag, the Triangulation of each image's mask)."""
    squeeze = image.dim() == 2
    x = image[None] if squeeze else image
    if x.dim() != 3:
        raise ValueError(f"{name}: image must be [H, W] or [B, H, W], got shape "
                         f"{list(image.shape)}")
    m = torch.as_tensor(mask)
    if m.dim() == 2:
        m = m[None].expand(x.shape[0], -1, -1)
    if tuple(m.shape) != tuple(x.shape):
        raise ValueError(f"{name}: mask shape {list(torch.as_tensor(mask).shape)} does not match "
                         f"image shape {list(image.shape)}")
    masks = m.detach().cpu().numpy()
    return x, squeeze, [triangulate(mk) for mk in masks]  # cached: one per distinct mask


def linear_infill(image: torch.Tensor, mask: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Delaunay-linear interpolation of the sampled pixels of ``image``.

    Args:
        image: [H, W] or [B, H, W]; only pixels where ``mask`` is nonzero are read (e.g. the
            ``image`` of a :class:`~em_accel.ops.scan.Raster`, the mean probe value per pixel).
        mask: [H, W], shared by the batch (one scan path), or [B, H, W] (one per image).

    Returns a tensor shaped, typed and placed like ``image``.
    """
    x, squeeze, tris = _per_image(image, mask, "linear_infill")
    out = torch.empty_like(x)
    flat = x.reshape(x.shape[0], -1)
    for b, t in enumerate(tris):
        src, w = t.sources.to(x.device), t.weights.to(x.device, x.dtype)
        out[b] = (flat[b][src] * w).sum(1).reshape(x.shape[1:])
    return out[0] if squeeze else out


def nearest_infill(image: torch.Tensor, mask: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Each pixel takes its nearest sampled pixel's value (exact Euclidean; the thesis's
    infill), from the mask's cached nearest-sample map. Shapes as :func:`linear_infill`."""
    x, squeeze, tris = _per_image(image, mask, "nearest_infill")
    flat = x.reshape(x.shape[0], -1)
    out = torch.stack([flat[b][t.nearest.to(x.device)] for b, t in enumerate(tris)])
    out = out.reshape(x.shape)
    return out[0] if squeeze else out


def sample_distance(mask: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Distance [px] from each pixel centre to the nearest sampled pixel's, for a mask [H, W]
    or [B, H, W]; float32, on the mask's device."""
    m = torch.as_tensor(mask)
    squeeze = m.dim() == 2
    mb = m[None] if squeeze else m
    out = torch.stack([triangulate(mk).distance.reshape(mb.shape[1:])
                       for mk in mb.detach().cpu().numpy()]).to(m.device)
    return out[0] if squeeze else out
