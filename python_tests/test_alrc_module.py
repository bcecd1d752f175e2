"""em_accel.train.ALRC and its variants: clipping, state, per-element moments, bad input."""
from __future__ import annotations

import math

import pytest
import torch

from em_accel.train import ALRC, CLRC, DALRC


def test_generic_and_fused_paths_agree(device):
    torch.manual_seed(0)
    pred = (torch.randn(8, 32, 32, device=device) * torch.tensor([1, 1, 5, 1, 1, 1, 1, 9.0],
            device=device).view(8, 1, 1)).requires_grad_(True)
    target = torch.randn(8, 32, 32, device=device)
    a, b = ALRC(mu1_start=3.0, mu2_start=10.0).to(device), ALRC(mu1_start=3.0, mu2_start=10.0).to(device)
    generic = a(((pred - target) ** 2).mean(dim=(1, 2)))
    fused = b.fused(pred, target, "squared")
    torch.testing.assert_close(fused, generic, rtol=1e-5, atol=0)
    torch.testing.assert_close(a.mu1, b.mu1)
    torch.testing.assert_close(a.mu2, b.mu2)
    g1 = torch.autograd.grad(generic.sum(), pred)[0]
    g2 = torch.autograd.grad(fused.sum(), pred)[0]
    torch.testing.assert_close(g2, g1, rtol=1e-5, atol=1e-9)
    up, _ = ALRC(mu1_start=3.0, mu2_start=10.0).thresholds()
    assert generic.max().item() == pytest.approx(up.item())  # the two spikes hit the threshold


def test_state_dict_round_trip_and_eval_mode():
    a = ALRC(n_up=2.0, decay=0.9, mu1_start=1.0, mu2_start=2.0)
    for _ in range(5):
        a(torch.rand(4) * 3)
    state = a.state_dict()
    assert set(state) == {"mu1", "mu2"}
    b = ALRC(n_up=2.0, decay=0.9)
    b.load_state_dict(state)
    assert b.mu1.item() == a.mu1.item() and b.mu2.item() == a.mu2.item()
    b.eval()
    before = (b.mu1.item(), b.mu2.item())
    b(torch.tensor([100.0, 0.5]))
    assert (b.mu1.item(), b.mu2.item()) == before  # eval: clip, but never update


def test_per_element_moments_clip_each_pixel_separately():
    a = ALRC(decay=0.5, mu1_start=1.0, mu2_start=2.0, moments_shape=(2, 2))  # threshold 4 everywhere
    losses = torch.tensor([[[1.0, 10.0], [3.0, 0.5]]], requires_grad=True)
    out = a(losses)
    assert out.tolist() == [[[1.0, 4.0], [3.0, 0.5]]]
    out.sum().backward()
    torch.testing.assert_close(losses.grad, torch.tensor([[[1.0, 0.4], [1.0, 1.0]]]))
    assert a.mu1.tolist() == [[1.0, 2.5], [2.0, 0.75]]
    pred = torch.randn(3, 2, 2, requires_grad=True)
    fused = a.fused(pred, torch.zeros(3, 2, 2), "absolute")
    assert fused.shape == (3, 2, 2)


def test_two_sided_lower_clip():
    a = ALRC(n_up=3.0, n_down=1.0, mu1_start=10.0, mu2_start=104.0)  # sigma 2: keep [8, 16]
    losses = torch.tensor([4.0, 10.0, 30.0], requires_grad=True)
    out = a(losses)
    assert out.tolist() == pytest.approx([8.0, 10.0, 16.0])
    out.sum().backward()
    assert losses.grad.tolist() == pytest.approx([2.0, 1.0, 16.0 / 30.0])


def test_clrc_fixed_threshold():
    c = CLRC(threshold=5.0)
    losses = torch.tensor([1.0, 50.0, math.nan], requires_grad=True)
    out = c(losses)
    assert out[:2].tolist() == pytest.approx([1.0, 5.0]) and math.isnan(out[2].item())
    out[:2].sum().backward()
    assert losses.grad[:2].tolist() == pytest.approx([1.0, 0.1])


def test_dalrc_normalises_by_running_mean():
    d = DALRC(decay=0.9, mu1_start=2.0, mu2_start=5.0, norm_decay=0.5, norm_start=1.0)
    out = d(torch.tensor([1.0, 3.0]))
    assert d.loss_mean.item() == pytest.approx(0.5 * 1.0 + 0.5 * 2.0)
    assert out.tolist() == pytest.approx([1.0 / 1.5, 3.0 / 1.5])
    assert "loss_mean" in d.state_dict()


def test_alrc_damps_a_spike_in_training():
    # One example's gradient explodes; with ALRC its update is capped at threshold/loss.
    torch.manual_seed(0)
    w = torch.zeros(1, requires_grad=True)
    alrc = ALRC(mu1_start=1.0, mu2_start=1.5)
    x = torch.ones(16)
    x[3] = 1000.0
    losses = (w - x) ** 2
    clipped = alrc(losses)
    (g_clip,) = torch.autograd.grad(clipped.mean(), w)
    (g_raw,) = torch.autograd.grad(((w - x) ** 2).mean(), w)
    assert abs(g_clip.item()) < abs(g_raw.item()) / 50


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"n_up": 0.0}, ValueError, "n_up"),
    ({"n_down": -1.0}, ValueError, "n_down"),
    ({"decay": 1.5}, ValueError, "decay"),
    ({"mu1_start": 10.0, "mu2_start": 50.0}, ValueError, "mu2_start > mu1_start"),
])
def test_bad_constructor_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ALRC(**kwargs)


def test_bad_losses():
    a = ALRC()
    with pytest.raises(ValueError, match=r"losses must have shape \[B"):
        a(torch.ones(2, 3))
    with pytest.raises(TypeError, match="floating-point"):
        a(torch.ones(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="error must be one of"):
        a.fused(torch.ones(2, 3), torch.ones(2, 3), "cubic")
    with pytest.raises(RuntimeError, match="ALRC moments are on cpu"):
        a(torch.ones(3, device="meta"))
