"""Errors of recovered exit-wave phases, and the baselines every network row is judged against.

- ``mae``: the thesis's error, the mean absolute error of the two phasor channels
  (cos φ, sin φ), per wave, no alignment.
- ``mae_aligned``: the same for the prediction scaled to unit phasors and rotated by its best
  global phase offset (least squares, :func:`em_accel.models.exit_wave.global_offset`). The amplitude cannot fix a
  global phase: a constant offset (e.g. the mean inner potential × thickness) is invisible in
  |ψ|, so this is the error of what the amplitude can determine.
- ``rmse``: wrapped phase RMSE [rad] after that offset removal.
- ``mae_unit``: ``mae`` of the prediction scaled to unit phasors (equal to ``mae`` for the
  thesis's unit-output network; for a hedged output, :func:`em_accel.models.exit_wave.hedged_phasor`,
  the error of its phase alone).
- ``rmse_conj``: the smaller of ``rmse`` for the prediction and for its complex conjugate.
  |ψ| = |ψ*|: one amplitude also fits the conjugate wave, so ``rmse_conj`` < ``rmse`` shows how
  much of the error is the twin-image sign ambiguity. The network is scored without that
  freedom (``rmse``): the scattering potential is attractive, so the data fix the sign.

Baselines on the same waves (:func:`baselines`): 0.75 (each channel drawn from U(−1, 1),
exact in expectation for any target), 8/π² ≈ 0.811 (a uniformly random unit phasor), and
the best constant predictor: the per-channel median over every evaluated pixel (the
L1-optimal constant, fitted on the evaluation waves themselves, so an optimistic baseline;
it lies inside the unit disc), the best constant *unit* phasor (the best a unit-output network
can do without knowing each wave's global phase; fitted the same way), the same two constants
fitted on a set's training waves instead (:func:`fit_constants`, :func:`constant_errors`: what a
predictor can actually know), and for the aligned metrics a flat phase aligned to each wave.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from ..train.metrics import paired_bootstrap
from .exit_wave import global_offset, rotate, unit_phasor

RANDOM_COMPONENTS = 0.75
RANDOM_PHASOR = 8 / math.pi ** 2


class PhaseErrors(NamedTuple):
    """Per-wave errors, float64 numpy [N] each."""

    mae: np.ndarray
    mae_aligned: np.ndarray
    rmse: np.ndarray
    rmse_conj: np.ndarray
    mae_unit: np.ndarray


def phasor(phase: torch.Tensor) -> torch.Tensor:
    """(cos φ, sin φ) [B, 2, H, W] from phases [B, H, W] [rad]."""
    return torch.stack([torch.cos(phase), torch.sin(phase)], 1)


def _wrapped_rmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    aligned = rotate(pred, global_offset(pred, target))
    d = torch.atan2(aligned[:, 1] * target[:, 0] - aligned[:, 0] * target[:, 1],
                    (aligned * target).sum(1))
    return d.pow(2).mean((-2, -1)).sqrt()


def phase_errors(pred: torch.Tensor, target: torch.Tensor) -> PhaseErrors:
    """Errors of predicted phasors (unit, or inside the unit disc) against unit-phasor
    targets, both [B, 2, H, W]."""
    if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 2:
        raise ValueError(f"pred and target must both be [B, 2, H, W], got {list(pred.shape)} "
                         f"and {list(target.shape)}")
    pred, target = pred.double(), target.double()
    mae = (pred - target).abs().mean((1, 2, 3))
    unit = unit_phasor(pred)  # the aligned errors judge the phase alone (hedging is about the offset)
    aligned = rotate(unit, global_offset(unit, target))
    mae_al = (aligned - target).abs().mean((1, 2, 3))
    rmse = _wrapped_rmse(pred, target)
    conj = torch.stack([pred[:, 0], -pred[:, 1]], 1)
    rmse_c = torch.minimum(rmse, _wrapped_rmse(conj, target))
    mae_u = (unit - target).abs().mean((1, 2, 3))
    return PhaseErrors(*(t.cpu().numpy() for t in (mae, mae_al, rmse, rmse_c, mae_u)))


def best_unit_constant(target: torch.Tensor, n_angles: int = 720) -> tuple[float, float]:
    """(MAE, angle [rad]) of the constant unit phasor with the smallest phasor MAE on the
    targets [B, 2, H, W] (a search over ``n_angles`` angles, then a local refinement)."""
    t = target.double().transpose(0, 1).reshape(2, -1)

    def err(a: torch.Tensor) -> torch.Tensor:  # [K] angles -> [K] MAE, in chunks of pixels
        out = torch.zeros_like(a)
        for i in range(0, t.shape[1], 1 << 16):
            c = t[:, i:i + (1 << 16)]
            out += ((torch.cos(a)[:, None] - c[0]).abs() + (torch.sin(a)[:, None] - c[1]).abs()).sum(1)
        return out / (2 * t.shape[1])

    a = torch.linspace(-math.pi, math.pi, n_angles + 1, dtype=torch.float64)[:-1]
    best = float(a[int(err(a).argmin())])
    fine = best + torch.linspace(-math.pi / n_angles, math.pi / n_angles, 41, dtype=torch.float64)
    e = err(fine)
    return float(e.min()), float(fine[int(e.argmin())])


def baselines(target: torch.Tensor, seed: int = 0) -> dict:
    """Baseline errors on targets [B, 2, H, W]: analytic random baselines, their Monte-Carlo
    check, and the best constant predictors (see the module docstring). Means over waves."""
    target = target.double()
    g = torch.Generator().manual_seed(seed)
    uni = torch.rand(target.shape, generator=g, dtype=torch.float64) * 2 - 1
    ang = torch.rand(target[:, 0].shape, generator=g, dtype=torch.float64) * 2 * math.pi
    const = _split_constant(target)
    cpred = const.view(1, 2, 1, 1).expand_as(target)
    flat = torch.zeros_like(target)
    flat[:, 0] = 1.0
    e_const, e_flat = phase_errors(cpred, target), phase_errors(flat, target)
    unit_mae, unit_angle = best_unit_constant(target)
    return {"random_components": RANDOM_COMPONENTS, "random_phasor": RANDOM_PHASOR,
            "random_components_mc": float((uni - target).abs().mean()),
            "random_phasor_mc": float((phasor(ang) - target).abs().mean()),
            "best_constant_mae": float(e_const.mae.mean()), "best_constant": const.tolist(),
            "best_unit_constant_mae": unit_mae, "best_unit_constant_angle": unit_angle,
            "flat_phase_mae_aligned": float(e_flat.mae_aligned.mean()),
            "flat_phase_rmse": float(e_flat.rmse.mean())}


def _split_constant(target: torch.Tensor) -> torch.Tensor:
    """The per-channel median [2] over every pixel of targets [B, 2, H, W] (L1-optimal)."""
    return target.double().transpose(0, 1).reshape(2, -1).median(1).values


def _constant_mae(const: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-wave phasor MAE [B] of one constant phasor [2] on targets [B, 2, H, W] (float64)."""
    return (const.double().view(1, 2, 1, 1) - target.double()).abs().mean((1, 2, 3))


def paired_vs_constant(mae: np.ndarray, target: torch.Tensor, resamples: int = 10_000) -> dict:
    """A network's per-wave phasor MAE [N] against the split's best constant (:func:`baselines`)
    on the same waves, paired: the ratio of mean errors and the mean difference, each with its
    bootstrap 95 % interval, and the count of waves where the network is lower."""
    const_mae = _constant_mae(_split_constant(target), target).numpy()
    c = paired_bootstrap(mae, const_mae, resamples=resamples)
    return {"ratio": c.ratio, "ratio_ci": [c.ratio_low, c.ratio_high], "diff": c.diff,
            "diff_ci": [c.ci_low, c.ci_high], "lower": c.lower, "n": len(const_mae)}


class FittedConstants(NamedTuple):
    """Constant predictors fitted on training targets: the per-channel median [2] and the
    angle [rad] of the best constant unit phasor."""

    median: torch.Tensor
    unit_angle: float


def fit_constants(target: torch.Tensor) -> FittedConstants:
    """The L1-optimal constant and constant unit phasor of targets [B, 2, H, W] (e.g. a set's
    training waves): what a predictor that ignores the amplitude would learn."""
    return FittedConstants(_split_constant(target), best_unit_constant(target)[1])


def constant_errors(fitted: FittedConstants, target: torch.Tensor) -> dict:
    """Phasor MAE on targets [B, 2, H, W] of constants fitted elsewhere (:func:`fit_constants`):
    ``train_constant_mae`` (the median) and ``train_unit_constant_mae`` (the unit phasor)."""
    unit = torch.tensor([math.cos(fitted.unit_angle), math.sin(fitted.unit_angle)], dtype=torch.float64)
    return {"train_constant_mae": float(_constant_mae(fitted.median, target).mean()),
            "train_unit_constant_mae": float(_constant_mae(unit, target).mean())}


def summarize(errors: PhaseErrors) -> dict:
    """Means and standard errors of each per-wave error."""
    out = {"n": int(len(errors.mae))}
    for name, v in errors._asdict().items():
        out[name] = float(np.mean(v))
        out[name + "_se"] = float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0
    return out
