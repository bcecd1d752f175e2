"""Adaptive learning rate clipping (ALRC) and its variants as ``nn.Module``s.

ALRC (Ede & Beanland, arXiv:1906.09060; thesis ch. 3) tracks running moments ``mu1`` (mean of
the loss) and ``mu2`` (mean of its square) and clips losses above ``mu1 + n_up * sigma``,
``sigma = sqrt(mu2 - mu1^2)``: a clipped loss takes the threshold's value and its gradient is
scaled by threshold/loss, so a spike's effective learning rate is capped while its gradient
direction is kept. Definitions of the variants, which the authors' code does not contain, are in
docs/derivations/alrc.md.

Typical use::

    alrc = ALRC(mu1_start=25.0, mu2_start=900.0)     # overestimates are fine
    loss = alrc(per_example_losses).mean()            # any per-example losses
    loss = alrc.fused(pred, target, "squared").mean() # native fused MSE + ALRC
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..ops._common import check_tensor
from ..ops.alrc import ErrorKind, clip_reference, fused_loss

_ERRORS = {"squared": ErrorKind.SQUARED, "mse": ErrorKind.SQUARED,
           "absolute": ErrorKind.ABSOLUTE, "mae": ErrorKind.ABSOLUTE,
           "quartic": ErrorKind.QUARTIC}


def average_across_ranks(*tensors: torch.Tensor) -> None:
    """Replace each tensor by its mean over the ranks of the default process group (in place;
    nothing without one). Under DDP every rank updates the moments from its own batch; since the
    update is linear in the batch mean and all ranks start from the same moments, their average
    is exactly the update from the global batch (equal per-rank batch sizes), and it keeps the
    ranks' clipping thresholds identical."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for t in tensors:
        dist.all_reduce(t)  # SUM: gloo has no AVG
        t.div_(dist.get_world_size())


class ALRC(nn.Module):
    """One- or two-sided adaptive learning rate clipping of per-example (or per-element) losses.

    Args:
        n_up: clip losses above ``mu1 + n_up * sigma`` (thesis default 3).
        n_down: clip losses below ``mu1 - n_down * sigma``, raising their gradient to the
            threshold's; None (default) disables the lower side, as in the authors' code.
        decay: EMA decay of the moments (0.999 in the authors' code).
        mu1_start, mu2_start: initial moments; overestimates are fine (the authors suggest 3x
            and 3^2x rough estimates). Requires ``mu2_start > mu1_start**2``.
        moments_shape: ``()`` for one pair of moments per batch; the per-example loss's
            trailing shape (e.g. ``(H, W)``) for per-element ALRC, where every pixel's loss is
            clipped against its own moments (suggested in the thesis, untested there).

    Moments are buffers, so they are saved in ``state_dict`` and move with ``.to()``. They are
    updated only in training mode, from the clipped losses, after the threshold is applied; under
    ``torch.distributed`` they are averaged over the ranks after each update (one all-reduce).
    Non-finite losses pass through unclipped and never enter the moments.
    """

    def __init__(self, n_up: float = 3.0, n_down: float | None = None, decay: float = 0.999,
                 mu1_start: float = 25.0, mu2_start: float = 900.0,
                 moments_shape: tuple[int, ...] = ()) -> None:
        super().__init__()
        if not (n_up > 0 and math.isfinite(n_up)):
            raise ValueError(f"n_up must be finite and > 0, got {n_up}")
        if n_down is not None and not n_down > 0:
            raise ValueError(f"n_down must be > 0 or None, got {n_down}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if not (math.isfinite(mu1_start) and math.isfinite(mu2_start)) or mu2_start <= mu1_start ** 2:
            raise ValueError(f"need finite mu2_start > mu1_start**2, got mu1_start={mu1_start}, "
                             f"mu2_start={mu2_start}")
        self.n_up = float(n_up)
        self.n_down = math.inf if n_down is None else float(n_down)
        self.decay = float(decay)
        self.moments_shape = tuple(moments_shape)
        self.register_buffer("mu1", torch.full(self.moments_shape, float(mu1_start)))
        self.register_buffer("mu2", torch.full(self.moments_shape, float(mu2_start)))

    @property
    def per_element(self) -> bool:
        return self.moments_shape != ()

    def thresholds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Current (upper, lower) clipping thresholds; lower is -inf when one-sided."""
        sigma = torch.sqrt(torch.clamp(self.mu2 - self.mu1 ** 2, min=0.0) + 1e-8)
        lower = self.mu1 - self.n_down * sigma if math.isfinite(self.n_down) \
            else torch.full_like(self.mu1, -math.inf)
        return self.mu1 + self.n_up * sigma, lower

    def _check_losses(self, losses: torch.Tensor) -> None:
        if not isinstance(losses, torch.Tensor) or not losses.is_floating_point():
            raise TypeError(f"losses must be a floating-point tensor, got {type(losses).__name__}"
                            + (f" of {losses.dtype}" if isinstance(losses, torch.Tensor) else ""))
        want = (1 + len(self.moments_shape))
        if losses.dim() != want or tuple(losses.shape[1:]) != self.moments_shape:
            raise ValueError(f"losses must have shape [B, *{list(self.moments_shape)}] "
                             f"(one loss per example{' and element' if self.per_element else ''}), "
                             f"got {list(losses.shape)}")
        if losses.device != self.mu1.device:
            raise RuntimeError(f"losses are on {losses.device} but the ALRC moments are on "
                               f"{self.mu1.device}; call alrc.to({losses.device})")

    def _commit(self, mu1: torch.Tensor, mu2: torch.Tensor) -> None:
        if self.training:
            with torch.no_grad():
                self.mu1.copy_(mu1.reshape(self.mu1.shape))
                self.mu2.copy_(mu2.reshape(self.mu2.shape))
                average_across_ranks(self.mu1, self.mu2)

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        """Clip per-example losses [B] (per-element: [B, *moments_shape]); same shape out."""
        self._check_losses(losses)
        clipped, _, mu1, mu2 = clip_reference(losses, self.mu1, self.mu2, self.n_up, self.n_down,
                                              self.decay)
        self._commit(mu1, mu2)
        return clipped

    def fused(self, pred: torch.Tensor, target: torch.Tensor, error: str = "squared") -> torch.Tensor:
        """Native fused loss: per-example mean ``error`` of pred vs target, clipped.

        ``error`` is "squared" (MSE), "absolute" (MAE) or "quartic". Returns [B] clipped losses
        (per-element ALRC: [B, *moments_shape], the clipped per-pixel errors) in float32
        (float64 for float64 input), differentiable with respect to pred and target.
        """
        if error not in _ERRORS:
            raise ValueError(f"error must be one of {sorted(set(_ERRORS))}, got {error!r}")
        pred = check_tensor("pred", pred, contiguous=False).contiguous()
        target = check_tensor("target", target, contiguous=False).contiguous()
        if self.per_element and tuple(pred.shape[1:]) != self.moments_shape:
            raise ValueError(f"pred must have shape [B, *{list(self.moments_shape)}] for "
                             f"per-element ALRC, got {list(pred.shape)}")
        loss, _, mu1, mu2 = fused_loss(pred, target, self.mu1, self.mu2, self.n_up, self.n_down,
                                       self.decay, int(_ERRORS[error]), self.per_element)
        self._commit(mu1, mu2)
        return loss

    def extra_repr(self) -> str:
        return (f"n_up={self.n_up}, n_down={self.n_down}, decay={self.decay}, "
                f"moments_shape={self.moments_shape}")


class CLRC(nn.Module):
    """Constant learning rate clipping: ALRC's gradient rescaling with a fixed threshold.

    Losses above ``threshold`` take its value and their gradient is scaled by
    threshold/loss. Stateless; useful when a sensible loss ceiling is known in advance.
    """

    def __init__(self, threshold: float) -> None:
        super().__init__()
        if not (threshold > 0 and math.isfinite(threshold)):
            raise ValueError(f"threshold must be finite and > 0, got {threshold}")
        self.threshold = float(threshold)

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            scale = torch.where(torch.isfinite(losses) & (losses > self.threshold),
                                self.threshold / losses, torch.ones_like(losses))
        return losses * scale


class DALRC(ALRC):
    """Doubly adaptive learning rate clipping (unverified definition; see docs/derivations/alrc.md).

    ALRC, then the clipped losses are divided by a stop-gradient running mean of the clipped
    loss (decay ``norm_decay``, start ``norm_start``), so the learning rate adapts to the loss
    scale as well as to spikes. This follows the normalisation the authors' adaptive-scans code
    applies after ALRC; the thesis names DALRC without defining it.
    """

    def __init__(self, *args, norm_decay: float = 0.997, norm_start: float = 0.5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not 0.0 <= norm_decay < 1.0:
            raise ValueError(f"norm_decay must be in [0, 1), got {norm_decay}")
        if not norm_start > 0:
            raise ValueError(f"norm_start must be > 0, got {norm_start}")
        self.norm_decay = float(norm_decay)
        self.register_buffer("loss_mean", torch.full(self.moments_shape, float(norm_start)))

    def _normalise(self, clipped: torch.Tensor) -> torch.Tensor:
        if self.training:
            with torch.no_grad():
                # No host sync: positions with no finite loss keep their mean via torch.where.
                finite = torch.isfinite(clipped)
                count = finite.sum(0)
                batch = torch.where(finite, clipped, 0).sum(0) / count.clamp(min=1)
                updated = self.norm_decay * self.loss_mean + (1 - self.norm_decay) * batch.float()
                self.loss_mean.copy_(torch.where(count > 0, updated, self.loss_mean))
                average_across_ranks(self.loss_mean)
        return clipped / self.loss_mean.to(clipped.dtype).clamp(min=1e-12)

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return self._normalise(super().forward(losses))

    def fused(self, pred: torch.Tensor, target: torch.Tensor, error: str = "squared") -> torch.Tensor:
        return self._normalise(super().fused(pred, target, error))
