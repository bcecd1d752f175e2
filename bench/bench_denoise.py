"""Denoising throughput and training-step time (``python -m bench denoise [--quick]``).

Rows:
- ``denoise``: megapixels/s of ``denoise_image`` for the shipped small model (and the full
  thesis-size model at 512² only on CPU, where it is slow), 512² and 2048² images, with our
  minimal-overlap tiling next to a thesis-style layout (512² tiles, 50 % overlap, i.e. margin
  128) in the same run; ``compute_per_pixel`` is the network pixels per output pixel.
- ``conditioned``: the noise-level-conditioned model (:mod:`em_accel.models.conditioned`):
  seconds per 512² image through ``denoise_micrograph`` (noise estimate included; default SURE
  post-smoothing, two network passes, and ``refine="none"``, one) next to the
  shipped atrous small model in the same run, and on CUDA the batch throughput (batches of
  512² tiles, bfloat16 autocast, channels_last) in megapixels/s.
- ``train_step``: seconds per optimiser step of the small model (batch 2, 256² crops) with the
  Huberised MSE clipped by ALRC through the native fused op, through the unfused module on
  per-example losses, and without ALRC.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.harness import available_devices, median_time, print_table, write_record
from em_accel.data import NoisyCropDataset, make_batch, synthetic_images
from em_accel.models import (AtrousDenoiser, count_parameters, denoise_image, load_pretrained,
                             overlap_cost)
from em_accel.train.loop import Trainer, TrainConfig


def _throughput_rows(device: str, quick: bool) -> list[dict]:
    rows = []
    small = load_pretrained(device=device)
    models = [("small (shipped)", small, 512)]
    if device == "cuda" or not quick:
        models.append(("full (thesis)", AtrousDenoiser().to(device).eval(), 512))
    sizes = [512] if quick else [512, 2048]
    rng = np.random.default_rng(0)
    for name, model, tile in models:
        for size in sizes:
            if name.startswith("full") and device == "cpu" and size > 512:
                continue
            img = rng.poisson(50.0, (size, size)).astype(np.float32)
            layouts = [("ours", tile, 16)]
            if tile == 512:
                layouts.append(("thesis-style 50% overlap", 512, 128))
            for layout, t, m in layouts:
                reps = 2 if device == "cpu" else 10
                sec = median_time(lambda: denoise_image(model, img, tile=t, margin=m), device,
                                  warmup=1, repeats=reps)
                rows.append({"kind": "denoise", "device": device, "model": name,
                             "params": count_parameters(model), "size": size, "layout": layout,
                             "tile": t, "margin": m,
                             "compute_per_pixel": round(overlap_cost(size, size, t, m), 3),
                             "seconds": sec, "mpix_per_s": size * size / sec / 1e6})
    return rows


def _conditioned_rows(device: str, quick: bool) -> list[dict]:
    from em_accel.models.conditioned import denoise_micrograph, load_conditioned

    rows = []
    try:
        model = load_conditioned(device=device)
    except FileNotFoundError:
        return rows
    small = load_pretrained(device=device)
    from em_accel.data import synthetic_images

    rng = np.random.default_rng(0)
    clean = synthetic_images(1, 512, 0)[0]
    # a detector image (gain 37, offset 3e6) at 20 and at 2000 counts/px: SURE prices the
    # Wiener filters only from 100 counts/px
    img, img_hi = ((37.0 * rng.poisson(d * (0.5 + clean) / (0.5 + clean).mean()) + 3e6)
                   .astype(np.float32) for d in (20.0, 2000.0))
    reps = 3 if device == "cpu" else 10
    for name, fn, m in (
            ("conditioned (shipped), noise estimate + SURE post-filter (default), 20 counts/px",
             lambda: denoise_micrograph(img, model, progress=False), model),
            ("conditioned (shipped), the same at 2000 counts/px (Wiener filters priced too)",
             lambda: denoise_micrograph(img_hi, model, progress=False), model),
            ("conditioned (shipped), noise estimate, refine='none'",
             lambda: denoise_micrograph(img, model, progress=False, refine="none"), model),
            ("atrous small (shipped)", lambda: denoise_image(small, img, tile=512, progress=False),
             small)):
        sec = median_time(fn, device, warmup=1, repeats=reps)
        rows.append({"kind": "conditioned", "device": device, "model": name,
                     "params": count_parameters(m), "size": 512, "batch": 1, "seconds": sec,
                     "mpix_per_s": 512 * 512 / sec / 1e6})
    if device == "cuda":
        net = model.to(memory_format=torch.channels_last)
        for batch in (8, 32):
            x = torch.rand(batch, 2, 512, 512, device=device).to(memory_format=torch.channels_last)

            def step():
                with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                    net(x)
            sec = median_time(step, device, warmup=3, repeats=10)
            rows.append({"kind": "conditioned", "device": device,
                         "model": "conditioned, batched tiles, bf16", "params":
                         count_parameters(model), "size": 512, "batch": batch, "seconds": sec,
                         "mpix_per_s": batch * 512 * 512 / sec / 1e6})
    return rows


def _train_rows(device: str, quick: bool) -> list[dict]:
    rows = []
    ds = NoisyCropDataset(synthetic_images(2, 256, seed=0), 256, "low", seed=0)
    batch = make_batch(ds, 0, 2)
    for mode in ("fused", "module", "off"):
        torch.manual_seed(0)
        cfg = TrainConfig(steps=10**9, batch_size=2, alrc=mode)
        tr = Trainer(AtrousDenoiser(width=0.125, depth=2), ds, cfg, None, device=device, progress=False)
        sec = median_time(lambda: tr.train_step(batch), device, warmup=2,
                          repeats=3 if quick else 8)
        # the loss alone: where ALRC's cost lives
        pred = torch.rand(16, 1, 256, 256, device=device)
        target = torch.rand_like(pred)
        loss_sec = median_time(lambda: tr.loss(pred, target)[0].item(), device, warmup=2,
                               repeats=10)
        rows.append({"kind": "train_step", "device": device, "alrc": mode, "batch": 2,
                     "crop": 256, "seconds": sec, "loss_only_b16_seconds": loss_sec})
    return rows


def run(quick: bool = False) -> Path:
    devices = available_devices()
    rows: list[dict] = []
    for device in devices:
        rows += _throughput_rows(device, quick)
        rows += _conditioned_rows(device, quick)
        rows += _train_rows(device, quick)
    print_table("denoising throughput", [r for r in rows if r["kind"] == "denoise"],
                ["device", "model", "size", "layout", "compute_per_pixel", "seconds",
                 "mpix_per_s"])
    print_table("conditioned denoiser", [r for r in rows if r["kind"] == "conditioned"],
                ["device", "model", "size", "batch", "seconds", "mpix_per_s"])
    print_table("training step", [r for r in rows if r["kind"] == "train_step"],
                ["device", "alrc", "batch", "crop", "seconds", "loss_only_b16_seconds"])
    return write_record("denoise", rows, devices, {"quick": quick})
