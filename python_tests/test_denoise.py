"""Tiled denoising, the shipped weights, and the em-accel denoise / evaluate commands."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from em_accel.cli import main
from em_accel.data import poisson_noise, synthetic_micrograph
from em_accel.io import read_image, write_image
from em_accel.models import (PRETRAINED_CONDITIONED, PRETRAINED_HIGH, PRETRAINED_LOW,
                             AtrousDenoiser, denoise_tiled,
                             load_pretrained, load_weights, overlap_cost, pretrained_notes,
                             tile_layout)
from em_accel.models.cli import looks_low_dose
from em_accel.train.checkpoint import save_weights


def _local_net() -> nn.Module:
    """Receptive-field radius 3 px: tiling with margin >= 3 must equal one whole pass."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1)).double()


@pytest.mark.parametrize("shape,tile,margin", [((100, 75), 48, 8), ((64, 64), 32, 4),
                                               ((37, 150), 64, 16), ((20, 20), 512, 3)])
def test_tiling_equals_a_whole_image_pass(shape, tile, margin):
    net = _local_net()
    img = torch.rand(shape, dtype=torch.float64)
    got = denoise_tiled(net, img, tile=tile, margin=margin, batch_size=3)
    padded = F.pad(img[None, None], (margin,) * 4, mode="reflect")
    want = net(padded)[0, 0, margin:margin + shape[0], margin:margin + shape[1]]
    # the pass over the whole padded image sees replicate padding only beyond the margin
    torch.testing.assert_close(got, want.detach())


def test_dihedral_ensemble_is_the_mean_of_the_eight_views_and_equivariant():
    from em_accel.data import dihedral, dihedral_inverse
    from em_accel.models.tiling import dihedral_ensemble

    net = _local_net().requires_grad_(False)  # not rotation-equivariant: its 8 views differ
    x = torch.rand(2, 1, 32, 48, dtype=torch.float64)
    views = [dihedral_inverse(net(dihedral(x, k)), k) for k in range(8)]
    assert float((views[0] - views[1]).abs().max()) > 1e-6
    got = dihedral_ensemble(net, x)
    torch.testing.assert_close(got, torch.stack(views).mean(0))
    for k in range(8):  # the ensemble commutes with every flip/rotation
        torch.testing.assert_close(dihedral_ensemble(net, dihedral(x, k)), dihedral(got, k))
    img = torch.rand(70, 90, dtype=torch.float64)  # tiled: each tile is ensembled
    tiled = denoise_tiled(net, img, tile=48, margin=8, ensemble=True)
    padded = F.pad(img[None, None], (8,) * 4, mode="reflect")
    whole = dihedral_ensemble(net, padded)[0, 0, 8:78, 8:98]
    torch.testing.assert_close(tiled, whole)


def test_tiling_on_device_matches_cpu(device):
    net = _local_net().float()
    img = torch.rand(90, 70)
    want = denoise_tiled(net, img, tile=48, margin=8)
    got = denoise_tiled(net.to(device), img.to(device), tile=48, margin=8)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("length,tile,margin", [(2080, 1024, 16), (544, 1024, 16),
                                                (1000, 256, 32), (257, 256, 0)])
def test_tile_layout_covers_with_minimal_overlap(length, tile, margin):
    size, starts = tile_layout(length, tile, margin)
    assert size % 16 == 0 and size <= max(tile, -(-length // 16) * 16)
    assert starts[0] == 0 and starts[-1] + size >= length
    for a, b in zip(starts, starts[1:]):
        assert a + size - b >= 2 * margin  # enough overlap for margin context on both sides
    # no layout with fewer tiles of at most `tile` px can give that overlap
    n = len(starts)
    assert n == 1 or (n - 1) * (tile - 2 * margin) + 2 * margin < length


def test_overlap_cost_is_small_for_large_images():
    assert overlap_cost(2048, 2048, 1024, 16) < 1.15
    assert overlap_cost(4096, 4096, 1024, 16) < 1.15
    with pytest.raises(ValueError, match="multiple of 16"):
        tile_layout(100, 50, 4)


def test_shipped_weights_denoise_held_out_micrographs():
    for name in (PRETRAINED_LOW, PRETRAINED_HIGH):
        model, notes = load_pretrained(name), pretrained_notes(name)
        assert isinstance(model, AtrousDenoiser) and not model.training
        assert notes["phase"] in ("low", "high") and notes["tile"] % 16 == 0
    model = load_pretrained(PRETRAINED_LOW)
    g = torch.Generator().manual_seed(99)
    errs = []
    for seed in (123456, 654321):  # seeds never used in training (1000) or evaluation (2000)
        clean = torch.as_tensor(synthetic_micrograph(128, seed), dtype=torch.float64)
        pair = poisson_noise(clean, 50.0, g)
        with torch.no_grad():
            out = model(pair.noisy[None, None].float())[0, 0].double()
        errs.append((float(((pair.noisy - pair.target) ** 2).mean()),
                     float(((out - pair.target) ** 2).mean())))
    for noisy_mse, net_mse in errs:
        assert net_mse < 0.5 * noisy_mse


def test_save_and_load_weights(tmp_path):
    model = AtrousDenoiser(width=0.0625, depth=1)
    path = save_weights(tmp_path / "w.safetensors", model, model.config, dtype=torch.float16,
                        notes={"tile": 64})
    back, notes = load_weights(path)
    assert notes == {"tile": 64}
    for (k, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-3)


def _noisy_counts(size: int, dose: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    clean = synthetic_micrograph(size, seed).astype(np.float64)
    counts = np.random.default_rng(seed).poisson(clean * dose).astype(np.uint16)
    return clean, counts


def _mse_after_fit(out: np.ndarray, clean: np.ndarray) -> float:
    """MSE against the clean image after the best affine fit (the CLI keeps the file's units)."""
    a, b = np.polyfit(clean.ravel(), out.ravel(), 1)
    return float(np.mean(((out - b) / a - clean) ** 2))


def test_cli_denoises_tiff_and_mrc_keeping_metadata(tmp_path):
    clean, counts = _noisy_counts(160, 60.0, 7)
    tif = write_image(tmp_path / "in.tif", counts, pixel_size=1.5, metadata={"kV": 300})
    stack = np.stack([counts, counts[::-1]]).astype(np.float32)
    mrc = write_image(tmp_path / "in.mrc", stack, pixel_size=0.8)
    assert main(["denoise", str(tif), str(mrc), "-o", str(tmp_path / "out"), "--no-progress",
                 "--tile", "128", "--model", "low"]) == 0
    out = read_image(tmp_path / "out" / "in_denoised.tif")
    assert out.data.shape == counts.shape and out.pixel_size == 1.5
    meta = out.metadata["description"]
    assert meta["source_metadata"]["description"]["kV"] == 300
    assert meta["em_accel"]["model"] == PRETRAINED_LOW
    assert _mse_after_fit(out.data, clean) < 0.5 * _mse_after_fit(counts.astype(float), clean)
    back = read_image(tmp_path / "out" / "in_denoised.mrc")
    assert back.data.shape == stack.shape and back.pixel_size == pytest.approx(0.8)
    np.testing.assert_allclose(back.data[0], out.data, rtol=1e-4, atol=1e-2)


def test_cli_reads_an_emd_microscope_file(tmp_path):
    from rsciio.emd import file_writer

    _, counts = _noisy_counts(96, 1000.0, 8)
    axes = [{"name": n, "size": 96, "scale": 0.02, "units": "nm", "offset": 0.0,
             "navigate": False} for n in "yx"]
    file_writer(str(tmp_path / "scan.emd"), {"data": counts.astype(np.float32), "axes": axes,
                "metadata": {"General": {"title": "scan"}, "Signal": {"signal_type": ""}},
                "original_metadata": {}})
    assert main(["denoise", str(tmp_path / "scan.emd"), "-o", str(tmp_path), "--no-progress"]) == 0
    out = read_image(tmp_path / "scan_denoised.tif")
    assert out.pixel_size == pytest.approx(0.2)
    assert out.metadata["description"]["em_accel"]["model"] == PRETRAINED_CONDITIONED
    assert out.metadata["description"]["em_accel"]["noise"]["estimated"]
    assert np.isfinite(out.data).all()


def test_looks_low_dose():
    assert looks_low_dose(np.array([[3, 40], [100, 0]], np.uint16))
    assert not looks_low_dose(np.full((4, 4), 900, np.uint16))
    assert not looks_low_dose(np.random.default_rng(0).random((4, 4)))


def test_evaluate_command_writes_the_table(tmp_path, capsys):
    assert main(["evaluate", "denoise", "--suite", "thesis", "-n", "2", "--size", "64",
                 "--doses", "low",
                 "--methods", "Gaussian", "median", "atrous denoiser (shipped small)",
                 "atrous denoiser (shipped small, 8x dihedral ensemble)",
                 "--no-bm3d", "--out", str(tmp_path), "--no-progress"]) == 0
    rows = json.loads((tmp_path / "denoise_eval.json").read_text())["rows"]
    names = {r["method"] for r in rows if r["subset"] == "all"}
    assert names == {"Gaussian", "median", "atrous denoiser (shipped small)",
                     "atrous denoiser (shipped small, 8x dihedral ensemble)"}
    mse = {r["method"]: r["mse"] for r in rows if r["subset"] == "all"}
    assert mse["atrous denoiser (shipped small, 8x dihedral ensemble)"] != \
        mse["atrous denoiser (shipped small)"]
    assert all(np.isfinite(r["mse"]) and 0 < r["ssim"] <= 1 for r in rows)
    out = capsys.readouterr().out
    assert "| Gaussian |" in out and "paired MSE differences" in out
    assert (tmp_path / "mae_map_low_atrous_denoiser.npy").is_file()


def test_paired_difference_pairs_images():
    from em_accel.models.evaluate import paired_difference

    rows = [{"dose": "low", "subset": "all", "method": m, "mse_per_image": v}
            for m, v in (("a", [1.0, 2.0, 3.0]), ("b", [1.5, 2.5, 2.0]))]
    d = paired_difference(rows, "a", "b", "low")
    assert d["n"] == 3 and d["a_lower"] == 2
    assert d["mean_difference"] == pytest.approx((-0.5 - 0.5 + 1.0) / 3)
    assert d["se"] == pytest.approx(np.std([-0.5, -0.5, 1.0], ddof=1) / np.sqrt(3))
    assert paired_difference(rows, "a", "missing", "low") is None
