"""Exit-wave phase from its amplitude alone (thesis ch. 7; arXiv:2001.10938).

:class:`ExitWaveNet` is the thesis's generator: input the exit-wave amplitude |ψ| [B, 1, H, W]
(normalised to mean 1), output the unit phasor (cos φ, sin φ) [B, 2, H, W]. Layers (conv →
activation → batch norm, leaky ReLU 0.1): BN on the input; 3×3 conv to 32; stride-2 convs to
64, 128, 256, 512; residual blocks at the bottleneck (3 convs, ReLU + BN, add, BN); stride-2
transposed convs back to 32; a conv to 32, a conv to 2 (no bias, no activation, BN); then each
pixel's 2-vector is scaled to unit length. ``width`` scales every channel count and ``stages``
sets the number of stride-2 stages (4 for the thesis's MSE runs, 3 for its GAN runs), so H and
W must be multiples of ``2**stages`` (:func:`reconstruct_exit_wave` pads any size).

:class:`ExitWaveDiscriminator` and :class:`LSGANBalance` are the thesis's GAN variant: a
spectrally normalised discriminator on (Re, Im) of amplitude × phasor, least-squares losses and
a discriminator learning rate ``lr · sigmoid(20 (m_fake − 0.5))`` from an EMA of its mean output
on fakes.

Deviations, stated: batch norm uses PyTorch's momentum 0.1 (tf.contrib's 0.999 decay never
settles in a few thousand steps); the global phase offset the amplitude cannot determine can be
ignored by the training loss (:func:`phasor_loss` with ``align=True``), see docs/exit_wave.md.
"""
from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .blocks import spectral_normalize
from .denoiser import LoadedModel

#: Thesis channel widths (width = 1).
DOWN = (64, 128, 256, 512)


def _c(n: int, width: float) -> int:
    return max(4, int(round(n * width)))


class _ConvAct(nn.Sequential):
    """conv → leaky ReLU 0.1 → BN (the thesis's order)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, transpose: bool = False) -> None:
        conv = (nn.ConvTranspose2d(cin, cout, 3, stride, 1, output_padding=stride - 1)
                if transpose else nn.Conv2d(cin, cout, 3, stride, 1))
        super().__init__(conv, nn.LeakyReLU(0.1), nn.BatchNorm2d(cout))


class _Residual(nn.Module):
    """3 × (conv → ReLU → BN), added to the input, then BN."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*[m for _ in range(3) for m in
                                    (nn.Conv2d(ch, ch, 3, 1, 1), nn.ReLU(), nn.BatchNorm2d(ch))])
        self.norm = nn.BatchNorm2d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.body(x))


def unit_phasor(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each pixel's 2-vector (channel axis 1) to unit length: x / sqrt(|x|² + eps)."""
    return x * torch.rsqrt((x * x).sum(1, keepdim=True) + eps)


def hedged_phasor(x: torch.Tensor) -> torch.Tensor:
    """Map each pixel's 2-vector (channel axis 1) into the unit disc: x / sqrt(1 + |x|²).

    The direction is the phase; a length below 1 hedges between phases. Under the phasor MAE
    (or MSE) a unit phasor cannot hedge: when the global phase is uncertain, the best unit
    phasor is much worse than a point inside the disc (a uniformly random phase: 8/π² ≈ 0.81
    for any unit phasor against 2/π ≈ 0.64 for the origin), so unit-output networks lose to the
    (non-unit) best constant predictor even when they have learned it (docs/exit_wave.md)."""
    return x * torch.rsqrt(1 + (x * x).sum(1, keepdim=True))


#: Output maps of :class:`ExitWaveNet` (``output=``).
OUTPUTS = {"unit": unit_phasor, "hedged": hedged_phasor}


class ExitWaveNet(nn.Module):
    """Amplitude [B, 1, H, W] → unit phasor (cos φ, sin φ) [B, 2, H, W].

    Args:
        width: channel multiplier (1: the thesis's 32…512 channels).
        blocks: residual blocks at the bottleneck (thesis: 6).
        stages: stride-2 stages (thesis: 4 for the MSE runs, 3 for the GAN runs).
        skips: add each encoder scale's features to the decoder at the same scale (U-Net-like;
            not in the thesis, whose decoder sees only the 1/16-scale bottleneck).
        output: ``"unit"`` (the thesis: unit phasors) or ``"hedged"`` (:func:`hedged_phasor`:
            inside the unit disc, the length a confidence; the phase is its direction).
    """

    def __init__(self, width: float = 1.0, blocks: int = 6, stages: int = 4,
                 skips: bool = False, output: str = "unit") -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width}")
        if not 1 <= stages <= 4:
            raise ValueError(f"stages must be in 1..4, got {stages}")
        if blocks < 0:
            raise ValueError(f"blocks must be >= 0, got {blocks}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {sorted(OUTPUTS)}, got {output!r}")
        self.config = {"width": float(width), "blocks": int(blocks), "stages": int(stages),
                       "skips": bool(skips), "output": output}
        chans = [_c(32, width)] + [_c(n, width) for n in DOWN[:stages]]
        self.input_norm = nn.BatchNorm2d(1)
        self.stem = _ConvAct(1, chans[0])
        self.down = nn.Sequential(*[_ConvAct(a, b, 2) for a, b in zip(chans[:-1], chans[1:])])
        self.middle = nn.Sequential(*[_Residual(chans[-1]) for _ in range(blocks)])
        rev = chans[::-1]
        self.up = nn.Sequential(*[_ConvAct(a, b, 2, transpose=True) for a, b in zip(rev[:-1], rev[1:])])
        self.tail = _ConvAct(chans[0], chans[0])
        self.head = nn.Conv2d(chans[0], 2, 3, 1, 1, bias=False)
        self.head_norm = nn.BatchNorm2d(2)
        # one scale per skip; 1 = plain U-Net-like adds, 0 = closed (see enable_skips)
        self.skip_gates = nn.Parameter(torch.ones(stages)) if skips else None
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def multiple(self) -> int:
        """H and W must be multiples of this."""
        return 2 ** self.config["stages"]

    def forward(self, amplitude: torch.Tensor) -> torch.Tensor:
        h, w = amplitude.shape[-2:]
        if h % self.multiple or w % self.multiple:
            raise ValueError(f"height and width must be multiples of {self.multiple}, got {h}×{w}")
        x = self.stem(self.input_norm(amplitude))
        if not self.config["skips"]:
            x = self.up(self.middle(self.down(x)))
        else:  # add each encoder scale's features to the decoder's at that scale
            feats = [x]
            for layer in self.down:
                feats.append(layer(feats[-1]))
            x = self.middle(feats.pop())
            for layer, gate in zip(self.up, self.skip_gates):
                x = layer(x) + gate * feats.pop()
        return OUTPUTS[self.config["output"]](self.head_norm(self.head(self.tail(x))))

    def enable_skips(self) -> None:
        """Add the skip connections to a model trained without them, keeping its function.

        The skips start closed (gates 0), so the model computes exactly what it did and
        fine-tuning opens them: the decoder of the thesis network sees only the 1/16-scale
        bottleneck, and this lets a trained model gain the full-resolution path without
        starting over. No-op on a model that has skips."""
        if self.config["skips"]:
            return
        self.config["skips"] = True
        self.skip_gates = nn.Parameter(self.head.weight.new_zeros(self.config["stages"]))


class ExitWaveDiscriminator(nn.Module):
    """The thesis's "large discriminator": per stage i, conv 4×4 stride 1 → 50·2^i and conv 4×4
    stride 2 → 50·2^i (leaky ReLU 0.2, spectral norm, no biases), then conv 4×4 stride 2 → 200;
    the score is the mean over H, W and channels. Input: (Re, Im) of amplitude × phasor."""

    def __init__(self, width: float = 1.0, stages: int = 4, in_channels: int = 2) -> None:
        super().__init__()
        layers, cin = [], in_channels
        for i in range(stages):
            c = _c(50 * 2 ** i, width)
            # a 4×4 stride-1 conv keeps the size with TF's "SAME" padding: 1 before, 2 after
            layers += [nn.ZeroPad2d((1, 2, 1, 2)), nn.Conv2d(cin, c, 4, 1, 0, bias=False), nn.LeakyReLU(0.2),
                       nn.Conv2d(c, c, 4, 2, 1, bias=False), nn.LeakyReLU(0.2)]
            cin = c
        layers.append(nn.Conv2d(cin, _c(200, width), 4, 2, 1, bias=False))
        self.net = spectral_normalize(nn.Sequential(*layers))
        self.config = {"width": float(width), "stages": int(stages), "in_channels": int(in_channels)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).mean((1, 2, 3))


class LSGANBalance:
    """Least-squares GAN losses and the thesis's discriminator learning-rate balancing.

    ``d_lr = base_lr · sigmoid(20 (m_fake − 0.5))`` with ``m_fake`` an EMA (0.99) of the mean
    discriminator output on generated waves: when the generator fools the discriminator
    (m_fake → 1) the discriminator learns at full rate, when it does not (m_fake → 0) it rests.
    """

    def __init__(self, base_lr: float = 2e-4, decay: float = 0.99, m_fake: float = 0.5) -> None:
        self.base_lr, self.decay, self.m_fake = base_lr, decay, m_fake

    @staticmethod
    def d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return ((real - 1) ** 2).mean() + (fake ** 2).mean()

    @staticmethod
    def g_loss(fake: torch.Tensor) -> torch.Tensor:
        return ((fake - 1) ** 2).mean()

    def update(self, fake: torch.Tensor) -> float:
        """Update the EMA from this step's scores on fakes; returns the discriminator lr."""
        self.m_fake = self.decay * self.m_fake + (1 - self.decay) * float(fake.detach().mean())
        return self.base_lr / (1 + math.exp(-20 * (self.m_fake - 0.5)))

    def state_dict(self) -> dict:
        return {"m_fake": self.m_fake, "base_lr": self.base_lr, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.m_fake, self.base_lr, self.decay = state["m_fake"], state["base_lr"], state["decay"]


def wave_channels(amplitude: torch.Tensor, phasor: torch.Tensor) -> torch.Tensor:
    """(Re ψ, Im ψ) [B, 2, H, W] = amplitude [B, 1, H, W] × phasor [B, 2, H, W]."""
    return amplitude * phasor


def global_offset(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-example phasor e^{iθ} [B, 2] that best rotates ``pred`` onto ``target`` (both
    [B, 2, H, W] unit phasors) in the least-squares sense: θ = arg Σ target · conj(pred)."""
    c, s = pred[:, 0], pred[:, 1]
    tc, ts = target[:, 0], target[:, 1]
    re = (tc * c + ts * s).sum((-2, -1))
    im = (ts * c - tc * s).sum((-2, -1))
    return unit_phasor(torch.stack([re, im], 1)[..., None, None])[..., 0, 0]


def rotate(phasor: torch.Tensor, by: torch.Tensor) -> torch.Tensor:
    """Multiply phasors [B, 2, H, W] by unit phasors ``by`` [B, 2] (complex product)."""
    c, s = phasor[:, 0], phasor[:, 1]
    bc, bs = by[:, 0, None, None], by[:, 1, None, None]
    return torch.stack([c * bc - s * bs, c * bs + s * bc], 1)


def phasor_loss(pred: torch.Tensor, target: torch.Tensor, align: bool = False,
                kind: str = "mse") -> torch.Tensor:
    """Per-example error of the phasor channels [B]: mean squared (``kind="mse"``, the thesis)
    or mean absolute (``"l1"``, the evaluation metric itself); with ``align`` the prediction
    is first rotated by its best global phase offset (the amplitude cannot fix it)."""
    if kind not in ("mse", "l1"):
        raise ValueError(f"kind must be 'mse' or 'l1', got {kind!r}")
    if align:
        pred = rotate(pred, global_offset(pred, target).detach())
    d = pred - target
    return (d * d if kind == "mse" else d.abs()).mean((1, 2, 3))


#: Shipped weights (em_accel/models/weights).
PRETRAINED = "exit_wave_broad.safetensors"


def _from_bytes(data: bytes, device) -> LoadedModel:
    from ..train.checkpoint import read_weights

    state, cfg, notes = read_weights(data)
    model = ExitWaveNet(cfg["width"], cfg["blocks"], cfg["stages"], cfg.get("skips", False),
                        cfg.get("output", "unit"))
    if model.skip_gates is not None and "skip_gates" not in state:  # weights from before the gates
        state = dict(state, skip_gates=torch.ones_like(model.skip_gates))
    model.load_state_dict(state)
    return LoadedModel(model.to(device if device is not None else "cpu").eval(), notes)


def load_exit_wave_weights(path: str | Path, *, device: str | torch.device | None = None
                           ) -> LoadedModel:
    """``LoadedModel(model, notes)``: an :class:`ExitWaveNet` from a ``save_weights`` file
    (e.g. a recipe run's ``weights.safetensors``), in eval mode on ``device`` (default CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file {path}")
    return _from_bytes(path.read_bytes(), device)


def _shipped(name: str) -> bytes:
    ref = resources.files("em_accel.models") / "weights" / name
    if not ref.is_file():
        raise FileNotFoundError(f"no shipped weights named {name!r} in em_accel/models/weights")
    return ref.read_bytes()


def load_pretrained_exit_wave(name: str = PRETRAINED, *, device: str | torch.device | None = None
                              ) -> ExitWaveNet:
    """The shipped small :class:`ExitWaveNet` (trained on the CPU broad set, see
    docs/exit_wave.md) in eval mode on ``device`` (default CPU); :func:`exit_wave_notes` says how
    it was trained."""
    return _from_bytes(_shipped(name), device).model


def exit_wave_notes(name: str = PRETRAINED) -> dict:
    """How a shipped exit-wave model was trained (data, steps, seconds), from its metadata."""
    return _from_bytes(_shipped(name), None).notes


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad the last two axes up to multiples of ``multiple``; returns (x, (h, w))."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


class AmplitudeError(ValueError):
    """An amplitude that is not a finite, non-negative, real 2-D image."""


class AmplitudeTypeError(TypeError):
    """An amplitude of the wrong type (complex, or not an array)."""


def check_amplitude(amplitude) -> torch.Tensor:
    """The amplitude as a float32 [H, W] tensor, or a named error: AmplitudeTypeError for complex
    or non-numeric input, AmplitudeError for a wrong rank, NaN/inf, negative values or an
    all-zero image."""
    if isinstance(amplitude, torch.Tensor):
        t = amplitude.detach()
    else:
        try:
            arr = np.asarray(amplitude)
        except Exception as exc:  # ragged lists and the like
            raise AmplitudeTypeError(f"amplitude must be a 2-D array, got {type(amplitude).__name__}") from exc
        if arr.dtype.kind not in "biuf":
            raise AmplitudeTypeError(f"amplitude must be real numbers, got dtype {arr.dtype}"
                                     + (" (pass np.abs(wave) for a complex wave)" if arr.dtype.kind == "c" else ""))
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if t.is_complex():
        raise AmplitudeTypeError("amplitude must be real, got a complex tensor (pass wave.abs())")
    if not (t.is_floating_point() or t.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32,
                                                  torch.int64, torch.bool)):
        raise AmplitudeTypeError(f"amplitude must be real numbers, got {t.dtype}")
    if t.dim() != 2:
        raise AmplitudeError(f"amplitude must be 2-D [H, W], got shape {list(t.shape)}")
    if min(t.shape) < 2:
        raise AmplitudeError(f"amplitude must be at least 2×2 px, got {list(t.shape)}")
    t = t.float()
    if not bool(torch.isfinite(t).all()):
        raise AmplitudeError("amplitude contains NaN or infinite values")
    if bool((t < 0).any()):
        raise AmplitudeError(f"amplitude must be >= 0 (an |ψ|), got minimum {float(t.min()):.3g}; "
                             "for a recorded intensity pass its square root")
    if not float(t.max()) > 0:
        raise AmplitudeError("amplitude is zero everywhere")
    return t


@torch.no_grad()
def reconstruct_exit_wave(amplitude, model: ExitWaveNet | None = None, *, tile: int = 256,
                          margin: int = 16, batch_size: int = 8, device=None,
                          dtype: torch.dtype | None = None, ensemble: bool = False,
                          progress: bool = False) -> np.ndarray:
    """Recover the exit wave ψ = |ψ| e^{iφ} from its amplitude |ψ| alone.

    Args:
        amplitude: real, non-negative [H, W] (numpy or torch), any scale and any size: it is
            normalised to mean 1 as a whole (the network's input convention), cut into
            overlapping tiles (:func:`em_accel.models.tiling.apply_tiled`) and joined.
        model: an :class:`ExitWaveNet` (default: the shipped weights, :func:`load_pretrained_exit_wave`).
        tile, margin: largest tile and the context kept around each tile's owned pixels [px].
        device: torch device (None: the input tensor's device, else CPU).
        dtype: compute dtype (float32, or bfloat16/float16 by autocast); None: bfloat16
            autocast on CUDA, float32 on CPU.
        ensemble: average the 8 flips/rotations (8× the compute).
        progress: show a tile progress bar (tqdm, on a terminal).

    Returns:
        complex64 numpy [H, W]: the input amplitude times the recovered phasor. The global phase
        is arbitrary (the amplitude cannot fix it); the network's convention is vacuum ≈ 0.
    """
    from .tiling import apply_tiled

    amp = check_amplitude(amplitude)
    if device is None:
        device = amplitude.device if isinstance(amplitude, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    if model is None:
        model = load_pretrained_exit_wave(device=device)
    model = model.to(device).eval()
    step = max(16, model.multiple)  # apply_tiled cuts tiles in multiples of 16
    tile = max(step * (2 * margin // step + 1), tile // step * step)  # > 2 margin
    scaled = (amp / amp.mean()).to(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"dtype must be torch.float32, bfloat16 or float16, got {dtype}")
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        ph = apply_tiled(model, scaled[None], tile, margin, batch_size, progress, ensemble)
    phase = torch.atan2(ph[1].float(), ph[0].float()).cpu()  # exact unit modulus
    return torch.polar(amp, phase).numpy().astype(np.complex64)
