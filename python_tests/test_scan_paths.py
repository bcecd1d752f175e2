"""Scan-path generators: hand-computed small cases, achieved coverage within the stated
tolerance, spiral geometry, partial-scan input formation."""
from __future__ import annotations

import math

import pytest
import torch

from em_accel.scan import (achieved_coverage, blur_path, dwell_mask, grid, gridlike, low_dwell_noise,
                           make_path, partial_scan, random, raster, scan_sample, spiral)
from em_accel.scan.partial import gaussian_kernel


def test_raster_serpentine_3x4_exact():
    p = raster((3, 4), 1.0)
    expected = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 3), (1, 2), (1, 1), (1, 0),
                (2, 0), (2, 1), (2, 2), (2, 3)]
    assert p.positions.tolist() == [[r + 0.5, c + 0.5] for r, c in expected]
    assert p.coverage == 1.0
    assert raster((3, 4), 1.0, serpentine=False).positions[4:8, 1].tolist() == [0.5, 1.5, 2.5, 3.5]
    # Every other row of 6: rows floor((k + 1/2) * 6 / 3) = 1, 3, 5.
    p = raster((6, 2), 0.5)
    assert p.positions[:, 0].tolist() == [1.5, 1.5, 3.5, 3.5, 5.5, 5.5]
    assert p.coverage == 0.5


def test_grid_dlss_exact():
    p = grid((10, 10), 1 / 9)  # d = 3, offset (10 % 3) // 2 = 0: rows/cols 0, 3, 6, 9
    assert len(p) == 16 and p.coverage == 0.16
    assert p.positions[:5].tolist() == [[0.5, 0.5], [0.5, 3.5], [0.5, 6.5], [0.5, 9.5], [3.5, 0.5]]
    p = grid((11, 12), 1 / 9)  # rows from (11 % 3) // 2 = 1, cols from (12 % 3) // 2 = 0
    assert sorted({r for r, _ in p.positions.tolist()}) == [1.5, 4.5, 7.5, 10.5]
    assert sorted({c for _, c in p.positions.tolist()}) == [0.5, 3.5, 6.5, 9.5]
    # DLSS coverage 1/25 on 512^2: d = 5, offset 1, 103 x 103 probes.
    p = grid((512, 512), 1 / 25)
    assert len(p) == 103 * 103 and p.positions[0].tolist() == [1.5, 1.5]


def test_random_exact_coverage_distinct_sorted():
    p = random((20, 30), 0.1, seed=4)
    assert len(p) == 60 and p.coverage == 0.1
    flat = (p.positions[:, 0].floor() * 30 + p.positions[:, 1].floor()).long()
    assert torch.equal(flat, flat.sort().values) and flat.unique().numel() == 60
    assert not torch.equal(p.positions, random((20, 30), 0.1, seed=5).positions)


def test_spiral_geometry_archimedes():
    # Uncalibrated: r = k*theta with turn spacing 1/c px; probes 1 px apart along the arc.
    H = W = 64
    c = 0.1
    p = spiral((H, W), c, calibrate=False)
    pos = p.positions.double()
    assert pos[0].tolist() == [32.0, 32.0]
    d = pos - torch.tensor([32.0, 32.0], dtype=torch.float64)
    r = d.norm(dim=1)
    theta = torch.atan2(d[:, 0], d[:, 1])
    theta = torch.cat([theta[:1], theta[1:] + 2 * math.pi * torch.cumsum(
        ((theta[1:] - theta[:-1]) < -math.pi).double() - ((theta[1:] - theta[:-1]) > math.pi).double(), 0)])
    k = (1 / c) / (2 * math.pi)
    inner = r < 31  # before the spiral first leaves the image, the samples are consecutive
    torch.testing.assert_close(r[inner][1:], k * theta[inner][1:], atol=2e-4, rtol=0)
    # Probe j sits at arc length j px: s(theta) = k/2 (theta sqrt(1 + theta^2) + asinh(theta)).
    th = theta[inner]
    s = 0.5 * k * (th * torch.sqrt(1 + th * th) + torch.asinh(th))
    torch.testing.assert_close(s, torch.arange(len(th), dtype=torch.float64), atol=2e-3, rtol=0)
    steps = (pos[1:] - pos[:-1]).norm(dim=1)[inner[1:]]
    assert bool(((steps > 0.94) & (steps <= 1.0 + 1e-5)).all())  # chords of 1-px arcs


@pytest.mark.parametrize("coverage", [1 / 10, 1 / 20, 1 / 40, 1 / 100])
def test_spiral_calibrated_coverage(coverage):
    p = spiral((256, 256), coverage)
    assert abs(p.coverage / coverage - 1) <= 0.02
    assert p.positions.dtype == torch.float32 and p.positions.shape[1] == 2
    inside = (p.positions >= 0).all() and (p.positions[:, 0] < 256).all() and (p.positions[:, 1] < 256).all()
    assert bool(inside)


@pytest.mark.parametrize("coverage", [1 / 10, 1 / 20])
def test_gridlike_calibrated_coverage_and_dwell(coverage):
    p = gridlike((160, 160), coverage, seed=1)
    assert abs(p.coverage / coverage - 1) <= 0.03
    assert p.dwell is not None and p.dwell.shape == (len(p),)
    # dwell = sqrt(1 + dy^2) / steps with steps = ceil(5 a) = 5: at least 1/5 per probe.
    assert bool((p.dwell >= 0.2 - 1e-6).all())
    assert not torch.equal(p.positions, gridlike((160, 160), coverage, seed=2).positions)


def test_make_path_and_bad_input():
    for kind in ("spiral", "gridlike", "grid", "random", "raster"):
        p = make_path(kind, (48, 40), 0.2)
        assert p.kind == kind and p.shape == (48, 40)
        assert abs(p.coverage - achieved_coverage(p.positions, (48, 40))) == 0
    with pytest.raises(ValueError, match="kind"):
        make_path("zigzag", (8, 8), 0.1)
    with pytest.raises(ValueError, match="coverage"):
        spiral((8, 8), 0.0)
    with pytest.raises(ValueError, match="shape"):
        grid((0, 8), 0.1)


def test_partial_scan_values_and_infill():
    img = torch.arange(64.0).reshape(8, 8)
    path = grid((8, 8), 1 / 4)  # d = 2: pixels (0,0), (0,2), ..., (6,6)
    ps = partial_scan(img, path)
    torch.testing.assert_close(ps.values, scan_sample(img[None], path.positions[None])[0])
    assert ps.raster.mask.sum() == 16
    # Pixel (1, 1) is 1 px from (0,1)? No: the nearest probed pixels are (0,0),(0,2),(2,0),(2,2)
    # at distance sqrt(2); the tie goes to the smaller column, then row -> (0, 0).
    assert ps.raster.infilled[1, 1] == img[0, 0]
    assert ps.raster.infilled[7, 7] == img[6, 6]
    with pytest.raises(ValueError, match="spatial shape"):
        partial_scan(torch.zeros(9, 8), path)


def test_blur_path_and_low_dwell_noise():
    k = gaussian_kernel(3, 0.8, dtype=torch.float64)
    assert abs(k.sum().item() - 1) < 1e-12 and k[1, 1] > k[0, 1] > k[0, 0]
    mask = torch.zeros(9, 9)
    mask[4] = 1
    m = blur_path(mask)
    assert float(m.max()) <= 1 and float(m[3, 4]) > 0 and float(m[1, 4]) == 0
    img = torch.rand(9, 9) * 2 - 1
    g = torch.Generator().manual_seed(0)
    x = low_dwell_noise(img, m, seed=g)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # Off-path pixels (m = 0) hold the minimum value (-1 before rescaling).
    assert float(x[0, 0]) == 0.0


def test_dwell_mask_sums_dwell_per_pixel():
    p = gridlike((40, 40), 0.1, seed=2, calibrate=False)
    m = dwell_mask(p)
    pix = p.positions.double().floor().long()
    expected = torch.zeros(40, 40, dtype=torch.float64)
    expected.index_put_((pix[:, 0], pix[:, 1]), p.dwell.double(), accumulate=True)
    torch.testing.assert_close(m.double(), expected.clamp(max=1.0), rtol=1e-6, atol=1e-6)
    assert float(m.max()) <= 1.0 and int((m > 0).sum()) == round(p.coverage * 1600)
    # No dwell: a binary mask of the probed pixels.
    g = grid((10, 10), 1 / 9)
    assert dwell_mask(g).sum().item() == 16
