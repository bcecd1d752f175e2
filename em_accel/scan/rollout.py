"""Differentiable scans of straight segments, bilinear splatting, and policy rollouts.

The adaptive-scan action space (thesis ch. 5): an episode is ``segments`` straight segments of
``probes`` probes ``step`` px apart, starting at the image centre, the first segment at a fixed
angle; segment k starts where segment k-1 would have placed its next probe. Angles [rad] are
measured from the +row axis towards +col, as in :class:`em_accel.scan.AdaptiveScanEnv`, and
:func:`angle_path` reproduces that environment's positions exactly, but as a differentiable
function of the angles. With bilinear sampling (:func:`em_accel.ops.scan_sample`, whose
gradient reaches the positions) and :func:`splat` (a bilinear rasteriser, differentiable in
values and positions), a completion loss can be backpropagated to the angles, so a path or a
policy can be trained by gradient descent without a critic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..ops.scan import scan_sample


@dataclass(frozen=True)
class ScanBudget:
    """The probe budget and geometry of an episode (defaults: the thesis's setting)."""

    side: int = 96             # image side [px]
    segments: int = 20         # T, the fixed first one included
    probes: int = 20           # S, per segment
    step: float = math.sqrt(2.0)  # probe spacing [px]
    first_angle: float = math.pi / 4  # [rad]

    @property
    def total(self) -> int:
        return self.segments * self.probes

    @property
    def coverage(self) -> float:
        """Probes per pixel (1/23.04 in the thesis's setting)."""
        return self.total / self.side ** 2


class Rollout(NamedTuple):
    angles: torch.Tensor     # [B, T] segment directions [rad], the fixed first one included
    positions: torch.Tensor  # [B, T*S, 2] probe positions (row, col) [px]
    values: torch.Tensor     # [B, T*S] probe values


def angle_path(angles: torch.Tensor, budget: ScanBudget = ScanBudget()) -> torch.Tensor:
    """Probe positions [B, T*S, 2] of segments at ``angles`` [B, T] (first angle included).

    Differentiable in the angles. Probe i of segment k is start_k + i * step * (cos a_k,
    sin a_k), start_0 the centre and start_{k+1} = start_k + S * step * (cos a_k, sin a_k).
    """
    if angles.dim() != 2 or angles.shape[1] != budget.segments:
        raise ValueError(f"angles must have shape [B, {budget.segments}], got {list(angles.shape)}")
    if not torch.isfinite(angles).all():
        raise ValueError("angles must be finite")
    d = budget.step * torch.stack([torch.cos(angles), torch.sin(angles)], -1)  # [B, T, 2]
    centre = budget.side / 2.0
    starts = centre + torch.cumsum(budget.probes * d, 1) - budget.probes * d  # [B, T, 2]
    i = torch.arange(budget.probes, dtype=angles.dtype, device=angles.device)
    pos = starts[:, :, None, :] + i[None, None, :, None] * d[:, :, None, :]
    return pos.reshape(angles.shape[0], -1, 2)


def segment_starts(angles: torch.Tensor, budget: ScanBudget = ScanBudget()) -> torch.Tensor:
    """[B, T+1, 2] start of every segment and the end of the last one [px]."""
    d = budget.step * budget.probes * torch.stack([torch.cos(angles), torch.sin(angles)], -1)
    centre = torch.full_like(d[:, :1], budget.side / 2.0)
    return torch.cat([centre, centre + torch.cumsum(d, 1)], 1)


def edge_penalties(angles: torch.Tensor, budget: ScanBudget = ScanBudget(),
                   penalty: float = 0.05) -> torch.Tensor:
    """[B, T-1] the environment's edge penalty of each chosen step: ``penalty`` when the next
    start leaves [0, side]^2."""
    ends = segment_starts(angles, budget)[:, 2:]
    out = ((ends < 0) | (ends > budget.side)).any(-1)
    return out.to(angles.dtype) * penalty


def outside_distance(positions: torch.Tensor, side: int) -> torch.Tensor:
    """[B] mean distance of the probes outside [0, side]^2 [px]: a soft, differentiable edge
    penalty for gradient-trained paths (the environment's is a step function)."""
    return (torch.relu(-positions) + torch.relu(positions - side)).sum(-1).mean(-1)


def splat(values: torch.Tensor, positions: torch.Tensor, side: int) -> torch.Tensor:
    """Bilinear splatting of probes onto a side x side grid: [B, 2, side, side].

    Each probe spreads weight 1 over the 4 pixel centres around it (centres at k + 0.5, positions
    clamped to the outermost centres). Channel 1 (mask) is min(weight sum, 1); channel 0 is the
    weighted mean value where the weight sum is >= 1 and value x weight below, so
    channel0 / channel1 is the local mean value. Differentiable in values and positions.
    """
    B, P = values.shape
    c = (positions - 0.5).clamp(0, side - 1)
    i0 = c.detach().floor().clamp(max=side - 2)
    f = c - i0
    i0 = i0.long()
    acc_v = values.new_zeros(B, side * side)
    acc_w = values.new_zeros(B, side * side)
    for dy in (0, 1):
        wy = f[..., 0] if dy else 1 - f[..., 0]
        for dx in (0, 1):
            wx = f[..., 1] if dx else 1 - f[..., 1]
            w = wy * wx
            idx = (i0[..., 0] + dy) * side + i0[..., 1] + dx
            acc_w = acc_w.scatter_add(1, idx, w)
            acc_v = acc_v.scatter_add(1, idx, w * values)
    image = acc_v / acc_w.clamp(min=1.0)
    mask = acc_w.clamp(max=1.0)
    return torch.stack([image, mask], 1).reshape(B, 2, side, side)


def scan_fixed(images: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Bilinear probe values [B, P] of images [B, H, W] at positions [P, 2] or [B, P, 2]."""
    if positions.dim() == 2:
        positions = positions[None].expand(images.shape[0], -1, -1)
    return scan_sample(images, positions.to(images.dtype), "bilinear")


def partial_input(images: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The generator's input [B, 2, H, W] for a scan of images at positions ([P,2] or [B,P,2])."""
    if positions.dim() == 2:
        positions = positions[None].expand(images.shape[0], -1, -1)
    return splat(scan_fixed(images, positions), positions, images.shape[-1])


def wrap_angle(a: torch.Tensor) -> torch.Tensor:
    """Wrap angles into (-pi, pi]."""
    return math.pi - torch.remainder(math.pi - a, 2 * math.pi)


def actor_rollout(actor, images: torch.Tensor, budget: ScanBudget = ScanBudget(), *,
                  noise_sigma: float = 0.0, noise_theta: float = 0.1,
                  generator: torch.Generator | None = None) -> Rollout:
    """Scan images [B, side, side] with a recurrent actor, one segment at a time.

    Differentiable end to end when grad is enabled (positions from angles, values by bilinear
    sampling), so a completion loss reaches the actor's weights through the positions and the
    observations. ``noise_sigma`` > 0 adds the thesis's Ornstein-Uhlenbeck exploration noise
    (n <- n - theta*n + sigma*N(0, 1), clipped to [-pi, pi]) to the angles, wrapped.
    """
    B = images.shape[0]
    dev, dt = images.device, images.dtype
    S, step = budget.probes, budget.step
    start = torch.full((B, 2), budget.side / 2.0, device=dev, dtype=dt)
    angle = torch.full((B,), budget.first_angle, device=dev, dtype=dt)
    state = actor.initial_state(B)
    i = torch.arange(S, device=dev, dtype=dt)
    noise = torch.zeros(B, device=dev, dtype=dt)
    angles, positions, values = [], [], []
    for t in range(budget.segments):
        if t > 0:
            angle, state = actor(values[-1], start, state)
            if noise_sigma > 0:
                noise = noise - noise_theta * noise + noise_sigma * torch.randn(
                    B, dtype=dt, generator=generator).to(dev)  # CPU generator on any device
                noise = noise.clamp(-math.pi, math.pi)
                angle = wrap_angle(angle + noise)
        d = step * torch.stack([torch.cos(angle), torch.sin(angle)], -1)
        pos = start[:, None, :] + i[None, :, None] * d[:, None, :]
        values.append(scan_sample(images, pos, "bilinear"))
        positions.append(pos)
        angles.append(angle)
        start = start + S * d
    return Rollout(torch.stack(angles, 1), torch.cat(positions, 1), torch.cat(values, 1))


@torch.no_grad()
def env_rollout(actor, images: torch.Tensor, budget: ScanBudget = ScanBudget(), *,
                edge_penalty: float = 0.05, noise_sigma: float = 0.0, noise_theta: float = 0.1,
                generator: torch.Generator | None = None) -> tuple[Rollout, torch.Tensor]:
    """Scan images [B, side, side] with an actor in the native :class:`AdaptiveScanEnv`
    (bilinear sampling, no gradients): (Rollout, edge penalties [B, T-1]). Same positions and
    values as :func:`actor_rollout`, one native call per segment."""
    from .env import AdaptiveScanEnv

    B = images.shape[0]
    env = AdaptiveScanEnv(images, segments=budget.segments, probes=budget.probes,
                          step=budget.step, first_angle=budget.first_angle,
                          edge_penalty=edge_penalty, mode="bilinear")
    seg = env.reset()
    state = actor.initial_state(B)
    noise = torch.zeros(B, device=images.device, dtype=images.dtype)
    angles = [torch.full((B,), budget.first_angle, device=images.device, dtype=images.dtype)]
    last = seg.values
    for _ in range(1, budget.segments):
        a, state = actor(last, env.start.clone(), state)
        if noise_sigma > 0:
            noise = (noise - noise_theta * noise + noise_sigma * torch.randn(
                B, dtype=images.dtype, generator=generator).to(images.device)
                ).clamp(-math.pi, math.pi)
            a = wrap_angle(a + noise)
        angles.append(a)
        last = env.step(a).values
    values, positions = env.observed()
    return (Rollout(torch.stack(angles, 1), positions.clone(), values.clone()),
            env.episode_penalties()[:, 1:].clone())
