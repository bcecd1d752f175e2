"""A contrastive (SimCLR-style) encoder for image search, beyond the thesis.

The encoder is a slim version of the VAE's convolutional trunk
(:func:`em_accel.embed.vae.conv_trunk`: four 5x5 stride-2 convolutions with 16-128 channels, a
global average pool instead of the 9216x1024 FC layer, so ~0.3 M parameters and ~1/4 of the
VAE encoder's work) with a two-layer head to a unit-norm 64-d embedding. It is trained with the NT-Xent loss (Chen et al.
2020, temperature 0.2) to map two views of a crop close together and apart from the other
crops in the batch. Views differ by what should not change a search result: a dihedral
transform (the 8 rotations/flips), Poisson noise at a random dose (20-2000 counts/px at the
brightest pixel, log-uniform), and a small brightness/contrast change. Eval mode uses BN's
running statistics, so embeddings are per-image at any batch size.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..data.augment import dihedral
from ..data.noise import poisson_noise
from .vae import CROP, _init, conv_trunk, to_unit_crops

#: Dose range of the training views [counts/px at the brightest pixel], log-uniform.
VIEW_DOSE = (20.0, 2000.0)


class ContrastiveEncoder(nn.Module):
    """Conv trunk (``widths`` channels, average pool) -> FC 256 -> ReLU -> FC ``latent``,
    L2-normalised. Input [B, C, 96, 96] in [0, 1]; :meth:`encode` returns [B, latent] unit
    vectors."""

    def __init__(self, channels: int = 1, latent: int = 64,
                 widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        if channels < 1 or latent < 1:
            raise ValueError(f"channels and latent must be >= 1, got {channels}, {latent}")
        self.config = {"channels": channels, "latent": latent, "widths": list(widths)}
        self.channels, self.latent = channels, latent
        self.trunk = conv_trunk(channels, tuple(widths), fc=None)
        self.head = nn.Sequential(nn.Linear(widths[-1], 256), nn.ReLU(inplace=True),
                                  nn.Linear(256, latent))
        _init(self.head)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels or tuple(x.shape[-2:]) != (CROP, CROP):
            raise ValueError(f"x must have shape [B, {self.channels}, {CROP}, {CROP}], "
                             f"got {list(x.shape)}")
        return F.normalize(self.head(self.trunk(x)), dim=1)

    forward = encode


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """NT-Xent loss of paired unit embeddings ``a``, ``b`` [B, D] (row i of each: two views of
    one image): cross-entropy of each view picking its partner among the other 2B - 1."""
    z = torch.cat([a, b])
    n = a.shape[0]
    sim = z @ z.T / temperature
    sim.fill_diagonal_(-math.inf)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


def random_view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One augmented view of each crop of ``x`` [B, 1, 96, 96] in [0, 1]: random dihedral
    transform, Poisson noise at a log-uniform dose in :data:`VIEW_DOSE`, a contrast gamma in
    [0.8, 1.25], min-max scaled again."""
    b = x.shape[0]
    ks = torch.randint(8, (b,), generator=generator)
    out = torch.stack([dihedral(x[i], int(ks[i])) for i in range(b)])
    lo, hi = math.log(VIEW_DOSE[0]), math.log(VIEW_DOSE[1])
    dose = torch.exp(lo + (hi - lo) * torch.rand(b, generator=generator, dtype=torch.float64))
    gamma = torch.exp((torch.rand(b, 1, 1, 1, generator=generator) - 0.5) * 2 * math.log(1.25))
    out = out.clamp_min(0) ** gamma
    noisy = poisson_noise(out[:, 0], dose, generator).noisy[:, None]
    return to_unit_crops(noisy)
