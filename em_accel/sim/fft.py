"""2-D FFTs over the last two axes for the multislice loop.

torch.fft is the default (cuFFT on GPU). On CPU, when pyFFTW is installed (it comes with the
``abtem`` test extra) and ``EM_ACCEL_FFT`` is not ``torch``, planned FFTW transforms on the
tensors' own memory are used instead: on the reference 2-core CPU a complex64 fft2 + ifft2 pair
took 1.16 / 5.19 / 31.3 ms at 512^2 / 1024^2 / 2048^2 (FFTW_MEASURE, 1 thread) against 2.62 /
16.6 / 79.7 ms for torch.fft (MKL) and 2.02 / 10.4 / 48.3 ms for scipy.fft (docs/multislice.md,
Performance). Both follow numpy's convention: forward unnormalised, inverse scaled by 1/N.
"""
from __future__ import annotations

import os
import threading

import torch

from ..ops._common import COMPLEX_OF, REAL_OF

_PLANS: dict = {}


def fft_size(n: int) -> int:
    """Smallest integer >= n whose prime factors are all 2, 3, 5 or 7 (fast FFT sizes)."""
    m = max(1, int(n))
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


_LOCK = threading.Lock()


def _flags(shape) -> tuple[str, ...]:
    """FFTW_MEASURE (timed planning, ~0.1-0.2 s once per shape) from 256^2 points up;
    FFTW_ESTIMATE below, where measuring would cost more than it saves. (ESTIMATE plans were
    10-16x slower at 256^2 and 512^2 on the reference CPU: 1.24 vs 0.12 ms and 7.9 vs 0.62 ms
    per complex64 transform, but within 1.3x at 200^2 and 400^2.)"""
    n = 1
    for d in shape[-2:]:
        n *= int(d)
    return ("FFTW_MEASURE" if n >= 1 << 16 else "FFTW_ESTIMATE", "FFTW_DESTROY_INPUT")


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
            plan = pyfftw.FFTW(a, b, axes=(-2, -1), direction=direction, flags=_flags(shape),
                               threads=threads, planning_timelimit=2.0)
            _PLANS[key] = plan
    return plan


def _np(x: torch.Tensor):
    """NumPy view of a contiguous tensor with the canonical strides FFTW's plans were made for:
    torch calls a tensor contiguous whatever the strides of its size-1 axes, NumPy and pyFFTW
    compare them."""
    strides, step = [], 1
    for d in reversed(x.shape):
        strides.append(step)
        step *= max(int(d), 1)
    return x.as_strided(x.shape, tuple(reversed(strides))).numpy()


def _usable(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype in (torch.complex64, torch.complex128)
            and x.is_contiguous() and x.data_ptr() % 64 == 0 and _fftw() is not None)


def fft2(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Forward 2-D FFT of the last two axes (into ``out`` when given; ``out`` may be ``x``)."""
    return _complex_fft(x, out, forward=True, normalize=False)


def ifft2(x: torch.Tensor, out: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
    """Inverse 2-D FFT of the last two axes, 1/N normalised (``normalize=False``: unnormalised,
    the caller has folded 1/N in elsewhere); ``out`` may be ``x``."""
    return _complex_fft(x, out, forward=False, normalize=normalize)


def _complex_fft(x: torch.Tensor, out: torch.Tensor | None, forward: bool, normalize: bool
                 ) -> torch.Tensor:
    if not _usable(x) or (out is not None and not _usable(out)):
        fn = torch.fft.fft2 if forward else torch.fft.ifft2
        # numpy's convention; "forward" puts the 1/N on the forward transform, so the inverse
        # is unscaled
        norm = "backward" if forward or normalize else "forward"
        if out is x:
            out.copy_(fn(x, norm=norm))
            return out
        return fn(x, out=out, norm=norm)
    if out is None:
        out = torch.empty_like(x)
    plan = _plan(x.shape, x.dtype, "FFTW_FORWARD" if forward else "FFTW_BACKWARD", out is x)
    with _LOCK:
        plan.update_arrays(_np(x), _np(out))
        plan.execute()
    if normalize:
        out.mul_(1.0 / (x.shape[-1] * x.shape[-2]))
    return out


def _plan_real(in_shape, in_dtype: torch.dtype, out_shape, out_dtype: torch.dtype, direction: str):
    pyfftw = _fftw()
    threads = torch.get_num_threads()
    key = (tuple(in_shape), str(in_dtype), tuple(out_shape), direction, threads)
    np_of = {torch.float32: "float32", torch.float64: "float64", torch.complex64: "complex64",
             torch.complex128: "complex128"}
    with _LOCK:
        plan = _PLANS.get(key)
        if plan is None:
            a = pyfftw.empty_aligned(in_shape, dtype=np_of[in_dtype])
            b = pyfftw.empty_aligned(out_shape, dtype=np_of[out_dtype])
            plan = pyfftw.FFTW(a, b, axes=(-2, -1), direction=direction, flags=_flags(in_shape),
                               threads=threads, planning_timelimit=2.0)
            _PLANS[key] = plan
    return plan


def _real_usable(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.is_contiguous() and x.data_ptr() % 64 == 0
            and _fftw() is not None)


def rfft2(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Real-to-complex 2-D FFT of the last two axes ([..., nx, ny] -> [..., nx, ny//2+1]),
    into ``out`` (contiguous, of that shape) when given."""
    if (not _real_usable(x) or x.dtype not in (torch.float32, torch.float64)
            or (out is not None and not _real_usable(out))):
        return torch.fft.rfft2(x, out=out)
    cdt = COMPLEX_OF[x.dtype]
    if out is None:
        out = torch.empty((*x.shape[:-1], x.shape[-1] // 2 + 1), dtype=cdt)
    plan = _plan_real(x.shape, x.dtype, out.shape, cdt, "FFTW_FORWARD")
    with _LOCK:
        plan.update_arrays(_np(x), _np(out))
        plan.execute()
    return out


def irfft2(x: torch.Tensor, s: tuple[int, int], out: torch.Tensor | None = None) -> torch.Tensor:
    """Complex-to-real inverse 2-D FFT (1/N normalised) to shape ``s``, into ``out``
    (contiguous) when given; may overwrite ``x``."""
    if (not _real_usable(x) or x.dtype not in (torch.complex64, torch.complex128)
            or (out is not None and not _real_usable(out))):
        return torch.fft.irfft2(x, s=s, out=out)
    rdt = REAL_OF[x.dtype]
    if out is None:
        out = torch.empty((*x.shape[:-2], *s), dtype=rdt)
    plan = _plan_real(x.shape, x.dtype, out.shape, rdt, "FFTW_BACKWARD")
    with _LOCK:
        plan.update_arrays(_np(x), _np(out))
        plan.execute()
    out.mul_(1.0 / (s[0] * s[1]))
    return out


class Workspace:
    """Reusable scratch tensors by name.

    On CPU an allocation above glibc's mmap threshold (at most 32 MiB) is mapped fresh and
    page-faulted on first touch every time it is made, which cost as much as the FFT itself in
    the multislice loop (measured: 5.3 ms vs 0.43 ms per 1024^2 slice for exp(i sigma V) in a
    batch of 8). Buffers that live across slices avoid that. Each thread gets its own buffers,
    so an object holding a workspace (a :class:`~em_accel.sim.Potential`) stays safe to share
    across threads.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, name: str, shape, dtype: torch.dtype, device) -> torch.Tensor:
        """A contiguous tensor of ``shape`` (contents undefined), reused while big enough."""
        bufs = self._local.__dict__.setdefault("bufs", {})
        shape = tuple(int(d) for d in shape)
        n = 1
        for d in shape:
            n *= d
        b = bufs.get(name)
        if b is None or b.dtype != dtype or b.device != torch.device(device) or b.numel() < n:
            b = torch.empty(n, dtype=dtype, device=device)
            bufs[name] = b
        return b[:n].view(shape)
