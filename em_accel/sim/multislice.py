"""The multislice loop and the exit-wave API.

Per slice j (Kirkland 2010 ch. 6; abTEM 1.0.11 order): transmit by the band-limited
``t_j = IFFT[A FFT(exp(i sigma V_j))]``, then propagate by that slice's own thickness with
``P = exp(-i pi lambda dz k^2) A(k)`` (times the tilt ramp), including after the last slice, so
the exit plane is the bottom face of the box. Every step is a native kernel; the FFTs are
torch.fft. Waves are batched: ``[B, nx, ny]`` with per-wave tilts and, optionally, per-wave
potentials (frozen phonons, several structures on one grid).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..errors import expect_number, expect_type
from ..ops import multislice as ops
from ..ops._common import COMPLEX_OF
from . import fft
from .physics import interaction_parameter, wavelength
from .potential import Grid, Potential
from .structure import Structure, from_ase, load



def transmission_functions(potential: torch.Tensor, energy: float, grid: Grid,
                           bandlimit: bool = True, out: torch.Tensor | None = None,
                           scale: float = 1.0) -> torch.Tensor:
    """Band-limited transmission functions ``IFFT[A FFT(exp(i sigma V))]`` of potential slices.

    Args:
        potential: real [..., nx, ny] projected potential [V·Å].
        energy: [keV]; grid: the sampling grid.
        out: optional contiguous complex tensor of the potential's shape for the result.
        scale: real factor on the result, applied inside the band-limit pass (the loop folds
            the wave's inverse-FFT 1/N in here).
    """
    t = ops.transmission(potential, interaction_parameter(energy), out=out)
    if bandlimit:
        kc, taper = grid.antialias()
        fft.fft2(t, out=t)
        n = grid.gpts[0] * grid.gpts[1]
        ops.propagate_(t, *grid.sampling, wavelength(energy), 0.0, kc, taper, scale=scale / n)
        fft.ifft2(t, out=t, normalize=False)
    elif scale != 1.0:
        t.mul_(scale)
    return t


def _tilt_tensor(tilt, batch: int, device) -> torch.Tensor:
    """(tan theta_x, tan theta_y) float64 [2] or [B, 2] from a tilt in mrad."""
    t = torch.as_tensor(tilt if tilt is not None else (0.0, 0.0), dtype=torch.float64)
    if t.shape[-1] != 2 or t.dim() > 2 or (t.dim() == 2 and t.shape[0] != batch):
        raise ValueError(f"tilt must be (theta_x, theta_y) mrad or [B={batch}, 2], got {list(t.shape)}")
    return torch.tan(t * 1e-3).contiguous().to(device)


def multislice(wave: torch.Tensor, potential: Potential | Sequence[Potential], energy: float,
               tilt=None, exit_planes: int | Sequence[int] | None = None,
               bandlimit_transmission: bool = True, chunk: int = 8,
               callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """Propagate waves through a potential by multislice.

    Args:
        wave: complex [B, nx, ny] (or [nx, ny]) entrance waves on the potential's grid; not modified.
        potential: one :class:`Potential` shared by all waves, or one per wave (same grid and
            slicing), e.g. frozen-phonon configurations.
        energy: accelerating voltage [keV].
        tilt: beam tilt (theta_x, theta_y) [mrad], or [B, 2]; carried by the propagator.
        exit_planes: also return the wave after every ``exit_planes``-th slice, or (a list)
            after each listed number of slices (1..num_slices), e.g. several thicknesses.
        bandlimit_transmission: band-limit t (abTEM's convention; costs one FFT pair per slice,
            or per distinct slice when slices repeat: ``Potential.slice_ids``). False applies
            exp(i sigma V) on the fly, fused into one native pass.
        chunk: slices whose transmission functions are built together.

    Returns:
        complex [B, nx, ny] exit waves, or [P, B, nx, ny] at the P recorded planes (the last
        is the exit plane) when ``exit_planes`` is set.
    """
    pots = list(potential) if isinstance(potential, (list, tuple)) else [potential]
    p0 = pots[0]
    for p in pots[1:]:
        if (p.grid != p0.grid or p.tile != p0.tile
                or not np.array_equal(p.thicknesses, p0.thicknesses)):
            raise ValueError("all potentials must share one grid and slicing")
    squeeze = wave.dim() == 2
    psi = (wave[None] if squeeze else wave).clone()
    if psi.dim() != 3 or tuple(psi.shape[-2:]) != p0.grid.gpts:
        raise ValueError(f"wave must be [B, {p0.grid.gpts[0]}, {p0.grid.gpts[1]}], got {list(wave.shape)}")
    if psi.dtype != COMPLEX_OF[p0.dtype]:
        raise TypeError(f"wave must be {COMPLEX_OF[p0.dtype]} to match the potential, got {psi.dtype}")
    batch = psi.shape[0]
    if len(pots) not in (1, batch):
        raise ValueError(f"give one potential or one per wave ({batch}), got {len(pots)}")
    tilt_t = _tilt_tensor(tilt, batch, psi.device)
    lam, sigma = wavelength(energy), interaction_parameter(energy)
    kc, taper = p0.grid.antialias()
    dx, dy = p0.grid.sampling
    planes = []
    spec = torch.empty_like(psi)
    n = p0.num_slices
    if exit_planes is None or isinstance(exit_planes, int):
        every = int(exit_planes or 0)
        record = {k for k in range(1, n + 1) if every and (k % every == 0 or k == n)}
    else:
        record = {int(k) for k in exit_planes}
        if not record or min(record) < 1 or max(record) > n:
            raise ValueError(f"exit_planes must list slice counts in 1..{n}, got {sorted(record)}")
    # Chunk buffers live across chunks: fresh large CPU allocations page-fault on first touch
    # (fft.Workspace), which had cost as much as the FFTs. Chunks of <= 8 MiB of transmission:
    # batched FFTs of larger chunks ran slower (cache), 18.6 vs 15.6 ms/slice at 1024^2.
    cx, cy = p0.cell_grid.gpts
    chunk = max(1, min(int(chunk), (8 << 20) // (cx * cy * psi.element_size() * len(pots))))
    ws = fft.Workspace()
    inv_n = 1.0 / (psi.shape[-1] * psi.shape[-2])
    # Slices with equal content (a crystal periodic along the beam, sliced commensurately) share
    # one band-limited transmission function, built once, when those fit in 256 MiB.
    tcache = None
    if bandlimit_transmission and len(pots) == 1:
        unique = len(set(p0.slice_ids.tolist()))
        if unique < n and unique * cx * cy * psi.element_size() <= 256 << 20:
            tcache = {}
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        if tcache is not None:
            t = []
            for j in range(start, stop):
                u = int(p0.slice_ids[j])
                if u not in tcache:
                    v = p0.slices(j, j + 1, tiled=False)[:, None]
                    tcache[u] = transmission_functions(v, energy, p0.cell_grid, scale=inv_n)[0]
                t.append(tcache[u])
        elif bandlimit_transmission:
            # one lateral period when the potential is periodic: [C, 1 or B, cx, cy]
            if len(pots) == 1:
                v = _chunk_potential(p0, start, stop, ws)[:, None]
            else:
                v = torch.stack([p.slices(start, stop, tiled=False) for p in pots], 1)
            t = transmission_functions(v, energy, p0.cell_grid, scale=inv_n,
                                       out=ws.get("t", v.shape, psi.dtype, psi.device))
        else:
            v = torch.stack([p.slices(start, stop) for p in pots], 1)  # [C, 1 or B, nx, ny]
            t = None
        for j in range(stop - start):
            if t is not None:
                _mul_tiled(psi, t[j], p0.tile)
            else:
                ops.transmit_(psi, v[j, 0] if len(pots) == 1 else v[j], sigma)
            # the inverse FFT's 1/N rides on t (or on the propagator when t is not built)
            fft.fft2(psi, out=spec)
            ops.propagate_(spec, dx, dy, lam, float(p0.thicknesses[start + j]), kc, taper, tilt_t,
                           scale=1.0 if t is not None else inv_n)
            fft.ifft2(spec, out=psi, normalize=False)
            if start + j + 1 in record:
                planes.append(psi.clone())
            if callback is not None:
                callback(start + j + 1)
    if record:
        out = torch.stack(planes)
        return out[:, 0] if squeeze else out
    return psi[0] if squeeze else psi


def _chunk_potential(p: Potential, start: int, stop: int, ws: fft.Workspace) -> torch.Tensor:
    """One lateral period of slices start..stop-1 [C, cx, cy]: the precomputed slices (a view),
    or built into a buffer of ``ws`` that the next chunk reuses."""
    if p._cache is not None:
        return p.slices(start, stop, tiled=False)
    return p.slices(start, stop, tiled=False,
                    out=ws.get("v", (stop - start, *p.cell_grid.gpts), p.dtype, p.device))


def _mul_tiled(psi: torch.Tensor, t: torch.Tensor, tile: tuple[int, int]) -> None:
    """psi [B, nx, ny] *= t tiled (rx, ry) times, t [1 or B, nx/rx, ny/ry], without copying t."""
    if tile == (1, 1):
        psi.mul_(t)
        return
    rx, ry = tile
    b, nx, ny = psi.shape
    cx, cy = nx // rx, ny // ry
    psi.view(b, rx, cx, ry, cy).mul_(t.reshape(t.shape[0], 1, cx, 1, cy))


def plane_wave(grid: Grid, batch: int | None = None, *, device: str | torch.device | None = None,
               dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """Unit-amplitude plane wave [nx, ny] (or [batch, nx, ny])."""
    expect_type("grid", grid, Grid)
    if batch is not None:
        batch = int(expect_number("batch", batch, 1, 2**31, integer=True))
    shape = grid.gpts if batch is None else (batch, *grid.gpts)
    return torch.ones(shape, dtype=dtype, device=device)


def as_structure(structure, zone=None, extent=None, thickness=None) -> Structure:
    """A :class:`Structure` from a Structure, ``ase.Atoms``, CIF path or shipped name.

    With ``zone`` (uvw) the crystal is turned to that zone axis (:func:`zone_axis`); an
    orthogonal cell without ``zone`` is used as it is. ``thickness`` [Å] tiles and cuts in z.
    """
    from .structure import check_box_size, zone_axis

    check_box_size(thickness, extent)

    if isinstance(structure, Structure) and zone is None:
        s = structure
    else:
        atoms = load(structure)
        if zone is None:
            try:
                s = from_ase(atoms)
            except ValueError:
                s = zone_axis(atoms, (0, 0, 1))
        else:
            s = zone_axis(atoms, zone)
        if extent is not None:
            reps = [max(1, round(float(e) / c)) for e, c in
                    zip((extent, extent) if np.isscalar(extent) else extent, s.cell[:2])]
            s = s.repeat(reps[0], reps[1], 1)
    if thickness is not None and abs(float(thickness) - s.cell[2]) > 1e-9:
        s = s.with_thickness(thickness)
    return s


def exit_wave(structure, energy: float = 300.0, sampling: float = 0.05,
              slice_thickness: float | Sequence[float] = 2.0, thickness: float | None = None,
              terms: int = 3, *, device: str | torch.device | None = None,
              gpts: int | Sequence[int] | None = None, method: str = "exact", tilt=None,
              exit_planes: int | None = None, debye_waller: Mapping[str | int, float] | None = None,
              frozen_phonons: int = 0, seed: int | None = None, precision: str = "float32",
              bandlimit_transmission: bool = True, zone=None, extent=None) -> torch.Tensor:
    """Exit wave of a plane wave through ``structure``.

    Args:
        structure: :class:`Structure`, ``ase.Atoms``, CIF path or shipped name ("Si", ...).
        energy: accelerating voltage [keV].
        sampling: lateral sampling [Å/px] (the grid is ceil(L / sampling) points, so the real
            sampling is <= this); or give ``gpts``.
        slice_thickness: [Å] (``ceil(depth / dz)`` equal slices), or a list.
        thickness: specimen thickness [Å]; the box is tiled along z and cut; None: the box depth.
        terms: Kirkland terms, 3 (full) or 1 (first Lorentzian and Gaussian).
        device: torch device (default CPU).
        method: "exact" structure factor (default) or "deposit" (abTEM-compatible).
        tilt: beam tilt (theta_x, theta_y) [mrad], or [B, 2] for a batch of tilts.
        exit_planes: also return the wave after every N-th slice (a leading plane axis).
        debye_waller: RMS displacement per axis [Å] per element (static damping of f_e).
        frozen_phonons: number of configurations with Gaussian displacements of the
            ``debye_waller`` widths (a leading configuration axis); 0: static lattice.
        precision: "float32" (complex64 waves) or "float64".
        zone, extent: zone axis [uvw] and lateral size [Å] used to build the box from a crystal.

    Returns:
        complex tensor [nx, ny] (plus leading axes for tilts [B], configurations [F] and planes [P],
        in the order [P, F or B, nx, ny]); amplitude 1 is the incident vacuum wave.
    """
    if precision not in ("float32", "float64"):
        raise ValueError(f"precision must be 'float32' or 'float64', got {precision!r}")
    real = torch.float32 if precision == "float32" else torch.float64
    s = as_structure(structure, zone, extent, thickness)
    kw = dict(sampling=sampling, gpts=gpts, slice_thickness=slice_thickness, terms=terms,
              method=method, device=device, dtype=real)
    if frozen_phonons:
        if not debye_waller:
            raise ValueError("frozen_phonons needs debye_waller widths (Å per element)")
        rng = np.random.default_rng(seed)
        from .kirkland import atomic_number

        sig = {atomic_number(k): float(v) for k, v in debye_waller.items()}
        widths = np.array([sig.get(int(z), 0.0) for z in s.numbers])[:, None]
        pots = [Potential(Structure(s.positions + rng.normal(size=s.positions.shape) * widths,
                                    s.numbers, s.cell, {k: v for k, v in s.info.items() if k != "repeats"}), **kw)
                for _ in range(int(frozen_phonons))]
        batch = len(pots)
    else:
        pots = Potential(s, debye_waller=debye_waller, **kw)
        batch = None
        if tilt is not None and torch.as_tensor(tilt).dim() == 2:
            batch = torch.as_tensor(tilt).shape[0]
    grid = (pots[0] if isinstance(pots, list) else pots).grid
    wave = plane_wave(grid, batch, device=device, dtype=COMPLEX_OF[real])
    return multislice(wave, pots, energy, tilt=tilt, exit_planes=exit_planes,
                      bandlimit_transmission=bandlimit_transmission)
