"""Atomic structures for multislice: orthogonal periodic boxes, from ASE, CIF files or zone axes.

A :class:`Structure` is a set of atoms (positions [Å], atomic numbers) in an orthogonal box
``cell = (Lx, Ly, Lz)`` [Å]; the beam travels along +z and the box is periodic in x and y.
``zone_axis`` turns any crystal (an ASE ``Atoms``, a CIF file or a shipped name) into such a box
with the zone axis [uvw] along z.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InvalidInputError, expect_number
from .kirkland import atomic_number

SHIPPED = ("Si", "SrTiO3", "GaAs", "Au", "MgO", "Cu", "PbTiO3")


@dataclass
class Structure:
    """Atoms in an orthogonal box.

    Attributes:
        positions: float64 [N, 3] Cartesian positions [Å], wrapped into the box.
        numbers: int64 [N] atomic numbers (1..103).
        cell: (Lx, Ly, Lz) box lengths [Å]; periodic in x and y.
        info: free-form metadata (source, zone axis, repeats).
    """

    positions: np.ndarray
    numbers: np.ndarray
    cell: tuple[float, float, float]
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.numbers = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        if len(self.positions) != len(self.numbers):
            raise ValueError(f"positions ({len(self.positions)}) and numbers ({len(self.numbers)}) differ in length")
        self.cell = tuple(float(c) for c in self.cell)
        if len(self.cell) != 3 or not all(math.isfinite(c) and c > 0 for c in self.cell):
            raise ValueError(f"cell must be three lengths > 0 [Å], got {self.cell}")
        for z in np.unique(self.numbers):
            atomic_number(int(z))  # raises for unknown elements
        # Wrap into [0, L) and snap values within 1e-10 of L to 0 (half-open box).
        cell = np.array(self.cell)
        pos = np.mod(self.positions, cell)
        pos[np.abs(pos - cell) < 1e-10] = 0.0
        self.positions = pos

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def thickness(self) -> float:
        """Box depth Lz [Å]."""
        return self.cell[2]

    def repeat(self, nx: int = 1, ny: int = 1, nz: int = 1) -> "Structure":
        """Tile the box nx × ny × nz times."""
        for name, n in (("nx", nx), ("ny", ny), ("nz", nz)):
            if int(n) < 1:
                raise ValueError(f"{name} must be >= 1, got {n}")
        shifts = np.array(list(itertools.product(range(nx), range(ny), range(nz))), dtype=np.float64)
        shifts *= np.array(self.cell)
        pos = (self.positions[None] + shifts[:, None]).reshape(-1, 3)
        num = np.tile(self.numbers, len(shifts))
        reps = self.info.get("repeats", (1, 1, 1))
        info = dict(self.info, repeats=(reps[0] * nx, reps[1] * ny, reps[2] * nz))
        return Structure(pos, num, (self.cell[0] * nx, self.cell[1] * ny, self.cell[2] * nz), info)

    def with_thickness(self, thickness: float) -> "Structure":
        """Tile along z and cut to a box of depth ``thickness`` [Å] (atoms with z < thickness kept)."""
        thickness = float(thickness)
        if not (math.isfinite(thickness) and thickness > 0):
            raise ValueError(f"thickness must be > 0 Å, got {thickness}")
        nz = max(1, math.ceil(thickness / self.cell[2] - 1e-9))
        tiled = self.repeat(1, 1, nz) if nz > 1 else self
        keep = tiled.positions[:, 2] < thickness - 1e-10
        return Structure(tiled.positions[keep], tiled.numbers[keep],
                         (self.cell[0], self.cell[1], thickness), dict(tiled.info, thickness=thickness))

    def to_ase(self):
        """The structure as an ``ase.Atoms`` (needs ASE)."""
        from ase import Atoms

        return Atoms(numbers=self.numbers, positions=self.positions, cell=np.diag(self.cell),
                     pbc=True)

    @property
    def formula(self) -> str:
        from .kirkland import SYMBOLS

        zs, counts = np.unique(self.numbers, return_counts=True)
        return "".join(f"{SYMBOLS[z]}{c if c > 1 else ''}" for z, c in zip(zs, counts))


def from_ase(atoms) -> Structure:
    """Structure from an ``ase.Atoms`` with an orthogonal (diagonal) cell.

    For a non-orthogonal cell use :func:`zone_axis`, which finds an orthogonal supercell.
    """
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    if np.abs(cell - np.diag(np.diag(cell))).max() > 1e-8:
        raise ValueError("from_ase needs an orthogonal cell aligned with x, y, z; use "
                         "zone_axis(atoms, (0, 0, 1)) to build an orthogonal supercell")
    return Structure(atoms.get_positions(), atoms.get_atomic_numbers(), tuple(np.diag(cell)),
                     {"source": atoms.get_chemical_formula()})


def read_cif(path: str | Path):
    """Read a CIF file into an ``ase.Atoms`` (through ASE's reader); hydrogen is kept.

    Raises FileNotFoundError for a missing file and ValueError for a malformed one.
    """
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CIF file at {path} (shipped structures: {', '.join(SHIPPED)})")
    try:
        atoms = read(str(path), format="cif")
    except Exception as exc:  # ASE raises many types for malformed input
        raise ValueError(f"malformed CIF {path}: {exc}") from exc
    if isinstance(atoms, list):
        atoms = atoms[0]
    if len(atoms) == 0:
        raise ValueError(f"CIF {path} holds no atoms")
    return atoms


def shipped_path(name: str) -> Path:
    """Path of a structure shipped with em-accel (one of :data:`SHIPPED`)."""
    if name not in SHIPPED:
        raise ValueError(f"unknown shipped structure {name!r}; choose from {SHIPPED} or give a CIF path")
    return Path(str(resources.files("em_accel.sim").joinpath(f"data/structures/{name}.cif")))


def load(source) -> object:
    """An ``ase.Atoms`` from a shipped name, a CIF path, an ``ase.Atoms`` or a Structure (returned as is)."""
    if isinstance(source, Structure):
        return source
    if hasattr(source, "get_positions") and hasattr(source, "cell"):
        return source
    source = str(source)
    if source in SHIPPED:
        return read_cif(shipped_path(source))
    return read_cif(source)


def _orthogonal_basis(lattice: np.ndarray, uvw: np.ndarray, max_index: int = 6,
                      max_length: float = 40.0) -> np.ndarray | None:
    """Integer matrix [3, 3] whose rows are lattice vectors t1, t2 ⟂ and the axis uvw, all
    mutually orthogonal (so the supercell is an exact periodic orthogonal box), or None."""
    d = uvw @ lattice
    rng = range(-max_index, max_index + 1)
    cands = []
    for n in itertools.product(rng, rng, rng):
        if n == (0, 0, 0):
            continue
        t = np.array(n) @ lattice
        length = np.linalg.norm(t)
        if length > max_length or abs(t @ d) > 1e-6 * length * np.linalg.norm(d):
            continue
        if math.gcd(math.gcd(abs(n[0]), abs(n[1])), abs(n[2])) != 1:
            continue
        cands.append((length, n, t))
    cands.sort(key=lambda c: (round(c[0], 8), [-x for x in c[1]]))
    for l1, n1, t1 in cands:
        for l2, n2, t2 in cands:
            if abs(t1 @ t2) <= 1e-6 * l1 * l2:
                m = np.array([n1, n2, uvw])
                det = np.linalg.det(m)
                if abs(det) < 0.5:
                    continue
                if det < 0:
                    m[1] = -m[1]
                return m
        break
    return None


MAX_THICKNESS_A = 1e7  # 1 mm: deeper is a mistake, not a specimen
MAX_EXTENT_A = 1e4     # 1 µm laterally: beyond that the atoms of one slice exhaust memory


def check_box_size(thickness: float | None, extent: float | Sequence[float] | None) -> None:
    """Named errors unless ``thickness`` [Å] is None or in (0, 1 mm] and ``extent`` [Å] is None,
    one length or two lengths, each in (0, 1 µm]."""
    if thickness is not None:
        expect_number("thickness", thickness, 0.0, MAX_THICKNESS_A, unit="Å", low_open=True)
    if extent is None:
        return
    lengths = [extent] if np.isscalar(extent) else list(extent) \
        if isinstance(extent, (list, tuple, np.ndarray)) else None
    if lengths is None or len(lengths) not in (1, 2):
        raise InvalidInputError(f"extent must be one or two lengths [Å], got {extent!r}")
    for e in lengths:
        expect_number("extent", e, 0.0, MAX_EXTENT_A, unit="Å", low_open=True)


def zone_axis(source, uvw: Sequence[int] = (0, 0, 1), extent: float | Sequence[float] | None = None,
              thickness: float | None = None) -> Structure:
    """Orthogonal periodic box with crystal direction [uvw] along the beam (z).

    Args:
        source: ``ase.Atoms``, CIF path or shipped name (:data:`SHIPPED`).
        uvw: zone axis in lattice (direct-space) indices, not all zero.
        extent: lateral size [Å] (one value or (Lx, Ly)); the box is a whole number of periods,
            the nearest to it (at least one). None: one period.
        thickness: box depth [Å]; None: one period along [uvw].

    The lateral box vectors are the shortest mutually orthogonal lattice vectors perpendicular
    to [uvw] (indices up to 6, length up to 40 Å); ValueError if none exist.
    """
    check_box_size(thickness, extent)
    atoms = load(source)
    if isinstance(atoms, Structure):
        atoms = atoms.to_ase()
    uvw = np.array([int(x) for x in uvw])
    if uvw.shape != (3,) or not uvw.any():
        raise ValueError(f"zone axis must be three integers, not all zero, got {list(uvw)}")
    g = math.gcd(math.gcd(abs(uvw[0]), abs(uvw[1])), abs(uvw[2]))
    uvw = uvw // g
    lattice = np.asarray(atoms.cell.array, dtype=np.float64)
    if abs(np.linalg.det(lattice)) < 1e-6:
        raise ValueError("the structure needs a 3-D periodic cell to build a zone-axis box")
    m = _orthogonal_basis(lattice, uvw)
    if m is None:
        raise ValueError(f"no orthogonal periodic supercell with [uvw] = {list(uvw)} along z within "
                         "lattice indices <= 6 and 40 Å")
    from ase.build import make_supercell

    sup = make_supercell(atoms, m, wrap=True)
    vecs = m @ lattice
    lengths = np.linalg.norm(vecs, axis=1)
    rot = vecs / lengths[:, None]  # rows: new x, y, z directions
    pos = sup.get_positions() @ rot.T
    base = Structure(pos, sup.get_atomic_numbers(), tuple(lengths),
                     {"source": atoms.get_chemical_formula(), "zone_axis": tuple(int(x) for x in uvw),
                      "period": tuple(float(x) for x in lengths)})
    if extent is None:
        reps = (1, 1)
    else:
        ext = (float(extent), float(extent)) if np.isscalar(extent) else tuple(float(e) for e in extent)
        if len(ext) != 2 or not all(math.isfinite(e) and e > 0 for e in ext):
            raise ValueError(f"extent must be one or two lengths > 0 Å, got {extent}")
        reps = tuple(max(1, round(e / l)) for e, l in zip(ext, lengths[:2]))
    out = base.repeat(reps[0], reps[1], 1)
    out.info["lateral_repeats"] = reps
    if thickness is not None:
        out = out.with_thickness(thickness)
    return out
