"""Benchmark of the scan family: em_accel::scan_sample and ::scan_rasterize against their
pure-torch references and peers, and an adaptive-scan episode against a per-segment Python
loop like the thesis's (tf.py_func observing each segment), all in one run.

Rows: sample (native vs torch gather reference), rasterize+infill (native vs torch scatter +
scipy.ndimage.distance_transform_edt, the thesis's infill), episode (AdaptiveScanEnv vs the
same episode written with torch ops + the reference sampler vs the thesis-style Python loop),
and, on a GPU, one environment step.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from bench.harness import available_devices, median_time, print_table, write_record
from em_accel.ops._common import torch_threads
from em_accel.ops.scan import (SampleMode, sample_inputs, scan_rasterize, scan_sample,
                               scan_sample_reference)
from em_accel.scan import AdaptiveScanEnv, spiral


def _python_episode(images: np.ndarray, angles: np.ndarray, probes: int, step: float) -> np.ndarray:
    """The thesis's observation routine, per segment: positions as fractions of the side, a
    Python loop that truncates each probe to an index, one fancy-indexing read."""
    B, side, _ = images.shape
    T = angles.shape[1]
    pos = np.full((B, 2), 0.5)
    out = np.empty((B, T, probes), dtype=images.dtype)
    for t in range(T):
        a = angles[:, t:t + 1]
        d = step * np.concatenate([np.cos(a), np.sin(a)], axis=-1)
        starts = pos * side
        x = np.minimum(np.maximum(np.stack([starts + i * d for i in range(probes)]), 0), side - 1)
        idx = []
        for j in range(B):
            for i in range(probes):
                idx.append([j, int(x[i][j][0]), int(x[i][j][1])])
        idx = np.array(idx)
        out[:, t] = images[idx[:, 0], idx[:, 1], idx[:, 2]].reshape(B, probes)
        pos = pos + probes * d / side
    return out


def _torch_episode(images: torch.Tensor, angles: torch.Tensor, probes: int, step: float) -> torch.Tensor:
    """The same episode with torch tensor ops and the pure-torch reference sampler."""
    B, H, W = images.shape
    start = torch.tensor([H / 2, W / 2], dtype=angles.dtype, device=images.device).expand(B, 2)
    i = torch.arange(probes, dtype=angles.dtype, device=images.device)[None, :, None]
    vals = []
    for t in range(angles.shape[1]):
        d = step * torch.stack([torch.cos(angles[:, t]), torch.sin(angles[:, t])], dim=1)
        pos = start[:, None, :] + i * d[:, None, :]
        vals.append(scan_sample_reference(images, pos, int(SampleMode.NEAREST)))
        start = start + probes * d
    return torch.stack(vals, 1)


def _env_episode(env: AdaptiveScanEnv, actions: list[torch.Tensor]) -> torch.Tensor:
    """actions: one contiguous [B] tensor of angles per step, as an actor emits them."""
    with torch.no_grad():
        env.reset()
        for a in actions[1:]:
            env.step(a)
    return env.values


def run(quick: bool = False) -> Path:
    devices = available_devices()
    rows: list[dict] = []
    reps = 3 if quick else 10

    # -- sample ----------------------------------------------------------------------------
    # Random positions (incoherent reads) and a spiral at 1/20 coverage (the thesis's static scan,
    # reads along a path).
    cases = [(64, 96, "random"), (16, 512 if not quick else 256, "spiral 1/20")]
    for dev in devices:
        for B, side, kind in cases:
            for mode in SampleMode:
                if kind == "random":
                    images, pos, *_ = sample_inputs(dev, torch.float32, batch=B,
                                                    shape=(side, side), probes=400, seed=1)
                else:
                    images = torch.rand(B, side, side, device=dev)
                    pos = spiral((side, side), 0.05).positions.to(dev)[None].expand(B, -1, -1)
                    pos = pos.contiguous()
                name = mode.name.lower()
                nat = scan_sample(images, pos, name)
                ref = scan_sample_reference(images, pos, int(mode))
                torch.testing.assert_close(nat, ref, rtol=1e-5, atol=1e-5)
                t_nat = median_time(lambda: scan_sample(images, pos, name), dev, repeats=reps)
                t_ref = median_time(lambda: scan_sample_reference(images, pos, int(mode)), dev,
                                    repeats=reps)
                row = {"bench": "sample", "device": dev, "mode": name,
                       "size": f"B{B} {side}^2 P{pos.shape[1]} {kind}", "native_s": t_nat,
                       "reference_s": t_ref, "vs_reference": t_ref / t_nat}
                if dev == "cpu":  # torch's thread pool suffers most on a loaded machine
                    with torch_threads(1):
                        t1 = median_time(lambda: scan_sample_reference(images, pos, int(mode)),
                                         dev, repeats=reps)
                    row.update(reference_1thread_s=t1, vs_reference_1thread=t1 / t_nat)
                rows.append(row)

    # -- rasterize + infill vs scipy EDT -----------------------------------------------------
    from scipy import ndimage

    side = 256 if quick else 512
    B = 4 if quick else 16
    path = spiral((side, side), 0.05)
    pos = path.positions[None].expand(B, -1, -1).contiguous()
    for dev in devices:
        images = torch.rand(B, side, side, device=dev)
        p = pos.to(dev)
        vals = scan_sample(images, p)
        r = scan_rasterize(vals, p, (side, side))

        def peer():
            img = torch.zeros(B, side * side, device=dev)
            pix = (p[..., 0].floor().long().clamp(0, side - 1) * side
                   + p[..., 1].floor().long().clamp(0, side - 1))
            img.scatter_(1, pix, vals)
            mask = torch.zeros(B, side * side, dtype=torch.bool, device=dev)
            mask.scatter_(1, pix, True)
            out = []
            for b in range(B):
                m = mask[b].reshape(side, side).cpu().numpy()
                _, (ii, jj) = ndimage.distance_transform_edt(~m, return_indices=True)
                out.append(img[b].reshape(side, side).cpu().numpy()[ii, jj])
            return np.stack(out)

        ref = peer()
        assert np.allclose(r.infilled.cpu().numpy()[r.mask.cpu().numpy() > 0],
                           ref[r.mask.cpu().numpy() > 0])
        t_nat = median_time(lambda: scan_rasterize(vals, p, (side, side)), dev, repeats=reps)
        t_peer = median_time(peer, dev, repeats=max(3, reps // 3))
        rows.append({"bench": "rasterize+infill", "device": dev, "mode": "nearest",
                     "size": f"B{B} {side}^2 P{pos.shape[1]}", "native_s": t_nat,
                     "peer_scipy_s": t_peer, "vs_scipy": t_peer / t_nat})

    # -- adaptive episode --------------------------------------------------------------------
    B, side, T, S, step = 64, 96, 20, 20, math.sqrt(2.0)
    g = torch.Generator().manual_seed(0)
    images_cpu = torch.rand(B, side, side, generator=g)
    angles_cpu = (torch.rand(B, T, generator=g, dtype=torch.float64) * 2 - 1) * math.pi
    angles_cpu[:, 0] = math.pi / 4
    py_vals = _python_episode(images_cpu.numpy(), angles_cpu.numpy(), S, step)
    t_py = median_time(lambda: _python_episode(images_cpu.numpy(), angles_cpu.numpy(),
                                               S, step), "cpu", warmup=1, repeats=3)
    for dev in devices:
        images, angles = images_cpu.to(dev), angles_cpu.to(dev, torch.float32)
        # Correctness in float64 (the thesis's first segment lies on pixel corners, where float32
        # rounding moves probes by a pixel), timing in float32.
        env64 = AdaptiveScanEnv(images.double(), segments=T, probes=S, step=step)
        env_vals = _env_episode(env64, list(angles_cpu.to(dev).t().contiguous())).reshape(B, T, S).cpu().numpy()
        agree = float((env_vals == py_vals).mean())
        assert agree > 0.999, agree
        env = AdaptiveScanEnv(images, segments=T, probes=S, step=step)
        per_step = list(angles.t().contiguous())
        t_env = median_time(lambda: _env_episode(env, per_step), dev, repeats=reps)
        t_tor = median_time(lambda: _torch_episode(images, angles, S, step), dev, repeats=reps)
        row = {"bench": "episode", "device": dev, "mode": "nearest",
               "size": f"B{B} {side}^2 T{T} S{S}", "native_s": t_env, "reference_s": t_tor,
               "python_loop_s": t_py, "vs_reference": t_tor / t_env,
               "vs_python_loop": t_py / t_env, "agree_with_python": agree}
        if dev == "cpu":
            with torch_threads(1):
                t1 = median_time(lambda: _torch_episode(images, angles, S, step), dev,
                                 repeats=reps)
            row.update(reference_1thread_s=t1, vs_reference_1thread=t1 / t_env)
        rows.append(row)
        if dev == "cuda":
            env.reset()
            a1 = angles[:, 1].contiguous()

            def one_step():
                if env.done:
                    env.reset()
                env.step(a1)

            t_step = median_time(one_step, dev, repeats=200)
            rows.append({"bench": "env step", "device": dev, "mode": "nearest",
                         "size": f"B{B} {side}^2 S{S}", "native_s": t_step})

    print_table("scan", rows, ["bench", "device", "mode", "size", "native_s", "reference_s",
                               "vs_reference", "vs_reference_1thread", "peer_scipy_s", "vs_scipy", "python_loop_s",
                               "vs_python_loop"])
    return write_record("scan", rows, devices, {"quick": quick})
