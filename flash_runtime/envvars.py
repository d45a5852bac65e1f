"""Numbers and switches read from the environment, with one way of saying what is wrong.

Every setting read from an environment variable goes through :func:`number` or :func:`flag`, so
a bad value is refused with the variable's name, the value and what was expected, on every side
(worker, platform, packer).
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import FlashError


def flag(value: str | None) -> bool:
    """Whether an environment value means yes (1, true, yes, on)."""
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def number(
    env: Mapping[str, str],
    key: str,
    default: float,
    *,
    integer: bool = False,
    minimum: float | None = 0.0,
    positive: bool = False,
    unit: str = "",
    error: type[FlashError] = FlashError,
) -> float:
    """``env[key]`` as a number, ``default`` when unset or blank.

    ``integer`` wants a whole number; ``positive`` refuses 0 and below; ``minimum`` (default 0)
    refuses smaller values (None: no bound). ``unit`` names what the number counts, for the
    message; ``error`` is the FlashError subclass raised.
    """
    raw = env.get(key)
    if raw is None or not raw.strip():
        return default
    what = f"{'an integer' if integer else 'a number'}{f' of {unit}' if unit else ''}"
    try:
        value: float = int(raw) if integer else float(raw)
    except ValueError:
        raise error(f"{key}={raw!r} must be {what}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise error(f"{key}={raw!r} must be {what}")
    if positive and value <= 0:
        raise error(f"{key}={raw!r} must be positive ({what})")
    if minimum is not None and value < minimum:
        raise error(f"{key}={raw!r} must not be below {minimum:g}")
    return value
