"""NativeOp: plain eager calls skip the custom-op dispatcher (and its first-call torch._dynamo
import); anything that traces, transforms or records gradients still goes through the op."""
from __future__ import annotations

import subprocess
import sys

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from em_accel import ops
from em_accel.ops._common import NativeOp
from em_accel.ops.scan import scan_sample_op
from em_accel.ops.tsne import tsne_repulsive_exact

ROOT = __file__.rsplit("/python_tests/", 1)[0]


def native_ops() -> dict[str, NativeOp]:
    """Every NativeOp of the op families, by short name."""
    found = {}
    for family in ops.FAMILIES:
        module = sys.modules[f"em_accel.ops.{family}"]
        for obj in vars(module).values():
            if isinstance(obj, NativeOp):
                found[obj.name.split("::")[1]] = obj
    return found


def test_every_op_but_alrc_is_native():
    # ALRC keeps its own eager autograd.Function (ops.alrc.fused_loss); the rest share NativeOp.
    assert {s.name for s in ops.OPS if not s.name.startswith("alrc")} <= set(native_ops())


def test_eager_calls_never_import_dynamo():
    # A fresh process: a t-SNE run, a scan and a multislice op must not pay the ~1-2 s import.
    code = (
        "import sys, torch\n"
        "from em_accel.embed import tsne\n"
        "from em_accel import ops\n"
        "from python_tests.test_native_op import native_ops\n"
        "tsne(torch.randn(200, 5), n_iter=20, seed=0, progress=False)\n"
        "for spec in ops.OPS:\n"
        "    if spec.name in native_ops():\n"
        "        native_ops()[spec.name](*spec.sample_inputs('cpu', torch.float32))\n"
        "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_direct_call_equals_the_op():
    y = torch.randn(64, 2, dtype=torch.float64)
    direct = tsne_repulsive_exact(y)
    dispatched = torch.ops.em_accel.tsne_repulsive_exact(y)
    for a, b in zip(direct, dispatched):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_fake_tensors_reach_the_fake_kernel():
    with FakeTensorMode() as mode:
        y = mode.from_tensor(torch.randn(16, 2))
        force, _ = tsne_repulsive_exact(y)  # the real kernel would read a fake pointer
    assert force.shape == (16, 2)


def test_gradients_still_recorded():
    images = torch.rand(1, 8, 8, dtype=torch.float64, requires_grad=True)
    positions = torch.tensor([[[2.5, 3.25], [4.0, 1.5]]], dtype=torch.float64)
    values = scan_sample_op(images, positions, 0, 0, 0.0, 0.0)
    (grad,) = torch.autograd.grad(values.sum(), images)
    assert grad.sum().item() == 2.0  # bilinear weights of each probe sum to 1


def test_compile_sees_one_opaque_op():
    # fullgraph: a graph break (dynamo tracing into the Python implementation) would raise.
    f = torch.compile(lambda y: tsne_repulsive_exact(y)[0] * 2, fullgraph=True, backend="aot_eager")
    y = torch.randn(32, 2)
    torch.testing.assert_close(f(y), tsne_repulsive_exact(y)[0] * 2)
