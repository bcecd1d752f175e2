"""A rotated crystal block: any orientation, cut to a box, with vacuum padding (thesis ch. 7).

:func:`em_accel.sim.zone_axis` builds an exactly periodic orthogonal supercell, which exists only
for exact zone axes. The thesis's exit-wave datasets tilt every crystal slightly off its zone
axis, so the box cannot be periodic: like clTEM, fill a box of lateral size ``width`` and depth
``depth`` with the rotated crystal and leave ``pad`` Å of vacuum around it laterally. The
multislice grid stays periodic; the padding keeps the wrap-around away from the centre, and
datasets keep only a central crop.
"""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np

from .structure import Structure, load


def rotation_to_axis(direction: np.ndarray, in_plane: float = 0.0) -> np.ndarray:
    """Rotation matrix [3, 3] (rows: new x, y, z) taking ``direction`` to +z, then turning the
    crystal by ``in_plane`` [rad] about z."""
    z = np.asarray(direction, dtype=np.float64)
    z = z / np.linalg.norm(z)
    helper = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = helper - (helper @ z) * z
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = math.cos(in_plane), math.sin(in_plane)
    return np.stack([c * x + s * y, -s * x + c * y, z])


def tilted_direction(lattice: np.ndarray, zone: Sequence[int], tilt: Sequence[float]) -> np.ndarray:
    """Cartesian beam direction: the zone axis [uvw] (direct-space indices) as a unit vector,
    plus the perturbation ``tilt`` (3 components, ~radians for small values), renormalised."""
    uvw = np.asarray([int(v) for v in zone], dtype=np.float64)
    if uvw.shape != (3,) or not uvw.any():
        raise ValueError(f"zone axis must be three integers, not all zero, got {list(zone)}")
    d = uvw @ np.asarray(lattice, dtype=np.float64)
    d = d / np.linalg.norm(d) + np.asarray(tilt, dtype=np.float64)
    return d / np.linalg.norm(d)


def crystal_block(source, zone: Sequence[int] = (0, 0, 1), width: float = 50.0,
                  depth: float = 100.0, pad: float = 8.0, tilt: Sequence[float] = (0.0, 0.0, 0.0),
                  in_plane: float = 0.0, drop_hydrogen: bool = True) -> Structure:
    """Atoms of a crystal rotated so ``zone`` (+ ``tilt``) lies along z, cut to a box.

    Args:
        source: ``ase.Atoms``, CIF path or shipped name.
        zone: zone axis [uvw] in direct-lattice indices.
        width: lateral size of the filled region [Å] (square).
        depth: specimen thickness [Å] (the box depth).
        pad: vacuum on each lateral side [Å]; the box is ``width + 2 pad`` wide.
        tilt: perturbation added to the unit zone-axis vector (thesis: N(0, 0.1) per axis).
        in_plane: rotation about the beam [rad].
        drop_hydrogen: remove H atoms (the thesis's datasets did).
    """
    for name, v in (("width", width), ("depth", depth)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be > 0 Å, got {v}")
    if not (math.isfinite(pad) and pad >= 0):
        raise ValueError(f"pad must be >= 0 Å, got {pad}")
    atoms = load(source)
    if isinstance(atoms, Structure):
        atoms = atoms.to_ase()
    lattice = np.asarray(atoms.cell.array, dtype=np.float64)
    if abs(np.linalg.det(lattice)) < 1e-6:
        raise ValueError("the structure needs a 3-D periodic cell")
    rot = rotation_to_axis(tilted_direction(lattice, zone, tilt), in_plane)
    frac = atoms.get_scaled_positions(wrap=True)
    numbers = atoms.get_atomic_numbers()
    if drop_hydrogen:
        keep = numbers != 1
        frac, numbers = frac[keep], numbers[keep]
    # Cell indices whose translates can reach the box: map the box corners (centred on the
    # origin) back to fractional coordinates and take their bounding range.
    half = np.array([width / 2, width / 2, depth / 2])
    corners = np.array(list(itertools.product(*[(-h, h) for h in half])))
    cf = corners @ rot @ np.linalg.inv(lattice)  # Cartesian (rotated frame) -> fractional
    lo, hi = np.floor(cf.min(0)) - 1, np.ceil(cf.max(0)) + 1
    ranges = [np.arange(a, b + 1) for a, b in zip(lo.astype(int), hi.astype(int))]
    shifts = np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, 3)
    # Keep only cells within one cell diagonal of the box before expanding them into atoms
    # (a tilted slab's bounding range holds mostly cells far outside it).
    origins = (shifts + 0.5) @ lattice @ rot.T
    reach = 0.5 * np.abs(np.array(list(itertools.product((-1, 1), repeat=3))) @ lattice).sum(1).max()
    shifts = shifts[np.all(np.abs(origins) < half + reach, axis=1)]
    cart = ((frac[None] + shifts[:, None]).reshape(-1, 3)) @ lattice @ rot.T
    z_all = np.tile(numbers, len(shifts))
    inside = np.all(np.abs(cart) < half, axis=1)
    pos = cart[inside] + np.array([width / 2 + pad, width / 2 + pad, depth / 2])
    info = {"source": atoms.get_chemical_formula(), "zone_axis": tuple(int(v) for v in zone),
            "tilt": tuple(float(t) for t in tilt), "in_plane_rad": float(in_plane),
            "width_A": float(width), "pad_A": float(pad)}
    return Structure(pos, z_all[inside], (width + 2 * pad, width + 2 * pad, depth), info)
