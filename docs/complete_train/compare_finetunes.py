"""Compare completion weights on the same held-out images/masks: thesis metric (RMS vs 5x5
sigma 2.5 blurred truth), raw RMS, SSIM, sharpness, 90%-interval coverage.

usage: python compare_finetunes.py OUT.json SEED N SIZE [--pixel-range=LO,HI] NAME=WEIGHTS [NAME=WEIGHTS ...]
(--pixel-range: held-out images at mixed magnifications, pixel size log-uniform in [LO, HI] Å/px)
Same scans as `em-accel evaluate complete` (completion_eval.scan, seed = image index, noise-free,
COVERAGES x KINDS); each model uses its own stored calibration factor.
Sharpness (raw output vs raw truth, per case, then averaged):
  grad_ratio = mean |grad out| / mean |grad truth| (np.gradient, central differences)
  hf_ratio   = power of out above 1/8 cycles/px / power of truth above it (mean removed).
"""
import json
import math
import sys
import time

import numpy as np

from em_accel.models import completion_baselines as B
from em_accel.models import completion_eval as E
from em_accel.models.completion import KINDS, load_weights


def grad_mean(a):
    gy, gx = np.gradient(a)
    return float(np.hypot(gx, gy).mean())


def hf_power(a, f0=0.125):
    a = a - a.mean()
    F = np.abs(np.fft.fft2(a)) ** 2
    fy = np.fft.fftfreq(a.shape[0])[:, None]
    fx = np.fft.fftfreq(a.shape[1])[None, :]
    return float(F[np.hypot(fy, fx) > f0].sum())


def main():
    out, seed, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    models, pixel_range = {}, None
    for spec in sys.argv[5:]:
        name, path = spec.split("=", 1)
        if name == "--pixel-range":
            pixel_range = tuple(float(v) for v in path.split(","))
            continue
        models[name] = load_weights(path).model
    images, desc = E.heldout_images(n, size, seed, pixel_range)
    rows = []
    t0 = time.perf_counter()
    for i, img in enumerate(images.astype(np.float64)):
        tb = B.blur(img)
        gt, ht = grad_mean(img), hf_power(img)
        for kind in KINDS:
            for c in E.COVERAGES:
                v, m = E.scan(img, kind, c, None, seed=i)
                outs = {"delaunay": (B.delaunay(v, m), None, 1.0),
                        "fourier-cs": (B.fourier_cs(v, m), None, 1.0)}
                for name, model in models.items():
                    mean, b = E.network_outputs(model, v, m, kind)
                    outs[name] = (mean, b, model.calibration)
                for name, (o, b, s) in outs.items():
                    r = E._row(name, i, kind, c, m, o, img, tb, 0.0, "full")
                    r.update(grad_ratio=grad_mean(o) / gt, hf_ratio=hf_power(o) / ht)
                    if b is not None:
                        err = np.abs(o - img)
                        r["inside90"] = float((err <= s * math.log(10) * b).mean())
                        r["calibration"] = s
                    rows.append(r)
        print(f"image {i} done {time.perf_counter() - t0:.0f}s", flush=True)
    summary = {}
    for name in ["delaunay", "fourier-cs", *models]:
        s = {}
        for kind in KINDS:
            s[kind] = {}
            for c in E.COVERAGES:
                rr = [r for r in rows if r["method"] == name and r["kind"] == kind
                      and r["coverage_nominal"] == c]
                s[kind][f"1/{1 / c:.1f}"] = {k: float(np.mean([r[k] for r in rr]))
                                             for k in ("rms_blur", "rms", "ssim", "grad_ratio",
                                                       "hf_ratio", "inside90") if k in rr[0]}
        allr = [r for r in rows if r["method"] == name]
        s["all"] = {k: float(np.mean([r[k] for r in allr]))
                    for k in ("rms_blur", "rms", "ssim", "grad_ratio", "hf_ratio", "inside90")
                    if k in allr[0]}
        summary[name] = s
    # wins vs the first model (the shipped one) on rms_blur, per case (mean over images)
    names = list(models)
    wins = {}
    for name in names[1:]:
        w = 0
        for kind in KINDS:
            for key in summary[name][kind]:
                w += summary[name][kind][key]["rms_blur"] < summary[names[0]][kind][key]["rms_blur"]
        wins[name] = f"{w}/{len(KINDS) * len(E.COVERAGES)}"
    json.dump({"images": desc, "size": size, "summary": summary, "wins_vs_first": wins,
               "rows": rows, "seconds": time.perf_counter() - t0}, open(out, "w"), indent=1)
    for name in ["delaunay", "fourier-cs", *models]:
        print(name, json.dumps(summary[name]["all"]))
        for kind in KINDS:
            print("  ", kind, " ".join(f"{100 * v['rms_blur']:.2f}" for v in summary[name][kind].values()))
    print("wins vs", names[0], wins)


if __name__ == "__main__":
    main()
