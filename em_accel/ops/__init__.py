"""Native kernels as torch custom ops (``torch.ops.em_accel.*``), each with its reference.

Every op is reachable as ``em_accel.ops.<name>`` (e.g. ``em_accel.ops.scan_sample``) and in
its family module (``em_accel.ops.scan``). ``OPS`` lists every op with its companions;
python_tests/test_conformance.py checks that each has a reference, a fake kernel, autograd (or
says it has none), a benchmark and sample inputs.
"""
from __future__ import annotations

import importlib
import importlib.util

from ._registry import OpSpec
from .alrc import ALRCResult, alrc_mae, alrc_mse, alrc_quartic

# Each family module defines OP_SPECS: list[OpSpec]; its ops register on import.
FAMILIES = ("alrc", "scan", "scan_segment", "tsne", "multislice")


def _collect() -> list[OpSpec]:
    """Every family's OP_SPECS; each op's function is also published as em_accel.ops.<name>."""
    specs: list[OpSpec] = []
    for family in FAMILIES:
        name = f"{__name__}.{family}"
        if importlib.util.find_spec(name) is not None:
            module = importlib.import_module(name)
            for spec in module.OP_SPECS:
                globals()[spec.name] = getattr(module, spec.name)
                __all__.append(spec.name)
            specs.extend(module.OP_SPECS)
    return specs


__all__ = ["OPS", "OpSpec", "ALRCResult", "alrc_mse", "alrc_mae", "alrc_quartic"]
OPS: list[OpSpec] = _collect()
