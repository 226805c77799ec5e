"""Serve a real trace file as if it were a live provider, optionally faster than real time.

Trace time runs as ``anchor + (clock() - t0) * speed``: ``anchor`` is the trace's first
instant, moved by ``start`` (an offset such as ``"36h"`` or an ISO timestamp inside the trace),
and ``t0`` is ``clock()`` when the provider was built. With ``speed=3600`` one trace hour
passes per wall-clock second.

Readings carry the *trace's* timestamps, not wall-clock ones, so a caller that plots or
decides on them should use :meth:`ReplayProvider.now` as its clock. Past the end of the trace
every call raises ProviderUnavailableError (it does not wrap around: a jump back in time would
corrupt logs and accounting).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from carbonaware.core.durations import DURATION_PATTERN, parse_duration
from carbonaware.core.model import Basis, Reading
from carbonaware.providers.base import (
    DEFAULT_HISTORY,
    ConfigError,
    NoForecastError,
    ProviderUnavailableError,
    UnknownZoneError,
)
from carbonaware.traces import Trace, from_ns, shared_trace, to_ns

FORECAST_HORIZON = timedelta(hours=48)


class ReplayProvider:
    """A trace replayed as a live provider (see the module docstring for the time rules)."""

    name = "replay"

    def __init__(
        self,
        trace_path: str | Path | Trace,
        zone: str | None = None,
        speed: float = 1.0,
        start: str | datetime | timedelta | None = None,
        clock: Callable[[], float] = time.time,
        *,
        basis: Basis | str | None = None,
    ) -> None:
        self.trace = (
            trace_path if isinstance(trace_path, Trace) else shared_trace(trace_path, basis=basis)
        )
        if not speed or speed != speed or speed <= 0:
            raise ConfigError(f"replay speed must be > 0, got {speed!r}")
        self.speed = float(speed)
        # The zone this replay answers for: the configured one, else the file's. A trace with
        # no zone of its own (a plain CSV) answers for any zone.
        self.zone = zone or self.trace.zone
        self._anchor = _resolve_start(start, self.trace)
        self._start_text = str(start) if start is not None else ""
        self._clock = clock
        self._t0 = clock()
        self._times = self.trace.actual.times  # int64 ns: fast binary search
        self._values = self.trace.actual.values
        self._estimated = self.trace.estimated_flags
        self._end = self.trace.end + self.trace.step  # the last point covers one step

    @property
    def cache_key(self) -> str:
        return f"replay:{self.trace.path}:{self.trace.basis.value}:{self.speed}:{self._start_text}"

    def __repr__(self) -> str:
        return (
            f"ReplayProvider(trace={str(self.trace.path)!r}, zone={self.zone!r}, "
            f"speed={self.speed}, start={self._anchor.isoformat()})"
        )

    def now(self) -> datetime:
        """The current instant in trace time (aware UTC)."""
        elapsed = (self._clock() - self._t0) * self.speed
        return self._anchor + timedelta(seconds=elapsed)

    # --- Provider -----------------------------------------------------------------------

    def latest(self, zone: str) -> Reading:
        label = self._check(zone)
        now = self._now_checked(zone)
        i = int(np.searchsorted(self._times, to_ns(now), side="right")) - 1
        return self._reading(label, i)

    def history(self, zone: str, span: timedelta = DEFAULT_HISTORY) -> list[Reading]:
        label = self._check(zone)
        now = self._now_checked(zone)
        lo = int(np.searchsorted(self._times, to_ns(now - span), side="right"))
        hi = int(np.searchsorted(self._times, to_ns(now), side="right"))
        return [self._reading(label, i) for i in range(lo, hi)]

    def forecast(self, zone: str) -> list[Reading]:
        """The next 48 h: the file's forecast column when it has one, else the trace itself
        (a perfect forecast). Marked ``forecast=True`` either way."""
        label = self._check(zone)
        now = self._now_checked(zone)
        source = self.trace.actual if self.trace.predicted is None else self.trace.predicted
        lo = int(np.searchsorted(source.times, to_ns(now), side="right"))
        hi = int(np.searchsorted(source.times, to_ns(now + FORECAST_HORIZON), side="right"))
        if lo >= hi:
            raise NoForecastError(
                self.name,
                zone,
                f"trace {self.trace.path.name} has no points after {now:%Y-%m-%d %H:%M}Z",
            )
        return [
            Reading(
                label,
                from_ns(int(source.times[i])),
                float(source.values[i]),
                self.trace.basis,
                forecast=True,
                provider=self.name,
            )
            for i in range(lo, hi)
        ]

    # --- helpers ------------------------------------------------------------------------

    def _check(self, zone: str) -> str:
        if self.zone and zone and zone.upper() != self.zone.upper():
            raise UnknownZoneError(
                self.name,
                zone,
                f"the replayed trace {self.trace.path.name} holds zone {self.zone!r} only",
            )
        return zone or self.zone or ""

    def _now_checked(self, zone: str) -> datetime:
        now = self.now()
        if now >= self._end:
            raise ProviderUnavailableError(
                self.name,
                zone,
                f"replay reached the end of trace {self.trace.path.name} "
                f"(it ends at {self._end:%Y-%m-%d %H:%M}Z; "
                f"trace time is now {now:%Y-%m-%d %H:%M}Z)",
            )
        return now

    def _reading(self, zone: str, i: int) -> Reading:
        estimated = bool(self._estimated[i]) if self._estimated is not None else False
        return Reading(
            zone,
            from_ns(int(self._times[i])),
            float(self._values[i]),
            self.trace.basis,
            estimated=estimated,
            provider=self.name,
        )


def _resolve_start(start: str | datetime | timedelta | None, trace: Trace) -> datetime:
    """Where the replay begins: the trace start, moved by an offset, or an absolute instant."""
    if start is None or start == "":
        return trace.start
    if isinstance(start, timedelta):
        offset = start
    elif isinstance(start, str) and re.fullmatch(DURATION_PATTERN, start.strip()):
        offset = parse_duration(start)
    else:
        try:
            when = start if isinstance(start, datetime) else datetime.fromisoformat(start.strip())
        except (ValueError, TypeError, AttributeError):
            raise ConfigError(
                f"replay start {start!r} is neither an offset into the trace (e.g. 36h) "
                "nor an ISO timestamp"
            ) from None
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        if not trace.start <= when <= trace.end:
            raise ConfigError(
                f"replay start {start!r} is outside trace {trace.path.name} "
                f"({trace.start:%Y-%m-%d %H:%M}Z to {trace.end:%Y-%m-%d %H:%M}Z)"
            )
        return when
    if offset < timedelta(0) or trace.start + offset > trace.end:
        raise ConfigError(
            f"replay start offset {start!s} is outside trace {trace.path.name}, "
            f"which spans {trace.end - trace.start}"
        )
    return trace.start + offset
