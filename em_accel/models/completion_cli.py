"""``em-accel complete`` and ``em-accel evaluate complete``."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from ..io import WRITE_SUFFIXES, read_image, read_unit_range, write_image
from .cli import _evaluate_subparsers


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``complete`` and ``evaluate complete`` to the ``em-accel`` command."""
    p = subparsers.add_parser(
        "complete", help="complete sparse (partial) STEM scans with a network + uncertainty",
        description="Scan micrographs along a sparse path (or take an already sparse scan with "
                    "--mask) and complete them with the shipped network, or with a lattice "
                    "fitted to the samples where they show a crystal (--prior). Writes "
                    "OUT/<name>_completed.<ext>, OUT/<name>_uncertainty.<ext> (half-width of "
                    "the calibrated 90% interval, same units) and OUT/<name>_panel.png "
                    "(sparse | completion | uncertainty), keeping pixel size and metadata.")
    p.add_argument("inputs", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument("-o", "--out", type=Path, required=True, help="output directory")
    p.add_argument("--path", default=None, choices=["spiral", "gridlike", "grid", "unknown"],
                   help="scan path kind (default: spiral; with --mask: unknown)")
    p.add_argument("--coverage", type=float, default=None,
                   help="fraction of pixels to sample, 0.008-0.125 (required without --mask)")
    p.add_argument("--mask", type=Path, default=None,
                   help="the inputs are already sparse: this image's nonzero pixels were sampled")
    p.add_argument("--counts-per-intensity", type=float, default=None,
                   help="simulate shot noise when scanning a full image (counts per unit "
                        "of the image's intensity); with --mask: the dose the sparse scan was "
                        "recorded at, which tells the lattice prior its noise (as --noise-std)")
    p.add_argument("--noise-std", type=float, default=None,
                   help="standard deviation of the shot noise in the sampled values where known "
                        "(the image's units; for detector counts about the square root of the "
                        "mean count): lets the lattice prior use noisy grid scans")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="completion",
                   help="'completion' (shipped) or a .safetensors path from the recipe")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--format", default="same", choices=["same", "tif", "mrc", "npy"],
                   help="output format ('same' keeps TIFF/MRC, else writes TIFF)")
    p.add_argument("--no-panel", action="store_true", help="skip the PNG panel")
    p.add_argument("--ensemble", action="store_true",
                   help="average the network over the 8 flips/rotations (8x the time, ~2%% "
                        "lower error)")
    p.add_argument("--dark-atoms", action="store_true",
                   help="atoms are dark on a bright background (bright-field or annular "
                        "bright-field STEM): complete the mirrored contrast the network was "
                        "trained on and mirror back")
    p.add_argument("--prior", default="auto", choices=["auto", "network", "lattice"],
                   help="auto (default): on spiral and grid scans, a periodic lattice fitted to "
                        "the samples completes the part of the image where its local error is "
                        "at most 0.75 of the network's predicted error (a whole crystal, or a "
                        "crystal beside vacuum, support or another grain), the network the "
                        "rest; network: always the network; lattice: always the whole-image "
                        "lattice fit")
    p.set_defaults(func=_complete)

    e = _evaluate_subparsers(subparsers).add_parser(
        "complete", help="RMS vs coverage of the completion network and classical baselines",
        description="Score the completion network, the default lattice-or-network choice "
                    "(auto), nearest-neighbour, Delaunay-linear (+blur), biharmonic, wavelet "
                    "and Fourier compressive-sensing and lattice-fit completions on held-out "
                    "images for every path kind and coverage; plot with the thesis's points.")
    e.add_argument("-n", type=int, default=6, help="held-out simulated images")
    e.add_argument("--size", type=int, default=512, help="image side [px]")
    e.add_argument("--seed", type=int, default=None,
                   help="seed of the held-out images (default 7100, the documented set)")
    e.add_argument("--pixel-range", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="held-out images at mixed magnifications: pixel size log-uniform in "
                        "[LO, HI] Å/px (default: atomic resolution, 0.05-0.45)")
    e.add_argument("--images", nargs="*", type=Path, default=[],
                   help="also score these real micrograph files (2-D), as their own truth")
    e.add_argument("--dark-atoms", action="store_true",
                   help="the --images files show dark atoms (bright-field, ABF): score them as "
                        "'em-accel complete --dark-atoms' completes them")
    e.add_argument("--counts-per-intensity", type=float, default=None,
                   help="shot noise of the sparse scans (default: none)")
    e.add_argument("--known-noise", action="store_true",
                   help="tell the default 'auto' the shot noise's variance (from "
                        "--counts-per-intensity), as 'em-accel complete --noise-std' does")
    e.add_argument("--scan-distortion", action="store_true",
                   help="distort the held-out images as a STEM raster scan would (line jitter, "
                        "drift, flyback, non-linearity drawn per image, as em_accel.data.distort's "
                        "STEM acquisitions draw them); the distorted image is the truth")
    e.add_argument("--coverages", type=float, nargs="*", default=None,
                   help="coverages (default 1/10, 1/17.9, 1/30, 1/50, 1/87, 1/100)")
    e.add_argument("--kinds", nargs="*", default=["spiral", "gridlike", "grid"])
    e.add_argument("--baselines", nargs="*", default=None, metavar="NAME",
                   help="baselines to score (default: all of nearest, delaunay, delaunay+blur, "
                        "biharmonic, wavelet-cs, fourier-cs, lattice; none: the network and "
                        "its uncertainty only)")
    e.add_argument("--slow-n", type=int, default=2,
                   help="images on which biharmonic and wavelet-CS run (centre crops)")
    e.add_argument("--slow-size", type=int, default=256, help="centre-crop side for those")
    e.add_argument("--calibration-n", type=int, default=3,
                   help="separate held-out images to fit the uncertainty calibration on (0: "
                        "use the model's stored factor)")
    e.add_argument("--model", default="completion")
    e.add_argument("--ensemble", action="store_true",
                   help="also score the network's 8-fold dihedral self-ensemble (network-ens8)")
    e.add_argument("--out", type=Path, default=Path("complete_eval"), help="results directory")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=_evaluate)


def _model(spec: str, device: str = "cpu"):
    from .completion import load_pretrained, load_weights

    if spec == "completion":
        return load_pretrained("completion", device=device)
    return load_weights(Path(spec), device=device).model


def _panel(path: Path, sparse: np.ndarray, mask: np.ndarray, completion: np.ndarray,
           uncertainty: np.ndarray, title: str, lattice_weight: np.ndarray | None = None) -> None:
    """sparse input | completion | uncertainty; where a lattice completed part of the image,
    that part (weight >= 0.5) is tinted and outlined on the completion."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = np.percentile(completion, [0.5, 99.5])
    shown = np.where(mask, sparse, np.nan)
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    for ax, img, name, kw in ((axes[0], shown, "sparse input", {"vmin": lo, "vmax": hi}),
                              (axes[1], completion, "completion", {"vmin": lo, "vmax": hi}),
                              (axes[2], uncertainty, "90% interval half-width", {})):
        cmap = matplotlib.colormaps["gray"].with_extremes(bad="black")
        im = ax.imshow(img, cmap=cmap if name != "90% interval half-width" else "magma", **kw)
        ax.set_title(name)
        ax.axis("off")
        if (name == "completion" and lattice_weight is not None
                and lattice_weight.min() < 0.5 < lattice_weight.max()):
            ax.contourf(lattice_weight, levels=[0.5, 1.5], colors="cyan", alpha=0.15)
            ax.contour(lattice_weight, levels=[0.5], colors="cyan", linewidths=0.8)
            ax.set_title("completion (lattice where tinted)")
        if name.startswith("90%"):
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _microscope_pixel(pixel_size: float | None) -> float | None:
    """A file's pixel size [Å] if it is one a microscope could have written (0.001-100 Å):
    a generic TIFF's 72 dpi reads as 3.5e6 Å and must not pass for a calibration."""
    return pixel_size if pixel_size is not None and 1e-3 <= pixel_size <= 100.0 else None


def _complete(args: argparse.Namespace) -> int:
    from .completion import ImageShapeError, complete_scan

    args.out.mkdir(parents=True, exist_ok=True)
    model = _model(args.model, args.device)
    mask = None
    if args.mask is not None:
        mask = read_image(args.mask).data
        if mask.ndim != 2:
            raise ImageShapeError(f"--mask {args.mask}: expected a 2-D image, got shape "
                                  f"{list(mask.shape)}")
    kind = args.path or ("unknown" if mask is not None else "spiral")
    for path in args.inputs:
        mic = read_image(path)
        if mic.data.ndim != 2:
            raise ImageShapeError(f"{path}: expected a 2-D image, got shape {list(mic.data.shape)}"
                                  " (take one frame of a stack first)")
        res = complete_scan(mic.data, mask=mask, kind=None if kind == "unknown" else kind,
                            coverage=args.coverage, counts_per_intensity=args.counts_per_intensity,
                            seed=args.seed, model=model, device=args.device,
                            ensemble=args.ensemble, dark_atoms=args.dark_atoms,
                            prior=args.prior, noise_std=args.noise_std,
                            pixel_size=_microscope_pixel(mic.pixel_size))
        suffix = path.suffix.lower() if args.format == "same" else "." + args.format
        if suffix not in WRITE_SUFFIXES:
            suffix = ".tif"
        by = {"network": "em_accel.models.PartialScanCompleter",
              "lattice": "em_accel.scan.lattice.fit_lattice",
              "lattice+network": "em_accel.scan.lattice_region (lattice) and "
                                 "em_accel.models.PartialScanCompleter (rest)"}[res.method]
        lattice = None if res.lattice is None else {
            "real_space_vectors_px": np.round(res.lattice.periods, 4).tolist(),
            "harmonics": len(res.lattice.harmonics), "r2": round(res.lattice.r2, 4),
            "held_out_r2": round(res.lattice.validation_r2, 4),
            "share_of_image": round(float(res.lattice_weight.mean()), 4)}
        if res.aliased:
            step = res.mask.shape[0] * res.mask.shape[1] / max(int(res.mask.sum()), 1)
            print(f"{path.name}: the grid's samples show a lattice whose cell is too large for "
                  f"a crystal at {mic.pixel_size:.3g} Å/px: an alias of structure finer than "
                  f"the grid step (about {math.sqrt(step) * mic.pixel_size:.3g} Å), which no "
                  "completion can place; the uncertainty is widened to the samples' local "
                  "spread. A finer grid or a spiral path resolves it.", file=sys.stderr)
        meta = {"em_accel": {"completed_by": by, "prior": args.prior, "lattice": lattice,
                             "grid_aliases_finer_structure": res.aliased,
                             "model": args.model, "path_kind": kind,
                             "coverage": round(res.coverage, 6),
                             "counts_per_intensity": args.counts_per_intensity,
                             "noise_std": args.noise_std,
                             "dihedral_ensemble": args.ensemble, "dark_atoms": args.dark_atoms,
                             "mask": str(args.mask) if args.mask else None,
                             "source": str(path), "source_format": mic.format},
                "source_metadata": mic.metadata}
        written = [write_image(args.out / f"{path.stem}_completed{suffix}", res.completion,
                               mic.pixel_size, meta),
                   write_image(args.out / f"{path.stem}_uncertainty{suffix}", res.uncertainty,
                               mic.pixel_size, {**meta, "quantity": "half-width of the "
                                                "calibrated 90% interval of the completion"})]
        if not args.no_panel:
            panel = args.out / f"{path.stem}_panel.png"
            _panel(panel, res.sparse, res.mask, res.completion, res.uncertainty,
                   f"{path.name}: {kind} path, coverage 1/{1 / res.coverage:.1f}, completed "
                   f"by the {res.method}" + ("" if res.lattice_weight is None else
                                            f" (lattice on {100 * res.lattice_weight.mean():.0f}%"
                                            " of the image)")
                   + ("; the grid aliases finer structure" if res.aliased else ""),
                   res.lattice_weight)
            written.append(panel)
        for w in written:
            print(w)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from . import completion_eval as E

    model = _model(args.model)
    covs = tuple(args.coverages) if args.coverages else E.COVERAGES
    seed = E.HELDOUT_SEED if args.seed is None else args.seed
    # With --dark-atoms the network sees the mirrored scan (complete_scan(dark_atoms=True));
    # every metric and baseline here is unchanged by the mirror, so the mirrored file is scored.
    real = [read_unit_range(p) for p in args.images]
    real = [1.0 - d for d in real] if args.dark_atoms else real
    if args.dark_atoms and not real:
        raise ValueError("--dark-atoms applies to --images files; none given")
    if args.known_noise and args.counts_per_intensity is None:
        raise ValueError("--known-noise needs --counts-per-intensity (the noise to tell)")
    if args.scan_distortion and args.n <= 0:
        raise ValueError("--scan-distortion applies to the held-out simulated images; -n is 0")
    if args.n < 0 or (args.n == 0 and not real):
        raise ValueError(f"nothing to evaluate: -n {args.n} held-out images and no --images files")
    calibration = float(getattr(model, "calibration", 1.0))
    if args.calibration_n > 0:
        cal_images, _ = E.heldout_images(args.calibration_n, args.size, E.CALIBRATION_SEED,
                                         args.pixel_range)
        calibration = E.fit_calibration(model, cal_images, args.counts_per_intensity, covs,
                                        tuple(args.kinds))
    from .completion_baselines import METHODS

    methods = None
    if args.baselines is not None:
        unknown = sorted(set(args.baselines) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown baselines {unknown}; choose from {sorted(METHODS)}")
        methods = {k: METHODS[k] for k in args.baselines}
    common = dict(coverages=covs, kinds=tuple(args.kinds), methods=methods,
                  calibration=calibration, progress=not args.no_progress, ensemble=args.ensemble)
    # Real files are their own truth (noise and all) and are scored noise-free, whole.
    # Each file's own calibration, as `em-accel complete` reads it (the grid alias check).
    real_pixels = [_microscope_pixel(read_image(p).pixel_size) for p in args.images]
    real_res = E.evaluate(model, real, counts=None, slow_n=0, pixel_sizes=real_pixels,
                          **common) if real else None
    real_desc = (f"{len(real)} real file(s){' (dark atoms, mirrored)' if args.dark_atoms else ''}: "
                 + ", ".join(p.name for p in args.images))
    if args.n > 0:
        images, desc, pixel_sizes = E.heldout_set(args.n, args.size, seed, args.pixel_range)
        if args.scan_distortion:
            images, drawn = E.scan_distorted(images, seed)
            desc += ", with STEM scan distortions"
        res = E.evaluate(model, images, counts=args.counts_per_intensity, slow_n=args.slow_n,
                         slow_size=args.slow_size, known_noise=args.known_noise,
                         pixel_sizes=pixel_sizes, **common)
        if real_res is not None:
            res["real"] = {"files": [str(p) for p in args.images],
                           "sizes": sorted({r.shape for r in real}), **real_res}
    else:
        res, desc = real_res, real_desc
        res["files"] = [str(p) for p in args.images]
    res["images"] = desc
    if args.n > 0 and args.scan_distortion:
        res["scan_distortions"] = drawn
    path = E.save(res, args.out)
    E.plot(res, args.out)
    print(f"images: {desc}; calibration factor {calibration:.3f}")
    print(E.format_summary(res))
    if "real" in res:
        print(f"\n{real_desc}:")
        print(E.format_summary(res["real"]))
    print(f"\nresults: {path}")
    print(json.dumps({"plots": [str(p) for p in sorted(args.out.glob('*.png'))]}))
    return 0
