"""How the shipped small denoiser is made: ``python -m em_accel.models.denoise_recipe OUT``.

Two phases, as the thesis (ch. 6): train at low dose (25 + Exp(75) counts/px), then
fine-tune at ordinary doses (U(200, 2500) counts/px) from the low-dose weights. Training images
ship offline: synthetic micrographs (:mod:`em_accel.data.synthetic`, seeds below) and the
scikit-image images in :data:`em_accel.data.SKIMAGE_TRAIN`. Held-out evaluation uses other
synthetic seeds and :data:`em_accel.data.SKIMAGE_HELDOUT`, never seen in training.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ..data import NoisyCropDataset, simulated_images, skimage_images, synthetic_images
from ..train.checkpoint import save_weights
from ..train.loop import Trainer, TrainConfig
from .denoiser import AtrousDenoiser, count_parameters, load_weights

#: The shipped model's scale and the crop it was trained on (also its inference tile).
SMALL = {"width": 0.125, "depth": 2}
TRAIN_SEED, HELDOUT_SEED = 1000, 2000
CROP = 256


def training_images(n_synthetic: int = 48, size: int = 512, workers: int = 0,
                    n_simulated: int = 0) -> list:
    """Clean training images: synthetic micrographs (seed 1000), multislice HRTEM images (seed
    1000) + scikit-image's training set."""
    return (synthetic_images(n_synthetic, size, TRAIN_SEED, workers)
            + simulated_images(n_simulated, size, TRAIN_SEED, workers) + skimage_images())


def _seconds_per_step(scale: dict, images: list, batch: int, crop: int, device: str,
                      workers: int) -> float:
    """Time a few throw-away steps (used to fit step counts into a time budget)."""
    ds = NoisyCropDataset(images, crop, "low", seed=12345)
    cfg = TrainConfig(steps=65, batch_size=batch, workers=workers)
    tr = Trainer(AtrousDenoiser(**scale), ds, cfg, None, device=device, progress=False)
    cfg.steps = 5
    tr.fit()
    t0 = time.perf_counter()
    cfg.steps = 65
    tr.fit()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / 60


def run(out: Path, low_steps: int, high_steps: int, batch: int, crop: int = CROP,
        threads: int | None = None, progress: bool = True, scale: dict | None = None, *,
        device: str = "cpu", workers: int = 0, seconds: float | None = None,
        init: Path | None = None, n_synthetic: int = 48, low_lr: float = 1e-3,
        n_simulated: int = 0) -> dict:
    """Train both phases under ``out`` and write ``denoiser_small_{low,high}.safetensors``.

    With ``seconds``, the step counts are scaled down (keeping their ratio) to fit that
    training-time budget, from the measured time of a few throw-away steps. With ``init`` (a
    weights file from :func:`save_weights`, e.g. the shipped low-dose model), training starts
    from those weights and their architecture instead of a fresh ``scale``.
    """
    if threads:
        torch.set_num_threads(threads)
    scale = dict(scale or SMALL)
    if init is not None:
        start, start_notes = load_weights(init)
        scale = {"width": start.config["width"], "depth": start.config["depth"]}
    images = training_images(n_synthetic, workers=workers, n_simulated=n_simulated)
    if seconds:
        per = _seconds_per_step(scale, images, batch, crop, device, workers)
        fit = int(seconds / per)
        if fit < low_steps + high_steps:
            low_steps, high_steps = (round(fit * low_steps / (low_steps + high_steps)),
                                     round(fit * high_steps / (low_steps + high_steps)))
    torch.manual_seed(0)
    model = start.float().train() if init is not None else AtrousDenoiser(**scale)
    summary: dict = {"params": count_parameters(model), "crop": crop, "batch": batch,
                     "config": model.config, "n_synthetic": n_synthetic,
                     "n_simulated": n_simulated}
    if init is not None:
        summary["init"] = {"path": str(init), "notes": start_notes}
    for phase, dose, steps, lr in (("low", "low", low_steps, low_lr), ("high", "high", high_steps, 3e-4)):
        ds = NoisyCropDataset(images, crop, dose, seed=TRAIN_SEED + (phase == "high"))
        cfg = TrainConfig(steps=steps, batch_size=batch, lr=lr, warmup_steps=min(50, steps // 10),
                          checkpoint_every=max(100, steps // 10), log_every=20, workers=workers)
        t0 = time.perf_counter()
        Trainer(model, ds, cfg, out / phase, device=device, progress=progress).fit()
        notes = {"phase": phase, "dose": dose, "steps": steps, "batch": batch, "crop": crop,
                 "lr": lr, "train_seconds": round(time.perf_counter() - t0, 1),
                 "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
                 "data": f"{n_synthetic} synthetic + {n_simulated} multislice 512² micrographs "
                         "(seed 1000) + skimage SKIMAGE_TRAIN", "init": str(init) if init else None,
                 "tile": crop}
        save_weights(out / f"denoiser_small_{phase}.safetensors", model, model.config,
                     dtype=torch.float16, notes=notes)
        summary[phase] = notes
    (out / "recipe.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m em_accel.models.denoise_recipe", description=__doc__)
    p.add_argument("out", type=Path)
    p.add_argument("--low-steps", type=int, default=2000)
    p.add_argument("--high-steps", type=int, default=800)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=CROP)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--width", type=float, default=SMALL["width"])
    p.add_argument("--depth", type=int, default=SMALL["depth"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=0, help="DataLoader processes")
    p.add_argument("--seconds", type=float, default=None,
                   help="fit the step counts into this many seconds of training")
    p.add_argument("--init", type=Path, default=None,
                   help="start from these weights (save_weights format), e.g. to train on")
    p.add_argument("--n-synthetic", type=int, default=48, help="synthetic training micrographs")
    p.add_argument("--n-simulated", type=int, default=0,
                   help="multislice HRTEM training images (em_accel.data.simulated)")
    p.add_argument("--low-lr", type=float, default=1e-3, help="low-dose phase learning rate")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    summary = run(a.out, a.low_steps, a.high_steps, a.batch, a.crop, a.threads,
                  not a.no_progress, {"width": a.width, "depth": a.depth}, device=a.device,
                  workers=a.workers, seconds=a.seconds, init=a.init, n_synthetic=a.n_synthetic,
                  low_lr=a.low_lr, n_simulated=a.n_simulated)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
