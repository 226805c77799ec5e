"""Parse and format the duration strings users write: ``90s``, ``30m``, ``6h``, ``1h30m``, ``2d``.

The same grammar is enforced by the CRD's CEL rules (see manifests/crd.yaml), so an object
the apiserver accepts always parses here.
"""

from __future__ import annotations

import re
from datetime import timedelta

# Kept in sync with the CRD pattern: one or more <number><unit> groups.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


class DurationError(ValueError):
    """A duration string that does not parse."""


def parse_duration(text: str) -> timedelta:
    """Parse ``text`` (e.g. ``"1h30m"``) into a timedelta; raise DurationError if it is not one."""
    cleaned = str(text).strip()
    if not re.fullmatch(DURATION_PATTERN, cleaned):
        raise DurationError(
            f"invalid duration {text!r}: use a number and a unit, e.g. 90s, 30m, 6h, 1h30m or 2d"
        )
    seconds = sum(float(value) * _UNITS[unit] for value, unit in _PART.findall(cleaned))
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Format a timedelta compactly (``1h30m``, ``45s``); the inverse of parse_duration."""
    total = round(delta.total_seconds())
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    total = abs(total)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)
