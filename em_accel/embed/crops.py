"""96x96 crops of micrographs for the map encoders: the thesis's two crop styles, and a
deterministic random-crop sampler for training.

"downsample" (the thesis's "downsampled" data): the top-left square of side min(H, W), area-
resized to 96x96; "center": the central square, area-resized (a whole-image summary that does
not favour a corner); "tiles": non-overlapping 96x96 tiles at full resolution. Every crop is
min-max scaled to [0, 1].
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.augment import dihedral
from ..data.datasets import item_generator
from .vae import CROP, to_unit_crops

CROP_MODES = ("center", "downsample", "tiles")


def resize_area(img: torch.Tensor, size: int = CROP) -> torch.Tensor:
    """Resize [..., H, W] to [..., size, size] by area averaging (antialiased bilinear when
    upsampling)."""
    x = img.reshape(-1, 1, *img.shape[-2:]).float()
    if min(x.shape[-2:]) >= size:
        y = F.interpolate(x, size=(size, size), mode="area")
    else:
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return y.reshape(*img.shape[:-2], size, size)


def image_crops(img: np.ndarray | torch.Tensor, mode: str = "center", size: int = CROP
                ) -> torch.Tensor:
    """Crops [n, size, size] in [0, 1] of one 2-D image, by ``mode`` (see the module doc).

    Raises ValueError for a non-2-D image, an image with non-finite pixels, or (tiles) one
    smaller than ``size``.
    """
    if mode not in CROP_MODES:
        raise ValueError(f"mode must be one of {CROP_MODES}, got {mode!r}")
    x = torch.as_tensor(np.asarray(img, dtype=np.float32))
    if x.dim() != 2:
        raise ValueError(f"image must be 2-D, got shape {list(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("image has NaN or infinite pixels")
    h, w = x.shape
    if min(h, w) < 8:
        raise ValueError(f"image is too small ({h}x{w} px)")
    if mode == "tiles":
        if min(h, w) < size:
            raise ValueError(f"image ({h}x{w}) is smaller than a {size}-px tile")
        t = x[:h // size * size, :w // size * size].reshape(h // size, size, w // size, size)
        crops = t.permute(0, 2, 1, 3).reshape(-1, size, size)
    else:
        s = min(h, w)
        i0, j0 = ((h - s) // 2, (w - s) // 2) if mode == "center" else (0, 0)
        crops = resize_area(x[i0:i0 + s, j0:j0 + s], size)[None]
    return to_unit_crops(crops)[:, 0]


def random_square(img: torch.Tensor, g: torch.Generator, size: int = CROP,
                  log_side: bool = True) -> torch.Tensor:
    """A square of ``img`` [H, W] with side in [size, min(H, W)] (log-uniform, or uniform with
    ``log_side=False``) at a uniform position, area-resized to ``size`` x ``size``."""
    h, w = img.shape
    hi = min(h, w)
    if log_side:
        u = float(torch.rand(1, generator=g))
        side = int(round(math.exp(math.log(size) + u * (math.log(hi) - math.log(size)))))
    else:
        side = int(torch.randint(size, hi + 1, (1,), generator=g))
    side = min(max(side, size), hi)
    i = int(torch.randint(h - side + 1, (1,), generator=g))
    j = int(torch.randint(w - side + 1, (1,), generator=g))
    return resize_area(img[i:i + side, j:j + side], size)


class CropSampler:
    """Random training crops of ``images``: batch ``step`` is a pure function of
    ``(seed, step)``, so resumed training repeats exactly the batches it would have seen.

    Each crop: an image drawn with probability proportional to its area, a square of side
    drawn uniformly in [96, min(H, W)] (log scale) at a uniform position, area-resized to
    96x96, min-max scaled to [0, 1], and a random dihedral transform.
    """

    def __init__(self, images: Sequence[np.ndarray], seed: int = 0, size: int = CROP):
        if not images:
            raise ValueError("images must not be empty")
        self.images = [torch.as_tensor(np.asarray(im, dtype=np.float32)) for im in images]
        for k, im in enumerate(self.images):
            if im.dim() != 2 or min(im.shape) < size:
                raise ValueError(f"images[{k}] must be 2-D and at least {size} px on a side, "
                                 f"got shape {list(im.shape)}")
        area = torch.tensor([float(im.numel()) for im in self.images])
        self._cum = torch.cumsum(area / area.sum(), 0)
        self.seed, self.size = seed, size

    def crop(self, index: int) -> torch.Tensor:
        g = item_generator(self.seed, index)
        src = int(torch.searchsorted(self._cum, torch.rand(1, generator=g)).clamp(max=len(self.images) - 1))
        c = random_square(self.images[src], g, self.size)
        c = dihedral(c, int(torch.randint(8, (1,), generator=g)))
        return to_unit_crops(c[None])[0]

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        """[batch_size, 1, 96, 96] crops for training step ``step``."""
        return torch.stack([self.crop(step * batch_size + b) for b in range(batch_size)])

