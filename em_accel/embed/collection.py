"""A collection of micrographs read from microscope files, as 96x96 crops with names and
metadata. Files that cannot be used are reported (path and reason) and skipped, never fatal."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from .._api import progress_bar
from .crops import CROP_MODES, image_crops

#: Slices read from one stack file at most (evenly spaced), so one huge stack cannot swamp a map.
MAX_SLICES = 16


@dataclass
class Collection:
    """Crops [N, 96, 96] in [0, 1] with one name and one metadata dict per crop, and the files
    that were skipped as (path, reason)."""

    crops: torch.Tensor
    names: list[str]
    metadata: list[dict[str, Any]]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return self.crops.shape[0]


def list_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Files named in ``inputs``, with folders searched recursively for readable suffixes
    (sorted, so the order is reproducible). Missing paths are kept (reported when read)."""
    from ..io import READ_SUFFIXES

    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = [Path(root) / f for root, _, files in os.walk(p) for f in files
                     if Path(f).suffix.lower() in READ_SUFFIXES and not f.startswith(".")]
            out += sorted(found)
        else:
            out.append(p)
    return out


def _planes(data: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """2-D planes of a file's array: an image, RGB(A) to luminance, or up to MAX_SLICES slices
    of a stack (evenly spaced)."""
    a = np.asarray(data)
    if a.ndim == 2:
        return [("", a)]
    if a.ndim == 3 and a.shape[-1] in (3, 4) and a.shape[0] > 4:
        return [("", a[..., :3].astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722]))]
    if a.ndim == 3:
        picks = np.unique(np.linspace(0, a.shape[0] - 1, min(a.shape[0], MAX_SLICES)).round().astype(int))
        return [(f"[{i}]", a[i]) for i in picks]
    raise ValueError(f"data of shape {list(a.shape)} is not an image or a stack of images")


def read_collection(inputs: Sequence[str | Path] | Iterable[str | Path], mode: str = "center",
                    progress: bool = True) -> Collection:
    """Read every file (or folder, recursively) in ``inputs`` through
    :func:`em_accel.io.read_image` and cut each image into crops by ``mode`` (see
    :mod:`em_accel.embed.crops`). Unreadable files, unsupported formats, NaN/infinite pixels,
    constant images and images too small for the mode are listed in ``skipped`` with the reason.

    Metadata per crop: ``file``, ``shape`` (of the plane) and, where the file says,
    ``pixel_size_A`` [Å], ``format``, plus ``slice``/``tile`` indices.
    """
    from ..io import read_image

    if mode not in CROP_MODES:
        raise ValueError(f"mode must be one of {CROP_MODES}, got {mode!r}")
    files = list_files(list(inputs))
    crops: list[torch.Tensor] = []
    names: list[str] = []
    meta: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    for path in progress_bar(files, progress, desc="read"):
        try:
            mg = read_image(path)
            planes = _planes(mg.data)
        except Exception as exc:  # any reader failure is this file's problem, not the run's
            skipped.append((str(path), f"{type(exc).__name__}: {exc}"))
            continue
        for tag, plane in planes:
            try:
                plane = np.asarray(plane, dtype=np.float32)
                if plane.size and np.isfinite(plane).all() and plane.max() == plane.min():
                    raise ValueError("constant image")
                c = image_crops(plane, mode)
            except (ValueError, TypeError) as exc:
                skipped.append((f"{path}{tag}", str(exc)))
                continue
            for t in range(c.shape[0]):
                name = f"{path.name}{tag}" + (f"#{t}" if c.shape[0] > 1 else "")
                m: dict[str, Any] = {"file": str(path), "shape": list(plane.shape),
                                     "format": mg.format}
                if mg.pixel_size:
                    m["pixel_size_A"] = float(mg.pixel_size)
                if tag:
                    m["slice"] = int(tag[1:-1])
                if c.shape[0] > 1:
                    m["tile"] = t
                names.append(name)
                meta.append(m)
            crops.append(c)
    out = torch.cat(crops) if crops else torch.zeros(0, 96, 96)
    return Collection(out, names, meta, skipped)
