"""Partial-scan completion: Delaunay interpolation, the network, complete_scan, baselines,
recipe, evaluation and CLI (tiny sizes)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from em_accel.models import completion as C
from em_accel.models import completion_baselines as B
from em_accel.scan import make_path, partial_scan
from em_accel.scan.interpolate import (EmptyMaskError, linear_infill, nearest_infill,
                                       sample_distance, triangulate)


def _smooth(n: int = 48, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n] / n
    img = np.zeros((n, n))
    for _ in range(4):
        fy, fx, ph = rng.uniform(0.5, 3, 2).tolist() + [rng.uniform(0, 6)]
        img += np.cos(2 * np.pi * (fy * yy + fx * xx) + ph)
    return (img - img.min()) / np.ptp(img)


def test_linear_infill_matches_scipy_and_keeps_samples():
    from scipy.interpolate import LinearNDInterpolator

    img = _smooth(40, 1)
    rng = np.random.default_rng(0)
    mask = rng.random((40, 40)) < 0.08
    out = linear_infill(torch.from_numpy(img), mask).numpy()
    ref = LinearNDInterpolator(np.argwhere(mask).astype(float), img[mask])(*np.mgrid[0:40, 0:40])
    inside = ~np.isnan(ref)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(out[inside], ref[inside], atol=1e-9)
    np.testing.assert_allclose(out[mask], img[mask], atol=1e-12)
    # outside the hull: the nearest sample's value
    nn_ = nearest_infill(torch.from_numpy(img), mask).numpy()
    np.testing.assert_allclose(out[~inside], nn_[~inside])
    d = sample_distance(mask).numpy()
    assert d[mask].max() == 0 and d[~mask].min() >= 1


@pytest.mark.parametrize("kind", ["spiral", "grid", "gridlike"])
def test_linear_infill_matches_scipy_on_scan_paths(kind):
    """The scan-line rasteriser against scipy's point location on real path masks (grids
    put four samples on a circle, spirals give long thin triangles near the centre)."""
    from scipy.interpolate import LinearNDInterpolator

    img = _smooth(96, 2)
    mask = partial_scan(torch.from_numpy(img), make_path(kind, (96, 96), 1 / 12)).raster.mask.numpy() > 0
    out = linear_infill(torch.from_numpy(img), mask).numpy()
    ref = LinearNDInterpolator(np.argwhere(mask).astype(float), img[mask])(*np.mgrid[0:96, 0:96])
    inside = ~np.isnan(ref)
    assert inside.mean() > 0.8
    np.testing.assert_allclose(out[inside], ref[inside], atol=1e-9)


def test_linear_infill_grid_and_batch_and_degenerate():
    m = np.zeros((33, 33), bool)
    m[::4, ::4] = True                            # co-circular points (degenerate Delaunay)
    yy, xx = np.mgrid[0:33, 0:33].astype(float)
    plane = torch.from_numpy(np.stack([0.3 * yy - 0.2 * xx, 2 * xx]))
    out = linear_infill(plane, m)                 # a linear function is reproduced exactly
    np.testing.assert_allclose(out.numpy(), plane.numpy(), atol=1e-9)
    line = np.zeros((10, 10), bool)
    line[3, :] = True                             # collinear: nearest everywhere
    v = torch.arange(100.0).reshape(10, 10)
    np.testing.assert_allclose(linear_infill(v, line).numpy(), nearest_infill(v, line).numpy())
    with pytest.raises(EmptyMaskError):
        triangulate(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="mask shape"):
        linear_infill(v, np.ones((5, 5)))


@torch.no_grad()
def test_model_starts_at_delaunay_and_is_conditioned():
    torch.manual_seed(0)
    model = C.PartialScanCompleter((8, 8, 8, 8)).eval()
    img = torch.from_numpy(_smooth(32)).float()
    r = partial_scan(img, make_path("spiral", (32, 32), 0.08)).raster
    inp = C.completion_inputs(r.image, r.mask, r.infilled)
    assert inp.x.shape == (1, 4, 32, 32)
    cond = C.conditioning(torch.tensor([0.08]), torch.tensor([0]))
    out = model(inp.x, cond)
    torch.testing.assert_close(out.mean, inp.x[:, :1])        # zero-initialised correction
    np.testing.assert_allclose(out.log_scale.exp().numpy(), 0.05, rtol=1e-5)
    model.film[2].weight.normal_()
    model.head.weight.normal_(0, 0.1)
    a = model(inp.x, C.conditioning(torch.tensor([0.08]), torch.tensor([0]))).mean
    b = model(inp.x, C.conditioning(torch.tensor([0.08]), torch.tensor([2]))).mean
    c = model(inp.x, C.conditioning(torch.tensor([0.02]), torch.tensor([0]))).mean
    assert (a - b).abs().max() > 1e-4 and (a - c).abs().max() > 1e-4
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.zeros(1, 4, 24, 32), cond)
    with pytest.raises(ValueError, match="cond"):
        model(inp.x, torch.zeros(1, 3))


def test_conditioning_and_kinds():
    c = C.conditioning(torch.tensor([0.01, 0.1, 0.05]), torch.tensor([0, 2, -1]))
    np.testing.assert_allclose(c[:, 0].numpy(), [0, 1, math.log(5) / math.log(10)], atol=1e-6)
    assert c[0, 1:].tolist() == [1, 0, 0] and c[1, 1:].tolist() == [0, 0, 1]
    assert c[2, 1:].tolist() == [0, 0, 0]
    assert C.kind_index(None) == -1
    with pytest.raises(C.UnknownPathKindError):
        C.kind_index("raster")


def _tiny_model():
    torch.manual_seed(1)
    m = C.PartialScanCompleter((8, 8, 8, 8)).eval()
    m.calibration = 1.5
    return m


def test_complete_scan_full_and_sparse_any_size():
    model = _tiny_model()
    img = 1000 * _smooth(70, 2)[:, :60]           # not a multiple of 16, counts-like units
    res = C.complete_scan(img, kind="gridlike", coverage=0.06, model=model)
    assert res.completion.shape == res.uncertainty.shape == (70, 60)
    assert res.mask.dtype == bool and 0.03 < res.coverage < 0.1
    # untrained: completion = Delaunay-linear of the samples, in the image's units
    np.testing.assert_allclose(res.completion, B.delaunay(res.sparse, res.mask), atol=0.05 * 1000)
    np.testing.assert_allclose(res.completion[res.mask], img[res.mask], atol=1.0)
    span = img[res.mask].max() - img[res.mask].min()
    np.testing.assert_allclose(res.uncertainty, 1.5 * C.Z90 * 0.05 * span, rtol=1e-3)
    # the same samples given as an already sparse scan + mask
    sparse = np.where(res.mask, img, np.nan)          # unsampled pixels may be anything
    res2 = C.complete_scan(sparse, mask=res.mask, kind="gridlike", model=model)
    np.testing.assert_allclose(res2.completion, res.completion, atol=1e-3)


def test_complete_scan_named_errors():
    model = _tiny_model()
    img = _smooth(32)
    with pytest.raises(C.CoverageRangeError):
        C.complete_scan(img, kind="spiral", coverage=0.5, model=model)
    with pytest.raises(C.CoverageRangeError):
        C.complete_scan(img, kind="spiral", coverage=0.001, model=model)
    with pytest.raises(C.CoverageRangeError):
        C.complete_scan(img, kind="spiral", model=model)
    with pytest.raises(C.ImageShapeError):
        C.complete_scan(np.zeros((2, 32, 32)), kind="spiral", coverage=0.05, model=model)
    bad = img.copy()
    bad[3, 3] = np.nan
    with pytest.raises(C.NonFiniteImageError):
        C.complete_scan(bad, kind="spiral", coverage=0.05, model=model)
    with pytest.raises(EmptyMaskError):
        C.complete_scan(img, mask=np.zeros_like(img), model=model)
    with pytest.raises(C.ImageShapeError):
        C.complete_scan(img, mask=np.ones((16, 16)), model=model)
    with pytest.raises(C.UnknownPathKindError):
        C.complete_scan(img, kind="zigzag", coverage=0.05, model=model)
    dense = np.ones_like(img)
    with pytest.raises(C.CoverageRangeError):             # a mask sampling half the pixels
        C.complete_scan(img, mask=dense * (np.arange(32) % 2), model=model)
    assert issubclass(C.CoverageRangeError, ValueError)


def test_baselines_order_on_smooth_image():
    img = _smooth(64, 3)
    r = partial_scan(torch.from_numpy(img), make_path("gridlike", (64, 64), 0.06)).raster
    v, m = r.image.numpy(), r.mask.numpy() > 0
    rms = {k: float(np.sqrt(((f(v, m) - img) ** 2).mean())) for k, f in B.METHODS.items()}
    assert rms["delaunay"] < rms["nearest"]
    assert rms["wavelet-cs"] < rms["nearest"]
    # biharmonic: scored on a random mask (on this gridlike mask scikit-image's solution
    # overshoots; docs/complete.md reports it as measured)
    rnd = np.random.default_rng(0).random((64, 64)) < 0.06
    bh = B.biharmonic(np.where(rnd, img, 0.0), rnd)
    np.testing.assert_allclose(bh[rnd], img[rnd], atol=1e-9)
    assert np.sqrt(((bh - img) ** 2).mean()) < rms["nearest"]
    cs = B.wavelet_cs(v, m, iterations=5)
    np.testing.assert_allclose(cs[m], v[m], atol=1e-9)     # data consistency


def test_recipe_trains_resumes_and_records(tmp_path):
    from em_accel.models import completion_recipe as R

    images = np.stack([_smooth(32, s) for s in range(4)]).astype(np.float32)
    np.savez(tmp_path / "c.npz", images=images)
    args = dict(batch=2, size=32, cache=str(tmp_path / "c.npz"), seconds=None, init=None,
                device="cpu", widths=(8, 8, 8, 8), lr=1e-3, n_val=2, threads=None,
                progress=False)
    rec = R.run(tmp_path / "run", 3, **args)
    assert rec["steps_done"] == 3
    rec = R.run(tmp_path / "run", 5, **args)           # same directory: continues at step 3
    assert [r["start_step"] for r in rec["runs"]] == [0, 3] and rec["steps_done"] == 5
    model, notes = C.load_weights(tmp_path / "run" / "completion_small.safetensors")
    assert notes["steps"] == 5 and model.config["widths"] == [8, 8, 8, 8]
    logged = json.loads((tmp_path / "run" / "recipe.json").read_text())
    assert "rms_blur_delaunay" in logged["runs"][-1]["val_after"]
    # several caches are pooled, each holding back its own last 5% for validation
    np.savez(tmp_path / "d.npz", images=np.stack([_smooth(32, s) for s in range(10, 32)]))
    rec = R.run(tmp_path / "run2", 1, **{**args, "cache": [tmp_path / "c.npz", tmp_path / "d.npz"]})
    assert rec["n_train_images"] == 3 + 21 and rec["n_val_images"] == 1 + 1
    assert len(rec["cache"]) == 2
    # another seed draws another example sequence (a continuation sees new examples)
    a, b = (R.CompletionData(images, R.path_bank(32), seed=s)[0]["x"] for s in (R.TRAIN_SEED, 5))
    assert not torch.equal(a, b)
    assert R.run(tmp_path / "run3", 1, **args, seed=5)["seed"] == 5


def test_relative_loss_is_one_at_delaunay_and_kind_probs():
    from em_accel.models import completion_recipe as R

    images = np.stack([_smooth(32, s) for s in range(2)]).astype(np.float32)
    data = R.CompletionData(images, R.path_bank(32), kind_probs=(0.0, 0.0, 1.0))
    assert {data[i]["kind"] for i in range(8)} == {"grid"}
    batch = data.batch(0, 3)
    model = C.PartialScanCompleter((8, 8, 8, 8))      # zero correction: its output is Delaunay
    _, logs = R.losses(model, batch, None, relative=True)
    nll = logs["nll"]
    ratio = logs["loss"] - R.NLL_WEIGHT * nll    # each example's ratio is 1 (less REL_EPS's share)
    assert 0.99 < ratio <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="kind_probs"):
        R.CompletionData(images, R.path_bank(32), kind_probs=(1.0, -1.0, 0.0))


def test_evaluation_rows_and_calibration():
    from em_accel.models import completion_eval as E

    model = _tiny_model()
    images = np.stack([_smooth(32, 5), _smooth(32, 6)])
    s = E.fit_calibration(model, images, None, coverages=(0.05,), kinds=("grid",))
    res = E.evaluate(model, images, counts=None, coverages=(0.05,), kinds=("grid",),
                     slow_n=1, slow_size=32, calibration=s, progress=False)
    assert abs(res["reliability"]["0.9"] - 0.9) < 0.05           # fitted on the same images
    methods = {r["method"] for r in res["rows"]}
    assert {"network", "delaunay", "nearest", "biharmonic", "wavelet-cs"} <= methods
    d = E.paired(res["rows"], "network", "delaunay")
    assert abs(d["grid"][0][1]) < 0.01                 # untrained network = Delaunay
    assert "paired" in E.format_summary(res)


def test_heldout_images_at_mixed_magnifications():
    from em_accel.models import completion_eval as E

    atomic, desc = E.heldout_images(2, 24, seed=3)
    wide, wdesc = E.heldout_images(2, 24, seed=3, pixel_range=(1.0, 2.0))
    assert wide.shape == atomic.shape == (2, 24, 24) and not np.array_equal(wide, atomic)
    assert "pixel 1.0-2.0" in wdesc and "pixel" not in desc


def test_cli_complete_keeps_pixel_size(tmp_path):
    import tifffile

    from em_accel.cli import main
    from em_accel.io import read_image
    from em_accel.train.checkpoint import save_weights

    model = _tiny_model()
    w = save_weights(tmp_path / "m.safetensors", model, {**model.config, "calibration": 1.2})
    img = (500 * _smooth(48, 7)).astype(np.float32)
    tifffile.imwrite(tmp_path / "a.tif", img, resolution=(1e8 / 0.5, 1e8 / 0.5),
                     resolutionunit="CENTIMETER")
    assert main(["complete", str(tmp_path / "a.tif"), "-o", str(tmp_path / "out"),
                 "--coverage", "0.05", "--path", "grid", "--model", str(w)]) == 0
    done = read_image(tmp_path / "out" / "a_completed.tif")
    assert done.data.shape == (48, 48) and done.pixel_size == pytest.approx(0.5)
    assert (tmp_path / "out" / "a_panel.png").stat().st_size > 1000
    unc = read_image(tmp_path / "out" / "a_uncertainty.tif").data
    assert (unc > 0).all()
    # already sparse input + mask
    mask = (np.arange(48)[:, None] % 4 == 0) & (np.arange(48)[None] % 4 == 0)
    tifffile.imwrite(tmp_path / "m.tif", mask.astype(np.uint8))
    assert main(["complete", str(tmp_path / "a.tif"), "-o", str(tmp_path / "out2"),
                 "--mask", str(tmp_path / "m.tif"), "--model", str(w), "--no-panel"]) == 0
    got = read_image(tmp_path / "out2" / "a_completed.tif").data
    np.testing.assert_allclose(got[mask], img[mask], rtol=1e-3)
    assert main(["complete", str(tmp_path / "a.tif"), "-o", str(tmp_path / "out4"), "--ensemble",
                 "--mask", str(tmp_path / "m.tif"), "--model", str(w), "--no-panel"]) == 0
    np.testing.assert_allclose(read_image(tmp_path / "out4" / "a_completed.tif").data[mask],
                               img[mask], rtol=1e-3)
    np.save(tmp_path / "s.npy", np.zeros((2, 16, 16), np.float32))
    with pytest.raises(C.ImageShapeError):
        main(["complete", str(tmp_path / "s.npy"), "-o", str(tmp_path / "o3"),
              "--coverage", "0.05", "--model", str(w)])


def test_cli_evaluate_complete_on_real_files_only(tmp_path):
    """``-n 0 --images FILE...``: the user's own files are the whole evaluation, with the
    baselines and ensemble asked for; nothing to evaluate is a named error."""
    from em_accel.cli import main
    from em_accel.io import write_image
    from em_accel.train.checkpoint import save_weights

    model = _tiny_model()
    w = save_weights(tmp_path / "m.safetensors", model, model.config)
    write_image(tmp_path / "a.tif", (900 * _smooth(40, 8)).astype(np.float32), pixel_size=0.5)
    np.save(tmp_path / "b.npy", _smooth(36, 9)[:, :30])
    out = tmp_path / "ev"
    assert main(["evaluate", "complete", "-n", "0", "--images", str(tmp_path / "a.tif"),
                 str(tmp_path / "b.npy"), "--coverages", "0.1", "--kinds", "spiral",
                 "--baselines", "delaunay", "--calibration-n", "0", "--ensemble",
                 "--model", str(w), "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in res["rows"]} == {"network", "network-ens8", "delaunay", "auto"}
    assert {r["image"] for r in res["rows"]} == {0, 1} and len(res["files"]) == 2
    assert "real file" in res["images"]
    assert res["pixel_sizes"] == [0.5, None]           # the TIFF's calibration; .npy has none
    with pytest.raises(ValueError, match="nothing to evaluate"):
        main(["evaluate", "complete", "-n", "0", "--model", str(w), "--out", str(out)])
    # --dark-atoms scores the mirrored frame, as complete_scan(dark_atoms=True) completes it
    frame = 900 * _smooth(40, 8)
    np.save(tmp_path / "mirrored.npy", frame.max() + frame.min() - frame)
    common = ["--coverages", "0.1", "--kinds", "grid", "--baselines", "delaunay",
              "--calibration-n", "0", "--model", str(w), "--no-progress"]
    assert main(["evaluate", "complete", "-n", "0", "--images", str(tmp_path / "a.tif"),
                 "--dark-atoms", "--out", str(tmp_path / "d1")] + common) == 0
    assert main(["evaluate", "complete", "-n", "0", "--images", str(tmp_path / "mirrored.npy"),
                 "--out", str(tmp_path / "d2")] + common) == 0
    d1, d2 = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("d1", "d2"))
    assert "dark atoms" in d1["images"]
    assert [r["rms"] for r in d1["rows"]] == pytest.approx([r["rms"] for r in d2["rows"]], rel=1e-5)
    with pytest.raises(ValueError, match="dark-atoms"):
        main(["evaluate", "complete", "-n", "1", "--dark-atoms", "--out", str(out)] + common)
    # --scan-distortion: the held-out images as a raster scan records them, settings recorded
    assert main(["evaluate", "complete", "-n", "1", "--size", "64", "--scan-distortion",
                 "--out", str(tmp_path / "sd")] + common) == 0
    sd = json.loads((tmp_path / "sd" / "results.json").read_text())
    assert "scan distortions" in sd["images"] and len(sd["scan_distortions"]) == 1
    with pytest.raises(ValueError, match="scan-distortion"):
        main(["evaluate", "complete", "-n", "0", "--images", str(tmp_path / "a.tif"),
              "--scan-distortion", "--out", str(out)] + common)


def test_adversarial_fine_tuning_runs_and_resumes(tmp_path):
    from em_accel.models import completion_recipe as R
    from em_accel.models.completion_gan import ScaleDiscriminator, multiscale_crops

    f, r = torch.zeros(2, 1, 40, 40), torch.ones(2, 1, 40, 40)
    crops = multiscale_crops(f, r, 8)
    assert [tuple(c.shape) for c, _ in crops] == [(2, 1, 8, 8)] * 3
    assert all(float(c.max()) == 0 and float(t.min()) == 1 for c, t in crops)
    assert ScaleDiscriminator(4)(torch.rand(3, 1, 16, 16)).shape == (3,)
    images = np.stack([_smooth(32, s) for s in range(3)]).astype(np.float32)
    np.savez(tmp_path / "c.npz", images=images)
    args = dict(batch=2, size=32, cache=str(tmp_path / "c.npz"), seconds=None, init=None,
                device="cpu", widths=(8, 8, 8, 8), lr=1e-3, n_val=1, threads=None,
                progress=False, adversarial=True)
    R.run(tmp_path / "gan", 2, **args)
    rec = R.run(tmp_path / "gan", 3, **args)
    assert rec["steps_done"] == 3 and rec["adversarial"]
    log = (tmp_path / "gan" / "log.jsonl").read_text()
    assert log == "" or "adv" in log or "val" in log


def test_shipped_weights_load_and_complete():
    model = C.load_pretrained("completion")
    notes = C.completion_notes()
    assert model.calibration > 0 and model.calibration != 1.0
    assert notes["steps"] > 0 and "calibration" in notes
    # 128^2: at 64^2 a 1/20 spiral is about one turn, where even Delaunay is worse than nearest.
    img = _smooth(128, 9)
    res = C.complete_scan(img, kind="spiral", coverage=0.05, model=model)
    err = np.sqrt(((res.completion - img) ** 2).mean())
    nn_err = np.sqrt(((B.nearest(res.sparse, res.mask) - img) ** 2).mean())
    lin_err = np.sqrt(((B.delaunay(res.sparse, res.mask) - img) ** 2).mean())
    assert err < nn_err and err < lin_err
    assert np.isfinite(res.uncertainty).all() and (res.uncertainty > 0).all()
    with pytest.raises(FileNotFoundError):
        C.load_pretrained("no_such_weights.safetensors")


def test_dihedral_ensemble_averages_the_eight_transforms_and_is_scored():
    from em_accel.data.augment import dihedral, dihedral_inverse
    from em_accel.models import completion_eval as E

    model = C.load_pretrained("completion")
    img = _smooth(64, 11)
    r = partial_scan(torch.from_numpy(img), make_path("spiral", img.shape, 0.1, seed=2)).raster
    v, m = r.image.numpy(), r.mask.numpy() > 0
    single = C.complete_scan(v, mask=m, kind="spiral", model=model)
    ens = C.complete_scan(v, mask=m, kind="spiral", model=model, ensemble=True)
    # by hand: the network on each flip/rotation of the input stack, mapped back, averaged
    inp = C.completion_inputs(torch.from_numpy(v).float(), torch.from_numpy(m).float(),
                              fourier=model.uses_fourier)
    cond = C.conditioning(torch.tensor([float(m.mean())]), torch.tensor([C.kind_index("spiral")]))
    packed = C._Packed(model.eval(), cond, False)
    with torch.inference_mode():
        out = sum(dihedral_inverse(packed(dihedral(inp.x, k)), k) for k in range(8)) / 8
    lo, span = float(inp.lo[0]), float(inp.span[0])
    np.testing.assert_allclose(ens.completion, out[0, 0].numpy() * span + lo, atol=1e-5)
    np.testing.assert_allclose(ens.uncertainty, model.calibration * C.Z90 * span
                               * np.exp(out[0, 1].numpy()), rtol=1e-4)
    assert np.abs(ens.completion - single.completion).max() > 1e-3
    res = E.evaluate(model, img[None], counts=None, coverages=(0.1,), kinds=("grid",),
                     slow_n=0, progress=False, ensemble=True)
    assert {"network", "network-ens8"} <= {row["method"] for row in res["rows"]}
    assert "network-ens8 - network" in E.format_summary(res)


def _lattice(n: int = 128, seed: int = 0) -> np.ndarray:
    """A few plane waves on exact DFT frequencies: exactly Fourier-sparse."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n] / n
    img = np.zeros((n, n))
    for _ in range(6):
        fy, fx = rng.integers(-20, 21, 2)
        img += rng.uniform(0.3, 1) * np.cos(2 * np.pi * (fy * yy + fx * xx) + rng.uniform(0, 6))
    return (img - img.min()) / np.ptp(img)


def test_fourier_infill_recovers_a_lattice_where_delaunay_cannot():
    from em_accel.scan.fourier_infill import fourier_infill

    img = _lattice()
    r = partial_scan(torch.from_numpy(img), make_path("spiral", img.shape, 1 / 17.9)).raster
    v, m = r.image.float(), r.mask
    lin = linear_infill(v, m)
    out = fourier_infill(v, m, lin)
    rms = lambda a: float(((a.double() - torch.from_numpy(img)) ** 2).mean().sqrt())  # noqa: E731
    assert rms(out) < 0.1 * rms(lin)                 # the lattice, not a local interpolation
    assert torch.equal(out[m > 0], v[m > 0])          # samples kept
    batch = fourier_infill(torch.stack([v, v]), m)    # batched, shared mask, mean start
    assert batch.shape == (2, *img.shape) and torch.allclose(batch[0], batch[1])
    with pytest.raises(ValueError, match="no sampled pixel"):
        fourier_infill(v, torch.zeros_like(m))
    with pytest.raises(ValueError, match="iterations"):
        fourier_infill(v, m, iterations=0)
    with pytest.raises(ValueError, match="mask shape"):
        fourier_infill(v, m[:64])
    with pytest.raises(ValueError, match="start shape"):
        fourier_infill(v, m, lin[:64])
    with pytest.raises(ValueError, match="image must be"):
        fourier_infill(v[None, None], m)
    with pytest.raises(TypeError, match="real"):
        fourier_infill(v.to(torch.complex64), m)
    # the baseline of the same name, in the evaluation's method table
    cs = B.METHODS["fourier-cs"](v.double().numpy(), m.numpy() > 0)
    assert np.sqrt(((cs - img) ** 2).mean()) < 0.1 * rms(lin)


def _hard_thresholding(v, m, x, iterations, support, start_fraction):
    """Iterative hard thresholding as written in the definition (one image, full top-k of
    the power, out-of-place ops): the reference for fourier_infill's in-place loop."""
    k_final = min(support * float(m.sum()), v.shape[0] * (v.shape[1] // 2 + 1))
    for it in range(iterations):
        spec = torch.fft.rfft2(torch.where(m, v, x))
        power = spec.abs().square().flatten()
        k = max(1, int(k_final * start_fraction ** (1.0 - it / max(1, iterations - 1))))
        keep = torch.zeros_like(power, dtype=torch.bool)
        keep[torch.topk(power, k).indices] = True
        x = torch.fft.irfft2(spec * keep.reshape(spec.shape), s=v.shape)
    return torch.where(m, v, x)


def test_fourier_infill_matches_plain_hard_thresholding_per_image():
    """Per-image masks in a batch, a non-contiguous start: each image as the reference gives
    (at 64^2 the top-k is taken over every coefficient, no subsample)."""
    from em_accel.scan.fourier_infill import fourier_infill

    g = torch.Generator().manual_seed(3)
    v = torch.rand(2, 64, 64, generator=g)
    m = torch.rand(2, 64, 64, generator=g) < 0.15
    start = torch.rand(2, 64, 64, generator=g).transpose(1, 2)   # not contiguous
    out = fourier_infill(v, m, start, iterations=12, support=0.3, start_fraction=0.1)
    for b in range(2):
        ref = _hard_thresholding(v[b], m[b], start[b], 12, 0.3, 0.1)
        assert torch.allclose(out[b], ref, atol=1e-5)
        assert torch.equal(out[b][m[b]], v[b][m[b]])
    assert not torch.allclose(out[0], out[1])        # each image its own mask


def test_fourier_input_channel_starts_as_the_network_and_round_trips(tmp_path):
    from em_accel.train.checkpoint import save_weights

    torch.manual_seed(0)
    model = C.PartialScanCompleter((8, 8, 8, 8))
    with torch.no_grad():   # a non-trivial network: its correction is not zero
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    img = _lattice(64, 1)
    r = partial_scan(torch.from_numpy(img), make_path("spiral", img.shape, 0.05)).raster
    x4 = C.completion_inputs(r.image.float(), r.mask)
    x5 = C.completion_inputs(r.image.float(), r.mask, fourier=True)
    assert x5.x.shape[1] == 5 and torch.equal(x5.x[:, :4], x4.x)
    cond = C.conditioning(torch.tensor([0.05]), torch.tensor([0]))
    five = model.with_fourier_input()
    assert five.uses_fourier and not model.uses_fourier
    with torch.no_grad():
        assert torch.equal(model(x4.x, cond).mean, five(x5.x, cond).mean)
        on_fourier = model.with_fourier_input("fourier")
        assert on_fourier.config["base_channel"] == C.FOURIER_CHANNEL
        assert torch.equal(on_fourier(x5.x, cond).mean, x5.x[:, 4:5])   # starts at the infill
        assert torch.equal(on_fourier(x5.x, cond).log_scale, model(x4.x, cond).log_scale)
        start = C.PartialScanCompleter((8, 8, 8, 8), 5, base_channel=4)(x5.x, cond).mean
        assert torch.equal(start, x5.x[:, 4:5])      # untrained: the Fourier infill itself
        gated = model.with_fourier_input("gated")
        g = torch.sigmoid(torch.tensor(C.GATE_START))
        mix = x5.x[:, :1] + g * (x5.x[:, 4:5] - x5.x[:, :1])
        expect = mix + (model(x4.x, cond).mean - x4.x[:, :1])    # the same correction
        assert torch.allclose(gated(x5.x, cond).mean, expect, atol=1e-5)
    with pytest.raises(ValueError, match="already"):
        five.with_fourier_input()
    with pytest.raises(ValueError, match="base"):
        model.with_fourier_input("wavelet")
    with pytest.raises(ValueError, match="gate"):
        C.PartialScanCompleter((8, 8, 8, 8), 4, gate=True)
    with pytest.raises(ValueError, match="in_channels"):
        C.PartialScanCompleter((8, 8, 8, 8), 6)
    for net in (on_fourier, gated):
        save_weights(tmp_path / "w.safetensors", net, net.config)
        loaded = C.load_weights(tmp_path / "w.safetensors").model
        assert loaded.config == net.config
    res = C.complete_scan(img, kind="spiral", coverage=0.05, model=loaded)
    assert res.completion.shape == img.shape and np.isfinite(res.completion).all()


def test_recipe_converts_init_weights_to_the_fourier_input(tmp_path):
    from em_accel.models import completion_recipe as R
    from em_accel.train.checkpoint import save_weights

    images = np.stack([_lattice(32, s) for s in range(4)]).astype(np.float32)
    np.savez(tmp_path / "c.npz", images=images)
    init = C.PartialScanCompleter((8, 8, 8, 8))
    save_weights(tmp_path / "init.safetensors", init, init.config)
    args = dict(batch=2, size=32, cache=str(tmp_path / "c.npz"), seconds=None,
                init=tmp_path / "init.safetensors", device="cpu", widths=(8, 8, 8, 8), lr=1e-3,
                n_val=2, threads=None, progress=False, fourier_input="gated")
    R.run(tmp_path / "run", 2, **args)
    rec = R.run(tmp_path / "run", 3, **args)         # resumes the converted model
    assert rec["steps_done"] == 3 and rec["in_channels"] == 5 and rec["gate"]
    model = C.load_weights(tmp_path / "run" / "completion_small.safetensors").model
    assert model.uses_fourier and model.config["gate"]
    with pytest.raises(ValueError, match="fourier_input"):
        R.run(tmp_path / "bad", 1, **{**args, "fourier_input": "wavelet"})


def test_whole_image_scans_serve_several_crops():
    from em_accel.models import completion_recipe as R

    images = np.stack([_lattice(64, s) for s in range(3)]).astype(np.float32)
    data = R.CompletionData(images, R.path_bank(64), crops_per_scan=4, crop=32, fourier=True)
    crops = [data[i] for i in range(8)]
    assert all(c["x"].shape == (5, 32, 32) and c["target"].shape == (1, 32, 32) for c in crops)
    # the 4 crops of a scan share its conditioning and scaling; the next scan is another draw
    assert all(torch.equal(c["cond"], crops[0]["cond"]) and c["span"] == crops[0]["span"]
               for c in crops[:4])
    assert not torch.equal(crops[0]["x"], crops[1]["x"])
    again = R.CompletionData(images, R.path_bank(64), crops_per_scan=4, crop=32, fourier=True)
    assert torch.equal(again[5]["x"], crops[5]["x"])        # a pure function of (seed, i)
    b = data.batch(1, 4)
    assert b["x"].shape == (4, 5, 32, 32)
    with pytest.raises(ValueError, match="image size"):
        R.CompletionData(images, R.path_bank(32), crops_per_scan=2, crop=16)[0]
    with pytest.raises(ValueError, match="crops_per_scan"):
        R.CompletionData(images, R.path_bank(64), crops_per_scan=2)


def test_contrast_inverted_examples():
    """``invert_fraction``: that share of scans sees 1 - image (bright-field-like contrast);
    at 0 the example sequence is the one runs made before the option existed."""
    from em_accel.models import completion_recipe as R

    images = 0.3 * np.stack([_lattice(32, s) for s in range(2)]).astype(np.float32)
    bank = R.path_bank(32)
    plain = R.CompletionData(images, bank)
    zero = R.CompletionData(images, bank, invert_fraction=0.0)
    assert all(torch.equal(plain[i]["x"], zero[i]["x"]) for i in range(4))
    inverted = R.CompletionData(images, bank, invert_fraction=1.0)
    assert all(float(inverted[i]["clean"].mean()) > 0.6 > 0.4 > float(plain[i]["clean"].mean())
               for i in range(6))
    half = R.CompletionData(images, bank, invert_fraction=0.5)
    means = [float(half[i]["clean"].mean()) for i in range(40)]
    assert 8 < sum(m > 0.5 for m in means) < 32
    with pytest.raises(ValueError, match="invert_fraction"):
        R.CompletionData(images, bank, invert_fraction=1.5)


def test_dark_atoms_completes_the_mirrored_contrast():
    """``dark_atoms``: the scan is mirrored about its value range, completed, mirrored back:
    the same as completing the mirrored image, the scan's values kept, the uncertainty unchanged.
    (The shipped network: an untrained one is Delaunay-linear, which mirroring leaves alone.)"""
    model = C.load_pretrained("completion")
    img = 50 + 100 * _smooth(64, 10)
    mask = np.random.default_rng(1).random((64, 64)) < 0.1
    dark = C.complete_scan(img, mask=mask, kind="spiral", model=model, dark_atoms=True)
    pivot = img[mask].max() + img[mask].min()
    bright = C.complete_scan(pivot - img, mask=mask, kind="spiral", model=model)
    np.testing.assert_allclose(dark.completion, pivot - bright.completion, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(dark.uncertainty, bright.uncertainty, rtol=1e-5)
    np.testing.assert_allclose(dark.sparse[mask], img[mask], rtol=1e-5)
    plain = C.complete_scan(img, mask=mask, kind="spiral", model=model)
    assert not np.allclose(plain.completion, dark.completion, atol=1e-2)
