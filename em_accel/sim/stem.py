"""STEM: probes, batched probe multislice, annular detectors and the incoherent approximation.

The probe is ``Psi(k) = A(k) exp(-i chi(k)) exp(-2 pi i k.r0) / sqrt(sum_k |A exp(-i chi)|^2)``
(soft aperture by default), so ``sum_k |FFT(psi)|^2 = 1`` and a detector's signal is the
fraction of the beam it collects (abTEM 1.0.11 conventions).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch

from .._api import progress_bar
from ..errors import expect_type
from ..ops import multislice as ops
from ..ops._common import COMPLEX_OF
from .imaging import aberration_function, aperture
from .multislice import multislice
from .physics import wavelength
from .potential import Grid, Potential
from .structure import Structure


def probe(grid: Grid, energy: float, positions, semiangle_cutoff: float = 30.0,
          aberrations: Mapping[str, float] | None = None, soft: bool = True, *,
          device: str | torch.device | None = None, dtype: torch.dtype = torch.complex64,
          **kwargs: float) -> torch.Tensor:
    """Probes [P, nx, ny] centred at ``positions`` [P, 2] (x, y) [Å]; aperture in mrad."""
    kc, _ = grid.antialias()
    if semiangle_cutoff * 1e-3 / wavelength(energy) > kc:
        raise ValueError(f"semiangle_cutoff {semiangle_cutoff} mrad exceeds the band limit "
                         f"{kc * wavelength(energy) * 1e3:.1f} mrad of this sampling; sample finer")
    pos = torch.as_tensor(np.asarray(positions, dtype=np.float64), device=device).reshape(-1, 2)
    a = aperture(grid, energy, semiangle_cutoff, soft, device=device)
    chi = aberration_function(grid, energy, aberrations, device=device, **kwargs)
    base = torch.polar(a, -chi)
    base = base / torch.sqrt((base.abs() ** 2).sum())
    kx, ky = grid.frequencies(device)
    shift = torch.polar(torch.ones(1, dtype=torch.float64, device=device),
                        -2 * math.pi * (kx[None] * pos[:, 0, None, None] + ky[None] * pos[:, 1, None, None]))
    return torch.fft.ifft2(base[None] * shift).to(dtype)


def scan_grid(extent: Sequence[float], gpts: Sequence[int], start=(0.0, 0.0)) -> np.ndarray:
    """Raster positions [nx*ny, 2] [Å]: linspace(start, start+extent, n, endpoint=False), x outer."""
    xs = np.linspace(start[0], start[0] + extent[0], int(gpts[0]), endpoint=False)
    ys = np.linspace(start[1], start[1] + extent[1], int(gpts[1]), endpoint=False)
    return np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)


def annular_mask(grid: Grid, energy: float, inner: float, outer: float, *,
                 device: str | torch.device | None = None) -> torch.Tensor:
    """Detector mask float64 [nx, ny]: inner <= alpha < outer [mrad]."""
    expect_type("grid", grid, Grid)
    if not 0 <= inner < outer:
        raise ValueError(f"detector angles must satisfy 0 <= inner < outer, got {inner}, {outer}")
    # Nothing is scattered past the antialias band limit; an outer angle past the grid's
    # Nyquist angle lambda / (2 max(dx, dy)) cannot be simulated at all (abTEM raises there too).
    limit = wavelength(energy) / (2 * max(grid.sampling)) * 1e3
    if outer > limit and not math.isinf(outer):
        raise ValueError(f"detector outer angle {outer} mrad exceeds the largest simulated angle "
                         f"{limit:.1f} mrad of this sampling; sample finer")
    kx, ky = grid.frequencies(device)
    alpha = wavelength(energy) * torch.sqrt(kx ** 2 + ky ** 2) * 1e3
    return ((alpha >= inner) & (alpha < outer)).to(torch.float64)


def stem(potential: Potential, energy: float, positions, detectors: Sequence[tuple[float, float]],
         semiangle_cutoff: float = 30.0, aberrations: Mapping[str, float] | None = None,
         batch: int = 16, progress: bool = True, **kwargs: float) -> torch.Tensor:
    """STEM signals [D, P] of annular detectors (inner, outer) [mrad] at scan ``positions`` [P, 2].

    The probes run through the multislice ``batch`` at a time; each signal is the fraction of the
    incident probe intensity that the detector collects. ``progress`` draws a bar over the
    batches (on a terminal).
    """
    grid, dev = potential.grid, potential.device
    cdt = COMPLEX_OF[potential.dtype]
    masks = torch.stack([annular_mask(grid, energy, i, o, device=dev) for i, o in detectors])
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    out = []
    for s in progress_bar(range(0, len(pos), batch), progress, desc="stem", unit="batch"):
        waves = probe(grid, energy, pos[s:s + batch], semiangle_cutoff, aberrations,
                      device=dev, dtype=cdt, **kwargs)
        exit_ = multislice(waves, potential, energy)
        dp = torch.fft.fft2(exit_).abs().to(torch.float64) ** 2
        out.append(torch.einsum("pxy,dxy->dp", dp, masks))
    return torch.cat(out, 1)


def incoherent_image(structure: Structure, energy: float, sampling: float | None = 0.05,
                     semiangle_cutoff: float = 30.0, aberrations: Mapping[str, float] | None = None,
                     exponent: float = 1.7, gpts=None, *, device: str | torch.device | None = None,
                     **kwargs: float) -> torch.Tensor:
    """Fast incoherent HAADF approximation [nx, ny]: probe intensity convolved with Z^exponent.

    Every atom is a point of weight Z^exponent (projected through the whole box), placed with the
    exact structure-factor kernel (sub-pixel positions kept), and the periodic convolution with
    the probe intensity (normalised to sum 1 over the grid) is done in Fourier space:
    ``I(r) = sum_j Z_j^exponent |psi(r - r_j)|^2``, so the image sums to ``sum_j Z_j^exponent``.
    """
    expect_type("structure", structure, Structure)
    grid = Grid.from_sampling(structure.cell[:2], sampling, gpts)
    (nx, ny), (lx, ly) = grid.gpts, grid.extent
    species = [int(z) for z in np.unique(structure.numbers)]
    sp = np.searchsorted(species, structure.numbers)
    order = np.argsort(sp, kind="stable")
    pos = torch.from_numpy(np.ascontiguousarray(structure.positions[order, :2])).to(device)
    spt = torch.from_numpy(sp[order].astype(np.int32)).to(device)
    offsets = torch.tensor([0, len(order)], dtype=torch.int64, device=device)
    weights = torch.tensor([float(z) ** exponent for z in species], dtype=torch.float64, device=device)
    ff = weights[:, None, None].expand(len(species), nx, ny // 2 + 1).contiguous()
    obj_k = ops.structure_factor(pos, spt, offsets, ff, nx, ny, lx, ly, check=False)[0]
    p = probe(grid, energy, [(0.0, 0.0)], semiangle_cutoff, aberrations, device=device,
              dtype=torch.complex128, **kwargs)[0]
    p_int = torch.fft.rfft2(p.abs() ** 2 * (nx * ny))  # probe intensity summing to 1 over the grid
    return torch.fft.irfft2(obj_k * p_int, s=(nx, ny))
