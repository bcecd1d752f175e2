"""The adaptive-scan experiment pipeline behind ``em-accel scan-policy train/evaluate``.

Stages (each a resumable :class:`ScanTrainer` run in ``<out>/<stage>``):

1. ``data`` - prepared 96x96 crops: train and held-out test sets (``<out>/data.npz``).
2. ``generator`` - the generator on mixed path families (the start of every later stage).
3. ``fixed`` - one contiguous path optimised by gradient descent (the static contender).
4. ``actor_gru``/``actor_lstm`` - recurrent actors trained end to end through the sampler.
5. ``rdpg_lstm``/``rdpg_gru`` - the thesis's RDPG; ``rdpg_lstm_edge0``/``_edge02``/``_buf64`` -
   its edge-penalty and buffer-size experiments.
6. ``final`` - ONE generator for every strategy: the stage-2 generator fine-tuned on an equal
   mixture of all evaluated strategies' scans (spiral, best random walk, fixed path, sub-grid,
   random points, each learned actor); then the held-out evaluation (:func:`evaluate`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .policy_data import make_crops
from .policy_train import PolicyConfig, ScanTrainer
from .rollout import ScanBudget, angle_path, env_rollout

STAGES = {
    "generator": dict(mode="generator"),
    "fixed": dict(mode="fixed"),
    "actor_gru": dict(mode="actor", core="gru"),
    "actor_lstm": dict(mode="actor", core="lstm"),
    "rdpg_lstm": dict(mode="rdpg", core="lstm"),
    "rdpg_gru": dict(mode="rdpg", core="gru"),
    "rdpg_lstm_edge0": dict(mode="rdpg", core="lstm", edge_penalty=0.0),
    "rdpg_lstm_edge02": dict(mode="rdpg", core="lstm", edge_penalty=0.2),
    "rdpg_lstm_buf64": dict(mode="rdpg", core="lstm", buffer=64),
}
ACTOR_STAGES = tuple(k for k, v in STAGES.items() if v["mode"] in ("actor", "rdpg"))


def load_data(out: Path, n_train: int = 2000, n_test: int = 256, seed: int = 0
              ) -> dict[str, torch.Tensor]:
    """Train/test crops, made once and cached in ``<out>/data.npz``."""
    path = out / "data.npz"
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        train = make_crops("synthetic", n_train, seed=seed)
        test = make_crops("synthetic", n_test, seed=seed + 1)
        np.savez_compressed(path, train=train.numpy(), test=test.numpy())
    with np.load(path) as z:
        return {k: torch.from_numpy(z[k]) for k in z.files}


def run_stage(out: str | Path, stage: str, steps: int, *, max_seconds: float | None = None,
              base: dict | None = None, device: str | torch.device | None = None) -> ScanTrainer:
    """Train ``stage`` to ``steps`` (continuing its checkpoint) on ``device`` (None: CPU);
    stages after ``generator`` start from the generator stage's checkpoint."""
    out = Path(out)
    if stage not in STAGES and stage != "final":
        raise ValueError(f"stage must be one of {[*STAGES, 'final']}, got {stage!r}")
    data = load_data(out)
    cfg = PolicyConfig(**{**(base or {}), **STAGES.get(stage, dict(mode="generator"))})
    init = None if stage == "generator" else out / "generator" / "checkpoint.safetensors"
    if init is not None and not init.exists():
        raise FileNotFoundError(f"stage {stage!r} needs the generator stage first ({init})")
    positions_fn = final_mixture(out, data["train"]) if stage == "final" else None
    tr = ScanTrainer(cfg, data["train"], out / stage, init_generator=init,
                     positions_fn=positions_fn, device=device)
    t0 = time.time()
    if stage == "fixed" and tr.step == 0:
        # Start from the best of 32 random walks (a straight line from the centre would leave
        # the image after 2 segments and spend most steps finding its way back).
        from .policy_eval import best_random_walk

        with torch.no_grad():
            tr.angles.copy_(best_random_walk(tr.generator, data["train"][:64], tries=32)[0][1:])
        tr.generator.train()
    tr.train(steps, max_seconds=max_seconds)
    rec_path = out / stage / "recipe.json"
    rec = json.loads(rec_path.read_text()) if rec_path.exists() else {"wall_s": 0.0}
    rec.update(stage=stage, steps=tr.step, config=cfg.__dict__, device=str(tr.device),
               threads=torch.get_num_threads(), wall_s=rec["wall_s"] + time.time() - t0,
               data={"source": "synthetic", "train": int(data["train"].shape[0]),
                     "test": int(data["test"].shape[0])})
    rec_path.write_text(json.dumps(rec, indent=1))
    return tr


def load_actor(out: Path, stage: str):
    from .policy_io import load_policy

    _, actor, _ = load_policy(out / stage / "checkpoint.safetensors")
    return actor


def fixed_angles(out: Path) -> torch.Tensor:
    from .policy_io import load_state

    path = load_state(out / "fixed" / "checkpoint.safetensors", "path")["value"]
    b = ScanBudget()
    return torch.cat([torch.full((1,), b.first_angle), path])


def static_choices(out: Path, generator, train: torch.Tensor) -> dict:
    """Spiral pitch (3-24 px) and the best of 32 random walks, chosen on 64 training crops
    with ``generator``."""
    from .policy_eval import best_random_walk, best_spiral

    sub = train[:64].to(next(generator.parameters()).device)
    pitch, spiral = best_spiral(generator, sub)
    walk_angles, walk = best_random_walk(generator, sub, tries=32)
    return {"spiral_pitch": pitch, "spiral": spiral, "walk_angles": walk_angles, "walk": walk}


def final_mixture(out: Path, train: torch.Tensor):
    """Sampler of the final generator's training scans: an equal mixture of every strategy."""
    from .policy_io import load_policy
    from .static_paths import random_points, subgrid_positions

    gen, _, _ = load_policy(out / "generator" / "checkpoint.safetensors")
    ch = static_choices(out, gen, train)
    fixed = [ch["spiral"], ch["walk"], subgrid_positions()]
    if (out / "fixed" / "checkpoint.safetensors").exists():
        fixed.append(angle_path(fixed_angles(out)[None])[0])
    actors = [load_actor(out, s) for s in ACTOR_STAGES
              if (out / s / "checkpoint.safetensors").exists()]
    g = torch.Generator().manual_seed(1)

    def fn(images: torch.Tensor) -> torch.Tensor:
        n = len(fixed) + len(actors) + 1
        k = int(torch.randint(n, (), generator=g))
        B = images.shape[0]
        if k < len(fixed):
            return fixed[k][None].expand(B, -1, -1)
        if k < len(fixed) + len(actors):
            return env_rollout(actors[k - len(fixed)].to(images.device), images)[0].positions
        return random_points(B, generator=g)
    return fn


def evaluate(out: str | Path, *, images: torch.Tensor | None = None, name: str = "test",
             slads: bool = True, device: str | torch.device | None = None) -> dict:
    """Evaluate every strategy with the final generator on held-out crops; writes
    ``<out>/eval_<name>.json`` and returns it. Learned vs best static contiguous path: paired
    bootstrap 95% interval of the RMS difference."""
    from .policy_eval import (actor_positions, evaluate_strategies, paired_bootstrap,
                              slads_positions)
    from .policy_io import load_policy
    from .static_paths import subgrid_positions

    out = Path(out)
    data = load_data(out)
    images = data["test"] if images is None else images
    if device is not None:
        images = images.to(device)
    final = out / "final" / "checkpoint.safetensors"
    gen, _, _ = load_policy(final, device=images.device)
    cached = out / "final" / "static_choices.pt"  # chosen on training crops: reuse per set
    if cached.exists() and cached.stat().st_mtime > final.stat().st_mtime:
        ch = torch.load(cached, weights_only=True)
    else:
        ch = static_choices(out, gen, data["train"])
        torch.save(ch, cached)
    strategies = {"spiral": ch["spiral"], "random_walk": ch["walk"],
                  "fixed_optimised": angle_path(fixed_angles(out)[None])[0],
                  "subgrid": subgrid_positions()}
    for s in ACTOR_STAGES:
        if (out / s / "checkpoint.safetensors").exists():
            strategies[s] = actor_positions(load_actor(out, s).to(images.device))
    if slads:
        strategies["slads"] = lambda x: torch.cat([slads_positions(gen, x[i:i + 64])
                                                   for i in range(0, x.shape[0], 64)])
    t0 = time.time()
    res = evaluate_strategies(gen, images, strategies)
    static = ("spiral", "random_walk", "fixed_optimised")
    best_static = min(static, key=lambda k: res[k]["rms"].mean().item())
    report = {"images": name, "n": int(images.shape[0]), "spiral_pitch_px": ch["spiral_pitch"],
              "best_static_contiguous": best_static, "seconds": round(time.time() - t0, 1),
              "strategies": {}}
    for k, r in res.items():
        c = paired_bootstrap(r["rms"], res[best_static]["rms"])
        report["strategies"][k] = {
            "rms_mean": round(float(r["rms"].mean()), 5),
            "rms_sem": round(float(r["rms"].std() / len(r["rms"]) ** 0.5), 5),
            "path_length_px": round(r["path_length"], 1),
            "vs_best_static": {"diff": round(c.diff, 5), "ci95": [round(c.ci_low, 5),
                                                                  round(c.ci_high, 5)],
                               "relative": round(c.relative, 4)}}
    (out / f"eval_{name}.json").write_text(json.dumps(report, indent=1))
    torch.save({k: r["positions"] for k, r in res.items()}, out / f"paths_{name}.pt")
    return report


def export_weights(out: str | Path, stage: str, path: str | Path) -> Path:
    """Ship the final generator with the actor of ``stage`` (float16 safetensors), with the
    spiral pitch of the evaluation and the provenance (recipes, held-out numbers) as notes."""
    from .policy_io import load_policy, save_policy

    out = Path(out)
    gen, _, configs = load_policy(out / "final" / "checkpoint.safetensors")
    actor = load_actor(out, stage)
    report = json.loads((out / "eval_test.json").read_text())
    recipes = {s: json.loads((out / s / "recipe.json").read_text())
               for s in ("generator", stage, "final") if (out / s / "recipe.json").exists()}
    notes = {"actor_stage": stage, "eval_test": report["strategies"].get(stage),
             "best_static": report["best_static_contiguous"],
             "steps": {s: r["steps"] for s, r in recipes.items()},
             "wall_s": {s: round(r["wall_s"], 1) for s, r in recipes.items()}}
    return save_policy(path, gen, actor=actor, budget=configs["budget"], notes=notes,
                       baselines={"spiral_pitch": report["spiral_pitch_px"]})
