"""Dataset generation (splits, resumable shards, Dask) and the simulate CLI."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("h5py")
pytest.importorskip("ase")

from em_accel.sim import exit_wave, zone_axis  # noqa: E402
from em_accel.sim.dataset import DatasetSpec, generate, load_dataset, plan  # noqa: E402

SPEC = dict(materials=("Si", "MgO", "SrTiO3"), energies=(200.0, 300.0), thicknesses=(8.0, 16.0),
            zones=((0, 0, 1),), extent=6.0, sampling=0.1, slice_thickness=2.0, shard_size=2,
            unseen_material_fraction=0.34, unseen_parameter_fraction=0.25, seed=1)


def test_plan_splits_are_disjoint_and_complete():
    units = plan(DatasetSpec(**SPEC))
    assert len(units) == 3 * 2
    mats = {u["material"] for u in units if "unseen_materials" in u["splits"]}
    assert len(mats) == 1 and all(set(u["splits"]) == {"unseen_materials"}
                                  for u in units if u["material"] in mats)
    held = {(u["energy"], t) for u in units for t, s in zip(u["thicknesses"], u["splits"])
            if s == "unseen_parameters"}
    assert len(held) == 1
    train = {(u["energy"], t) for u in units for t, s in zip(u["thicknesses"], u["splits"]) if s == "train"}
    assert not held & train


def test_generate_resume_and_contents(tmp_path):
    spec = DatasetSpec(**SPEC)
    first = generate(spec, tmp_path, scheduler="synchronous", progress=False)
    assert first["shards"] == 3 and first["written"] == 3 and first["waves"] == 12
    # a killed run: one shard missing, one stale temp file left behind
    shards = sorted((tmp_path / "shards").glob("shard-*.h5"))
    mtimes = {p.name: p.stat().st_mtime_ns for p in shards}
    os.remove(shards[1])
    (tmp_path / "shards" / "shard-00001.tmp999").write_bytes(b"partial")
    again = generate(spec, tmp_path, scheduler="synchronous", progress=False)
    assert again["written"] == 1 and again["skipped"] == 2
    assert shards[0].stat().st_mtime_ns == mtimes[shards[0].name]  # finished shards untouched
    waves, metas = load_dataset(tmp_path)
    assert len(waves) == 12 and {m["split"] for m in metas} <= {"train", "unseen_parameters",
                                                                 "unseen_materials"}
    # a stored wave equals a direct simulation of the same thickness
    m0 = metas[0]
    s = zone_axis(m0["material"], m0["zone"], extent=spec.extent, thickness=m0["thickness_A"])
    from em_accel.sim.potential import periodic_gpts

    direct = exit_wave(s, energy=m0["energy_keV"], gpts=periodic_gpts(s, spec.sampling),
                       slice_thickness=spec.slice_thickness)
    assert np.allclose(waves[0], direct.numpy(), atol=1e-4)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert len(manifest["shards"]) == 3
    with pytest.raises(ValueError, match="different spec"):
        generate(DatasetSpec(**{**SPEC, "seed": 2}), tmp_path, scheduler="synchronous", progress=False)


@pytest.mark.slow
def test_generate_on_dask_local_cluster(tmp_path):
    pytest.importorskip("distributed")
    spec = DatasetSpec(**{**SPEC, "materials": ("Si",), "energies": (200.0,)})
    out = generate(spec, tmp_path, scheduler="local", progress=False)
    assert out["written"] == 1 and len(load_dataset(tmp_path)[0]) == 2


def test_bad_spec():
    with pytest.raises(ValueError, match="energies"):
        plan(DatasetSpec(**{**SPEC, "energies": (0.0,)}))
    with pytest.raises(ValueError, match="materials"):
        plan(DatasetSpec(**{**SPEC, "materials": ()}))


def test_cli_simulate_writes_wave_and_png(tmp_path, capsys):
    from em_accel.cli import main

    out = tmp_path / "si.npy"
    assert main(["simulate", "Si", "--zone", "0", "0", "1", "--energy", "300", "--thickness", "10",
                 "--sampling", "0.1", "--extent", "5", "-o", str(out)]) == 0
    w = np.load(out)
    assert w.dtype == np.complex64 and w.shape == (55, 55)
    assert (tmp_path / "si.png").stat().st_size > 100
    summary = json.loads(capsys.readouterr().out)
    assert summary["structure"] == "Si16" and summary["energy_keV"] == 300.0


def test_cli_bad_inputs(tmp_path, capsys):
    from em_accel.cli import main
    from em_accel.sim.structure import read_cif

    bad = tmp_path / "bad.cif"
    bad.write_text("data_x\n_cell_length_a 3\nloop_\n_atom_site_label\n")
    with pytest.raises(ValueError, match="CIF"):
        read_cif(bad)
    out = str(tmp_path / "x.npy")
    for argv, msg in ((["simulate", str(bad), "-o", out], "malformed CIF"),
                      (["simulate", "Unobtainium", "-o", out], "no CIF file"),
                      (["simulate", "Si", "--energy", "-5", "--extent", "5", "--thickness", "5", "-o", out],
                       "energy"),
                      (["simulate", "Si", "--sampling", "0.6", "--extent", "5", "-o", out], "coarse")):
        assert main(argv) == 2
        assert msg in capsys.readouterr().err


def test_cif_reader_and_zone_axis():
    from em_accel.sim.structure import shipped_path

    s = zone_axis(str(shipped_path("GaAs")), (1, 1, 0), extent=12.0, thickness=10.0)
    assert s.cell[2] == pytest.approx(10.0)
    assert abs(s.cell[0] - 11.306) < 0.01 or abs(s.cell[1] - 11.99) < 0.1
    with pytest.raises(ValueError, match="zone axis"):
        zone_axis("Si", (0, 0, 0))
    assert torch.is_tensor(exit_wave(s, energy=200, sampling=0.1, slice_thickness=2.5))
