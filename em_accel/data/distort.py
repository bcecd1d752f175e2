"""The acquisition model: detector noise, STEM serial-scan distortions, TEM camera defects.

After Lobato, Friedrich & Van Aert (npj Comput. Mater. 2023, the tk-r-em distortion model):
TEM cameras add shot noise, dark-current noise, readout noise, X-ray hits (saturated pixel
clusters) and dead/hot pixels; STEM adds shot noise at the scintillator, photomultiplier gain
noise, readout noise and the distortions of a serial scan (line-to-line jitter, fast- and
slow-scan drift, flyback and scan non-linearity).

Units. A clean image (``[H, W]``, e.g. from :mod:`em_accel.data.micrographs`) holds the
expected signal as a fraction of ``counts_per_px``: a pixel of value v collects Poisson(v *
``counts_per_px``) electrons (counts). Detector output is in ADU: ``gain`` ADU per count plus
``offset`` ADU, with read noise ``read_noise`` given in counts (so it does not change with
``gain``). :func:`acquire` returns the image in the clean image's units,
``noisy = (ADU - offset) / (gain * counts_per_px)``, so ``E[noisy] = clean`` (plus dark counts
/ counts_per_px) and ``params`` say how to get back to ADU. "counts_per_px" is never called a
dose here: a dose in e⁻/Å² is counts_per_px / pixel_area.

Scan geometry: rows are scan lines (fast scan along x = columns, slow scan along y = rows).
All randomness comes from ``seed`` (int, sequence of ints, ``numpy.random.Generator`` or None).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

Seed = int | Sequence[int] | np.random.Generator | None
MODALITIES = ("stem", "tem")
_ALIASES = {"haadf": "stem", "stem": "stem", "hrtem": "tem", "tem": "tem"}


class Acquired(NamedTuple):
    """A simulated acquisition: ``noisy`` float32 [H, W] in the clean image's units (see the
    module docstring) and ``params`` (JSON-serialisable) with every sampled setting."""

    noisy: np.ndarray
    params: dict


def _rng(seed: Seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _image(x, name: str = "clean") -> np.ndarray:
    a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D image [H, W], got shape {list(a.shape)}")
    if not np.issubdtype(a.dtype, np.number):
        raise TypeError(f"{name} must be numeric, got {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or inf")
    return a


def _positive(value: float, name: str, unit: str, allow_zero: bool = False) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>=' if allow_zero else '>'} 0 {unit}, got {value}")
    return v


# ----------------------------------------------------------------------------- detector noise

def detect(clean, counts_per_px: float, *, gain: float = 1.0, offset: float = 0.0,
           read_noise: float = 0.0, gain_cv: float = 0.0, dark_counts: float = 0.0,
           seed: Seed = None) -> np.ndarray:
    """Detector output [ADU] of a clean image: Poisson–Gaussian with optional gain noise.

    counts ~ Poisson(clean * counts_per_px + dark_counts) [electrons]; with ``gain_cv`` > 0 each
    electron's pulse height varies (a photomultiplier or scintillator, coefficient of variation
    ``gain_cv``; the sum of N unit-mean Gamma pulses is Gamma(N / cv^2, cv^2)); then
    ``ADU = gain * (signal + N(0, read_noise^2)) + offset``.

    Args:
        clean: [H, W] >= 0 expected signal as a fraction of ``counts_per_px``.
        counts_per_px: expected counts at a pixel of clean value 1 (> 0).
        gain: ADU per count (> 0); offset: ADU added (black level).
        read_noise: Gaussian read-out noise, std in counts (>= 0).
        gain_cv: per-electron gain coefficient of variation (>= 0).
        dark_counts: mean dark-current counts per pixel (>= 0).
    Returns float64 [H, W] ADU.
    """
    img = _image(clean)
    if img.min() < 0:
        raise ValueError("clean must be >= 0 (expected signal)")
    cpp = _positive(counts_per_px, "counts_per_px", "counts/px")
    gain = _positive(gain, "gain", "ADU/count")
    read_noise = _positive(read_noise, "read_noise", "counts", True)
    gain_cv = _positive(gain_cv, "gain_cv", "", True)
    dark_counts = _positive(dark_counts, "dark_counts", "counts/px", True)
    rng = _rng(seed)
    counts = rng.poisson(img * cpp + dark_counts).astype(np.float64)
    if gain_cv > 0:
        k = 1.0 / gain_cv ** 2
        signal = np.zeros_like(counts)
        hit = counts > 0
        signal[hit] = rng.gamma(counts[hit] * k, 1.0 / k)
    else:
        signal = counts
    if read_noise > 0:
        signal = signal + rng.normal(0.0, read_noise, signal.shape)
    return gain * signal + float(offset)


def noise_level_map(clean, counts_per_px: float, *, read_noise: float = 0.0,
                    gain_cv: float = 0.0, dark_counts: float = 0.0) -> np.ndarray:
    """Expected noise std per pixel [clean-image units] of :func:`detect` after normalising by
    ``(ADU - offset) / (gain * counts_per_px)``, float32 [H, W]:

        std = sqrt((clean * cpp + dark) * (1 + gain_cv^2) + read_noise^2) / cpp

    For conditioning denoisers (FFDNet/DRUNet-style noise-level maps); pass the clean image, or
    an estimate of it (e.g. a smoothed noisy image) at inference. ``acquire``'s ``params`` hold
    the settings to use.
    """
    img = np.clip(_image(clean), 0, None)
    cpp = _positive(counts_per_px, "counts_per_px", "counts/px")
    var = (img * cpp + _positive(dark_counts, "dark_counts", "counts/px", True)) \
        * (1 + _positive(gain_cv, "gain_cv", "", True) ** 2) \
        + _positive(read_noise, "read_noise", "counts", True) ** 2
    return (np.sqrt(var) / cpp).astype(np.float32)


# ------------------------------------------------------------------------ STEM scan distortion

def resample(img, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """``img`` sampled at (row + dy, col + dx) [px] (linear interpolation, mirrored edges);
    ``dy`` and ``dx`` broadcast to [H, W]. What a scan records when the probe lands off its
    nominal position."""
    from scipy import ndimage

    a = _image(img, "img")
    rows, cols = np.meshgrid(np.arange(a.shape[0], dtype=np.float64),
                             np.arange(a.shape[1], dtype=np.float64), indexing="ij")
    coords = np.stack([rows + np.broadcast_to(dy, a.shape), cols + np.broadcast_to(dx, a.shape)])
    return ndimage.map_coordinates(a, coords, order=1, mode="mirror")


def line_jitter_offsets(rows: int, sigma_px: float, seed: Seed = None,
                        correlation: float = 0.0) -> np.ndarray:
    """Fast-scan offset of each scan line [px], float64 [rows]: an AR(1) sequence with std
    ``sigma_px`` and line-to-line ``correlation`` in [0, 1) (0: independent lines)."""
    sigma = _positive(sigma_px, "sigma_px", "px", True)
    if not 0 <= correlation < 1:
        raise ValueError(f"correlation must be in [0, 1), got {correlation}")
    e = _rng(seed).normal(0.0, sigma, int(rows))
    out = np.empty(int(rows))
    prev = 0.0
    for i in range(int(rows)):
        prev = correlation * prev + math.sqrt(1 - correlation ** 2) * e[i] if i else e[i]
        out[i] = prev
    return out


def line_jitter(img, sigma_px: float, seed: Seed = None, correlation: float = 0.0) -> np.ndarray:
    """Line-to-line jitter: each row shifted along x by its :func:`line_jitter_offsets` [px]
    (row ``i`` of the output at column ``c`` is the input row at ``c + offset_i``)."""
    a = _image(img, "img")
    dx = line_jitter_offsets(a.shape[0], sigma_px, seed, correlation)
    return resample(a, 0.0, dx[:, None])


def drift_offsets(shape: tuple[int, int], drift_px_per_line: tuple[float, float],
                  flyback_px: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) [px] of a constant specimen drift during a raster scan: the pixel at (row r,
    col c) is recorded at time ``t = r + c / (W + flyback_px)`` lines, so it is displaced by
    ``drift * t`` (``drift_px_per_line`` = (vy, vx)): slow-scan drift shears and stretches
    the image, fast-scan drift skews each line slightly."""
    h, w = int(shape[0]), int(shape[1])
    r, c = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    t = r + c / (w + max(0.0, float(flyback_px)))
    t -= t.mean()
    return drift_px_per_line[0] * t, drift_px_per_line[1] * t


def flyback_offsets(width: int, amplitude_px: float, decay_px: float,
                    nonlinearity: float = 0.0) -> np.ndarray:
    """Fast-scan position error [px] along a line, float64 [width]: the beam still settling
    after flyback, ``amplitude * exp(-c / decay)``, plus a smooth scan non-linearity
    ``nonlinearity * W * (u^2 - u)`` (u = c / W, zero at both line ends, in px)."""
    amplitude = float(amplitude_px)
    decay = _positive(decay_px, "decay_px", "px")
    c = np.arange(int(width), dtype=np.float64)
    u = c / max(1, int(width))
    return amplitude * np.exp(-c / decay) + float(nonlinearity) * width * (u * u - u)


def scan_offsets(shape: tuple[int, int], *, jitter_px: float = 0.0, jitter_correlation: float = 0.0,
                 drift_px_per_line: Sequence[float] = (0.0, 0.0), flyback_amplitude_px: float = 0.0,
                 flyback_decay_px: float = 8.0, nonlinearity: float = 0.0, seed: Seed = None,
                 **_: object) -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) [px], each [H, W], of all serial-scan distortions: drift + jitter + flyback.
    Accepts an :func:`acquire` STEM ``params`` dict as keywords (``seed=params["scan_seed"]``)
    to recover the offsets an acquisition used."""
    h, w = int(shape[0]), int(shape[1])
    dy, dx = drift_offsets((h, w), tuple(drift_px_per_line))
    dx = dx + line_jitter_offsets(h, jitter_px, seed, jitter_correlation)[:, None]
    dx = dx + flyback_offsets(w, flyback_amplitude_px, flyback_decay_px, nonlinearity)[None, :]
    return dy, dx


def scan_distort(img, seed: Seed = None, **settings) -> np.ndarray:
    """All serial-scan distortions at once (one interpolation); ``settings`` as for
    :func:`scan_offsets`."""
    a = _image(img, "img")
    return resample(a, *scan_offsets(a.shape, seed=seed, **settings))


# ----------------------------------------------------------------------------- TEM camera

def xray_hits(img, count: int, value: float, seed: Seed = None, max_size: int = 6) -> np.ndarray:
    """``count`` X-ray hits: clusters of 1..``max_size`` 4-connected pixels (a random walk)
    set to ``value`` (saturation, in the image's units)."""
    a = _image(img, "img").copy()
    rng = _rng(seed)
    h, w = a.shape
    steps = np.array([(0, 1), (1, 0), (0, -1), (-1, 0)])
    for _ in range(int(count)):
        p = np.array([rng.integers(h), rng.integers(w)])
        for _ in range(int(rng.integers(1, max_size + 1))):
            a[p[0], p[1]] = value
            p = np.clip(p + steps[rng.integers(4)], 0, [h - 1, w - 1])
    return a


def defect_pixel_mask(shape: tuple[int, int], fraction: float, seed: Seed = None,
                      columns: int = 0) -> np.ndarray:
    """Boolean [H, W] mask of defective pixels: a random ``fraction`` of pixels plus
    ``columns`` whole bad columns."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    rng = _rng(seed)
    mask = rng.random(shape) < fraction
    for c in rng.choice(shape[1], min(int(columns), shape[1]), replace=False):
        mask[:, c] = True
    return mask


def gaussian_mtf(img, sigma_px: float) -> np.ndarray:
    """Camera point-spread (charge/light spreading) as a Gaussian of ``sigma_px`` [px]."""
    from scipy import ndimage

    a = _image(img, "img")
    return ndimage.gaussian_filter(a, _positive(sigma_px, "sigma_px", "px", True), mode="mirror")


# ----------------------------------------------------------------------------- one call

def _stem_settings(rng: np.random.Generator) -> dict:
    p: dict = {"jitter_px": 0.0, "jitter_correlation": 0.0, "drift_px_per_line": [0.0, 0.0],
               "flyback_amplitude_px": 0.0, "flyback_decay_px": 8.0, "nonlinearity": 0.0}
    if rng.random() < 0.7:
        p["jitter_px"] = float(math.exp(rng.uniform(math.log(0.05), math.log(1.0))))
        p["jitter_correlation"] = float(rng.uniform(0, 0.6))
    if rng.random() < 0.6:
        p["drift_px_per_line"] = [float(v) for v in rng.normal(0, 0.01, 2)]
    if rng.random() < 0.5:
        p["flyback_amplitude_px"] = float(rng.uniform(0.3, 3.0))
        p["flyback_decay_px"] = float(rng.uniform(3.0, 20.0))
    if rng.random() < 0.3:
        p["nonlinearity"] = float(rng.normal(0, 0.01))
    p.update(gain=float(math.exp(rng.uniform(0.0, math.log(50.0)))),
             offset=float(rng.uniform(0, 100)),
             gain_cv=float(rng.uniform(0.2, 0.8)),
             read_noise=float(rng.uniform(0.0, 0.5)),
             dark_counts=0.0)
    return p


def _tem_settings(rng: np.random.Generator) -> dict:
    counting = rng.random() < 0.3  # direct-electron counting camera: no read noise, gain 1
    return {"camera": "counting" if counting else "integrating",
            "gain": 1.0 if counting else float(rng.uniform(1.0, 30.0)),
            "offset": 0.0 if counting else float(rng.uniform(0, 200)),
            "read_noise": 0.0 if counting else float(rng.uniform(0.3, 3.0)),
            "gain_cv": 0.0 if counting else float(rng.uniform(0.0, 0.5)),
            "dark_counts": float(rng.uniform(0.0, 0.3)),
            "mtf_sigma_px": 0.0 if counting else float(rng.uniform(0.0, 0.8)),
            "xray_hits": int(rng.poisson(rng.uniform(0, 3))),
            "xray_value": float(rng.uniform(5.0, 50.0)),
            "dead_fraction": float(10 ** rng.uniform(-5, -3)) if rng.random() < 0.6 else 0.0,
            "dead_columns": int(rng.random() < 0.1),
            "hot_fraction": float(10 ** rng.uniform(-5, -3.5)) if rng.random() < 0.4 else 0.0,
            "hot_value": float(rng.uniform(2.0, 10.0))}


def _stem_scan(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """``img`` under drawn STEM serial-scan distortions, clipped at 0, and the drawn settings
    (the detector's too, for :func:`acquire`; ``scan_seed`` recovers the offsets)."""
    p = _stem_settings(rng)
    p["scan_seed"] = int(rng.integers(2 ** 63))  # scan_offsets(shape, **params) recovers them
    out = scan_distort(img, **{k: v for k, v in p.items() if k != "scan_seed"},
                       seed=p["scan_seed"])
    return np.clip(out, 0, None), p


def stem_scan_distort(clean, seed: Seed = None) -> tuple[np.ndarray, dict]:
    """``clean`` [H, W] (>= 0) as a STEM raster scan records it: the serial-scan distortions
    :func:`acquire` draws (line jitter in 70% of images, up to 1 px; drift in 60%, about
    0.01 px/line; flyback in 50%, 0.3-3 px; scan non-linearity in 30%), without the detector's
    noise. Returns (float64 [H, W], the scan settings drawn, with ``scan_seed``)."""
    img, p = _stem_scan(np.clip(_image(clean), 0, None), _rng(seed))
    keys = ("jitter_px", "jitter_correlation", "drift_px_per_line", "flyback_amplitude_px",
            "flyback_decay_px", "nonlinearity", "scan_seed")
    return img, {k: p[k] for k in keys}


def acquire(clean, modality: str, counts_per_px: float, seed: Seed = None, *,
            intensity_range: Sequence[float] | None = None) -> Acquired:
    """A realistic acquisition of ``clean`` [H, W] (>= 0, ~[0, 1]) at ``counts_per_px``.

    ``intensity_range`` (lo, hi): the physical intensities that ``clean``'s 0 and 1 stand for,
    e.g. an HRTEM micrograph's ``params["intensity_range"]`` (vacuum = 1). Then the counts follow
    the physical intensity ``lo + clean * (hi - lo)`` (``counts_per_px`` is the count in a vacuum
    pixel: HRTEM contrast is a modulation on a bright background, not a min-max stretch) and
    ``noisy`` is mapped back to ``clean``'s scale. None: ``clean`` itself is the intensity
    (right for HAADF, whose vacuum is 0).

    ``modality`` ``"stem"`` (or ``"haadf"``): sampled scan distortions (jitter in 70% of images,
    drift 60%, flyback 50%, non-linearity 30%) then a scintillator + photomultiplier detector
    (gain CV 0.2–0.8, read noise ≤ 0.5 counts). ``"tem"`` (or ``"hrtem"``): an integrating
    camera (read noise 0.3–3 counts, gain CV ≤ 0.5, Gaussian MTF ≤ 0.8 px, correlated noise)
    or a counting camera (pure Poisson), dark counts ≤ 0.3/px, X-ray hits (Poisson, mean ≤ 3
    per image), dead pixels/columns and hot pixels. Deterministic for a given ``seed``.

    Returns :class:`Acquired`: ``noisy`` float32 = (ADU - offset) / (gain * counts_per_px),
    and ``params`` (modality, counts_per_px and every sampled setting).
    """
    if modality not in _ALIASES:
        raise ValueError(f"modality must be 'stem' or 'tem' (or 'haadf' / 'hrtem'), got {modality!r}")
    mod = _ALIASES[modality]
    img = _image(clean)
    lo, scale = 0.0, 1.0
    if intensity_range is not None:
        lo, hi = (float(v) for v in intensity_range)
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi):
            raise ValueError(f"intensity_range must be (lo, hi) with 0 <= lo < hi, got {intensity_range}")
        scale = hi - lo
        img = lo + img * scale
    img = np.clip(img, 0, None)
    cpp = _positive(counts_per_px, "counts_per_px", "counts/px")
    rng = _rng(seed)
    if mod == "stem":
        img, p = _stem_scan(img, rng)
        adu = detect(img, cpp, gain=p["gain"], offset=p["offset"], read_noise=p["read_noise"],
                     gain_cv=p["gain_cv"], seed=rng)
        noisy = (adu - p["offset"]) / (p["gain"] * cpp)
    else:
        p = _tem_settings(rng)
        # shot noise, then the camera's point spread (which correlates the noise), then read-out
        counts = detect(img, cpp, gain_cv=p["gain_cv"], dark_counts=p["dark_counts"], seed=rng)
        if p["mtf_sigma_px"] > 0:
            counts = gaussian_mtf(counts, p["mtf_sigma_px"])
        if p["read_noise"] > 0:
            counts = counts + rng.normal(0.0, p["read_noise"], counts.shape)
        noisy = counts / cpp
        if p["xray_hits"]:
            noisy = xray_hits(noisy, p["xray_hits"], p["xray_value"], seed=rng)
        if p["dead_fraction"] or p["dead_columns"]:
            noisy[defect_pixel_mask(noisy.shape, p["dead_fraction"], rng, p["dead_columns"])] = 0.0
        if p["hot_fraction"]:
            noisy[defect_pixel_mask(noisy.shape, p["hot_fraction"], rng)] = p["hot_value"]
    noisy = (noisy - lo) / scale
    params = {"modality": mod, "counts_per_px": cpp, "intensity_range": [lo, lo + scale], **p}
    return Acquired(noisy.astype(np.float32), params)


def acquired_noise_level(clean, params: dict) -> np.ndarray:
    """:func:`noise_level_map` in ``clean``'s units for the settings in an :class:`Acquired`'s
    ``params`` (shot, gain, dark and read noise, and its ``intensity_range``; ignores the camera
    MTF's noise correlation and defects)."""
    lo, hi = params.get("intensity_range", (0.0, 1.0))
    phys = lo + np.clip(_image(clean), 0, None) * (hi - lo)
    std = noise_level_map(phys, params["counts_per_px"], read_noise=params["read_noise"],
                          gain_cv=params["gain_cv"], dark_counts=params["dark_counts"])
    return (std / (hi - lo)).astype(np.float32)
