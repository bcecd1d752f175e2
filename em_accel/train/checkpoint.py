"""Checkpoints in safetensors: model, optimiser, scheduler, ALRC moments and the step.

Tensors (weights, buffers, optimiser moments, RNG state) go into the safetensors body under
``<name>/<key>``; everything else (step, optimiser hyper-parameters, scheduler state, user
extras) goes into its string metadata as JSON. Files are written to a temporary name and
renamed, so a run killed while saving leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._api import resolve_device
from .._atomic import replace_durably

Stateful = Any  # nn.Module, torch.optim.Optimizer, an LR scheduler: anything with state_dict()


def _split(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move tensors out of a nested state into ``tensors``; return the JSON skeleton."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[_key(k), _split(v, f"{prefix}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_split(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return {"__float__": str(obj)}
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {prefix}")


def _key(k: Any) -> Any:
    if isinstance(k, (str, int)):
        return k
    raise TypeError(f"state keys must be str or int, got {type(k).__name__}")


def _join(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _join(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            items = [_join(v, tensors) for v in obj["__list__"]]
            return tuple(items) if obj["tuple"] else items
        if "__float__" in obj:
            return float(obj["__float__"])
    return obj


def save_checkpoint(path: str | Path, objects: dict[str, Stateful], step: int,
                    extra: dict[str, Any] | None = None) -> Path:
    """Save the ``state_dict()`` of each named object, the global torch RNG state, ``step`` and
    JSON-serialisable ``extra`` to ``path`` (safetensors), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = {name: _split(obj.state_dict(), name, tensors) for name, obj in objects.items()}
    tensors["rng/torch"] = torch.get_rng_state()
    meta = {"step": str(int(step)), "states": json.dumps(skeleton),
            "extra": json.dumps(extra or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    return replace_durably(tmp, path)  # a kill leaves the previous checkpoint whole


def load_checkpoint(path: str | Path, objects: dict[str, Stateful], *,
                    map_location: str | torch.device | None = None, restore_rng: bool = True
                    ) -> tuple[int, dict[str, Any]]:
    """Restore each named object from ``path``; returns ``(step, extra)``. Modules' tensors are
    moved to ``map_location`` before they are copied in (torch's word: nothing new is made on
    a device; None: each module's own device); optimizers and schedulers place their state
    themselves.

    Raises ``KeyError`` naming an object the checkpoint lacks.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    skeleton = json.loads(meta["states"])
    for name, obj in objects.items():
        if name not in skeleton:
            raise KeyError(f"checkpoint {path} has no state for {name!r} "
                           f"(it has {sorted(skeleton)})")
        state = _join(skeleton[name], tensors)
        if isinstance(obj, nn.Module):
            dev = resolve_device(map_location, next(obj.parameters(), None))
            state = {k: v.to(dev) for k, v in state.items()}
        obj.load_state_dict(state)
    if restore_rng and "rng/torch" in tensors:
        torch.set_rng_state(tensors["rng/torch"])
    return int(meta["step"]), json.loads(meta["extra"])


def save_weights(path: str | Path, model: nn.Module, config: dict[str, Any], *,
                 dtype: torch.dtype | None = None, notes: dict[str, Any] | None = None) -> Path:
    """Save a model's weights alone (optionally cast, e.g. to float16) with its ``config``
    (JSON) in the metadata, as shipped in ``em_accel/models/weights``."""
    from safetensors.torch import save_file

    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v)
             .detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"config": json.dumps(config), "notes": json.dumps(notes or {})}
    save_file(state, str(path), metadata=meta)
    return Path(path)


def read_weights(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """``(state_dict, config, notes)`` of a :func:`save_weights` file's bytes; floating tensors
    come back as float32. ValueError if the file has no ``config`` metadata."""
    from safetensors.torch import load

    n = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + n]).get("__metadata__", {})
    if "config" not in meta:
        raise ValueError("weights file has no 'config' metadata (write it with "
                         "em_accel.train.checkpoint.save_weights)")
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in load(data).items()}
    return state, json.loads(meta["config"]), json.loads(meta.get("notes", "{}"))
