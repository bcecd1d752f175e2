"""Microscope file input/output through tifffile, mrcfile, rosettasciio and imageio."""
from __future__ import annotations

from ..errors import InvalidFileError
from .readers import (READ_SUFFIXES, WRITE_SUFFIXES, Micrograph, UnsupportedFormatError,
                      jsonable, read_image, read_unit_range, to_angstrom,
                      write_image)

__all__ = ["InvalidFileError", "Micrograph", "READ_SUFFIXES", "UnsupportedFormatError", "WRITE_SUFFIXES",
           "jsonable", "read_image", "read_unit_range", "to_angstrom", "write_image"]
