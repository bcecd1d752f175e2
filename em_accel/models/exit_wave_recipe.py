"""Train and evaluate :class:`ExitWaveNet` on a set from :mod:`em_accel.sim.exit_wave_sets`.

``python -m em_accel.models.exit_wave_recipe --set broad --data DIR --out RUN --seconds 300``

Resumable: ``RUN/checkpoint.safetensors`` holds the model, optimiser, ALRC moments, step and
RNG state; every step's crops come from a generator seeded by (seed, step), so a rerun on the
same ``RUN`` continues exactly where the last one stopped (``--seconds`` caps this call's
wall time; ``--steps`` is the planned total, which fixes the learning-rate schedule).
``--init`` starts from another run's weights (fine-tuning). The run's record (command, data,
seed, steps, wall time, device, every evaluation row) goes to ``RUN/recipe.json``.
``--evaluate WEIGHTS`` skips training and scores a weights file (e.g. the shipped one) with the
same rows on the same waves (``--record`` gets the rows).

Training follows the thesis (ch. 7, arXiv:2001.10938): input the amplitude of a random crop with a
random dihedral transform, target the phasor (cos φ, sin φ), loss ALRC(10 · MSE) per example,
Adam β1 0.9, learning rate halved 7 times over the run (the thesis's ``min`` reading of its
schedule). Options beyond the thesis: ``--align`` (a global-phase-invariant loss),
``--dose`` (Poisson noise at doses log-uniform in [lo, hi] e⁻/Å² on half the inputs) and
``--residual-defocus`` (σ [Å] of random defocus C10 and astigmatism C12 in the input).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..data.augment import dihedral
from ..train.alrc import ALRC
from ..train.checkpoint import load_checkpoint, save_checkpoint, save_weights
from .exit_wave import (ExitWaveDiscriminator, ExitWaveNet, LSGANBalance, load_exit_wave_weights,
                        phasor_loss, wave_channels)
from .exit_wave_metrics import (FittedConstants, baselines, constant_errors, fit_constants,
                                paired_vs_constant, phase_errors, phasor, summarize)

EVAL_SPLITS = ("train", "unseen_transforms", "unseen_settings", "unseen_materials")


def perturb_amplitude(wave: torch.Tensor, sampling: float, energy: float, *,
                      dose: float | None = None, defocus: float = 0.0, astigmatism: float = 0.0,
                      astigmatism_angle: float = 0.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """The amplitude a microscope would record of ``wave`` (complex [H, W]): optionally through a
    small residual aberration (defocus and 2-fold astigmatism [Å]) and with Poisson noise at
    ``dose`` [e⁻/Å²] (amplitude = sqrt(counts / (dose · pixel area)))."""
    if defocus or astigmatism:
        from ..sim.imaging import aberration_function
        from ..sim.potential import Grid

        h, w = wave.shape[-2:]
        grid = Grid((h * sampling, w * sampling), (h, w))
        chi = aberration_function(grid, energy, defocus=defocus, C12=astigmatism,
                                  phi12=astigmatism_angle, device=wave.device)
        wave = torch.fft.ifft2(torch.fft.fft2(wave) * torch.polar(torch.ones_like(chi), -chi).to(wave.dtype))
    intensity = wave.abs().double() ** 2
    if dose is not None:
        area = sampling ** 2
        intensity = torch.poisson(intensity * dose * area, generator=generator) / (dose * area)
    return intensity.sqrt().float()


class CropSampler:
    """Training batches from a set's ``train`` waves: random crops, dihedral transforms,
    amplitude normalised to mean 1, optional noise and residual aberrations."""

    def __init__(self, waves: np.ndarray, metas: list[dict], crop: int, seed: int = 0,
                 dose: tuple[float, float] | None = None, residual_defocus: float = 0.0) -> None:
        if len(waves) == 0:
            raise ValueError("no training waves")
        if crop > min(waves.shape[-2:]):
            raise ValueError(f"crop {crop} exceeds the waves' {waves.shape[-2]}×{waves.shape[-1]}")
        self.waves = torch.from_numpy(np.ascontiguousarray(waves))
        self.sampling = [float(m["sampling_A"][0]) for m in metas]
        self.energy = [float(m["energy_keV"]) for m in metas]
        self.crop, self.seed, self.dose, self.residual_defocus = crop, seed, dose, residual_defocus

    def batch(self, step: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(amplitude [B, 1, c, c], phasor target [B, 2, c, c]) for ``step`` (deterministic)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        amps, targets = [], []
        n, (h, w) = len(self.waves), self.waves.shape[-2:]
        for _ in range(size):
            i = int(torch.randint(n, (1,), generator=g))
            wave = self.waves[i]
            dose = None
            if self.dose is not None and float(torch.rand((), generator=g)) < 0.5:
                lo, hi = self.dose
                dose = math.exp(math.log(lo) + float(torch.rand((), generator=g)) * math.log(hi / lo))
            df = ast = ang = 0.0
            if self.residual_defocus and float(torch.rand((), generator=g)) < 0.5:
                df, ast = (float(v) * self.residual_defocus for v in torch.randn(2, generator=g))
                ang = float(torch.rand((), generator=g)) * math.pi
            amp = perturb_amplitude(wave, self.sampling[i], self.energy[i], dose=dose, defocus=df,
                                    astigmatism=ast, astigmatism_angle=ang, generator=g)
            y = int(torch.randint(h - self.crop + 1, (1,), generator=g))
            x = int(torch.randint(w - self.crop + 1, (1,), generator=g))
            k = int(torch.randint(8, (1,), generator=g))
            sl = (slice(y, y + self.crop), slice(x, x + self.crop))
            amp = dihedral(amp[sl], k)
            ph = dihedral(torch.angle(wave[sl]), k)
            amps.append(amp / amp.mean().clamp_min(1e-6))
            targets.append(torch.stack([torch.cos(ph), torch.sin(ph)]))
        return torch.stack(amps)[:, None], torch.stack(targets)


def _lr(base: float, step: int, total: int) -> float:
    """Halve ``base`` every ``total / 8`` steps, at most 7 times."""
    return base * 0.5 ** min(int(8 * step / max(total, 1)), 7)


@torch.no_grad()
def evaluate(model: ExitWaveNet, data: str | Path, device: str = "cpu",
             splits: tuple[str, ...] = EVAL_SPLITS, dose: float | None = None,
             defocus: float = 0.0, max_waves: int | None = None,
             ensemble: bool = False, fitted: FittedConstants | None = None) -> list[dict]:
    """One row per split: counts, mean errors ± SE and the baselines on the same waves.

    Each wave's whole stored crop (cut to a multiple of the network's stride) is the input
    (amplitude normalised to mean 1 over the stored crop, no
    augmentation); ``dose`` / ``defocus`` perturb the input like :func:`perturb_amplitude`
    (the same noise seed for every model); ``ensemble`` averages the 8 dihedral transforms;
    ``fitted``: the training constants (:func:`train_constants`; computed here when None)."""
    from .exit_wave import unit_phasor
    from .tiling import dihedral_ensemble

    from ..sim.exit_wave_sets import load_set

    model.eval()

    def inputs(waves: np.ndarray, metas: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(7)
        amps, targets = [], []
        for w, m in zip(torch.from_numpy(waves), metas):
            a = perturb_amplitude(w, float(m["sampling_A"][0]), float(m["energy_keV"]), dose=dose,
                                  defocus=defocus, generator=g)
            amps.append(a / a.mean().clamp_min(1e-6))
            ph = torch.angle(w)
            targets.append(torch.stack([torch.cos(ph), torch.sin(ph)]))
        amp, target = torch.stack(amps)[:, None], torch.stack(targets)
        # the largest central crop the network takes (the CPU sets' 80² crops go in whole)
        h, w = amp.shape[-2:]
        ch, cw = h // model.multiple * model.multiple, w // model.multiple * model.multiple
        sl = (..., slice((h - ch) // 2, (h - ch) // 2 + ch), slice((w - cw) // 2, (w - cw) // 2 + cw))
        return amp[sl], target[sl]

    if fitted is None:
        fitted = train_constants(data)
    rows = []
    for split in splits:
        waves, metas = load_set(data, split)
        if not len(waves):
            continue
        if max_waves:
            waves, metas = waves[:max_waves], metas[:max_waves]
        amp, target = inputs(waves, metas)
        # the thesis's unit outputs are averaged then rescaled; hedged outputs stay in the disc
        post = unit_phasor if model.config.get("output", "unit") == "unit" else (lambda x: x)
        fwd = (lambda x: post(dihedral_ensemble(model, x))) if ensemble else model
        pred = torch.cat([fwd(amp[i:i + 32].to(device)).float().cpu() for i in range(0, len(amp), 32)])
        errors = phase_errors(pred, target)
        row = {"split": split, "dose_e_per_A2": dose, "defocus_A": defocus, "ensemble": ensemble,
               **summarize(errors), **baselines(target), **constant_errors(fitted, target),
               "vs_constant": paired_vs_constant(errors.mae, target)}
        row["materials"] = len({m["material"] for m in metas})
        rows.append(row)
    return rows


def train_constants(data: str | Path, max_waves: int = 1024) -> FittedConstants:
    """The constants a predictor could know, fitted on the set's training waves (at most
    ``max_waves`` of them, evenly spaced: the unit constant's angle search costs O(waves))."""
    from ..sim.exit_wave_sets import load_set

    waves, _ = load_set(data, "train")
    step = max(1, -(-len(waves) // max_waves))
    return fit_constants(phasor(torch.angle(torch.from_numpy(waves[::step]))))


def train(data: str | Path, out: str | Path, *, seconds: float | None = None,
          steps: int | None = None, batch: int = 16, crop: int = 64, width: float = 0.25,
          blocks: int = 2, stages: int = 4, skips: bool = False, output: str = "unit",
          loss_kind: str = "mse", lr: float = 2e-3, seed: int = 0,
          init: str | Path | None = None, device: str = "cpu", align: bool = False,
          dose: tuple[float, float] | None = None, residual_defocus: float = 0.0,
          gan: bool = False, progress: bool = True) -> dict:
    """Train (or resume) a run under ``out``; returns the record written to recipe.json."""
    from ..sim.exit_wave_sets import load_set

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    waves, metas = load_set(data, "train")
    sampler = CropSampler(waves, metas, crop, seed, dose, residual_defocus)
    if init is not None:
        model, _ = load_exit_wave_weights(init)
        if skips:  # a warm start may add the skips (closed at first, see enable_skips)
            model.enable_skips()
        model.train()
    else:
        model = ExitWaveNet(width, blocks, 3 if gan else stages, skips, output)
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.5, 0.999) if gan else (0.9, 0.999))
    alrc = ALRC(mu1_start=10.0, mu2_start=200.0).to(device)
    objects = {"model": model, "opt": opt, "alrc": alrc}
    disc = balance = None
    if gan:
        # the thesis's 4 stages need crops >= 64 px (5 halvings); fewer for smaller crops
        disc = ExitWaveDiscriminator(width=width, stages=max(1, min(4, int(math.log2(crop)) - 2))).to(device)
        d_opt = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
        balance = LSGANBalance()
        objects.update(disc=disc, d_opt=d_opt)
    ckpt = out / "checkpoint.safetensors"
    # the weights the run started from: a resumed run keeps its first call's (the checkpoint
    # overrides --init, so recording this call's --init would misstate the lineage)
    step, extra = 0, {"init": str(init) if init else None}
    if ckpt.exists():
        step, extra = load_checkpoint(ckpt, objects, map_location=device)
        if balance is not None:
            balance.load_state_dict(extra["balance"])
    total = int(steps or extra.get("total_steps") or 0)  # --steps may extend a run
    start_step, t_warm = step, 0.0
    t_start, spent = time.perf_counter(), float(extra.get("train_seconds", 0.0))
    last_save = t_start
    history = list(extra.get("history", []))
    bar = None
    if progress and sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(desc="exit-wave", unit="step", initial=step)
    model.train()
    while True:
        now = time.perf_counter()
        if (total and step >= total) or (seconds is not None and now - t_start >= seconds):
            break
        # plan the run from the step time measured after warm-up (steps 5..15 of this call)
        if not total and seconds and step == start_step + 5:
            t_warm = now
        if not total and seconds and step == start_step + 15:
            per_step = max((now - t_warm) / 10, 1e-3)
            total = max(20, int(step + (seconds - (now - t_start)) / per_step))
        amp, target = sampler.batch(step, batch)
        amp, target = amp.to(device), target.to(device)
        cur = _lr(lr, step, total or 10 ** 9)
        for gparam in opt.param_groups:
            gparam["lr"] = cur
        pred = model(amp)
        if gan:
            real, fake = wave_channels(amp, target), wave_channels(amp, pred)
            for gparam in d_opt.param_groups:
                gparam["lr"] = balance.update(disc(fake.detach()))
            d_loss = balance.d_loss(disc(real), disc(fake.detach()))
            d_opt.zero_grad()
            d_loss.backward()
            d_opt.step()
            loss = balance.g_loss(disc(fake))
            per = phasor_loss(pred.detach(), target, kind=loss_kind)
        else:
            per = 10 * phasor_loss(pred, target, align=align, kind=loss_kind)
            loss = alrc(per).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 20 == 0:
            history.append([step, float(per.detach().mean())])
        if bar is not None:
            bar.update(1)
        if time.perf_counter() - last_save > 120:
            _save(ckpt, objects, step, total, spent + time.perf_counter() - t_start, history, balance,
                  extra.get("init"))
            last_save = time.perf_counter()
    if bar is not None:
        bar.close()
    spent += time.perf_counter() - t_start
    _save(ckpt, objects, step, total, spent, history, balance, extra.get("init"))
    config = dict(model.config)
    notes = {"steps": step, "batch": batch, "crop": crop, "train_seconds": round(spent, 1),
             "data": str(data), "align": align, "loss": loss_kind, "dose": dose, "residual_defocus_A": residual_defocus,
             "gan": gan, "init": extra.get("init"), "resumed_from_step": start_step or None,
             "device": torch.cuda.get_device_name() if str(device).startswith("cuda") else "cpu"}
    save_weights(out / "weights.safetensors", model, config, dtype=torch.float16, notes=notes)
    return {"config": config, **notes, "total_steps": total, "lr": lr, "seed": seed,
            "n_train_waves": len(waves), "history": history[-50:]}


def _save(path, objects, step, total, spent, history, balance, init: str | None) -> None:
    extra = {"total_steps": total, "train_seconds": spent, "history": history, "init": init}
    if balance is not None:
        extra["balance"] = balance.state_dict()
    save_checkpoint(path, objects, step, extra)


def markdown_rows(record: dict) -> list[str]:
    """docs/exit_wave.md table rows of one recipe record: set, split, waves, materials, dose,
    MAE ± SE, aligned MAE, RMSE [rad], and the baselines on the same waves."""
    out, name = [], record["set"] + (", aligned loss" if record.get("align") else "")
    if record.get("config", {}).get("output") == "hedged":
        name += ", hedged + L1" + (" + skips" if record["config"].get("skips") else "")
    for r in record["rows"]:
        dose = "clean" if r["dose_e_per_A2"] is None else f"{r['dose_e_per_A2']:g} e⁻/Å²"
        if r.get("ensemble"):
            dose += ", 8× dihedral ensemble"
        gain = 1 - r["mae"] / r["best_constant_mae"]
        out.append(f"| {name} | {r['split']} | {r['n']} | {r['materials']} | {dose} | "
                   f"{r['mae']:.3f} ± {r['mae_se']:.3f} | {r['best_constant_mae']:.3f} | {gain:+.0%} | "
                   f"{r['mae_aligned']:.3f} | {r['flat_phase_mae_aligned']:.3f} | "
                   f"{r['rmse']:.2f} | {r['rmse_conj']:.2f} | {r['flat_phase_rmse']:.2f} |")
    return out


def _paired_text(p: dict | None) -> str:
    if not p:
        return ""
    return (f" | vs best const {p['ratio']:.3f}x (95% {p['ratio_ci'][0]:.3f}-{p['ratio_ci'][1]:.3f}),"
            f" lower on {p['lower']}/{p['n']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m em_accel.models.exit_wave_recipe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", required=True, help="set name (recorded), e.g. single, restricted, broad")
    p.add_argument("--data", type=Path, required=True, help="the set's directory (exit_wave_sets)")
    p.add_argument("--out", type=Path, default=None, help="run directory (checkpoint, weights)")
    p.add_argument("--evaluate", type=Path, default=None, metavar="WEIGHTS",
                   help="no training: score this weights file (rows as after a run)")
    p.add_argument("--seconds", type=float, default=None, help="wall-time cap for this call")
    p.add_argument("--steps", type=int, default=None, help="planned total steps (default: from --seconds)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--skips", action="store_true",
                   help="encoder-decoder skip connections (not in the thesis)")
    p.add_argument("--output", choices=("unit", "hedged"), default="unit",
                   help="unit phasors (thesis) or hedged phasors inside the unit disc")
    p.add_argument("--loss", choices=("mse", "l1"), default="mse",
                   help="phasor MSE (thesis) or phasor MAE (the evaluation metric)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", type=Path, default=None, help="start from these weights")
    p.add_argument("--device", default="cpu")
    p.add_argument("--align", action="store_true", help="global-phase-invariant loss")
    p.add_argument("--dose", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="train half the inputs with Poisson noise at LO..HI e-/Å² (log-uniform)")
    p.add_argument("--residual-defocus", type=float, default=0.0,
                   help="σ [Å] of residual defocus/astigmatism on half the inputs")
    p.add_argument("--gan", action="store_true", help="the thesis's LSGAN variant")
    p.add_argument("--eval-doses", type=float, nargs="*", default=[],
                   help="also evaluate unseen_transforms at these doses [e-/Å²]")
    p.add_argument("--eval-max-waves", type=int, default=None, metavar="N",
                   help="score at most the first N waves of each split (the train split of a "
                        "large set; the held-out splits hold fewer)")
    p.add_argument("--eval-ensemble", action="store_true",
                   help="also evaluate every split with the 8-fold dihedral self-ensemble")
    p.add_argument("--record", type=Path, default=None, help="also write recipe.json here")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    if (a.out is None) == (a.evaluate is None):
        p.error("give --out RUN (train, then evaluate) or --evaluate WEIGHTS (evaluate only)")
    torch.set_num_threads(int(__import__("os").environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    t0 = time.perf_counter()
    if a.evaluate is not None:
        model, notes = load_exit_wave_weights(a.evaluate, device=a.device)
        rec = {"config": dict(model.config), **notes, "evaluated_weights": str(a.evaluate)}
    else:
        rec = _train_call(a)
        model, _ = load_exit_wave_weights(a.out / "weights.safetensors", device=a.device)
    kw = dict(max_waves=a.eval_max_waves, fitted=train_constants(a.data))
    rows = evaluate(model, a.data, a.device, **kw)
    if a.eval_ensemble:
        rows += evaluate(model, a.data, a.device, ensemble=True, **kw)
    for d in a.eval_doses:
        rows += evaluate(model, a.data, a.device, splits=("unseen_transforms",), dose=d, **kw)
    rec = {"command": "python -m em_accel.models.exit_wave_recipe " + " ".join(sys.argv[1:] if argv is None else argv),
           "set": a.set, **rec, "wall_seconds_this_call": round(time.perf_counter() - t0, 1),
           "rows": rows}
    text = json.dumps(rec, indent=1)
    if a.out is not None:
        (a.out / "recipe.json").write_text(text)
    if a.record:
        a.record.parent.mkdir(parents=True, exist_ok=True)
        a.record.write_text(text)
    for r in rows:
        print(f"{a.set:>10} {r['split']:>18} dose={r['dose_e_per_A2']} ens={r['ensemble']:d} n={r['n']:4d} MAE {r['mae']:.3f}"
              f" aligned {r['mae_aligned']:.3f} RMSE {r['rmse']:.3f} rad | best const "
              f"{r['best_constant_mae']:.3f} best unit const {r['best_unit_constant_mae']:.3f} "
              f"flat-aligned {r['flat_phase_mae_aligned']:.3f} | phase-only MAE {r['mae_unit']:.3f}"
              + _paired_text(r.get("vs_constant")))
    return 0


def _train_call(a: argparse.Namespace) -> dict:
    return train(a.data, a.out, seconds=a.seconds, steps=a.steps, batch=a.batch, crop=a.crop,
                width=a.width, blocks=a.blocks, skips=a.skips, output=a.output, loss_kind=a.loss, lr=a.lr, seed=a.seed, init=a.init, device=a.device,
                align=a.align, dose=tuple(a.dose) if a.dose else None,
                residual_defocus=a.residual_defocus, gan=a.gan, progress=not a.no_progress)


if __name__ == "__main__":
    sys.exit(main())
