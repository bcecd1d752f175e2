"""Demo stage: multislice exit waves, HRTEM and HAADF-STEM images of a crystal and a
nanoparticle (:mod:`em_accel.sim`)."""
from __future__ import annotations

import numpy as np

from .context import ENERGY_KEV, HAADF_PROBE_MRAD, DemoContext, StageResult


def run(ctx: DemoContext) -> StageResult:
    panels, numbers = [], {}
    for spec in (ctx.crystal, ctx.nanoparticle):
        panels += [(f"{spec.name}: exit-wave amplitude", spec.amplitude),
                   (f"{spec.name}: exit-wave phase [rad]", spec.phase),
                   (f"{spec.name}: HRTEM", spec.hrtem),
                   (f"{spec.name}: HAADF-STEM", spec.haadf)]
        # Multislice conserves the flux (mean |psi|^2 = 1) up to what the band limit removes.
        numbers[f"{spec.name} mean |ψ|² (1 = flux kept)"] = float(np.mean(spec.amplitude ** 2))
        numbers[f"{spec.name} HRTEM contrast (std/mean)"] = float(spec.hrtem.std() / spec.hrtem.mean())
    lens = ctx.crystal.lens
    text = (f"{ctx.crystal.formula} and a {ctx.nanoparticle.formula.lower()}, {ENERGY_KEV:.0f} keV, "
            f"{ctx.size}×{ctx.size} px at {ctx.crystal.sampling:.3f} Å/px, 2 Å slices "
            f"(em_accel.sim.exit_wave). HRTEM: defocus {lens['defocus']:.0f} Å, "
            f"Cs {lens['Cs'] / 1e4:.0f} µm, aperture {lens['semiangle_cutoff']:.0f} mrad, focal "
            f"spread {lens['focal_spread']:.0f} Å (em_accel.sim.imaging.image). HAADF: incoherent "
            f"approximation, {HAADF_PROBE_MRAD:.0f} mrad probe, Z^1.7 contrast (em_accel.sim.stem.incoherent_image).")
    numbers["pixel size (Å/px)"] = ctx.crystal.sampling
    return StageResult("Simulation: exit waves, HRTEM and HAADF-STEM", panels, numbers, text)
