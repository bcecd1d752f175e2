"""What this build of em-accel contains and what it can run here."""
from __future__ import annotations

import platform
from importlib import metadata

from . import _native


def _version() -> str:
    try:
        return metadata.version("em-accel")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


def cuda_available() -> bool:
    """True when CUDA kernels were compiled in and a CUDA device is visible."""
    return bool(_native.has_cuda()) and _native.cuda_device_count() > 0


def build_info() -> dict:
    """Build and runtime facts: version, CUDA compiled/available, OpenMP, CUDA archs, threads.

    Never initialises torch's CUDA and never needs a driver.
    """
    info = {
        "version": _version(),
        "cuda_compiled": bool(_native.has_cuda()),
        "cuda_available": cuda_available(),
        "cuda_device_count": int(_native.cuda_device_count()),
        "cuda_archs": [a for a in _native.cuda_archs().split(",") if a],
        "openmp": bool(_native.openmp()),
        "cpu_threads": int(_native.max_threads()),
        "families": sorted(n for n in dir(_native) if not n.startswith("_")
                           and type(getattr(_native, n)).__name__ == "module"),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
    except ImportError:  # torch is a dependency, but build_info should still answer
        info["torch"] = None
    return info
