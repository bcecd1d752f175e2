"""Uniformly separated t-SNE (US-tSNE; Ede, thesis ch. 2): spread a 2-D map evenly over the
unit square with a Clough-Tocher interpolated map, so clustered points use the white space."""
from __future__ import annotations

import numpy as np
import torch


def _cdf_edges(counts: np.ndarray) -> np.ndarray:
    """Piecewise-linear CDF at the G + 1 bin edges; a small floor keeps it strictly rising."""
    c = counts.astype(np.float64) + 1e-3 * max(counts.sum(), 1.0) / counts.size
    cdf = np.concatenate([[0.0], np.cumsum(c)])
    return cdf / cdf[-1]


def uniform_separate(y, grid: int = 25, boundary: int = 64) -> torch.Tensor | np.ndarray:
    """Map a 2-D embedding ``y`` [N, 2] to the unit square so its points are spread evenly.

    The thesis's algorithm (SEED_SPEC §6.4): min-max normalise; on a ``grid`` x ``grid``
    histogram, take the marginal CDF of x over columns and, per column, the conditional CDF of
    y; the cell centres (u, v) of a uniform grid pulled back through these CDFs give control
    points (t-SNE location -> uniform location); a Clough-Tocher interpolant
    (``scipy.interpolate.CloughTocher2DInterpolator``, what ``griddata(method='cubic')`` uses)
    through them maps every point. Two fixes over the published version: the CDFs are
    piecewise linear inside bins, so control points do not collapse onto bin centres, and
    ``boundary`` control points per edge of the bounding box map the box edges to the square's
    edges (u = F_x(x) on the bottom/top, v = F_y|x(y) on the left/right), so points outside the
    convex hull of the interior control points get coordinates instead of NaN.

    Returns [N, 2] in [0, 1]^2, a tensor (on y's device) for tensor input, else a numpy array.
    """
    from scipy.interpolate import CloughTocher2DInterpolator

    is_tensor = isinstance(y, torch.Tensor)
    arr = y.detach().double().cpu().numpy() if is_tensor else np.asarray(y, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"y must have shape [N, 2], got {list(arr.shape)}")
    if arr.shape[0] < 3:
        raise ValueError(f"uniform_separate needs at least 3 points, got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise ValueError("y contains non-finite values")
    if grid < 2 or boundary < 2:
        raise ValueError(f"grid and boundary must be >= 2, got {grid}, {boundary}")
    lo, hi = arr.min(0), arr.max(0)
    yn = (arr - lo) / np.where(hi > lo, hi - lo, 1.0)
    edges = np.linspace(0.0, 1.0, grid + 1)
    col = np.minimum((yn[:, 0] * grid).astype(np.int64), grid - 1)
    row = np.minimum((yn[:, 1] * grid).astype(np.int64), grid - 1)
    cdf_x = _cdf_edges(np.bincount(col, minlength=grid))
    counts = np.zeros((grid, grid))
    np.add.at(counts, (col, row), 1.0)
    cdf_y = [_cdf_edges(counts[c]) for c in range(grid)]

    def f_y(c: int, v: np.ndarray) -> np.ndarray:  # conditional CDF of y in column c
        return np.interp(v, edges, cdf_y[c])

    # Interior control points: uniform cell centres pulled back through the CDFs.
    centres = (np.arange(grid) + 0.5) / grid
    src, dst = [], []
    for u in centres:
        x = np.interp(u, cdf_x, edges)
        c = min(int(x * grid), grid - 1)
        ys = np.interp(centres, cdf_y[c], edges)
        src.append(np.stack([np.full(grid, x), ys], 1))
        dst.append(np.stack([np.full(grid, u), centres], 1))
    # Boundary control points: the bounding box's edges onto the square's edges.
    t = np.linspace(0.0, 1.0, boundary)
    fx = np.interp(t, edges, cdf_x)
    src += [np.stack([t, np.zeros_like(t)], 1), np.stack([t, np.ones_like(t)], 1),
            np.stack([np.zeros_like(t), t], 1), np.stack([np.ones_like(t), t], 1)]
    dst += [np.stack([fx, np.zeros_like(t)], 1), np.stack([fx, np.ones_like(t)], 1),
            np.stack([np.zeros_like(t), f_y(0, t)], 1),
            np.stack([np.ones_like(t), f_y(grid - 1, t)], 1)]
    src, dst = np.concatenate(src), np.concatenate(dst)
    src, keep = np.unique(np.round(src, 12), axis=0, return_index=True)
    dst = dst[keep]
    interp = CloughTocher2DInterpolator(src, dst)
    out = interp(np.clip(yn, 0.0, 1.0))
    bad = ~np.isfinite(out).all(1)
    if bad.any():  # on the hull's edge within rounding: nudge inwards
        out[bad] = interp(np.clip(yn[bad], 1e-9, 1 - 1e-9))
    out = np.clip(out, 0.0, 1.0)
    if is_tensor:
        return torch.from_numpy(out).to(device=y.device, dtype=y.dtype if y.is_floating_point() else torch.float64)
    return out
