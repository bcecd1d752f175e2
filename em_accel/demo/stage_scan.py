"""Demo stage: a sparse spiral scan of the nanoparticle's HAADF image, rasterised with
nearest-neighbour infill (:mod:`em_accel.scan`), against the mean-fill baseline."""
from __future__ import annotations

import numpy as np

from .context import DemoContext, StageResult
from .metrics import psnr, relative_rmse


def run(ctx: DemoContext) -> StageResult:
    s = ctx.sparse_scan
    mean_fill = np.full_like(s.truth, float(s.values.mean()))
    numbers = {
        "coverage (fraction of pixels)": s.coverage,
        "probes": float(len(s.values)),
        "RMSE nearest-neighbour infill (fraction of range)": relative_rmse(s.infilled, s.truth),
        "RMSE mean fill, baseline (fraction of range)": relative_rmse(mean_fill, s.truth),
        "PSNR nearest-neighbour infill (dB)": psnr(s.infilled, s.truth),
    }
    panels = [("HAADF truth", s.truth), ("probed pixels (spiral path)", s.mask),
              ("sparse scan", np.where(s.mask > 0, s.mask * s.infilled, np.nan)),
              ("nearest-neighbour infill", s.infilled)]
    text = (f"Archimedes spiral at {s.coverage:.3f} coverage (em_accel.scan.spiral), sampled with "
            f"the native op em_accel.ops.scan_sample with Poisson shot noise at "
            f"{s.counts_per_intensity:.0f} counts per unit intensity, and rasterised with "
            "nearest-neighbour infill (em_accel.ops.scan_rasterize), the completion "
            "networks' input.")
    return StageResult("Sparse scan and nearest-neighbour infill", panels, numbers, text)
