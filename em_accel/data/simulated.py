"""Clean HRTEM micrographs simulated by multislice (:mod:`em_accel.sim`) for training data.

Each image: a shipped crystal (:data:`em_accel.sim.SHIPPED`) along a low-index zone axis, a
random thickness, a plane-wave exit wave at 300 keV, then the objective lens (defocus, Cs,
aperture, temporal coherence) and a detector that bins 2×2. Lattice images are what the thesis's
denoiser saw most of (its 17,267 micrographs were mostly crystalline specimens); they complement
:mod:`em_accel.data.synthetic`, which draws amorphous regions, grains and particles.
"""
from __future__ import annotations

import numpy as np
import torch

from .._api import as_numpy_rng

ZONES = ((0, 0, 1), (1, 1, 0), (1, 0, 0), (1, 1, 1))
ENERGY = 300.0  # keV


def simulated_micrograph(size: int, seed: int | np.random.Generator | None = None, *,
                         device: str | torch.device | None = None) -> np.ndarray:
    """One ``size``×``size`` float32 clean HRTEM image in [0, 1] (min–max scaled intensity);
    ``seed``: int, None or a numpy.random.Generator for every draw below.

    Draws: material (uniform over the shipped structures), zone axis (first of a shuffled
    :data:`ZONES` with an orthogonal periodic box), pixel size 0.2–0.35 Å, thickness 20–150 Å,
    defocus −20…60 nm (positive is underfocus), Cs 0.5–1.5 mm, aperture 15–30 mrad, focal spread
    2–5 nm. Simulated on a ``2·size`` grid (deposit potential, 2 Å slices), binned 2×2.
    """
    from ..sim import SHIPPED, Potential, multislice, plane_wave, zone_axis
    from ..sim.imaging import bin_detector, image

    if size < 16:
        raise ValueError(f"size must be >= 16 px, got {size}")
    rng = as_numpy_rng(seed)
    name = SHIPPED[rng.integers(len(SHIPPED))]
    extent = size * rng.uniform(0.2, 0.35)
    thickness = rng.uniform(20.0, 150.0)
    for k in rng.permutation(len(ZONES)):
        try:
            box = zone_axis(name, ZONES[k], extent=extent, thickness=thickness)
            break
        except ValueError:  # no orthogonal periodic box for this axis
            continue
    else:
        raise RuntimeError(f"no zone axis of {ZONES} gives an orthogonal box for {name}")
    pot = Potential(box, gpts=(2 * size, 2 * size), slice_thickness=2.0, method="deposit",
                    device=device)
    wave = multislice(plane_wave(pot.grid, device=device), pot, ENERGY)
    intensity = image(wave, pot.grid, ENERGY, defocus=rng.uniform(-200.0, 600.0),
                      Cs=rng.uniform(0.5e7, 1.5e7), semiangle_cutoff=rng.uniform(15.0, 30.0),
                      focal_spread=rng.uniform(20.0, 50.0))
    img = bin_detector(intensity, 2).double().cpu().numpy()
    img -= img.min()
    return (img / (img.max() + 1e-12)).astype(np.float32)
