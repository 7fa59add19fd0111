"""Checking arguments: the toolkit's wording for a bad value, and the number tests behind it.

Errors name the argument and show what was expected against what was received
(STYLE.md 5)::

    Received an invalid value for argument `lr`, expected a positive number, got 0

``bool`` is an ``int`` to Python, but ``True`` is never a count, a size or a
rate here, so neither predicate accepts it. NumPy scalars are accepted: they
register as ``numbers.Integral`` and ``numbers.Real``.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["invalid_argument", "is_int", "is_real"]


def invalid_argument(name: str, expected: str, got: object) -> ValueError:
    """The error for argument `name`, which should be `expected` but is `got`.

    Args:
        name: The argument's name, shown in backticks.
        expected: What a valid value is, in words (``"a positive integer"``).
        got: The value received; the message shows its ``repr``.

    Returns:
        A ValueError for the caller to raise.

    Example:
        >>> str(invalid_argument("lr", "a positive number", 0))
        'Received an invalid value for argument `lr`, expected a positive number, got 0'
    """
    return ValueError(
        f"Received an invalid value for argument `{name}`, expected {expected}, got {got!r}"
    )


def is_int(value: object) -> bool:
    """Whether `value` is an integer: an ``int`` or a NumPy integer, but not a ``bool``.

    Args:
        value: Anything.

    Returns:
        True for ``numbers.Integral`` other than ``bool``.
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """Whether `value` is a finite real number (an integer counts), but not a ``bool``.

    Args:
        value: Anything.

    Returns:
        True for finite ``numbers.Real`` other than ``bool``; False for NaN, infinities
        and integers too large for a float.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond float's range: no rate, size or probability
        return False
