"""``em-accel tsne FEATURES.npy -o map.png``: t-SNE map (and image map) of saved features."""
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
