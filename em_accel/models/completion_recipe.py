"""How the shipped completion network is trained: ``python -m em_accel.models.completion_recipe``.

Each example: a clean micrograph (one or several pooled HAADF-STEM caches from
:mod:`em_accel.data.micrographs`, e.g. atomic-resolution and mixed-magnification ones, or
synthetic micrographs without one), a random dihedral transform, a random path kind (spiral,
gridlike, grid) and coverage in [1/100, 1/10] from a bank of paths at the image size, Poisson
shot noise at a log-uniform 30-3000 counts per unit intensity (40% noise-free), a random crop,
the native sampler and rasteriser (:func:`em_accel.scan.partial_scan`), then :func:`completion_inputs`.
Targets are the clean image in the input's scaled units.

Loss per example: 200 * (MSE(mean, truth) + MSE(blur(mean), blur(truth))) (blur: 5x5, sigma 2.5,
the thesis's L_out + L_tog), clipped by ALRC, plus 0.1 x the Laplace negative log-likelihood of
the error-scale head (the mean detached there, so the likelihood trains the scale only). Adam,
cosine schedule over ``--steps``; ``--seconds`` stops a run early (checkpoint saved), and the
same command continues it (model, optimiser, ALRC moments, step, RNG). ``--adversarial`` adds
the thesis's three-scale LSGAN discriminators (see :mod:`em_accel.models.completion_gan`).
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..scan import gaussian_blur, make_path, partial_scan
from .completion import (KINDS, PartialScanCompleter, completion_inputs, conditioning,
                         kind_index)

TRAIN_SEED, HELDOUT_SEED = 1100, 2100
COVERAGE_LO, COVERAGE_HI = 0.01, 0.1
N_BANK = 10  # coverages per path kind in the bank (grid: every spacing d = 3..10)
LOSS_SCALE = 200.0
NOISE_FREE_FRACTION = 0.4
COUNTS = (30.0, 3000.0)  # log-uniform shot-noise level [counts per unit intensity]
NLL_WEIGHT = 0.1
#: Relative loss: floor of the Delaunay MSE it divides by (scaled units; RMS 0.3% of the range),
#: so that an exactly interpolable crop (vacuum) does not get an unbounded weight.
REL_EPS = 1e-5


@functools.lru_cache(maxsize=4)
def path_bank(size: int, seed: int = 0) -> list[tuple[str, float, object]]:
    """(kind, nominal coverage, ScanPath) for every path used in training at ``size``
    (cached: paths are immutable)."""
    bank = []
    for i, c in enumerate(np.geomspace(COVERAGE_LO, COVERAGE_HI, N_BANK)):
        bank.append(("spiral", float(c), make_path("spiral", (size, size), float(c))))
        bank.append(("gridlike", float(c), make_path("gridlike", (size, size), float(c),
                                                     seed=seed + i)))
    for d in range(3, 11):
        bank.append(("grid", 1.0 / d ** 2, make_path("grid", (size, size), 1.0 / d ** 2)))
    return bank


def load_images(cache: str | Path | None, size: int, n_synthetic: int = 64,
                seed: int = TRAIN_SEED) -> np.ndarray:
    """Clean training images [N, size, size] in [0, 1]: the ``.npz`` micrograph cache (its
    ``images``), else ``n_synthetic`` synthetic micrographs."""
    if cache is not None:
        with np.load(cache, allow_pickle=False) as z:
            images = z["images"].astype(np.float32)
        if images.shape[-1] != size or images.shape[-2] != size:
            raise ValueError(f"cache {cache} holds {images.shape[-2]}x{images.shape[-1]} images, "
                             f"not {size}x{size}")
        return images
    from ..data import synthetic_micrograph

    return np.stack([synthetic_micrograph(size, seed * 100003 + i) for i in range(n_synthetic)])


def _split_validation(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) images: the last 5% of each cache (at least one image) is
    validation only, so a run on several caches validates on all of them."""
    n_val = [max(1, len(p) // 20) for p in parts]
    return (np.concatenate([p[:-k] for p, k in zip(parts, n_val)]),
            np.concatenate([p[-k:] for p, k in zip(parts, n_val)]))


def make_example(image: np.ndarray | torch.Tensor, kind: str, coverage: float, path,
                 counts: float | None, seed: int, dihedral_k: int = 0,
                 fourier: bool = False) -> dict:
    """One training/evaluation example from a clean image: input, conditioning, target
    (``fourier``: with the Fourier-infill channel, for 5-channel models)."""
    from ..data.augment import dihedral

    clean = dihedral(torch.as_tensor(image, dtype=torch.float32), dihedral_k).contiguous()
    ps = partial_scan(clean, path, counts_per_intensity=counts, seed=seed)
    r = ps.raster
    inp = completion_inputs(r.image, r.mask, r.infilled, fourier=fourier)
    target = (clean - inp.lo[0]) / inp.span[0]
    cov = float(r.mask.mean())
    return {"x": inp.x[0], "cond": conditioning(torch.tensor([cov]),
                                                torch.tensor([kind_index(kind)]))[0],
            "target": target[None], "lo": float(inp.lo[0]), "span": float(inp.span[0]),
            "clean": clean, "coverage": cov, "kind": kind}


class CompletionData:
    """Deterministic examples: example ``i`` is a pure function of (seed, i).

    Two ways to make them: a random ``crop`` of an image scanned along a path of the crop's
    size (``crops_per_scan=0``; ``bank`` at the crop size), or the whole image scanned and
    infilled and ``crops_per_scan`` consecutive examples cut from it (``bank`` at the image
    size). The second is what inference sees: the Fourier infill of a whole 512^2 scan is far
    better than that of a 128^2 one, so a network trained on small scans learns to distrust it.

    ``invert_fraction``: this fraction of images is scanned as 1 - image (dark atoms on a
    bright background, as in bright-field and annular bright-field STEM, which the HAADF
    cache does not hold).
    """

    def __init__(self, images: np.ndarray, bank: list, seed: int = TRAIN_SEED,
                 unknown_kind_fraction: float = 0.1,
                 kind_probs: tuple[float, ...] | None = None, fourier: bool = False,
                 crops_per_scan: int = 0, crop: int | None = None,
                 invert_fraction: float = 0.0) -> None:
        self.images, self.bank, self.seed, self.fourier = images, bank, seed, fourier
        if not 0.0 <= invert_fraction <= 1.0:
            raise ValueError(f"invert_fraction must be in [0, 1], got {invert_fraction}")
        self.invert_fraction = invert_fraction
        if crops_per_scan < 0 or (crops_per_scan and not crop):
            raise ValueError(f"crops_per_scan must be >= 0 and needs a crop size, got "
                             f"{crops_per_scan}, {crop}")
        self.crops_per_scan, self.crop, self._scans = crops_per_scan, crop, {}
        self.unknown = unknown_kind_fraction
        self.by_kind = {k: [b for b in bank if b[0] == k] for k in KINDS}
        self.kind_cdf = None  # None: equal weights (the draw of the runs before kind_probs)
        if kind_probs is not None:
            p = np.asarray(kind_probs, float)
            if p.shape != (len(KINDS),) or (p < 0).any() or p.sum() <= 0:
                raise ValueError(f"kind_probs must be {len(KINDS)} non-negative weights for "
                                 f"{KINDS}, got {kind_probs}")
            self.kind_cdf = np.cumsum(p / p.sum())

    def __getitem__(self, i: int) -> dict:
        if not self.crops_per_scan:
            return self._example(i)
        j, r = divmod(i, self.crops_per_scan)
        if j not in self._scans:
            self._scans = {j: self._example(j, whole=True)}  # one scan serves its crops
        ex = self._scans[j]
        rng = np.random.default_rng((self.seed, j, r))
        size, c = ex["x"].shape[-1], self.crop
        y0, x0 = (int(v) for v in rng.integers(0, size - c + 1, 2))
        win = (slice(None), slice(y0, y0 + c), slice(x0, x0 + c))
        return {**ex, "x": ex["x"][win], "target": ex["target"][win],
                "clean": ex["clean"][win[1:]]}

    def _example(self, i: int, whole: bool = False) -> dict:
        rng = np.random.default_rng((self.seed, i))
        if self.kind_cdf is None:
            kind = KINDS[rng.integers(len(KINDS))]
        else:
            kind = KINDS[min(int(np.searchsorted(self.kind_cdf, rng.random(), side="right")),
                             len(KINDS) - 1)]
        _, cov, path = self.by_kind[kind][rng.integers(len(self.by_kind[kind]))]
        counts = None if rng.random() < NOISE_FREE_FRACTION else \
            float(np.exp(rng.uniform(np.log(COUNTS[0]), np.log(COUNTS[1]))))
        image = self.images[rng.integers(len(self.images))]
        if self.invert_fraction and rng.random() < self.invert_fraction:  # no draw at 0: the
            image = 1.0 - image.astype(np.float32)                        # old runs' sequence
        s = path.shape[0]
        if whole and s != image.shape[-1]:
            raise ValueError(f"whole-image scans need a path bank at the image size "
                             f"{image.shape[-1]}, got {s}")
        y0, x0 = (int(rng.integers(image.shape[-2] - s + 1)), int(rng.integers(image.shape[-1] - s + 1)))
        ex = make_example(image[y0:y0 + s, x0:x0 + s], kind, cov, path, counts,
                          int(rng.integers(2**31)), int(rng.integers(8)), self.fourier)
        if rng.random() < self.unknown:  # train the "kind unknown" conditioning too
            ex["cond"] = ex["cond"].clone()
            ex["cond"][1:] = 0
        return ex

    def batch(self, step: int, batch_size: int) -> dict:
        items = [self[step * batch_size + j] for j in range(batch_size)]
        return {k: torch.stack([it[k] for it in items]) for k in ("x", "cond", "target")}


def losses(model: PartialScanCompleter, batch: dict, alrc, gan=None, relative: bool = False
           ) -> tuple[torch.Tensor, dict]:
    """(total loss, logged scalars) of a batch; ``gan`` (a GanTrainer) adds its generator
    loss. ``relative``: each example's raw and blurred MSE are divided by those of its
    Delaunay-linear input (channel 0), so every path and coverage weighs the same in
    "fraction of the baseline's error" (a uniform grid's error is ~100x smaller than a sparse
    spiral's, and under the plain loss it hardly trains)."""
    out = model(batch["x"], batch["cond"])
    y = batch["target"]
    by = gaussian_blur(y[:, 0], 5, 2.5)
    mse = ((out.mean - y) ** 2).flatten(1).mean(1)
    mse_blur = ((gaussian_blur(out.mean[:, 0], 5, 2.5) - by) ** 2).flatten(1).mean(1)
    if relative:
        lin = batch["x"][:, :1]
        mse_lin = ((lin - y) ** 2).flatten(1).mean(1)
        mse_blur_lin = ((gaussian_blur(lin[:, 0], 5, 2.5) - by) ** 2).flatten(1).mean(1)
        per = 0.5 * (mse / (mse_lin + REL_EPS) + mse_blur / (mse_blur_lin + REL_EPS))
    else:
        per = LOSS_SCALE * (mse + mse_blur)
    clipped = alrc(per) if alrc is not None else per
    err = (out.mean.detach() - y).abs()
    nll = (err * torch.exp(-out.log_scale) + out.log_scale).flatten(1).mean(1)
    loss = clipped.mean() + NLL_WEIGHT * nll.mean()
    logs = {}
    if gan is not None:
        loss = loss + gan.generator_loss(out.mean, y, logs)
    return loss, {"mse": float(mse.detach().mean()), "mse_blur": float(mse_blur.detach().mean()),
                  "nll": float(nll.detach().mean()), "loss": float(loss.detach()), **logs}


@torch.no_grad()
def validate(model: PartialScanCompleter, examples: list[dict]) -> dict:
    """RMS vs the blurred truth (thesis metric, intensities scaled to the truth's [0, 1]) of
    the network (its output blurred the same way) and of Delaunay-linear + blur, and the
    fraction of pixels inside the (uncalibrated) 90% interval."""
    model.eval()
    net, lin, inside = [], [], []
    for ex in examples:
        out = model(ex["x"][None], ex["cond"][None])
        rng_ = float(ex["clean"].max() - ex["clean"].min()) / ex["span"]
        blur_t = gaussian_blur(ex["target"][0], 5, 2.5)
        net.append(float(((gaussian_blur(out.mean[0, 0], 5, 2.5) - blur_t) ** 2).mean().sqrt()) / rng_)
        lin.append(float(((gaussian_blur(ex["x"][0], 5, 2.5) - blur_t) ** 2).mean().sqrt()) / rng_)
        e = (out.mean[0, 0] - ex["target"][0]).abs()
        inside.append(float((e <= math.log(10) * out.log_scale[0, 0].exp()).float().mean()))
    model.train()
    return {"rms_blur_net": float(np.mean(net)), "rms_blur_delaunay": float(np.mean(lin)),
            "net_lower_on": int(np.sum(np.array(net) < np.array(lin))), "n": len(net),
            "inside90_uncalibrated": float(np.mean(inside))}


def validation_examples(images: np.ndarray, bank: list, n: int = 12,
                        fourier: bool = False, crops_per_scan: int = 0,
                        crop: int | None = None) -> list[dict]:
    data = CompletionData(images, bank, seed=HELDOUT_SEED, unknown_kind_fraction=0.0,
                          fourier=fourier, crops_per_scan=crops_per_scan, crop=crop)
    return [data[i] for i in range(n)]


def _train(model, data, val, opt, sched, alrc, gan, objects, ckpt, log, step, steps, batch,
           device, seconds, t_start, t0, progress, relative=False) -> int:
    """The optimisation loop of :func:`run`; returns the step reached."""
    from ..train.checkpoint import save_checkpoint

    while step < steps:
        if seconds is not None and time.perf_counter() - t_start > seconds:
            break
        b = {k: v.to(device) for k, v in data.batch(step, batch).items()}
        loss, logs = losses(model, b, alrc, gan, relative)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        if gan is not None:
            gan.discriminator_step(logs)
        step += 1
        if step % 10 == 0:
            logs.update(step=step, time_s=round(time.perf_counter() - t0, 1),
                        lr=opt.param_groups[0]["lr"])
            log.write(json.dumps(logs) + "\n")
            log.flush()
            if progress:
                print(json.dumps(logs), flush=True)
        if step % 100 == 0:
            save_checkpoint(ckpt, objects, step)
        if step % 200 == 0:
            log.write(json.dumps({"step": step, "val": validate(model, val)}) + "\n")
            log.flush()
    return step


def run(out: Path, steps: int, batch: int, size: int, cache: str | Path | list | None,
        seconds: float | None, init: Path | None, device: str, widths: tuple[int, ...],
        lr: float, n_val: int, threads: int | None, adversarial: bool = False, progress: bool = True,
        crop: int | None = None, warmup: int = 50, loss: str = "mse",
        kind_probs: tuple[float, ...] | None = None, seed: int = TRAIN_SEED,
        fourier_input: str | None = None, crops_per_scan: int = 0,
        invert_fraction: float = 0.0) -> dict:
    from ..train.alrc import ALRC
    from ..train.checkpoint import load_checkpoint, save_checkpoint, save_weights
    from .completion import load_weights

    if threads:
        torch.set_num_threads(threads)
    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    caches = [cache] if cache is None or isinstance(cache, (str, Path)) else list(cache)
    train_images, val_images = _split_validation([load_images(c, size) for c in caches])
    cache_desc = str(caches[0]) if len(caches) == 1 else [str(c) for c in caches]
    crop = crop or size
    bank = path_bank(size if crops_per_scan else crop)
    torch.manual_seed(0)
    model = load_weights(init)[0].train() if init is not None else PartialScanCompleter(widths)
    if fourier_input not in (None, "delaunay", "fourier", "gated"):
        raise ValueError(f"fourier_input must be None, 'delaunay', 'fourier' or 'gated', got "
                         f"{fourier_input!r}")
    if fourier_input is not None and not model.uses_fourier:
        model = model.with_fourier_input(fourier_input).train()
    model = model.to(device)
    data = CompletionData(train_images, bank, seed=seed, kind_probs=kind_probs,
                          fourier=model.uses_fourier, crops_per_scan=crops_per_scan, crop=crop,
                          invert_fraction=invert_fraction)
    val = validation_examples(val_images, bank, n_val, model.uses_fourier, crops_per_scan, crop)
    if loss not in ("mse", "relative"):
        raise ValueError(f"loss must be 'mse' or 'relative', got {loss!r}")
    relative = loss == "relative"
    # The thesis's moments for 200 x MSE; a relative loss starts near 1 (the Delaunay input).
    alrc = (ALRC(mu1_start=1.0, mu2_start=4.0) if relative else
            ALRC(mu1_start=25.0, mu2_start=900.0)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) *
        (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0)))))
    objects = {"model": model, "optimizer": opt, "scheduler": sched, "alrc": alrc}
    gan = None
    if adversarial:
        from .completion_gan import GanTrainer

        gan = GanTrainer(device=device, lr=1e-4)
        objects.update(gan.objects())
    ckpt = out / "checkpoint.safetensors"
    step, extra = 0, {}
    if ckpt.is_file():
        step, extra = load_checkpoint(ckpt, objects, map_location=device)
    record_path = out / "recipe.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {
        "command": " ".join(sys.argv), "steps_planned": steps, "batch": batch, "size": size, "crop": crop,
        "cache": cache_desc, "n_train_images": len(train_images), "n_val_images": len(val_images),
        "widths": list(model.config["widths"]), "lr": lr, "adversarial": adversarial,
        "init": str(init) if init else None, "device": device, "seed": seed,
        "loss": loss, "kind_probs": list(kind_probs) if kind_probs else None,
        "in_channels": model.config["in_channels"], "base_channel": model.config["base_channel"],
        "gate": model.config["gate"],
        "crops_per_scan": crops_per_scan, "invert_fraction": invert_fraction,
        "data": f"clean micrographs, random {crop} px crops"
                + (f" ({crops_per_scan} per whole-image scan)" if crops_per_scan else "")
                + (f", {100 * invert_fraction:.0f}% contrast-inverted" if invert_fraction else "")
                + ", dihedral, spiral/gridlike/grid "
                f"at coverage 1/100-1/10, Poisson {COUNTS[0]:g}-{COUNTS[1]:g} counts per unit "
                f"intensity ({100 * NOISE_FREE_FRACTION:.0f}% noise-free)",
        "runs": []}
    run_rec = {"start_step": step, "val_before": validate(model, val)}
    t0 = time.perf_counter()
    model.train()
    with open(out / "log.jsonl", "a") as log:
        step = _train(model, data, val, opt, sched, alrc, gan, objects, ckpt, log, step, steps,
                      batch, device, seconds, t_start, t0, progress, relative)
    save_checkpoint(ckpt, objects, step)
    wall = time.perf_counter() - t0
    run_rec.update(end_step=step, train_seconds=round(wall, 1),
                   seconds_per_step=round(wall / max(1, step - run_rec["start_step"]), 3),
                   val_after=validate(model, val), threads=torch.get_num_threads())
    record["runs"].append(run_rec)
    record["steps_done"] = step
    record_path.write_text(json.dumps(record, indent=2))
    notes = {"steps": step, "batch": batch, "size": size, "data": record["data"],
             "cache": cache_desc, "train_seconds_total": sum(r["train_seconds"] for r in record["runs"]),
             "device": device, "val": run_rec["val_after"]}
    save_weights(out / "completion_small.safetensors", model, model.config, dtype=torch.float16,
                 notes=notes)
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m em_accel.models.completion_recipe",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="run directory (checkpoint, log, recipe.json, weights)")
    p.add_argument("--steps", type=int, default=3000, help="planned steps (schedule length)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--size", type=int, default=256, help="image side [px]")
    p.add_argument("--crop", type=int, default=128, help="training crop side [px] (paths are "
                   "made at this size)")
    p.add_argument("--cache", nargs="+", default=None,
                   help=".npz micrograph cache(s) (em_accel.data.micrographs.build_cache), "
                        "pooled, each with its last 5%% held back for validation; default: "
                        "synthetic micrographs")
    p.add_argument("--seconds", type=float, default=None,
                   help="stop this invocation after this many seconds (checkpointed; rerun "
                        "the same command to continue)")
    p.add_argument("--init", type=Path, default=None, help="start from these weights")
    p.add_argument("--device", default="cpu")
    p.add_argument("--widths", type=int, nargs=4, default=[24, 32, 48, 64])
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--n-val", type=int, default=12)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--adversarial", action="store_true",
                   help="add the three-scale LSGAN discriminators (fine-tuning)")
    p.add_argument("--loss", default="mse", choices=["mse", "relative"],
                   help="mse: 200 x (MSE + blurred MSE), the thesis's; relative: each "
                        "example's MSE and blurred MSE as fractions of its Delaunay input's")
    p.add_argument("--kind-probs", type=float, nargs=3, default=None,
                   metavar=("SPIRAL", "GRIDLIKE", "GRID"),
                   help="sampling weights of the path kinds (default: equal)")
    p.add_argument("--warmup", type=int, default=50, help="linear warm-up steps")
    p.add_argument("--seed", type=int, default=TRAIN_SEED,
                   help="seed of the example sequence (a continuation with a new seed sees new "
                        "crops, paths and noise instead of replaying its parent's)")
    p.add_argument("--fourier-input", choices=["delaunay", "fourier", "gated"], default=None,
                   help="add the Fourier-sparse infill as input channel 4 (zero-initialised "
                        "when converting --init weights); the network corrects the Delaunay "
                        "infill (delaunay), the Fourier one (fourier) or a learned per-pixel "
                        "mix of the two (gated)")
    p.add_argument("--crops-per-scan", type=int, default=0, metavar="K",
                   help="scan and infill each whole image (paths at --size) and cut K "
                        "consecutive examples from it, as inference sees a whole scan "
                        "(default 0: scan each crop on its own)")
    p.add_argument("--invert-fraction", type=float, default=0.0, metavar="P",
                   help="scan this fraction of images contrast-inverted (1 - image: bright-"
                        "field-like, dark atoms on a bright background)")
    p.add_argument("--calibrate", type=int, default=0, metavar="N",
                   help="then fit the uncertainty calibration on N held-out images (stored in "
                        "the weights)")
    p.add_argument("--calibration-size", type=int, default=256)
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    rec = run(a.out, a.steps, a.batch, a.size, a.cache, a.seconds, a.init, a.device,
              tuple(a.widths), a.lr, a.n_val, a.threads, a.adversarial, not a.no_progress,
              a.crop, a.warmup, a.loss, tuple(a.kind_probs) if a.kind_probs else None, a.seed,
              a.fourier_input, a.crops_per_scan, a.invert_fraction)
    print(json.dumps(rec["runs"][-1], indent=2))
    if a.calibrate:
        from .completion_eval import calibrate_weights

        s = calibrate_weights(a.out / "completion_small.safetensors", a.calibrate,
                              a.calibration_size)
        rec["calibration"] = {"factor": s, "n_images": a.calibrate, "size": a.calibration_size}
        (a.out / "recipe.json").write_text(json.dumps(rec, indent=2))
        print(f"calibration factor {s:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
