"""Multislice simulation of exit waves, TEM images and STEM images (thesis ch. 2 and 7).

Quick start::

    import em_accel.sim as sim
    psi = sim.exit_wave("Si", zone=(1, 0, 0), extent=20, thickness=100, energy=300, sampling=0.05)

See docs/multislice.md for the physics, conventions and the agreement with abTEM.
"""
from __future__ import annotations

from .imaging import apply_ctf, bin_detector, ctf, dose_noise, image
from .kirkland import potential, projected_potential, projected_potential_fourier, scattering_factor
from .multislice import as_structure, exit_wave, multislice, plane_wave, transmission_functions
from .physics import interaction_parameter, wavelength
from .potential import Grid, Potential, slice_thicknesses
from .stem import annular_mask, incoherent_image, probe, stem
from .structure import SHIPPED, Structure, from_ase, load, read_cif, zone_axis

__all__ = [
    "Grid", "Potential", "SHIPPED", "Structure", "annular_mask", "apply_ctf", "as_structure",
    "bin_detector", "ctf", "dose_noise", "exit_wave", "from_ase", "image", "incoherent_image",
    "interaction_parameter", "load", "multislice", "plane_wave", "potential", "probe",
    "projected_potential", "projected_potential_fourier", "read_cif", "scattering_factor",
    "slice_thicknesses", "stem", "transmission_functions", "wavelength", "zone_axis",
]
