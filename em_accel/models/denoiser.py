"""The atrous convolutional encoder-decoder denoiser (thesis ch. 6; arXiv:1807.11234).

Layer sizes follow the thesis (ch. 6) and its released TF code: a modified Xception entry flow
(B0–B4), a middle flow of ``depth`` Xception blocks (11 in the thesis), ASPP with atrous rates
6, 12, 18 at 1/16 resolution, and a three-stage decoder with skips from B1 and B0.

Scale: every channel count ``n`` of the thesis becomes ``max(4, round(n * width))`` and the
middle flow has ``depth`` blocks. ``AtrousDenoiser()`` (width 1, depth 11) is the thesis's
network; ``AtrousDenoiser(width=0.125, depth=2)`` is the small CPU-trainable version shipped
with the package (see :func:`load_pretrained`).
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from ._weights import file_bytes, shipped_bytes
from .blocks import ASPP, Norm, UpBlock, XceptionBlock, make_norm, \
    upsample_bilinear

#: Thesis channel widths (width = 1).
ENTRY = ((64, 64, 128), (128, 128, 128), (256, 256, 256), (728, 728, 728))
MIDDLE = 728
ASPP_OUT = 256
DECODER = (256, 128, 64)
ASPP_RATES = (6, 12, 18)
#: Input height and width must be multiples of this (four stride-2 stages).
STRIDE = 16


class AtrousDenoiser(nn.Module):
    """Xception/ASPP encoder-decoder mapping a noisy image to a denoised one.

    Args:
        width: channel multiplier (1 = the thesis's 64…728 channels).
        depth: number of middle-flow Xception blocks (thesis: 11).
        in_channels: input channels (1 for a micrograph).
        norm: ``"affine"`` reproduces the released code's effective batch norm (a learned
            per-channel affine, see :class:`~em_accel.models.blocks.ChannelAffine`);
            ``"batch"`` uses real batch norm.
        aspp_rates: atrous rates of the ASPP sep branches.

    Input ``[B, in_channels, H, W]`` with H and W multiples of 16, values nominally in [0, 1]
    (a min–max scaled noisy image); output ``[B, 1, H, W]`` in [0, 6] (ReLU6), nominally [0, 1].
    """

    def __init__(self, width: float = 1.0, depth: int = 11, in_channels: int = 1,
                 norm: Norm = "affine", aspp_rates: tuple[int, ...] = ASPP_RATES) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"width must be > 0, got {width}")
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        self.config = {"width": float(width), "depth": int(depth), "in_channels": int(in_channels),
                       "norm": norm, "aspp_rates": list(aspp_rates)}

        def c(n: int) -> int:
            return max(4, round(n * width))

        entry, prev = [], in_channels
        for widths in ENTRY:
            entry.append(XceptionBlock(prev, [c(w) for w in widths], stride=2, norm=norm))
            prev = c(widths[-1])
        self.entry = nn.ModuleList(entry)                      # B0..B3
        mid = c(MIDDLE)
        self.middle = nn.Sequential(*(XceptionBlock(mid, [mid] * 3, norm=norm)
                                      for _ in range(depth + 1)))  # B4 + middle flow
        self.aspp = ASPP(mid, mid, c(ASPP_OUT), tuple(aspp_rates), norm=norm)
        b0, b1 = c(ENTRY[0][-1]), c(ENTRY[1][-1])
        d1, d2, d3 = (c(n) for n in DECODER)
        self.dec1 = XceptionBlock(c(ASPP_OUT) + b1, [d1, d1], norm=norm)
        self.up1 = UpBlock(d1, d1, norm=norm)
        self.dec2 = XceptionBlock(d1 + b0, [d2, d2], norm=norm)
        self.up2 = UpBlock(d2, d2, norm=norm)
        self.dec3 = XceptionBlock(d2, [d3, d3], norm=norm)
        self.head = nn.Sequential(nn.Conv2d(d3, 1, 3, padding=1, bias=False),
                                  make_norm(norm, 1), nn.ReLU6())
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.config["in_channels"]:
            raise ValueError(f"x must have shape [B, {self.config['in_channels']}, H, W], "
                             f"got {list(x.shape)}")
        h, w = x.shape[-2:]
        if h % STRIDE or w % STRIDE:
            raise ValueError(f"x's height and width must be multiples of {STRIDE}, got {h}×{w} "
                             "(pad it, or use em_accel.models.denoise_image which tiles and pads)")
        b0 = self.entry[0](x)             # H/2
        b1 = self.entry[1](b0)            # H/4
        y = self.entry[3](self.entry[2](b1))  # H/16
        y = self.aspp(self.middle(y))
        y = upsample_bilinear(y, tuple(b1.shape[-2:]))
        y = self.up1(self.dec1(torch.cat([y, b1], 1)))        # H/2
        y = self.up2(self.dec2(torch.cat([y, b0], 1)))        # H
        return self.head(self.dec3(y))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


#: Shipped weights (em_accel/models/weights): trained at low dose, then fine-tuned at 200–2500
#: counts/px (see docs/denoise.md and :mod:`em_accel.models.denoise_recipe`).
PRETRAINED_LOW = "denoiser_small_low.safetensors"
PRETRAINED_HIGH = "denoiser_small_high.safetensors"


class LoadedModel(NamedTuple):
    """A network rebuilt from a weights file, in eval mode, and the file's training notes."""

    model: nn.Module
    notes: dict


def _from_bytes(data: bytes, device: str | torch.device | None) -> LoadedModel:
    from ..train.checkpoint import read_weights

    state, config, notes = read_weights(data)
    model = AtrousDenoiser(width=config["width"], depth=config["depth"],
                           in_channels=config["in_channels"], norm=config["norm"],
                           aspp_rates=tuple(config["aspp_rates"]))
    model.load_state_dict(state)
    model = model.to(device if device is not None else "cpu").eval()
    return LoadedModel(model, notes)


def load_weights(path: str | Path, *, device: str | torch.device | None = None) -> LoadedModel:
    """``LoadedModel(model, notes)``: an :class:`AtrousDenoiser` rebuilt from a weights file
    written by :func:`em_accel.train.checkpoint.save_weights`, in eval mode on ``device``
    (default CPU), and the file's notes."""
    return _from_bytes(file_bytes(path), device)


def load_pretrained(name: str = PRETRAINED_LOW, *, device: str | torch.device | None = None
                    ) -> AtrousDenoiser:
    """A shipped small denoiser (``PRETRAINED_LOW`` or ``PRETRAINED_HIGH``) in eval mode on
    ``device`` (default CPU); :func:`pretrained_notes` says how it was trained."""
    return _from_bytes(shipped_bytes(name), device).model


def pretrained_notes(name: str = PRETRAINED_LOW) -> dict:
    """How a shipped denoiser was trained (steps, doses, tile), from its file's metadata."""
    return _from_bytes(shipped_bytes(name), None).notes
