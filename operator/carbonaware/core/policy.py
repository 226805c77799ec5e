"""When to start a job: run now, or wait (until when), with a reason a person can read.

Pure functions on plain data; the caller brings the clock and the readings.

- ``threshold``: start at the first actual reading at or below the threshold.
- ``forecast``: start at the beginning of the window of length ``expected_duration`` with the
  lowest mean forecast intensity, among the starts no later than the deadline. "Now" is a
  candidate too, valued at the latest actual reading. Without a provider forecast the policy
  forecasts from the history itself (:mod:`carbonaware.core.forecast`) and says so.

Whatever the strategy, the job never waits past its deadline (submission + ``max_delay``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import numpy as np

from carbonaware.core.durations import format_duration
from carbonaware.core.forecast import profile_forecast
from carbonaware.core.model import Reading, utc

DEFAULT_STEP = timedelta(hours=1)


class Strategy(StrEnum):
    """How a job picks its start time."""

    THRESHOLD = "threshold"
    FORECAST = "forecast"


@dataclass(frozen=True)
class PolicySettings:
    strategy: Strategy
    threshold_g_per_kwh: float
    max_delay: timedelta
    expected_duration: timedelta

    def __post_init__(self) -> None:
        if self.threshold_g_per_kwh < 0 or math.isnan(self.threshold_g_per_kwh):
            raise ValueError(f"threshold must be >= 0 g/kWh, got {self.threshold_g_per_kwh}")
        if self.max_delay < timedelta(0):
            raise ValueError(f"max delay must be >= 0, got {self.max_delay}")
        if self.expected_duration <= timedelta(0):
            raise ValueError(f"expected duration must be > 0, got {self.expected_duration}")


@dataclass(frozen=True)
class Decision:
    action: str  # "run" | "wait"
    reason: str
    planned_start: datetime | None  # when the job starts (run: now); None: unknown yet
    forecast_source: str | None  # "provider" | "own-forecaster" | None
    deadline: datetime

    @property
    def run(self) -> bool:
        return self.action == "run"


def best_window_start(
    times: np.ndarray,
    intensities: np.ndarray,
    window_steps: int,
    earliest_index: int,
    latest_index: int,
) -> int:
    """Index of the start of the ``window_steps`` window with the lowest mean intensity.

    Candidates are the starts in ``[earliest_index, latest_index]`` whose whole window lies in
    the series; ``latest_index`` is clipped to the last such start (when even the earliest
    window does not fit, ``earliest_index`` is returned). Ties go to the earliest start.
    ``times`` (evenly spaced, datetime64 or epoch seconds) only has to match ``intensities``
    in length: the steps are what count.
    """
    values = np.asarray(intensities, dtype=float)
    if len(times) != values.size:
        raise ValueError(f"times ({len(times)}) and intensities ({values.size}) differ in length")
    if values.size == 0:
        raise ValueError("no intensities to choose a window from")
    if window_steps < 1 or earliest_index < 0 or latest_index < earliest_index:
        raise ValueError(
            f"need window_steps >= 1 and 0 <= earliest <= latest, got {window_steps}, "
            f"{earliest_index}, {latest_index}"
        )
    latest = min(latest_index, values.size - window_steps)
    if latest < earliest_index:
        return earliest_index
    sums = np.concatenate(([0.0], np.cumsum(values)))
    window_sums = (
        sums[earliest_index + window_steps : latest + window_steps + 1]
        - sums[earliest_index : latest + 1]
    )
    # cumsum differences carry rounding noise; treat sums within it as ties (earliest wins)
    tolerance = 1e-12 * max(1.0, float(np.abs(sums[-1])))
    best = np.flatnonzero(window_sums <= window_sums.min() + tolerance)[0]
    return earliest_index + int(best)


def decide(
    settings: PolicySettings,
    submitted_at: datetime,
    now: datetime,
    history: Sequence[Reading],
    forecast: Sequence[Reading],
) -> Decision:
    """Run now or wait, under ``settings``, given the actual readings so far and a forecast."""
    submitted_at, now = utc(submitted_at), utc(now)
    deadline = submitted_at + settings.max_delay
    actual = sorted(
        (r for r in history if not r.forecast and r.timestamp <= now), key=lambda r: r.timestamp
    )
    latest = actual[-1] if actual else None

    if now >= deadline:
        seen = f"intensity {latest.intensity:.0f} g/kWh; " if latest else ""
        return Decision("run", f"{seen}deadline reached; running", now, None, deadline)
    if latest is None:
        return Decision(
            "wait",
            f"no reading yet; waiting (deadline in {time_left(deadline, now)})",
            None,
            None,
            deadline,
        )
    if settings.strategy == Strategy.FORECAST:
        return _decide_forecast(settings, now, deadline, actual, forecast)
    return _decide_threshold(settings, now, deadline, latest)


def _decide_threshold(
    settings: PolicySettings, now: datetime, deadline: datetime, latest: Reading, note: str = ""
) -> Decision:
    threshold = settings.threshold_g_per_kwh
    if latest.intensity <= threshold:
        reason = f"intensity {latest.intensity:.0f} g/kWh at or below threshold {threshold:.0f}"
        return Decision("run", f"{reason}; running{note}", now, None, deadline)
    reason = (
        f"intensity {latest.intensity:.0f} g/kWh above threshold {threshold:.0f}; "
        f"waiting (deadline in {time_left(deadline, now)})"
    )
    return Decision("wait", reason + note, None, None, deadline)


@dataclass(frozen=True)
class WindowPlan:
    """The forecast window choice at ``now``: the series it chose on and its cleanest start.

    ``times[0]`` is now, valued at the latest actual reading; ``best`` indexes the start of
    the cleanest ``window``-step window no later than the deadline.
    """

    times: list[datetime]
    values: np.ndarray
    window: int
    best: int
    source: str  # "provider" | "own-forecaster"

    @property
    def best_mean(self) -> float:
        return float(self.values[self.best : self.best + self.window].mean())

    @property
    def now_mean(self) -> float:
        return float(self.values[: self.window].mean())

    @property
    def planned_start(self) -> datetime:
        return self.times[self.best]


def window_plan(
    settings: PolicySettings,
    now: datetime,
    deadline: datetime,
    actual: list[Reading],
    provider_forecast: Sequence[Reading],
) -> WindowPlan | None:
    """The cleanest window from the provider's forecast, else the own forecaster's, from
    ``actual`` (sorted, non-empty); None when neither forecasts anything."""
    future = sorted(
        (r for r in provider_forecast if utc(r.timestamp) > now), key=lambda r: r.timestamp
    )
    source = "provider"
    if not future:
        step = step_of(actual)
        horizon = deadline - now + settings.expected_duration
        future = profile_forecast(actual, now, horizon, step)
        source = "own-forecaster"
    if not future:
        return None
    step = step_of(future)
    times = [now] + [utc(r.timestamp) for r in future]
    values = np.array([actual[-1].intensity] + [r.intensity for r in future])
    window = max(1, math.ceil(settings.expected_duration / step))
    latest_index = max(i for i, t in enumerate(times) if t <= deadline)
    best = best_window_start(
        np.array([t.timestamp() for t in times]), values, window, 0, latest_index
    )
    if times[best] <= now:
        best = 0
    return WindowPlan(times, values, window, best, source)


def _decide_forecast(
    settings: PolicySettings,
    now: datetime,
    deadline: datetime,
    actual: list[Reading],
    provider_forecast: Sequence[Reading],
) -> Decision:
    latest = actual[-1]
    plan = window_plan(settings, now, deadline, actual, provider_forecast)
    if plan is None:
        return _decide_threshold(
            settings, now, deadline, latest, note=" (no forecast available: threshold rule)"
        )
    source = plan.source
    best_mean, now_mean = plan.best_mean, plan.now_mean
    origin = (
        "forecast from own forecaster: same-hour profile of the last days plus today's level "
        "(provider has none)"
        if source == "own-forecaster"
        else "provider forecast"
    )
    if plan.best == 0:
        reason = (
            f"intensity {latest.intensity:.0f} g/kWh; the next "
            f"{format_duration(settings.expected_duration)} average {now_mean:.0f} g/kWh, "
            f"the cleanest window before the deadline; running ({origin})"
        )
        return Decision("run", reason, now, source, deadline)
    planned = plan.planned_start
    reason = (
        f"intensity {latest.intensity:.0f} g/kWh; cleanest window starts "
        f"{planned:%Y-%m-%d %H:%M} UTC at {best_mean:.0f} g/kWh mean vs {now_mean:.0f} now; "
        f"waiting {time_left(planned, now)} (deadline in {time_left(deadline, now)}; {origin})"
    )
    return Decision("wait", reason, planned, source, deadline)


def step_of(readings: Sequence[Reading]) -> timedelta:
    """Typical spacing of readings (median), DEFAULT_STEP when there are too few."""
    if len(readings) < 2:
        return DEFAULT_STEP
    stamps = np.array([r.timestamp.timestamp() for r in readings])
    gaps = np.diff(stamps)
    gaps = gaps[gaps > 0]
    if gaps.size == 0:
        return DEFAULT_STEP
    return timedelta(seconds=float(np.median(gaps)))


def time_left(later: datetime, now: datetime) -> str:
    """How long from ``now`` until ``later`` (0 if past), to the minute, for reasons."""
    minutes = round(max((later - now).total_seconds(), 0) / 60)
    return format_duration(timedelta(minutes=minutes))
