"""A deterministic catalogue of crystal structures with stable string IDs, for training data.

Three sources, each with its own ID scheme (an ID alone rebuilds the structure, so datasets can
record IDs instead of atoms):

- ``cif:<name>``: the CIF files shipped with em-accel (:data:`em_accel.sim.SHIPPED`);
- ``proto:<prototype>:<formula>``: ASE bulk prototypes (fcc, bcc, hcp, diamond, rocksalt,
  zincblende, wurtzite, cesium chloride, fluorite, perovskite, rutile, spinel, corundum,
  2H-MX2, graphite, h-BN) with tabulated room-temperature lattice constants [Å];
- ``random:sg<G>:<composition>:<seed>``: a random crystal from pyxtal (space group G,
  composition such as ``Fe4O8`` per cell, pyxtal's random state ``seed``).

Hydrogen is removed from every structure (it is nearly invisible in HAADF and HRTEM images and
CIFs place it inconsistently).

Train / held-out split (:func:`split_of`): by chemical system, so no held-out material shares its
set of elements with a training material (fcc Au, ``cif:Au`` and a random Au crystal fall in the
same split). The key is the sorted element set, e.g. ``"O-Sr-Ti"``; the split is ``"heldout"``
when the first 8 bytes of its SHA-256, read as a fraction of 2^64, are below
:data:`HELDOUT_FRACTION` (0.2). This depends only on the ID string, never on the Python
version or a random state.

Random crystals are reproducible for a fixed pyxtal version (the ``sim`` extra pins 1.1.5):
pyxtal's generator consumes its random state in a version-specific order.
"""
from __future__ import annotations

import functools
import hashlib
import math
import re
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .structure import SHIPPED, read_cif, shipped_path

HELDOUT_FRACTION = 0.2

#: Compound prototypes: formula -> lattice constants [Å] (a, or (a, c)).
ROCKSALT = {"NaCl": 5.64, "MgO": 4.212, "LiF": 4.03, "KCl": 6.29, "NiO": 4.177, "CaO": 4.81,
            "PbS": 5.936, "TiN": 4.24, "TiC": 4.328, "ZrN": 4.578, "CoO": 4.26, "BaO": 5.52,
            "SrO": 5.16, "AgCl": 5.55, "MnO": 4.445, "PbTe": 6.46, "SnTe": 6.32, "HfC": 4.64,
            "NbC": 4.47, "VN": 4.14, "KBr": 6.6, "LiCl": 5.13}
ZINCBLENDE = {"GaAs": 5.653, "InP": 5.869, "ZnS": 5.41, "CdTe": 6.48, "GaP": 5.451,
              "InAs": 6.058, "AlAs": 5.661, "SiC": 4.36, "BN": 3.615, "ZnSe": 5.668,
              "CuCl": 5.41, "GaSb": 6.096, "InSb": 6.479, "AlP": 5.463, "ZnTe": 6.1}
WURTZITE = {"ZnO": (3.25, 5.207), "GaN": (3.189, 5.185), "AlN": (3.112, 4.982),
            "CdS": (4.136, 6.714), "InN": (3.545, 5.703), "CdSe": (4.3, 7.01), "BeO": (2.698, 4.38)}
CESIUMCHLORIDE = {"CsCl": 4.123, "NiAl": 2.887, "CuZn": 2.95, "FeAl": 2.909, "CsBr": 4.29,
                  "CoAl": 2.862, "TiNi": 3.015}
FLUORITE = {"CaF2": 5.463, "CeO2": 5.411, "ZrO2": 5.07, "SrF2": 5.8, "BaF2": 6.2, "HfO2": 5.12,
            "PbF2": 5.94, "CdF2": 5.39}
PEROVSKITE = {"SrTiO3": 3.905, "BaTiO3": 4.0, "LaAlO3": 3.79, "KNbO3": 4.02, "CaTiO3": 3.84,
              "BaZrO3": 4.19, "SrZrO3": 4.1, "KTaO3": 3.989, "NaNbO3": 3.94, "SrRuO3": 3.93,
              "LaNiO3": 3.84, "BiFeO3": 3.96, "LaMnO3": 3.95, "SrVO3": 3.84}
RUTILE = {"TiO2": (4.594, 2.959, 0.305), "SnO2": (4.737, 3.186, 0.307),
          "RuO2": (4.49, 3.11, 0.306), "IrO2": (4.5, 3.15, 0.308), "MnO2": (4.4, 2.87, 0.302),
          "VO2": (4.55, 2.86, 0.3), "GeO2": (4.4, 2.86, 0.307), "CrO2": (4.42, 2.92, 0.303),
          "PbO2": (4.96, 3.39, 0.306)}
#: Spinels AB2O4 (origin choice 2): a [Å], oxygen x.
SPINEL = {"MgAl2O4": (8.083, 0.2624), "Fe3O4": (8.396, 0.2549), "Co3O4": (8.084, 0.2632),
          "ZnFe2O4": (8.44, 0.258), "NiFe2O4": (8.34, 0.257), "CoFe2O4": (8.39, 0.256)}
#: Corundum M2O3 (hexagonal setting): a, c [Å], metal z, oxygen x.
CORUNDUM = {"Al2O3": (4.759, 12.991, 0.3523, 0.3064), "Fe2O3": (5.035, 13.747, 0.3553, 0.3059),
            "Cr2O3": (4.959, 13.594, 0.3475, 0.3058), "V2O3": (4.952, 14.003, 0.3463, 0.3121)}
#: 2H transition-metal dichalcogenides MX2: a, c [Å], chalcogen z.
MX2_2H = {"MoS2": (3.16, 12.29, 0.621), "WS2": (3.153, 12.323, 0.622),
          "MoSe2": (3.289, 12.927, 0.621), "WSe2": (3.282, 12.96, 0.621)}
#: Elements (ASE reference structures) used as fcc/bcc/hcp/diamond prototypes.
_EXCLUDED = {"H", "He", "Ne", "Ar", "Kr", "Xe", "Tc", "Pm", "N", "O", "F", "Cl", "Br", "I"}

#: Element pools for random crystals: cations/metals and typical anions.
RANDOM_CATIONS = ("Li", "Na", "Mg", "Al", "Si", "K", "Ca", "Sc", "Ti", "V", "Cr", "Mn", "Fe",
                  "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "Sr", "Y", "Zr", "Nb", "Mo", "Ru", "Rh",
                  "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Ba", "La", "Ce", "Nd", "Gd", "Hf", "Ta",
                  "W", "Re", "Ir", "Pt", "Au", "Pb", "Bi")
RANDOM_ANIONS = ("O", "O", "O", "N", "S", "Se", "Te", "F", "Cl", "C", "P", "As", "B")
#: Stoichiometries of random crystals (last entry is the anion when an anion is drawn).
_STOICHIOMETRIES = ((1,), (1, 1), (1, 2), (2, 1), (2, 3), (1, 3), (1, 1, 3), (1, 2, 4),
                    (1, 1, 1), (1, 1, 2), (2, 1, 4))
_ID_RANDOM = re.compile(r"^random:sg(\d+):([A-Za-z0-9]+):(\d+)$")
_FORMULA = re.compile(r"([A-Z][a-z]?)(\d*)")

Kind = Literal["cif", "prototypes", "random", "all"]


class MaterialError(ValueError):
    """An unknown or malformed material ID, or a random crystal pyxtal cannot build."""


@dataclass(frozen=True)
class Material:
    """One catalogue entry; :meth:`atoms` builds the crystal (an ``ase.Atoms``, no hydrogen).

    Attributes:
        id: stable string ID (see the module docstring); ``from_id(id)`` rebuilds it.
        formula: chemical formula as written in the ID (per cell for random crystals).
        source: ``"cif"``, ``"prototype"`` or ``"random"``.
    """

    id: str
    formula: str
    source: str

    def atoms(self):
        """The crystal as a fresh ``ase.Atoms`` (periodic cell, hydrogen removed)."""
        return _build(self.id).copy()

    @property
    def elements(self) -> tuple[str, ...]:
        """Sorted element symbols."""
        return elements_of(self.formula)

    @property
    def split(self) -> str:
        """``"train"`` or ``"heldout"`` (:func:`split_of`)."""
        return split_of(self.id)


def elements_of(formula: str) -> tuple[str, ...]:
    """Sorted unique element symbols of a formula like ``"SrTiO3"``."""
    els = {m.group(1) for m in _FORMULA.finditer(formula)}
    if not els:
        raise MaterialError(f"no elements in formula {formula!r}")
    return tuple(sorted(els))


def split_of(material_id: str, heldout_fraction: float = HELDOUT_FRACTION) -> str:
    """``"train"`` or ``"heldout"`` for a material ID, by its chemical system (sorted elements).

    Deterministic: SHA-256 of ``"-".join(elements)``; held out when its first 8 bytes / 2^64 <
    ``heldout_fraction``. All materials of one chemical system share a split.
    """
    if not 0 <= heldout_fraction <= 1:
        raise ValueError(f"heldout_fraction must be in [0, 1], got {heldout_fraction}")
    key = "-".join(from_id(material_id).elements)
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0 ** 64
    return "heldout" if h < heldout_fraction else "train"


def _prototype_table() -> dict[str, tuple[str, str]]:
    """ID -> (prototype, formula) of every ASE prototype, in a fixed order."""
    from ase.data import chemical_symbols, reference_states

    out = {}
    for z in range(3, 84):
        sym, ref = chemical_symbols[z], reference_states[z]
        if sym in _EXCLUDED or not ref or ref.get("symmetry") not in ("fcc", "bcc", "hcp", "diamond"):
            continue
        out[f"proto:{ref['symmetry']}:{sym}"] = (ref["symmetry"], sym)
    for proto, table in (("rocksalt", ROCKSALT), ("zincblende", ZINCBLENDE), ("wurtzite", WURTZITE),
                         ("cesiumchloride", CESIUMCHLORIDE), ("fluorite", FLUORITE),
                         ("perovskite", PEROVSKITE), ("rutile", RUTILE), ("spinel", SPINEL),
                         ("corundum", CORUNDUM), ("mx2", MX2_2H)):
        for formula in table:
            out[f"proto:{proto}:{formula}"] = (proto, formula)
    out["proto:graphite:C"] = ("graphite", "C")
    out["proto:hbn:BN"] = ("hbn", "BN")
    return out


@functools.lru_cache(maxsize=None)
def _prototypes() -> dict[str, tuple[str, str]]:
    return _prototype_table()


def _species(formula: str) -> list[tuple[str, int]]:
    return [(m.group(1), int(m.group(2) or 1)) for m in _FORMULA.finditer(formula)]


def _build_prototype(proto: str, formula: str):
    from ase.build import bulk
    from ase.spacegroup import crystal

    if proto in ("fcc", "bcc", "hcp", "diamond"):
        return bulk(formula, proto)
    sp = [s for s, _ in _species(formula)]
    if proto == "rocksalt":
        return bulk(formula, "rocksalt", a=ROCKSALT[formula])
    if proto == "zincblende":
        return bulk(formula, "zincblende", a=ZINCBLENDE[formula])
    if proto == "wurtzite":
        a, c = WURTZITE[formula]
        return bulk(formula, "wurtzite", a=a, c=c)
    if proto == "cesiumchloride":
        return bulk(formula, "cesiumchloride", a=CESIUMCHLORIDE[formula])
    if proto == "fluorite":
        return bulk(formula, "fluorite", a=FLUORITE[formula])
    if proto == "perovskite":  # A at the corner, B at the body centre, O on the face centres
        return crystal(sp, [(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)], spacegroup=221,
                       cellpar=[PEROVSKITE[formula]] * 3 + [90] * 3)
    if proto == "rutile":
        a, c, u = RUTILE[formula]
        return crystal(sp, [(0, 0, 0), (u, u, 0)], spacegroup=136, cellpar=[a, a, c, 90, 90, 90])
    if proto == "spinel":  # A on 8a, B on 16d, O on 32e (origin choice 2)
        a, x = SPINEL[formula]
        if formula in ("Fe3O4", "Co3O4"):
            sp = [sp[0], sp[0], "O"]
        return crystal(sp, [(0.125, 0.125, 0.125), (0.5, 0.5, 0.5), (x, x, x)], spacegroup=227,
                       setting=2, cellpar=[a, a, a, 90, 90, 90])
    if proto == "corundum":
        a, c, z, x = CORUNDUM[formula]
        return crystal(sp, [(0, 0, z), (x, 0, 0.25)], spacegroup=167, cellpar=[a, a, c, 90, 90, 120])
    if proto == "mx2":
        a, c, z = MX2_2H[formula]
        return crystal(sp, [(1 / 3, 2 / 3, 0.25), (1 / 3, 2 / 3, z)], spacegroup=194,
                       cellpar=[a, a, c, 90, 90, 120])
    if proto == "graphite":
        return crystal(["C", "C"], [(0, 0, 0.25), (1 / 3, 2 / 3, 0.25)], spacegroup=194,
                       cellpar=[2.464, 2.464, 6.711, 90, 90, 120])
    if proto == "hbn":
        return crystal(["B", "N"], [(1 / 3, 2 / 3, 0.25), (2 / 3, 1 / 3, 0.25)], spacegroup=194,
                       cellpar=[2.504, 2.504, 6.66, 90, 90, 120])
    raise MaterialError(f"unknown prototype {proto!r}")


def _build_random(sg: int, composition: str, seed: int):
    species = _species(composition)
    with warnings.catch_warnings():  # pymatgen/pyxtal import-time and generation warnings
        warnings.simplefilter("ignore")
        try:
            from pyxtal import pyxtal
        except ImportError as exc:  # pragma: no cover - pyxtal is in the sim extra
            raise MaterialError("random crystals need pyxtal (pip install 'em-accel[sim]')") from exc
        c = pyxtal()
        try:
            c.from_random(3, sg, [s for s, _ in species], [n for _, n in species],
                          random_state=np.random.default_rng(seed))
        except Exception as exc:  # pyxtal raises its own error types for incompatible input
            raise MaterialError(f"pyxtal cannot build sg {sg} {composition} (seed {seed}): {exc}") from exc
        if not c.valid:
            raise MaterialError(f"pyxtal found no valid sg {sg} {composition} crystal (seed {seed})")
        return c.to_ase()


@functools.lru_cache(maxsize=512)
def _build(material_id: str):
    m = from_id(material_id)
    if m.source == "cif":
        atoms = read_cif(shipped_path(m.formula))
    elif m.source == "prototype":
        proto, formula = _prototypes()[material_id]
        atoms = _build_prototype(proto, formula)
    else:
        sg, comp, seed = _ID_RANDOM.match(material_id).groups()
        atoms = _build_random(int(sg), comp, int(seed))
    del atoms[[a.index for a in atoms if a.number == 1]]
    if len(atoms) == 0:
        raise MaterialError(f"{material_id} holds no atoms besides hydrogen")
    atoms.pbc = True
    return atoms


def from_id(material_id: str) -> Material:
    """The :class:`Material` of an ID (``cif:Si``, ``proto:fcc:Au``, ``random:sg62:Fe4O8:17``).

    Raises :class:`MaterialError` (a ValueError) for an unknown or malformed ID.
    """
    if not isinstance(material_id, str):
        raise TypeError(f"material_id must be a str, got {type(material_id).__name__}")
    if material_id.startswith("cif:"):
        name = material_id[4:]
        if name not in SHIPPED:
            raise MaterialError(f"unknown shipped CIF {name!r}; choose from {SHIPPED}")
        return Material(material_id, name, "cif")
    if material_id.startswith("proto:"):
        entry = _prototypes().get(material_id)
        if entry is None:
            raise MaterialError(f"unknown prototype ID {material_id!r} (see catalogue('prototypes'))")
        return Material(material_id, entry[1], "prototype")
    m = _ID_RANDOM.match(material_id)
    if m:
        sg = int(m.group(1))
        if not 1 <= sg <= 230:
            raise MaterialError(f"space group must be 1..230 in {material_id!r}")
        elements_of(m.group(2))
        return Material(material_id, m.group(2), "random")
    raise MaterialError(f"malformed material ID {material_id!r}; expected 'cif:NAME', "
                        "'proto:PROTOTYPE:FORMULA' or 'random:sgG:COMPOSITION:SEED'")


def random_crystal(seed: int, max_atoms: int = 48, min_space_group: int = 16,
                   attempts: int = 50, split: str | None = None) -> Material:
    """One random crystal, a pure function of ``seed`` (and the pyxtal version).

    Draws a space group in ``min_space_group``..230 (default 16: orthorhombic and up, whose
    low-index zone axes give orthogonal periodic boxes), a stoichiometry from a fixed list, metals
    from :data:`RANDOM_CATIONS` and (mostly) an anion from :data:`RANDOM_ANIONS`, and a number of
    formula units compatible with the space group's Wyckoff positions and ``max_atoms`` per cell;
    then asks pyxtal for a crystal. Incompatible or failed draws are redrawn (up to ``attempts``);
    with ``split`` ("train" / "heldout"), so are compositions of the other split (checked before
    pyxtal runs, since the split depends only on the elements).
    """
    with warnings.catch_warnings():  # pymatgen/pyxtal import-time warnings
        warnings.simplefilter("ignore")
        from pyxtal.symmetry import Group

    if not 1 <= min_space_group <= 230:
        raise ValueError(f"min_space_group must be in 1..230, got {min_space_group}")
    rng = np.random.default_rng([int(seed), 0x5EED])
    for _ in range(attempts):
        sg = int(rng.integers(min_space_group, 231))
        stoich = _STOICHIOMETRIES[rng.integers(len(_STOICHIOMETRIES))]
        n_cat = len(stoich) - 1 if len(stoich) > 1 and rng.random() < 0.8 else len(stoich)
        cations = list(rng.choice(RANDOM_CATIONS, size=n_cat, replace=False))
        anions = [] if n_cat == len(stoich) else [str(rng.choice(RANDOM_ANIONS))]
        species = [str(s) for s in cations + anions]
        if len(set(species)) != len(species):
            continue
        if split is not None and split_of(f"random:sg{sg}:{''.join(species)}:0") != split:
            continue  # the split depends only on the elements: skip pyxtal for the other split
        group = Group(sg)
        units = [z for z in (1, 2, 3, 4, 6, 8, 12, 16) if z * sum(stoich) <= max_atoms]
        rng.shuffle(units)
        for z in units:
            nums = [z * s for s in stoich]
            if not group.check_compatible(nums)[0]:
                continue
            comp = "".join(f"{s}{n}" for s, n in zip(species, nums))
            mid = f"random:sg{sg}:{comp}:{int(rng.integers(2 ** 31))}"
            try:
                _build(mid)
            except MaterialError:
                break
            return from_id(mid)
    raise MaterialError(f"no random crystal built from seed {seed} in {attempts} attempts")


def catalogue(kind: Kind = "all", n: int | None = None, seed: int = 0,
              split: str | None = None) -> list[Material]:
    """Catalogue entries, in a fixed order.

    Args:
        kind: ``"cif"`` (shipped CIFs), ``"prototypes"`` (ASE prototypes), ``"random"``
            (pyxtal random crystals) or ``"all"`` (CIFs, then prototypes, then random).
        n: for ``"random"``/``"all"``, the number of random crystals (default 32); for
            ``"cif"``/``"prototypes"``, keep a seeded random subset of ``n`` (None: all).
        seed: seeds random crystal ``i`` as ``random_crystal(seed * 100_003 + i)`` and the subset.
        split: keep only ``"train"`` or ``"heldout"`` materials (None: both).

    Building entries is lazy (``Material.atoms()``), except that random crystals are generated
    here (~0.05 s each) so every returned entry is valid.
    """
    if kind not in ("cif", "prototypes", "random", "all"):
        raise ValueError(f"kind must be 'cif', 'prototypes', 'random' or 'all', got {kind!r}")
    if split not in (None, "train", "heldout"):
        raise ValueError(f"split must be None, 'train' or 'heldout', got {split!r}")
    if n is not None and int(n) < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    out: list[Material] = []
    if kind in ("cif", "all"):
        out += [from_id(f"cif:{s}") for s in SHIPPED]
    if kind in ("prototypes", "all"):
        out += [from_id(i) for i in _prototypes()]
    if kind in ("cif", "prototypes") and n is not None and n < len(out):
        keep = np.sort(np.random.default_rng(seed).choice(len(out), int(n), replace=False))
        out = [out[i] for i in keep]
    if kind in ("random", "all"):
        out += [random_crystal(int(seed) * 100_003 + i) for i in range(32 if n is None else int(n))]
    if split is not None:
        out = [m for m in out if split_of(m.id) == split]
    return out


def min_distance(atoms, cutoff: float = 4.0) -> float:
    """Smallest interatomic distance [Å] in a periodic crystal, inf when none is below
    ``cutoff`` [Å] (a sanity check of a structure)."""
    from ase.neighborlist import neighbor_list

    d = neighbor_list("d", atoms, float(cutoff))
    return float(d.min()) if len(d) else math.inf
