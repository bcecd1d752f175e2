"""``em-accel simulate`` and ``em-accel simulate-dataset``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def save_png(wave: np.ndarray, path: str | Path) -> None:
    """Amplitude (left) and phase (right, -pi..pi) of a complex wave as an 8-bit grey PNG."""
    from PIL import Image

    amp = np.abs(wave)
    phase = np.angle(wave)
    lo, hi = float(amp.min()), float(amp.max())
    a = (amp - lo) / (hi - lo if hi > lo else 1.0)
    p = (phase + np.pi) / (2 * np.pi)
    gap = np.ones((wave.shape[0], max(2, wave.shape[1] // 50)))
    img = np.concatenate([a, gap, p], 1).T[::-1]  # x to the right, y up
    Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path)


def _user_errors(fn):
    """Report bad input (unknown element or file, bad sizes, malformed CIF) as one line, exit 2."""
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (ValueError, TypeError, FileNotFoundError) as exc:
            print(f"em-accel {args.command}: error: {exc}", file=sys.stderr)
            return 2
    return run


@_user_errors
def _simulate(args: argparse.Namespace) -> int:
    import torch

    from .multislice import as_structure, exit_wave

    s = as_structure(args.structure, tuple(args.zone) if args.zone else None, args.extent, args.thickness)
    wave = exit_wave(s, energy=args.energy, sampling=args.sampling,
                     slice_thickness=args.slice_thickness, terms=args.terms, device=args.device,
                     method=args.method)
    w = wave.detach().cpu().numpy()
    out = Path(args.output or f"{Path(str(args.structure)).stem}_exit_wave.npy")
    np.save(out, w)
    png = Path(args.png) if args.png else out.with_suffix(".png")
    save_png(w, png)
    summary = {"structure": s.formula, "atoms": len(s), "cell_A": s.cell, "gpts": list(w.shape),
               "energy_keV": args.energy, "wave": str(out), "png": str(png),
               "mean_intensity": float((np.abs(w) ** 2).mean()),
               "device": str(torch.device(args.device or "cpu"))}
    print(json.dumps(summary, indent=1))
    return 0


def _zones(text: list[str]) -> list[tuple[int, int, int]]:
    zones = []
    for z in text:
        digits = z.replace(",", " ").split() if ("," in z or " " in z) else list(z)
        if len(digits) != 3:
            raise argparse.ArgumentTypeError(f"zone {z!r} must be three digits like 001 or 1,1,0")
        zones.append(tuple(int(d) for d in digits))
    return zones


@_user_errors
def _simulate_dataset(args: argparse.Namespace) -> int:
    from .dataset import DatasetSpec, generate

    spec = DatasetSpec(materials=args.materials, energies=args.energies, thicknesses=args.thicknesses,
                       zones=_zones(args.zones), extent=args.extent, sampling=args.sampling,
                       slice_thickness=args.slice_thickness, terms=args.terms, method=args.method,
                       crop=args.crop, shard_size=args.shard_size, seed=args.seed)
    summary = generate(spec, args.out, scheduler=args.scheduler, device=args.device, progress=True)
    print(json.dumps(summary, indent=1))
    return 0


@_user_errors
def _simulate_micrographs(args: argparse.Namespace) -> int:
    import torch

    from ..data.micrographs import build_cache

    if args.threads:
        torch.set_num_threads(args.threads)
    kwargs = {k: v for k, v in (("scene", args.scene), ("split", args.split),
                                ("pixel_size", args.pixel_size),
                                ("pixel_range", args.pixel_range)) if v is not None}
    meta = build_cache(args.out, args.n, size=args.size, kind=args.kind, seed=args.seed,
                       progress=True, **kwargs)
    print(json.dumps({k: meta.get(k) for k in ("kind", "size", "seed", "count", "seconds",
                                                "images_per_second", "kwargs")}, indent=1))
    return 0


def register(subparsers) -> None:
    """Add the simulation subcommands to the ``em-accel`` parser."""
    p = subparsers.add_parser("simulate", help="exit wave of a structure (npy + PNG)",
                              description="Multislice exit wave of a plane wave through a crystal.")
    p.add_argument("structure", help="shipped name (Si, SrTiO3, GaAs, Au, MgO, Cu, PbTiO3) or CIF path")
    p.add_argument("--zone", type=int, nargs=3, metavar=("U", "V", "W"), help="zone axis [uvw]")
    p.add_argument("--energy", type=float, default=300.0, help="accelerating voltage [keV]")
    p.add_argument("--thickness", type=float, default=None, help="specimen thickness [Å]")
    p.add_argument("--extent", type=float, default=20.0, help="lateral size [Å] (whole periods)")
    p.add_argument("--sampling", type=float, default=0.05, help="lateral sampling [Å/px]")
    p.add_argument("--slice-thickness", type=float, default=2.0, help="slice thickness [Å]")
    p.add_argument("--terms", type=int, choices=(1, 3), default=3, help="Kirkland terms")
    p.add_argument("--method", choices=("exact", "deposit"), default="exact",
                   help="potential: exact structure factor or abTEM-compatible deposit")
    p.add_argument("--device", default=None, help="torch device (cpu, cuda)")
    p.add_argument("--output", "-o", default=None, help="output .npy (complex64)")
    p.add_argument("--png", default=None, help="PNG of amplitude | phase (default: next to output)")
    p.set_defaults(func=_simulate)

    d = subparsers.add_parser("simulate-dataset", help="exit-wave dataset on Dask (resumable shards)",
                              description="Materials x voltages x thicknesses x zone axes, with "
                                          "train / unseen-parameter / unseen-material splits.")
    d.add_argument("out", help="output directory (re-run to resume)")
    d.add_argument("--materials", nargs="+", default=["Si", "SrTiO3", "GaAs", "MgO", "Au"],
                   help="shipped names or CIF paths")
    d.add_argument("--energies", nargs="+", type=float, default=[80.0, 200.0, 300.0], help="[keV]")
    d.add_argument("--thicknesses", nargs="+", type=float, default=[50.0, 100.0, 200.0], help="[Å]")
    d.add_argument("--zones", nargs="+", default=["001", "011", "111"], help="zone axes, e.g. 001 1,1,0")
    d.add_argument("--extent", type=float, default=20.0, help="lateral size [Å]")
    d.add_argument("--sampling", type=float, default=0.05, help="[Å/px]")
    d.add_argument("--slice-thickness", type=float, default=2.0, help="[Å]")
    d.add_argument("--terms", type=int, choices=(1, 3), default=3)
    d.add_argument("--method", choices=("exact", "deposit"), default="exact")
    d.add_argument("--crop", type=int, default=None, help="centre-crop waves to CROP x CROP px")
    d.add_argument("--shard-size", type=int, default=8, help="(material, zone, voltage) units per shard")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--scheduler", default="local",
                   help="'local' (Dask LocalCluster), 'synchronous', or a scheduler address")
    d.add_argument("--device", default=None, help="torch device for the workers")
    d.set_defaults(func=_simulate_dataset)

    m = subparsers.add_parser("simulate-micrographs",
                              help="clean HAADF/HRTEM micrographs of random scenes into a .npz cache",
                              description="Realistic clean micrographs (em_accel.data.micrographs): "
                                          "crystals, interfaces, nanoparticles on supports. "
                                          "Resumable: re-run to continue or to append up to -n.")
    m.add_argument("out", help="output .npz (images float16 [n, size, size], params, meta)")
    m.add_argument("-n", type=int, required=True, help="number of images")
    m.add_argument("--size", type=int, default=256, help="image side [px]")
    m.add_argument("--kind", choices=("haadf", "hrtem"), default="haadf")
    m.add_argument("--seed", type=int, default=0, help="image i is micrograph(seed=(SEED, i))")
    m.add_argument("--scene", choices=("crystal", "interface", "particles", "amorphous"),
                   default=None, help="one scene type (default: a mixture)")
    m.add_argument("--split", choices=("train", "heldout"), default=None,
                   help="materials from one split of em_accel.sim.materials")
    m.add_argument("--pixel-size", type=float, default=None, help="fixed pixel size [Å/px]")
    m.add_argument("--pixel-range", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="draw the pixel size log-uniformly in [LO, HI] Å/px for every scene "
                        "(default: atomic resolution, 0.05-0.45); e.g. 0.05 2 for mixed "
                        "magnifications")
    m.add_argument("--threads", type=int, default=None, help="torch threads")
    m.set_defaults(func=_simulate_micrographs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="em-accel-sim")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
