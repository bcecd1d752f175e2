"""Poisson dose noise, dose sampling, dihedral augmentation, deterministic crop datasets."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from em_accel.data import (NoisyCropDataset, dihedral, dihedral_inverse, make_batch, minmax, poisson_noise,
                           sample_counts_per_px, synthetic_images, synthetic_micrograph)


def test_poisson_noise_snr_follows_the_dose():
    # bright half at the max (1.0), dark half at 0.25, one zero pixel pins the minimum
    clean = torch.full((200, 200), 0.25, dtype=torch.float64)
    clean[:, 100:] = 1.0
    clean[0, 0] = 0.0
    for dose in (20.0, 400.0):
        pair = poisson_noise(clean, dose, torch.Generator().manual_seed(1))
        bright, dark = pair.noisy[1:, 100:], pair.noisy[1:, :100]
        # counts ~ Poisson(v·dose): relative std 1/sqrt(v·dose), mean ratio 4 (scale-free)
        assert float(bright.std() / bright.mean()) == pytest.approx(1 / math.sqrt(dose), rel=0.05)
        assert float(dark.std() / dark.mean()) == pytest.approx(1 / math.sqrt(0.25 * dose), rel=0.05)
        assert float(bright.mean() / dark.mean()) == pytest.approx(4.0, rel=0.03)
        assert float(pair.noisy.min()) == 0.0 and float(pair.noisy.max()) == 1.0
        torch.testing.assert_close(pair.target.mean(), pair.noisy.mean())
        # target is the clean image up to one scale factor
        ratio = pair.target[clean > 0] / clean[clean > 0]
        torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio[0])))


def test_poisson_noise_is_deterministic_and_batched():
    clean = torch.rand(3, 32, 32)
    a = poisson_noise(clean, torch.tensor([10.0, 100.0, 1000.0]), torch.Generator().manual_seed(5))
    b = poisson_noise(clean, torch.tensor([10.0, 100.0, 1000.0]), torch.Generator().manual_seed(5))
    c = poisson_noise(clean, torch.tensor([10.0, 100.0, 1000.0]), torch.Generator().manual_seed(6))
    assert torch.equal(a.noisy, b.noisy) and not torch.equal(a.noisy, c.noisy)
    err = ((a.noisy - a.target) ** 2).mean((-2, -1))
    assert err[0] > err[1] > err[2]  # more dose, less noise


def test_poisson_noise_rejects_bad_input():
    with pytest.raises(ValueError, match="counts_per_px"):
        poisson_noise(torch.rand(8, 8), -1.0)
    with pytest.raises(TypeError, match="floating"):
        poisson_noise(torch.ones(8, 8, dtype=torch.int64), 10.0)
    with pytest.raises(ValueError, match="shape"):
        poisson_noise(torch.rand(8), 10.0)


def test_dose_distributions():
    g = torch.Generator().manual_seed(0)
    low = sample_counts_per_px(20000, "low", g)
    assert float(low.min()) >= 25.0
    assert float(low.mean()) == pytest.approx(100.0, abs=3 * 75 / math.sqrt(20000))
    assert float(low.std()) == pytest.approx(75.0, rel=0.03)  # exponential: std = mean
    high = sample_counts_per_px(20000, "high", g)
    assert 200.0 <= float(high.min()) and float(high.max()) <= 2500.0
    assert float(high.mean()) == pytest.approx(1350.0, abs=3 * 2300 / math.sqrt(12 * 20000))
    with pytest.raises(ValueError, match="regime"):
        sample_counts_per_px(1, "medium")


def test_dihedral_group_matches_numpy():
    x = torch.arange(12.0).reshape(3, 4)
    seen = set()
    for k in range(8):
        want = np.rot90(x.numpy(), k % 4)
        want = want.T if k >= 4 else want
        got = dihedral(x, k)
        np.testing.assert_array_equal(got.numpy(), want)
        seen.add(tuple(got.flatten().tolist()) + tuple(got.shape))
    assert len(seen) == 8
    with pytest.raises(ValueError):
        dihedral(x, 8)


def test_dihedral_inverse_undoes_each_transform():
    x = torch.arange(2 * 3 * 5.0).reshape(2, 3, 5)
    for k in range(8):
        torch.testing.assert_close(dihedral_inverse(dihedral(x, k), k), x, rtol=0, atol=0)
    with pytest.raises(ValueError):
        dihedral_inverse(x, -1)


def test_minmax():
    x = torch.tensor([[2.0, 4.0], [6.0, 10.0]])
    torch.testing.assert_close(minmax(x), torch.tensor([[0.0, 0.25], [0.5, 1.0]]))


def test_dataset_items_are_pure_functions_of_seed_and_index():
    images = synthetic_images(3, 64, seed=0)
    ds = NoisyCropDataset(images, 32, "low", length=100, seed=7)
    again = NoisyCropDataset(images, 32, "low", length=100, seed=7)
    other = NoisyCropDataset(images, 32, "low", length=100, seed=8)
    for i in (0, 17, 99):
        x, y = ds[i]
        assert x.shape == y.shape == (1, 32, 32)
        assert torch.equal(x, again[i][0]) and torch.equal(y, again[i][1])
        assert not torch.equal(x, other[i][0])
        torch.testing.assert_close(x.mean(), y.mean())
    xb, yb = make_batch(ds, 3, 4)
    assert xb.shape == (4, 1, 32, 32)
    assert torch.equal(xb[1], ds[13][0])
    with pytest.raises(IndexError):
        ds[100]


def test_dataset_rejects_bad_input():
    with pytest.raises(ValueError, match="smaller than crop"):
        NoisyCropDataset([np.zeros((16, 16))], 32)
    with pytest.raises(ValueError, match="2-D"):
        NoisyCropDataset([np.zeros((2, 40, 40))], 32)
    with pytest.raises(ValueError, match="counts_per_px"):
        NoisyCropDataset([np.zeros((40, 40))], 32, counts_per_px=0.0)


def test_synthetic_micrograph_range_and_reproducibility():
    a, b = synthetic_micrograph(96, 3), synthetic_micrograph(96, 3)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == (96, 96)
    assert a.min() == 0.0 and a.max() == pytest.approx(1.0)
    assert not np.array_equal(a, synthetic_micrograph(96, 4))


def test_simulated_micrographs_are_reproducible_lattice_images():
    from em_accel.data import simulated_images, synthetic_images

    a = simulated_images(2, 64, seed=7)
    b = simulated_images(2, 64, seed=7, workers=2)
    for x, y in zip(a, b):
        assert x.shape == (64, 64) and x.dtype == np.float32
        np.testing.assert_array_equal(x, y)  # same images in processes
        assert x.min() == 0.0 and x.max() == pytest.approx(1.0) and x.std() > 0.05
    assert not np.array_equal(a[0], a[1])

    def peak_fraction(img):  # share of non-DC spectral power in the strongest 2% of bins
        p = np.abs(np.fft.fft2(img - img.mean())) ** 2
        top = np.sort(p.ravel())[::-1]
        return top[: p.size // 50].sum() / top.sum()

    # a periodic crystal images to a few Bragg spots; the synthetic micrographs (amorphous
    # background, grains, particles) spread their power
    assert min(peak_fraction(x) for x in a) > 0.99
    assert max(peak_fraction(x) for x in synthetic_images(2, 64, seed=7)) < 0.99
