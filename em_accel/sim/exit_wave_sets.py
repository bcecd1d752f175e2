"""Exit-wave datasets for phase recovery from one amplitude (thesis ch. 7), per-wave random draws.

Every wave is one independent draw of the thesis's simulation parameters: material, voltage,
zone axis [uvw] with u, v, w ∈ {0..zone_max} (not all zero), a tilt perturbation N(0, σ) on
each axis of the unit zone-axis vector, a rotation about the beam, lateral width and thickness,
and the objective-lens settings of the CTEM image that the thesis drew alongside (recorded,
used only to make aberrated inputs). The exit wave's central crop is stored as complex64
through the resumable HDF5 shards of :mod:`em_accel.sim.dataset`, with every parameter in the
wave's metadata.

Evaluation splits (each wave has one; the thesis's three generalisation levels):

- ``train``;
- ``unseen_transforms``: training materials and training parameter distribution, new draws
  (new orientations, thicknesses, crops) never trained on;
- ``unseen_settings``: training materials at simulation settings held out of training: the
  voltage ``energies_unseen`` and thicknesses in the held-out band ``depth_unseen``;
- ``unseen_materials``: materials that never enter training, training distribution.

Sizes: the thesis used 512² grids over 50–100 Å plus 8 Å padding, and a 320² crop. ``scale``
multiplies all lateral sizes (grid, crop, width, padding) so sampling (0.13–0.23 Å/px) is
unchanged; the CPU presets use ``scale = 0.25`` (128² grids, 80² crops).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import dataset as _ds

SPLITS = ("train", "unseen_transforms", "unseen_settings", "unseen_materials")


@dataclasses.dataclass
class ExitWaveSetSpec:
    """One dataset. Lengths in Å, energies in keV, aberrations as the thesis (nm, μm)."""

    name: str
    materials: Sequence[str]
    heldout_materials: Sequence[str] = ()
    counts: dict = dataclasses.field(default_factory=lambda: {
        "train": 256, "unseen_transforms": 48, "unseen_settings": 48, "unseen_materials": 48})
    energies: Sequence[float] = (80.0, 300.0)
    energies_unseen: Sequence[float] = (200.0,)
    depth: tuple[float, float] = (50.0, 1000.0)
    depth_unseen: tuple[float, float] | None = None   # held-out thickness band inside ``depth``
    width: tuple[float, float] = (50.0, 100.0)
    pad: float = 8.0
    gpts: int = 512
    crop: int = 320
    scale: float = 1.0
    zone_max: int = 2
    tilt_sigma: float = 0.1
    slice_thickness: float = 1.0
    terms: int = 3
    method: str = "deposit"
    shard_size: int = 16
    seed: int = 0

    def validate(self) -> None:
        if not self.materials:
            raise ValueError("materials must not be empty")
        if set(self.materials) & set(self.heldout_materials):
            raise ValueError("materials and heldout_materials overlap: "
                             f"{sorted(set(self.materials) & set(self.heldout_materials))}")
        bad = set(self.counts) - set(SPLITS)
        if bad:
            raise ValueError(f"counts has unknown splits {sorted(bad)}; use {SPLITS}")
        if self.counts.get("unseen_materials") and not self.heldout_materials:
            raise ValueError("unseen_materials needs heldout_materials")
        lo, hi = self.depth
        if not 0 < lo < hi:
            raise ValueError(f"depth must be (lo, hi) with 0 < lo < hi Å, got {self.depth}")
        if self.depth_unseen is not None and not lo <= self.depth_unseen[0] < self.depth_unseen[1] <= hi:
            raise ValueError(f"depth_unseen {self.depth_unseen} must be a band inside {self.depth}")
        if self.terms not in (1, 3):
            raise ValueError(f"terms must be 1 or 3, got {self.terms}")
        if self.crop_px > self.gpts_px:
            raise ValueError(f"crop {self.crop_px} exceeds the grid {self.gpts_px}")

    @property
    def gpts_px(self) -> int:
        return int(round(self.gpts * self.scale))

    @property
    def crop_px(self) -> int:
        return int(round(self.crop * self.scale))


def _uniform_outside(rng: np.random.Generator, lo: float, hi: float,
                     band: tuple[float, float] | None) -> float:
    """U(lo, hi) excluding ``band`` (a held-out interval), by rescaling one uniform draw."""
    if band is None:
        return float(rng.uniform(lo, hi))
    keep = (band[0] - lo) + (hi - band[1])
    u = float(rng.uniform(0, keep))
    return lo + u if u < band[0] - lo else band[1] + (u - (band[0] - lo))


def draw_parameters(spec: ExitWaveSetSpec, split: str, index: int) -> dict:
    """The random parameters of wave ``index`` of ``split``: deterministic in (seed, split, index)."""
    key = int.from_bytes(hashlib.sha256(f"{spec.seed}/{split}/{index}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(key)
    mats = spec.heldout_materials if split == "unseen_materials" else spec.materials
    zones = [z for z in np.ndindex(*(spec.zone_max + 1,) * 3) if any(z)]
    lo, hi = spec.depth
    if split == "unseen_settings":
        energy = float(rng.choice(spec.energies_unseen))
        depth = float(rng.uniform(*spec.depth_unseen)) if spec.depth_unseen else float(rng.uniform(lo, hi))
    else:
        energy = float(rng.choice(spec.energies))
        depth = _uniform_outside(rng, lo, hi, spec.depth_unseen)
    s = spec.scale
    return {
        "split": split, "index": index, "material": str(mats[int(rng.integers(len(mats)))]),
        "energy_keV": energy, "thickness_A": depth,
        "zone": [int(v) for v in zones[int(rng.integers(len(zones)))]],
        "tilt": [float(v) for v in rng.normal(0.0, spec.tilt_sigma, 3)],
        "in_plane_rad": float(rng.uniform(0, 2 * math.pi)),
        "width_A": float(rng.uniform(*spec.width)) * s, "pad_A": spec.pad * s,
        # objective-lens settings of the thesis's CTEM images (exit waves do not depend on them)
        "aperture_mrad": float(rng.uniform(5, 30)), "focal_spread": float(rng.uniform(0, 20)),
        "convergence_mrad": float(rng.uniform(0.1, 2)), "C10_nm": float(rng.uniform(-30, 30)),
        "C12_nm": float(rng.uniform(-50, 50)), "phi12_deg": float(rng.uniform(0, 180)),
        "C21_nm": float(rng.uniform(-1000, 1000)), "C23_nm": float(rng.uniform(-1000, 1000)),
        "C30_um": float(rng.uniform(-500, 500)),
    }


def simulate_wave(spec: ExitWaveSetSpec, params: dict, device: str | None = None
                  ) -> tuple[np.ndarray, dict]:
    """The exit wave's central ``crop`` complex64 [C, C] and its full metadata."""
    from .crystal_block import crystal_block
    from .multislice import multislice, plane_wave
    from .potential import Potential

    s = crystal_block(material_atoms(params["material"]), params["zone"], params["width_A"], params["thickness_A"], params["pad_A"],
                      params["tilt"], params["in_plane_rad"])
    pot = Potential(s, gpts=spec.gpts_px, slice_thickness=spec.slice_thickness, terms=spec.terms,
                    method=spec.method, device=device)
    wave = multislice(plane_wave(pot.grid, device=device), pot, params["energy_keV"])
    w = _ds._center_crop(wave.cpu().numpy(), spec.crop_px).astype(np.complex64)
    meta = dict(params, formula=s.formula, atoms=len(s), sampling_A=list(pot.grid.sampling),
                terms=spec.terms, method=spec.method, slice_thickness_A=spec.slice_thickness,
                gpts=spec.gpts_px, crop=spec.crop_px, set=spec.name)
    return w, meta


def material_atoms(material: str):
    """The crystal of a material ID (``em_accel.sim.materials``: ``cif:Si``, ``proto:fcc:Au``,
    ``random:sg62:Fe4O8:17``) or a shipped name / CIF path, hydrogen removed."""
    if ":" in material and not Path(material).exists():
        from .materials import from_id

        return from_id(material).atoms()
    from .structure import load

    return load(material)


#: CPU presets: lateral sizes x 0.25 (128² grids, 80² crops), a few hundred waves per set.
CPU_SCALE = 0.25


def preset(name: str, profile: str = "cpu", seed: int = 0) -> ExitWaveSetSpec:
    """The four sets: ``single`` (SrTiO3, thesis: one CIF), ``restricted`` (64 training
    structures, the thesis's restricted distribution), ``broad`` (every training structure,
    the thesis's full distribution) and ``broad_n1`` (``broad`` with Kirkland n = 1).

    Every set has held-out materials for its ``unseen_materials`` split (the catalogue's
    held-out chemical systems, never in any set's training split) except ``single``.
    ``profile="thesis"`` uses the thesis's sizes (512² grids, 320² crops, thickness up to
    1000 Å, thousands of waves); ``"cpu"`` shrinks lateral sizes by :data:`CPU_SCALE` and
    the thickness range (50–300 Å; restricted keeps the thesis's 50–237.5 Å) and uses 2 Å
    slices (thesis: 1 Å) to fit a 2-core CPU.
    """
    from .materials import catalogue

    if profile not in ("cpu", "thesis"):
        raise ValueError(f"profile must be 'cpu' or 'thesis', got {profile!r}")
    cpu = profile == "cpu"
    base = dict(scale=CPU_SCALE if cpu else 1.0, seed=seed, slice_thickness=2.0 if cpu else 1.0)
    counts = ({"train": 256, "unseen_transforms": 32, "unseen_settings": 32, "unseen_materials": 48}
              if cpu else {"train": 24530, "unseen_transforms": 3399, "unseen_settings": 3000,
                           "unseen_materials": 8395})
    kinds = ("cif", "prototypes") if cpu else ("all",)
    train = [m.id for k in kinds for m in catalogue(k, split="train")]
    held = [m.id for k in kinds for m in catalogue(k, split="heldout")]
    if name == "single":
        return ExitWaveSetSpec(name, ["cif:SrTiO3"], (), dict(counts, unseen_materials=0),
                               depth=(50.0, 300.0) if cpu else (50.0, 1000.0),
                               depth_unseen=(150.0, 180.0) if cpu else (400.0, 500.0), **base)
    if name == "restricted":
        rng = np.random.default_rng(seed)
        pick = sorted(rng.choice(len(train), min(64, len(train)), replace=False).tolist())
        return ExitWaveSetSpec(name, [train[i] for i in pick], held, counts,
                               depth=(50.0, 237.5), depth_unseen=(130.0, 155.0),
                               width=(50.0, 62.5), zone_max=1, tilt_sigma=0.025, **base)
    if name in ("broad", "broad_n1"):
        return ExitWaveSetSpec(name, train, held, counts,
                               depth=(50.0, 300.0) if cpu else (50.0, 1000.0),
                               depth_unseen=(150.0, 180.0) if cpu else (400.0, 500.0),
                               terms=1 if name == "broad_n1" else 3, **base)
    raise ValueError(f"unknown set {name!r}; choose single, restricted, broad, broad_n1")


def write_shard(spec_dict: dict, units: list[dict], path: str, device: str | None = None) -> str:
    """Simulate the waves ``units`` (parameter dicts) into one shard (a picklable worker)."""
    spec = ExitWaveSetSpec(**spec_dict)
    waves, metas = zip(*(simulate_wave(spec, u, device) for u in units))
    return _ds.write_waves(path, list(waves), list(metas))


def _unit_keys(counts: dict) -> list[tuple[str, int]]:
    """(split, index) of every wave, in the order of the set's shards."""
    return [(split, i) for split in SPLITS for i in range(counts.get(split, 0))]


def plan(spec: ExitWaveSetSpec) -> list[dict]:
    """Every wave's parameters, split by split."""
    spec.validate()
    return [draw_parameters(spec, split, i) for split, i in _unit_keys(spec.counts)]


def _shard_keys(counts: dict, shard_size: int) -> list[tuple[tuple[str, int], ...]]:
    keys = _unit_keys(counts)
    return [tuple(keys[i:i + shard_size]) for i in range(0, len(keys), shard_size)]


def reuse_shards(spec: ExitWaveSetSpec, out_dir: str | Path, source: str | Path) -> int:
    """Link into ``out_dir`` every finished shard of an earlier set under ``source`` that holds
    exactly the waves a shard of ``spec`` holds; returns how many. Draws depend only on the
    spec, split and index, so a set that differs from ``spec`` in its split counts alone (e.g.
    fewer training waves) made those waves already: growing a set then simulates only the new
    ones. Hard links where the file system allows (copies otherwise); existing shards are kept."""
    import json
    import os
    import shutil

    source, out_dir = Path(source), Path(out_dir)
    old = json.loads((source / "manifest.json").read_text())["spec"]
    new = json.loads(json.dumps(dataclasses.asdict(spec)))
    differ = sorted(k for k in set(old) | set(new) if k != "counts" and old.get(k) != new.get(k))
    if differ:
        raise ValueError(f"{source} was made with a different spec (fields {differ}); only the "
                         "split counts may differ for its shards to be reused")
    have = {k: j for j, k in enumerate(_shard_keys(old["counts"], old["shard_size"]))}
    (out_dir / "shards").mkdir(parents=True, exist_ok=True)
    linked = 0
    for i, key in enumerate(_shard_keys(spec.counts, spec.shard_size)):
        j = have.get(key)
        if j is None:
            continue
        src, dst = _ds._shard_path(source, j), _ds._shard_path(out_dir, i)
        if dst.exists() or not src.exists():
            continue
        try:
            os.link(src, dst)
        except OSError:
            tmp = dst.with_name(dst.name + ".tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        linked += 1
    return linked


def generate(spec: ExitWaveSetSpec, out_dir: str | Path, scheduler: str | None = "synchronous", *,
             device: str | None = None, progress: bool | Callable[[int, int], None] = True) -> dict:
    """Generate (or resume) ``spec`` under ``out_dir``; returns the run summary with
    ``waves_per_second`` (of the waves written by this call)."""
    units = plan(spec)
    shards = [units[i:i + spec.shard_size] for i in range(0, len(units), spec.shard_size)]
    out = _ds.run_shards(out_dir, dataclasses.asdict(spec), shards, write_shard, scheduler,
                         device=device, progress=progress)
    out["waves"] = sum(len(shards[i]) for i in out.pop("todo"))
    out["waves_per_second"] = out["waves"] / out["seconds"] if out["seconds"] > 0 and out["waves"] else 0.0
    out["set"] = spec.name
    return out


def load_set(out_dir: str | Path, split: str | None = None) -> tuple[np.ndarray, list[dict]]:
    """Finished waves complex64 [N, C, C] and their metadata (optionally one split)."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    waves, metas = _ds.load_dataset(out_dir)
    keep = [i for i, m in enumerate(metas) if split is None or m["split"] == split]
    if not keep:
        return np.zeros((0, 0, 0), np.complex64), []
    return np.stack([waves[i] for i in keep]), [metas[i] for i in keep]


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m em_accel.sim.exit_wave_sets",
                                description="Generate (or resume) exit-wave sets for phase recovery.")
    p.add_argument("--set", nargs="+", default=["single", "restricted", "broad"],
                   choices=["single", "restricted", "broad", "broad_n1"])
    p.add_argument("--profile", default="cpu", choices=["cpu", "thesis"])
    p.add_argument("--root", type=Path, required=True, help="one sub-directory per set")
    p.add_argument("--device", default=None, help="torch device (cuda when there is one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-waves", type=int, default=None,
                   help="training waves per set (default: the preset's); the held-out splits "
                        "are the same waves whatever this is (draws depend on seed, split, index)")
    p.add_argument("--reuse", type=Path, default=None, metavar="ROOT",
                   help="an earlier --root of the same sets with other split counts (e.g. fewer "
                        "training waves): its waves are linked in, not simulated again")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.train_waves is not None and a.train_waves < 1:
        p.error(f"--train-waves must be >= 1, got {a.train_waves}")
    for name in a.set:
        spec = preset(name, a.profile, a.seed)
        if a.train_waves is not None:
            spec.counts = dict(spec.counts, train=a.train_waves)
        reused = reuse_shards(spec, a.root / name, a.reuse / name) if a.reuse is not None else 0
        out = generate(spec, a.root / name, device=a.device, progress=not a.no_progress)
        print(json.dumps({**out, "shards_reused": reused}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
