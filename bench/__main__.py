"""Run benchmark families: ``python -m bench [family ...] [--quick]``.

A family is a module bench/bench_<family>.py defining ``run(quick: bool) -> Path``.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path


def families() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(here)])
                  if m.name.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("families", nargs="*", help=f"any of {families()} (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    args = parser.parse_args(argv)
    chosen = args.families or families()
    unknown = sorted(set(chosen) - set(families()))
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {families()}")
    for family in chosen:
        importlib.import_module(f"bench.bench_{family}").run(quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
