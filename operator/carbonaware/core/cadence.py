"""When to poll a zone next: on the poll interval, phased so that a poll lands just after
each new reading is due.

Providers publish readings on a grid: Electricity Maps hourly (or finer), UK Carbon Intensity
every half hour, WattTime every 5 minutes, each stamped at the start of its period. Polled at
a fixed interval with an arbitrary phase, a new reading (a drop, say) waits up to one whole
interval to be seen, half of one on average. Here a poll comes ``lag`` seconds after each
period starts, and the routine polls follow it an interval apart: in step with the grid, at
no extra requests when a period is a whole number of intervals (an hour of 30 s polls) and
one more a period otherwise.

The grid is learnt from the readings themselves (the spacing of the last two distinct
timestamps, when both sit on it); ``lag`` (how late the provider publishes) starts small and
doubles each time a poll made after a reading was due still finds the one before it.
Pure functions of plain values; the provider cache (providers/cache.py) keeps the state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

# A grid finer than this is noise (timestamps in whole seconds); coarser than a day, no grid.
MIN_PERIOD = timedelta(seconds=1)
MAX_PERIOD = timedelta(days=1)
# Readings this far from the wall clock are not live (a replayed trace, stale data): their
# grid says nothing about when the next one comes.
LIVE_SLACK = timedelta(minutes=1)
# Polls never come closer together than this (a reading due just after a poll waits so long).
MIN_WAIT_S = 0.1


@dataclass(frozen=True)
class Cadence:
    """What has been learnt about one zone's readings."""

    last: datetime | None = None  # the newest reading's timestamp
    period: timedelta | None = None  # the spacing of its grid, once known
    lag_s: float = 0.25  # seconds after a period starts that its reading is there


def observe(cadence: Cadence, timestamp: datetime, now: datetime, max_lag_s: float) -> Cadence:
    """``cadence`` after a poll at ``now`` returned a reading stamped ``timestamp``.

    A new timestamp on the grid sets the period (the spacing from the one before, unless it
    is a multiple of the known period: a reading was skipped). The same timestamp again,
    after the next one was due, means the provider publishes later than ``lag_s``: double it
    (up to ``max_lag_s``), so the next period's poll waits longer.
    """
    last, period, lag = cadence.last, cadence.period, cadence.lag_s
    if last is None or timestamp > last:
        spacing = timestamp - last if last is not None else None
        if (
            spacing is not None
            and MIN_PERIOD <= spacing <= MAX_PERIOD
            and _on_grid(last, spacing)
            and _on_grid(timestamp, spacing)
            and (period is None or not _multiple(spacing, period))
        ):
            period = spacing
        return Cadence(timestamp, period, lag)
    if timestamp == last and period is not None and now >= last + period + timedelta(seconds=lag):
        return Cadence(last, period, min(2 * lag, max_lag_s))
    return cadence


class NextPoll(NamedTuple):
    wait_s: float  # seconds from now
    for_new_reading: bool  # the poll just after the next reading is due (not a routine one)


def next_poll(cadence: Cadence, now: datetime, interval_s: float) -> NextPoll:
    """When to poll next: after ``interval_s``, or sooner, ``lag_s`` after the next period
    starts, if that comes first. Only for a grid that is known, live and no finer than the
    interval (a finer one would poll more often than the interval allows). So polls are
    never further apart than the interval, and at most one more a period than it allows;
    none more once they fall in step (a period a whole number of intervals)."""
    routine = NextPoll(interval_s, False)
    last, period = cadence.last, cadence.period
    if last is None or period is None or period.total_seconds() < interval_s:
        return routine
    if not now - period - LIVE_SLACK <= last <= now + LIVE_SLACK:
        return routine
    due = (last + period - now).total_seconds() + cadence.lag_s
    if 0 < due < interval_s:
        return NextPoll(max(due, MIN_WAIT_S), True)
    return routine


def _on_grid(timestamp: datetime, spacing: timedelta) -> bool:
    """Stamped at a whole multiple of ``spacing`` since the epoch, as period starts are."""
    spacing_us = spacing // timedelta(microseconds=1)
    return spacing_us > 0 and int(timestamp.timestamp() * 1_000_000) % spacing_us == 0


def _multiple(spacing: timedelta, period: timedelta) -> bool:
    ratio = spacing / period
    return ratio >= 1 and abs(ratio - round(ratio)) < 1e-6
