"""Loading models, checkpoints and data never executes code from the file.

A grep of the package for the calls that can (pickle and its relatives, torch.load without
weights_only=True, np.load with allow_pickle=True, eval/exec, yaml.load, TorchScript), and
behaviour checks: pickle payloads handed to the loaders raise and never run.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

PACKAGE = Path(__file__).resolve().parents[1] / "em_accel"

FORBIDDEN = [
    (re.compile(r"^\s*(import|from)\s+(pickle|cPickle|_pickle|dill|cloudpickle|marshal|shelve|"
                r"joblib)\b", re.M), "imports a pickle-family module"),
    (re.compile(r"\bpickle\.loads?\("), "unpickles"),
    (re.compile(r"allow_pickle\s*=\s*True"), "np.load(allow_pickle=True)"),
    (re.compile(r"(?<![\w.])(eval|exec)\s*\("), "calls builtin eval/exec"),
    (re.compile(r"\byaml\.(unsafe_)?load\((?![^)]*SafeLoader)"), "yaml.load without SafeLoader"),
    (re.compile(r"\btorch\.jit\.load\("), "loads TorchScript (runs code)"),
    (re.compile(r"\bread_pickle\("), "pandas.read_pickle"),
]
TORCH_LOAD = re.compile(r"\btorch\.load\(")


def _calls(text: str, start: int) -> str:
    """The text of the call opening at ``start`` (to its matching parenthesis)."""
    depth = 0
    for i in range(text.index("(", start), len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i + 1]
    return text[start:]


def test_package_has_no_code_executing_loaders():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(PACKAGE.parent)
        for pattern, why in FORBIDDEN:
            for m in pattern.finditer(text):
                problems.append(f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: {why}")
        for m in TORCH_LOAD.finditer(text):
            if not re.search(r"weights_only\s*=\s*True", _calls(text, m.start())):
                problems.append(f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: torch.load "
                                "without weights_only=True")
    assert not problems, "\n".join(problems)


class _Payload:
    """Unpickling this creates ``marker``: proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_payloads_are_refused_by_the_loaders(tmp_path):
    from em_accel.io import read_image
    from em_accel.models import load_weights
    from em_accel.train.checkpoint import load_checkpoint

    marker = tmp_path / "ran"
    npy = tmp_path / "evil.npy"
    np.save(npy, np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    weights = tmp_path / "evil.safetensors"
    torch.save({"w": _Payload(marker)}, weights)
    raw = tmp_path / "evil.pt"
    raw.write_bytes(pickle.dumps(_Payload(marker)))

    with pytest.raises(ValueError):
        read_image(npy)
    with pytest.raises(Exception):
        load_weights(weights)
    with pytest.raises(Exception):
        load_checkpoint(weights, {"model": torch.nn.Linear(1, 1)})
    with pytest.raises(Exception):
        load_weights(raw)
    assert not marker.exists()


def test_the_grep_sees_what_it_looks_for():
    bad = ["import pickle", "from dill import loads", "np.load(p, allow_pickle=True)", "y = eval(s)",
           "yaml.load(f)", "torch.jit.load(p)"]
    for snippet in bad:
        assert any(p.search(snippet) for p, _ in FORBIDDEN), snippet
    assert not any(p.search("model.eval()") for p, _ in FORBIDDEN)
    text = "sd = torch.load(p, map_location='cpu')"
    assert not re.search(r"weights_only\s*=\s*True", _calls(text, TORCH_LOAD.search(text).start()))
