"""ALRC: the fused native op vs the unfused torch expression, forward + backward.

Rows: batch 1..64 at 512x512 (float32, plus bfloat16), per-example MSE + ALRC. Peers in the
same run: the unfused torch expression users would write (MSE per example, then the ALRC
module's generic clipping) and our float64-capable reference at float32. A second table times a
training step of the supersampling CNN with no ALRC, fused ALRC and unfused ALRC.
"""
from __future__ import annotations

import math

import torch

from em_accel.ops.alrc import ErrorKind, alrc_fused, alrc_fused_reference, clip_reference, sample_inputs
from em_accel.train.supersample import SupersamplingNet, degrade

from .harness import available_devices, median_time, print_table, write_record


def _unfused(pred, target, mu1, mu2):
    losses = ((pred - target) ** 2).flatten(1).mean(1)
    return clip_reference(losses, mu1, mu2, 3.0, math.inf, 0.999)


def _step(fn, args):
    pred = args[0]
    def run():
        out = fn(*args)
        g, = torch.autograd.grad(out[0].sum(), pred)
        return g
    return run


def bench_ops(devices, quick):
    rows = []
    batches = [1, 4] if quick else [1, 4, 16, 64]
    side = 128 if quick else 512
    for device in devices:
        for dtype in (torch.float32, torch.bfloat16):
            for batch in batches:
                args = sample_inputs(device, dtype, batch, (side, side), requires_grad=True)
                pred, target, mu1, mu2 = args[:4]
                # Correctness before timing.
                ref = alrc_fused_reference(*args)
                torch.testing.assert_close(alrc_fused(*args)[0], ref[0], rtol=1e-4, atol=0)
                reps = 5 if quick else 15
                t_fused = median_time(_step(alrc_fused, args), device, repeats=reps)
                t_unfused = median_time(_step(_unfused, (pred, target, mu1, mu2)), device, repeats=reps)
                t_ref = median_time(_step(alrc_fused_reference, args), device, repeats=reps)
                mb = 3 * pred.numel() * pred.element_size() / 1e6  # read pred+target, write grad
                rows.append({"device": device, "dtype": str(dtype).replace("torch.", ""),
                             "batch": batch, "shape": f"{side}x{side}",
                             "fused_ms": 1e3 * t_fused, "unfused_torch_ms": 1e3 * t_unfused,
                             "reference_ms": 1e3 * t_ref,
                             "speedup_vs_unfused": t_unfused / t_fused,
                             "speedup_vs_reference": t_ref / t_fused,
                             "fused_GBps": mb / 1e3 / t_fused})
    return rows


def bench_training_step(devices, quick):
    rows = []
    for device in devices:
        for batch in ([4] if quick else [1, 16]):
            torch.manual_seed(0)
            net = SupersamplingNet().to(device)
            opt = torch.optim.Adam(net.parameters(), lr=1e-4)
            x = torch.randn(batch, 1, 32, 32, device=device)
            inp = degrade(x)
            mu1 = torch.tensor(3.0, device=device)
            mu2 = torch.tensor(12.0, device=device)

            def loss_plain(pred):
                return ((pred - x) ** 2).flatten(1).mean(1).mean()

            def loss_fused(pred):
                return alrc_fused(pred, x, mu1, mu2, 3.0, math.inf, 0.999,
                                  int(ErrorKind.SQUARED), False)[0].mean()

            def loss_unfused(pred):
                return _unfused(pred, x, mu1, mu2)[0].mean()

            def step(loss_fn):
                def run():
                    opt.zero_grad(set_to_none=True)
                    loss_fn(net(inp)).backward()
                    opt.step()
                return run

            reps = 5 if quick else 15
            # Interleave the three variants so drift in machine load hits each alike.
            times = {k: [] for k in ("plain", "fused", "unfused")}
            for _ in range(3):
                for name, fn in (("plain", loss_plain), ("fused", loss_fused), ("unfused", loss_unfused)):
                    times[name].append(median_time(step(fn), device, repeats=reps))
            t = {k: min(v) for k, v in times.items()}
            rows.append({"device": device, "batch": batch, "image": "32x32",
                         "step_plain_ms": 1e3 * t["plain"], "step_fused_alrc_ms": 1e3 * t["fused"],
                         "step_unfused_alrc_ms": 1e3 * t["unfused"],
                         "fused_overhead_pct": 100 * (t["fused"] - t["plain"]) / t["plain"],
                         "unfused_overhead_pct": 100 * (t["unfused"] - t["plain"]) / t["plain"]})
    return rows


def run(quick: bool = False):
    devices = available_devices()
    ops = bench_ops(devices, quick)
    print_table("ALRC fused op, forward + backward (median ms)", ops,
                ["device", "dtype", "batch", "shape", "fused_ms", "unfused_torch_ms",
                 "reference_ms", "speedup_vs_unfused", "speedup_vs_reference", "fused_GBps"])
    steps = bench_training_step(devices, quick)
    print_table("Supersampling CNN training step (Adam), ALRC overhead", steps,
                ["device", "batch", "image", "step_plain_ms", "step_fused_alrc_ms",
                 "step_unfused_alrc_ms", "fused_overhead_pct", "unfused_overhead_pct"])
    return write_record("alrc", ops + steps, devices, {"quick": quick})
