"""Classical partial-scan completions, the baselines of the completion network.

Every method maps (sampled values [H, W], mask [H, W] bool) to a full image [H, W] (float64,
the values' units):

* ``nearest``: each pixel takes its nearest sample (the thesis's network input);
* ``delaunay``: Delaunay-linear interpolation (:func:`em_accel.scan.linear_infill`);
* ``delaunay+blur``: the same, then the thesis's 5x5 Gaussian blur (sigma 2.5 px);
* ``biharmonic``: scikit-image's biharmonic inpainting (a sparse linear solve over the
  unsampled pixels; slow, seconds to minutes per 512^2 image);
* ``wavelet-cs``: compressive-sensing reconstruction with a wavelet sparsity prior
  (Daubechies-4, PyWavelets), by iterative soft thresholding with data consistency and a
  geometrically decreasing threshold, started from the Delaunay-linear image;
* ``fourier-cs``: compressive sensing with a Fourier sparsity prior (a crystal's lattice),
  iterative hard thresholding started from the Delaunay-linear image
  (:func:`em_accel.scan.fourier_infill.fourier_infill`; fast, about 0.2 s per 512^2);
* ``lattice``: the periodic lattice fitted to the samples (:mod:`em_accel.scan.lattice`),
  whether or not it explains them; Delaunay-linear where no lattice is found.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

Method = Callable[[np.ndarray, np.ndarray], np.ndarray]


def nearest(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from ..scan.interpolate import nearest_infill

    return nearest_infill(torch.from_numpy(np.asarray(values, np.float64)), mask).numpy()


def delaunay(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from ..scan.interpolate import linear_infill

    return linear_infill(torch.from_numpy(np.asarray(values, np.float64)), mask).numpy()


def blur(image: np.ndarray) -> np.ndarray:
    """The thesis's 5x5 Gaussian blur (sigma 2.5 px, reflect padding)."""
    from ..scan import gaussian_blur

    return gaussian_blur(torch.from_numpy(np.asarray(image, np.float64)), 5, 2.5).numpy()


def delaunay_blur(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return blur(delaunay(values, mask))


def biharmonic(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from skimage.restoration import inpaint_biharmonic

    v = np.asarray(values, np.float64)
    lo, span = v[mask].min(), max(np.ptp(v[mask]), 1e-12)
    out = inpaint_biharmonic((v - lo) / span, ~np.asarray(mask, bool))
    return out * span + lo


def wavelet_cs(values: np.ndarray, mask: np.ndarray, iterations: int = 40,
               wavelet: str = "db4", levels: int = 4) -> np.ndarray:
    """Iterative soft thresholding in a wavelet basis, projecting onto the samples each step.

    The threshold falls geometrically from 0.2 to 0.002 of the sampled range over
    ``iterations``; the approximation band is never thresholded.
    """
    import pywt

    m = np.asarray(mask, bool)
    v = np.asarray(values, np.float64)
    lo, span = v[m].min(), max(np.ptp(v[m]), 1e-12)
    y = (v - lo) / span
    x = delaunay(np.where(m, y, 0.0), m)
    levels = max(1, min(levels, pywt.dwt_max_level(min(y.shape), wavelet)))
    for t in np.geomspace(0.2, 0.002, iterations):
        coeffs = pywt.wavedec2(x, wavelet, level=levels, mode="symmetric")
        coeffs = [coeffs[0]] + [tuple(pywt.threshold(c, t, "soft") for c in band)
                                for band in coeffs[1:]]
        x = pywt.waverec2(coeffs, wavelet, mode="symmetric")[:y.shape[0], :y.shape[1]]
        x[m] = y[m]
    return x * span + lo


def fourier_cs(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fourier-sparse completion (iterative hard thresholding, data-consistent)."""
    from ..scan.fourier_infill import fourier_infill

    v = torch.from_numpy(np.where(mask, values, 0.0))
    start = torch.from_numpy(delaunay(values, mask))
    return fourier_infill(v, torch.from_numpy(mask), start).double().numpy()


def lattice(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The fitted lattice, accepted or not (Delaunay-linear if none is found)."""
    from ..scan.lattice import fit_lattice

    fit = fit_lattice(values, np.asarray(mask, bool))
    return delaunay(values, mask) if fit is None else fit.render()


METHODS: dict[str, Method] = {"nearest": nearest, "delaunay": delaunay,
                              "delaunay+blur": delaunay_blur, "biharmonic": biharmonic,
                              "wavelet-cs": wavelet_cs, "fourier-cs": fourier_cs,
                              "lattice": lattice}
