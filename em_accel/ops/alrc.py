"""Fused adaptive learning rate clipping (ALRC) losses as torch ops, and their reference.

ALRC (Ede & Beanland, arXiv:1906.09060; thesis ch. 3) clips each loss above
``mu1 + n_up * sigma`` of running moments ``mu1``, ``mu2`` (sigma = sqrt(mu2 - mu1^2)) so that
its value equals the threshold and its gradient is the original one times threshold/loss.
The fused op computes per-example (or per-pixel) errors, the clipping and the moment update
in one pass over ``pred`` and ``target``; its backward is a second pass. See
docs/derivations/alrc.md.

Data flow: ``alrc_mse`` -> ``fused_loss`` -> ``em_accel::alrc_fused`` (traced) or the same
implementation called directly (eager) -> ``_native.alrc.forward_{cpu,cuda}``
-> ``alrc::forward_*`` -> ``alrc::clip`` (csrc/alrc/alrc.h).
"""
from __future__ import annotations

import enum
import functools
import math
from typing import NamedTuple

import torch

from .. import _native
from . import _validate
from ._registry import OpSpec
from ._common import (DTYPE_CODES, FLOAT_DTYPES, accumulate_dtype, check_same_device,
                      check_tensor, launch, verify_enum)


class ErrorKind(enum.IntEnum):
    """Per-element error; mirrors em::alrc::ErrorKind (checked at import)."""

    SQUARED = 0
    ABSOLUTE = 1
    QUARTIC = 2


verify_enum(ErrorKind, _native.alrc.ErrorKind)


class ALRCResult(NamedTuple):
    """Clipped losses and the moments after this step."""

    loss: torch.Tensor  # [B] per example, or [B, *S] per pixel; float32 (float64 for float64 input)
    mu1: torch.Tensor   # running mean of the clipped loss, shape of the moments given
    mu2: torch.Tensor   # running mean of its square


# ---------------------------------------------------------------------------------------------
# Reference (the executable spec), float64-capable, written from the equations.

def error_reference(d: torch.Tensor, kind: int) -> torch.Tensor:
    """Per-element error of ``d = pred - target``: d^2, |d| or d^4."""
    kind = ErrorKind(kind)
    if kind == ErrorKind.SQUARED:
        return d * d
    if kind == ErrorKind.ABSOLUTE:
        return d.abs()
    return (d * d) ** 2


def clip_reference(losses: torch.Tensor, mu1: torch.Tensor, mu2: torch.Tensor, n_up: float,
                   n_down: float = math.inf, decay: float = 0.999
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference ALRC clipping of ``losses`` [B, *S] with moments broadcast to [*S].

    Returns (clipped, scale, mu1_new, mu2_new). ``clipped`` carries the gradient of ``losses``
    times ``scale`` (a stop-gradient factor), so the effective learning rate, not the gradient
    direction, is clipped. Non-finite losses pass through unscaled and are left out of the
    moment update. Also the generic path of :class:`em_accel.train.ALRC`.
    """
    m1, m2 = mu1.to(losses.dtype), mu2.to(losses.dtype)
    sigma = torch.sqrt(torch.clamp(m2 - m1 * m1, min=0.0) + 1e-8)
    up = m1 + n_up * sigma
    down = m1 - n_down * sigma if math.isfinite(n_down) else torch.full_like(m1, -math.inf)
    with torch.no_grad():
        finite = torch.isfinite(losses)
        over = finite & (losses > up)
        under = finite & ~over & (losses < down) & (losses > 0)
        scale = torch.ones_like(losses)
        scale = torch.where(over, up / losses, scale)
        scale = torch.where(under, down / losses, scale)
    clipped = losses * scale
    with torch.no_grad():
        kept = torch.where(finite, clipped, torch.zeros_like(clipped))
        count = finite.sum(0)
        safe = count.clamp(min=1).to(losses.dtype)
        mean1 = kept.sum(0) / safe
        mean2 = (kept * kept).sum(0) / safe
        new1 = torch.where(count > 0, decay * m1 + (1 - decay) * mean1, m1)
        new2 = torch.where(count > 0, decay * m2 + (1 - decay) * mean2, m2)
    return clipped, scale, new1.to(mu1.dtype).reshape(mu1.shape), new2.to(mu2.dtype).reshape(mu2.shape)


def alrc_fused_reference(pred: torch.Tensor, target: torch.Tensor, mu1: torch.Tensor,
                         mu2: torch.Tensor, n_up: float, n_down: float, decay: float, kind: int,
                         per_pixel: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference for em_accel::alrc_fused; float64-capable and differentiable by autograd."""
    acc = accumulate_dtype(pred.dtype)
    err = error_reference(pred.to(acc) - target.to(acc), kind)
    losses = err if per_pixel else err.reshape(err.shape[0], -1).mean(1)
    m1 = mu1 if per_pixel else mu1.reshape(())
    m2 = mu2 if per_pixel else mu2.reshape(())
    clipped, scale, new1, new2 = clip_reference(losses, m1, m2, n_up, n_down, decay)
    return clipped, scale, new1.reshape(mu1.shape), new2.reshape(mu2.shape)


# ---------------------------------------------------------------------------------------------
# Checks shared by the real and the fake implementation.

def _check(pred, target, mu1, mu2, n_up, n_down, decay, kind, per_pixel) -> None:
    check_tensor("pred", pred, dtypes=FLOAT_DTYPES, min_ndim=1)
    check_tensor("target", target, dtypes=(pred.dtype,), shape=tuple(pred.shape))
    moment_shape = tuple(pred.shape[1:]) if per_pixel else None
    for name, mu in (("mu1", mu1), ("mu2", mu2)):
        check_tensor(name, mu, dtypes=(torch.float32,))
        if per_pixel and tuple(mu.shape) != moment_shape:
            raise ValueError(f"{name} must have the per-pixel shape pred.shape[1:] = "
                             f"{list(moment_shape)}, got {list(mu.shape)}")
        if not per_pixel and mu.numel() != 1:
            raise ValueError(f"{name} must hold one value (shape [] or [1]), got {list(mu.shape)}")
    check_same_device(pred=pred, target=target, mu1=mu1, mu2=mu2)
    if pred.dim() > 1 and math.prod(pred.shape[1:]) == 0:
        raise ValueError(f"pred has empty examples: shape {list(pred.shape)}")
    if not (n_up > 0 and math.isfinite(n_up)):
        raise ValueError(f"n_up must be finite and > 0, got {n_up}")
    if not n_down > 0:
        raise ValueError(f"n_down must be > 0 (math.inf to disable), got {n_down}")
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must be in [0, 1), got {decay}")
    if kind not in ErrorKind._value2member_map_:
        raise ValueError(f"kind must be one of {[int(k) for k in ErrorKind]}, got {kind}")
    if pred.device.type == "cuda" and not per_pixel and pred.shape[0] > 65535:
        raise ValueError(f"batch must be <= 65535 on CUDA, got {pred.shape[0]}")


def _params(pred: torch.Tensor, n_up: float, n_down: float, decay: float, kind: int,
            per_pixel: bool) -> "_native.alrc.Params":
    return _cached_params(pred.shape[0], math.prod(pred.shape[1:]), int(kind), bool(per_pixel),
                          DTYPE_CODES[pred.dtype], float(n_up), float(n_down), float(decay))


@functools.lru_cache(maxsize=256)
def _cached_params(batch: int, elems: int, kind: int, per_pixel: bool, dtype: int, n_up: float,
                   n_down: float, decay: float) -> "_native.alrc.Params":
    """Native parameters, built once per configuration (a training loop repeats one): the
    launchers take them by const reference, so sharing one object is safe."""
    p = _native.alrc.Params()
    p.batch, p.elems = batch, elems
    p.kind, p.per_pixel, p.dtype = kind, int(per_pixel), dtype
    p.n_up, p.n_down, p.decay = n_up, n_down, decay
    return p


@functools.lru_cache(maxsize=256)
def _workspace_doubles(batch: int, elems: int, kind: int, per_pixel: bool, dtype: int,
                       n_up: float, n_down: float, decay: float) -> int:
    return _native.alrc.workspace_doubles(_cached_params(batch, elems, kind, per_pixel, dtype,
                                                         n_up, n_down, decay))


def _loss_shape(pred: torch.Tensor, per_pixel: bool) -> tuple[int, ...]:
    return tuple(pred.shape) if per_pixel else (pred.shape[0],)


def _forward_impl(pred, target, mu1, mu2, n_up, n_down, decay, kind, per_pixel):
    _check(pred, target, mu1, mu2, n_up, n_down, decay, kind, per_pixel)
    acc = accumulate_dtype(pred.dtype)
    shape = _loss_shape(pred, per_pixel)
    loss = torch.empty(shape, dtype=acc, device=pred.device)
    scale = torch.empty_like(loss)
    mu1_new, mu2_new = torch.empty_like(mu1), torch.empty_like(mu2)
    key = (pred.shape[0], math.prod(pred.shape[1:]), int(kind), bool(per_pixel),
           DTYPE_CODES[pred.dtype], float(n_up), float(n_down), float(decay))
    ptrs = (pred.data_ptr(), target.data_ptr(), mu1.data_ptr(), mu2.data_ptr(), loss.data_ptr(),
            scale.data_ptr(), mu1_new.data_ptr(), mu2_new.data_ptr())
    launch(_native.alrc, "forward", pred.device, _cached_params(*key), *ptrs,
           op="em_accel::alrc_fused", cuda_workspace_doubles=_workspace_doubles(*key))
    return loss, scale, mu1_new, mu2_new


@torch.library.custom_op("em_accel::alrc_fused", mutates_args=())
def alrc_fused(pred: torch.Tensor, target: torch.Tensor, mu1: torch.Tensor, mu2: torch.Tensor,
               n_up: float, n_down: float, decay: float, kind: int, per_pixel: bool
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fused ALRC loss. Returns (loss, scale, mu1_new, mu2_new); see alrc_fused_reference."""
    return _forward_impl(pred, target, mu1, mu2, n_up, n_down, decay, kind, per_pixel)


@alrc_fused.register_fake
def _(pred, target, mu1, mu2, n_up, n_down, decay, kind, per_pixel):
    _check(pred, target, mu1, mu2, n_up, n_down, decay, kind, per_pixel)
    loss = pred.new_empty(_loss_shape(pred, per_pixel), dtype=accumulate_dtype(pred.dtype))
    return loss, torch.empty_like(loss), torch.empty_like(mu1), torch.empty_like(mu2)


def _backward_impl(grad_loss, pred, target, scale, kind, per_pixel):
    _validate.alrc_backward(pred, target, kind, ErrorKind._value2member_map_)
    shape = _loss_shape(pred, per_pixel)
    acc = accumulate_dtype(pred.dtype)
    check_tensor("grad_loss", grad_loss, dtypes=(acc,), shape=shape)
    check_tensor("scale", scale, dtypes=(acc,), shape=shape)
    check_same_device(grad_loss=grad_loss, pred=pred, target=target, scale=scale)
    grad_pred = torch.empty_like(pred)
    p = _params(pred, 1.0, math.inf, 0.0, kind, per_pixel)
    ptrs = (grad_loss.data_ptr(), pred.data_ptr(), target.data_ptr(), scale.data_ptr(),
            grad_pred.data_ptr())
    launch(_native.alrc, "backward", pred.device, p, *ptrs, op="em_accel::alrc_fused_bwd")
    return grad_pred


@torch.library.custom_op("em_accel::alrc_fused_bwd", mutates_args=())
def alrc_fused_bwd(grad_loss: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
                   scale: torch.Tensor, kind: int, per_pixel: bool) -> torch.Tensor:
    """Gradient of the fused ALRC loss with respect to ``pred``: grad_loss * scale * error'."""
    return _backward_impl(grad_loss, pred, target, scale, kind, per_pixel)


@alrc_fused_bwd.register_fake
def _(grad_loss, pred, target, scale, kind, per_pixel):
    return torch.empty_like(pred)


def _setup_context(ctx, inputs, output):
    pred, target, _, _, _, _, _, kind, per_pixel = inputs
    ctx.kind, ctx.per_pixel = kind, per_pixel
    ctx.save_for_backward(pred, target, output[1])
    ctx.mark_non_differentiable(output[1], output[2], output[3])


def _backward(ctx, grad_loss, _grad_scale, _grad_mu1, _grad_mu2):
    pred, target, scale = ctx.saved_tensors
    want_pred, want_target = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if not (want_pred or want_target):
        return (None,) * 9
    grad = alrc_fused_bwd(grad_loss.contiguous(), pred, target, scale, ctx.kind, ctx.per_pixel)
    return (grad if want_pred else None, -grad if want_target else None) + (None,) * 7


alrc_fused.register_autograd(_backward, setup_context=_setup_context)


def _no_double_backward(ctx, grad):
    raise RuntimeError("double backward of em_accel::alrc_fused is not supported")


alrc_fused_bwd.register_autograd(_no_double_backward,
                                 setup_context=lambda ctx, inputs, output: None)


class _EagerFused(torch.autograd.Function):
    """The same forward and backward as em_accel::alrc_fused, as a plain autograd.Function:
    in eager mode it skips the custom-op wrapper (argument defaults, two redispatches), which
    was most of the op's per-call cost (0.59 -> 0.37 ms per forward + backward of a tiny batch
    on a shared 2-core CPU). Tracers (torch.compile, export, fake tensors, functorch) get the
    registered custom op instead: see :func:`fused_loss`."""

    @staticmethod
    def forward(ctx, pred, target, mu1, mu2, n_up, n_down, decay, kind, per_pixel):
        out = _forward_impl(pred, target, mu1, mu2, n_up, n_down, decay, kind, per_pixel)
        _setup_context(ctx, (pred, target, mu1, mu2, n_up, n_down, decay, kind, per_pixel), out)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss, grad_scale, grad_mu1, grad_mu2):
        pred, target, scale = ctx.saved_tensors
        grad = _backward_impl(grad_loss.contiguous(), pred, target, scale, ctx.kind,
                              ctx.per_pixel)
        return (grad if ctx.needs_input_grad[0] else None,
                -grad if ctx.needs_input_grad[1] else None) + (None,) * 7


def fused_loss(pred: torch.Tensor, target: torch.Tensor, mu1: torch.Tensor, mu2: torch.Tensor,
               n_up: float, n_down: float, decay: float, kind: int, per_pixel: bool
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """em_accel::alrc_fused with the least per-call overhead: the direct autograd.Function on
    plain CPU/CUDA tensors in eager mode (CUDA-graph capture included), the custom op whenever
    something traces (torch.compile(fullgraph=True) sees one opaque op, no graph break)."""
    if (type(pred) is torch.Tensor and type(target) is torch.Tensor
            and pred.device.type in ("cpu", "cuda") and not torch.compiler.is_compiling()
            and not torch._C._are_functorch_transforms_active()):
        return _EagerFused.apply(pred, target, mu1, mu2, n_up, n_down, decay, kind, per_pixel)
    return alrc_fused(pred, target, mu1, mu2, n_up, n_down, decay, kind, per_pixel)


# ---------------------------------------------------------------------------------------------
# Public functions.

def _fused(kind: ErrorKind, pred, target, mu1, mu2, n_up, n_down, decay, per_pixel) -> ALRCResult:
    n_down = math.inf if n_down is None else float(n_down)
    pred = check_tensor("pred", pred, contiguous=False).contiguous()
    target = check_tensor("target", target, contiguous=False).contiguous()
    loss, _, m1, m2 = fused_loss(pred, target, mu1, mu2, float(n_up), n_down, float(decay),
                                 int(kind), bool(per_pixel))
    return ALRCResult(loss, m1, m2)


def _public(kind: ErrorKind, name: str, formula: str):
    def op(pred: torch.Tensor, target: torch.Tensor, mu1: torch.Tensor, mu2: torch.Tensor,
           n_up: float = 3.0, n_down: float | None = None, decay: float = 0.999,
           per_pixel: bool = False) -> ALRCResult:
        return _fused(kind, pred, target, mu1, mu2, n_up, n_down, decay, per_pixel)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"""ALRC-clipped {formula} error of ``pred`` against ``target``, fused.

    Args:
        pred, target: [B, ...] float32/float64/float16/bfloat16, same shape and device.
        mu1, mu2: float32 running moments of the loss and its square before this step:
            one value (shape [] or [1]) or, with ``per_pixel``, shape ``pred.shape[1:]``.
        n_up: clip above mu1 + n_up * sigma.
        n_down: clip below mu1 - n_down * sigma (None: no lower clip).
        decay: EMA decay of the moments, in [0, 1).
        per_pixel: one loss and one pair of moments per element instead of per example.

    Returns:
        ALRCResult(loss [B] or [B, ...], mu1, mu2): the clipped losses (float32, float64 for
        float64 input), differentiable with respect to pred and target, and the updated moments.
        Non-finite losses pass through unclipped and do not enter the moments.
    """
    return op


alrc_mse = _public(ErrorKind.SQUARED, "alrc_mse", "mean squared")
alrc_mae = _public(ErrorKind.ABSOLUTE, "alrc_mae", "mean absolute")
alrc_quartic = _public(ErrorKind.QUARTIC, "alrc_quartic", "mean quartic")


def sample_inputs(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                  batch: int = 4, shape: tuple[int, ...] = (16, 16), per_pixel: bool = False,
                  requires_grad: bool = False, seed: int = 0,
                  kind: ErrorKind = ErrorKind.SQUARED) -> tuple:
    """Arguments for em_accel::alrc_fused with some examples far above the threshold.

    Shared by the tests and the benchmark so both exercise the same inputs.
    """
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn((batch, *shape), generator=g, dtype=torch.float64)
    target = torch.randn((batch, *shape), generator=g, dtype=torch.float64)
    pred[::3] *= 4.0  # loss spikes: roughly 16x the typical squared error
    pred = pred.to(device=device, dtype=dtype).requires_grad_(requires_grad)
    target = target.to(device=device, dtype=dtype)
    mshape = shape if per_pixel else ()
    # Moments whose threshold mu1 + 3 sigma falls between typical and spiked example losses.
    m1, m2 = {ErrorKind.SQUARED: (2.0, 5.0), ErrorKind.ABSOLUTE: (1.2, 1.6),
              ErrorKind.QUARTIC: (12.0, 1744.0)}[ErrorKind(kind)]
    mu1 = torch.full(mshape, m1, dtype=torch.float32, device=device)
    mu2 = torch.full(mshape, m2, dtype=torch.float32, device=device)
    return pred, target, mu1, mu2, 3.0, math.inf, 0.999, int(kind), per_pixel



OP_SPECS = [OpSpec("alrc_fused", alrc_fused_reference, sample_inputs, True, "alrc")]
