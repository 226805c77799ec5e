"""Plain data shared by every layer: one carbon-intensity reading.

Every number the product reports starts as a ``Reading``, so each one carries where it came
from and how to read it: the emission-factor basis (direct combustion or life-cycle) and
whether it is an actual measurement, an estimate, or a forecast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum


class Basis(StrEnum):
    """Which emission factors an intensity uses."""

    DIRECT = "direct"  # operational (combustion) emissions only
    LIFECYCLE = "lifecycle"  # life-cycle assessment (LCA): includes building and fuel supply
    MARGINAL = "marginal"  # marginal operating emissions rate (WattTime MOER)


@dataclass(frozen=True, slots=True)
class Reading:
    """The grid's carbon intensity for one zone at one instant (the start of its interval).

    ``timestamp`` is always timezone-aware UTC. ``intensity`` is in gCO2eq/kWh.
    """

    zone: str
    timestamp: datetime
    intensity: float
    basis: Basis = Basis.DIRECT
    forecast: bool = False  # a prediction of this instant, not an observation
    estimated: bool = False  # the provider estimated it (e.g. missing measurements)
    provider: str = ""

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None:
            raise ValueError(f"Reading.timestamp must be timezone-aware, got {self.timestamp!r}")
        # NaN, infinite (json accepts "Infinity") or negative
        if not math.isfinite(self.intensity) or self.intensity < 0:
            raise ValueError(f"Reading.intensity must be finite and >= 0, got {self.intensity}")


def utc(ts: datetime) -> datetime:
    """Return ``ts`` as an aware UTC datetime (naive values are taken to be UTC)."""
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)
