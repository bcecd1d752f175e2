"""Denoisers judged in detector units at low and high dose, against oracle-tuned BM3D.

Each held-out clean image is acquired (TEM or STEM, see
:func:`em_accel.data.counts_dataset.acquire_counts`) at a mean dose drawn log-uniformly in the
regime's range [counts/px] (Poisson–Gaussian noise, STEM line jitter; no X-ray hits or
dead pixels), then written in detector units with a random gain (5–60 units per
count) and offset (10³–3×10⁶ units). Every method gets that detector image and returns one in
the same units; the error is measured against the clean (undistorted) expectation, divided by
the clean image's range, so MSE is on a [0, 1] scale, PSNR = −10·log₁₀ MSE and SSIM uses data
range 1.

Methods:

- the conditioned network, with the noise level estimated from the image and its output
  smoothed by the SURE-chosen width (what a user gets), the same with the true noise level (to
  separate estimator and network errors), and its unrefined output;
- BM3D, oracle-tuned: generalised Anscombe transform with the *true* gain and offset, BM3D at
  σ = f/s for f in :data:`BM3D_FACTORS`, the best f per image by the true error, and the exact
  unbiased inverse (Mäkitalo & Foi 2011, closed form);
- classical filters in the same true-noise Anscombe domain, their parameter oracle-tuned per
  image where they have one (Gaussian σ, Chambolle TV weight), else at default (median 3×3,
  BayesShrink wavelet); the best of them by mean MSE is the "best classical filter";
- optionally the thesis-style atrous models (min–max scaled input, low/high picked by the mean).

Paired differences (per-image MSE of one method minus another) are reported with 95 %
intervals (mean ± t₀.₉₇₅·SE), and the geometric-mean MSE ratio with its 95 % interval.
"""
from __future__ import annotations

import math
import time
from typing import Callable, NamedTuple

import numpy as np
import torch

from ..data.counts_dataset import acquire_counts
from ..data.datasets import item_generator
from ..data.noise_estimate import NoiseLevel, noise_level_from_detector

#: Dose regimes [mean counts/px], log-uniform.
REGIMES = {"low": (5.0, 50.0), "high": (500.0, 5000.0)}
#: Multipliers of the Anscombe-domain noise level tried for BM3D (oracle choice per image).
BM3D_FACTORS = (0.7, 1.0, 1.4)
GAUSS_SIGMAS = (0.5, 0.8, 1.2, 1.8, 2.7)
TV_WEIGHTS = (0.3, 0.6, 1.0, 1.6, 2.5)


class Case(NamedTuple):
    """One test acquisition."""

    kind: str                # source label, e.g. "synthetic" or "hrtem-multislice"
    modality: str            # "tem" or "stem"
    dose: float              # mean counts/px
    detector: np.ndarray     # noisy image in detector units, float64
    clean: np.ndarray        # noise-free expectation in detector units, float64
    noise: NoiseLevel        # the true noise model


# a method maps a Case to an estimate in detector units
Method = Callable[[Case], np.ndarray]


def make_cases(images: list[tuple], regime: str, seed: int = 4000) -> list[Case]:
    """Acquire each ``(kind, modality, clean[, pedestal])`` image once at a dose from
    ``regime`` (pedestal: see :func:`~em_accel.data.counts_dataset.acquire_counts`)."""
    lo, hi = REGIMES[regime]
    cases = []
    for k, (kind, mod, im, *rest) in enumerate(images):
        g = item_generator(seed + (regime == "high"), k)
        u = float(torch.rand(1, generator=g))
        dose = math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u)
        noisy, clean = acquire_counts(torch.as_tensor(im), mod, dose, g, gain_error=0.0,
                                      pedestal=rest[0] if rest else None)
        gain = 5.0 + 55.0 * float(torch.rand(1, generator=g))
        offset = 10 ** (3 + 3.5 * float(torch.rand(1, generator=g)))
        det = gain * noisy.numpy() + offset
        # equivalent counts c = y/a + b/a² with b = -gain·offset (read noise is folded into the
        # counts by acquire_counts)
        nl = noise_level_from_detector(det, gain=gain, offset=offset)
        cases.append(Case(kind, mod, dose, det, nl.from_counts(clean.numpy()), nl))
    return cases


def _gat(case: Case) -> tuple[np.ndarray, float]:
    """Anscombe image of the true equivalent counts, scaled to mean ≈ 1, and its scale s."""
    c = case.noise.to_counts(case.detector)
    s = 2 * math.sqrt(max(float(c.mean()), 0.0) + 0.375)
    return 2 * np.sqrt(np.maximum(c + 0.375, 0)) / s, s


def exact_unbiased_inverse(z: np.ndarray) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse Anscombe transform (Mäkitalo &
    Foi 2011), counts ≥ 0."""
    z = np.maximum(z, 1e-3)
    r = math.sqrt(1.5)
    out = z ** 2 / 4 + r / (4 * z) - 11 / (8 * z ** 2) + 5 * r / (8 * z ** 3) - 1 / 8
    return np.maximum(out, 0.0)


def _back(case: Case, zs: np.ndarray, s: float) -> np.ndarray:
    return case.noise.from_counts(exact_unbiased_inverse(zs * s))


def nmse(case: Case, est: np.ndarray) -> float:
    """MSE against the clean expectation, on the clean image's [0, 1] range."""
    span = float(case.clean.max() - case.clean.min()) or 1.0
    return float(np.mean(((est - case.clean) / span) ** 2))


def _oracle(case: Case, fns: list[Callable[[np.ndarray], np.ndarray]]) -> np.ndarray:
    """Apply each Anscombe-domain filter; keep the estimate with the lowest true error."""
    zs, s = _gat(case)
    best, best_err = None, math.inf
    for fn in fns:
        est = _back(case, fn(zs), s)
        err = nmse(case, est)
        if err < best_err:
            best, best_err = est, err
    return best


def bm3d_oracle(case: Case) -> np.ndarray:
    import bm3d

    _, s = _gat(case)
    return _oracle(case, [lambda z, f=f: np.asarray(bm3d.bm3d(z, sigma_psd=f / s))
                          for f in BM3D_FACTORS])


def classical_methods() -> dict[str, Method]:
    """Oracle- or default-parameter classical filters in the true Anscombe domain."""
    from scipy import ndimage
    from skimage import restoration

    def gat_fn(fn):
        def run(case: Case) -> np.ndarray:
            zs, s = _gat(case)
            return _back(case, fn(zs, s), s)
        return run

    return {
        "Gaussian (oracle σ)": lambda c: _oracle(c, [
            lambda z, w=w: ndimage.gaussian_filter(z, w, mode="reflect") for w in GAUSS_SIGMAS]),
        "Chambolle TV (oracle weight)": lambda c: _oracle(c, [
            lambda z, w=w: restoration.denoise_tv_chambolle(z, weight=w / _gat(c)[1])
            for w in TV_WEIGHTS]),
        "median 3×3": gat_fn(lambda z, s: ndimage.median_filter(z, 3, mode="reflect")),
        "wavelet (BayesShrink)": gat_fn(lambda z, s: restoration.denoise_wavelet(z, sigma=1 / s)),
    }


def conditioned_methods(model: torch.nn.Module, label: str = "conditioned network",
                        ensemble: bool = False, unrefined: bool = True) -> dict[str, Method]:
    """The conditioned network as users get it (estimated noise, SURE-chosen post-smoothing,
    :func:`~em_accel.models.conditioned.denoise_micrograph`'s default), with the true noise
    level (to separate estimator and network errors), with ``unrefined`` also the network's
    raw output (``refine="none"``), and with ``ensemble`` its 8-fold dihedral self-ensemble."""
    from .conditioned import denoise_micrograph

    def net(noise: bool, ens: bool = False, refine: str = "sure") -> Method:
        return lambda c: denoise_micrograph(c.detector, model, noise=c.noise if noise else None,
                                            tile=512, progress=False, ensemble=ens,
                                            refine=refine).image.astype(np.float64)

    out = {f"{label} (estimated noise)": net(False), f"{label} (true noise)": net(True)}
    if unrefined:
        out[f"{label} (estimated noise, no refinement)"] = net(False, refine="none")
    if ensemble:
        out[f"{label} (estimated noise, 8× dihedral ensemble)"] = net(False, True)
    return out


def atrous_method() -> Method:
    """The thesis-style shipped atrous models through the old ``--model auto`` rule."""
    from .cli import looks_low_dose
    from .denoiser import PRETRAINED_HIGH, PRETRAINED_LOW, load_pretrained
    from .tiling import denoise_image

    models = {}

    def run(case: Case) -> np.ndarray:
        key = PRETRAINED_LOW if looks_low_dose(case.detector) else PRETRAINED_HIGH
        if key not in models:
            models[key] = load_pretrained(key)
        return denoise_image(models[key], case.detector, tile=512,
                            progress=False).astype(np.float64)
    return run


def score(methods: dict[str, Method], cases: list[Case], progress: bool = True) -> dict:
    """Per method: per-image MSE, PSNR, SSIM and seconds."""
    from skimage.metrics import structural_similarity

    out = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(methods) * len(cases), desc="evaluate", unit="run")
    for name, fn in methods.items():
        rec = {"mse": [], "psnr": [], "ssim": [], "seconds": []}
        for case in cases:
            t0 = time.perf_counter()
            est = np.asarray(fn(case), dtype=np.float64)
            rec["seconds"].append(time.perf_counter() - t0)
            m = nmse(case, est)
            rec["mse"].append(m)
            rec["psnr"].append(-10 * math.log10(max(m, 1e-30)))
            span = float(case.clean.max() - case.clean.min()) or 1.0
            rec["ssim"].append(float(structural_similarity(
                (est - case.clean.min()) / span, (case.clean - case.clean.min()) / span,
                data_range=1.0)))
            if bar is not None:
                bar.update(1)
        out[name] = rec
    if bar is not None:
        bar.close()
    return out


def interval95(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, low, high): mean ± t₀.₉₇₅(n−1)·SE."""
    from scipy.stats import t

    v = np.asarray(values, dtype=np.float64)
    m = float(v.mean())
    if v.size < 2:
        return m, m, m
    h = float(t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return m, m - h, m + h


def paired(res: dict, a: str, b: str, select: np.ndarray | None = None) -> dict:
    """Method ``a`` against ``b`` on the same images (``select``: a boolean mask of images):
    MSE difference and MSE ratio with 95 % intervals, PSNR gain, and how often ``a`` is lower."""
    sel = slice(None) if select is None else np.asarray(select, bool)
    ma, mb = np.array(res[a]["mse"])[sel], np.array(res[b]["mse"])[sel]
    d = interval95(ma - mb)
    lr = interval95(np.log(ma / mb))
    dp = interval95((np.array(res[a]["psnr"]) - np.array(res[b]["psnr"]))[sel])
    return {"a": a, "b": b, "n": int(ma.size), "mse_difference": d,
            "mse_ratio_mean": float(ma.mean() / mb.mean()),
            "mse_ratio_geometric": tuple(math.exp(x) for x in lr),
            "psnr_gain_db": dp, "a_lower": int((ma < mb).sum())}


def heldout_images(n: int, size: int = 128, seed: int = 2000
                   ) -> list[tuple[str, str, np.ndarray, float | None]]:
    """``n`` held-out clean images as ``(kind, modality, image, pedestal)``, never seen in
    training: half realistic micrographs of held-out materials
    (:func:`em_accel.data.micrographs.micrograph`, ``split="heldout"``; HAADF acquired as STEM,
    HRTEM as TEM on its physical background, vacuum = 1), alternately, and half synthetic
    micrographs from a held-out seed, alternately TEM and STEM (pedestal drawn)."""
    from ..data import synthetic_images
    from ..data.micrographs import micrograph

    n_real = n // 2
    out = []
    for k in range(n_real):
        kind = ("haadf", "hrtem")[k % 2]
        m = micrograph(size, kind, seed=(seed, k), split="heldout")
        lo_hi = m.params.get("intensity_range") if kind == "hrtem" else None
        ped = float(lo_hi[0]) / max(float(lo_hi[1] - lo_hi[0]), 1e-12) if lo_hi else None
        out.append((f"{kind}-heldout", "stem" if kind == "haadf" else "tem", m.image, ped))
    for k, im in enumerate(synthetic_images(n - n_real, size, seed)):
        out.append(("synthetic", ("tem", "stem")[k % 2], im, None))
    return out


def real_image_tiles(paths: list, size: int = 128, modality: str = "stem"
                     ) -> list[tuple[str, str, np.ndarray, None]]:
    """Non-overlapping ``size``² tiles of real micrograph files, each min-max scaled to
    [0, 1] over its whole image, as ``(kind, modality, image, None)`` clean references.

    A real frame carries its own acquisition noise, scan jitter and distortion: as the
    reference it is what a denoiser should keep, so these cases test real structure (not a
    simulator's) under the added dose noise; the frame's own noise, scored as signal, adds the
    same floor to every method's MSE.
    """
    from pathlib import Path

    from ..io import read_unit_range

    if modality not in ("stem", "tem"):
        raise ValueError(f"modality must be 'stem' or 'tem', got {modality!r}")
    out = []
    for path in paths:
        d = read_unit_range(path)
        if min(d.shape) < size:
            raise ValueError(f"{path}: image {list(d.shape)} is smaller than one {size} px tile")
        for y in range(0, d.shape[0] - size + 1, size):
            for x in range(0, d.shape[1] - size + 1, size):
                out.append((f"real:{Path(path).name}", modality,
                            np.ascontiguousarray(d[y:y + size, x:x + size]), None))
    return out


def evaluate(methods: dict[str, Method], images: list[tuple[str, str, np.ndarray]],
             regimes: tuple[str, ...] = ("low", "high"), seed: int = 4000,
             progress: bool = True) -> dict:
    """Score ``methods`` on ``images`` acquired once per regime; returns
    ``{regime: {"doses": [...], "kinds": [...], "results": score(...)}}``."""
    out = {}
    for regime in regimes:
        if regime not in REGIMES:
            raise ValueError(f"regimes must be among {sorted(REGIMES)}, got {regime!r}")
        cases = make_cases(images, regime, seed)
        out[regime] = {"dose_range": REGIMES[regime], "doses": [c.dose for c in cases],
                       "kinds": [f"{c.kind}/{c.modality}" for c in cases],
                       "results": score(methods, cases, progress)}
    return out


def report(result: dict, network: str, classical: list[str]) -> str:
    """Markdown tables (mean ± SE per method) and the paired comparisons of ``network``
    against BM3D and the best of ``classical``."""
    lines = []
    for regime, r in result.items():
        res = r["results"]
        lo, hi = r["dose_range"]
        lines += [f"\n{regime} dose, log-uniform {lo:g}–{hi:g} counts/px (n = {len(r['doses'])})\n",
                  "| method | MSE (×10⁻⁴) | PSNR (dB) | SSIM | s / image |",
                  "| --- | --- | --- | --- | --- |"]
        for name in sorted(res, key=lambda k: np.mean(res[k]["mse"])):
            v = res[name]
            m, se = np.mean(v["mse"]), np.std(v["mse"], ddof=1) / math.sqrt(len(v["mse"]))
            lines.append(f"| {name} | {1e4 * m:.3f} ± {1e4 * se:.3f} | {np.mean(v['psnr']):.2f} | "
                         f"{np.mean(v['ssim']):.4f} | {np.median(v['seconds']):.3g} |")
        present = [c for c in classical if c in res]
        others = [b for b in (["BM3D (oracle σ)"] if "BM3D (oracle σ)" in res else []) +
                  ([min(present, key=lambda k: np.mean(res[k]["mse"]))] if present else [])]
        lines.append("")
        kinds = np.array(r["kinds"])            # "source/modality"
        groups = [("all", None)] + [(k, kinds == k) for k in dict.fromkeys(kinds)]
        for b in others:
            if network not in res:
                continue
            for label, sel in groups:
                p = paired(res, network, b, sel)
                if p["n"] < 2:
                    continue
                d, g = p["mse_difference"], p["mse_ratio_geometric"]
                dp = p["psnr_gain_db"]
                lines.append(
                    f"- {label}: {network} − {b}: MSE difference {1e4 * d[0]:+.3f} ×10⁻⁴ (95 % "
                    f"{1e4 * d[1]:+.3f} … {1e4 * d[2]:+.3f}); MSE ratio {p['mse_ratio_mean']:.3f} "
                    f"(geometric {g[0]:.3f}, 95 % {g[1]:.3f}–{g[2]:.3f}); PSNR {dp[0]:+.2f} dB "
                    f"({dp[1]:+.2f} … {dp[2]:+.2f}); lower on {p['a_lower']}/{p['n']} images")
    return "\n".join(lines)
