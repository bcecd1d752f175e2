"""Microscope file readers: files written here by the format's own library, read back.

DM3/DM4 and SER/EMI have no writer in rosettasciio or elsewhere on PyPI, and no sample file
ships with an installed package, so their readers (rosettasciio's) are not exercised here.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from em_accel.io import (UnsupportedFormatError, jsonable, read_image, to_angstrom,
                         write_image)


def test_tiff_written_by_imagej_convention(tmp_path):
    import tifffile

    data = np.random.default_rng(0).integers(0, 60000, (24, 40), dtype=np.uint16)
    path = tmp_path / "ij.tif"
    # ImageJ: resolution in pixels per unit, unit 'nm' → 0.25 nm = 2.5 Å per pixel
    tifffile.imwrite(path, data, imagej=True, resolution=(4.0, 4.0), metadata={"unit": "nm"})
    mic = read_image(path)
    np.testing.assert_array_equal(mic.data, data)
    assert mic.pixel_size == pytest.approx(2.5)
    assert mic.format == "tifffile"


def test_tiff_roundtrip_keeps_pixel_size_and_metadata(tmp_path):
    data = np.random.default_rng(1).random((16, 20)).astype(np.float32)
    path = write_image(tmp_path / "a.tiff", data, pixel_size=1.75, metadata={"dose": 80})
    mic = read_image(path)
    np.testing.assert_array_equal(mic.data, data)
    assert mic.pixel_size == 1.75
    assert mic.metadata["description"]["dose"] == 80
    import tifffile
    with tifffile.TiffFile(path) as tif:  # resolution tags agree: pixels per cm
        num, den = tif.pages[0].tags["XResolution"].value
        assert 1e8 * den / num == pytest.approx(1.75, rel=1e-6)


def test_mrc_written_by_mrcfile(tmp_path):
    import mrcfile

    data = np.random.default_rng(2).random((3, 12, 16)).astype(np.float32)
    path = tmp_path / "stack.mrcs"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 1.23
    mic = read_image(path)
    np.testing.assert_array_equal(mic.data, data)
    assert mic.pixel_size == pytest.approx(1.23)
    out = write_image(tmp_path / "single.mrc", data[0], pixel_size=0.9)
    back = read_image(out)
    assert back.data.shape == (12, 16) and back.pixel_size == pytest.approx(0.9)


def test_emd_written_by_rosettasciio(tmp_path):
    from rsciio.emd import file_writer

    data = np.random.default_rng(3).random((20, 30)).astype(np.float32)
    axes = [{"name": n, "size": s, "scale": 0.05, "units": "nm", "offset": 0.0, "navigate": False}
            for n, s in (("y", 20), ("x", 30))]
    path = tmp_path / "a.emd"
    file_writer(str(path), {"data": data, "axes": axes, "metadata": {"General": {"title": "t"},
                "Signal": {"signal_type": ""}}, "original_metadata": {}})
    mic = read_image(path)
    np.testing.assert_array_equal(mic.data, data)
    assert mic.pixel_size == pytest.approx(0.5)  # 0.05 nm
    assert mic.format == "rosettasciio.emd"
    json.dumps(mic.metadata)  # metadata is JSON-serialisable


def test_png_is_read_as_luminance(tmp_path):
    import imageio.v3 as iio

    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 1] = 100
    iio.imwrite(tmp_path / "a.png", rgb)
    mic = read_image(tmp_path / "a.png")
    np.testing.assert_allclose(mic.data, 71.54, rtol=1e-5)


def test_bad_paths_raise_named_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.tif")
    (tmp_path / "a.xyz").write_bytes(b"0")
    with pytest.raises(UnsupportedFormatError, match="xyz"):
        read_image(tmp_path / "a.xyz")
    with pytest.raises(UnsupportedFormatError):
        write_image(tmp_path / "a.dm4", np.zeros((4, 4)))
    with pytest.raises(ValueError, match="pixel_size"):
        write_image(tmp_path / "a.tif", np.zeros((4, 4)), pixel_size=-1.0)


def test_units_and_jsonable():
    assert to_angstrom(0.5, "nm") == 5.0
    assert to_angstrom(2.0, "µm") == 2e4
    assert to_angstrom(1.0, "px") is None
    out = jsonable({"a": np.float32(1.5), "b": np.arange(3), "c": b"x", "d": float("nan")})
    assert out == {"a": 1.5, "b": [0, 1, 2], "c": "x", "d": "nan"}
