"""The ALRC paper's 2x supersampling experiment (arXiv:1906.09060 §4; SEED_SPEC §1.3).

A small CNN learns to restore 32x32 crops after bilinear 2x down- and up-sampling. Trained at
batch size 1 with squared or quartic errors, its loss spikes; ALRC should remove them. The
crops come from scikit-image's bundled grayscale images, so the demo runs offline.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .alrc import ALRC

# scikit-image's bundled grayscale images (no download): natural and textured scenes.
TRAIN_IMAGES = ("camera", "moon", "coins", "page", "text", "brick", "grass", "gravel", "clock")
TEST_IMAGES = ("cell",)


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The add follows the second ReLU with no activation after it, as in the paper's code.
        return x + F.relu(self.conv2(F.relu(self.conv1(x))))


class SupersamplingNet(nn.Module):
    """conv5x5-64, conv3x3-128, three two-conv residual blocks, conv3x3-64, conv5x5-C (linear)."""

    def __init__(self, channels: int = 1, width: int = 128) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(channels, width // 2, 5, padding=2), nn.ReLU(),
                                  nn.Conv2d(width // 2, width, 3, padding=1), nn.ReLU())
        self.blocks = nn.Sequential(*[_Residual(width) for _ in range(3)])
        self.tail = nn.Sequential(nn.Conv2d(width, width // 2, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width // 2, channels, 5, padding=2))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tail(self.blocks(self.head(x)))


def degrade(x: torch.Tensor) -> torch.Tensor:
    """Bilinear 2x down- then up-sampling (align_corners=True, as in the paper's pipeline)."""
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(h // 2, w // 2), mode="bilinear", align_corners=True)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=True)


def _load_images(names: tuple[str, ...]) -> list[np.ndarray]:
    try:
        from skimage import data
    except ImportError as exc:
        raise ImportError("the supersampling demo needs scikit-image: pip install 'em-accel[demo]'") from exc
    return [getattr(data, n)().astype(np.float32) / 255.0 for n in names]


class CropSampler:
    """Random 32x32 crops with flips and per-crop standardisation, reproducible from a seed."""

    def __init__(self, names: tuple[str, ...], size: int = 32, seed: int = 0) -> None:
        self.images = _load_images(names)
        self.size = size
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> torch.Tensor:
        crops = []
        for _ in range(n):
            img = self.images[self.rng.integers(len(self.images))]
            y = self.rng.integers(img.shape[0] - self.size + 1)
            x = self.rng.integers(img.shape[1] - self.size + 1)
            c = img[y:y + self.size, x:x + self.size]
            if self.rng.random() < 0.5:
                c = c[:, ::-1]
            c = (c - c.mean()) / max(float(c.std()), 1.0 / self.size)  # TF per_image_standardization
            crops.append(np.ascontiguousarray(c))
        return torch.from_numpy(np.stack(crops))[:, None]


@dataclass
class RunResult:
    error: str
    alrc: bool
    steps: int
    losses: list[float]          # raw (unclipped) per-step training loss
    test_loss: float             # mean error on held-out crops after training
    seconds: float

    def spikes(self, factor: float = 10.0, window: int = 50) -> int:
        """Steps whose loss exceeds ``factor`` x the median of the preceding ``window`` steps."""
        x = np.asarray(self.losses)
        count = 0
        for i in range(window, len(x)):
            if np.isfinite(x[i]) and x[i] > factor * np.median(x[i - window:i]):
                count += 1
        return count + int((~np.isfinite(x)).sum())


def train_run(error: str = "squared", use_alrc: bool = True, steps: int = 1000, batch: int = 1,
              lr: float = 0.1 / 128, seed: int = 0, width: int = 128, progress: bool = False) -> RunResult:
    """Train SupersamplingNet with Adam at ``batch`` for ``steps`` and return the loss curve."""
    torch.manual_seed(seed)
    net = SupersamplingNet(width=width)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    # Overestimates of the loss moments, as the authors advise (3x and 3^2x rough estimates).
    alrc = ALRC(n_up=3.0, decay=0.999, mu1_start=3.0, mu2_start=12.0) if use_alrc else None
    sampler = CropSampler(TRAIN_IMAGES, seed=seed)
    losses: list[float] = []
    it = range(steps)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"{error}{' + ALRC' if use_alrc else ''}", leave=False)
    t0 = time.perf_counter()
    for _ in it:
        target = sampler.batch(batch)
        pred = net(degrade(target))
        if alrc is not None:
            per_example = alrc.fused(pred, target, error)
            with torch.no_grad():  # report the unclipped loss, comparable across runs
                raw = _mean_error(pred, target, error)
        else:
            per_example = _mean_error(pred, target, error, per_example=True)
            raw = per_example.detach().mean()
        opt.zero_grad(set_to_none=True)
        per_example.mean().backward()
        opt.step()
        losses.append(float(raw))
    seconds = time.perf_counter() - t0
    test = CropSampler(TEST_IMAGES, seed=seed + 1).batch(256)
    with torch.no_grad():
        test_loss = float(_mean_error(net(degrade(test)), test, error))
    return RunResult(error, use_alrc, steps, losses, test_loss, seconds)


def _mean_error(pred: torch.Tensor, target: torch.Tensor, error: str,
                per_example: bool = False) -> torch.Tensor:
    d = pred - target
    e = d.abs() if error == "absolute" else (d * d if error == "squared" else (d * d) ** 2)
    return e.flatten(1).mean(1) if per_example else e.mean()


def run_demo(out_dir: str | Path, steps: int = 1000, seed: int = 0, errors=("squared", "quartic"),
             progress: bool = True) -> dict:
    """Train with and without ALRC for each error; write losses JSON and a plot to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = [train_run(e, a, steps=steps, seed=seed, progress=progress)
            for e in errors for a in (False, True)]
    summary = {f"{r.error}{'+alrc' if r.alrc else ''}": {
        "mean_loss_last_quarter": _nanmean(r.losses[-max(steps // 4, 1):]),
        "spikes": r.spikes(), "max_loss": _nanmax(r.losses), "test_loss": r.test_loss,
        "seconds": round(r.seconds, 1)} for r in runs}
    (out / "alrc_demo.json").write_text(json.dumps(
        {"summary": summary, "runs": [asdict(r) for r in runs]}, indent=1))
    _plot(runs, out / "alrc_demo.png")
    return summary


def _nanmean(x: list[float]) -> float:
    a = np.asarray(x, dtype=np.float64)
    return float(a[np.isfinite(a)].mean()) if np.isfinite(a).any() else math.nan


def _nanmax(x: list[float]) -> float:
    a = np.asarray(x, dtype=np.float64)
    return float(a[np.isfinite(a)].max()) if np.isfinite(a).any() else math.nan


def _plot(runs: list[RunResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    errors = sorted({r.error for r in runs}, key=[r.error for r in runs].index)
    fig, axes = plt.subplots(1, len(errors), figsize=(6 * len(errors), 4), squeeze=False)
    for ax, error in zip(axes[0], errors):
        for r in (r for r in runs if r.error == error):
            ax.semilogy(r.losses, lw=0.6, alpha=0.8,
                        label=f"{'ALRC' if r.alrc else 'no clipping'} ({r.spikes()} spikes)")
        ax.set_title(f"{error} error, batch size 1")
        ax.set_xlabel("training step")
        ax.set_ylabel("training loss (unclipped)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
