"""TEM image formation: aberrations, objective aperture, partial coherence, detector, dose.

Conventions (Kirkland 2010 ch. 3; abTEM 1.0.11 ``transfer.py``): the aberration function is

    chi(alpha, phi) = 2 pi / lambda * sum_{n,m} alpha^(n+1) / (n+1) * C_nm cos(m (phi - phi_nm))

with alpha = lambda |k| [rad], phi = atan2(ky, kx), C_nm [Å] and phi_nm [rad]; the transfer
factor is ``exp(-i chi)`` and ``defocus = -C10`` (positive defocus is underfocus). Envelopes
multiply the wave spectrum (quasi-coherent approximation).
"""
from __future__ import annotations

import math
from typing import Mapping

import torch

from .._api import Seed, as_generator
from ..errors import InvalidTypeError, OutOfRangeError, expect_number, expect_type
from .physics import wavelength
from .potential import Grid

POLAR = ("C10", "C12", "phi12", "C21", "phi21", "C23", "phi23", "C30", "C32", "phi32", "C34",
         "phi34", "C41", "phi41", "C43", "phi43", "C45", "phi45", "C50", "C52", "phi52", "C54",
         "phi54", "C56", "phi56")
ALIASES = {"Cs": "C30", "C5": "C50", "astigmatism": "C12", "astigmatism_angle": "phi12",
           "coma": "C21", "coma_angle": "phi21", "trefoil": "C23", "trefoil_angle": "phi23"}


def aberration_coefficients(aberrations: Mapping[str, float] | None = None, **kwargs: float) -> dict:
    """Polar coefficients {C_nm [Å], phi_nm [rad]} from names, aliases and ``defocus`` (= -C10) [Å]."""
    out = {k: 0.0 for k in POLAR}
    for key, value in {**(aberrations or {}), **kwargs}.items():
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"aberration {key} must be finite, got {value}")
        if key == "defocus":
            out["C10"] = -value
        elif key in ALIASES:
            out[ALIASES[key]] = value
        elif key in out:
            out[key] = value
        else:
            raise ValueError(f"unknown aberration {key!r}; use {POLAR}, {tuple(ALIASES)} or 'defocus'")
    return out


def _terms(c: dict):
    for name in POLAR:
        if name.startswith("C") and c[name] != 0.0:
            n, m = int(name[1]), int(name[2])
            yield n, m, c[name], c.get(f"phi{n}{m}", 0.0)


def angular_grid(grid: Grid, energy: float, *, device: str | torch.device | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha [rad], phi [rad]) float64 [nx, ny] on the FFT grid."""
    expect_type("grid", grid, Grid)
    kx, ky = grid.frequencies(device)
    lam = wavelength(energy)
    alpha = lam * torch.sqrt(kx ** 2 + ky ** 2)
    phi = torch.atan2(ky.expand_as(alpha), kx.expand_as(alpha))
    return alpha, phi


def aberration_function(grid: Grid, energy: float, aberrations: Mapping[str, float] | None = None,
                        *, device: str | torch.device | None = None, **kwargs: float) -> torch.Tensor:
    """chi(k) [rad] float64 [nx, ny]."""
    c = aberration_coefficients(aberrations, **kwargs)
    alpha, phi = angular_grid(grid, energy, device=device)
    chi = torch.zeros_like(alpha)
    for n, m, cnm, pnm in _terms(c):
        chi = chi + alpha ** (n + 1) / (n + 1) * cnm * torch.cos(m * (phi - pnm))
    return 2 * math.pi / wavelength(energy) * chi


def aperture(grid: Grid, energy: float, semiangle_cutoff: float, soft: bool = True, *,
             device: str | torch.device | None = None) -> torch.Tensor:
    """Objective/probe aperture float64 [nx, ny]; ``semiangle_cutoff`` [mrad] (inf: none).

    Soft (default): a linear ramp one angular pixel wide centred on the cutoff.
    """
    alpha, phi = angular_grid(grid, energy, device=device)
    if math.isinf(semiangle_cutoff):
        return torch.ones_like(alpha)
    if not semiangle_cutoff > 0:
        raise ValueError(f"semiangle_cutoff must be > 0 mrad, got {semiangle_cutoff}")
    ac = semiangle_cutoff * 1e-3
    if not soft:
        return (alpha <= ac).to(alpha.dtype)
    lam = wavelength(energy)
    dax, day = lam / grid.extent[0], lam / grid.extent[1]
    width = torch.sqrt((torch.cos(phi) * dax) ** 2 + (torch.sin(phi) * day) ** 2)
    a = torch.clamp((ac - alpha) / width + 0.5, 0.0, 1.0)
    a[0, 0] = 1.0
    return a


def temporal_envelope(grid: Grid, energy: float, focal_spread: float, *,
                      device: str | torch.device | None = None) -> torch.Tensor:
    """exp(-(pi/(2 lambda) Delta alpha^2)^2); ``focal_spread`` Delta [Å] is the 1/e half-width."""
    if focal_spread < 0:
        raise ValueError(f"focal_spread must be >= 0 Å, got {focal_spread}")
    alpha, _ = angular_grid(grid, energy, device=device)
    return torch.exp(-(0.5 * math.pi / wavelength(energy) * focal_spread * alpha ** 2) ** 2)


def spatial_envelope(grid: Grid, energy: float, angular_spread: float,
                     aberrations: Mapping[str, float] | None = None, *,
                     device: str | torch.device | None = None, **kwargs: float) -> torch.Tensor:
    """exp(-(beta/2)^2 |grad chi|^2), beta = ``angular_spread`` [mrad] (1/e source radius)."""
    if angular_spread < 0:
        raise ValueError(f"angular_spread must be >= 0 mrad, got {angular_spread}")
    c = aberration_coefficients(aberrations, **kwargs)
    alpha, phi = angular_grid(grid, energy, device=device)
    d_alpha = torch.zeros_like(alpha)
    d_phi = torch.zeros_like(alpha)
    for n, m, cnm, pnm in _terms(c):
        d_alpha = d_alpha + alpha ** n * cnm * torch.cos(m * (phi - pnm))
        d_phi = d_phi - alpha ** n * m / (n + 1) * cnm * torch.sin(m * (phi - pnm))
    k = 2 * math.pi / wavelength(energy)
    beta = angular_spread * 1e-3
    return torch.exp(-(beta / 2) ** 2 * k ** 2 * (d_alpha ** 2 + d_phi ** 2))


def ctf(grid: Grid, energy: float, aberrations: Mapping[str, float] | None = None,
        semiangle_cutoff: float = math.inf, focal_spread: float = 0.0, angular_spread: float = 0.0,
        soft: bool = True, *, device: str | torch.device | None = None,
        **kwargs: float) -> torch.Tensor:
    """Objective-lens transfer function complex128 [nx, ny]: exp(-i chi) A E_t E_s."""
    chi = aberration_function(grid, energy, aberrations, device=device, **kwargs)
    amp = aperture(grid, energy, semiangle_cutoff, soft, device=device)
    if focal_spread:
        amp = amp * temporal_envelope(grid, energy, focal_spread, device=device)
    if angular_spread:
        amp = amp * spatial_envelope(grid, energy, angular_spread, aberrations, device=device,
                                     **kwargs)
    return torch.polar(amp, -chi)


def apply_ctf(wave: torch.Tensor, transfer: torch.Tensor) -> torch.Tensor:
    """Image wave IFFT[FFT(wave) H] for waves [..., nx, ny]."""
    return torch.fft.ifft2(torch.fft.fft2(wave) * transfer.to(wave.dtype))


def image(wave: torch.Tensor, grid: Grid, energy: float, **ctf_kwargs) -> torch.Tensor:
    """HRTEM intensity |IFFT[FFT(wave) H]|^2 (vacuum = 1) with the CTF of ``ctf_kwargs``."""
    transfer = ctf(grid, energy, device=wave.device, **ctf_kwargs)
    return apply_ctf(wave, transfer).abs() ** 2


def bin_detector(image: torch.Tensor, factor: int) -> torch.Tensor:
    """Detector sampling: mean over ``factor`` x ``factor`` pixel blocks (edges cropped)."""
    expect_type("image", image, torch.Tensor)
    f = int(expect_number("factor", factor, 1, integer=True))
    if image.dim() < 2:
        raise ValueError(f"image must have at least 2 dims [..., H, W], got {list(image.shape)}")
    nx, ny = image.shape[-2] // f * f, image.shape[-1] // f * f
    x = image[..., :nx, :ny]
    return x.reshape(*x.shape[:-2], nx // f, f, ny // f, f).mean((-3, -1))


# Poisson means above this overflow torch.poisson's int64 draws.
MAX_MEAN_COUNTS = 1e15


def dose_noise(image: torch.Tensor, dose: float, pixel_area: float, seed: Seed = None
               ) -> torch.Tensor:
    """Poisson counts with mean ``image * dose * pixel_area`` (negative means clipped to 0).

    Args:
        image: intensity (1 = incident vacuum intensity per pixel).
        dose: electron dose [e⁻/Å²]; pixel_area: [Å²].
        seed: int, None or a torch.Generator (on image's device) for the Poisson draws.
    Returns:
        counts (float, same dtype as image; divide by dose * pixel_area to get intensity).
    """
    dose = expect_number("dose", dose, 0.0, 1e15, unit="e⁻/Å²", low_open=True)
    pixel_area = expect_number("pixel_area", pixel_area, 0.0, 1e12, unit="Å²", low_open=True)
    expect_type("image", image, torch.Tensor)
    if image.is_complex():
        raise InvalidTypeError("image must be a real intensity, got a complex tensor")
    lam = torch.clamp(image.to(torch.float64) * dose * pixel_area, min=0.0)
    if lam.numel() and not bool(lam.max() <= MAX_MEAN_COUNTS):  # NaN fails too
        raise OutOfRangeError(f"image * dose * pixel_area must be finite and at most "
                              f"{MAX_MEAN_COUNTS:.0e} counts per pixel (torch.poisson draws int64)")
    return torch.poisson(lam, generator=as_generator(seed, image.device)).to(image.dtype)
