"""Argument checks shared by every public function: one integer check, one float check.

Core, below every taxonomy area. Each check returns the value as a Python number or raises
`InputError` with one line saying what was given, what is expected and how to fix it.
"""

from __future__ import annotations

import math
import numbers

from .errors import InputError

__all__ = ["check_int", "check_float"]


def _bounds(at_least: int | float | None, at_most: int | float | None) -> str:
    if at_least is not None and at_most is not None:
        return f" in {at_least}..{at_most}"
    if at_least is not None:
        return f" ≥ {at_least}"
    if at_most is not None:
        return f" ≤ {at_most}"
    return ""


def check_int(name: str, value: object, *, at_least: int | None = None, at_most: int | None = None) -> int:
    """Return ``value`` as an ``int`` if it is an integer within the bounds (both inclusive).

    Python and numpy integers are accepted; ``bool``, floats (even ``3.0``), strings and tensors
    are refused: pass ``int(value)`` explicitly.

    Raises:
        InputError: not an integer, or out of bounds.

    Example:
        >>> check_int("n_steps", 8, at_least=1)
        8
        >>> check_int("n_steps", 0, at_least=1)
        Traceback (most recent call last):
        ...
        seethrough.core.errors.InputError: n_steps must be an int ≥ 1, got 0; pass an integer ≥ 1.
    """
    expected = f"an int{_bounds(at_least, at_most)}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be {expected}, got {value!r} ({type(value).__name__}); "
                         f"pass an integer{_bounds(at_least, at_most)}.")
    number = int(value)
    if (at_least is not None and number < at_least) or (at_most is not None and number > at_most):
        raise InputError(f"{name} must be {expected}, got {number}; pass an integer{_bounds(at_least, at_most)}.")
    return number


def check_float(name: str, value: object, *, at_least: int | float | None = None,
                at_most: int | float | None = None) -> float:
    """Return ``value`` as a finite ``float`` within the bounds (both inclusive).

    Python and numpy reals (ints included) are accepted; ``bool``, NaN, ±inf, strings and tensors
    are refused.

    Raises:
        InputError: not a real number, not finite, or out of bounds.

    Example:
        >>> check_float("stdev", 1, at_least=0.0)
        1.0
        >>> check_float("stdev", float("nan"))
        Traceback (most recent call last):
        ...
        seethrough.core.errors.InputError: stdev must be a finite number, got nan; pass a finite number.
    """
    expected = f"a finite number{_bounds(at_least, at_most)}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be {expected}, got {value!r} ({type(value).__name__}); "
                         f"pass a finite number{_bounds(at_least, at_most)}.")
    number = float(value)
    if not math.isfinite(number) or (at_least is not None and number < at_least) or (
            at_most is not None and number > at_most):
        raise InputError(f"{name} must be {expected}, got {number}; pass a finite number{_bounds(at_least, at_most)}.")
    return number
