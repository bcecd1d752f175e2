"""A compact noise-level-conditioned denoiser for every dose (counts/px from ~1 to 10⁴).

The network works in a variance-stabilised domain. Counts ``c`` (or equivalent Poisson counts
from a detector image, :mod:`em_accel.data.noise_estimate`) go through the Anscombe transform
``z = 2·sqrt(c + 3/8)``, whose noise has standard deviation ≈ 1 whatever the dose, and are divided
by ``s = 2·sqrt(mean(c) + 3/8)`` so that every image has a mean near 1. The noise level of the
scaled image is then ``σ = 1/s`` (0.43 at 1 count/px, 0.005 at 10⁴), and a constant map of σ is
the network's second input channel, as in FFDNet/DRUNet: one model for all doses.

The network is a small bias-free UNet (residual blocks of two 3×3 convolutions, 2×2 strided
convolutions down, transposed ones up, skips by addition, as DRUNet) and predicts the noise:
``ẑ = z − net([z, σ])``. Being bias-free and ReLU, the network is positively homogeneous:
scaling image and noise level together scales its output alike, which is what lets one set of
weights span noise levels (Mohan et al., ICLR 2020). The clean counts are ``(s·ẑ/2)² − 3/8``.
(``residual="sigma"`` predicts the noise in units of σ, ``z − σ·net``, instead; it trained
better in a short measured comparison and the shipped weights use it, see docs/denoise.md.)
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import nn

from ..data.noise_estimate import NoiseLevel, estimate_denoiser_noise
from .anscombe import anscombe, inverse_anscombe
from .sure import SureChoice, apply_post_filter, sure_smoothing

#: Shipped weights of the conditioned model.
PRETRAINED_CONDITIONED = "denoiser_conditioned.safetensors"
#: Post-processing of :func:`denoise_micrograph`: risk-chosen smoothing, or none.
REFINE = ("sure", "none")


class ResBlock(nn.Module):
    """x + conv3(ReLU(conv3(x))), bias-free."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                  nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, channels, 3, padding=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ConditionedUNet(nn.Module):
    """Noise-level-conditioned residual UNet.

    Args:
        channels: channels per level, finest first (each further level halves the resolution).
        blocks: residual blocks per level on each side (and in the bottleneck).
        residual: ``"direct"`` (``ẑ = z − net``) or ``"sigma"`` (``ẑ = z − σ·net``, the noise
            in units of σ).

    Input ``[B, 2, H, W]``: the scaled Anscombe image and its noise-level map σ; H and W
    multiples of ``2**(len(channels) − 1)``. Output ``[B, 1, H, W]``: the denoised scaled
    Anscombe image.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 96), blocks: int = 1,
                 residual: str = "direct") -> None:
        super().__init__()
        if not 1 <= len(channels) <= 4 or min(channels) < 1 or blocks < 0:
            raise ValueError(f"need 1-4 levels of >= 1 channels and blocks >= 0, got "
                             f"channels={channels}, blocks={blocks}")
        if residual not in ("direct", "sigma"):
            raise ValueError(f"residual must be 'direct' or 'sigma', got {residual!r}")
        self.config = {"channels": [int(c) for c in channels], "blocks": int(blocks),
                       "residual": residual}
        self.head = nn.Conv2d(2, channels[0], 3, padding=1, bias=False)
        self.down = nn.ModuleList()
        self.enc = nn.ModuleList()
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for c, nxt in zip(channels[:-1], channels[1:]):
            self.enc.append(nn.Sequential(*(ResBlock(c) for _ in range(blocks))))
            self.down.append(nn.Conv2d(c, nxt, 2, stride=2, bias=False))
            self.up.append(nn.ConvTranspose2d(nxt, c, 2, stride=2, bias=False))
            self.dec.append(nn.Sequential(*(ResBlock(c) for _ in range(blocks))))
        self.body = nn.Sequential(*(ResBlock(channels[-1]) for _ in range(blocks)))
        self.tail = nn.Conv2d(channels[0], 1, 3, padding=1, bias=False)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        for blk in self.modules():   # residual branches start near zero: a stable deep start
            if isinstance(blk, ResBlock):
                blk.body[2].weight.data.mul_(0.1)
        self.tail.weight.data.mul_(0.1)

    @property
    def stride(self) -> int:
        return 2 ** (len(self.config["channels"]) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 2:
            raise ValueError("x must have shape [B, 2, H, W] (image, noise map), got "
                             f"{list(x.shape)}")
        if x.shape[-2] % self.stride or x.shape[-1] % self.stride:
            raise ValueError(f"x's height and width must be multiples of {self.stride}, got "
                             f"{x.shape[-2]}×{x.shape[-1]} (use denoise_micrograph, which tiles "
                             "and pads)")
        z = x[:, :1]
        y = self.head(x)
        skips = []
        for enc, down in zip(self.enc, self.down):
            y = enc(y)
            skips.append(y)
            y = down(y)
        y = self.body(y)
        for up, dec in zip(reversed(self.up), reversed(self.dec)):
            y = dec(up(y) + skips.pop())
        r = self.tail(y)
        return z - (x[:, 1:] * r if self.config["residual"] == "sigma" else r)


class WithNoiseMap(nn.Module):
    """``model`` applied to ``[B, 1, H, W]`` inputs with a constant noise map σ appended (lets
    the single-channel tiling of :func:`em_accel.models.denoise_tiled` drive it)."""

    def __init__(self, model: nn.Module, sigma: float) -> None:
        super().__init__()
        self.model, self.sigma = model, float(sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.cat([x, torch.full_like(x, self.sigma)], 1))


def scale_of(mean_counts: float | torch.Tensor) -> torch.Tensor:
    """The scale ``s = 2·sqrt(mean + 3/8)`` that brings an Anscombe image to mean ≈ 1; σ = 1/s."""
    m = torch.as_tensor(mean_counts, dtype=torch.float64)
    return 2.0 * torch.sqrt(m.clamp_min(0.0) + 0.375)


def _read(path: str | Path | None) -> bytes:
    if path is None:
        ref = resources.files("em_accel.models") / "weights" / PRETRAINED_CONDITIONED
        if not ref.is_file():
            raise FileNotFoundError(f"no shipped weights {PRETRAINED_CONDITIONED} in "
                                    "em_accel/models/weights")
        return ref.read_bytes()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no weights file {p}")
    return p.read_bytes()


def _meta(data: bytes) -> dict:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]).get("__metadata__", {})


def load_conditioned(path: str | Path | None = None, *,
                     device: str | torch.device | None = None) -> ConditionedUNet:
    """The shipped conditioned denoiser (``path=None``) or one from a weights file written by
    :func:`em_accel.train.checkpoint.save_weights`, in eval mode on ``device`` (default CPU)."""
    from safetensors.torch import load

    data = _read(path)
    meta = _meta(data)
    if "config" not in meta:
        raise ValueError("weights file has no 'config' metadata (write it with "
                         "em_accel.train.checkpoint.save_weights)")
    config = json.loads(meta["config"])
    if "channels" not in config:
        raise ValueError("weights file is not a ConditionedUNet (its config has no 'channels'); "
                         "load AtrousDenoiser weights with em_accel.models.load_weights")
    model = ConditionedUNet(tuple(config["channels"]), config["blocks"],
                            config.get("residual", "direct"))
    model.load_state_dict({k: v.float() for k, v in load(data).items()})
    return model.to(device if device is not None else "cpu").eval()


def conditioned_notes(path: str | Path | None = None) -> dict:
    """How the shipped (or a saved) conditioned denoiser was trained, from the file's metadata."""
    return json.loads(_meta(_read(path)).get("notes", "{}"))


#: Side [px] of the central crop on which a larger image's post-filter is chosen (the risk
#: estimate needs a second network pass; on a crop it costs a fraction of one).
SURE_CROP = 256


def _sure_refined(z: torch.Tensor, run: Callable, run_quiet: Callable,
                  s: float) -> tuple[torch.Tensor, SureChoice]:
    """The network's output on ``z`` post-filtered by the SURE choice; on images larger than
    :data:`SURE_CROP` in both sides the choice is made on the central crop (both of its network
    passes on the crop alone) and then applied to the whole output. ``run`` reports progress,
    ``run_quiet`` does not; ``s`` is the Anscombe scale of ``z`` (noise σ = 1/s)."""
    h, w = z.shape
    if min(h, w) <= SURE_CROP * 1.25:
        passes = iter((run, run_quiet))            # progress counts the first pass only
        return sure_smoothing(z, lambda x: next(passes)(x), 1.0 / s, counts_scale=s)
    f0 = run(z).double()
    r0, c0 = (h - SURE_CROP) // 2, (w - SURE_CROP) // 2
    crop = z[r0:r0 + SURE_CROP, c0:c0 + SURE_CROP]
    _, choice = sure_smoothing(crop, run_quiet, 1.0 / s, counts_scale=s)
    if choice.filter == "gaussian" and choice.width_px == 0:
        return f0, choice
    return apply_post_filter(z.double(), f0, 1.0 / s, choice, counts_scale=s), choice


class Denoised(NamedTuple):
    """Result of :func:`denoise_micrograph`."""

    image: np.ndarray        # float32 [H, W], in the input's units
    noise: NoiseLevel        # the noise model used (estimated, or the user's)
    smoothing_px: float = 0.0  # Gaussian width of the post-filter picked by ``refine="sure"`` [px]
    post_filter: str = "none"  # "none", "gaussian" (G_t f), "wiener" (pilot G_t f) or "mix"
    wiener_px: float = 0.0     # the Wiener filter's pilot width [px] ("wiener" or "mix")
    wiener_weight: float = 0.0  # the Wiener filter's share of the result (1 for "wiener")


def denoise_micrograph(image: np.ndarray | torch.Tensor, model: nn.Module | None = None, *,
                       noise: NoiseLevel | None = None, tile: int = 512, margin: int = 16,
                       batch_size: int = 4, progress: bool = True, ensemble: bool = False,
                       refine: str = "sure",
                       callback: Callable[[int], None] | None = None) -> Denoised:
    """Denoise a 2-D micrograph at any dose, in its own units (counts or detector units).

    The Poisson–Gaussian noise is estimated from the image (:func:`estimate_denoiser_noise`:
    :func:`estimate_noise`, its pedestal kept within the training range) unless
    ``noise`` is given (e.g. :func:`noise_level_from_detector` with the detector's gain, offset
    and read noise). The image is turned into equivalent counts, Anscombe-transformed, scaled,
    denoised tile by tile with the noise level σ as a second input, and mapped back.

    With ``refine="sure"`` (default) the network's output is then post-filtered by the filter
    of least Stein's unbiased risk estimate, computed from the image itself
    (:mod:`em_accel.models.sure`): a Gaussian smoothing of 0–3 px (0 = none), or an empirical
    Wiener filter of the noisy image with the (smoothed) network output as its pilot. This
    costs a second network pass and runs in float32 on CUDA too (the risk needs the network's
    response to a small perturbation, below bfloat16's resolution). On held-out micrographs at
    5–50 counts/px the smoothing lowers the error by 29–56 %, and at 500–5000 counts/px the
    Wiener filter by about 10 % (docs/denoise.md). The risk is estimated in counts, where the
    error is measured. ``refine="none"`` returns the network's output as
    is, in one pass (bfloat16 autocast on CUDA).

    Args:
        image: [H, W] array, at least 16×16 px.
        model: a :class:`ConditionedUNet` (default: the shipped weights, on the CPU); it runs
            on its own device, with bfloat16 autocast on CUDA.
        noise: the noise model; None estimates it.
        tile, margin, batch_size, progress, ensemble, callback: as
            :func:`em_accel.models.denoise_tiled` (``progress`` draws a bar over the tiles on a
            terminal; ``callback`` gets the number of tiles done after each batch).
        refine: ``"sure"`` or ``"none"`` (see above).
    """
    from .tiling import denoise_tiled

    arr = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image,
                     dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"image must be 2-D [H, W], got shape {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ValueError("image contains NaN or infinite values")
    if refine not in REFINE:
        raise ValueError(f"refine must be one of {REFINE}, got {refine!r}")
    if model is None:
        model = load_conditioned()
    nl = noise if noise is not None else estimate_denoiser_noise(arr)
    counts = torch.as_tensor(nl.to_counts(arr))
    s = float(scale_of(float(counts.mean())))
    device = next(model.parameters()).device
    z = (anscombe(counts) / s).float().to(device)
    net = WithNoiseMap(model, 1.0 / s)

    def run(x: torch.Tensor) -> torch.Tensor:
        return denoise_tiled(net, x, tile, margin, batch_size, progress, ensemble,
                             callback=callback)

    width, post, wiener_px, wiener_weight = 0.0, "none", 0.0, 0.0
    if refine == "sure":
        out, choice = _sure_refined(z, run, lambda x: denoise_tiled(
            net, x, tile, margin, batch_size, False, ensemble), s)
        width, wiener_px, wiener_weight = choice.width_px, choice.wiener_px, choice.mix
        post = "none" if choice.filter == "gaussian" and width == 0 else choice.filter
    else:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = run(z)
    lam = inverse_anscombe(out.double().cpu() * s)
    return Denoised(nl.from_counts(lam.numpy()).astype(np.float32), nl, width, post,
                    wiener_px, wiener_weight)
