"""96x96 specimen crops for adaptive-scan training, prepared as in the thesis (ch. 5).

Each crop is min-max normalised to [-1, 1] (non-finite values become 0), then blurred with a
5x5 Gaussian of sigma 2.5 px; the blurred crop is both the scanned specimen and the completion
target. Sources: ``synthetic`` (:mod:`em_accel.data.synthetic`, micrograph-like images drawn
offline), ``simulated`` (multislice HRTEM, :mod:`em_accel.data.simulated`; slow), or an array of
images (e.g. real micrographs read with :func:`em_accel.io.read_image`), from which random
crops are cut.
"""
from __future__ import annotations

import numpy as np
import torch

from .partial import gaussian_blur

BLUR_SIZE, BLUR_SIGMA = 5, 2.5


def prepare_crops(crops: torch.Tensor | np.ndarray) -> torch.Tensor:
    """[N, H, W] raw crops -> float32 [-1, 1]-normalised, blurred crops (the thesis's targets)."""
    x = torch.as_tensor(np.asarray(crops, dtype=np.float32))
    if x.dim() != 3:
        raise ValueError(f"crops must have shape [N, H, W], got {list(x.shape)}")
    x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    lo = x.amin(dim=(1, 2), keepdim=True)
    hi = x.amax(dim=(1, 2), keepdim=True)
    x = 2 * (x - lo) / (hi - lo).clamp(min=1e-12) - 1
    return gaussian_blur(x, BLUR_SIZE, BLUR_SIGMA).contiguous()


def random_crops(images: list[np.ndarray], n: int, side: int = 96, seed: int = 0) -> np.ndarray:
    """[n, side, side] random crops from a list of 2-D images (each at least side x side)."""
    rng = np.random.default_rng(seed)
    big = [im for im in images if min(im.shape[-2:]) >= side]
    if not big:
        raise ValueError(f"no image is at least {side} x {side} px")
    out = np.empty((n, side, side), np.float32)
    for k in range(n):
        im = big[rng.integers(len(big))]
        r = rng.integers(im.shape[0] - side + 1)
        c = rng.integers(im.shape[1] - side + 1)
        out[k] = im[r:r + side, c:c + side]
    return out


def make_crops(source: str, n: int, side: int = 96, seed: int = 0) -> torch.Tensor:
    """n prepared crops [n, side, side] from ``source`` ("synthetic" or "simulated")."""
    if source == "synthetic":
        from ..data.synthetic import synthetic_micrograph as make
    elif source == "simulated":
        from ..data.simulated import simulated_micrograph as make
    else:
        raise ValueError(f"source must be 'synthetic' or 'simulated', got {source!r}")
    seeds = np.random.SeedSequence(seed).spawn(n)
    return prepare_crops(np.stack([make(side, np.random.default_rng(s)) for s in seeds]))


def dihedral_batch(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Apply dihedral transform k[b] in 0..7 (rotation k % 4 quarter turns, then a column flip
    if k >= 4) to each image of [B, H, W] (square)."""
    out = torch.empty_like(x)
    for j in range(8):
        sel = (k == j).nonzero().flatten()
        if len(sel):
            y = torch.rot90(x[sel], j % 4, dims=(1, 2))
            out[sel] = y.flip(2) if j >= 4 else y
    return out
