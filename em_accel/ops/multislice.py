"""Multislice kernels as torch ops, and their pure-torch references.

Five ops carry the hot path of :mod:`em_accel.sim` (docs/multislice.md gives the physics):

- ``em_accel::ms_structure_factor``: exact structure-factor projected potential of many slices,
  ``V(k) = sum_j f_s(k) exp(-2 pi i k.r_j)`` on the rfft2 half spectrum;
- ``em_accel::ms_deposit``: abTEM-compatible bilinear deposit of atoms on the grid (per species);
- ``em_accel::ms_transmission``: ``t = exp(i sigma V)`` from the projected potential;
- ``em_accel::ms_transmit``: ``wave * exp(i sigma V)``, the exponential computed on the fly;
- ``em_accel::ms_propagate``: ``spectrum * exp(-i pi lambda dz k^2) * tilt ramp * antialias``,
  the propagator and band limit computed on the fly in one pass (no propagator array).

The registered ops are functional; ``transmit_`` and ``propagate_`` run the same kernels in
place (same checks) for the simulator's loop.

The FFTs between them are torch.fft (cuFFT on GPU). None of the ops is differentiable (the
simulator is a forward model); ``OP_SPECS`` says so.

Data flow: ``em_accel.sim.multislice`` -> ``propagate_`` (or ``em_accel::ms_propagate``) ->
``_native.multislice.propagate_{cpu,cuda}`` -> ``multislice::propagate_*`` ->
``fresnel_phase_1d``/``antialias`` (csrc/multislice/multislice.h).
"""
from __future__ import annotations

import math

import torch

from .. import _native
from ..errors import OutOfRangeError
from . import _validate
from ._common import (COMPLEX_OF, DTYPE_CODES, REAL_OF, check_same_device, check_tensor, launch,
                      native_op)
from ._registry import OpSpec

_N = _native.multislice
REAL_DTYPES = (torch.float32, torch.float64)
COMPLEX_DTYPES = (torch.complex64, torch.complex128)


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise OutOfRangeError(f"{name} must be finite and > 0, got {value}")


# ---------------------------------------------------------------------------------------------
# Atoms -> projected potential

def _check_atoms(positions, species, offsets, nx, ny, lx, ly) -> int:
    check_tensor("positions", positions, dtypes=(torch.float64,), ndim=2)
    if positions.shape[1] != 2:
        raise ValueError(f"positions must have shape [N, 2] (x, y in Å), got {list(positions.shape)}")
    check_tensor("species", species, dtypes=(torch.int32,), shape=(positions.shape[0],))
    check_tensor("offsets", offsets, dtypes=(torch.int64,), ndim=1)
    if offsets.numel() < 1:
        raise ValueError("offsets must have M + 1 >= 1 entries")
    check_same_device(positions=positions, species=species, offsets=offsets)
    if nx < 1 or ny < 1:
        raise ValueError(f"grid must be at least 1 x 1, got nx={nx}, ny={ny}")
    _positive("lx", lx)
    _positive("ly", ly)
    return offsets.numel() - 1


def _potential_params(items, nx, ny, species, lx, ly, dtype) -> "_N.PotentialParams":
    p = _N.PotentialParams()
    p.items, p.nx, p.ny, p.species = int(items), int(nx), int(ny), int(species)
    p.lx, p.ly, p.dtype = float(lx), float(ly), DTYPE_CODES[dtype]
    return p


@native_op("em_accel::ms_structure_factor")
def ms_structure_factor(positions: torch.Tensor, species: torch.Tensor, offsets: torch.Tensor,
                        form_factors: torch.Tensor, nx: int, ny: int, lx: float,
                        ly: float, check: bool = True) -> torch.Tensor:
    """Exact structure-factor spectrum of M slices on the rfft2 half grid.

    Args:
        positions: float64 [N, 2] atom (x, y) [Å], grouped by slice, sorted by species within one.
        species: int32 [N] species index of each atom, in [0, S).
        offsets: int64 [M + 1]; slice m holds atoms offsets[m] .. offsets[m+1]-1 (on the host
            for CPU tensors, on the device for CUDA tensors).
        form_factors: float32/float64 [S, nx, ny//2 + 1] per-species weight of each frequency.
        nx, ny: real-space grid; lx, ly: periodic cell extent [Å].
        check: verify offsets and species index inside the atom and form-factor arrays (one
            pass, InvalidIndexError otherwise); False only for callers that built them.

    Returns:
        complex [M, nx, ny//2 + 1]: ``sum_j form_factors[s_j, k] exp(-2 pi i (kx x_j + ky y_j))``
        with k = fftfreq (cycles/Å).
    """
    m = _check_atoms(positions, species, offsets, nx, ny, lx, ly)
    nyh = ny // 2 + 1
    check_tensor("form_factors", form_factors, dtypes=REAL_DTYPES, ndim=3)
    if tuple(form_factors.shape[1:]) != (nx, nyh):
        raise ValueError(f"form_factors must have shape [S, {nx}, {nyh}], got {list(form_factors.shape)}")
    check_same_device(positions=positions, form_factors=form_factors)
    if check:
        _validate.offsets_and_species(offsets, species, positions.shape[0], form_factors.shape[0])
    out = torch.empty((m, nx, nyh), dtype=COMPLEX_OF[form_factors.dtype], device=positions.device)
    p = _potential_params(m, nx, ny, form_factors.shape[0], lx, ly, form_factors.dtype)
    launch(_N, "structure_factor", positions.device, p, positions.data_ptr(), species.data_ptr(),
           offsets.data_ptr(), form_factors.data_ptr(), out.data_ptr(),
           op="em_accel::ms_structure_factor")
    return out


@ms_structure_factor.register_fake
def _(positions, species, offsets, form_factors, nx, ny, lx, ly, check=True):
    m = _check_atoms(positions, species, offsets, nx, ny, lx, ly)
    return form_factors.new_empty((m, nx, ny // 2 + 1), dtype=COMPLEX_OF[form_factors.dtype])


def structure_factor_reference(positions, species, offsets, form_factors, nx, ny, lx, ly,
                               check=True):
    """Reference for em_accel::ms_structure_factor: direct sum over atoms; float64-capable."""
    dev = form_factors.device
    kx = torch.fft.fftfreq(nx, d=lx / nx, dtype=torch.float64, device=dev)
    ky = torch.fft.rfftfreq(ny, d=ly / ny, dtype=torch.float64, device=dev)
    out = []
    offs = offsets.tolist()
    for m in range(len(offs) - 1):
        acc = torch.zeros((nx, ny // 2 + 1), dtype=torch.complex128, device=dev)
        for j in range(offs[m], offs[m + 1]):
            x, y = positions[j, 0].item(), positions[j, 1].item()
            phase = -2 * math.pi * (kx[:, None] * x + ky[None, :] * y)
            acc = acc + form_factors[int(species[j])].to(torch.float64) * torch.polar(torch.ones_like(phase), phase)
        out.append(acc)
    res = torch.stack(out) if out else torch.zeros((0, nx, ny // 2 + 1), dtype=torch.complex128, device=dev)
    return res.to(COMPLEX_OF[form_factors.dtype])


@native_op("em_accel::ms_deposit")
def ms_deposit(positions: torch.Tensor, species: torch.Tensor, offsets: torch.Tensor,
               num_species: int, nx: int, ny: int, lx: float, ly: float,
               double: bool, check: bool = True) -> torch.Tensor:
    """Bilinear (cloud-in-cell) deposit of unit weights, abTEM-compatible.

    Each atom's pixel coordinate (x/dx, y/dy), rounded to float32, splits a unit weight over its
    4 surrounding nodes with periodic wrap. Returns float32 (float64 with ``double``)
    [M, num_species, nx, ny]. Arguments as for :func:`ms_structure_factor`.
    """
    m = _check_atoms(positions, species, offsets, nx, ny, lx, ly)
    if num_species < 1:
        raise ValueError(f"num_species must be >= 1, got {num_species}")
    dtype = torch.float64 if double else torch.float32
    out = torch.empty((m, num_species, nx, ny), dtype=dtype, device=positions.device)
    return deposit_into(positions, species, offsets, out, lx, ly, check=check)


@ms_deposit.register_fake
def _(positions, species, offsets, num_species, nx, ny, lx, ly, double, check=True):
    m = _check_atoms(positions, species, offsets, nx, ny, lx, ly)
    return positions.new_empty((m, num_species, nx, ny),
                               dtype=torch.float64 if double else torch.float32)


def deposit_reference(positions, species, offsets, num_species, nx, ny, lx, ly, double,
                      check=True):
    """Reference for em_accel::ms_deposit (index_put accumulation)."""
    dtype = torch.float64 if double else torch.float32
    m = offsets.numel() - 1
    out = torch.zeros((m, num_species, nx, ny), dtype=dtype, device=positions.device)
    item = torch.repeat_interleave(torch.arange(m, device=positions.device), offsets.diff())
    p = positions.to(torch.float32) / torch.tensor([lx / nx, ly / ny], dtype=torch.float32,
                                                    device=positions.device)
    i0 = torch.floor(p)
    f = p - i0
    i0 = i0.long()
    for ddx, ddy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        w = (f[:, 0] if ddx else 1 - f[:, 0]) * (f[:, 1] if ddy else 1 - f[:, 1])
        out.index_put_((item, species.long(), (i0[:, 0] + ddx) % nx, (i0[:, 1] + ddy) % ny),
                       w.to(dtype), accumulate=True)
    return out


# ---------------------------------------------------------------------------------------------
# Transmission

def _transmit_params(batch, pixels, v_stride, sigma, dtype) -> "_N.TransmitParams":
    p = _N.TransmitParams()
    p.batch, p.pixels, p.v_stride = int(batch), int(pixels), int(v_stride)
    p.sigma, p.dtype = float(sigma), DTYPE_CODES[dtype]
    return p


@native_op("em_accel::ms_transmission")
def ms_transmission(potential: torch.Tensor, sigma: float) -> torch.Tensor:
    """Transmission function ``exp(i sigma V)``.

    Args:
        potential: float32/float64 [..., nx, ny] projected potential [V·Å].
        sigma: interaction parameter [rad/(V·Å)].
    Returns:
        complex64/complex128 of the same shape.
    """
    check_tensor("potential", potential, dtypes=REAL_DTYPES, min_ndim=1)
    check_same_device(potential=potential)
    if not math.isfinite(sigma):
        raise ValueError(f"sigma must be finite, got {sigma}")
    out = torch.empty(potential.shape, dtype=COMPLEX_OF[potential.dtype], device=potential.device)
    return _transmission_into(potential, float(sigma), out)


def _transmission_into(potential: torch.Tensor, sigma: float, out: torch.Tensor) -> torch.Tensor:
    p = _transmit_params(1, potential.numel(), potential.numel(), sigma, potential.dtype)
    launch(_N, "transmission", potential.device, p, potential.data_ptr(), out.data_ptr(),
           op="em_accel::ms_transmission")
    return out


@ms_transmission.register_fake
def _(potential, sigma):
    return potential.new_empty(potential.shape, dtype=COMPLEX_OF[potential.dtype])


def transmission_reference(potential: torch.Tensor, sigma: float) -> torch.Tensor:
    """Reference for em_accel::ms_transmission."""
    return torch.polar(torch.ones_like(potential), sigma * potential)


def _check_wave_potential(wave, potential) -> int:
    check_tensor("wave", wave, dtypes=COMPLEX_DTYPES, min_ndim=2)
    check_tensor("potential", potential, dtypes=(REAL_OF[wave.dtype],), min_ndim=2)
    check_same_device(wave=wave, potential=potential)
    grid = tuple(wave.shape[-2:])
    if tuple(potential.shape[-2:]) != grid:
        raise ValueError(f"potential must end in the wave's grid {list(grid)}, got {list(potential.shape)}")
    if tuple(potential.shape) == grid:
        return 1
    if potential.shape != wave.shape:
        raise ValueError(f"potential must have shape {list(grid)} or {list(wave.shape)}, "
                         f"got {list(potential.shape)}")
    return wave.numel() // max(1, math.prod(grid))


def _transmit_native(wave: torch.Tensor, potential: torch.Tensor, sigma: float, pb: int) -> None:
    pixels = wave.shape[-2] * wave.shape[-1]
    p = _transmit_params(wave.numel() // max(pixels, 1), pixels, 0 if pb == 1 else pixels, sigma,
                         potential.dtype)
    launch(_N, "transmit", wave.device, p, potential.data_ptr(), wave.data_ptr(),
           op="em_accel::ms_transmit")


@native_op("em_accel::ms_transmit")
def ms_transmit(wave: torch.Tensor, potential: torch.Tensor, sigma: float) -> torch.Tensor:
    """``wave * exp(i sigma potential)``, the exponential computed on the fly in one pass.

    Args:
        wave: complex64/complex128 [..., nx, ny], contiguous.
        potential: real of the matching precision, [nx, ny] (shared by all waves) or the wave's shape.
        sigma: interaction parameter [rad/(V·Å)].
    Returns:
        the transmitted wave (a new tensor; :func:`transmit_` works in place).
    """
    pb = _check_wave_potential(wave, potential)
    out = wave.clone()
    _transmit_native(out, potential, sigma, pb)
    return out


@ms_transmit.register_fake
def _(wave, potential, sigma):
    _check_wave_potential(wave, potential)
    return torch.empty_like(wave)


def transmit_reference(wave, potential, sigma):
    """Reference for em_accel::ms_transmit."""
    return wave * transmission_reference(potential, sigma).to(wave.dtype)


# ---------------------------------------------------------------------------------------------
# Propagation

def antialias_cutoff(dx: float, dy: float, cutoff: float = 0.6666666,
                     taper: float = 0.01) -> tuple[float, float]:
    """Antialias aperture radius and taper width [1/Å] for sampling dx, dy [Å].

    The radius is ``cutoff`` (0.6666666 as abTEM) of the coarser axis' Nyquist frequency and the
    raised-cosine taper is ``taper / max(dx, dy)`` wide, ending at the radius.
    """
    d = max(dx, dy)
    return cutoff / (2 * d), taper / d


def _check_propagate(spectrum, tilt, dx, dy, wavelength, dz, kc, taper) -> int:
    check_tensor("spectrum", spectrum, dtypes=COMPLEX_DTYPES, min_ndim=2)
    check_tensor("tilt", tilt, dtypes=(torch.float64,), min_ndim=1)
    check_same_device(spectrum=spectrum, tilt=tilt)
    if tilt.shape[-1] != 2:
        raise ValueError(f"tilt must have shape [2] or [B, 2] (tan theta_x, tan theta_y), got {list(tilt.shape)}")
    _positive("dx", dx)
    _positive("dy", dy)
    _positive("wavelength", wavelength)
    if not math.isfinite(dz):
        raise OutOfRangeError(f"dz must be finite, got {dz}")
    if kc > 0 and not (taper >= 0 and taper < kc):
        raise ValueError(f"taper must be in [0, kc={kc}), got {taper}")
    _validate.propagate_scalars(spectrum.shape[-2], spectrum.shape[-1], dx, dy, wavelength, dz,
                                kc, taper)
    batch = spectrum.numel() // max(1, spectrum.shape[-2] * spectrum.shape[-1])
    if tilt.numel() not in (2, 2 * batch):
        raise ValueError(f"tilt must hold 2 or 2 * batch = {2 * batch} values, got {list(tilt.shape)}")
    return batch


def _propagate_native(spectrum, tilt, dx, dy, wavelength, dz, kc, taper, batch, scale=1.0) -> None:
    p = _N.PropagateParams()
    p.batch, p.nx, p.ny = batch, spectrum.shape[-2], spectrum.shape[-1]
    p.dx, p.dy, p.wavelength, p.dz = float(dx), float(dy), float(wavelength), float(dz)
    p.kc, p.taper = float(kc), float(taper)
    p.tilt_stride = 0 if tilt.numel() == 2 else 2
    p.dtype = DTYPE_CODES[REAL_OF[spectrum.dtype]]
    p.scale = float(scale)
    launch(_N, "propagate", spectrum.device, p, tilt.data_ptr(), spectrum.data_ptr(),
           op="em_accel::ms_propagate")


@native_op("em_accel::ms_propagate")
def ms_propagate(spectrum: torch.Tensor, tilt: torch.Tensor, dx: float, dy: float,
                 wavelength: float, dz: float, kc: float, taper: float) -> torch.Tensor:
    """Fresnel propagation of a wave spectrum with the antialias band limit, in one pass.

    ``spectrum * exp(-i pi lambda dz k^2) exp(-2 pi i dz (kx tx + ky ty)) A(k)`` with k =
    fftfreq (cycles/Å, unshifted layout) and A the raised-cosine aperture of radius ``kc`` [1/Å]
    and taper ``taper`` [1/Å] (``kc <= 0``: none); computed on the fly, no propagator array.
    ``dz = 0`` applies only the band limit. :func:`propagate_` works in place.

    Args:
        spectrum: complex64/complex128 [..., nx, ny] = FFT of the wave.
        tilt: float64 [2] or [B, 2]: (tan theta_x, tan theta_y) of the beam tilt.
        dx, dy: real-space sampling [Å]; wavelength [Å]; dz: distance [Å].
    """
    batch = _check_propagate(spectrum, tilt, dx, dy, wavelength, dz, kc, taper)
    out = spectrum.clone()
    _propagate_native(out, tilt, dx, dy, wavelength, dz, kc, taper, batch)
    return out


@ms_propagate.register_fake
def _(spectrum, tilt, dx, dy, wavelength, dz, kc, taper):
    _check_propagate(spectrum, tilt, dx, dy, wavelength, dz, kc, taper)
    return torch.empty_like(spectrum)


def antialias_reference(nx: int, ny: int, dx: float, dy: float, kc: float, taper: float,
                        device=None) -> torch.Tensor:
    """Radial raised-cosine antialias aperture [nx, ny] float64 (unshifted layout)."""
    kx = torch.fft.fftfreq(nx, d=dx, dtype=torch.float64, device=device)
    ky = torch.fft.fftfreq(ny, d=dy, dtype=torch.float64, device=device)
    k = torch.sqrt(kx[:, None] ** 2 + ky[None, :] ** 2)
    if kc <= 0:
        return torch.ones_like(k)
    a = 0.5 * (1 + torch.cos(math.pi * (k - kc + taper) / taper)) if taper > 0 else torch.ones_like(k)
    a = torch.where(k <= kc - taper, torch.ones_like(k), a)
    return torch.where(k > kc, torch.zeros_like(k), a)


def propagator_reference(nx: int, ny: int, dx: float, dy: float, wavelength: float, dz: float,
                         kc: float, taper: float, tilt: torch.Tensor) -> torch.Tensor:
    """Fresnel propagator with band limit and tilt, complex128 [B or 1, nx, ny]."""
    dev = tilt.device
    kx = torch.fft.fftfreq(nx, d=dx, dtype=torch.float64, device=dev)[:, None]
    ky = torch.fft.fftfreq(ny, d=dy, dtype=torch.float64, device=dev)[None, :]
    t = tilt.reshape(-1, 2).to(torch.float64)
    phase = (-math.pi * wavelength * dz * (kx ** 2 + ky ** 2))[None] \
        - 2 * math.pi * dz * (kx[None] * t[:, 0, None, None] + ky[None] * t[:, 1, None, None])
    a = antialias_reference(nx, ny, dx, dy, kc, taper, device=dev)
    return torch.polar(a[None].expand_as(phase).contiguous(), phase)


def propagate_reference(spectrum, tilt, dx, dy, wavelength, dz, kc, taper):
    """Reference for em_accel::ms_propagate; float64-capable."""
    nx, ny = spectrum.shape[-2:]
    prop = propagator_reference(nx, ny, dx, dy, wavelength, dz, kc, taper, tilt)
    if tilt.numel() == 2:
        prop = prop[0]
    else:
        prop = prop.reshape(*spectrum.shape[:-2], nx, ny)
    return (spectrum.to(torch.complex128) * prop).to(spectrum.dtype)


# ---------------------------------------------------------------------------------------------
# Public wrappers used by em_accel.sim (they make inputs contiguous and fill defaults).

def structure_factor(positions, species, offsets, form_factors, nx, ny, lx, ly, *,
                     check: bool = True) -> torch.Tensor:
    """Exact structure-factor spectrum; see :func:`ms_structure_factor`."""
    _validate.tensors(positions=positions, species=species, offsets=offsets, form_factors=form_factors)
    _validate.integers(nx=nx, ny=ny)
    return ms_structure_factor(positions.contiguous(), species.contiguous(), offsets.contiguous(),
                               form_factors.contiguous(), int(nx), int(ny), float(lx), float(ly),
                               check=bool(check))


def deposit(positions, species, offsets, num_species, nx, ny, lx, ly, double=False, *,
            check: bool = True) -> torch.Tensor:
    """Bilinear deposit; see :func:`ms_deposit`."""
    _validate.tensors(positions=positions, species=species, offsets=offsets)
    _validate.integers(num_species=num_species, nx=nx, ny=ny)
    return ms_deposit(positions.contiguous(), species.contiguous(), offsets.contiguous(),
                      int(num_species), int(nx), int(ny), float(lx), float(ly), bool(double),
                      check=bool(check))


def deposit_into(positions, species, offsets, out: torch.Tensor, lx: float, ly: float, *,
                 check: bool = True) -> torch.Tensor:
    """Bilinear deposit into ``out`` [M, S, nx, ny] (zeroed here; the kernel of em_accel::ms_deposit).

    The simulator reuses ``out`` across slices (large fresh CPU allocations page-fault).
    ``check=False`` skips the offsets/species range pass (callers that built them)."""
    check_tensor("out", out, dtypes=REAL_DTYPES, ndim=4)
    m = _check_atoms(positions, species, offsets, out.shape[-2], out.shape[-1], lx, ly)
    if out.shape[0] != m or out.shape[1] < 1:
        raise ValueError(f"out must have shape [{m}, S >= 1, nx, ny], got {list(out.shape)}")
    check_same_device(positions=positions, out=out)
    if check:
        _validate.offsets_and_species(offsets, species, positions.shape[0], out.shape[1])
    out.zero_()
    p = _potential_params(m, out.shape[2], out.shape[3], out.shape[1], lx, ly, out.dtype)
    launch(_N, "deposit", positions.device, p, positions.data_ptr(), species.data_ptr(),
           offsets.data_ptr(), out.data_ptr(), op="em_accel::ms_deposit")
    return out


def transmission(potential: torch.Tensor, sigma: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """``exp(i sigma V)``; see :func:`ms_transmission`. With ``out`` (complex, contiguous, the
    potential's shape) the kernel writes there instead of a new tensor."""
    _validate.tensors(potential=potential)
    if out is None:
        return ms_transmission(potential.contiguous(), float(sigma))
    potential = potential.contiguous()
    check_tensor("potential", potential, dtypes=REAL_DTYPES, min_ndim=1)
    check_tensor("out", out, dtypes=(COMPLEX_OF[potential.dtype],), shape=tuple(potential.shape))
    check_same_device(potential=potential, out=out)
    return _transmission_into(potential, float(sigma), out)


def transmit_(wave: torch.Tensor, potential: torch.Tensor, sigma: float) -> torch.Tensor:
    """In place ``wave *= exp(i sigma V)`` (the kernel of em_accel::ms_transmit); returns ``wave``.

    The simulator's hot loop uses this in-place form; the registered op is functional.
    """
    _validate.tensors(wave=wave, potential=potential)
    potential = potential.contiguous()
    pb = _check_wave_potential(wave, potential)
    _transmit_native(wave, potential, float(sigma), pb)
    return wave


def propagate_(spectrum: torch.Tensor, dx: float, dy: float, wavelength: float, dz: float,
               kc: float, taper: float, tilt: torch.Tensor | None = None,
               scale: float = 1.0) -> torch.Tensor:
    """In place propagation + band limit of a spectrum (the kernel of em_accel::ms_propagate),
    times a real ``scale`` (the simulator folds the inverse FFT's 1/N in here)."""
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    _validate.tensors(spectrum=spectrum, **({} if tilt is None else {"tilt": tilt}))
    if tilt is None:
        tilt = torch.zeros(2, dtype=torch.float64, device=spectrum.device)
    tilt = tilt.to(torch.float64).contiguous()
    batch = _check_propagate(spectrum, tilt, dx, dy, wavelength, dz, kc, taper)
    _propagate_native(spectrum, tilt, dx, dy, wavelength, dz, kc, taper, batch, scale)
    return spectrum


# ---------------------------------------------------------------------------------------------
# Sample inputs (shared by tests and bench) and the op registry.

def _atoms(device, n_items=3, per_item=5, num_species=2, lx=7.0, ly=5.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = n_items * per_item
    pos = torch.rand((n, 2), generator=g, dtype=torch.float64) * torch.tensor([lx, ly], dtype=torch.float64)
    sp = torch.randint(0, num_species, (n,), generator=g, dtype=torch.int32)
    item = torch.arange(n) // per_item
    order = torch.argsort(item * num_species + sp.long(), stable=True)
    offsets = torch.arange(0, n + 1, per_item, dtype=torch.int64)
    return pos[order].to(device), sp[order].to(device), offsets.to(device)


def sample_structure_factor(device="cpu", dtype=torch.float32, requires_grad=False, nx=12, ny=10):
    """Arguments for em_accel::ms_structure_factor (odd/even, non-square grid)."""
    lx, ly = 7.0, 5.0
    pos, sp, off = _atoms(device, lx=lx, ly=ly)
    g = torch.Generator().manual_seed(1)
    ff = torch.rand((2, nx, ny // 2 + 1), generator=g, dtype=torch.float64).to(device, dtype)
    return pos, sp, off, ff, nx, ny, lx, ly


def sample_deposit(device="cpu", dtype=torch.float32, requires_grad=False):
    """Arguments for em_accel::ms_deposit."""
    pos, sp, off = _atoms(device)
    return pos, sp, off, 2, 12, 10, 7.0, 5.0, dtype == torch.float64


def sample_transmission(device="cpu", dtype=torch.float32, requires_grad=False):
    """Arguments for em_accel::ms_transmission."""
    g = torch.Generator().manual_seed(2)
    return (torch.randn((3, 8, 6), generator=g, dtype=torch.float64) * 50).to(device, dtype), 7.29e-4


def sample_transmit(device="cpu", dtype=torch.float32, requires_grad=False):
    """Arguments for em_accel::ms_transmit (a per-wave potential)."""
    g = torch.Generator().manual_seed(3)
    wave = torch.randn((2, 8, 6), generator=g, dtype=torch.complex128).to(device, COMPLEX_OF[dtype])
    v = (torch.randn((2, 8, 6), generator=g, dtype=torch.float64) * 50).to(device, dtype)
    return wave, v, 7.29e-4


def sample_propagate(device="cpu", dtype=torch.float32, requires_grad=False, nx=16, ny=12):
    """Arguments for em_accel::ms_propagate (batch of 2 with per-wave tilts)."""
    g = torch.Generator().manual_seed(4)
    spec = torch.randn((2, nx, ny), generator=g, dtype=torch.complex128).to(device, COMPLEX_OF[dtype])
    tilt = torch.tensor([[0.004, -0.002], [0.0, 0.01]], dtype=torch.float64, device=device)
    dx, dy = 0.1, 0.12
    kc, taper = antialias_cutoff(dx, dy)
    return spec, tilt, dx, dy, 0.0250793, 2.0, kc, taper


OP_SPECS = [
    OpSpec("ms_structure_factor", structure_factor_reference, sample_structure_factor, False, "multislice"),
    OpSpec("ms_deposit", deposit_reference, sample_deposit, False, "multislice"),
    OpSpec("ms_transmission", transmission_reference, sample_transmission, False, "multislice"),
    OpSpec("ms_transmit", transmit_reference, sample_transmit, False, "multislice"),
    OpSpec("ms_propagate", propagate_reference, sample_propagate, False, "multislice"),
]
