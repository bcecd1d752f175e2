"""Features of 96x96 crops for maps and search: a learned encoder (contrastive or the thesis's
VAE) or a classical baseline (PCA-50 of the pixels, the raw pixels).

Shipped weights live in ``em_accel/embed/weights/`` (float16 safetensors with their config in
the metadata); :func:`load_pretrained` reads them, never pickle.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from .._api import progress_bar
from .contrastive import ContrastiveEncoder
from .vae import VAE

ENCODERS = ("contrastive", "vae", "pca", "raw")
WEIGHTS = Path(__file__).resolve().parent / "weights"
#: Shipped weights by encoder name.
PRETRAINED = {"contrastive": "map_contrastive.safetensors", "vae": "map_vae.safetensors"}
#: The default encoder of ``em-accel map`` and search: the best augmentation-retrieval score in
#: docs/maps.md (with dihedral-view queries) at our training budget.
DEFAULT_ENCODER = "raw"
#: Side of the "raw" features' grid: 96-px crops averaged 4x4.
RAW_SIDE = 24


class Features(NamedTuple):
    features: torch.Tensor        # [N, D] float32
    sigma: torch.Tensor | None    # [N, D] VAE standard deviations, else None
    state: dict[str, torch.Tensor]  # what encodes new crops the same way (PCA mean and axes)


def load_pretrained(name: str = DEFAULT_ENCODER, device=None, path: str | Path | None = None
                    ) -> nn.Module:
    """A shipped encoder ("contrastive" or "vae") in eval mode (VAE: calibrated statistics,
    so it encodes single images deterministically). ``path``: another weights file saved the
    same way (:func:`em_accel.train.save_weights` with the model's ``config``)."""
    from safetensors import safe_open

    if name not in PRETRAINED:
        raise ValueError(f"name must be one of {sorted(PRETRAINED)}, got {name!r}")
    file = Path(path) if path is not None else WEIGHTS / PRETRAINED[name]
    if not file.exists():
        raise FileNotFoundError(f"no weights at {file} (the {name!r} encoder is not shipped in "
                                f"this build; see docs/maps.md for how to train it)")
    with safe_open(str(file), framework="pt") as f:
        config = json.loads(f.metadata()["config"])
        state = {k: f.get_tensor(k).float() if f.get_tensor(k).is_floating_point() else f.get_tensor(k)
                 for k in f.keys()}
    model: nn.Module = ContrastiveEncoder(**config) if name == "contrastive" else VAE(**config)
    model.load_state_dict(state)
    return model.to(device or "cpu").eval()


#: PCA is fitted on at most this many items (evenly spaced): the N x N Gram eigenproblem stays
#: small (a 2000 x 2000 eigh takes ~1 s) however large the collection and however many pixels.
PCA_FIT_MAX = 2000


def fit_pca(x: torch.Tensor, n_components: int = 50, max_fit: int = PCA_FIT_MAX
            ) -> dict[str, torch.Tensor]:
    """Principal axes of rows of ``x`` [N, D] from at most ``max_fit`` evenly spaced rows, by
    the eigenvectors of their Gram matrix (cheap when D is large, e.g. 9216 pixels), in float64;
    each axis's sign makes its largest loading positive. Returns {"pca_mean" [D], "pca_axes"
    [k, D]} (float32, CPU), k = min(n_components, rows - 1, D)."""
    n = x.shape[0]
    rows = torch.linspace(0, n - 1, min(n, max_fit)).round().long() if n > max_fit else torch.arange(n)
    xs = x[rows.to(x.device)].double()
    mean = xs.mean(0)
    xc = xs - mean
    k = max(1, min(n_components, xc.shape[0] - 1, xc.shape[1]))
    evals, evecs = torch.linalg.eigh(xc @ xc.T)
    order = torch.argsort(evals, descending=True)[:k]
    axes = (xc.T @ evecs[:, order]) / evals[order].clamp_min(1e-30).sqrt()   # [D, k]
    axes = axes.T
    big = axes.abs().argmax(1)
    signs = torch.sign(axes.gather(1, big[:, None]))
    axes = axes * torch.where(signs == 0, torch.ones_like(signs), signs)
    return {"pca_mean": mean.float().cpu(), "pca_axes": axes.float().cpu()}


def dihedral_views(crops: torch.Tensor) -> torch.Tensor:
    """The 8 dihedral transforms (rotations and flips) of each crop: [N, 96, 96] ->
    [N * 8, 96, 96], the 8 views of crop i at rows 8i .. 8i + 7 (identity first)."""
    from ..data.augment import dihedral

    x = crops if crops.dim() == 3 else crops[:, 0]
    return torch.stack([dihedral(x, k) for k in range(8)], 1).reshape(-1, *x.shape[-2:])


def encode_views(crops: torch.Tensor, encoder: str | nn.Module = DEFAULT_ENCODER, *,
                 state: dict[str, torch.Tensor] | None = None, device=None, chunk: int = 1024,
                 progress: bool = False, standardise: bool = True) -> Features:
    """Features of the 8 dihedral views of each crop: ``features`` [N, 8, D] (and ``sigma``
    [N, 8, D] for the VAE), encoded ``chunk`` crops at a time (8 x chunk images in memory, not
    8 x N). For "raw" the views are taken of the 24x24 averages (averaging and
    standardisation commute with rotations and flips), so it costs one encoding; ``standardise``
    as in :func:`encode`."""
    x = _crops4(crops)
    n = x.shape[0]
    if isinstance(encoder, str) and encoder == "raw":
        f = raw_features(x, standardise).reshape(n, RAW_SIDE, RAW_SIDE)
        return Features(dihedral_views(f).reshape(n, 8, -1), None, dict(state or {}))
    feats, sigmas = [], []
    for i0 in progress_bar(range(0, n, chunk), progress, desc="views"):
        r = encode(dihedral_views(x[i0:i0 + chunk]), encoder, device=device, state=state)
        m = min(chunk, n - i0)
        feats.append(r.features.reshape(m, 8, -1))
        if r.sigma is not None:
            sigmas.append(r.sigma.reshape(m, 8, -1))
    return Features(torch.cat(feats), torch.cat(sigmas) if sigmas else None, dict(state or {}))


def raw_features(crops: torch.Tensor, standardise: bool = True) -> torch.Tensor:
    """The "raw" features of crops [N, 1, 96, 96]: 4x4 averages (24x24 = 576-d), each row
    standardised (mean 0, std 1) when ``standardise``. Standardising makes the features
    invariant to a crop's gain and offset: a low-dose crop min-max scaled by its noisy
    extremes differs from its clean original mostly by an affine intensity change, which the
    standardisation removes (recall@5 at 100 counts/px: HRTEM 0.916 -> 1.000, docs/maps.md).
    It commutes with rotations and flips. Constant crops give zeros."""
    f = torch.nn.functional.avg_pool2d(crops, crops.shape[-1] // RAW_SIDE).reshape(crops.shape[0], -1)
    if standardise:
        f = f - f.mean(1, keepdim=True)
        f = f / f.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-12)
    return f.contiguous()


def _crops4(crops: torch.Tensor) -> torch.Tensor:
    if not isinstance(crops, torch.Tensor):
        crops = torch.as_tensor(crops)
    x = crops if crops.dim() == 4 else crops[:, None]
    if x.dim() != 4 or x.shape[1] != 1 or tuple(x.shape[-2:]) != (96, 96):
        raise ValueError(f"crops must have shape [N, 96, 96] or [N, 1, 96, 96], got "
                         f"{list(crops.shape)}")
    return x.float()


@torch.no_grad()
def encode(crops: torch.Tensor, encoder: str | nn.Module = DEFAULT_ENCODER, *, device=None,
           batch_size: int = 256, n_components: int = 50,
           state: dict[str, torch.Tensor] | None = None, progress: bool = False,
           standardise: bool = True) -> Features:
    """Features of ``crops`` [N, 96, 96] (values in [0, 1]).

    encoder: "contrastive" / "vae" (shipped weights) or a loaded model (a
    :class:`ContrastiveEncoder` or a :class:`VAE`, used as is in eval mode); "pca" =
    ``n_components`` principal components of the pixels (:func:`fit_pca` on these crops
    unless ``state`` holds a fitted ``pca_mean``/``pca_axes``); "raw" = the pixels area-averaged
    to 24x24 (576-d: 4x4 averaging suppresses shot noise; as good as 48x48 for retrieval),
    each crop's 576 values standardised to mean 0, std 1 (``standardise``; False: the
    averages as they are, as indexes built before this change). device: where to encode
    (None: the crops' device); bfloat16 autocast on CUDA.
    """
    x = _crops4(crops)
    device = torch.device(device) if device is not None else x.device
    n = x.shape[0]
    state = dict(state or {})
    if isinstance(encoder, str) and encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS} or a model, got {encoder!r}")
    if encoder == "raw":
        return Features(raw_features(x, standardise), None, state)
    if encoder == "pca":
        flat = x.reshape(n, -1).to(device)
        if "pca_mean" not in state:
            state = fit_pca(flat, n_components)
        f = (flat - state["pca_mean"].to(flat)) @ state["pca_axes"].to(flat).T
        return Features(f.float().cpu(), None, state)
    model = load_pretrained(encoder, device) if isinstance(encoder, str) else encoder.to(device).eval()
    feats, sigmas = [], []
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else \
        torch.autocast("cpu", enabled=False)
    for i0 in progress_bar(range(0, n, batch_size), progress, desc="encode"):
        xb = x[i0:i0 + batch_size].to(device)
        with amp:
            if isinstance(model, VAE):
                enc = model.encode(xb, mode="frozen")
                feats.append(enc.mu.float().cpu())
                sigmas.append(enc.sigma.float().cpu())
            else:
                feats.append(model.encode(xb).float().cpu())
    f = torch.cat(feats) if feats else torch.zeros(0, getattr(model, "latent", 64))
    s = torch.cat(sigmas) if sigmas else None
    return Features(f, s, state)
