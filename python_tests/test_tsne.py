"""t-SNE kernels (em_accel.ops.tsne): native CPU/CUDA against the float64 torch references,
hand-computed cases, the FFT approximation's error against the exact repulsion, op checks."""
from __future__ import annotations

import math

import pytest
import torch

from em_accel.embed import fft_forces as F
from em_accel.ops import tsne as T

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(rtol=2e-5, atol=1e-6), torch.float64: dict(rtol=1e-12, atol=1e-14)}


#: Norm-wise bounds for CUDA, whose atomicAdd order and FMA contraction differ from the
#: reference's: spreading sums charges times Lagrange weights of both signs, so single elements
#: can lose many ulps to cancellation (seen on an H200: 2.8e-13 absolute in float64).
CUDA_REL = {torch.float32: 1e-5, torch.float64: 1e-12}


def _close(a, b, dtype):
    if a.device.type == "cuda":
        err = _rel(a, b)
        assert err < CUDA_REL[dtype], f"relative L2 error {err:.3g} >= {CUDA_REL[dtype]:g}"
        return
    torch.testing.assert_close(a.double().cpu(), b.double().cpu(), **TOL[dtype])


def _rel(a, b):
    return float((a.double().cpu() - b.double().cpu()).norm() / b.double().cpu().norm())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spec", T.OP_SPECS, ids=lambda s: s.name)
def test_op_matches_reference(spec, dtype, device):
    args = spec.sample_inputs(device, dtype)
    op = getattr(torch.ops.em_accel, spec.name)
    out, ref = op(*args), spec.reference(*args)
    if isinstance(out, torch.Tensor):
        out, ref = (out,), (ref,)
    for a, b in zip(out, ref):
        assert a.dtype == b.dtype and a.shape == b.shape
        _close(a, b, dtype)


@pytest.mark.parametrize("spec", T.OP_SPECS, ids=lambda s: s.name)
def test_opcheck(spec):
    args = spec.sample_inputs("cpu", torch.float64)
    torch.library.opcheck(getattr(torch.ops.em_accel, spec.name).default, args,
                          test_utils=("test_schema", "test_faketensor"))


def test_three_points_by_hand():
    # y = (0,0), (1,0), (0,2): d^2 = 1, 4, 5 -> w = 1/2, 1/5, 1/6.
    y = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    rep, zrow = T.tsne_repulsive_exact(y)
    w01, w02, w12 = 0.5, 0.2, 1 / 6
    expect0 = [w01 ** 2 * -1 + w02 ** 2 * 0, w01 ** 2 * 0 + w02 ** 2 * -2]
    torch.testing.assert_close(rep[0], torch.tensor(expect0, dtype=torch.float64))
    torch.testing.assert_close(zrow, torch.tensor([w01 + w02, w01 + w12, w02 + w12],
                                                  dtype=torch.float64))
    # P with p01 = p10 = 0.3, p02 = p20 = 0.2 (CSR, sum 1)
    indptr = torch.tensor([0, 2, 3, 4])
    indices = torch.tensor([1, 2, 0, 0])
    values = torch.tensor([0.3, 0.2, 0.3, 0.2], dtype=torch.float64)
    attr, plogw = T.tsne_attractive(y, indptr, indices, values, True)
    torch.testing.assert_close(attr[0], torch.tensor([0.3 * w01 * -1, 0.2 * w02 * -2],
                                                     dtype=torch.float64))
    torch.testing.assert_close(attr[2], torch.tensor([0.0, 0.2 * w02 * 2], dtype=torch.float64))
    assert plogw[0].item() == pytest.approx(0.3 * math.log(w01) + 0.2 * math.log(w02))


@pytest.mark.parametrize("dtype", DTYPES)
def test_attractive_int32_indices(dtype, device):
    """int32 column indices (the optimiser's fast path) give the int64 result (to rounding) and match the
    reference, on rows long enough for the vector loop and its remainder (8 to ~40 entries)."""
    n = 2000
    y = T.sample_embedding(n, device, dtype, seed=8, scale=10.0)
    indptr, indices, values = T.sample_csr(n, 11, device, dtype, seed=9)
    f64, k64 = T.tsne_attractive(y, indptr, indices, values, True)
    f32, k32 = T.tsne_attractive(y, indptr, indices.to(torch.int32), values, True)
    fr, kr = T.attractive_reference(y.double(), indptr, indices, values.double(), True)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert _rel(f32, f64) < tol  # vector lanes differ (8 int32 vs 4 int64 per gather)
    torch.testing.assert_close(k32, k64, rtol=1e-12, atol=0)
    assert _rel(f32, fr) < tol
    assert _rel(k32, kr) < tol
    # the force of a KL iteration is the force of any other iteration
    f_nokl, _ = T.tsne_attractive(y, indptr, indices.to(torch.int32), values, False)
    torch.testing.assert_close(f_nokl, f32, rtol=0, atol=0)
    with pytest.raises(TypeError):
        T.tsne_attractive(y, indptr, indices.to(torch.int16), values, False)


def test_gradient_equals_autograd_of_kl():
    """alpha*attr - rep/Z is (1/4 of) the autograd gradient of KL(P || Q), dense float64."""
    g = torch.Generator().manual_seed(0)
    n = 60
    y = torch.randn(n, 2, generator=g, dtype=torch.float64) * 3
    indptr, indices, values = T.sample_csr(n, 5, dtype=torch.float64)
    attr, _ = T.tsne_attractive(y, indptr, indices, values, False)
    rep, zrow = T.tsne_repulsive_exact(y)
    grad = attr - rep / zrow.sum()
    rows = torch.repeat_interleave(torch.arange(n), indptr[1:] - indptr[:-1])
    P = torch.zeros(n, n, dtype=torch.float64)
    P[rows, indices] = values
    yy = y.clone().requires_grad_(True)
    d2 = ((yy[:, None] - yy[None]) ** 2).sum(-1)
    W = (1 + d2).reciprocal() * (1 - torch.eye(n, dtype=torch.float64))
    Q = W / W.sum()
    mask = P > 0
    kl = (P[mask] * torch.log(P[mask] / Q[mask])).sum()
    (auto,) = torch.autograd.grad(kl, yy)
    torch.testing.assert_close(4 * grad, auto, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
def test_exact_repulsion_large(dtype, device):
    y = T.sample_embedding(3000, device, dtype, seed=5, scale=10.0)
    f, z = T.tsne_repulsive_exact(y)
    fr, zr = T.repulsive_exact_reference(y.double())
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    assert _rel(f, fr) < tol
    assert abs(float(z.sum()) / float(zr.sum()) - 1) < tol


@pytest.mark.parametrize("p,force_tol,z_tol", [(3, 3e-2, 3e-3), (4, 1e-2, 1e-3)])
def test_fft_repulsion_error_vs_exact(p, force_tol, z_tol, device):
    """FIt-SNE interpolation (p nodes per unit box): relative force error (L2 over all points)
    and Z error against the exact sums, on a clustered map about 100 units across."""
    y = T.sample_embedding(4000, device, torch.float32, seed=6, scale=20.0)
    fe, ze = F.repulsive_forces(y.double(), "exact")
    ff, zf = F.repulsive_forces(y, "fft", p=p)
    assert _rel(ff, fe) < force_tol
    assert abs(zf / ze - 1) < z_tol
    # and the error falls with finer grids: 2 boxes per unit is several times better
    f2, _ = F.repulsive_forces(y, "fft", p=p, intervals_per_unit=2.0)
    assert _rel(f2, fe) < _rel(ff, fe) / 3


def test_fft_float64_path_matches_torch_pipeline():
    """spread -> torch FFT convolution -> gather equals a dense convolution of the grid."""
    y = T.sample_embedding(500, "cpu", torch.float64, seed=7, scale=2.0)
    grid = F.choose_grid(y, 3, 1.0, 6)
    args = (grid.n_boxes, grid.p, grid.lower_x, grid.lower_y, grid.box_width)
    charges = T.tsne_interp_spread(y, *args)
    pot = F.convolve_grid(charges, grid)
    m = grid.m
    step = grid.box_width / grid.p
    idx = torch.arange(m, dtype=torch.float64) * step
    gx, gy = torch.meshgrid(idx, idx, indexing="ij")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    K = (1 + torch.cdist(pts, pts) ** 2) ** -2
    dense = (K @ charges.reshape(3, -1).T).T.reshape(3, m, m)
    torch.testing.assert_close(pot, dense, rtol=1e-9, atol=1e-9)
    # the threaded, pruned 1-D pass version gives the same potentials
    torch.testing.assert_close(F.convolve_grid(charges, grid, threads=2), dense, rtol=1e-9, atol=1e-9)


def test_perplexity_entropy():
    d2, perp, tol, it = T._sample_perplexity("cpu", torch.float64)
    p, beta = T.tsne_perplexity(d2, perp, tol, it)
    torch.testing.assert_close(p.sum(1), torch.ones(d2.shape[0], dtype=torch.float64))
    h = -(p * torch.log(p)).sum(1)
    assert (h - math.log(perp)).abs().max() < 1e-5
    assert (beta > 0).all()


def test_step_gain_rule_by_hand():
    y = torch.zeros(1, 2, dtype=torch.float64)
    upd = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    gains = torch.ones(1, 2, dtype=torch.float64)
    attr = torch.tensor([[1.0, 1.0]], dtype=torch.float64)  # g = (1, 1): same sign in x, not in y
    rep = torch.zeros(1, 2, dtype=torch.float64)
    y, upd, gains, _ = T.tsne_step(y, upd, gains, attr, rep, 1.0, 1.0, 0.5, 2.0, 0.01, 0.0)
    torch.testing.assert_close(gains, torch.tensor([[0.8, 1.2]], dtype=torch.float64))
    torch.testing.assert_close(upd, torch.tensor([[0.5 - 1.6, -0.5 - 2.4]], dtype=torch.float64))
    torch.testing.assert_close(y, torch.zeros(1, 2, dtype=torch.float64))  # one point: re-centred


def test_step_clips_step_norm():
    y = torch.zeros(2, 2, dtype=torch.float64)
    upd = torch.zeros(2, 2, dtype=torch.float64)
    gains = torch.ones(2, 2, dtype=torch.float64)
    attr = torch.tensor([[100.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    _, upd, _, _ = T.tsne_step(y, upd, gains, attr, torch.zeros_like(attr), 1.0, 1.0, 0.0, 1.0,
                               0.01, 5.0)
    assert upd[0].norm().item() == pytest.approx(5.0)


def test_bad_inputs():
    y = T.sample_embedding(10)
    with pytest.raises(TypeError, match="y must have dtype"):
        T.tsne_repulsive_exact(y.half())
    with pytest.raises(ValueError, match=r"y must have shape \[N, 2\]"):
        T.tsne_repulsive_exact(torch.zeros(10, 3))
    with pytest.raises(ValueError, match="contiguous"):
        T.tsne_repulsive_exact(torch.zeros(2, 10).T)
    with pytest.raises(ValueError, match="perplexity must be in"):
        T.tsne_perplexity(torch.rand(5, 4), 9.0, 1e-5, 100)
    indptr, indices, values = T.sample_csr(10, 2)
    with pytest.raises(TypeError, match="values must have dtype"):
        T.tsne_attractive(y, indptr, indices, values.double(), False)
    with pytest.raises(ValueError, match="indptr must have shape"):
        T.tsne_attractive(y, indptr[:-1], indices, values, False)
    with pytest.raises(ValueError, match="p \\(interpolation nodes"):
        T.tsne_interp_spread(y, 4, 9, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="method must be"):
        F.repulsive_forces(y, "bh")
    with pytest.raises(RuntimeError, match="is on meta"):
        T.tsne_attractive(y, indptr, indices, values.to("meta"), False)
    x, idx = T._sample_neighbor_d2()
    with pytest.raises(ValueError, match=r"idx entries must be in \[0, 120\)"):
        T.tsne_neighbor_d2(x, torch.where(idx == 0, 120, idx))
    with pytest.raises(TypeError, match="idx must have dtype"):
        T.tsne_neighbor_d2(x, idx.int())
    with pytest.raises(ValueError, match="one row per row"):
        T.tsne_neighbor_d2(x, idx[:-1])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cpu_and_cuda_agree():
    y = T.sample_embedding(2000, "cpu", torch.float32, seed=8, scale=15.0)
    fc, zc = F.repulsive_forces(y, "exact")
    fg, zg = F.repulsive_forces(y.cuda(), "exact")
    assert _rel(fg, fc) < 1e-5 and abs(zg / zc - 1) < 1e-6
    fc, zc = F.repulsive_forces(y, "fft")
    fg, zg = F.repulsive_forces(y.cuda(), "fft")
    # float32 FFTs of different libraries (pocketfft/MKL vs cuFFT) on the interpolation grid:
    # Z, a sum of 4e6 kernel values through them, differed by 1.9e-5 on an H200
    assert _rel(fg, fc) < 1e-4 and abs(zg / zc - 1) < 1e-4, (_rel(fg, fc), zg / zc - 1)
