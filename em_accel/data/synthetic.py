"""Synthetic micrograph-like clean images, generated offline (no downloads).

Each image mixes an amorphous background (low-pass filtered noise), crystalline regions of
Gaussian atomic columns on a random 2-D lattice, nanoparticles with lattice fringes, and a
smooth illumination gradient. They stand in for high-dose TEM crops when no micrograph
collection is at hand; ``em_accel.sim`` multislice images can replace them where available.
Lengths are in pixels.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .._api import as_numpy_rng


def _lowpass_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    x = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return (x - x.mean()) / (x.std() + 1e-12)


def _lattice(rng: np.random.Generator, size: int) -> np.ndarray:
    """Gaussian atomic columns on a random oblique lattice with a 1–2 atom basis."""
    a = rng.uniform(4.0, 14.0)
    b = a * rng.uniform(0.8, 1.3)
    theta = rng.uniform(0, np.pi)
    gamma = rng.uniform(np.pi / 3, 2 * np.pi / 3)
    a1 = a * np.array([np.cos(theta), np.sin(theta)])
    a2 = b * np.array([np.cos(theta + gamma), np.sin(theta + gamma)])
    n = int(2 * size / min(a, b) * 1.5) + 2
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    pts = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2 + size / 2
    basis = [(np.zeros(2), 1.0)]
    if rng.random() < 0.5:
        basis.append((rng.uniform(0.25, 0.75) * (a1 + a2), rng.uniform(0.3, 0.9)))
    img = np.zeros((size, size))
    for offset, weight in basis:
        p = pts + offset + rng.normal(0, 0.15, pts.shape)  # small static displacements
        keep = (p[:, 0] >= 0) & (p[:, 0] < size - 1) & (p[:, 1] >= 0) & (p[:, 1] < size - 1)
        p = p[keep]
        y0, x0 = np.floor(p[:, 0]).astype(int), np.floor(p[:, 1]).astype(int)
        fy, fx = p[:, 0] - y0, p[:, 1] - x0
        for dy, dx, wgt in ((0, 0, (1 - fy) * (1 - fx)), (1, 0, fy * (1 - fx)),
                            (0, 1, (1 - fy) * fx), (1, 1, fy * fx)):
            np.add.at(img, (y0 + dy, x0 + dx), weight * wgt)
    sigma = rng.uniform(0.6, 0.22 * min(a, b))
    img = ndimage.gaussian_filter(img, sigma)
    return img / (img.max() + 1e-12)


def synthetic_micrograph(size: int, seed: int | np.random.Generator | None = None) -> np.ndarray:
    """One ``size``×``size`` float32 clean image in [0, 1]; ``seed``: int, None or a
    numpy.random.Generator (a stream passed on) for every random draw."""
    if size < 16:
        raise ValueError(f"size must be >= 16 px, got {size}")
    rng = as_numpy_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 0.15 * _lowpass_noise(rng, size, rng.uniform(1.0, 4.0))
    img += 0.1 * _lowpass_noise(rng, size, rng.uniform(8.0, 30.0))
    # crystalline grains: lattices masked by smooth random regions
    for _ in range(rng.integers(1, 4)):
        mask = _lowpass_noise(rng, size, rng.uniform(size / 12, size / 5)) > rng.uniform(-0.8, 0.6)
        mask = ndimage.gaussian_filter(mask.astype(float), 2.0)
        sign = -1.0 if rng.random() < 0.3 else 1.0
        img += sign * rng.uniform(0.4, 1.0) * mask * _lattice(rng, size)
    # nanoparticles with fringes
    for _ in range(rng.integers(0, 5)):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.15)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
        k = rng.uniform(0.15, 0.6) * size / np.pi
        phi = rng.uniform(0, np.pi)
        fringes = 0.5 + 0.5 * np.cos(k * (np.cos(phi) * yy + np.sin(phi) * xx) * np.pi)
        img += ndimage.gaussian_filter(disc.astype(float), 1.0) * (rng.uniform(0.2, 0.8)
                                                                  + 0.4 * fringes)
    # illumination gradient
    img += rng.uniform(-0.3, 0.3) * (yy - 0.5) + rng.uniform(-0.3, 0.3) * (xx - 0.5)
    img -= img.min()
    return (img / (img.max() + 1e-12)).astype(np.float32)
