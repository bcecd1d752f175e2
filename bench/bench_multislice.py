"""Multislice exit waves: em-accel vs abTEM 1.0.11 vs our pure-torch reference, in one run.

Structure: Si [001] slab (the setup of docs/multislice.md §8.2), 200 keV, slices of 2.009 Å
(layout "zperiodic": a/4 = 1.358 Å, commensurate with the lattice along the beam),
Kirkland parametrization, infinite projection, float32. Grids 512², 1024² (and 2048² unless
``quick``), with 5, 10, 20 unit cells across so dx = 0.0530 Å.

Rows (ms per slice, best and median of interleaved rounds: every case once per round):
- ``abtem``: PlaneWave.multislice(Potential).compute(), potential built on the fly;
- ``abtem_prebuilt``: the same with the potential built beforehand;
- ``ours_exact`` / ``ours_deposit``: em_accel.sim.multislice with the potential built on the fly by
  the exact structure factor / the abTEM-compatible deposit;
- ``ours_exact_distinct`` / ``ours_deposit_distinct``: the same without sharing the transmission
  function of slices with equal content (``Potential.slice_ids``): the cost when every slice
  differs (defects, frozen phonons). Si [001] slices of 2.009 Å hold only 8 distinct atom
  layouts among 50 slices, which the default shares;
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


def _interleaved(cases: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each case over ``repeats`` rounds, cases interleaved within a round."""
    for fn in cases.values():
        fn()  # warm-up (plans, JIT, first custom-op call)
    out = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t0)
    return out


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


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
    from em_accel.sim.structure_factor import cost

    threads = int(_THREADS)
    torch.set_num_threads(threads)
    abtem.config.set({"device": "cpu", "precision": "float32", "fft": "fftw",
                      "fftw.threads": threads, "dask.scheduler": "synchronous"})
    # (gpts, unit cells across, slices, layout): "general" grids are not commensurate with the
    # lattice (the general code path, as for defects or phonons); "periodic" grids are, and
    # em-accel then builds V, t and the band limit on one lateral period.
    # "zperiodic": a general lateral grid, sliced commensurately with the period along the beam
    # (4 slices per Si cell): equal slices share one band-limited transmission function.
    sizes = [(256, 5, 10, "general"), (256, 4, 10, "periodic"), (256, 5, 12, "zperiodic")] if quick else [
        (512, 5, 50, "general"), (512, 4, 50, "periodic"), (512, 5, 48, "zperiodic"),
        (1024, 10, 50, "general"), (1024, 8, 50, "periodic"), (1024, 10, 48, "zperiodic"),
        (2048, 20, 10, "general"), (2048, 16, 10, "periodic"), (2048, 20, 24, "zperiodic")]
    repeats = 2 if quick else 3
    rows = []
    load = [os.getloadavg()[0]]
    for gpts, cells, nslices, layout in sizes:
        a_si = bulk("Si", cubic=True).cell[2, 2]
        dz = a_si / 4 if layout == "zperiodic" else DZ
        s = from_ase(bulk("Si", cubic=True)).repeat(cells, cells, 1).with_thickness(nslices * dz)
        atoms_ab = s.to_ase()
        n = nslices

        def abtem_fly():
            pot = abtem.Potential(atoms_ab, gpts=gpts, slice_thickness=dz, parametrization="kirkland",
                                  projection="infinite")
            return abtem.PlaneWave(energy=ENERGY * 1e3).multislice(pot).compute(progress_bar=False).array

        pot_ab = abtem.Potential(atoms_ab, gpts=gpts, slice_thickness=dz, parametrization="kirkland",
                                 projection="infinite").build().compute(progress_bar=False)

        def abtem_pre():
            return abtem.PlaneWave(energy=ENERGY * 1e3).multislice(pot_ab).compute(progress_bar=False).array

        def ours(method, fused=False, pot=None, distinct=False):
            def fn():
                p = pot or Potential(s, gpts=gpts, slice_thickness=dz, method=method)
                if distinct:  # no sharing of equal slices: the cost when every slice differs
                    p.slice_ids = np.arange(p.num_slices)
                return multislice(plane_wave(p.grid), p, ENERGY, bandlimit_transmission=not fused)
            return fn

        pre = Potential(s, gpts=gpts, slice_thickness=dz, method="deposit").precompute()
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
            "ours_exact_distinct": ours("exact", distinct=True),
            "ours_deposit_distinct": ours("deposit", distinct=True),
            "ours_prebuilt": ours("deposit", pot=pre), "ours_fused": ours("deposit", True, pre),
            "reference": lambda: _reference_loop(pre.build(), pre.grid, pre.thicknesses),
        }
        if layout == "periodic":
            for name in ("abtem_prebuilt", "ours_fused", "reference", "ours_exact_distinct",
                         "ours_deposit_distinct"):
                cases.pop(name)
        if layout == "zperiodic":
            for name in ("abtem_prebuilt", "ours_prebuilt", "ours_fused", "reference",
                         "ours_exact_distinct", "ours_deposit_distinct"):
                cases.pop(name)
        probe_pot = Potential(s, gpts=gpts, slice_thickness=dz)
        per_slice = np.diff(probe_pot._offsets)
        sf_auto = min(("gemm", "nufft"), key=lambda k: cost(k, int(per_slice.max()), 1, *probe_pot.cell_grid.gpts))
        unique_slices = len(set(probe_pot.slice_ids.tolist()))
        timing = {}
        # interleaved rounds (every case once per round, after one warm-up each) so that load
        # changes on the shared machine hit all cases alike; best and median over rounds
        rounds = _interleaved(cases, 2 if gpts >= 2048 else repeats)
        for name in cases:
            best, med = min(rounds[name]), float(np.median(rounds[name]))
            timing[name] = best
            rows.append({"gpts": gpts, "layout": layout, "cells": cells, "dx_A": s.cell[0] / gpts,
                         "slices": n, "slice_thickness_A": dz, "unique_slices": unique_slices,
                         "exact_sf_method": sf_auto, "load1": os.getloadavg()[0], "impl": name, "ms_per_slice_best": best / n * 1e3,
                         "ms_per_slice_median": med / n * 1e3})
            print(f"  {gpts}² {layout} {name}: {best / n * 1e3:.2f} ms/slice (median {med / n * 1e3:.2f})", flush=True)
        load.append(os.getloadavg()[0])
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
             "load_average_1min": load, "cpu": _cpu_name(),
             "slice_thickness_A": DZ, "notes": "speedup of ours_prebuilt/ours_fused/reference is vs "
             "abtem_prebuilt; of ours_exact/ours_deposit vs abtem (potential on the fly)"}
    try:
        extra["dataset"] = dataset_rate(quick)
        print(f"dataset generation: {extra['dataset']}")
    except ImportError:  # the [sim] extra (h5py, dask) is missing
        pass
    return write_record("multislice", rows, ["cpu"], extra)


def dataset_rate(quick: bool = True) -> dict:
    """Waves per second of a small synchronous em_accel.sim.dataset run."""
    import tempfile

    from em_accel.sim.dataset import DatasetSpec, generate

    spec = DatasetSpec(materials=("Si", "SrTiO3"), energies=(200.0, 300.0),
                       thicknesses=(20.0, 40.0) if quick else (50.0, 100.0),
                       zones=((0, 0, 1),), extent=10.0 if quick else 20.0, sampling=0.05,
                       shard_size=2)
    with tempfile.TemporaryDirectory() as d:
        out = generate(spec, d, scheduler="synchronous", progress=False)
    out["grid_A"] = spec.extent
    return out


def run_cuda(quick: bool = False, sizes: list[tuple[int, int, int, str]] | None = None,
             structure_factors: tuple[str, ...] = ("auto",), family: str = "multislice") -> Path:
    """GPU timings, ms per slice: em-accel's loop (potential on the fly, exact and deposit; and
    prebuilt, batch 1 and 16) vs abTEM on the GPU through CuPy where abTEM and CuPy import (same
    structure, grid and slices; the agreement of the waves is recorded too), the FFT-bound floor
    (fft2 + ifft2 + one complex multiply per slice, same card) and the achieved memory
    bandwidth against the card's measured device-to-device copy bandwidth. Times are wall clock
    around fully synchronised calls (torch and CuPy streams), best of repeats.

    ``sizes``: (gpts, cells across, slices, layout) cases instead of the default list;
    ``structure_factors``: the exact potential's structure-factor methods to time (rows
    ``ours_exact`` for "auto", ``ours_exact_<method>`` otherwise, each with its relative L2
    difference from the first one's wave); ``family``: the record's name."""
    from ase.build import bulk

    from em_accel.sim import Potential, from_ase, multislice, plane_wave

    try:
        import abtem
        import cupy
        abtem.config.set({"device": "gpu", "precision": "float32", "dask.scheduler": "synchronous"})
    except ImportError as exc:  # abTEM/CuPy are carried to the GPU machine as wheels
        print(f"abTEM on GPU unavailable ({exc}); timing em-accel alone", flush=True)
        abtem = cupy = None

    dev = "cuda"
    x = torch.empty(2 ** 28, dtype=torch.float32, device=dev)  # 1 GiB
    y = torch.empty_like(x)
    torch.cuda.synchronize()
    ev = [torch.cuda.Event(enable_timing=True) for _ in range(2)]
    ev[0].record()
    for _ in range(10):
        y.copy_(x)
    ev[1].record()
    torch.cuda.synchronize()
    copy_bw = 2 * x.numel() * 4 * 10 / (ev[0].elapsed_time(ev[1]) * 1e-3)  # read + write bytes/s
    del x, y

    def sync():
        torch.cuda.synchronize()
        if cupy is not None:
            cupy.cuda.Device().synchronize()

    def gpu_time(fn, repeats=5):
        fn()
        sync()
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            sync()
            best = min(best, time.perf_counter() - t0)
        return best

    name = torch.cuda.get_device_name()
    rows = []
    if sizes is None:
        sizes = [(512, 5, 50, "general"), (512, 4, 50, "periodic")] if quick else [
            (512, 5, 100, "general"), (512, 4, 100, "periodic"), (1024, 10, 100, "general"),
            (1024, 8, 100, "periodic"), (2048, 20, 50, "general"), (2048, 16, 50, "periodic")]
    for gpts, cells, n, layout in sizes:
        s = from_ase(bulk("Si", cubic=True)).repeat(cells, cells, 1).with_thickness(n * DZ)
        n_pix = gpts * gpts
        psi = torch.ones((gpts, gpts), dtype=torch.complex64, device=dev)
        spec = torch.empty_like(psi)
        tt = torch.ones_like(psi)

        def floor():
            for _ in range(n):
                psi.mul_(tt)
                torch.fft.fft2(psi, out=spec)
                torch.fft.ifft2(spec, out=psi)

        t_floor = gpu_time(floor) / n
        base = {"device": name, "gpts": gpts, "layout": layout, "slices": n,
                "floor_ms_per_slice": t_floor * 1e3}
        timing, waves = {}, {}
        if abtem is not None:
            atoms_ab = s.to_ase()

            def abtem_fly():
                pot = abtem.Potential(atoms_ab, gpts=gpts, slice_thickness=DZ, device="gpu",
                                      parametrization="kirkland", projection="infinite")
                return abtem.PlaneWave(energy=ENERGY * 1e3, device="gpu").multislice(pot).compute(
                    progress_bar=False).array

            pot_ab = abtem.Potential(atoms_ab, gpts=gpts, slice_thickness=DZ, device="gpu",
                                     parametrization="kirkland", projection="infinite"
                                     ).build().compute(progress_bar=False)

            def abtem_pre():
                return abtem.PlaneWave(energy=ENERGY * 1e3, device="gpu").multislice(pot_ab).compute(
                    progress_bar=False).array

            waves["abtem"] = torch.from_numpy(cupy.asnumpy(abtem_fly())).to(torch.complex128)
            timing["abtem"] = gpu_time(abtem_fly, 3) / n
            timing["abtem_prebuilt"] = gpu_time(abtem_pre, 3) / n
        cases = [("exact", f) for f in structure_factors] + [("deposit", "auto")]
        for method, sf in cases:
            def fly(method=method, sf=sf):
                p = Potential(s, gpts=gpts, slice_thickness=DZ, method=method, device=dev,
                              structure_factor=sf)
                return multislice(plane_wave(p.grid, device=dev), p, ENERGY)
            key = method if sf == "auto" else f"{method}_{sf}"
            waves[key] = fly().cpu().to(torch.complex128)
            timing[f"ours_{key}"] = gpu_time(fly, 3) / n
        first_exact = "exact" if structure_factors[0] == "auto" else f"exact_{structure_factors[0]}"
        pre = Potential(s, gpts=gpts, slice_thickness=DZ, method="deposit", device=dev).precompute()
        for batch in (1, 16):
            def loop():
                return multislice(plane_wave(pre.grid, batch, device=dev), pre, ENERGY)
            timing[f"ours_prebuilt_batch{batch}"] = gpu_time(loop) / n / batch
        for impl, t in timing.items():
            row = {**base, "impl": impl, "ms_per_slice": t * 1e3, "ratio_to_floor": t / t_floor}
            if "abtem" in timing:
                ref = timing["abtem_prebuilt" if "prebuilt" in impl else "abtem"]
                row["speedup_vs_abtem"] = ref / t
            if impl.startswith("ours_prebuilt"):
                # traffic per wave and slice: multiply (r psi, r t, w psi), FFT pair (>= 2 passes
                # of r+w each), propagate (r+w) => at least 9 passes of 8 bytes x N
                bw = 9 * 8 * n_pix / t
                row.update(achieved_GBps=bw / 1e9, copy_GBps=copy_bw / 1e9,
                           bandwidth_fraction=bw / copy_bw)
            if "abtem" in waves and impl[5:] in waves:
                w, ref_w = waves[impl[5:]], waves["abtem"]
                row["rel_l2_vs_abtem"] = ((w - ref_w).norm() / ref_w.norm()).item()
            if impl.startswith("ours_exact") and impl[5:] in waves:
                ref_w = waves[first_exact]
                diff = (waves[impl[5:]] - ref_w).norm() / ref_w.norm()
                row["rel_l2_vs_first_exact"] = diff.item()
            rows.append(row)
        print(rows[-1], flush=True)
    print_table("multislice on GPU (ms per wave and slice; speed-up vs abTEM+CuPy, prebuilt rows "
                "vs abTEM prebuilt)", rows,
                ["gpts", "layout", "impl", "ms_per_slice", "speedup_vs_abtem", "ratio_to_floor",
                 "rel_l2_vs_abtem", "rel_l2_vs_first_exact", "bandwidth_fraction"])
    extra = {"copy_GBps": copy_bw / 1e9, "energy_keV": ENERGY, "slice_thickness_A": DZ,
             "abtem": abtem.__version__ if abtem is not None else None,
             "cupy": cupy.__version__ if cupy is not None else None}
    return write_record(family, rows, ["cuda"], extra)


def run_hotpaths() -> Path | None:
    """device_check.sh STAGES=hotpaths: the exact structure factor at 2048^2 on a general grid
    (Si [001], 20 cells across, 50 slices), auto and GEMM, against abTEM+CuPy and the deposit
    path (target: exact >= 10x abTEM, waves agreeing with the CPU-validated exact path)."""
    if not torch.cuda.is_available():
        print("multislice hot path: needs a CUDA GPU; skipped", flush=True)
        return None
    return run_cuda(sizes=[(2048, 20, 50, "general")], structure_factors=("auto", "gemm"),
                    family="multislice_hotpaths")
