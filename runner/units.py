"""Units: the one place that parses and formats durations and sizes.

Every module that shows a size or a duration to a person, and every key that reads a
duration from a profile, goes through here, so ``2.1 KB`` and ``1h30m`` mean the same
thing in the terminal, the report, summary.json's sentences and the profile.
"""

from __future__ import annotations

import math
import re
from typing import Any

from .errors import ProfileError

__all__ = ["parse_duration", "format_duration", "format_bytes", "format_eta"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any, *, key: str = "duration") -> float:
    """Seconds from a duration such as ``90s``, ``10m``, ``8h``, ``1h30m``, ``500ms`` or a number.

    ``key`` names the profile key (or option) in the one-line error for a bad value.
    """
    if isinstance(value, bool):
        raise ProfileError(f"{key}: expected a duration such as 90s, 10m or 8h, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif text and re.fullmatch(f"(?:{_DURATION_PART.pattern})+", text):
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
        else:
            raise ProfileError(
                f"{key}: {value!r} is not a duration",
                hint="write a number with a unit such as 90s, 10m, 8h or 1h30m",
            )
    else:
        raise ProfileError(f"{key}: expected a duration such as 90s, 10m or 8h, got {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ProfileError(f"{key}: {value!r} must be a finite, non-negative duration")
    return seconds


def format_duration(seconds: float) -> str:
    """A duration as a profile would write it, e.g. ``2m``, ``1h30m``, ``0.5s``."""
    if seconds < 60:
        return f"{seconds:g}s"
    parts = []
    rest = int(round(seconds))
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


def format_eta(seconds: float) -> str:
    """A rough estimate of time for a sentence: ``40 s``, ``12 min``, ``3.5 h``."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_bytes(value: float | None) -> str:
    """``2.1 KB``, ``32 B``, ``0.32 B``, ``-6 B``: binary units, one decimal above bytes; ``-`` for None."""
    if value is None:
        return "-"
    value = float(value)
    if not math.isfinite(value):
        return "unbounded" if value > 0 else "-unbounded"
    sign = "-" if value < 0 else ""
    value = abs(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            if unit == "B":
                return f"{sign}{value:.2g} B" if 0 < value < 10 else f"{sign}{value:.0f} B"
            return f"{sign}{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
