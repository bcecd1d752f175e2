"""Augmentation-retrieval evaluation of the map encoders (docs/maps.md), and the export of
the shipped weights. Run from the repository root:

    python docs/maps_train/evaluate.py --contrastive RUN_DIR --vae RUN_DIR [--export]

RUN_DIR: a folder written by ``python -m em_accel.embed.train_encoders``. Writes
docs/maps_train/retrieval.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from em_accel.embed.contrastive import ContrastiveEncoder
from em_accel.embed.crops import CropSampler
from em_accel.embed.features import WEIGHTS, encode
from em_accel.embed.retrieval import augmentation_retrieval, evaluation_galleries
from em_accel.embed.train_encoders import CHECKPOINT, training_images
from em_accel.embed.vae import VAE
from em_accel.train import load_checkpoint, save_weights

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--contrastive", required=True)
    p.add_argument("--vae", required=True)
    p.add_argument("--cache", default=None)
    p.add_argument("--export", action="store_true", help="write the float16 weights")
    p.add_argument("--extra", nargs="*", default=[],
                   help="npz files of extra held-out images (key 'images', [N, H, W])")
    p.add_argument("--doses", type=float, nargs="+", default=[100.0, 1000.0])
    p.add_argument("--only-extra", action="store_true", help="skip the synthetic+skimage set")
    p.add_argument("--out", default=str(HERE / "retrieval.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()

    con = ContrastiveEncoder()
    step_c, _ = load_checkpoint(Path(args.contrastive) / CHECKPOINT, {"model": con}, restore_rng=False)
    vae = VAE()
    step_v, _ = load_checkpoint(Path(args.vae) / CHECKPOINT, {"model": vae}, restore_rng=False)
    sampler = CropSampler(training_images(cache=args.cache), seed=99)
    vae.calibrate([sampler.batch(s, 64) for s in range(8)])  # 512 training crops
    con.eval()

    rows = []
    for src, gallery in evaluation_galleries(args.extra, base=not args.only_extra).items():
        # VAE batch-statistics latents (the thesis's export: batches of 64) vs frozen ones
        mu_f = encode(gallery, vae).features
        with torch.no_grad():
            mu_b = torch.cat([vae.encode(gallery[i:i + 64, None], mode="batch").mu
                              for i in range(0, len(gallery), 64)])
        diff = {"rms_frozen_minus_batch": float((mu_f - mu_b).pow(2).mean().sqrt()),
                "rms_frozen": float(mu_f.pow(2).mean().sqrt()),
                "corr_per_dim_mean": float(torch.stack([torch.corrcoef(torch.stack([mu_f[:, d], mu_b[:, d]]))[0, 1]
                                                         for d in range(mu_f.shape[1])]).mean())}
        pca_state = encode(gallery, "pca").state
        methods = {
            "raw pixels (24x24)": lambda c: encode(c, "raw").features,
            "PCA-50": lambda c: encode(c, "pca", state=pca_state).features,
            "VAE mu (frozen)": lambda c: encode(c, vae).features,
            "contrastive": lambda c: encode(c, con).features,
        }
        vae_sig = lambda c: tuple(encode(c, vae)[:2])  # noqa: E731
        for dose in args.doses:
            for name, fn in methods.items():
                for dq in (False, True):
                    if dq and name.startswith("VAE") and dose != args.doses[0]:
                        continue  # invariant already / the VAE's 8x query cost: one dose
                    s = augmentation_retrieval(gallery, fn, dose, seed=1, dihedral_query=dq)
                    rows.append({"data": src, "dose": dose, "method": name + (" + D8 query" if dq else ""),
                                 "recall@1": s.recall_at_1, "recall@5": s.recall_at_5, "n": s.n})
                    print(rows[-1], flush=True)
            s = augmentation_retrieval(gallery, None, dose, seed=1, embed_sigma=vae_sig)
            rows.append({"data": src, "dose": dose, "method": "VAE sigma-aware", "recall@1": s.recall_at_1,
                         "recall@5": s.recall_at_5, "n": s.n})
            print(rows[-1], flush=True)
        rows.append({"data": src, "vae_frozen_vs_batch": diff})
    out = {"contrastive_steps": step_c, "vae_steps": step_v, "rows": rows,
           "wall_s": round(time.perf_counter() - t0, 1), "machine": platform.machine(),
           "command": "python docs/maps_train/evaluate.py " + " ".join(__import__("sys").argv[1:])}
    Path(args.out).write_text(json.dumps(out, indent=1))
    if args.export:
        WEIGHTS.mkdir(exist_ok=True)
        save_weights(WEIGHTS / "map_contrastive.safetensors", con, con.config, dtype=torch.float16,
                     notes={"steps": step_c, "recipe": "docs/maps_train/contrastive_recipe.json"})


if __name__ == "__main__":
    main()
