"""Benchmark of adaptive-scan policy episodes: environment throughput and RL episode batches.

Rows:
* ``env throughput`` - probe observations per second of :class:`AdaptiveScanEnv` (fixed
  angles, 20 segments x 20 probes on 96x96, nearest and bilinear), large batches.
* ``rl episode`` - one RL episode batch as the thesis ran it (32 episodes, 2-layer LSTM actor
  with 256 units choosing each segment from the last one): the actor with the native
  environment vs the same actor with a thesis-style observation step (a Python loop building
  the probe indices of each segment, then one gather; the thesis's tf.py_func).
* ``differentiable rollout`` - the same episode batch with gradients (bilinear sampling, the
  actor in the graph) plus the backward pass of a loss on the probe values: the cost of the
  critic-free gradient learner's rollout.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from bench.harness import available_devices, median_time, print_table, write_record
from em_accel.models.adaptive import ScanActor
from em_accel.scan import AdaptiveScanEnv
from em_accel.scan.rollout import ScanBudget, actor_rollout, env_rollout


def _python_segment(images: np.ndarray, start: np.ndarray, angle: np.ndarray, probes: int,
                    step: float) -> np.ndarray:
    """The thesis's per-step observation: probe indices built in a Python loop (clip, int()),
    then one fancy-indexing read. Returns [B, probes]."""
    B, side, _ = images.shape
    d = step * np.stack([np.cos(angle), np.sin(angle)], -1)
    x = np.minimum(np.maximum(np.stack([start + i * d for i in range(probes)]), 0), side - 1)
    idx = []
    for j in range(B):
        for i in range(probes):
            idx.append([j, int(x[i][j][0]), int(x[i][j][1])])
    idx = np.array(idx)
    return images[idx[:, 0], idx[:, 1], idx[:, 2]].reshape(B, probes)


@torch.no_grad()
def _python_rl_episode(actor, images: torch.Tensor, budget: ScanBudget) -> torch.Tensor:
    imgs = images.numpy()
    B = imgs.shape[0]
    start = np.full((B, 2), budget.side / 2.0)
    angle = np.full(B, budget.first_angle)
    state = actor.initial_state(B)
    vals = None
    for t in range(budget.segments):
        if t > 0:
            a, state = actor(torch.from_numpy(vals).float(), torch.from_numpy(start).float(), state)
            angle = a.double().numpy()
        vals = _python_segment(imgs, start, angle, budget.probes, budget.step)
        start = start + budget.probes * budget.step * np.stack([np.cos(angle), np.sin(angle)], -1)
    return torch.from_numpy(vals)


def _env_episode(env: AdaptiveScanEnv, angles: list[torch.Tensor]) -> None:
    with torch.no_grad():
        env.reset()
        for a in angles[1:]:
            env.step(a)


def run(quick: bool = False) -> Path:
    devices = available_devices()
    rows: list[dict] = []
    reps = 3 if quick else 10
    b = ScanBudget()
    g = torch.Generator().manual_seed(0)

    # -- environment throughput -------------------------------------------------------------
    for dev in devices:
        for B in ((256,) if quick else (256, 4096)) if dev == "cpu" else (4096, 65536):
            images = torch.rand(B, b.side, b.side, generator=g).to(dev)
            angles = (torch.rand(B, b.segments, generator=g) * 2 - 1) * math.pi
            per_step = [a.contiguous().to(dev) for a in angles.t()]
            for mode in ("nearest", "bilinear"):
                env = AdaptiveScanEnv(images, mode=mode)
                t = median_time(lambda: _env_episode(env, per_step), dev, repeats=reps)
                rows.append({"bench": "env throughput", "device": dev, "mode": mode,
                             "size": f"B{B} 96^2 T20 S20", "native_s": t,
                             "probes_per_s": B * b.total / t})

    # -- RL episode batch: actor + native env vs actor + thesis-style Python observation ----
    B = 32
    torch.manual_seed(0)
    actor = ScanActor("lstm", 256).eval()
    images = torch.rand(B, b.side, b.side, generator=g)
    t_py = median_time(lambda: _python_rl_episode(actor, images, b), "cpu", warmup=1,
                       repeats=max(3, reps // 2))
    for dev in devices:
        act, imgs = actor.to(dev), images.to(dev)
        t_env = median_time(lambda: env_rollout(act, imgs, b), dev, repeats=reps)

        def diff():
            roll = actor_rollout(act, imgs, b)
            roll.values.square().mean().backward()

        act.train()
        t_diff = median_time(diff, dev, repeats=reps)
        act.eval()
        rows.append({"bench": "rl episode", "device": dev, "mode": "lstm-256 actor",
                     "size": f"B{B} 96^2 T20 S20", "native_s": t_env, "python_loop_s": t_py,
                     "vs_python_loop": t_py / t_env})
        rows.append({"bench": "differentiable rollout", "device": dev,
                     "mode": "lstm-256, fwd+bwd", "size": f"B{B} 96^2 T20 S20",
                     "native_s": t_diff, "vs_env_rollout": t_diff / t_env})
    actor.to("cpu")
    print_table("scan_policy", rows, ["bench", "device", "mode", "size", "native_s",
                                      "probes_per_s", "python_loop_s", "vs_python_loop",
                                      "vs_env_rollout"])
    return write_record("scan_policy", rows, devices, {"quick": quick})
