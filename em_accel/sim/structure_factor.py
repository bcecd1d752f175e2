"""The exact structure-factor spectrum of each slice, by the cheapest of three evaluations.

All three compute the same sum (``method="exact"`` of :class:`em_accel.sim.Potential`), on the
rfft2 half grid of an nx x ny periodic cell of extent lx x ly [Å]:

    V_m(k) = sum_s ff_s(k) S_ms(k),   S_ms(k) = sum_{j in slice m, species s} exp(-2 pi i k.r_j)

with k = (fftfreq(nx, lx/nx), rfftfreq(ny, ly/ny)) [1/Å]. They differ only in cost and rounding:

- ``"direct"``: the native kernel ``em_accel::ms_structure_factor`` (separable phase tables and
  a vectorised multiply-add over atoms); the CUDA path.
- ``"gemm"``: the phase factor is separable, exp(-2 pi i (kx x + ky y)) = ex(kx) ey(ky), so per
  species ``S = Ex^T Ey`` with ``Ex`` [atoms, nx] and ``Ey`` [atoms, nyh]: a matrix product
  (BLAS through torch.matmul). ex(-kx) = conj(ex(kx)) halves it to one real GEMM over
  kx >= 0: 4 nx nyh atoms flops, at ~100 GFLOP/s per core.
- ``"nufft"``: a type-1 non-uniform FFT (Dutt & Rokhlin 1993; Greengard & Lee, SIAM Rev. 46,
  443 (2004)): each atom's unit weight is spread with a Gaussian over 14 x 14 nodes of a grid
  oversampled 2x per axis, that grid is rfft2'd, the nx x nyh frequencies are cut out and
  divided by the Gaussian's transform. Cost O(S (2nx)(2ny) log + 196 atoms) instead of
  O(atoms nx ny); the approximation error is below float32 rounding (measured <= 3e-7 of the
  per-atom magnitude, python_tests/test_sim_structure_factor.py).

``"auto"`` (the default) keeps "direct" on CUDA and on CPU picks gemm or nufft per slice by a
cost model measured on the reference 2-vCPU EPYC (docs/multislice.md, Performance); float64
always takes gemm (the NUFFT is accurate to float32 only).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..ops import multislice as ops
from ..ops._common import COMPLEX_OF
from . import fft

METHODS = ("auto", "direct", "gemm", "nufft")

# NUFFT: oversampling 2, Gaussian spread over 2 * _HALF nodes per axis with variance 2 tau
# (grid units). tau = half / (4 pi sqrt(1 - 1/R)) balances truncation against aliasing.
_OVERSAMPLE = 2
_HALF = 7
_TAU = _HALF / (4 * math.pi * math.sqrt(1 - 1 / _OVERSAMPLE))

# cost model [s] on one core of the reference CPU: GEMM flops, FFT (N log2 N), spreading
_GEMM_S_PER_FLOP = 1.0e-11
_FFT_S_PER_NLOGN = 1.2e-10
_SPREAD_S_PER_NODE = 1.0e-8


def _half_freqs(n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer frequencies of the full (fftfreq) and half (rfftfreq) axis, float64."""
    full = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64, device=device).round()
    return full, torch.arange(n // 2 + 1, dtype=torch.float64, device=device)


def _phase_table(u: torch.Tensor, f: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """exp(-2 pi i f u) [atoms, len(f)] for fractional coordinates u [atoms] (float64); the product
    is reduced mod 1 in float64 before rounding to the output precision."""
    t = u[:, None] * f[None, :]
    t -= torch.floor(t)
    if dtype == torch.float32:
        return ops.transmission(t.to(torch.float32), -2 * math.pi)  # native float32 exp(i x)
    return torch.polar(torch.ones_like(t), t * (-2 * math.pi))


def _runs(species: np.ndarray, a0: int, a1: int) -> list[tuple[int, int, int]]:
    """(species, start, stop) of each run of equal species among atoms a0..a1-1."""
    if a1 <= a0:
        return []
    s = species[a0:a1]
    cut = np.flatnonzero(np.diff(s)) + 1
    starts = np.concatenate([[0], cut])
    stops = np.concatenate([cut, [len(s)]])
    return [(int(s[b]), a0 + int(b), a0 + int(e)) for b, e in zip(starts, stops)]


def grid_size(n: int) -> int:
    """Oversampled NUFFT grid size for an n-point axis (>= 2n, FFT-friendly)."""
    return fft.fft_size(_OVERSAMPLE * n)


def cost(method: str, atoms: int, species: int, nx: int, ny: int) -> float:
    """Modelled seconds (one core) to evaluate one slice's spectrum by ``method``."""
    nyh = ny // 2 + 1
    if method == "gemm":  # real GEMM [2 (nx/2+1), atoms] @ [atoms, 2 nyh]
        return _GEMM_S_PER_FLOP * 4.0 * atoms * nx * nyh
    if method == "nufft":
        big = grid_size(nx) * grid_size(ny)
        return (species * _FFT_S_PER_NLOGN * big * math.log2(big)
                + _SPREAD_S_PER_NODE * atoms * (2 * _HALF) ** 2)
    raise ValueError(f"no cost model for {method!r}")


def _gemm_slice(x, y, sp_runs, ff, lx, ly, nx, out, tmp, ws) -> None:
    """out [nx, nyh] = sum over species runs of ff[s] * Ex^T Ey, with the x phases split into
    their real and imaginary parts: ex(+-f) = c(f) +- i s(f), so for f = 0..nx/2

        S(+-f, ky) = A(f, ky) +- i B(f, ky),  A = C^T Ey,  B = S^T Ey,

    one real GEMM [2 (nx/2+1), atoms] @ [atoms, 2 nyh] (Ey viewed as reals): half the flops of
    the complex product over all nx rows."""
    nyh = out.shape[-1]
    h, npos = nx // 2 + 1, (nx + 1) // 2
    ex = _phase_table(x / lx, torch.arange(h, dtype=torch.float64, device=x.device), ff.dtype)
    ey = torch.view_as_real(_phase_table(y / ly, torch.arange(nyh, dtype=torch.float64,
                                                               device=x.device), ff.dtype))
    cs = ws.get("gemm_cs", (2 * h, x.shape[0]), ff.dtype, x.device)  # rows: c(f) then s(f)
    cs[:h].copy_(torch.view_as_real(ex)[..., 0].T)
    cs[h:].copy_(torch.view_as_real(ex)[..., 1].T)
    ab = ws.get("gemm_ab", (2 * h, nyh, 2), ff.dtype, x.device)
    tr = torch.view_as_real(tmp)  # [nx, nyh, 2]
    first = True
    for s, a, b in sp_runs:
        torch.matmul(cs[:, a:b], ey[a:b].reshape(b - a, 2 * nyh), out=ab.view(2 * h, 2 * nyh))
        A, B = ab[:h], ab[h:]
        # f >= 0 (rows 0..npos-1): A + iB; f = ix - nx < 0 (rows npos..nx-1): A - iB at |f|
        torch.sub(A[:npos, :, 0], B[:npos, :, 1], out=tr[:npos, :, 0])
        torch.add(A[:npos, :, 1], B[:npos, :, 0], out=tr[:npos, :, 1])
        m = torch.arange(nx - npos, 0, -1, device=x.device)  # |f| of rows npos..nx-1
        torch.add(A[m, :, 0], B[m, :, 1], out=tr[npos:, :, 0])
        torch.sub(A[m, :, 1], B[m, :, 0], out=tr[npos:, :, 1])
        if first:
            torch.mul(tmp, ff[s], out=out)
            first = False
        else:
            out.add_(tmp.mul_(ff[s]))
    if first:
        out.zero_()


def _deconvolution(n: int, big: int, device) -> torch.Tensor:
    """1 / (Gaussian transform) at the integer frequencies of an n-point axis, float64 [n]."""
    full, _ = _half_freqs(n, device)
    nu = full / big
    return torch.exp(4 * math.pi ** 2 * _TAU * nu * nu) / math.sqrt(4 * math.pi * _TAU)


def _spread_weights(u: torch.Tensor, big: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Node indices [n, 2H] (mod big) and Gaussian weights [n, 2H] of coordinates u [grid units]."""
    i0 = torch.floor(u)
    o = torch.arange(-_HALF + 1, _HALF + 1, dtype=torch.float64, device=u.device)
    idx = i0[:, None] + o[None, :]
    d = idx - u[:, None]
    return idx.long().remainder(big), torch.exp(d * d * (-1.0 / (4 * _TAU)))


def _nufft_slice(x, y, sp_runs, ffd, lx, ly, nx, ny, out, ws) -> None:
    """out [nx, nyh] = sum over species runs of ffd[s] * (cut-out rfft2 of the spread grid)."""
    mx, my = grid_size(nx), grid_size(ny)
    nyh, npos = ny // 2 + 1, (nx + 1) // 2
    ix, wx = _spread_weights(x * (mx / lx), mx)
    iy, wy = _spread_weights(y * (my / ly), my)
    grid = ws.get("nufft_grid", (mx, my), ffd.dtype, x.device)
    spec = ws.get("nufft_spec", (mx, my // 2 + 1), COMPLEX_OF[ffd.dtype], x.device)
    first = True
    for s, a, b in sp_runs:
        flat = (ix[a:b, :, None] * my + iy[a:b, None, :]).reshape(-1)
        val = (wx[a:b, :, None] * wy[a:b, None, :]).reshape(-1).to(ffd.dtype)
        grid.zero_()
        grid.view(-1).index_add_(0, flat, val)
        fft.rfft2(grid, out=spec)
        lo, hi = spec[:npos, :nyh], spec[mx - (nx - npos):, :nyh]
        if first:
            torch.mul(lo, ffd[s, :npos], out=out[:npos])
            torch.mul(hi, ffd[s, npos:], out=out[npos:])
            first = False
        else:
            out[:npos].add_(lo * ffd[s, :npos])
            out[npos:].add_(hi * ffd[s, npos:])
    if first:
        out.zero_()


def spectrum(positions: torch.Tensor, species: torch.Tensor, offsets: torch.Tensor,
             form_factors: torch.Tensor, nx: int, ny: int, lx: float, ly: float,
             method: str = "auto", out: torch.Tensor | None = None,
             workspace: fft.Workspace | None = None) -> torch.Tensor:
    """Exact structure-factor spectrum of M slices, complex [M, nx, ny//2+1].

    Arguments as for :func:`em_accel.ops.multislice.ms_structure_factor` (positions float64
    [N, 2] in Å grouped by slice and sorted by species within one, species int32 [N], offsets
    int64 [M+1], form_factors real [S, nx, ny//2+1], cell extent lx, ly [Å]); ``method`` one of
    "auto", "direct", "gemm", "nufft"; ``out`` an optional contiguous result tensor.
    """
    if method not in METHODS:
        raise ValueError(f"structure-factor method must be one of {METHODS}, got {method!r}")
    dev = positions.device
    if method == "auto" and dev.type != "cpu":
        method = "direct"
    if method == "direct":
        res = ops.structure_factor(positions, species, offsets, form_factors, nx, ny, lx, ly)
        if out is None:
            return res
        out.copy_(res)
        return out
    m = ops._check_atoms(positions, species, offsets, nx, ny, lx, ly)
    nyh = ny // 2 + 1
    if tuple(form_factors.shape[1:]) != (nx, nyh):
        raise ValueError(f"form_factors must have shape [S, {nx}, {nyh}], got {list(form_factors.shape)}")
    cdt = COMPLEX_OF[form_factors.dtype]
    if out is None:
        out = torch.empty((m, nx, nyh), dtype=cdt, device=dev)
    ws = workspace if workspace is not None else fft.Workspace()
    offs = offsets.cpu().numpy()
    sp_host = species.cpu().numpy()
    x, y = positions[:, 0], positions[:, 1]
    ffd = None
    for i in range(m):
        a0, a1 = int(offs[i]), int(offs[i + 1])
        runs = [(s, a - a0, b - a0) for s, a, b in _runs(sp_host, a0, a1)]
        how = method
        if how == "auto":  # the NUFFT's error (~3e-7) is float32-level: float64 keeps gemm
            how = "gemm" if form_factors.dtype == torch.float64 else min(
                ("gemm", "nufft"), key=lambda k: cost(k, a1 - a0, len(runs), nx, ny))
        if how == "gemm":
            tmp = ws.get("gemm_tmp", (nx, nyh), cdt, dev)
            _gemm_slice(x[a0:a1], y[a0:a1], runs, form_factors, lx, ly, nx, out[i], tmp, ws)
        else:
            if ffd is None:  # form factors times the NUFFT deconvolution, once per call
                d = (_deconvolution(nx, grid_size(nx), dev)[:, None]
                     * _deconvolution(ny, grid_size(ny), dev)[:nyh][None, :])
                ffd = (form_factors.to(torch.float64) * d).to(form_factors.dtype)
            _nufft_slice(x[a0:a1], y[a0:a1], runs, ffd, lx, ly, nx, ny, out[i], ws)
    return out
