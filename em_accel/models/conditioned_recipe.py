"""How the conditioned denoiser is made: ``python -m em_accel.models.conditioned_recipe OUT``.

One model for all doses: crops of clean images acquired as TEM or STEM at mean doses drawn
log-uniformly in [1, 10⁴] counts/px (:class:`em_accel.data.counts_dataset.CountsCropDataset`),
trained in the Anscombe domain with the noise level as an input. The loss is the squared error
weighted to approximate the error in counts, divided by that of the noisy input (so every dose
counts alike; 1 = no better than the input), per example clipped by ALRC. Validation reports
the error over the noise variance instead (:func:`noise_weighted_error`).

Resumable: ``OUT/checkpoint.safetensors`` holds model, optimiser, schedule, ALRC moments and
step; batch ``k`` is a pure function of ``k``, so ``--seconds`` runs that stop and continue end
bit-identical to one straight run of ``--steps``. ``--init`` starts a new run from weights.

Training images (nothing downloaded): synthetic micrographs (:mod:`em_accel.data.synthetic`,
seed 1000), scikit-image's :data:`~em_accel.data.SKIMAGE_TRAIN`, and, when present, the
realistic micrograph caches named with ``--cache`` (:func:`em_accel.data.micrographs.build_cache`;
HAADF as STEM, HRTEM as TEM; images showing a held-out material are skipped). Validation and
evaluation use other seeds and held-out materials.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data import skimage_images, synthetic_images
from ..data.counts_dataset import CountsCropDataset, acquire_counts, to_network
from ..data.datasets import item_generator
from ..data.micrographs import load_cache
from ..sim.materials import split_of
from ..train.checkpoint import save_weights
from ..train.loop import Trainer, TrainConfig
from .conditioned import ConditionedUNet, conditioned_notes, load_conditioned
from .denoiser import count_parameters

TRAIN_SEED, HELDOUT_SEED = 1000, 2000
WEIGHTS = "denoiser_conditioned.safetensors"


class AtrousConditioned(nn.Module):
    """The thesis's atrous network with the noise map as a second input channel (predicts the
    scaled Anscombe image directly), for the architecture comparison."""

    def __init__(self, width: float = 0.1875, depth: int = 3) -> None:
        super().__init__()
        from .denoiser import AtrousDenoiser

        self.net = AtrousDenoiser(width=width, depth=depth, in_channels=2)
        self.config = {"atrous": self.net.config}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def noise_weighted_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per example: mean of ``(ẑ − z)²·z² / σ²`` (≈ the squared error in counts over the
    noise variance; target channels are ``[z, σ]``)."""
    z, sig = target[:, :1], target[:, 1:2]
    return ((pred.float() - z) ** 2 * z ** 2 / sig ** 2).flatten(1).mean(1)


def relative_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per example: the weighted squared error of ``pred`` over that of the noisy input
    (target channels ``[z, σ, z_noisy]``; 1 = no better than the input). Unlike
    :func:`noise_weighted_error` it does not let examples whose input error far exceeds the
    noise (scan jitter at high dose) dominate the batch."""
    z, noisy = target[:, :1], target[:, 2:3]
    w = z ** 2
    num = ((pred.float() - z) ** 2 * w).flatten(1).mean(1)
    return num / ((noisy - z) ** 2 * w).flatten(1).mean(1).clamp_min(1e-12)


#: Training losses: the mean relative error (ALRC-clipped), or the mean of its logarithm.
LOSSES = ("relative", "log-relative")


class ConditionedTrainer(Trainer):
    """:class:`Trainer` with the relative loss (no Huberisation, no L2).

    ``loss_kind="log-relative"`` minimises the mean log of the relative error (the geometric
    mean): every example's *relative* improvement counts alike, so low-dose crops, whose
    relative error is small (≈ 0.02–0.1) but whose error in image units is the largest, are
    not outweighed by jittered high-dose STEM crops (≈ 0.3–2). ALRC is not applied to it (the
    gradient of a log does not change under ALRC's rescaling).
    """

    loss_kind = "relative"

    def loss(self, pred, target):
        raw = relative_error(pred, target)
        if self.loss_kind == "log-relative":
            return raw.clamp_min(1e-6).log().mean(), raw.detach()
        per = self.alrc(raw) if self.config.alrc == "module" else raw
        return per.mean(), raw.detach()


class _Stop(Exception):
    pass


def material_ids(params: dict) -> list[str]:
    """Every material ID (``cif:``, ``proto:``, ``random:``) named anywhere in a micrograph's
    params."""
    out: list[str] = []

    def walk(x):
        if isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        elif isinstance(x, str) and x.split(":", 1)[0] in ("cif", "proto", "random"):
            out.append(x)
    walk(params)
    return out


def training_images(n_synthetic: int, size: int = 256, caches: list[Path] = ()
                    ) -> tuple[list[np.ndarray], list[str | None], dict, list[float | None]]:
    """Clean training images, their modality (None: either), a description, and their
    pedestals (HRTEM micrographs: from ``intensity_range``, vacuum = 1; else None: drawn)."""
    ims = synthetic_images(n_synthetic, size, TRAIN_SEED)
    mods: list[str | None] = [None] * len(ims)
    nat = skimage_images()
    ims += nat
    mods += [None] * len(nat)
    desc = {"synthetic": n_synthetic, "synthetic_seed": TRAIN_SEED, "skimage": len(nat)}
    peds: list[float | None] = [None] * len(ims)
    for path in caches:
        cache = load_cache(path)
        mod = {"haadf": "stem", "hrtem": "tem"}.get(cache.meta.get("kind"))
        kept = 0
        for im, params in zip(cache.images, cache.params):
            if any(split_of(m) == "heldout" for m in material_ids(params)):
                continue                  # held-out materials stay unseen (evaluation)
            ims.append((im - im.min()) / max(float(im.max() - im.min()), 1e-12))
            mods.append(mod)
            lo_hi = params.get("intensity_range")
            peds.append(float(lo_hi[0]) / max(float(lo_hi[1] - lo_hi[0]), 1e-12)
                        if mod == "tem" and lo_hi else None)
            kept += 1
        desc[str(path)] = {"n": len(cache.images), "kept_train_split": kept, "modality": mod,
                           "meta": {k: cache.meta.get(k) for k in ("kind", "size", "seed")}}
    return ims, mods, desc, peds


def validation_pairs(n: int = 16, size: int = 128, seed: int = HELDOUT_SEED
                     ) -> list[tuple[torch.Tensor, torch.Tensor, float, str]]:
    """Held-out (input, target, dose, modality) pairs at fixed doses 2…5000 counts/px."""
    doses = np.geomspace(2, 5000, n)
    out = []
    for k, im in enumerate(synthetic_images(n, size, seed)):
        g = item_generator(seed, k)
        mod = ("tem", "stem")[k % 2]
        noisy, clean = acquire_counts(torch.as_tensor(im), mod, float(doses[k]), g)
        x, t, _ = to_network(noisy, clean)
        out.append((x, t, float(doses[k]), mod))
    return out


@torch.no_grad()
def validate(model: nn.Module, pairs) -> dict:
    """Mean noise-weighted error at low (< 60) and high (≥ 300 counts/px) validation doses."""
    model.eval()
    res = {"low": [], "mid": [], "high": []}
    for x, t, dose, _ in pairs:
        e = float(noise_weighted_error(model(x[None]), t[None])[0])
        res["low" if dose < 60 else "high" if dose >= 300 else "mid"].append(e)
    model.train()
    return {k: float(np.mean(v)) for k, v in res.items() if v}


def build(arch: str, channels: tuple[int, ...], blocks: int) -> nn.Module:
    if arch in ("unet", "unet-sigma"):
        return ConditionedUNet(channels, blocks, "sigma" if arch == "unet-sigma" else "direct")
    if arch == "atrous":
        return AtrousConditioned()
    raise ValueError(f"arch must be 'unet', 'unet-sigma' or 'atrous', got {arch!r}")


def run(out: Path, steps: int, batch: int = 8, crop: int = 96, lr: float = 1e-3,
        seconds: float | None = None, init: Path | None = None, device: str = "cpu",
        arch: str = "unet", channels: tuple[int, ...] = (16, 32, 64, 96), blocks: int = 1,
        n_synthetic: int = 64, caches: list[Path] = (), progress: bool = True,
        workers: int = 0, seed: int = 0, n_validation: int = 16,
        loss: str = "relative") -> dict:
    """Train (or continue) the run in ``out``; returns the run record (also ``recipe.json``)."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if init is not None:
        model, init_notes = load_conditioned(init).train(), conditioned_notes(init)
    else:
        model, init_notes = build(arch, channels, blocks), None
    images, mods, desc, peds = training_images(n_synthetic, caches=list(caches))
    ds = CountsCropDataset(images, mods, crop, seed=TRAIN_SEED + seed, pedestals=peds)
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=lr, warmup_steps=min(100, steps // 20),
                      l2=0.0, huber=False, alrc="module", alrc_mu1_start=1.0,
                      alrc_mu2_start=2.0, checkpoint_every=max(25, steps // 40), log_every=10,
                      workers=workers, grad_clip=None)
    trainer = ConditionedTrainer(model, ds, cfg, out, device=device, progress=progress)
    trainer.loss_kind = loss
    ckpt = out / "checkpoint.safetensors"
    if ckpt.is_file():
        trainer.load(ckpt)        # (fit() resumes from it too; read here for the record)
    t0 = time.perf_counter()
    start_step = trainer.step

    def stop_when_due(tr: Trainer, rec: dict) -> None:
        if seconds is not None and time.perf_counter() - t0 > seconds and tr.step < cfg.steps:
            tr.save()
            raise _Stop

    try:
        trainer.fit(callback=stop_when_due)
        finished = True
    except _Stop:
        finished = False
    wall = time.perf_counter() - t0
    rec_path = out / "recipe.json"
    record = json.loads(rec_path.read_text()) if rec_path.is_file() else {
        "command": "python -m em_accel.models.conditioned_recipe " + " ".join(sys.argv[1:]),
        "arch": arch, "config": getattr(model, "config", {}), "params": count_parameters(model),
        "steps": steps, "batch": batch, "crop": crop, "lr": lr, "loss": loss, "data": desc,
        "doses": "log-uniform [1, 1e4] mean counts/px, TEM or STEM (counts_dataset)",
        "init": str(init) if init else None, "init_notes": init_notes, "sessions": []}
    record["sessions"].append({"from_step": start_step, "to_step": trainer.step,
                               "wall_s": round(wall, 1), "device": _device_name(device),
                               "threads": torch.get_num_threads(), "finished": finished,
                               "data": desc,
                               "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    record["validation"] = validate(trainer.model, validation_pairs(n_validation))
    record["validation_step"] = trainer.step
    if isinstance(trainer.model, ConditionedUNet):
        save_weights(out / WEIGHTS, trainer.model, trainer.model.config, dtype=torch.float16,
                     notes={"steps": trainer.step, "recipe": record["command"],
                            "validation": record["validation"]})
    rec_path.write_text(json.dumps(record, indent=2))
    return record


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    import platform
    return f"cpu ({platform.processor() or platform.machine()})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m em_accel.models.conditioned_recipe",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--steps", type=int, default=4000, help="total steps of the schedule")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=96)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seconds", type=float, default=None,
                   help="stop (with a checkpoint) after this many seconds; rerun to continue")
    p.add_argument("--init", type=Path, default=None, help="start from these weights")
    p.add_argument("--device", default="cpu")
    p.add_argument("--arch", default="unet", choices=["unet", "unet-sigma", "atrous"],
                   help="conditioned UNet predicting the noise (unet) or the noise in units of "
                        "σ (unet-sigma), or the thesis's atrous network with a noise-map input")
    p.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 96])
    p.add_argument("--blocks", type=int, default=1)
    p.add_argument("--n-synthetic", type=int, default=64)
    p.add_argument("--cache", type=Path, nargs="*", default=[],
                   help="micrograph caches (em_accel.data.micrographs.build_cache .npz)")
    p.add_argument("--loss", default="relative", choices=list(LOSSES),
                   help="mean relative error (ALRC-clipped) or mean log relative error")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    rec = run(a.out, a.steps, a.batch, a.crop, a.lr, a.seconds, a.init, a.device, a.arch,
              tuple(a.channels), a.blocks, a.n_synthetic, a.cache, not a.no_progress, a.workers,
              loss=a.loss)
    print(json.dumps({k: rec[k] for k in ("sessions", "validation", "validation_step")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
