"""em-accel's own exception types (one small hierarchy; re-exported as ``em_accel.errors``).

Every class also derives from the built-in a caller would expect (ValueError, TypeError), so
``except ValueError`` keeps working; catch :class:`EmAccelError` for anything em-accel raised on
purpose. Messages name the argument, what was expected and what was received.
"""
from __future__ import annotations


class EmAccelError(Exception):
    """Base of the exceptions em-accel raises on purpose."""


class InvalidInputError(EmAccelError, ValueError):
    """An argument has a value, shape or range the function does not accept."""


class InvalidIndexError(InvalidInputError):
    """An index tensor (offsets, CSR indptr/indices, species, pixel sources) points outside the
    arrays it indexes or disagrees with them; the native kernels would read or write out of
    bounds, so the call is refused before they run."""


class OutOfRangeError(InvalidInputError):
    """A scalar argument is not finite or lies outside its physically sensible range."""


class InvalidTypeError(EmAccelError, TypeError):
    """An argument has the wrong type or dtype."""


class InvalidFileError(InvalidInputError):
    """A file cannot be read: unknown format, corrupt, truncated, or holds no image."""


__all__ = ["EmAccelError", "InvalidFileError", "InvalidIndexError", "InvalidInputError",
           "InvalidTypeError", "OutOfRangeError"]
