"""Helpers that carry the public API convention (docs/design.md): seeds, progress bars, devices."""
from __future__ import annotations

import sys
from typing import Iterable, TypeVar, Union

import numpy as np
import torch

#: What a ``seed`` parameter accepts: an int, None (fresh entropy) or a stream passed on.
Seed = Union[int, torch.Generator, None]
T = TypeVar("T")


def as_generator(seed: Seed, device: str | torch.device | None = None) -> torch.Generator:
    """A ``torch.Generator`` for ``seed``: the generator itself, one seeded with the int, or one
    seeded from fresh entropy for None. ``device`` is where a new generator draws (CPU default)."""
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator(device=torch.device(device) if device is not None else "cpu")
    if seed is None:
        g.seed()
        return g
    if isinstance(seed, (bool, float)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, a torch.Generator or None, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2 ** 64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return g.manual_seed(int(seed))


def as_numpy_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A ``numpy.random.Generator`` for ``seed`` (numpy-based image generators)."""
    if isinstance(seed, (bool, float, torch.Generator)):
        raise TypeError(f"seed must be an int, a numpy.random.Generator or None, got "
                        f"{type(seed).__name__}")
    return np.random.default_rng(seed)


def progress_enabled(progress: bool) -> bool:
    """Whether to draw a progress bar: asked for, and stderr is a terminal."""
    if callable(progress):
        raise TypeError("progress must be a bool (pass a per-step function as callback=), got "
                        f"{type(progress).__name__}")
    return bool(progress) and sys.stderr.isatty()


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_counter(total: int, progress: bool, **kwargs):
    """A tqdm bar of ``total`` steps on stderr (``update(n)``, ``close()``), or a silent
    stand-in with the same methods when :func:`progress_enabled` is false."""
    if not progress_enabled(progress):
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, file=sys.stderr, **kwargs)


def progress_bar(iterable: Iterable[T], progress: bool, **kwargs) -> Iterable[T]:
    """``iterable`` wrapped in a tqdm bar on stderr when :func:`progress_enabled`."""
    if not progress_enabled(progress):
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, file=sys.stderr, **kwargs)


def resolve_device(device: str | torch.device | None, *like: object) -> torch.device:
    """``device``, else the device of the first tensor in ``like``, else CPU."""
    if device is not None:
        return torch.device(device)
    for x in like:
        if isinstance(x, torch.Tensor):
            return x.device
    return torch.device("cpu")
