"""Partial-scan completion time at 512^2 (``python -m bench complete [--quick]``).

Rows, all in one process on the same image and masks:

- ``complete``: seconds per 512^2 completion through :func:`complete_scan` with the shipped
  network, a spiral path at 1/17.9 and 1/87 coverage: ``cold`` includes triangulating the
  mask (first image of a path), ``cached`` reuses it (every later image of the same path);
  ``8x ensemble`` is the dihedral self-ensemble (``ensemble=True``); ``network`` is the forward
  pass alone (all with ``prior="network"``). The default ``prior="auto"`` rows: on the
  synthetic micrograph (no crystal: the lattice check, then the network), on a held-out
  crystal (the fitted lattice completes it; the network still runs, to check that the lattice's
  local error beats the network's predicted one) and on a crystal beside an amorphous film
  (the whole-image fit is not enough: halves and quadrants are searched, and the lattice
  completes the crystal's part), on two crystals side by side (a second window's lattice
  completes a second region) and on a crystal beside vacuum whose whole-image peaks are too
  weak for a fit (the quadrants are searched). ``lattice fit alone`` on the first two images.
  Size 1024 rows (not with --quick): the network and ``auto`` on a 1024² held-out frame with
  crystals on part of the field (the whole-image search, then 2 x 2 lattice tiles).
- ``baseline``: the same for nearest-neighbour infill, Delaunay-linear (cold and cached),
  Delaunay + blur, wavelet and Fourier compressive sensing (the latter is also the network's
  fifth input, so it is part of the ``complete`` rows) and scikit-image biharmonic inpainting
  (the last at 1/17.9 only; skipped with --quick).
- ``thesis``: one forward pass of the thesis's inner/outer generator (106 M parameters) at
  512^2, for the cost comparison (CPU: one repeat).
- CUDA only: batched network throughput (completions/s, bf16 autocast).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.harness import available_devices, median_time, print_table, write_record
from em_accel.models import completion as C
from em_accel.models import completion_baselines as B
from em_accel.scan import interpolate, make_path, partial_scan


def _model(device: str) -> C.PartialScanCompleter:
    try:
        return C.load_pretrained("completion", device=device)
    except FileNotFoundError:  # before weights ship: same architecture, same time
        return C.PartialScanCompleter((24, 32, 48, 64)).to(device).eval()


def _image(size: int = 512) -> np.ndarray:
    from em_accel.data import synthetic_micrograph

    return synthetic_micrograph(size, 0)


def _crystal(size: int = 512, seed: tuple[int, int] = (7100, 0)) -> np.ndarray:
    """A held-out atomic-resolution HAADF image: by default a crystal filling the field (the
    lattice completes all of it); (7900, 5) a crystal beside an amorphous film (the lattice is
    found in a half of the image and completes the crystal's part); (8300, 2) two crystals
    (two regions, from two windows' lattices); (7900, 9) a crystal in a corner beside vacuum
    (no whole-image fit; a quadrant's lattice); (9300, 3) at 1024² crystals on part of the
    field that the 544² lattice tiles complete better than the whole-image search."""
    from em_accel.data.micrographs import micrograph

    return micrograph(size, "haadf", seed=seed, split="heldout").image


def _scan(img: np.ndarray, kind: str, coverage: float) -> tuple[np.ndarray, np.ndarray]:
    r = partial_scan(torch.from_numpy(img.astype(np.float64)),
                     make_path(kind, img.shape, coverage)).raster
    return r.image.numpy(), r.mask.numpy() > 0


def _cpu_rows(quick: bool) -> list[dict]:
    rows = []
    img = _image()
    crystal = _crystal()
    part = _crystal(seed=(7900, 5))
    grains = _crystal(seed=(8300, 2))
    corner = _crystal(seed=(7900, 9))
    model = _model("cpu")
    reps = 2 if quick else 5
    for cov in (1 / 17.9, 1 / 87.0):
        v, m = _scan(img, "spiral", cov)
        label = f"spiral 1/{1 / cov:.1f}"

        def cold(fn):
            def run():
                interpolate._CACHE.clear()
                fn()
            return run

        full = lambda: C.complete_scan(v, mask=m, kind="spiral", model=model,  # noqa: E731
                                       prior="network")
        ens = lambda: C.complete_scan(v, mask=m, kind="spiral", model=model,  # noqa: E731
                                      ensemble=True, prior="network")
        auto = lambda: C.complete_scan(v, mask=m, kind="spiral", model=model)  # noqa: E731
        cv, cm = _scan(crystal, "spiral", cov)
        auto_crystal = lambda: C.complete_scan(cv, mask=cm, kind="spiral",  # noqa: E731
                                               model=model)
        pv, pm = _scan(part, "spiral", cov)
        auto_part = lambda: C.complete_scan(pv, mask=pm, kind="spiral",  # noqa: E731
                                            model=model)
        gv, gm = _scan(grains, "spiral", cov)
        auto_grains = lambda: C.complete_scan(gv, mask=gm, kind="spiral",  # noqa: E731
                                              model=model)
        ev, em = _scan(corner, "spiral", cov)
        auto_corner = lambda: C.complete_scan(ev, mask=em, kind="spiral",  # noqa: E731
                                              model=model)
        inp = C.completion_inputs(torch.from_numpy(v).float(), torch.from_numpy(m).float(),
                                  fourier=model.uses_fourier)
        cond = C.conditioning(torch.tensor([float(m.mean())]), torch.tensor([0]))

        def net():
            with torch.inference_mode():
                model(inp.x, cond)
        for name, fn, kind in (("network: complete_scan, cold (triangulates)", cold(full), "complete"),
                               ("network: complete_scan, cached path", full, "complete"),
                               ("network: complete_scan, cached, 8x ensemble", ens, "complete"),
                               ("network: forward only", net, "complete"),
                               ("default prior='auto', no crystal: lattice check + network",
                                auto, "complete"),
                               ("default prior='auto', crystal: network + lattice fit, "
                                "lattice everywhere",
                                auto_crystal, "complete"),
                               ("default prior='auto', crystal beside a film: network + "
                                "lattice fit + window search, lattice on part",
                                auto_part, "complete"),
                               ("default prior='auto', two crystals (8300, image 2): network + "
                                "lattice fit + window search + a second region",
                                auto_grains, "complete"),
                               ("default prior='auto', crystal beside vacuum (7900, image 9): "
                                "network + lattice check + quadrant search, lattice on part",
                                auto_corner, "complete"),
                               ("lattice fit alone (em_accel.scan.lattice), no crystal",
                                lambda: B.lattice(v, m), "baseline"),
                               ("lattice fit alone (em_accel.scan.lattice), crystal",
                                lambda: B.lattice(cv, cm), "baseline"),
                               ("nearest", lambda: B.nearest(v, m), "baseline"),
                               ("delaunay, cold", cold(lambda: B.delaunay(v, m)), "baseline"),
                               ("delaunay, cached path", lambda: B.delaunay(v, m), "baseline"),
                               ("delaunay+blur, cached path", lambda: B.delaunay_blur(v, m), "baseline"),
                               ("wavelet-cs (40 iterations)", lambda: B.wavelet_cs(v, m), "baseline"),
                               ("fourier-cs (120 iterations; the network's channel 4)",
                                lambda: B.fourier_cs(v, m), "baseline")):
            sec = median_time(fn, "cpu", warmup=1, repeats=reps)
            rows.append({"kind": kind, "device": "cpu", "method": name, "path": label,
                         "size": 512, "seconds": sec})
        if not quick and cov > 0.05:
            sec = median_time(lambda: B.biharmonic(v, m), "cpu", warmup=0, repeats=1)
            rows.append({"kind": "baseline", "device": "cpu", "method": "biharmonic (scikit-image)",
                         "path": label, "size": 512, "seconds": sec})
    if not quick:   # a large frame: the network tiled, the lattice prior whole and in tiles
        big = _crystal(1024, seed=(9300, 3))
        for cov in (1 / 17.9, 1 / 87.0):
            bv, bm = _scan(big, "spiral", cov)
            for name, prior in (("network: complete_scan, cached path", "network"),
                                ("default prior='auto', crystals on part of a 1024² field "
                                 "(9300, image 3): whole image + 2 x 2 lattice tiles", "auto")):
                sec = median_time(lambda: C.complete_scan(bv, mask=bm, kind="spiral", model=model,
                                                          prior=prior, progress=False),
                                  "cpu", warmup=1, repeats=2)
                rows.append({"kind": "complete", "device": "cpu", "method": name,
                             "path": f"spiral 1/{1 / cov:.1f}", "size": 1024, "seconds": sec})
        g = C.ThesisGenerator(2).eval()
        x = torch.rand(1, 2, 512, 512)
        flops = C.count_flops(g, x)

        def thesis():
            with torch.inference_mode():
                g(x)
        sec = median_time(thesis, "cpu", warmup=0, repeats=1)
        rows.append({"kind": "thesis", "device": "cpu", "method": "thesis inner/outer generator",
                     "path": "-", "size": 512, "seconds": sec, "gmac": flops / 1e9,
                     "params": sum(p.numel() for p in g.parameters())})
    x = torch.rand(1, model.config["in_channels"], 512, 512)
    c = C.conditioning(torch.tensor([0.05]), torch.tensor([0]))
    rows.append({"kind": "thesis", "device": "cpu", "method": "network (ours), MACs",
                 "path": "-", "size": 512, "gmac": C.count_flops(model, x, c) / 1e9,
                 "params": sum(p.numel() for p in model.parameters())})
    return rows


def _cuda_rows(quick: bool) -> list[dict]:
    rows = []
    model = _model("cuda").to(memory_format=torch.channels_last)
    for batch in (1, 32):
        x = torch.rand(batch, model.config["in_channels"], 512, 512, device="cuda").to(memory_format=torch.channels_last)
        c = C.conditioning(torch.full((batch,), 0.05), torch.zeros(batch, dtype=torch.long)).cuda()

        def step():
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                model(x, c)
        sec = median_time(step, "cuda", warmup=3, repeats=10)
        rows.append({"kind": "complete", "device": "cuda", "method": f"network bf16, batch {batch}",
                     "path": "-", "size": 512, "seconds": sec / batch,
                     "completions_per_s": batch / sec})
    return rows


def run(quick: bool = False) -> Path:
    devices = available_devices()
    rows = _cpu_rows(quick) if "cpu" in devices else []
    if "cuda" in devices:
        rows += _cuda_rows(quick)
    print_table("partial-scan completion at 512^2", rows,
                ["device", "kind", "method", "path", "seconds", "gmac", "completions_per_s"])
    return write_record("complete", rows, devices,
                        {"quick": quick, "torch_threads": torch.get_num_threads()})
