"""AdaptiveScanEnv: hand-computed paths, a spiral expressed as actions, penalties, devices."""
from __future__ import annotations

import math

import pytest
import torch

from em_accel.scan import AdaptiveScanEnv, scan_rasterize, scan_sample, spiral


def _ramp(B: int, H: int, W: int, dtype=torch.float64) -> torch.Tensor:
    # value = 1000*b + 100*row + col, so every sample names its pixel.
    b = torch.arange(B, dtype=dtype)[:, None, None]
    r = torch.arange(H, dtype=dtype)[None, :, None]
    c = torch.arange(W, dtype=dtype)[None, None, :]
    return (1000 * b + 100 * r + c).contiguous()


def test_fixed_actions_reproduce_hand_computed_path(device):
    images = _ramp(2, 10, 10).to(device)
    env = AdaptiveScanEnv(images, segments=4, probes=3, step=1.0, first_angle=0.0,
                          edge_penalty=0.05)
    # Segment 0 (fixed, angle 0 = +row) from the centre (5, 5): rows 5, 6, 7 -> next start (8, 5).
    assert env.values[:, :3].tolist() == [[505, 605, 705], [1505, 1605, 1705]]
    # Segment 1: vector steps (0, -1) for element 0 and (-1, 1) for element 1.
    seg = env.step(torch.tensor([[0.0, -1.0], [-1.0, 1.0]], dtype=torch.float64, device=device))
    assert seg.positions[0].tolist() == [[8, 5], [8, 4], [8, 3]]
    assert seg.positions[1].tolist() == [[8, 5], [7, 6], [6, 7]]
    assert seg.values.tolist() == [[805, 804, 803], [1805, 1706, 1607]]
    assert seg.penalty.tolist() == [0.0, 0.0]
    # Segment 2: angle pi (-row) for both; element 1 starts at (5, 8). Rows 8, 7, 6 and 5, 4, 3.
    seg = env.step(torch.tensor([math.pi, math.pi], dtype=torch.float64, device=device))
    assert seg.values.tolist() == [[802, 702, 602], [1508, 1408, 1308]]
    # Segment 3: element 0 from (5, 2) leaves through the left edge (cols 2, -2, -6 -> clamp 0),
    # next start (5, -10): penalised; element 1 from (2, 8) moves (0.5, 0.5) and stays inside.
    seg = env.step(torch.tensor([[0.0, -4.0], [0.5, 0.5]], dtype=torch.float64, device=device))
    assert seg.values.tolist() == [[502, 500, 500], [1208, 1208, 1309]]
    assert seg.penalty.tolist() == [0.05, 0.0]
    assert seg.done and env.done
    assert env.episode_penalties().sum(1).tolist() == [0.05, 0.0]
    assert env.start.tolist() == [[5.0, -10.0], [3.5, 9.5]]
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step(torch.zeros(2, dtype=torch.float64, device=device))
    # The partial scan: 12 probes per element, element 0 visits (5,0) twice.
    r = env.partial_scan()
    assert r.counts[0, 5, 0] == 2 and r.mask[0].sum() == 11
    assert r.image[1, 6, 7] == 1607


def test_thesis_defaults_first_segment_and_coverage():
    images = torch.rand(3, 96, 96)
    env = AdaptiveScanEnv(images)
    assert env.positions.shape == (3, 400, 2) and env.t == 1
    # First segment: from (48, 48) along pi/4 with step sqrt(2): (48 + i, 48 + i) up to rounding.
    torch.testing.assert_close(env.positions[0, :20],
                               48 + torch.arange(20.0)[:, None].expand(20, 2), rtol=0, atol=1e-5)
    torch.manual_seed(0)
    with torch.no_grad():
        while not env.done:
            env.step(torch.rand(3) * 2 * math.pi - math.pi)
    values, positions = env.observed()
    torch.testing.assert_close(values, scan_sample(images, positions))
    assert 400 / 96 ** 2 == 1 / 23.04
    assert bool((env.coverage <= 1 / 23.04 + 1e-9).all())


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_spiral_as_actions_matches_static_sampler(device, mode):
    path = spiral((32, 32), 0.2)
    pos = path.positions.double()
    # One probe per segment: each action is the step to the next spiral probe.
    steps = torch.cat([pos[1:] - pos[:-1], torch.zeros(1, 2, dtype=torch.float64)])
    images = torch.rand(2, 32, 32, dtype=torch.float64, device=device)
    kw = dict(counts_per_intensity=30.0, read_noise=0.01, seed=17)
    env = AdaptiveScanEnv(images, segments=len(pos), probes=1, first_angle=None,
                          start=tuple(pos[0].tolist()), mode=mode, **kw)
    with torch.no_grad():
        for k in range(len(pos)):
            env.step(steps[k].to(device).expand(2, 2))
    expected_pos = pos.to(device).expand(2, -1, -1)
    torch.testing.assert_close(env.positions, expected_pos, rtol=0, atol=1e-10)
    static = scan_sample(images, expected_pos.contiguous(), mode, **kw)
    if mode == "nearest":
        assert torch.equal(env.values, static)
    else:
        torch.testing.assert_close(env.values, static, rtol=1e-9, atol=1e-9)
    r = env.partial_scan()
    rs = scan_rasterize(static, expected_pos, (32, 32))
    assert torch.equal(r.mask, rs.mask)


def test_reset_and_bad_actions(device):
    images = torch.rand(2, 16, 16, device=device)
    env = AdaptiveScanEnv(images, segments=2, probes=4)
    first = env.values[:, :4].clone()
    env.step(torch.zeros(2, device=device))
    env.reset()
    assert env.t == 1 and torch.equal(env.values[:, :4], first)
    assert env.observed()[0].shape == (2, 4)
    with pytest.raises(ValueError, match="actions"):
        env.step(torch.zeros(3, device=device))
    with pytest.raises(TypeError, match="actions"):
        env.step([0.0, 0.0])
    with pytest.raises(ValueError, match="segments"):
        AdaptiveScanEnv(images, segments=0)
    with pytest.raises(TypeError, match="images"):
        AdaptiveScanEnv(images.int())
    # New images on reset.
    other = torch.rand(2, 16, 16, device=device)
    env.reset(other)
    torch.testing.assert_close(env.values[:, :4],
                               scan_sample(other, env.positions[:, :4].contiguous()))


def test_segment_op_matches_its_reference_with_noise_and_step_actions():
    """em_accel::scan_segment (the op the environment steps with): every output against the
    reference, for angle and step actions, with shot and read noise keyed by episode index."""
    from em_accel.ops.scan_segment import sample_inputs, scan_segment, scan_segment_reference

    for dtype in (torch.float32, torch.float64):
        args = list(sample_inputs("cpu", dtype))
        args[11], args[12] = 40.0, 0.01  # counts_per_intensity, read_noise
        for actions in (args[2], torch.stack([args[2].cos(), args[2].sin()], -1) * 1.1):
            args[2] = actions.contiguous()
            got, want = scan_segment(*args), scan_segment_reference(*args)
            tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else {}
            for g, w in zip(got, want):
                torch.testing.assert_close(g, w.to(g.dtype), **tol)
            assert got[3][-1] == pytest.approx(0.05)  # the last element left the image
            assert not got[1][:, :4].any() and not got[1][:, 8:].any()  # other segments kept


def test_segment_op_rejects_bad_buffers():
    from em_accel.ops.scan_segment import sample_inputs, scan_segment

    args = list(sample_inputs())
    args[5] = 10  # offset + probes past the buffers' 12 columns
    with pytest.raises(ValueError, match="offset"):
        scan_segment(*args)
