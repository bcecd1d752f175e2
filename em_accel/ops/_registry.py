"""The record each op family publishes in its OP_SPECS list (collected in em_accel.ops.OPS)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class OpSpec:
    name: str                # torch.ops.em_accel.<name>
    reference: Callable      # pure-torch reference with the same signature
    sample_inputs: Callable  # (device, dtype, requires_grad=...) -> args tuple
    differentiable: bool     # autograd registered (False: the op says it has none)
    bench_family: str        # python -m bench <family> times it
