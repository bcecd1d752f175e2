"""The map encoders (thesis VAE, contrastive encoder), σ-aware distances and the search index."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from em_accel.embed.contrastive import ContrastiveEncoder, nt_xent, random_view
from em_accel.embed.crops import CropSampler, image_crops
from em_accel.embed.index import Index
from em_accel.embed.sigma_distance import sigma_affinities, sigma_d2, sigma_knn
from em_accel.embed.train_encoders import train_encoder
from em_accel.embed.vae import VAE, beta1, lr_at, sobel


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    from scipy import ndimage

    return [ndimage.gaussian_filter(rng.random((128, 160)), s).astype(np.float32)
            for s in (1.0, 2.0, 4.0)]


def test_vae_shapes_normalisation_and_loss():
    torch.manual_seed(0)
    vae = VAE()
    x = torch.rand(4, 1, 96, 96)
    out = vae(x)
    assert out.recon.shape == x.shape and out.mu.shape == (4, 64)
    # encoding normalisation: per-dimension batch mean 0 and std 2.5 (population std)
    assert torch.allclose(out.mu.mean(0), torch.zeros(64), atol=1e-4)
    assert torch.allclose(out.mu.std(0, unbiased=False), torch.full((64,), 2.5), atol=1e-2)
    assert (out.sigma >= 0).all()
    loss = vae.loss(x, out)
    expected = 50 * (torch.mean((out.recon - x) ** 2) + torch.mean((sobel(out.recon) - sobel(x)) ** 2)) \
        + torch.mean((out.sigma - 1) ** 2)
    assert torch.allclose(loss.total, expected)
    assert float(VAE(sobel=False).loss(x, out).sobel) == 0.0
    vae.kl = True  # variant 5 (the same layers): no normalisation, KL term
    o = vae(x)
    assert not torch.allclose(o.mu.mean(0), torch.zeros(64), atol=1e-3)
    lv = 2 * torch.log(o.sigma)
    assert torch.allclose(vae.loss(x, o).regulariser, (o.mu ** 2 + lv.exp() - lv - 1).mean())


def test_vae_rejects_bad_input():
    vae = VAE(latent=8).eval()
    with pytest.raises(ValueError, match="shape"):
        vae.encode(torch.rand(2, 1, 64, 64))
    with pytest.raises(ValueError, match="at least 2"):
        vae.encode(torch.rand(1, 1, 96, 96), mode="batch")


def test_sobel_kernel_and_schedules():
    x = torch.arange(96.0)[None, None, :, None].expand(1, 1, 96, 96).contiguous()
    g = sobel(x)
    assert torch.allclose(g[0, 0, 1:-1, 1:-1], torch.full((94, 94), 8.0))  # d/drow of a ramp
    assert torch.allclose(g[0, 1], torch.zeros(96, 96))
    assert beta1(0, 100) == pytest.approx(0.9) and beta1(100, 100) == 0.0
    assert beta1(50, 100) == pytest.approx(0.45 / 0.55)
    assert lr_at(0, 600) == 1e-3 and lr_at(100, 600) == 5e-4 and lr_at(599, 600) == 1e-3 / 32


def test_frozen_mode_is_per_image_after_calibration():
    torch.manual_seed(1)
    vae = VAE(latent=16)
    data = [torch.rand(4, 1, 96, 96) for _ in range(3)]
    vae.calibrate(data)
    assert not vae.training and bool(vae.calibrated)
    x = data[0]
    full = vae.encode(x, mode="frozen").mu
    single = torch.cat([vae.encode(x[i:i + 1], mode="frozen").mu for i in range(4)])
    assert torch.allclose(full, single, atol=1e-5)
    # population statistics: frozen means over the calibration data are ~centred, std 2.5
    allmu = torch.cat([vae.encode(b, mode="frozen").mu for b in data])
    assert allmu.mean(0).abs().max() < 1e-3
    assert torch.allclose(allmu.std(0, unbiased=False), torch.full((16,), 2.5), atol=1e-2)
    # batch mode depends on the batch; frozen mode does not
    b1 = vae.encode(x, mode="batch").mu[0]
    b2 = vae.encode(torch.cat([x[:1], data[1][:3]]), mode="batch").mu[0]
    assert not torch.allclose(b1, b2, atol=1e-3)
    # batch mode leaves the running buffers alone
    rm = vae.trunk[1].running_mean.clone()
    vae.encode(data[2], mode="batch")
    assert torch.equal(rm, vae.trunk[1].running_mean)


def test_crops_modes_and_bad_images():
    img = np.random.default_rng(0).random((200, 300)).astype(np.float32)
    assert image_crops(img, "center").shape == (1, 96, 96)
    assert image_crops(img, "tiles").shape == (2 * 3, 96, 96)
    c = image_crops(img, "downsample")
    assert float(c.min()) == 0.0 and float(c.max()) == 1.0
    bad = img.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        image_crops(bad)
    with pytest.raises(ValueError, match="2-D"):
        image_crops(np.zeros((2, 100, 100)))


def test_training_resumes_exactly(tmp_path, images):
    sampler = CropSampler(images, seed=3)
    assert torch.equal(sampler.batch(5, 4), sampler.batch(5, 4))

    def run(folder, stops):
        torch.manual_seed(0)
        init = ContrastiveEncoder(widths=(4, 8, 8, 8)).state_dict()
        for s in stops:  # a fresh model object each time: state comes from the checkpoint
            model = ContrastiveEncoder(widths=(4, 8, 8, 8))
            model.load_state_dict(init)
            train_encoder(model, sampler, folder, 3, batch_size=4, progress=False,
                          checkpoint_every=100, until=s)
        return model

    straight = run(tmp_path / "a", [3])
    resumed = run(tmp_path / "b", [1, 3])
    for p, q in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(p, q)


def test_contrastive_loss_and_views():
    a = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    assert float(nt_xent(a, a)) < float(nt_xent(a, a.roll(1, 0)))
    x = torch.rand(3, 1, 96, 96)
    v = random_view(x, torch.Generator().manual_seed(0))
    assert v.shape == x.shape and float(v.min()) >= 0 and float(v.max()) <= 1
    enc = ContrastiveEncoder().eval()
    e = enc.encode(x)
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(enc.encode(x[:1]), e[:1], atol=1e-5)  # per image in eval mode


def _sigma_d2_reference(mu, sig):
    n = mu.shape[0]
    out = torch.empty(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            w = 1.0 / (sig[i] ** 2 + sig[j] ** 2 + 0.01)
            out[i, j] = (w * (mu[i] - mu[j]) ** 2).sum() / w.sum()
    return out


def test_sigma_distance_matches_formula_and_knn():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(40, 6, generator=g, dtype=torch.float64)
    sig = torch.rand(40, 6, generator=g, dtype=torch.float64) * 2
    ref = _sigma_d2_reference(mu, sig)
    assert torch.allclose(sigma_d2(mu, sig, mu, sig, block_bytes=2000), ref)
    d2, idx = sigma_knn(mu, sig, 5)
    ref.fill_diagonal_(math.inf)
    rd, ri = torch.topk(ref, 5, largest=False)
    assert torch.equal(idx, ri) and torch.allclose(d2, rd)
    # re-ranking all other points as candidates is exact; with few it is close
    d2c, idxc = sigma_knn(mu, sig, 5, candidates=39)
    assert torch.equal(idxc, ri)
    # differs from Euclidean neighbours when σ varies a lot per dimension
    from em_accel.embed import knn
    _, ie = knn(mu, 5)
    assert not torch.equal(ie, ri)
    P = sigma_affinities(mu.float(), sig.float(), perplexity=4.0)
    assert abs(float(P.values.double().sum()) - 1.0) < 1e-5


def test_index_search_exact_save_load_and_place(tmp_path):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 8, generator=g) * 5
    feats = (centres.repeat_interleave(30, 0) + torch.randn(150, 8, generator=g)).float()
    emb = (centres[:, :2].repeat_interleave(30, 0) * 3 + torch.randn(150, 2, generator=g)).float()
    sig = torch.rand(150, 8, generator=g)
    names = [f"img{i}.tif" for i in range(150)]
    index = Index(feats, sigma=sig, embedding=emb, uniform=torch.rand(150, 2, generator=g),
                  names=names, metadata=[{"i": i} for i in range(150)], info={"encoder": "x"})
    q = feats[:7] + 0.01
    res = index.search(q, 5, batch_size=3)
    ref = torch.cdist(q.double(), feats.double()) ** 2
    rd, ri = torch.topk(ref, 5, largest=False)
    assert torch.equal(res.indices, ri)
    assert torch.allclose(res.distances.double(), rd, rtol=1e-4, atol=1e-4)
    excl = index.search(feats[:3], 2, exclude=torch.arange(3))
    assert not (excl.indices == torch.arange(3)[:, None]).any()
    rs = index.search(q, 3, metric="sigma", query_sigma=sig[:7])
    rsd = sigma_d2(q, sig[:7], feats, sig)
    assert torch.equal(rs.indices, torch.topk(rsd, 3, largest=False).indices)
    with pytest.raises(ValueError, match="sigma"):
        index.search(q, 3, metric="sigma")
    index.save(tmp_path / "idx")
    back = Index.load(tmp_path / "idx")
    assert back.names == names and back.metadata[4] == {"i": 4} and back.info == {"encoder": "x"}
    assert torch.equal(back.search(q, 5).indices, res.indices)
    assert not (tmp_path / "idx" / "index.pkl").exists()
    # placement: a point of cluster c lands among cluster c's map points, deterministically
    new = centres[3:4] + 0.1
    pl = index.place(new)
    pl2 = index.place(torch.cat([new, centres[:1]]))
    assert torch.allclose(pl.map, pl2.map[:1], atol=1e-5)
    dist = torch.cdist(pl.map, emb)[0]
    assert set(torch.topk(dist, 10, largest=False).indices.div(30, rounding_mode="floor").tolist()) == {3}
    assert pl.uniform.shape == (1, 2)
    with pytest.raises(FileNotFoundError):
        Index.load(tmp_path / "nothing")
