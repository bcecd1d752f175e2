"""Durable atomic file replacement: a file is either the old version or the complete new one.

Writers put the new content in a temporary file next to the destination, then call
:func:`replace_durably`: fsync the temporary file, rename it over the destination
(``os.replace`` is atomic on POSIX and Windows), fsync the directory so the rename survives a
power cut. A process killed at any point leaves the old file (plus, at worst, a stale
temporary file that readers ignore and the next write replaces).
"""
from __future__ import annotations

import os
from pathlib import Path


def _fsync_path(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. directories cannot be opened on Windows: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_durably(tmp: str | Path, dest: str | Path) -> Path:
    """fsync ``tmp``, rename it to ``dest`` atomically, fsync ``dest``'s directory; returns dest."""
    tmp, dest = Path(tmp), Path(dest)
    _fsync_path(tmp)
    os.replace(tmp, dest)
    _fsync_path(dest.parent, directory=True)
    return dest


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and :func:`replace_durably`."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    return replace_durably(tmp, path)
