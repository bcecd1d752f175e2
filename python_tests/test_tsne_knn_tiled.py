"""Tiled exact kNN (the CUDA default): same neighbours as the blocked exact search, and every
distance tile within the memory budget."""
from __future__ import annotations

import importlib

import pytest
import torch

# The module itself: em_accel.embed exports a function named ``affinities``.
A = importlib.import_module("em_accel.embed.affinities")


def _points(n, dim, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(5, dim, generator=g, dtype=torch.float64) * 4
    x = centres[torch.randint(0, 5, (n,), generator=g)] + torch.randn(n, dim, generator=g,
                                                                       dtype=torch.float64)
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("budget", [3_000, 40_000, 300_000, 1 << 24])
def test_tiled_matches_blocked_exact(dtype, budget):
    x = _points(353, 9, dtype)
    k = 17
    want = A._exact_idx(x, k, 1 << 20)
    got = A._tiled_idx(x, k, budget)
    # Same neighbour sets (continuous data: no ties); order is fixed later by exact distances.
    assert torch.equal(got.sort(1).values, want.sort(1).values)
    assert not (got == torch.arange(353)[:, None]).any()  # never the point itself


def test_knn_tiled_path_equals_default_on_cpu():
    x = _points(400, 12)
    d_ref, i_ref = A.knn(x, 30)
    d_t, i_t = A.knn(x, 30, tile_bytes=50_000)
    torch.testing.assert_close(d_t, d_ref, rtol=0, atol=0)
    assert torch.equal(i_t, i_ref)


def test_k_near_n_and_duplicates():
    x = _points(40, 3)
    x[10:20] = x[0]  # eleven identical points: ties in distance
    k = 39
    d_ref, _ = A.knn(x, k)
    d_t, i_t = A.knn(x, k, tile_bytes=4_000)
    torch.testing.assert_close(d_t, d_ref)  # ties may swap indices, not distances
    for row in range(40):
        assert sorted(i_t[row].tolist()) == [j for j in range(40) if j != row]


@pytest.mark.parametrize("n,k,itemsize", [(10, 3, 4), (1000, 90, 4), (10**6, 90, 4),
                                          (60_000, 90, 8), (5_000_000, 150, 4)])
@pytest.mark.parametrize("budget", [10_000, 1 << 20, 1 << 30])
def test_tile_shape_respects_budget(n, k, itemsize, budget):
    per_row = 4 * k * (itemsize + 8)
    try:
        rows, cols = A.knn_tile_shape(n, k, itemsize, budget)
    except ValueError:
        assert budget < (k + 1) * itemsize + per_row
        return
    assert 1 <= rows <= n and min(n, k + 1) <= cols <= n
    assert rows * (cols * itemsize + per_row) <= budget


def test_distance_tiles_stay_within_budget(monkeypatch):
    budget = 60_000
    seen = []
    addmm = torch.addmm

    def spy(*args, **kwargs):
        out = addmm(*args, **kwargs)
        seen.append(out.numel() * out.element_size())
        return out

    monkeypatch.setattr(torch, "addmm", spy)
    A._tiled_idx(_points(300, 6), 10, budget)
    assert len(seen) > 4 and max(seen) <= budget


def test_budget_too_small_is_a_named_error():
    with pytest.raises(ValueError, match="tile_bytes"):
        A.knn(_points(50, 4), 10, tile_bytes=100)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_knn_matches_cpu():
    x = _points(3000, 50)
    d_c, i_c = A.knn(x, 90)
    d_g, i_g = A.knn(x.cuda(), 90, tile_bytes=4 << 20)  # several row and column tiles
    torch.testing.assert_close(d_g.cpu(), d_c, rtol=1e-5, atol=1e-5)
    agree = (i_g.cpu().sort(1).values == i_c.sort(1).values).float().mean()
    assert agree > 0.999
