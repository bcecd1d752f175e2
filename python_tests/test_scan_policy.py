"""Adaptive scan policies: differentiable rollouts, networks, RDPG, baselines, CLI (tiny sizes)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from em_accel.models.adaptive import ScanActor, ScanCritic, ScanGenerator
from em_accel.scan import AdaptiveScanEnv, InvalidActionError
from em_accel.scan.policy_eval import paired_bootstrap, slads_positions
from em_accel.scan.policy_train import PolicyConfig, ScanTrainer
from em_accel.scan.rdpg import ReplayBuffer
from em_accel.scan.rollout import (ScanBudget, actor_rollout, angle_path, edge_penalties,
                                   env_rollout, scan_fixed, splat)
from em_accel.scan.static_paths import (path_length, random_walk_angles, spiral_positions,
                                        subgrid_positions)

TINY = ScanBudget(side=16, segments=4, probes=4)


def _images(n=3, side=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, side, side, generator=g) * 2 - 1


def test_angle_path_matches_environment():
    imgs = _images(3, 32)
    b = ScanBudget(side=32, segments=5, probes=6)
    ang = (torch.rand(3, 5, generator=torch.Generator().manual_seed(1)) * 2 - 1) * math.pi
    ang[:, 0] = b.first_angle
    env = AdaptiveScanEnv(imgs, segments=5, probes=6, mode="bilinear")
    for t in range(1, 5):
        env.step(ang[:, t].contiguous())
    values, positions = env.observed()
    torch.testing.assert_close(angle_path(ang, b), positions, atol=1e-4, rtol=0)
    torch.testing.assert_close(scan_fixed(imgs, angle_path(ang, b)), values, atol=1e-4, rtol=0)
    torch.testing.assert_close(edge_penalties(ang, b), env.episode_penalties()[:, 1:])


def test_bilinear_sampler_gradient_reaches_positions():
    # A smooth image: the autograd gradient w.r.t. a position equals a finite difference.
    y, x = torch.meshgrid(torch.arange(16.0) + 0.5, torch.arange(16.0) + 0.5, indexing="ij")
    img = (torch.sin(y / 3) * torch.cos(x / 4))[None].double()
    pos = torch.tensor([[[7.3, 5.6]]], dtype=torch.float64, requires_grad=True)
    scan_fixed(img, pos).sum().backward()
    eps = 1e-4
    for k in range(2):
        d = torch.zeros_like(pos)
        d[..., k] = eps
        fd = (scan_fixed(img, pos.detach() + d) - scan_fixed(img, pos.detach() - d)).item() / (2 * eps)
        assert pos.grad[0, 0, k].item() == pytest.approx(fd, rel=1e-4, abs=1e-8)
    assert pos.grad.abs().sum() > 0


def test_splat_values_mask_and_gradient():
    pos = torch.tensor([[[3.5, 4.5], [8.0, 8.0]]], requires_grad=True)
    vals = torch.tensor([[0.7, -0.2]], requires_grad=True)
    out = splat(vals, pos, 16)
    o = out.detach()
    assert out.shape == (1, 2, 16, 16)
    assert o[0, 1, 3, 4].item() == pytest.approx(1.0) and o[0, 0, 3, 4].item() == pytest.approx(0.7)
    assert o[0, 1].sum().item() == pytest.approx(2.0)  # weight 1 per probe inside
    ratio = o[0, 0, 7:9, 7:9] / o[0, 1, 7:9, 7:9]
    torch.testing.assert_close(ratio, torch.full((2, 2), -0.2))
    (out[0, 0] * torch.arange(256.0).reshape(16, 16)).sum().backward()
    assert pos.grad[0, 1].abs().sum() > 0 and vals.grad.abs().sum() > 0


def test_environment_rejects_bad_actions():
    env = AdaptiveScanEnv(_images(2), segments=3, probes=2)
    with pytest.raises(InvalidActionError, match="finite"):
        env.step(torch.tensor([0.1, float("nan")]))
    with pytest.raises(InvalidActionError, match="shape"):
        env.step(torch.zeros(3))
    with pytest.raises(ValueError):  # InvalidActionError is a ValueError
        env.step(torch.zeros(2, 3))
    with pytest.raises(TypeError):
        env.step([0.0, 0.0])
    env.step(torch.zeros(2))  # still usable after rejected actions
    assert env.t == 2


@pytest.mark.parametrize("core", ["lstm", "gru"])
def test_actor_and_critic(core):
    actor, critic = ScanActor(core, 8, 4, 16), ScanCritic(core, 8, 4, 16)
    roll = actor_rollout(actor, _images(), TINY)
    assert roll.positions.shape == (3, 16, 2) and roll.values.shape == (3, 16)
    assert (roll.angles.abs() < math.pi + 1e-6).all()
    assert roll.angles[:, 0].eq(TINY.first_angle).all()
    env_roll, pen = env_rollout(actor, _images(), TINY)
    torch.testing.assert_close(env_roll.positions, roll.positions.detach(), atol=1e-4, rtol=0)
    assert pen.shape == (3, 3)
    q, q2, state = critic(roll.values[:, :4].detach(), roll.positions[:, 4].detach(),
                          roll.angles[:, 1].detach(), critic.initial_state(3),
                          other=roll.angles[:, 1].detach() + 1)
    assert q.shape == (3,) and (q >= 0).all() and (q2 >= 0).all()
    with pytest.raises(ValueError, match="core"):
        ScanActor("rnn")


def test_generator_shapes_and_errors():
    g = ScanGenerator(4, 1)
    assert g(torch.zeros(2, 2, 16, 16)).shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="2, H, W"):
        g(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match="multiples of 4"):
        g(torch.zeros(1, 2, 18, 16))


def test_replay_buffer_capacity_and_state():
    g = torch.Generator().manual_seed(0)
    buf = ReplayBuffer(5, 4, 4, g)
    for i in range(3):
        buf.add(torch.full((2, 4), float(i)), torch.zeros(2, 16), torch.arange(2),
                torch.zeros(2, dtype=torch.long))
    assert len(buf) == 5
    state = buf.state_dict()
    other = ReplayBuffer(1, 4, 4, g)
    other.load_state_dict(state)
    assert len(other) == 5 and other.capacity == 5
    torch.testing.assert_close(other.angles[:5], buf.angles[:5])
    assert buf.sample(7).angles.shape == (7, 4)


def _cfg(mode, **kw):
    return PolicyConfig(mode=mode, hidden=8, gen_width=2, gen_blocks=1, batch=4,
                        budget=dict(side=16, segments=4, probes=4), **kw)


def test_rdpg_resume_equals_straight_run(tmp_path):
    torch.set_num_threads(1)
    imgs = _images(8)
    straight = ScanTrainer(_cfg("rdpg", buffer=6), imgs, tmp_path / "a")
    straight.train(4, progress=False)
    part = ScanTrainer(_cfg("rdpg", buffer=6), imgs, tmp_path / "b")
    part.train(2, progress=False)
    resumed = ScanTrainer(_cfg("rdpg", buffer=6), imgs, tmp_path / "b")
    assert resumed.step == 2 and len(resumed.rdpg.buffer) == 6
    resumed.train(4, progress=False)
    for name in ("actor", "generator"):
        for p, q in zip(getattr(straight, name).parameters(), getattr(resumed, name).parameters()):
            torch.testing.assert_close(p, q)
    for p, q in zip(straight.rdpg.critic.parameters(), resumed.rdpg.critic.parameters()):
        torch.testing.assert_close(p, q)


def test_gradient_learners_move_path_and_actor(tmp_path):
    imgs = _images(8)
    fixed = ScanTrainer(_cfg("fixed"), imgs, tmp_path / "f")
    before = fixed.angles.detach().clone()
    fixed.train(2, progress=False)
    assert not torch.equal(before, fixed.angles.detach())
    actor = ScanTrainer(_cfg("actor", core="gru"), imgs, tmp_path / "a")
    w = [p.detach().clone() for p in actor.actor.parameters()]
    actor.train(1, progress=False)
    assert any(not torch.equal(a, p) for a, p in zip(w, actor.actor.parameters()))


def test_static_paths_budget():
    b = ScanBudget()
    sp = spiral_positions(8.0, b)
    assert sp.shape == (400, 2)
    steps = (sp[1:] - sp[:-1]).norm(dim=1)
    assert steps.max() <= math.sqrt(2) + 1e-3 and steps.min() > 1.2  # chords of sqrt(2) px arcs
    grid = subgrid_positions(b)
    assert grid.shape == (400, 2) and len({tuple(p.tolist()) for p in grid}) == 400
    assert path_length(grid).item() == pytest.approx(20 * 19 * 4.8 + 19 * 4.8, rel=1e-4)
    walks = random_walk_angles(5, b, generator=torch.Generator().manual_seed(0))
    assert walks.shape == (5, 20) and walks[:, 0].eq(b.first_angle).all()


def test_slads_picks_new_probes():
    gen = ScanGenerator(2, 0).eval()
    pos = slads_positions(gen, _images(2), TINY, exclusion=1)
    assert pos.shape == (2, 16, 2)
    first = angle_path(torch.full((1, 4), TINY.first_angle), TINY)[0, :4]
    torch.testing.assert_close(pos[0, :4], first)
    picked = {tuple(p.tolist()) for p in pos[0, 4:]}
    assert len(picked) == 12  # distinct pixels


def test_paired_bootstrap():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    c = paired_bootstrap(a, a)
    assert c.diff == 0 and c.ci_low == 0 and c.ci_high == 0
    c = paired_bootstrap(a + torch.tensor([0.1, 0.2, 0.1, 0.2]), a)
    assert 0.1 - 1e-6 <= c.ci_low <= c.diff <= c.ci_high <= 0.2 + 1e-6
    assert c.relative == pytest.approx(0.15 / 2.5)
    assert c.ratio == pytest.approx(2.65 / 2.5) and c.lower == 0
    assert c.ratio_low <= c.ratio <= c.ratio_high
    with pytest.raises(ValueError, match="equal"):
        paired_bootstrap(a, a[:3])


def test_cli_run_on_a_file(tmp_path):
    pytest.importorskip("matplotlib")
    import argparse

    from em_accel.scan.policy_cli import register
    from em_accel.scan.policy_io import load_policy, save_policy

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))

    def main(argv):
        args = parser.parse_args(argv)
        return args.func(args)

    weights = tmp_path / "w.safetensors"
    save_policy(weights, ScanGenerator(2, 0, 0.1), actor=ScanActor("gru", 8))
    gen, actor, configs = load_policy(weights)
    assert actor is not None and configs["actor"]["core"] == "gru"
    img = tmp_path / "img.npy"
    np.save(img, np.random.default_rng(0).random((120, 130)).astype(np.float32))
    out = tmp_path / "fig.png"
    assert main(["scan-policy", "run", str(img), "-o", str(out), "--weights", str(weights),
                 "--tif", str(tmp_path / "c.tif")]) == 0
    assert out.stat().st_size > 1000 and (tmp_path / "c.tif").exists()
    with pytest.raises(SystemExit):
        main(["scan-policy", "run", str(img), "-o", str(out), "--weights", str(weights),
              "--crop", "100", "0"])


def test_shipped_policy_loads_and_scans():
    from em_accel.scan.policy_io import WEIGHTS_DIR, PRETRAINED_POLICY, load_policy

    path = WEIGHTS_DIR / PRETRAINED_POLICY
    assert path.stat().st_size <= 5 * 2 ** 20
    gen, actor, configs = load_policy()
    assert configs["budget"]["segments"] == 20 and configs["baselines"]["spiral_pitch"] > 0
    imgs = _images(2, 96)
    roll, _ = env_rollout(actor, imgs)
    assert roll.positions.shape == (2, 400, 2) and torch.isfinite(roll.angles).all()
    from em_accel.scan.policy_eval import completion

    assert completion(gen, imgs, roll.positions).shape == (2, 96, 96)
