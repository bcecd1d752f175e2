"""Factorised exact search over dihedral views, and the raw features' standardisation."""
from __future__ import annotations

import pytest
import torch

from em_accel.embed import dihedral
from em_accel.embed.features import dihedral_views, encode, encode_views
from em_accel.embed.index import Index


def _views(x: torch.Tensor) -> torch.Tensor:
    """[Q, S, S] -> the 8 dihedral views' flattened features [Q, 8, S²]."""
    return dihedral_views(x).reshape(x.shape[0], 8, -1)


def test_permutations_and_basis():
    for side in (5, 6):  # odd sides have a centre pixel
        p = dihedral.dihedral_permutations(side)
        x = torch.randn(3, side, side)
        assert torch.equal(_views(x), x.reshape(3, -1)[:, p])
        assert dihedral.grid_side(p) == side and dihedral.grid_side(p[[0, 2, 1, 3, 4, 5, 6, 7]]) is None
        b = dihedral.dihedral_basis(side)
        assert torch.allclose(b.u.T @ b.u, torch.eye(side * side, dtype=torch.float64), atol=1e-9)
        assert len(b.pairs) == 4
    with pytest.raises(ValueError, match="permutation"):
        Index(torch.randn(10, 4), view_permutations=torch.tensor([[0, 1, 1, 3]]))
    with pytest.raises(ValueError, match="view permutations"):
        Index(torch.randn(10, 4), view_permutations=torch.zeros(2, 5, dtype=torch.long))


@pytest.mark.parametrize("side", [5, 6, 24])
def test_factorised_distances_equal_view_by_view(side):
    g = torch.Generator().manual_seed(side)
    f = torch.randn(200, side * side, generator=g)
    q = torch.randn(9, side, side, generator=g)
    d = dihedral.nearest_view_d2(dihedral.prepare(f, side), q.reshape(9, -1))
    ref = (torch.cdist(_views(q).reshape(72, -1).double(), f.double()) ** 2).reshape(9, 8, -1).amin(1)
    assert torch.allclose(d.double(), ref, rtol=1e-5, atol=1e-3 * side)


def test_dihedral_search_equals_exhaustive():
    g = torch.Generator().manual_seed(0)
    # clustered items: near-ties among a cluster's members, like crops of one image
    centres = torch.randn(10, 36, generator=g) * 3
    f = torch.cat([centres.repeat_interleave(30, 0) + torch.randn(300, 36, generator=g),
                   torch.randn(100, 36, generator=g)])
    index = Index(f, view_permutations=dihedral.dihedral_permutations(6))
    src = torch.randint(0, 400, (60,), generator=g)
    q = f[src].reshape(60, 6, 6) + 0.3 * torch.randn(60, 6, 6, generator=g)
    qv = _views(torch.stack([torch.rot90(a, int(k)) for a, k in zip(q, src % 4)]))
    for exclude in (None, src):
        a = index.search(qv, 5, method="exhaustive", exclude=exclude)
        b = index.search(qv, 5, method="dihedral", batch_size=7, exclude=exclude)
        assert torch.equal(a.indices, b.indices)
        assert torch.allclose(a.distances, b.distances, rtol=1e-5, atol=1e-3)
        assert torch.equal(index.search(qv, 5, exclude=exclude).indices, a.indices)  # auto
        if exclude is not None:
            assert not (b.indices == src[:, None]).any()
        else:
            assert (b.indices[:, 0] == src).float().mean() > 0.9


def test_dihedral_search_refuses_views_that_are_not_the_permutations():
    f = torch.randn(50, 36)
    index = Index(f, view_permutations=dihedral.dihedral_permutations(6))
    qv = torch.randn(4, 8, 36)  # not views of one query
    with pytest.raises(ValueError, match="dihedral"):
        index.search(qv, 3, method="dihedral")
    ref = index.search(qv, 3, method="exhaustive")
    assert torch.equal(index.search(qv, 3).indices, ref.indices)  # auto falls back
    with pytest.raises(ValueError, match="method"):
        index.search(qv, 3, method="fast")
    with pytest.raises(ValueError, match="dihedral"):
        Index(f).search(_views(torch.randn(2, 6, 6)), 3, method="dihedral")


def test_view_permutations_saved_and_loaded(tmp_path):
    p = dihedral.dihedral_permutations(6)
    Index(torch.randn(40, 36), view_permutations=p).save(tmp_path)
    assert torch.equal(Index.load(tmp_path).view_permutations, p)


def test_raw_features_ignore_gain_and_offset_and_commute_with_views():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 96, 96, generator=g)
    a = encode(x, "raw").features
    b = encode(0.3 * x + 0.5, "raw").features
    assert torch.allclose(a, b, atol=1e-4)
    assert torch.allclose(a.mean(1), torch.zeros(6), atol=1e-5)
    assert torch.allclose(a.pow(2).mean(1), torch.ones(6), atol=1e-4)
    plain = encode(x, "raw", standardise=False).features
    assert torch.allclose(plain, torch.nn.functional.avg_pool2d(x[:, None], 4).reshape(6, -1))
    assert not torch.allclose(plain, encode(0.3 * x + 0.5, "raw", standardise=False).features)
    v = encode_views(x, "raw").features
    assert torch.allclose(v, encode(dihedral_views(x), "raw").features.reshape(6, 8, -1), atol=1e-5)
    assert torch.equal(encode(torch.zeros(1, 96, 96), "raw").features, torch.zeros(1, 576))


def test_dimmer_copy_finds_its_original_among_similar_lattices():
    """Crops of one lattice at several phases and contrasts (as crops of one HRTEM image). A
    query is one of them rotated, at half the gain with an offset (what min-max scaling by
    noisy extremes does at low dose) and noisy: the plain averages rank a lower-contrast
    crop of the lattice first; standardised features find the original."""
    g = torch.Generator().manual_seed(3)
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    crops = []
    for i in range(16):
        ph = 0.7 * i
        lat = 0.5 + 0.25 * (torch.cos(0.4 * xx + ph) + torch.cos(0.35 * yy + 0.5 * ph))
        c = 0.25 + 0.75 * (i % 4) / 3                   # contrasts 0.25 .. 1
        crop = 0.5 + c * (lat - 0.5)
        crop[0, 0], crop[0, 1] = 0.0, 1.0                 # min-max range set by two pixels
        crops.append(crop)
    gallery = torch.stack(crops)
    src = torch.arange(16)
    q = torch.stack([torch.rot90(gallery[i], 1) for i in src]) * 0.5 + 0.25
    q = q + 0.02 * torch.randn(q.shape, generator=g)
    hits = {}
    for std in (True, False):
        index = Index(encode(gallery, "raw", standardise=std).features,
                      view_permutations=dihedral.dihedral_permutations(24))
        qv = encode_views(q, "raw", standardise=std).features
        hits[std] = (index.search(qv, 1).indices[:, 0] == src).float().mean()
    assert hits[True] == 1.0 and hits[False] < 0.8


def test_default_map_stores_view_permutations_and_reads_old_indexes(tmp_path):
    """`em-accel map` (raw pixels, dihedral views) stores the view permutations and the
    standardisation; search finds a rotated, dimmer, noisy copy; an index written before the
    standardisation (no flag, no permutations) is searched with the plain averages."""
    import json

    import numpy as np
    import tifffile

    from em_accel.data import dihedral, poisson_noise, synthetic_micrograph
    from em_accel.embed.mapping import make_map, search_files

    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        tifffile.imwrite(src / f"m{i:02d}.tif", synthetic_micrograph(128, 50 + i).astype(np.float32))
    out = tmp_path / "map"
    make_map([src], out, n_iter=100, progress=False)
    index = Index.load(out)
    assert index.info["raw_standardised"] and index.view_permutations.shape == (8, 576)
    img = torch.from_numpy(tifffile.imread(src / "m07.tif"))
    q = poisson_noise(dihedral(img, 5) * 0.5 + 0.2, 100.0, torch.Generator().manual_seed(0)).noisy
    tifffile.imwrite(tmp_path / "q.tif", q.numpy())
    hits, skipped = search_files([tmp_path / "q.tif"], out, 3, place=False)
    assert not skipped and hits[0].neighbours[0]["name"] == "m07.tif"

    # an older index: plain 24x24 averages, no flag, no permutations
    from em_accel.embed.collection import read_collection
    col = read_collection([src], "center", progress=False)
    old = Index(encode(col.crops, "raw", standardise=False).features, names=col.names,
                info={"encoder": "raw", "crop": "center", "dihedral": True})
    old.save(tmp_path / "old")
    assert "raw_standardised" not in json.loads((tmp_path / "old" / "index.json").read_text())["info"]
    hits, _ = search_files([tmp_path / "q.tif"], tmp_path / "old", 3, place=False)
    assert hits[0].neighbours[0]["name"] == "m07.tif"
    qc = read_collection([tmp_path / "q.tif"], "center", progress=False).crops
    plain = encode_views(qc, "raw", standardise=False).features[0]
    expect = float((plain - old.features[7]).pow(2).sum(1).min())
    assert hits[0].neighbours[0]["distance"] == pytest.approx(expect, rel=1e-4)
