"""The noise-level-conditioned denoiser: model, data, resumable recipe, one-call denoising."""
import numpy as np
import pytest
import torch

from em_accel.data import synthetic_images
from em_accel.data.counts_dataset import CountsCropDataset, acquire_counts, shift_rows
from em_accel.data.noise_estimate import noise_level_from_detector
from em_accel.models.conditioned import (ConditionedUNet, anscombe, denoise_micrograph,
                                         inverse_anscombe, load_conditioned)
from em_accel.models import conditioned_recipe
from em_accel.train.checkpoint import save_weights


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions: one thread avoids oversubscription on a loaded 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_unet_shapes_residual_and_errors():
    m = ConditionedUNet((4, 8, 8), 1).eval()
    x = torch.rand(2, 2, 32, 48)
    y = m(x)
    assert y.shape == (2, 1, 32, 48)
    # bias-free ReLU network: scaling image and noise level together scales the output
    torch.testing.assert_close(m(3.0 * x), 3.0 * y)
    assert not torch.allclose(y, x[:, :1])
    with pytest.raises(ValueError, match="multiples of 4"):
        m(torch.rand(1, 2, 30, 32))
    with pytest.raises(ValueError, match=r"\[B, 2, H, W\]"):
        m(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="levels"):
        ConditionedUNet((), 1)


def test_anscombe_inverse_and_row_shift():
    c = torch.tensor([0.0, 1.0, 10.0, 1e4], dtype=torch.float64)
    torch.testing.assert_close(inverse_anscombe(anscombe(c)), c)
    im = torch.arange(20.0).reshape(2, 10)
    out = shift_rows(im, torch.tensor([1.0, 0.5]))
    torch.testing.assert_close(out[0, 1:], im[0, :-1])
    torch.testing.assert_close(out[1, 1:], im[1, :-1] + 0.5)


def test_acquisition_statistics_and_dataset_determinism():
    g = torch.Generator().manual_seed(0)
    flat = torch.full((128, 128), 0.5)
    for mod in ("tem", "stem"):
        noisy, clean = acquire_counts(flat, mod, 40.0, g)
        # equivalent counts: variance ≈ mean (hits and dead pixels aside)
        keep = (noisy > 0) & (noisy < 4 * clean)
        assert abs(float(noisy[keep].var() / clean.mean()) - 1) < 0.15
        assert abs(float(clean.mean()) / 40.0 - 1) < 0.25
    ims = synthetic_images(2, 64, 5)
    ds = CountsCropDataset(ims, ["tem", None], 32, seed=3)
    a, b = ds[7], ds[7]
    assert a[0].shape == (2, 32, 32) and a[1].shape == (3, 32, 32)
    torch.testing.assert_close(a[0], b[0])
    assert not torch.equal(ds[8][0], a[0])
    with pytest.raises(ValueError, match="modalities"):
        CountsCropDataset(ims, ["sem", None], 32)
    with pytest.raises(ValueError, match="dose_range"):
        CountsCropDataset(ims, None, 32, dose_range=(0, 10))


def _tiny_run(out, seconds=None, steps=6):
    return conditioned_recipe.run(out, steps=steps, batch=2, crop=32, lr=1e-3, seconds=seconds,
                                  channels=(4, 8), blocks=1, n_synthetic=1, progress=False,
                                  n_validation=2)


def test_stopped_and_continued_run_equals_a_straight_run(tmp_path, monkeypatch):
    monkeypatch.setattr(conditioned_recipe, "training_images",
                        lambda n, size=256, caches=(): (synthetic_images(2, 64, 1),
                                                        [None, "stem"], {"test": 2}, [0.5, None]))
    straight = _tiny_run(tmp_path / "a")
    first = _tiny_run(tmp_path / "b", seconds=0.0)   # stops after its first step
    assert not first["sessions"][-1]["finished"] and first["sessions"][-1]["to_step"] < 6
    second = _tiny_run(tmp_path / "b")
    assert second["sessions"][-1]["finished"] and len(second["sessions"]) == 2
    wa = load_conditioned(tmp_path / "a" / conditioned_recipe.WEIGHTS)
    wb = load_conditioned(tmp_path / "b" / conditioned_recipe.WEIGHTS)
    for (k, va), vb in zip(wa.state_dict().items(), wb.state_dict().values()):
        assert torch.equal(va, vb), k
    assert straight["validation"] == second["validation"]


def test_denoise_micrograph_in_detector_units(tmp_path):
    torch.manual_seed(0)
    model = ConditionedUNet((4, 8), 1)
    path = tmp_path / "w.safetensors"
    save_weights(path, model, model.config, dtype=torch.float16)
    model = load_conditioned(path)
    rng = np.random.default_rng(0)
    clean = synthetic_images(1, 80, 9)[0]
    y = 50.0 * rng.poisson(20 * (0.5 + clean)) + 3e6
    res = denoise_micrograph(y, model, tile=64, margin=8, progress=False)
    assert res.image.shape == y.shape and res.image.dtype == np.float32
    assert abs(res.image.mean() / y.mean() - 1) < 1e-3       # stays in detector units
    assert res.noise.estimated and 20 < res.noise.a < 80
    given = noise_level_from_detector(y, gain=50.0, offset=3e6)
    res2 = denoise_micrograph(y, model, noise=given, tile=64, margin=8, progress=False)
    assert not res2.noise.estimated
    with pytest.raises(ValueError, match="2-D"):
        denoise_micrograph(y[None], model)
    with pytest.raises(ValueError, match="not a ConditionedUNet"):
        from em_accel.models.denoiser import AtrousDenoiser
        a = AtrousDenoiser(width=0.05, depth=0)
        save_weights(tmp_path / "a.safetensors", a, a.config)
        load_conditioned(tmp_path / "a.safetensors")


def test_self_supervised_adaptation_on_two_frames_and_on_one():
    from em_accel.models.adapt import adapt

    torch.manual_seed(0)
    model = ConditionedUNet((8, 16), 1).eval()
    clean = synthetic_images(1, 96, 3)[0]
    lam = 30 * (0.3 + clean) / (0.3 + clean).mean()
    rng = np.random.default_rng(0)
    frames = np.stack([rng.poisson(lam), np.roll(rng.poisson(lam), (2, -1), (0, 1))]).astype(float)
    nl = noise_level_from_detector(frames[0], 1.0)

    def err(m):
        out = denoise_micrograph(frames[0], m, noise=nl, tile=128, progress=False,
                                 refine="none").image          # the network itself
        return np.mean((out - lam) ** 2)

    before = err(model)
    n2n = adapt(model, frames, noise=nl, steps=40, crop=48, lr=1e-3, progress=False)
    assert n2n.changed and min(n2n.held_losses[1:]) < n2n.held_losses[0]
    assert n2n.mode == "noise2noise" and n2n.shifts == [(-2, 1)]
    assert err(n2n.model) < 0.6 * before
    assert err(model) == before                     # the given model is left unchanged
    n2s = adapt(model, frames[0], noise=nl, steps=40, crop=48, lr=1e-3, progress=False)
    assert n2s.mode == "noise2self" and err(n2s.model) < before
    with pytest.raises(ValueError, match="frames"):
        adapt(model, np.zeros((2, 2, 8, 8)))


def test_evaluate_dose_suite_command(tmp_path, capsys):
    import json

    from em_accel.cli import main

    torch.manual_seed(0)
    model = ConditionedUNet((4, 8), 1)
    w = tmp_path / "w.safetensors"
    save_weights(w, model, model.config, dtype=torch.float16)
    assert main(["evaluate", "denoise", "--weights", str(w), "-n", "2", "--size", "48",
                 "--doses", "low", "--methods", "conditioned network (estimated noise)",
                 "Gaussian (oracle σ)", "noisy input", "--out", str(tmp_path / "ev"),
                 "--no-progress"]) == 0
    res = json.loads((tmp_path / "ev" / "denoise_dose_eval.json").read_text())["result"]["low"]
    r = res["results"]
    assert set(r) == {"conditioned network (estimated noise)", "Gaussian (oracle σ)",
                      "noisy input"}
    assert all(5 <= d <= 50 for d in res["doses"]) and len(res["kinds"]) == 2
    # an oracle-tuned filter never loses to the noisy input it starts from by much
    assert np.mean(r["Gaussian (oracle σ)"]["mse"]) < np.mean(r["noisy input"]["mse"])
    out = capsys.readouterr().out
    assert "| Gaussian (oracle σ) |" in out and "95 %" in out


def test_evaluate_dose_on_real_file_tiles(tmp_path):
    """``--images``: a real frame's non-overlapping tiles are the references; ``-n 0`` scores
    only them; a frame smaller than a tile and nothing to score are named errors."""
    import json

    import tifffile

    from em_accel.cli import main
    from em_accel.models.evaluate_dose import real_image_tiles

    rng = np.random.default_rng(0)
    frame = (1e4 + 3e3 * rng.random((100, 150))).astype(np.float32)
    tifffile.imwrite(tmp_path / "frame.tif", frame)
    tiles = real_image_tiles([tmp_path / "frame.tif"], 48)
    assert len(tiles) == 2 * 3 and all(t[2].shape == (48, 48) for t in tiles)
    assert min(t[2].min() for t in tiles) >= 0 and max(t[2].max() for t in tiles) <= 1
    np.testing.assert_allclose(tiles[1][2], (frame[:48, 48:96] - frame.min()) / np.ptp(frame),
                               rtol=1e-5)
    assert tiles[0][:2] == ("real:frame.tif", "stem")
    with pytest.raises(ValueError, match="smaller than"):
        real_image_tiles([tmp_path / "frame.tif"], 128)
    torch.manual_seed(0)
    model = ConditionedUNet((4, 8), 1)
    w = tmp_path / "w.safetensors"
    save_weights(w, model, model.config, dtype=torch.float16)
    assert main(["evaluate", "denoise", "--weights", str(w), "-n", "0", "--size", "48",
                 "--images", str(tmp_path / "frame.tif"), "--doses", "low", "--methods",
                 "Gaussian (oracle σ)", "noisy input", "--out", str(tmp_path / "ev"),
                 "--no-progress"]) == 0
    rec = json.loads((tmp_path / "ev" / "denoise_dose_eval.json").read_text())
    assert rec["real_tiles"] == 6 and rec["result"]["low"]["kinds"] == ["real:frame.tif/stem"] * 6
    with pytest.raises(ValueError, match="nothing to evaluate"):
        main(["evaluate", "denoise", "--weights", str(w), "-n", "0", "--out", str(tmp_path)])


def test_paired_intervals():
    from em_accel.models.evaluate_dose import interval95, paired

    m, lo, hi = interval95(np.array([1.0, 2.0, 3.0]))
    assert m == 2.0 and lo < 2.0 < hi
    assert hi - 2.0 == pytest.approx(4.303 / np.sqrt(3), rel=1e-3)
    res = {"a": {"mse": [1.0, 2.0, 4.0], "psnr": [30.0, 27.0, 24.0]},
           "b": {"mse": [2.0, 4.0, 8.0], "psnr": [27.0, 24.0, 21.0]}}
    p = paired(res, "a", "b")
    assert p["a_lower"] == 3 and p["mse_ratio_mean"] == pytest.approx(0.5)
    assert p["mse_ratio_geometric"][0] == pytest.approx(0.5)
    assert p["psnr_gain_db"][0] == pytest.approx(3.0)


def test_cli_conditioned_on_detector_units_counts_and_a_stack(tmp_path):
    from em_accel.cli import main
    from em_accel.io import read_image, write_image

    rng = np.random.default_rng(4)
    clean = synthetic_images(1, 96, 11)[0]
    lam = 15 * (0.4 + clean) / (0.4 + clean).mean()
    det = (25.0 * rng.poisson(lam) + 3e6 + rng.normal(0, 10, lam.shape)).astype(np.float32)
    write_image(tmp_path / "det.tif", det, pixel_size=0.5, metadata={"kV": 200})
    assert main(["denoise", str(tmp_path / "det.tif"), "-o", str(tmp_path / "o"),
                 "--no-progress"]) == 0
    out = read_image(tmp_path / "o" / "det_denoised.tif")
    meta = out.metadata["description"]["em_accel"]
    assert meta["denoised_by"] == "em_accel.models.ConditionedUNet" and meta["noise"]["estimated"]
    post = meta["post_filter"]                      # what the SURE post-filter chose
    assert meta["refine"] == "sure" and post["filter"] in ("none", "gaussian", "wiener", "mix")
    assert 0.0 <= post["wiener_weight"] <= 1.0
    truth = 25.0 * lam + 3e6
    assert np.mean((out.data - truth) ** 2) < 0.5 * np.mean((det - truth) ** 2)
    assert out.pixel_size == 0.5
    counts = rng.poisson(lam).astype(np.float32)
    stack = np.stack([counts, rng.poisson(lam).astype(np.float32)])
    write_image(tmp_path / "stack.mrc", stack, pixel_size=0.5)
    assert main(["denoise", str(tmp_path / "stack.mrc"), "-o", str(tmp_path / "o"), "--counts",
                 "--adapt", "--adapt-steps", "3", "--no-progress"]) == 0
    back = read_image(tmp_path / "o" / "stack_denoised.mrc")
    assert back.data.shape == stack.shape
    assert np.mean((back.data[0] - lam) ** 2) < 0.5 * np.mean((counts - lam) ** 2)
    with pytest.raises(ValueError, match="--adapt needs a conditioned"):
        main(["denoise", str(tmp_path / "det.tif"), "-o", str(tmp_path / "o"), "--model", "low",
              "--adapt", "--no-progress"])
