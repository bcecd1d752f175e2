"""The acquisition model: Poisson-Gaussian statistics, scan distortions, camera defects."""
import json

import numpy as np
import pytest
import torch

from em_accel.data import distort as d


def test_poisson_gaussian_mean_and_variance():
    clean = np.full((200, 200), 0.5)
    adu = d.detect(clean, 40.0, gain=3.0, offset=10.0, read_noise=2.0, seed=0)
    lam = 0.5 * 40.0
    assert adu.mean() == pytest.approx(3.0 * lam + 10.0, rel=0.01)
    assert adu.var() == pytest.approx(9.0 * (lam + 4.0), rel=0.03)
    counts = d.detect(clean, 40.0, seed=1)
    assert counts.mean() == pytest.approx(lam, rel=0.01) and counts.var() == pytest.approx(lam, rel=0.03)
    assert np.array_equal(counts, np.round(counts))  # pure Poisson: integer counts


def test_gain_noise_and_noise_level_map_match_the_empirical_std():
    rng = np.random.default_rng(0)
    clean = np.repeat(np.linspace(0.05, 1.0, 8), 8).reshape(8, 8)
    cpp, kw = 30.0, dict(read_noise=1.5, gain_cv=0.6, dark_counts=0.2)
    draws = np.stack([(d.detect(clean, cpp, gain=2.0, offset=5.0, seed=rng, **kw) - 5.0) / (2.0 * cpp)
                      for _ in range(3000)])
    expected = d.noise_level_map(clean, cpp, **kw)
    np.testing.assert_allclose(draws.std(0), expected, rtol=0.08)
    np.testing.assert_allclose(draws.mean(0), clean + 0.2 / cpp, atol=0.01)


def test_line_jitter_shifts_rows_and_keeps_their_content():
    rng = np.random.default_rng(1)
    img = rng.random((16, 64))
    out = d.line_jitter(img, 1.5, seed=7)
    offsets = d.line_jitter_offsets(16, 1.5, seed=7)
    assert np.abs(offsets).max() > 0.5
    cols = np.arange(64)
    for i in range(16):
        inner = (cols + offsets[i] >= 0) & (cols + offsets[i] <= 63)
        np.testing.assert_allclose(out[i, inner], np.interp(cols[inner] + offsets[i], cols, img[i]),
                                   atol=1e-12)
    # an integer shift moves a row without changing it
    shifted = d.resample(img, 0.0, np.full((16, 1), 3.0))
    np.testing.assert_array_equal(shifted[:, :61], img[:, 3:])


def test_drift_shears_across_scan_lines_and_flyback_decays():
    dy, dx = d.drift_offsets((10, 20), (0.0, 0.5))
    assert np.allclose(dy, 0) and dx[9, 0] - dx[0, 0] == pytest.approx(4.5)
    f = d.flyback_offsets(50, 2.0, 5.0)
    assert f[0] == pytest.approx(2.0) and abs(f[-1]) < 1e-3


def test_acquire_is_deterministic_and_unbiased_in_clean_units():
    clean = np.tile(np.linspace(0, 1, 64), (64, 1)).astype(np.float32)
    for modality in ("stem", "tem", "haadf", "hrtem"):
        a = d.acquire(clean, modality, 200.0, seed=11)
        b = d.acquire(clean, modality, 200.0, seed=11)
        c = d.acquire(clean, modality, 200.0, seed=12)
        np.testing.assert_array_equal(a.noisy, b.noisy)
        assert a.params == b.params and not np.array_equal(a.noisy, c.noisy)
        assert a.noisy.dtype == np.float32 and a.noisy.shape == clean.shape
        assert a.params["counts_per_px"] == 200.0
        json.dumps(a.params)
    means = [np.median(d.acquire(clean, "tem", 500.0, seed=s).noisy) for s in range(10)]
    assert np.mean(means) == pytest.approx(np.median(clean), abs=0.03)


def test_tem_defects_xray_hits_and_dead_pixels():
    img = np.zeros((32, 32))
    hit = d.xray_hits(img, 3, 40.0, seed=0)
    assert 3 <= (hit == 40.0).sum() <= 18
    mask = d.defect_pixel_mask((32, 32), 0.0, seed=0, columns=1)
    assert mask.sum() == 32 and mask.any(0).sum() == 1


def test_bad_input_is_a_named_error():
    with pytest.raises(ValueError, match="counts_per_px"):
        d.acquire(np.zeros((8, 8)), "stem", 0.0)
    with pytest.raises(ValueError, match="modality"):
        d.acquire(np.zeros((8, 8)), "sem", 10.0)
    with pytest.raises(ValueError, match="2-D"):
        d.acquire(np.zeros((2, 8, 8)), "tem", 10.0)
    with pytest.raises(ValueError, match=">= 0"):
        d.detect(-np.ones((4, 4)), 10.0)


def test_intensity_range_gives_hrtem_contrast_on_a_bright_background():
    clean = np.tile(np.linspace(0, 1, 32), (32, 1))
    a = d.acquire(clean, "tem", 100.0, seed=3, intensity_range=(0.8, 1.2))
    b = d.acquire(clean, "tem", 100.0, seed=3)
    assert a.params["intensity_range"] == [0.8, 1.2]
    # the same counts_per_px is noisier relative to a 40 % modulation than to a 0..1 stretch
    assert (a.noisy - clean).std() > 2 * (b.noisy - clean).std()
    std = d.acquired_noise_level(clean, a.params)
    assert std.shape == clean.shape and 0.15 < std.mean() < 0.5


def test_stem_params_recover_the_scan_offsets_an_acquisition_used():
    rng = np.random.default_rng(2)
    clean = np.clip(rng.random((48, 48)), 0.05, 1)
    for seed in range(6):
        a = d.acquire(clean, "stem", 1e8, seed=seed)
        dy, dx = d.scan_offsets(clean.shape, **a.params, seed=a.params["scan_seed"])
        np.testing.assert_allclose(a.noisy, d.resample(clean, dy, dx), atol=2e-3)


def test_acquired_dataset_items_are_deterministic_and_consistent():
    from em_accel.data.acquired_dataset import AcquiredDataset

    rng = np.random.default_rng(0)
    images = rng.random((3, 40, 40)).astype(np.float32)
    params = [{"intensity_range": [0.7, 1.3]}] * 3
    for modality, par in (("stem", None), ("tem", params)):
        ds = AcquiredDataset(images, par, modality, (50.0, 500.0), crop=24, length=10, seed=1)
        a, b = ds[3], ds[3]
        assert a.noisy.shape == a.clean.shape == a.noise_level.shape == (1, 24, 24)
        assert torch.equal(a.noisy, b.noisy) and a.counts_per_px == b.counts_per_px
        assert 50.0 <= a.counts_per_px <= 500.0
        assert (a.noise_level > 0).all()
    with pytest.raises(ValueError, match="crop"):
        AcquiredDataset(images, crop=64)
    with pytest.raises(ValueError, match="modality"):
        AcquiredDataset(images, modality="sem", crop=None)


def test_stem_scan_distort_is_the_recorded_raster_and_recoverable():
    """The distorted image is the clean one resampled at the drawn scan offsets (recoverable
    from the returned settings), deterministic per seed, and differs from the clean image
    where a distortion was drawn."""
    rng = np.random.default_rng(0)
    clean = rng.random((48, 64))
    img, p = d.stem_scan_distort(clean, seed=3)
    again, _ = d.stem_scan_distort(clean, seed=3)
    assert np.array_equal(img, again) and img.shape == clean.shape
    assert set(p) == {"jitter_px", "jitter_correlation", "drift_px_per_line",
                      "flyback_amplitude_px", "flyback_decay_px", "nonlinearity", "scan_seed"}
    settings = {k: v for k, v in p.items() if k != "scan_seed"}
    ref = np.clip(d.resample(clean, *d.scan_offsets(clean.shape, seed=p["scan_seed"],
                                                    **settings)), 0, None)
    np.testing.assert_array_equal(img, ref)
    distorted = [d.stem_scan_distort(clean, seed=s) for s in range(8)]
    moved = [np.abs(i - clean).max() > 1e-3 for i, q in distorted]
    drawn = [q["jitter_px"] > 0 or any(q["drift_px_per_line"]) or q["flyback_amplitude_px"] > 0
             or q["nonlinearity"] != 0 for _, q in distorted]
    assert moved == drawn and any(drawn)
