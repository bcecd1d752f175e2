"""Dihedral augmentation (the 8 flips/rotations of a square) and random crops."""
from __future__ import annotations

import torch

from .._api import Seed, as_generator


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th of the 8 dihedral transforms of the last two dims: rotate by ``k % 4``
    quarter turns, then transpose if ``k >= 4``. ``k = 0`` is the identity."""
    if not 0 <= k < 8:
        raise ValueError(f"k must be in [0, 8), got {k}")
    y = torch.rot90(x, k % 4, dims=(-2, -1))
    return y.transpose(-2, -1) if k >= 4 else y


def dihedral_inverse(y: torch.Tensor, k: int) -> torch.Tensor:
    """Undo :func:`dihedral`: ``dihedral_inverse(dihedral(x, k), k) == x``."""
    if not 0 <= k < 8:
        raise ValueError(f"k must be in [0, 8), got {k}")
    if k >= 4:
        y = y.transpose(-2, -1)
    return torch.rot90(y, -(k % 4), dims=(-2, -1))


def random_dihedral(x: torch.Tensor, seed: Seed = None) -> torch.Tensor:
    """A uniformly chosen dihedral transform of ``x`` [..., H, W]; ``seed``: int, None or a
    CPU torch.Generator (a stream passed on)."""
    k = int(torch.randint(8, (1,), generator=as_generator(seed)))
    return dihedral(x, k)


def random_crop(x: torch.Tensor, size: int, seed: Seed = None) -> torch.Tensor:
    """A ``size``×``size`` crop of ``x`` [..., H, W] at a uniform position; ``seed``: int, None
    or a CPU torch.Generator (a stream passed on)."""
    generator = as_generator(seed)
    h, w = x.shape[-2:]
    if size > h or size > w:
        raise ValueError(f"crop size {size} exceeds the image ({h}×{w})")
    i = int(torch.randint(h - size + 1, (1,), generator=generator))
    j = int(torch.randint(w - size + 1, (1,), generator=generator))
    return x[..., i:i + size, j:j + size]
