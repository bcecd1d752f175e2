"""Batched adaptive-scan environment (thesis ch. 5; arXiv:2004.02786).

An episode scans ``segments`` straight segments per image; each segment has ``probes`` probes
spaced ``step`` px apart. The first segment is fixed (angle pi/4 from the start, the image
centre); after that each step takes one action per batch element. Angles are in radians,
measured from the +row axis towards +col: a probe step is step * (cos a, sin a) in (row, col),
as in the thesis's code. A whole step - positions, sampling, noise, the next start and the edge
penalty - is one native call over the batch (:func:`em_accel.ops.scan_segment.scan_segment_`,
the in-place path of the op ``em_accel::scan_segment``), CPU or CUDA.

Thesis settings (the defaults): 96x96 crops, 20 segments x 20 probes, step sqrt(2) px (coverage
400/9216 = 1/23.04), first angle pi/4, start at the centre, edge penalty 0.05 when the next start
leaves the image, nearest sampling (the thesis clips to [0, side-1] and truncates).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ..ops._common import FLOAT_DTYPES, accumulate_dtype, check_tensor, require_cuda_build
from ..ops.scan import Raster, _mode, scan_rasterize
from ..ops.scan_segment import scan_segment_, segment_params


class InvalidActionError(ValueError):
    """An environment step got actions of the wrong shape or non-finite values."""


class Segment(NamedTuple):
    """What one environment step observed (views into the episode buffers)."""

    values: torch.Tensor     # [B, S] probe values
    positions: torch.Tensor  # [B, S, 2] (row, col) [px]
    penalty: torch.Tensor    # [B] edge penalty of this step (0 or edge_penalty)
    done: bool               # True after the last segment


class AdaptiveScanEnv:
    """A batch of images scanned by straight segments chosen one step at a time.

    Args:
        images: [B, H, W] float32/float64/float16/bfloat16 on CPU or CUDA (the scanned
            specimen; the thesis blurs it first and uses it as the target too).
        segments: T, segments per episode, the fixed first one included.
        probes: S, probes per segment.
        step: probe spacing for angle actions [px].
        first_angle: direction of the fixed first segment [rad]; None: no fixed segment (the
            first action chooses it).
        edge_penalty: cost added when a step's next start leaves [0, H] x [0, W].
        start: (row, col) of the first probe [px]; default the centre (H/2, W/2).
        mode, counts_per_intensity, read_noise, seed: sampling and noise, as
            :func:`em_accel.ops.scan_sample`.
            Probe j of element b uses noise index b*T*S + j, so an episode's noise equals
            scan_sample's on the episode's positions with the same seed.

    Observations carry no gradient (the environment is not differentiable); use it inside
    ``torch.no_grad()`` in an RL loop. Actions: angles [B] [rad], or per-probe step vectors
    [B, 2] [px] (the thesis's older two-action form).
    """

    def __init__(self, images: torch.Tensor, *, segments: int = 20, probes: int = 20,
                 step: float = math.sqrt(2.0), first_angle: float | None = math.pi / 4,
                 edge_penalty: float = 0.05, start: tuple[float, float] | None = None,
                 mode: str = "nearest", counts_per_intensity: float | None = None,
                 read_noise: float = 0.0,
                 seed: int = 0) -> None:
        if segments < 1 or probes < 1:
            raise ValueError(f"segments and probes must be >= 1, got {segments}, {probes}")
        if not (step > 0 and math.isfinite(step)):
            raise ValueError(f"step must be finite and > 0 px, got {step}")
        c = counts_per_intensity
        if not (c is None or (math.isfinite(c) and c >= 0)):
            raise ValueError(f"counts_per_intensity must be None or finite and >= 0, got {c}")
        if not (math.isfinite(read_noise) and read_noise >= 0):
            raise ValueError(f"read_noise must be finite and >= 0, got {read_noise}")
        if not 0 <= seed < 2 ** 63:
            raise ValueError(f"seed must be in [0, 2**63), got {seed}")
        self.segments, self.probes, self.step_px = int(segments), int(probes), float(step)
        self.first_angle, self.edge_penalty = first_angle, float(edge_penalty)
        self.mode = _mode(mode)
        self.counts_per_intensity = float(c or 0.0)
        self.read_noise, self.seed = float(read_noise), int(seed)
        self._start_arg = start
        self.reset(images)

    # -- state ---------------------------------------------------------------------------------
    def reset(self, images: torch.Tensor | None = None) -> Segment | None:
        """Start a new episode (on new images if given); returns the fixed first segment's
        observation, or None when ``first_angle`` is None."""
        if images is not None:
            check_tensor("images", images, dtypes=FLOAT_DTYPES, ndim=3, contiguous=False)
            if images.device.type not in ("cpu", "cuda"):
                raise RuntimeError(f"images must be on cpu or cuda, got {images.device}")
            self.images = images.detach().contiguous()
        B, H, W = self.images.shape
        acc = accumulate_dtype(self.images.dtype)
        dev = self.images.device
        self._acc = acc
        total = self.segments * self.probes
        # Buffers are reused across episodes; only the first t*S columns are meaningful
        # (observed()). Reallocated when the batch, dtype or device changes.
        if not (hasattr(self, "_penalties") and self.values.shape == (B, total)
                and self.values.dtype == acc and self.values.device == dev):
            self.positions = torch.empty((B, total, 2), dtype=acc, device=dev)
            self.values = torch.empty((B, total), dtype=acc, device=dev)
            self._penalties = torch.empty((self.segments, B), dtype=acc, device=dev)
        start = self._start_arg if self._start_arg is not None else (H / 2.0, W / 2.0)
        self._start = torch.tensor(start, dtype=acc, device=dev).expand(B, 2).contiguous()
        self._end = torch.empty_like(self._start)
        self.t = 0
        self._params = segment_params(self.images, self.probes, total, int(self.mode), self.seed,
                                      self.counts_per_intensity, self.read_noise, self.step_px,
                                      self.edge_penalty)
        if dev.type == "cuda":
            require_cuda_build("AdaptiveScanEnv")
        self._batch, self._device = B, dev
        if self.first_angle is None:
            return None
        return self._step(torch.full((B,), float(self.first_angle), dtype=acc, device=dev))

    @property
    def done(self) -> bool:
        return self.t >= self.segments

    @property
    def start(self) -> torch.Tensor:
        """[B, 2] (row, col) where the next segment begins [px]."""
        return self._start

    # -- stepping ------------------------------------------------------------------------------
    def step(self, actions: torch.Tensor) -> Segment:
        """Scan one segment per batch element. actions: angles [B] [rad] or steps [B, 2] [px]."""
        return self._step(actions)

    def _step(self, actions: torch.Tensor) -> Segment:
        # Kept lean: this runs once per RL step, so checks are cheap attribute reads and the
        # buffer addresses were taken at reset().
        t = self.t
        if t >= self.segments:
            raise RuntimeError(f"episode is over after {self.segments} segments; call reset()")
        if not isinstance(actions, torch.Tensor):
            raise TypeError(f"actions must be a torch.Tensor, got {type(actions).__name__}")
        B = self._batch
        shape = actions.shape
        if shape not in ((B,), (B, 2)):
            raise InvalidActionError(f"actions must have shape [B] (angles) or [B, 2] (steps) "
                                     f"with B = {B}, got {list(shape)}")
        if actions.device != self._device:
            raise RuntimeError(f"actions are on {actions.device} but images are on {self._device}")
        if actions.dtype != self._acc or actions.requires_grad or not actions.is_contiguous():
            if actions.is_complex() or actions.dtype == torch.bool:
                raise TypeError(f"actions must be real numbers, got {actions.dtype}")
            actions = actions.detach().to(self._acc).contiguous()
        if not bool(torch.isfinite(actions).all()):  # NaN/inf would put probes nowhere
            shown = actions.tolist() if B <= 8 else "non-finite values"
            raise InvalidActionError(f"actions must be finite, got {shown}")
        penalty = self._penalties[t]  # [B], contiguous
        scan_segment_(self._params, self.images, self._start, actions, self.positions, self.values,
                      self._end, penalty, t * self.probes)
        self._start, self._end = self._end, self._start
        s = slice(t * self.probes, (t + 1) * self.probes)
        self.t = t + 1
        return Segment(self.values[:, s], self.positions[:, s], penalty, t + 1 >= self.segments)

    # -- results -------------------------------------------------------------------------------
    def observed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(values [B, t*S], positions [B, t*S, 2]) scanned so far."""
        n = self.t * self.probes
        return self.values[:, :n], self.positions[:, :n]

    def partial_scan(self, shape: tuple[int, int] | None = None) -> Raster:
        """The scan so far as a sparse image, mask and nearest-neighbour infill, [B, H, W] each
        (repeat visits averaged), for the generator."""
        values, positions = self.observed()
        shape = tuple(self.images.shape[1:]) if shape is None else shape
        return scan_rasterize(values.contiguous(), positions.contiguous(), shape)

    def episode_penalties(self) -> torch.Tensor:
        """[B, t] edge penalty of each step so far."""
        return self._penalties[:self.t].t()

    @property
    def coverage(self) -> torch.Tensor:
        """[B] fraction of pixels probed so far."""
        return self.partial_scan().mask.mean(dim=(1, 2))
