"""Clean simulated micrographs: shapes, ranges, determinism, scenes, the resumable cache."""
import json
import math

import numpy as np
import pytest
import torch

from em_accel.data import micrographs as mg
from em_accel.data import scenes
from em_accel.sim.imaging import aberration_function, aperture
from em_accel.sim.potential import Grid


@pytest.mark.parametrize("scene", scenes.SCENES)
def test_haadf_scenes_give_unit_range_images_with_contrast(scene):
    m = mg.micrograph(32, "haadf", seed=3, scene=scene)
    assert m.image.shape == (32, 32) and m.image.dtype == np.float32
    assert m.image.min() >= 0 and m.image.max() == pytest.approx(1.0, abs=1e-6)
    assert m.image.std() > 1e-3
    assert m.params["scene"]["scene"] == scene
    json.dumps(m.params)


def test_hrtem_image_and_determinism_by_seed(monkeypatch):
    monkeypatch.setenv("EM_ACCEL_FFT", "torch")  # no FFTW planning for one-off grids
    kw = dict(scene="crystal", pixel_size=0.25)
    a = mg.micrograph(32, "hrtem", seed=(5, 1), **kw)
    b = mg.micrograph(32, "hrtem", seed=(5, 1), **kw)
    c = mg.micrograph(32, "hrtem", seed=(5, 2), **kw)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.params == b.params
    assert not np.array_equal(a.image, c.image)
    assert a.image.min() == 0 and a.image.max() == pytest.approx(1.0)
    lo, hi = a.params["intensity_range"]
    assert 0 <= lo < hi  # intensities (vacuum 1) that the image's 0 and 1 stand for


def test_haadf_single_atom_is_a_probe_centred_on_the_atom():
    """One gold atom in vacuum: the image peaks at the atom and falls off as a probe does."""
    rng = np.random.default_rng(0)
    sc = scenes.Scene(np.array([[6.3, 4.1, 1.0]]), np.array([79]), (12.8, 12.8), 2.0)
    img, p = mg._haadf(sc, 64, 0, 0.2, rng, None)
    i, j = np.unravel_index(np.argmax(img), img.shape)
    # pixel k samples x = (k + 1/2) * 0.2 Å when f = 1; allow one pixel for the aberrations
    assert abs((i + 0.5) * 0.2 - 6.3) <= 0.25 and abs((j + 0.5) * 0.2 - 4.1) <= 0.25
    assert img[(i + 15) % 64, j] < 0.05


def test_probe_spectrum_on_a_small_grid_equals_the_full_grid():
    g = Grid((40.0, 40.0), (320, 320))
    ab = {"C10": 30.0, "C12": 5.0, "phi12": 0.3, "C30": 1e4}
    fast = mg.probe_intensity_spectrum(g, 300.0, 25.0, ab)
    p = torch.fft.ifft2(torch.polar(aperture(g, 300.0, 25.0), -aberration_function(g, 300.0, ab)))
    i = p.abs() ** 2
    ref = torch.fft.rfft2(i / i.sum())
    assert (fast - ref).abs().max() < 1e-12


def test_held_out_split_uses_only_held_out_materials():
    from em_accel.sim.materials import split_of

    for k in range(3):
        m = mg.micrograph(24, "haadf", seed=k, scene="crystal", split="heldout")
        assert split_of(m.params["scene"]["material"]) == "heldout"


def test_pixel_range_draws_mixed_magnifications_and_leaves_the_default_draw_alone():
    sizes = [mg.micrograph(24, "haadf", seed=(9, k), pixel_range=(0.5, 2.0)).params["pixel_size_A"]
             for k in range(4)]
    assert all(0.5 <= s <= 2.0 for s in sizes) and max(sizes) > 0.45  # beyond atomic resolution
    # the same seed without a range: the atomic-resolution ranges, the same image as before
    a, b = mg.micrograph(24, "haadf", seed=(9, 0)), mg.micrograph(24, "haadf", seed=(9, 0), pixel_range=None)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.params["pixel_size_A"] <= 0.45
    for bad in ((0.5, 0.2), (0.001, 1.0), (0.1, 3.0)):
        with pytest.raises(ValueError, match="pixel_range"):
            mg.micrograph(24, pixel_range=bad)


def test_bad_arguments_are_named_errors():
    with pytest.raises(ValueError, match="kind"):
        mg.micrograph(32, "sem")
    with pytest.raises(ValueError, match="size"):
        mg.micrograph(8)
    with pytest.raises(TypeError, match="size"):
        mg.micrograph(32.0)
    with pytest.raises(ValueError, match="scene"):
        mg.micrograph(32, scene="galaxy")
    with pytest.raises(ValueError, match="pixel_size"):
        mg.micrograph(32, pixel_size=-1.0)


def test_cache_is_resumable_appends_and_matches_direct_calls(tmp_path):
    path = tmp_path / "c.npz"
    mg.build_cache(path, 2, size=24, kind="haadf", seed=4, progress=False)
    meta = mg.build_cache(path, 3, size=24, kind="haadf", seed=4, progress=False)
    cache = mg.load_cache(path)
    assert cache.images.shape == (3, 24, 24) and meta["count"] == 3
    assert math.isfinite(meta["images_per_second"])
    for i in (0, 2):
        direct = mg.micrograph(24, "haadf", seed=(4, i)).image
        np.testing.assert_allclose(cache.images[i], direct, atol=1e-3)  # stored as float16
        assert cache.params[i] == mg.micrograph(24, "haadf", seed=(4, i)).params
    with pytest.raises(ValueError, match="seed"):
        mg.build_cache(path, 4, size=24, kind="haadf", seed=5, progress=False)
    batch = mg.micrographs(2, 24, "haadf", seed=4, start=1, progress=False)
    np.testing.assert_allclose(batch.images, cache.images[1:3], atol=1e-3)


def test_cli_writes_a_cache_and_reports_bad_input(tmp_path, capsys):
    from em_accel.sim.cli import main

    out = tmp_path / "m.npz"
    assert main(["simulate-micrographs", str(out), "-n", "2", "--size", "24", "--scene", "amorphous"]) == 0
    cache = mg.load_cache(out)
    assert cache.images.shape == (2, 24, 24) and cache.meta["kwargs"] == {"scene": "amorphous"}
    assert main(["simulate-micrographs", str(out), "-n", "2", "--size", "24", "--kind", "hrtem"]) == 2
    assert "kind" in capsys.readouterr().err
    wide = tmp_path / "w.npz"
    assert main(["simulate-micrographs", str(wide), "-n", "1", "--size", "24", "--pixel-range", "1", "2"]) == 0
    cache = mg.load_cache(wide)
    assert cache.meta["kwargs"] == {"pixel_range": [1.0, 2.0]} and cache.params[0]["pixel_size_A"] >= 1.0
