"""Figure of scan policies: each path over its completion, and the completion's error."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def plot_policy_comparison(target: torch.Tensor,
                           panels: Sequence[tuple[str, torch.Tensor, torch.Tensor, float]]):
    """target [H, W]; panels: (name, positions [P, 2] (row, col) [px], completion [H, W], RMS).
    Returns a matplotlib Figure: the target, then per strategy its path over its completion and
    the absolute error (one colour scale for all error maps)."""
    from .plot import _pyplot

    plt = _pyplot()
    n = len(panels)
    fig, axes = plt.subplots(1, 1 + 2 * n, figsize=(2.6 * (1 + 2 * n), 3.2))
    H, W = target.shape
    t = target.detach().cpu().numpy()
    lo, hi = float(t.min()), float(t.max())
    axes[0].imshow(t, cmap="gray", vmin=lo, vmax=hi, extent=(0, W, H, 0))
    axes[0].set_title("specimen (blurred crop)", fontsize=8)
    errs = [np.abs(c.detach().cpu().numpy() - t) for _, _, c, _ in panels]
    emax = max(float(e.max()) for e in errs) or 1.0
    for k, (name, pos, comp, rms) in enumerate(panels):
        ax, ax_e = axes[1 + 2 * k], axes[2 + 2 * k]
        ax.imshow(comp.detach().cpu().numpy(), cmap="gray", vmin=lo, vmax=hi, extent=(0, W, H, 0))
        p = pos.detach().cpu().numpy()
        ax.plot(p[:, 1], p[:, 0], color="tab:orange", linewidth=0.8)
        ax.plot(p[:1, 1], p[:1, 0], "o", color="tab:red", markersize=3)
        ax.set_xlim(0, W)
        ax.set_ylim(H, 0)
        ax.set_title(f"{name}\ncompletion, RMS {rms:.4f}", fontsize=8)
        ax_e.imshow(errs[k], cmap="magma", vmin=0, vmax=emax, extent=(0, W, H, 0))
        ax_e.set_title(f"{name}\n|error| (0-{emax:.2f})", fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
