"""``em-accel scan``: sample a micrograph along a sparse scan path and plot the partial scan.

Example: ``em-accel scan image.tif --path spiral --coverage 0.05 -o out.png``. IMAGE is a
TIFF/PNG file (2-D; colour images are averaged to grey) or ``synthetic`` for a simulated
lattice image. Imports are lazy: plotting needs ``pip install em-accel[demo]``.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def synthetic_micrograph(shape: tuple[int, int] = (256, 256), spacing: float = 9.0,
                         sigma: float = 1.6, seed: int = 0):
    """A simulated atomic-resolution image [H, W] in [0, 1]: Gaussian atoms (sigma [px]) on a
    slightly rotated hexagonal lattice (spacing [px]), a slow background and Gaussian noise."""
    import torch

    g = torch.Generator().manual_seed(seed)
    H, W = shape
    y, x = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5,
                          torch.arange(W, dtype=torch.float64) + 0.5, indexing="ij")
    a = 0.2
    u = (x * math.cos(a) + y * math.sin(a)) / spacing
    v = (-x * math.sin(a) + y * math.cos(a)) / (spacing * math.sqrt(3) / 2)
    # Distance to the nearest lattice site of the hexagonal lattice (two offset rectangular sets).
    d1 = (u - u.round()) ** 2 + ((v - (2 * (v / 2).round())) * math.sqrt(3) / 2) ** 2
    v2 = v - 1
    d2 = (u - 0.5 - (u - 0.5).round()) ** 2 + ((v2 - 2 * (v2 / 2).round()) * math.sqrt(3) / 2) ** 2
    r2 = torch.minimum(d1, d2) * spacing ** 2
    img = torch.exp(-r2 / (2 * sigma ** 2)) + 0.2 * torch.sin(x / W * 3.0) * torch.cos(y / H * 2.0)
    img = img + 0.05 * torch.randn(img.shape, generator=g, dtype=torch.float64)
    return ((img - img.min()) / (img.max() - img.min())).float()


def read_image(path: str):
    """Read a 2-D micrograph from TIFF (tifffile, else Pillow) or PNG/JPEG (Pillow) as float32
    [H, W], min-max normalised to [0, 1]."""
    import numpy as np
    import torch

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    data = None
    if p.suffix.lower() in (".tif", ".tiff"):
        try:
            import tifffile

            data = tifffile.imread(p)
        except ImportError:
            data = None
    if data is None:
        try:
            from PIL import Image
        except ImportError as exc:
            raise ImportError("reading images needs Pillow (or tifffile for TIFF): "
                              "pip install em-accel[demo]") from exc
        with Image.open(p) as im:
            data = np.asarray(im)
    data = np.asarray(data, dtype=np.float64)
    if data.ndim == 3:  # colour (H, W, C): average the channels
        data = data[..., :3].mean(axis=-1)
    if data.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image, got shape {data.shape}")
    data = np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = data.min(), data.max()
    data = (data - lo) / (hi - lo) if hi > lo else np.zeros_like(data)
    return torch.from_numpy(data.astype(np.float32))


def _run(args: argparse.Namespace) -> int:
    import torch

    from .partial import partial_scan
    from .paths import make_path

    if args.image == "synthetic":
        image = synthetic_micrograph((args.size, args.size), seed=args.seed)
    else:
        image = read_image(args.image)
    path = make_path(args.path, tuple(image.shape), args.coverage, seed=args.seed)
    scan = partial_scan(image, path, mode=args.mode, read_noise=args.read_noise, seed=args.seed,
                        counts_per_intensity=args.counts_per_intensity)
    r = scan.raster
    err = torch.sqrt(torch.mean((r.infilled - image) ** 2)).item()
    print(f"{args.path}: {len(path)} probes, coverage {path.coverage:.5f} "
          f"(1/{1 / path.coverage:.2f}; target {args.coverage:.5f}); "
          f"RMS error of the nearest-neighbour infill {err:.4f}")
    if args.npz:
        import numpy as np

        np.savez_compressed(args.npz, image=image.numpy(), positions=path.positions.numpy(),
                            values=scan.values.numpy(), sparse=r.image.numpy(),
                            mask=r.mask.numpy(), infilled=r.infilled.numpy())
        print(f"arrays: {args.npz}")
    if args.output:
        import matplotlib

        matplotlib.use("Agg")
        from .plot import plot_partial_scan

        fig = plot_partial_scan(image, path, r.image, r.infilled)
        fig.savefig(args.output, dpi=args.dpi)
        print(f"figure: {args.output}")
    return 0


def register(subparsers) -> None:
    """Add the ``scan`` subcommand to the ``em-accel`` parser."""
    from .paths import PATH_KINDS

    p = subparsers.add_parser("scan", help="sample an image along a sparse scan path",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("image", help="TIFF/PNG micrograph, or 'synthetic'")
    p.add_argument("--path", choices=PATH_KINDS, default="spiral", help="scan path (default spiral)")
    p.add_argument("--coverage", type=float, default=0.05,
                   help="fraction of pixels probed, in (0, 1] (default 0.05)")
    p.add_argument("--mode", choices=("nearest", "bilinear"), default="nearest")
    p.add_argument("--counts-per-intensity", type=float, default=None,
                   help="shot noise: counts per unit intensity (default: none)")
    p.add_argument("--read-noise", type=float, default=0.0, help="Gaussian detector noise std")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="side of the synthetic image [px]")
    p.add_argument("-o", "--output", help="write a figure (PNG/PDF/SVG)")
    p.add_argument("--npz", help="write the arrays (image, positions, values, sparse, mask, infilled)")
    p.add_argument("--dpi", type=int, default=120)
    p.set_defaults(func=_run)
    from .policy_cli import register as register_policy

    register_policy(subparsers)  # em-accel scan-policy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="em-accel")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["scan", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)
