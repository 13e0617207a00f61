"""Argument checks for the public edge: durations, counts, fractions, names, callables.

Every public constructor and method validates through these, so one kind of mistake gets one
kind of message everywhere: ``TypeError`` for the wrong type, ``ValueError`` for a value out of
range, naming the argument and what it accepts. ``bool`` is never a number here.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any

__all__ = [
    "MAX_SECONDS",
    "callable_or_none",
    "count",
    "fraction",
    "is_async_callable",
    "name",
    "optional_seconds",
    "seconds",
    "timeout",
]


def _number(value: object, what: str, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number{unit}, not {type(value).__name__}")
    return float(value)


MAX_SECONDS = 10 * 365 * 86400.0
"""The longest duration accepted (ten years): beyond it Redis refuses the expiry, or the
millisecond arithmetic leaves the integers it can represent."""


def seconds(value: object, what: str, *, zero_ok: bool = False, minimum: float = 0.0, why: str = "") -> float:
    """A finite duration in seconds: ``> 0`` (``>= 0`` with ``zero_ok``), ``>= minimum`` and at
    most :data:`MAX_SECONDS`.

    ``why`` is appended to the range message (``" (a lock always expires)"``).
    """
    v = _number(value, what, " of seconds")
    if not math.isfinite(v) or v < 0 or (v == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "a positive number of"
        raise ValueError(f"{what} must be {bound} seconds{why}, got {value!r}")
    if v > MAX_SECONDS:
        raise ValueError(f"{what} must be at most ten years ({MAX_SECONDS:.0f} s), got {value!r}")
    if v < minimum:
        raise ValueError(f"{what} must be at least {minimum:g} s ({minimum * 1000:g} ms), got {value!r}")
    return v


def optional_seconds(value: object, what: str, *, zero_ok: bool = False) -> float | None:
    """``None``, or :func:`seconds`."""
    return None if value is None else seconds(value, what, zero_ok=zero_ok)


def timeout(value: object, what: str = "timeout") -> float | None:
    """How long to wait: ``None`` (forever), or seconds ``>= 0`` (``inf`` allowed)."""
    if value is None:
        return None
    v = _number(value, what, " of seconds or None")
    if math.isnan(v) or v < 0:
        raise ValueError(f"{what} must be >= 0 seconds or None (wait forever), got {value!r}")
    return v


def count(value: object, what: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """An ``int`` in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if maximum is not None and not minimum <= value <= maximum:
        raise ValueError(f"{what} must be between {minimum} and {maximum}, got {value}")
    if value < minimum:
        raise ValueError(f"{what} must be at least {minimum}, got {value}")
    return value


def fraction(value: object, what: str, *, zero_ok: bool = True, one_ok: bool = True) -> float:
    """A number in ``[0, 1]``; ``zero_ok`` / ``one_ok`` say whether the ends are allowed."""
    v = _number(value, what, " (a fraction)")
    low_ok = v >= 0 if zero_ok else v > 0
    high_ok = v <= 1 if one_ok else v < 1
    if not (low_ok and high_ok):
        interval = f"{'[' if zero_ok else '('}0, 1{']' if one_ok else ')'}"
        raise ValueError(f"{what} must be a fraction in {interval}, got {value!r}")
    return v


def name(value: object, what: str, *, braces: bool = True) -> str:
    """A non-empty single-line ``str``; with ``braces=False`` it may not contain ``{`` or ``}``
    (the name is the hash tag)."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} cannot be empty")
    if "\r" in value or "\n" in value:
        raise ValueError(f"{what} must be a single-line string, got {value!r}")
    if not braces and ("{" in value or "}" in value):
        raise ValueError(f"{what} {value!r} cannot contain braces: the name is the hash tag")
    return value


def callable_or_none(value: Any, what: str, hint: str = "") -> Callable[..., Any] | None:
    """``None`` or a callable; ``hint`` says what it is called with (``"taking the lost handle"``)."""
    if value is not None and not callable(value):
        raise TypeError(f"{what} must be a callable{' ' + hint if hint else ''}")
    return value  # type: ignore[no-any-return]


def is_async_callable(fn: object) -> bool:
    """True when calling ``fn`` returns an awaitable: ``async def`` functions and methods, a
    ``functools.partial`` of one (nested too), and objects whose ``__call__`` is ``async def``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isroutine(fn) or isinstance(fn, type) or not callable(fn):
        return False
    return inspect.iscoroutinefunction(type(fn).__call__)
