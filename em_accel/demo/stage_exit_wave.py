"""Demo stage: the crystal's exit-wave phase recovered from its amplitude alone
(:func:`em_accel.models.reconstruct_exit_wave`, shipped broad-set weights), with the phase error
map against the simulated truth and the baselines on the same wave."""
from __future__ import annotations

import numpy as np
import torch

from .context import DemoContext, StageResult


def run(ctx: DemoContext) -> StageResult:
    from ..models.exit_wave import (PRETRAINED, global_offset, load_pretrained_exit_wave,
                                    reconstruct_exit_wave, rotate)
    from ..models.exit_wave_metrics import baselines, phase_errors, phasor

    spec = ctx.crystal
    model = load_pretrained_exit_wave(device=ctx.device)
    wave = reconstruct_exit_wave(spec.amplitude, model, device=ctx.device)
    pred = phasor(torch.from_numpy(np.angle(wave))[None])
    target = phasor(torch.from_numpy(spec.phase)[None])
    err = phase_errors(pred, target)
    base = baselines(target)
    aligned = rotate(pred.double(), global_offset(pred.double(), target.double()))[0]
    rec_phase = torch.atan2(aligned[1], aligned[0]).numpy()
    error_map = np.angle(np.exp(1j * (rec_phase - spec.phase)))
    numbers = {
        "phasor MAE, network (thesis metric)": float(err.mae[0]),
        "phasor MAE, best constant on this wave (baseline)": base["best_constant_mae"],
        "phasor MAE, random components (baseline)": base["random_components"],
        "phasor MAE after global-offset removal, network": float(err.mae_aligned[0]),
        "phasor MAE after global-offset removal, flat phase (baseline)": base["flat_phase_mae_aligned"],
        "wrapped phase RMSE after offset removal, network (rad)": float(err.rmse[0]),
        "wrapped phase RMSE, flat phase (baseline) (rad)": base["flat_phase_rmse"],
    }
    panels = [("exit-wave amplitude (input)", spec.amplitude),
              ("true phase (rad)", spec.phase),
              ("recovered phase, global offset removed (rad)", rec_phase.astype(np.float32)),
              ("phase error (rad)", error_map.astype(np.float32))]
    text = (f"The crystal's simulated exit wave ({spec.formula}, {spec.sampling:.3f} Å/px): only "
            "its amplitude goes in; em_accel.models.reconstruct_exit_wave returns amplitude × "
            f"recovered phasor with the shipped small ExitWaveNet ({PRETRAINED}, trained on the "
            "CPU broad set: 50–300 Å thick crystals tilted off their zone axes, 4430 steps on one "
            "CPU core, hedged output and L1 loss; the phase shown is the output's direction). "
            "The demo crystal (40 Å thick, exactly on [001]) is thinner than any "
            "training crystal. Errors are against the simulated phase; the flat-phase and "
            "best-constant rows are baselines on the same wave. This small model does not beat "
            "them yet (docs/exit_wave.md: on the held-out test sets it at best equals the best "
            "constant).")
    return StageResult("Exit-wave phase from one amplitude", panels, numbers, text)
