"""The thesis's VAE for 96x96 micrograph crops (ch. 2): encoding normalisation, a σ regulariser
and a Sobel (image-gradient) loss, plus its two ablations (no Sobel; standard KL).

Encoder: four 5x5 stride-2 convolutions (32, 64, 128, 256 channels; BN, ReLU), FC 1024 (BN,
ReLU), then two FC heads to ``latent`` (64) dimensions. *Encoding normalisation* replaces a KL
term: the μ head's output u is standardised per latent dimension over the batch and scaled to
std 2.5, μ = 2.5 (u - E_B u) / sqrt(Var_B u + 1e-5); the σ head's output v gives
σ = 0.5 |v| / sqrt(Var_B |v| + 1e-5) (no mean subtracted). Decoder: FC to 6x6x256, four 5x5
stride-2 transposed convolutions (256, 128, 64, 32; BN, ReLU), a stride-1 one to C channels,
tanh. Loss: 50 [MSE(x̂, x) + MSE(Sobel x̂, Sobel x)] + mean((σ - 1)^2); ``kl=True`` swaps the
normalisation and the σ term for mean(μ² + e^lv - lv - 1) on a log-variance head.

Inference at batch 1 (not in the thesis, which ran its exporter in batches of 64 with batch
statistics): the encoder keeps running averages of the normalisation statistics (like BN's) and
:meth:`VAE.calibrate` replaces them, and BN's, with exact population statistics over a data set.
``encode(x, mode="frozen")`` then depends on each image alone (deterministic, any batch size);
``mode="batch"`` reproduces the thesis's export. docs/maps.md measures how the two differ.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

#: Pixel side of the thesis's crops.
CROP = 96
_EPS = 1e-5
_SOBEL = torch.tensor([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]])


class Encoding(NamedTuple):
    mu: torch.Tensor     # [B, latent] means (normalised: std 2.5 per dimension over the data)
    sigma: torch.Tensor  # [B, latent] standard deviations (same units as mu)


class VAEOutput(NamedTuple):
    recon: torch.Tensor  # [B, C, 96, 96] in (-1, 1) (tanh)
    mu: torch.Tensor
    sigma: torch.Tensor
    z: torch.Tensor      # mu + sigma * eps


class VAELoss(NamedTuple):
    total: torch.Tensor
    mse: torch.Tensor
    sobel: torch.Tensor
    regulariser: torch.Tensor  # mean((σ-1)^2), or the KL term with kl=True


def sobel(x: torch.Tensor) -> torch.Tensor:
    """Depthwise Sobel gradients of ``x`` [B, C, H, W] with reflect padding: [B, 2C, H, W]
    (vertical then horizontal derivative of each channel)."""
    c = x.shape[1]
    k = _SOBEL.to(device=x.device, dtype=x.dtype)
    w = torch.stack([k, k.T])[:, None].repeat(c, 1, 1, 1)  # [2C, 1, 3, 3]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), w, groups=c)


def beta1(step: int, total: int) -> float:
    """The thesis's Adam β1 schedule, 0.9 (1 - t/T) / (0.1 + 0.9 (1 - t/T)): 0.9 at the start,
    decaying to 0 at ``total`` steps."""
    r = max(0.0, 1.0 - step / max(total, 1))
    return 0.9 * r / (0.1 + 0.9 * r)


def _init(module: nn.Module) -> None:
    """Weights N(0, 0.02) (truncated at 2 std for convolutions), biases 0, BN scale 1."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
        elif isinstance(m, (nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, std=0.02)
        else:
            continue
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def conv_trunk(channels: int = 1, widths: tuple[int, ...] = (32, 64, 128, 256),
               fc: int | None = 1024) -> nn.Sequential:
    """The encoder trunk on [B, C, 96, 96]: 5x5 stride-2 conv + BN + ReLU per entry of
    ``widths`` (the thesis: 32..256, to 6x6), then flatten and FC ``fc`` + BN + ReLU (the
    thesis: 1024), or, with ``fc=None``, a global average pool to [B, widths[-1]] (the small
    contrastive encoder)."""
    layers: list[nn.Module] = []
    c = channels
    for out in widths:
        layers += [nn.Conv2d(c, out, 5, 2, 2), nn.BatchNorm2d(out, momentum=0.1, eps=_EPS),
                   nn.ReLU(inplace=True)]
        c = out
    side = CROP >> len(widths)
    if fc is None:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    else:
        layers += [nn.Flatten(), nn.Linear(side * side * c, fc), nn.BatchNorm1d(fc, eps=_EPS),
                   nn.ReLU(inplace=True)]
    trunk = nn.Sequential(*layers)
    _init(trunk)
    return trunk


class VAE(nn.Module):
    """The thesis's VAE (see the module docstring).

    Args:
        channels: image channels C (1 for micrographs).
        latent: latent dimensions (64).
        sobel: include the Sobel loss (False: the thesis's variant 4).
        kl: standard log-variance KL instead of encoding normalisation (variant 5).
        stats_momentum: weight of each batch in the running normalisation statistics.
    """

    def __init__(self, channels: int = 1, latent: int = 64, *, sobel: bool = True,
                 kl: bool = False, stats_momentum: float = 0.01):
        super().__init__()
        if channels < 1 or latent < 1:
            raise ValueError(f"channels and latent must be >= 1, got {channels}, {latent}")
        self.config = {"channels": channels, "latent": latent, "sobel": sobel, "kl": kl}
        self.channels, self.latent, self.use_sobel, self.kl = channels, latent, sobel, kl
        self.stats_momentum = stats_momentum
        self.trunk = conv_trunk(channels)
        self.mu_head = nn.Linear(1024, latent)
        self.sigma_head = nn.Linear(1024, latent)
        dec: list[nn.Module] = []
        for c_in, c_out in ((256, 256), (256, 128), (128, 64), (64, 32)):
            dec += [nn.ConvTranspose2d(c_in, c_out, 5, 2, 2, output_padding=1),
                    nn.BatchNorm2d(c_out, eps=_EPS), nn.ReLU(inplace=True)]
        self.fc_dec = nn.Sequential(nn.Linear(latent, 6 * 6 * 256), nn.BatchNorm1d(6 * 6 * 256, eps=_EPS),
                                    nn.ReLU(inplace=True))
        self.decoder = nn.Sequential(*dec, nn.ConvTranspose2d(32, channels, 5, 1, 2), nn.Tanh())
        _init(self)
        # Running (then calibrated) statistics of the encoding normalisation, per dimension.
        self.register_buffer("u_mean", torch.zeros(latent))
        self.register_buffer("u_var", torch.ones(latent))
        self.register_buffer("absv_var", torch.ones(latent))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))

    # -- encoder -----------------------------------------------------------------------------
    def _heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or x.shape[1] != self.channels or tuple(x.shape[-2:]) != (CROP, CROP):
            raise ValueError(f"x must have shape [B, {self.channels}, {CROP}, {CROP}], "
                             f"got {list(x.shape)}")
        h = self.trunk(x)
        return self.mu_head(h), self.sigma_head(h)

    def _normalise(self, u: torch.Tensor, v: torch.Tensor, batch_stats: bool) -> Encoding:
        if self.kl:  # variant 5: plain mean and log-variance heads
            return Encoding(u, torch.exp(0.5 * v))
        a = v.abs()
        if batch_stats:
            # E[x^2] - E[x]^2 as the thesis, clamped (float rounding can make it negative).
            u_mean = u.mean(0)
            u_var = ((u * u).mean(0) - u_mean ** 2).clamp_min(0)
            a_var = ((a * a).mean(0) - a.mean(0) ** 2).clamp_min(0)
            if self.training:
                with torch.no_grad():
                    m = self.stats_momentum
                    self.u_mean.lerp_(u_mean.detach(), m)
                    self.u_var.lerp_(u_var.detach(), m)
                    self.absv_var.lerp_(a_var.detach(), m)
        else:
            u_mean, u_var, a_var = self.u_mean, self.u_var, self.absv_var
        mu = 2.5 * (u - u_mean) / torch.sqrt(u_var + _EPS)
        sigma = 0.5 * a / torch.sqrt(a_var + _EPS)
        return Encoding(mu, sigma)

    def encode(self, x: torch.Tensor, mode: str | None = None) -> Encoding:
        """Latent means and standard deviations of images ``x`` [B, C, 96, 96] in [0, 1].

        mode: "batch" = BN and the encoding normalisation use this batch's statistics (the
        thesis's training and export; B >= 2; results depend on the batch's other images);
        "frozen" = calibrated or running statistics (each image alone; any B, B = 1 too);
        None = "batch" in training mode, "frozen" in eval mode.
        """
        if mode is None:
            mode = "batch" if self.training else "frozen"
        if mode not in ("batch", "frozen"):
            raise ValueError(f"mode must be 'batch' or 'frozen', got {mode!r}")
        if mode == "batch" and x.shape[0] < 2:
            raise ValueError("batch statistics need a batch of at least 2 images; use "
                             "encode(x, mode='frozen') for single images")
        if mode == "batch" and not self.training:
            with _batch_statistics(self.trunk):
                u, v = self._heads(x)
            return self._normalise(u, v, True)
        if mode == "frozen" and self.training:
            with _frozen(self):
                return self.encode(x, "frozen")
        u, v = self._heads(x)
        return self._normalise(u, v, mode == "batch")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images [B, C, 96, 96] in (-1, 1) from latents ``z`` [B, latent]."""
        return self.decoder(self.fc_dec(z).view(-1, 256, 6, 6))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        enc = self.encode(x)
        eps = torch.randn(enc.mu.shape, generator=generator, device=x.device, dtype=enc.mu.dtype) \
            if generator is not None else torch.randn_like(enc.mu)
        z = enc.mu + enc.sigma * eps
        return VAEOutput(self.decode(z), enc.mu, enc.sigma, z)

    def loss(self, x: torch.Tensor, out: VAEOutput) -> VAELoss:
        """The thesis's loss of reconstructing ``x`` (see the module docstring)."""
        mse = F.mse_loss(out.recon, x)
        grad = F.mse_loss(sobel(out.recon), sobel(x)) if self.use_sobel else mse.new_zeros(())
        if self.kl:
            lv = 2.0 * torch.log(out.sigma.clamp_min(1e-12))
            reg = (out.mu ** 2 + lv.exp() - lv - 1.0).mean()
        else:
            reg = ((out.sigma - 1.0) ** 2).mean()
        return VAELoss(50.0 * (mse + grad) + reg, mse, grad, reg)

    # -- batch-1 inference --------------------------------------------------------------------
    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor]) -> "VAE":
        """Replace BN's running statistics and the normalisation statistics by exact population
        statistics over ``batches`` (iterables of [B, C, 96, 96]; iterated twice, so pass a
        list or a re-iterable): BN first (cumulative averages of per-batch statistics in train
        mode), then the mean and variance of u and |v| with BN frozen. Leaves eval mode."""
        batches = list(batches)
        bns = [m for m in self.trunk.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in bns]
        self.train()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        for xb in batches:
            self.trunk(xb)
        for m, mom in zip(bns, saved):
            m.momentum = mom
        self.eval()
        n, su, suu, sa, saa = 0, 0.0, 0.0, 0.0, 0.0
        for xb in batches:
            u, v = self._heads(xb)
            u, a = u.double(), v.abs().double()
            n += u.shape[0]
            su, suu = su + u.sum(0), suu + (u * u).sum(0)
            sa, saa = sa + a.sum(0), saa + (a * a).sum(0)
        if n < 2:
            raise ValueError("calibrate needs at least 2 images")
        mean_u = su / n
        self.u_mean.copy_(mean_u)
        self.u_var.copy_((suu / n - mean_u ** 2).clamp_min(0))
        self.absv_var.copy_((saa / n - (sa / n) ** 2).clamp_min(0))
        self.calibrated.fill_(True)
        return self


@contextlib.contextmanager
def _batch_statistics(module: nn.Module):
    """BN layers of ``module`` use batch statistics without touching their running buffers."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.running_mean, m.running_var) for m in bns]
    for m in bns:
        m.train()
        m.running_mean = m.running_var = None  # F.batch_norm then neither reads nor writes them
    try:
        yield
    finally:
        for m, (tr, rm, rv) in zip(bns, saved):
            m.running_mean, m.running_var = rm, rv
            m.train(tr)


@contextlib.contextmanager
def _frozen(module: nn.Module):
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


def to_unit_crops(images: torch.Tensor) -> torch.Tensor:
    """[B, H, W] or [B, 1, H, W] images, each min-max scaled to [0, 1], as [B, 1, H, W]
    float32 (constant images become 0)."""
    x = images if images.dim() == 4 else images[:, None]
    x = x.float()
    lo = x.amin((-2, -1), keepdim=True)
    hi = x.amax((-2, -1), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-12)


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def lr_at(step: int, total: int, lr: float = 1e-3) -> float:
    """The thesis's learning rate: ``lr`` halved every total/6 steps."""
    return lr * 0.5 ** math.floor(6 * step / max(total, 1))
