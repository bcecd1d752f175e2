"""Electron-optical constants: relativistic wavelength and interaction parameter.

Constants are CODATA 2018 (exact SI values for h, c, e). Energies are accelerating voltages in
keV throughout :mod:`em_accel.sim`.
"""
from __future__ import annotations

import math

from ..errors import expect_number

# CODATA 2018
HC_EV_ANGSTROM = 12398.419843320026   # h c / e [eV·Å]
M0C2_EV = 510998.95000                # electron rest energy [eV]
BOHR_ANGSTROM = 0.529177210903        # a0 [Å]
E_OVER_4PI_EPS0 = 14.399645478425668  # e / (4 pi eps0) [V·Å]
# 2 pi a0 e/(4 pi eps0) = h^2/(2 pi m0 e) [V·Å^2]: f_e(k) [Å] times this is the Fourier
# transform of the projected potential [V·Å^3] (abTEM's 1/kappa).
FORM_FACTOR_TO_POTENTIAL = 2.0 * math.pi * BOHR_ANGSTROM * E_OVER_4PI_EPS0


def _check_energy(energy: float) -> float:
    # electrons from 1 eV to 1 TeV; beyond, the formulas underflow (1e300 keV divided by zero)
    return expect_number("energy", energy, 0.0, 1e9, unit="keV", low_open=True) * 1e3


def wavelength(energy: float) -> float:
    """Relativistic electron wavelength [Å] at accelerating voltage ``energy`` [keV].

    ``lambda = h c / sqrt(E (2 m0 c^2 + E))``; 200 keV gives 0.0250793 Å.
    """
    e = _check_energy(energy)
    return HC_EV_ANGSTROM / math.sqrt(e * (2.0 * M0C2_EV + e))


def interaction_parameter(energy: float) -> float:
    """Interaction parameter sigma [rad/(V·Å)] at ``energy`` [keV].

    ``sigma = 2 pi m e lambda / h^2 = (2 pi / (lambda E)) (m0c^2 + E) / (2 m0c^2 + E)``
    (Kirkland 2010, eq. 5.6); 200 keV gives 7.2884e-4.
    """
    e = _check_energy(energy)
    return 2.0 * math.pi / (wavelength(energy) * e) * (M0C2_EV + e) / (2.0 * M0C2_EV + e)


def mrad_to_frequency(angle_mrad: float, energy: float) -> float:
    """Spatial frequency [1/Å] of scattering angle ``angle_mrad`` [mrad] (small-angle, k = alpha/lambda)."""
    return angle_mrad * 1e-3 / wavelength(energy)
