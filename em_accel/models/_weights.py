"""The bytes of a weights file: shipped with the package (em_accel/models/weights) or a user's.
Every network's loader reads through these, then :func:`em_accel.train.checkpoint.read_weights`."""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def shipped_bytes(name: str) -> bytes:
    """Bytes of the shipped weights file ``name``; FileNotFoundError naming what is missing."""
    ref = resources.files("em_accel.models") / "weights" / name
    if not ref.is_file():
        raise FileNotFoundError(f"no shipped weights named {name!r} in em_accel/models/weights")
    return ref.read_bytes()


def file_bytes(path: str | Path) -> bytes:
    """Bytes of the weights file at ``path``; FileNotFoundError when there is none."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file {path}")
    return path.read_bytes()
