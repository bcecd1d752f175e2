"""Approximate kNN (HNSW via hnswlib) for t-SNE affinities on CPU: recall against exact search,
the auto switch, the missing-library errors, and end-to-end quality against openTSNE."""
from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from em_accel.embed import affinities, gaussian_mixture, knn, tsne

hnswlib = pytest.importorskip("hnswlib")
aff = importlib.import_module("em_accel.embed.affinities")  # the module, not the function


def _recall(exact: torch.Tensor, approx: torch.Tensor) -> float:
    k = exact.shape[1]
    hits = [len(np.intersect1d(a, b)) for a, b in zip(exact.numpy(), approx.numpy())]
    return float(np.mean(hits)) / k


@pytest.fixture(scope="module")
def clustered():
    return gaussian_mixture(3000, dim=64, clusters=10, seed=0)[0]


def test_approx_recall_and_distances(clustered):
    x = clustered
    d2e, ie = knn(x, 90, method="exact")
    d2a, ia = knn(x, 90, method="approx")
    assert _recall(ie, ia) >= 0.98  # measured 0.99996
    assert not (ia == torch.arange(x.shape[0])[:, None]).any()  # self excluded
    assert (ia >= 0).all() and (ia < x.shape[0]).all()
    assert (d2a[:, 1:] >= d2a[:, :-1]).all()  # ascending
    ref = ((x[:, None, :].double() - x[ia].double()) ** 2).sum(-1)  # exact for those found
    torch.testing.assert_close(d2a.double(), ref, rtol=1e-5, atol=1e-5)
    # An approximate neighbour is never closer than the true k-th, and the k-th is close.
    assert (d2a[:, -1] >= d2e[:, -1] * (1 - 1e-5)).all()


def test_approx_recall_unclustered():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4000, 32, generator=g)  # a harder case: no cluster structure
    _, ie = knn(x, 30, method="exact")
    _, ia = knn(x, 30, method="approx")
    assert _recall(ie, ia) >= 0.9  # measured 0.995


def test_auto_switch(monkeypatch):
    cpu = torch.device("cpu")
    assert aff.resolve_knn_method("auto", aff.APPROX_KNN_MIN_N - 1, cpu) == "exact"
    assert aff.resolve_knn_method("auto", aff.APPROX_KNN_MIN_N, cpu) == "approx"
    assert aff.resolve_knn_method("auto", 10 ** 7, torch.device("cuda")) == "exact"
    assert aff.resolve_knn_method("exact", 10 ** 7, cpu) == "exact"
    with pytest.raises(ValueError, match="knn_method"):
        aff.resolve_knn_method("annoy", 100, cpu)
    with pytest.raises(ValueError, match="knn_method"):
        tsne(torch.randn(50, 4), 5.0, 2, knn_method="hnsw")
    monkeypatch.setattr(aff, "_hnswlib", lambda: None)  # library missing
    assert aff.resolve_knn_method("auto", 10 ** 7, cpu) == "exact"  # silent fallback
    with pytest.raises(ImportError, match="hnswlib"):
        knn(torch.randn(50, 4), 5, method="approx")
    with pytest.raises(ImportError, match="hnswlib"):
        tsne(torch.randn(50, 4), 5.0, 2, knn_method="approx")


def test_affinities_approx_close_to_exact(clustered):
    P = affinities(clustered, 30.0, knn_method="exact").dense()
    Pa = affinities(clustered, 30.0, knn_method="approx").dense()
    assert float((P - Pa).abs().sum()) < 0.01  # L1 distance of two distributions (max 2)


@pytest.mark.slow
def test_quality_with_approx_knn_matches_opentsne(clustered, monkeypatch):
    pytest.importorskip("openTSNE")
    monkeypatch.setattr(aff, "APPROX_KNN_MIN_N", 1000)  # force the auto switch at this size
    assert aff.resolve_knn_method("auto", clustered.shape[0], torch.device("cpu")) == "approx"
    from test_tsne_quality import assert_as_good_as_opentsne

    x = clustered
    P = affinities(x, 30.0, knn_method="exact")  # the common yardstick
    assert_as_good_as_opentsne(x, P, tsne(x, perplexity=30.0, n_iter=750, knn_method="auto"))
