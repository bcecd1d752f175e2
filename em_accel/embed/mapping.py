"""One call from microscope files to a map folder, and search against it.

``make_map(["data/"], "out/")`` reads the files (bad ones reported and skipped), crops, encodes,
runs t-SNE and US-tSNE, and writes ``out/map.png``, ``out/map.html``, ``out/skipped.json`` and
the search index (``out/index.safetensors`` + ``out/index.json``). ``search_files(query, "out/")``
finds the nearest images of new files in it and places them in the map.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .collection import Collection, read_collection
from .features import DEFAULT_ENCODER, RAW_SIDE, encode, encode_views, load_pretrained
from .index import Index
from .dihedral import dihedral_permutations
from .maps import HTML, PNG, SKIPPED, build_map, write_html, write_png


@dataclass
class MapSummary:
    out: Path
    n_images: int
    skipped: list[tuple[str, str]]
    timings: dict[str, float]
    kl: float


def make_map(inputs: Sequence[str | Path], out: str | Path, *, encoder: str = DEFAULT_ENCODER,
             weights: str | Path | None = None,
             crop: str = "center", sigma_aware: bool = True, dihedral: bool = True,
             perplexity: float | None = None,
             n_iter: int = 750, device=None, seed: int = 0, title: str | None = None,
             progress: bool = True, collection: Collection | None = None) -> MapSummary:
    """Map the images in ``inputs`` (files and folders) into folder ``out``.

    encoder: "raw" (default), "pca", "contrastive" or "vae" (see :func:`encode`); weights:
    a weights file for the learned encoders instead of the shipped one. crop:
    "center", "downsample" or "tiles" (see :mod:`em_accel.embed.crops`). sigma_aware: with the
    VAE, t-SNE affinities from the σ-aware distance. dihedral: nearest images (the page's
    neighbours, :func:`search_files`) match any rotation/flip (each item scored by the nearest
    of its 8 dihedral transforms' features). Raises ValueError if fewer than 5 images
    remain after skipping bad files (the skipped list is still written).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    col = collection if collection is not None else read_collection(inputs, crop, progress=progress)
    t["read"] = time.perf_counter() - t0
    (out / SKIPPED).write_text(json.dumps([{"path": p, "reason": r} for p, r in col.skipped], indent=1))
    if len(col) < 5:
        raise ValueError(f"only {len(col)} usable images (need >= 5); {len(col.skipped)} "
                         f"skipped, see {out / SKIPPED}")
    t0 = time.perf_counter()
    model = _model(encoder, weights, device)
    feats = encode(col.crops, model, device=device, progress=progress)
    views = None
    if dihedral:
        views = encode_views(col.crops, model, device=device, state=feats.state,
                             progress=progress).features
    t["encode"] = time.perf_counter() - t0
    sigma = feats.sigma if sigma_aware else None
    res = build_map(feats.features, sigma=sigma, perplexity=perplexity, n_iter=n_iter,
                    device=device, seed=seed, views=views, progress=progress)
    t.update(res.timings)
    t0 = time.perf_counter()
    info = {"encoder": encoder, "weights": None if weights is None else str(Path(weights).resolve()),
            "crop": crop, "sigma_aware": sigma is not None,
            "dihedral": dihedral, "raw_standardised": encoder == "raw",
            "perplexity": perplexity, "n_iter": n_iter, "seed": seed, "kl": res.kl}
    index = Index(feats.features, sigma=feats.sigma, embedding=res.embedding,
                  uniform=res.uniform, names=col.names, metadata=col.metadata, info=info,
                  view_permutations=_view_permutations(encoder, dihedral))
    index.save(out)
    if feats.state:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in feats.state.items()}, str(out / "encoder_state.safetensors"))
    write_png(out / PNG, col.crops, res.uniform)
    write_html(out / HTML, col.crops, res, col.names, col.metadata,
               title=title or f"{len(col)} images ({encoder})")
    t["write"] = time.perf_counter() - t0
    return MapSummary(out, len(col), col.skipped, t, res.kl)


def _view_permutations(encoder: str, dihedral: bool) -> torch.Tensor | None:
    """Raw pixels' dihedral views permute the features: the index's factorised search uses it."""
    return dihedral_permutations(RAW_SIDE) if encoder == "raw" and dihedral else None


def _model(encoder: str, weights, device):
    """What :func:`encode` takes for ``encoder``: a loaded network for the learned encoders."""
    if encoder in ("contrastive", "vae"):
        return load_pretrained(encoder, device, path=weights)
    return encoder


@dataclass
class SearchHit:
    query: str
    neighbours: list[dict[str, Any]]   # name, distance, metadata, rank
    map_xy: list[float] | None         # placement in the uniformly separated map


def search_files(queries: Sequence[str | Path], index_dir: str | Path, k: int = 5, *,
                 device=None, place: bool = True) -> tuple[list[SearchHit], list[tuple[str, str]]]:
    """The ``k`` nearest images in the map folder ``index_dir`` of every crop of the query
    files (cropped and encoded as the map was). Returns (hits, skipped query files)."""
    index = Index.load(index_dir, device=device)
    info = index.info
    col = read_collection(queries, info.get("crop", "center"), progress=False)
    if len(col) == 0:
        return [], col.skipped
    state = {}
    st = Path(index_dir) / "encoder_state.safetensors"
    if st.exists():
        from safetensors.torch import load_file
        state = load_file(str(st))
    encoder = info.get("encoder", DEFAULT_ENCODER)
    model = _model(encoder, info.get("weights"), device)
    # indexes written before raw features were standardised keep their plain averages
    std = bool(info.get("raw_standardised", False))
    if index.view_permutations is None:
        index.view_permutations = _view_permutations(encoder, bool(info.get("dihedral")))
    feats = encode(col.crops, model, device=device, state=state, standardise=std)
    use_sigma = info.get("sigma_aware") and feats.sigma is not None and index.sigma is not None
    q, qs = feats.features, feats.sigma
    if info.get("dihedral"):
        v = encode_views(col.crops, model, device=device, state=state, standardise=std)
        q, qs = v.features, v.sigma
    res = index.search(q, min(k, len(index)), metric="sigma" if use_sigma else "euclidean",
                       query_sigma=qs if use_sigma else None)
    xy = None
    if place and index.embedding is not None:
        at = feats.features
        if q.dim() == 3:  # place by the view (orientation) that matches the collection best
            best = torch.stack([index.search(q[:, v], 1).distances[:, 0] for v in range(8)], 1)
            at = q[torch.arange(len(q)), best.argmin(1)]
        xy = index.place(at).uniform
    hits = []
    for qi, name in enumerate(col.names):
        nbs = [{"rank": r + 1, "name": index.names[j], "distance": float(d),
                "metadata": index.metadata[j]}
               for r, (j, d) in enumerate(zip(res.indices[qi].tolist(), res.distances[qi].tolist()))]
        hits.append(SearchHit(name, nbs, None if xy is None else [float(v) for v in xy[qi]]))
    return hits, col.skipped
