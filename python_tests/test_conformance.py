"""Every op in em_accel.ops.OPS has its companions: reference, fake, autograd, bench, opcheck."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from em_accel.ops import OPS

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _first_tensor_output(out):
    return out[0] if isinstance(out, (tuple, list)) else out


@pytest.mark.parametrize("spec", OPS, ids=[s.name for s in OPS])
def test_op_has_companions(spec):
    op = getattr(torch.ops.em_accel, spec.name).default
    args = spec.sample_inputs("cpu", torch.float32)
    torch.library.opcheck(op, args)  # includes the fake (meta) implementation
    got = _first_tensor_output(op(*args))
    want = _first_tensor_output(spec.reference(*args))
    torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-4, atol=1e-5)
    assert (BENCH / f"bench_{spec.bench_family}.py").is_file()


@pytest.mark.parametrize("spec", [s for s in OPS if s.differentiable], ids=lambda s: s.name)
def test_differentiable_ops_have_autograd(spec):
    op = getattr(torch.ops.em_accel, spec.name).default
    args = spec.sample_inputs("cpu", torch.float64, requires_grad=True)
    inputs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    assert inputs, "sample_inputs(requires_grad=True) must return a tensor requiring grad"
    out = _first_tensor_output(op(*args))
    grads = torch.autograd.grad(out.sum(), inputs)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
