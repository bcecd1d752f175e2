"""AtrousDenoiser and the building blocks: sizes against the thesis's table, block maths."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from em_accel.models import (ASPP, AtrousDenoiser, SeparableConv2d, XceptionBlock,
                             count_parameters, spectral_normalize, weight_normalize)


def _expected_full_parameters() -> int:
    """Parameter count of the thesis's denoiser, written out from the released code's layer table.

    sep(i→o): depthwise 9i + pointwise i·o + affine 2o; 1×1(i→o): i·o + 2o;
    transposed 3×3(i→o): 9·i·o + 2o. Every Xception block whose shape changes has a 1×1 res.
    """
    def sep(i, o):
        return 9 * i + i * o + 2 * o

    def one(i, o):
        return i * o + 2 * o

    total = 0
    for cin, (a, b, c) in ((1, (64, 64, 128)), (128, (128, 128, 128)), (128, (256, 256, 256)),
                           (256, (728, 728, 728))):
        total += sep(cin, a) + sep(a, b) + sep(b, c) + one(cin, c)           # B0..B3
    total += 12 * 3 * sep(728, 728)                                          # B4 + 11 middle
    total += one(728, 728) + 3 * sep(728, 728) + 2 * 728 + one(5 * 728, 256)  # ASPP (3640→256)
    total += sep(256 + 128, 256) + sep(256, 256) + one(384, 256)             # decoder stage 1
    total += 9 * 256 * 256 + 2 * 256                                         # transposed → 256
    total += sep(256 + 128, 128) + sep(128, 128) + one(384, 128)             # stage 2
    total += 9 * 128 * 128 + 2 * 128                                         # transposed → 128
    total += sep(128, 64) + sep(64, 64) + one(128, 64)                       # stage 3
    total += 9 * 64 + 2                                                      # 3×3 head + affine
    return total


def test_full_size_matches_the_thesis_table():
    model = AtrousDenoiser()
    assert count_parameters(model) == _expected_full_parameters() == 25_340_435
    assert len(model.middle) == 12  # B4 + 11 middle-flow blocks
    assert model.aspp.project[0].in_channels == 3640
    assert model.aspp.project[0].out_channels == 256
    assert [a[0].depthwise.dilation for a in model.aspp.atrous] == [(6, 6), (12, 12), (18, 18)]
    shapes = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, k=k: shapes.__setitem__(k, tuple(o.shape)))
             for k, m in (("b0", model.entry[0]), ("b1", model.entry[1]), ("b3", model.entry[3]),
                          ("aspp", model.aspp), ("up1", model.up1))]
    with torch.no_grad():
        y = model(torch.rand(1, 1, 64, 64))
    for h in hooks:
        h.remove()
    assert shapes == {"b0": (1, 128, 32, 32), "b1": (1, 128, 16, 16), "b3": (1, 728, 4, 4),
                      "aspp": (1, 256, 4, 4), "up1": (1, 256, 32, 32)}
    assert y.shape == (1, 1, 64, 64)
    assert 0.0 <= float(y.min()) and float(y.max()) <= 6.0


def test_width_and_depth_scale_channels():
    model = AtrousDenoiser(width=0.125, depth=2)
    assert len(model.middle) == 3
    assert model.middle[0].units[0][0].pointwise.out_channels == 91  # round(728 / 8)
    assert model.entry[0].units[0][0].pointwise.out_channels == 8
    y = model(torch.rand(2, 1, 48, 80))
    assert y.shape == (2, 1, 48, 80)
    y.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bad_input_raises():
    model = AtrousDenoiser(width=0.125, depth=0)
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.rand(1, 1, 40, 48))
    with pytest.raises(ValueError, match=r"shape \[B, 1, H, W\]"):
        model(torch.rand(1, 2, 32, 32))
    with pytest.raises(ValueError, match="width"):
        AtrousDenoiser(width=0)


@pytest.mark.parametrize("stride,dilation", [(1, 1), (1, 3), (2, 1)])
def test_separable_conv_equals_the_factored_full_conv(stride, dilation):
    torch.manual_seed(0)
    conv = SeparableConv2d(5, 7, 3, stride, dilation).double()
    x = torch.randn(2, 5, 16, 16, dtype=torch.float64)
    d = conv.depthwise.weight[:, 0]            # [5, 3, 3]
    p = conv.pointwise.weight[:, :, 0, 0]      # [7, 5]
    full = p[:, :, None, None] * d[None]       # [7, 5, 3, 3]
    ref = F.conv2d(x, full, stride=stride, padding=dilation, dilation=dilation)
    torch.testing.assert_close(conv(x), ref)
    assert ref.shape[-1] == 16 // stride


def test_xception_block_identity_shortcut_and_projection():
    same = XceptionBlock(8, [8, 8, 8])
    assert isinstance(same.shortcut, torch.nn.Identity)
    x = torch.randn(1, 8, 16, 16)
    torch.testing.assert_close(same(x), same.units(x) + x)
    down = XceptionBlock(8, [16, 16], stride=2)
    assert down(x).shape == (1, 16, 8, 8)


def test_aspp_global_pool_branch_is_spatially_constant():
    torch.manual_seed(0)
    aspp = ASPP(6, 4, 5, rates=(2,), pool="global")
    x = torch.randn(1, 6, 12, 12)
    image = aspp.image(x.mean((2, 3), keepdim=True))
    assert image.shape == (1, 4, 1, 1)
    assert aspp(x).shape == (1, 5, 12, 12)
    with pytest.raises(ValueError, match="pool"):
        ASPP(6, 4, 5, pool="max")


def test_spectral_norm_bounds_the_largest_singular_value():
    torch.manual_seed(0)
    net = spectral_normalize(torch.nn.Sequential(torch.nn.Linear(20, 30)))
    for _ in range(50):  # power iterations run in training-mode forwards
        net(torch.randn(4, 20))
    sigma = torch.linalg.matrix_norm(net[0].weight.detach(), ord=2)
    assert abs(float(sigma) - 1.0) < 0.02


def test_weight_norm_keeps_the_function_at_init():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(1, 3, 8, 8)
    before = conv(x)
    weight_normalize(conv)
    torch.testing.assert_close(conv(x), before)
    assert hasattr(conv.parametrizations.weight, "original0")
