"""Native kernels as torch custom ops (``torch.ops.em_accel.*``), each with its reference.

``OPS`` lists every op with its companions; python_tests/test_conformance.py checks that each
has a reference, a fake kernel, autograd (or says it has none), a benchmark and sample inputs.
"""
from __future__ import annotations

import importlib
import importlib.util

from ._registry import OpSpec
from .alrc import ALRCResult, alrc_mae, alrc_mse, alrc_quartic

# Each family module defines OP_SPECS: list[OpSpec]; its ops register on import.
FAMILIES = ("alrc", "scan", "tsne", "multislice")


def _collect() -> list[OpSpec]:
    specs: list[OpSpec] = []
    for family in FAMILIES:
        name = f"{__name__}.{family}"
        if importlib.util.find_spec(name) is not None:
            specs.extend(importlib.import_module(name).OP_SPECS)
    return specs


OPS: list[OpSpec] = _collect()

__all__ = ["OPS", "OpSpec", "ALRCResult", "alrc_mse", "alrc_mae", "alrc_quartic"]
