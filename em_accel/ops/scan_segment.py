"""The adaptive-scan environment's step as a torch op: one straight segment of probes per batch
element, sampled (with optional noise), plus the next start and the edge penalty.

``em_accel::scan_segment`` is functional (it returns new episode buffers) so it can be checked
like every op; :func:`scan_segment_` is the in-place path :class:`em_accel.scan.AdaptiveScanEnv`
takes once per RL step on buffers it built and checked itself. Both run
``_native.scan.segment_{cpu,cuda}`` (csrc/scan/scan.h: ``segment_direction``,
``segment_probe``).

Geometry: probe j of element b sits at ``start[b] + j * d[b]`` (row, col) [px], with the
per-probe step ``d = step * (cos a, sin a)`` for an angle action a [rad] or ``d = action`` for a
[B, 2] step action; the next start is ``start + probes * d``; the penalty is ``edge_penalty``
when that start leaves [0, H] x [0, W]. Noise of probe (b, j) is keyed by the episode index
``b * T*S + offset + j`` (T*S = the buffers' row length), as :func:`em_accel.ops.scan_sample`.
"""
from __future__ import annotations

import math

import torch

from .. import _native
from ._common import (DTYPE_CODES, FLOAT_DTYPES, accumulate_dtype, check_same_device, check_tensor,
                      launch, native_op)
from ._registry import OpSpec
from .scan import SampleMode, noise_reference, scan_sample_reference

_OP = "em_accel::scan_segment"


def segment_params(images: torch.Tensor, probes: int, episode_probes: int, mode: int, seed: int,
                   counts_per_intensity: float, read_noise: float, step: float,
                   edge_penalty: float) -> "_native.scan.SegmentParams":
    """The native parameter block (offset and action kind are set per step)."""
    B, H, W = images.shape
    p = _native.scan.SegmentParams()
    p.batch, p.height, p.width = B, H, W
    p.probes, p.episode_probes = int(probes), int(episode_probes)
    p.mode, p.dtype = int(mode), DTYPE_CODES[images.dtype]
    p.seed, p.dose, p.read_noise = int(seed), float(counts_per_intensity), float(read_noise)
    p.step, p.edge_penalty = float(step), float(edge_penalty)
    return p


def scan_segment_(p: "_native.scan.SegmentParams", images: torch.Tensor, start: torch.Tensor,
                  actions: torch.Tensor, positions: torch.Tensor, values: torch.Tensor,
                  end: torch.Tensor, penalty: torch.Tensor, offset: int) -> None:
    """Write one segment into the episode buffers in place, unchecked: the caller built every
    tensor (contiguous, on one device, accumulation dtype) and the parameters
    (:func:`segment_params`). ``actions`` [B] are angles, [B, 2] steps."""
    p.offset, p.vector_actions = int(offset), int(actions.dim() == 2)
    launch(_native.scan, "segment", images.device, p, images.data_ptr(), start.data_ptr(),
           actions.data_ptr(), positions.data_ptr(), values.data_ptr(), end.data_ptr(),
           penalty.data_ptr(), op=_OP)


def _check(images, start, actions, positions, values, offset, probes, step, edge_penalty, mode,
           seed, counts_per_intensity, read_noise) -> None:
    check_tensor("images", images, dtypes=FLOAT_DTYPES, ndim=3)
    acc = accumulate_dtype(images.dtype)
    B = images.shape[0]
    check_tensor("start", start, dtypes=(acc,), shape=(B, 2))
    check_tensor("actions", actions, dtypes=(acc,))
    if tuple(actions.shape) not in ((B,), (B, 2)):
        raise ValueError(f"actions must have shape [{B}] (angles) or [{B}, 2] (steps), "
                         f"got {list(actions.shape)}")
    check_tensor("positions", positions, dtypes=(acc,), ndim=3)
    n = positions.shape[1]
    if positions.shape[0] != B or positions.shape[2] != 2:
        raise ValueError(f"positions must have shape [{B}, T*S, 2], got {list(positions.shape)}")
    check_tensor("values", values, dtypes=(acc,), shape=(B, n))
    check_same_device(images=images, start=start, actions=actions, positions=positions,
                      values=values)
    if not (probes >= 1 and 0 <= offset and offset + probes <= n):
        raise ValueError(f"need probes >= 1 and 0 <= offset, offset + probes <= {n} (the buffers' "
                         f"row length), got offset {offset}, probes {probes}")
    if mode not in (int(SampleMode.NEAREST), int(SampleMode.BILINEAR)):
        raise ValueError(f"mode must be 0 (nearest) or 1 (bilinear), got {mode}")
    if not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    for name, v in (("step", step), ("edge_penalty", edge_penalty),
                    ("counts_per_intensity", counts_per_intensity), ("read_noise", read_noise)):
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
    if counts_per_intensity < 0 or read_noise < 0:
        raise ValueError(f"counts_per_intensity and read_noise must be >= 0, got "
                         f"{counts_per_intensity}, {read_noise}")


@native_op(_OP)
def scan_segment(images: torch.Tensor, start: torch.Tensor, actions: torch.Tensor,
                 positions: torch.Tensor, values: torch.Tensor, offset: int, probes: int,
                 step: float, edge_penalty: float, mode: int, seed: int,
                 counts_per_intensity: float, read_noise: float
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One environment step: the episode buffers with columns offset..offset+probes-1 written.

    Args:
        images: [B, H, W] float32/float64/float16/bfloat16, contiguous.
        start: [B, 2] (row, col) of each segment's first probe [px], accumulation dtype.
        actions: [B] angles [rad] or [B, 2] per-probe steps [px].
        positions, values: episode buffers [B, T*S, 2] and [B, T*S] (not modified).
        offset, probes: first column and number S of probes of this segment.
        step: probe spacing for angle actions [px]; edge_penalty: cost when the next start
            leaves the image.
        mode, seed, counts_per_intensity, read_noise: as :func:`em_accel.ops.scan_sample`.

    Returns:
        (positions, values, end [B, 2], penalty [B]), new tensors.
    """
    _check(images, start, actions, positions, values, offset, probes, step, edge_penalty, mode,
           seed, counts_per_intensity, read_noise)
    positions, values = positions.clone(), values.clone()
    end, penalty = torch.empty_like(start), start.new_empty(start.shape[0])
    p = segment_params(images, probes, positions.shape[1], mode, seed, counts_per_intensity,
                       read_noise, step, edge_penalty)
    scan_segment_(p, images, start, actions.contiguous(), positions, values, end, penalty, offset)
    return positions, values, end, penalty


@scan_segment.register_fake
def _(images, start, actions, positions, values, offset, probes, step, edge_penalty, mode, seed,
      counts_per_intensity, read_noise):
    _check(images, start, actions, positions, values, offset, probes, step, edge_penalty, mode,
           seed, counts_per_intensity, read_noise)
    return (torch.empty_like(positions), torch.empty_like(values), torch.empty_like(start),
            start.new_empty(start.shape[0]))


def scan_segment_reference(images, start, actions, positions, values, offset, probes, step,
                           edge_penalty, mode, seed, counts_per_intensity, read_noise):
    """Reference for em_accel::scan_segment, from the geometry in the module docstring."""
    acc = positions.dtype
    H, W = images.shape[1:]
    if actions.dim() == 1:
        a = actions.to(torch.float64)
        d = (step * torch.stack([torch.cos(a), torch.sin(a)], -1)).to(acc)
    else:
        d = actions.to(acc)
    j = torch.arange(probes, dtype=acc, device=start.device)
    pos = start[:, None, :] + j[None, :, None] * d[:, None, :]
    seg = slice(offset, offset + probes)
    positions, values = positions.clone(), values.clone()
    positions[:, seg] = pos
    sampled = torch.zeros_like(values)
    sampled[:, seg] = scan_sample_reference(images, pos, mode).to(acc)
    if counts_per_intensity > 0 or read_noise > 0:  # keyed by the episode index of each probe
        sampled = noise_reference(sampled, seed, counts_per_intensity, read_noise).to(acc)
    values[:, seg] = sampled[:, seg]
    end = start + probes * d
    inside = (end[:, 0] >= 0) & (end[:, 0] <= H) & (end[:, 1] >= 0) & (end[:, 1] <= W)
    penalty = torch.where(inside, 0.0, float(edge_penalty)).to(acc)
    return positions, values, end, penalty


def sample_inputs(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  requires_grad: bool = False, batch: int = 3, shape: tuple[int, int] = (9, 11),
                  segments: int = 3, probes: int = 4, seed: int = 0) -> tuple:
    """Arguments for em_accel::scan_segment: the second segment of an episode, bilinear
    sampling, one element stepping off the image (penalised)."""
    g = torch.Generator().manual_seed(seed)
    H, W = shape
    acc = accumulate_dtype(dtype)
    images = torch.rand((batch, H, W), generator=g, dtype=torch.float64).to(device, dtype)
    start = (torch.rand((batch, 2), generator=g, dtype=torch.float64)
             * torch.tensor([H - 1.0, W - 1.0], dtype=torch.float64) + 0.5).to(device, acc)
    actions = (torch.rand(batch, generator=g, dtype=torch.float64) * 2 * math.pi).to(device, acc)
    start[-1] = torch.tensor([0.5, 0.5], dtype=acc)
    actions[-1] = -3 * math.pi / 4  # up and left: leaves the image
    positions = torch.zeros((batch, segments * probes, 2), dtype=acc, device=device)
    values = torch.zeros((batch, segments * probes), dtype=acc, device=device)
    return (images, start, actions, positions, values, probes, probes, 1.25, 0.05,
            int(SampleMode.BILINEAR), 7, 0.0, 0.0)


OP_SPECS = [OpSpec("scan_segment", scan_segment_reference, sample_inputs, False, "scan")]
