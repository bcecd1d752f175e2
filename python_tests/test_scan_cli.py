"""The ``em-accel scan`` command, image reading and the path plots."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from em_accel.cli import build_parser
from em_accel.scan import make_path
from em_accel.scan.cli import main, read_image, synthetic_micrograph


def test_scan_subcommand_registered():
    args = build_parser().parse_args(["scan", "synthetic", "--path", "gridlike", "--coverage", "0.1"])
    assert args.path == "gridlike" and args.coverage == 0.1 and callable(args.func)


def test_cli_synthetic_writes_consistent_arrays(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out, npz = tmp_path / "out.png", tmp_path / "scan.npz"
    assert main(["synthetic", "--size", "64", "--path", "spiral", "--coverage", "0.1",
                 "-o", str(out), "--npz", str(npz)]) == 0
    assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"
    d = np.load(npz)
    img, mask, sparse, infilled = d["image"], d["mask"], d["sparse"], d["infilled"]
    assert abs(mask.mean() / 0.1 - 1) <= 0.02
    np.testing.assert_array_equal(infilled[mask > 0], sparse[mask > 0])
    np.testing.assert_array_equal(sparse[mask > 0], img[mask > 0])  # noise-free nearest reads
    assert f"coverage {mask.mean():.5f}" in capsys.readouterr().out


def test_read_image_png_and_tiff(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    data = (np.arange(48, dtype=np.uint8).reshape(6, 8) * 5)
    pil.fromarray(data).save(tmp_path / "a.png")
    x = read_image(str(tmp_path / "a.png"))
    assert x.shape == (6, 8) and x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), data / data.max(), rtol=1e-6)
    tifffile = pytest.importorskip("tifffile")
    f = np.random.default_rng(0).random((5, 7)).astype(np.float32) * 3 - 1
    tifffile.imwrite(tmp_path / "b.tif", f)
    y = read_image(str(tmp_path / "b.tif"))
    np.testing.assert_allclose(y.numpy(), (f - f.min()) / (f.max() - f.min()), rtol=1e-6)
    with pytest.raises(FileNotFoundError):
        read_image(str(tmp_path / "missing.tif"))
    tifffile.imwrite(tmp_path / "c.tif", np.zeros((2, 3, 4, 5), np.float32),
                     photometric="minisblack")
    with pytest.raises(ValueError, match="2-D"):
        read_image(str(tmp_path / "c.tif"))


def test_synthetic_micrograph_range():
    img = synthetic_micrograph((32, 40), seed=1)
    assert img.shape == (32, 40) and float(img.min()) == 0.0 and float(img.max()) == 1.0


def test_plot_path_draws_positions_and_breaks_jumps():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from em_accel.scan.plot import plot_coverages, plot_path

    path = make_path("raster", (4, 5), 0.5)  # rows 1 and 3, serpentine: one 2-px jump
    ax = plot_path(path, torch.zeros(4, 5))
    line = ax.get_lines()[0]
    y = line.get_ydata()
    assert np.isnan(y).sum() == 0  # the row change is a 2-px step, not a break
    np.testing.assert_allclose(np.asarray(line.get_xdata()), path.positions[:, 1].numpy())
    ax = plot_path(make_path("grid", (20, 20), 1 / 16), None)  # 5 x 5 probes 4 px apart
    line = ax.get_lines()[0]
    assert np.isnan(line.get_ydata()).sum() == 24 and line.get_marker() == "."
    fig = plot_coverages(torch.rand(48, 48), coverages=(0.2, 0.1))
    assert len(fig.axes) == 4
