"""Self-supervised fine-tuning of the conditioned denoiser on a user's own noisy frames.

No clean images are needed:

- two or more frames of the same area (a stack): **Noise2Noise** — the network sees frame ``i``
  and is scored against frame ``i+1`` (aligned by the integer shift that maximises their
  cross-correlation). Their noise is independent, so the expected loss is the loss against the
  clean image plus a constant;
- one frame: **Noise2Self / blind spot** — a random 1/16 of the pixels are replaced by the mean
  of their four neighbours in the input, and the loss is taken only there, against the noisy
  values the network could not see.

The loss is the squared error in equivalent counts divided by the noise variance (as in
training, :mod:`em_accel.models.conditioned_recipe`), which is unbiased against noisy targets.
Steps are few and crops small, so a CPU does it in seconds to a minute.
"""
from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

from .._api import Seed, as_generator, progress_counter
from ..data.noise_estimate import NoiseLevel, estimate_noise
from .conditioned import ConditionedUNet, anscombe, scale_of


class Adapted(NamedTuple):
    """Result of :func:`adapt`."""

    model: ConditionedUNet       # the fine-tuned copy (eval mode)
    mode: str                    # "noise2noise" or "noise2self"
    losses: list[float]          # training loss per step
    shifts: list[tuple[int, int]]  # alignment shift of frame i+1 onto frame i [px]


def align_shift(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Integer (dy, dx) such that ``np.roll(b, (dy, dx), (0, 1))`` best matches ``a`` (peak of
    the FFT cross-correlation of the mean-subtracted frames)."""
    fa = np.fft.rfft2(a - a.mean())
    fb = np.fft.rfft2(b - b.mean())
    cc = np.fft.irfft2(fa * np.conj(fb), s=a.shape)
    dy, dx = np.unravel_index(int(np.argmax(cc)), cc.shape)
    h, w = a.shape
    return (int(dy - h) if dy > h // 2 else int(dy), int(dx - w) if dx > w // 2 else int(dx))


def _counts_domain(frames: np.ndarray, noise: NoiseLevel | None) -> tuple[torch.Tensor, float]:
    """Equivalent counts of every frame (one noise model each unless given) and the common
    scale ``s`` of the Anscombe domain."""
    counts = [(noise or estimate_noise(f)).to_counts(f) for f in frames]
    c = torch.as_tensor(np.stack(counts))
    return c, float(scale_of(float(c.mean())))


def _blind_spot(x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Input with a random 1/16 of pixels replaced by their 4-neighbour mean, and the mask."""
    mask = torch.rand(x.shape, generator=g) < 1 / 16
    k = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]],
                     dtype=x.dtype)[None, None]
    nb = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k)
    return torch.where(mask, nb, x), mask


def adapt(model: ConditionedUNet, frames: np.ndarray, *, noise: NoiseLevel | None = None,
          steps: int = 60, crop: int = 64, batch_size: int = 4, lr: float = 1e-4,
          seed: Seed = 0, progress: bool = True) -> Adapted:
    """Fine-tune a copy of ``model`` on ``frames`` ([H, W] or [N, H, W], same units as for
    :func:`em_accel.models.conditioned.denoise_micrograph`).

    Args:
        model: the conditioned denoiser to start from (left unchanged).
        frames: one frame (Noise2Self) or a stack of frames of one area (Noise2Noise on
            consecutive pairs).
        noise: the noise model of every frame (None: estimated per frame).
        steps: optimiser steps (Adam).
        crop: crop size [px] (a multiple of the model's stride, ≤ the frame size).
        batch_size: crops per step.
        lr: learning rate.
        seed: seeds crop positions and blind-spot masks (int, torch.Generator or None).
        progress: draw a progress bar (on a terminal).
    """
    arr = np.asarray(frames, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or min(arr.shape[-2:]) < 16:
        raise ValueError("frames must be [H, W] or [N, H, W] with H, W >= 16, got "
                         f"{list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ValueError("frames contain NaN or infinite values")
    stride = model.stride
    crop = min(crop, *arr.shape[-2:]) // stride * stride
    if crop < stride:
        raise ValueError(f"frames are smaller than the model's stride {stride}")
    counts, s = _counts_domain(arr, noise)
    shifts: list[tuple[int, int]] = []
    if len(counts) >= 2:
        mode = "noise2noise"
        pairs = []
        for i in range(len(counts) - 1):
            dy, dx = align_shift(counts[i].numpy(), counts[i + 1].numpy())
            shifts.append((dy, dx))
            pairs.append((counts[i], torch.roll(counts[i + 1], (dy, dx), (0, 1))))
        margin = max([max(abs(a), abs(b)) for a, b in shifts] + [0])
    else:
        mode, pairs, margin = "noise2self", [(counts[0], counts[0])], 0
    h, w = counts.shape[-2:]
    if crop > min(h, w) - 2 * margin:
        crop = max((min(h, w) - 2 * margin) // stride * stride, stride)
    net = copy.deepcopy(model).float().train()
    device = next(net.parameters()).device
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = as_generator(seed)
    sig = 1.0 / s
    losses = []
    bar = progress_counter(steps, progress, desc="adapt", unit="step")
    for _ in range(steps):
        xs, ts, ms = [], [], []
        for _ in range(batch_size):
            src, tgt = pairs[int(torch.randint(len(pairs), (1,), generator=g))]
            y0 = margin + int(torch.randint(h - 2 * margin - crop + 1, (1,), generator=g))
            x0 = margin + int(torch.randint(w - 2 * margin - crop + 1, (1,), generator=g))
            a = src[y0:y0 + crop, x0:x0 + crop]
            b = tgt[y0:y0 + crop, x0:x0 + crop]
            za = anscombe(a)[None, None] / s
            if mode == "noise2self":
                za, m = _blind_spot(za, g)
            else:
                m = torch.ones_like(za, dtype=torch.bool)
            xs.append(torch.cat([za, torch.full_like(za, sig)], 1))
            ts.append(b[None, None])
            ms.append(m)
        x = torch.cat(xs).float().to(device)
        t = torch.cat(ts).to(device)
        m = torch.cat(ms).to(device)
        zhat = net(x).double()
        lam = (zhat * s / 2) ** 2 - 0.375          # estimate in equivalent counts
        var = t.mean().clamp_min(1.0)              # Poisson variance ≈ mean counts
        loss = (((lam - t) ** 2 / var) * m).sum() / m.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        bar.update(1)
    bar.close()
    return Adapted(net.eval(), mode, losses, shifts)
