"""t-SNE forces from the native kernels: the FIt-SNE interpolation grid and its FFT
convolution (Linderman et al. 2019), and the attractive and repulsive force sums.

The native ops (em_accel.ops.tsne_*) do the per-point work; this module composes them: choose a
grid over the map, spread charges onto it (tsne_interp_spread), convolve them with the squared
Cauchy kernel by FFT, and gather potentials back at the points (tsne_interp_gather).
"""
from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..errors import expect_type
from ..ops._common import COMPLEX_OF
from ..ops.tsne import (tsne_attractive, tsne_interp_gather, tsne_interp_spread,
                        tsne_repulsive_exact)

@dataclass(frozen=True)
class InterpGrid:
    """The FIt-SNE interpolation grid: n_boxes x n_boxes boxes of width ``box_width``
    [embedding units] from (lower_x, lower_y), p nodes per box per dimension."""

    n_boxes: int
    p: int
    lower_x: float
    lower_y: float
    box_width: float

    @property
    def m(self) -> int:
        return self.n_boxes * self.p


def _smooth(n: int) -> bool:
    for f in (2, 3, 5, 7):
        while n % f == 0:
            n //= f
    return n == 1


def bounding_box(y: torch.Tensor) -> tuple[float, float, float, float]:
    """(min x, min y, max x, max y) of y [N, 2] [embedding units]."""
    lo, hi = y.min(0).values.double().cpu(), y.max(0).values.double().cpu()
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def choose_grid(y, p: int = 3, intervals_per_unit: float = 1.0,
                min_intervals: int = 50, max_intervals: int = 1000) -> InterpGrid:
    """The interpolation grid over the bounding square of ``y`` [N, 2] (or of a given bounding
    box (min x, min y, max x, max y)).

    As FIt-SNE: boxes of width about extent / max(min_intervals, extent * intervals_per_unit).
    The width is then rounded down to a ladder of 16 steps per octave and the box count up so
    the FFT size 2 * p * n_boxes has only factors 2, 3, 5, 7: the (m, width) pair then repeats
    across iterations and the kernel's FFT is reused (``kernel_fft`` caches it).
    """
    box = bounding_box(y) if isinstance(y, torch.Tensor) and y.dim() == 2 else [float(v) for v in y]
    lower_x, lower_y = box[0], box[1]
    extent = max(box[2] - box[0], box[3] - box[1], 1e-6) * (1 + 1e-6)
    n = min(max(min_intervals, math.ceil(extent * intervals_per_unit)), max_intervals)
    width = 2.0 ** (math.floor(16 * math.log2(extent / n)) / 16)
    n = max(1, math.ceil(extent / width))
    while not _smooth(2 * p * n):
        n += 1
    return InterpGrid(n, p, lower_x, lower_y, width)


@lru_cache(maxsize=8)
def _offsets(m: int) -> torch.Tensor:
    a = torch.arange(2 * m, dtype=torch.float64)
    a = torch.where(a < m, a, a - 2 * m)
    a[m] = 0.0  # never reaches a valid output; any finite value
    return a


@lru_cache(maxsize=16)
def _kernel_fft_cached(m: int, step: float, dtype: torch.dtype, device: torch.device
                       ) -> torch.Tensor:
    a = (_offsets(m) * step).to(device=device, dtype=dtype)
    r2 = a[:, None] ** 2 + a[None, :] ** 2
    return torch.fft.rfft2((1.0 + r2).reciprocal_().square_())


def kernel_fft(grid: InterpGrid, *, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """rfft2 of the circulant embedding [2m, 2m] of w^2 = (1 + r^2)^-2 between grid nodes."""
    return _kernel_fft_cached(grid.m, grid.box_width / grid.p, dtype, torch.device(device))


_EXECUTOR: ThreadPoolExecutor | None = None


def _executor(threads: int) -> ThreadPoolExecutor:
    global _EXECUTOR
    if _EXECUTOR is None or _EXECUTOR._max_workers != threads - 1:
        _EXECUTOR = ThreadPoolExecutor(max(1, threads - 1), thread_name_prefix="em_accel_fft")
    return _EXECUTOR


def _in_chunks(fn, total: int, parts: int, ex: ThreadPoolExecutor, threads: int) -> None:
    """fn(a, b) over ``parts`` blocks of range(total): the calling thread and threads - 1 pool
    threads take blocks from one queue. The caller waits only for blocks already taken, never
    for a pool thread that has not started (on a loaded machine it may not get a core for
    milliseconds; the caller then does its blocks). A late pool thread finds this call's queue
    empty and returns."""
    blocks = iter([(i * total // parts, (i + 1) * total // parts) for i in range(parts)])
    take = threading.Lock()
    cond = threading.Condition()
    state = {"left": parts, "error": None}

    def worker():
        while True:
            with take:
                block = next(blocks, None)
            if block is None:
                return
            try:
                if block[1] > block[0]:
                    fn(*block)
            except BaseException as e:  # re-raised in the caller
                state["error"] = e
            with cond:
                state["left"] -= 1
                if state["left"] == 0:
                    cond.notify_all()

    for _ in range(threads - 1):
        ex.submit(worker)
    worker()
    with cond:
        cond.wait_for(lambda: state["left"] == 0)
    if state["error"] is not None:
        raise state["error"]


def convolve_grid(charges: torch.Tensor, grid: InterpGrid, kernel_hat: torch.Tensor | None = None,
                  threads: int = 1) -> torch.Tensor:
    """Potentials [3, m, m]: each charge grid convolved with w^2 (zero padded FFT).

    On CPU the 2-D transform is done as 1-D passes, skipping the zero rows of the padded input
    and the unneeded rows of the output (about 2x less work than a padded rfft2/irfft2 pair);
    with ``threads`` > 1 over row and column blocks, each block a single-threaded torch FFT on
    a Python thread (torch releases the GIL). Blocks are taken
    from a queue by the calling thread and threads - 1 pool threads (see _in_chunks), so a
    preempted thread delays only its own block.
    """
    m = grid.m
    if kernel_hat is None:
        kernel_hat = kernel_fft(grid, dtype=charges.dtype, device=charges.device)
    if charges.device.type != "cpu":
        spec = torch.fft.rfft2(charges, s=(2 * m, 2 * m))
        spec.mul_(kernel_hat)
        return torch.fft.irfft2(spec, s=(2 * m, 2 * m))[:, :m, :m].contiguous()
    threads = max(1, int(threads))
    ex = _executor(threads) if threads > 1 else None
    parts = 4 * threads if threads > 1 else 1
    k = charges.shape[0]
    cdt = COMPLEX_OF[charges.dtype]
    kt = _transposed(kernel_hat)  # [m + 1, 2m]: (x frequency, y frequency)
    a = torch.empty(k, m + 1, m, dtype=cdt)  # x frequency, y
    d = torch.empty(k, m, m + 1, dtype=cdt)  # y, x frequency
    out = torch.empty(k, m, m, dtype=charges.dtype)

    def rows_forward(r0, r1):  # rfft along x of grid rows r0:r1 (the m nonzero ones)
        a[:, :, r0:r1] = torch.fft.rfft(charges[:, r0:r1], n=2 * m, dim=-1).transpose(1, 2)

    def columns(c0, c1):  # along y: fft (zero padded to 2m), kernel, ifft, first m rows
        blk = torch.fft.fft(a[:, c0:c1], n=2 * m, dim=-1)
        blk.mul_(kt[c0:c1])
        d[:, :, c0:c1] = torch.fft.ifft(blk, dim=-1)[..., :m].transpose(1, 2)

    def rows_inverse(r0, r1):
        out[:, r0:r1] = torch.fft.irfft(d[:, r0:r1], n=2 * m, dim=-1)[..., :m]

    _in_chunks(rows_forward, m, parts, ex, threads)
    _in_chunks(columns, m + 1, parts, ex, threads)
    _in_chunks(rows_inverse, m, parts, ex, threads)
    return out


_TRANSPOSED: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def _transposed(kernel_hat: torch.Tensor) -> torch.Tensor:
    hit = _TRANSPOSED.get(id(kernel_hat))
    if hit is None or hit[0] is not kernel_hat:
        if len(_TRANSPOSED) > 16:
            _TRANSPOSED.clear()
        hit = (kernel_hat, kernel_hat.T.contiguous())
        _TRANSPOSED[id(kernel_hat)] = hit
    return hit[1]


def attractive_forces(y: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor,
                      values: torch.Tensor, want_kl: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_j p_ij w_ij (y_i - y_j) [N, 2] and sum_j p_ij ln w_ij [N] over P in CSR form."""
    return tsne_attractive(y, indptr, indices, values, want_kl)


def repulsive_forces(y: torch.Tensor, method: str = "exact", p: int = 3,
                     intervals_per_unit: float = 1.0, min_intervals: int = 50,
                     ) -> tuple[torch.Tensor, float]:
    """Repulsive force sum_j w_ij^2 (y_i - y_j) (not divided by Z) [N, 2] and Z.

    ``method='exact'``: tiled O(N^2); ``'fft'``: FIt-SNE interpolation with ``p`` nodes per
    box and ``intervals_per_unit`` boxes per embedding unit (at least ``min_intervals``).
    """
    expect_type("y", y, torch.Tensor)
    if y.dim() != 2 or y.shape[1] != 2 or y.shape[0] == 0:
        raise ValueError(f"y must be a non-empty embedding of shape [N, 2], got {list(y.shape)}")
    if method == "fft" and not bool(torch.isfinite(y).all()):
        raise ValueError("y must be finite for the FFT method (its grid spans the points)")
    if method == "exact":
        force, zrow = tsne_repulsive_exact(y)
        return force, float(zrow.sum())
    if method != "fft":
        raise ValueError(f"method must be 'exact' or 'fft', got {method!r}")
    grid = choose_grid(y, p, intervals_per_unit, min_intervals)
    args = (grid.n_boxes, grid.p, grid.lower_x, grid.lower_y, grid.box_width)
    pot = convolve_grid(tsne_interp_spread(y, *args), grid)
    force, zrow = tsne_interp_gather(y, pot, *args)
    return force, float(zrow.sum())
