"""Kirkland's parameterisation of electron scattering factors and projected atomic potentials.

E. J. Kirkland, *Advanced Computing in Electron Microscopy*, 2nd ed. (Springer 2010), Appendix C:
for each element Z = 1..103, 3 Lorentzians (a_i, b_i) and 3 Gaussians (c_i, d_i),

    f_e(k) = sum_i a_i / (k^2 + b_i) + sum_i c_i exp(-d_i k^2)       [Å], k = 1/d [1/Å].

The table ships as ``em_accel/sim/data/kirkland.txt``. ``terms=1`` keeps only the first
Lorentzian and first Gaussian (the truncated physics of the thesis' n = 1 datasets).
"""
from __future__ import annotations

import functools
import math
from importlib import resources

import torch

from ..errors import expect_number, expect_type
from .physics import BOHR_ANGSTROM, E_OVER_4PI_EPS0, FORM_FACTOR_TO_POTENTIAL

_A0E = BOHR_ANGSTROM * E_OVER_4PI_EPS0  # a0 e [V·Å^2]

SYMBOLS = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se "
    "Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy "
    "Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am Cm Bk Cf "
    "Es Fm Md No Lr").split()
MAX_Z = 103


@functools.lru_cache(maxsize=1)
def parameters() -> torch.Tensor:
    """float64 [104, 4, 3]: rows a, b, c, d of element Z at index Z (row 0 unused)."""
    text = resources.files("em_accel.sim").joinpath("data/kirkland.txt").read_text()
    table = torch.zeros((MAX_Z + 1, 4, 3), dtype=torch.float64)
    seen = set()
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split()
        z = int(fields[0])
        if fields[1] != SYMBOLS[z] or len(fields) != 14:
            raise RuntimeError(f"kirkland.txt: bad row for Z={z}: {line!r}")
        v = [float(x) for x in fields[2:]]
        table[z, 0] = torch.tensor(v[0:6:2])   # a1 a2 a3
        table[z, 1] = torch.tensor(v[1:6:2])   # b1 b2 b3
        table[z, 2] = torch.tensor(v[6:12:2])  # c1 c2 c3
        table[z, 3] = torch.tensor(v[7:12:2])  # d1 d2 d3
        seen.add(z)
    if seen != set(range(1, MAX_Z + 1)):
        raise RuntimeError(f"kirkland.txt: missing elements {sorted(set(range(1, MAX_Z + 1)) - seen)}")
    return table


def atomic_number(element: int | str) -> int:
    """Atomic number of ``element`` (symbol or Z); ValueError if it is not in Z = 1..103."""
    if isinstance(element, str):
        if element not in SYMBOLS[1:]:
            raise ValueError(f"unknown element symbol {element!r} (Kirkland table covers H..Lr)")
        return SYMBOLS.index(element)
    return expect_number("atomic number", element, 1, MAX_Z, integer=True)


def _coefficients(element, terms: int) -> torch.Tensor:
    if terms not in (1, 3):
        raise ValueError(f"terms must be 1 or 3, got {terms}")
    return parameters()[atomic_number(element), :, :terms]


def scattering_factor(element: int | str, k: torch.Tensor, terms: int = 3) -> torch.Tensor:
    """Electron scattering factor f_e(k) [Å] at spatial frequency ``k`` [1/Å] (k = 1/d, no 2π)."""
    a, b, c, d = (x.tolist() for x in _coefficients(element, terms))
    k2 = k.to(torch.float64) ** 2
    out, tmp = torch.zeros_like(k2), torch.empty_like(k2)
    for i in range(len(a)):  # term by term in place: 5x faster than broadcasting over terms
        torch.add(k2, b[i], out=tmp)
        out.add_(tmp.reciprocal_(), alpha=a[i])
        torch.mul(k2, -d[i], out=tmp)
        out.add_(tmp.exp_(), alpha=c[i])
    return out


def potential(element: int | str, r: torch.Tensor, terms: int = 3) -> torch.Tensor:
    """Atomic potential V(r) [V] at radius ``r`` [Å] (Kirkland 2010, eq. C.19)."""
    a, b, c, d = _coefficients(element, terms).to(r.device)
    r = r.to(torch.float64)[..., None]
    lor = 2 * math.pi ** 2 * _A0E * (a / r * torch.exp(-2 * math.pi * r * torch.sqrt(b))).sum(-1)
    gau = 2 * math.pi ** 2.5 * _A0E * (c * d ** -1.5 * torch.exp(-math.pi ** 2 * r ** 2 / d)).sum(-1)
    return lor + gau


def projected_potential(element: int | str, r: torch.Tensor, terms: int = 3) -> torch.Tensor:
    """Infinitely projected potential v_z(r) [V·Å] at radius ``r`` [Å] (Kirkland 2010, eq. C.20).

    ``v_z = 4 pi^2 a0 e sum a_i K0(2 pi r sqrt(b_i)) + 2 pi^2 a0 e sum (c_i/d_i) exp(-pi^2 r^2/d_i)``.
    """
    expect_type("r", r, torch.Tensor)
    a, b, c, d = _coefficients(element, terms).to(r.device)
    r = r.to(torch.float64)[..., None]
    lor = 4 * math.pi ** 2 * _A0E * (a * torch.special.modified_bessel_k0(2 * math.pi * r * torch.sqrt(b))).sum(-1)
    gau = 2 * math.pi ** 2 * _A0E * (c / d * torch.exp(-math.pi ** 2 * r ** 2 / d)).sum(-1)
    return lor + gau


def projected_potential_fourier(element: int | str, k: torch.Tensor, terms: int = 3) -> torch.Tensor:
    """2-D Fourier transform of the projected potential [V·Å^3] at ``k`` [1/Å]: 2 pi a0 e f_e(k)."""
    return FORM_FACTOR_TO_POTENTIAL * scattering_factor(element, k, terms)
