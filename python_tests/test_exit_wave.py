"""Exit-wave phase recovery: crystal blocks, per-wave datasets, the networks, metrics, the
recipe (resume), reconstruct_exit_wave (any size, named errors) and ``em-accel reconstruct``."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("h5py")
pytest.importorskip("ase")

from em_accel.models.exit_wave import (AmplitudeError, AmplitudeTypeError,  # noqa: E402
                                       ExitWaveDiscriminator, ExitWaveNet, LSGANBalance,
                                       global_offset, load_exit_wave_weights, phasor_loss,
                                       reconstruct_exit_wave, rotate)
from em_accel.models.exit_wave_metrics import (baselines, constant_errors, fit_constants,  # noqa: E402
                                               paired_vs_constant, phase_errors, phasor)
from em_accel.sim import exit_wave_sets as ews  # noqa: E402
from em_accel.sim.crystal_block import crystal_block  # noqa: E402

TINY = dict(name="tiny", materials=["Si", "MgO"], heldout_materials=["Cu"],
            counts={"train": 6, "unseen_transforms": 2, "unseen_settings": 2, "unseen_materials": 2},
            depth=(8.0, 24.0), depth_unseen=(14.0, 16.0), width=(20.0, 24.0), pad=8.0,
            gpts=160, crop=96, scale=0.25, slice_thickness=2.0, shard_size=4, seed=3)


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("ews")
    spec = ews.ExitWaveSetSpec(**TINY)
    summary = ews.generate(spec, root, progress=False)
    return root, spec, summary


def test_crystal_block_fills_the_box_with_vacuum_padding():
    s = crystal_block("Si", (0, 0, 1), width=20.0, depth=30.0, pad=4.0)
    assert s.cell == (28.0, 28.0, 30.0)
    xy = s.positions[:, :2]
    assert xy.min() >= 4.0 - 1e-9 and xy.max() <= 24.0 + 1e-9
    # diamond Si has 8 atoms per 5.431^3 Å^3
    assert abs(len(s) / (20 * 20 * 30) - 8 / 5.431 ** 3) < 0.1 * 8 / 5.431 ** 3
    # [001] without tilt: atoms stack in columns, so few distinct projected positions
    cols = np.unique(np.round(xy, 2), axis=0)
    assert len(cols) < len(s) / 3
    tilted = crystal_block("Si", (0, 0, 1), width=20.0, depth=30.0, pad=4.0, tilt=(0.1, 0.0, 0.0))
    assert len(np.unique(np.round(tilted.positions[:, :2], 2), axis=0)) > 2 * len(cols)


def test_parameters_follow_the_splits():
    spec = ews.ExitWaveSetSpec(**dict(TINY, counts={"train": 40, "unseen_settings": 20,
                                                    "unseen_materials": 5}))
    units = ews.plan(spec)
    assert units == ews.plan(spec)  # deterministic
    train = [u for u in units if u["split"] == "train"]
    held = [u for u in units if u["split"] == "unseen_settings"]
    assert {u["energy_keV"] for u in train} <= {80.0, 300.0}
    assert {u["energy_keV"] for u in held} == {200.0}
    assert all(not 14.0 <= u["thickness_A"] <= 16.0 for u in train)
    assert all(14.0 <= u["thickness_A"] <= 16.0 for u in held)
    assert {u["material"] for u in units if u["split"] == "unseen_materials"} == {"Cu"}
    assert all(max(u["zone"]) <= 2 and any(u["zone"]) for u in units)
    with pytest.raises(ValueError, match="overlap"):
        ews.ExitWaveSetSpec(**dict(TINY, heldout_materials=["Si"])).validate()


def test_generate_records_every_parameter_and_resumes(tiny_set):
    root, spec, summary = tiny_set
    assert summary["waves"] == 12 and summary["written"] == 3
    waves, metas = ews.load_set(root)
    assert waves.shape == (12, 24, 24) and waves.dtype == np.complex64
    for key in ("material", "energy_keV", "thickness_A", "zone", "tilt", "in_plane_rad",
                "width_A", "C10_nm", "C30_um", "sampling_A", "terms", "split"):
        assert key in metas[0]
    # vacuum-normalised exit waves: |psi| ~ 1 on average, non-trivial phase
    assert 0.5 < np.abs(waves).mean() < 1.5 and np.angle(waves).std() > 0.05
    again = ews.generate(spec, root, progress=False)
    assert again["written"] == 0 and again["skipped"] == 3
    with pytest.raises(ValueError, match="different spec"):
        ews.generate(dataclasses.replace(spec, seed=4), root, progress=False)


def test_growing_a_set_reuses_the_waves_it_has(tiny_set, tmp_path):
    root, spec, _ = tiny_set
    # 8 training waves in shards of 4: the first shard (train 0-3) is the old set's first
    grown = dataclasses.replace(spec, counts=dict(spec.counts, train=8))
    assert ews.reuse_shards(grown, tmp_path, root) == 1
    assert ews.reuse_shards(grown, tmp_path, root) == 0  # kept, not linked twice
    summary = ews.generate(grown, tmp_path, progress=False)
    assert summary["skipped"] == 1 and summary["written"] == 3
    for split, n in (("train", 6), ("unseen_materials", 2)):
        (old, old_meta), (new, new_meta) = ews.load_set(root, split), ews.load_set(tmp_path, split)
        assert np.array_equal(new[:n], old) and new_meta[:n] == old_meta
    with pytest.raises(ValueError, match="seed"):
        ews.reuse_shards(dataclasses.replace(grown, seed=4), tmp_path / "x", root)


def test_network_outputs_unit_phasors_at_any_multiple_size():
    torch.manual_seed(0)
    net = ExitWaveNet(width=0.125, blocks=1)  # train mode: batch statistics scale the head
    for h, w in ((32, 48), (80, 16)):
        y = net(torch.rand(2, 1, h, w) + 0.5)
        assert y.shape == (2, 2, h, w)
        assert torch.allclose((y ** 2).sum(1), torch.ones(2, h, w), atol=1e-4)
    with pytest.raises(ValueError, match="multiples of 16"):
        net(torch.rand(1, 1, 40, 40))
    skip = ExitWaveNet(width=0.125, blocks=1, skips=True)
    # the skips add one gate per scale and nothing else
    assert sum(p.numel() for p in skip.parameters()) == sum(p.numel() for p in net.parameters()) + 4
    y = skip(torch.rand(2, 1, 32, 48) + 0.5)
    assert y.shape == (2, 2, 32, 48)
    y.sum().backward()
    assert skip.stem[0].weight.grad.abs().sum() > 0
    d = ExitWaveDiscriminator(width=0.1, stages=2)
    assert d(torch.randn(3, 2, 32, 32)).shape == (3,)


def test_enable_skips_keeps_the_function_and_trains_the_gates(tmp_path):
    from em_accel.train.checkpoint import save_weights

    torch.manual_seed(0)
    net = ExitWaveNet(width=0.125, blocks=1, output="hedged").eval()
    x = torch.rand(2, 1, 32, 32) + 0.5
    before = net(x)
    net.enable_skips()
    assert net.config["skips"] and torch.equal(net.skip_gates, torch.zeros(4))
    assert torch.equal(net(x), before)  # closed skips: the same function
    net.train()
    net(x).square().sum().backward()
    assert net.skip_gates.grad.abs().sum() > 0  # training can open them
    save_weights(tmp_path / "w.safetensors", net, net.config)
    back = load_exit_wave_weights(tmp_path / "w.safetensors").model
    assert back.config["skips"] and torch.allclose(back(x), net.eval()(x))


def test_lsgan_balance_lowers_the_discriminator_rate_when_it_wins():
    bal = LSGANBalance(base_lr=2e-4)
    for _ in range(300):
        lr_lose = bal.update(torch.full((4,), 0.9))
    assert lr_lose > 1.9e-4
    for _ in range(600):
        lr_win = bal.update(torch.full((4,), 0.0))
    assert lr_win < 1e-6
    real, fake = torch.ones(4), torch.zeros(4)
    assert float(bal.d_loss(real, fake)) == 0 and float(bal.g_loss(fake)) == 1


def test_metrics_ignore_the_global_offset_but_not_the_shape():
    torch.manual_seed(1)
    phase = torch.rand(3, 16, 16) * 2 - 1
    target = phasor(phase)
    shifted = phasor(phase + 1.3)
    e = phase_errors(shifted, target)
    assert (e.mae > 0.3).all() and np.allclose(e.mae_aligned, 0, atol=1e-6)
    assert np.allclose(e.rmse, 0, atol=1e-6)
    assert torch.allclose(rotate(shifted, global_offset(shifted, target)), target.double().float(), atol=1e-5)
    assert float(phasor_loss(shifted, target, align=True).max()) < 1e-10
    conj = phase_errors(phasor(-phase), target)
    assert (conj.rmse > 0.1).all() and np.allclose(conj.rmse_conj, 0, atol=1e-6)
    noisy = phase_errors(phasor(phase + 0.5 * torch.randn(3, 16, 16)), target)
    assert 0.3 < noisy.rmse.mean() < 0.7
    b = baselines(phasor(torch.rand(4, 32, 32) * 2 * math.pi))
    assert abs(b["random_components_mc"] - 0.75) < 0.02 and abs(b["random_phasor_mc"] - 8 / math.pi ** 2) < 0.02
    assert b["best_constant_mae"] <= b["random_components_mc"]


def test_unit_phasors_cannot_hedge_and_the_baselines_say_so():
    # uniformly random phases: the best constant is the origin (2/π per channel), while any
    # unit phasor scores 8/π² — the gap that made unit-output networks lose to the constant
    target = phasor(torch.rand(6, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 * math.pi)
    b = baselines(target)
    assert abs(b["best_constant_mae"] - 2 / math.pi) < 0.02
    assert abs(b["best_unit_constant_mae"] - 8 / math.pi ** 2) < 0.02
    # a narrow phase distribution: the best unit phasor sits on it and nearly ties the median
    narrow = phasor(0.7 + 0.1 * torch.randn(4, 32, 32, generator=torch.Generator().manual_seed(3)))
    nb = baselines(narrow)
    assert abs(nb["best_unit_constant_angle"] - 0.7) < 0.02
    assert nb["best_constant_mae"] <= nb["best_unit_constant_mae"] < nb["best_constant_mae"] + 0.01
    # constants fitted on one set and scored on another
    fitted = fit_constants(narrow)
    far = constant_errors(fitted, phasor(torch.full((2, 8, 8), 0.7 + math.pi)))
    assert far["train_unit_constant_mae"] > 1.3 and constant_errors(fitted, narrow)["train_unit_constant_mae"] < 0.1
    # hedged outputs lie inside the disc; the phase-only and aligned errors ignore the length
    net = ExitWaveNet(width=0.125, blocks=1, output="hedged")
    with torch.no_grad():
        y = net(torch.rand(2, 1, 32, 32) + 0.5)
    assert float((y ** 2).sum(1).max()) < 1
    e, e_half = phase_errors(phasor(narrow[:, 0] * 0 + 0.3), narrow), phase_errors(0.5 * phasor(narrow[:, 0] * 0 + 0.3), narrow)
    assert np.allclose(e.mae_unit, e_half.mae_unit) and np.allclose(e.mae_aligned, e_half.mae_aligned)
    assert np.allclose(e.mae, e.mae_unit) and not np.allclose(e.mae, e_half.mae)
    assert torch.allclose(phasor_loss(y, narrow[:2], kind="l1"), (y - narrow[:2]).abs().mean((1, 2, 3)))
    # paired against the split's constant: the constant itself ties (ratio 1), half its error is 0.5×
    const_mae = phase_errors(torch.tensor(nb["best_constant"]).view(1, 2, 1, 1).expand_as(narrow).clone(),
                             narrow).mae
    tie, half = paired_vs_constant(const_mae, narrow), paired_vs_constant(0.5 * const_mae, narrow)
    assert tie["ratio"] == pytest.approx(1) and tie["diff"] == pytest.approx(0, abs=1e-12) and tie["lower"] == 0
    assert half["ratio"] == pytest.approx(0.5) and half["lower"] == 4 and half["diff_ci"][1] < 0
    with pytest.raises(ValueError, match="output"):
        ExitWaveNet(width=0.125, output="polar")
    with pytest.raises(ValueError, match="kind"):
        phasor_loss(y, narrow[:2], kind="huber")


def test_hedged_l1_network_beats_every_unit_phasor_when_the_offset_is_unknowable():
    """The amplitude carries no information about the phase here (four equally likely global
    offsets, 0, π/2, π, 3π/2: best constant unit phasor 0.75, best constant the origin, 0.5):
    a unit-output network cannot beat the best constant unit phasor, a hedged one
    trained on the metric (L1) reaches the median inside the disc."""
    gen = torch.Generator().manual_seed(0)

    def batch(n, balanced=False):
        amp = torch.rand(n, 1, 16, 16, generator=gen) + 0.5
        k = torch.arange(n) % 4 if balanced else torch.randint(4, (n,), generator=gen)
        offset = k.view(n, 1, 1) * (math.pi / 2)
        return amp, phasor(offset.expand(n, 16, 16).clone())

    scores = {}
    for output, kind in (("unit", "mse"), ("hedged", "l1")):
        torch.manual_seed(0)
        net = ExitWaveNet(width=0.125, blocks=0, stages=1, output=output)
        opt = torch.optim.Adam(net.parameters(), lr=2e-2)
        for _ in range(60):
            amp, target = batch(16)
            loss = phasor_loss(net(amp), target, kind=kind).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        amp, target = batch(64, balanced=True)
        with torch.no_grad():
            scores[output] = float(phase_errors(net(amp), target).mae.mean())
    b = baselines(target)
    assert scores["unit"] > b["best_unit_constant_mae"] - 0.02
    assert scores["hedged"] < b["best_unit_constant_mae"] - 0.15
    assert scores["hedged"] < b["best_constant_mae"] + 0.05


def test_reconstruct_any_size_and_named_errors():
    torch.manual_seed(0)
    net = ExitWaveNet(width=0.125, blocks=1)
    amp = np.random.default_rng(0).uniform(0.5, 1.5, (37, 53)).astype(np.float32)
    wave = reconstruct_exit_wave(amp, net, tile=32, margin=4)
    assert wave.shape == (37, 53) and wave.dtype == np.complex64
    np.testing.assert_allclose(np.abs(wave), amp, rtol=1e-5)
    whole = reconstruct_exit_wave(torch.from_numpy(amp), net, tile=256)  # one tile, a tensor
    assert whole.shape == (37, 53)
    with pytest.raises(AmplitudeTypeError, match="complex"):
        reconstruct_exit_wave(amp.astype(np.complex64), net)
    with pytest.raises(AmplitudeError, match=">= 0"):
        reconstruct_exit_wave(amp - 1, net)
    bad = amp.copy()
    bad[3, 3] = np.nan
    with pytest.raises(AmplitudeError, match="NaN"):
        reconstruct_exit_wave(bad, net)
    with pytest.raises(AmplitudeError, match="2-D"):
        reconstruct_exit_wave(amp[None], net)
    assert issubclass(AmplitudeError, ValueError) and issubclass(AmplitudeTypeError, TypeError)


def test_recipe_trains_resumes_and_the_cli_reconstructs(tiny_set, tmp_path):
    from em_accel.cli import main as cli
    from em_accel.models.exit_wave_recipe import main as recipe

    root, _, _ = tiny_set
    run = tmp_path / "run"
    args = ["--set", "tiny", "--data", str(root), "--out", str(run), "--batch", "2", "--crop", "16",
            "--width", "0.125", "--blocks", "1", "--no-progress", "--dose", "50", "500"]
    assert recipe(args + ["--steps", "3"]) == 0
    first = run / "first.safetensors"
    first.write_bytes((run / "weights.safetensors").read_bytes())
    # a resumed call continues the checkpoint; an --init given now is not what the run grew from
    assert recipe(args + ["--steps", "5", "--init", str(first)]) == 0
    rec = json.loads((run / "recipe.json").read_text())
    assert rec["steps"] == 5 and rec["total_steps"] == 5
    assert rec["init"] is None and rec["resumed_from_step"] == 3
    assert all("train_constant_mae" in r and "best_unit_constant_mae" in r for r in rec["rows"])
    assert all(r["vs_constant"]["ratio"] == pytest.approx(r["mae"] / r["best_constant_mae"])
               for r in rec["rows"])
    assert {r["split"] for r in rec["rows"]} == set(ews.SPLITS)
    assert all(r["n"] == (6 if r["split"] == "train" else 2) for r in rec["rows"])
    model, notes = load_exit_wave_weights(run / "weights.safetensors")
    assert notes["steps"] == 5 and model.config["width"] == 0.125
    # --evaluate scores a weights file alone: the same rows on the same waves, no training
    rescored = tmp_path / "rescored.json"
    assert recipe(["--set", "tiny", "--data", str(root), "--evaluate", str(run / "weights.safetensors"),
                   "--record", str(rescored)]) == 0
    again = json.loads(rescored.read_text())
    assert again["steps"] == 5 and not (tmp_path / "rescored").exists()
    assert [(r["split"], round(r["mae"], 6)) for r in again["rows"]] == \
        [(r["split"], round(r["mae"], 6)) for r in rec["rows"]]
    # --eval-max-waves caps each split at its first N waves (a large set's train split)
    capped = tmp_path / "capped.json"
    assert recipe(["--set", "tiny", "--data", str(root), "--evaluate", str(run / "weights.safetensors"),
                   "--eval-max-waves", "4", "--record", str(capped)]) == 0
    assert [r["n"] for r in json.loads(capped.read_text())["rows"]] == \
        [min(4, r["n"]) for r in rec["rows"]]
    with pytest.raises(SystemExit):
        recipe(["--set", "tiny", "--data", str(root)])  # neither --out nor --evaluate
    waves, _ = ews.load_set(root, "unseen_transforms")
    src = tmp_path / "amp.npy"
    np.save(src, np.abs(waves[0]))
    out = tmp_path / "out"
    assert cli(["reconstruct", str(src), "-o", str(out), "--model", str(run / "weights.safetensors"),
                "--no-progress"]) == 0
    got = np.load(out / "amp_exit_wave.npy")
    assert got.shape == waves[0].shape and np.iscomplexobj(got)
    assert (out / "amp_exit_wave.png").stat().st_size > 1000
    assert json.loads((out / "amp_exit_wave.json").read_text())["input"] == "amplitude"


def test_train_constants_fit_every_training_wave_or_an_even_subset(tiny_set):
    from em_accel.models.exit_wave_metrics import fit_constants, phasor
    from em_accel.models.exit_wave_recipe import train_constants

    root, _, _ = tiny_set
    waves, _ = ews.load_set(root, "train")
    targets = phasor(torch.angle(torch.from_numpy(waves)))
    for cap, keep in ((1024, slice(None)), (3, slice(None, None, 2))):
        got, want = train_constants(root, max_waves=cap), fit_constants(targets[keep])
        torch.testing.assert_close(got.median, want.median)
        assert got.unit_angle == pytest.approx(want.unit_angle)
    assert len(waves) == 6  # so max_waves=3 keeps every second wave


def test_recipe_gan_variant_runs_and_balances(tiny_set, tmp_path):
    from em_accel.models.exit_wave_recipe import train

    root, _, _ = tiny_set
    rec = train(root, tmp_path / "gan", steps=3, batch=2, crop=16, width=0.125, blocks=1, gan=True,
                progress=False)
    assert rec["steps"] == 3 and rec["gan"] and rec["config"]["stages"] == 3
    model, _ = load_exit_wave_weights(tmp_path / "gan" / "weights.safetensors")
    y = model(torch.rand(1, 1, 16, 16) + 0.5)
    assert y.shape == (1, 2, 16, 16)
    assert reconstruct_exit_wave(np.ones((20, 30), np.float32), model, tile=40).shape == (20, 30)


def test_shipped_weights_load_and_run():
    from em_accel.models import exit_wave_notes, load_pretrained_exit_wave

    model = load_pretrained_exit_wave()
    notes = exit_wave_notes()
    assert notes["steps"] > 0 and "broad" in notes["data"]
    assert not model.training and model.config["width"] == 0.25
    amp = np.random.default_rng(1).uniform(0.6, 1.4, (40, 40)).astype(np.float32)
    wave = reconstruct_exit_wave(amp)  # default model: the shipped one
    assert wave.shape == (40, 40) and np.isfinite(wave).all()
    with pytest.raises(FileNotFoundError):
        load_pretrained_exit_wave("nope.safetensors")


def test_presets_hold_out_materials_of_every_set():
    from em_accel.sim.materials import split_of

    sets = {n: ews.preset(n) for n in ("single", "restricted", "broad", "broad_n1")}
    assert len(set(sets["restricted"].materials)) >= 50
    assert sets["broad_n1"].terms == 1 and sets["broad"].terms == 3
    trained = set().union(*(s.materials for s in sets.values()))
    held = set().union(*(s.heldout_materials for s in sets.values()))
    assert held and not trained & held
    assert all(split_of(m) == "heldout" for m in held)
    assert all(split_of(m) == "train" for m in trained)
    with pytest.raises(ValueError, match="unknown set"):
        ews.preset("everything")
