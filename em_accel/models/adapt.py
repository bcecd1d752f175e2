"""Self-supervised fine-tuning of the conditioned denoiser on a user's own noisy frames.

No clean images are needed:

- two or more frames of the same area (a stack): **Noise2Noise** — the network sees frame ``i``
  and is scored against frame ``i+1``, and the other way round (aligned by the integer shift
  that maximises their cross-correlation). Their noise is independent, so the expected loss is
  the loss against the clean image plus a constant;
- one frame: **Noise2Self / blind spot** — a random 1/16 of the pixels are replaced by the mean
  of their four neighbours in the input, and the loss is taken only there, against the noisy
  values the network could not see.

The loss is the squared error in equivalent counts divided by the Poisson variance, which is
unbiased against noisy targets (its expectation is the error against the clean image plus a
constant). The same loss on a fixed batch of crops from held-out rows (the bottom quarter of
the frame, never trained on) is checked every
:data:`CHECK_EVERY` steps and the best state is kept, the starting model included: fine-tuning
on a few noisy crops can also make a pretrained model worse, and then the model comes back
unchanged. Steps are few and crops small, so a CPU does it in seconds to a minute.
"""
from __future__ import annotations

import copy
from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

from .._api import Seed, as_generator, progress_counter
from ..data.noise_estimate import NoiseLevel, estimate_denoiser_noise
from .conditioned import ConditionedUNet, anscombe, scale_of


class Adapted(NamedTuple):
    """Result of :func:`adapt`."""

    model: ConditionedUNet       # the fine-tuned copy (eval mode)
    mode: str                    # "noise2noise" or "noise2self"
    losses: list[float]          # training loss per step
    shifts: list[tuple[int, int]]  # alignment shift of frame i+1 onto frame i [px]
    held_losses: list[float]     # self-supervised loss on a held-out batch: start, every check
    changed: bool                # False if no check beat the starting model (it is returned)


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
    counts = [(noise or estimate_denoiser_noise(f)).to_counts(f) for f in frames]
    c = torch.as_tensor(np.stack(counts))
    return c, float(scale_of(float(c.mean())))


def _blind_spot(x: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Input with a random 1/16 of pixels replaced by their 4-neighbour mean, and the mask."""
    mask = torch.rand(x.shape, generator=g) < 1 / 16
    k = torch.tensor([[0.0, 0.25, 0.0], [0.25, 0.0, 0.25], [0.0, 0.25, 0.0]],
                     dtype=x.dtype)[None, None]
    nb = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k)
    return torch.where(mask, nb, x), mask


#: Steps between checks of the held-out self-supervised loss.
CHECK_EVERY = 10


def _batch(pairs, mode: str, g: torch.Generator, n: int, geom: tuple
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` random crops: network inputs [n, 2, c, c], noisy targets [n, 1, c, c] (counts) and
    the mask of pixels scored."""
    (r0, r1), w, margin, crop, s = geom
    xs, ts, ms = [], [], []
    for _ in range(n):
        src, tgt = pairs[int(torch.randint(len(pairs), (1,), generator=g))]
        y0 = r0 + int(torch.randint(r1 - r0 - crop + 1, (1,), generator=g))
        x0 = margin + int(torch.randint(w - 2 * margin - crop + 1, (1,), generator=g))
        za = anscombe(src[y0:y0 + crop, x0:x0 + crop])[None, None] / s
        if mode == "noise2self":
            za, m = _blind_spot(za, g)
        else:
            m = torch.ones_like(za, dtype=torch.bool)
        xs.append(torch.cat([za, torch.full_like(za, 1.0 / s)], 1))
        ts.append(tgt[y0:y0 + crop, x0:x0 + crop][None, None])
        ms.append(m)
    return torch.cat(xs).float(), torch.cat(ts), torch.cat(ms)


def _loss(net, batch, s: float, device, grad: bool):
    """Squared error in equivalent counts against the noisy target over the Poisson variance,
    on the scored pixels (a tensor with ``grad``, else a float)."""
    x, t, m = (b.to(device) for b in batch)
    with torch.set_grad_enabled(grad):
        zhat = net(x).double()
        lam = (zhat * s / 2) ** 2 - 0.375
        var = t.mean().clamp_min(1.0)
        loss = (((lam - t) ** 2 / var) * m).sum() / m.sum()
    return loss if grad else float(loss)


def adapt(model: ConditionedUNet, frames: np.ndarray, *, noise: NoiseLevel | None = None,
          steps: int = 60, crop: int = 64, batch_size: int = 4, lr: float = 3e-5,
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
            nxt = torch.roll(counts[i + 1], (dy, dx), (0, 1))
            pairs += [(counts[i], nxt), (nxt, counts[i])]   # both ways: less to memorise
        margin = max([max(abs(a), abs(b)) for a, b in shifts] + [0])
    else:
        mode, pairs, margin = "noise2self", [(counts[0], counts[0])], 0
    h, w = counts.shape[-2:]
    # rows [margin, cut) train, rows [cut, h - margin) are held out to pick the best state
    usable = h - 2 * margin
    crop = max(min(crop, usable // 2, w - 2 * margin) // stride * stride, stride)
    cut = h - margin - max(crop, usable // 4)
    net = copy.deepcopy(model).float().train()
    device = next(net.parameters()).device
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = as_generator(seed)
    train_geom = ((margin, cut), w, margin, crop, s)
    held_geom = ((cut, h - margin), w, margin, crop, s)
    # a fixed held-out batch (its own generator): the self-supervised loss on it estimates the
    # true error up to a constant, so the best state (the start included) is the one kept
    held = _batch(pairs, mode, torch.Generator().manual_seed(int(torch.randint(2**31, (1,),
                                                                              generator=g))),
                  2 * batch_size, held_geom)
    best_loss = _loss(net, held, s, device, grad=False)
    best_state = copy.deepcopy(net.state_dict())
    held_losses = [best_loss]
    losses = []
    bar = progress_counter(steps, progress, desc="adapt", unit="step")
    for step in range(1, steps + 1):
        loss = _loss(net, _batch(pairs, mode, g, batch_size, train_geom), s, device, grad=True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % CHECK_EVERY == 0 or step == steps:
            v = _loss(net, held, s, device, grad=False)
            held_losses.append(v)
            if v < best_loss:
                best_loss, best_state = v, copy.deepcopy(net.state_dict())
        bar.update(1)
    bar.close()
    net.load_state_dict(best_state)
    return Adapted(net.eval(), mode, losses, shifts, held_losses,
                   best_loss < held_losses[0])
