"""em-accel: the systems of J. M. Ede's "Advances in Electron Microscopy with Deep Learning",
as one installable library with a C++/CUDA core.

Areas: ``em_accel.ops`` (native kernels as torch ops), ``em_accel.train`` (ALRC, training),
``em_accel.sim``, ``em_accel.scan``, ``em_accel.embed``, ``em_accel.models``.
"""
from __future__ import annotations

try:
    from . import _native
except ImportError as exc:  # a source checkout that was never built
    raise ImportError(
        "em_accel._native is missing: install the package (pip install .) so the native core "
        f"is built ({exc})"
    ) from exc

from ._build import _version, build_info, cuda_available

__version__ = _version()
__all__ = ["build_info", "cuda_available", "__version__"]
