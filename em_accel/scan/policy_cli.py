"""``em-accel scan-policy``: train, evaluate and run adaptive scan policies (thesis ch. 5).

Examples::

    em-accel scan-policy train --out runs/scan --stages generator fixed actor_gru --steps 500
    em-accel scan-policy evaluate --out runs/scan            # held-out crops, paired bootstrap
    em-accel scan-policy run micrograph.dm4 -o path.png      # shipped policy on a 96x96 crop

``run`` reads any file :func:`em_accel.io.read_image` reads, prepares a 96x96 crop as in
training (min-max to [-1, 1], 5x5 Gaussian blur of sigma 2.5 px), scans it with the learned
policy and with the spiral baseline, and plots both paths over their completions and errors.
``--tif`` writes the policy's completion with the file's pixel size and metadata kept.
"""
from __future__ import annotations

import argparse
import json


def _train(args: argparse.Namespace) -> int:
    import torch

    from .policy_experiments import STAGES, run_stage

    torch.set_num_threads(args.threads)
    for stage in args.stages:
        if stage not in STAGES and stage != "final":
            raise SystemExit(f"unknown stage {stage!r}; choose from {[*STAGES, 'final']}")
        tr = run_stage(args.out, stage, args.steps, max_seconds=args.max_seconds,
                       device=args.device)
        print(f"{stage}: step {tr.step}, checkpoint {tr.ckpt_path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    from .policy_experiments import evaluate

    torch.set_num_threads(args.threads)
    images, name = None, "test"
    if args.images:
        images, name = _file_crops(args.images, args.crops, args.seed), args.name
    report = evaluate(args.out, images=images, name=name, slads=not args.no_slads,
                      device=args.device)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{report['n']} crops ({name}); best static contiguous path: "
              f"{report['best_static_contiguous']}")
        for k, r in report["strategies"].items():
            v = r["vs_best_static"]
            print(f"  {k:18s} RMS {r['rms_mean']:.4f} +- {r['rms_sem']:.4f}  path "
                  f"{r['path_length_px']:7.1f} px  vs best static {100 * v['relative']:+6.2f}% "
                  f"[{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]")
    return 0


def _file_crops(paths: list[str], n: int, seed: int):
    import numpy as np

    from ..io import read_image
    from .policy_data import prepare_crops, random_crops

    images = []
    for p in paths:
        if str(p).endswith(".npz"):  # an image cache: its "images" array, else its first
            with np.load(p) as z:
                data = np.asarray(z["images"] if "images" in z.files else z[z.files[0]],
                                  dtype=np.float32)
        else:
            data = np.asarray(read_image(p).data, dtype=np.float32)
        images.extend(data if data.ndim == 3 else [data])
    return prepare_crops(random_crops(images, n, 96, seed))


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..io import read_image, write_image
    from .policy_data import prepare_crops
    from .policy_eval import completion
    from .policy_io import load_policy
    from .rollout import ScanBudget, env_rollout
    from .static_paths import spiral_positions

    mg = read_image(args.image)
    data = np.asarray(mg.data, dtype=np.float32)
    if data.ndim == 3:
        data = data[0]
    side = 96
    if min(data.shape) < side:
        raise SystemExit(f"{args.image}: image is {list(data.shape)} px; the policy needs at "
                         f"least {side} x {side}")
    r0, c0 = args.crop if args.crop else ((data.shape[0] - side) // 2, (data.shape[1] - side) // 2)
    if not (0 <= r0 <= data.shape[0] - side and 0 <= c0 <= data.shape[1] - side):
        raise SystemExit(f"--crop {r0} {c0} does not fit a {side} px crop in {list(data.shape)}")
    crop = prepare_crops(data[None, r0:r0 + side, c0:c0 + side]).to(args.device or "cpu")
    gen, actor, configs = load_policy(args.weights, device=args.device)
    if actor is None:
        raise SystemExit(f"{args.weights} holds no actor (a learned policy is needed)")
    budget = ScanBudget(**configs.get("budget", {}))
    learned = env_rollout(actor, crop, budget)[0].positions
    pitch = args.spiral_pitch or float(configs.get("baselines", {}).get("spiral_pitch", 15.0))
    spiral = spiral_positions(pitch, budget)[None]
    panels = []
    for name, pos in (("learned policy", learned), (f"spiral (pitch {pitch:g} px)", spiral)):
        comp = completion(gen, crop, pos)
        rms = float(((comp - crop) ** 2).mean().sqrt())
        panels.append((name, pos[0].cpu(), comp[0].cpu(), rms))
        print(f"{name}: RMS {rms:.4f} (crop in [-1, 1])")
    if args.tif:
        write_image(args.tif, panels[0][2].numpy(), pixel_size=mg.pixel_size, metadata=mg.metadata)
        print(f"completion: {args.tif}")
    from .policy_plot import plot_policy_comparison

    fig = plot_policy_comparison(crop[0].cpu(), panels)
    fig.savefig(args.output, dpi=args.dpi)
    print(f"figure: {args.output}")
    return 0


def register(subparsers) -> None:
    """Add ``scan-policy`` (train / evaluate / run) to the ``em-accel`` parser."""
    p = subparsers.add_parser("scan-policy", help="adaptive scan policies: train, evaluate, run",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="policy_command", required=True)
    t = sub.add_parser("train", help="run training stages (resumable)")
    t.add_argument("--out", required=True, help="run directory (data, checkpoints, logs)")
    t.add_argument("--stages", nargs="+", default=["generator", "fixed", "actor_gru", "rdpg_lstm",
                                                   "final"])
    t.add_argument("--steps", type=int, default=500, help="total steps per stage (default 500)")
    t.add_argument("--max-seconds", type=float, default=None, help="wall-clock cap per stage")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    t.set_defaults(func=_train)
    e = sub.add_parser("evaluate", help="held-out comparison of every strategy, one generator")
    e.add_argument("--out", required=True, help="run directory with a 'final' stage")
    e.add_argument("--images", nargs="*", help="micrograph files (or .npz image caches) to crop "
                                               "(default: the run's held-out synthetic crops)")
    e.add_argument("--crops", type=int, default=256, help="random 96 px crops from --images")
    e.add_argument("--name", default="files", help="name of the --images set in eval_<name>.json")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--no-slads", action="store_true", help="skip the (slower) SLADS baseline")
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--json", action="store_true")
    e.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    e.set_defaults(func=_evaluate)
    r = sub.add_parser("run", help="scan a micrograph crop with a policy and plot the path")
    r.add_argument("image", help="micrograph file (TIFF, MRC, DM3/DM4, SER, EMD, PNG, NPY)")
    r.add_argument("-o", "--output", required=True, help="figure (PNG/PDF/SVG)")
    r.add_argument("--weights", default=None, help="policy weights or checkpoint (default: shipped)")
    r.add_argument("--crop", type=int, nargs=2, metavar=("ROW", "COL"),
                   help="top-left corner of the 96 px crop (default: centre)")
    r.add_argument("--spiral-pitch", type=float, default=None,
                   help="baseline spiral pitch [px] (default: the one evaluated with the weights)")
    r.add_argument("--tif", help="also write the policy's completion (pixel size kept)")
    r.add_argument("--dpi", type=int, default=120)
    r.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    r.set_defaults(func=_run)
