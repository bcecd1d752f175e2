"""Resumable training of the map encoders (the thesis's VAE and the contrastive encoder).

Batch ``s`` is a pure function of ``(seed, s)`` (:class:`~em_accel.embed.crops.CropSampler`)
and so is its noise (a generator seeded by the step), so a run stopped after a checkpoint and
resumed repeats exactly the steps an uninterrupted run would have taken. Checkpoints
(safetensors, :mod:`em_accel.train.checkpoint`) hold the model, Adam's state and the step; a
JSON-lines log holds the curve.

Schedules: learning rate 1e-3 halved every total/6 steps (the thesis's VAE); Adam β1 follows
the thesis's decay :func:`~em_accel.embed.vae.beta1` for the VAE and stays 0.9 for the
contrastive encoder.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .._api import progress_counter
from ..data.datasets import item_generator
from ..train.checkpoint import load_checkpoint, save_checkpoint
from .contrastive import ContrastiveEncoder, nt_xent, random_view
from .crops import CropSampler
from .vae import VAE, beta1, lr_at

CHECKPOINT = "checkpoint.safetensors"
LOG = "log.jsonl"


@dataclass
class TrainResult:
    step: int            # steps done in total (this call and earlier ones)
    finished: bool       # step == steps
    last_loss: float
    wall_s: float        # this call's wall time [s]


def _step_loss(model: nn.Module, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    if isinstance(model, VAE):
        return model.loss(x, model(x, generator=g)).total
    if isinstance(model, ContrastiveEncoder):
        return nt_xent(model.encode(random_view(x, g)), model.encode(random_view(x, g)))
    raise TypeError(f"model must be a VAE or a ContrastiveEncoder, got {type(model).__name__}")


def train_encoder(model: nn.Module, sampler: CropSampler, out_dir: str | Path, steps: int,
                  batch_size: int = 64, *, lr: float = 1e-3, seed: int = 0,
                  time_limit_s: float | None = None, until: int | None = None,
                  checkpoint_every: int = 50,
                  device=None, progress: bool = True) -> TrainResult:
    """Train ``model`` (a :class:`VAE` or :class:`ContrastiveEncoder`) for ``steps`` steps in
    total, resuming from ``out_dir``/checkpoint.safetensors if it exists.

    Stops early (checkpointing first) once ``time_limit_s`` [s] of wall time is spent or at
    step ``until``, so a time-boxed job can be continued by another (the schedules always
    follow ``steps``). ``device``: None = CPU.
    """
    if steps < 1 or batch_size < 2:
        raise ValueError(f"steps must be >= 1 and batch_size >= 2, got {steps}, {batch_size}")
    device = torch.device(device or "cpu")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
    ckpt = out / CHECKPOINT
    step = 0
    if ckpt.exists():
        step, _ = load_checkpoint(ckpt, {"model": model, "optimizer": opt}, map_location=device)
    is_vae = isinstance(model, VAE)
    t0 = time.perf_counter()
    last = float("nan")
    bar = progress_counter(steps - step, progress, desc="train")
    with open(out / LOG, "a") as log:
        while step < steps:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, steps, lr)
                group["betas"] = (beta1(step, steps) if is_vae else 0.9, 0.999)
            g = item_generator(seed + 7919, step)
            x = sampler.batch(step, batch_size).to(device)
            loss = _step_loss(model, x, g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            last = float(loss.detach())
            bar.update(1)
            if step % 10 == 0 or step == steps:
                log.write(json.dumps({"step": step, "loss": last,
                                      "lr": opt.param_groups[0]["lr"],
                                      "time_s": time.perf_counter() - t0}) + "\n")
                log.flush()
            out_of_time = (time_limit_s is not None and time.perf_counter() - t0 > time_limit_s) \
                or (until is not None and step >= until)
            if step % checkpoint_every == 0 or step == steps or out_of_time:
                save_checkpoint(ckpt, {"model": model, "optimizer": opt}, step,
                                extra={"steps": steps, "batch_size": batch_size, "seed": seed})
            if out_of_time:
                break
    bar.close()
    return TrainResult(step, step >= steps, last, time.perf_counter() - t0)


def training_images(n_synthetic: int = 240, size: int = 256, seed: int = 0,
                    cache: str | Path | None = None) -> list:
    """The encoders' training images: ``n_synthetic`` synthetic micrographs
    (:mod:`em_accel.data.synthetic`, seed ``seed``) and scikit-image's bundled training
    images (:data:`em_accel.data.SKIMAGE_TRAIN`), float32 in [0, 1]; cached as npz in
    ``cache`` if given."""
    import numpy as np

    from ..data import SKIMAGE_TRAIN, skimage_images, synthetic_images

    path = Path(cache) / f"embed_train_{n_synthetic}_{size}_{seed}.npz" if cache else None
    if path is not None and path.exists():
        with np.load(path) as f:
            synth = list(f["synthetic"])
    else:
        synth = synthetic_images(n_synthetic, size, seed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, synthetic=np.stack(synth))
    return synth + skimage_images(SKIMAGE_TRAIN)


def main(argv: list[str] | None = None) -> int:
    """``python -m em_accel.embed.train_encoders --kind vae|contrastive --out DIR --steps N``:
    train (or continue) one encoder; see docs/maps.md for the recorded runs."""
    import argparse
    import platform

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--kind", choices=["vae", "vae-nosobel", "vae-kl", "contrastive"], required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--time-limit", type=float, default=None, help="stop after this many s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None, help="folder caching the generated images")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    images = training_images(cache=args.cache)
    model = ContrastiveEncoder() if args.kind == "contrastive" else \
        VAE(sobel=args.kind != "vae-nosobel", kl=args.kind == "vae-kl")
    res = train_encoder(model, CropSampler(images, seed=args.seed), args.out, args.steps,
                        args.batch_size, seed=args.seed, time_limit_s=args.time_limit)
    recipe_path = Path(args.out) / "recipe.json"
    recipe = json.loads(recipe_path.read_text()) if recipe_path.exists() else {"sessions": []}
    recipe.update({"kind": args.kind, "config": model.config, "steps": args.steps,
                   "batch_size": args.batch_size, "seed": args.seed,
                   "data": f"{len(images) - 11} synthetic 256x256 micrographs (seed 0) + 11 "
                           "scikit-image training images; random square crops 96..min(H,W) px "
                           "area-resized to 96, dihedral"})
    recipe["sessions"].append({"command": "python -m em_accel.embed.train_encoders "
                               + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
                               "steps_done": res.step, "wall_s": round(time.perf_counter() - t0, 1),
                               "last_loss": res.last_loss, "machine": platform.processor()
                               or platform.machine(), "threads": args.threads})
    recipe_path.write_text(json.dumps(recipe, indent=1))
    print(json.dumps(recipe["sessions"][-1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
