"""``em-accel denoise`` and ``em-accel evaluate denoise``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..io import WRITE_SUFFIXES, read_image, write_image

#: Mean-count threshold [counts/px] under which ``--model auto`` picks the low-dose weights.
AUTO_LOW_DOSE_MEAN = 150.0
#: Default tile [px]: images up to 512 − 2·margin px on a side go through in one pass.
DEFAULT_TILE = 512


def _evaluate_subparsers(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The sub-commands of ``em-accel evaluate``, created once and shared by every area."""
    parser = subparsers.choices.get("evaluate")
    if parser is None:
        parser = subparsers.add_parser("evaluate", help="rebuild a thesis table on our data")
        parser.set_defaults(func=lambda a: parser.print_help() or 2)
        parser._em_accel_sub = parser.add_subparsers(dest="target", required=True)
    return parser._em_accel_sub


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``denoise`` and ``evaluate denoise`` to the ``em-accel`` command."""
    p = subparsers.add_parser(
        "denoise", help="denoise micrographs (TIFF, MRC, DM3/DM4, SER, EMD, PNG, NPY)",
        description="Denoise micrograph files with the atrous denoiser, tile by tile, keeping "
                    "pixel size and metadata. Writes OUT/<name>_denoised.<ext>.")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
    p.add_argument("-o", "--out", type=Path, required=True, help="output directory")
    p.add_argument("--model", default="auto",
                   help="'low' or 'high' (shipped weights for ≪300 or 200–2500 counts/px), "
                        "'auto' (low if the image looks like counts with mean < "
                        f"{AUTO_LOW_DOSE_MEAN:g}), or a .safetensors path from save_weights")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE,
                   help=f"largest tile [px], a multiple of 16 (default {DEFAULT_TILE})")
    p.add_argument("--margin", type=int, default=16, help="context kept around tiles [px]")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--ensemble", action="store_true",
                   help="average the 8 flips/rotations of every tile (8x the compute, lower error)")
    p.add_argument("--format", default="same", choices=["same", "tif", "mrc", "npy"],
                   help="output format ('same' keeps TIFF/MRC, else writes TIFF)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_denoise)

    e = _evaluate_subparsers(subparsers).add_parser(
        "denoise", help="Table 1: the denoiser vs classical filters, MSE/SSIM ± SE and times",
        description="Score the shipped denoiser and every classical method of the thesis's "
                    "Table 1 (plus BM3D) on held-out noisy images at low and high dose.")
    e.add_argument("-n", type=int, default=32, help="images per dose regime")
    e.add_argument("--size", type=int, default=256, help="image size [px]")
    e.add_argument("--doses", nargs="+", default=["low", "high"], choices=["low", "high"])
    e.add_argument("--methods", nargs="*", default=None,
                   help="subset of method names (default: all)")
    e.add_argument("--no-bm3d", action="store_true", help="skip BM3D (slow)")
    e.add_argument("--no-ensemble", action="store_true",
                   help="skip the shipped model's 8-fold dihedral self-ensemble row")
    e.add_argument("--also", nargs="*", default=[], metavar="LABEL=PATH",
                   help="extra weights (save_weights format) to score beside the shipped model: "
                        "PATH for both doses, or LOW_PATH:HIGH_PATH")
    e.add_argument("--out", type=Path, default=Path("denoise_eval"), help="results directory")
    e.add_argument("--seed", type=int, default=2000)
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=_evaluate)


def _load_model(spec: str, device: str, image: np.ndarray | None = None):
    """(model, name) for ``--model``."""
    import torch

    from .denoiser import PRETRAINED_HIGH, PRETRAINED_LOW, load_pretrained, load_weights

    if spec == "auto":
        spec = "low" if image is not None and looks_low_dose(image) else "high"
    if spec in ("low", "high"):
        name = PRETRAINED_LOW if spec == "low" else PRETRAINED_HIGH
        model = load_pretrained(name, device=torch.device(device))
    else:
        model, _ = load_weights(Path(spec), device=torch.device(device))
        name = str(spec)
    return model, name


def looks_low_dose(image: np.ndarray) -> bool:
    """True if ``image`` holds non-negative integer counts with mean below
    :data:`AUTO_LOW_DOSE_MEAN` counts/px."""
    a = np.asarray(image)
    if a.size == 0 or a.min() < 0:
        return False
    integral = np.issubdtype(a.dtype, np.integer) or bool(np.all(a == np.round(a)))
    return integral and float(a.mean()) < AUTO_LOW_DOSE_MEAN


def _denoise(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .tiling import denoise_image, overlap_cost, tile_layout

    args.out.mkdir(parents=True, exist_ok=True)
    cache: dict[str, tuple] = {}
    for path in args.inputs:
        mic = read_image(path)
        frames = mic.data if mic.data.ndim == 3 else mic.data[None]
        if frames.ndim != 3:
            raise ValueError(f"{path}: expected a 2-D image or a stack, got shape {list(mic.data.shape)}")
        key = args.model if args.model != "auto" else ("low" if looks_low_dose(frames) else "high")
        if key not in cache:
            cache[key] = _load_model(key, args.device)
        model, name = cache[key]
        tile = args.tile
        h, w = frames.shape[-2:]
        n_tiles = len(tile_layout(h + 2 * args.margin, tile, args.margin)[1]) * \
            len(tile_layout(w + 2 * args.margin, tile, args.margin)[1])
        bar = tqdm(total=n_tiles * len(frames), desc=path.name, unit="tile",
                   disable=args.no_progress)
        out = np.stack([denoise_image(model, f, tile=tile, margin=args.margin,
                                      batch_size=args.batch_size, progress=False,
                                      ensemble=args.ensemble, callback=bar.update)
                        for f in frames])
        bar.close()
        out = out[0] if mic.data.ndim == 2 else out
        suffix = path.suffix.lower() if args.format == "same" else "." + args.format
        if suffix not in WRITE_SUFFIXES:
            suffix = ".tif"
        dest = args.out / f"{path.stem}_denoised{suffix}"
        meta = {"em_accel": {"denoised_by": "em_accel.models.AtrousDenoiser", "model": name,
                             "tile": tile, "margin": args.margin,
                             "dihedral_ensemble": args.ensemble,
                             "compute_per_pixel": round(overlap_cost(h, w, tile, args.margin), 4),
                             "source": str(path), "source_format": mic.format},
                "source_metadata": mic.metadata}
        write_image(dest, out.astype(np.float32), mic.pixel_size, meta)
        if args.no_progress:
            print(dest)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .denoiser import PRETRAINED_HIGH, PRETRAINED_LOW, load_pretrained, load_weights
    from .evaluate import (classical_methods, evaluate, format_table, network_method,
                           paired_difference, save_results)

    methods = classical_methods(include_bm3d=not args.no_bm3d)
    nets = {}
    for regime, name in (("low", PRETRAINED_LOW), ("high", PRETRAINED_HIGH)):
        if regime in args.doses:
            model = load_pretrained(name)
            nets[regime] = (network_method(model, tile=DEFAULT_TILE, margin=16),
                            network_method(model, tile=DEFAULT_TILE, margin=0),
                            network_method(model, tile=DEFAULT_TILE, margin=16, ensemble=True))
    extra = {}
    for item in args.also:
        label, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--also takes LABEL=PATH, got {item!r}")
        low, _, high = path.partition(":")
        extra[label] = {r: network_method(load_weights(Path(p))[0], tile=DEFAULT_TILE, margin=16)
                        for r, p in (("low", low), ("high", high or low))}
    rows, maps = [], {}
    for regime in args.doses:
        ensemble = {} if args.no_ensemble else {
            "atrous denoiser (shipped small, 8x dihedral ensemble)": nets[regime][2]}
        chosen = {"atrous denoiser (shipped small)": nets[regime][0], **ensemble,
                  **{label: fns[regime] for label, fns in extra.items()}, **methods}
        if args.methods:
            unknown = sorted(set(args.methods) - set(chosen))
            if unknown:
                raise ValueError(f"unknown methods {unknown}; choose from {sorted(chosen)}")
            chosen = {k: v for k, v in chosen.items() if k in args.methods}
        res = evaluate(chosen, n=args.n, size=args.size, doses=(regime,), seed=args.seed,
                       progress=not args.no_progress,
                       mae_maps={"atrous denoiser": nets[regime][0],
                                 "atrous denoiser, margin 0": nets[regime][1]})
        rows += res["rows"]
        maps.update(res["maps"])
    path = save_results({"rows": rows, "maps": maps}, args.out)
    for subset in ("all", "micrograph"):
        print(format_table(rows, subset))
    print("\npaired MSE differences, network minus the best other method (×10⁻³, mean ± SE):")
    net = "atrous denoiser (shipped small)"
    for regime in args.doses:
        for subset in ("all", "micrograph"):
            others = [r for r in rows if r["dose"] == regime and r["subset"] == subset
                      and not r["method"].startswith(("atrous", "noisy"))
                      and r["method"] not in extra]
            if not others:
                continue
            best = min(others, key=lambda r: r["mse"])["method"]
            for a in (net, net.replace(")", ", 8x dihedral ensemble)")):
                d = paired_difference(rows, a, best, regime, subset)
                if d:
                    print(f"  {regime} {subset}: {a} - {best} = {1e3 * d['mean_difference']:+.3f}"
                          f" ± {1e3 * d['se']:.3f}, lower on {d['a_lower']}/{d['n']} images")
    print(f"\nresults: {path}")
    edges = json.loads(path.read_text())["edges"]
    for key, e in edges.items():
        print(f"edge/interior MAE ({key}): {e['edge_over_interior']:.3f}")
    return 0
