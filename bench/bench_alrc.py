"""ALRC: the fused native op vs the unfused torch expression, forward + backward.

Rows: batch 1..64 at 512x512 (float32, plus bfloat16), per-example MSE + ALRC. Peers in the
same run: the unfused torch expression users would write (MSE per example, then the ALRC
module's generic clipping) and our float64-capable reference at float32. A second table times a
training step of the supersampling CNN with no ALRC, fused ALRC and unfused ALRC.
"""
from __future__ import annotations

import math

import torch

from em_accel.ops.alrc import (ErrorKind, alrc_fused, alrc_fused_reference, clip_reference,
                               fused_loss, sample_inputs)
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


def _interleaved(variants: dict, device, reps: int, rounds: int = 3) -> dict:
    times: dict = {k: [] for k in variants}
    for _ in range(rounds):
        for k, fn in variants.items():
            times[k].append(median_time(fn, device, repeats=reps))
    return {k: min(v) for k, v in times.items()}


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
                reps = 5 if quick else 11
                # Rounds of interleaved variants, best median kept: other work on a shared
                # machine then inflates all three alike instead of whichever ran during it.
                variants = {"fused": _step(alrc_fused, args),
                            "unfused": _step(_unfused, (pred, target, mu1, mu2)),
                            "reference": _step(alrc_fused_reference, args)}
                best = _interleaved(variants, device, reps)
                t_fused, t_unfused, t_ref = best["fused"], best["unfused"], best["reference"]
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
            t = _interleaved({"plain": step(loss_plain), "fused": step(loss_fused),
                              "unfused": step(loss_unfused)}, device, reps)
            # The loss layers alone (forward + backward on a fixed output): their difference over
            # the step time is the overhead, measurable far below the step time's noise.
            out = net(inp).detach().requires_grad_(True)

            def layer(loss_fn):
                return lambda: torch.autograd.grad(loss_fn(out), out)

            lt = _interleaved({"plain": layer(loss_plain), "fused": layer(loss_fused)}, device,
                              reps * 4)
            rows.append({"device": device, "batch": batch, "image": "32x32",
                         "loss_plain_ms": 1e3 * lt["plain"], "loss_fused_alrc_ms": 1e3 * lt["fused"],
                         "fused_alrc_extra_pct_of_step": 100 * (lt["fused"] - lt["plain"]) / t["plain"],
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
                ["device", "batch", "image", "loss_plain_ms", "loss_fused_alrc_ms",
                 "fused_alrc_extra_pct_of_step", "step_plain_ms", "step_fused_alrc_ms",
                 "step_unfused_alrc_ms", "fused_overhead_pct", "unfused_overhead_pct"])
    return write_record("alrc", ops + steps, devices, {"quick": quick})


# ---------------------------------------------------------------------------------------------
# Hot-path stage (bench/device_check.sh STAGES=hotpaths): per-call overhead of the fused op.

def _cuda_graphed(fn):
    """``fn`` captured once in a CUDA graph; the returned callable replays it."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the capturing stream, as CUDA graphs require
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def _loss_variants(pred, target, mu1, mu2, modes):
    """Forward + backward of plain per-example MSE and of fused ALRC-MSE, in each of ``modes``
    ("eager", "graph": CUDA-graph replay, "compiled": torch.compile(fullgraph=True))."""
    def plain(p):
        return ((p.float() - target.float()) ** 2).flatten(1).mean(1)

    def fused(p):  # what ALRC.fused and alrc_mse call: eager fast path, custom op when traced
        return fused_loss(p, target, mu1, mu2, 3.0, math.inf, 0.999, int(ErrorKind.SQUARED),
                          False)[0]

    out = {}
    for name, loss in (("plain", plain), ("fused", fused)):
        for mode in modes:
            f = torch.compile(loss, fullgraph=True) if mode == "compiled" else loss

            def step(f=f):
                return torch.autograd.grad(f(pred).sum(), pred)[0]
            out[(name, mode)] = _cuda_graphed(step) if mode == "graph" else step
    return out


def hotpath_rows(quick: bool = False) -> list[dict]:
    """Fused ALRC fwd+bwd over plain MSE fwd+bwd (target <= 1.1x at every batch), per dtype,
    batch and mode, and a training step with ALRC.fused over the same step without it
    (target <= 1.02x). CPU: eager only, tiny sizes (a smoke run of the same code)."""
    from em_accel.train import ALRC

    device = "cuda" if "cuda" in available_devices() else "cpu"
    side = 64 if quick or device == "cpu" else 512
    batches = [2, 8] if quick or device == "cpu" else [2, 4, 8, 16, 32, 64, 128]
    modes = ["eager"] if device == "cpu" else ["eager", "graph", "compiled"]
    reps = 5 if quick else 25
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for batch in batches:
            args = sample_inputs(device, dtype, batch, (side, side), requires_grad=True)
            # torch.compile recompiles per shape (tens of seconds each): smallest and largest only.
            here = [m for m in modes if m != "compiled" or batch in (batches[0], batches[-1])]
            variants = _loss_variants(*args[:4], here)
            best = _interleaved(variants, device, reps)
            for mode in here:
                f, p = best[("fused", mode)], best[("plain", mode)]
                rows.append({"kind": "loss fwd+bwd", "device": device, "dtype": str(dtype)[6:],
                             "batch": batch, "shape": f"{side}x{side}", "mode": mode,
                             "fused_ms": 1e3 * f, "plain_mse_ms": 1e3 * p,
                             "fused_over_plain": f / p, "target": 1.1})
    # A real training step: denoiser-sized conv net, Adam, ALRC module vs plain MSE.
    batch, side = (4, 32) if quick or device == "cpu" else (32, 256)
    torch.manual_seed(0)
    net = SupersamplingNet().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    alrc = ALRC(mu1_start=3.0, mu2_start=12.0).to(device)
    x = torch.randn(batch, 1, side, side, device=device)
    inp = degrade(x)

    def train_step(use_alrc):
        def run():
            opt.zero_grad(set_to_none=True)
            pred = net(inp)
            per_example = alrc.fused(pred, x) if use_alrc else ((pred - x) ** 2).flatten(1).mean(1)
            loss = per_example.mean()
            loss.backward()
            opt.step()
        return run

    t = _interleaved({"plain": train_step(False), "alrc": train_step(True)}, device, reps)
    rows.append({"kind": "training step", "device": device, "batch": batch,
                 "shape": f"{side}x{side}", "mode": "eager", "step_plain_ms": 1e3 * t["plain"],
                 "step_alrc_ms": 1e3 * t["alrc"], "alrc_over_plain": t["alrc"] / t["plain"],
                 "target": 1.02})
    return rows


def run_hotpaths(quick: bool = False):
    rows = hotpath_rows(quick)
    print_table("ALRC hot path: fused ALRC vs plain MSE, forward + backward (best median ms)",
                [r for r in rows if r["kind"] == "loss fwd+bwd"],
                ["device", "dtype", "batch", "shape", "mode", "fused_ms", "plain_mse_ms",
                 "fused_over_plain", "target"])
    print_table("ALRC hot path: training step", [r for r in rows if r["kind"] == "training step"],
                ["device", "batch", "shape", "step_plain_ms", "step_alrc_ms", "alrc_over_plain",
                 "target"])
    return write_record("alrc_hotpaths", rows, available_devices(), {"quick": quick})
