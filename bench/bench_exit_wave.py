"""Exit-wave phase recovery: inference time per 224² and dataset generation rate
(``python -m bench exit_wave [--quick]``).

Rows:
- ``inference``: milliseconds per 224² amplitude of an :class:`ExitWaveNet` forward pass at
  batch 64 (``--quick``: batch 8), for the shipped small model and the thesis-size network
  (width 1, 6 residual blocks); on CUDA with bf16 autocast, as :func:`reconstruct_exit_wave`.
- ``generation``: exit waves per second of :mod:`em_accel.sim.exit_wave_sets` with the CPU
  preset's sizes (128² grids, 2 Å slices) on restricted-set parameters.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import torch

from bench.harness import available_devices, median_time, print_table, write_record
from em_accel.models.exit_wave import ExitWaveNet, load_pretrained_exit_wave


def _models(device: str) -> list[tuple[str, ExitWaveNet]]:
    try:
        small = ("small (shipped)", load_pretrained_exit_wave(device=device))
    except FileNotFoundError:
        small = ("small (untrained, shipped config)", ExitWaveNet(0.25, 2).to(device).eval())
    return [small, ("full (thesis)", ExitWaveNet().to(device).eval())]


def _inference_rows(device: str, quick: bool) -> list[dict]:
    rows = []
    for name, model in _models(device):
        batch = 8 if quick or (device == "cpu" and name.startswith("full")) else 64
        x = torch.rand(batch, 1, 224, 224, device=device) + 0.5

        def fwd() -> None:
            with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                model(x)

        sec = median_time(fwd, device, warmup=1 if device == "cpu" else 3,
                          repeats=2 if device == "cpu" else 20)
        rows.append({"kind": "inference", "device": device, "model": name,
                     "params": sum(p.numel() for p in model.parameters()), "batch": batch,
                     "size": 224, "ms_per_image": 1e3 * sec / batch})
    return rows


def _generation_rows(device: str, quick: bool) -> list[dict]:
    from em_accel.sim import exit_wave_sets as ews

    spec = dataclasses.replace(ews.preset("restricted"), counts={"train": 4 if quick else 16},
                               shard_size=4)
    with tempfile.TemporaryDirectory() as d:
        ews.generate(dataclasses.replace(spec, counts={"train": 1}, shard_size=1), Path(d) / "warm",
                     device=device, progress=False)  # FFT plans, imports
        out = ews.generate(spec, Path(d) / "set", device=device, progress=False)
    return [{"kind": "generation", "device": device, "set": "restricted (CPU preset)",
             "grid": spec.gpts_px, "crop": spec.crop_px, "slice_A": spec.slice_thickness,
             "depth_A": list(spec.depth), "waves": out["waves"], "seconds": out["seconds"],
             "waves_per_s": out["waves_per_second"]}]


def run(quick: bool = False) -> Path:
    devices = available_devices()
    rows: list[dict] = []
    for device in devices:
        rows += _inference_rows(device, quick)
        rows += _generation_rows(device, quick)
    print_table("exit-wave inference (224²)", [r for r in rows if r["kind"] == "inference"],
                ["device", "model", "params", "batch", "ms_per_image"])
    print_table("exit-wave dataset generation", [r for r in rows if r["kind"] == "generation"],
                ["device", "set", "grid", "waves", "seconds", "waves_per_s"])
    return write_record("exit_wave", rows, devices, {"quick": quick})
