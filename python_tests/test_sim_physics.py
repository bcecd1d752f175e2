"""Physics of em_accel.sim checked against analytic results and tabulated values."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from em_accel.ops import multislice as M
from em_accel.sim import (Grid, Potential, Structure, exit_wave, interaction_parameter, kirkland,
                          multislice, projected_potential, scattering_factor, slice_thicknesses,
                          wavelength)
from em_accel.sim.potential import slice_index


@pytest.mark.parametrize("energy,lam,sigma", [(80, 0.04175716, 1.008707e-3),
                                              (200, 0.02507934, 7.288401e-4),
                                              (300, 0.01968749, 6.526161e-4)])
def test_wavelength_and_interaction_parameter(energy, lam, sigma):
    assert wavelength(energy) == pytest.approx(lam, rel=2e-7)
    assert interaction_parameter(energy) == pytest.approx(sigma, rel=2e-6)


def test_energy_must_be_positive():
    with pytest.raises(ValueError, match="energy"):
        wavelength(0.0)


def test_kirkland_table_values():
    # f_e(0) = sum a_i/b_i + sum c_i (Kirkland 2010, Appendix C): Si 5.814 Å, Au 10.553 Å.
    k0 = torch.zeros(1, dtype=torch.float64)
    assert scattering_factor("Si", k0).item() == pytest.approx(5.814, abs=2e-3)
    assert scattering_factor(79, k0).item() == pytest.approx(10.553, abs=2e-3)
    p = kirkland.parameters()
    assert p.shape == (104, 4, 3) and (p[1:, 1] > 0).all() and (p[1:, 3] > 0).all()
    # terms=1 keeps a1/(k^2+b1) + c1 exp(-d1 k^2)
    k = torch.linspace(0, 4, 9, dtype=torch.float64)
    a, b, c, d = p[14, :, 0]
    assert torch.allclose(scattering_factor("Si", k, terms=1), a / (k ** 2 + b) + c * torch.exp(-d * k ** 2))
    with pytest.raises(ValueError, match="element"):
        scattering_factor("Xx", k)
    with pytest.raises(ValueError, match="terms"):
        scattering_factor("Si", k, terms=2)


def test_kirkland_table_matches_abtem_copy():
    abtem = pytest.importorskip("abtem")
    import json
    import os

    from ase.data import chemical_symbols

    path = os.path.join(os.path.dirname(abtem.__file__), "parametrizations/data/kirkland.json")
    with open(path) as fh:
        table = json.load(fh)
    ours = kirkland.parameters()
    for sym, arr in table.items():
        z = chemical_symbols.index(sym)
        assert torch.allclose(ours[z], torch.tensor(arr, dtype=torch.float64), rtol=1e-6, atol=0)


@pytest.mark.parametrize("element", ["Si", "Au"])
def test_projected_potential_integrates_to_form_factor(element):
    # The 2-D integral of v_z equals its Fourier transform at k = 0: 2 pi a0 e f_e(0).
    from scipy.integrate import quad

    def integrand(r):
        return 2 * math.pi * r * projected_potential(element, torch.tensor([r], dtype=torch.float64)).item()

    total = quad(integrand, 0, 1, limit=200)[0] + quad(integrand, 1, 40, limit=200)[0]
    expect = kirkland.projected_potential_fourier(element, torch.zeros(1, dtype=torch.float64)).item()
    assert total == pytest.approx(expect, rel=1e-6)


def test_projected_potential_is_projection_of_3d_potential():
    from scipy.integrate import quad

    for r in (0.3, 0.8, 1.5):
        num = 2 * quad(lambda z: kirkland.potential("Si", torch.tensor([math.hypot(r, z)],
                                                                        dtype=torch.float64)).item(),
                       0, 30, limit=200)[0]
        closed = projected_potential("Si", torch.tensor([r], dtype=torch.float64)).item()
        assert num == pytest.approx(closed, rel=1e-6)


def test_single_atom_potential_on_grid_matches_closed_form():
    # Exact structure factor on a fine grid: samples away from the core equal v_z(r).
    s = Structure([[6.0, 6.0, 0.5]], [14], (12.0, 12.0, 1.0))
    pot = Potential(s, gpts=400, slice_thickness=1.0, dtype=torch.float64)
    v = pot.build()[0]
    dx = pot.grid.sampling[0]
    assert v.sum().item() * dx * dx == pytest.approx(
        kirkland.projected_potential_fourier("Si", torch.zeros(1, dtype=torch.float64)).item(), rel=1e-9)
    ix = torch.arange(220, 300)  # r = 0.6 .. 3.6 Å along x
    r = (ix * dx - 6.0).to(torch.float64)
    closed = projected_potential("Si", r)
    sampled = v[ix, 200]
    # The sharp Nyquist cut of a 1/k^2 spectrum rings with a 2-pixel period (Gibbs); the
    # [1, 2, 1]/4 filter removes it from both before comparing.
    smooth = lambda x: (x[:-2] + 2 * x[1:-1] + x[2:]) / 4  # noqa: E731
    assert torch.allclose(smooth(sampled), smooth(closed), rtol=3e-3, atol=1e-3)
    assert (sampled - closed).abs().max() < 0.01 * closed.max()


def test_slicing_rules():
    dz = slice_thicknesses(27.155, 2.0)
    assert len(dz) == 14 and dz.sum() == pytest.approx(27.155)
    # lower face belongs to the slice; exactly on the face -> upper slice
    idx = slice_index(np.array([0.0, dz[0] - 1e-6, dz[0], 27.1]), dz)
    assert idx.tolist() == [0, 0, 1, 13]
    with pytest.raises(ValueError, match="slice"):
        slice_thicknesses(10.0, [3.0, 3.0])


def _band_limited_wave(grid, seed=0):
    g = torch.Generator().manual_seed(seed)
    spec = torch.randn(grid.gpts, generator=g, dtype=torch.complex128)
    kc, taper = grid.antialias()
    a = M.antialias_reference(*grid.gpts, *grid.sampling, kc - taper - 1e-9, 0.0)
    return torch.fft.ifft2(spec * a)


def test_free_propagation_conserves_norm_and_composes():
    grid = Grid((10.0, 8.0), (64, 50))
    psi = _band_limited_wave(grid)
    kc, taper = grid.antialias()
    lam = wavelength(200)

    def prop(w, dz, tilt=None):
        spec = torch.fft.fft2(w)
        M.propagate_(spec, *grid.sampling, lam, dz, kc, taper, tilt)
        return torch.fft.ifft2(spec)

    a = prop(psi, 7.0)
    assert a.norm().item() == pytest.approx(psi.norm().item(), rel=1e-12)
    assert torch.allclose(prop(prop(psi, 3.0), 4.0), a, atol=1e-12)
    assert torch.allclose(prop(a, -7.0), psi, atol=1e-12)  # -dz undoes +dz
    assert torch.allclose(prop(psi, 0.0), psi, atol=1e-12)  # zero thickness is the identity


def test_tilt_shifts_the_wave_by_dz_tan_theta():
    grid = Grid((10.0, 10.0), (64, 64))
    psi = _band_limited_wave(grid, 1)
    kc, taper = grid.antialias()
    dz, tilt_mrad = 50.0, (20.0, -10.0)
    tan = torch.tan(torch.tensor(tilt_mrad, dtype=torch.float64) * 1e-3)
    spec = torch.fft.fft2(psi)
    M.propagate_(spec, *grid.sampling, wavelength(200), dz, kc, taper, tan)
    untilted = torch.fft.fft2(psi)
    M.propagate_(untilted, *grid.sampling, wavelength(200), dz, kc, taper)
    kx, ky = grid.frequencies()
    shift = dz * tan
    expect = untilted * torch.exp(-2j * math.pi * (kx * shift[0] + ky * shift[1]))
    assert torch.allclose(spec, expect, atol=1e-10)


class _Scaled(Potential):
    """A potential scaled by eps (a weak phase object)."""

    eps = 1.0

    def slices(self, start=0, stop=None, tiled=True, out=None):
        v = super().slices(start, stop, tiled, out)
        return v.mul_(self.eps) if out is not None else v * self.eps


def test_weak_phase_object_matches_first_order():
    s = Structure([[2.0, 3.0, 0.5], [5.0, 1.0, 1.7], [3.3, 4.4, 2.9]], [6, 8, 6], (8.0, 6.0, 3.6))
    pot = _Scaled(s, gpts=(64, 48), slice_thickness=1.2, dtype=torch.float64)
    pot.eps = 1e-3
    energy = 200.0
    psi = multislice(torch.ones(pot.grid.gpts, dtype=torch.complex128), pot, energy)
    # First order: psi(k) = delta(k) + i sigma sum_j A V_j(k) prod_{l >= j} P_l(k)
    sigma, lam = interaction_parameter(energy), wavelength(energy)
    kc, taper = pot.grid.antialias()
    a = M.antialias_reference(*pot.grid.gpts, *pot.grid.sampling, kc, taper)
    v = pot.slices()
    first = torch.zeros(pot.grid.gpts, dtype=torch.complex128)
    for j in range(pot.num_slices):
        term = 1j * sigma * torch.fft.fft2(v[j].to(torch.complex128)) * a
        for l in range(j, pot.num_slices):
            term = M.propagate_reference(term, torch.zeros(2, dtype=torch.float64), *pot.grid.sampling,
                                         lam, float(pot.thicknesses[l]), kc, taper)
        first += term
    scattered = torch.fft.fft2(psi)
    scattered[0, 0] -= psi.numel()
    rel = ((scattered - first).norm() / first.norm()).item()
    assert rel < 5e-3, rel
    assert first.norm().item() > 0


def test_exact_and_deposit_agree_on_node_aligned_grid():
    from ase.build import bulk

    from em_accel.sim import from_ase

    s = from_ase(bulk("Si", cubic=True)).repeat(2, 2, 2)
    a = exit_wave(s, energy=200, gpts=216, slice_thickness=2.0, method="exact")
    b = exit_wave(s, energy=200, gpts=216, slice_thickness=2.0, method="deposit")
    assert ((a - b).norm() / b.norm()).item() < 2e-3


def test_debye_waller_damps_the_spectrum():
    s = Structure([[2.0, 3.0, 0.5]], [14], (6.0, 6.0, 1.0))
    p0 = Potential(s, gpts=48, slice_thickness=1.0, dtype=torch.float64)
    p1 = Potential(s, gpts=48, slice_thickness=1.0, dtype=torch.float64, debye_waller={"Si": 0.1})
    kx, ky = p0.grid.frequencies(half=True)
    ratio = torch.fft.rfft2(p1.build()[0]) / torch.fft.rfft2(p0.build()[0])
    expect = torch.exp(-2 * math.pi ** 2 * 0.01 * (kx ** 2 + ky ** 2))
    assert torch.allclose(ratio.real, expect, atol=1e-9) and ratio.imag.abs().max() < 1e-9


def test_terms_one_is_weaker_and_frozen_phonons_batch():
    s = Structure([[2.0, 3.0, 0.5], [4.0, 1.0, 1.5]], [79, 8], (6.0, 5.0, 2.0))
    full = exit_wave(s, energy=300, gpts=48, slice_thickness=1.0, terms=3)
    one = exit_wave(s, energy=300, gpts=48, slice_thickness=1.0, terms=1)
    assert ((full - one).norm() / full.norm()).item() > 1e-3
    fp = exit_wave(s, energy=300, gpts=48, slice_thickness=1.0, frozen_phonons=2,
                   debye_waller={"Au": 0.08, "O": 0.1}, seed=0)
    assert fp.shape == (2, 48, 48) and (fp[0] - fp[1]).abs().max() > 1e-3
    fp0 = exit_wave(s, energy=300, gpts=48, slice_thickness=1.0, frozen_phonons=2,
                    debye_waller={"Au": 0.0}, seed=0)
    assert torch.allclose(fp0[0], full, atol=1e-6) and torch.allclose(fp0[1], full, atol=1e-6)


def test_exit_planes_and_vacuum():
    s = Structure([[2.0, 3.0, 0.5]], [14], (6.0, 6.0, 6.0))
    planes = exit_wave(s, energy=200, gpts=32, slice_thickness=1.0, exit_planes=2)
    assert planes.shape == (3, 32, 32)
    assert torch.allclose(planes[-1], exit_wave(s, energy=200, gpts=32, slice_thickness=1.0))
    empty = Structure(np.zeros((0, 3)), np.zeros(0), (6.0, 6.0, 6.0))
    vac = exit_wave(empty, energy=200, gpts=32, slice_thickness=1.0)
    assert torch.allclose(vac, torch.ones_like(vac), atol=1e-6)


def test_bad_inputs():
    s = Structure([[2.0, 3.0, 0.5]], [14], (6.0, 6.0, 6.0))
    with pytest.raises(ValueError, match="coarse"):
        Potential(s, sampling=0.5)
    with pytest.raises(ValueError, match="sampling"):
        Potential(s, sampling=-0.1)
    with pytest.raises(ValueError, match="cell"):
        Structure([[0, 0, 0]], [14], (0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="atomic number"):
        Structure([[0, 0, 0]], [150], (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="thickness"):
        s.with_thickness(-5)
    with pytest.raises(ValueError, match="method"):
        Potential(s, method="fast")


@pytest.mark.parametrize("method", ["exact", "deposit"])
def test_periodic_path_equals_general_path(method):
    from ase.build import bulk

    from em_accel.sim import from_ase

    s = from_ase(bulk("GaAs", "zincblende", a=5.653, cubic=True)).repeat(3, 2, 2)
    s.positions[0] += 0.0  # the tiling is verified from positions, not trusted from info
    general = Structure(s.positions, s.numbers, s.cell)  # no tiling info
    p = Potential(s, gpts=(180, 120), slice_thickness=1.9, method=method)
    q = Potential(general, gpts=(180, 120), slice_thickness=1.9, method=method)
    assert p.tile == (3, 2) and q.tile == (1, 1)
    assert torch.allclose(p.build(), q.build(), atol=2e-3 * q.build().abs().max().item())
    a = exit_wave(s, energy=300, gpts=(180, 120), slice_thickness=1.9, method=method)
    b = exit_wave(general, energy=300, gpts=(180, 120), slice_thickness=1.9, method=method)
    assert ((a - b).norm() / b.norm()).item() < 1e-5
    # a displaced atom breaks the tiling: the general path is used
    s2 = s.repeat(1, 1, 1)
    s2.positions[3] += (0.1, 0.0, 0.0)
    assert Potential(s2, gpts=(180, 120), slice_thickness=1.9).tile == (1, 1)


@pytest.mark.cuda
@pytest.mark.parametrize("method", ["exact", "deposit"])
def test_exit_wave_and_stem_on_cuda_match_cpu(method):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from ase.build import bulk

    from em_accel.sim import from_ase
    from em_accel.sim.stem import stem

    s = from_ase(bulk("GaAs", "zincblende", a=5.653, cubic=True)).repeat(2, 2, 2)
    s.positions[0] += (0.3, 0.1, 0.0)  # general path
    pc = Potential(s, gpts=(120, 110), slice_thickness=1.9, method=method)
    pg = Potential(s, gpts=(120, 110), slice_thickness=1.9, method=method, device="cuda")
    vc, vg = pc.build(), pg.build().cpu()
    err = ((vg - vc).norm() / vc.norm()).item()
    assert err < 1e-6, f"potential: relative L2 {err:.3g}"
    kw = dict(energy=300, gpts=(120, 110), slice_thickness=1.9, method=method)
    cpu = exit_wave(s, **kw)
    gpu = exit_wave(s, device="cuda", **kw).cpu()
    err = ((gpu - cpu).norm() / cpu.norm()).item()
    assert err < 1e-5, f"exit wave: relative L2 {err:.3g}"
    # 50-90 mrad: inside the 95.8 mrad this sampling simulates at 300 keV
    a = stem(pc, 300, [(1.0, 2.0), (3.0, 3.0)], [(50, 90)], semiangle_cutoff=20)
    b = stem(pg, 300, [(1.0, 2.0), (3.0, 3.0)], [(50, 90)], semiangle_cutoff=20).cpu()
    assert a.min() > 0 and torch.allclose(a, b, rtol=1e-4), (a, b)


@pytest.mark.parametrize("method", ["exact", "deposit"])
def test_torch_fft_path_equals_fftw_path(monkeypatch, method):
    # the GPU runs the torch.fft path (unnormalised inverse, 1/N folded into the band-limit and
    # propagation passes); on CPU it is only taken without pyFFTW, so check it here
    pytest.importorskip("pyfftw")
    from ase.build import bulk

    from em_accel.sim import fft, from_ase

    s = from_ase(bulk("GaAs", "zincblende", a=5.653, cubic=True)).repeat(2, 2, 3)
    s.positions[0] += (0.3, 0.1, 0.0)
    kw = dict(energy=200, gpts=(96, 90), slice_thickness=1.7, method=method)
    monkeypatch.setenv("EM_ACCEL_FFT", "fftw")
    assert fft.backend("cpu") == "fftw"
    a = exit_wave(s, **kw)
    monkeypatch.setenv("EM_ACCEL_FFT", "torch")
    assert fft.backend("cpu") == "torch"
    b = exit_wave(s, **kw)
    assert ((a - b).norm() / a.norm()).item() < 1e-5
