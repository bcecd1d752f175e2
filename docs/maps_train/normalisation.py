"""Which normalisation of the raw 24x24 features retrieves best (docs/maps.md): the same
augmentation retrieval as evaluate.py (raw pixels + D8 query) on the synthetic+skimage gallery
and the HAADF / HRTEM micrograph caches, for the plain averages of min-max scaled crops (the
old default), per-crop standardisation (the default now), a Gaussian low-pass (sigma 1 or 2 px
at 96 px) and a square-root variance stabilisation before it. Run from the repository root:

    python docs/maps_train/normalisation.py --extra HAADF.npz HRTEM.npz --doses 100 1000 --out F.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from em_accel.embed.features import raw_features
from em_accel.embed.retrieval import augmentation_retrieval, evaluation_galleries


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = int(3 * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-t ** 2 / (2 * sigma * sigma))
    k = k / k.sum()
    x = F.pad(x[:, None] if x.dim() == 3 else x, (r, r, r, r), mode="reflect")
    return F.conv2d(F.conv2d(x, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))


def c4(c: torch.Tensor) -> torch.Tensor:
    return c[:, None] if c.dim() == 3 else c


METHODS = {
    "minmax (plain averages)": lambda c: raw_features(c4(c), False),
    "standardised": lambda c: raw_features(c4(c)),
    "gauss1 + standardised": lambda c: raw_features(gaussian_blur(c, 1.0)),
    "gauss2 + standardised": lambda c: raw_features(gaussian_blur(c, 2.0)),
    "sqrt + standardised": lambda c: raw_features(c4(c).clamp_min(0).add(3 / 800).sqrt()),
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--extra", nargs="*", default=[])
    p.add_argument("--doses", type=float, nargs="+", default=[100.0, 1000.0])
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for src, gallery in evaluation_galleries(args.extra).items():
        for dose in args.doses:
            for name, fn in METHODS.items():
                s = augmentation_retrieval(gallery, fn, dose, seed=1, dihedral_query=True)
                rows.append({"data": src, "dose": dose, "method": name, "recall@1": s.recall_at_1,
                             "recall@5": s.recall_at_5, "n": s.n})
                print(rows[-1], flush=True)
    Path(args.out).write_text(json.dumps({"rows": rows, "machine": platform.machine(),
                                          "command": " ".join(["python"] + sys.argv)}, indent=1))


if __name__ == "__main__":
    main()
