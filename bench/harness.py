"""Timing and recording shared by every bench_<family>.py.

Each benchmark times the native op and its pure-torch reference (and any external peer) in the
same process: warm-up, then the median of repeats, CUDA synchronised. A run writes one JSON
record under bench/results/ with the device, versions, machine load and every row.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def sync(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], device: str | torch.device = "cpu", warmup: int = 3,
                repeats: int = 10, min_seconds: float = 0.0) -> float:
    """Median wall time of ``fn()`` in seconds after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start_all = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start_all < min_seconds:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
        if len(times) >= 10 * repeats:
            break
    return statistics.median(times)


def device_name(device: str | torch.device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} logical CPUs)"


def environment(devices: list[str]) -> dict:
    import em_accel

    info = em_accel.build_info()
    return {
        "time_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "devices": {d: device_name(d) for d in devices},
        "em_accel": info["version"],
        "cuda_compiled": info["cuda_compiled"],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "native_threads": info["cpu_threads"],
        "python": platform.python_version(),
        "load_average_1min": os.getloadavg()[0],  # other work on the machine skews timings
    }


def available_devices() -> list[str]:
    """cpu, and cuda where torch and the native build both have it; ``EM_ACCEL_BENCH_DEVICES``
    (e.g. ``cuda``) keeps only the listed ones (a short GPU session skips the CPU rows)."""
    import em_accel

    found = ["cpu"] + (["cuda"] if torch.cuda.is_available() and em_accel.cuda_available() else [])
    wanted = os.environ.get("EM_ACCEL_BENCH_DEVICES")
    return [d for d in found if d in wanted.replace(",", " ").split()] if wanted else found


def print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    print(f"\n{title}")
    if not rows:
        print("(no rows)")
        return
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.rjust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).rjust(widths[c]) for c in columns))


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
    return "" if v is None else str(v)


def write_record(family: str, rows: list[dict], devices: list[str], extra: dict | None = None,
                 out_dir: Path | None = None) -> Path:
    out_dir = Path(out_dir or os.environ.get("EM_ACCEL_BENCH_OUT") or RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = environment(devices)
    tag = "-".join(sorted(set(devices)))
    stamp = env["time_utc"].replace(":", "").replace("-", "")[:15]
    path = out_dir / f"{family}-{tag}-{stamp}.json"
    path.write_text(json.dumps({"family": family, "environment": env, "rows": rows,
                                **(extra or {})}, indent=2))
    print(f"\nrecord: {path}")
    return path
