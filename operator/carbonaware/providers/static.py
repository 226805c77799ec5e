"""A constant carbon intensity: for smoke tests and demos that must not depend on a grid."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from carbonaware.core.model import Basis, Reading
from carbonaware.providers.base import DEFAULT_HISTORY, ConfigError

_STEP = timedelta(hours=1)


class StaticProvider:
    """Serves ``value`` g/kWh for every zone: now, for the past (24 h unless asked for more)
    and the next 48 h.

    Timestamps are wall-clock hours (``clock`` is seconds since the epoch), so a constant
    forecast lets forecast-driven policies run end to end without a network.
    """

    name = "static"

    def __init__(
        self,
        value: float,
        *,
        basis: Basis = Basis.DIRECT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if value is None or value != value or value < 0:
            raise ConfigError(f"static provider needs a value >= 0 g/kWh, got {value!r}")
        self.value = float(value)
        self.basis = Basis(basis)
        self._clock = clock

    @property
    def cache_key(self) -> str:
        return f"static:{self.value}:{self.basis.value}"

    def __repr__(self) -> str:
        return f"StaticProvider(value={self.value}, basis={self.basis.value})"

    def _hour(self) -> datetime:
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        return now.replace(minute=0, second=0, microsecond=0)

    def _reading(self, zone: str, at: datetime, *, forecast: bool = False) -> Reading:
        return Reading(zone, at, self.value, self.basis, forecast=forecast, provider=self.name)

    def latest(self, zone: str) -> Reading:
        return self._reading(zone, self._hour())

    def forecast(self, zone: str) -> list[Reading]:
        hour = self._hour()
        return [self._reading(zone, hour + _STEP * i, forecast=True) for i in range(1, 49)]

    def history(self, zone: str, span: timedelta = DEFAULT_HISTORY) -> list[Reading]:
        hour = self._hour()
        hours = max(1, int(span / _STEP))
        return [self._reading(zone, hour - _STEP * i) for i in range(hours - 1, -1, -1)]
