"""em_accel.embed: PCA, kNN and affinities, the t-SNE optimiser, US-tSNE, plots and the CLI."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from em_accel.embed import (TSNE, affinities, gaussian_mixture, kl_divergence, knn,
                            knn_preservation, pca, pca_fit, tsne, tsne_with_info, uniform_separate)
from em_accel.embed.plot import image_grid


@pytest.fixture(scope="module")
def blobs():
    return gaussian_mixture(1500, dim=16, clusters=5, seed=3)


def test_pca_matches_svd():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 12, generator=g, dtype=torch.float64) * torch.arange(1, 13)
    scores, axes, var = pca_fit(x, 4)
    xc = (x - x.mean(0)).numpy()
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    np.testing.assert_allclose(np.abs(scores.numpy()), np.abs(u[:, :4] * s[:4]), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(var.numpy(), s[:4] ** 2 / 299, rtol=1e-10)
    big = axes.abs().argmax(1)
    assert (axes[torch.arange(4), big] > 0).all()  # sign convention
    with pytest.raises(ValueError, match="n_components"):
        pca(x, 13)


def test_knn_exact(blobs):
    x, _ = blobs
    d2, idx = knn(x, 7)
    full = torch.cdist(x.double(), x.double()) ** 2
    full.fill_diagonal_(math.inf)
    ref = torch.topk(full, 7, largest=False).values
    torch.testing.assert_close(d2.double(), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(full.gather(1, idx), ref)


def test_affinities_match_dense_reference():
    x, _ = gaussian_mixture(300, dim=8, clusters=3, seed=1, dtype=torch.float64)
    P = affinities(x, perplexity=10.0, dtype=torch.float64)
    dense = P.dense()
    torch.testing.assert_close(dense, dense.T)
    assert float(dense.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(dense.diagonal().abs().sum()) == 0.0
    # from the definition: conditional Gaussians on the 30 nearest neighbours, bisection on beta
    d2 = torch.cdist(x, x) ** 2
    d2.fill_diagonal_(math.inf)
    nd, ni = torch.topk(d2, 30, largest=False)
    lo, hi = torch.full((300, 1), 1e-8, dtype=torch.float64), torch.full((300, 1), 1e4, dtype=torch.float64)
    for _ in range(200):
        beta = (lo * hi).sqrt()
        p = torch.softmax(-beta * nd, 1)
        h = -(p * torch.log(p)).sum(1, keepdim=True)
        lo, hi = torch.where(h > math.log(10), beta, lo), torch.where(h > math.log(10), hi, beta)
    cond = torch.zeros(300, 300, dtype=torch.float64).scatter_(1, ni, p)
    torch.testing.assert_close(dense, (cond + cond.T) / 600, rtol=1e-4, atol=1e-9)


def test_tsne_reproducible_and_converges(blobs):
    x, labels = blobs
    y1, info = tsne_with_info(x, perplexity=20, n_iter=300, kl_every=25)
    y2 = tsne(x, perplexity=20, n_iter=300)
    assert torch.equal(y1, y2)  # deterministic from the seed, thread count irrelevant
    kls = [k for _, k in info.kl]
    assert kls[-1] < kls[0] and kls[-1] < kls[len(kls) // 2]
    P = affinities(x, 20.0)
    assert info.kl_divergence == pytest.approx(kl_divergence(P, y1), rel=0.02)
    # clusters separate: 10-NN in the map agree with the labels
    _, iy = knn(y1, 10)
    assert float((labels[iy] == labels[:, None]).float().mean()) > 0.98
    assert info.learning_rate == (1500 / 12, 1500.0)


def test_locality_order_is_a_relabelling(blobs):
    """The optimiser's reordering: permute_csr relabels P exactly, the RCM order brings graph
    neighbours closer in index, and a run in that order is the run in input order (float64,
    same iterations: only summation orders differ)."""
    from em_accel.embed.tsne import locality_order
    from em_accel.ops import tsne as ops

    x, _ = blobs
    P = affinities(x, 20.0, dtype=torch.float64)
    perm = locality_order(P)
    assert perm is not None and torch.equal(perm.sort().values, torch.arange(P.n))
    ip, ix, v = ops.permute_csr(P.indptr, P.indices, P.values, perm)
    B = torch.zeros(P.n, P.n, dtype=torch.float64)
    B[torch.repeat_interleave(torch.arange(P.n), ip[1:] - ip[:-1]), ix] = v
    torch.testing.assert_close(B, P.dense()[perm][:, perm], rtol=0, atol=0)
    rows = torch.repeat_interleave(torch.arange(P.n), ip[1:] - ip[:-1])
    orig_rows = torch.repeat_interleave(torch.arange(P.n), P.indptr[1:] - P.indptr[:-1])
    assert (rows - ix).abs().float().median() < 0.5 * (orig_rows - P.indices).abs().float().median()
    # t-SNE is chaotic (rounding differences grow ~1e7-fold in 40 iterations here), so compare
    # after 20 iterations, where they are still ~1e-12 relative
    kw = dict(n_iter=20, early_exaggeration_iter=10, affinities=P, dtype=torch.float64,
              method="fft")
    seen1, seen0 = [], []
    y1 = tsne(x, reorder=True, callback=lambda it, y: seen1.append(y.clone()), kl_every=10, **kw)
    y0 = tsne(x, reorder=False, callback=lambda it, y: seen0.append(y.clone()), kl_every=10, **kw)
    tol = 1e-9 * float(y0.abs().max())
    torch.testing.assert_close(y1, y0, rtol=0, atol=tol)
    assert len(seen1) == len(seen0) == 2
    for a, b in zip(seen1, seen0):  # callbacks see the input order too
        torch.testing.assert_close(a, b, rtol=0, atol=tol)


def test_exact_and_fft_agree(blobs):
    x, _ = blobs
    P = affinities(x, 20.0)
    kw = dict(n_iter=200, early_exaggeration_iter=100, affinities=P)
    ye = tsne(x, method="exact", **kw)
    yf = tsne(x, method="fft", fft_nodes=4, **kw)
    ke, kf = kl_divergence(P, ye), kl_divergence(P, yf)
    # 200 iterations are not converged: float32 vs float64 exact runs alone differ by ~2% here
    assert abs(kf / ke - 1) < 0.04
    assert abs(knn_preservation(x, ye) - knn_preservation(x, yf)) < 0.03


def test_estimator_and_float64(blobs):
    x, _ = blobs
    est = TSNE(perplexity=15, n_iter=120, dtype=torch.float64, init="random", seed=2)
    y = est.fit_transform(x.numpy())
    assert isinstance(y, np.ndarray) and y.shape == (1500, 2) and y.dtype == np.float64
    assert np.isfinite(y).all() and math.isfinite(est.kl_divergence_)
    with pytest.raises(ValueError, match="n_components"):
        TSNE(n_components=3)
    with pytest.raises(ValueError, match="perplexity 30 is too large for 50 points"):
        tsne(x[:50], perplexity=30)
    with pytest.raises(ValueError, match="method must be"):
        tsne(x, method="bh")


def test_uniform_separate_spreads_points_and_covers_outliers():
    g = np.random.default_rng(0)
    y = np.concatenate([g.normal(0, 1, (2000, 2)), g.normal(8, 0.3, (500, 2)),
                        [[30.0, -30.0], [-25.0, 20.0]]])  # far outliers at the corners
    u = uniform_separate(y, grid=20)
    assert u.shape == y.shape and np.isfinite(u).all()
    assert (u >= 0).all() and (u <= 1).all()
    raw = (y - y.min(0)) / (y.max(0) - y.min(0))

    def ks(v):  # max deviation of the marginal CDFs from uniform
        s = np.sort(v, 0)
        return np.abs(s - (np.arange(len(s))[:, None] + 0.5) / len(s)).max()

    assert ks(u) < 0.05 < ks(raw)
    # order along x is mostly kept: the map is monotone in the marginal CDF
    rank = np.corrcoef(np.argsort(np.argsort(u[:, 0])), np.argsort(np.argsort(y[:, 0])))[0, 1]
    assert rank > 0.9
    t = uniform_separate(torch.from_numpy(y).float())
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    with pytest.raises(ValueError, match="shape"):
        uniform_separate(np.zeros((10, 3)))


def test_image_grid_places_images():
    y = np.array([[0.0, 0.0], [1.0, 1.0]])
    imgs = np.zeros((2, 4, 4), dtype=np.float32)
    imgs[:, 1:3, 1:3] = 1.0  # min-max scaled: black frame, white centre
    canvas = image_grid(y, imgs, n=2, size=40, thumb=8)
    assert canvas.shape == (40, 40)
    assert canvas[32:40, 0:8].min() == 0.0  # point (0, 0): bottom-left
    assert canvas[0:8, 32:40].min() == 0.0  # point (1, 1): top-right
    assert canvas[16:24, 16:24].min() == 1.0  # empty middle stays white


def test_plots_and_cli(tmp_path, blobs):
    from em_accel.cli import main

    x, labels = blobs
    f, lab, ims = tmp_path / "f.npy", tmp_path / "l.npy", tmp_path / "im.npy"
    np.save(f, x.numpy())
    np.save(lab, labels.numpy())
    np.save(ims, np.random.default_rng(0).random((1500, 8, 8)).astype(np.float32))
    out, emb = tmp_path / "map.png", tmp_path / "y.npy"
    assert main(["tsne", str(f), "-o", str(out), "--n-iter", "60", "-q", "--labels", str(lab),
                 "--images", str(ims), "--save-embedding", str(emb), "--uniform"]) == 0
    y = np.load(emb)
    assert y.shape == (1500, 2) and np.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    import matplotlib.pyplot as plt

    pic = plt.imread(out)
    assert pic.shape[0] > 100 and (pic[..., :3] < 0.9).any()  # dots were drawn
    grid = plt.imread(tmp_path / "map_images.png")
    assert grid.shape[:2] == (2048, 2048) and (grid[..., :3] < 0.99).mean() > 0.05
