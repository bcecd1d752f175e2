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
        description="Denoise micrograph files at any dose with the noise-level-conditioned "
                    "denoiser (noise estimated per frame, or given), tile by tile, keeping pixel "
                    "size and metadata. Writes OUT/<name>_denoised.<ext>.")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
    p.add_argument("-o", "--out", type=Path, required=True, help="output directory")
    p.add_argument("--model", default="auto",
                   help="'auto' or 'conditioned' (default: the noise-level-conditioned model for "
                        "any dose, the noise level estimated per frame), 'low' or 'high' (the "
                        "thesis-style atrous weights for ≪300 or 200–2500 counts/px), or a "
                        ".safetensors path from save_weights (either kind)")
    p.add_argument("--gain", type=float, default=None,
                   help="detector gain [units per count]: use it instead of the noise estimate "
                        "(conditioned model), with --offset and --read-noise")
    p.add_argument("--offset", type=float, default=0.0, help="detector offset [units] (--gain)")
    p.add_argument("--read-noise", type=float, default=0.0,
                   help="read-noise standard deviation [units] (--gain)")
    p.add_argument("--counts", action="store_true",
                   help="the file holds electron counts (same as --gain 1 --offset 0)")
    p.add_argument("--adapt", action="store_true",
                   help="first fine-tune the conditioned model on each input, self-supervised: "
                        "Noise2Noise on consecutive frames of a stack, Noise2Self on one frame")
    p.add_argument("--adapt-steps", type=int, default=60, help="optimiser steps of --adapt")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE,
                   help=f"largest tile [px], a multiple of 16 (default {DEFAULT_TILE})")
    p.add_argument("--margin", type=int, default=16, help="context kept around tiles [px]")
    p.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--ensemble", action="store_true",
                   help="average the 8 flips/rotations of every tile (8x the compute, lower error)")
    p.add_argument("--refine", default="sure", choices=["sure", "none"],
                   help="conditioned model: 'sure' (default) smooths its output by the Gaussian "
                        "width of least Stein's unbiased risk estimate, picked per frame (a second "
                        "network pass); 'none': the network's output as is")
    p.add_argument("--format", default="same", choices=["same", "tif", "mrc", "npy"],
                   help="output format ('same' keeps TIFF/MRC, else writes TIFF)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_denoise)

    e = _evaluate_subparsers(subparsers).add_parser(
        "denoise", help="Table 1: the denoiser vs classical filters, MSE/SSIM ± SE and times",
        description="Score the shipped denoiser and every classical method of the thesis's "
                    "Table 1 (plus BM3D) on held-out noisy images at low and high dose.")
    e.add_argument("--suite", default="dose", choices=["dose", "thesis"],
                   help="'dose' (default): the conditioned network against oracle-tuned BM3D and "
                        "classical filters on detector-unit images at 5–50 and 500–5000 "
                        "counts/px (MSE, PSNR, SSIM, paired 95%% intervals); 'thesis': Table 1 "
                        "of the thesis on min–max scaled images with the atrous models")
    e.add_argument("-n", type=int, default=None,
                   help="images per dose regime (default: 16 for 'dose', 32 for 'thesis')")
    e.add_argument("--size", type=int, default=None,
                   help="image size [px] (default: 128 for 'dose', 256 for 'thesis')")
    e.add_argument("--weights", type=Path, default=None,
                   help="'dose': conditioned weights to score (default: the shipped ones)")
    e.add_argument("--no-atrous", action="store_true",
                   help="'dose': skip the thesis-style atrous models")
    e.add_argument("--doses", nargs="+", default=["low", "high"], choices=["low", "high"])
    e.add_argument("--methods", nargs="*", default=None,
                   help="subset of method names (default: all)")
    e.add_argument("--no-bm3d", action="store_true", help="skip BM3D (slow)")
    e.add_argument("--no-ensemble", action="store_true",
                   help="skip the network's 8-fold dihedral self-ensemble row")
    e.add_argument("--also", nargs="*", default=[], metavar="LABEL=PATH",
                   help="extra weights (save_weights format) to score beside the shipped model: "
                        "PATH for both doses, or LOW_PATH:HIGH_PATH")
    e.add_argument("--out", type=Path, default=Path("denoise_eval"), help="results directory")
    e.add_argument("--seed", type=int, default=None, help="held-out seed (default 2000)")
    e.add_argument("--images", nargs="*", type=Path, default=[], metavar="FILE",
                   help="'dose': also score non-overlapping --size tiles of these real "
                        "micrographs, each taken as the clean reference (its own noise "
                        "included) and acquired at every dose regime")
    e.add_argument("--modality", default="stem", choices=["stem", "tem"],
                   help="'dose': how --images are acquired (STEM: scan noise and jitter)")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=_evaluate)


def _load_model(spec: str, device: str):
    """(model, name, kind) for ``--model``; kind is "conditioned" or "atrous"."""
    import torch

    from .conditioned import PRETRAINED_CONDITIONED, load_conditioned
    from .denoiser import PRETRAINED_HIGH, PRETRAINED_LOW, load_pretrained, load_weights

    dev = torch.device(device)
    if spec in ("auto", "conditioned"):
        return load_conditioned(device=dev), PRETRAINED_CONDITIONED, "conditioned"
    if spec in ("low", "high"):
        name = PRETRAINED_LOW if spec == "low" else PRETRAINED_HIGH
        return load_pretrained(name, device=dev), name, "atrous"
    try:
        return load_conditioned(Path(spec), device=dev), str(spec), "conditioned"
    except ValueError:  # not a ConditionedUNet file: an atrous one
        return load_weights(Path(spec), device=dev).model, str(spec), "atrous"


def _noise_override(args: argparse.Namespace, frame: np.ndarray):
    """The user's noise model for ``frame`` (--counts or --gain), or None to estimate it."""
    from ..data.noise_estimate import noise_level_from_detector

    if args.counts:
        return noise_level_from_detector(frame, gain=1.0)
    if args.gain is not None:
        return noise_level_from_detector(frame, gain=args.gain, offset=args.offset,
                                         read_noise=args.read_noise)
    return None


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

    from .conditioned import denoise_micrograph
    from .tiling import denoise_image, overlap_cost, tile_layout

    if args.counts and args.gain is not None:
        raise ValueError("give either --counts or --gain, not both")
    args.out.mkdir(parents=True, exist_ok=True)
    cache: dict[str, tuple] = {}
    for path in args.inputs:
        mic = read_image(path)
        frames = mic.data if mic.data.ndim == 3 else mic.data[None]
        if frames.ndim != 3:
            raise ValueError(f"{path}: expected a 2-D image or a stack, got shape "
                             f"{list(mic.data.shape)}")
        key = "auto" if args.model in ("auto", "conditioned") else args.model
        if key not in cache:
            cache[key] = _load_model(key, args.device)
        model, name, kind = cache[key]
        if args.adapt and kind != "conditioned":
            raise ValueError(f"--adapt needs a conditioned model; {name} is an atrous model")
        tile = args.tile
        h, w = frames.shape[-2:]
        extra: dict = {}
        if args.adapt:
            from .adapt import adapt

            stack = frames.astype(np.float64)
            res = adapt(model, stack, noise=_noise_override(args, stack[0]),
                        steps=args.adapt_steps, progress=not args.no_progress)
            model = res.model
            extra["adapted"] = {"mode": res.mode, "steps": args.adapt_steps,
                                "first_loss": res.losses[0], "last_loss": res.losses[-1],
                                "shifts": res.shifts}
        n_tiles = len(tile_layout(h + 2 * args.margin, tile, args.margin)[1]) * \
            len(tile_layout(w + 2 * args.margin, tile, args.margin)[1])
        bar = tqdm(total=n_tiles * len(frames), desc=path.name, unit="tile",
                   disable=args.no_progress)
        outs, levels, posts = [], [], []
        for f in frames:
            if kind == "conditioned":
                r = denoise_micrograph(f, model, noise=_noise_override(args, f), tile=tile,
                                       margin=args.margin, batch_size=args.batch_size,
                                       progress=False, ensemble=args.ensemble,
                                       refine=args.refine, callback=bar.update)
                outs.append(r.image)
                levels.append(r.noise.as_dict())
                posts.append({"filter": r.post_filter, "smoothing_px": r.smoothing_px,
                              "wiener_px": r.wiener_px, "wiener_weight": r.wiener_weight})
            else:
                outs.append(denoise_image(model, f, tile=tile, margin=args.margin,
                                          batch_size=args.batch_size, progress=False,
                                          ensemble=args.ensemble, callback=bar.update))
        out = np.stack(outs)
        bar.close()
        out = out[0] if mic.data.ndim == 2 else out
        suffix = path.suffix.lower() if args.format == "same" else "." + args.format
        if suffix not in WRITE_SUFFIXES:
            suffix = ".tif"
        dest = args.out / f"{path.stem}_denoised{suffix}"
        cls = "ConditionedUNet" if kind == "conditioned" else "AtrousDenoiser"
        meta = {"em_accel": {"denoised_by": f"em_accel.models.{cls}", "model": name,
                             "tile": tile, "margin": args.margin,
                             "dihedral_ensemble": args.ensemble,
                             "compute_per_pixel": round(overlap_cost(h, w, tile, args.margin), 4),
                             "source": str(path), "source_format": mic.format, **extra},
                "source_metadata": mic.metadata}
        if levels:
            meta["em_accel"]["noise"] = levels[0] if len(levels) == 1 else levels
            meta["em_accel"]["refine"] = args.refine
            meta["em_accel"]["post_filter"] = posts[0] if len(posts) == 1 else posts
        write_image(dest, out.astype(np.float32), mic.pixel_size, meta)
        if args.no_progress:
            print(dest)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    if args.suite == "dose":
        return _evaluate_dose(args)
    args.n = 32 if args.n is None else args.n
    args.size = 256 if args.size is None else args.size
    args.seed = 2000 if args.seed is None else args.seed
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


def _evaluate_dose(args: argparse.Namespace) -> int:
    from .conditioned import load_conditioned
    from .evaluate_dose import (atrous_method, bm3d_oracle, classical_methods,
                                conditioned_methods, evaluate, heldout_images,
                                real_image_tiles, report)

    n = 16 if args.n is None else args.n
    size = 128 if args.size is None else args.size
    seed = 2000 if args.seed is None else args.seed
    net = "conditioned network"
    methods = dict(conditioned_methods(load_conditioned(args.weights), net,
                                       ensemble=not args.no_ensemble))
    if not args.no_bm3d:
        methods["BM3D (oracle σ)"] = bm3d_oracle
    classical = classical_methods()
    methods.update(classical)
    if not args.no_atrous:
        methods["atrous (shipped low/high, old auto rule)"] = atrous_method()
    methods["noisy input"] = lambda c: c.detector
    if args.methods:
        unknown = sorted(set(args.methods) - set(methods))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {sorted(methods)}")
        methods = {k: v for k, v in methods.items() if k in args.methods}
    real = real_image_tiles(args.images, size, args.modality) if args.images else []
    if n < 0 or (n == 0 and not real):
        raise ValueError(f"nothing to evaluate: -n {n} held-out images and no --images files")
    images = (heldout_images(n, size, seed) if n else []) + real
    result = evaluate(methods, images, tuple(args.doses), seed + 2000, not args.no_progress)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "denoise_dose_eval.json"
    path.write_text(json.dumps({"n": n, "size": size, "seed": seed, "result": result,
                                "real_files": [str(p) for p in args.images],
                                "real_tiles": len(real)}, indent=1))
    text = report(result, f"{net} (estimated noise)", list(classical))
    (args.out / "denoise_dose_eval.md").write_text(text + "\n")
    print(text)
    print(f"\nresults: {path}")
    return 0
