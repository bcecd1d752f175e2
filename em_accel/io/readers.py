"""Reading and writing micrographs through well-kept libraries.

Formats: TIFF (tifffile), MRC/MRCS (mrcfile), DM3/DM4 (rosettasciio ``digitalmicrograph``),
SER/EMI (rosettasciio ``tia``), EMD (rosettasciio ``emd``: Berkeley NCEM and FEI Velox),
HyperSpy HDF5 ``.hspy``/``.hdf5`` (rosettasciio ``hspy``: files saved by HyperSpy, atomap, ...),
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

from ..errors import InvalidFileError

#: Length units to Å.
_TO_ANGSTROM = {"å": 1.0, "a": 1.0, "angstrom": 1.0, "ang": 1.0, "nm": 10.0, "µm": 1e4,
                "um": 1e4, "μm": 1e4, "micron": 1e4, "mm": 1e7, "m": 1e10, "pm": 1e-2,
                "cm": 1e8}

READ_SUFFIXES = (".tif", ".tiff", ".mrc", ".mrcs", ".rec", ".st", ".map", ".dm3", ".dm4",
                 ".ser", ".emi", ".emd", ".hspy", ".hdf5", ".png", ".jpg", ".jpeg", ".npy")
WRITE_SUFFIXES = (".tif", ".tiff", ".mrc", ".mrcs", ".npy")


class UnsupportedFormatError(InvalidFileError):
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


#: dtypes the ImageJ TIFF format holds (the others are written as plain tifffile TIFFs).
_IMAGEJ_DTYPES = (np.uint8, np.uint16, np.int16, np.float32)


def _tiff_description(tif) -> dict[str, Any] | None:
    """em-accel's metadata from a TIFF: the JSON in ImageJ's Info (what write_image writes for
    ImageJ dtypes), tifffile's shaped JSON description (other dtypes), or a bare JSON
    description (files written before the ImageJ form)."""
    texts = []
    if tif.imagej_metadata and isinstance(tif.imagej_metadata.get("Info"), str):
        texts.append(tif.imagej_metadata["Info"])
    if tif.shaped_metadata:
        return dict(tif.shaped_metadata[0])
    texts.append(tif.pages[0].description)
    for text in texts:
        try:
            parsed = json.loads(text) if text else None
        except json.JSONDecodeError:
            continue
        if isinstance(parsed, dict):
            return parsed
    return None


def _read_tiff(path: Path) -> Micrograph:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        try:
            data = tif.asarray()
        except KeyError:  # a bare JSON description read as a shaped one without its shape
            data = np.stack([p.asarray() for p in tif.pages]) if len(tif.pages) > 1 \
                else tif.pages[0].asarray()
        page = tif.pages[0]
        tags = {t.name: t.value for t in page.tags.values()
                if t.name in ("ImageDescription", "XResolution", "ResolutionUnit", "Software")}
        meta: dict[str, Any] = {"tiff_tags": jsonable(tags)}
        pixel = None
        parsed = _tiff_description(tif)
        if parsed is not None:
            meta["description"] = jsonable(parsed)
            pixel = parsed.get("pixel_size_angstrom")
            pixel = float(pixel) if isinstance(pixel, (int, float)) and pixel > 0 else None
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


def _write_tiff(path: Path, data: np.ndarray, pixel_size: float | None,
                metadata: dict[str, Any]) -> None:
    """ImageJ hyperstack TIFF (uint8/uint16/int16/float32): unit "micron" and the resolution
    tags in pixels per µm, which ImageJ/Fiji, tifffile and rosettasciio all read as the pixel
    size; em-accel's metadata as JSON in ImageJ's Info (Image > Show Info). Other dtypes: a
    tifffile "shaped" TIFF with the metadata in its JSON description and the resolution in
    pixels per cm (rosettasciio reads it with force_read_resolution=True)."""
    import tifffile

    desc = {"pixel_size_angstrom": pixel_size, **jsonable(metadata)}
    if data.dtype in _IMAGEJ_DTYPES and data.ndim in (2, 3):
        ij: dict[str, Any] = {"Info": json.dumps(desc)}
        kwargs: dict[str, Any] = {}
        if data.ndim == 3:
            ij["axes"] = "ZYX"
        if pixel_size:
            ij["unit"] = "micron"
            kwargs["resolution"] = (1e4 / pixel_size, 1e4 / pixel_size)
        tifffile.imwrite(path, data, imagej=True, metadata=ij, **kwargs)
        return
    kwargs = {}
    if pixel_size:
        kwargs = {"resolution": (1e8 / pixel_size, 1e8 / pixel_size),
                  "resolutionunit": "CENTIMETER"}
    tifffile.imwrite(path, data, metadata=desc, **kwargs)


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
        InvalidFileError: the file is a directory, or its reader failed (corrupt, truncated,
            another format under this suffix, no image inside); the reader's own exception is
            chained as ``__cause__``.
    """
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a str or pathlib.Path, got {type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        raise InvalidFileError(f"{path} is a directory, not an image file")
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix not in READ_SUFFIXES:
        raise UnsupportedFormatError(f"cannot read {path}: suffix {suffix!r} is not one of "
                                     f"{list(READ_SUFFIXES)}")
    try:
        image = _read_by_suffix(path, suffix)
    except InvalidFileError:
        raise
    except Exception as exc:  # third-party readers raise anything on a malformed file
        raise InvalidFileError(f"cannot read {path} as {suffix} ({type(exc).__name__}: "
                               f"{str(exc)[:200]})") from exc
    if image.data.ndim < 2 or image.data.size == 0:
        raise InvalidFileError(f"{path} holds no image (data of shape {list(image.data.shape)})")
    return image


def _read_by_suffix(path: Path, suffix: str) -> Micrograph:
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
    if suffix in (".hspy", ".hdf5"):
        return _read_rsciio(path, "hspy")
    if suffix in (".png", ".jpg", ".jpeg"):
        import imageio.v3 as iio

        data = np.asarray(iio.imread(path))
        if data.ndim == 3:  # RGB(A) → luminance (Rec. 709 weights)
            data = data[..., :3].astype(np.float32) @ np.array([0.2125, 0.7154, 0.0721], np.float32)
        return Micrograph(data, None, {}, str(path), "imageio")
    return Micrograph(np.load(path, allow_pickle=False), None, {}, str(path), "numpy")  # .npy


def read_unit_range(path: str | Path) -> np.ndarray:
    """A 2-D micrograph as float64, min-max scaled to [0, 1] (how evaluations take a real frame
    as its own truth). Raises ValueError for a stack or any other rank, and what
    :func:`read_image` raises."""
    d = np.asarray(read_image(path).data, np.float64)
    if d.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image, got shape {list(d.shape)}")
    return (d - d.min()) / max(float(np.ptp(d)), 1e-12)


def write_image(path: str | Path, data: np.ndarray, pixel_size: float | None = None,
                metadata: dict[str, Any] | None = None) -> Path:
    """Write ``data`` [H, W] or [N, H, W] with its pixel size [Å] and metadata.

    TIFF: an ImageJ hyperstack (pixel size as unit and resolution, metadata as JSON in Info)
    that ImageJ/Fiji, tifffile and rosettasciio open, or a tifffile shaped TIFF for dtypes
    ImageJ lacks (see :func:`_write_tiff`); MRC keeps the pixel size as the voxel size and a
    label; ``.npy`` keeps the data only. Every writer round-trips through :func:`read_image`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise UnsupportedFormatError(f"cannot write {path}: suffix {suffix!r} is not one of "
                                     f"{list(WRITE_SUFFIXES)}")
    if pixel_size is not None and not (np.isfinite(pixel_size) and pixel_size > 0):
        raise ValueError(f"pixel_size must be finite and > 0 Å, got {pixel_size}")
    data = np.ascontiguousarray(data)
    if data.ndim not in (2, 3) or data.size == 0:
        raise ValueError(f"data must be a non-empty [H, W] or [N, H, W] array, got shape "
                         f"{list(data.shape)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".tif", ".tiff"):
        _write_tiff(path, data, pixel_size, metadata or {})
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
