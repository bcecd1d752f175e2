"""Files em-accel writes open in the standard readers, with pixel size and metadata.

TIFF: tifffile (``imread`` and the ImageJ metadata), the ImageJ hyperstack description that
ImageJ/Fiji parse (unit and resolution give the pixel size), rosettasciio's TIFF reader (the
scale and unit HyperSpy shows); MRC: mrcfile (validation, voxel size); HDF5: h5py (the shards
of em_accel.sim.dataset). Each also round-trips through em_accel.io.read_image.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

tifffile = pytest.importorskip("tifffile")

from em_accel.io import read_image, to_angstrom, write_image  # noqa: E402


def imagej_description_metadata(desc: str) -> dict:
    """ImageJ's own reading of a description: ``key=value`` lines (numbers as numbers)."""
    out = {}
    for line in desc.splitlines():
        key, _, value = line.partition("=")
        try:
            out[key.strip()] = int(value) if value.strip().isdigit() else float(value)
        except ValueError:
            out[key.strip()] = value.strip()
    return out

META = {"dose_e_per_A2": 80.0, "note": "Å µm – unicode", "nested": {"a": [1, 2, 3]}}


@pytest.mark.parametrize("dtype, shape", [(np.float32, (24, 40)), (np.uint16, (3, 16, 20)),
                                          (np.int16, (16, 20)), (np.uint8, (12, 10))])
def test_imagej_tiff_opens_in_tifffile_imagej_and_rosettasciio(tmp_path, dtype, shape):
    rng = np.random.default_rng(0)
    data = (rng.random(shape) * 1000).astype(dtype)
    path = write_image(tmp_path / "a.tif", data, pixel_size=0.37, metadata=META)

    np.testing.assert_array_equal(tifffile.imread(path), data)  # no KeyError: 'shape'
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        desc = tif.pages[0].description
        ij = imagej_description_metadata(desc)  # the key=value lines ImageJ parses
        assert desc.startswith("ImageJ=") and ij["unit"] == "micron"
        num, den = tif.pages[0].tags["XResolution"].value  # ImageJ: pixels per unit
        assert to_angstrom(den / num, ij["unit"]) == pytest.approx(0.37, rel=1e-6)
        assert json.loads(tif.imagej_metadata["Info"])["nested"] == META["nested"]
        if len(shape) == 3:
            assert ij["images"] == shape[0]

    from rsciio.tiff import file_reader

    sig = file_reader(str(path))[0]
    np.testing.assert_array_equal(sig["data"], data)
    x = [a for a in sig["axes"] if a["name"] == "width"][0]
    assert to_angstrom(x["scale"], x["units"]) == pytest.approx(0.37, rel=1e-6)

    mic = read_image(path)
    np.testing.assert_array_equal(mic.data, data)
    assert mic.pixel_size == pytest.approx(0.37, rel=1e-12)
    assert mic.metadata["description"]["note"] == META["note"]


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.complex64])
def test_tiff_of_other_dtypes_opens_in_tifffile_and_rosettasciio(tmp_path, dtype):
    data = (np.random.default_rng(1).random((10, 14)) * 100).astype(dtype)
    path = write_image(tmp_path / "b.tiff", data, pixel_size=2.5, metadata=META)
    np.testing.assert_array_equal(tifffile.imread(path), data)
    with tifffile.TiffFile(path) as tif:
        assert tif.shaped_metadata[0]["nested"] == META["nested"]
    from rsciio.tiff import file_reader

    sig = file_reader(str(path), force_read_resolution=True)[0]
    x = [a for a in sig["axes"] if a["name"] == "width"][0]
    assert to_angstrom(x["scale"], x["units"]) == pytest.approx(2.5, rel=1e-6)
    mic = read_image(path)
    assert mic.pixel_size == pytest.approx(2.5) and mic.data.dtype == data.dtype
    assert mic.metadata["description"]["dose_e_per_A2"] == 80.0


def test_tiff_from_the_denoise_cli_opens_in_tifffile(tmp_path):
    """The issue's case: em-accel denoise's TIFF made tifffile.imread raise KeyError 'shape'."""
    from em_accel.cli import main

    src = write_image(tmp_path / "in.tif",
                      np.random.default_rng(2).poisson(30, (48, 40)).astype(np.float32),
                      pixel_size=1.2, metadata={"instrument": "test"})
    assert main(["denoise", str(src), "-o", str(tmp_path / "out"), "--model", "low",
                 "--no-progress"]) == 0
    out = next((tmp_path / "out").glob("*.tif*"))
    assert tifffile.imread(out).shape == (48, 40)
    from rsciio.tiff import file_reader

    x = [a for a in file_reader(str(out))[0]["axes"] if a["name"] == "width"][0]
    assert to_angstrom(x["scale"], x["units"]) == pytest.approx(1.2, rel=1e-6)
    mic = read_image(out)
    assert mic.pixel_size == pytest.approx(1.2)


def test_tiff_written_before_the_imagej_form_still_reads(tmp_path):
    """Files from earlier versions: a bare JSON ImageDescription."""
    data = np.arange(20, dtype=np.float32).reshape(4, 5)
    path = tmp_path / "old.tif"
    tifffile.imwrite(path, data, description=json.dumps({"pixel_size_angstrom": 0.8}),
                     metadata=None)
    mic = read_image(path)
    np.testing.assert_array_equal(mic.data, data)
    assert mic.pixel_size == 0.8


def test_mrc_opens_in_mrcfile_with_voxel_size(tmp_path):
    mrcfile = pytest.importorskip("mrcfile")
    data = np.random.default_rng(3).random((2, 12, 16)).astype(np.float32)
    for name, arr in (("stack.mrcs", data), ("one.mrc", data[0]),
                      ("ints.mrc", (data[0] * 100).astype(np.int16))):
        path = write_image(tmp_path / name, arr, pixel_size=0.9)
        report = io.StringIO()
        assert mrcfile.validate(str(path), print_file=report), report.getvalue()
        with mrcfile.open(path) as mrc:
            np.testing.assert_array_equal(np.squeeze(mrc.data), arr)
            assert (float(mrc.voxel_size.x), float(mrc.voxel_size.y)) == pytest.approx((0.9, 0.9))
        back = read_image(path)
        assert back.pixel_size == pytest.approx(0.9)
        np.testing.assert_array_equal(back.data, arr)


def test_dataset_shards_open_in_h5py(tmp_path):
    h5py = pytest.importorskip("h5py")
    from em_accel.sim.dataset import load_dataset, write_waves

    rng = np.random.default_rng(4)
    waves = [(rng.random((6, 8)) + 1j * rng.random((6, 8))).astype(np.complex64) for _ in range(3)]
    metas = [{"material": "Si", "thickness_A": 4.0 * (i + 1), "split": "train"} for i in range(3)]
    (tmp_path / "shards").mkdir()
    path = write_waves(tmp_path / "shards" / "shard-00000.h5", waves, metas)
    with h5py.File(path, "r") as f:
        assert f["waves"].dtype == np.complex64 and f["waves"].shape == (3, 6, 8)
        np.testing.assert_array_equal(f["waves"][1], waves[1])
        assert json.loads(f.attrs["meta"]) == metas
    ragged = write_waves(tmp_path / "shards" / "shard-00001.h5", [waves[0], waves[1][:4]],
                         metas[:2])
    with h5py.File(ragged, "r") as f:  # different sizes: one dataset per wave
        assert f["waves"]["00001"].shape == (4, 8)
    got, got_meta = load_dataset(tmp_path)
    assert len(got) == 5 and got_meta[:3] == metas
