"""Native multislice kernels against their pure-torch references, opcheck and input checks."""
from __future__ import annotations

import pytest
import torch

from em_accel.ops import multislice as M

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 2e-5, torch.float64: 1e-12}


def _close(a, b, dtype, scale=1.0):
    err = (a.to(torch.complex128) - b.to(torch.complex128)).abs().max().item()
    assert err <= TOL[dtype] * max(scale, 1.0), err


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("grid", [(12, 10), (9, 7), (16, 16)])
def test_structure_factor_matches_reference(device, dtype, grid):
    args = M.sample_structure_factor(device, dtype, nx=grid[0], ny=grid[1])
    out = M.ms_structure_factor(*args)
    ref = M.structure_factor_reference(*args)
    assert out.shape == (3, grid[0], grid[1] // 2 + 1) and out.dtype == ref.dtype
    _close(out, ref, dtype, scale=ref.abs().max().item())


def test_structure_factor_single_atom_analytic():
    # One atom at (x, y) with unit form factor: exp(-2 pi i (kx x + ky y)) exactly.
    lx, ly, nx, ny, x, y = 4.0, 3.0, 8, 6, 1.3, 0.7
    pos = torch.tensor([[x, y]], dtype=torch.float64)
    out = M.ms_structure_factor(pos, torch.zeros(1, dtype=torch.int32), torch.tensor([0, 1]),
                                torch.ones((1, nx, ny // 2 + 1), dtype=torch.float64), nx, ny, lx, ly)
    kx = torch.fft.fftfreq(nx, lx / nx, dtype=torch.float64)[:, None]
    ky = torch.fft.rfftfreq(ny, ly / ny, dtype=torch.float64)[None]
    expect = torch.exp(-2j * torch.pi * (kx * x + ky * y))
    assert torch.allclose(out[0], expect, atol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
def test_deposit_matches_reference_and_conserves_weight(device, dtype):
    args = M.sample_deposit(device, dtype)
    out = M.ms_deposit(*args)
    ref = M.deposit_reference(*args)
    _close(out, ref, dtype)
    # every atom deposits total weight 1
    counts = torch.tensor([5.0, 5.0, 5.0], dtype=torch.float64)
    assert torch.allclose(out.sum((1, 2, 3)).cpu().double(), counts, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_transmission_and_transmit(device, dtype):
    v, sigma = M.sample_transmission(device, dtype)
    _close(M.ms_transmission(v, sigma), M.transmission_reference(v, sigma), dtype)
    wave, pot, sigma = M.sample_transmit(device, dtype)
    ref = M.transmit_reference(wave, pot, sigma)
    _close(M.ms_transmit(wave, pot, sigma), ref, dtype, scale=ref.abs().max().item())
    M.transmit_(wave, pot, sigma)  # the in-place form runs the same kernel
    _close(wave, ref, dtype, scale=ref.abs().max().item())
    # a potential shared by all waves broadcasts
    wave2, pot2, _ = M.sample_transmit(device, dtype)
    ref2 = M.transmit_reference(wave2, pot2[0], sigma)
    _close(M.ms_transmit(wave2, pot2[0].contiguous(), sigma), ref2, dtype, scale=ref2.abs().max().item())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("per_wave_tilt", [True, False])
@pytest.mark.parametrize("dz", [2.0, 0.0, -3.5])
def test_propagate_matches_reference(device, dtype, per_wave_tilt, dz):
    spec, tilt, dx, dy, lam, _, kc, taper = M.sample_propagate(device, dtype, nx=15, ny=12)
    if not per_wave_tilt:
        tilt = tilt[1].contiguous()
    ref = M.propagate_reference(spec, tilt, dx, dy, lam, dz, kc, taper)
    _close(M.ms_propagate(spec, tilt, dx, dy, lam, dz, kc, taper), ref, dtype,
           scale=ref.abs().max().item())
    M.propagate_(spec, dx, dy, lam, dz, kc, taper, tilt)
    _close(spec, ref, dtype, scale=ref.abs().max().item())


def test_cpu_and_cuda_agree():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    for sample, op in ((M.sample_structure_factor, M.ms_structure_factor),
                       (M.sample_deposit, M.ms_deposit),
                       (M.sample_transmission, M.ms_transmission)):
        a = sample("cpu", torch.float64)
        b = sample("cuda", torch.float64)
        assert torch.allclose(op(*a), op(*b).cpu(), atol=1e-9)
    a = M.ms_propagate(*M.sample_propagate("cpu", torch.float64))
    b = M.ms_propagate(*M.sample_propagate("cuda", torch.float64))
    assert torch.allclose(a, b.cpu(), atol=1e-9)
    w1, v1, s1 = M.sample_transmit("cpu", torch.float64)
    w2, v2, s2 = M.sample_transmit("cuda", torch.float64)
    assert torch.allclose(M.ms_transmit(w1, v1, s1), M.ms_transmit(w2, v2, s2).cpu(), atol=1e-9)


test_cpu_and_cuda_agree = pytest.mark.cuda(test_cpu_and_cuda_agree)


@pytest.mark.parametrize("spec", M.OP_SPECS, ids=lambda s: s.name)
def test_opcheck_and_reference(spec, device):
    op = getattr(torch.ops.em_accel, spec.name).default
    args = spec.sample_inputs(device, torch.float32)
    torch.library.opcheck(op, args)
    got, want = op(*args), spec.reference(*args)
    torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-4, atol=1e-5)


def test_bad_inputs_raise_named_errors():
    pos, sp, off, ff, nx, ny, lx, ly = M.sample_structure_factor()
    with pytest.raises(TypeError, match="positions"):
        M.ms_structure_factor(pos.float(), sp, off, ff, nx, ny, lx, ly)
    with pytest.raises(ValueError, match="form_factors"):
        M.ms_structure_factor(pos, sp, off, ff[:, :, :-1].contiguous(), nx, ny, lx, ly)
    with pytest.raises(ValueError, match="lx"):
        M.ms_structure_factor(pos, sp, off, ff, nx, ny, -1.0, ly)
    spec, tilt, dx, dy, lam, dz, kc, taper = M.sample_propagate()
    with pytest.raises(TypeError, match="spectrum"):
        M.ms_propagate(spec.real.contiguous(), tilt, dx, dy, lam, dz, kc, taper)
    with pytest.raises(ValueError, match="tilt"):
        M.ms_propagate(spec, torch.zeros(3, 2, dtype=torch.float64), dx, dy, lam, dz, kc, taper)
    with pytest.raises(ValueError, match="dx"):
        M.ms_propagate(spec, tilt, 0.0, dy, lam, dz, kc, taper)
    with pytest.raises(ValueError, match="contiguous"):
        M.propagate_(spec.transpose(-1, -2), dx, dy, lam, dz, kc, taper, tilt)
    wave, pot, sigma = M.sample_transmit()
    with pytest.raises(ValueError, match="potential"):
        M.ms_transmit(wave, pot[:, :4].contiguous(), sigma)
    with pytest.raises(TypeError, match="potential"):
        M.transmit_(wave, pot.double(), sigma)


def test_transmission_accurate_for_large_phases(device):
    # sigma * V spans +-40 rad (heavy-atom cores): the float32 kernel stays within float32 rounding
    v = torch.linspace(-4e4, 4e4, 100003, dtype=torch.float32, device=device).reshape(1, 100003, 1)
    sigma = 1e-3
    got = M.ms_transmission(v.contiguous(), sigma).cpu().to(torch.complex128)
    phase = v.cpu().to(torch.float64) * torch.tensor(sigma, dtype=torch.float32).to(torch.float64)
    want = torch.polar(torch.ones_like(phase), phase)
    assert (got - want).abs().max().item() < 6e-6


def test_cpu_fft_backend_accepts_any_strides_of_size_one_axes():
    # torch calls these tensors contiguous; FFTW plans compare NumPy strides (a sliced [1, ...]
    # spectrum once made em_accel.data.simulated fail on a cached plan)
    from em_accel.sim import fft

    x = torch.randn(1, 64, 33, dtype=torch.complex64)
    odd = x.clone().as_strided((1, 64, 33), (7, 33, 1))
    assert odd.is_contiguous()
    for _ in range(2):  # the second call runs on the cached plan
        torch.testing.assert_close(fft.irfft2(odd.clone().as_strided((1, 64, 33), (7, 33, 1)),
                                              s=(64, 64)), torch.fft.irfft2(x, s=(64, 64)),
                                   rtol=1e-5, atol=1e-5)
    w = torch.randn(1, 64, 64, dtype=torch.complex64).as_strided((1, 64, 64), (5, 64, 1))
    torch.testing.assert_close(fft.fft2(w), torch.fft.fft2(w), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fft.ifft2(w), torch.fft.ifft2(w), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dz, aperture", [(2.0, True), (0.0, True), (0.0, False), (2.0, False)])
def test_propagate_scale_multiplies_the_result(device, dtype, dz, aperture):
    # the simulator folds the inverse FFT's 1/N into this pass; the flat, taper and
    # phase-free (dz = 0) branches must all carry it
    spec, tilt, dx, dy, lam, _, kc, taper = M.sample_propagate(device, dtype)
    if not aperture:
        kc = taper = 0.0
    ref = M.propagate_reference(spec, tilt, dx, dy, lam, dz, kc, taper)
    out = M.propagate_(spec.clone(), dx, dy, lam, dz, kc, taper, tilt, scale=0.125)
    _close(out, ref * 0.125, dtype, scale=ref.abs().max().item())
    with pytest.raises(ValueError, match="scale"):
        M.propagate_(spec.clone(), dx, dy, lam, dz, kc, taper, tilt, scale=float("nan"))
