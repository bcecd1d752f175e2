"""The thesis's t-SNE figure styles: a scatter map, and images drawn at random map points."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _normalise(y: np.ndarray) -> np.ndarray:
    lo, hi = y.min(0), y.max(0)
    return (y - lo) / np.where(hi > lo, hi - lo, 1.0)


def plot_map(y, labels=None, path: str | Path | None = None, point_size: float = 1.0,
             title: str | None = None, dpi: int = 150):
    """Scatter map of an embedding ``y`` [N, 2]: small dots, no axes, coloured by ``labels``
    [N] if given. Saves to ``path`` (PNG/PDF/...) when given; returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    y = _np(y)
    if y.ndim != 2 or y.shape[1] != 2:
        raise ValueError(f"y must have shape [N, 2], got {list(y.shape)}")
    fig, ax = plt.subplots(figsize=(6, 6), dpi=dpi)
    c = None if labels is None else _np(labels)
    ax.scatter(y[:, 0], y[:, 1], s=point_size, c=c, cmap="tab10" if c is not None else None,
               linewidths=0, rasterized=True, color=None if c is not None else "k")
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
        plt.close(fig)
    return fig


def image_grid(y, images, n: int = 500, size: int = 2048, thumb: int | None = None,
               seed: int = 0) -> np.ndarray:
    """Canvas [size, size] (or [size, size, 3]) with ``n`` random images drawn at their map
    points (the thesis's image maps). ``images`` [N, H, W] or [N, H, W, 3], any range (each
    image is min-max scaled); later images overwrite earlier ones; empty canvas is white."""
    y = _normalise(_np(y).astype(np.float64))
    imgs = _np(images)
    if imgs.shape[0] != y.shape[0]:
        raise ValueError(f"images has {imgs.shape[0]} entries but y has {y.shape[0]} points")
    if imgs.ndim not in (3, 4):
        raise ValueError(f"images must be [N, H, W] or [N, H, W, 3], got {list(imgs.shape)}")
    rng = np.random.default_rng(seed)
    pick = rng.choice(y.shape[0], size=min(n, y.shape[0]), replace=False)
    thumb = thumb or max(8, int(size / np.sqrt(max(len(pick), 1)) * 0.9))
    colour = imgs.ndim == 4
    canvas = np.ones((size, size, 3) if colour else (size, size), dtype=np.float32)
    for i in pick:
        im = imgs[i].astype(np.float32)
        lo, hi = im.min(), im.max()
        im = (im - lo) / (hi - lo) if hi > lo else np.zeros_like(im)
        rows = (np.arange(thumb) * im.shape[0] / thumb).astype(int)  # nearest-neighbour resize
        cols = (np.arange(thumb) * im.shape[1] / thumb).astype(int)
        im = im[rows][:, cols]
        x0 = int(y[i, 0] * (size - thumb))
        y0 = int((1.0 - y[i, 1]) * (size - thumb))  # map y up, image rows down
        canvas[y0:y0 + thumb, x0:x0 + thumb] = im
    return canvas


def plot_image_grid(y, images, path: str | Path, n: int = 500, size: int = 2048,
                    seed: int = 0) -> np.ndarray:
    """Save :func:`image_grid` to ``path`` (grey or RGB PNG); returns the canvas."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    canvas = image_grid(y, images, n=n, size=size, seed=seed)
    plt.imsave(path, canvas, cmap="gray" if canvas.ndim == 2 else None, vmin=0, vmax=1)
    return canvas
