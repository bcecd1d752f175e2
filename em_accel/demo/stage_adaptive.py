"""Demo stage: the shipped learned adaptive scan policy beside the spiral baseline on the same
96x96 crop of the nanoparticle's HAADF image, each completed by the same generator
(:mod:`em_accel.scan.policy_cli`, thesis ch. 5)."""
from __future__ import annotations

import numpy as np

from .context import DemoContext, StageResult
from .metrics import relative_rmse

SIDE = 96


def run(ctx: DemoContext) -> StageResult:
    import matplotlib

    matplotlib.use("Agg")
    from ..scan.policy_data import prepare_crops
    from ..scan.policy_eval import completion
    from ..scan.policy_io import load_policy
    from ..scan.policy_plot import plot_policy_comparison
    from ..scan.rollout import ScanBudget, env_rollout
    from ..scan.static_paths import path_length, spiral_positions

    haadf = ctx.nanoparticle.haadf
    n = haadf.shape[0]
    # A crop across the particle's edge (the particle fills 0.6 of the field, centred).
    r0 = c0 = max(0, min(n - SIDE, int(0.2 * n) - SIDE // 4))
    crop = prepare_crops(haadf[None, r0:r0 + SIDE, c0:c0 + SIDE]).to(ctx.device)
    gen, actor, configs = load_policy(device=ctx.device)
    budget = ScanBudget(**configs.get("budget", {}))
    pitch = float(configs.get("baselines", {}).get("spiral_pitch", 6.0))
    learned = env_rollout(actor, crop, budget)[0].positions
    spiral = spiral_positions(pitch, budget)[None]
    truth = crop[0].cpu().numpy()
    panels, numbers, rows = [], {}, []
    for name, pos in (("learned policy", learned), (f"spiral (pitch {pitch:g} px)", spiral)):
        comp = completion(gen, crop, pos).cpu()
        rms = float(((comp[0] - crop[0].cpu()) ** 2).mean().sqrt())
        rows.append((name, pos[0].cpu(), comp[0], rms))
        short = name.split(" (")[0]
        numbers[f"RMSE {short} (fraction of range)"] = relative_rmse(comp[0].numpy(), truth)
        numbers[f"path length {short} (px)"] = float(path_length(pos[0].cpu()))
        panels.append((f"|error| {short}", np.abs(comp[0].numpy() - truth)))
    fig = plot_policy_comparison(crop[0].cpu(), rows)
    png = ctx.out_dir / "adaptive_paths.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    numbers["probes (each)"] = float(budget.total)
    text = (f"A {SIDE}x{SIDE} px crop of the HAADF image (min-max to [-1, 1], 5x5 Gaussian blur "
            f"of sigma 2.5 px, as in training) scanned with {budget.total} probes "
            f"({budget.segments} straight segments of {budget.probes} probes "
            f"{budget.step:.3f} px apart) chosen one segment at a time by the shipped recurrent "
            f"actor in the native AdaptiveScanEnv, and along a spiral of the same probe budget; "
            "both partial scans are completed by the same shipped generator. See "
            "docs/adaptive_scans.md for the held-out comparison.")
    return StageResult("Adaptive scan: learned path vs spiral", [(str(png.name), png), *panels],
                       numbers, text)
