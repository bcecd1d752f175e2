"""em_accel::scan_sample and ::scan_rasterize against their references, gradients, noise, opcheck
and bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from em_accel import _native
from em_accel.ops.scan import (SampleMode, noise_reference, raster_inputs, sample_inputs,
                               scan_rasterize, scan_rasterize_op, scan_rasterize_reference,
                               scan_sample, scan_sample_op, scan_sample_reference)

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", list(SampleMode))
def test_sample_matches_reference(device, dtype, mode):
    args = sample_inputs(device, dtype, requires_grad=True, batch=4, shape=(13, 17), probes=300,
                         mode=int(mode), seed=int(mode) + 7)
    out = scan_sample_op(*args)
    images, pos = args[0], args[1]
    ref_images = images.detach().double().requires_grad_(True)
    ref_pos = pos.detach().double().requires_grad_(pos.requires_grad)
    ref = scan_sample_reference(ref_images, ref_pos, int(mode))
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(out.double(), ref.detach(), rtol=tol, atol=tol)

    w = torch.rand(out.shape, dtype=out.dtype, device=device)
    wanted = [images] + ([pos] if pos.requires_grad else [])
    grads = torch.autograd.grad((out * w).sum(), wanted)
    ref_wanted = [ref_images] + ([ref_pos] if pos.requires_grad else [])
    ref_grads = torch.autograd.grad((ref * w.double()).sum(), ref_wanted)
    assert grads[0].dtype == dtype
    gtol = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}.get(dtype, tol * 10)
    torch.testing.assert_close(grads[0].double(), ref_grads[0], rtol=gtol, atol=gtol)
    if pos.requires_grad:  # positions are float32 for 16-bit images: compare at float32 precision
        torch.testing.assert_close(grads[1].double(), ref_grads[1], rtol=1e-5 if dtype !=
                                   torch.float64 else 1e-10, atol=1e-5 if dtype != torch.float64
                                   else 1e-10)


def test_sample_hand_computed():
    img = torch.tensor([[[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]]], dtype=torch.float64)
    pos = torch.tensor([[[0.0, 0.0], [0.99, 2.5], [1.5, 1.5], [-3.0, 7.0], [0.5, 0.5],
                         [1.0, 1.0], [0.75, 1.25]]], dtype=torch.float64)
    near = scan_sample(img, pos, "nearest")
    assert near.tolist() == [[0.0, 2.0, 11.0, 2.0, 0.0, 11.0, 1.0]]
    bil = scan_sample(img, pos, "bilinear")
    # (0,0): below the first centre on both axes -> pixel (0,0); (0.99,2.5): row 0.49 of the way
    # from row 0 to row 1 at col 2 -> 2 + 0.49*10; (1.5,1.5): centre of (1,1); (-3,7): clamps to
    # (0,2); (0.5,0.5): centre of (0,0); (1,1): midway between 4 centres; (0.75,1.25): row weight
    # 0.25, col weight 0.75 -> 0.75 + 2.5.
    expected = [0.0, 2.0 + 0.49 * 10, 11.0, 2.0, 0.0, 5.5, 3.25]
    torch.testing.assert_close(bil[0], torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("mode", list(SampleMode))
def test_sample_gradcheck(device, mode):
    images, pos, m, *_ = sample_inputs(device, torch.float64, requires_grad=True, batch=2,
                                       shape=(4, 5), probes=9, mode=int(mode), seed=11)
    # Keep positions away from pixel centres/edges, where bilinear has kinks.
    with torch.no_grad():
        pos.copy_(pos.floor() + 0.2 + 0.6 * (pos - pos.floor()))
    inputs = (images, pos) if pos.requires_grad else (images,)

    def f(*xs):
        p = xs[1] if len(xs) > 1 else pos
        return scan_sample_op(xs[0], p, m, 0, 0.0, 0.0)

    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("mode", list(SampleMode))
def test_sample_opcheck(device, requires_grad, mode):
    args = sample_inputs(device, torch.float32, requires_grad=requires_grad, mode=int(mode))
    torch.library.opcheck(torch.ops.em_accel.scan_sample.default, args)


def test_noise_reproducible_and_matches_python_spec(device):
    images = torch.rand(3, 8, 8, dtype=torch.float64) * 3
    pos = torch.rand(3, 40, 2, dtype=torch.float64) * 8
    images, pos = images.to(device), pos.to(device)
    for cpi, read in ((0.0, 0.2), (4.0, 0.0), (50.0, 0.05)):
        a = scan_sample(images, pos, counts_per_intensity=cpi, read_noise=read, seed=123)
        b = scan_sample(images, pos, counts_per_intensity=cpi, read_noise=read, seed=123)
        c = scan_sample(images, pos, counts_per_intensity=cpi, read_noise=read, seed=124)
        assert torch.equal(a, b)
        assert not torch.equal(a, c)
        clean = scan_sample(images, pos)
        torch.testing.assert_close(a.cpu(), noise_reference(clean.cpu(), 123, cpi, read),
                                   rtol=1e-12, atol=1e-12)


def test_noise_statistics():
    # Poisson(lam) over both branches (inversion below 10, PTRS above) and Gaussian read noise:
    # mean and variance within 5 standard errors (deterministic with the fixed seed).
    n = 40000
    for lam in (0.3, 3.0, 9.5, 10.0, 40.0, 1000.0):
        images = torch.full((1, 1, 1), lam, dtype=torch.float64)
        pos = torch.full((1, n, 2), 0.5, dtype=torch.float64)
        k = scan_sample(images, pos, counts_per_intensity=1.0, seed=5)[0]
        assert torch.equal(k, k.round()) and bool((k >= 0).all())
        assert abs(k.mean().item() - lam) < 5 * math.sqrt(lam / n)
        assert abs(k.var().item() / lam - 1) < 5 * math.sqrt(2.0 / n) + 5 / math.sqrt(n * lam)
    images = torch.zeros(1, 1, 1, dtype=torch.float64)
    pos = torch.full((1, n, 2), 0.5, dtype=torch.float64)
    g = scan_sample(images, pos, read_noise=2.0, seed=9)[0]
    assert abs(g.mean().item()) < 5 * 2.0 / math.sqrt(n)
    assert abs(g.std().item() / 2.0 - 1) < 5 / math.sqrt(2 * n)
    # Uniforms: 53-bit values in (0, 1), first two moments.
    u = np.array([_native.scan.uniform(1, i, 0) for i in range(20000)])
    assert 0 < u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 5 * math.sqrt(1 / 12 / 20000)


def test_noise_gradient_straight_through():
    images = torch.rand(2, 5, 5, dtype=torch.float64, requires_grad=True)
    pos = torch.rand(2, 30, 2, dtype=torch.float64) * 5
    noisy = scan_sample(images, pos, counts_per_intensity=10.0, seed=1)
    (g_noisy,) = torch.autograd.grad(noisy.sum(), images)
    (g_clean,) = torch.autograd.grad(scan_sample(images, pos).sum(), images)
    assert torch.equal(g_noisy, g_clean)


@pytest.mark.cuda
def test_cpu_and_cuda_agree():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    images = torch.rand(4, 33, 29, dtype=torch.float64) * 20
    pos = torch.rand(4, 500, 2, dtype=torch.float64) * 35 - 1
    for mode in ("nearest", "bilinear"):
        for cpi, read in ((0.0, 0.0), (2.0, 0.1), (300.0, 0.0)):
            a = scan_sample(images, pos, mode, counts_per_intensity=cpi, read_noise=read, seed=77)
            b = scan_sample(images.cuda(), pos.cuda(), mode, counts_per_intensity=cpi,
                            read_noise=read, seed=77)
            # libm and CUDA's log/cos/lgamma may differ by an ulp: allow rare Poisson flips.
            close = torch.isclose(a, b.cpu(), rtol=1e-9, atol=1e-9)
            assert close.float().mean().item() > 0.999
    vals, p, H, W = raster_inputs("cpu", torch.float64, batch=3, shape=(40, 31), probes=60)
    ra = scan_rasterize_op(vals, p, H, W)
    rb = scan_rasterize_op(vals.cuda(), p.cuda(), H, W)
    for x, y in zip(ra, rb):
        torch.testing.assert_close(x, y.cpu(), rtol=1e-12, atol=1e-12)


@pytest.mark.cuda
def test_streams_match_default_stream():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    images = torch.rand(8, 64, 64, device="cuda")
    pos = torch.rand(8, 1000, 2, device="cuda") * 64
    ref = scan_sample(images, pos, "bilinear")
    streams = [torch.cuda.Stream() for _ in range(3)]
    outs = []
    for s in streams:
        with torch.cuda.stream(s):
            outs.append(scan_sample(images, pos, "bilinear"))
    torch.cuda.synchronize()
    for o in outs:
        assert torch.equal(o, ref)


# ---------------------------------------------------------------------------------------------
# Rasterisation and infill.

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape,probes", [((7, 9), 12), ((1, 13), 3), ((12, 1), 2), ((16, 16), 1),
                                          ((10, 11), 0), ((9, 9), 300)])
def test_rasterize_matches_reference(device, dtype, shape, probes):
    vals, pos, H, W = raster_inputs(device, dtype, requires_grad=True, batch=3, shape=shape,
                                    probes=max(probes, 1), seed=probes)
    if probes == 0:
        vals = vals[:, :0].detach().requires_grad_(True)
        pos = pos[:, :0]
    out = scan_rasterize_op(vals, pos, H, W)
    ref = scan_rasterize_reference(vals.detach().double().requires_grad_(True), pos.double(), H, W)
    for name, a, b in zip(("image", "counts", "infilled", "source"), out, ref):
        if name == "source":
            assert torch.equal(a, b), name
        else:
            torch.testing.assert_close(a.double(), b.detach(), rtol=1e-6, atol=1e-6, msg=name)
    if probes:
        wi, wf = torch.rand_like(out[0]), torch.rand_like(out[2])
        (g,) = torch.autograd.grad((out[0] * wi).sum() + (out[2] * wf).sum(), vals)
        rv = vals.detach().double().requires_grad_(True)
        r = scan_rasterize_reference(rv, pos.double(), H, W)
        (gr,) = torch.autograd.grad((r[0] * wi.double()).sum() + (r[2] * wf.double()).sum(), rv)
        torch.testing.assert_close(g.double(), gr, rtol=1e-5, atol=1e-5)


def test_rasterize_ties_and_distances_match_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    g = torch.Generator().manual_seed(3)
    for trial in range(20):
        H, W = 5 + trial % 7, 4 + (trial * 3) % 9
        k = 1 + trial % 5
        flat = torch.randperm(H * W, generator=g)[:k]
        pos = torch.stack([flat // W, flat % W], 1).double()[None] + 0.5
        vals = torch.randn(1, k, generator=g, dtype=torch.float64)
        r = scan_rasterize(vals, pos, (H, W))
        src = r.source[0]
        rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
        d2 = (rows - src // W) ** 2 + (cols - src % W) ** 2
        edt = ndimage.distance_transform_edt(r.mask[0].numpy() == 0)
        np.testing.assert_allclose(np.sqrt(d2.numpy()), edt, atol=1e-12)


def test_rasterize_hand_computed():
    # Two probes in pixel (0, 0) (values 1 and 3) and one in (2, 3) (value 5) on a 3x4 grid.
    vals = torch.tensor([[1.0, 3.0, 5.0]], dtype=torch.float64)
    pos = torch.tensor([[[0.2, 0.7], [0.9, 0.1], [2.5, 3.5]]], dtype=torch.float64)
    r = scan_rasterize(vals, pos, (3, 4))
    assert r.image[0].tolist() == [[2, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 5]]
    assert r.counts[0].tolist() == [[2, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
    # Distances^2 to (0,0) and (2,3); the tie at (1,1) / (1,2)? (1,1): 2 vs 5; (0,2): 4 vs 5;
    # (1,2): 5 vs 2; (0,3): 9 vs 4; (2,1): 5 vs 4; (2,0): 4 vs 9; (1,0) 1 vs 10.
    assert r.infilled[0].tolist() == [[2, 2, 2, 5], [2, 2, 5, 5], [2, 5, 5, 5]]
    # A tie: 1x3 with probes at both ends -> the middle takes the smaller column.
    r = scan_rasterize(torch.tensor([[7.0, 9.0]]), torch.tensor([[[0.5, 0.5], [0.5, 2.5]]]), (1, 3))
    assert r.infilled[0].tolist() == [[7.0, 7.0, 9.0]]
    # Vertical tie: the smaller row.
    r = scan_rasterize(torch.tensor([[7.0, 9.0]]), torch.tensor([[[0.5, 0.5], [2.5, 0.5]]]), (3, 1))
    assert r.infilled[0, :, 0].tolist() == [7.0, 7.0, 9.0]
    # No probes: zeros and source -1.
    r = scan_rasterize(torch.zeros(1, 0), torch.zeros(1, 0, 2), (2, 2))
    assert r.infilled.abs().sum() == 0 and bool((r.source == -1).all())


def test_rasterize_gradcheck(device):
    vals, pos, H, W = raster_inputs(device, torch.float64, requires_grad=True, batch=2,
                                    shape=(5, 6), probes=7, seed=2)
    assert torch.autograd.gradcheck(lambda v: scan_rasterize_op(v, pos, H, W)[0], (vals,))
    assert torch.autograd.gradcheck(lambda v: scan_rasterize_op(v, pos, H, W)[2], (vals,))


@pytest.mark.parametrize("requires_grad", [False, True])
def test_rasterize_opcheck(device, requires_grad):
    args = raster_inputs(device, torch.float32, requires_grad=requires_grad)
    torch.library.opcheck(torch.ops.em_accel.scan_rasterize.default, args)


# ---------------------------------------------------------------------------------------------
# Bad input.

def test_bad_input_raises_named_errors():
    img = torch.rand(2, 4, 4)
    pos = torch.rand(2, 3, 2)
    with pytest.raises(TypeError, match="images"):
        scan_sample(img.int(), pos)
    with pytest.raises(ValueError, match="images"):
        scan_sample(img[0], pos)
    with pytest.raises(ValueError, match="positions"):
        scan_sample(img, pos[:1])
    with pytest.raises(ValueError, match="positions"):
        scan_sample(img, torch.rand(2, 3, 3))
    with pytest.raises(TypeError, match="positions"):
        scan_sample(img, pos.long())
    with pytest.raises(ValueError, match="mode"):
        scan_sample(img, pos, "bicubic")
    with pytest.raises(ValueError, match="counts_per_intensity"):
        scan_sample(img, pos, counts_per_intensity=-1.0)
    with pytest.raises(ValueError, match="read_noise"):
        scan_sample(img, pos, read_noise=float("nan"))
    with pytest.raises(ValueError, match="seed"):
        scan_sample(img, pos, seed=-1)
    with pytest.raises(ValueError, match="H, W > 0"):
        scan_sample(torch.rand(2, 0, 4), pos)
    with pytest.raises(TypeError, match="values"):
        scan_rasterize(torch.rand(2, 3).half(), pos, (4, 4))
    with pytest.raises(ValueError, match="positions"):
        scan_rasterize(torch.rand(2, 3), torch.rand(2, 4, 2), (4, 4))
    with pytest.raises(ValueError, match="shape"):
        scan_rasterize(torch.rand(2, 3), pos, (0, 4))
    if torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="device"):
            scan_sample(img, pos.cuda())


def test_noncontiguous_inputs_are_accepted_by_the_public_functions():
    img = torch.rand(4, 6, 3).permute(2, 0, 1)
    pos = torch.rand(2, 3, 5).permute(1, 2, 0) * 4
    torch.testing.assert_close(scan_sample(img, pos, "bilinear"),
                               scan_sample(img.contiguous(), pos.contiguous(), "bilinear"))
