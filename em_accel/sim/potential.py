"""Sampling grid, slicing and the projected potential of each slice.

Conventions follow abTEM 1.0.11 (docs/multislice.md): ``gpts = ceil(L / sampling)`` and the
sampling is reset to ``L / gpts``; sample i sits at ``x = i dx``; ``n = ceil(Lz / dz)`` slices of
equal thickness ``Lz / n``; an atom belongs to slice ``floor(z / dz)`` (lower face included) and
its whole infinite projection is put in that slice.

Two ways to put atoms on the grid, both native kernels:

- ``method="exact"`` (default): the exact structure factor
  ``V(k) = sum_j vz_s(k) exp(-2 pi i k.r_j) / (dx dy)``, independent of sub-pixel positions;
- ``method="deposit"``: abTEM's bilinear deposit divided by ``sin(q)/q`` (q = |k| dx), which
  reproduces abTEM to ~1e-6 (its hybrid scheme after Van den Broek et al., Ultramicroscopy 158,
  89 (2015)), but low-passes atoms that lie between grid nodes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from ..errors import OutOfRangeError, expect_number
from ..ops import multislice as ops
from ..ops._common import COMPLEX_OF
from . import fft
from . import structure_factor as sf
from .fft import fft_size
from .kirkland import SYMBOLS, atomic_number, projected_potential_fourier
from .structure import Structure

#: Specimen depth [Å] and slice count beyond which a request is refused as a mistake (1 mm;
#: ten million slices), not attempted for hours or until memory runs out.
MAX_DEPTH = 1e7
MAX_SLICES = 10_000_000
MAX_GPTS = 1 << 16  # grid points per axis (a 65536² complex64 wave is 32 GB)


@dataclass(frozen=True)
class Grid:
    """Periodic real-space grid: ``gpts`` points over ``extent`` [Å] per axis (x first)."""

    extent: tuple[float, float]
    gpts: tuple[int, int]

    @classmethod
    def from_sampling(cls, extent: Sequence[float], sampling: float | Sequence[float] | None = None,
                      gpts: int | Sequence[int] | None = None) -> "Grid":
        """Grid over ``extent`` [Å] with ``gpts`` points or at most ``sampling`` [Å/px]."""
        extent = tuple(expect_number("extent", e, 0.0, MAX_DEPTH, unit="Å", low_open=True)
                       for e in extent)
        if gpts is not None:
            g = (int(gpts), int(gpts)) if np.isscalar(gpts) else tuple(int(x) for x in gpts)
        else:
            if sampling is None:
                raise ValueError("give sampling [Å/px] or gpts")
            s = (float(sampling),) * 2 if np.isscalar(sampling) else tuple(float(x) for x in sampling)
            if not all(math.isfinite(x) and x > 0 for x in s):
                raise ValueError(f"sampling must be > 0 Å/px, got {sampling}")
            if any(e / x > MAX_GPTS for e, x in zip(extent, s)):
                raise OutOfRangeError(f"extent {extent} Å at sampling {sampling} Å/px needs more "
                                      f"than {MAX_GPTS} points per axis")
            g = tuple(int(math.ceil(e / x)) for e, x in zip(extent, s))
        if len(g) != 2 or min(g) < 2:
            raise ValueError(f"the grid needs at least 2 x 2 points, got {g}")
        if max(g) > MAX_GPTS:
            raise OutOfRangeError(f"the grid may have at most {MAX_GPTS} points per axis, got {g}")
        return cls(extent, g)

    @property
    def sampling(self) -> tuple[float, float]:
        """(dx, dy) [Å/px]."""
        return (self.extent[0] / self.gpts[0], self.extent[1] / self.gpts[1])

    def antialias(self) -> tuple[float, float]:
        """Antialias cutoff and taper [1/Å] (2/3 of the coarser axis' Nyquist frequency)."""
        return ops.antialias_cutoff(*self.sampling)

    def frequencies(self, device=None, half: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """kx [nx, 1], ky [1, ny or ny//2+1] float64 [1/Å] in FFT order."""
        (nx, ny), (dx, dy) = self.gpts, self.sampling
        kx = torch.fft.fftfreq(nx, d=dx, dtype=torch.float64, device=device)
        ky = (torch.fft.rfftfreq if half else torch.fft.fftfreq)(ny, d=dy, dtype=torch.float64,
                                                                  device=device)
        return kx[:, None], ky[None, :]


def periodic_gpts(structure: Structure, sampling: float) -> tuple[int, int]:
    """Grid with sampling <= ``sampling`` [Å/px] that is FFT-friendly per lateral period and
    commensurate with the structure's lateral tiling (so the periodic fast path applies)."""
    reps = structure.info.get("repeats", (1, 1, 1))
    return tuple(int(r) * fft_size(math.ceil(structure.cell[i] / int(r) / sampling))
                 for i, r in enumerate(reps[:2]))


def slice_thicknesses(depth: float, slice_thickness: float | Sequence[float]) -> np.ndarray:
    """Thickness of each slice [Å]: ``ceil(depth / dz)`` equal slices, or the given list."""
    depth = expect_number("depth", depth, 0.0, MAX_DEPTH, unit="Å", low_open=True)
    if np.isscalar(slice_thickness):
        dz = float(slice_thickness)
        if not (math.isfinite(dz) and dz > 0):
            raise ValueError(f"slice_thickness must be > 0 Å, got {slice_thickness}")
        if depth / dz > MAX_SLICES:
            raise OutOfRangeError(f"depth / slice_thickness = {depth / dz:.3g} slices; at most "
                                  f"{MAX_SLICES} (thicker slices or a thinner specimen)")
        n = max(1, int(math.ceil(depth / dz)))  # depth/dz underflows to 0 for depth 5e-324
        return np.full(n, depth / n)
    dzs = np.asarray(slice_thickness, dtype=np.float64)
    if dzs.ndim != 1 or (dzs <= 0).any() or abs(dzs.sum() - depth) > 1e-6 * depth:
        raise ValueError(f"slice thicknesses must be > 0 and sum to the depth {depth} Å")
    return dzs


def slice_index(z: np.ndarray, thicknesses: np.ndarray) -> np.ndarray:
    """Slice of each atom: ``floor`` against the slice faces (lower face included)."""
    return np.minimum(np.digitize(z, np.cumsum(thicknesses) - 1e-12), len(thicknesses) - 1)


class Potential:
    """Projected potential [V·Å] of every slice of a structure on a grid, built on demand.

    Args:
        structure: the atoms (a :class:`Structure`).
        sampling / gpts: lateral sampling [Å/px] or grid points (see :meth:`Grid.from_sampling`).
        slice_thickness: [Å], or a list of thicknesses summing to the depth.
        terms: 3 (full Kirkland) or 1 (first Lorentzian and Gaussian only).
        method: "exact" (structure factor) or "deposit" (abTEM-compatible).
        debye_waller: RMS displacement per axis [Å] by element symbol or Z; multiplies each
            species' form factor by ``exp(-2 pi^2 sigma^2 k^2)``.
        device, dtype: torch device and real dtype (float32 or float64).
        structure_factor: how ``method="exact"`` evaluates the structure factor: "auto"
            (cheapest on CPU), "direct", "gemm" or "nufft" (:mod:`em_accel.sim.structure_factor`;
            all give the same sum to float32 rounding).
    """

    def __init__(self, structure: Structure, sampling: float | Sequence[float] | None = 0.05,
                 slice_thickness: float | Sequence[float] = 2.0, terms: int = 3,
                 method: str = "exact", gpts: int | Sequence[int] | None = None,
                 debye_waller: Mapping[str | int, float] | None = None, *,
                 device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                 structure_factor: str = "auto"):
        if not isinstance(structure, Structure):
            raise TypeError(f"structure must be an em_accel.sim.Structure, got {type(structure).__name__}")
        if method not in ("exact", "deposit"):
            raise ValueError(f"method must be 'exact' or 'deposit', got {method!r}")
        if terms not in (1, 3):
            raise ValueError(f"terms must be 1 or 3, got {terms}")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if structure_factor not in sf.METHODS:
            raise ValueError(f"structure_factor must be one of {sf.METHODS}, got {structure_factor!r}")
        self.structure, self.terms, self.method, self.dtype = structure, terms, method, dtype
        self.structure_factor = structure_factor
        self._ws = fft.Workspace()  # scratch reused across slices (never returned)
        self.device = torch.device(device or "cpu")
        self.grid = Grid.from_sampling(structure.cell[:2], sampling, gpts)
        kc, _ = self.grid.antialias()
        if kc < 1.0:
            raise ValueError(f"sampling {max(self.grid.sampling):.3f} Å/px is too coarse: the 2/3 "
                             f"band limit would be {kc:.2f} 1/Å < 1 1/Å; use sampling <= 0.33 Å/px")
        self.thicknesses = slice_thicknesses(structure.cell[2], slice_thickness)
        self.species = [int(z) for z in np.unique(structure.numbers)]
        dw = {atomic_number(k): float(v) for k, v in (debye_waller or {}).items()}
        for z, s in dw.items():
            if not (math.isfinite(s) and s >= 0):
                raise ValueError(f"Debye-Waller sigma for {SYMBOLS[z]} must be >= 0 Å, got {s}")
        self.debye_waller = dw
        # Lateral periodicity: a box tiled rx x ry times on a grid divisible by the tiling has a
        # potential that is the tile of one period's potential (exactly), so V, t and the
        # band limit are computed on the period's grid only.
        self.tile = _lateral_tiling(structure, self.grid.gpts)
        rx, ry = self.tile
        if (rx, ry) != (1, 1):
            cell = (structure.cell[0] / rx, structure.cell[1] / ry, structure.cell[2])
            inside = ((structure.positions[:, 0] < cell[0] - 1e-9) &
                      (structure.positions[:, 1] < cell[1] - 1e-9))
            structure = Structure(structure.positions[inside], structure.numbers[inside], cell)
        self.cell_grid = Grid(structure.cell[:2], (self.grid.gpts[0] // rx, self.grid.gpts[1] // ry))
        sl = slice_index(structure.positions[:, 2], self.thicknesses)
        sp = np.searchsorted(self.species, structure.numbers)
        order = np.lexsort((sp, sl))
        self._positions = torch.from_numpy(np.ascontiguousarray(structure.positions[order, :2])).to(self.device)
        self._species = torch.from_numpy(sp[order].astype(np.int32)).to(self.device)
        counts = np.bincount(sl, minlength=len(self.thicknesses))
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._kernel = self._form_factors()
        self._cache: torch.Tensor | None = None
        self.slice_ids = self._slice_ids(structure.positions[order, :2], sp[order])

    def _slice_ids(self, xy: np.ndarray, sp: np.ndarray) -> np.ndarray:
        """Id of each slice's content: slices with the same thickness and exactly the same atoms
        (x, y, species) get the same id, so their potentials and transmission functions are
        equal (a crystal along the beam with slices commensurate with its period)."""
        ids, seen = np.empty(len(self.thicknesses), dtype=np.int64), {}
        for m in range(len(self.thicknesses)):
            a0, a1 = int(self._offsets[m]), int(self._offsets[m + 1])
            x, y, z = xy[a0:a1, 0], xy[a0:a1, 1], sp[a0:a1]
            o = np.lexsort((y, x, z))
            key = (float(self.thicknesses[m]), x[o].tobytes(), y[o].tobytes(), z[o].tobytes())
            ids[m] = seen.setdefault(key, len(seen))
        return ids

    @property
    def num_slices(self) -> int:
        return len(self.thicknesses)

    def _form_factors(self) -> torch.Tensor:
        """[S, nx, ny//2+1]: vz_s(k) DW_s(k) / (dx dy) (divided by sin(q)/q for "deposit")."""
        kx, ky = self.cell_grid.frequencies(self.device, half=True)
        k2 = kx ** 2 + ky ** 2
        k = torch.sqrt(k2)
        dx, dy = self.grid.sampling
        scale = 1.0 / (dx * dy)
        if self.method == "deposit":
            q = torch.sqrt((kx * dx) ** 2 + (ky * dy) ** 2)
            sinc = torch.where(q > 0, torch.sin(q) / torch.where(q > 0, q, torch.ones_like(q)),
                               torch.ones_like(q))
            scale = scale / sinc
        out = []
        for z in self.species:
            f = projected_potential_fourier(z, k, self.terms) * scale
            if z in self.debye_waller:
                f = f * torch.exp(-2 * math.pi ** 2 * self.debye_waller[z] ** 2 * k2)
            out.append(f)
        if not out:  # no atoms: one all-zero species keeps the kernels' shapes valid
            out.append(torch.zeros_like(k))
        return torch.stack(out).to(self.dtype).contiguous()

    def slices(self, start: int = 0, stop: int | None = None, tiled: bool = True,
               out: torch.Tensor | None = None) -> torch.Tensor:
        """Projected potential [stop - start, nx, ny] [V·Å] of slices start..stop-1.

        With ``tiled=False`` a laterally periodic potential comes back as one period,
        [stop - start, nx / tile[0], ny / tile[1]]. ``out`` (contiguous, that shape) receives
        the result instead of a new tensor (``tiled=False`` only).
        """
        stop = self.num_slices if stop is None else stop
        if not 0 <= start <= stop <= self.num_slices:
            raise ValueError(f"slice range [{start}, {stop}) outside 0..{self.num_slices}")
        if out is not None and tiled and self.tile != (1, 1):
            raise ValueError("out= needs tiled=False for a laterally periodic potential")
        if self._cache is not None:
            v = self._cache[start:stop]
            if out is not None:
                v = out.copy_(v)
        else:
            v = self._period_slices(start, stop, out)
        return v.repeat(1, *self.tile) if tiled and self.tile != (1, 1) else v

    def _period_slices(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        (nx, ny), (lx, ly) = self.cell_grid.gpts, self.cell_grid.extent
        a0, a1 = int(self._offsets[start]), int(self._offsets[stop])
        offsets = torch.from_numpy(self._offsets[start:stop + 1] - a0).to(self.device)
        pos, sp = self._positions[a0:a1], self._species[a0:a1]
        c, nyh = stop - start, ny // 2 + 1
        spec = self._ws.get("spectrum", (c, nx, nyh), COMPLEX_OF[self.dtype], self.device)
        if self.method == "exact":
            sf.spectrum(pos, sp, offsets, self._kernel, nx, ny, lx, ly, self.structure_factor,
                        out=spec, workspace=self._ws)
        else:
            s = max(1, len(self.species))
            dep = self._ws.get("deposit", (c, s, nx, ny), self.dtype, self.device)
            ops.deposit_into(pos, sp, offsets, dep, lx, ly, check=False)  # built by __init__
            dep_k = fft.rfft2(dep, out=self._ws.get("deposit_k", (c, s, nx, nyh),
                                                    spec.dtype, self.device))
            torch.mul(dep_k[:, 0], self._kernel[0], out=spec)
            for i in range(1, s):
                spec.add_(dep_k[:, i].mul_(self._kernel[i]))
        return fft.irfft2(spec, s=(nx, ny), out=out)

    def build(self) -> torch.Tensor:
        """All slices [num_slices, nx, ny] [V·Å]."""
        return self.slices()

    def precompute(self) -> "Potential":
        """Build every slice once and keep it (memory: num_slices x nx x ny reals); returns self.

        Worth it when the same potential serves many waves (tilt series, STEM, repeated runs).
        """
        self._cache = None
        self._cache = self.slices(tiled=False)
        return self


def _lateral_tiling(structure: Structure, gpts: tuple[int, int]) -> tuple[int, int]:
    """(rx, ry) when ``structure`` is verifiably an rx x ry lateral tiling and gpts divide by it."""
    reps = structure.info.get("repeats")
    if not reps:
        return (1, 1)
    rx, ry = int(reps[0]), int(reps[1])
    if (rx, ry) == (1, 1) or gpts[0] % rx or gpts[1] % ry or len(structure) % (rx * ry):
        return (1, 1)
    cx, cy = structure.cell[0] / rx, structure.cell[1] / ry
    pos = structure.positions
    inside = (pos[:, 0] < cx - 1e-9) & (pos[:, 1] < cy - 1e-9)
    if inside.sum() * rx * ry != len(structure):
        return (1, 1)
    # check every atom is a lattice translate of one in the first period
    base = np.concatenate([pos[inside], structure.numbers[inside, None]], 1)
    shifts = np.array([(i * cx, j * cy, 0.0, 0.0) for i in range(rx) for j in range(ry)])
    tiled = (base[None] + shifts[:, None]).reshape(-1, 4)
    full = np.concatenate([pos, structure.numbers[:, None]], 1)
    key = lambda a: a[np.lexsort(np.round(a, 6).T[::-1])]  # noqa: E731
    a, b = key(tiled), key(full)
    if a.shape != b.shape or np.abs(a - b).max() > 1e-6:
        return (1, 1)
    return (rx, ry)
