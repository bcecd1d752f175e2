"""Lattice prior for sparse scans: fit_lattice recovers a crystal from far sparser samples than
any interpolator needs, rejects images without one, survives a regular grid's aliasing, and
complete_scan(prior=...) / the CLI / the evaluation use it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from em_accel.models import completion as C
from em_accel.models import completion_baselines as B
from em_accel.scan import make_path, partial_scan
from em_accel.scan.lattice import fit_lattice, held_out_tiles


def _crystal(n: int = 320, a=(23.0, 2.0), b=(-7.0, 29.0), sigma: float = 2.5,
             seed: int = 0) -> np.ndarray:
    """Gaussian atoms on an oblique lattice (real-space vectors a, b [px, (dy, dx)]) with a
    second, dimmer atom in the cell and a weak background slope, in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n].astype(float)
    img = 0.05 * yy / n
    A = np.array([a, b])
    origin = rng.uniform(0, 10, 2)
    for i in range(-3, n // 6):
        for j in range(-3, n // 6):
            for frac, w in (((0.0, 0.0), 1.0), ((0.5, 0.5), 0.4)):
                c = origin + (i + frac[0]) * A[0] + (j + frac[1]) * A[1]
                if -10 < c[0] < n + 10 and -10 < c[1] < n + 10:
                    img += w * np.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / (2 * sigma ** 2))
    return (img - img.min()) / np.ptp(img)


def _scan(img: np.ndarray, kind: str, coverage: float, seed: int = 0):
    r = partial_scan(torch.from_numpy(img), make_path(kind, img.shape, coverage, seed=seed)).raster
    return r.image.numpy(), r.mask.numpy() > 0


def _rms(a, b) -> float:
    return float(np.sqrt(((a - b) ** 2).mean()))


def _same_lattice(periods: np.ndarray, a, b) -> bool:
    """The true vectors are integer combinations of the fitted ones (same lattice, any basis)."""
    coeff = np.array([a, b]) @ np.linalg.inv(periods)
    return bool(np.abs(coeff - np.round(coeff)).max() < 0.05 and
                abs(abs(np.linalg.det(np.round(coeff))) - 1) < 1e-9)


WIDE = ((33.0, 3.0), (-8.0, 38.0))   # periods over 2.5 steps of a 10 px grid


@pytest.mark.parametrize("kind,coverage,cell", [("spiral", 1 / 87, None),
                                                ("spiral", 1 / 17.9, None),
                                                ("grid", 1 / 100, WIDE)])
def test_fit_recovers_a_crystal_where_interpolation_cannot(kind, coverage, cell):
    a, b = cell or ((23.0, 2.0), (-7.0, 29.0))
    img = _crystal(a=a, b=b)
    v, m = _scan(img, kind, coverage)
    fit = fit_lattice(v, m)
    assert fit is not None and fit.accepted()
    out = fit.render()
    lin = B.delaunay(v, m)
    assert _rms(out, img) < 0.03 < 0.1 < _rms(lin, img)     # columns recovered in the gaps
    assert _same_lattice(fit.periods, a, b)
    assert fit.validation_r2 > 0.95 and fit.validation_rms < 0.03
    assert fit.overshoot < 0.1 and (fit.nyquist_fraction == 0) == (kind == "spiral")


def test_grid_near_nyquist_is_not_accepted():
    """Periods of 2.3 grid steps: the fit is right here, but a lattice above the grid's
    Nyquist frequency would fold onto one just like it, so "auto" does not trust it."""
    v, m = _scan(_crystal(), "grid", 1 / 100)
    fit = fit_lattice(v, m)
    assert fit.validation_r2 > 0.95 and fit.nyquist_fraction > 0.75 and not fit.accepted()


def test_grid_aliases_are_folded_not_fitted():
    """A 10 px grid samples the atoms' sharp harmonics above its Nyquist frequency: without
    folding candidates to the shortest alias and dropping harmonics the grid cannot tell apart,
    the fit predicts the samples (held-out tiles included) but renders the wrong image."""
    import em_accel.scan.lattice as L

    img = _crystal()
    v, m = _scan(img, "grid", 1 / 100)
    good = fit_lattice(v, m)
    assert _rms(good.render(), img) < 0.03
    assert len(L._aliases(m)) > 0 and len(L._aliases(_scan(img, "spiral", 1 / 87)[1])) == 0
    keep = L._fold, L._identifiable
    try:
        L._fold = lambda f, aliases: np.array(f, float, ndmin=2)
        L._identifiable = lambda hk, basis, aliases, tol, limit=None: keep[1](
            hk, basis, np.zeros((0, 2)), tol, limit)
        bad = fit_lattice(v, m)
    finally:
        L._fold, L._identifiable = keep
    assert bad is None or _rms(bad.render(), img) > 2 * _rms(good.render(), img)


def test_no_crystal_no_lattice():
    rng = np.random.default_rng(3)
    from scipy.ndimage import gaussian_filter

    blobs = gaussian_filter(rng.standard_normal((192, 192)), 6)
    blobs = (blobs - blobs.min()) / np.ptp(blobs)
    v, m = _scan(blobs, "spiral", 1 / 30)
    fit = fit_lattice(v, m)
    assert fit is None or not fit.accepted()
    held = held_out_tiles(m)
    assert held.any() and not (held & ~m).any()
    tiny = np.zeros((32, 32), bool)
    tiny[::8, ::8] = True                                   # 16 samples: nothing to hold out
    assert fit_lattice(np.ones((32, 32)), tiny) is None


def test_peak_search_stops_early_without_a_crystal(monkeypatch):
    """A scan without a crystal is told apart after a few of the 8 peak searches (each an FFT
    of the image), a crystal's search runs to the end; the answers are those of the full
    search."""
    import em_accel.scan.lattice as L
    from scipy.ndimage import gaussian_filter

    calls = []
    real = L._strongest_peak

    def counted(image, bins):
        calls.append(1)
        return real(image, bins)
    monkeypatch.setattr(L, "_strongest_peak", counted)
    blobs = gaussian_filter(np.random.default_rng(3).standard_normal((256, 256)), 6)
    v, m = _scan((blobs - blobs.min()) / np.ptp(blobs), "spiral", 1 / 18)
    aliases = L._aliases(m)
    _, peaks, _, share = L._candidates(v, m, 2.5 / 256, aliases)
    assert share < L.MIN_PEAK_SHARE and len(calls) < 6 and fit_lattice(v, m) is None
    monkeypatch.setattr(L, "MIN_PEAK_SHARE", -1.0)          # never exit: the full search
    calls.clear()
    assert L._candidates(v, m, 2.5 / 256, aliases)[3] < 0.5 and len(calls) == 8
    monkeypatch.undo()
    calls.clear()
    cv, cm = _scan(_crystal(256), "spiral", 1 / 18)
    monkeypatch.setattr(L, "_strongest_peak", counted)
    assert L._candidates(cv, cm, 2.5 / 256, L._aliases(cm))[3] > 0.8 and len(calls) == 8


def _tiny_model():
    torch.manual_seed(1)
    return C.PartialScanCompleter((8, 8, 8, 8)).eval()


def test_complete_scan_prior_choices():
    model = _tiny_model()
    img = _crystal(256)
    auto = C.complete_scan(img, kind="spiral", coverage=1 / 87, model=model)
    assert auto.method == "lattice" and auto.lattice is not None
    assert (auto.lattice_weight == 1).all()
    assert _rms(auto.completion, img) < 0.03
    assert (auto.uncertainty > 0).all()
    net = C.complete_scan(img, kind="spiral", coverage=1 / 87, model=model, prior="network")
    assert net.method == "network" and net.lattice is None and net.lattice_weight is None
    assert _rms(net.completion, img) > 3 * _rms(auto.completion, img)
    # gridlike paths stay with the network under "auto"; a mask of unknown kind is judged by
    # its spectrum (a spiral's mask: the lattice; a gridlike one: the network)
    assert C.complete_scan(img, kind="gridlike", coverage=1 / 30, model=model).method == "network"
    for kind, method in (("spiral", "lattice"), ("gridlike", "network")):
        v, m = _scan(img, kind, 1 / 30)
        assert C.complete_scan(v, mask=m, kind=None, model=model).method == method
    forced = C.complete_scan(img, kind="gridlike", coverage=1 / 30, model=model, prior="lattice")
    assert forced.method == "lattice" and np.ptp(forced.uncertainty) == 0
    with pytest.raises(C.NoLatticeError):
        C.complete_scan(img[:32, :32], kind="spiral", coverage=0.05, model=model, prior="lattice")
    with pytest.raises(ValueError, match="prior"):
        C.complete_scan(img, kind="spiral", coverage=0.05, model=model, prior="crystal")


def _crystal_beside_film(n: int = 320, crystal_share: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """(image, bool [n, n] crystal part): the crystal on the left, an amorphous film (smoothed
    noise at a different mean level) on the right."""
    from scipy.ndimage import gaussian_filter

    xx = np.mgrid[0:n, 0:n][1]
    film = 0.35 + 0.6 * gaussian_filter(np.random.default_rng(3).normal(size=(n, n)), 2.0)
    inside = xx < crystal_share * n
    return np.where(inside, _crystal(n), film), inside


def test_auto_uses_the_lattice_only_where_it_beats_the_network():
    """A whole crystal: the lattice everywhere; a crystal beside a film: the lattice in the
    crystal (found in a half of the image), the other completion on the film; where the other
    completion is predicted to be nearly exact, never the lattice."""
    crystal = _crystal(320)
    v, m = _scan(crystal, "spiral", 1 / 87)
    base = B.delaunay(v, m)
    whole = C.auto_completion(v, m, "spiral", base, np.full(m.shape, 0.05))
    assert whole.method == "lattice" and whole.region.source == "whole"
    assert _rms(whole.completion, crystal) < 0.1 * _rms(base, crystal)
    assert C.auto_completion(v, m, "spiral", base, np.full(m.shape, 1e-7)).method == "network"
    # jittered lines: never a lattice under "auto"
    assert C.auto_completion(v, m, "gridlike", base, np.ones(m.shape)).region is None

    img, inside = _crystal_beside_film()
    v, m = _scan(img, "spiral", 1 / 87)
    base = B.delaunay(v, m)
    part = C.auto_completion(v, m, "spiral", base, np.full(m.shape, 0.05))
    assert part.method == "lattice+network" and part.region.source == "window"
    w = part.region.weight
    assert w[inside].mean() > 0.4 and w[~inside].max() < 0.5 and w[:, -60:].max() == 0
    assert _rms(part.completion[inside], img[inside]) < 0.7 * _rms(base[inside], img[inside])
    assert _rms(part.completion[~inside], img[~inside]) < 1.02 * _rms(base[~inside],
                                                                          img[~inside])
    # the blend's scale is the lattice's local error where the lattice completes the scan
    assert part.scale[w == w.max()].max() < 0.05
    # the same mask read as a regular grid: its aliases make a partial fit untrustworthy, so only
    # an accepted whole-image fit may seed a region and no windows are searched
    gv, gm = _scan(img, "grid", 1 / 16)
    scale = np.full(gm.shape, 0.05)
    assert C.auto_completion(gv, gm, "spiral", B.delaunay(gv, gm), scale).region is not None
    assert C.auto_completion(gv, gm, "grid", B.delaunay(gv, gm), scale).method == "network"


def test_auto_completes_two_domains_with_a_lattice_each(monkeypatch):
    """Two domains side by side, the same lattice shifted across their boundary (no single
    lattice fits both): a second window's lattice, judged against the first region's blend,
    completes part of what the first leaves, better than one region alone; one crystal
    beside a film keeps a single region."""
    import em_accel.scan.lattice_region as R

    n = 320
    xx = np.mgrid[0:n, 0:n][1]
    left = xx < n // 2
    img = np.where(left, _crystal(n), _crystal(n, seed=5))    # seed: the lattice's origin
    v, m = _scan(img, "spiral", 1 / 30)
    base = B.delaunay(v, m)
    scale = np.full(m.shape, 0.05)
    auto = C.auto_completion(v, m, "spiral", base, scale)
    assert len(auto.regions) == 2 and auto.method == "lattice+network"
    first, second = (r.weight for r in auto.regions)
    assert (second * (1 - first)).mean() >= R.EXTRA_REGION_MIN
    assert auto.lattice_weight.mean() > 0.6
    for side in (left, ~left):
        assert _rms(auto.completion[side], img[side]) < 0.8 * _rms(base[side], img[side])
    monkeypatch.setattr(R, "EXTRA_REGION_MIN", 2.0)          # no second region
    one = C.auto_completion(v, m, "spiral", base, scale)
    assert len(one.regions) == 1
    assert _rms(auto.completion, img) < 0.9 * _rms(one.completion, img)   # measured 0.83
    monkeypatch.undo()

    film, _ = _crystal_beside_film()
    v, m = _scan(film, "spiral", 1 / 87)
    assert len(C.auto_completion(v, m, "spiral", B.delaunay(v, m), scale).regions) == 1


def test_auto_searches_quadrants_where_the_whole_image_has_no_fit(monkeypatch):
    """A crystal in one corner beside vacuum: the whole image's periodic peaks explain under
    half of its variance (the step to vacuum is no peak), so there is no whole-image fit; the
    quadrants, and only they, are searched, and the one inside the crystal finds it."""
    import em_accel.scan.lattice_region as R

    n = 320
    yy, xx = np.mgrid[0:n, 0:n]
    inside = (yy >= 130) & (xx >= 130)
    img = np.where(inside, _crystal(n), 0.05)
    v, m = _scan(img, "spiral", 1 / 30)
    assert fit_lattice(v, m) is None
    shapes = []

    def spy(values, mask, **kw):
        shapes.append(mask.shape)
        return fit_lattice(values, mask, **kw)
    monkeypatch.setattr(R, "fit_lattice", spy)
    base = B.delaunay(v, m)
    auto = C.auto_completion(v, m, "spiral", base, np.full(m.shape, 0.05))
    assert sorted(shapes) == [(160, 160)] * 4
    assert auto.method == "lattice+network" and auto.region.source == "window"
    assert auto.region.weight[inside].mean() > 0.7
    assert _rms(auto.completion[inside], img[inside]) < 0.5 * _rms(base[inside], img[inside])
    assert _rms(auto.completion[~inside], img[~inside]) < 0.02      # measured 0.007


@pytest.mark.parametrize("length", [100, 576, 577, 1024, 2048, 3001])
def test_lattice_tiles_cover_the_axis_with_blending_weights_summing_to_one(length):
    from em_accel.models.lattice_tiles import OVERLAP, TILE, blend_ramps, tile_spans

    spans = tile_spans(length)
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert all(b - a <= TILE for a, b in spans)
    assert all(spans[k][1] - spans[k + 1][0] >= OVERLAP for k in range(len(spans) - 1))
    total = np.zeros(length)
    for (a, b), w in zip(spans, blend_ramps(spans)):
        assert w.min() > 0
        total[a:b] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-12)


def test_large_images_are_searched_tile_by_tile(monkeypatch):
    """A crystal in a corner of a large field: no whole-image fit, and too small a part of
    its quadrant for a window's; a tile's quadrant holds it, and only there the tile's lattice
    replaces the other completion. Tiles a whole-image lattice already covers are skipped."""
    import em_accel.models.lattice_tiles as T

    n = 640
    yy, xx = np.mgrid[0:n, 0:n]
    inside = (yy < 200) & (xx < 200)
    img = np.where(inside, _crystal(n), 0.05)
    v, m = _scan(img, "spiral", 1 / 30)
    base = B.delaunay(v, m)
    scale = np.full(m.shape, 0.05)
    monkeypatch.setattr(T, "TILE", 1024)            # one tile: the whole-image search alone
    assert C.auto_completion(v, m, "spiral", base, scale).method == "network"
    monkeypatch.setattr(T, "TILE", 352)             # 2 x 2 tiles of 352 px, 64 px overlaps
    auto = C.auto_completion(v, m, "spiral", base, scale)
    assert auto.method == "lattice+network" and auto.region is None
    assert [t for t, _ in auto.tiles] == [(slice(0, 352), slice(0, 352))]
    assert auto.region_count == 1 and auto.lattice_fit.shape == (352, 352)
    assert _rms(auto.completion[inside], img[inside]) < 0.5 * _rms(base[inside], img[inside])
    assert _rms(auto.completion[~inside], img[~inside]) < 0.02      # measured 0.007
    assert auto.lattice_weight[inside].mean() > 0.7 and auto.lattice_weight[400:, 400:].max() == 0

    calls = []
    real = C._auto_lattice
    monkeypatch.setattr(C, "_auto_lattice", lambda *a: calls.append(a[1].shape) or real(*a))
    crystal = _crystal(n)
    v, m = _scan(crystal, "spiral", 1 / 30)
    auto = C.auto_completion(v, m, "spiral", B.delaunay(v, m), scale)
    assert auto.method == "lattice" and calls == [(n, n)] and auto.tiles == ()


def test_panel_tints_only_a_partial_lattice_region(tmp_path):
    """The CLI's panel marks where a lattice completed part of the image, and only then."""
    from em_accel.models.completion_cli import _panel

    rng = np.random.default_rng(0)
    img = rng.random((64, 64))
    mask = rng.random((64, 64)) < 0.2
    part = np.zeros((64, 64))
    part[:, :30] = 1.0

    def png(name, weight):
        _panel(tmp_path / name, img * mask, mask, img, img, "t", weight)
        return (tmp_path / name).read_bytes()

    plain = png("plain.png", None)
    assert png("whole.png", np.ones((64, 64))) == plain      # the lattice everywhere: no mark
    assert png("part.png", part) != plain


def test_cli_complete_prior_and_evaluation_rows(tmp_path):
    from em_accel.cli import main
    from em_accel.io import read_image, write_image
    from em_accel.models import completion_eval as E

    img = _crystal(256)
    src = write_image(tmp_path / "crystal.tif", img.astype(np.float32), pixel_size=0.2)
    assert main(["complete", str(src), "-o", str(tmp_path / "a"), "--coverage", "0.0115",
                 "--no-panel"]) == 0
    meta = read_image(tmp_path / "a" / "crystal_completed.tif").metadata
    text = json.dumps(meta)
    assert "fit_lattice" in text and "real_space_vectors_px" in text
    assert main(["complete", str(src), "-o", str(tmp_path / "b"), "--coverage", "0.0115",
                 "--no-panel", "--prior", "network"]) == 0
    assert "PartialScanCompleter" in json.dumps(read_image(tmp_path / "b" /
                                                           "crystal_completed.tif").metadata)
    assert main(["complete", str(src), "-o", str(tmp_path / "c"), "--coverage", "0.0115",
                 "--no-panel", "--noise-std", "0.01"]) == 0
    told = read_image(tmp_path / "c" / "crystal_completed.tif").metadata
    assert told["description"]["em_accel"]["noise_std"] == 0.01
    with pytest.raises(C.NoiseLevelError):
        main(["complete", str(src), "-o", str(tmp_path / "d"), "--coverage", "0.0115",
              "--no-panel", "--noise-std", "-1"])
    res = E.evaluate(_tiny_model(), img[None], counts=None, coverages=(1 / 87,),
                     kinds=("spiral",), slow_n=0, progress=False,
                     methods={"delaunay": B.delaunay, "lattice": B.lattice})
    rows = {r["method"]: r["rms_blur"] for r in res["rows"]}
    assert rows["auto"] == pytest.approx(rows["lattice"], rel=0.05)
    assert rows["auto"] < 0.5 * rows["network"]
    assert res["auto_choices"][0]["method"] == "lattice"
    assert set(res["reliability_auto"]) == set(res["reliability"])
    assert "auto chose the lattice" in E.format_summary(res)
    with pytest.raises(ValueError, match="known_noise"):
        E.evaluate(_tiny_model(), img[None], counts=None, known_noise=True, progress=False)
    with pytest.raises(ValueError, match="--known-noise"):
        main(["evaluate", "complete", "-n", "1", "--known-noise", "--out", str(tmp_path / "e")])


def test_render_is_the_design_at_every_pixel():
    """The separable rendering equals the fitted design matrix applied at each pixel, on a
    non-square image (rows and columns not swapped)."""
    from em_accel.scan.lattice import _design

    img = _crystal(n=320)[:, :256]
    v, m = _scan(img, "spiral", 1 / 12)
    fit = fit_lattice(v, m)
    assert fit is not None and fit.accepted()
    H, W = fit.shape
    pos = np.argwhere(np.ones((H, W), bool)).astype(float)
    ref = (_design(pos, fit.shape, fit.basis, fit.harmonics) @ fit.coef).reshape(H, W)
    np.testing.assert_allclose(fit.render(), ref, atol=1e-10)


def test_design_columns_are_each_harmonics_cosine_and_sine():
    """The design built from powers of the basis phasors equals the direct background, cos and
    sin columns, for harmonics with negative indices too."""
    from em_accel.scan.lattice import _design

    rng = np.random.default_rng(5)
    basis = np.array([[0.043, 0.011], [-0.017, 0.052]])
    hk = np.array([[1, 0], [0, 1], [1, -1], [2, -3], [0, 4], [3, 2]], float)
    pos = rng.integers(0, 200, (300, 2)).astype(float)
    phase = 2 * np.pi * pos @ (hk @ basis).T
    y, x = pos[:, 0] / 100 - 1, pos[:, 1] / 150 - 1
    bg = np.stack([np.ones_like(y), y, x, y * y, x * y, x * x], 1)
    ref = np.concatenate([bg, np.cos(phase), np.sin(phase)], 1)
    np.testing.assert_allclose(_design(pos, (200, 300), basis, hk), ref, atol=1e-9)


def test_basis_jacobian_matches_finite_differences():
    """The variable-projection Jacobian of the refinement's residual equals central
    differences away from the optimum (misplaced basis, noisy samples), where dropping its
    second term (Kaufman's approximation) is off by about 15%."""
    from em_accel.scan.lattice import _BasisFit, _harmonics

    rng = np.random.default_rng(0)
    basis = np.array([[0.05, 0.01], [-0.02, 0.06]])
    hk = _harmonics(basis, 0.2)
    pos = rng.uniform(0, 256, (800, 2))
    v = np.cos(2 * np.pi * pos @ (hk @ basis).T) @ rng.normal(size=len(hk))
    fit = _BasisFit(pos, v + 0.1 * rng.normal(size=len(v)), (256, 256), hk)
    x = (basis + 2e-4 * rng.normal(size=(2, 2))).ravel()
    h = 1e-9
    numeric = np.stack([(fit.residual(x + d) - fit.residual(x - d)) / (2 * h)
                        for d in np.eye(4) * h], 1)
    J = fit.jacobian(x)
    assert np.linalg.norm(J - numeric) < 1e-5 * np.linalg.norm(numeric)


def test_refined_peak_lands_between_bins():
    """A sinusoid off the FFT grid (up to half a bin away): the peak search places it within
    5% of a bin (its finest trial spacing is 8%)."""
    from em_accel.scan.lattice import _refine_peak

    rng = np.random.default_rng(3)
    pos = rng.uniform(0, 256, (3000, 2))
    f_true = np.array([0.0713, -0.0291])
    v = np.cos(2 * np.pi * pos @ f_true + 0.4)
    step = 0.5 / 256
    start = np.round(f_true / step) * step
    found = _refine_peak(start, pos, v, step)
    assert np.abs(start - f_true).max() > 0.2 * step
    assert np.abs(found - f_true).max() < 0.05 * step


@pytest.mark.parametrize("kind", ["spiral", "gridlike", "grid", "random"])
@pytest.mark.parametrize("shape", [(512, 512), (400, 380)])
def test_infer_path_kind_from_the_mask_alone(kind, shape):
    """Every coverage of the trained range, two seeds: a random mask reads as spiral-like
    (scattered samples, no aliasing)."""
    from em_accel.scan import infer_path_kind

    for coverage in (1 / 10, 1 / 17.9, 1 / 50, 1 / 100):
        for seed in (0, 1):
            m = partial_scan(torch.zeros(shape, dtype=torch.float64),
                             make_path(kind, shape, coverage, seed=seed)).raster.mask.numpy()
            assert infer_path_kind(m > 0) == ("spiral" if kind == "random" else kind)


def test_shot_noise_is_estimated_and_not_held_against_the_fit():
    """Poisson noise (100 counts per unit intensity) on a spiral scan of a crystal: the white
    noise variance is recovered from adjacent samples' residuals, the fit is still accepted
    (its R² of the signal, not of the noisy samples) and its error against the signal is
    estimated below the error against the noisy held-out samples. Noise-free: no noise."""
    img = 0.2 + 0.8 * _crystal(256)
    r = partial_scan(torch.from_numpy(img), make_path("spiral", img.shape, 1 / 30),
                     counts_per_intensity=100.0, seed=1).raster
    v, m = r.image.numpy(), r.mask.numpy() > 0
    fit = fit_lattice(v, m)
    true_var = float(np.mean(img[m])) / 100.0
    assert fit is not None and fit.accepted()
    assert fit.validation_r2 < 0.9 < fit.signal_validation_r2     # noise alone would reject it
    assert 0.7 * true_var < fit.noise_var < 1.3 * true_var
    assert fit.signal_mae < 0.6 * fit.validation_mae
    assert _rms(fit.render(), img) < 0.5 * np.sqrt(true_var)
    clean = fit_lattice(*_scan(img, "spiral", 1 / 30))
    assert clean.noise_var < 0.01 * clean.sample_var


def test_known_noise_lets_a_noisy_grid_scan_use_the_lattice():
    """A regular grid has no adjacent samples, so its shot noise cannot be estimated and counts
    against the fit: a noisy crystal on a 1/16 grid is rejected. Told the noise variance (as a
    user who knows the dose), the fit judges the signal, is accepted and renders the crystal
    to well under the noise; complete_scan knows it for scans it simulates itself, takes it
    for sparse input as noise_std or as the dose, and names bad levels."""
    img = 0.2 + 0.8 * _crystal(256)
    r = partial_scan(torch.from_numpy(img), make_path("grid", img.shape, 1 / 16),
                     counts_per_intensity=50.0, seed=1).raster
    v, m = r.image.numpy(), r.mask.numpy() > 0
    var = C.shot_noise_var(v, m, 50.0)
    assert var == pytest.approx(float(np.mean(img[m])) / 50.0, rel=0.02)
    unknown = fit_lattice(v, m)
    assert unknown is None or not unknown.accepted()
    known = fit_lattice(v, m, noise_var=var)
    assert known is not None and known.accepted() and known.noise_var == var
    assert _rms(known.render(), img) < 0.5 * np.sqrt(var)
    with pytest.raises(ValueError, match="noise_var"):
        fit_lattice(v, m, noise_var=-1.0)

    model = _tiny_model()
    assert C.complete_scan(v, mask=m, kind="grid", model=model).method == "network"
    told = C.complete_scan(v, mask=m, kind="grid", model=model, noise_std=np.sqrt(var))
    assert told.method != "network" and told.lattice_weight.mean() > 0.9
    simulated = C.complete_scan(img, kind="grid", coverage=1 / 16, counts_per_intensity=50.0,
                                seed=1, model=model)
    assert simulated.method != "network" and simulated.lattice_weight.mean() > 0.9
    by_dose = C.complete_scan(v, mask=m, kind="grid", model=model, counts_per_intensity=50.0)
    np.testing.assert_array_equal(by_dose.completion, told.completion)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(C.NoiseLevelError):
            C.complete_scan(v, mask=m, kind="grid", model=model, noise_std=bad)
    for bad in (0.0, -5.0, float("nan")):
        with pytest.raises(C.NoiseLevelError):
            C.complete_scan(v, mask=m, kind="grid", model=model, counts_per_intensity=bad)
    with pytest.raises(C.NoiseLevelError, match="not both"):
        C.complete_scan(v, mask=m, kind="grid", model=model, noise_std=0.1,
                        counts_per_intensity=50.0)


def test_grid_lattice_with_an_implausibly_large_cell_is_taken_for_an_alias():
    """A grid cannot tell a lattice from a coarser alias; where the pixel size is known, `auto`
    leaves a grid lattice whose cell exceeds GRID_MAX_CELL_A2 to the network (spirals do not
    alias and are unaffected). The cell area is the fitted basis's; bad pixel sizes are named,
    and a generic TIFF's 72 dpi is not taken for a microscope's calibration."""
    from em_accel.models.completion_cli import _microscope_pixel

    img = _crystal(256)                                    # cell 23*29 + 2*7 = 681 px^2
    v, m = _scan(img, "grid", 1 / 16)
    fit = fit_lattice(v, m)
    assert fit is not None and fit.cell_area == pytest.approx(681.0, rel=0.01)
    model = _tiny_model()
    fine = np.sqrt(0.9 * C.GRID_MAX_CELL_A2 / 681.0)      # Å/px: the cell just under the limit
    coarse = np.sqrt(1.1 * C.GRID_MAX_CELL_A2 / 681.0)
    assert C.complete_scan(v, mask=m, kind="grid", model=model).method != "network"
    assert C.complete_scan(v, mask=m, kind="grid", model=model, pixel_size=fine).method != "network"
    alias = C.complete_scan(v, mask=m, kind="grid", model=model, pixel_size=coarse)
    assert alias.method == "network" and alias.lattice_weight is None and alias.aliased
    sv, sm = _scan(img, "spiral", 1 / 30)
    assert C.complete_scan(sv, mask=sm, kind="spiral", model=model,
                           pixel_size=coarse).method != "network"
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(C.PixelSizeError):
            C.complete_scan(v, mask=m, kind="grid", model=model, pixel_size=bad)
    assert _microscope_pixel(2.54e8 / 72) is None and _microscope_pixel(None) is None
    assert _microscope_pixel(0.2) == 0.2


def test_grid_alias_widens_the_interval_to_what_the_samples_cannot_place(tmp_path, capsys):
    """A lattice finer than two grid steps: the grid's samples show a coarse alias, which a
    completion follows with a confident error estimate. Where the pixel size marks the alias's
    cell as implausible, `auto` raises the scale to the mean |error| of the samples' local
    mean, and the 90% interval covers the truth again; where the cell is plausible, the scale
    is left as it is. The CLI says so and records it."""
    from em_accel.cli import main
    from em_accel.io import read_image, write_image
    from em_accel.scan.lattice_region import local_spread

    img = _crystal(256, a=(6.0, 0.5), b=(-2.0, 7.0), sigma=1.2)    # period ~6.5 px; step 4 px
    v, m = _scan(img, "grid", 1 / 16)
    fit = fit_lattice(v, m)
    assert fit is not None and fit.cell_area > 100          # the alias, not the 44 px^2 cell
    base = B.delaunay(v, m)
    confident = np.full(m.shape, 0.01)
    coarse = np.sqrt(2 * C.GRID_MAX_CELL_A2 / fit.cell_area)      # Å/px: alias cell 200 Å^2
    alias = C.auto_completion(v, m, "grid", base, confident, pixel_size=coarse)
    err = np.abs(alias.completion - img)
    assert alias.method == "network" and (alias.completion == base).all()
    assert (err <= C.Z90 * confident).mean() < 0.5                # measured 0.23
    assert (err <= C.Z90 * alias.scale).mean() > 0.85             # measured 0.92
    floor = np.sqrt(2 / np.pi) * local_spread(v, m)
    assert np.allclose(alias.scale, np.maximum(confident, floor))
    fine = np.sqrt(0.5 * C.GRID_MAX_CELL_A2 / fit.cell_area)
    assert (C.auto_completion(v, m, "grid", base, confident, pixel_size=fine).scale
            == confident).all()
    assert not C.auto_completion(v, m, "grid", base, confident, pixel_size=fine).aliased
    src = write_image(tmp_path / "fine.tif", img.astype(np.float32), pixel_size=coarse)
    assert main(["complete", str(src), "-o", str(tmp_path / "out"), "--path", "grid",
                 "--coverage", "0.0625", "--no-panel"]) == 0
    assert "alias of structure finer than the grid step" in capsys.readouterr().err
    meta = read_image(tmp_path / "out" / "fine_completed.tif").metadata
    assert meta["description"]["em_accel"]["grid_aliases_finer_structure"] is True
    from em_accel.models import completion_eval as E

    res = E.evaluate(_tiny_model(), img[None], counts=None, coverages=(1 / 16,),
                     kinds=("grid",), slow_n=0, progress=False, pixel_sizes=[coarse],
                     methods={"delaunay": B.delaunay})
    assert res["auto_choices"][0]["aliased"]
    assert "an alias of finer structure on 1 of 1 scans" in E.format_summary(res)


def test_window_mean_matches_a_full_resolution_gaussian():
    """The block-reduced normalised convolution of lattice_region equals the full-resolution
    one away from the edges (to a few % of the mean) and is exact where every pixel is
    sampled with a constant value."""
    from scipy.ndimage import gaussian_filter

    from em_accel.scan.lattice_region import _window_mean

    rng = np.random.default_rng(0)
    v, m = _scan(_crystal(256), "spiral", 1 / 50)
    values = np.where(m, rng.random(m.shape) * np.linspace(0.5, 2.0, 256)[None, :], 0.0)
    for sigma in (8.0, 30.0):
        fast = _window_mean(values, m, sigma)
        den = gaussian_filter(m.astype(float), sigma, mode="constant")
        exact = gaussian_filter(values, sigma, mode="constant") / np.maximum(den, 1e-12)
        inner = np.zeros(m.shape, bool)
        inner[48:-48, 48:-48] = True
        inner &= den > 0.01 * den.max()       # where the window holds samples at all
        assert inner.mean() > 0.3
        assert np.abs(fast - exact)[inner].max() < 0.08 * exact[inner].mean()
    assert np.allclose(_window_mean(np.full((64, 80), 3.0), np.ones((64, 80)), 20.0), 3.0)


def test_a_residual_peak_beside_a_strong_one_does_not_crowd_out_the_basis():
    """CLEAN can leave a weak peak a fraction of a bin off a strong one (its sinusoid's
    subtraction is imperfect where the peak is broadened). Paired with the other vectors it
    indexes every peak as well as the true basis does, with a slightly larger cell, and such
    pairs can fill the list; the true basis (the two strongest peaks) must still be tried."""
    from em_accel.scan.lattice import _ranked_pairs

    b1, b2 = np.array([-7.0, 17.5]) / 512, np.array([17.5, 7.0]) / 512
    residual = b1 + np.array([-0.25, 0.55]) / 512           # 0.6 bins off b1, larger cell
    peaks = np.array([b1, b2, b1 + b2, b2 - b1, residual])
    power = np.array([1.0, 0.85, 0.2, 0.15, 0.01])
    assert abs(np.linalg.det([residual, b2])) > abs(np.linalg.det([b1, b2]))
    true = {tuple(np.round(b1 * 512, 6)), tuple(np.round(b2 * 512, 6))}
    for keep in (1, 2, 8):
        ranked = _ranked_pairs(list(peaks), peaks, power, 1.5 / 512, keep)
        assert len(ranked) <= keep + 1
        assert true in [{tuple(np.round(v * 512, 6)) for v in pair} for pair in ranked]


def test_ranked_pairs_score_every_pair_as_one_by_one():
    """The pairs are scored all at once; each returned basis is a pair of the candidates, not
    nearly collinear, and indexes the peak power share its place claims: no pair left out
    indexes more, and among equal shares none left out has a larger reciprocal cell."""
    from em_accel.scan.lattice import _ranked_pairs

    rng = np.random.default_rng(3)
    for trial in range(20):
        peaks = rng.uniform(-0.2, 0.2, (8, 2))
        power = rng.uniform(0.1, 1.0, 8)
        cands = list(peaks) + [peaks[0] / 2, peaks[1] - peaks[2], np.array([1e-3, 0.0])]
        tol = 0.02

        def share(basis):
            hk = np.round(peaks @ np.linalg.inv(basis))
            ok = (np.linalg.norm(peaks - hk @ basis, axis=1) < tol) & (np.abs(hk).max(1) <= 6)
            return round(float(power[ok].sum() / power.sum()), 2)

        pairs = [np.stack([a, b]) for i, a in enumerate(cands) for b in cands[i + 1:]
                 if abs(np.linalg.det([a, b])) >= 0.2 * np.linalg.norm(a) * np.linalg.norm(b)]
        ranked = _ranked_pairs(cands, peaks, power, tol, 4)
        assert 1 <= len(ranked) <= 5
        key = [(share(b), abs(np.linalg.det(b))) for b in ranked[:4]]
        assert key == sorted(key, key=lambda k: (-k[0], -k[1]))
        best = max(pairs, key=lambda b: (share(b), abs(np.linalg.det(b))))
        assert key[0] == (share(best), abs(np.linalg.det(best)))
        for b in ranked:
            assert any(np.array_equal(b, p) for p in pairs)


def test_held_out_crystal_whose_peaks_leave_residuals_is_fitted():
    """A held-out simulated HAADF crystal at a coverage where CLEAN leaves residual peaks
    beside the two strongest (before stop 34 the whole-image fit failed here: held-out R²
    0.51, and only the slower window search recovered the lattice)."""
    from em_accel.data.micrographs import micrograph

    img = micrograph(512, "haadf", seed=(7100, 0), split="heldout").image
    v, m = _scan(img, "spiral", 0.0115)
    fit = fit_lattice(v, m)
    assert fit is not None and fit.accepted() and fit.validation_r2 > 0.99
    assert _rms(fit.render(), img) < 0.3 * _rms(B.delaunay(v, m), img)


def test_lattice_work_leaves_blas_threads_as_it_found_them(monkeypatch):
    """`auto` and `prior="lattice"` run with numpy's BLAS on one thread; afterwards (also after
    a NoLatticeError inside the limit) the caller's thread counts are back."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from em_accel.scan import lattice

    def blas_threads():
        return sorted(i["num_threads"] for i in threadpoolctl.threadpool_info()
                      if i["user_api"] == "blas")

    inside = []
    real_fit = lattice.fit_lattice

    def spy(*args, **kwargs):
        inside.append(blas_threads())
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(lattice, "fit_lattice", spy)
    model = _tiny_model()
    img = _crystal(256)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = blas_threads()
        if not before:
            pytest.skip("no BLAS library seen by threadpoolctl")
        auto = C.complete_scan(img, kind="spiral", coverage=1 / 87, model=model)
        assert auto.method == "lattice"
        with pytest.raises(C.NoLatticeError):
            C.complete_scan(img[:32, :32], kind="spiral", coverage=0.05, model=model,
                            prior="lattice")
        assert len(inside) == 2 and all(max(t) == 1 for t in inside)
        assert blas_threads() == before


def test_runner_up_bases_are_refined_when_the_best_is_not_accepted():
    """A held-out crystal at 1/100 whose best unrefined candidate is a wrong lattice (held-out
    R² 0.1) and whose true basis, a difference of two peaks a quarter of a bin off, scores
    worse until refined: refining the runners-up finds it."""
    from em_accel.data.micrographs import micrograph
    from em_accel.models.completion_eval import scan

    img = micrograph(512, "haadf", seed=(7100, 13), split="heldout").image
    v, m = scan(img, "spiral", 1 / 100, None, seed=13)
    best_only = fit_lattice(v, m, refined=1)
    assert best_only is not None and best_only.validation_r2 < 0.5
    fit = fit_lattice(v, m)
    assert fit.accepted() and fit.validation_r2 > 0.95
    assert _rms(fit.render(), img) < 0.2 * _rms(B.delaunay(v, m), img)
