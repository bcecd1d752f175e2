"""``em-accel alrc-demo``: the ALRC supersampling demonstration."""
from __future__ import annotations

import argparse
import json


def _demo(args: argparse.Namespace) -> int:
    from .supersample import run_demo

    summary = run_demo(args.out, steps=args.steps, seeds=tuple(args.seeds), errors=tuple(args.errors),
                       lr=args.lr)
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}/alrc_demo.png and {args.out}/alrc_demo.json")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("alrc-demo", help="train the ALRC paper's supersampling CNN with and "
                       "without ALRC at batch size 1 and plot the loss spikes")
    p.add_argument("--steps", type=int, default=1000, help="training steps per run (default 1000)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run pair per seed")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default 2e-3)")
    p.add_argument("--errors", nargs="+", default=["squared", "quartic"],
                   choices=["squared", "quartic", "absolute"])
    p.add_argument("-o", "--out", default="alrc_demo", help="output folder")
    p.set_defaults(func=_demo)
