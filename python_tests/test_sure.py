"""SURE-chosen post-smoothing of the conditioned denoiser (em_accel.models.sure)."""
import numpy as np
import pytest
import torch

from em_accel.data import synthetic_images
from em_accel.data.noise_estimate import noise_level_from_detector
from em_accel.models.conditioned import denoise_micrograph, load_conditioned
from em_accel.models.sure import SMOOTHING_PX, blur, sure_smoothing


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _noisy(clean: np.ndarray, sigma: float, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.as_tensor(clean + sigma * rng.standard_normal(clean.shape))


def test_risk_estimate_matches_true_error_of_a_linear_filter():
    """For a Gaussian filter the Monte-Carlo SURE must track the true MSE at every width: to
    within its own sampling error (the noise energy ‖n‖²/N − σ², std σ²·sqrt(2/N)), and more
    closely in the differences between widths, which are what the choice rests on."""
    clean = synthetic_images(1, 128, 5)[0].astype(np.float64)
    sigma, n = 0.2, clean.size
    z = _noisy(clean, sigma)
    _, choice = sure_smoothing(z, lambda x: blur(x.double(), 1.0), sigma, wiener=False)
    true = {w: float(((blur(blur(z, 1.0), w).numpy() - clean) ** 2).mean())
            for w in choice.risks}
    for w, risk in choice.risks.items():
        assert abs(risk - true[w]) < 4 * sigma ** 2 * (2 / n) ** 0.5 + 0.02 * true[w], w
        d_est, d_true = risk - choice.risks[0.0], true[w] - true[0.0]
        # one probe: the divergence's own error is ~1e-4 here (2σ²·√2·‖A‖_F/N), ~3 % of true[0]
        assert abs(d_est - d_true) < 0.25 * abs(d_true) + 0.05 * true[0.0], w
    assert choice.width_px == min(true, key=true.get)


def test_picks_no_smoothing_for_detail_and_most_for_a_flat_image():
    rng = np.random.default_rng(1)
    texture = rng.random((96, 96))                 # white texture: any blur destroys signal
    out, c = sure_smoothing(_noisy(texture, 0.01), lambda x: x, 0.01, wiener=False)
    assert c.width_px == 0.0
    assert torch.equal(out, _noisy(texture, 0.01))
    flat = np.full((96, 96), 0.5)                  # nothing but noise: smooth as much as allowed
    _, c = sure_smoothing(_noisy(flat, 0.3), lambda x: x, 0.3, wiener=False)
    assert c.width_px == max(SMOOTHING_PX)
    assert c.risks[max(SMOOTHING_PX)] < c.risks[0.0] / 10


def test_shipped_denoiser_refined_is_not_worse_at_low_dose():
    """On a low-dose TEM-like image (weak contrast on a pedestal) the risk-chosen smoothing
    must not raise the error of the network's own output, and it reports the width used."""
    clean = synthetic_images(1, 128, 77)[0]
    lam = (1.5 + clean) * (8.0 / (1.5 + clean).mean())       # 8 counts/px on a pedestal
    rng = np.random.default_rng(3)
    y = 20.0 * rng.poisson(lam) + 1e3
    nl = noise_level_from_detector(y, gain=20.0, offset=1e3)
    model = load_conditioned()
    truth = 20.0 * lam + 1e3
    raw = denoise_micrograph(y, model, noise=nl, tile=128, progress=False, refine="none")
    ref = denoise_micrograph(y, model, noise=nl, tile=128, progress=False)
    assert raw.smoothing_px == 0.0 and ref.smoothing_px in SMOOTHING_PX
    e_raw, e_ref = (float(np.mean((r.image - truth) ** 2)) for r in (raw, ref))
    assert e_ref <= e_raw * 1.001
    assert e_ref < float(np.mean((y - truth) ** 2)) / 5


def test_bad_arguments_are_named():
    z = torch.zeros(32, 32)
    with pytest.raises(ValueError, match="sigma"):
        sure_smoothing(z, lambda x: x, 0.0)
    with pytest.raises(ValueError, match="2-D"):
        sure_smoothing(z[None], lambda x: x, 0.1)
    with pytest.raises(ValueError, match="widths"):
        sure_smoothing(z, lambda x: x, 0.1, widths=())
    with pytest.raises(ValueError, match="refine"):
        denoise_micrograph(np.ones((32, 32)), refine="bm3d")


def test_wiener_filter_restores_detail_an_oversmoothing_denoiser_removed():
    """A lattice with weak fine fringes, "denoised" by a 1.5 px blur that wipes the fringes out:
    the empirical Wiener filter of the noisy image with that output as pilot must be picked, its
    true error must be below every Gaussian candidate's, and its risk estimate must be close to
    its true error (the pilot's dependence on the noisy image included)."""
    yy, xx = np.mgrid[0:128, 0:128].astype(np.float64)
    clean = (np.cos(2 * np.pi * xx / 9.5) + np.cos(2 * np.pi * yy / 9.5)
             + 0.3 * np.cos(2 * np.pi * (xx + yy) / 3.1))
    sigma = 0.3
    z = _noisy(clean, sigma, seed=5)
    out, c = sure_smoothing(z, lambda x: blur(x.double(), 1.5), sigma)
    assert c.filter in ("wiener", "mix") and (c.filter == "wiener" or c.mix > 0.5)
    err = float(((out.numpy() - clean) ** 2).mean())
    gauss_true = [float(((blur(blur(z, 1.5), w).numpy() - clean) ** 2).mean())
                  for w in SMOOTHING_PX]
    assert err < 0.5 * min(gauss_true)
    assert abs(c.risk - err) < 0.03 * sigma ** 2
    # without the Wiener family the best Gaussian width is returned
    _, g = sure_smoothing(z, lambda x: blur(x.double(), 1.5), sigma, wiener=False)
    assert g.filter == "gaussian" and g.wiener_risks == {}


def test_counts_domain_risk_tracks_the_true_error_in_counts():
    """Poisson counts at ~8 counts/px, Anscombe-scaled, "denoised" by a 1 px blur: with
    ``counts_scale`` the risk of every Gaussian width must track the true MSE in counts (what
    the evaluation measures) in its differences between widths, and pick the true best width."""
    from em_accel.models.conditioned import anscombe, scale_of

    clean = synthetic_images(1, 128, 8)[0].astype(np.float64)
    lam = 8.0 * (0.3 + clean) / (0.3 + clean).mean()
    c = torch.as_tensor(np.random.default_rng(9).poisson(lam).astype(np.float64))
    s = float(scale_of(float(c.mean())))
    z = anscombe(c) / s
    _, ch = sure_smoothing(z, lambda x: blur(x.double(), 1.0), 1.0 / s, wiener=False,
                           counts_scale=s)

    def counts(e):
        return ((s * e.clamp_min(0) / 2) ** 2 - 0.375).clamp_min(0).numpy()
    true = {w: float(((counts(blur(blur(z, 1.0), w)) - lam) ** 2).mean()) for w in ch.risks}
    for w, r in ch.risks.items():
        d_est, d_true = r - ch.risks[0.0], true[w] - true[0.0]
        assert abs(d_est - d_true) < 0.25 * abs(d_true) + 0.05 * true[0.0], w
    assert true[ch.width_px] <= 1.02 * min(true.values())


def test_large_image_choice_is_made_on_a_crop_and_applied_to_the_whole():
    """Above SURE_CROP the post-filter is priced on the central crop: one full network pass
    (the only one reported to the progress callback), and the whole output is filtered, with an
    error no worse than the network's own."""
    from em_accel.models.conditioned import SURE_CROP

    size = int(SURE_CROP * 1.5)
    clean = synthetic_images(1, size, 79)[0]
    lam = (0.3 + clean) * (2000.0 / (0.3 + clean).mean())
    y = np.random.default_rng(7).poisson(lam).astype(np.float64)
    nl = noise_level_from_detector(y, gain=1.0)
    model = load_conditioned()
    done, done_raw = [], []
    ref = denoise_micrograph(y, model, noise=nl, tile=size, progress=False, callback=done.append)
    raw = denoise_micrograph(y, model, noise=nl, tile=size, progress=False, refine="none",
                             callback=done_raw.append)
    assert sum(done) == sum(done_raw) > 0                   # one reported pass, as without SURE
    assert ref.post_filter in ("gaussian", "wiener", "mix")
    share = {"gaussian": (0.0, 0.0), "wiener": (1.0, 1.0), "mix": (1e-9, 1 - 1e-9)}
    lo, hi = share[ref.post_filter]
    assert lo <= ref.wiener_weight <= hi
    assert (ref.wiener_px in SMOOTHING_PX) and (ref.post_filter != "wiener" or ref.smoothing_px == 0)
    e_ref, e_raw = (float(np.mean((r.image - lam) ** 2)) for r in (ref, raw))
    assert e_ref < e_raw
    # the border, outside the crop, is filtered too
    edge = np.s_[:32, :]
    assert np.abs(ref.image[edge] - raw.image[edge]).max() > 0


def test_counts_domain_risk_is_finite_with_empty_pixels():
    """At 0.5 counts/px most pixels hold no counts (and equivalent counts from a detector can
    fall below zero): every risk must stay finite and a filter must be chosen."""
    from em_accel.models.conditioned import anscombe, scale_of

    c = torch.as_tensor(np.random.default_rng(2).poisson(0.5, (96, 96)).astype(np.float64))
    c[:8] = -1.0                                          # below zero: z at its floor
    s = float(scale_of(float(c.clamp_min(0).mean())))
    z = anscombe(c) / s
    out, ch = sure_smoothing(z, lambda x: blur(x.double(), 0.7), 1.0 / s, counts_scale=s)
    assert all(np.isfinite(list(ch.risks.values()))) and all(np.isfinite(list(ch.wiener_risks.values())))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("counts", [5.0, 2000.0])
def test_mix_risk_and_reapplication(counts):
    """The returned risk is no more than the best of either family, and re-applying the choice
    (what a crop-priced choice does on the whole image) reproduces the output."""
    from em_accel.models.conditioned import anscombe, scale_of
    from em_accel.models.sure import apply_post_filter

    clean = synthetic_images(1, 96, 12)[0].astype(np.float64)
    lam = counts * (0.3 + clean) / (0.3 + clean).mean()
    c = torch.as_tensor(np.random.default_rng(13).poisson(lam).astype(np.float64))
    s = float(scale_of(float(c.mean())))
    z = anscombe(c) / s
    net = lambda x: blur(x.double(), 1.2)                      # noqa: E731 (a stand-in denoiser)
    out, ch = sure_smoothing(z, net, 1.0 / s, counts_scale=s)
    assert ch.risk <= min(min(ch.risks.values()), min(ch.wiener_risks.values())) + 1e-12
    again = apply_post_filter(z.double(), net(z), 1.0 / s, ch, counts_scale=s)
    assert torch.allclose(again, out, atol=1e-9)
