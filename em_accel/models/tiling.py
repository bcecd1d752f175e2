"""Denoising images of any size with a fully convolutional network, tile by tile.

The thesis cut 512² crops with overlap, denoised each, and averaged the overlaps after
discarding the edges, where errors are higher: every pixel it kept was computed several times.
Here tiles overlap by exactly ``2 * margin`` pixels and each output pixel is taken, once, from
the tile in which it lies farthest from an edge (at least ``margin`` px of real context on
every side). The extra compute is only the overlap strips, ``≈ 2·margin/tile`` per axis, plus
a ``margin``-px reflect border so the image's own edges also get context. An image that fits in
one tile is processed whole (padded only to a multiple of 16).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .._api import progress_counter
from ..errors import expect_number, expect_type
from ..data.augment import dihedral, dihedral_inverse
from .denoiser import STRIDE


def dihedral_ensemble(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean of ``model`` over the 8 flips/rotations of ``x`` [B, C, H, W], each mapped back.

    A self-ensemble: the network was trained on dihedrally augmented crops, so its 8 outputs
    are 8 estimates of the same image with partly independent errors; their mean costs 8
    forward passes and lowers the error. The result is exactly dihedrally equivariant.
    """
    acc = model(x).float()
    for k in range(1, 8):
        acc += dihedral_inverse(model(dihedral(x, k)), k).float()
    return (acc / 8).to(x.dtype)


def tile_layout(length: int, tile: int, margin: int) -> tuple[int, list[int]]:
    """Tile size and start offsets covering ``[0, length)`` with the least compute.

    Uses the fewest tiles of at most ``tile`` px whose overlaps are at least ``2 * margin``,
    then shrinks the tile to the smallest multiple of 16 that still covers the length and
    spreads the starts evenly. Returns ``(size, starts)``.
    """
    if tile % STRIDE or tile <= 2 * margin or margin < 0:
        raise ValueError(f"need tile a multiple of {STRIDE} and 0 <= 2*margin < tile, got "
                         f"tile={tile}, margin={margin}")
    if length <= tile:
        return _round_up(length, STRIDE), [0]
    n = math.ceil((length - 2 * margin) / (tile - 2 * margin))
    size = _round_up(math.ceil((length - 2 * margin) / n) + 2 * margin, STRIDE)
    return size, [round(i * (length - size) / (n - 1)) for i in range(n)]


def _owned(starts: list[int], tile: int, length: int) -> list[tuple[int, int]]:
    """For each tile, the [lo, hi) output range it owns: split each overlap in its middle."""
    spans = []
    for i, s in enumerate(starts):
        lo = 0 if i == 0 else (starts[i - 1] + tile + s) // 2
        hi = length if i == len(starts) - 1 else (s + tile + starts[i + 1]) // 2
        spans.append((lo, hi))
    return spans


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


@torch.inference_mode()
def denoise_tiled(model: nn.Module, image: torch.Tensor, tile: int = 1024, margin: int = 16,
                  batch_size: int = 4, progress: bool = True, ensemble: bool = False, *,
                  callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """Apply ``model`` to a 2-D ``image`` [H, W] already scaled for it; returns [H, W].
    (:func:`apply_tiled` with one input and one output channel; the same arguments.)"""
    if image.dim() != 2:
        raise ValueError(f"image must be 2-D [H, W], got shape {list(image.shape)}")
    return apply_tiled(model, image[None], tile, margin, batch_size, progress, ensemble,
                       callback=callback)[0]


@torch.inference_mode()
def apply_tiled(model: nn.Module, image: torch.Tensor, tile: int = 1024, margin: int = 16,
                batch_size: int = 4, progress: bool = True, ensemble: bool = False, *,
                callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """Apply a fully convolutional ``model`` to ``image`` [C, H, W] tile by tile; returns
    [C_out, H, W] (the model's output channels).

    Args:
        model: maps [B, 1, h, w] to [B, 1, h, w] for h, w multiples of 16.
        image: float tensor on the model's device.
        tile: tile size [px], a multiple of 16 (larger tiles waste less on overlaps).
        margin: context kept around every owned pixel [px]; the image is reflect-padded by it.
        batch_size: tiles per forward pass.
        progress: draw a bar over the tiles (on a terminal).
        ensemble: average the 8 dihedral transforms of every tile (:func:`dihedral_ensemble`):
            8× the compute, lower error.
        callback: called with the number of tiles finished after each batch.
    """
    if image.dim() != 3:
        raise ValueError(f"image must be [C, H, W], got shape {list(image.shape)}")
    # a margin of 2**63 px segfaulted inside torch's padding: bound the sizes first
    tile = expect_number("tile", tile, 16, 1 << 16, unit="px", integer=True)
    margin = expect_number("margin", margin, 0, 1 << 12, unit="px", integer=True)
    batch_size = expect_number("batch_size", batch_size, 1, 1 << 12, integer=True)
    h, w = image.shape[-2:]
    x = image[None]
    if margin:
        mode = "reflect" if min(h, w) > margin else "replicate"
        x = F.pad(x, (margin, margin, margin, margin), mode=mode)
    ph, pw = x.shape[-2:]
    th, ys = tile_layout(ph, tile, margin)
    tw, xs = tile_layout(pw, tile, margin)
    x = F.pad(x, (0, max(tw - pw, 0), 0, max(th - ph, 0)), mode="replicate")
    oy, ox = _owned(ys, th, x.shape[-2]), _owned(xs, tw, x.shape[-1])
    out = None
    jobs = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
    bar = progress_counter(len(jobs), progress, desc="tiles", unit="tile")
    for k in range(0, len(jobs), batch_size):
        chunk = jobs[k:k + batch_size]
        batch = torch.cat([x[..., ys[i]:ys[i] + th, xs[j]:xs[j] + tw] for i, j in chunk])
        pred = dihedral_ensemble(model, batch) if ensemble else model(batch)
        if out is None:
            out = x.new_empty((1, pred.shape[1], *x.shape[-2:]))
        for b, (i, j) in enumerate(chunk):
            (y0, y1), (x0, x1) = oy[i], ox[j]
            out[..., y0:y1, x0:x1] = pred[b:b + 1, :, y0 - ys[i]:y1 - ys[i], x0 - xs[j]:x1 - xs[j]]
        bar.update(len(chunk))
        if callback is not None:
            callback(len(chunk))
    bar.close()
    return out[0, :, margin:margin + h, margin:margin + w]


def overlap_cost(height: int, width: int, tile: int = 1024, margin: int = 16) -> float:
    """Pixels the network computes per output pixel for an image of this size (1 = no waste)."""
    th, ys = tile_layout(height + 2 * margin, tile, margin)
    tw, xs = tile_layout(width + 2 * margin, tile, margin)
    return len(ys) * len(xs) * th * tw / (height * width)


def denoise_image(model: nn.Module, image: np.ndarray | torch.Tensor, tile: int = 1024,
                  margin: int = 16, batch_size: int = 4, progress: bool = True,
                  ensemble: bool = False, *,
                  callback: Callable[[int], None] | None = None) -> np.ndarray:
    """Denoise a 2-D micrograph in its own units (counts, or any intensity scale).

    The image is min–max scaled as a whole (the network's input convention; one scale for the
    whole image so tiles join without seams), denoised with :func:`denoise_tiled`, and mapped
    back to the original range. ``ensemble`` averages the 8 dihedral transforms (8× the
    compute, lower error). ``progress`` draws a bar over the tiles (on a terminal);
    ``callback`` is called with the number of tiles finished after each batch. Returns float32
    [H, W].
    """
    expect_type("model", model, nn.Module)
    arr = torch.as_tensor(np.ascontiguousarray(image, dtype=np.float32))
    if arr.dim() != 2:
        raise ValueError(f"image must be 2-D [H, W], got shape {list(arr.shape)}")
    if not torch.isfinite(arr).all():
        raise ValueError("image contains NaN or infinite values")
    device = next(model.parameters()).device
    lo, hi = float(arr.min()), float(arr.max())
    span = hi - lo if hi > lo else 1.0
    scaled = ((arr - lo) / span).to(device)
    y = denoise_tiled(model, scaled, tile, margin, batch_size, progress, ensemble,
                      callback=callback)
    return (y.float().cpu() * span + lo).numpy()
