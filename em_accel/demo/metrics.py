"""Error measures the stages report against the simulated truth (numpy, float64)."""
from __future__ import annotations

import numpy as np


def rmse(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Root-mean-square error, in the units of ``truth``."""
    d = np.asarray(estimate, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    return float(np.sqrt(np.mean(d * d)))


def relative_rmse(estimate: np.ndarray, truth: np.ndarray) -> float:
    """RMSE as a fraction of the truth's range (max - min)."""
    t = np.asarray(truth, dtype=np.float64)
    span = float(t.max() - t.min())
    return rmse(estimate, t) / (span if span > 0 else 1.0)


def psnr(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Peak signal-to-noise ratio [dB] with the truth's range as the peak."""
    return float(-20.0 * np.log10(max(relative_rmse(estimate, truth), 1e-12)))
