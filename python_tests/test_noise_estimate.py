"""Poisson–Gaussian noise estimation from one image (em_accel.data.noise_estimate)."""
import numpy as np
import pytest

from em_accel.data import synthetic_images
from em_accel.data.noise_estimate import (NoiseEstimateError, estimate_noise,
                                          noise_level_from_detector)


@pytest.fixture(scope="module")
def clean():
    return synthetic_images(3, 192, 7)


def _acquire(im, counts, gain, offset, read, rng, pedestal=0.3):
    lam = counts * (pedestal + im) / (pedestal + im).mean()
    return lam, gain * rng.poisson(lam) + offset + rng.normal(0, read, im.shape)


@pytest.mark.parametrize("counts", [2.0, 20.0, 200.0])
@pytest.mark.parametrize("gain,offset,read", [(1.0, 0.0, 0.0), (37.0, 3e6, 20.0)])
def test_noise_variance_at_the_image_mean_within_10_percent(clean, counts, gain, offset, read):
    rng = np.random.default_rng(int(counts) + int(gain))
    for im in clean:
        lam, y = _acquire(im, counts, gain, offset, read, rng)
        nl = estimate_noise(y)
        true_var = gain ** 2 * lam.mean() + read ** 2
        assert abs((nl.a * y.mean() + nl.b) / true_var - 1) < 0.10
        assert nl.estimated


def test_gain_and_equivalent_counts_at_low_dose(clean):
    """Gain from the mean-variance slope (±35 %) and equivalent counts/px (within 2.5×) of a
    192² detector image near 3×10⁶ units: the intercept lies far from the data, so the count
    level is the least certain number (the variance at the image's own levels is within 10 %)."""
    rng = np.random.default_rng(0)
    for im in clean:
        lam, y = _acquire(im, 10.0, 37.0, 3e6, 20.0, rng, pedestal=0.1)
        nl = estimate_noise(y)
        assert abs(nl.a / 37.0 - 1) < 0.35
        ratio = nl.counts_per_px / (lam.mean() + (20 / 37) ** 2)
        assert 1 / 2.5 < ratio < 2.5
        # equivalent counts have variance ≈ mean
        c = nl.to_counts(y)
        np.testing.assert_allclose(nl.from_counts(c), y, rtol=1e-9)


def test_gaussian_noise_only():
    rng = np.random.default_rng(3)
    y = 1000.0 + 5.0 * rng.standard_normal((128, 128))
    nl = estimate_noise(y)
    assert abs((nl.a * y.mean() + nl.b) / 25.0 - 1) < 0.1
    assert nl.a > 0


def test_user_override_and_bad_input():
    y = np.full((64, 64), 3e6) + np.arange(64)[None]
    nl = noise_level_from_detector(y, gain=20.0, offset=3e6 - 100 * 20.0, read_noise=10.0)
    assert not nl.estimated
    assert nl.counts_per_px == pytest.approx(100 + 31.5 / 20 + 0.25, rel=1e-6)
    with pytest.raises(ValueError, match="gain"):
        noise_level_from_detector(y, gain=0.0)
    with pytest.raises(NoiseEstimateError, match="16"):
        estimate_noise(np.zeros((8, 8)))
    with pytest.raises(NoiseEstimateError, match="NaN"):
        estimate_noise(np.full((32, 32), np.nan))
    with pytest.raises(NoiseEstimateError, match="variation"):
        estimate_noise(np.ones((32, 32)))
    with pytest.raises(NoiseEstimateError, match="2-D"):
        estimate_noise(np.ones((2, 32, 32)))
