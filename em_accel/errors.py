"""em-accel's own exception types (one small hierarchy; re-exported as ``em_accel.errors``).

Every class also derives from the built-in a caller would expect (ValueError, TypeError), so
``except ValueError`` keeps working; catch :class:`EmAccelError` for anything em-accel raised on
purpose. Messages name the argument, what was expected and what was received.
"""
from __future__ import annotations

import math
import numbers


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


def expect_type(name: str, value: object, *types: type) -> None:
    """Raise InvalidTypeError unless ``value`` is an instance of one of ``types``."""
    if not isinstance(value, types):
        want = " or ".join(t.__name__ for t in types)
        raise InvalidTypeError(f"{name} must be a {want}, got {type(value).__name__}")


def expect_number(name: str, value: object, low: float = -math.inf, high: float = math.inf, *,
                  unit: str = "", low_open: bool = False, integer: bool = False) -> float:
    """``value`` as a float (an exact int with ``integer``); OutOfRangeError unless it is finite
    and in [low, high] ((low, high] with ``low_open``), InvalidTypeError unless it is a real
    number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidTypeError(f"{name} must be a real number, got {type(value).__name__}")
    if integer and isinstance(value, numbers.Integral):
        v = int(value)  # exact: seeds and sizes above 2**53 keep every digit
    else:
        v = float(value)
        if integer and math.isfinite(v) and v == int(v):
            v = int(v)
    below = v <= low if low_open else v < low
    if (isinstance(v, float) and not math.isfinite(v)) or below or v > high or \
            (integer and not isinstance(v, int)):
        kind = "an integer" if integer else "finite"
        lb = "(" if low_open else "["
        raise OutOfRangeError(f"{name} must be {kind} in {lb}{low:g}, {high:g}]"
                              f"{' ' + unit if unit else ''}, got {value!r}")
    return v


__all__ = ["EmAccelError", "InvalidFileError", "InvalidIndexError", "InvalidInputError",
           "InvalidTypeError", "OutOfRangeError", "expect_number", "expect_type"]
