"""Reading and writing micrographs through well-kept libraries.

Formats: TIFF (tifffile), MRC/MRCS (mrcfile), DM3/DM4 (rosettasciio ``digitalmicrograph``),
SER/EMI (rosettasciio ``tia``), EMD (rosettasciio ``emd``: Berkeley NCEM and FEI Velox),
PNG/JPEG (imageio) and NumPy ``.npy``. No file format is parsed by hand here.

Pixel sizes are in ångström (Å). ``Micrograph.metadata`` holds JSON-serialisable metadata
(the file's own, as the library reports it) so that writers can keep it.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

#: Length units to Å.
_TO_ANGSTROM = {"å": 1.0, "a": 1.0, "angstrom": 1.0, "ang": 1.0, "nm": 10.0, "µm": 1e4,
                "um": 1e4, "μm": 1e4, "micron": 1e4, "mm": 1e7, "m": 1e10, "pm": 1e-2,
                "cm": 1e8}

READ_SUFFIXES = (".tif", ".tiff", ".mrc", ".mrcs", ".rec", ".st", ".map", ".dm3", ".dm4",
                 ".ser", ".emi", ".emd", ".png", ".jpg", ".jpeg", ".npy")
WRITE_SUFFIXES = (".tif", ".tiff", ".mrc", ".mrcs", ".npy")


class UnsupportedFormatError(ValueError):
    """The file's suffix names no format em_accel.io reads (or writes)."""


@dataclasses.dataclass
class Micrograph:
    """An image or a stack of images from a microscope file.

    Attributes:
        data: [H, W] or [N, H, W] array, in the file's own dtype.
        pixel_size: pixel size [Å] (None if the file does not say).
        metadata: JSON-serialisable metadata from the file.
        source: the path read; ``format``: the reader used.
    """

    data: np.ndarray
    pixel_size: float | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = ""
    format: str = ""


def to_angstrom(scale: float, units: str | None) -> float | None:
    """A length ``scale`` in ``units`` (nm, µm, Å, ...) in Å; None for unknown units."""
    if units is None:
        return None
    factor = _TO_ANGSTROM.get(str(units).strip().lower())
    return None if factor is None else float(scale) * factor


def jsonable(obj: Any, depth: int = 0) -> Any:
    """A JSON-serialisable copy of nested metadata: small arrays become lists, large ones a
    summary, unknown objects their ``str``."""
    if depth > 12:
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v, depth + 1) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist(), depth + 1) if obj.size <= 64 else \
            f"<array shape={list(obj.shape)} dtype={obj.dtype}>"
    if isinstance(obj, np.generic):
        return jsonable(obj.item(), depth + 1)
    if isinstance(obj, bytes):
        return obj.decode("latin-1")
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def _read_rsciio(path: Path, module: str) -> Micrograph:
    import importlib

    reader = importlib.import_module(f"rsciio.{module}").file_reader
    signals = reader(str(path))
    images = [s for s in signals if np.asarray(s["data"]).ndim in (2, 3)
              and np.issubdtype(np.asarray(s["data"]).dtype, np.number)]
    if not images:
        raise ValueError(f"{path} holds no 2-D image (found data of shapes "
                         f"{[list(np.shape(s['data'])) for s in signals]})")
    sig = images[0]
    data = np.ascontiguousarray(sig["data"])  # TIA images come back as a row-flipped view
    pixel = None
    axes = [a for a in sig.get("axes", []) if not a.get("navigate", False)]
    if axes:
        pixel = to_angstrom(axes[-1].get("scale", 1.0), axes[-1].get("units"))
    meta = {"metadata": jsonable(sig.get("metadata", {})),
            "original_metadata": jsonable(sig.get("original_metadata", {})),
            "axes": jsonable(sig.get("axes", []))}
    return Micrograph(data, pixel, meta, str(path), f"rosettasciio.{module}")


def _read_tiff(path: Path) -> Micrograph:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        data = tif.asarray()
        page = tif.pages[0]
        tags = {t.name: t.value for t in page.tags.values()
                if t.name in ("ImageDescription", "XResolution", "ResolutionUnit", "Software")}
        meta: dict[str, Any] = {"tiff_tags": jsonable(tags)}
        pixel = None
        desc = tags.get("ImageDescription")
        try:
            parsed = json.loads(desc) if isinstance(desc, str) else None
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            meta["description"] = parsed
            pixel = parsed.get("pixel_size_angstrom")
        imagej = tif.imagej_metadata
        if imagej:
            meta["imagej"] = jsonable(imagej)
        if pixel is None and "XResolution" in tags:
            num, den = tags["XResolution"]
            per_unit = {2: 2.54e8, 3: 1e8}.get(int(tags.get("ResolutionUnit", 1)))  # inch, cm [Å]
            if imagej and "unit" in imagej:
                per_unit = to_angstrom(1.0, imagej["unit"])
            if per_unit and num:
                pixel = per_unit * den / num
    return Micrograph(data, pixel, meta, str(path), "tifffile")


def _read_mrc(path: Path) -> Micrograph:
    import mrcfile

    with mrcfile.open(path, permissive=True) as mrc:
        data = np.array(mrc.data)
        vx = float(mrc.voxel_size.x)
        header = {name: jsonable(mrc.header[name]) for name in mrc.header.dtype.names
                  if name != "label"}
        labels = [bytes(lbl).rstrip(b"\0 ").decode("latin-1") for lbl in mrc.header.label
                  if bytes(lbl).strip(b"\0 ")]
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    return Micrograph(data, vx if vx > 0 else None, {"mrc_header": header, "labels": labels},
                      str(path), "mrcfile")


def read_image(path: str | Path) -> Micrograph:
    """Read a micrograph (or a stack) from a microscope file, choosing the reader by suffix.

    Raises:
        FileNotFoundError: the file does not exist.
        UnsupportedFormatError: the suffix is not one of :data:`READ_SUFFIXES`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return _read_tiff(path)
    if suffix in (".mrc", ".mrcs", ".rec", ".st", ".map"):
        return _read_mrc(path)
    if suffix in (".dm3", ".dm4"):
        return _read_rsciio(path, "digitalmicrograph")
    if suffix in (".ser", ".emi"):
        return _read_rsciio(path, "tia")
    if suffix == ".emd":
        return _read_rsciio(path, "emd")
    if suffix in (".png", ".jpg", ".jpeg"):
        import imageio.v3 as iio

        data = np.asarray(iio.imread(path))
        if data.ndim == 3:  # RGB(A) → luminance (Rec. 709 weights)
            data = data[..., :3].astype(np.float32) @ np.array([0.2125, 0.7154, 0.0721], np.float32)
        return Micrograph(data, None, {}, str(path), "imageio")
    if suffix == ".npy":
        return Micrograph(np.load(path), None, {}, str(path), "numpy")
    raise UnsupportedFormatError(f"cannot read {path}: suffix {suffix!r} is not one of "
                                 f"{list(READ_SUFFIXES)}")


def write_image(path: str | Path, data: np.ndarray, pixel_size: float | None = None,
                metadata: dict[str, Any] | None = None) -> Path:
    """Write ``data`` [H, W] or [N, H, W] with its pixel size [Å] and metadata.

    TIFF keeps the metadata as JSON in ImageDescription and the pixel size both there and as
    resolution tags (pixels per cm); MRC keeps the pixel size as the voxel size and a label;
    ``.npy`` keeps the data only.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise UnsupportedFormatError(f"cannot write {path}: suffix {suffix!r} is not one of "
                                     f"{list(WRITE_SUFFIXES)}")
    if pixel_size is not None and not pixel_size > 0:
        raise ValueError(f"pixel_size must be > 0 Å, got {pixel_size}")
    data = np.ascontiguousarray(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".tif", ".tiff"):
        import tifffile

        desc = {"pixel_size_angstrom": pixel_size, **jsonable(metadata or {})}
        kwargs: dict[str, Any] = {}
        if pixel_size:
            kwargs = {"resolution": (1e8 / pixel_size, 1e8 / pixel_size),
                      "resolutionunit": "CENTIMETER"}
        tifffile.imwrite(path, data, description=json.dumps(desc), metadata=None, **kwargs)
    elif suffix in (".mrc", ".mrcs"):
        import mrcfile

        keep = data.dtype in (np.int8, np.int16, np.uint16, np.float32)
        with mrcfile.new(path, overwrite=True) as mrc:
            mrc.set_data(data if keep else data.astype(np.float32))
            if pixel_size:
                mrc.voxel_size = pixel_size
            mrc.header.label[0] = b"em-accel"
            mrc.header.nlabl = 1
    else:
        np.save(path, data)
    return path
