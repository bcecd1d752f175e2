"""The ALRC paper's 2x supersampling experiment (arXiv:1906.09060 §4; thesis ch. 3).

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

from .._api import progress_bar
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
    lr: float
    losses: list[float]          # raw (unclipped) per-step training loss
    eval_steps: list[int]        # steps at which the held-out loss was measured
    eval_losses: list[float]     # mean error on fixed held-out crops (another image)
    seconds: float

    @property
    def test_loss(self) -> float:
        """Mean held-out loss over the last quarter of the evaluations."""
        tail = self.eval_losses[-max(len(self.eval_losses) // 4, 1):]
        return _nanmean(tail)

    def eval_spikes(self, factor: float = 2.0) -> int:
        """Evaluations whose held-out loss exceeds ``factor`` x the best seen so far."""
        best, count = math.inf, 0
        for v in self.eval_losses:
            if not math.isfinite(v) or v > factor * best:
                count += 1
            best = min(best, v) if math.isfinite(v) else best
        return count

    def spikes(self, factor: float = 10.0, window: int = 50) -> int:
        """Steps whose loss exceeds ``factor`` x the median of the preceding ``window`` steps."""
        x = np.asarray(self.losses)
        count = 0
        for i in range(window, len(x)):
            if np.isfinite(x[i]) and x[i] > factor * np.median(x[i - window:i]):
                count += 1
        return count + int((~np.isfinite(x)).sum())


def train_run(error: str = "squared", use_alrc: bool = True, steps: int = 1000, batch: int = 1,
              lr: float = 2e-3, seed: int = 0, width: int = 128, decay: float = 0.99,
              eval_every: int = 50, progress: bool = True) -> RunResult:
    """Train SupersamplingNet with Adam at ``batch`` for ``steps``; return the loss curves.

    ``lr`` 2e-3 is the paper's "unstable learning rate" Adam setting. ``decay`` 0.99 (the paper
    uses 0.999 over 100k steps) lets the moments settle within a short demonstration.
    """
    torch.manual_seed(seed)
    net = SupersamplingNet(width=width)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    # Overestimates of the loss moments, as the authors advise (3x and 3^2x rough estimates).
    alrc = ALRC(n_up=3.0, decay=decay, mu1_start=3.0, mu2_start=12.0) if use_alrc else None
    sampler = CropSampler(TRAIN_IMAGES, seed=seed)
    held_out = CropSampler(TEST_IMAGES, seed=seed + 1).batch(64)
    losses: list[float] = []
    eval_steps: list[int] = []
    eval_losses: list[float] = []
    it = progress_bar(range(steps), progress, desc=f"{error}{' + ALRC' if use_alrc else ''}",
                      leave=False)
    t0 = time.perf_counter()
    for step in it:
        if step % eval_every == 0 or step == steps - 1:
            with torch.no_grad():
                eval_steps.append(step)
                eval_losses.append(float(_mean_error(net(degrade(held_out)), held_out, error)))
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
    return RunResult(error, use_alrc, steps, lr, losses, eval_steps, eval_losses, seconds)


def _mean_error(pred: torch.Tensor, target: torch.Tensor, error: str,
                per_example: bool = False) -> torch.Tensor:
    d = pred - target
    e = d.abs() if error == "absolute" else (d * d if error == "squared" else (d * d) ** 2)
    return e.flatten(1).mean(1) if per_example else e.mean()


def run_demo(out_dir: str | Path, steps: int = 1000, seeds: tuple[int, ...] = (0,),
             errors=("squared", "quartic"), lr: float = 2e-3, progress: bool = True) -> dict:
    """Train with and without ALRC for each error and seed; write JSON and a plot to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = [train_run(e, a, steps=steps, seed=s, lr=lr, progress=progress)
            for e in errors for s in seeds for a in (False, True)]
    summary: dict = {}
    for e in errors:
        for a in (False, True):
            group = [r for r in runs if r.error == e and r.alrc == a]
            summary[f"{e}{'+alrc' if a else ''}"] = {
                "held_out_loss": [round(r.test_loss, 6) for r in group],
                "held_out_spikes": [r.eval_spikes() for r in group],
                "train_spikes": [r.spikes() for r in group],
                "max_held_out_loss": [_nanmax(r.eval_losses[1:]) for r in group],
                "seconds": [round(r.seconds, 1) for r in group]}
    (out / "alrc_demo.json").write_text(json.dumps(
        {"summary": summary, "runs": [asdict(r) for r in runs]}, indent=1))
    _plot(runs, out / "alrc_demo.png")
    return summary


def load_runs(path: str | Path) -> list[RunResult]:
    """Runs saved by :func:`run_demo` (its alrc_demo.json)."""
    return [RunResult(**r) for r in json.loads(Path(path).read_text())["runs"]]


def plot_runs(runs: list[RunResult], path: str | Path, dpi: int = 110) -> None:
    """Training and held-out loss curves, with and without ALRC, one column per error."""
    _plot(runs, Path(path), dpi)


def _nanmean(x: list[float]) -> float:
    a = np.asarray(x, dtype=np.float64)
    return float(a[np.isfinite(a)].mean()) if np.isfinite(a).any() else math.nan


def _nanmax(x: list[float]) -> float:
    a = np.asarray(x, dtype=np.float64)
    return float(a[np.isfinite(a)].max()) if np.isfinite(a).any() else math.nan


def _plot(runs: list[RunResult], path: Path, dpi: int = 110) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    errors = sorted({r.error for r in runs}, key=[r.error for r in runs].index)
    fig, axes = plt.subplots(2, len(errors), figsize=(6 * len(errors), 7), squeeze=False)
    colors = {False: "tab:red", True: "tab:blue"}
    for col, error in enumerate(errors):
        top, bottom = axes[0][col], axes[1][col]
        for r in (r for r in runs if r.error == error):
            label = "ALRC" if r.alrc else "no clipping"
            smooth = np.convolve(np.nan_to_num(r.losses, nan=np.nanmax(r.losses)), np.ones(25) / 25, "valid")
            top.semilogy(smooth, lw=0.8, color=colors[r.alrc], alpha=0.8, label=label)
            bottom.semilogy(r.eval_steps, r.eval_losses, "-o", ms=2, lw=0.8, color=colors[r.alrc],
                            alpha=0.8, label=label)
        top.set_title(f"{error} error, batch size 1, Adam lr {runs[0].lr:g}")
        top.set_ylabel("training loss, 25-step mean")
        bottom.set_ylabel("held-out loss")
        bottom.set_xlabel("training step")
        for ax in (top, bottom):
            handles, labels = ax.get_legend_handles_labels()
            uniq = dict(zip(labels, handles))
            ax.legend(uniq.values(), uniq.keys(), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
