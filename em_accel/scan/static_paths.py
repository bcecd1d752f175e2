"""Fixed scan paths with the adaptive-scan probe budget, for baselines and generator training.

All return probe positions (row, col) [px] on a ``side`` x ``side`` image with exactly
``budget.total`` probes (400 in the thesis's setting): an Archimedean spiral from the centre
(contiguous, probes ``step`` px apart along the curve), random walks of straight segments (the
policy's own action space), a uniform sub-grid and uniformly random points (not contiguous).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .rollout import ScanBudget, angle_path


def spiral_positions(pitch: float, budget: ScanBudget = ScanBudget()) -> torch.Tensor:
    """[P, 2] an Archimedean spiral r = pitch * phi / 2pi from the centre, probes ``step`` px
    apart along the curve; pitch [px] is the distance between turns."""
    if not pitch > 0:
        raise ValueError(f"pitch must be > 0 px, got {pitch}")
    return _spiral(float(pitch), budget).clone()


@functools.lru_cache(maxsize=256)
def _spiral(pitch: float, budget: ScanBudget) -> torch.Tensor:
    length = budget.step * (budget.total - 1)
    b = pitch / (2 * math.pi)
    # Arc length of r = b*phi is ~ b*phi^2/2 for large phi: sample densely, then resample.
    phi_max = math.sqrt(2 * length / b) + 4 * math.pi
    phi = np.linspace(0.0, phi_max, 200_000)
    r = b * phi
    y, x = r * np.sin(phi), r * np.cos(phi)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(y), np.diff(x)))])
    s = np.arange(budget.total) * budget.step
    pts = np.stack([np.interp(s, arc, y), np.interp(s, arc, x)], 1) + budget.side / 2.0
    return torch.from_numpy(pts.astype(np.float32))


def subgrid_positions(budget: ScanBudget = ScanBudget()) -> torch.Tensor:
    """[P, 2] a uniform n x m grid of pixel centres with n*m = P probes (20 x 20 for 400),
    in serpentine order (so its path length is that of the shortest raster)."""
    n = int(round(math.sqrt(budget.total)))
    while budget.total % n:
        n -= 1
    m = budget.total // n
    ys = (torch.arange(n, dtype=torch.float32) + 0.5) * budget.side / n
    xs = (torch.arange(m, dtype=torch.float32) + 0.5) * budget.side / m
    g = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1)
    g[1::2] = g[1::2].flip(1)
    return g.reshape(-1, 2)


def random_walk_angles(n: int, budget: ScanBudget = ScanBudget(), *,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """[n, T] random segment directions (first fixed): half uniform angles, half a turning
    walk a_t = a_{t-1} + N(0, s^2) with s ~ U(0.3, 2) rad."""
    T = budget.segments
    uni = (torch.rand(n, T, generator=generator) * 2 - 1) * math.pi
    s = 0.3 + 1.7 * torch.rand(n, 1, generator=generator)
    turn = budget.first_angle + torch.cumsum(s * torch.randn(n, T, generator=generator), 1)
    use_turn = torch.rand(n, 1, generator=generator) < 0.5
    a = torch.where(use_turn, turn, uni)
    a[:, 0] = budget.first_angle
    return a


def random_points(n: int, budget: ScanBudget = ScanBudget(), *,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """[n, P, 2] uniformly random probe positions."""
    return torch.rand(n, budget.total, 2, generator=generator) * budget.side


def path_length(positions: torch.Tensor) -> torch.Tensor:
    """Length [px] of the path visiting positions [..., P, 2] in order."""
    return (positions[..., 1:, :] - positions[..., :-1, :]).norm(dim=-1).sum(-1)


MIXED_FAMILIES = ("walk", "spiral", "grid", "points")


def mixed_positions(n: int, budget: ScanBudget = ScanBudget(), *,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """[n, P, 2] a random mixture of path families (random walks, spirals of random pitch
    4-20 px, jittered sub-grids, random points), to train a generator that serves them all."""
    fam = torch.randint(len(MIXED_FAMILIES), (n,), generator=generator)
    out = angle_path(random_walk_angles(n, budget, generator=generator), budget)
    pitches = (8 + 32 * torch.rand(n, generator=generator)).round() / 2  # 4-20 px, cached
    grid = subgrid_positions(budget)
    pts = random_points(n, budget, generator=generator)
    for k in range(n):
        if fam[k] == 1:
            out[k] = spiral_positions(float(pitches[k]), budget)
        elif fam[k] == 2:
            out[k] = grid + (torch.rand(1, 2, generator=generator) - 0.5) * budget.side / 20
        elif fam[k] == 3:
            out[k] = pts[k]
    return out
