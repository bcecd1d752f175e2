"""The lattice prior tile by tile, on images larger than those its rules were chosen on.

``prior="auto"`` looks for lattices in the whole image, its halves and its quadrants
(:mod:`em_accel.scan.lattice_region`); its thresholds were chosen on 512² scans. On a 2048²
frame a quadrant is 1024² px: a crystal in a tenth of the field, or one of several grains, is
found in no window, and drift bends a lattice over a large field more than over a small one.
So on images larger than :data:`TILE` px, after the whole-image search, the same search runs
again on overlapping tiles of at most :data:`TILE` px (each with its own halves and quadrants),
each against the whole-image result: a tile's lattice replaces that result only where its
local error is at most 0.75 of the result's predicted error, so a crystal the whole-image
lattice already completes stays as it was (tiles it covers to
:data:`~em_accel.scan.lattice_region.WHOLE_ENOUGH` are not searched). Tiles blend linearly
across their overlaps. Measured on held-out 1024² and 2048² images in docs/complete.md
("Large images: the lattice tile by tile").
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .._api import progress_counter
from ..scan.lattice_region import WHOLE_ENOUGH
from .tiling import tile_layout

if TYPE_CHECKING:
    from .completion import AutoCompletion

#: Largest tile searched [px]: about the 512² scans the lattice prior's rules were chosen on.
TILE = 576
#: Least overlap between neighbouring tiles [px], over which they blend.
OVERLAP = 64


def tile_spans(length: int) -> list[tuple[int, int]]:
    """[start, stop) of the fewest tiles of at most :data:`TILE` px covering ``[0, length)``
    with overlaps of at least :data:`OVERLAP` px (one span where ``length`` fits one tile)."""
    size, starts = tile_layout(length, TILE, OVERLAP // 2)
    return [(s, min(s + size, length)) for s in starts]


def blend_ramps(spans: list[tuple[int, int]]) -> list[np.ndarray]:
    """Per span, its weight along the axis: 1, falling linearly to 0 across each overlap with
    a neighbour (the weights of overlapping spans sum to 1)."""
    out = []
    for k, (a, b) in enumerate(spans):
        w = np.ones(b - a)
        if k > 0:
            n = spans[k - 1][1] - a
            w[:n] = (np.arange(n) + 0.5) / n
        if k < len(spans) - 1:
            n = b - spans[k + 1][0]
            w[b - a - n:] = np.minimum(w[b - a - n:], (n - 0.5 - np.arange(n)) / n)
        out.append(w)
    return out


def refine_by_tiles(values: np.ndarray, mask: np.ndarray, whole: AutoCompletion,
                    complete_tile: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                                            AutoCompletion],
                    progress: bool = False) -> AutoCompletion:
    """``whole`` (the whole-image ``auto`` result of the scan ``values``/``mask``) with each
    tile's lattices blended in: ``complete_tile(values, mask, completion, scale)`` is the
    ``auto`` search on one tile against ``whole``'s completion and predicted mean |error|
    there. Returns ``whole`` where the image fits one tile or no tile's lattice was used; a
    tile whose lattice is taken for a grid's alias is left as ``whole`` has it."""
    H, W = mask.shape
    ys, xs = tile_spans(H), tile_spans(W)
    if len(ys) * len(xs) == 1:
        return whole
    union0 = (np.zeros((H, W)) if whole.lattice_weight is None
              else np.asarray(whole.lattice_weight, np.float64))
    completion = np.zeros((H, W))
    scale = np.zeros((H, W))
    union = np.zeros((H, W))
    used = []
    bar = progress_counter(len(ys) * len(xs), progress, desc="lattice tiles", unit="tile")
    ramps_x = blend_ramps(xs)
    for (y0, y1), wy in zip(ys, blend_ramps(ys)):
        for (x0, x1), wx in zip(xs, ramps_x):
            s = (slice(y0, y1), slice(x0, x1))
            c, b, u = whole.completion[s], whole.scale[s], union0[s]
            if float(u.mean()) < WHOLE_ENOUGH:
                a = complete_tile(values[s], mask[s], c, b)
                if a.regions and not a.aliased:
                    c, b, u = a.completion, a.scale, np.maximum(u, a.lattice_weight)
                    used.append((s, a))
            w = wy[:, None] * wx[None, :]
            completion[s] += w * c
            scale[s] += w * b
            union[s] += w * u
            bar.update(1)
    bar.close()
    if not used:
        return whole
    # The weights sum to 1 up to rounding.
    method = "lattice" if float(union.min()) >= 1.0 - 1e-9 else "lattice+network"
    return whole._replace(completion=completion, scale=scale, method=method,
                          lattice_weight=union, tiles=tuple(used))
