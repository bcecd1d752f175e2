"""Adversarial fine-tuning of the completion network: the thesis's three-scale LSGAN.

Three independent discriminators see random crops of the completion and of the truth, cut at
the same place (the thesis concatenates both on channels before cropping): "small" a crop of
``crop`` px, "medium" 2x that resized to ``crop``, "large" 4x that resized to ``crop``
(thesis at 512^2: 70, 140 and 280 px, each seen at 70^2; reflect padding lets crops overhang).
Each is four spectrally normalised 4x4 stride-2 convolutions with leaky ReLU 0.2 (the thesis's
widths 64-512; here ``width`` x (1, 2, 4, 8)) whose output is summed to one score per crop.
Losses are least squares: D minimises (D(real) - 1)^2 + D(fake)^2, the generator adds
``weight`` x (D(fake) - 1)^2 summed over scales to its own loss.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .blocks import spectral_normalize


class ScaleDiscriminator(nn.Sequential):
    """Four 4x4 stride-2 convolutions (padding 1), leaky ReLU 0.2 after each; spectral norm."""

    def __init__(self, width: int = 16) -> None:
        layers, c = [], 1
        for k in (1, 2, 4, 8):
            layers += [nn.Conv2d(c, width * k, 4, 2, 1), nn.LeakyReLU(0.2)]
            c = width * k
        super().__init__(*layers)
        spectral_normalize(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).flatten(1).sum(1)       # one score per crop


def multiscale_crops(fake: torch.Tensor, real: torch.Tensor, crop: int,
                     generator: torch.Generator | None = None
                     ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(fake crop, real crop)] at scales 1, 2, 4 (each resized to ``crop``), same places."""
    pairs = torch.cat([fake, real], 1)                     # crop both at identical locations
    pad = 2 * crop
    padded = F.pad(pairs, (pad,) * 4, mode="reflect") if min(pairs.shape[-2:]) > pad \
        else F.pad(pairs, (pad,) * 4, mode="replicate")
    out = []
    for s in (1, 2, 4):
        size = crop * s
        H, W = padded.shape[-2:]
        y = int(torch.randint(0, H - size + 1, (1,), generator=generator))
        x = int(torch.randint(0, W - size + 1, (1,), generator=generator))
        c = padded[..., y:y + size, x:x + size]
        if s > 1:
            c = F.interpolate(c, size=(crop, crop), mode="bilinear", align_corners=False)
        out.append((c[:, :1], c[:, 1:]))
    return out


class GanTrainer:
    """Discriminators, their optimiser, and the two LSGAN loss halves for the recipe."""

    def __init__(self, device: str | torch.device = "cpu", lr: float = 1e-4, crop: int = 32,
                 width: int = 16, weight: float = 0.05) -> None:
        self.discs = nn.ModuleList(ScaleDiscriminator(width) for _ in range(3)).to(device)
        self.opt = torch.optim.Adam(self.discs.parameters(), lr=lr, betas=(0.5, 0.999))
        self.crop, self.weight = crop, weight
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def objects(self) -> dict:
        return {"discriminators": self.discs, "disc_optimizer": self.opt}

    def generator_loss(self, fake: torch.Tensor, real: torch.Tensor, logs: dict) -> torch.Tensor:
        """weight x sum over scales of mean (D(fake) - 1)^2; remembers the crops for D."""
        pairs = multiscale_crops(fake, real, self.crop)
        self._pairs = [(f.detach(), r.detach()) for f, r in pairs]
        for p in self.discs.parameters():
            p.requires_grad_(False)
        adv = sum(((d(f) - 1) ** 2).mean() for d, (f, _) in zip(self.discs, pairs))
        for p in self.discs.parameters():
            p.requires_grad_(True)
        logs["adv_gen"] = float(adv.detach())
        return self.weight * adv

    def discriminator_step(self, logs: dict) -> None:
        """One Adam step of every discriminator on the crops of the last generator step."""
        loss = sum(((d(r) - 1) ** 2).mean() + (d(f) ** 2).mean()
                   for d, (f, r) in zip(self.discs, self._pairs))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        logs["adv_disc"] = float(loss.detach())
