"""An ordered fallback chain of providers: the first that answers wins.

Each reading says which provider answered (``Reading.provider``); :meth:`FallbackChain.status`
tells, per zone, who answered last and why the providers before it failed, so the operator can
report a "stale/fallback" condition.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeVar

from carbonaware.core.model import Reading
from carbonaware.providers.base import (
    DEFAULT_HISTORY,
    NoForecastError,
    Provider,
    ProviderError,
    ProviderUnavailableError,
    UnknownZoneError,
)

T = TypeVar("T")


@dataclass(frozen=True)
class ChainStatus:
    """The outcome of the chain's most recent call for one zone and kind."""

    kind: str  # "latest", "forecast" or "history"
    answered_by: str | None  # None when every provider failed
    failures: tuple[ProviderError, ...] = field(default_factory=tuple)
    at: float = 0.0  # clock() when it happened

    @property
    def fell_back(self) -> bool:
        return self.answered_by is not None and bool(self.failures)


class FallbackChain:
    """Tries ``providers`` in order; a ProviderError moves on to the next one."""

    def __init__(self, providers: Sequence[Provider], *, clock: Callable[[], float] = time.time):
        if not providers:
            raise ValueError("FallbackChain needs at least one provider")
        self.providers = list(providers)
        self.name = "fallback(" + ",".join(p.name for p in self.providers) + ")"
        self._clock = clock
        self._lock = threading.Lock()
        self._status: dict[tuple[str, str], ChainStatus] = {}

    @property
    def cache_key(self) -> str:
        keys = (getattr(p, "cache_key", p.name) for p in self.providers)
        return "fallback(" + ",".join(keys) + ")"

    def __repr__(self) -> str:
        return f"FallbackChain({self.providers!r})"

    def status(self, zone: str, kind: str = "latest") -> ChainStatus | None:
        """Who answered the last ``kind`` call for ``zone``, and who failed before it."""
        with self._lock:
            return self._status.get((zone, kind))

    def latest(self, zone: str) -> Reading:
        return self._first("latest", zone, lambda p: p.latest(zone))

    def forecast(self, zone: str) -> list[Reading]:
        return self._first("forecast", zone, lambda p: p.forecast(zone))

    def history(self, zone: str, span: timedelta = DEFAULT_HISTORY) -> list[Reading]:
        return self._first("history", zone, lambda p: p.history(zone, span))

    def _first(self, kind: str, zone: str, call: Callable[[Provider], T]) -> T:
        failures: list[ProviderError] = []
        for provider in self.providers:
            try:
                result = call(provider)
            except ProviderError as exc:
                failures.append(exc)
                continue
            self._record(ChainStatus(kind, provider.name, tuple(failures), self._clock()), zone)
            return result
        self._record(ChainStatus(kind, None, tuple(failures), self._clock()), zone)
        raise _combined(self.name, zone, failures)

    def _record(self, status: ChainStatus, zone: str) -> None:
        with self._lock:
            self._status[(zone, status.kind)] = status


def _combined(name: str, zone: str, failures: list[ProviderError]) -> ProviderError:
    """One error for a chain where every provider failed, of the type they share if any."""
    detail = "every provider failed: " + "; ".join(str(f) for f in failures)
    kinds = {type(f) for f in failures}
    for shared in (UnknownZoneError, NoForecastError):
        if kinds == {shared}:
            return shared(name, zone, detail)
    if len(failures) == 1:
        return failures[0]
    return ProviderUnavailableError(name, zone, detail)
