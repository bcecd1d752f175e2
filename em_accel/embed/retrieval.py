"""Augmentation retrieval: does a transformed, noisy copy of an image find the original?

The gallery is a set of clean held-out crops. Each query is one of them under a random
non-identity dihedral transform (rotation/flip) and Poisson noise at ``dose`` counts/px (at the
brightest pixel), min-max scaled again. A hit at k: the original is among the query's k nearest
gallery items. This measures what a search engine for micrographs needs (the same specimen
region found whatever its orientation and dose) without labels.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch

from ..data.augment import dihedral
from ..data.datasets import item_generator
from ..data.noise import poisson_noise
from .crops import random_square
from .features import dihedral_views
from .index import Index
from .vae import to_unit_crops


class RetrievalScore(NamedTuple):
    recall_at_1: float
    recall_at_5: float
    n: int


def heldout_crops(images: list[np.ndarray], per_image: int, seed: int = 0) -> torch.Tensor:
    """``per_image`` crops [N, 96, 96] in [0, 1] of each image: squares of side uniform in
    [96, min(H, W)] at uniform positions, area-resized to 96 (no dihedral transform)."""
    out = []
    for i, im in enumerate(images):
        t = torch.as_tensor(np.asarray(im, dtype=np.float32))
        out += [random_square(t, item_generator(seed, i * 10_000 + j), log_side=False)
                for j in range(per_image)]
    return to_unit_crops(torch.stack(out))[:, 0]


def evaluation_galleries(extra: list[str] | tuple[str, ...] = (), *, base: bool = True,
                         per_file: int = 64) -> dict[str, torch.Tensor]:
    """The held-out galleries of docs/maps.md: "synthetic+skimage" (48 synthetic micrographs of
    256 px, seed 20261205, and scikit-image's held-out images; left out if not ``base``) and,
    per npz file in ``extra`` (key "images" [N, H, W]), its first ``per_file`` images; 8 crops
    per image (:func:`heldout_crops`, seed 7). Keyed by name (a file's stem)."""
    from pathlib import Path

    from ..data import SKIMAGE_HELDOUT, skimage_images, synthetic_images

    sources = {}
    if base:
        sources["synthetic+skimage"] = (synthetic_images(48, 256, seed=20261205)
                                        + skimage_images(SKIMAGE_HELDOUT))
    for path in extra:
        with np.load(path) as f:
            sources[Path(path).stem] = list(f["images"][:per_file])
    return {name: heldout_crops(imgs, per_image=8, seed=7) for name, imgs in sources.items()}


def make_queries(gallery: torch.Tensor, dose: float, seed: int = 0) -> torch.Tensor:
    """One query per gallery crop: a random non-identity dihedral transform, then Poisson
    noise at ``dose`` counts/px, min-max scaled."""
    g = torch.Generator().manual_seed(seed)
    ks = torch.randint(1, 8, (gallery.shape[0],), generator=g)
    q = torch.stack([dihedral(c, int(k)) for c, k in zip(gallery, ks)])
    return to_unit_crops(poisson_noise(q, dose, g).noisy)[:, 0]


def augmentation_retrieval(gallery: torch.Tensor, embed: Callable[[torch.Tensor], torch.Tensor],
                           dose: float, *, seed: int = 0, dihedral_query: bool = False,
                           embed_sigma: Callable[[torch.Tensor], tuple] | None = None
                           ) -> RetrievalScore:
    """Recall@1 and @5 of retrieving each gallery crop from its augmented copy.

    embed: crops [N, 96, 96] -> features [N, D] (applied to gallery and queries alike).
    dihedral_query: search with all 8 dihedral transforms of each query and keep each item's
    smallest distance (makes any feature dihedral-invariant at 8x the query cost).
    embed_sigma: crops -> (mu, sigma) to search with the σ-aware distance instead.
    """
    queries = make_queries(gallery, dose, seed)
    n = gallery.shape[0]
    k = min(5, n)
    views = 8 if dihedral_query else 1
    q = dihedral_views(queries) if dihedral_query else queries
    if embed_sigma is not None:
        mu, sig = embed_sigma(gallery)
        qmu, qsig = embed_sigma(q)
        top = Index(mu, sigma=sig).search(qmu.reshape(n, views, -1), k, metric="sigma",
                                          query_sigma=qsig.reshape(n, views, -1)).indices
    else:
        top = Index(embed(gallery)).search(embed(q).reshape(n, views, -1), k).indices
    truth = torch.arange(n)[:, None]
    return RetrievalScore(float((top[:, :1] == truth).any(1).float().mean()),
                          float((top == truth).any(1).float().mean()), n)
