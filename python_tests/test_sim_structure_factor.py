"""The CPU speed paths of the multislice simulator compute the same physics.

- the exact structure factor by GEMM and by NUFFT equals the direct sum (the native op and the
  float64 pure-torch reference) to float32 rounding; GEMM to float64 rounding in float64;
- a Potential built by each method gives the same slices and exit wave, and the NUFFT one
  agrees with abTEM like the default;
- slices with equal content share one band-limited transmission function, with the same exit
  wave as building every slice;
- the buffer-reusing forms (rfft2/irfft2/transmission/deposit with ``out``) equal the
  allocating ones.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from em_accel.ops import multislice as M
from em_accel.sim import Potential, Structure, from_ase, multislice, plane_wave
from em_accel.sim import fft
from em_accel.sim import structure_factor as SF

# max |error| / max |S| against the float64 direct sum (measured <= 5.2e-7 in float32)
TOL = {torch.float32: 2e-6, torch.float64: 1e-12}


def _rel(a, b) -> float:
    a, b = a.to(torch.complex128), b.to(torch.complex128)
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("grid", [(12, 10), (9, 7), (33, 20)])
@pytest.mark.parametrize("method", ["gemm", "nufft", "auto"])
def test_methods_equal_direct_sum(dtype, grid, method):
    args = M.sample_structure_factor("cpu", dtype, nx=grid[0], ny=grid[1])
    ref = M.structure_factor_reference(*args)
    out = SF.spectrum(*args, method=method)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    tol = 2e-6 if method == "nufft" else TOL[dtype]  # the NUFFT is float32-accurate by design
    assert _rel(out, ref) <= tol


def test_nufft_many_atoms_three_species_outside_cell_and_empty_slice():
    g = torch.Generator().manual_seed(5)
    nx, ny, lx, ly = 40, 36, 11.0, 9.5
    n = 120
    pos = (torch.rand((n, 2), generator=g, dtype=torch.float64) * 1.6 - 0.3) * torch.tensor([lx, ly],
                                                                                           dtype=torch.float64)
    sp = torch.sort(torch.randint(0, 3, (n,), generator=g, dtype=torch.int32)).values
    offsets = torch.tensor([0, 0, n], dtype=torch.int64)  # slice 0 empty
    ff = torch.rand((3, nx, ny // 2 + 1), generator=g, dtype=torch.float64).float()
    args = (pos, sp, offsets, ff, nx, ny, lx, ly)
    ref = M.structure_factor_reference(*args)
    for method in ("nufft", "gemm", "direct"):
        out = SF.spectrum(*args, method=method)
        assert out[0].abs().max().item() == 0.0
        assert _rel(out[1], ref[1]) <= 2e-6, method


def test_auto_picks_by_cost_and_bad_method_raises():
    assert SF.cost("gemm", 1200, 1, 2048, 2048) > SF.cost("nufft", 1200, 1, 2048, 2048)
    assert SF.cost("gemm", 20, 1, 256, 256) < SF.cost("nufft", 20, 1, 256, 256)
    args = M.sample_structure_factor("cpu", torch.float32)
    with pytest.raises(ValueError, match="structure-factor method"):
        SF.spectrum(*args, method="fast")
    with pytest.raises(ValueError, match="structure_factor"):
        Potential(Structure([[1.0, 1.0, 0.5]], [6], (4.0, 4.0, 1.0)), structure_factor="x")


def _random_structure(seed=0, n=60, cell=(13.7, 11.3, 6.0)):
    rng = np.random.default_rng(seed)
    pos = rng.random((n, 3)) * np.array(cell)
    return Structure(pos, rng.choice([8, 38, 82], size=n), cell)


def test_potential_and_exit_wave_same_for_every_method():
    s = _random_structure()
    waves, pots = {}, {}
    for m in ("direct", "gemm", "nufft"):
        p = Potential(s, gpts=(144, 120), slice_thickness=2.0, structure_factor=m)
        pots[m] = p.build()
        waves[m] = multislice(plane_wave(p.grid), p, 200.0)
    scale = pots["direct"].abs().max()
    for m in ("gemm", "nufft"):
        assert ((pots[m] - pots["direct"]).abs().max() / scale).item() <= 2e-5, m
        assert _rel(waves[m], waves["direct"]) <= 2e-5, m


def test_nufft_exact_potential_agrees_with_abtem():
    abtem = pytest.importorskip("abtem")
    from em_accel.sim import zone_axis

    abtem.config.set({"device": "cpu", "precision": "float32"})
    s = zone_axis("SrTiO3", (0, 0, 1), extent=11.7, thickness=15.62)
    pot = abtem.Potential(s.to_ase(), gpts=240, slice_thickness=1.9525, parametrization="kirkland",
                          projection="infinite")
    ref = abtem.PlaneWave(energy=300e3).multislice(pot).compute(progress_bar=False).array
    p = Potential(s, gpts=240, slice_thickness=1.9525, structure_factor="nufft")
    ours = multislice(plane_wave(p.grid), p, 300.0).to(torch.complex128)
    b = torch.from_numpy(ref).to(torch.complex128)
    c = torch.vdot(b.flatten(), ours.flatten())
    err = ((ours * c.conj() / c.abs() - b).norm() / b.norm()).item()
    assert err <= 1e-2  # same bound and cause as the default exact mode (node-aligned grid)


def test_repeated_slices_share_transmission_functions():
    from ase.build import bulk

    # Si [001], 4 slices per cell: the slices repeat every cell
    s = from_ase(bulk("Si", cubic=True)).repeat(2, 2, 1).with_thickness(6 * 5.431)
    p = Potential(s, gpts=96, slice_thickness=5.431 / 4 + 1e-3)
    ids = p.slice_ids
    assert len(set(ids.tolist())) < p.num_slices // 2
    cached = multislice(plane_wave(p.grid), p, 200.0, exit_planes=[3, p.num_slices])
    p.slice_ids = np.arange(p.num_slices)  # every slice distinct: no sharing
    fresh = multislice(plane_wave(p.grid), p, 200.0, exit_planes=[3, p.num_slices])
    assert _rel(cached, fresh) <= 1e-5
    # a displaced atom makes its (repeated) slice distinct
    from em_accel.sim.potential import slice_index

    pos = s.positions.copy()
    k = np.flatnonzero(slice_index(pos[:, 2], p.thicknesses) == 5)[0]
    assert (ids == ids[5]).sum() > 1
    pos[k, 0] += 0.1
    q = Potential(Structure(pos, s.numbers, s.cell), gpts=96, slice_thickness=5.431 / 4 + 1e-3)
    assert len(set(q.slice_ids.tolist())) == len(set(ids.tolist())) + 1


def test_buffer_reusing_forms_equal_allocating_ones():
    g = torch.Generator().manual_seed(7)
    x = torch.randn((2, 30, 22), generator=g)
    spec = torch.empty((2, 30, 12), dtype=torch.complex64)
    assert torch.allclose(fft.rfft2(x, out=spec), torch.fft.rfft2(x), atol=1e-4)
    back = torch.empty_like(x)
    assert torch.allclose(fft.irfft2(spec.clone(), s=(30, 22), out=back), x, atol=1e-5)
    v = torch.randn((3, 8, 6), generator=g) * 50
    t = torch.empty((3, 8, 6), dtype=torch.complex64)
    assert torch.allclose(M.transmission(v, 7e-4, out=t), M.ms_transmission(v, 7e-4))
    args = M.sample_deposit()
    dep = torch.full((3, 2, 12, 10), 9.0)
    assert torch.equal(M.deposit_into(args[0], args[1], args[2], dep, 7.0, 5.0), M.ms_deposit(*args))
    with pytest.raises(ValueError, match="out must have shape"):
        M.deposit_into(args[0], args[1], args[2], torch.zeros((2, 2, 12, 10)), 7.0, 5.0)
    ws = fft.Workspace()
    a = ws.get("a", (4, 4), torch.float32, "cpu")
    b = ws.get("a", (2, 3), torch.float32, "cpu")
    assert b.data_ptr() == a.data_ptr() and b.is_contiguous()
    # another thread gets its own buffer (a Potential may be shared across threads)
    import threading

    other = []
    th = threading.Thread(target=lambda: other.append(ws.get("a", (4, 4), torch.float32, "cpu")))
    th.start()
    th.join()
    assert other[0].data_ptr() != a.data_ptr()


def test_potential_shared_by_threads_gives_the_same_slices():
    from concurrent.futures import ThreadPoolExecutor

    p = Potential(_random_structure(seed=3), gpts=(96, 80), slice_thickness=1.0)
    ref = p.build()
    with ThreadPoolExecutor(4) as ex:
        outs = list(ex.map(lambda _: p.slices(tiled=False, out=torch.empty_like(ref)), range(8)))
    for o in outs:
        assert torch.equal(o, ref)
