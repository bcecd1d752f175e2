"""Demo stage: the shipped noise-level-conditioned denoiser
(:func:`em_accel.models.conditioned.denoise_micrograph`, noise level estimated from the frame) on
a noisy HRTEM frame of the crystal, against the noisy frame and a Gaussian blur."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .context import DemoContext, StageResult
from .metrics import relative_rmse


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """The classical baseline: a Gaussian blur of ``sigma`` [px] with reflected edges."""
    from ..scan.partial import gaussian_blur as blur

    size = 2 * int(np.ceil(3 * sigma)) + 1
    return blur(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)), size, sigma).numpy()


def run(ctx: DemoContext) -> StageResult:
    from ..models.conditioned import PRETRAINED_CONDITIONED, denoise_micrograph, load_conditioned

    f = ctx.noisy_frame
    model = load_conditioned(device=ctx.device)
    result = denoise_micrograph(f.noisy, model, progress=ctx.progress)
    denoised = result.image
    blurred = gaussian_blur(f.noisy, 1.0)
    numbers = {
        "mean counts per pixel (counts/px)": f.mean_counts_per_px,
        "estimated counts per pixel from the frame (counts/px)": result.noise.counts_per_px,
        "electron dose (e⁻/Å²)": f.dose_e_per_A2,
        "RMSE noisy frame (fraction of range)": relative_rmse(f.noisy, f.clean),
        "RMSE Gaussian blur σ=1 px, baseline (fraction of range)": relative_rmse(blurred, f.clean),
        "RMSE denoiser (fraction of range)": relative_rmse(denoised, f.clean),
    }
    panels = [("expected counts (truth)", f.clean), ("noisy frame (Poisson)", f.noisy),
              ("Gaussian blur σ = 1 px", blurred), ("denoiser (conditioned, any dose)", denoised)]
    text = (f"The crystal's HRTEM image at {f.dose_e_per_A2:.0f} e⁻/Å² "
            f"({f.mean_counts_per_px:.0f} counts/px on average) with Poisson noise "
            "(em_accel.sim.imaging.dose_noise), denoised by the shipped noise-level-conditioned "
            f"denoiser ({PRETRAINED_CONDITIONED}; em_accel.models.denoise_micrograph), which "
            "estimates the noise level from the frame itself "
            f"({result.noise.counts_per_px:.0f} equivalent counts/px) and tiles any size. Errors "
            "are against the expected counts, as fractions of their range.")
    return StageResult("Denoising a low-dose frame", panels, numbers, text)
