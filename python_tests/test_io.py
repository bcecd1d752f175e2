"""Microscope file readers: files written here by the format's own library, read back.

DM3/DM4 and SER have no writer in rosettasciio or elsewhere on PyPI, and no sample file ships
with an installed package: the tests lay minimal files out from the public format descriptions
and read them through rosettasciio and the denoise CLI. Files from real microscopes carry far
more tags; these check the path, not every variant.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

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
    with tifffile.TiffFile(path) as tif:  # ImageJ: unit micron, resolution in pixels per µm
        num, den = tif.pages[0].tags["XResolution"].value
        assert tif.imagej_metadata["unit"] == "micron"
        assert 1e4 * den / num == pytest.approx(1.75, rel=1e-6)


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


@pytest.mark.parametrize("suffix", [".hspy", ".hdf5"])
def test_hyperspy_file(tmp_path, suffix):
    """HyperSpy's HDF5 layout (what HyperSpy and atomap save), written here with h5py."""
    import h5py

    data = np.random.default_rng(4).random((24, 18)).astype(np.float32)
    path = tmp_path / f"a{suffix}"
    with h5py.File(path, "w") as f:
        f.attrs["file_format"], f.attrs["file_format_version"] = "HyperSpy", "3.1"
        g = f.create_group("Experiments/scan")
        g.create_dataset("data", data=data)
        for i, n in enumerate((24, 18)):
            ax = g.create_group(f"axis-{i}")
            for k, v in (("name", "yx"[i]), ("size", n), ("scale", 2.5), ("offset", 0.0),
                         ("units", "pm"), ("navigate", False)):
                ax.attrs[k] = v
        g.create_group("metadata/General").attrs["title"] = "scan"
        g.create_group("metadata/Signal").attrs["signal_type"] = ""
        g.create_group("original_metadata")
    mic = read_image(path)
    np.testing.assert_array_equal(mic.data, data)
    assert mic.pixel_size == pytest.approx(0.025)  # 2.5 pm
    assert mic.format == "rosettasciio.hspy"
    json.dumps(mic.metadata)


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


def _write_ser(path, image: np.ndarray, pixel_m: float) -> None:
    """A minimal TIA series (.ser) file as FEI's format description lays it out: version 0x0210
    header, one series dimension of size 1, offset arrays, one 2-D float32 element with its X/Y
    calibration [m] (rows stored bottom-up, TIA's order) and a time-only tag. No writer exists
    in any library, and no sample file ships with an installed package."""
    h, w = image.shape
    desc = b"Number"
    header = np.zeros(1, dtype=[
        ("ByteOrder", "<u2"), ("SeriesID", "<u2"), ("SeriesVersion", "<u2"), ("DataTypeID", "<u4"),
        ("TagTypeID", "<u4"), ("TotalNumberElements", "<u4"), ("ValidNumberElements", "<u4"),
        ("OffsetArrayOffset", "<u4"), ("NumberDimensions", "<u4"), ("DimensionSize", "<u4"),
        ("CalibrationOffset", "<f8"), ("CalibrationDelta", "<f8"), ("CalibrationElement", "<u4"),
        ("DescriptionLength", "<u4"), ("Description", f"S{len(desc)}"), ("UnitsLength", "<u4")])
    offsets_at = header.itemsize
    header[0] = (0x4949, 0x0197, 0x0210, 0x4122, 0x4152, 1, 1, offsets_at, 1, 1, 0.0, 1.0, 0,
                 len(desc), desc, 0)
    element = np.zeros(1, dtype=[
        ("CalibrationOffsetX", "<f8"), ("CalibrationDeltaX", "<f8"), ("CalibrationElementX", "<u4"),
        ("CalibrationOffsetY", "<f8"), ("CalibrationDeltaY", "<f8"), ("CalibrationElementY", "<u4"),
        ("DataType", "<u2"), ("ArraySizeX", "<u4"), ("ArraySizeY", "<u4"), ("Array", "<f4", (h, w))])
    element[0] = (0.0, pixel_m, 0, 0.0, pixel_m, 0, 7, w, h, image[::-1].astype("<f4"))
    data_at = offsets_at + 8
    tag = np.zeros(1, dtype=[("TagTypeID", "<u2"), ("Unknown", "<u2"), ("Time", "<u4")])
    tag[0] = (0x4152, 0, 0)
    with open(path, "wb") as f:
        for part in (header, np.array([data_at, data_at + element.itemsize], "<u4"), element, tag):
            f.write(part.tobytes())


def test_ser_file_through_rosettasciio_and_the_denoise_cli(tmp_path):
    from em_accel.cli import main

    img = (np.random.default_rng(0).poisson(40.0, (48, 64))).astype(np.float32)
    _write_ser(tmp_path / "scan_1.ser", img, 1.5e-10)
    mic = read_image(tmp_path / "scan_1.ser")
    np.testing.assert_array_equal(mic.data, img)
    assert mic.pixel_size == pytest.approx(1.5) and mic.format == "rosettasciio.tia"
    assert main(["denoise", str(tmp_path / "scan_1.ser"), "-o", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    out = read_image(tmp_path / "out" / "scan_1_denoised.tif")
    assert out.data.shape == img.shape and out.pixel_size == pytest.approx(1.5)
    assert out.data.std() < img.std()  # denoised: smoother than the Poisson counts


class _DMTags:
    """DigitalMicrograph tag files as the public format descriptions lay them out: big-endian
    structure (counts and type words 4 bytes in DM3, 8 in DM4, where every tag also carries
    its byte size), little-endian data. Only what an image needs."""

    def __init__(self, version: int) -> None:
        self.version, self.word = version, (">I" if version == 3 else ">Q")

    def _entry(self, kind: bytes, name: str, body: bytes) -> bytes:
        label = name.encode()
        size = struct.pack(">Q", len(body)) if self.version == 4 else b""
        return kind + struct.pack(">H", len(label)) + label + size + body

    def body(self, entries: list[bytes]) -> bytes:  # sorted, open, count, entries
        return b"\x00\x00" + struct.pack(self.word, len(entries)) + b"".join(entries)

    def group(self, name: str, entries: list[bytes]) -> bytes:
        return self._entry(b"\x14", name, self.body(entries))

    def data(self, name: str, types: list[int], payload: bytes) -> bytes:
        info = struct.pack(self.word, len(types)) + b"".join(struct.pack(self.word, t) for t in types)
        return self._entry(b"\x15", name, b"%%%%" + info + payload)

    def f32(self, name: str, v: float) -> bytes:
        return self.data(name, [6], struct.pack("<f", v))

    def int(self, name: str, v: int, code: int = 3) -> bytes:  # 3: int32, 5: uint32
        return self.data(name, [code], struct.pack("<i" if code == 3 else "<I", v))

    def text(self, name: str, s: str) -> bytes:  # array (20) of uint16 (4) characters
        return self.data(name, [20, 4, len(s)], np.array([ord(c) for c in s], "<u2").tobytes())


def _write_dm(path, image: np.ndarray, pixel_nm: float, version: int) -> None:
    d, (h, w) = _DMTags(version), image.shape
    axes = [d.group("", [d.f32("Origin", 0.0), d.f32("Scale", pixel_nm), d.text("Units", "nm")])
            for _ in range(2)]
    image_data = d.group("ImageData", [
        d.group("Calibrations", [
            d.group("Brightness", [d.f32("Origin", 0.0), d.f32("Scale", 1.0), d.text("Units", "")]),
            d.group("Dimension", axes)]),
        d.data("Data", [20, 6, h * w], image.astype("<f4").tobytes()),  # array of float32
        d.int("DataType", 2),  # real4
        d.group("Dimensions", [d.int("", w, 5), d.int("", h, 5)]),
        d.int("PixelDepth", 4)])
    root = d.body([d.group("ImageList", [d.group("", [image_data, d.group("ImageTags", [])])])])
    size = struct.pack(">I" if version == 3 else ">Q", len(root))
    Path(path).write_bytes(struct.pack(">I", version) + size + struct.pack(">I", 1) + root
                           + b"\x00" * 8)


@pytest.mark.parametrize("version", [3, 4])
def test_dm3_dm4_files_through_rosettasciio_and_the_denoise_cli(tmp_path, version):
    from em_accel.cli import main

    img = np.random.default_rng(version).poisson(40.0, (40, 56)).astype(np.float32)
    path = tmp_path / f"scan.dm{version}"
    _write_dm(path, img, 0.15, version)
    mic = read_image(path)
    np.testing.assert_array_equal(mic.data, img)
    assert mic.pixel_size == pytest.approx(1.5) and mic.format == "rosettasciio.digitalmicrograph"
    assert main(["denoise", str(path), "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    out = read_image(tmp_path / "out" / "scan_denoised.tif")
    assert out.data.shape == img.shape and out.pixel_size == pytest.approx(1.5)
    assert out.data.std() < img.std()
