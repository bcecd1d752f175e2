"""How to post-filter a denoiser's output, chosen per image by Stein's unbiased risk estimate.

For an image ``y = x + n`` with white Gaussian noise of known standard deviation σ and any
(weakly differentiable) estimate ``f(y)``, Stein's lemma gives an unbiased estimate of the mean
squared error against the unknown ``x`` from ``y`` alone (Stein 1981):

    SURE(f) = ‖f(y) − y‖²/N − σ² + 2σ²·div f(y)/N.

The divergence of a network is estimated by one random probe (Monte-Carlo SURE, Ramani, Blu &
Unser 2008): ``div f ≈ bᵀ(f(y + εb) − f(y))/ε`` with ``b`` standard normal. A ReLU network is
piecewise linear, so a small ε makes this the exact directional derivative; one probe suffices
for the images of 10⁴ px and more that micrographs are.

Two families of post-filters of the conditioned denoiser's output ``f = f(y)`` are priced:

* Gaussian smoothing ``G_t f`` with ``t`` in :data:`SMOOTHING_PX` (``t = 0``: the network
  alone). Why: at low dose the small shipped network under-smooths images whose detail is buried
  in the noise (mottled residual noise where an oracle-tuned Gaussian filter leaves a smooth
  image).
* An empirical Wiener filter of the *noisy* image with ``G_t f`` as its pilot (the second stage
  of BM3D, Dabov et al. 2007, with one global "group"): in the cosine basis each coefficient of
  ``y`` is multiplied by ``P²/(P² + σ²)``, ``P`` the pilot's coefficient. Why: on lattice images
  at high dose the network smooths away weak Bragg detail that the noisy image still holds; the
  pilot says where in frequency the signal is, and the Wiener gain keeps it. Its divergence
  includes the pilot's dependence on ``y`` (through the same probe), which matters: with the
  pilot taken as fixed the estimate favours the Wiener filter even where it is worse.

With ``counts_scale`` (how the denoiser calls it) the risk is estimated in counts, where the
error is measured, not in the Anscombe domain: for Poisson counts ``c`` and an estimate ``ĉ``,
``E‖ĉ − λ‖² = E[‖ĉ − c‖² − Σc + 2Σ c_i·∂ĉ_i/∂c_i]`` to first order (Hudson's lemma, the PURE of
Luisier, Blu & Unser 2010), the same probe giving the weighted divergence. Why: at 5–50
counts/px the Anscombe-domain estimate favoured the Wiener filters on 23 of 24 images and was
wrong on 10 (it weighs dark pixels as much as bright ones); the counts-domain estimate chose
within 1 % of the best candidate in hindsight on the test suite.

The result is the convex mix ``(1 − θ)·ĉ_G + θ·ĉ_W`` of the best of each family, θ in [0, 1]
of least estimated risk (the risk is quadratic in θ): at low dose the two err in different
places and the mix beats both (an unconstrained combination's noisy coefficients cost at high
dose).

Everything is computed in the Fourier domain of the image's mirror-symmetric extension (so a
cosine basis, with no wrap-around at the edges): one network pass on ``y`` and one on the
probe-perturbed ``y``, four FFTs, and per candidate only element-wise products.
In the network's domain (scaled Anscombe counts) the noise is close to Gaussian with σ = 1/s,
except below ~1 count/px, where the true variance is lower and the estimate errs towards more
smoothing.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

from .anscombe import anscombe, inverse_anscombe

#: Gaussian widths of the post-smoothing and of the Wiener pilot tried [px] (0 = none).
SMOOTHING_PX = (0.0, 0.4, 0.7, 1.0, 1.5, 2.2, 3.0)
#: Probe step as a fraction of σ (small: the network is piecewise linear).
PROBE_STEP = 0.02


class SureChoice(NamedTuple):
    """The post-filter picked by :func:`sure_smoothing` and the risk of every one tried."""

    width_px: float                  # Gaussian σ of the smoothing in the result [px] (0: none)
    risks: dict[float, float]        # estimated MSE per px of G_t f, per width t
    filter: str = "gaussian"         # "gaussian" (G_t f), "wiener" (pilot G_t f) or "mix"
    wiener_risks: dict[float, float] = {}  # estimated MSE per px of the Wiener filter, per t
    wiener_px: float = 0.0           # the Wiener filter's pilot width [px] ("wiener", "mix")
    mix: float = 0.0                 # the Wiener filter's weight: 0, in (0, 1) for "mix", or 1
    risk: float = float("nan")       # estimated MSE per px of the result


class _Mirror:
    """Real FFT of an [H, W] image's mirror-symmetric extension ([2H, 2W]), with the inner
    product of the original images and the noise power of each coefficient."""

    def __init__(self, shape: tuple[int, int], device: torch.device):
        h, w = shape
        self.h, self.w = h, w
        fy = torch.fft.fftfreq(2 * h, dtype=torch.float64, device=device)
        fx = torch.fft.rfftfreq(2 * w, dtype=torch.float64, device=device)
        self.f2 = fy[:, None] ** 2 + fx[None, :] ** 2          # squared frequency [1/px²]
        # rfft2 keeps half of the columns: every column but 0 and W stands for two
        self.weight = torch.full((1, w + 1), 2.0, dtype=torch.float64, device=device)
        self.weight[0, 0] = self.weight[0, w] = 1.0
        # E|X_k|² of white unit noise in the original image, per mirrored coefficient: 2N off
        # the axes, 4N at 0, nothing at the Nyquist index N (its cosines vanish at half-samples)
        def power(n: int, k: torch.Tensor) -> torch.Tensor:
            p = torch.full_like(k, 2.0 * n)
            p[k == 0] = 4.0 * n
            p[k == n] = 0.0
            return p
        ky = torch.arange(2 * h, device=device, dtype=torch.float64)
        kx = torch.arange(w + 1, device=device, dtype=torch.float64)
        self.noise_power = power(h, ky)[:, None] * power(w, kx)[None, :]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat((x, x.flip(0)), 0)
        return torch.fft.rfft2(torch.cat((x, x.flip(1)), 1).double())

    def inverse(self, spec: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(spec, s=(2 * self.h, 2 * self.w))[:self.h, :self.w]

    def dot(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """Inner product of the original images whose mirrored spectra are ``a`` and ``b``."""
        s = (self.weight * (a * b.conj()).real).sum()
        return float(s) / (4.0 * 4 * self.h * self.w)

    def gaussian(self, width_px: float) -> torch.Tensor:
        return torch.exp(-2 * math.pi ** 2 * width_px ** 2 * self.f2)


def blur(image: torch.Tensor, width_px: float) -> torch.Tensor:
    """``image`` [H, W] blurred by a Gaussian of σ = ``width_px`` px (0: a float64 copy), with
    mirror-symmetric edges, in float64: the smoothing :func:`sure_smoothing` prices."""
    if width_px <= 0:
        return image.double().clone()
    m = _Mirror(tuple(image.shape), image.device)
    return m.inverse(m.forward(image) * m.gaussian(width_px))


def _wiener(z: torch.Tensor, pilot: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    p2 = pilot.real ** 2 + pilot.imag ** 2
    return z * torch.where(noise > 0, p2 / (p2 + noise), torch.zeros_like(p2))


def _mixed(g: torch.Tensor, w: torch.Tensor, theta: float, s: float | None) -> torch.Tensor:
    """``(1 − θ)·g + θ·w``, in counts if ``s`` (the Anscombe scale) is given."""
    if s is None:
        return g + theta * (w - g)
    cg = inverse_anscombe(s * g)
    return anscombe(cg + theta * (inverse_anscombe(s * w) - cg)) / s


def apply_post_filter(z: torch.Tensor, f0: torch.Tensor, sigma: float, choice: SureChoice,
                      counts_scale: float | None = None) -> torch.Tensor:
    """Apply the post-filter ``choice`` (from :func:`sure_smoothing`, possibly priced on a crop)
    to a whole image: ``G_t f0``, the Wiener filter of ``z`` with pilot ``G_t f0``, or their
    mix (in counts if ``counts_scale``, as priced). Returns float64 [H, W]."""
    m = _Mirror(tuple(z.shape), z.device)

    def wiener(width: float) -> torch.Tensor:
        pilot = m.forward(f0)
        if width > 0:
            pilot = pilot * m.gaussian(width)
        return m.inverse(_wiener(m.forward(z), pilot, sigma ** 2 * m.noise_power))

    if choice.filter == "gaussian":
        return blur(f0, choice.width_px)
    if choice.filter == "wiener":
        return wiener(choice.wiener_px)
    return _mixed(blur(f0, choice.width_px), wiener(choice.wiener_px), choice.mix,
                  counts_scale)


def sure_smoothing(z: torch.Tensor, denoise: Callable[[torch.Tensor], torch.Tensor],
                   sigma: float, widths: tuple[float, ...] = SMOOTHING_PX,
                   seed: int = 0, wiener: bool = True,
                   counts_scale: float | None = None) -> tuple[torch.Tensor, SureChoice]:
    """Denoise ``z`` [H, W] and post-filter the result by the filter of least estimated risk.

    Args:
        z: noisy image whose noise is white with standard deviation ``sigma`` (same units).
        denoise: maps an [H, W] image to its estimate (called twice: on ``z`` and on a
            probe-perturbed ``z``).
        sigma: the noise standard deviation, > 0.
        widths: Gaussian widths to choose from [px], for the smoothing and for the Wiener
            pilot; include 0 to allow the network's output as it is.
        seed: seed of the Monte-Carlo probe.
        wiener: also price the empirical Wiener filters (module docstring).
        counts_scale: if ``z`` is a scaled Anscombe image of Poisson counts,
            ``z = 2·sqrt(c + 3/8)/s``, its scale ``s``: the risk is then estimated in counts,
            where the error is measured, by the Poisson form of the estimate (module
            docstring); None: in ``z``'s own units, for white Gaussian noise.

    Returns ``(estimate [H, W] float64, SureChoice)``; the risks are per px in the units of
    the domain they were estimated in (``z``, or counts²).
    """
    if z.dim() != 2:
        raise ValueError(f"z must be 2-D [H, W], got shape {list(z.shape)}")
    if not sigma > 0 or not math.isfinite(sigma):
        raise ValueError(f"sigma must be a positive finite noise level, got {sigma}")
    if not widths or min(widths) < 0:
        raise ValueError(f"widths must be a non-empty tuple of widths >= 0 px, got {widths}")
    g = torch.Generator(device="cpu").manual_seed(seed)
    probe = torch.randn(z.shape, generator=g, dtype=torch.float64).to(z.device)
    eps = PROBE_STEP * sigma
    f0 = denoise(z).double()
    response = (denoise((z.double() + eps * probe).to(z.dtype)).double() - f0) / eps
    m = _Mirror(tuple(z.shape), z.device)
    Z, B, F0, R = (m.forward(x) for x in (z, probe, f0, response))
    n, s2 = z.numel(), sigma ** 2
    noise = s2 * m.noise_power

    s = None if counts_scale is None else float(counts_scale)
    if s is None:
        y = z.double()

        def priced(spec: torch.Tensor, response: torch.Tensor) -> tuple[torch.Tensor, float]:
            """The candidate's values in the risk's domain and its divergence term."""
            return m.inverse(spec), s2 * m.dot(B, response)
        noise_energy = n * s2
    else:
        zd = z.double()
        y = (s * zd / 2) ** 2 - 0.375
        # Poisson: E‖ĉ − λ‖² = E[‖ĉ − c‖² − Σc + 2Σ c_i ∂ĉ_i/∂c_i] (Hudson's lemma, to first
        # order); ∂ĉ_i/∂c_i = (dĉ/dẑ)(∂ẑ_i/∂z_i)(dz/dc) = (s²ẑ/2)·J_ii·2/(s²z), so the weight is
        # c·ẑ/z; a pixel of no counts (z at its floor) has no say, whatever its estimate
        w_c = torch.where(zd > 0, y.clamp_min(0) / zd.clamp_min(1e-300), torch.zeros_like(zd))

        def priced(spec: torch.Tensor, response: torch.Tensor) -> tuple[torch.Tensor, float]:
            e = m.inverse(spec)
            return inverse_anscombe(s * e), float((probe * w_c * e * m.inverse(response)).sum())
        noise_energy = float(y.sum())

    def risk(v: torch.Tensor, div: float) -> float:
        return (float(((v - y) ** 2).sum()) - noise_energy + 2 * div) / n

    # per family: (risk, width, spectrum, values in the risk's domain, divergence term)
    best: dict[str, tuple] = {}
    risks, wiener_risks = {}, {}
    for w in widths:
        h = m.gaussian(w) if w > 0 else None
        est = F0 * h if h is not None else F0
        resp = R * h if h is not None else R
        v, div = priced(est, resp)
        risks[float(w)] = r = risk(v, div)
        if "gaussian" not in best or r < best["gaussian"][0]:
            best["gaussian"] = (r, float(w), est, v, div)
        if wiener:
            west = _wiener(Z, est, noise)
            moved = _wiener(Z + eps * B, est + eps * resp, noise)
            v, div = priced(west, (moved - west) / eps)
            wiener_risks[float(w)] = r = risk(v, div)
            if "wiener" not in best or r < best["wiener"][0]:
                best["wiener"] = (r, float(w), west, v, div)
    rg, wg, eg, vg, dg = best["gaussian"]
    gauss_out = f0 if wg == 0.0 else m.inverse(eg)   # t = 0: the network's output, bit for bit
    if "wiener" not in best:
        return gauss_out, SureChoice(wg, risks, "gaussian", wiener_risks, risk=rg)
    # the convex mix of the two families' best of least risk (a quadratic in its weight θ):
    # at low dose the two err in different places and the mix beats both
    rw, ww, ew, vw, dw = best["wiener"]
    u = vw - vg
    uu = float((u * u).sum())
    theta = 0.0 if uu <= 0 else -(float((u * (vg - y)).sum()) + dw - dg) / uu
    theta = min(max(theta, 0.0), 1.0)
    if theta == 0.0:
        return gauss_out, SureChoice(wg, risks, "gaussian", wiener_risks, risk=rg)
    if theta == 1.0:
        return m.inverse(ew), SureChoice(0.0, risks, "wiener", wiener_risks, ww, 1.0, rw)
    r = risk(vg + theta * u, dg + theta * (dw - dg))
    out = _mixed(gauss_out, m.inverse(ew), theta, s)
    return out, SureChoice(wg, risks, "mix", wiener_risks, ww, theta, r)
