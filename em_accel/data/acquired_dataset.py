"""(noisy, clean, noise-level) training items from clean micrographs and the acquisition model.

Item ``i`` depends only on ``(seed, i)``: which image, the counts_per_px, the sampled detector
and scan settings (:func:`em_accel.data.distort.acquire`), the crop and the dihedral transform.
Scan distortions move the specimen, so the clean target is the clean image resampled with the
same scan offsets (the network learns to denoise, not to undo drift) unless
``target="undistorted"``.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from . import distort
from .augment import dihedral


class AcquiredItem(NamedTuple):
    noisy: torch.Tensor          # float32 [1, crop, crop], clean-image units (E[noisy] ~ clean)
    clean: torch.Tensor          # float32 [1, crop, crop]
    noise_level: torch.Tensor    # float32 [1, crop, crop], expected noise std per pixel
    counts_per_px: float


class AcquiredDataset(Dataset):
    """Noisy acquisitions of clean micrographs at log-uniform counts_per_px.

    Args:
        images: clean images [n, H, W] in [0, 1] (e.g. ``load_cache(path).images``).
        params: per-image params (``load_cache(path).params``); HRTEM images use their
            ``intensity_range`` so shot noise sits on the bright background. None: intensity =
            image (HAADF).
        modality: ``"stem"`` or ``"tem"`` (``"haadf"`` / ``"hrtem"`` accepted).
        counts_per_px: (lo, hi) range, log-uniform, counts at a pixel of clean value 1 (HRTEM
            with params: a vacuum pixel).
        crop: crop side [px] (<= image side); None: the whole image.
        length: number of items; seed: base seed; augment: random dihedral transform.
        target: ``"scanned"`` (clean resampled with the same scan distortion) or
            ``"undistorted"`` (the clean image as simulated).
    """

    def __init__(self, images: np.ndarray, params: Sequence[dict] | None = None,
                 modality: str = "stem", counts_per_px: tuple[float, float] = (10.0, 1000.0),
                 crop: int | None = 128, length: int = 100_000, seed: int = 0,
                 augment: bool = True, target: str = "scanned") -> None:
        images = np.asarray(images)
        if images.ndim != 3 or len(images) == 0:
            raise ValueError(f"images must be [n, H, W] with n >= 1, got shape {list(images.shape)}")
        if params is not None and len(params) != len(images):
            raise ValueError(f"params has {len(params)} entries for {len(images)} images")
        lo, hi = (float(c) for c in counts_per_px)
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise ValueError(f"counts_per_px must be (lo, hi) with 0 < lo <= hi, got {counts_per_px}")
        if crop is not None and not 1 <= int(crop) <= min(images.shape[1:]):
            raise ValueError(f"crop must be in 1..{min(images.shape[1:])} px, got {crop}")
        if target not in ("scanned", "undistorted"):
            raise ValueError(f"target must be 'scanned' or 'undistorted', got {target!r}")
        distort.acquire(np.zeros((2, 2)), modality, 1.0, seed=0)  # validates the modality name
        self.images, self.params, self.modality = images, params, modality
        self.counts = (lo, hi)
        self.crop, self.length, self.seed, self.augment, self.target = crop, int(length), int(seed), augment, target

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> AcquiredItem:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range [0, {self.length})")
        rng = np.random.default_rng([self.seed, int(index)])
        k = int(rng.integers(len(self.images)))
        clean = self.images[k].astype(np.float64)
        cpp = float(math.exp(rng.uniform(math.log(self.counts[0]), math.log(self.counts[1]))))
        ir = None
        if self.params is not None and "intensity_range" in self.params[k]:
            ir = self.params[k]["intensity_range"]
        acq = distort.acquire(clean, self.modality, cpp, seed=rng, intensity_range=ir)
        p = acq.params
        if p["modality"] == "stem" and self.target == "scanned":
            clean = distort.resample(clean, *distort.scan_offsets(clean.shape, **p, seed=p["scan_seed"]))
        sigma = distort.acquired_noise_level(clean, p)
        stack = torch.from_numpy(np.stack([acq.noisy, clean, sigma]).astype(np.float32))
        if self.crop is not None:
            h, w = stack.shape[-2:]
            i, j = int(rng.integers(h - self.crop + 1)), int(rng.integers(w - self.crop + 1))
            stack = stack[:, i:i + self.crop, j:j + self.crop]
        if self.augment:
            stack = dihedral(stack, int(rng.integers(8)))
        stack = stack.contiguous()
        return AcquiredItem(stack[0:1], stack[1:2], stack[2:3], cpp)

