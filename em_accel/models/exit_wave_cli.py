"""``em-accel reconstruct``: exit-wave phase from an amplitude (or intensity) image."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``reconstruct`` to the ``em-accel`` command."""
    p = subparsers.add_parser(
        "reconstruct", help="recover an exit wave's phase from its amplitude (ExitWaveNet)",
        description="Recover the exit wave ψ = |ψ| e^{iφ} from one amplitude image with the "
                    "exit-wave network. Writes OUT/<name>_exit_wave.npy (complex64), "
                    "OUT/<name>_exit_wave.png (amplitude | phase) and OUT/<name>_exit_wave.json "
                    "(pixel size, source metadata, model).")
    p.add_argument("inputs", nargs="+", type=Path, metavar="FILE",
                   help="TIFF, MRC, DM3/DM4, SER, EMD, PNG or NPY (a complex .npy uses its modulus)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output directory")
    p.add_argument("--input", default="amplitude", choices=["amplitude", "intensity"],
                   help="what the file holds: |ψ| (default) or a recorded intensity |ψ|² "
                        "(its square root is used)")
    p.add_argument("--model", default=None, help="weights (.safetensors from the recipe); "
                                                 "default: the shipped broad-set model")
    p.add_argument("--tile", type=int, default=256, help="largest tile [px]")
    p.add_argument("--margin", type=int, default=16, help="context kept around tiles [px]")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--ensemble", action="store_true", help="average the 8 flips/rotations")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_reconstruct)


def phase_figure(wave: np.ndarray, path: Path, reference: np.ndarray | None = None) -> Path:
    """PNG of amplitude | phase (| phase error against ``reference``, if given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("amplitude", np.abs(wave), "gray", None), ("phase [rad]", np.angle(wave), "twilight",
                                                          (-np.pi, np.pi))]
    if reference is not None:
        err = np.angle(wave * np.conj(reference))
        panels += [("true phase [rad]", np.angle(reference), "twilight", (-np.pi, np.pi)),
                   ("phase error [rad]", err, "RdBu_r", (-np.pi, np.pi))]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (title, img, cmap, lim) in zip(axes, panels):
        im = ax.imshow(img, cmap=cmap, vmin=None if lim is None else lim[0],
                       vmax=None if lim is None else lim[1])
        ax.set_title(title)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _reconstruct(args: argparse.Namespace) -> int:
    import torch

    from ..io import jsonable, read_image
    from .exit_wave import PRETRAINED, load_exit_wave_weights, load_pretrained_exit_wave, \
        reconstruct_exit_wave

    device = torch.device(args.device)
    model = (load_exit_wave_weights(args.model, device=device).model if args.model
             else load_pretrained_exit_wave(device=device))
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.inputs:
        mic = read_image(path)
        data = np.abs(mic.data) if np.iscomplexobj(mic.data) else np.asarray(mic.data, np.float32)
        if data.ndim != 2:
            raise ValueError(f"{path}: expected one 2-D image, got shape {list(data.shape)}")
        if args.input == "intensity":
            if (data < 0).any():
                raise ValueError(f"{path}: an intensity must be >= 0 (got minimum {data.min():.3g})")
            data = np.sqrt(data)
        wave = reconstruct_exit_wave(data, model, tile=args.tile, margin=args.margin, device=device,
                                     ensemble=args.ensemble, progress=not args.no_progress)
        stem = args.out / f"{path.stem}_exit_wave"
        np.save(stem.with_suffix(".npy"), wave)
        phase_figure(wave, stem.with_suffix(".png"))
        meta = {"pixel_size_angstrom": mic.pixel_size, "source": str(path),
                "source_format": mic.format, "input": args.input,
                "model": args.model or PRETRAINED, "tile": args.tile, "margin": args.margin,
                "dihedral_ensemble": args.ensemble, "source_metadata": jsonable(mic.metadata)}
        stem.with_suffix(".json").write_text(json.dumps(meta, indent=1))
        print(stem.with_suffix(".npy"))
    return 0
