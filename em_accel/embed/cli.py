"""``em-accel tsne FEATURES.npy -o map.png``: t-SNE map (and image map) of saved features;
``em-accel map DIR -o OUT``: map, interactive page and search index of a folder of micrographs;
``em-accel search QUERY --index OUT``: nearest images of a query in a map folder."""
from __future__ import annotations

import argparse
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .plot import plot_image_grid, plot_map
    from .tsne import tsne_with_info
    from .uniform import uniform_separate

    x = np.load(args.features)
    if x.ndim != 2:
        raise SystemExit(f"{args.features}: expected a 2-D array [N, D], got shape {x.shape}")
    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if args.pca:
        from .pca import pca
        x = pca(x, min(args.pca, x.shape[1]))
    y, info = tsne_with_info(x, perplexity=args.perplexity, n_iter=args.n_iter,
                             device=args.device, method=args.method, knn_method=args.knn,
                             seed=args.seed, progress=not args.quiet)
    y = y.cpu()
    if args.uniform:
        y = uniform_separate(y)
    labels = np.load(args.labels) if args.labels else None
    plot_map(y, labels, args.output)
    if args.save_embedding:
        np.save(args.save_embedding, y.numpy())
    if args.images:
        images = np.load(args.images, mmap_mode="r")
        out = Path(args.images_output or Path(args.output).with_name(Path(args.output).stem + "_images.png"))
        plot_image_grid(y, images, out, n=args.n_images, seed=args.seed)
        print(f"image map: {out}")
    if not args.quiet:
        print(f"map: {args.output}  KL {info.kl_divergence:.4f}  "
              f"time {sum(info.timings.values()):.1f} s")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("tsne", help="t-SNE map of features saved as .npy [N, D]")
    p.add_argument("features", help=".npy array [N, D]")
    p.add_argument("-o", "--output", required=True, help="map image (PNG, PDF, ...)")
    p.add_argument("--images", help=".npy images [N, H, W] (or [N, H, W, 3]) for an image map")
    p.add_argument("--images-output", help="image-map path (default: <output>_images.png)")
    p.add_argument("--n-images", type=int, default=500, help="images drawn in the image map")
    p.add_argument("--labels", help=".npy labels [N] to colour the map")
    p.add_argument("--perplexity", type=float, default=30.0)
    p.add_argument("--n-iter", type=int, default=750)
    p.add_argument("--pca", type=int, default=0, help="reduce to this many PCs first (0: off)")
    p.add_argument("--method", choices=["auto", "exact", "fft"], default="auto")
    p.add_argument("--knn", choices=["auto", "exact", "approx"], default="auto",
                   help="neighbour search: approx = HNSW (hnswlib); auto = approx on CPU "
                   "for N >= 20k")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--uniform", action="store_true", help="uniformly separate the map (US-tSNE)")
    p.add_argument("--save-embedding", help="also save the 2-D map as .npy")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_run)
    register_maps(subparsers)


def _run_map(args: argparse.Namespace) -> int:
    from .mapping import make_map

    try:
        s = make_map(args.inputs, args.output, encoder=args.encoder, weights=args.weights,
                     crop=args.crop,
                     sigma_aware=not args.no_sigma, dihedral=not args.no_dihedral,
                     perplexity=args.perplexity,
                     n_iter=args.n_iter, device=args.device, seed=args.seed, title=args.title,
                     progress=not args.quiet)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"em-accel map: {exc}")
    for path, reason in s.skipped:
        print(f"skipped {path}: {reason}")
    if not args.quiet:
        total = sum(s.timings.values())
        print(f"map of {s.n_images} images ({len(s.skipped)} skipped) in {total:.1f} s: "
              f"{s.out / 'map.html'}, {s.out / 'map.png'}, index in {s.out}")
    return 0


def _run_search(args: argparse.Namespace) -> int:
    import json

    from .mapping import search_files

    try:
        hits, skipped = search_files(args.queries, args.index, args.k, device=args.device,
                                     place=not args.no_place)
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"em-accel search: {exc}")
    for path, reason in skipped:
        print(f"skipped {path}: {reason}")
    if args.json:
        print(json.dumps([h.__dict__ for h in hits], indent=1))
        return 0 if hits else 1
    for h in hits:
        where = "" if h.map_xy is None else f"  (map position {h.map_xy[0]:.3f}, {h.map_xy[1]:.3f})"
        print(f"{h.query}{where}")
        for nb in h.neighbours:
            print(f"  {nb['rank']}. {nb['name']}  d={nb['distance']:.4g}")
    return 0 if hits else 1


def register_maps(subparsers) -> None:
    from .collection import MAX_SLICES
    from .crops import CROP_MODES
    from .features import DEFAULT_ENCODER, ENCODERS

    p = subparsers.add_parser("map", help="map a folder of micrographs: PNG, interactive HTML "
                              "page and a search index")
    p.add_argument("inputs", nargs="+", help="microscope files and/or folders (searched "
                   "recursively; TIFF, MRC, DM3/DM4, SER, EMD, PNG, ...)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--encoder", choices=ENCODERS, default=DEFAULT_ENCODER,
                   help="raw: 24x24 pixels (default; best search in docs/maps.md), pca: PCA-50 "
                   "of the pixels (the thesis), contrastive: shipped encoder, vae: the thesis's "
                   "VAE (needs --weights)")
    p.add_argument("--weights", default=None, help="weights file of a contrastive/vae encoder "
                   "(python -m em_accel.embed.train_encoders, then save_weights)")
    p.add_argument("--crop", choices=CROP_MODES, default="center",
                   help=f"one whole-image crop per image/slice (center, downsample) or 96-px "
                   f"tiles; stacks give up to {MAX_SLICES} slices")
    p.add_argument("--no-sigma", action="store_true", help="VAE: Euclidean t-SNE distances")
    p.add_argument("--no-dihedral", action="store_true", help="nearest images must match in "
                   "orientation (default: any rotation/flip matches)")
    p.add_argument("--perplexity", type=float, default=None, help="default min(30, (N-2)/3)")
    p.add_argument("--n-iter", type=int, default=750)
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--title", default=None)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_run_map)

    p = subparsers.add_parser("search", help="nearest images of QUERY files in a map folder")
    p.add_argument("queries", nargs="+", help="query image files (or folders)")
    p.add_argument("--index", required=True, help="a folder written by em-accel map")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--device", default=None)
    p.add_argument("--no-place", action="store_true", help="skip placing queries in the map")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_search)
