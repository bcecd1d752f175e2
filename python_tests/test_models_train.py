"""Training loop pieces: loss, schedule, metrics, checkpoints, and exact resume after a kill."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from em_accel.data import NoisyCropDataset, synthetic_images
from em_accel.models import AtrousDenoiser
from em_accel.train.checkpoint import load_checkpoint, save_checkpoint
from em_accel.train.loop import Trainer, TrainConfig, huberised, lr_factor, read_log
from em_accel.train.metrics import mean_and_sem, mse, psnr, ssim, ssim_numpy

SETUP = """
import torch
from em_accel.data import NoisyCropDataset, synthetic_images
from em_accel.models import AtrousDenoiser
from em_accel.train.loop import Trainer, TrainConfig
torch.set_num_threads(1)
torch.manual_seed(0)
ds = NoisyCropDataset(synthetic_images(2, 48, seed=0), 32, "low", seed=3)
model = AtrousDenoiser(width=0.0625, depth=0)
cfg = TrainConfig(steps=8, batch_size=2, checkpoint_every=3, log_every=1, warmup_steps=2)
"""


def _make():
    namespace: dict = {}
    exec(SETUP, namespace)
    return namespace["model"], namespace["ds"], namespace["cfg"]


def test_killed_run_resumes_exactly(tmp_path):
    """SIGKILL a run after step 5 (last checkpoint at 3), resume, compare with a clean run."""
    killed = tmp_path / "killed"
    script = SETUP + textwrap.dedent(f"""
        import os, signal
        def stop(trainer, rec):
            if trainer.step == 5:
                os.kill(os.getpid(), signal.SIGKILL)
        Trainer(model, ds, cfg, {str(killed)!r}, progress=False).fit(callback=stop)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert [r["step"] for r in read_log(killed)] == [1, 2, 3, 4, 5]

    torch.set_num_threads(1)
    try:
        model, ds, cfg = _make()
        resumed = Trainer(model, ds, cfg, killed, progress=False)
        resumed.fit()
        assert resumed.step == 8
        model2, ds2, cfg2 = _make()
        clean = Trainer(model2, ds2, cfg2, tmp_path / "clean", progress=False)
        clean.fit()
    finally:
        torch.set_num_threads(int(os.environ.get("EM_TEST_THREADS", os.cpu_count() or 1)))
    for (name, a), (_, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert torch.equal(a, b), name
    assert torch.equal(resumed.alrc.mu1, clean.alrc.mu1)
    assert [r["step"] for r in read_log(killed)] == list(range(1, 9))
    assert [r["loss"] for r in read_log(killed)] == [r["loss"] for r in read_log(tmp_path / "clean")]


def test_checkpoint_roundtrip_restores_optimizer_and_scheduler(tmp_path):
    model, ds, cfg = _make()
    tr = Trainer(model, ds, cfg, None, progress=False)
    cfg.steps = 2
    tr.fit()
    save_checkpoint(tmp_path / "c.safetensors", tr._objects(), tr.step, {"note": "x"})
    model2, ds2, cfg2 = _make()
    tr2 = Trainer(model2, ds2, cfg2, None, progress=False)
    step, extra = load_checkpoint(tmp_path / "c.safetensors", tr2._objects())
    assert step == 2 and extra == {"note": "x"}
    s1, s2 = tr.optimizer.state_dict(), tr2.optimizer.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for k in s1["state"]:
        for key in s1["state"][k]:
            assert torch.equal(s1["state"][k][key], s2["state"][k][key])
    assert tr2.scheduler.last_epoch == 2
    with pytest.raises(KeyError, match="nothing"):
        load_checkpoint(tmp_path / "c.safetensors", {"nothing": model2})


def test_fused_and_module_alrc_give_the_same_loss_and_step(device):
    torch.manual_seed(0)
    pred = torch.rand(4, 1, 16, 16, device=device)
    target = torch.rand(4, 1, 16, 16, device=device)
    losses, mus, params = [], [], []
    for mode in ("fused", "module"):
        model, ds, cfg = _make()
        cfg.alrc = mode
        cfg.l2 = 0.0
        tr = Trainer(model, ds, cfg, None, device=device, progress=False)
        losses.append(tr.loss(pred, target)[0])
        mus.append(tr.alrc.mu1.clone())
        tr.train_step((ds[0][0][None], ds[0][1][None]))
        params.append(next(tr.model.parameters()).detach().clone())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mus[0], mus[1])
    torch.testing.assert_close(params[0], params[1], rtol=1e-4, atol=1e-6)


def test_dataloader_workers_give_the_same_batches():
    model, ds, cfg = _make()
    cfg.steps, cfg.workers = 3, 2
    tr = Trainer(model, ds, cfg, None, progress=False)
    got = list(tr._batches(1))
    cfg.workers = 0
    want = list(tr._batches(1))
    assert len(got) == len(want) == 2
    for (a, b), (c, d) in zip(got, want):
        assert torch.equal(a, c) and torch.equal(b, d)


def test_huberised_loss_hand_values():
    m = torch.tensor([0.0005, 0.001, 0.004, 0.1])
    torch.testing.assert_close(huberised(m), torch.tensor([0.5, 1.0, 2.0, 10.0]))


def test_lr_schedules():
    c = TrainConfig(steps=100, warmup_steps=10, schedule="cosine", final_lr_fraction=0.0)
    assert lr_factor(0, c) == pytest.approx(0.1)
    assert lr_factor(10, c) == pytest.approx(1.0)
    assert lr_factor(55, c) == pytest.approx(0.5)
    assert lr_factor(100, c) == pytest.approx(0.0, abs=1e-12)
    s = TrainConfig(steps=100, schedule="step")
    assert [lr_factor(k, s) for k in (0, 60, 80)] == [1.0, 0.1, 0.01]
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0, TrainConfig(schedule="exp"))


def test_training_reduces_the_error():
    torch.manual_seed(0)
    ds = NoisyCropDataset(synthetic_images(2, 64, seed=0), 32, "low", seed=0)
    cfg = TrainConfig(steps=30, batch_size=4, lr=3e-3, log_every=1, schedule="constant")
    records = Trainer(AtrousDenoiser(width=0.0625, depth=0), ds, cfg, None, progress=False).fit()
    first, last = np.mean([r["mse"] for r in records[:5]]), np.mean([r["mse"] for r in records[-5:]])
    assert last < 0.5 * first


def test_metrics_hand_values():
    a = torch.zeros(2, 1, 4, 4)
    b = torch.full((2, 1, 4, 4), 0.1)
    torch.testing.assert_close(mse(a, b), torch.full((2, 1), 0.01))
    torch.testing.assert_close(psnr(a, b), torch.full((2, 1), 20.0))
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(ssim(x, x), torch.ones(2))
    assert float(ssim(x, x + 0.2 * torch.randn_like(x))[0]) < 0.9
    img = np.random.default_rng(0).random((32, 32))
    assert ssim_numpy(img, img) == pytest.approx(1.0)
    m, se = mean_and_sem([1.0, 2.0, 3.0, 4.0])
    assert m == 2.5 and se == pytest.approx(math.sqrt(5 / 3) / 2)
    with pytest.raises(ValueError):
        mse(a, b[:1])
