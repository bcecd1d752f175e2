"""Training pairs for the noise-level-conditioned denoiser: counts at any dose, TEM or STEM.

Each item is a random crop of a clean image turned into an acquisition at a dose drawn
log-uniformly in counts/px (mean electron counts per pixel, 1 to 10⁴ by default):

- TEM (bright field): a pedestal 0.2–3× the image's contrast under it (HRTEM contrast is weak),
  Poisson counts, Gaussian read noise (0–1.5 counts), and with ``outliers`` X-ray hits (bright
  clusters of 1–3 px) and dead pixels;
- STEM (HAADF): a pedestal of 0–0.15 (dark background), scan-line jitter (each row shifted
  along the fast axis by N(0, 0–0.7 px)), Poisson counts and read noise; the target is the
  *unjittered* image, so the network learns to undo what it can of the jitter;
- then a ±10 % (log-normal) error in the assumed gain, as a real noise estimate would have.

The pair is in the network's domain (:mod:`em_accel.models.conditioned`): input
``[z, σ]`` with ``z = anscombe(c)/s`` and ``σ = 1/s``, target ``[anscombe(clean)/s, σ]``.
Item ``i`` is a pure function of ``(seed, i)``, so a resumed run sees the same batches.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import random_crop, random_dihedral
from .datasets import item_generator

MODALITIES = ("tem", "stem")
#: Default training dose range [mean counts/px].
DOSE_RANGE = (1.0, 1e4)


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(1, generator=g, dtype=torch.float64))


def shift_rows(image: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Shift each row of ``image`` [H, W] along x by ``shifts`` [H] px (linear interpolation,
    edge values held)."""
    w = image.shape[-1]
    x = torch.arange(w, dtype=image.dtype)[None] - shifts[:, None].to(image.dtype)
    x = x.clamp(0, w - 1)
    x0 = x.floor().long().clamp(max=w - 2) if w > 1 else x.floor().long()
    f = x - x0
    if w == 1:
        return image.clone()
    return image.gather(1, x0) * (1 - f) + image.gather(1, x0 + 1) * f


def acquire_counts(clean: torch.Tensor, modality: str, counts_per_px: float,
                   g: torch.Generator, gain_error: float = 0.1, outliers: bool = False,
                   pedestal: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(noisy, clean) equivalent-Poisson count images of a clean [H, W] image in [0, 1].

    ``noisy`` has variance ≈ its mean (read noise folded in as in
    :meth:`em_accel.data.noise_estimate.NoiseLevel.to_counts`); ``clean`` is its expectation
    without scan distortions. Both float64. ``gain_error`` is the log-normal spread of the
    assumed gain (both images are multiplied by it; 0 gives exact equivalent counts);
    ``outliers=True`` adds TEM X-ray hits and dead pixels (off by default: the shipped model
    is not trained on them, see docs/denoise.md). ``pedestal``: the intensity under the
    image's 0 in units of its range (e.g. an HRTEM micrograph's ``intensity_range`` lo/(hi−lo));
    None draws it (TEM 0.2–3, STEM 0–0.15).
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    img = clean.to(torch.float64)
    img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
    ped = _u(g, 0.2, 3.0) if modality == "tem" else _u(g, 0.0, 0.15)
    if pedestal is not None:
        ped = float(pedestal)
    lam = (img + ped) * (counts_per_px / float((img + ped).mean()))
    seen = lam
    if modality == "stem":
        jitter = _u(g, 0.0, 0.7)
        seen = shift_rows(lam, jitter * torch.randn(lam.shape[0], generator=g, dtype=torch.float64))
    counts = torch.poisson(seen, generator=g)
    read = _u(g, 0.0, 1.5)
    noisy = counts + read * torch.randn(lam.shape, generator=g, dtype=torch.float64) + read ** 2
    target = lam + read ** 2
    if modality == "tem" and outliers:
        h, w = lam.shape
        if float(torch.rand(1, generator=g)) < 0.3:          # X-ray hits
            for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
                y, x = (int(torch.randint(0, n - 2, (1,), generator=g)) for n in (h, w))
                sy, sx = (int(torch.randint(1, 3, (1,), generator=g)) for _ in range(2))
                noisy[y:y + sy, x:x + sx] += float(lam.max()) * _u(g, 2.0, 10.0)
        if float(torch.rand(1, generator=g)) < 0.3:          # dead pixels
            k = int(torch.randint(1, 6, (1,), generator=g))
            idx = torch.randint(0, h * w, (k,), generator=g)
            noisy.view(-1)[idx] = 0.0
    kappa = math.exp(gain_error * float(torch.randn(1, generator=g, dtype=torch.float64)))
    return noisy * kappa, target * kappa


def to_network(noisy: torch.Tensor, clean: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """(input [2, H, W], target [3, H, W] or None, s) in the conditioned network's domain.

    Input channels: the scaled Anscombe image z and the noise level σ; target channels: the
    clean image's z, σ, and the noisy z again (so a loss can be relative to the input's error).
    """
    from ..models.conditioned import anscombe, scale_of

    s = float(scale_of(float(noisy.mean())))
    sig = torch.full_like(noisy, 1.0 / s)
    z = anscombe(noisy) / s
    x = torch.stack([z, sig]).float()
    t = None if clean is None else torch.stack([anscombe(clean) / s, sig, z]).float()
    return x, t, s


class CountsCropDataset(Dataset):
    """Random crops of clean images acquired at log-uniform doses (see the module docstring).

    Args:
        images: clean 2-D images in [0, 1], each at least ``crop`` px on a side.
        modalities: per image ``"tem"``, ``"stem"`` or None (drawn per item).
        crop: crop size [px].
        dose_range: (low, high) mean counts/px, sampled log-uniformly.
        length: number of items.
        seed: item ``i`` is a pure function of ``(seed, i)``.
        pedestals: per image the intensity under its 0 in units of its range, or None (drawn).

    Items are ``(input, target)``, float32 ``[2, crop, crop]`` and ``[3, crop, crop]``.
    """

    def __init__(self, images: Sequence[np.ndarray], modalities: Sequence[str | None] | None,
                 crop: int, dose_range: tuple[float, float] = DOSE_RANGE,
                 length: int = 1_000_000, seed: int = 0,
                 pedestals: Sequence[float | None] | None = None) -> None:
        if not images:
            raise ValueError("images must not be empty")
        mods = list(modalities) if modalities is not None else [None] * len(images)
        if len(mods) != len(images):
            raise ValueError(f"modalities has {len(mods)} entries for {len(images)} images")
        for m in mods:
            if m is not None and m not in MODALITIES:
                raise ValueError(f"modalities must be in {MODALITIES} or None, got {m!r}")
        lo, hi = dose_range
        if not 0 < lo <= hi:
            raise ValueError(f"dose_range must satisfy 0 < low <= high counts/px, got {dose_range}")
        self.images = [torch.as_tensor(np.asarray(im, dtype=np.float32)) for im in images]
        for k, im in enumerate(self.images):
            if im.dim() != 2 or min(im.shape) < crop:
                raise ValueError(f"images[{k}] must be 2-D and at least {crop} px on a side, "
                                 f"got shape {list(im.shape)}")
        self.modalities, self.crop, self.dose_range = mods, crop, (float(lo), float(hi))
        self.length, self.seed = length, seed
        self.pedestals = list(pedestals) if pedestals is not None else [None] * len(images)
        if len(self.pedestals) != len(images):
            raise ValueError(f"pedestals has {len(self.pedestals)} entries for {len(images)} "
                             "images")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range [0, {self.length})")
        g = item_generator(self.seed, index)
        k = int(torch.randint(0, len(self.images), (1,), generator=g))
        x = random_dihedral(random_crop(self.images[k], self.crop, g), g).contiguous()
        mod = self.modalities[k] or MODALITIES[int(torch.randint(0, 2, (1,), generator=g))]
        lo, hi = self.dose_range
        dose = math.exp(_u(g, math.log(lo), math.log(hi)))
        noisy, clean = acquire_counts(x, mod, dose, g, pedestal=self.pedestals[k])
        inp, target, _ = to_network(noisy, clean)
        return inp, target
