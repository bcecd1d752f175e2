"""em_accel::alrc_fused against its float64 reference, gradients, opcheck and bad input."""
from __future__ import annotations

import math

import pytest
import torch

from em_accel.ops import alrc_mae, alrc_mse, alrc_quartic
from em_accel.ops.alrc import (ErrorKind, alrc_fused, alrc_fused_bwd, alrc_fused_reference,
                               sample_inputs)

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
SHAPES = [(1, (512, 512)), (64, (32, 32)), (7, (3, 5, 11)), (13, ()), (2, (257,))]


def _tol(dtype: torch.dtype, elems: int) -> dict:
    # Losses are float32 sums of up to `elems` terms (float64 for float64 input): allow a few
    # units of N*eps relative error, the bound for a blocked sum.
    eps = 2.0 ** -52 if dtype == torch.float64 else 2.0 ** -23
    return {"rtol": 8 * eps * max(elems, 16) ** 0.5 + 4 * eps, "atol": 1e-30}


# Per-pixel moments need a pixel shape, so scalar examples run per example only.
CASES = [(b, s, pp) for b, s in SHAPES for pp in (False, True) if s or not pp]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,shape,per_pixel", CASES)
@pytest.mark.parametrize("kind", list(ErrorKind))
def test_forward_backward_match_reference(device, dtype, batch, shape, kind, per_pixel):
    args = list(sample_inputs(device, dtype, batch, shape, per_pixel, requires_grad=True,
                              seed=batch + len(shape), kind=kind))
    out = alrc_fused(*args)
    ref_args = [a.detach().to(torch.float64).requires_grad_(True) if i == 0 else
                (a.to(torch.float64) if i == 1 else a) for i, a in enumerate(args)]
    ref = alrc_fused_reference(*ref_args)
    elems = math.prod(shape) if not per_pixel else 1
    tol = _tol(dtype, elems)
    torch.testing.assert_close(out[0].double(), ref[0].detach(), **tol)
    torch.testing.assert_close(out[1].double(), ref[1], **tol)
    # Moments: float32 storage of a float64 update.
    torch.testing.assert_close(out[2].double(), ref[2].double(), rtol=2e-7, atol=0)
    torch.testing.assert_close(out[3].double(), ref[3].double(), rtol=2e-7, atol=0)
    assert bool((out[1] < 1).any()), "sample inputs must include clipped examples"

    weights = torch.rand(out[0].shape, dtype=out[0].dtype, device=device)
    (grad,) = torch.autograd.grad((out[0] * weights).sum(), args[0])
    (grad_ref,) = torch.autograd.grad((ref[0] * weights.double()).sum(), ref_args[0])
    assert grad.dtype == dtype
    if dtype in (torch.float16, torch.bfloat16):
        # Gradients are stored in the input dtype: compare with the float64 gradient rounded to
        # it, allowing one unit in the last place (and float16's smallest subnormal near 0).
        ulp = 2.0 ** -10 if dtype == torch.float16 else 2.0 ** -7
        atol = 2.0 ** -24 if dtype == torch.float16 else 1e-38
        torch.testing.assert_close(grad.double(), grad_ref.to(dtype).double(), rtol=ulp, atol=atol)
    else:
        scale = grad_ref.abs().max().item()
        torch.testing.assert_close(grad.double(), grad_ref, rtol=4 * tol["rtol"],
                                   atol=4 * tol["rtol"] * scale)


@pytest.mark.parametrize("per_pixel", [False, True])
@pytest.mark.parametrize("kind", list(ErrorKind))
def test_gradcheck_float64(device, kind, per_pixel):
    pred, target, mu1, mu2, n_up, n_down, decay, _, pp = sample_inputs(
        device, torch.float64, 3, (4, 5), per_pixel, requires_grad=True, seed=3, kind=kind)
    target = target.clone().requires_grad_(True)
    # A clipped loss's gradient is by design not the derivative of its (constant) value, so
    # finite differences check the unclipped path; clipped gradients are compared with the
    # reference in test_forward_backward_match_reference.
    mu1, mu2 = torch.full_like(mu1, 1e4), torch.full_like(mu2, 1e8 + 1)

    def f(p, t):
        return alrc_fused(p, t, mu1, mu2, n_up, n_down, decay, int(kind), pp)[0]

    assert torch.autograd.gradcheck(f, (pred, target), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("per_pixel", [False, True])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(device, per_pixel, requires_grad):
    args = sample_inputs(device, torch.float32, 5, (6, 7), per_pixel, requires_grad=requires_grad)
    torch.library.opcheck(torch.ops.em_accel.alrc_fused.default, args)


def test_spike_is_clipped_normal_passes(device):
    mu1 = torch.tensor(1.0, device=device)
    mu2 = torch.tensor(2.0, device=device)  # sigma = 1, threshold = 4
    target = torch.zeros(2, 100, device=device)
    pred = torch.ones(2, 100, device=device)
    pred[1] *= 10.0  # MSE 100: a spike
    pred.requires_grad_(True)
    res = alrc_mse(pred, target, mu1, mu2, n_up=3.0, decay=0.9)
    assert res.loss.tolist() == pytest.approx([1.0, 4.0])
    res.loss.sum().backward()
    # Normal example: d(mean d^2)/dpred = 2d/N; spike: the same times 4/100.
    assert pred.grad[0].tolist() == pytest.approx([2.0 / 100] * 100)
    assert pred.grad[1].tolist() == pytest.approx([2.0 * 10 / 100 * 0.04] * 100)
    assert res.mu1.item() == pytest.approx(0.9 * 1.0 + 0.1 * 2.5)
    assert res.mu2.item() == pytest.approx(0.9 * 2.0 + 0.1 * (1.0 + 16.0) / 2)


def test_two_sided_raises_small_losses(device):
    mu1, mu2 = torch.tensor(10.0, device=device), torch.tensor(101.0, device=device)  # sigma 1
    pred = torch.full((1, 4), 1.0, device=device, requires_grad=True)
    res = alrc_mae(pred, torch.zeros_like(pred), mu1, mu2, n_up=3.0, n_down=2.0)
    assert res.loss.item() == pytest.approx(8.0)  # 1 < 10 - 2*1: raised to 8
    res.loss.sum().backward()
    assert pred.grad[0].tolist() == pytest.approx([8.0 / 4] * 4)


def test_moments_follow_float64_loop():
    torch.manual_seed(0)
    mu1, mu2 = torch.tensor(3.0), torch.tensor(12.0)
    m1, m2, decay, n = 3.0, 12.0, 0.99, 3.0
    for step in range(300):
        scale = 20.0 if step % 37 == 5 else 1.0
        pred = torch.randn(8, 64, dtype=torch.float64) * scale
        target = torch.zeros_like(pred)
        res = alrc_quartic(pred.float(), target.float(), mu1, mu2, n_up=n, decay=decay)
        mu1, mu2 = res.mu1, res.mu2
        # Independent scalar loop in float64.
        sigma = math.sqrt(max(m2 - m1 * m1, 0.0) + 1e-8)
        up = m1 + n * sigma
        losses = [min(float((row ** 4).mean()), up) for row in pred]
        m1 = decay * m1 + (1 - decay) * sum(losses) / len(losses)
        m2 = decay * m2 + (1 - decay) * sum(v * v for v in losses) / len(losses)
    assert mu1.item() == pytest.approx(m1, rel=1e-5)
    assert mu2.item() == pytest.approx(m2, rel=1e-5)


def test_nonfinite_losses_pass_through_and_skip_moments(device):
    pred = torch.ones(3, 4, device=device)
    pred[1, 2] = math.nan
    pred[2, 0] = math.inf
    mu1, mu2 = torch.tensor(1.0, device=device), torch.tensor(2.0, device=device)
    res = alrc_mse(pred, torch.zeros_like(pred), mu1, mu2, decay=0.5)
    assert res.loss[0].item() == 1.0
    assert math.isnan(res.loss[1].item()) and math.isinf(res.loss[2].item())
    assert res.mu1.item() == pytest.approx(0.5 * 1.0 + 0.5 * 1.0)
    assert res.mu2.item() == pytest.approx(0.5 * 2.0 + 0.5 * 1.0)
    all_bad = torch.full((2, 3), math.nan, device=device)
    res = alrc_mse(all_bad, torch.zeros_like(all_bad), mu1, mu2)
    assert res.mu1.item() == 1.0 and res.mu2.item() == 2.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_gradient_rounding_matches_torch(device, dtype):
    # per-pixel squared error with upstream gradient 1/2 and no clipping: grad = d exactly in
    # float32, so the stored value must equal torch's own round-to-nearest-even cast.
    g = torch.Generator().manual_seed(1)
    vals = torch.cat([torch.randn(4000, generator=g) * s for s in (1e-7, 1e-5, 1.0, 1e3, 6e4)])
    vals = torch.cat([vals, torch.tensor([0.0, -0.0, 65504.0, -65504.0, 2.0 ** -24, 3e-8])])
    pred = vals.to(dtype).reshape(1, -1)
    target = torch.roll(vals, 1).to(dtype).reshape(1, -1)
    scale = torch.ones(pred.shape)
    got = alrc_fused_bwd(torch.full(pred.shape, 0.5, device=device), pred.to(device),
                         target.to(device), scale.to(device), int(ErrorKind.SQUARED), True)
    want = (pred.float() - target.float()).to(dtype)
    assert torch.equal(got.cpu().float().nan_to_num(), want.float().nan_to_num()), "RNE mismatch"


def test_wrapper_accepts_noncontiguous_raw_op_rejects(device):
    pred = torch.randn(6, 4, device=device).t()  # [4, 6], non-contiguous
    target = torch.randn(4, 6, device=device)
    mu1, mu2 = torch.tensor(1.0, device=device), torch.tensor(2.0, device=device)
    res = alrc_mse(pred, target, mu1, mu2)
    ref = alrc_mse(pred.contiguous(), target, mu1, mu2)
    torch.testing.assert_close(res.loss, ref.loss)
    with pytest.raises(ValueError, match="pred must be contiguous"):
        alrc_fused(pred, target, mu1, mu2, 3.0, math.inf, 0.999, 0, False)


@pytest.mark.parametrize("bad,exc,match", [
    ({"target": torch.zeros(4, 5)}, ValueError, r"target must have shape \[4, 6\]"),
    ({"target": torch.zeros(4, 6, dtype=torch.float64)}, TypeError, "target must have dtype"),
    ({"pred": torch.zeros(4, 6, dtype=torch.int32)}, TypeError, "pred must have dtype"),
    ({"mu1": torch.zeros(2)}, ValueError, "mu1 must hold one value"),
    ({"mu2": torch.zeros((), dtype=torch.float64)}, TypeError, "mu2 must have dtype"),
    ({"decay": 1.0}, ValueError, r"decay must be in \[0, 1\)"),
    ({"n_up": -1.0}, ValueError, "n_up must be finite and > 0"),
    ({"n_down": 0.0}, ValueError, "n_down must be > 0"),
    ({"kind": 7}, ValueError, "kind must be one of"),
    ({"pred": torch.zeros(4, 0), "target": torch.zeros(4, 0)}, ValueError, "empty examples"),
    ({"per_pixel": True}, ValueError, "per-pixel shape"),
])
def test_bad_input_raises_named_errors(bad, exc, match):
    args = {"pred": torch.zeros(4, 6), "target": torch.zeros(4, 6), "mu1": torch.tensor(1.0),
            "mu2": torch.tensor(2.0), "n_up": 3.0, "n_down": math.inf, "decay": 0.9, "kind": 0,
            "per_pixel": False}
    args.update(bad)
    with pytest.raises(exc, match=match):
        alrc_fused(**args)


def test_public_op_names_non_tensor_input():
    with pytest.raises(TypeError, match="pred must be a torch.Tensor, got list"):
        alrc_mse([1.0, 2.0], torch.zeros(2), torch.tensor(1.0), torch.tensor(2.0))


def test_device_mismatch_raises():
    meta = torch.zeros(4, 6, device="meta")
    with pytest.raises(RuntimeError, match="mu1 is on cpu but pred is on meta"):
        alrc_fused(meta, meta, torch.tensor(1.0), torch.tensor(2.0), 3.0, math.inf, 0.9, 0, False)


def test_double_backward_is_rejected():
    pred, target, mu1, mu2, *rest = sample_inputs("cpu", torch.float64, 2, (3,), requires_grad=True)
    loss = alrc_fused(pred, target, mu1, mu2, *rest)[0].sum()
    (g,) = torch.autograd.grad(loss, pred, create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        g.sum().backward()


def test_empty_batch_keeps_moments(device):
    mu1, mu2 = torch.tensor(1.5, device=device), torch.tensor(4.0, device=device)
    res = alrc_mse(torch.zeros(0, 3, device=device), torch.zeros(0, 3, device=device), mu1, mu2)
    assert res.loss.shape == (0,) and res.mu1.item() == 1.5 and res.mu2.item() == 4.0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("per_pixel", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_cpu(dtype, per_pixel):
    args = sample_inputs("cpu", dtype, 9, (33, 65), per_pixel, requires_grad=True)
    cuda_args = [a.detach().cuda().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor)
                 else a for a in args]
    cpu_out, gpu_out = alrc_fused(*args), alrc_fused(*cuda_args)
    for c, g in zip(cpu_out, gpu_out):
        torch.testing.assert_close(g.cpu(), c, rtol=1e-6, atol=0)
    gc = torch.autograd.grad(cpu_out[0].sum(), args[0])[0]
    gg = torch.autograd.grad(gpu_out[0].sum(), cuda_args[0])[0]
    torch.testing.assert_close(gg.cpu(), gc, rtol=1e-6, atol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_side_streams_match_default_stream():
    args = sample_inputs("cuda", torch.float32, 16, (128, 128))
    want = alrc_fused(*args)[0]
    streams = [torch.cuda.Stream() for _ in range(3)]
    outs = []
    for s in streams:
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            outs.append(alrc_fused(*args)[0])
    torch.cuda.synchronize()
    for o in outs:
        torch.testing.assert_close(o, want, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_every_16_bit_pattern_loads_exactly(device, dtype):
    # Per-pixel absolute error against 0 is |x|, exact in float32: all 65536 bit patterns
    # (subnormals, inf, NaN included) must widen exactly as torch's own .float() does.
    bits = torch.arange(0, 65536, dtype=torch.int32).to(torch.int16).view(dtype).reshape(1, -1)
    pred = bits.to(device)
    huge = torch.full(pred.shape[1:], 1e30, device=device)  # threshold far above every value
    out = alrc_fused(pred, torch.zeros_like(pred), huge, huge * 0, 3.0, math.inf, 0.5,
                     int(ErrorKind.ABSOLUTE), True)[0]
    want = bits.float().abs()
    below = ~(want > 1e30) | torch.isinf(want)  # finite bfloat16 values above 1e30 get clipped
    got = out.cpu()[below].nan_to_num(nan=-1.0)
    assert torch.equal(got, want[below].nan_to_num(nan=-1.0))
