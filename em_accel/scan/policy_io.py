"""Saving and loading scan-policy weights (safetensors; never pickle).

A weights file holds ``<name>/<parameter>`` tensors for each network (``generator``, and
``actor`` for a learned policy, or ``path`` for a fixed one) and each network's config as JSON
in the metadata. Training checkpoints (:mod:`em_accel.train.checkpoint`) use the same key
layout, so :func:`load_state` reads both.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..models.adaptive import ScanActor, ScanGenerator

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "models" / "weights"
PRETRAINED_POLICY = "scan_policy_96.safetensors"


def load_state(path: str | Path, name: str) -> dict[str, torch.Tensor]:
    """The state dict of network ``name`` from a weights file or a training checkpoint."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such weights file: {path}")
    prefix = name + "/"
    with safe_open(str(path), framework="pt", device="cpu") as f:
        state = {k[len(prefix):]: f.get_tensor(k).float() for k in f.keys() if k.startswith(prefix)}
    if not state:
        raise KeyError(f"{path} holds no {name!r} network")
    return state


def _configs(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
    if "configs" in meta:
        return json.loads(meta["configs"])
    if "extra" in meta:  # a training checkpoint: rebuild from the PolicyConfig
        cfg = json.loads(meta["extra"])["config"]
        out = {"generator": {"width": cfg["gen_width"], "blocks": cfg["gen_blocks"],
                             "bn_momentum": cfg["bn_momentum"]}, "budget": cfg["budget"]}
        if cfg["mode"] in ("actor", "rdpg"):
            b = cfg["budget"]
            out["actor"] = {"core": cfg["core"], "hidden": cfg["hidden"], "probes": b["probes"],
                            "side": b["side"]}
        return out
    raise ValueError(f"{path} has no network configs in its metadata")


def save_policy(path: str | Path, generator: ScanGenerator, *, actor: ScanActor | None = None,
                path_angles: torch.Tensor | None = None, budget: dict | None = None,
                dtype: torch.dtype = torch.float16, notes: dict | None = None,
                baselines: dict | None = None) -> Path:
    """Write a generator with an actor (learned policy) or fixed angles [T] (fixed path);
    ``baselines``: settings of the baselines evaluated with it (e.g. the spiral pitch)."""
    from safetensors.torch import save_file

    tensors, configs = {}, {"generator": generator.config, "budget": budget or {},
                            "baselines": baselines or {}}
    nets: dict[str, nn.Module] = {"generator": generator}
    if actor is not None:
        nets["actor"] = actor
        configs["actor"] = actor.config
    for name, net in nets.items():
        for k, v in net.state_dict().items():
            v = v.detach().cpu()
            tensors[f"{name}/{k}"] = (v.to(dtype) if v.is_floating_point() else v).contiguous()
    if path_angles is not None:
        tensors["path/value"] = path_angles.detach().cpu().float().contiguous()
    meta = {"configs": json.dumps(configs), "notes": json.dumps(notes or {})}
    save_file(tensors, str(path), metadata=meta)
    return Path(path)


def load_policy(path: str | Path | None = None, *, device: str | torch.device | None = None
                ) -> tuple[ScanGenerator, ScanActor | None, dict]:
    """(generator, actor or None, configs) from a weights file or checkpoint, in eval mode.
    ``path`` None: the shipped thesis-setting policy."""
    path = Path(path) if path is not None else WEIGHTS_DIR / PRETRAINED_POLICY
    configs = _configs(path)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    gen = ScanGenerator(**configs["generator"])
    gen.load_state_dict(load_state(path, "generator"))
    actor = None
    if "actor" in configs:
        actor = ScanActor(**configs["actor"])
        actor.load_state_dict(load_state(path, "actor"))
        actor = actor.to(dev).eval()
    return gen.to(dev).eval(), actor, configs
