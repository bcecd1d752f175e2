"""Random atomic scenes for simulated micrographs: crystals, interfaces, nanoparticles on supports.

A :class:`Scene` is a set of atoms in a box ``extent`` x ``depth`` [Å] (beam along +z), built
from :mod:`em_accel.sim.materials`. Scenes are not periodic: every crystal is cut from a block
larger than the box, rotated in-plane, and clipped to the box, so the imaging code can simulate
the box with a margin and crop it. Four scene types (:data:`SCENES`):

- ``crystal``: one crystal on a low-index zone axis, thickness 5-300 Å (log-uniform), in-plane
  rotation, small mistilt (columns sheared along the beam), optional vacancies, substitutions,
  amorphous surface layers, and an edge or wedge with vacuum or amorphous film beyond it;
- ``interface``: two grains split by a line: a grain boundary (same material, other rotation),
  a twin (mirror image of grain 1) or a heterointerface (another material);
- ``particles``: an amorphous support film (carbon, SiO2 or Si3N4 at their bulk densities) with
  nanoparticles on top (ase.cluster icosahedra, decahedra and truncated octahedra of fcc metals,
  or faceted cuts of any catalogue crystal, on a zone axis or randomly oriented) and optional
  single heavy atoms;
- ``amorphous``: an amorphous film with optional small clusters and single atoms.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..sim import materials as mat
from ..sim.structure import Structure, zone_axis

SCENES = ("crystal", "interface", "particles", "amorphous")
SCENE_WEIGHTS = (0.45, 0.15, 0.3, 0.1)
#: Zone axes tried for crystals, most common first (drawn with these weights).
ZONES = ((0, 0, 1), (1, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 1), (0, 1, 1), (1, 1, 1), (1, -1, 0),
         (2, 1, 0), (1, 1, 2), (2, 1, 1))
ZONE_WEIGHTS = (4, 2, 2, 4, 2, 2, 3, 1, 1, 1, 1)
#: Amorphous films: (element numbers, fractions, atoms per Å^3) at bulk density.
SUPPORTS = {"C": ((6,), (1.0,), 0.100), "SiO2": ((14, 8), (1 / 3, 2 / 3), 0.066),
            "Si3N4": ((14, 7), (3 / 7, 4 / 7), 0.090)}
FCC_METALS = ("Au", "Pt", "Pd", "Ag", "Cu", "Ni", "Rh", "Ir")
SINGLE_ATOMS = (78, 79, 77, 74, 46, 47, 45, 76)  # Pt Au Ir W Pd Ag Rh Os


@dataclass
class Scene:
    """Atoms (positions [N, 3] Å, numbers [N]) in the box [0, Lx) x [0, Ly) x [0, depth)."""

    positions: np.ndarray
    numbers: np.ndarray
    extent: tuple[float, float]
    depth: float
    info: dict = field(default_factory=dict)

    def structure(self) -> Structure:
        """The scene as an :class:`em_accel.sim.Structure` (box periodic in x and y)."""
        return Structure(self.positions, self.numbers, (*self.extent, self.depth), dict(self.info))


def _pool(split: str | None, materials: Sequence[str] | None) -> list[str]:
    if materials is not None:
        ids = [mat.from_id(m).id for m in materials]
        if not ids:
            raise ValueError("materials must not be empty")
        return ids
    return [m.id for m in mat.catalogue("cif") + mat.catalogue("prototypes")
            if split is None or mat.split_of(m.id) == split]


@functools.lru_cache(maxsize=4)
def _cached_pool(split: str | None, materials: tuple[str, ...] | None) -> tuple[str, ...]:
    return tuple(_pool(split, materials))


def draw_material(rng: np.random.Generator, split: str | None = None,
                  materials: Sequence[str] | None = None, random_fraction: float = 0.2) -> str:
    """A material ID: from ``materials`` if given, else a shipped CIF or prototype, or (with
    probability ``random_fraction``) a pyxtal random crystal; only from ``split`` if given."""
    pool = _cached_pool(split, None if materials is None else tuple(materials))
    if materials is None and rng.random() < random_fraction:
        for _ in range(20):
            # (the cached datasets were drawn this way; random_crystal(..., split=) is faster
            # but consumes the generator differently)
            m = mat.random_crystal(int(rng.integers(2 ** 31)))
            if split is None or m.split == split:
                return m.id
    return pool[int(rng.integers(len(pool)))]


@functools.lru_cache(maxsize=256)
def zone_box(material_id: str, uvw: tuple[int, int, int]) -> Structure:
    """One orthogonal period of a catalogue material with [uvw] along z (cached per process)."""
    return zone_axis(mat.from_id(material_id).atoms(), uvw)


def draw_zone(material_id: str, rng: np.random.Generator, max_period: float = 30.0
              ) -> tuple[tuple[int, int, int], Structure]:
    """A zone axis (drawn by :data:`ZONE_WEIGHTS`) whose period box is at most ``max_period`` Å
    laterally, and that box; falls back through all zones, then raises ValueError."""
    p = np.array(ZONE_WEIGHTS, float)
    order = rng.choice(len(ZONES), len(ZONES), replace=False, p=p / p.sum())
    for k in order:
        try:
            box = zone_box(material_id, ZONES[k])
        except ValueError:
            continue
        if max(box.cell[:2]) <= max_period and len(box) <= 2000:
            return ZONES[k], box
    raise ValueError(f"no zone axis of {material_id} with a period box <= {max_period} Å")


def _rot2(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def _tile(box: Structure, half_width: float, thickness: float, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray]:
    """Atoms of ``box`` tiled over [-w, w]^2 x [0, thickness), random sub-cell offset."""
    px, py, pz = box.cell
    nx, ny = int(math.ceil(2 * half_width / px)) + 1, int(math.ceil(2 * half_width / py)) + 1
    nz = max(1, int(math.ceil(thickness / pz)))
    i, j, k = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
    shifts = np.stack([i.ravel() * px, j.ravel() * py, k.ravel() * pz], 1)
    pos = (box.positions[None] + shifts[:, None]).reshape(-1, 3)
    num = np.tile(box.numbers, len(shifts))
    pos[:, 0] -= nx * px / 2 - rng.uniform(0, px)
    pos[:, 1] -= ny * py / 2 - rng.uniform(0, py)
    keep = pos[:, 2] < thickness
    return pos[keep], num[keep]


def crystal_block(material_id: str, extent: tuple[float, float], thickness: float,
                  rng: np.random.Generator, zone: tuple[int, int, int] | None = None,
                  rotation: float | None = None, tilt_mrad: tuple[float, float] = (0.0, 0.0)
                  ) -> tuple[np.ndarray, np.ndarray, dict]:
    """A crystal filling the box ``extent`` [Å] to ``thickness`` [Å] (z from 0), on ``zone``
    (drawn if None), rotated in-plane by ``rotation`` [rad] (drawn if None) and tilted by
    ``tilt_mrad`` (x and y shear of the columns along z). Returns positions, numbers, info."""
    if zone is None:
        zone, box = draw_zone(material_id, rng)
    else:
        box = zone_box(material_id, tuple(zone))
    theta = rng.uniform(0, 2 * math.pi) if rotation is None else float(rotation)
    lx, ly = extent
    pos, num = _tile(box, 0.5 * math.hypot(lx, ly) + 1.0, thickness, rng)
    pos[:, :2] = pos[:, :2] @ _rot2(theta).T + np.array([lx / 2, ly / 2])
    tx, ty = (math.tan(t * 1e-3) for t in tilt_mrad)
    pos[:, 0] += (pos[:, 2] - thickness / 2) * tx
    pos[:, 1] += (pos[:, 2] - thickness / 2) * ty
    inside = (pos[:, 0] >= 0) & (pos[:, 0] < lx) & (pos[:, 1] >= 0) & (pos[:, 1] < ly)
    info = {"material": material_id, "zone": list(zone), "rotation_deg": math.degrees(theta),
            "thickness_A": float(thickness), "tilt_mrad": [float(t) for t in tilt_mrad]}
    return pos[inside], num[inside], info


def amorphous_film(extent: tuple[float, float], z0: float, z1: float, rng: np.random.Generator,
                   kind: str = "C") -> tuple[np.ndarray, np.ndarray]:
    """Uniformly random atoms of support ``kind`` (:data:`SUPPORTS`) at its bulk density in the
    slab [0, Lx) x [0, Ly) x [z0, z1) [Å]."""
    els, frac, density = SUPPORTS[kind]
    vol = extent[0] * extent[1] * max(0.0, z1 - z0)
    n = int(rng.poisson(density * vol))
    pos = rng.uniform(0, 1, (n, 3)) * np.array([extent[0], extent[1], z1 - z0]) + np.array([0, 0, z0])
    num = rng.choice(np.array(els), n, p=np.array(frac))
    return pos, num


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.standard_normal(4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def nanoparticle(material_id: str, diameter: float, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, dict]:
    """A nanoparticle of about ``diameter`` [Å] centred at the origin. fcc metals are often
    multiply twinned (ase.cluster icosahedron / decahedron) or truncated octahedra; other
    materials are faceted cuts (random planes) of the crystal, on a low-index zone axis (half)
    or randomly oriented, with a flat bottom facet where it rests on a support."""
    m = mat.from_id(material_id)
    info = {"material": material_id, "diameter_A": float(diameter)}
    r = diameter / 2
    if m.source == "prototype" and material_id.startswith("proto:fcc:") and rng.random() < 0.6:
        from ase.cluster import Decahedron, Icosahedron, Octahedron

        sym = m.formula
        a = mat.from_id(material_id).atoms().cell.lengths()[0] * math.sqrt(2)  # primitive -> cubic
        dnn = a / math.sqrt(2)
        shape = ("icosahedron", "decahedron", "octahedron")[int(rng.integers(3))]
        if shape == "icosahedron":
            cl = Icosahedron(sym, max(2, round(r / dnn) + 1), latticeconstant=a)
        elif shape == "decahedron":
            p = max(2, round(r / dnn * 0.8))
            cl = Decahedron(sym, p, p, int(rng.integers(0, 3)), latticeconstant=a)
        else:
            length = max(3, round(diameter / dnn * 0.75))
            cl = Octahedron(sym, length, cutoff=max(0, length // 3 - int(rng.integers(0, 2))),
                            latticeconstant=a)
        pos = cl.get_positions()
        pos -= pos.mean(0)
        pos = pos @ _random_rotation(rng).T if rng.random() < 0.5 else pos
        info["shape"] = shape
        return pos, cl.get_atomic_numbers(), info
    if rng.random() < 0.5:
        zone, box = draw_zone(material_id, rng)
        pos, num = _tile(box, r + 2, diameter + 4, rng)
        pos[:, 2] -= r + 2
        pos[:, :2] = pos[:, :2] @ _rot2(rng.uniform(0, 2 * math.pi)).T
        info["zone"] = list(zone)
    else:
        atoms = m.atoms()
        cell = atoms.cell.array
        reps = [int(math.ceil(2 * (r + 3) / max(h, 1e-6))) + 1
                for h in 1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0)]
        big = atoms.repeat(reps)
        pos = big.get_positions()
        pos -= pos.mean(0)
        pos = pos @ _random_rotation(rng).T
        num = big.get_atomic_numbers()
        info["zone"] = None
    keep = np.linalg.norm(pos, axis=1) < r
    for _ in range(int(rng.integers(3, 9))):  # facets
        n = rng.standard_normal(3)
        keep &= pos @ (n / np.linalg.norm(n)) < r * rng.uniform(0.75, 1.0)
    keep &= pos[:, 2] > -r * rng.uniform(0.5, 1.0)  # flat facet on the support
    info["shape"] = "faceted"
    return pos[keep], num[keep], info


def random_scene(extent: tuple[float, float], rng: np.random.Generator, scene: str | None = None,
                 max_thickness: float = 300.0, split: str | None = None,
                 materials: Sequence[str] | None = None) -> Scene:
    """A random scene of type ``scene`` (drawn by :data:`SCENE_WEIGHTS` if None) in a box of
    ``extent`` [Å]; crystal thickness up to ``max_thickness`` [Å]; materials from ``split``
    ("train" / "heldout", see :func:`em_accel.sim.materials.split_of`) or ``materials`` (IDs)."""
    if scene is None:
        scene = SCENES[int(rng.choice(len(SCENES), p=SCENE_WEIGHTS))]
    if scene not in SCENES:
        raise ValueError(f"scene must be one of {SCENES}, got {scene!r}")
    if split not in (None, "train", "heldout"):
        raise ValueError(f"split must be None, 'train' or 'heldout', got {split!r}")
    build = {"crystal": _crystal_scene, "interface": _interface_scene,
             "particles": _particle_scene, "amorphous": _amorphous_scene}[scene]
    for attempt in range(8):
        try:
            return build(tuple(float(e) for e in extent), rng, max_thickness, split, materials)
        except ValueError:  # e.g. a random crystal without a small zone-axis box: redraw
            if attempt == 7:
                raise
    raise AssertionError("unreachable")


def _thickness(rng, lo, hi):
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _tilt(rng):
    return tuple(float(t) for t in rng.normal(0, 2.0, 2)) if rng.random() < 0.7 else (0.0, 0.0)


def _finish(parts, extent, info, rng, pad=2.0) -> Scene:
    pos = np.concatenate([p for p, _ in parts]) if parts else np.zeros((0, 3))
    num = np.concatenate([n for _, n in parts]) if parts else np.zeros(0, np.int64)
    if len(num) == 0:  # keep the box non-empty: one carbon atom far in a corner
        pos, num = np.array([[0.0, 0.0, 0.0]]), np.array([6])
    pos = pos.copy()
    z0 = pos[:, 2].min() - pad
    pos[:, 2] -= z0
    depth = float(pos[:, 2].max() + pad)
    inside = (pos[:, 0] >= 0) & (pos[:, 0] < extent[0]) & (pos[:, 1] >= 0) & (pos[:, 1] < extent[1])
    return Scene(pos[inside], num[inside].astype(np.int64), extent, depth, info)


def _defects(pos, num, rng, info):
    if rng.random() < 0.4:
        f = rng.uniform(0.002, 0.05)
        keep = rng.random(len(num)) >= f
        pos, num = pos[keep], num[keep]
        info["vacancy_fraction"] = float(f)
    if rng.random() < 0.25:
        f = rng.uniform(0.002, 0.03)
        sub = rng.random(len(num)) < f
        z = int(rng.choice([int(x) for x in SINGLE_ATOMS] + [14, 26, 29, 38, 56, 57]))
        num = num.copy()
        num[sub] = z
        info["substitution"] = {"Z": z, "fraction": float(f)}
    return pos, num


def _edge_mask(pos, extent, rng, info, thickness):
    """An edge or wedge: local thickness T * clip(d / w, 0, 1) with d the signed distance to a
    random line; atoms above the local thickness removed."""
    c = np.array(extent) * rng.uniform(0.2, 0.8, 2)
    phi = rng.uniform(0, 2 * math.pi)
    d = (pos[:, :2] - c) @ np.array([math.cos(phi), math.sin(phi)])
    w = 0.0 if rng.random() < 0.4 else rng.uniform(10, 150)
    local = thickness * (np.clip(d / w, 0, 1) if w > 0 else (d > 0).astype(float))
    info["edge"] = {"wedge_width_A": float(w)}
    return pos[:, 2] < local, d


def _crystal_scene(extent, rng, max_thickness, split, materials) -> Scene:
    mid = draw_material(rng, split, materials)
    t = _thickness(rng, 5.0, max_thickness)
    pos, num, info = crystal_block(mid, extent, t, rng, tilt_mrad=_tilt(rng))
    info = {"scene": "crystal", **info}
    pos, num = _defects(pos, num, rng, info)
    parts = []
    if rng.random() < 0.3:
        keep, d = _edge_mask(pos, extent, rng, info, t)
        pos, num = pos[keep], num[keep]
        if rng.random() < 0.5:
            kind = str(rng.choice(list(SUPPORTS)))
            ap, an = amorphous_film(extent, -rng.uniform(10, 40), 0.0, rng, kind)
            parts.append((ap, an))
            info["support"] = kind
    parts.append((pos, num))
    if rng.random() < 0.4:  # surface contamination / oxide
        top, bottom = rng.uniform(0, 15, 2)
        kind = str(rng.choice(list(SUPPORTS)))
        parts.append(amorphous_film(extent, t, t + top, rng, kind))
        parts.append(amorphous_film(extent, -bottom, 0, rng, kind))
        info["surface_layers_A"] = [float(top), float(bottom)]
    return _finish(parts, extent, info, rng)


def _interface_scene(extent, rng, max_thickness, split, materials) -> Scene:
    mid = draw_material(rng, split, materials)
    t = _thickness(rng, 10.0, max_thickness)
    tilt = _tilt(rng)
    p1, n1, i1 = crystal_block(mid, extent, t, rng, tilt_mrad=tilt)
    c = np.array(extent) * rng.uniform(0.3, 0.7, 2)
    phi = rng.uniform(0, 2 * math.pi)
    normal = np.array([math.cos(phi), math.sin(phi)])
    kind = str(rng.choice(["grain_boundary", "twin", "heterointerface"], p=[0.4, 0.3, 0.3]))
    if kind == "twin":  # mirror grain 1 across the boundary line
        p2 = p1.copy()
        d = (p2[:, :2] - c) @ normal
        p2[:, :2] -= 2 * d[:, None] * normal
        n2, i2 = n1, {"mirror_of": "grain1"}
    elif kind == "grain_boundary":
        p2, n2, i2 = crystal_block(mid, extent, t, rng, zone=tuple(i1["zone"]),
                                   rotation=math.radians(i1["rotation_deg"] + rng.uniform(5, 85)),
                                   tilt_mrad=tilt)
    else:
        p2, n2, i2 = crystal_block(draw_material(rng, split, materials), extent,
                                   t * rng.uniform(0.6, 1.4), rng, tilt_mrad=tilt)
    k1 = (p1[:, :2] - c) @ normal < 0
    k2 = (p2[:, :2] - c) @ normal >= 0
    info = {"scene": "interface", "kind": kind, "grain1": i1, "grain2": i2,
            "boundary_angle_deg": math.degrees(phi)}
    pos, num = _defects(np.concatenate([p1[k1], p2[k2]]), np.concatenate([n1[k1], n2[k2]]), rng, info)
    return _finish([(pos, num)], extent, info, rng)


def _support(extent, rng, info, lo=15.0, hi=80.0):
    kind = str(rng.choice(list(SUPPORTS), p=[0.6, 0.25, 0.15]))
    t = rng.uniform(lo, hi)
    info["support"] = {"kind": kind, "thickness_A": float(t)}
    return amorphous_film(extent, -t, 0.0, rng, kind)


def _single_atoms(extent, rng, info, count):
    z = int(rng.choice(SINGLE_ATOMS))
    pos = np.column_stack([rng.uniform(0, extent[0], count), rng.uniform(0, extent[1], count),
                           rng.uniform(0, 3.0, count)])
    info["single_atoms"] = {"Z": z, "count": int(count)}
    return pos, np.full(count, z)


def _particle_scene(extent, rng, max_thickness, split, materials) -> Scene:
    info: dict = {"scene": "particles", "particles": []}
    parts = [_support(extent, rng, info, 15.0, max(20.0, min(80.0, 0.6 * max_thickness)))]
    fov = min(extent)
    count = int(rng.integers(1, 7))
    fcc = [f"proto:fcc:{s}" for s in FCC_METALS]
    if split is not None:
        fcc = [m for m in fcc if mat.split_of(m) == split]
    same = rng.random() < 0.6  # one material for all particles, as in most catalysts
    mid = None
    for _ in range(count):
        if mid is None or not same:
            if materials is None and fcc and rng.random() < 0.5:
                mid = fcc[int(rng.integers(len(fcc)))]
            else:
                mid = draw_material(rng, split, materials)
        dia = min(_thickness(rng, 8.0, 0.6 * fov), max_thickness)
        pos, num, pinfo = nanoparticle(mid, dia, rng)
        if len(num) == 0:
            continue
        centre = np.array([rng.uniform(0, extent[0]), rng.uniform(0, extent[1]),
                           -pos[:, 2].min() + rng.uniform(-2, 1)])
        pinfo["centre_A"] = [float(x) for x in centre]
        parts.append((pos + centre, num))
        info["particles"].append(pinfo)
    if rng.random() < 0.3:
        parts.append(_single_atoms(extent, rng, info, int(rng.integers(3, 40))))
    return _finish(parts, extent, info, rng)


def _amorphous_scene(extent, rng, max_thickness, split, materials) -> Scene:
    info: dict = {"scene": "amorphous"}
    parts = [_support(extent, rng, info, 20.0, min(200.0, max(25.0, max_thickness)))]
    if rng.random() < 0.6:
        parts.append(_single_atoms(extent, rng, info, int(rng.integers(5, 80))))
    return _finish(parts, extent, info, rng)
