"""Exit-wave datasets at scale: materials x voltages x thicknesses x zone axes, on Dask.

Like the thesis' cITEM datasets (ch. 7), with three splits: ``train``, ``unseen_parameters``
(held-out (voltage, thickness) pairs of training materials) and ``unseen_materials`` (held-out
materials). Work is cut into shards; each shard is one HDF5 file written to a temporary name and
renamed when complete, so a killed run restarted on the same directory redoes only unfinished
shards. One multislice run per (material, zone, voltage) records every requested thickness.

Layout of ``out_dir``::

    manifest.json            the spec, sample table and split of every sample
    shards/shard-00000.h5    waves: complex64 [n, H, W]; meta: JSON per wave (attrs)
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .._atomic import replace_durably, write_text_atomic

SPLITS = ("train", "unseen_parameters", "unseen_materials")


@dataclasses.dataclass
class DatasetSpec:
    """What to simulate. Lengths in Å, energies in keV."""

    materials: Sequence[str] = ("Si", "SrTiO3", "GaAs", "MgO", "Au", "Cu", "PbTiO3")
    energies: Sequence[float] = (80.0, 200.0, 300.0)
    thicknesses: Sequence[float] = (50.0, 100.0, 200.0)
    zones: Sequence[Sequence[int]] = ((0, 0, 1), (0, 1, 1), (1, 1, 1))
    extent: float = 20.0
    sampling: float = 0.05
    slice_thickness: float = 2.0
    terms: int = 3
    method: str = "exact"
    crop: int | None = None          # centre-crop to crop x crop pixels (None: full grid)
    gpts: int | None = None          # fixed grid (overrides sampling); waves then share a shape
    shard_size: int = 8              # (material, zone, energy) units per shard
    unseen_material_fraction: float = 0.2
    unseen_parameter_fraction: float = 0.2
    seed: int = 0

    def validate(self) -> None:
        if not self.materials:
            raise ValueError("materials must not be empty")
        for name, seq in (("energies", self.energies), ("thicknesses", self.thicknesses)):
            if not seq or any(not (math.isfinite(float(v)) and float(v) > 0) for v in seq):
                raise ValueError(f"{name} must be a non-empty list of values > 0, got {list(seq)}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {self.shard_size}")
        for name in ("unseen_material_fraction", "unseen_parameter_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


def plan(spec: DatasetSpec) -> list[dict]:
    """Work units: one per (material, zone, energy), each listing its thicknesses and splits."""
    spec.validate()
    rng = np.random.default_rng(spec.seed)
    materials = list(spec.materials)
    n_unseen = int(round(spec.unseen_material_fraction * len(materials)))
    unseen_mat = set(rng.permutation(materials)[:n_unseen].tolist()) if len(materials) > 1 else set()
    pairs = [(float(e), float(t)) for e in spec.energies for t in spec.thicknesses]
    n_pairs = int(round(spec.unseen_parameter_fraction * len(pairs)))
    held = {pairs[i] for i in rng.permutation(len(pairs))[:n_pairs]} if len(pairs) > 1 else set()
    units = []
    for m in materials:
        for z in spec.zones:
            for e in spec.energies:
                splits = []
                for t in spec.thicknesses:
                    if m in unseen_mat:
                        splits.append("unseen_materials")
                    elif (float(e), float(t)) in held:
                        splits.append("unseen_parameters")
                    else:
                        splits.append("train")
                units.append({"material": str(m), "zone": [int(x) for x in z], "energy": float(e),
                              "thicknesses": [float(t) for t in spec.thicknesses], "splits": splits})
    return units


def _shard_path(out_dir: Path, index: int) -> Path:
    return out_dir / "shards" / f"shard-{index:05d}.h5"


def _center_crop(w: np.ndarray, crop: int | None) -> np.ndarray:
    if crop is None:
        return w
    h, v = w.shape[-2:]
    if crop > min(h, v):
        raise ValueError(f"crop {crop} exceeds the grid {h} x {v}; enlarge extent or sampling")
    a, b = (h - crop) // 2, (v - crop) // 2
    return w[..., a:a + crop, b:b + crop]


def simulate_unit(spec: DatasetSpec, unit: dict, device: str | None = None) -> tuple[np.ndarray, list[dict]]:
    """Exit waves [T, H, W] of one unit (all its thicknesses from one multislice run)."""
    import torch

    from .multislice import multislice, plane_wave
    from .potential import Potential, periodic_gpts
    from .structure import zone_axis

    tmax = max(unit["thicknesses"])
    s = zone_axis(unit["material"], unit["zone"], extent=spec.extent, thickness=tmax)
    gpts = spec.gpts or periodic_gpts(s, spec.sampling)
    pot = Potential(s, gpts=gpts, slice_thickness=spec.slice_thickness,
                    terms=spec.terms, method=spec.method, device=device)
    dz = pot.thicknesses[0]
    counts = [max(1, min(pot.num_slices, int(round(t / dz)))) for t in unit["thicknesses"]]
    waves = multislice(plane_wave(pot.grid, device=device), pot, unit["energy"],
                       exit_planes=sorted(set(counts)))
    index = {c: i for i, c in enumerate(sorted(set(counts)))}
    out = torch.stack([waves[index[c]] for c in counts]).cpu().numpy()
    out = _center_crop(out, spec.crop)
    meta = [{"material": unit["material"], "formula": s.formula, "zone": unit["zone"],
             "energy_keV": unit["energy"], "thickness_A": c * dz, "requested_thickness_A": t,
             "split": sp, "sampling_A": list(pot.grid.sampling), "terms": spec.terms,
             "method": spec.method}
            for c, t, sp in zip(counts, unit["thicknesses"], unit["splits"])]
    return out.astype(np.complex64), meta


def write_shard(spec_dict: dict, units: list[dict], path: str, device: str | None = None) -> str:
    """Simulate ``units`` and write one shard atomically (temp file, then rename)."""
    spec = DatasetSpec(**spec_dict)
    waves, metas = [], []
    for u in units:
        w, m = simulate_unit(spec, u, device)
        waves.extend(list(w))
        metas.extend(m)
    return write_waves(path, waves, metas)


def write_waves(path: str | Path, waves: list[np.ndarray], metas: list[dict]) -> str:
    """Write waves and their per-wave metadata (JSON) as one shard, atomically."""
    import h5py

    path = Path(path)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with h5py.File(tmp, "w") as f:
        shapes = {w.shape for w in waves}
        if len(shapes) == 1:
            f.create_dataset("waves", data=np.stack(waves))
        else:  # different lateral sizes: one dataset per wave
            g = f.create_group("waves")
            for i, w in enumerate(waves):
                g.create_dataset(f"{i:05d}", data=w)
        f.attrs["meta"] = json.dumps(metas)
    replace_durably(tmp, path)
    return str(path)


def generate(spec: DatasetSpec, out_dir: str | Path, scheduler: str | None = "local", *,
             device: str | None = None, progress: bool | Callable[[int, int], None] = True) -> dict:
    """Generate (or resume) a dataset under ``out_dir``.

    Args:
        scheduler: "local" (a dask.distributed LocalCluster), "synchronous" (no cluster: in this
            process), or a scheduler address such as "tcp://host:8786" to scale out.
        progress: show a progress bar (tqdm), or a callback(done, total).
    Returns:
        summary dict: shards total / written now / skipped, waves, seconds, waves_per_second.
    """
    units = plan(spec)
    shards = [units[i:i + spec.shard_size] for i in range(0, len(units), spec.shard_size)]
    out = run_shards(out_dir, dataclasses.asdict(spec), shards, write_shard, scheduler,
                     device=device, progress=progress, extra_manifest={"units": units})
    done = set(out.pop("todo"))
    out["waves"] = sum(len(u["thicknesses"]) for i in done for u in shards[i])
    seconds = out["seconds"]
    out["waves_per_second"] = out["waves"] / seconds if seconds > 0 and out["waves"] else 0.0
    return out


def run_shards(out_dir: str | Path, spec_dict: dict, shards: list[list[dict]],
               writer: Callable[[dict, list[dict], str, str | None], str],
               scheduler: str | None = "local", *, device: str | None = None,
               progress: bool | Callable[[int, int], None] = True,
               extra_manifest: dict | None = None) -> dict:
    """Run ``writer(spec_dict, shard_units, path, device)`` for every unfinished shard.

    The shared engine of resumable datasets: ``manifest.json`` records ``spec_dict`` (a rerun
    with a different spec in the same directory is refused), each shard is written atomically
    by ``writer`` (a picklable top-level function, e.g. :func:`write_shard`), and shards whose
    file exists are skipped. Returns shards total / written / skipped, seconds and ``todo``
    (the indices written now).
    """
    out_dir = Path(out_dir)
    (out_dir / "shards").mkdir(parents=True, exist_ok=True)
    manifest = {"spec": spec_dict, **(extra_manifest or {}),
                "shards": [str(_shard_path(out_dir, i).relative_to(out_dir)) for i in range(len(shards))]}
    mpath = out_dir / "manifest.json"
    if mpath.exists():
        old = json.loads(mpath.read_text())
        if old.get("spec") != json.loads(json.dumps(manifest["spec"])):
            raise ValueError(f"{out_dir} holds a dataset with a different spec; use a new directory")
    else:
        write_text_atomic(mpath, json.dumps(manifest, indent=1))
    todo = [i for i in range(len(shards)) if not _shard_path(out_dir, i).exists()]
    t0 = time.perf_counter()
    bar = None
    if progress is True:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(shards), initial=len(shards) - len(todo), desc="shards", unit="shard")

    def tick(done: int) -> None:
        if bar is not None:
            bar.update(1)
        elif callable(progress):
            progress(done, len(shards))

    done = len(shards) - len(todo)
    if scheduler == "synchronous":
        for i in todo:
            writer(spec_dict, shards[i], str(_shard_path(out_dir, i)), device)
            done += 1
            tick(done)
    else:
        from dask.distributed import Client, LocalCluster, as_completed

        cluster = None
        if scheduler in (None, "local"):
            cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                   dashboard_address=None)
            client = Client(cluster)
        else:
            client = Client(scheduler)
        try:
            futures = [client.submit(writer, spec_dict, shards[i], str(_shard_path(out_dir, i)),
                                     device, key=f"em-accel-shard-{i}-{out_dir.name}", pure=False)
                       for i in todo]
            for fut in as_completed(futures):
                fut.result()
                done += 1
                tick(done)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    if bar is not None:
        bar.close()
    return {"shards": len(shards), "written": len(todo), "skipped": len(shards) - len(todo),
            "seconds": time.perf_counter() - t0, "todo": todo}


def load_dataset(out_dir: str | Path, split: str | None = None) -> tuple[list[np.ndarray], list[dict]]:
    """All finished waves and their metadata (optionally one split)."""
    import h5py

    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    waves, metas = [], []
    for path in sorted((Path(out_dir) / "shards").glob("shard-*.h5")):
        with h5py.File(path, "r") as f:
            meta = json.loads(f.attrs["meta"])
            node = f["waves"]
            arrs = list(node[()]) if isinstance(node, h5py.Dataset) else [node[k][()] for k in sorted(node)]
        for w, m in zip(arrs, meta):
            if split is None or m["split"] == split:
                waves.append(w)
                metas.append(m)
    return waves, metas
