"""Partial-scan completion network (thesis ch. 4; arXiv:1905.13667, arXiv:1910.10467).

One network completes sparse STEM scans for every coverage from 1/100 to 1/10 and for spiral,
jittered gridlike and uniform grid paths; coverage and path kind are conditioning inputs
(FiLM: a per-channel scale and shift of each encoder level, from a small MLP).

Input channels ([B, 4 or 5, H, W], see :func:`completion_inputs`), intensities min-max scaled
by the sampled values:

0. Delaunay-linear interpolation of the samples (:func:`em_accel.scan.linear_infill`);
1. nearest-neighbour infill (the thesis's input);
2. the mask (1 where sampled);
3. distance to the nearest sample, min(d, 64 px) / 16;
4. (models with 5 input channels) the Fourier-sparse infill
   (:func:`em_accel.scan.fourier_infill.fourier_infill`), which sees a crystal lattice through
   the whole scan where a local interpolation cannot.

The network predicts a correction to its base (config ``base_channel``: 0, or 4 for the
Fourier infill; an untrained network is that baseline; with config ``gate`` the base is a
per-pixel learned mix of channels 0 and 4) and a per-pixel Laplace scale ``b`` of its error,
trained by likelihood. Structure: a
2x2 space-to-depth, a four-level U-Net at 1/2 ... 1/16 resolution (3x3 convolutions, ReLU,
nearest upsampling, skip concatenation), a depth-to-space head. This is far cheaper than the
thesis's inner/outer generator (:class:`ThesisGenerator`, kept for reference and cost
comparison; see docs/complete.md for measured FLOPs and time). H and W must be multiples of 16.
"""
from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..scan.lattice import LatticeFit
from ..scan.lattice_region import LatticeRegion

#: Path kinds the network is conditioned on (index = its one-hot position); others: "unknown".
KINDS = ("spiral", "gridlike", "grid")
#: Supported coverage range (fraction of pixels sampled): 1/125 ... 1/8.
COVERAGE_RANGE = (0.008, 0.125)
#: Trained range, for the conditioning's normalisation.
_LOG_C_LO, _LOG_C_HI = math.log(0.01), math.log(0.1)
#: Input height and width must be multiples of this.
STRIDE = 16
#: Distance channel: min(d, DIST_CLIP) / DIST_SCALE, d in px.
DIST_CLIP, DIST_SCALE = 64.0, 16.0
#: Output scale of the correction head (see forward).
CORRECTION_SCALE = 0.1
#: Index of the Fourier-sparse infill among the input channels (5-channel models).
FOURIER_CHANNEL = 4
#: Initial logit of a gated model's Fourier share (sigmoid(-4) = 1.8%).
GATE_START = -4.0
#: Two-sided interval of a Laplace(b): P(|e| <= b * ln(1 / (1 - p))) = p.
Z90 = math.log(10.0)

PRETRAINED = "completion_small.safetensors"
#: ``prior`` choices of :func:`complete_scan`; path kinds "auto" tries a lattice on.
PRIORS = ("auto", "network", "lattice")
LATTICE_KINDS = ("spiral", "grid")
#: "auto" completes with a lattice only where its local mean |error| is at most this fraction
#: of the network's predicted mean |error| (see :func:`auto_completion`).
LATTICE_ERROR_RATIO = 0.75
#: On a regular grid, a fitted lattice whose unit cell exceeds this area [Å²] (a 10 x 10 Å
#: projected cell) is taken for an alias of a finer lattice the grid cannot resolve, where the
#: pixel size is known (stop 36: the aliases accepted on held-out mixed-magnification grids had
#: cells of 130-1990 Å², the accepted lattices that beat the network at most 60 Å²).
GRID_MAX_CELL_A2 = 100.0


class CompletionInputError(ValueError):
    """Bad input to partial-scan completion (named subclasses below)."""


class CoverageRangeError(CompletionInputError):
    """Coverage outside :data:`COVERAGE_RANGE`."""


class NonFiniteImageError(CompletionInputError):
    """The image holds NaN or infinite pixels."""


class ImageShapeError(CompletionInputError):
    """The image is not 2-D (or the mask does not match it)."""


class UnknownPathKindError(CompletionInputError):
    """A path kind the network was not conditioned on."""


class NoiseLevelError(CompletionInputError):
    """A noise level that is negative, NaN or infinite."""


class PixelSizeError(CompletionInputError):
    """A pixel size that is not a positive finite number."""


def check_coverage(coverage: float) -> float:
    """``coverage`` as a float, or :class:`CoverageRangeError` outside :data:`COVERAGE_RANGE`."""
    c = float(coverage)
    lo, hi = COVERAGE_RANGE
    if not (lo <= c <= hi):
        raise CoverageRangeError(
            f"coverage must be in [{lo}, {hi}] (1/{1 / lo:.0f} to 1/{1 / hi:.0f} of the pixels; "
            f"the network was trained on 1/100 to 1/10), got {c:.4g} (1/{1 / c:.1f})"
            if c > 0 else f"coverage must be in [{lo}, {hi}], got {c}")
    return c


def kind_index(kind: str | None) -> int:
    """Conditioning index of a path kind: 0..2 for :data:`KINDS`, -1 for None/"unknown"
    (e.g. a user's mask of unknown origin)."""
    if kind is None or kind == "unknown":
        return -1
    if kind not in KINDS:
        raise UnknownPathKindError(f"path kind must be one of {KINDS} or None, got {kind!r}")
    return KINDS.index(kind)


def conditioning(coverage: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
    """[B, 4] conditioning vector: scaled log coverage (0 at 1/100, 1 at 1/10) and the one-hot
    path kind (all zeros for kind -1, unknown)."""
    c = torch.as_tensor(coverage, dtype=torch.float32).reshape(-1)
    k = torch.as_tensor(kind, dtype=torch.long, device=c.device).reshape(-1)
    u = (torch.log(c.clamp_min(1e-6)) - _LOG_C_LO) / (_LOG_C_HI - _LOG_C_LO)
    onehot = F.one_hot(k.clamp_min(0), len(KINDS)).float() * (k >= 0).float()[:, None]
    return torch.cat([u[:, None], onehot], 1)


class CompletionInputs(NamedTuple):
    x: torch.Tensor       # [B, 4, H, W] network input
    lo: torch.Tensor      # [B] intensity offset (min sampled value) in the input's units
    span: torch.Tensor    # [B] intensity range (max - min sampled value), > 0


def completion_inputs(image: torch.Tensor, mask: torch.Tensor,
                      infilled: torch.Tensor | None = None, *, fourier: bool = False
                      ) -> CompletionInputs:
    """Network input from a partial scan.

    Args:
        image: [B, H, W] (or [H, W]) sampled values where ``mask`` is nonzero (elsewhere
            ignored), e.g. ``partial_scan(...).raster.image``.
        mask: [H, W] shared by the batch, or [B, H, W].
        infilled: the native nearest-neighbour infill (``raster.infilled``); None: from the
            mask's cached nearest-sample map.
        fourier: append channel 4, the Fourier-sparse infill (for 5-channel models).
    """
    from ..scan.fourier_infill import fourier_infill
    from ..scan.interpolate import linear_infill, nearest_infill, sample_distance

    x = image[None] if image.dim() == 2 else image
    m = torch.as_tensor(mask, device=x.device)
    m = (m[None] if m.dim() == 2 else m).expand(x.shape[0], -1, -1).to(x.dtype)
    lin = linear_infill(x, m)
    nn_ = (infilled[None] if infilled is not None and infilled.dim() == 2 else infilled)
    if nn_ is None:
        nn_ = nearest_infill(x, m)
    dist = sample_distance(m).to(x.dtype)
    big = torch.finfo(x.dtype).max
    lo = torch.where(m > 0, x, big).flatten(1).amin(1)
    hi = torch.where(m > 0, x, -big).flatten(1).amax(1)
    span = (hi - lo).clamp_min(1e-6 * hi.abs().clamp_min(1.0))
    sc = lambda t: (t - lo[:, None, None]) / span[:, None, None]  # noqa: E731
    chans = [sc(lin), sc(nn_.to(x.dtype)), m, dist.clamp(max=DIST_CLIP) / DIST_SCALE]
    if fourier:
        chans.append(sc(fourier_infill(x, m, lin).to(x.dtype)))
    feats = torch.stack(chans, 1)
    return CompletionInputs(feats.float(), lo, span)


class Completion(NamedTuple):
    mean: torch.Tensor       # [B, 1, H, W] completed image (input's scaled units)
    log_scale: torch.Tensor  # [B, 1, H, W] log of the Laplace scale b of its error (uncalibrated)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1)


class PartialScanCompleter(nn.Module):
    """Compact conditioned U-Net completing partial scans, with a per-pixel error scale.

    Args:
        widths: channels at 1/2, 1/4, 1/8 and 1/16 resolution.
        in_channels: input channels (4, or 5 with the Fourier infill; see the module docstring).
        cond_dim: conditioning vector length (4: log coverage + one-hot of 3 path kinds).
        base_channel: the input channel the network corrects (0: Delaunay-linear).
        gate: correct a per-pixel mix ``(1 - g) x[:, 0] + g x[:, 4]`` instead, ``g`` a third
            output (sigmoid); needs the Fourier channel and ``base_channel=0``.

    ``forward(x, cond)``: x [B, in_channels, H, W] (H, W multiples of 16), cond [B, cond_dim]
    (:func:`conditioning`). Returns :class:`Completion`; ``mean = x[:, base] + correction``.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 48, 64, 96), in_channels: int = 4,
                 cond_dim: int = 4, base_channel: int = 0, gate: bool = False) -> None:
        super().__init__()
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"widths must be 4 positive channel counts, got {widths}")
        if in_channels not in (4, 5) or not 0 <= base_channel < in_channels:
            raise ValueError(f"in_channels must be 4 or 5 and base_channel one of them, got "
                             f"{in_channels}, {base_channel}")
        if gate and (in_channels <= FOURIER_CHANNEL or base_channel != 0):
            raise ValueError("gate needs the Fourier channel (in_channels=5) and base_channel=0")
        self.config = {"widths": [int(w) for w in widths], "in_channels": int(in_channels),
                       "cond_dim": int(cond_dim), "base_channel": int(base_channel),
                       "gate": bool(gate)}
        w = list(widths)
        self.stem = _conv(4 * in_channels, w[0])
        self.enc = nn.ModuleList([_conv(w[0], w[0])] + [_conv(w[i], w[i]) for i in range(1, 4)])
        self.down = nn.ModuleList(_conv(w[i], w[i + 1], 2) for i in range(3))
        self.mid = _conv(w[3], w[3])
        self.dec = nn.ModuleList(_conv(w[i] + w[i + 1], w[i]) for i in range(3))
        self.dec2 = nn.ModuleList(_conv(w[i], w[i]) for i in range(3))
        self.head = nn.Conv2d(w[0], (3 if gate else 2) * 4, 3, 1, 1)
        self.film_sizes = [w[0], w[1], w[2], w[3]]
        self.film = nn.Sequential(nn.Linear(cond_dim, 64), nn.ReLU(),
                                  nn.Linear(64, 2 * sum(self.film_sizes)))
        nn.init.zeros_(self.film[2].weight)
        nn.init.zeros_(self.film[2].bias)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():  # start: zero correction, error scale b = 0.05 (of the range)
            self.head.bias.zero_()
            self.head.bias[4:8].fill_(math.log(0.05))
            self.head.bias[8:].fill_(GATE_START)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> Completion:
        c = self.config
        if x.dim() != 4 or x.shape[1] != c["in_channels"]:
            raise ValueError(f"x must have shape [B, {c['in_channels']}, H, W], got {list(x.shape)}")
        if x.shape[-2] % STRIDE or x.shape[-1] % STRIDE:
            raise ValueError(f"x's height and width must be multiples of {STRIDE}, got "
                             f"{x.shape[-2]}x{x.shape[-1]} (complete_scan pads and tiles)")
        if cond.shape != (x.shape[0], c["cond_dim"]):
            raise ValueError(f"cond must have shape [{x.shape[0]}, {c['cond_dim']}], got "
                             f"{list(cond.shape)}")
        film = self.film(cond.to(x.dtype))
        films, o = [], 0
        for n in self.film_sizes:
            g, b = film[:, o:o + n], film[:, o + n:o + 2 * n]
            films.append((1 + g[:, :, None, None], b[:, :, None, None]))
            o += 2 * n
        h = F.relu(self.stem(F.pixel_unshuffle(x, 2)))
        skips = []
        for i in range(4):
            if i:
                h = F.relu(self.down[i - 1](h))
            g, b = films[i]
            h = F.relu(self.enc[i](h) * g + b)
            skips.append(h)
        h = F.relu(self.mid(h))
        for i in (2, 1, 0):
            h = F.interpolate(h, scale_factor=2.0, mode="nearest")
            h = F.relu(self.dec[i](torch.cat([skips[i], h], 1)))
            h = F.relu(self.dec2[i](h))
        out = F.pixel_shuffle(self.head(h), 2)
        # The correction is scaled down so that Adam's first steps (about lr per weight,
        # whatever the gradient) move the output gently away from the Delaunay start.
        base = c["base_channel"]
        start = x[:, base:base + 1]
        if c["gate"]:
            start = start + torch.sigmoid(out[:, 2:3]) * (x[:, FOURIER_CHANNEL:] - start)
        mean = start + CORRECTION_SCALE * out[:, :1]
        return Completion(mean, out[:, 1:2].clamp(-12.0, 3.0))

    @property
    def uses_fourier(self) -> bool:
        """Whether the input has the Fourier-sparse infill channel (:data:`FOURIER_CHANNEL`)."""
        return self.config["in_channels"] > FOURIER_CHANNEL

    def with_fourier_input(self, base: str = "delaunay") -> "PartialScanCompleter":
        """A 5-channel copy that also reads the Fourier-sparse infill; its stem weights for
        the new channel start at zero.

        ``base``: ``"delaunay"``: the copy computes exactly what this network does until
        fine-tuning opens the new channel. ``"fourier"``: it corrects the Fourier infill
        instead; the correction head starts at zero, so the copy's completion starts as the
        Fourier infill itself (the error scale is kept). ``"gated"``: it corrects a learned
        per-pixel mix of the two, the mix starting at sigmoid(GATE_START) ≈ 2% Fourier.
        """
        if self.uses_fourier:
            raise ValueError("the network already reads the Fourier infill")
        if base not in ("delaunay", "fourier", "gated"):
            raise ValueError(f"base must be 'delaunay', 'fourier' or 'gated', got {base!r}")
        c = self.config
        new = PartialScanCompleter(tuple(c["widths"]), 5, c["cond_dim"],
                                   FOURIER_CHANNEL if base == "fourier" else c["base_channel"],
                                   gate=base == "gated")
        state = dict(self.state_dict())
        w = state["stem.weight"]  # [out, 4 * in, 3, 3]: pixel_unshuffle puts channel i at 4i..4i+3
        state["stem.weight"] = torch.cat([w, w.new_zeros(w.shape[0], 4, *w.shape[2:])], 1)
        hw, hb = state["head.weight"].clone(), state["head.bias"].clone()
        if base == "fourier":  # head channels 0..3 are the correction (depth-to-space of 2x2)
            hw[:4], hb[:4] = 0, 0
        if base == "gated":    # channels 8..11: the gate's logit, starting nearly closed
            hw = torch.cat([hw, hw.new_zeros(4, *hw.shape[1:])])
            hb = torch.cat([hb, hb.new_full((4,), GATE_START)])
        state["head.weight"], state["head.bias"] = hw, hb
        new.load_state_dict(state)
        new.calibration = getattr(self, "calibration", 1.0)
        return new.to(w.device)


# ---------------------------------------------------------------------------------------------
# The thesis's generator, for reference and cost comparison (described layer by layer in
# docs/complete.md): inner generator at half size, outer generator at full size.

class _Res3(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(*(m for _ in range(3) for m in (_conv(c, c), nn.LeakyReLU(0.01))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.convs(x)


class ThesisGenerator(nn.Module):
    """The thesis's inner/outer multiscale generator (arXiv:1905.13667), plain convolutions
    (no weight or mean-only batch norm). ``scale`` multiplies every width (1 = the thesis's).

    Inner: 5x5 conv 64 at half size, four stride-2 convs (128, 256, 512, 768), six residual
    blocks of three convs at 768, four transposed convs back to 64 channels at half size.
    Outer: 5x5 conv 32, stride-2 conv 64 + the inner features, three residual blocks, a
    transposed conv to 32 at full size, conv 32, conv 1. Input [B, in_channels, H, W] with
    H, W multiples of 32; returns [B, 1, H, W].
    """

    def __init__(self, in_channels: int = 2, scale: float = 1.0) -> None:
        super().__init__()
        s = lambda n: max(4, round(n * scale))  # noqa: E731
        act = nn.LeakyReLU(0.01)
        inner = [nn.Conv2d(in_channels, s(64), 5, 1, 2), act]
        prev = s(64)
        for n in (128, 256, 512, 768):
            inner += [_conv(prev, s(n), 2), act]
            prev = s(n)
        inner += [_Res3(prev) for _ in range(6)]
        for n in (512, 256, 128, 64):
            inner += [nn.ConvTranspose2d(prev, s(n), 3, 2, 1, output_padding=1), act]
            prev = s(n)
        self.inner = nn.Sequential(*inner)
        self.outer_in = nn.Sequential(nn.Conv2d(in_channels, s(32), 5, 1, 2), act,
                                      _conv(s(32), s(64), 2), act)
        self.outer = nn.Sequential(*[_Res3(s(64)) for _ in range(3)],
                                   nn.ConvTranspose2d(s(64), s(32), 3, 2, 1, output_padding=1),
                                   act, _conv(s(32), s(32)), act, _conv(s(32), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
        return self.outer(self.outer_in(x) + self.inner(half))


# ---------------------------------------------------------------------------------------------
# Weights

def _from_bytes(data: bytes, device: str | torch.device | None):
    from ..train.checkpoint import read_weights
    from .denoiser import LoadedModel

    state, cfg, notes = read_weights(data)
    model = PartialScanCompleter(tuple(cfg["widths"]), cfg["in_channels"], cfg["cond_dim"],
                                 cfg.get("base_channel", 0), cfg.get("gate", False))
    model.load_state_dict(state)
    model.calibration = float(cfg.get("calibration", 1.0))
    return LoadedModel(model.to(device if device is not None else "cpu").eval(), notes)


def load_weights(path: str | Path, *, device: str | torch.device | None = None):
    """``LoadedModel(model, notes)``: a :class:`PartialScanCompleter` from a weights file of
    :func:`em_accel.train.checkpoint.save_weights`, in eval mode on ``device`` (default CPU).
    The uncertainty calibration factor (config ``calibration``, 1 if absent) is set as
    ``model.calibration``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file {path}")
    return _from_bytes(path.read_bytes(), device)


def _shipped(name: str) -> bytes:
    fname = PRETRAINED if name == "completion" else name
    ref = resources.files("em_accel.models") / "weights" / fname
    if not ref.is_file():
        raise FileNotFoundError(f"no shipped weights named {name!r} in em_accel/models/weights")
    return ref.read_bytes()


def load_pretrained(name: str = "completion", *, device: str | torch.device | None = None
                    ) -> PartialScanCompleter:
    """The shipped completion network (``"completion"``, or a file name in
    em_accel/models/weights) in eval mode on ``device`` (default CPU), with its calibration
    factor; :func:`completion_notes` says how it was trained."""
    return _from_bytes(_shipped(name), device).model


def completion_notes(name: str = "completion") -> dict:
    """How the shipped completion network was trained (data, steps, seconds, validation)."""
    return _from_bytes(_shipped(name), None).notes


def count_flops(model: nn.Module, x: torch.Tensor, *args) -> int:
    """Multiply-accumulates of one forward pass of convolution and linear layers (x2 = FLOPs)."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        o = out if isinstance(out, torch.Tensor) else out[0]
        if isinstance(m, nn.Conv2d):
            total += o.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.ConvTranspose2d):
            i = inp[0]
            total += i.numel() * m.out_channels * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += o.numel() * m.in_features

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(x, *args)
    finally:
        for h in hooks:
            h.remove()
    return int(total)


class CompletionResult(NamedTuple):
    """A completed scan, all [H, W] float32 in the input's intensity units."""

    completion: np.ndarray   # the estimate of the full image
    uncertainty: np.ndarray  # half-width of its calibrated 90% interval (|error| < this at 90%)
    sparse: np.ndarray       # the sampled values (0 where not sampled)
    mask: np.ndarray         # bool, True where sampled
    coverage: float          # fraction of pixels sampled
    kind: str | None         # path kind the network was told (None: unknown)
    method: str = "network"  # what completed it: "network", "lattice" or "lattice+network"
    lattice: LatticeFit | None = None  # the lattice where one was used (of two: the first)
    lattice_weight: np.ndarray | None = None  # [H, W] the lattices' share, where any was used
    aliased: bool = False    # a grid whose samples alias a lattice finer than its step


class NoLatticeError(CompletionInputError):
    """``prior="lattice"`` but the samples show no two independent periodicities."""


def check_prior(prior: str) -> None:
    """ValueError unless ``prior`` is one of :data:`PRIORS`."""
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")


def shot_noise_var(values: np.ndarray, mask: np.ndarray, counts_per_intensity: float) -> float:
    """White-noise variance [values' units squared] of a scan whose values are Poisson counts
    N ~ P(c I) divided by c = ``counts_per_intensity`` (as :func:`em_accel.scan.partial_scan`
    simulates them): I / c, averaged over the sampled pixels."""
    return max(float(np.asarray(values)[np.asarray(mask, bool)].mean()), 0.0) \
        / float(counts_per_intensity)


def lattice_path_kind(mask: np.ndarray, kind: str | None) -> str | None:
    """The path kind ``prior="auto"`` treats a scan as when looking for a lattice: "spiral" or
    "grid", or None for none (jittered gridlike paths: their parallel lines alias a lattice
    along their normal, and held-out tiles on the same lines cannot tell the alias from the
    lattice). A mask of unknown kind (None or "unknown") is judged by its spectrum
    (:func:`em_accel.scan.lattice.infer_path_kind`; scattered samples such as random ones
    count as spiral-like)."""
    from ..scan.lattice import infer_path_kind

    seen_as = kind if kind in KINDS else infer_path_kind(mask)
    return seen_as if seen_as in LATTICE_KINDS else None


class AutoCompletion(NamedTuple):
    """What ``prior="auto"`` makes of a scan and the network's completion of it."""

    completion: np.ndarray       # [H, W] float64, the values' units
    scale: np.ndarray            # [H, W] predicted mean |error| (Laplace scale)
    method: str                  # "network", "lattice" or "lattice+network"
    fit: LatticeFit | None       # the whole-image lattice fit, where one was made
    regions: tuple[LatticeRegion, ...] = ()   # where lattices complete the scan, in order
    lattice_weight: np.ndarray | None = None  # [H, W] the lattices' share, where any was used
    aliased: bool = False        # the grid's lattice taken for an alias; scale widened
    # Large images (em_accel.models.lattice_tiles): (tile, that tile's result) where a tile's
    # lattices were used; the tile's regions and fits are in its own coordinates.
    tiles: tuple[tuple[tuple[slice, slice], AutoCompletion], ...] = ()

    @property
    def region(self) -> LatticeRegion | None:
        """The first (largest) whole-image region, if any."""
        return self.regions[0] if self.regions else None

    @property
    def lattice_fit(self) -> LatticeFit | None:
        """The lattice of the first whole-image region, else of the tile region covering
        most of the image (its coefficients for that tile), else None."""
        if self.region is not None:
            return self.region.fit
        tile_regions = [r for _, t in self.tiles for r in t.regions]
        return max(tile_regions, key=lambda r: r.weight.sum()).fit if tile_regions else None

    @property
    def region_count(self) -> int:
        """Regions in which lattices complete the scan, the tiles' included."""
        return len(self.regions) + sum(len(t.regions) for _, t in self.tiles)


def auto_completion(values: np.ndarray, mask: np.ndarray, kind: str | None,
                    completion: np.ndarray, scale: np.ndarray, seed: int = 0,
                    noise_var: float | None = None, pixel_size: float | None = None,
                    progress: bool = False) -> AutoCompletion:
    """``prior="auto"``: the network's ``completion`` (predicted mean |error| ``scale``, both
    [H, W]) with fitted lattices in the parts of the image where a lattice's local
    error is at most :data:`LATTICE_ERROR_RATIO` of the network's
    (:func:`em_accel.scan.lattice_region.lattice_regions`: the whole image for a crystal, its
    crystalline part beside vacuum, support or another grain, a second grain; on grids only
    from an accepted whole-image fit), blended over the gaps between the samples. There the
    scale is the lattice's measured local error (shot noise included). ``noise_var``: the
    samples' white-noise variance where known [values' units squared]
    (:func:`em_accel.scan.lattice.fit_lattice`; None: estimated, and taken as 0 on grids).
    ``pixel_size`` [Å/px], where known: on grids a lattice whose unit cell exceeds
    :data:`GRID_MAX_CELL_A2` is taken for an alias and left out, and the scale is raised to
    at least the mean |error| of the samples' local mean (the alias's finer lattice varies
    between the samples by as much as the samples do, and no completion can place it).

    Images larger than :data:`em_accel.models.lattice_tiles.TILE` px are then searched tile by
    tile as well, each tile against the whole-image result (:mod:`em_accel.models.lattice_tiles`;
    ``progress``: a bar over the tiles on a terminal)."""
    from .lattice_tiles import refine_by_tiles

    seen_as = lattice_path_kind(mask, kind)
    if seen_as is None:
        return AutoCompletion(completion, scale, "network", None)

    def search(v: np.ndarray, m: np.ndarray, c: np.ndarray, s: np.ndarray) -> AutoCompletion:
        return _auto_lattice(v, m, seen_as, c, s, seed, noise_var, pixel_size)

    whole = search(values, mask, completion, scale)
    if whole.aliased:
        return whole
    return refine_by_tiles(values, mask, whole, search, progress)


def _auto_lattice(values: np.ndarray, mask: np.ndarray, seen_as: str, completion: np.ndarray,
                  scale: np.ndarray, seed: int, noise_var: float | None,
                  pixel_size: float | None) -> AutoCompletion:
    """:func:`auto_completion` on the whole of ``values`` (no tiles), its path kind ``seen_as``
    ("spiral" or "grid")."""
    from ..scan.lattice import blas_on_one_thread, fit_lattice
    from ..scan.lattice_region import lattice_regions, local_spread

    with blas_on_one_thread():     # the fits' and renderings' small products
        fit = fit_lattice(values, mask, seed=seed, noise_var=noise_var)
        if (seen_as == "grid" and fit is not None and pixel_size is not None
                and fit.cell_area * pixel_size ** 2 > GRID_MAX_CELL_A2):
            # An alias: the network completes the coarse pattern the grid saw, with an error
            # estimate to match, while the truth varies between the samples as much as the
            # samples do. Gaussian errors about the local mean: mean |e| = sqrt(2 / pi) sigma
            # (stop 37: 90% interval on the held-out mixed-magnification grids; docs/complete.md).
            floor = math.sqrt(2 / math.pi) * local_spread(values, mask)
            return AutoCompletion(completion, np.maximum(scale, floor), "network", fit,
                                  aliased=True)
        regions = lattice_regions(values, mask, scale, fit, ratio=LATTICE_ERROR_RATIO,
                                  seed=seed, aliased=seen_as == "grid", noise_var=noise_var)
        if not regions:
            return AutoCompletion(completion, scale, "network", fit)
        union = np.zeros(mask.shape)
        for r in regions:     # each blended over what came before (lattice_regions' order)
            w = r.weight
            completion = w * r.fit.render() + (1 - w) * completion
            scale = w * r.error + (1 - w) * scale
            union = np.maximum(union, w)
    method = "lattice" if float(union.min()) >= 1.0 else "lattice+network"
    return AutoCompletion(completion, scale, method, fit, tuple(regions), union)


class _Packed(nn.Module):
    """The completer as a one-input module (fixed conditioning) for tiled application."""

    def __init__(self, model: PartialScanCompleter, cond: torch.Tensor, autocast: bool) -> None:
        super().__init__()
        self.model, self.cond, self.autocast = model, cond, autocast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
            out = self.model(x, self.cond.expand(x.shape[0], -1))
        return torch.cat([out.mean, out.log_scale], 1).float()


def _as_2d(name: str, a) -> np.ndarray:
    arr = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a)
    if arr.ndim != 2:
        raise ImageShapeError(f"{name} must be a 2-D image [H, W], got shape {list(arr.shape)}")
    if min(arr.shape) < 8:
        raise ImageShapeError(f"{name} must be at least 8x8 px, got {list(arr.shape)}")
    return arr


def run_network(model: PartialScanCompleter, values: np.ndarray, mask: np.ndarray,
                kind: str | None, *, tile: int = 512, margin: int = 32,
                device: str | torch.device | None = None, ensemble: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
    """(completion, uncalibrated Laplace scale b), [H, W] float64 in the values' units, of
    checked sampled ``values`` and bool ``mask``: the network step of :func:`complete_scan`.
    ``ensemble``: mean of the 8 flips/rotations of the input (mean and log-scale averaged)."""
    from .tiling import apply_tiled

    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(dev).eval()
    inp = completion_inputs(torch.from_numpy(values).float(), torch.from_numpy(mask).float(),
                            fourier=model.uses_fourier)
    cond = conditioning(torch.tensor([float(mask.mean())]),
                        torch.tensor([kind_index(kind)])).to(dev)
    packed = _Packed(model, cond, dev.type == "cuda")
    # An image that fits in one tile goes through whole (no padding: 1.0x compute at 512^2).
    margin = 0 if max(mask.shape) <= tile else margin
    with torch.inference_mode():
        out = apply_tiled(packed, inp.x[0].to(dev), tile=tile, margin=margin,
                          ensemble=ensemble).double().cpu()
    lo, span = float(inp.lo[0]), float(inp.span[0])
    return out[0].numpy() * span + lo, np.exp(out[1].numpy()) * span


def _noise_var(values: np.ndarray, mask: np.ndarray, noise_std: float | None,
               counts_per_intensity: float | None) -> float | None:
    """The sampled values' white-noise variance as :func:`complete_scan` was told it (a
    standard deviation, or the dose of Poisson counts; None: not told)."""
    if noise_std is not None and counts_per_intensity is not None:
        raise NoiseLevelError("give the noise as noise_std or as counts_per_intensity, not both")
    if noise_std is not None:
        if not (math.isfinite(noise_std) and noise_std >= 0):
            raise NoiseLevelError(f"noise_std must be finite and >= 0, got {noise_std}")
        return float(noise_std) ** 2
    if counts_per_intensity is not None:
        if not (math.isfinite(counts_per_intensity) and counts_per_intensity > 0):
            raise NoiseLevelError("counts_per_intensity must be finite and > 0, got "
                                  f"{counts_per_intensity}")
        return shot_noise_var(values, mask, counts_per_intensity)
    return None


def complete_scan(image: np.ndarray | torch.Tensor, *, mask: np.ndarray | torch.Tensor | None = None,
                  kind: str | None = "spiral", coverage: float | None = None,
                  counts_per_intensity: float | None = None, seed: int = 0,
                  model: PartialScanCompleter | None = None, tile: int = 512, margin: int = 32,
                  device: str | torch.device | None = None, progress: bool = True,
                  ensemble: bool = False, dark_atoms: bool = False,
                  prior: str = "auto", noise_std: float | None = None,
                  pixel_size: float | None = None) -> CompletionResult:
    """Complete a partial scan with one call (any image size, CPU or CUDA).

    Two ways in:

    * a full image and ``kind``/``coverage``: it is scanned along that path (the native
      sampler; ``counts_per_intensity`` adds shot noise, e.g. to simulate a low-dose scan), then
      completed. Useful to see what a sparse scan of a specimen would give.
    * an already sparse scan: ``image`` holds the sampled values where ``mask`` is nonzero
      (anything elsewhere); ``kind`` names the path it was scanned with (None: unknown) and
      ``coverage`` is measured from the mask.

    Args:
        image: 2-D [H, W], any real dtype and units (counts, intensity); no NaN/inf.
        mask: [H, W], nonzero where sampled; None to scan ``image`` along a path.
        kind: "spiral", "gridlike", "grid", or None (unknown; only with ``mask``).
        coverage: fraction of pixels to sample, in :data:`COVERAGE_RANGE` (without ``mask``).
        counts_per_intensity, seed: shot noise of the simulated scan (without ``mask``); its
            variance (mean sampled intensity / counts_per_intensity) is then known to the
            lattice prior. With ``mask``: the dose the sampled values were recorded at (values
            = Poisson counts / counts_per_intensity), to tell the lattice prior their noise
            (as ``noise_std``).
        model: a :class:`PartialScanCompleter` (default: the shipped one).
        tile, margin: tile size and context [px] for large images (see
            :func:`em_accel.models.tiling.apply_tiled`).
        device: None: the model's device (CPU for the shipped one); bf16 autocast on CUDA.
        progress: a bar over the lattice prior's tiles on images larger than 576 px (on a
            terminal; :mod:`em_accel.models.lattice_tiles`).
        ensemble: average the network over the 8 flips/rotations of the scan (8x the time;
            about 2% lower RMS error on held-out images, see docs/complete.md). The
            uncertainty is the single pass's calibration applied to the ensemble's scale.
        dark_atoms: the image shows atoms dark on a bright background (bright-field or
            annular bright-field STEM): the network, trained on HAADF contrast, completes the
            scan's values mirrored about their range (max + min - value) and the result is
            mirrored back; the uncertainty is unchanged.
        prior: "auto" (default): on spiral and grid scans (a mask of unknown kind counts as
            the kind its spectrum shows, :func:`em_accel.scan.infer_path_kind`), a periodic
            lattice fitted to the samples (:mod:`em_accel.scan.lattice`) completes the part of
            the image where its local error is at most 0.75 of the error the
            network predicts for itself: the whole image for a crystal, the crystal's part
            beside vacuum, support or another grain (:mod:`em_accel.scan.lattice_region`;
            on images larger than 576 px also tile by tile, :mod:`em_accel.models.lattice_tiles`);
            the network completes the rest, blended over the gaps between samples. Other scans:
            the network. "network": always the network. "lattice": always the whole-image
            lattice fit (any path; uniform uncertainty from its held-out error). The result's
            ``method`` ("network", "lattice", "lattice+network") says which ran and
            ``lattice_weight`` where the lattice was used.
        noise_std: standard deviation of the white (shot) noise in the sampled values where
            it is known, e.g. from the dose [the values' units; for values in detector counts,
            about the square root of the mean count]. The lattice prior judges its fit against
            the signal, not the noise: on regular grids, which have no adjacent samples to
            estimate the noise from, a noisy crystal is otherwise left to the network
            (measured in docs/complete.md, "Known noise on grids"). Where the path has
            adjacent samples, the fit's own estimate is used where it is larger (it holds the
            misfit between neighbours too, and measured the better guide there).
        pixel_size: the image's pixel size [Å/px] where known (a file's metadata). On a
            regular grid ``auto`` then leaves out a lattice whose unit cell exceeds
            :data:`GRID_MAX_CELL_A2` (100 Å²): the grid cannot tell a fine lattice from a
            coarser alias, and such aliases fit every sample (docs/complete.md, "Two fresh
            held-out sets"). None: no such check.

    Raises:
        ImageShapeError, NonFiniteImageError, CoverageRangeError, UnknownPathKindError,
        NoLatticeError, NoiseLevelError, PixelSizeError,
        em_accel.scan.interpolate.EmptyMaskError (named ValueErrors).
    """
    from ..scan import make_path, partial_scan
    from ..scan.interpolate import EmptyMaskError

    arr = _as_2d("image", image).astype(np.float64)
    if mask is None:
        finite = np.isfinite(arr).all()
    else:
        mk = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
        finite = np.isfinite(arr[mk != 0]).all() if mk.shape == arr.shape else True
    if not finite:
        raise NonFiniteImageError("image contains NaN or infinite values" +
                                  ("" if mask is None else " at sampled pixels"))
    kind_index(kind)  # validates the name early
    if mask is None:
        if kind is None:
            raise UnknownPathKindError("kind=None (unknown) needs a mask; to scan a full image "
                                       f"name the path, one of {KINDS}")
        if coverage is None:
            raise CoverageRangeError("coverage is required when scanning a full image")
        check_coverage(coverage)
        path = make_path(kind, arr.shape, float(coverage), seed=seed)
        r = partial_scan(torch.from_numpy(arr), path, counts_per_intensity=counts_per_intensity,
                         seed=seed).raster
        values, m = r.image.numpy(), r.mask.numpy() > 0
    else:
        m = _as_2d("mask", mask) != 0
        if m.shape != arr.shape:
            raise ImageShapeError(f"mask shape {list(m.shape)} does not match image shape "
                                  f"{list(arr.shape)}")
        if not m.any():
            raise EmptyMaskError("mask has no sampled pixels (all zero)")
        values = np.where(m, arr, 0.0)
    cov = float(m.mean())
    check_coverage(cov)
    check_prior(prior)  # before the model loads
    noise_var = _noise_var(values, m, noise_std, counts_per_intensity)
    if pixel_size is not None and not (math.isfinite(pixel_size) and pixel_size > 0):
        raise PixelSizeError(f"pixel_size must be a positive number of Å/px, got {pixel_size}")

    if prior == "lattice":
        from ..scan.lattice import blas_on_one_thread, fit_lattice

        with blas_on_one_thread():
            fit = fit_lattice(values, m, seed=seed, noise_var=noise_var)
            if fit is None:
                raise NoLatticeError("no lattice found in the samples (too few samples, "
                                     "periodic peaks too weak, or no two independent ones)")
            rendered = fit.render()
        # Laplace scale from the held-out tiles' mean |error|: the measured one (shot noise
        # included), an interval for what a detector would record there.
        uncertainty = np.full(m.shape, Z90 * fit.validation_mae, np.float32)
        return CompletionResult(rendered.astype(np.float32), uncertainty,
                                values.astype(np.float32), m, cov, kind, "lattice", fit,
                                np.ones(m.shape, np.float32))
    if model is None:
        model = load_pretrained("completion")
    pivot = float(values[m].max() + values[m].min()) if dark_atoms else None
    seen = values if pivot is None else np.where(m, pivot - values, 0.0)
    completion, scale = run_network(model, seen, m, kind, tile=tile, margin=margin,
                                    device=device, ensemble=ensemble)
    if pivot is not None:
        completion = pivot - completion
    scale = float(getattr(model, "calibration", 1.0)) * scale
    if prior == "network":
        return CompletionResult(completion.astype(np.float32), (Z90 * scale).astype(np.float32),
                                values.astype(np.float32), m, cov, kind, "network")
    # The lattice search runs after the network, not beside it in a thread: on 2 cores that
    # measured slower (stop 31: 1.12 s instead of 0.56 s; numpy and torch compete for both).
    auto = auto_completion(values, m, kind, completion, scale, seed=seed, noise_var=noise_var,
                           pixel_size=pixel_size, progress=progress)
    weight = auto.lattice_weight
    return CompletionResult(auto.completion.astype(np.float32),
                            (Z90 * auto.scale).astype(np.float32), values.astype(np.float32), m,
                            cov, kind, auto.method, auto.lattice_fit,
                            None if weight is None else weight.astype(np.float32), auto.aliased)
