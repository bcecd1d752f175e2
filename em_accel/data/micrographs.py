"""Realistic clean atomic-resolution micrographs: HAADF-STEM and HRTEM, simulated from atoms.

Each micrograph is a random scene (:mod:`em_accel.data.scenes`: crystals on zone axes with
defects, edges and surface layers; grain boundaries, twins and heterointerfaces; nanoparticles
on amorphous supports; amorphous films with single atoms) of materials from
:mod:`em_accel.sim.materials`, imaged by

- ``"haadf"``: the incoherent approximation ``I(r) = sum_j Z_j^n |P_z(r - r_j)|^2`` with the
  probe intensity ``|P_z|^2`` of an aberrated probe (:mod:`em_accel.sim.imaging` conventions)
  whose defocus follows each atom's depth (the scene is cut into depth slabs), Z exponent
  n = 1.5-2.0, a Gaussian source size and thermal smearing, and point sampling at the pixel
  positions (so a coarse pixel aliases the lattice as a real scan does);
- ``"hrtem"``: a plane-wave multislice exit wave (:func:`em_accel.sim.multislice`, exact
  Kirkland potential, 3 Å slices) through the objective lens (defocus, Cs, two-fold
  astigmatism, coma, three-fold astigmatism, aperture, focal and angular spread) and a camera
  (Gaussian MTF, binning to the pixel size).

Images are clean (no noise, no scan distortions; :mod:`em_accel.data.distort` adds those),
float32 ``[size, size]`` in [0, 1]: HAADF divided by its maximum (vacuum stays 0), HRTEM
min-max scaled (``params["intensity_range"]`` holds the intensities, vacuum = 1, that map to
0 and 1). Everything about an image is in ``params`` (JSON-serialisable).

:func:`build_cache` simulates ``n`` images into a resumable ``.npz`` so CPU training runs
simulate once; image ``i`` of a cache with seed ``s`` is ``micrograph(size, kind, seed=(s, i))``.
Rates (one thread, the 2-vCPU reference machine) are in docs/micrographs.md.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

from ..sim.fft import fft_size
from ..sim.imaging import aberration_function, aperture, image as hrtem_image
from ..sim.physics import wavelength
from ..sim.potential import Grid
from . import scenes

KINDS = ("haadf", "hrtem")
#: Pixel size ranges [Å/px] (log-uniform) for lattice scenes and for particle/film scenes.
HAADF_PIXEL = {"lattice": (0.05, 0.3), "particles": (0.12, 0.45)}
HRTEM_PIXEL = {"lattice": (0.08, 0.25), "particles": (0.12, 0.3)}
#: Finest sampling [Å] the imaging runs at (the image is then sampled at the pixel size).
HAADF_SIM_SAMPLING = 0.2
HRTEM_SIM_SAMPLING = 0.3
#: HRTEM multislice slice thickness [Å].
HRTEM_SLICE = 3.0
CACHE_FORMAT = 1


class Micrograph(NamedTuple):
    """A clean micrograph: ``image`` float32 [size, size] in [0, 1]; ``params`` what made it."""

    image: np.ndarray
    params: dict


class Micrographs(NamedTuple):
    """A batch: ``images`` float32 [n, size, size] in [0, 1]; ``params`` one dict per image."""

    images: np.ndarray
    params: list[dict]


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _check(size: int, kind: str) -> None:
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
        raise TypeError(f"size must be an int number of pixels, got {type(size).__name__}")
    if size < 16:
        raise ValueError(f"size must be >= 16 px, got {size}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def micrograph(size: int, kind: str = "haadf", seed: int | Sequence[int] | None = None, *,
               scene: str | None = None, pixel_size: float | None = None,
               pixel_range: Sequence[float] | None = None,
               split: str | None = None, materials: Sequence[str] | None = None,
               device=None) -> Micrograph:
    """One clean ``size`` x ``size`` micrograph of a random scene.

    Args:
        size: image side [px] (>= 16).
        kind: ``"haadf"`` (STEM, incoherent approximation) or ``"hrtem"`` (multislice + CTF).
        seed: int or sequence of ints for ``numpy.random.default_rng``; the image is a pure
            function of (size, kind, seed, scene, pixel_size, pixel_range, split, materials).
            None: fresh.
        scene: ``"crystal"``, ``"interface"``, ``"particles"``, ``"amorphous"`` or None (drawn).
        pixel_size: [Å/px]; None draws it log-uniformly from ``pixel_range``.
        pixel_range: (lo, hi) [Å/px] within [0.01, 2] for every scene; None: the atomic-resolution
            ranges :data:`HAADF_PIXEL` / :data:`HRTEM_PIXEL` (coarser for particle and film
            scenes). Wide ranges (e.g. 0.05-2) give the mixed magnifications of a real
            collection; a field of view scales with the pixel, and so does the time.
        split: only ``"train"`` or ``"heldout"`` materials (:func:`em_accel.sim.materials.split_of`).
        materials: material IDs to draw from instead of the catalogue.
        device: torch device for the FFTs and multislice (None: CPU).
    """
    _check(size, kind)
    rng = np.random.default_rng(seed)
    if scene is None:
        scene = scenes.SCENES[int(rng.choice(len(scenes.SCENES), p=scenes.SCENE_WEIGHTS))]
    if pixel_range is None:
        ranges = HAADF_PIXEL if kind == "haadf" else HRTEM_PIXEL
        lo, hi = ranges["lattice" if scene in ("crystal", "interface") else "particles"]
    else:
        lo, hi = (float(v) for v in pixel_range)
        if not (0.01 <= lo <= hi <= 2.0):
            raise ValueError(f"pixel_range must be (lo, hi) with 0.01 <= lo <= hi <= 2 Å/px, "
                             f"got {tuple(pixel_range)}")
    if pixel_size is None:
        pixel_size = _loguniform(rng, lo, hi)
    pixel_size = float(pixel_size)
    if not (math.isfinite(pixel_size) and 0.01 <= pixel_size <= 2.0):
        raise ValueError(f"pixel_size must be in [0.01, 2] Å/px, got {pixel_size}")
    # simulate a margin (probe tails, HRTEM delocalisation) on an FFT-friendly grid, then crop
    margin_a = 6.0 if kind == "haadf" else 8.0
    # (grid sides rounded up to multiples of size/4, so a run reuses a few FFT plans)
    step = max(8, 2 ** int(math.log2(size)) // 4)
    total = fft_size(step * math.ceil((size + 2 * math.ceil(margin_a / pixel_size)) / step))
    margin = (total - size) // 2
    extent = (total * pixel_size,) * 2
    sc = scenes.random_scene(extent, rng, scene, max_thickness=300.0 if kind == "haadf" else 100.0,
                             split=split, materials=materials)
    if kind == "haadf":
        img, p = _haadf(sc, size, margin, pixel_size, rng, device)
    else:
        img, p = _hrtem(sc, size, margin, pixel_size, rng, device)
    params = {"kind": kind, "size": int(size), "pixel_size_A": pixel_size,
              "field_of_view_A": size * pixel_size, "atoms": int(len(sc.numbers)),
              "scene": sc.info, **p}
    return Micrograph(img.astype(np.float32), _jsonable(params))


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def _deposit(xy: np.ndarray, w: np.ndarray, n: int, ds: float) -> np.ndarray:
    """Bilinear deposit of weights ``w`` at ``xy`` [Å] on a periodic n x n grid of spacing ds."""
    u = xy / ds
    i0 = np.floor(u).astype(np.int64)
    f = u - i0
    out = np.zeros(n * n)
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        wx = f[:, 0] if dx else 1 - f[:, 0]
        wy = f[:, 1] if dy else 1 - f[:, 1]
        idx = ((i0[:, 0] + dx) % n) * n + (i0[:, 1] + dy) % n
        out += np.bincount(idx, w * wx * wy, minlength=n * n)
    return out.reshape(n, n)


def probe_intensity_spectrum(grid: Grid, energy: float, semiangle: float, aberrations: dict,
                             device=None) -> torch.Tensor:
    """rfft2 of the probe intensity |P(r)|^2 (normalised to sum 1) on ``grid``, complex128
    [nx, ny//2+1].

    The intensity is band-limited to twice the aperture's frequency, so it is computed on the
    smallest grid of the same extent that holds that band (often 3-10x fewer points) and its
    spectrum is zero-padded to ``grid``: the same numbers, much faster on big fields of view.
    """
    k_ap = semiangle * 1e-3 / wavelength(energy)
    small = []
    for n, length in zip(grid.gpts, grid.extent):
        m = 2 * int(math.ceil(2 * (k_ap + 2.0 / length) * length)) + 4
        small.append(min(n, m + m % 2))
    g2 = Grid(grid.extent, tuple(small))
    a = aperture(g2, energy, semiangle, soft=True, device=device)
    chi = aberration_function(g2, energy, aberrations, device=device)
    inten = torch.fft.ifft2(torch.polar(a, -chi)).abs() ** 2
    spec2 = torch.fft.rfft2(inten / inten.sum())
    if tuple(small) == tuple(grid.gpts):
        return spec2
    (nx, ny), (mx, my) = grid.gpts, small
    out = torch.zeros((nx, ny // 2 + 1), dtype=spec2.dtype, device=spec2.device)
    hx, cy = mx // 2, min(my // 2, ny // 2)  # drop the small grid's Nyquist row and column
    out[:hx, :cy] = spec2[:hx, :cy]
    out[nx - hx + 1:, :cy] = spec2[mx - hx + 1:, :cy]
    return out


def _bilinear_correction(grid: Grid, device=None) -> torch.Tensor:
    """1 / transfer of a bilinear deposit, sinc^2 per axis, on the rfft2 grid (undoes its blur)."""
    kx, ky = grid.frequencies(device=device, half=True)
    (dx, dy) = grid.sampling
    return 1.0 / (torch.sinc(kx * dx) ** 2 * torch.sinc(ky * dy) ** 2)


def _haadf_optics(rng: np.random.Generator) -> dict:
    energy = float(rng.choice([60.0, 80.0, 200.0, 300.0], p=[0.1, 0.2, 0.3, 0.4]))
    corrected = rng.random() < 0.8
    if corrected:
        alpha = rng.uniform(18.0, 35.0)
        ab = {"C30": rng.normal(0, 2e4), "C50": rng.normal(0, 5e6)}
    else:  # uncorrected probe near Scherzer conditions
        cs = rng.uniform(0.5e7, 1.3e7)
        lam = wavelength(energy)
        alpha = 1e3 * 1.27 * (lam / cs) ** 0.25 * rng.uniform(0.9, 1.1)
        ab = {"C30": cs, "C10": -1.2 * math.sqrt(cs * lam) * rng.uniform(0.8, 1.2)}
    ab["C10"] = ab.get("C10", 0.0) + rng.normal(0, 15.0)
    ab.update({"C12": abs(rng.normal(0, 8.0)), "phi12": rng.uniform(0, math.pi),
               "C21": abs(rng.normal(0, 150.0)), "phi21": rng.uniform(0, 2 * math.pi),
               "C23": abs(rng.normal(0, 150.0)), "phi23": rng.uniform(0, 2 * math.pi)})
    return {"energy_keV": energy, "aberration_corrected": bool(corrected),
            "semiangle_mrad": float(alpha), "aberrations": {k: float(v) for k, v in ab.items()},
            "z_exponent": float(rng.uniform(1.5, 2.0)),
            "source_sigma_A": float(rng.uniform(0.15, 0.45)),
            "thermal_sigma_A": float(rng.uniform(0.04, 0.1)),
            "focus_depth_fraction": float(rng.uniform(0, 1)),
            "gamma": float(rng.uniform(0.75, 1.0))}


def _gaussian_mtf(grid: Grid, sigma: float, device=None) -> torch.Tensor:
    kx, ky = grid.frequencies(device=device, half=True)
    return torch.exp(-2 * math.pi ** 2 * sigma ** 2 * (kx ** 2 + ky ** 2))


def _haadf(sc: scenes.Scene, size: int, margin: int, pixel: float, rng: np.random.Generator,
           device) -> tuple[np.ndarray, dict]:
    opt = _haadf_optics(rng)
    # fine enough that the probe intensity (band 2 alpha / lambda) is not aliased
    ds_max = min(HAADF_SIM_SAMPLING, wavelength(opt["energy_keV"]) / (4e-3 * opt["semiangle_mrad"]))
    f = max(1, int(math.ceil(pixel / ds_max - 1e-9)))
    n = int(round(sc.extent[0] / pixel)) * f
    grid = Grid(sc.extent, (n, n))
    ds = sc.extent[0] / n
    depth = sc.depth
    slabs = 1 if depth < 40 else min(4, int(math.ceil(depth / 80)) + 1)
    z_focus = opt["focus_depth_fraction"] * depth
    bounds = np.linspace(0, depth, slabs + 1)
    w_all = sc.numbers.astype(np.float64) ** opt["z_exponent"]
    total = None
    blur = _gaussian_mtf(grid, math.hypot(opt["source_sigma_A"], opt["thermal_sigma_A"]), device)
    blur = blur * _bilinear_correction(grid, device)
    for s in range(slabs):
        sel = (sc.positions[:, 2] >= bounds[s]) & (sc.positions[:, 2] < bounds[s + 1])
        if s == slabs - 1:
            sel |= sc.positions[:, 2] >= bounds[-1]
        if not sel.any():
            continue
        dep = torch.from_numpy(_deposit(sc.positions[sel, :2], w_all[sel], n, ds)).to(device)
        ab = dict(opt["aberrations"])
        ab["C10"] += 0.5 * (bounds[s] + bounds[s + 1]) - z_focus  # deeper atoms: other defocus
        spec = torch.fft.rfft2(dep) * probe_intensity_spectrum(grid, opt["energy_keV"],
                                                               opt["semiangle_mrad"], ab, device)
        total = spec if total is None else total + spec
    img = torch.fft.irfft2(total * blur, s=(n, n)).cpu().numpy()
    off = margin * f + f // 2
    img = img[off:off + size * f:f, off:off + size * f:f]
    img = np.clip(img, 0, None)
    peak = float(img.max())
    img = (img / peak if peak > 0 else img) ** opt["gamma"]
    opt.update({"sim_sampling_A": ds, "depth_slabs": slabs, "scale": peak})
    return img, opt


def _hrtem_optics(rng: np.random.Generator) -> dict:
    energy = float(rng.choice([80.0, 200.0, 300.0], p=[0.15, 0.4, 0.45]))
    lam = wavelength(energy)
    corrected = rng.random() < 0.4
    if corrected:
        cs = rng.uniform(-4e5, 4e5)  # ±40 µm
        defocus = rng.uniform(-150.0, 150.0)
    else:
        cs = rng.uniform(0.5e7, 1.5e7)
        scherzer = 1.2 * math.sqrt(cs * lam)
        defocus = scherzer * rng.uniform(-0.8, 2.5)
    ap = math.inf if rng.random() < 0.3 else rng.uniform(12.0, 30.0)
    return {"energy_keV": energy, "aberration_corrected": bool(corrected),
            "aberrations": {"defocus": float(defocus), "Cs": float(cs),
                            "C12": float(abs(rng.normal(0, 20.0))), "phi12": float(rng.uniform(0, math.pi)),
                            "C21": float(abs(rng.normal(0, 300.0))), "phi21": float(rng.uniform(0, 2 * math.pi)),
                            "C23": float(abs(rng.normal(0, 200.0))), "phi23": float(rng.uniform(0, 2 * math.pi))},
            "objective_aperture_mrad": None if math.isinf(ap) else float(ap),
            "focal_spread_A": float(rng.uniform(15.0, 60.0)),
            "angular_spread_mrad": float(rng.uniform(0.05, 0.4)),
            "mtf_sigma_px": float(rng.uniform(0.3, 0.8))}


def _hrtem(sc: scenes.Scene, size: int, margin: int, pixel: float, rng: np.random.Generator,
           device) -> tuple[np.ndarray, dict]:
    from ..sim import Potential, multislice, plane_wave

    opt = _hrtem_optics(rng)
    f = max(1, int(math.ceil(pixel / HRTEM_SIM_SAMPLING - 1e-9)))
    n = int(round(sc.extent[0] / pixel)) * f
    pot = Potential(sc.structure(), gpts=(n, n), slice_thickness=HRTEM_SLICE, device=device)
    energy = opt["energy_keV"]
    wave = multislice(plane_wave(pot.grid, device=device), pot, energy)
    ap = opt["objective_aperture_mrad"]
    inten = hrtem_image(wave, pot.grid, energy, aberrations=opt["aberrations"],
                        semiangle_cutoff=math.inf if ap is None else ap,
                        focal_spread=opt["focal_spread_A"],
                        angular_spread=opt["angular_spread_mrad"]).double()
    mtf = _gaussian_mtf(pot.grid, opt["mtf_sigma_px"] * pixel, device)
    inten = torch.fft.irfft2(torch.fft.rfft2(inten) * mtf, s=(n, n))
    img = inten.reshape(n // f, f, n // f, f).mean((1, 3)).cpu().numpy()
    img = img[margin:margin + size, margin:margin + size]
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / (hi - lo if hi > lo else 1.0)
    opt.update({"sim_sampling_A": pot.grid.sampling[0], "slices": pot.num_slices,
                "intensity_range": [lo, hi]})
    return img, opt


def micrographs(n: int, size: int, kind: str = "haadf", seed: int = 0, *, start: int = 0,
                progress: bool = True, **kwargs) -> Micrographs:
    """Images ``start .. start+n-1`` of the sequence seeded by ``seed``: image ``i`` is
    ``micrograph(size, kind, seed=(seed, i), **kwargs)``."""
    _check(size, kind)
    if int(n) < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    from tqdm.auto import tqdm

    out = np.zeros((int(n), size, size), np.float32)
    params = []
    bar = tqdm(range(int(n)), desc=f"{kind} micrographs", disable=not (progress and _tty()))
    for k in bar:
        m = micrograph(size, kind, seed=(int(seed), int(start) + k), **kwargs)
        out[k] = m.image
        params.append(m.params)
    return Micrographs(out, params)


def _tty() -> bool:
    import sys

    return sys.stderr.isatty()


class Cache(NamedTuple):
    """A micrograph cache: ``images`` float32 [n, size, size]; ``params`` per image; ``meta``."""

    images: np.ndarray
    params: list[dict]
    meta: dict


def load_cache(path: str | Path) -> Cache:
    """Read a cache written by :func:`build_cache` (images as float32)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no micrograph cache at {path}")
    with np.load(path, allow_pickle=False) as z:
        images = z["images"].astype(np.float32)
        params = [json.loads(s) for s in z["params"]]
        meta = json.loads(str(z["meta"]))
    return Cache(images, params, meta)


def _write_cache(path: Path, images: np.ndarray, params: list[str], meta: dict) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, images=images, params=np.array(params, dtype=str), meta=np.array(json.dumps(meta)))
    os.replace(tmp, path)


def build_cache(path: str | Path, n: int, size: int = 256, kind: str = "haadf", seed: int = 0,
                progress: bool = True, *, flush_every: float = 60.0, **kwargs) -> dict:
    """Simulate ``n`` micrographs into the ``.npz`` at ``path``, resumably.

    Image ``i`` is ``micrograph(size, kind, seed=(seed, i), **kwargs)``, so a cache is the same
    however often it was interrupted, and re-running with a larger ``n`` appends. The file is
    rewritten atomically (temporary file + rename) at least every ``flush_every`` seconds.
    Arrays: ``images`` float16 [n, size, size] (in [0, 1]), ``params`` (JSON string per image),
    ``meta`` (JSON: kind, size, seed, kwargs, format, rate). An existing file made with other
    settings raises ValueError. Returns the meta dict.
    """
    _check(size, kind)
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"path must end in .npz, got {path}")
    n = int(n)
    meta = {"format": CACHE_FORMAT, "kind": kind, "size": int(size), "seed": int(seed),
            "kwargs": _jsonable(kwargs), "generator": "em_accel.data.micrographs.micrograph"}
    images = np.zeros((0, size, size), np.float16)
    params: list[str] = []
    if path.exists():
        old = load_cache(path)
        for key in ("format", "kind", "size", "seed", "kwargs"):
            if old.meta.get(key) != meta[key]:
                raise ValueError(f"{path} was made with {key}={old.meta.get(key)!r}, not "
                                 f"{meta[key]!r}; use another path")
        images = old.images.astype(np.float16)
        params = [json.dumps(p) for p in old.params]
        meta["seconds"] = old.meta.get("seconds", 0.0)
    done = len(params)
    if done >= n:
        return load_cache(path).meta
    from tqdm.auto import tqdm

    path.parent.mkdir(parents=True, exist_ok=True)
    chunk: list[np.ndarray] = []
    seconds = meta.get("seconds", 0.0)
    last = time.monotonic()
    bar = tqdm(range(done, n), desc=f"{kind} cache", initial=done, total=n,
               disable=not (progress and _tty()))
    for i in bar:
        t0 = time.perf_counter()
        m = micrograph(size, kind, seed=(int(seed), i), **kwargs)
        seconds += time.perf_counter() - t0
        chunk.append(m.image.astype(np.float16))
        params.append(json.dumps(m.params))
        if time.monotonic() - last > flush_every or i == n - 1:
            images = np.concatenate([images, np.stack(chunk)])
            chunk = []
            # rate over all runs that built this file (seconds spent in micrograph calls)
            meta.update(count=len(params), seconds=seconds,
                        images_per_second=len(params) / max(seconds, 1e-9))
            _write_cache(path, images, params, meta)
            last = time.monotonic()
    return meta
