"""RMS-vs-coverage evaluation of partial-scan completion (``em-accel evaluate complete``).

Held-out images: HAADF-STEM micrographs of held-out materials
(:func:`em_accel.data.micrographs.micrograph` with ``split="heldout"``; synthetic micrographs
if that module is absent) and any image files given. Each image is scanned along each path kind
at each coverage (the native sampler, optional shot noise), completed by every method, and
scored against the clean image (intensities in [0, 1]) by

* ``rms_blur``: RMS of blur(output) - blur(truth), blur = 5x5 Gaussian, sigma 2.5 px (the
  thesis's metric; for ``delaunay`` this is exactly the thesis's Delaunay + blur baseline);
* ``rms``: RMS of output - truth; ``ssim``: SSIM of output and truth (data range 1).

The network's uncertainty is checked on the same cases: the fraction of pixels whose error lies
inside the calibrated interval of each nominal level (reliability), with the calibration
factor fitted on separate held-out images (:func:`fit_calibration`).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..scan import make_path, partial_scan
from . import completion_baselines as baselines
from .completion import COVERAGE_RANGE, KINDS, PartialScanCompleter, Z90

#: Evaluation coverages: the thesis's spiral points (1/17.9, 1/87.0) and 1/10 ... 1/100.
COVERAGES = (1 / 10, 1 / 17.9, 1 / 30, 1 / 50, 1 / 87.0, 1 / 100)
#: Published points (RMS vs blurred truth, % of the intensity range): thesis ch. 4.
THESIS_POINTS = {"spiral": [(17.9, 3.77), (87.0, 6.21)], "grid": [(16.0, 3.23), (100.0, 4.54)]}
LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
HELDOUT_SEED, CALIBRATION_SEED = 7100, 7200


def heldout_images(n: int, size: int, seed: int = HELDOUT_SEED,
                   pixel_range: tuple[float, float] | None = None) -> tuple[np.ndarray, str]:
    """(images [n, size, size] in [0, 1], description) of held-out HAADF micrographs;
    ``pixel_range`` (lo, hi) [Å/px]: mixed magnifications (None: atomic resolution)."""
    images, desc, _ = heldout_set(n, size, seed, pixel_range)
    return images, desc


def heldout_set(n: int, size: int, seed: int = HELDOUT_SEED,
                pixel_range: tuple[float, float] | None = None
                ) -> tuple[np.ndarray, str, list[float | None]]:
    """:func:`heldout_images` and each image's pixel size [Å/px] (None where unknown)."""
    try:
        from ..data.micrographs import micrograph
    except ImportError:  # older checkouts: synthetic micrographs
        from ..data import synthetic_micrograph

        return (np.stack([synthetic_micrograph(size, seed * 1000 + i) for i in range(n)]),
                f"{n} synthetic micrographs (seed {seed})", [None] * n)
    mics = [micrograph(size, "haadf", seed=(seed, i), split="heldout", pixel_range=pixel_range)
            for i in range(n)]
    where = "" if pixel_range is None else f", pixel {pixel_range[0]}-{pixel_range[1]} Å"
    return (np.stack([m.image for m in mics]),
            f"{n} HAADF micrographs of held-out materials (seed {seed}{where})",
            [float(m.params["pixel_size_A"]) for m in mics])


def scan_distorted(images: np.ndarray, seed: int) -> tuple[np.ndarray, list[dict]]:
    """(``images`` as a STEM raster scan records them, each under its own drawn serial-scan
    distortions (:func:`em_accel.data.distort.stem_scan_distort`: line jitter, drift, flyback,
    non-linearity), the settings drawn per image). The distorted image is then the truth: what
    the microscope records at each position, which no completion can undo."""
    from ..data.distort import stem_scan_distort

    out = [stem_scan_distort(img, seed=[seed, i, 1]) for i, img in enumerate(images)]
    return np.stack([o[0] for o in out]), [o[1] for o in out]


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, data_range=1.0))


def network_outputs(model: PartialScanCompleter, values: np.ndarray, mask: np.ndarray,
                    kind: str | None, ensemble: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(completion, uncalibrated Laplace scale b) [H, W] in the values' units; ``ensemble``:
    the 8-fold dihedral self-ensemble."""
    from .completion import run_network

    return run_network(model, values, mask, kind, ensemble=ensemble)


def scan(image: np.ndarray, kind: str, coverage: float, counts: float | None, seed: int
         ) -> tuple[np.ndarray, np.ndarray]:
    """(sampled values, mask) of ``image`` scanned along ``kind`` at ``coverage``."""
    path = make_path(kind, image.shape, coverage, seed=seed)
    r = partial_scan(torch.from_numpy(image.astype(np.float64)), path,
                     counts_per_intensity=counts, seed=seed).raster
    return r.image.numpy(), r.mask.numpy() > 0


def fit_calibration(model: PartialScanCompleter, images: np.ndarray, counts: float | None,
                    coverages=COVERAGES, kinds=KINDS) -> float:
    """Factor s such that |error| <= s * ln(10) * b holds for 90% of pixels of ``images``
    over all kinds and coverages (the empirical 0.9-quantile of |error| / (ln(10) b))."""
    ratios = []
    for i, img in enumerate(images):
        for kind in kinds:
            for c in coverages:
                v, m = scan(img, kind, c, counts, seed=100 + i)
                mean, b = network_outputs(model, v, m, kind)
                r = np.abs(mean - img) / (Z90 * b)
                ratios.append(r[::3, ::3].ravel())
    return float(np.quantile(np.concatenate(ratios), 0.9))


def calibrate_weights(path: str | Path, n: int = 2, size: int = 256,
                      counts: float | None = None,
                      pixel_ranges: tuple[tuple[float, float] | None, ...] = (None,)) -> float:
    """Fit the calibration factor on ``n`` held-out images (seed :data:`CALIBRATION_SEED`,
    never used for evaluation) and store it in the weights file's config; returns it.
    ``pixel_ranges``: the images are shared evenly between these magnification ranges
    (:func:`heldout_images`; None: atomic resolution)."""
    from ..train.checkpoint import save_weights
    from .completion import load_weights

    model, notes = load_weights(path)
    shares = np.array_split(np.arange(n), len(pixel_ranges))
    parts = [heldout_images(len(k), size, CALIBRATION_SEED + j, r)
             for j, (k, r) in enumerate(zip(shares, pixel_ranges)) if len(k)]
    images, desc = np.concatenate([p[0] for p in parts]), "; ".join(p[1] for p in parts)
    s = fit_calibration(model, images, counts)
    notes = {**notes, "calibration": {"factor": s, "images": desc, "size": size,
                                      "counts_per_intensity": counts}}
    save_weights(path, model, {**model.config, "calibration": s}, dtype=torch.float16,
                 notes=notes)
    return s


def evaluate(model: PartialScanCompleter | None, images: np.ndarray, *, counts: float | None,
             coverages=COVERAGES, kinds=KINDS, methods: dict | None = None,
             slow_methods: tuple[str, ...] = ("biharmonic", "wavelet-cs"), slow_n: int = 2,
             slow_size: int = 256, calibration: float = 1.0, progress: bool = True,
             ensemble: bool = False, auto: bool = True, known_noise: bool = False,
             pixel_sizes: list[float | None] | None = None) -> dict:
    """Score every method on every (image, kind, coverage). Slow methods run on the first
    ``slow_n`` images, centre-cropped to ``slow_size`` (all methods are also scored on those
    crops, rows marked ``crop``, so paired comparisons stay like for like). ``ensemble``: also
    score the network's 8-fold dihedral self-ensemble (method ``network-ens8``, full images).
    ``auto``: also score what :func:`~em_accel.models.completion.complete_scan` does by default
    (method ``auto``: the lattice prior where it is accepted, else the network), with its own
    reliability (``reliability_auto``). ``known_noise``: ``auto`` is told the shot noise's
    variance (:func:`~em_accel.models.completion.shot_noise_var`, from ``counts``), as a user
    who knows the dose would tell it; otherwise it estimates it (none on regular grids).
    ``pixel_sizes`` [Å/px] per image, where known: told to ``auto`` as a file's calibration
    would be (its alias check on grids)."""
    from .completion import auto_completion, shot_noise_var

    if known_noise and counts is None:
        raise ValueError("known_noise needs counts (the shot noise of the simulated scans)")

    methods = dict(baselines.METHODS if methods is None else methods)
    rows, rel = [], {p: [] for p in LEVELS}
    rel_auto: dict = {p: [] for p in LEVELS}
    chosen = []
    from tqdm.auto import tqdm

    jobs = [(i, k, c) for i in range(len(images)) for k in kinds for c in coverages]
    for i, kind, c in tqdm(jobs, desc="evaluate complete", disable=not progress):
        img = images[i].astype(np.float64)
        truth_blur = baselines.blur(img)
        v, m = scan(img, kind, c, counts, seed=i)
        outs, times = {}, {}
        for name, fn in methods.items():
            if name in slow_methods:
                continue
            t0 = time.perf_counter()
            outs[name] = fn(v, m)
            times[name] = time.perf_counter() - t0
        if model is not None:
            t0 = time.perf_counter()
            mean, b = network_outputs(model, v, m, kind)
            times["network"] = time.perf_counter() - t0
            outs["network"] = mean
            err = np.abs(mean - img)
            for p in LEVELS:
                rel[p].append(float((err <= calibration * math.log(1 / (1 - p)) * b).mean()))
            if ensemble:
                t0 = time.perf_counter()
                outs["network-ens8"] = network_outputs(model, v, m, kind, ensemble=True)[0]
                times["network-ens8"] = time.perf_counter() - t0
            if auto:
                t0 = time.perf_counter()
                noise = shot_noise_var(v, m, counts) if known_noise else None
                choice = auto_completion(v, m, kind, mean, calibration * b, seed=0,
                                         noise_var=noise,
                                         pixel_size=None if pixel_sizes is None
                                         else pixel_sizes[i])
                outs["auto"], half = choice.completion, choice.scale
                times["auto"] = time.perf_counter() - t0 + times["network"]
                err = np.abs(outs["auto"] - img)
                for p in LEVELS:
                    rel_auto[p].append(float((err <= math.log(1 / (1 - p)) * half).mean()))
                # per case, so that coverage can be split by path kind or method afterwards
                chosen.append({"image": i, "kind": kind, "coverage_nominal": c,
                               "method": choice.method,
                               "lattice_share": (0.0 if choice.lattice_weight is None
                                                 else float(choice.lattice_weight.mean())),
                               "regions": choice.region_count, "aliased": choice.aliased,
                               "inside_90": rel_auto[0.9][-1], "network_inside_90": rel[0.9][-1]})
        for name, out in outs.items():
            rows.append(_row(name, i, kind, c, m, out, img, truth_blur, times[name], "full"))
        if i < slow_n:
            s = min(slow_size, img.shape[0], img.shape[1])
            y0, x0 = (img.shape[0] - s) // 2, (img.shape[1] - s) // 2
            crop = (slice(y0, y0 + s), slice(x0, x0 + s))
            vc, mc, ic = v[crop], m[crop], img[crop]
            if mc.sum() >= 3:
                for name, fn in methods.items():
                    t0 = time.perf_counter()
                    out = fn(vc, mc)
                    rows.append(_row(name, i, kind, c, mc, out, ic, baselines.blur(ic),
                                     time.perf_counter() - t0, "crop"))
                if model is not None:
                    t0 = time.perf_counter()
                    out = network_outputs(model, vc, mc, kind)[0]
                    rows.append(_row("network", i, kind, c, mc, out, ic, baselines.blur(ic),
                                     time.perf_counter() - t0, "crop"))
    reliability = {str(p): float(np.mean(v)) for p, v in rel.items() if v}
    reliability_auto = {str(p): float(np.mean(v)) for p, v in rel_auto.items() if v}
    return {"rows": rows, "reliability": reliability, "reliability_auto": reliability_auto,
            "auto_choices": chosen, "calibration": calibration, "counts_per_intensity": counts,
            "known_noise": known_noise, "pixel_sizes": pixel_sizes}


def _row(name, i, kind, c, m, out, img, truth_blur, seconds, subset) -> dict:
    return {"method": name, "image": i, "kind": kind, "coverage_nominal": c,
            "coverage": float(m.mean()), "subset": subset,
            "rms": float(np.sqrt(((out - img) ** 2).mean())),
            "rms_blur": float(np.sqrt(((baselines.blur(out) - truth_blur) ** 2).mean())),
            "ssim": _ssim(np.clip(out, -1, 2), img), "seconds": seconds}


def summarise(rows: list[dict], metric: str = "rms_blur", subset: str = "full") -> dict:
    """{kind: {method: [(1/coverage, mean, se), ...]}} over images."""
    out: dict = {}
    for r in rows:
        if r["subset"] != subset:
            continue
        out.setdefault(r["kind"], {}).setdefault(r["method"], {}).setdefault(
            r["coverage_nominal"], []).append((r["coverage"], r[metric]))
    res = {}
    for kind, ms in out.items():
        res[kind] = {}
        for method, per in ms.items():
            pts = []
            for c, vals in sorted(per.items(), key=lambda kv: -kv[0]):
                cov = np.mean([a for a, _ in vals])
                x = np.array([b for _, b in vals])
                pts.append((float(1 / cov), float(x.mean()),
                            float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else 0.0))
            res[kind][method] = pts
    return res


def paired(rows: list[dict], a: str, b: str, metric: str = "rms_blur", subset: str = "full"
           ) -> dict:
    """{kind: [(nominal coverage, mean(a - b), se, n, a lower on)]} over the same images."""
    idx = {(r["method"], r["image"], r["kind"], r["coverage_nominal"]): r[metric]
           for r in rows if r["subset"] == subset}
    res: dict = {}
    for (m, i, k, c), va in idx.items():
        if m != a or (b, i, k, c) not in idx:
            continue
        res.setdefault(k, {}).setdefault(c, []).append(va - idx[(b, i, k, c)])
    out = {}
    for k, per in res.items():
        out[k] = []
        for c, d in sorted(per.items(), key=lambda kv: -kv[0]):
            d = np.array(d)
            se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
            out[k].append((float(c), float(d.mean()), se, len(d), int((d < 0).sum())))
    return out


def plot(results: dict, out_dir: Path) -> list[Path]:
    """RMS-vs-coverage curves (both metrics, thesis points) and the reliability plot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for metric, label in (("rms_blur", "RMS vs blurred truth (thesis metric)"),
                          ("rms", "RMS vs raw truth")):
        summ = summarise(results["rows"], metric)
        fig, axes = plt.subplots(1, len(summ), figsize=(5 * len(summ), 4), squeeze=False)
        for ax, (kind, ms) in zip(axes[0], sorted(summ.items())):
            for method, pts in sorted(ms.items()):
                x, y, e = (np.array(t) for t in zip(*pts))
                ax.errorbar(x, 100 * y, 100 * e, marker="o", ms=3, capsize=2, label=method,
                            lw=2.2 if method in ("network", "auto") else 1.0)
            if metric == "rms_blur" and kind in THESIS_POINTS:
                tx, ty = zip(*THESIS_POINTS[kind])
                ax.plot(tx, ty, "k*", ms=12, label="thesis (published)")
            ax.set_xscale("log")
            ax.set_xlabel("1 / coverage")
            ax.set_ylabel(f"{label} [% of range]")
            ax.set_title(kind)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        p = out_dir / f"rms_vs_coverage_{metric}.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    if results.get("reliability"):
        fig, ax = plt.subplots(figsize=(4, 4))
        lv = sorted(float(k) for k in results["reliability"])
        ax.plot(lv, [results["reliability"][str(k)] for k in lv], "o-", label="network")
        if results.get("reliability_auto"):
            ax.plot(lv, [results["reliability_auto"][str(k)] for k in lv], "s-", ms=3,
                    label="auto (network or lattice)")
        ax.plot([0.4, 1], [0.4, 1], "k--", lw=1, label="ideal")
        ax.set_xlabel("nominal interval level")
        ax.set_ylabel("fraction of held-out pixels inside")
        ax.set_title("uncertainty reliability")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        p = out_dir / "reliability.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)
    return paths


def format_summary(results: dict) -> str:
    lines = []
    if results.get("known_noise"):
        lines.append(f"auto was told the shot noise (counts per unit intensity "
                     f"{results.get('counts_per_intensity')}: variance = mean intensity / counts)")
    for metric in ("rms_blur", "rms", "ssim"):
        summ = summarise(results["rows"], metric)
        lines.append(f"\n{metric} (mean over images; {'%' if metric != 'ssim' else ''}):")
        for kind, ms in sorted(summ.items()):
            covs = [f"1/{x:.1f}" for x, _, _ in next(iter(ms.values()))]
            lines.append(f"  {kind:9s} " + " ".join(f"{c:>8s}" for c in covs))
            for method, pts in sorted(ms.items()):
                scale = 1 if metric == "ssim" else 100
                lines.append(f"  {method:14s}"[:16] + " ".join(f"{scale * y:8.3f}" for _, y, _ in pts))
    for net, other, subset in (("network", "delaunay", "full"), ("network", "fourier-cs", "full"),
                               ("network", "wavelet-cs", "crop"),
                               ("network-ens8", "network", "full"),
                               ("auto", "delaunay", "full"), ("auto", "network", "full")):
        pd = paired(results["rows"], net, other, "rms_blur", subset)
        if pd:
            lines.append(f"\npaired rms_blur difference {net} - {other} (%, mean ± SE, {net} "
                         f"lower on n/N):")
            for kind, pts in sorted(pd.items()):
                lines.append(f"  {kind:9s} " + "  ".join(
                    f"1/{1 / c:.0f}: {100 * d:+.2f}±{100 * se:.2f} ({lo}/{n})"
                    for c, d, se, n, lo in pts))
    if results.get("reliability"):
        lines.append("\nreliability (nominal -> observed): " + ", ".join(
            f"{k}: {v:.3f}" for k, v in results["reliability"].items()))
    if results.get("reliability_auto"):
        lines.append("reliability of auto (nominal -> observed): " + ", ".join(
            f"{k}: {v:.3f}" for k, v in results["reliability_auto"].items()))
    if results.get("auto_choices"):
        per: dict = {}
        for ch in results["auto_choices"]:
            per.setdefault((ch["kind"], ch["coverage_nominal"]), []).append(ch)
        lines.append("auto chose the lattice on (kind 1/coverage: whole images + part of "
                     "images / N, mean share of the image): " + ", ".join(
                         f"{k} 1/{1 / c:.0f}: {sum(ch['method'] == 'lattice' for ch in chs)}"
                         f"+{sum(ch['method'] == 'lattice+network' for ch in chs)}/{len(chs)}, "
                         f"{np.mean([ch.get('lattice_share', 0.0) for ch in chs]):.2f}"
                         for (k, c), chs in sorted(per.items(),
                                                   key=lambda kv: (kv[0][0], -kv[0][1]))))
        aliased = [ch for ch in results["auto_choices"] if ch.get("aliased")]
        if aliased:
            lines.append(f"auto took the grid's lattice for an alias of finer structure on "
                         f"{len(aliased)} of {len(results['auto_choices'])} scans (their 90% "
                         f"interval widened; it covers "
                         f"{100 * np.mean([ch['inside_90'] for ch in aliased]):.1f}% there)")
    return "\n".join(lines)


def save(results: dict, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    p = out_dir / "results.json"
    p.write_text(json.dumps(results, indent=1))
    return p


__all__ = ["COVERAGES", "THESIS_POINTS", "evaluate", "fit_calibration", "format_summary",
           "heldout_images", "heldout_set", "paired", "plot", "save", "summarise", "COVERAGE_RANGE"]
