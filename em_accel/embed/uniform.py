"""Uniformly separated t-SNE (US-tSNE; Ede, thesis ch. 2): spread a 2-D map evenly over the
unit square with a Clough-Tocher interpolated map, so clustered points use the white space."""
from __future__ import annotations

import numpy as np
import torch

from ..errors import expect_number


def _quantile_edges(v: np.ndarray, bins: int) -> np.ndarray:
    """Bin edges holding equal counts of ``v`` (values in [0, 1]), from 0 to 1, made strictly
    increasing so the piecewise-linear CDF through them (edge k at k / bins) is invertible."""
    if v.size == 0:
        return np.linspace(0.0, 1.0, bins + 1)
    e = np.quantile(v, np.linspace(0.0, 1.0, bins + 1))
    e[0], e[-1] = 0.0, 1.0
    return np.maximum.accumulate(e) + np.arange(bins + 1) * 1e-12


def uniform_separate(y, grid: int = 25, boundary: int = 64) -> torch.Tensor | np.ndarray:
    """Map a 2-D embedding ``y`` [N, 2] to the unit square so its points are spread evenly.

    The thesis's algorithm (ch. 2): min-max normalise; cut x into ``grid`` columns and
    each column's y into ``grid`` rows; the marginal CDF of x over the columns and the
    conditional CDF of y within each column pull the cell centres (u, v) of a uniform grid back
    to control points in the map (t-SNE location -> uniform location); a Clough-Tocher
    interpolant (``scipy.interpolate.CloughTocher2DInterpolator``, what
    ``griddata(method='cubic')`` uses) through them maps every point. Three changes from the
    published version: bins hold equal counts (quantile edges) rather than equal widths, so
    dense clusters and far outliers are resolved alike; CDFs are piecewise linear between
    edges, so control points do not collapse onto bin centres; and ``boundary`` control points
    per edge map the bounding box's edges onto the square's (u = F_x(x) on the bottom and top,
    v = F_y|x(y) on the left and right), so points outside the convex hull of the interior
    control points are mapped instead of coming out NaN.

    Returns [N, 2] in [0, 1]^2, a tensor (on y's device) for tensor input, else a numpy array.
    """
    from scipy.interpolate import CloughTocher2DInterpolator

    expect_number("grid", grid, 1, 4096, integer=True)  # grid² control points
    expect_number("boundary", boundary, 0, 1 << 16, integer=True)
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
    levels = np.linspace(0.0, 1.0, grid + 1)
    x_edges = _quantile_edges(yn[:, 0], grid)
    col = np.clip(np.searchsorted(x_edges, yn[:, 0], side="right") - 1, 0, grid - 1)
    y_edges = [_quantile_edges(yn[col == c, 1], grid) for c in range(grid)]

    # Interior control points: uniform cell centres pulled back through the CDFs.
    centres = (np.arange(grid) + 0.5) / grid
    src, dst = [], []
    for u in centres:
        x = np.interp(u, levels, x_edges)
        c = min(int(np.searchsorted(x_edges, x, side="right")) - 1, grid - 1)
        src.append(np.stack([np.full(grid, x), np.interp(centres, levels, y_edges[c])], 1))
        dst.append(np.stack([np.full(grid, u), centres], 1))
    # Boundary control points: the bounding box's edges onto the square's edges.
    t = np.linspace(0.0, 1.0, boundary)
    fx = np.interp(t, x_edges, levels)
    zero, one = np.zeros_like(t), np.ones_like(t)
    src += [np.stack([t, zero], 1), np.stack([t, one], 1), np.stack([zero, t], 1),
            np.stack([one, t], 1)]
    dst += [np.stack([fx, zero], 1), np.stack([fx, one], 1),
            np.stack([zero, np.interp(t, y_edges[0], levels)], 1),
            np.stack([one, np.interp(t, y_edges[-1], levels)], 1)]
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
