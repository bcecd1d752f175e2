"""``em-accel demo``: the whole chain on simulated data in one HTML report."""
from __future__ import annotations

import argparse
import sys


def _run(args: argparse.Namespace) -> int:
    from .runner import run_demo

    report = run_demo(args.output, fast=args.fast, seed=args.seed, device=args.device,
                      progress=not args.quiet)
    failed = [r.name for r in report.stages if r.status == "failed"]
    print(report.html)
    if failed:
        print(f"stages that failed: {', '.join(failed)} (see the report)", file=sys.stderr)
    return 1 if failed else 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="simulate, scan, complete, denoise and map; write one HTML report",
        description="Run the whole chain on simulated data (a crystal and a nanoparticle) and "
                    "write OUT/report.html (self-contained), its PNGs and OUT/summary.json.")
    p.add_argument("-o", "--output", default="em_accel_demo", help="output folder (em_accel_demo)")
    p.add_argument("--fast", action="store_true", help="small sizes, few iterations (~30 s)")
    p.add_argument("--seed", type=int, default=0, help="base seed (0)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA if present)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_run)
