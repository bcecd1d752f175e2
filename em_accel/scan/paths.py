"""Sparse scan paths: Archimedes spiral, jittered gridlike, uniform grid, random and raster.

Every generator takes an image shape (H, W) in pixels and a target coverage (the fraction of
pixels probed) and returns a :class:`ScanPath`: probe positions in scan order, (row, col) in
pixels as float32, where pixel (i, j) is the square [i, i+1) x [j, j+1). Coverage is measured
as the number of distinct pixels that hold a probe divided by H*W (``ScanPath.coverage``).

Thesis settings (J. M. Ede, ch. 4; arXiv:1905.13667 and arXiv:1910.10467):

* spiral: r = k*theta with turn spacing 2*pi*k = 1/coverage px, from the image centre out to the
  corners. The thesis drew this as a 1-px polyline; here probes sit every ``step`` px of arc
  length. With ``calibrate`` (default) the turn spacing is then rescaled until the achieved
  coverage is within ``tolerance`` (relative) of the target.
* gridlike: horizontal random walks in channels of width w = (2 + sqrt(4 - 16 f)) / (2 f), plus
  an independent vertical set; per column a momentum step (beta = 0.5, amplitude a) or a reset
  to a*(-1 + N(0,1)), each with probability 1/2, reflected at +-(w-1)/2; each column step is
  split into ceil(5a) sub-steps whose dwell is the arc-length factor sqrt(1 + dy^2)/steps.
  Calibrated by rescaling w, then (when the channel count quantises the coverage too
  coarsely) the jitter amplitude within [a/4, 4a].
* grid (DLSS): one probe every d = int(sqrt(1/coverage)) px from offset (H mod d) // 2; its
  coverage is quantised to about 1/d^2 and not calibrated.
* random: round(coverage*H*W) distinct pixels, visited in raster order (exact coverage).
* raster: round(coverage*H) evenly spaced full rows, serpentine by default.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

PATH_KINDS = ("spiral", "gridlike", "grid", "random", "raster")


@dataclass(frozen=True)
class ScanPath:
    """Probe positions of one scan, in scan order."""

    positions: torch.Tensor       # [P, 2] float32 (row, col) [px]
    shape: tuple[int, int]        # (H, W) of the image [px]
    kind: str                     # one of PATH_KINDS
    target_coverage: float        # requested fraction of pixels probed
    dwell: torch.Tensor | None = None  # [P] float32 relative dwell per probe (None: uniform)

    @property
    def coverage(self) -> float:
        """Achieved coverage: distinct probed pixels / (H*W)."""
        return achieved_coverage(self.positions, self.shape)

    def __len__(self) -> int:
        return int(self.positions.shape[0])


def achieved_coverage(positions: torch.Tensor, shape: tuple[int, int]) -> float:
    """Fraction of the H*W pixels that hold at least one probe of positions [P, 2] (row, col)."""
    H, W = shape
    pos = torch.as_tensor(positions)
    inside = ((pos[:, 0] >= 0) & (pos[:, 0] < H) & (pos[:, 1] >= 0) & (pos[:, 1] < W))
    pix = pos[inside].floor().long()
    return float(torch.unique(pix[:, 0] * W + pix[:, 1]).numel()) / float(H * W)


def _check(shape: tuple[int, int], coverage: float) -> tuple[int, int]:
    if len(shape) != 2 or int(shape[0]) <= 0 or int(shape[1]) <= 0:
        raise ValueError(f"shape must be (H, W) with H, W > 0, got {tuple(shape)}")
    if not (isinstance(coverage, (int, float)) and 0.0 < coverage <= 1.0):
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    return int(shape[0]), int(shape[1])


def _inside(pts: np.ndarray, H: int, W: int) -> np.ndarray:
    return (pts[:, 0] >= 0) & (pts[:, 0] < H) & (pts[:, 1] >= 0) & (pts[:, 1] < W)


def _calibrated(make, target: float, shape: tuple[int, int], x0: float, tolerance: float,
                iterations: int = 12):
    """Rescale the spacing parameter x (coverage roughly proportional to 1/x) until the achieved
    coverage is within ``tolerance`` of ``target``; returns the closest path found."""
    best, best_err, x = None, math.inf, x0
    for _ in range(iterations):
        pts, extra = make(x)
        got = achieved_coverage(torch.from_numpy(pts), shape)
        err = abs(got / target - 1.0)
        if err < best_err:
            best, best_err = (pts, extra), err
        if err <= tolerance:
            break
        x *= got / target if got > 0 else 0.5
    return best


def _spiral_points(H: int, W: int, pitch: float, step: float) -> np.ndarray:
    """Archimedes spiral r = k*theta, 2*pi*k = pitch [px], probes every `step` px of arc."""
    k = pitch / (2 * math.pi)
    radius = 0.5 * math.hypot(H, W)
    theta_max = radius / k
    arc = lambda t: 0.5 * k * (t * np.sqrt(1 + t * t) + np.arcsinh(t))  # noqa: E731
    length = float(arc(theta_max))
    n = int(length // step) + 1
    grid = np.linspace(0.0, theta_max, max(20000, 8 * n))
    theta = np.interp(np.arange(n) * step, arc(grid), grid)
    # Newton polish of s(theta) = j*step (ds/dtheta = k*sqrt(1 + theta^2)).
    for _ in range(2):
        theta -= (arc(theta) - np.arange(n) * step) / (k * np.sqrt(1 + theta * theta))
    r = k * theta
    pts = np.stack([0.5 * H + r * np.sin(theta), 0.5 * W + r * np.cos(theta)], axis=1)
    return pts[_inside(pts, H, W)]


def spiral(shape: tuple[int, int], coverage: float, *, step: float = 1.0, calibrate: bool = True,
           tolerance: float = 0.02) -> ScanPath:
    """Archimedes spiral from the image centre outwards (thesis ch. 4).

    Args:
        shape: (H, W) [px]. coverage: target fraction of pixels probed, in (0, 1].
        step: probe spacing along the spiral [px of arc length].
        calibrate: rescale the turn spacing (initially 1/coverage px, the thesis's k = 1/(2 pi c))
            until the achieved coverage is within ``tolerance`` (relative) of the target.
    """
    H, W = _check(shape, coverage)
    if not step > 0:
        raise ValueError(f"step must be > 0 px, got {step}")
    make = lambda pitch: (_spiral_points(H, W, pitch, step), None)  # noqa: E731
    if calibrate:
        pts, _ = _calibrated(make, coverage, (H, W), 1.0 / coverage, tolerance)
    else:
        pts, _ = make(1.0 / coverage)
    return ScanPath(torch.from_numpy(pts.astype(np.float32)), (H, W), "spiral", float(coverage))


def _walks(length: int, across: int, width: float, amplitude: float, rng: np.random.Generator
           ) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal jittered walks in channels of `width` px over an image `across` px tall and
    `length` px long. Returns positions [N, 2] (row, col) in serpentine order and dwell [N]."""
    beta, half = 0.5, max((width - 1.0) / 2.0, 0.0)
    offset = rng.uniform(0.0, min(width, float(across)))
    centres = np.arange(-1, int(math.ceil(across / width)) + 1) * width + offset
    n = len(centres)
    y = np.zeros((length + 1, n))
    cur, mom = np.zeros(n), np.zeros(n)
    for x in range(length + 1):
        y[x] = cur
        step = rng.random(n) < 0.5
        mom = np.where(step, beta * mom + (1 - beta) * amplitude * (1 + rng.standard_normal(n)), mom)
        cur = np.where(step, cur + mom, amplitude * (-1 + rng.standard_normal(n)))
        for _ in range(4):  # reflect at +-half, reversing the momentum
            over, under = cur > half, cur < -half
            cur = np.where(over, 2 * half - cur, np.where(under, -2 * half - cur, cur))
            mom = np.where(over | under, -mom, mom)
        cur = np.clip(cur, -half, half)
    steps = max(1, int(math.ceil(5 * amplitude)))
    frac = (np.arange(steps) + 0.5) / steps                       # sub-step positions in a column
    y1, y2 = y[:-1], y[1:]                                         # [length, n]
    rows = centres[None, None, :] + y1[:, None, :] + frac[None, :, None] * (y2 - y1)[:, None, :]
    cols = np.broadcast_to(np.arange(length)[:, None, None] + frac[None, :, None], rows.shape)
    dwell = np.broadcast_to((np.sqrt(1 + (y2 - y1) ** 2) / steps)[:, None, :], rows.shape)
    # [length*steps, n] -> per channel, serpentine (odd channels right to left).
    rows, cols, dwell = (a.reshape(length * steps, n) for a in (rows, cols, dwell))
    pos, dw = [], []
    for c in range(n):
        order = slice(None) if c % 2 == 0 else slice(None, None, -1)
        pos.append(np.stack([rows[order, c], cols[order, c]], axis=1))
        dw.append(dwell[order, c])
    pos, dw = np.concatenate(pos), np.concatenate(dw)
    keep = _inside(pos, across, length)
    return pos[keep], dw[keep]


def gridlike(shape: tuple[int, int], coverage: float, *, amplitude: float = 1.0, seed: int = 0,
             calibrate: bool = True, tolerance: float = 0.03) -> ScanPath:
    """Jittered gridlike path: horizontal then vertical random walks (thesis ch. 4).

    Args:
        shape: (H, W) [px]. coverage: target fraction of pixels probed, in (0, 1].
        amplitude: jitter amplitude a [px] (thesis: 1).
        seed: seed of the walks (numpy PCG64).
        calibrate: rescale the channel width (initially the thesis's w(f = coverage)) until the
            achieved coverage is within ``tolerance`` of the target.

    The tolerance is met when each direction holds several channels (coverage * min(H, W)
    of about 8 or more); sparser paths on small images are quantised by the channel count
    and report their achieved coverage.

    Returns a ScanPath whose dwell is each probe's arc-length weight (sums to about the path
    length in px).
    """
    H, W = _check(shape, coverage)
    if not amplitude > 0:
        raise ValueError(f"amplitude must be > 0 px, got {amplitude}")
    f = coverage
    w0 = (2 + math.sqrt(4 - 16 * f)) / (2 * f) if f <= 0.25 else 2.0 / f

    def make(width: float, amp: float = amplitude):
        rng = np.random.default_rng(seed)
        width = max(width, 1.0)
        ph, dh = _walks(W, H, width, amp, rng)
        pv, dv = _walks(H, W, width, amp, rng)
        return np.concatenate([ph, pv[:, ::-1]]), np.concatenate([dh, dv])

    if not calibrate:
        pts, dwell = make(w0)
    else:
        # Coarse: the channel width (coverage ~ 1/w, but quantised by the channel count). Fine:
        # the jitter amplitude within [a/4, 4a] (coverage grows with the vertical wiggle).
        best = {}

        def by_width(w):
            out = make(w)
            best["w"] = w
            return out

        pts, dwell = _calibrated(by_width, coverage, (H, W), w0, tolerance, iterations=6)
        got = achieved_coverage(torch.from_numpy(pts), (H, W))
        if abs(got / coverage - 1) > tolerance:
            w = best["w"]
            amp_of = lambda x: float(np.clip(amplitude / x, amplitude / 4, 4 * amplitude))  # noqa: E731
            pts, dwell = _calibrated(lambda x: make(w, amp_of(x)), coverage, (H, W), 1.0,
                                     tolerance, iterations=8)
    return ScanPath(torch.from_numpy(np.ascontiguousarray(pts, dtype=np.float32)), (H, W),
                    "gridlike", float(coverage), torch.from_numpy(dwell.astype(np.float32)))


def grid(shape: tuple[int, int], coverage: float) -> ScanPath:
    """Uniformly spaced grid (DLSS): a probe at the centre of every d-th pixel in each axis,
    d = int(sqrt(1/coverage)), starting at (H mod d)//2, (W mod d)//2; raster order."""
    H, W = _check(shape, coverage)
    d = max(1, int(math.sqrt(1.0 / coverage)))
    rows = torch.arange((H % d) // 2, H, d, dtype=torch.float32) + 0.5
    cols = torch.arange((W % d) // 2, W, d, dtype=torch.float32) + 0.5
    pos = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)
    return ScanPath(pos.contiguous(), (H, W), "grid", float(coverage))


def random(shape: tuple[int, int], coverage: float, *, seed: int = 0) -> ScanPath:
    """round(coverage*H*W) distinct pixels drawn uniformly, probed at their centres in raster
    order."""
    H, W = _check(shape, coverage)
    n = max(1, round(coverage * H * W))
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(H * W, generator=g)[:n].sort().values
    pos = torch.stack([flat // W, flat % W], dim=1).to(torch.float32) + 0.5
    return ScanPath(pos, (H, W), "random", float(coverage))


def raster(shape: tuple[int, int], coverage: float = 1.0, *, serpentine: bool = True) -> ScanPath:
    """round(coverage*H) evenly spaced full rows, row k at floor((k + 1/2) H / n); odd rows
    reversed when ``serpentine``. Probes at pixel centres."""
    H, W = _check(shape, coverage)
    n = max(1, round(coverage * H))
    rows = [math.floor((k + 0.5) * H / n) for k in range(n)]
    out = []
    for k, r in enumerate(rows):
        cols = torch.arange(W, dtype=torch.float32)
        if serpentine and k % 2 == 1:
            cols = cols.flip(0)
        out.append(torch.stack([torch.full_like(cols, float(r)), cols], dim=1) + 0.5)
    return ScanPath(torch.cat(out).contiguous(), (H, W), "raster", float(coverage))


def make_path(kind: str, shape: tuple[int, int], coverage: float, *, seed: int = 0) -> ScanPath:
    """The generator named ``kind`` (one of PATH_KINDS) with its defaults."""
    if kind == "spiral":
        return spiral(shape, coverage)
    if kind == "gridlike":
        return gridlike(shape, coverage, seed=seed)
    if kind == "grid":
        return grid(shape, coverage)
    if kind == "random":
        return random(shape, coverage, seed=seed)
    if kind == "raster":
        return raster(shape, coverage)
    raise ValueError(f"kind must be one of {PATH_KINDS}, got {kind!r}")
