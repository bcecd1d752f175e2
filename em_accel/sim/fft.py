"""2-D FFTs over the last two axes for the multislice loop.

torch.fft is the default (cuFFT on GPU). On CPU, when pyFFTW is installed (it comes with the
``abtem`` test extra) and ``EM_ACCEL_FFT`` is not ``torch``, planned FFTW transforms on the
tensors' own memory are used instead: on the reference 2-core CPU they are about 2x faster than
torch's CPU FFT at 512^2-1024^2 (bench/bench_multislice.py). Both follow numpy's convention:
forward unnormalised, inverse scaled by 1/N.
"""
from __future__ import annotations

import os
import threading

import torch

_PLANS: dict = {}
_LOCK = threading.Lock()


def _fftw():
    if os.environ.get("EM_ACCEL_FFT", "auto").lower() == "torch":
        return None
    try:
        import pyfftw
    except ImportError:
        return None
    return pyfftw


def backend(device: torch.device | str) -> str:
    """Name of the FFT backend used for tensors on ``device``: "fftw" or "torch"."""
    return "fftw" if torch.device(device).type == "cpu" and _fftw() is not None else "torch"


def _plan(shape, dtype, direction: str, inplace: bool):
    pyfftw = _fftw()
    threads = torch.get_num_threads()
    key = (tuple(shape), str(dtype), direction, inplace, threads)
    with _LOCK:
        plan = _PLANS.get(key)
        if plan is None:
            npdt = "complex64" if dtype == torch.complex64 else "complex128"
            a = pyfftw.empty_aligned(shape, dtype=npdt)
            b = a if inplace else pyfftw.empty_aligned(shape, dtype=npdt)
            plan = pyfftw.FFTW(a, b, axes=(-2, -1), direction=direction,
                               flags=("FFTW_MEASURE", "FFTW_DESTROY_INPUT"), threads=threads,
                               planning_timelimit=5.0)
            _PLANS[key] = plan
    return plan


def _usable(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype in (torch.complex64, torch.complex128)
            and x.is_contiguous() and x.data_ptr() % 64 == 0 and _fftw() is not None)


def fft2(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Forward 2-D FFT of the last two axes (into ``out`` when given; ``out`` may be ``x``)."""
    if not _usable(x) or (out is not None and not _usable(out)):
        if out is x:
            out.copy_(torch.fft.fft2(x))
            return out
        return torch.fft.fft2(x, out=out)
    if out is None:
        out = torch.empty_like(x)
    plan = _plan(x.shape, x.dtype, "FFTW_FORWARD", out is x)
    with _LOCK:
        plan.update_arrays(x.numpy(), out.numpy())
        plan.execute()
    return out


def ifft2(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse 2-D FFT (1/N normalised) of the last two axes; ``out`` may be ``x``."""
    if not _usable(x) or (out is not None and not _usable(out)):
        if out is x:
            out.copy_(torch.fft.ifft2(x))
            return out
        return torch.fft.ifft2(x, out=out)
    if out is None:
        out = torch.empty_like(x)
    plan = _plan(x.shape, x.dtype, "FFTW_BACKWARD", out is x)
    with _LOCK:
        plan.update_arrays(x.numpy(), out.numpy())
        plan.execute()
    out.mul_(1.0 / (x.shape[-1] * x.shape[-2]))
    return out
