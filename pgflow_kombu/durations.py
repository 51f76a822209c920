"""Durations as people write them: ``7d``, ``12h``, ``30m``, ``45s``, ``1h30m`` (or seconds)."""

from __future__ import annotations

import re
from datetime import timedelta

from pgflow_kombu.errors import ConfigurationError

__all__ = ["parse_duration"]

_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")


def parse_duration(text: str | float | timedelta) -> timedelta:
    """``"7d"`` -> 7 days; a bare number is seconds; a timedelta is returned as is.

    Raises :class:`ConfigurationError` for anything else, or a negative duration.
    """
    if isinstance(text, timedelta):
        seconds = text.total_seconds()
    elif isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    elif isinstance(text, str):
        spec = text.strip().lower().replace(" ", "")
        try:
            seconds = float(spec)
        except ValueError:
            parts = _PART.findall(spec)
            if not parts or "".join(n + u for n, u in parts) != spec:
                raise ConfigurationError(
                    f"not a duration: {text!r} (write e.g. 7d, 12h, 30m, 45s or 1h30m)"
                ) from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ConfigurationError(f"not a duration: {text!r}")
    if not seconds >= 0 or seconds == float("inf"):
        raise ConfigurationError(f"a duration must be 0 or more, got {text!r}")
    return timedelta(seconds=seconds)
