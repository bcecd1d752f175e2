"""Plots of scan paths over their images (needs matplotlib: ``pip install em-accel[demo]``).

``plot_coverages`` reproduces the layout of the thesis's figure 1 of ch. 4: spiral and jittered
gridlike paths at 1/10, 1/20, 1/40 and 1/100 px coverage over one micrograph.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from .paths import ScanPath, make_path

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

THESIS_COVERAGES = (1 / 10, 1 / 20, 1 / 40, 1 / 100)


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("em_accel.scan.plot needs matplotlib: pip install em-accel[demo]") from exc
    return plt


def _as_numpy(image: torch.Tensor):
    return torch.as_tensor(image).detach().float().cpu().numpy()


def plot_path(path: ScanPath, image: torch.Tensor | None = None, ax: "Axes | None" = None,
              *, color: str = "tab:orange", linewidth: float = 0.6, title: str | None = None,
              jump: float = 3.0
              ) -> "Axes":
    """Draw ``path`` (in scan order) over ``image`` [H, W] on ``ax`` (a new figure if None).

    Pixel (i, j) covers [j, j+1) x [i, i+1) on the axes, so probe positions (row, col) plot at
    (x = col, y = row) without offsets.
    """
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    H, W = path.shape
    if image is not None:
        ax.imshow(_as_numpy(image), cmap="gray", extent=(0, W, H, 0), interpolation="nearest")
    pos = path.positions.detach().cpu().double().numpy()
    # Break the line at jumps (flyback between channels or sets) longer than `jump` px.
    import numpy as np

    gap = np.flatnonzero(np.hypot(*np.diff(pos, axis=0).T) > jump) + 1
    pos = np.insert(pos, gap, np.nan, axis=0)
    sparse_points = path.kind in ("grid", "random")  # isolated probes: draw markers
    ax.plot(pos[:, 1], pos[:, 0], color=color, linewidth=linewidth,
            marker="." if sparse_points else None, markersize=2 if sparse_points else None)
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title if title is not None else
                 f"{path.kind}, 1/{1 / path.coverage:.1f} px", fontsize=9)
    return ax


def plot_coverages(image: torch.Tensor, kinds: Sequence[str] = ("spiral", "gridlike"),
                   coverages: Sequence[float] = THESIS_COVERAGES, seed: int = 0) -> "Figure":
    """One row per path kind, one column per coverage, each path over ``image`` [H, W]."""
    plt = _pyplot()
    H, W = image.shape[-2:]
    fig, axes = plt.subplots(len(kinds), len(coverages), figsize=(2.6 * len(coverages),
                                                                 2.6 * len(kinds)), squeeze=False)
    for r, kind in enumerate(kinds):
        for c, cov in enumerate(coverages):
            path = make_path(kind, (H, W), cov, seed=seed)
            plot_path(path, image, axes[r][c], title=f"{kind} 1/{round(1 / cov)} "
                      f"(got 1/{1 / path.coverage:.1f})")
    fig.tight_layout()
    return fig


def plot_partial_scan(image: torch.Tensor, path: ScanPath, sparse: torch.Tensor,
                      infilled: torch.Tensor) -> "Figure":
    """Three panels: the path over the image, the sparse scan, its nearest-neighbour infill."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.6))
    plot_path(path, image, axes[0])
    for ax, data, title in ((axes[1], sparse, "partial scan"), (axes[2], infilled, "infilled")):
        ax.imshow(_as_numpy(data), cmap="gray", interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
