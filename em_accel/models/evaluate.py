"""The thesis's Table 1 rebuilt: the denoiser against classical filters on held-out images.

Methods and parameters follow the thesis's benchmark script (ch. 6), plus BM3D
(``bm3d`` package; the thesis never compared it) with its noise level estimated by
scikit-image's ``estimate_sigma``. Every method sees the same min–max scaled noisy image and is
scored against the same target (the clean image scaled to the noisy mean), by MSE and by
SSIM (scikit-image, ``data_range`` = the target's range). Reported: mean ± standard error and
the median time per image on this machine. A per-pixel mean-absolute-error map of the network
shows whether errors rise at image edges (thesis fig. 4).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data.datasets import SKIMAGE_HELDOUT, skimage_images, synthetic_images
from ..data.augment import random_crop
from ..data.noise import HIGH_COUNTS_RANGE, poisson_noise
from ..train.metrics import mean_and_sem, ssim_numpy

Method = Callable[[np.ndarray], np.ndarray]
#: Benchmark dose ranges [counts/px]: the thesis's benchmark script used U(25, 100) at low dose.
EVAL_DOSES = {"low": (25.0, 100.0), "high": HIGH_COUNTS_RANGE}
HELDOUT_SEED = 2000


def classical_methods(include_bm3d: bool = True) -> dict[str, Method]:
    """Name → function of a 2-D float image in [0, 1], each at the thesis's settings."""
    from scipy import ndimage, signal
    from skimage import restoration

    methods: dict[str, Method] = {
        "noisy input": lambda x: x,
        # cv2.GaussianBlur(3×3, σ auto) → σ = 0.8; truncate 1.25 σ keeps the 3×3 support
        "Gaussian": lambda x: ndimage.gaussian_filter(x, 0.8, truncate=1.25, mode="reflect"),
        # cv2.bilateralFilter(d=9, σ_color=75, σ_space=75) on 8-bit → σ_color 75/255 on [0, 1]
        "bilateral": lambda x: restoration.denoise_bilateral(x, win_size=9, sigma_color=75 / 255,
                                                             sigma_spatial=75, mode="reflect"),
        "median": lambda x: ndimage.median_filter(x, size=3, mode="reflect"),
        "Wiener": lambda x: signal.wiener(x),
        "wavelet (BayesShrink)": lambda x: restoration.denoise_wavelet(x),
        "Chambolle TV": lambda x: restoration.denoise_tv_chambolle(x),
        "Bregman TV": lambda x: restoration.denoise_tv_bregman(x, weight=0.1, eps=2e-4,
                                                               max_num_iter=200, isotropic=False),
        "non-local means": lambda x: restoration.denoise_nl_means(x),
    }
    if include_bm3d:
        try:
            import bm3d  # noqa: F401
        except ImportError:
            pass
        else:
            methods["BM3D"] = _bm3d
    return methods


def _bm3d(x: np.ndarray) -> np.ndarray:
    import bm3d
    from skimage.restoration import estimate_sigma

    sigma = max(float(estimate_sigma(x)), 1e-3)
    return np.asarray(bm3d.bm3d(x, sigma_psd=sigma), dtype=np.float64)


def network_method(model: torch.nn.Module, tile: int = 512, margin: int = 16,
                   ensemble: bool = False) -> Method:
    """The network as a method on [0, 1] images (tiled like the CLI; ``ensemble``: mean over
    the 8 dihedral transforms)."""
    from .tiling import denoise_image

    return lambda x: denoise_image(model, x, tile=tile, margin=margin,
                                   ensemble=ensemble).astype(np.float64)


def heldout_clean(n: int, size: int = 256, natural_fraction: float = 0.25,
                  seed: int = HELDOUT_SEED) -> list[tuple[str, np.ndarray]]:
    """``n`` held-out clean ``size``² images: synthetic micrographs from seeds unused in training
    and crops of scikit-image's held-out images, labelled ``"micrograph"``/``"natural"``."""
    n_nat = int(round(n * natural_fraction))
    out = [("micrograph", im) for im in synthetic_images(n - n_nat, size, seed)]
    nat = [torch.as_tensor(im) for im in skimage_images(SKIMAGE_HELDOUT)]
    g = torch.Generator().manual_seed(seed)
    for k in range(n_nat):
        out.append(("natural", random_crop(nat[k % len(nat)], size, g).numpy().copy()))
    return out


def evaluate(methods: dict[str, Method], n: int = 32, size: int = 256,
             doses: tuple[str, ...] = ("low", "high"), seed: int = HELDOUT_SEED,
             progress: bool = True, mae_maps: dict[str, Method] | None = None) -> dict:
    """Score every method on ``n`` held-out images per dose regime.

    Returns ``{"rows": [...], "maps": {...}}``: one row per (dose, method, subset) with mean and
    standard error of MSE and SSIM and the median seconds per image; ``maps`` holds per-pixel
    MAE maps [size, size] of the methods in ``mae_maps`` (mean over all images) per dose.
    """
    clean = heldout_clean(n, size, seed=seed)
    rows, maps = [], {}
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(doses) * n * len(methods), desc="evaluate", unit="run")
    for regime in doses:
        if regime not in EVAL_DOSES:
            raise ValueError(f"doses must be among {sorted(EVAL_DOSES)}, got {regime!r}")
        lo, hi = EVAL_DOSES[regime]
        g = torch.Generator().manual_seed(seed + (regime == "high"))
        pairs = []
        for _, im in clean:
            dose = lo + (hi - lo) * float(torch.rand(1, generator=g, dtype=torch.float64))
            p = poisson_noise(torch.as_tensor(im, dtype=torch.float64), dose, g)
            pairs.append((p.noisy.numpy(), p.target.numpy(), dose))
        kinds = np.array([k for k, _ in clean])
        for name, fn in methods.items():
            mse_v, ssim_v, times = [], [], []
            for noisy, target, _ in pairs:
                t0 = time.perf_counter()
                out = np.asarray(fn(noisy), dtype=np.float64)
                times.append(time.perf_counter() - t0)
                mse_v.append(float(np.mean((out - target) ** 2)))
                ssim_v.append(ssim_numpy(out, target))
                if bar is not None:
                    bar.update(1)
            mse_v, ssim_v = np.array(mse_v), np.array(ssim_v)
            for subset in ("all", "micrograph", "natural"):
                sel = np.ones(len(kinds), bool) if subset == "all" else kinds == subset
                if not sel.any():
                    continue
                m, m_se = mean_and_sem(mse_v[sel])
                s, s_se = mean_and_sem(ssim_v[sel])
                rows.append({"dose": regime, "dose_range": [lo, hi], "method": name,
                             "subset": subset, "n": int(sel.sum()), "mse": m, "mse_se": m_se,
                             "ssim": s, "ssim_se": s_se, "seconds": float(np.median(times)),
                             "mse_per_image": mse_v[sel].tolist()})
        for name, fn in (mae_maps or {}).items():
            acc = np.zeros((size, size))
            for noisy, target, _ in pairs:
                acc += np.abs(np.asarray(fn(noisy)) - target)
            maps[f"{regime}/{name}"] = acc / len(pairs)
    if bar is not None:
        bar.close()
    return {"rows": rows, "maps": maps}


def paired_difference(rows: list[dict], a: str, b: str, dose: str, subset: str = "all"
                      ) -> dict[str, float] | None:
    """MSE of method ``a`` minus method ``b`` on the same noisy images (same dose, subset):
    mean ± standard error of the per-image differences and how often ``a`` is lower. Pairing
    removes the image-to-image spread that dominates the per-method standard errors."""
    pick = {r["method"]: r for r in rows if r["dose"] == dose and r["subset"] == subset}
    if a not in pick or b not in pick or "mse_per_image" not in pick[a]:
        return None
    d = np.array(pick[a]["mse_per_image"]) - np.array(pick[b]["mse_per_image"])
    mean, se = mean_and_sem(d)
    return {"a": a, "b": b, "dose": dose, "subset": subset, "n": int(d.size),
            "mean_difference": mean, "se": se, "a_lower": int((d < 0).sum())}


def edge_profile(mae_map: np.ndarray, band: int = 16) -> dict[str, float]:
    """Mean of a MAE map in the outer ``band`` px against the interior, and their ratio."""
    inner = mae_map[band:-band, band:-band]
    mask = np.ones_like(mae_map, bool)
    mask[band:-band, band:-band] = False
    edge = float(mae_map[mask].mean())
    return {"edge_mae": edge, "interior_mae": float(inner.mean()),
            "edge_over_interior": edge / float(inner.mean())}


def format_table(rows: list[dict], subset: str = "all") -> str:
    """Markdown table of the rows for one subset, grouped by dose."""
    lines = []
    for regime in dict.fromkeys(r["dose"] for r in rows):
        sel = [r for r in rows if r["dose"] == regime and r["subset"] == subset]
        if not sel:
            continue
        lo, hi = sel[0]["dose_range"]
        lines += [f"\n{regime} dose, U({lo:g}, {hi:g}) counts/px, {subset} (n = {sel[0]['n']})\n",
                  "| method | MSE (×10⁻³) | SSIM | s / image |", "| --- | --- | --- | --- |"]
        for r in sorted(sel, key=lambda r: r["mse"]):
            lines.append(f"| {r['method']} | {1e3 * r['mse']:.3f} ± {1e3 * r['mse_se']:.3f} | "
                         f"{r['ssim']:.4f} ± {r['ssim_se']:.4f} | {r['seconds']:.3g} |")
    return "\n".join(lines)


def save_results(result: dict, out_dir: str | Path) -> Path:
    """Write ``denoise_eval.json`` (rows, edge profiles) and the MAE maps (.npy, .png)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    edges = {}
    for key, m in result["maps"].items():
        stem = re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_")
        np.save(out / f"mae_map_{stem}.npy", m)
        try:
            import imageio.v3 as iio
            iio.imwrite(out / f"mae_map_{stem}.png",
                        (255 * (m - m.min()) / max(m.max() - m.min(), 1e-12)).astype(np.uint8))
        except ImportError:
            pass
        edges[key] = edge_profile(m)
    path = out / "denoise_eval.json"
    path.write_text(json.dumps({"rows": result["rows"], "edges": edges}, indent=2))
    return path
