"""ALRC fused op on the hot path: torch.compile(fullgraph=True) traces a training step with no
graph break and matches eager; no per-call rebuild of native parameters; on CUDA, the workspace
is reused and a fused forward + backward replays in a CUDA graph."""
from __future__ import annotations

import pytest
import torch
import torch._dynamo as dynamo

from em_accel.ops import alrc as alrc_ops
from em_accel.train import ALRC, DALRC


def _make(cls, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    return net, cls(mu1_start=3.0, mu2_start=12.0)


def _data(device="cpu"):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 1, 12, 12, generator=g)
    y = torch.randn(6, 1, 12, 12, generator=g)
    x[::3] *= 6.0  # spikes above the threshold, so clipping is exercised
    return x.to(device), y.to(device)


@pytest.mark.parametrize("cls", [ALRC, DALRC])
def test_fused_step_has_no_graph_break(cls):
    net, alrc = _make(cls)
    x, y = _data()

    def loss_fn(x, y):
        return alrc.fused(net(x), y, "squared").mean()

    dynamo.reset()
    explained = dynamo.explain(loss_fn)(x, y)
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1


@pytest.mark.parametrize("cls", [ALRC, DALRC])
def test_compiled_fullgraph_steps_match_eager(cls):
    x, y = _data()
    results = []
    for compiled in (False, True):
        net, alrc = _make(cls)
        opt = torch.optim.SGD(net.parameters(), lr=1e-2)

        def loss_fn(x, y):
            return alrc.fused(net(x), y, "squared").mean()

        dynamo.reset()
        fn = torch.compile(loss_fn, fullgraph=True, backend="aot_eager") if compiled else loss_fn
        losses = []
        for _ in range(3):
            loss = fn(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.detach())
        results.append((torch.stack(losses), alrc.mu1.clone(), alrc.mu2.clone(),
                        net.weight.detach().clone()))
    for eager, comp in zip(*results):
        torch.testing.assert_close(comp, eager, rtol=1e-5, atol=1e-7)
    assert not torch.equal(results[0][1], torch.tensor(3.0))  # the moments did move


def test_native_params_built_once_per_configuration():
    alrc_ops._cached_params.cache_clear()
    args = alrc_ops.sample_inputs("cpu", torch.float32, 4, (8, 8))
    for _ in range(3):
        alrc_ops.alrc_fused(*args)
    info = alrc_ops._cached_params.cache_info()
    assert info.misses == 1 and info.hits >= 2


def test_dalrc_keeps_mean_when_every_loss_is_non_finite():
    d = DALRC(mu1_start=3.0, mu2_start=12.0, norm_start=0.5)
    d(torch.tensor([float("nan"), float("inf")]))
    assert d.loss_mean.item() == 0.5
    d(torch.tensor([1.0, 2.0]))
    assert d.loss_mean.item() != 0.5


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_workspace_reused_between_calls():
    from em_accel.ops._common import _WORKSPACES

    args = alrc_ops.sample_inputs("cuda", torch.float32, 8, (64, 64))
    alrc_ops.alrc_fused(*args)
    ptrs = {k: v.data_ptr() for k, v in _WORKSPACES.items()}
    alrc_ops.alrc_fused(*args)
    assert ptrs and {k: v.data_ptr() for k, v in _WORKSPACES.items()} == ptrs


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_replay_matches_eager(dtype):
    args = alrc_ops.sample_inputs("cuda", dtype, 16, (128, 128), requires_grad=True)
    pred = args[0]

    def step():
        out = alrc_ops.alrc_fused(*args)
        return out[0], out[2], torch.autograd.grad(out[0].sum(), pred)[0]

    want = step()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as CUDA graphs require
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        got = step()
    with torch.no_grad():
        pred.mul_(1.0)  # same values: the replay must reproduce the eager result
    graph.replay()
    torch.cuda.synchronize()
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


@pytest.mark.parametrize("per_pixel", [False, True])
def test_eager_path_equals_custom_op(per_pixel):
    args = alrc_ops.sample_inputs("cpu", torch.float32, 6, (9, 7), per_pixel, requires_grad=True)
    want = alrc_ops.alrc_fused(*args)
    got = alrc_ops.fused_loss(*args)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    target = args[1].clone().requires_grad_(True)
    args2 = (args[0], target, *args[2:])
    gw = torch.autograd.grad(alrc_ops.alrc_fused(*args2)[0].sum(), (args[0], target))
    gg = torch.autograd.grad(alrc_ops.fused_loss(*args2)[0].sum(), (args[0], target))
    for g, w in zip(gg, gw):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_eager_path_refuses_double_backward():
    args = alrc_ops.sample_inputs("cpu", torch.float64, 4, (5, 5), requires_grad=True)
    g, = torch.autograd.grad(alrc_ops.fused_loss(*args)[0].sum(), args[0], create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()
