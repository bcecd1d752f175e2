"""Demo stage: complete the demo's sparse spiral scan with the shipped completion network and
show its uncertainty map beside its error against the truth (:mod:`em_accel.models.completion`),
next to the Delaunay-linear (+ blur) and nearest-neighbour baselines on the same samples."""
from __future__ import annotations

import numpy as np

from .context import DemoContext, StageResult
from .metrics import relative_rmse


def run(ctx: DemoContext) -> StageResult:
    from ..models import completion_baselines as B
    from ..models.completion import COVERAGE_RANGE, complete_scan, load_pretrained

    s = ctx.sparse_scan
    model = load_pretrained("completion", device=ctx.device)
    lo, hi = COVERAGE_RANGE
    if lo <= float((s.mask > 0).mean()) <= hi:
        mask = s.mask > 0
        values = np.where(mask, s.infilled, 0.0)      # the mean probe value of each probed pixel
        res = complete_scan(values, mask=mask, kind="spiral", model=model, device=ctx.device,
                            progress=ctx.progress)
        rescanned = ""
    else:  # the demo's scan is denser than the network's range: scan the same truth at 1/10
        res = complete_scan(s.truth, kind="spiral", coverage=0.1,
                            counts_per_intensity=s.counts_per_intensity, seed=ctx.seed,
                            model=model, device=ctx.device, progress=ctx.progress)
        mask, values = res.mask, res.sparse
        rescanned = (f" The demo's scan probes {float((s.mask > 0).mean()):.2f} of the pixels, "
                     "more than the network's range (1/100-1/10), so the same truth was "
                     "scanned again along a 1/10 spiral with the same shot noise.")
    ctx.extras["completion"] = res.completion
    lin = B.delaunay(values, mask)
    lin_blur = B.blur(lin)
    truth = s.truth.astype(np.float64)
    tb = B.blur(truth)
    err = np.abs(res.completion - truth)
    numbers = {
        "coverage (fraction of pixels)": res.coverage,
        f"RMSE completion ({res.method}) (fraction of range)": relative_rmse(res.completion, truth),
        "RMSE Delaunay-linear, baseline (fraction of range)": relative_rmse(lin, truth),
        "RMSE Delaunay + blur, baseline (fraction of range)": relative_rmse(lin_blur, truth),
        "RMSE nearest-neighbour infill, baseline (fraction of range)":
            relative_rmse(B.nearest(values, mask), truth),
        f"RMSE vs blurred truth, completion ({res.method}) blurred (thesis metric)":
            relative_rmse(B.blur(res.completion), tb),
        "RMSE vs blurred truth, Delaunay + blur (thesis metric)": relative_rmse(lin_blur, tb),
        "pixels inside the 90% interval (fraction)": float((err <= res.uncertainty).mean()),
    }
    panels = [("sparse scan", np.where(mask, values, np.nan)),
              ("Delaunay + blur (baseline)", lin_blur),
              (f"{res.method} completion", res.completion),
              ("|error| against the truth", err),
              ("predicted 90% interval half-width", res.uncertainty),
              ("truth", truth)]
    text = (f"The spiral scan of the previous stage (coverage 1/{1 / res.coverage:.1f}, shot noise "
            f"{s.counts_per_intensity:.0f} counts per unit intensity) completed by the shipped "
            "PartialScanCompleter (one network for spiral, gridlike and grid paths at 1/100-1/10 "
            "coverage; it corrects the Delaunay-linear interpolation of the samples) through "
            "em_accel.models.complete_scan. The uncertainty map is the half-width of the "
            "calibrated 90% interval of a per-pixel Laplace error model; it should be large "
            "where the error is large." + rescanned)
    if res.lattice_weight is not None:
        text += (" The samples showed a crystal: a periodic lattice fitted to them "
                 "(em_accel.scan.lattice) predicted them better than the network's own predicted "
                 f"error over {100 * float(res.lattice_weight.mean()):.0f}% of the image, so "
                 "complete_scan's default prior ('auto') completed that part with the lattice "
                 "and left the rest to the network (em_accel.scan.lattice_region).")
    return StageResult("Partial-scan completion with uncertainty", panels, numbers, text)
