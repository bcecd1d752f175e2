"""Comparing scan strategies with one generator, one probe budget and the same images.

Strategies (all ``budget.total`` probes): learned actors (run in the native environment), a
fixed path (angles), the best-pitch spiral, the best of many fixed random walks, a uniform
sub-grid, and a SLADS-style greedy selection (the generator completes the probes so far; the
next probes go where the completion varies most locally and no probe is near). Errors are RMS
per image against the blurred crop (crops in [-1, 1]); differences are paired, with bootstrap
95% intervals.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..ops.scan import scan_rasterize
from ..train.metrics import Comparison, paired_bootstrap
from .rollout import ScanBudget, angle_path, env_rollout, partial_input, scan_fixed
from .static_paths import path_length, random_walk_angles, spiral_positions

PositionsFn = Callable[[torch.Tensor], torch.Tensor]  # images [B, H, W] -> positions [B, P, 2]


@torch.no_grad()
def completion_rms(generator, images: torch.Tensor, positions: torch.Tensor,
                   batch: int = 64) -> torch.Tensor:
    """[N] RMS error of the generator's completion of each image scanned at positions
    ([P, 2] or [N, P, 2]), in the images' units."""
    out = []
    for s in range(0, images.shape[0], batch):
        x = images[s:s + batch]
        pos = positions if positions.dim() == 2 else positions[s:s + batch]
        pred = completion(generator, x, pos)
        out.append(((pred - x) ** 2).mean(dim=(1, 2)).sqrt())
    return torch.cat(out)


def completion(generator, images: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """[B, H, W] float32 completion of images scanned at positions ([P, 2] or [B, P, 2]), in
    eval mode, without gradients (bf16 autocast on CUDA)."""
    with torch.no_grad(), torch.autocast("cuda", torch.bfloat16, enabled=images.is_cuda):
        generator.eval()
        partial = partial_input(images, positions.to(images.device))
        return generator(partial)[:, 0].float()


def best_spiral(generator, images: torch.Tensor, budget: ScanBudget = ScanBudget(),
                pitches=tuple(np.arange(3.0, 24.5, 1.5))) -> tuple[float, torch.Tensor]:
    """(pitch [px], positions [P, 2]) of the spiral with the lowest mean RMS on images."""
    errs = [completion_rms(generator, images, spiral_positions(float(p), budget)).mean().item()
            for p in pitches]
    p = float(pitches[int(np.argmin(errs))])
    return p, spiral_positions(p, budget)


def best_random_walk(generator, images: torch.Tensor, budget: ScanBudget = ScanBudget(),
                     tries: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(angles [T], positions [P, 2]) of the best of ``tries`` fixed random walks on images."""
    g = torch.Generator().manual_seed(seed)
    angles = random_walk_angles(tries, budget, generator=g)
    errs = [completion_rms(generator, images, angle_path(a[None], budget)[0]).mean().item()
            for a in angles]
    k = int(np.argmin(errs))
    return angles[k], angle_path(angles[k:k + 1], budget)[0]


@torch.no_grad()
def slads_positions(generator, images: torch.Tensor, budget: ScanBudget = ScanBudget(), *,
                    rounds: int | None = None, exclusion: int = 2) -> torch.Tensor:
    """[B, P, 2] SLADS-style greedy probes: the fixed first segment, then ``rounds`` - 1
    rounds of equal size; each round completes the scan so far and picks the pixels with the
    largest (local std of the completion + gradient magnitude) x (1 - exp(-d^2/8)), d the
    distance [px] to the nearest probe, keeping ``exclusion`` px between picks of a round."""
    B, side = images.shape[0], budget.side
    rounds = rounds or budget.segments
    per = budget.total // rounds
    first = angle_path(torch.full((1, budget.segments), budget.first_angle), budget)[0, :per]
    pos = first[None].expand(B, -1, -1).to(images)
    rows = torch.arange(side, device=images.device).repeat_interleave(side).to(images.dtype)
    cols = torch.arange(side, device=images.device).repeat(side).to(images.dtype)
    for _ in range(1, rounds):
        pred = generator(partial_input(images, pos))
        mean = F.avg_pool2d(pred, 5, 1, 2, count_include_pad=False)
        var = F.avg_pool2d(pred ** 2, 5, 1, 2, count_include_pad=False) - mean ** 2
        gy, gx = torch.gradient(pred[:, 0], dim=(1, 2))
        score = var[:, 0].clamp(min=0).sqrt() + (gy ** 2 + gx ** 2).sqrt()
        src = scan_rasterize(torch.zeros(pos.shape[:2], dtype=images.dtype, device=images.device), pos,
                             (side, side)).source.reshape(B, -1)
        d2 = (rows - (src // side).to(images.dtype)) ** 2 + (cols - (src % side).to(images.dtype)) ** 2
        score = score.reshape(B, -1) * (1 - torch.exp(-d2 / 8.0))
        picks = []
        for _ in range(per):
            k = score.argmax(1)
            picks.append(torch.stack([k // side, k % side], 1).to(images.dtype) + 0.5)
            r, c = k // side, k % side
            near = (((rows[None] - r[:, None]).abs() <= exclusion)
                    & ((cols[None] - c[:, None]).abs() <= exclusion))
            score = score.masked_fill(near, -1.0)
        pos = torch.cat([pos, torch.stack(picks, 1)], 1)
    return pos


def actor_positions(actor, budget: ScanBudget = ScanBudget(), batch: int = 64) -> PositionsFn:
    def fn(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([env_rollout(actor, images[s:s + batch], budget)[0].positions
                              for s in range(0, images.shape[0], batch)])
    return fn


def mean_path_length(positions: torch.Tensor) -> float:
    return float(path_length(positions).mean())


def evaluate_strategies(generator, images: torch.Tensor, strategies: dict[str, PositionsFn | torch.Tensor]
                        ) -> dict[str, dict]:
    """{name: {"rms": [N] per-image RMS, "path_length": px, "positions": first image's}}."""
    out = {}
    for name, s in strategies.items():
        pos = s if isinstance(s, torch.Tensor) else s(images)
        out[name] = {"rms": completion_rms(generator, images, pos),
                     "path_length": mean_path_length(pos),
                     "positions": (pos if pos.dim() == 2 else pos[0]).clone()}
    return out


__all__ = ["Comparison", "actor_positions", "best_random_walk", "best_spiral", "completion",
           "completion_rms", "evaluate_strategies", "paired_bootstrap", "scan_fixed",
           "slads_positions"]
