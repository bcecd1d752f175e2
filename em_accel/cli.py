"""The ``em-accel`` command. Each area adds its subcommands through a ``register`` function."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from pathlib import Path

# Modules that contribute subcommands: each defines register(subparsers).
SUBCOMMAND_MODULES = (
    "em_accel.train.cli",
    "em_accel.sim.cli",
    "em_accel.scan.cli",
    "em_accel.embed.cli",
    "em_accel.models.cli",
    "em_accel.models.exit_wave_cli",
    "em_accel.models.completion_cli",
    "em_accel.demo.cli",
)


def _info(args: argparse.Namespace) -> int:
    from . import build_info

    info = build_info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _bench_harness():
    """The checkout's ``bench`` package: importable already, or found in the current folder or
    one above it. The harness is not installed with em-accel (it needs the source tree)."""
    try:
        return importlib.import_module("bench.__main__")
    except ModuleNotFoundError as exc:
        if exc.name not in ("bench", "bench.__main__"):
            raise
    for root in (Path.cwd(), *Path.cwd().parents):
        if (root / "bench" / "__main__.py").is_file() and (root / "pyproject.toml").is_file():
            sys.path.insert(0, str(root))
            return importlib.import_module("bench.__main__")
    raise SystemExit("em-accel bench runs the benchmark harness of a source checkout, which is "
                     "not installed with the package: run it from the repository's root "
                     "(git clone ...; cd em-accel; em-accel bench, or python -m bench)")


def _bench(args: argparse.Namespace) -> int:
    return _bench_harness().main(args.families + (["--quick"] if args.quick else []))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="em-accel", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="print build and runtime facts (CUDA, OpenMP, versions)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_info)
    p = sub.add_parser("bench", help="run the benchmark harness (from a source checkout)")
    p.add_argument("families", nargs="*", help="kernel families (default: all)")
    p.add_argument("--quick", action="store_true", help="small sizes only")
    p.set_defaults(func=_bench)
    for name in SUBCOMMAND_MODULES:
        if importlib.util.find_spec(name.rsplit(".", 1)[0]) and importlib.util.find_spec(name):
            importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
