"""Run the demo's stages in order, isolate their failures, and write the report."""
from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .context import DemoContext, StageResult

#: The stages in report order; other ``stage_*`` modules of this package follow alphabetically.
STAGES = ("simulate", "scan", "completion", "adaptive", "denoise", "exit_wave", "map", "vae")


@dataclass
class StageRecord:
    """How one stage went: ``status`` is "ok", "absent" (no module in this build) or "failed"
    (``error`` says why); ``result`` is the stage's output when it ran."""

    name: str
    status: str
    result: StageResult | None = None
    error: str = ""


@dataclass
class DemoReport:
    """A finished demo: the report's path, every stage's record and the total time [s]."""

    html: Path
    stages: list[StageRecord] = field(default_factory=list)
    seconds: float = 0.0


def stage_names() -> list[str]:
    """:data:`STAGES`, then any other ``stage_*`` module present, alphabetically."""
    here = Path(__file__).parent
    found = sorted(m.name[len("stage_"):] for m in pkgutil.iter_modules([str(here)])
                   if m.name.startswith("stage_"))
    return list(STAGES) + [n for n in found if n not in STAGES]


def _load(name: str):
    """The stage's module, or None when this build has no such module."""
    module = f"{__package__}.stage_{name}"
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None
        raise


def _say(ctx: DemoContext, message: str) -> None:
    if ctx.progress:
        print(message, file=sys.stderr, flush=True)


def run_stage(name: str, ctx: DemoContext) -> StageRecord:
    """Import and run one stage; any exception becomes a "failed" record with its message."""
    t0 = time.perf_counter()
    try:
        module = _load(name)
        if module is None:
            return StageRecord(name, "absent")
        result = module.run(ctx)
        if not isinstance(result, StageResult):
            raise TypeError(f"stage_{name}.run returned {type(result).__name__}, "
                            "expected a StageResult")
    except Exception as exc:  # one failing stage must not stop the demo
        last = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(last.filename).name}:{last.lineno}"
        return StageRecord(name, "failed", error=f"{type(exc).__name__}: {exc} ({where})")
    result.seconds = time.perf_counter() - t0
    return StageRecord(name, "ok", result)


def run_demo(out_dir: str | Path = "em_accel_demo", *, fast: bool = False, seed: int = 0,
             device: str | torch.device | None = None, progress: bool = True,
             stages: list[str] | None = None) -> DemoReport:
    """Run every stage and write ``out_dir/report.html``, its PNGs and ``summary.json``.

    Args:
        out_dir: output folder (created).
        fast: small images and few iterations (about 30 s on two CPU cores instead of 1-2 min).
        seed: base seed of every random draw (same seed, same report up to timings).
        device: where to compute; None: CUDA when available, else CPU.
        progress: print each stage's start, end and time on stderr.
        stages: run only these stage names (default: :func:`stage_names`).
    """
    from .report import write_report

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    ctx = DemoContext(Path(out_dir), seed=seed, device=device, progress=progress, fast=fast)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    names = stage_names() if stages is None else list(stages)
    records = []
    t0 = time.perf_counter()
    for i, name in enumerate(names, 1):
        _say(ctx, f"[{i}/{len(names)}] {name} ...")
        rec = run_stage(name, ctx)
        records.append(rec)
        if rec.status == "ok":
            _say(ctx, f"[{i}/{len(names)}] {name}: {rec.result.seconds:.1f} s")
        elif rec.status == "absent":
            _say(ctx, f"[{i}/{len(names)}] {name}: not in this build")
        else:
            _say(ctx, f"[{i}/{len(names)}] {name}: FAILED {rec.error}")
    report = DemoReport(ctx.out_dir / "report.html", records, time.perf_counter() - t0)
    write_report(report, ctx)
    _say(ctx, f"report: {report.html} ({report.seconds:.1f} s)")
    return report
