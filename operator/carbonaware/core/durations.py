"""Parse and format the duration strings users write: ``90s``, ``30m``, ``6h``, ``1h30m``, ``2d``.

The same grammar is enforced by the CRD's CEL rules (see manifests/crd.yaml), so an object
the apiserver accepts always parses here.
"""

from __future__ import annotations

import re
from datetime import timedelta

# Kept in sync with the CRD pattern: one or more <number><unit> groups, each with at most as
# many digits as keep it within ~30 years (9999d, 99999h, ...), so none overflows a date.
DURATION_PATTERN = (
    r"^([0-9]{1,12}(\.[0-9]+)?ms|[0-9]{1,9}(\.[0-9]+)?s|[0-9]{1,7}(\.[0-9]+)?m"
    r"|[0-9]{1,5}(\.[0-9]+)?h|[0-9]{1,4}(\.[0-9]+)?d)+$"
)
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


# No input the project takes is longer: a deadline ten years out is already a typo, and
# longer ones overflow the dates they are added to.
MAX_DURATION = timedelta(days=3650)


class DurationError(ValueError):
    """A duration string that does not parse."""


def parse_duration(text: str) -> timedelta:
    """Parse ``text`` (e.g. ``"1h30m"``) into a timedelta; raise DurationError if it is not one."""
    cleaned = str(text).strip()
    if not re.fullmatch(DURATION_PATTERN, cleaned):
        raise DurationError(
            f"invalid duration {text!r}: use a number and a unit, e.g. 90s, 30m, 6h, 1h30m or 2d "
            f"(at most {format_duration(MAX_DURATION)})"
        )
    seconds = sum(float(value) * _UNITS[unit] for value, unit in _PART.findall(cleaned))
    if not seconds <= MAX_DURATION.total_seconds():  # inf too (a thousand digits)
        raise DurationError(
            f"invalid duration {text!r}: longer than {format_duration(MAX_DURATION)}"
        )
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
