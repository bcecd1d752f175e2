"""Multislice exit waves: em-accel vs abTEM 1.0.11 vs our pure-torch reference, in one run.

Structure: Si [001] slab (the setup of docs/multislice.md §8.2), 200 keV, slices of 2.009 Å,
Kirkland parametrization, infinite projection, float32. Grids 512², 1024² (and 2048² unless
``quick``), with 5, 10, 20 unit cells across so dx = 0.0530 Å.

Rows (ms per slice, best and median of repeats):
- ``abtem``: PlaneWave.multislice(Potential).compute(), potential built on the fly;
- ``abtem_prebuilt``: the same with the potential built beforehand;
- ``ours_exact`` / ``ours_deposit``: em_accel.sim.multislice with the potential built on the fly by
  the exact structure factor / the abTEM-compatible deposit;
- ``ours_prebuilt``: em-accel's loop with the potential built beforehand;
- ``ours_fused``: prebuilt potential, transmission applied on the fly without its band limit
  (one FFT pair per slice; not abTEM's convention);
- ``reference``: the pure-torch reference loop (torch exp, precomputed propagator array) with
  the prebuilt potential.

Threads: the CPU is shared, so the run pins 1 thread for everyone (torch, OpenMP, FFTW, dask)
unless EM_ACCEL_BENCH_THREADS says otherwise. Set before any import so every OpenMP runtime
sees it; OMP_WAIT_POLICY=PASSIVE keeps idle OpenMP threads from spinning on a busy machine.
"""
from __future__ import annotations

import os

_THREADS = os.environ.get("EM_ACCEL_BENCH_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", _THREADS)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import math  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.harness import print_table, write_record  # noqa: E402

ENERGY = 200.0
DZ = 2.009


def _times(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up (plans, JIT, first custom-op call)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts), float(np.median(ts))


def _reference_loop(v: torch.Tensor, grid, thicknesses) -> torch.Tensor:
    from em_accel.ops import multislice as M
    from em_accel.sim.physics import interaction_parameter, wavelength

    kc, taper = grid.antialias()
    sigma, lam = interaction_parameter(ENERGY), wavelength(ENERGY)
    a = M.antialias_reference(*grid.gpts, *grid.sampling, kc, taper).to(torch.complex64)
    prop = M.propagator_reference(*grid.gpts, *grid.sampling, lam, float(thicknesses[0]), kc, taper,
                                  torch.zeros(2, dtype=torch.float64))[0].to(torch.complex64)
    psi = torch.ones(grid.gpts, dtype=torch.complex64)
    for j in range(v.shape[0]):
        t = torch.fft.ifft2(torch.fft.fft2(torch.exp(1j * sigma * v[j])) * a)
        psi = torch.fft.ifft2(torch.fft.fft2(psi * t) * prop)
    return psi


def run(quick: bool = False) -> Path:
    import abtem
    from ase.build import bulk

    from em_accel.sim import Potential, from_ase, multislice, plane_wave

    threads = int(_THREADS)
    torch.set_num_threads(threads)
    abtem.config.set({"device": "cpu", "precision": "float32", "fft": "fftw",
                      "fftw.threads": threads, "dask.scheduler": "synchronous"})
    # (gpts, unit cells across, slices, layout): "general" grids are not commensurate with the
    # lattice (the general code path, as for defects or phonons); "periodic" grids are, and
    # em-accel then builds V, t and the band limit on one lateral period.
    sizes = [(256, 5, 10, "general"), (256, 4, 10, "periodic")] if quick else [
        (512, 5, 50, "general"), (512, 4, 50, "periodic"), (1024, 10, 50, "general"),
        (1024, 8, 50, "periodic"), (2048, 20, 20, "general"), (2048, 16, 20, "periodic")]
    repeats = 2 if quick else 3
    rows = []
    for gpts, cells, nslices, layout in sizes:
        s = from_ase(bulk("Si", cubic=True)).repeat(cells, cells, 1).with_thickness(nslices * DZ)
        atoms_ab = s.to_ase()
        n = nslices

        def abtem_fly():
            pot = abtem.Potential(atoms_ab, gpts=gpts, slice_thickness=DZ, parametrization="kirkland",
                                  projection="infinite")
            return abtem.PlaneWave(energy=ENERGY * 1e3).multislice(pot).compute(progress_bar=False).array

        pot_ab = abtem.Potential(atoms_ab, gpts=gpts, slice_thickness=DZ, parametrization="kirkland",
                                 projection="infinite").build().compute(progress_bar=False)

        def abtem_pre():
            return abtem.PlaneWave(energy=ENERGY * 1e3).multislice(pot_ab).compute(progress_bar=False).array

        def ours(method, fused=False, pot=None):
            def fn():
                p = pot or Potential(s, gpts=gpts, slice_thickness=DZ, method=method)
                return multislice(plane_wave(p.grid), p, ENERGY, bandlimit_transmission=not fused)
            return fn

        pre = Potential(s, gpts=gpts, slice_thickness=DZ, method="deposit").precompute()
        # correctness before timing: deposit mode vs abTEM, exact vs deposit
        ref_wave = abtem_fly()
        dep_wave = ours("deposit")()
        exact_wave = ours("exact")()
        ref_t = torch.from_numpy(ref_wave).to(torch.complex128)
        err_dep = ((dep_wave.to(torch.complex128) - ref_t).norm() / ref_t.norm()).item()
        err_exact = ((exact_wave.to(torch.complex128) - ref_t).norm() / ref_t.norm()).item()
        err_ref = math.nan
        if layout == "general":
            ref_loop = _reference_loop(pre.build(), pre.grid, pre.thicknesses)
            err_ref = ((ref_loop.to(torch.complex128) - dep_wave.to(torch.complex128)).norm()
                       / ref_t.norm()).item()
        cases = {
            "abtem": abtem_fly, "abtem_prebuilt": abtem_pre,
            "ours_exact": ours("exact"), "ours_deposit": ours("deposit"),
            "ours_prebuilt": ours("deposit", pot=pre), "ours_fused": ours("deposit", True, pre),
            "reference": lambda: _reference_loop(pre.build(), pre.grid, pre.thicknesses),
        }
        if layout == "periodic":
            for name in ("abtem_prebuilt", "ours_fused", "reference"):
                cases.pop(name)
        timing = {}
        for name, fn in cases.items():
            best, med = _times(fn, 1 if gpts >= 2048 else repeats)
            timing[name] = best
            rows.append({"gpts": gpts, "layout": layout, "cells": cells, "dx_A": s.cell[0] / gpts,
                         "slices": n, "impl": name, "ms_per_slice_best": best / n * 1e3,
                         "ms_per_slice_median": med / n * 1e3})
            print(f"  {gpts}² {layout} {name}: {best / n * 1e3:.2f} ms/slice (median {med / n * 1e3:.2f})", flush=True)
        for r in rows:
            if r["gpts"] == gpts and r["layout"] == layout:
                base = "abtem_prebuilt" if r["impl"] in ("ours_prebuilt", "ours_fused", "reference") else "abtem"
                r["speedup_vs_abtem"] = timing.get(base, timing["abtem"]) / timing[r["impl"]]
                if "reference" in timing:
                    r["speedup_vs_reference"] = timing["reference"] / timing[r["impl"]]
                r["rel_l2_deposit_vs_abtem"] = err_dep
                r["rel_l2_exact_vs_abtem"] = err_exact
                r["rel_l2_reference_vs_ours"] = err_ref
    print_table(f"multislice exit wave, Si [001], {ENERGY:.0f} keV, {_THREADS} thread(s)", rows,
                ["gpts", "layout", "slices", "impl", "ms_per_slice_best", "ms_per_slice_median",
                 "speedup_vs_abtem", "speedup_vs_reference", "rel_l2_deposit_vs_abtem",
                 "rel_l2_exact_vs_abtem"])
    extra = {"threads": threads, "abtem": abtem.__version__, "energy_keV": ENERGY,
             "slice_thickness_A": DZ, "notes": "speedup of ours_prebuilt/ours_fused/reference is vs "
             "abtem_prebuilt; of ours_exact/ours_deposit vs abtem (potential on the fly)"}
    try:
        from em_accel.sim.dataset import bench_dataset

        extra["dataset"] = bench_dataset(quick)
        print(f"dataset generation: {extra['dataset']}")
    except ImportError:
        pass
    return write_record("multislice", rows, ["cpu"], extra)
