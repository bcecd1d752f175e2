"""TEM image formation and STEM: physics checks (abTEM agreement is in test_sim_abtem.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from em_accel.sim import Potential, Structure, interaction_parameter, wavelength
from em_accel.sim.imaging import (aberration_function, aperture, bin_detector, ctf, dose_noise, image,
                                  spatial_envelope, temporal_envelope)
from em_accel.sim.potential import Grid
from em_accel.sim.stem import annular_mask, incoherent_image, probe, scan_grid, stem


def test_weak_phase_object_contrast_is_2_sin_chi():
    # psi = exp(i sigma V) ~ 1 + i sigma V: image spectrum I(k) = 2 sigma V(k) sin(chi(k)).
    grid = Grid((10.0, 8.0), (64, 50))
    g = torch.Generator().manual_seed(0)
    v = torch.randn(grid.gpts, generator=g, dtype=torch.float64)
    eps = 1e-4
    psi = torch.exp(1j * eps * v)
    kw = dict(defocus=200.0, Cs=1e6)
    img = image(psi, grid, 200, **kw)
    chi = aberration_function(grid, 200, **kw)
    expect = 2 * eps * torch.fft.fft2(v) * torch.sin(chi)
    got = torch.fft.fft2(img)
    got[0, 0] -= img.numel()
    assert ((got - expect).norm() / expect.norm()).item() < 1e-3


def test_aberration_function_defocus_and_cs():
    grid = Grid((20.0, 20.0), (64, 64))
    lam = wavelength(300)
    kx, ky = grid.frequencies()
    k2 = kx ** 2 + ky ** 2
    chi = aberration_function(grid, 300, defocus=100.0, Cs=1.2e7)
    expect = math.pi * lam * k2 * (-100.0) + 0.5 * math.pi * lam ** 3 * 1.2e7 * k2 ** 2
    assert torch.allclose(chi, expect, rtol=1e-12, atol=1e-12)


def test_envelopes_and_aperture():
    grid = Grid((20.0, 20.0), (64, 64))
    et = temporal_envelope(grid, 200, 30.0)
    kx, ky = grid.frequencies()
    lam = wavelength(200)
    assert torch.allclose(et, torch.exp(-0.25 * math.pi ** 2 * lam ** 2 * 900 * (kx ** 2 + ky ** 2) ** 2))
    es = spatial_envelope(grid, 200, 0.5, defocus=50.0)
    k = torch.sqrt(kx ** 2 + ky ** 2)
    assert torch.allclose(es, torch.exp(-(math.pi * 5e-4 / lam) ** 2 * (-50 * lam * k) ** 2))
    a = aperture(grid, 200, 20.0)
    alpha = lam * k * 1e3
    assert (a[alpha < 19] == 1).all() and (a[alpha > 21] == 0).all()
    h = ctf(grid, 200, semiangle_cutoff=20, focal_spread=30, angular_spread=0.5, defocus=50.0)
    assert torch.allclose(h.abs(), a * et * es)


def test_dose_noise_statistics():
    img = torch.full((200, 200), 0.8, dtype=torch.float64)
    counts = dose_noise(img, dose=1000.0, pixel_area=0.05 ** 2, seed=0)
    lam = 0.8 * 1000 * 0.0025
    assert counts.mean().item() == pytest.approx(lam, rel=0.02)
    assert counts.var().item() == pytest.approx(lam, rel=0.05)
    assert (counts == counts.round()).all()
    with pytest.raises(ValueError, match="dose"):
        dose_noise(img, 0.0, 1.0)
    assert bin_detector(torch.arange(16.0).reshape(4, 4), 2).tolist() == [[2.5, 4.5], [10.5, 12.5]]


def test_probe_normalised_and_centred():
    grid = Grid((12.0, 10.0), (96, 80))
    p = probe(grid, 200, [(3.0, 4.0), (6.0, 5.0)], semiangle_cutoff=25, dtype=torch.complex128)
    assert torch.allclose((torch.fft.fft2(p).abs() ** 2).sum((-2, -1)), torch.ones(2, dtype=torch.float64))
    for b, (x, y) in enumerate([(3.0, 4.0), (6.0, 5.0)]):
        i = int(torch.argmax(p[b].abs()))
        ix, iy = divmod(i, 80)
        assert (ix * grid.sampling[0], iy * grid.sampling[1]) == pytest.approx((x, y), abs=0.13)
    with pytest.raises(ValueError, match="band limit"):
        probe(Grid((12.0, 10.0), (24, 20)), 200, [(0, 0)], semiangle_cutoff=60)


def test_stem_in_vacuum_bright_field_collects_everything():
    s = Structure(np.zeros((0, 3)), np.zeros(0), (8.0, 8.0, 4.0))
    pot = Potential(s, gpts=64, slice_thickness=2.0, dtype=torch.float64)
    sig = stem(pot, 200, scan_grid((8.0, 8.0), (2, 2)), [(0, 25), (40, 80)], semiangle_cutoff=20)
    assert torch.allclose(sig[0], torch.ones(4, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(sig[1], torch.zeros(4, dtype=torch.float64), atol=1e-12)
    with pytest.raises(ValueError, match="angle"):
        annular_mask(pot.grid, 200, 50, 500)


def test_stem_haadf_peaks_on_atom_and_scales_with_z():
    s = Structure([[4.0, 4.0, 1.0]], [79], (8.0, 8.0, 2.0))
    pot = Potential(s, gpts=96, slice_thickness=2.0)
    sig = stem(pot, 200, [(4.0, 4.0), (1.0, 1.0)], [(60, 140)], semiangle_cutoff=25)[0]
    assert sig[0] > 10 * sig[1] > 0
    s2 = Structure([[4.0, 4.0, 1.0]], [14], (8.0, 8.0, 2.0))
    sig2 = stem(Potential(s2, gpts=96, slice_thickness=2.0), 200, [(4.0, 4.0)], [(60, 140)],
                semiangle_cutoff=25)[0]
    assert sig[0] > 3 * sig2[0]


def test_incoherent_image_is_probe_intensity_at_atoms():
    s = Structure([[3.0, 5.0, 0.0], [9.0, 4.0, 1.0]], [79, 14], (12.0, 10.0, 2.0))
    img = incoherent_image(s, 200, sampling=0.1, semiangle_cutoff=25, exponent=1.7)
    assert img.sum().item() == pytest.approx(79 ** 1.7 + 14 ** 1.7, rel=1e-9)
    i = int(torch.argmax(img))
    assert divmod(i, img.shape[1]) == (30, 50)
    # the image of one atom is the probe intensity centred on it
    one = incoherent_image(Structure([[3.0, 5.0, 0.0]], [79], (12.0, 10.0, 2.0)), 200, sampling=0.1,
                           semiangle_cutoff=25, exponent=1.0)
    grid = Grid((12.0, 10.0), (120, 100))
    pr = probe(grid, 200, [(3.0, 5.0)], 25, dtype=torch.complex128)[0].abs() ** 2
    assert torch.allclose(one, 79 * pr * pr.numel(), atol=1e-9 * 79)


def test_interaction_parameter_sign_convention():
    # exp(+i sigma V): a positive potential advances the phase.
    s = Structure([[2.0, 2.0, 0.5]], [6], (4.0, 4.0, 1.0))
    from em_accel.sim import exit_wave

    w = exit_wave(s, energy=200, gpts=64, slice_thickness=1.0, precision="float64")
    assert torch.angle(w[26, 26]).item() > 0
    assert interaction_parameter(200) > 0


def test_dose_noise_refuses_means_beyond_int64_draws():
    from em_accel.errors import OutOfRangeError

    img = torch.rand(16, 16)
    with pytest.raises(OutOfRangeError, match="pixel_area"):
        dose_noise(img, 100.0, float(2 ** 64))  # found by the fuzz: OverflowError before
    with pytest.raises(OutOfRangeError, match="counts per pixel"):
        dose_noise(img, 1e10, 1e10)
    img[3, 3] = float("nan")
    with pytest.raises(OutOfRangeError):
        dose_noise(img, 100.0, 1.0)


@pytest.mark.parametrize("extent", [[], 1e6, (5.0, 5.0, 5.0), "a"])
def test_box_sizes_get_named_errors(extent):
    # found by the fuzz: IndexError for [] and MemoryError for a 100 µm box before
    from em_accel.errors import InvalidInputError, InvalidTypeError
    from em_accel.sim import exit_wave

    with pytest.raises((InvalidInputError, InvalidTypeError), match="extent"):
        exit_wave("Si", energy=200, zone=(0, 0, 1), thickness=4.0, gpts=32, extent=extent)


def test_dose_noise_refuses_complex_images():
    from em_accel.errors import InvalidTypeError

    with pytest.raises(InvalidTypeError, match="real"):
        dose_noise(torch.ones(4, 4, dtype=torch.complex64), 100.0, 1.0)
    from em_accel.errors import OutOfRangeError
    with pytest.raises(OutOfRangeError, match="dose"):
        dose_noise(torch.ones(4, 4), 10 ** 30, 1.0)  # an int too big for a float64 product
