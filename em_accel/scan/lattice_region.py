"""Where in an image a fitted lattice beats another completion: crystals beside vacuum,
amorphous support or another grain.

:func:`em_accel.scan.lattice.fit_lattice` describes the whole image by one periodic lattice.
Many micrographs hold a crystal in part of the field only; there a whole-image fit explains
too little of the variance to be trusted anywhere, yet inside the crystal it is still far
better than any interpolation of a sparse scan. :func:`lattice_region` finds that part:

1. the fit's error is measured locally: its squared residuals at the samples (scaled up by
   n / (n - p) for the p coefficients fitted to n samples, white noise taken out) are averaged
   under a Gaussian window as wide as the gaps between samples (a split into tiles that
   predict each other leaves too few samples per coefficient in a small region: measured,
   it lost most regions a window found);
2. the region is where that local error is at most ``ratio`` of the other completion's
   predicted local error (a network's calibrated mean |error|);
3. the coefficients are refitted on the region's samples only (vacuum or an amorphous film
   no longer pulls the lattice's amplitudes and background), and 1-2 repeat (:data:`REFITS`).

The completion is the lattice in the region and the other completion outside it, blended
over the window's width (the region's edge is known only to within the gaps of the scan).

When the whole-image fit explains too little to start from or its region is small,
:func:`window_fits` looks for lattices in halves and quadrants of the image and the best one's
basis is lifted to the whole image; where its region still leaves part of the image, another
window's lattice (a second grain or crystal) may complete a second region
(:func:`lattice_regions`). Where the whole image's periodic peaks explain too little of its
variance for a fit at all, a crystal may still fill part of it (a step in intensity to vacuum
or a film is no periodic peak): then the quadrants are searched. Measured in docs/complete.md
("Part of an image a crystal", "Crystals the whole-image peaks miss").
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .lattice import (NYQUIST_MAX, OVERSHOOT_MAX, LatticeFit, _design, _solve,
                      blas_on_one_thread, fit_lattice)

#: Variance a whole-image fit (signal R² on all samples) must explain to seed a region.
REGION_R2_MIN = 0.5
#: A window's fit must explain this much of its signal variance, on all of the window's samples
#: and on its held-out tiles, to seed a region (chosen on held-out simulated scans).
WINDOW_R2_MIN = 0.8
#: A whole-image region covering at least this fraction of the image skips the window search.
WHOLE_ENOUGH = 0.9
#: Rounds of refitting the coefficients on the region's samples (each judged on the residuals
#: of the previous round's fit).
REFITS = 2
#: The region must hold at least this fraction of the samples.
MIN_SAMPLE_SHARE = 0.1
#: A second region (another window's lattice: a second grain or crystal) must add at least
#: this fraction of the image to the first's (chosen on the eight held-out sets' spiral scans).
EXTRA_REGION_MIN = 0.1
#: Best-scoring windows tried for the second region.
EXTRA_TRIES = 4


@dataclass(frozen=True)
class LatticeRegion:
    """The part of an image a lattice describes better than another completion.

    Attributes:
        fit: the lattice, its coefficients refitted on the region's samples.
        weight: [H, W] in [0, 1], the lattice's share of the blended completion.
        error: [H, W] the lattice's local mean |error| against the samples (shot noise
            included; see :func:`lattice_region`) [values' units].
        source: "whole" (the whole-image fit) or "window" (a half or quadrant's fit).
    """

    fit: LatticeFit
    weight: np.ndarray
    error: np.ndarray
    source: str

    @property
    def share(self) -> float:
        """Fraction of the image the lattice completes (mean of :attr:`weight`)."""
        return float(self.weight.mean())


def sample_gap(mask: np.ndarray) -> float:
    """The 90th percentile of the distance from a pixel to its nearest sample [px]: the scale
    over which the samples say nothing about a region's edge."""
    from .interpolate import sample_distance

    # From the mask's cached triangulation, which the network's inputs were made with.
    return float(np.quantile(sample_distance(mask).numpy(), 0.9))


def _window_sigma(mask: np.ndarray) -> float:
    """The Gaussian window [px] over which local errors and spreads are averaged: as wide as
    the gaps between samples (:func:`sample_gap`), at least 16 px."""
    return max(16.0, sample_gap(mask))


def _window_mean(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-window mean [H, W] of ``values`` weighted by ``weight`` (normalised
    convolution, so image edges and unsampled pixels only lower the weight). Computed on
    blocks of about sigma / 4 px and interpolated back: the window is far wider than a block,
    and a full-resolution filter of width 4 sigma cost 0.1 s per call at 512^2."""
    from scipy.ndimage import gaussian_filter

    H, W = values.shape
    f = max(1, int(sigma / 4))
    Hp, Wp = -(-H // f) * f, -(-W // f) * f

    def blocks(a: np.ndarray) -> np.ndarray:
        """Sums over f x f blocks, as f - 1 strided adds per axis (6x faster at 512^2 than
        a reduction over two interleaved axes)."""
        padded = np.pad(a, ((0, Hp - H), (0, Wp - W))) if (Hp, Wp) != (H, W) else a
        cols = padded.reshape(Hp, Wp // f, f)
        out = cols[:, :, 0].copy()
        for j in range(1, f):
            out += cols[:, :, j]
        rows = out.reshape(Hp // f, f, Wp // f)
        out = rows[:, 0].copy()
        for j in range(1, f):
            out += rows[:, j]
        return out

    w = weight.astype(np.float64)
    num = gaussian_filter(blocks(values * w), sigma / f, mode="constant")
    den = gaussian_filter(blocks(w), sigma / f, mode="constant")
    small = num / np.maximum(den, 1e-12 * max(float(den.max()), 1e-300))
    if f == 1:
        return small[:H, :W]
    # Block centres sit at (i + 1/2) f - 1/2 px: interpolate linearly to every pixel.
    ys = np.clip((np.arange(H) + 0.5) / f - 0.5, 0, small.shape[0] - 1)
    xs = np.clip((np.arange(W) + 0.5) / f - 0.5, 0, small.shape[1] - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1 = np.minimum(y0 + 1, small.shape[0] - 1)
    x1 = np.minimum(x0 + 1, small.shape[1] - 1)
    ty, tx = (ys - y0)[:, None], (xs - x0)[None, :]
    rows = small[:, x0] * (1 - tx) + small[:, x1] * tx         # along x first: [H / f, W]
    return rows[y0] * (1 - ty) + rows[y1] * ty


def local_spread(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[H, W] standard deviation of the sampled ``values`` (where ``mask``) under a Gaussian
    window as wide as the gaps between samples (at least 16 px), in the values' units: how
    much the image varies locally, as far as the samples show."""
    mask = np.asarray(mask, bool)
    v = np.where(mask, np.asarray(values, np.float64), 0.0)
    sigma = _window_sigma(mask)
    mean = _window_mean(v, mask, sigma)
    return np.sqrt(np.maximum(_window_mean(v * v, mask, sigma) - mean ** 2, 0.0))


def lattice_region(values: np.ndarray, mask: np.ndarray, fit: LatticeFit, scale: np.ndarray,
                   *, ratio: float = 0.75, source: str = "whole") -> LatticeRegion | None:
    """The region where ``fit``'s lattice predicts the samples with a local mean |error| at most
    ``ratio`` times ``scale``, the other completion's predicted mean |error| [H, W] (same units
    as ``values``); None if that region holds under :data:`MIN_SAMPLE_SHARE` of the samples.
    Only ``fit``'s basis and harmonics are used; its coefficients are refitted (module
    docstring)."""
    mask = np.asarray(mask, bool)
    H, W = mask.shape
    everywhere = np.ones((H, W))
    pos = np.argwhere(mask).astype(np.float64)
    v = np.asarray(values, np.float64)[mask]
    A = _design(pos, (H, W), fit.basis, fit.harmonics)
    sigma = _window_sigma(mask)
    other = _window_mean(np.asarray(scale, np.float64), everywhere, sigma)
    coef, dof = fit.coef, 1.0    # first the seed fit's own coefficients
    for refit in range(REFITS + 1):
        sq = np.zeros((H, W))
        sq[mask] = (A @ coef - v) ** 2
        ms = _window_mean(sq, mask, sigma) * dof
        # Gaussian errors: mean |e| = sqrt(2 / pi) * RMS. Against the signal, the white noise
        # leaves the mean square (a third of the RMS kept, as LatticeFit.signal_mae).
        signal = math.sqrt(2 / math.pi) * np.sqrt(np.maximum(ms - fit.noise_var, ms / 9))
        good = signal <= ratio * other
        use = good[mask]
        if use.sum() < max(MIN_SAMPLE_SHARE * len(v), 2 * A.shape[1]):
            return None
        coef = _solve(A[use], v[use])
        # Residuals at the samples a fit was fitted to understate its error by p / n in the
        # mean square (p coefficients, n samples).
        dof = use.sum() / (use.sum() - A.shape[1])
    weight = np.clip(_window_mean(good.astype(np.float64), everywhere, sigma), 0.0, 1.0)
    weight[weight < 1e-3] = 0.0
    weight[weight > 1 - 1e-3] = 1.0
    return LatticeRegion(dataclasses.replace(fit, coef=coef), weight,
                         math.sqrt(2 / math.pi) * np.sqrt(ms), source)


def _windows(H: int, W: int) -> list[tuple[slice, slice]]:
    """Halves (top, bottom, left, right) and quadrants of an [H, W] image."""
    h, w = H // 2, W // 2
    out = [(slice(0, h), slice(0, W)), (slice(h, H), slice(0, W)),
           (slice(0, H), slice(0, w)), (slice(0, H), slice(w, W))]
    return out + [(slice(y, y + h), slice(x, x + w)) for y in (0, h) for x in (0, w)]


def _in_two_threads(fn: Callable, items: Sequence) -> list:
    """``[fn(x) for x in items]`` on two threads (numpy/scipy work that releases the GIL), with
    numpy's BLAS on one thread meanwhile: the eight window fits of a 512^2 spiral scan at
    1/17.9 took 1.4 s with two BLAS threads per fit on 2 cores, 0.8 s with one."""
    with blas_on_one_thread(), ThreadPoolExecutor(2) as pool:
        return list(pool.map(fn, items))


def window_fits(values: np.ndarray, mask: np.ndarray, *, seed: int = 0,
                r2_min: float = WINDOW_R2_MIN, noise_var: float | None = None,
                quadrants_only: bool = False) -> list[tuple[tuple[slice, slice], LatticeFit]]:
    """(window, fit) of each half or quadrant of the image (``quadrants_only``: each
    quadrant) whose own lattice fit explains at least ``r2_min`` of its signal variance (on
    all its samples and on its held-out tiles) and is clear of aliasing and overshoot, the
    best first; fitted on the window alone (:func:`lift` carries one over the whole image).
    ``noise_var``: the samples' white-noise variance where known
    (:func:`~em_accel.scan.lattice.fit_lattice`)."""
    mask = np.asarray(mask, bool)
    values = np.asarray(values, np.float64)
    windows = _windows(*mask.shape)[4 if quadrants_only else 0:]
    # The network has finished by now, so nothing else competes for the 2 cores.
    fits = _in_two_threads(lambda win: fit_lattice(values[win], mask[win], seed=seed, refined=1,
                                                   noise_var=noise_var), windows)
    scored = []
    for k, (win, f) in enumerate(zip(windows, fits)):
        if f is None or f.overshoot > OVERSHOOT_MAX or f.nyquist_fraction > NYQUIST_MAX:
            continue
        score = min(f.signal_r2, f.signal_validation_r2)
        if score >= r2_min:
            scored.append((score, k, win, f))
    scored.sort(key=lambda t: (t[0], t[1]), reverse=True)   # ties: the later window
    return [(win, f) for _, _, win, f in scored]


def lift(values: np.ndarray, mask: np.ndarray, window: tuple[slice, slice], fit: LatticeFit
         ) -> LatticeFit:
    """``fit`` (a window's lattice) over the whole image: the same basis and harmonics, the
    coefficients fitted to the window's samples in whole-image coordinates."""
    mask = np.asarray(mask, bool)
    H, W = mask.shape
    inside = np.zeros((H, W), bool)
    inside[window] = True
    pos = np.argwhere(mask & inside).astype(np.float64)
    coef = _solve(_design(pos, (H, W), fit.basis, fit.harmonics),
                  np.asarray(values, np.float64)[mask & inside])
    return dataclasses.replace(fit, coef=coef, shape=(H, W))


def lattice_regions(values: np.ndarray, mask: np.ndarray, scale: np.ndarray,
                    fit: LatticeFit | None, *, ratio: float = 0.75, seed: int = 0,
                    aliased: bool = False, noise_var: float | None = None
                    ) -> list[LatticeRegion]:
    """The regions in which lattices complete the scan, in the order they are blended in
    (each over what came before): none, one or two.

    The first is the larger of the regions of the whole-image ``fit`` and, when that covers
    under :data:`WHOLE_ENOUGH` of the image, of the best window's lattice
    (:func:`window_fits`: halves and quadrants; quadrants only where there is no ``fit``, the
    whole image's periodic peaks explaining too little of its variance). The whole-image fit
    seeds a region if it explains at least :data:`REGION_R2_MIN` of the signal variance,
    clear of aliasing and overshoot.

    A second comes from another window's lattice (a second grain or crystal) where the first
    covers under :data:`WHOLE_ENOUGH`: the first of the next best windows whose region,
    judged against the blend of the first region and ``scale``, adds at least
    :data:`EXTRA_REGION_MIN` of the image (of :data:`EXTRA_TRIES` windows tried).

    ``aliased``: the scan is a regular grid, whose samples cannot tell a lattice from its
    aliases above the grid's Nyquist frequency; then only a fit that
    :meth:`~em_accel.scan.lattice.LatticeFit.accepted` (90% of the variance, also on held-out
    tiles) seeds a region and no windows are searched (measured on eight held-out sets: a
    looser seed or windows on grids lost to the network at 1/50-1/100, by up to 0.8 points
    per set; docs/complete.md).

    ``noise_var``: the samples' white-noise variance where known, for the window fits (the
    whole-image ``fit`` should have been made with it too)."""
    first, used = None, None
    if fit is not None and (fit.accepted() if aliased else
                            fit.signal_r2 >= REGION_R2_MIN and fit.overshoot <= OVERSHOOT_MAX
                            and fit.nyquist_fraction <= NYQUIST_MAX):
        first = lattice_region(values, mask, fit, scale, ratio=ratio)
    if aliased or (first is not None and first.share >= WHOLE_ENOUGH):
        return [] if first is None else [first]
    # No fit: the whole image's 8 strongest peaks explain under half its variance. A crystal
    # filling under about half of the field cannot do more (a sinusoid over the whole image
    # explains a lattice only where it is), so its quadrants are still searched; halves only
    # where the whole image shows periodic peaks (stop 37, twelve held-out spiral sets: on
    # scans without a fit, the first window that gained was a quadrant 48 times in 51, and
    # all eight windows instead of the quadrants changed 2 of 1152 scans).
    found = window_fits(values, mask, seed=seed, noise_var=noise_var,
                        quadrants_only=fit is None)
    if found:
        region = lattice_region(values, mask, lift(values, mask, *found[0]), scale, ratio=ratio,
                                source="window")
        if region is not None and (first is None or region.share > first.share):
            first, used = region, 0
    if first is None:
        return []
    if first.share >= WHOLE_ENOUGH:
        return [first]
    blend = first.weight * first.error + (1 - first.weight) * scale
    for k, (win, f) in enumerate(found[:EXTRA_TRIES]):
        if k == used:
            continue
        extra = lattice_region(values, mask, lift(values, mask, win, f), blend, ratio=ratio,
                               source="window")
        if extra is not None and float((extra.weight * (1 - first.weight)).mean()) \
                >= EXTRA_REGION_MIN:
            return [first, extra]
    return [first]
