"""Sparse and adaptive scan paths (thesis ch. 4-5): generators, partial scans, the environment.

Lightweight to import: plotting (matplotlib) and the command line load their extras lazily.
"""
from __future__ import annotations

from ..ops.scan import Raster, scan_rasterize, scan_sample
from .env import AdaptiveScanEnv, InvalidActionError, Segment
from .fourier_infill import fourier_infill
from .lattice import LatticeFit, fit_lattice, infer_path_kind
from .partial import (PartialScan, blur_path, dwell_mask, gaussian_blur, low_dwell_noise,
                      partial_scan)
from .paths import (PATH_KINDS, ScanPath, achieved_coverage, grid, gridlike, make_path, random,
                    raster, spiral)

__all__ = ["AdaptiveScanEnv", "InvalidActionError", "Segment", "PartialScan", "Raster",
           "ScanPath", "PATH_KINDS", "LatticeFit",
           "achieved_coverage", "blur_path", "dwell_mask", "fit_lattice", "fourier_infill",
           "gaussian_blur", "grid", "infer_path_kind",
           "gridlike",
           "low_dwell_noise", "make_path", "partial_scan", "random", "raster", "scan_rasterize",
           "scan_sample", "spiral"]
