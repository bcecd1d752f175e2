"""Lattice prior for sparse scans of crystals: a periodic image fitted to the samples.

A crystal imaged along a zone axis is, up to a slowly varying background, a sum of a few
Fourier components on a 2-D reciprocal lattice. A sparse scan of many unit cells samples every
part of the unit cell somewhere, so the periodic image can be fitted to the samples by least
squares even where the scan leaves gaps far wider than the lattice spacing (a spiral at 1/87
coverage leaves about 87 px between its arms; an atomic column spacing is often 10-40 px). No
interpolator, network included, can recover the columns inside such a gap; the fitted lattice
can.

:func:`fit_lattice` finds the lattice from the samples alone:

1. peaks by CLEAN: the strongest bin of the zero-filled samples' spectrum, refined to the
   samples' periodogram maximum and folded to its shortest alias, is fitted as a sinusoid and
   subtracted before the next is sought (the scan pattern's copies of a peak go with it); a
   scan whose 8 peaks explain under half its signal variance (white noise taken out) has no
   crystal to find;
2. candidate bases (peaks, half the strongest two, differences of the strongest five) are
   ranked by the peak power they index; the best pairs are fitted with all harmonics up to
   each of :data:`CUTS` on the samples outside randomly chosen validation tiles and scored
   on the samples inside them (spatial hold-out: a wrong or overfitted lattice fails to
   predict whole tiles);
3. the best pair's vectors are refined by nonlinear least squares (where the best is not
   accepted, the next two bases' vectors too, on their lowest harmonics, and the held-out
   tiles choose again); the final fit uses every sample.

Where in the image the fit beats another completion of the same scan is decided by
:mod:`em_accel.scan.lattice_region` (used by :func:`em_accel.models.completion.complete_scan`,
``prior="auto"``).
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import math
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .interpolate import mask_key

#: Harmonic cut-offs tried [cycles/px]: the sharper the atoms, the higher the useful one.
CUTS = (0.06, 0.09, 0.13, 0.18, 0.25, 0.35)
#: A crystal's 8 strongest Fourier peaks carry most of its samples' signal variance (at least
#: 80% in every noise-free scan accepted on the held-out sets); below this share no lattice is
#: searched for.
MIN_PEAK_SHARE = 0.5
#: Candidate bases (ranked by the spectral peaks they index) fitted and scored per scan.
PAIRS = 8
#: Bases refined by nonlinear least squares where the best one is not yet accepted.
REFINED = 3
#: Samples a runner-up's refinement uses (the best's: all of the search's subset).
RUNNER_UP_SAMPLES = 500
#: Candidates whose held-out error is within this factor of the best count as ties, and the
#: one with the fewest components wins (a supercell fits as well as the true cell, with more
#: components).
TIE = 1.01
#: Variance a fit must explain, on all samples and on the held-out tiles, to be accepted
#: (:meth:`LatticeFit.accepted`; chosen on held-out simulated scans: every fit above it beat
#: the network or tied; since stop 32 the rule for regular grids, see
#: :mod:`em_accel.scan.lattice_region` and docs/complete.md).
R2_MIN = 0.9
#: On a regular grid a lattice above the grid's Nyquist frequency folds onto one below it that
#: fits the samples exactly as well; a fit whose shortest reciprocal vector lies within 25% of
#: Nyquist is too likely such an alias to be used (on held-out grids, most fits above this
#: lost to the network, nearly all below it won; docs/complete.md).
NYQUIST_MAX = 0.75
#: Mask spectrum peaks (relative to zero frequency) that mark a regular grid and parallel
#: lines, for :func:`infer_path_kind`.
GRID_PEAK = 0.9
LINES_PEAK = 0.33
#: A fit that leaves the sampled range by more than this fraction of it between the samples
#: is ill-conditioned there (nearly aliased harmonics cancelling at the samples).
OVERSHOOT_MAX = 0.1
#: Reciprocal cells within this factor of each other are the same cell when candidate pairs
#: are ranked (a supercell's differs by at least 2).
CELL_TIE = 1.25

_ALIASES: OrderedDict[tuple, np.ndarray] = OrderedDict()   # _aliases' cache, by mask


@contextlib.contextmanager
def blas_on_one_thread() -> Iterator[None]:
    """numpy's and scipy's BLAS on one thread inside the block (where threadpoolctl is
    installed). The lattice fits' matrix products are small: on 2 cores a second BLAS thread
    gains nothing (measured: a 512^2 fit 0.17 s either way), and after each call it keeps
    spinning for a while, which slowed the completion network run next by about 0.06 s."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


@dataclass(frozen=True)
class LatticeFit:
    """A periodic image fitted to sparse samples.

    Attributes:
        basis: [2, 2] reciprocal basis vectors, rows (f_row, f_col) [cycles/px].
        harmonics: [M, 2] integer (h, k) of the fitted components h * b1 + k * b2.
        coef: [6 + 2M] background (1, y, x, y², xy, x² over the image) then cosine and sine
            coefficients, in the values' units.
        shape: (H, W) of the image [px].
        validation_rms: RMS error of the fit on the held-out validation tiles [values' units].
        validation_mae: mean absolute error there [values' units].
        validation_r2: fraction of the held-out samples' variance the fit predicts.
        r2: fraction of the samples' variance the final fit explains.
        nyquist_fraction: the shortest reciprocal vectors' position relative to the scan's
            Nyquist frequency (regular grids; 0 for spirals): near 1, the lattice may be an
            alias of a finer one the grid cannot tell from it.
        overshoot: how far the fitted image leaves the sampled range between the samples, as a
            fraction of that range (an ill-conditioned fit oscillates there).
        noise_var: variance of the white (shot) noise in the samples, estimated from the
            residuals at adjacent samples (0 without enough adjacent pairs, e.g. on grids),
            at least the variance given to :func:`fit_lattice` where known (the dose).
        sample_var, validation_var: variance of all samples and of the held-out ones.
    """

    basis: np.ndarray
    harmonics: np.ndarray
    coef: np.ndarray
    shape: tuple[int, int]
    validation_rms: float
    validation_mae: float
    validation_r2: float
    r2: float
    nyquist_fraction: float = 0.0
    overshoot: float = 0.0
    noise_var: float = 0.0
    sample_var: float = 0.0
    validation_var: float = 0.0

    def accepted(self, r2_min: float = R2_MIN) -> bool:
        """Whether the scan shows a crystal this fit describes: the fit explains at least
        ``r2_min`` of the signal variance of the samples and of the held-out tiles' samples
        (:attr:`signal_r2`, :attr:`signal_validation_r2`: shot noise is no fault of the fit),
        its lattice is clear of the scan's Nyquist frequency (:data:`NYQUIST_MAX`) and it
        stays near the sampled range between samples (:data:`OVERSHOOT_MAX`)."""
        return (self.signal_r2 >= r2_min and self.signal_validation_r2 >= r2_min
                and self.nyquist_fraction <= NYQUIST_MAX and self.overshoot <= OVERSHOOT_MAX)

    def _signal(self, r2: float, var: float) -> float:
        # R² of the noise-free signal: the noise variance leaves the residual and the total.
        if self.noise_var <= 0 or var <= self.noise_var:
            return r2
        return 1.0 - ((1.0 - r2) * var - self.noise_var) / (var - self.noise_var)

    @property
    def cell_area(self) -> float:
        """Area of the fitted lattice's (primitive) unit cell [px²]: 1 / |det(basis)|."""
        return 1.0 / abs(float(np.linalg.det(self.basis)))

    @property
    def signal_r2(self) -> float:
        """:attr:`r2` with the estimated white noise (:attr:`noise_var`) taken out."""
        return self._signal(self.r2, self.sample_var)

    @property
    def signal_validation_r2(self) -> float:
        """:attr:`validation_r2` with the estimated white noise taken out."""
        return self._signal(self.validation_r2, self.validation_var)

    @property
    def signal_mae(self) -> float:
        """Mean |error| on the held-out tiles against the noise-free signal (estimated: the
        measured one scaled by the signal's share of the RMS error)."""
        mse = self.validation_rms ** 2
        if self.noise_var <= 0 or mse <= 0:
            return self.validation_mae
        # The noise estimate can exceed the residual by a few %; keep a third of the RMS.
        return self.validation_mae * math.sqrt(max(mse - self.noise_var, mse / 9) / mse)

    @property
    def periods(self) -> np.ndarray:
        """Real-space lattice vectors [2, 2] (rows (dy, dx) [px]), dual to :attr:`basis`."""
        return np.linalg.inv(self.basis).T

    def render(self) -> np.ndarray:
        """The fitted image [H, W] (float64, the values' units)."""
        H, W = self.shape
        return _render_grid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64),
                            self.shape, self.basis, self.harmonics, self.coef)


def _background(pos: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    y = pos[:, 0] * (2.0 / shape[0]) - 1.0
    x = pos[:, 1] * (2.0 / shape[1]) - 1.0
    return np.stack([np.ones_like(y), y, x, y * y, x * y, x * x], 1)


def _design(pos: np.ndarray, shape: tuple[int, int], basis: np.ndarray,
            harmonics: np.ndarray) -> np.ndarray:
    """[N, 6 + 2M]: background columns, then cos and sin of each harmonic's phase. The
    phasors are products of integer powers of the two basis phasors (cheaper than N*M
    cosines and sines), built power by power along contiguous rows (4x faster than by
    columns of an [N, powers] array)."""
    hk = harmonics.astype(np.int64)
    n, m = len(pos), len(hk)
    z = np.exp((2j * np.pi) * (pos @ basis.T)).T                  # [2, N] basis phasors
    ext = int(np.abs(hk).max()) if m else 0
    powers = np.ones((2, 2 * ext + 1, n), np.complex128)          # [axis, power + ext, N]
    for e in range(1, ext + 1):
        np.multiply(powers[:, ext + e - 1], z, out=powers[:, ext + e])
    powers[:, :ext] = np.conj(powers[:, -1:ext:-1])
    cols = powers[0, hk[:, 0] + ext] * powers[1, hk[:, 1] + ext]   # [M, N]
    out = np.empty((n, 6 + 2 * m))
    out[:, :6] = _background(pos, shape)
    out[:, 6:6 + m] = cols.real.T
    out[:, 6 + m:] = cols.imag.T
    return out


def _render_grid(ys: np.ndarray, xs: np.ndarray, shape: tuple[int, int], basis: np.ndarray,
                 harmonics: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``_design(pos) @ coef`` on the grid ``ys`` x ``xs`` [len(ys), len(xs)]: every column of
    the design separates into a row factor times a column factor, so the image is a rank
    (3 + M) matrix product instead of an [H W, 6 + 2M] design (about 30x faster at 512^2)."""
    m = len(harmonics)
    f = harmonics.astype(np.float64) @ basis                                # [M, 2]
    # cos and sine coefficients (a, b) of each harmonic: a cos(p) + b sin(p) = Re((a - ib) e^ip).
    amp = coef[6:6 + m] - 1j * coef[6 + m:6 + 2 * m]
    ey = np.exp((2j * np.pi) * np.outer(ys, f[:, 0])) * amp                   # [H, M]
    ex = np.exp((2j * np.pi) * np.outer(xs, f[:, 1]))                         # [W, M]
    y = ys * (2.0 / shape[0]) - 1.0
    x = xs * (2.0 / shape[1]) - 1.0
    # Background 1, y, x, y^2, xy, x^2 as (1, y, y^2) C (1, x, x^2)^T.
    c = coef[:6]
    C = np.array([[c[0], c[2], c[5]], [c[1], c[4], 0.0], [c[3], 0.0, 0.0]])
    by = np.stack([np.ones_like(y), y, y * y], 1)
    bx = np.stack([np.ones_like(x), x, x * x], 1)
    return (ey @ ex.T).real + by @ C @ bx.T


def _solve(A: np.ndarray, v: np.ndarray, ridge: float = 1e-6) -> np.ndarray:
    """Least squares with a small ridge (relative to the mean column power): near-aliased
    components of a sparse pattern stay bounded instead of blowing up."""
    return _solve_normal(A.T @ A, A.T @ v, ridge)


def _solve_normal(AtA: np.ndarray, Atv: np.ndarray, ridge: float = 1e-6) -> np.ndarray:
    """:func:`_solve` from the normal equations (overwrites ``AtA``'s diagonal): fits on
    subsets of one design's columns index its A^T A instead of recomputing it."""
    AtA[np.diag_indices_from(AtA)] += ridge * float(np.trace(AtA)) / len(AtA) + 1e-12
    return np.linalg.solve(AtA, Atv)


class _BasisFit:
    """The samples' residual after the linear fit (background and harmonics) as a function of
    the basis [2, 2] (raveled), and its Jacobian, for refining the basis by least squares.

    The Jacobian is the variable-projection one (Golub and Pereyra): for r = A c - v with
    c = (A^T A)^-1 A^T v, dr = P dA c - A (A^T A)^-1 dA^T r, P the projection off the design's
    columns. Both terms are products with the design already built for the residual at the same
    basis, where a finite-difference Jacobian builds four more designs."""

    def __init__(self, pos: np.ndarray, v: np.ndarray, shape: tuple[int, int],
                 harmonics: np.ndarray) -> None:
        self.pos, self.v, self.shape, self.hk = pos, v, shape, harmonics
        self._at: np.ndarray | None = None

    def _fit(self, flat: np.ndarray) -> None:
        if self._at is not None and np.array_equal(flat, self._at):
            return
        A = _design(self.pos, self.shape, flat.reshape(2, 2), self.hk)
        AtA = A.T @ A
        self.coef = _solve_normal(AtA, A.T @ self.v)      # AtA now holds the ridge
        self.A, self.AtA, self._at = A, AtA, flat.copy()

    def residual(self, flat: np.ndarray) -> np.ndarray:
        self._fit(flat)
        return self.A @ self.coef - self.v

    def jacobian(self, flat: np.ndarray) -> np.ndarray:
        self._fit(flat)
        A, c, hk, m = self.A, self.coef, self.hk, len(self.hk)
        cos, sin = A[:, 6:6 + m], A[:, 6 + m:]
        # phase_m(x) = 2 pi x . (h_m B): d phase_m / d B[q, j] = 2 pi h_mq x_j, so the cos and
        # sin columns move by -sin and +cos times that. Parameters in basis.ravel() order.
        g = (2 * np.pi) * (cos @ (c[6 + m:, None] * hk) - sin @ (c[6:6 + m, None] * hk))  # [N, 2]
        dAc = (g[:, :, None] * self.pos[:, None, :]).reshape(len(A), 4)
        xr = self.pos * (A @ c - self.v)[:, None]                                    # [N, 2]
        sx, cx = sin.T @ xr, cos.T @ xr                                               # [M, 2]
        dAr = np.zeros((A.shape[1], 4))
        dAr[6:6 + m] = -(2 * np.pi) * (hk[:, :, None] * sx[:, None, :]).reshape(m, 4)
        dAr[6 + m:] = (2 * np.pi) * (hk[:, :, None] * cx[:, None, :]).reshape(m, 4)
        return dAc - A @ np.linalg.solve(self.AtA, A.T @ dAc + dAr)


def _mask_spectrum(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(|rfft2| of the mask, zero-padded 2x, over its zero-frequency value [2H, W + 1]; row
    and column frequencies [cycles/px])."""
    H, W = mask.shape
    M = np.abs(np.fft.rfft2(mask.astype(np.float64), (2 * H, 2 * W))) / max(float(mask.sum()),
                                                                            1.0)
    return M, np.fft.fftfreq(2 * H), np.fft.rfftfreq(2 * W)


def infer_path_kind(mask: np.ndarray) -> str:
    """The scan path kind a mask of unknown origin samples like, from its spectrum's strongest
    peak at >= 0.02 cycles/px relative to its zero-frequency value: "grid" (>= 0.9: a regular
    grid replicates the spectrum at every multiple of 1/d), "gridlike" (>= 0.33: parallel
    lines; measured 0.45-0.66) or "spiral" (below: spirals measured 0.09-0.24, and random or
    other scattered sampling, which does not alias either). Used by ``prior="auto"`` to decide
    whether a lattice fit can be trusted on a mask given without its kind."""
    M, fy, fx = _mask_spectrum(np.asarray(mask, bool))
    far = np.hypot(fy[:, None], fx[None, :]) >= 0.02
    peak = float(M[far].max()) if far.any() else 0.0
    if peak >= GRID_PEAK:
        return "grid"
    return "gridlike" if peak >= LINES_PEAK else "spiral"


def _aliases(mask: np.ndarray, strength: float = 0.6, lowest: float = 0.05) -> np.ndarray:
    """[K, 2] frequency shifts [cycles/px] under which the scan cannot tell two frequencies
    apart: local maxima of the mask's spectrum (zero-padded 2x, so a peak between bins keeps
    at least 90% of its height) of at least ``strength`` of its zero-frequency value and at
    least ``lowest`` from zero. A regular grid of step d <= 20 px has d^2 - 1 of them (every
    multiple of 1/d); spirals have none, and the slow line-to-line period of a jittered
    gridlike path is below ``lowest`` (it blurs frequencies along the lines' normal, it does
    not replicate them). Cached per mask (a scan path is reused from frame to frame; its
    spectrum costs as much as two of the lattice search's peak transforms)."""
    key = (mask_key(mask), strength, lowest)
    if key in _ALIASES:
        _ALIASES.move_to_end(key)
        return _ALIASES[key]
    out = _local_peaks(mask, strength, lowest)
    out.setflags(write=False)
    _ALIASES[key] = out
    if len(_ALIASES) > 16:
        _ALIASES.popitem(last=False)
    return out


def _local_peaks(mask: np.ndarray, strength: float, lowest: float) -> np.ndarray:
    """:func:`_aliases`, uncached."""
    M, fy, fx = _mask_spectrum(mask)
    r, c = np.nonzero(M >= strength)
    keep = np.hypot(fy[r], fx[c]) >= lowest
    r, c = r[keep], c[keep]
    if not len(r):
        return np.zeros((0, 2))
    # local maxima among the 8 neighbours (rows wrap; columns are clipped at the half plane)
    centre = M[r, c]
    ok = np.ones(len(r), bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr or dc:
                ok &= centre >= M[(r + dr) % M.shape[0], np.clip(c + dc, 0, M.shape[1] - 1)]
    half = np.stack([fy[r[ok]], fx[c[ok]]], 1)
    return np.concatenate([half, -half[half[:, 1] > 0]])


def _fold(f: np.ndarray, aliases: np.ndarray) -> np.ndarray:
    """The shortest frequency the scan cannot tell from each of ``f`` ([2] or [N, 2]; natural
    images carry more power at low frequencies, so it is the likelier one)."""
    f = np.array(f, np.float64, ndmin=2)
    if len(aliases):
        shifts = np.concatenate([np.zeros((1, 2)), aliases, -aliases])
        for _ in range(16):
            moved = f[:, None, :] + shifts[None]                      # [N, 1 + 2K, 2]
            best = np.argmin(np.linalg.norm(moved, axis=2), axis=1)
            if not best.any():
                break
            f = moved[np.arange(len(f)), best]
    return f


def _identifiable(hk: np.ndarray, basis: np.ndarray, aliases: np.ndarray, tol: float,
                  limit: int | None = None) -> np.ndarray:
    """The lowest ``limit`` harmonics (all if None), in order of frequency, dropping each that
    the scan aliases onto a lower one (or its negative) or onto the background: its column
    would duplicate another and the fit could not tell them apart. Two frequencies alias when
    their shortest aliases (:func:`_fold`) coincide."""
    f = hk @ basis
    order = np.argsort(np.linalg.norm(f, axis=1), kind="stable")
    if not len(aliases) or not len(hk):
        return hk[order[:limit]]
    r = _fold(f[order], aliases)
    clash = np.minimum(np.linalg.norm(r[:, None] - r[None], axis=2),
                       np.linalg.norm(r[:, None] + r[None], axis=2)) <= tol
    kept: list[int] = []
    for i in range(len(r)):
        if limit is not None and len(kept) >= limit:
            break
        if np.linalg.norm(r[i]) > tol and not clash[i, kept].any():
            kept.append(i)
    return hk[order[kept]]


def _harmonics(basis: np.ndarray, fmax: float) -> np.ndarray:
    """Half-plane integer (h, k) with 0 < |h b1 + k b2| <= fmax (one of each +-pair)."""
    short = min(np.linalg.norm(basis[0]), np.linalg.norm(basis[1]))
    sin = abs(np.linalg.det(basis)) / (np.linalg.norm(basis[0]) * np.linalg.norm(basis[1]))
    ext = int(math.ceil(fmax / (short * sin))) + 1
    h = np.arange(-ext, ext + 1)
    hk = np.stack(np.meshgrid(h, h, indexing="ij"), -1).reshape(-1, 2).astype(np.float64)
    hk = hk[(hk[:, 0] > 0) | ((hk[:, 0] == 0) & (hk[:, 1] > 0))]
    f = np.linalg.norm(hk @ basis, axis=1)
    return hk[(f > 0) & (f <= fmax * (1 + 1e-9))]


@functools.lru_cache(maxsize=8)
def _spectrum_bins(shape: tuple[int, int], fmin: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row frequencies [2H, 1], column frequencies [1, W + 1] [cycles/px], bool mask [2H, W + 1]
    of the bins :func:`_strongest_peak` may pick: |f| >= fmin, one half plane, below
    Nyquist) of the 2x zero-padded real spectrum of an [H, W] image. Cached (read-only): one
    shape's bins cost as much as a fifth of its FFT."""
    H, W = shape
    fy = np.fft.fftfreq(2 * H)[:, None]
    fx = np.fft.rfftfreq(2 * W)[None, :]
    allowed = (np.hypot(fy, fx) >= fmin) & ~((fx == 0) & (fy < 0)) & (fy > -0.5 + 1e-12)
    for a in (fy, fx, allowed):
        a.setflags(write=False)
    return fy, fx, allowed


def _strongest_peak(image: np.ndarray, bins: tuple[np.ndarray, np.ndarray, np.ndarray]
                    ) -> np.ndarray | None:
    """The frequency [cycles/px] of the largest |FFT|^2 among the allowed ``bins``
    (:func:`_spectrum_bins`), zero-padded 2x (a peak between bins keeps at least 81% of its
    power, so a weaker neighbour does not outrank it); :func:`_refine_peak` then places it
    between bins."""
    from scipy import fft

    H, W = image.shape
    fy, fx, allowed = bins
    # Single precision: the peak only has to outrank its neighbours (2x faster than float64).
    # Rows first, then columns: the same values as rfft2 padded to (2H, 2W), without
    # transforming the H rows of padding (2x faster).
    rows = fft.rfft((image - image.mean()).astype(np.float32), 2 * W, axis=1, workers=-1)
    spec = fft.fft(rows, 2 * H, axis=0, workers=-1)
    P = np.square(spec.real)
    P += np.square(spec.imag)
    P *= allowed                      # in place: |c|^2 where allowed, else 0
    i = int(np.argmax(P))
    if P.flat[i] <= 0:
        return None
    r, c = np.unravel_index(i, P.shape)
    return np.array([fy[r, 0], fx[0, c]])


def _refine_peak(f: np.ndarray, pos: np.ndarray, v: np.ndarray, step: float,
                 levels: int = 3) -> np.ndarray:
    """Move a spectral peak found on the FFT grid to the maximum of the samples' periodogram
    |sum v exp(-2 pi i f.x)|^2 within one bin, on successively finer 5x5 grids (a harmonic h
    of a peak off by one bin drifts h bins over the image, too far to fit). The 5x5 trial
    phasors factor into row and column powers of one half-step phasor each."""
    offsets = np.linspace(-1.0, 1.0, 5)
    for _ in range(levels):
        w = v * np.exp((-2j * np.pi) * (pos @ f))
        q = np.exp((-1j * np.pi * step) * pos)                  # [N, 2]: half a step per axis
        qi = np.conj(q)
        # e[:, axis, j] = q^(2 offsets[j]) = exp(-2 pi i step offsets[j] pos[axis]).
        e = np.stack([qi * qi, qi, np.ones_like(q), q, q * q], 2)
        power = np.abs((e[:, 0, :] * w[:, None]).T @ e[:, 1, :]) ** 2     # [5, 5]
        j, k = np.unravel_index(int(np.argmax(power)), power.shape)
        f = f + step * np.array([offsets[j], offsets[k]])
        step /= 2.5
    return f


def _candidates(values: np.ndarray, mask: np.ndarray, fmin: float, aliases: np.ndarray,
                n_peaks: int = 8, noise_var: float | None = None
                ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, float]:
    """(candidate basis vectors, peaks [P, 2] [cycles/px], their powers [P], the fraction of
    the samples' signal variance (white noise taken out) the peaks' sinusoids explain); no
    candidates or peaks where the search stopped early, the fraction unable to reach
    :data:`MIN_PEAK_SHARE`.

    Peaks are extracted one at a time (CLEAN): the strongest bin of the zero-filled samples'
    spectrum, moved to the samples' periodogram maximum and folded to its shortest
    alias, is fitted as a sinusoid and subtracted from the samples before the next is found.
    Subtracting removes the copies the scan pattern makes of each peak (a spiral's ring around
    it, a grid's replicas), which would otherwise crowd out weaker lattice peaks. Candidates:
    the peaks, half of the strongest two (a weak fundamental under a strong second harmonic)
    and differences of the strongest five (a primitive vector can be weaker than its sums)."""
    H, W = mask.shape
    pos = np.argwhere(mask).astype(np.float64)
    rest = values[mask] - values[mask].mean()
    if len(pos) > 4000:   # enough samples to place a peak; keeps this step cheap
        keep = np.random.default_rng(0).choice(len(pos), 4000, replace=False)
        pos, rest = pos[keep], rest[keep]
    rows, cols = pos[:, 0].astype(np.int64), pos[:, 1].astype(np.int64)
    step = 0.5 / min(H, W)                        # the padded spectrum's bin
    near = 0.25 / max(H, W)
    bins = _spectrum_bins((H, W), fmin)
    # White noise (an upper bound from adjacent raw samples, at least the given variance)
    # leaves both the residual and the total of the share explained.
    white = max(_white_noise_var(values[mask], mask), noise_var or 0.0)
    total = float(np.var(values[mask]))
    peaks: list[np.ndarray] = []
    power: list[float] = []
    share = 0.0
    for k in range(n_peaks):
        image = np.zeros((H, W))
        image[rows, cols] = rest
        found = _strongest_peak(image, bins)
        if found is None:
            break
        f = _fold(_refine_peak(found, pos, rest, step), aliases)[0]
        phase = (2 * np.pi) * (pos @ f)
        A = np.stack([np.cos(phase), np.sin(phase)], 1)
        c = _solve(A, rest)
        rest = rest - A @ c
        if np.linalg.norm(f) >= fmin and all(min(np.linalg.norm(f - g), np.linalg.norm(f + g))
                                             > near for g in peaks):
            peaks.append(f)
            power.append(float(c @ c))
        # Early exit for scans without a crystal: the peaks come out strongest first, so the
        # rest cannot add more than the last one did for each; with a 2x margin, the share
        # cannot reach MIN_PEAK_SHARE (on 864 peak searches of held-out scans and their
        # windows it never did; half of the FFTs of scans without a crystal are saved).
        last, share = share, _explained(total, float(rest.var()), white)
        if k >= 1 and share + 2 * (n_peaks - 1 - k) * max(share - last, 0.0) < MIN_PEAK_SHARE:
            return [], np.zeros((0, 2)), np.zeros(0), share
    extra = [f / 2 for f in peaks[:2]]
    extra += [_fold(a - b, aliases)[0] for a, b in itertools.combinations(peaks[:5], 2)]
    cands = list(peaks)
    for f in extra:
        if np.linalg.norm(f) >= fmin and all(min(np.linalg.norm(f - g), np.linalg.norm(f + g))
                                             > near for g in cands):
            cands.append(f)
    return cands, np.array(peaks).reshape(-1, 2), np.array(power), share


def _explained(total: float, rest: float, white: float) -> float:
    """Share of the samples' signal variance (``total`` less white noise) that the peaks
    subtracted so far explain, their residual variance being ``rest``; the white-noise
    variance ``white`` is capped at 0.9 of the residual's."""
    noise = min(white, 0.9 * rest)
    return 1.0 - (rest - noise) / max(total - noise, 1e-30)


def _ranked_pairs(cands: list[np.ndarray], peaks: np.ndarray, power: np.ndarray, tol: float,
                  keep: int) -> list[np.ndarray]:
    """The ``keep`` candidate bases that index the most peak power (each peak within ``tol``
    of a lattice point h b1 + k b2, |h|, |k| <= 6); ties go to the larger reciprocal cell (the
    smaller real-space cell: a supercell indexes everything its cell does).

    A weak peak a fraction of a bin off a strong one, left by subtracting the strong one's
    sinusoid, pairs into slightly larger cells that index the same peaks and can fill every
    place. So the pair of the strongest peaks among those of the best share whose cell is
    within :data:`CELL_TIE` of the largest (a supercell's is at least 2x smaller) is added
    where it did not make the list."""
    own = [float(power[np.linalg.norm(peaks - f, axis=1) < 1e-12].sum()) if len(peaks) else 0.0
           for f in cands]
    if len(cands) < 2:
        return []
    # Every pair at once (the same values as pair by pair: batched det and inv are the same
    # LAPACK calls; 8x faster than a loop over the ~190 pairs of 20 candidates).
    first, second = np.triu_indices(len(cands), 1)             # itertools.combinations' order
    vecs = np.asarray(cands, np.float64)
    bases = np.stack([vecs[first], vecs[second]], 1)            # [P, 2, 2]
    det = np.linalg.det(bases)
    lengths = np.array([np.linalg.norm(f) for f in cands])
    use = np.flatnonzero(~(np.abs(det) / (lengths[first] * lengths[second]) < 0.2))
    bases, det = bases[use], det[use]
    hk = np.round(peaks[None] @ np.linalg.inv(bases))            # [P, peaks, 2]
    ok = (np.linalg.norm(peaks[None] - hk @ bases, axis=2) < tol) & (np.abs(hk).max(2) <= 6)
    total = power.sum()
    scored = []
    for k, p in enumerate(use):
        scored.append((round(float(power[ok[k]].sum() / total), 2), abs(float(det[k])),
                       own[first[p]] + own[second[p]], k, bases[k]))
    if not scored:
        return []
    scored.sort(key=lambda t: (-t[0], -t[1]))
    share, largest = scored[0][:2]
    strongest = max((t for t in scored if t[0] == share and t[1] * CELL_TIE >= largest),
                    key=lambda t: (t[2], t[1]))
    ranked = scored[:keep]
    if all(t[3] != strongest[3] for t in ranked):
        ranked.append(strongest)
    return [t[4] for t in ranked]


def _split(mask: np.ndarray, tile: int, fraction: float, rng: np.random.Generator
           ) -> np.ndarray:
    """Bool [H, W]: the sampled pixels inside randomly chosen validation tiles."""
    H, W = mask.shape
    ny, nx = -(-H // tile), -(-W // tile)
    chosen = rng.random((ny, nx)) < fraction
    if not chosen.any():
        chosen.flat[rng.integers(chosen.size)] = True
    held = np.kron(chosen, np.ones((tile, tile), bool))[:H, :W]
    return held & mask


def _refine_options(tried: list[tuple], floor: float, var_h: float, refined: int
                    ) -> list[tuple[float, int, np.ndarray, float]]:
    """The (held-out RMS, components, basis, cut-off) entries of ``tried`` whose bases are
    refined: the best (the fewest components within :data:`TIE` of the lowest error
    ``floor``), and where that one does not yet explain :data:`R2_MIN` of the held-out
    variance ``var_h``, the best cut-off of each of the next ``refined - 1`` bases by
    error (an imprecise candidate vector, e.g. a difference of two peaks, scores badly
    until refined)."""
    def best(entries: list[tuple]) -> tuple:
        low = min(t[0] for t in entries)
        return min((t for t in entries if t[0] <= TIE * low), key=lambda t: t[1])

    out = [best(tried)]
    if refined <= 1 or 1.0 - floor ** 2 / var_h >= R2_MIN:
        return out
    for t in sorted(tried, key=lambda t: t[0]):
        if len(out) >= refined:
            break
        if all(t[2] is not o[2] for o in out):
            out.append(best([u for u in tried if u[2] is t[2]]))
    return out


def fit_lattice(values: np.ndarray, mask: np.ndarray, *, seed: int = 0,
                validation_fraction: float = 0.2, tile: int | None = None,
                max_samples: int = 1500, fmax: float = 0.35, refined: int = REFINED,
                noise_var: float | None = None) -> LatticeFit | None:
    """Fit a periodic image (a 2-D lattice of Fourier components over a quadratic background)
    to the sampled ``values`` where ``mask`` is True.

    Args:
        values: [H, W] sampled values (any units; only those under ``mask`` are read).
        mask: [H, W] bool, True where sampled.
        seed: draws the validation tiles and the sample subset used for the search.
        validation_fraction: fraction of tiles held out to score candidate lattices.
        tile: validation tile size [px] (default: 1.5x the mean gap between samples, at least
            32 px).
        max_samples: samples used per candidate during the search (the final fit uses all).
        fmax: highest spatial frequency fitted [cycles/px] (0.5 is Nyquist).
        refined: bases refined where the best is not accepted (1: only the best; the window
            search uses 1, its eight fits would double in cost).
        noise_var: variance of the white (shot) noise in the samples where it is known, e.g.
            from the dose [values' units squared]: a floor under the noise the fit estimates
            from its residuals at adjacent samples (that estimate also holds the misfit
            between neighbours, and the acceptance rules were chosen with it; replacing it by
            the true noise lost the lattice on 8 of 192 noisy spiral scans). A regular grid
            has no adjacent samples, and there structure finer than the grid looks like white
            noise (measured: an amorphous surface layer passed as noise and an aliased
            lattice was accepted), so on grids the noise counts only where given.

    Returns:
        The best :class:`LatticeFit`, or None when the scan has too few samples to hold out
        tiles, its 8 strongest peaks explain under :data:`MIN_PEAK_SHARE` of its variance (no
        crystal) or no two non-collinear candidate peaks exist.
    """
    from scipy.optimize import least_squares

    if noise_var is not None and not (math.isfinite(noise_var) and noise_var >= 0):
        raise ValueError(f"noise_var must be a finite variance >= 0, got {noise_var}")
    mask = np.asarray(mask, bool)
    values = np.asarray(values, np.float64)
    H, W = mask.shape
    n = int(mask.sum())
    if n < 64:
        return None
    held = held_out_tiles(mask, seed=seed, validation_fraction=validation_fraction, tile=tile)
    train = mask & ~held
    rng = np.random.default_rng([seed, 1])
    if held.sum() < 16 or train.sum() < 64:
        return None
    pos_t, v_t = np.argwhere(train).astype(np.float64), values[train]
    pos_h, v_h = np.argwhere(held).astype(np.float64), values[held]
    pos_s, v_s = _subsample(pos_t, v_t, max_samples, rng)
    pos_hs, v_hs = _subsample(pos_h, v_h, max_samples, rng)
    aliases = _aliases(mask)
    cands, peaks, power, explained = _candidates(values, mask, 2.5 / min(H, W), aliases,
                                                 noise_var=noise_var)
    if explained < MIN_PEAK_SHARE:
        return None
    tol = 1.0 / min(H, W)

    def score(basis: np.ndarray, hk: np.ndarray, pos, v, pos_v, v_v) -> float:
        c = _solve(_design(pos, (H, W), basis, hk), v)
        return float(np.sqrt(np.mean((_design(pos_v, (H, W), basis, hk) @ c - v_v) ** 2)))

    most = (len(v_s) // 6 - 6) // 2        # components a search fit may have
    tried: list[tuple[float, int, np.ndarray, float]] = []
    for basis in _ranked_pairs(cands, peaks, power, 1.5 / min(H, W), PAIRS):
        cuts = [c for c in CUTS if c <= fmax] or [fmax]
        # Frequencies up to which about `most` harmonics fit (half plane: pi r^2 / 2 per cell).
        reach = 1.5 * math.sqrt(2 * most * abs(np.linalg.det(basis)) / math.pi)
        hk_all = _identifiable(_harmonics(basis, min(cuts[-1], reach)), basis, aliases, tol,
                               most)
        f = np.linalg.norm(hk_all @ basis, axis=1)
        if not len(hk_all):
            continue
        # One design per pair; each cut-off is a subset of its columns (and of its A^T A).
        A_s, A_h = (_design(p, (H, W), basis, hk_all) for p in (pos_s, pos_hs))
        G, g = A_s.T @ A_s, A_s.T @ v_s
        for cut in cuts:
            sel = np.flatnonzero(f <= cut * (1 + 1e-9))
            if not len(sel) or (len(sel) == len(hk_all) and f[-1] < cut and cut != cuts[0]
                                and f[-1] <= cuts[cuts.index(cut) - 1]):
                continue                   # empty, or the same columns as the last cut-off
            cols = np.concatenate([np.arange(6), 6 + sel, 6 + len(hk_all) + sel])
            c = _solve_normal(G[np.ix_(cols, cols)], g[cols])
            s = float(np.sqrt(np.mean((A_h[:, cols] @ c - v_hs) ** 2)))
            tried.append((s, len(sel), basis, min(cut, float(f[sel[-1]]))))
    if not tried:
        return None
    floor = min(t[0] for t in tried)
    var_h = max(float(v_hs.var()), 1e-30)
    options = _refine_options(tried, floor, var_h, refined)
    chosen = None
    for k, (_, _, basis, cut) in enumerate(options):
        hk = _identifiable(_harmonics(basis, cut), basis, aliases, tol)
        # A runner-up's vectors are refined on its lowest harmonics only (they place the
        # vectors; all of them made the search several times dearer on partial crystals).
        hk_fit = hk if k == 0 else hk[np.linalg.norm(hk @ basis, axis=1) <= CUTS[0] * (1 + 1e-9)]
        n_fit = len(v_s) if k == 0 else RUNNER_UP_SAMPLES    # pos_s is a random subset
        fit = _BasisFit(pos_s[:n_fit], v_s[:n_fit], (H, W), hk_fit)
        # Refining the best only pays where it may be accepted (it takes about half the time);
        # the runners-up are refined because the best was not good enough.
        if k == 0 and 1.0 - floor ** 2 / var_h > R2_MIN - 0.2:
            moved = least_squares(fit.residual, basis.ravel(), jac=fit.jacobian,
                                  x_scale=1e-4, max_nfev=20).x.reshape(2, 2)
            if (score(moved, hk, pos_s, v_s, pos_hs, v_hs)
                    <= score(basis, hk, pos_s, v_s, pos_hs, v_hs)):
                basis = moved
        elif k > 0 and len(hk_fit):       # kept only if it then beats the others on held-out
            basis = least_squares(fit.residual, basis.ravel(), jac=fit.jacobian,
                                  x_scale=1e-4, max_nfev=20).x.reshape(2, 2)
        if len(options) == 1:
            chosen = (0.0, basis, hk)
            break
        held = score(basis, hk, pos_s, v_s, pos_hs, v_hs)
        if chosen is None or held < chosen[0]:
            chosen = (held, basis, hk)
    _, basis, hk = chosen
    pos, v = np.argwhere(mask).astype(np.float64), values[mask]
    A = _design(pos, (H, W), basis, hk)       # rows in mask order; train and held are subsets
    in_train = train[mask]
    err = A[~in_train] @ _solve(A[in_train], v_t) - v_h
    coef = _solve(A, v)
    resid = A @ coef - v
    noise = max(_white_noise_var(resid, mask), noise_var or 0.0)
    r2 = 1.0 - float(np.mean(resid ** 2) / max(v.var(), 1e-30))
    val_r2 = 1.0 - float(np.mean(err ** 2) / max(v_h.var(), 1e-30))
    # Between the samples: how far a coarse rendering leaves the sampled range.
    rendered = _render_grid(np.arange(0, H, 4.0), np.arange(0, W, 4.0), (H, W), basis, hk,
                            coef)
    lo, hi = float(v.min()), float(v.max())
    overshoot = max(float(rendered.max()) - hi, lo - float(rendered.min()), 0.0) / max(hi - lo,
                                                                                       1e-30)
    return LatticeFit(basis, hk, coef, (H, W), float(np.sqrt(np.mean(err ** 2))),
                      float(np.mean(np.abs(err))), val_r2, r2,
                      _nyquist_fraction(basis, aliases), overshoot, noise, float(v.var()),
                      float(v_h.var()))


def _white_noise_var(resid: np.ndarray, mask: np.ndarray, min_pairs: int = 200) -> float:
    """Variance of the white (shot) noise in the samples, from the fit's residuals at
    horizontally or vertically adjacent samples: half the mean squared difference. A misfit
    varies over atomic distances (a few px) and nearly cancels between neighbours; white
    noise does not. 0 where fewer than ``min_pairs`` adjacent pairs exist (regular grids)."""
    R = np.zeros(mask.shape)
    R[mask] = resid
    d = [(R[:, 1:] - R[:, :-1])[mask[:, 1:] & mask[:, :-1]],
         (R[1:, :] - R[:-1, :])[mask[1:, :] & mask[:-1, :]]]
    d = np.concatenate(d)
    return 0.5 * float(np.mean(d ** 2)) if len(d) >= min_pairs else 0.0


def _reduced(basis: np.ndarray) -> np.ndarray:
    """The Lagrange-Gauss reduced basis of the same 2-D lattice (its two shortest vectors)."""
    b1, b2 = basis[0].astype(np.float64), basis[1].astype(np.float64)
    for _ in range(64):
        if b2 @ b2 < b1 @ b1:
            b1, b2 = b2, b1
        mu = round(float(b1 @ b2) / float(b1 @ b1))
        if mu == 0:
            break
        b2 = b2 - mu * b1
    return np.stack([b1, b2])


def _nyquist_fraction(basis: np.ndarray, aliases: np.ndarray) -> float:
    """Where the lattice's shortest reciprocal vectors sit relative to the scan's Nyquist
    frequency along each alias shift delta (|b.delta| / (|delta|^2 / 2); a grid of step d:
    2 d max |b_row|, |b_col|). 0 for scans without aliases (spirals)."""
    if not len(aliases):
        return 0.0
    proj = np.abs(_reduced(basis) @ aliases.T)                    # [2, K]
    return float((2 * proj / np.sum(aliases ** 2, axis=1)).max())


def _subsample(pos: np.ndarray, v: np.ndarray, n: int, rng: np.random.Generator):
    if len(v) <= n:
        return pos, v
    pick = rng.choice(len(v), n, replace=False)
    return pos[pick], v[pick]


def held_out_tiles(mask: np.ndarray, *, seed: int = 0, validation_fraction: float = 0.2,
                   tile: int | None = None) -> np.ndarray:
    """The validation samples :func:`fit_lattice` holds out for the same arguments (bool
    [H, W]), so that another completion can be scored on the same tiles."""
    mask = np.asarray(mask, bool)
    H, W = mask.shape
    n = int(mask.sum())
    rng = np.random.default_rng(seed)
    tile = tile or max(32, int(round(1.5 / math.sqrt(max(n, 1) / (H * W)))))
    return _split(mask, tile, validation_fraction, rng)
