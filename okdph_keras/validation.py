"""Argument checks: each names the bad value and says what is allowed.

Every public entry point checks its arguments with these helpers, once, so that a
bad value fails the same way wherever it enters: `ValueError` with the message
`"<name>=<value> is not allowed; it must be <what is allowed>."`.

Example:
    >>> check_number("omega", 1.5, low=0.0, high=1.0)
    Traceback (most recent call last):
    ValueError: omega=1.5 is not allowed; it must be a number in [0, 1].
"""

import math
import numbers


def fail(name, value, allowed):
    """Raises the `ValueError` of every check: `name=value is not allowed; it must be ...`."""
    raise ValueError(f"{name}={value!r} is not allowed; it must be {allowed}.")


def is_number(value):
    """Whether `value` is a real number (numpy scalars included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_integer(value):
    """Whether `value` is an integer (numpy integers included), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_number(name, value, *, low=None, high=None, low_open=False, high_open=False):
    """A finite real number within the given bounds, returned as a float.

    Args:
        name: the argument's name, as the user wrote it.
        value: what was passed.
        low, high: optional bounds.
        low_open, high_open: whether a bound itself is excluded.

    Returns:
        `float(value)`.
    """
    bounds = dict(low=low, high=high, low_open=low_open, high_open=high_open)
    allowed = _range("a number", "a finite number", **bounds)
    if not is_number(value) or not math.isfinite(value) or not _within(value, **bounds):
        fail(name, value, allowed)
    return float(value)


def check_integer(name, value, *, low=None, high=None):
    """An integer within `[low, high]`, returned as an `int`."""
    bounds = dict(low=low, high=high, low_open=False, high_open=False)
    if not is_integer(value) or not _within(value, **bounds):
        fail(name, value, _range("an integer", "an integer", **bounds))
    return int(value)


def check_bool(name, value):
    """`True` or `False` (not 0, 1 or a string)."""
    if not isinstance(value, bool):
        fail(name, value, "True or False")
    return value


def check_choice(name, value, choices):
    """One of `choices`, returned unchanged."""
    if not isinstance(value, str) or value not in choices:
        fail(name, value, f"one of {tuple(choices)!r}")
    return value


def _within(value, *, low, high, low_open, high_open):
    if low is not None and (value <= low if low_open else value < low):
        return False
    return high is None or (value < high if high_open else value <= high)


def _range(bounded, unbounded, *, low, high, low_open, high_open):
    """Words for the allowed range: `a number in [0, 1)`, `an integer >= 1`, ..."""
    if low is not None and high is not None:
        return (
            f"{bounded} in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        )
    if low is not None:
        return f"{unbounded} {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{unbounded} {'<' if high_open else '<='} {high:g}"
    return unbounded
