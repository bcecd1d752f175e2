"""Datasets of noisy/clean micrograph crops with deterministic seeding.

Item ``i`` of a :class:`NoisyCropDataset` depends only on ``(seed, i)``: which source image,
where the crop lies, which dihedral transform, which dose and which Poisson draw. A training
run that resumes at step ``s`` therefore sees exactly the batches it would have seen.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import random_crop, random_dihedral
from .noise import poisson_noise, sample_counts_per_px
from .synthetic import synthetic_micrograph

#: Grayscale-able images bundled with scikit-image (no download), split for training and a
#: held-out evaluation set.
SKIMAGE_TRAIN = ("camera", "brick", "grass", "gravel", "clock", "astronaut",
                 "chelsea", "coffee", "rocket", "immunohistochemistry", "retina")
SKIMAGE_HELDOUT = ("moon", "cell", "coins", "hubble_deep_field")


def item_generator(seed: int, index: int) -> torch.Generator:
    """The generator that makes item ``index`` of a dataset seeded with ``seed``."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(index)) % (2**63 - 1))


def skimage_images(names: Sequence[str] = SKIMAGE_TRAIN) -> list[np.ndarray]:
    """scikit-image's bundled images as float32 grayscale in [0, 1]."""
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.util import img_as_float32

    out = []
    for name in names:
        img = getattr(skimage.data, name)()
        if img.ndim == 3:
            img = rgb2gray(img[..., :3])
        out.append(img_as_float32(img))
    return out


def synthetic_images(n: int, size: int, seed: int, workers: int = 0) -> list[np.ndarray]:
    """``n`` synthetic micrographs (see :mod:`em_accel.data.synthetic`), reproducible by seed;
    ``workers`` > 1 generates them in that many processes (same images)."""
    return _seeded_images(_synthetic_from_seed, n, size, seed, workers)


def simulated_images(n: int, size: int, seed: int, workers: int = 0) -> list[np.ndarray]:
    """``n`` multislice HRTEM images (see :mod:`em_accel.data.simulated`), reproducible by
    seed; ``workers`` > 1 simulates them in that many processes (same images)."""
    return _seeded_images(_simulated_from_seed, n, size, seed, workers)


def _seeded_images(make: Callable, n: int, size: int, seed: int, workers: int) -> list[np.ndarray]:
    """``make(size, child_seed)`` for the ``n`` children of ``seed``, in processes if asked."""
    seeds = np.random.SeedSequence(seed).spawn(n)
    if workers > 1 and n > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: forking a process whose torch/OpenMP/FFTW threads hold locks can hang
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, n), mp_context=ctx) as pool:
            return list(pool.map(make, [size] * n, seeds))
    return [make(size, s) for s in seeds]


def _synthetic_from_seed(size: int, seed: np.random.SeedSequence) -> np.ndarray:
    return synthetic_micrograph(size, np.random.default_rng(seed))


def _simulated_from_seed(size: int, seed: np.random.SeedSequence) -> np.ndarray:
    from .simulated import simulated_micrograph

    return simulated_micrograph(size, np.random.default_rng(seed))


def file_images(paths: Sequence[str | Path]) -> list[np.ndarray]:
    """Micrographs read from microscope files (any format :func:`em_accel.io.read_image`
    reads), as float32 2-D arrays."""
    from ..io import read_image

    return [read_image(p).data.astype(np.float32) for p in paths]


class NoisyCropDataset(Dataset):
    """Random ``crop``×``crop`` crops of ``images`` with dihedral augmentation and Poisson noise.

    Args:
        images: clean 2-D images (arrays or tensors), each at least ``crop`` px on a side.
        crop: crop size [px].
        counts_per_px: ``"low"`` / ``"high"`` to draw counts per pixel per item from that
            dose regime (see :func:`~em_accel.data.noise.sample_counts_per_px`), or a fixed
            value [counts/px].
        length: number of items (any index below it is valid).
        seed: base seed; item ``i`` is a pure function of ``(seed, i)``.
        augment: apply a random dihedral transform.

    Items are ``(noisy, target)``, each float32 ``[1, crop, crop]``.
    """

    def __init__(self, images: Sequence[np.ndarray | torch.Tensor], crop: int,
                 counts_per_px: str | float = "low", length: int = 1_000_000, seed: int = 0,
                 augment: bool = True) -> None:
        if not images:
            raise ValueError("images must not be empty")
        self.images = [torch.as_tensor(np.asarray(im, dtype=np.float32)) for im in images]
        for k, im in enumerate(self.images):
            if im.dim() != 2:
                raise ValueError(f"images[{k}] must be 2-D, got shape {list(im.shape)}")
            if min(im.shape) < crop:
                raise ValueError(f"images[{k}] ({list(im.shape)}) is smaller than crop {crop}")
        if isinstance(counts_per_px, str):
            sample_counts_per_px(1, counts_per_px)  # validates the regime name
        elif not counts_per_px > 0:
            raise ValueError(f"counts_per_px must be > 0 counts/px, got {counts_per_px}")
        self.crop, self.counts_per_px, self.length = crop, counts_per_px, length
        self.seed, self.augment = seed, augment
        # weight sources by area so big images give proportionally more crops
        area = torch.tensor([float(im.numel()) for im in self.images])
        self._cum = torch.cumsum(area / area.sum(), 0)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range [0, {self.length})")
        g = item_generator(self.seed, index)
        src = int(torch.searchsorted(self._cum, torch.rand(1, generator=g)).clamp(max=len(self.images) - 1))
        x = random_crop(self.images[src], self.crop, g)
        if self.augment:
            x = random_dihedral(x, g)
        c = self.counts_per_px
        c = sample_counts_per_px(1, c, g)[0] if isinstance(c, str) else c
        pair = poisson_noise(x.contiguous()[None], c, g)
        return pair.noisy, pair.target


def make_batch(dataset: Dataset, step: int, batch_size: int,
               collate: Callable | None = None) -> tuple[torch.Tensor, ...]:
    """Batch ``step`` of a deterministic dataset: items ``step*batch_size ... +batch_size-1``
    (modulo its length), stacked."""
    n = len(dataset)
    items = [dataset[(step * batch_size + b) % n] for b in range(batch_size)]
    if collate is not None:
        return collate(items)
    return tuple(torch.stack(parts) for parts in zip(*items))
