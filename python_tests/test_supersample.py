"""The ALRC supersampling demonstration: network shape, data, a short run end to end."""
from __future__ import annotations

import math

import torch

from em_accel.train.supersample import (CropSampler, RunResult, SupersamplingNet, TRAIN_IMAGES,
                                        degrade, train_run)


def test_network_and_degradation_shapes():
    net = SupersamplingNet()
    x = torch.randn(2, 1, 32, 32)
    assert net(degrade(x)).shape == x.shape
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128] + [128] * 6 + [64, 1]
    # Bilinear down/up keeps a linear ramp (exactly representable) unchanged.
    ramp = torch.arange(32.0).expand(1, 1, 32, 32)
    torch.testing.assert_close(degrade(ramp), ramp, rtol=0, atol=1e-4)


def test_crops_are_standardised_and_reproducible():
    a, b = CropSampler(TRAIN_IMAGES, seed=3).batch(8), CropSampler(TRAIN_IMAGES, seed=3).batch(8)
    assert torch.equal(a, b) and a.shape == (8, 1, 32, 32)
    flat = a.flatten(1)
    assert torch.allclose(flat.mean(1), torch.zeros(8), atol=1e-5)
    assert bool((flat.std(1, unbiased=False) <= 1.0 + 1e-4).all())


def test_short_run_learns_and_alrc_records_moments():
    r = train_run("squared", use_alrc=True, steps=40, width=16, eval_every=10)
    assert len(r.losses) == 40 and r.eval_steps[0] == 0 and r.eval_steps[-1] == 39
    assert all(math.isfinite(v) for v in r.losses)
    assert r.eval_losses[-1] < r.eval_losses[0]  # the held-out loss falls


def test_spike_counters():
    r = RunResult("squared", False, 6, 1e-3, [1.0] * 60 + [20.0], [0, 1, 2, 3],
                  [1.0, 0.5, 1.5, math.nan], 0.0)
    assert r.spikes(factor=10, window=50) == 1
    assert r.eval_spikes(factor=2.0) == 2  # 1.5 > 2 * 0.5, and the NaN
