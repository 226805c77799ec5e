"""Our own forecasters, for providers that offer no forecast. Pure functions, data <= now only.

**Profile forecaster** (what the policy uses, :func:`profile_forecast`): the grid's daily cycle
from the same hour of the last two weeks (mean of up to 14 days, the latest day weighted a
little more), blended with the same hour a week before (the weekly cycle: weekends, the
weekday pattern of demand), shifted by how far the grid runs above or below that profile right
now, the shift fading over a day:

    forecast(now + L) = profile(L) + exp(-L / tau) * (latest - profile(0))

It needs 15 days of history for the full profile (the operator and ``carbonctl run`` ask the
provider for :data:`FORECASTER_HISTORY` at submission) and works with less (a week: the
weekly term; one day: yesterday's curve; no day: persistence). Its knobs were chosen on the
2021 traces only (the 2022 ones are held out to check them). :func:`profile_forecast_rows`
is the same formula on an evenly spaced array for many origins at once (what the backtest
runs, a whole trace in one call).

**Seasonal-naive** (the first version, kept as the reference to beat): yesterday's value
shifted by today's anomaly against yesterday, decaying as ``exp(-L / 3 h)``:

    forecast(t) = value(t - k * 24 h) + w(L) * (latest - value(now - 24 h)),   L = t - now,

where ``k`` is the smallest whole number of days that puts ``t - k * 24 h`` at or before now.
Where the history does not reach back a day, it is the latest reading (persistence).
:func:`seasonal_naive_forecast` on readings, :func:`seasonal_naive_predict` on an array.
Both forecasters never go below zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from carbonaware.core.model import Reading, utc

OWN_FORECASTER = "own-forecaster"
DAY = timedelta(days=1)
DEFAULT_TAU = timedelta(hours=3)


def blend_weight(lead_seconds: np.ndarray, tau: timedelta = DEFAULT_TAU) -> np.ndarray:
    """Weight on the current anomaly for each lead time: 1 at lead 0, decaying with ``tau``."""
    return np.exp(-np.asarray(lead_seconds, dtype=float) / tau.total_seconds())


def seasonal_naive_predict(
    values: np.ndarray,
    lead_steps: int,
    steps_per_day: int = 24,
    tau_steps: float = 3.0,
) -> np.ndarray:
    """Forecast of each ``values[j]`` issued ``lead_steps`` steps earlier, for a whole series.

    ``values`` is evenly spaced (``steps_per_day`` per day). Returns an array the shape of
    ``values`` whose element ``j`` is the forecast made at origin ``j - lead_steps`` (the last
    value known then is ``values[j - lead_steps]``); NaN where the origin or the seasonal value
    falls before the start of the series.
    """
    series = np.asarray(values, dtype=float)
    if lead_steps < 1:
        raise ValueError(f"lead_steps must be >= 1, got {lead_steps}")
    days_back = -(-lead_steps // steps_per_day)  # ceil: the seasonal value must be known at origin
    seasonal_lag = days_back * steps_per_day
    weight = float(np.exp(-lead_steps / tau_steps))
    out = np.full(series.shape, np.nan)
    first = max(lead_steps + steps_per_day, seasonal_lag)
    if first >= series.size:
        return out
    end = series.size
    level = series[first - lead_steps : end - lead_steps]
    level_yesterday = series[first - lead_steps - steps_per_day : end - lead_steps - steps_per_day]
    seasonal = series[first - seasonal_lag : end - seasonal_lag]
    out[first:] = np.maximum(seasonal + weight * (level - level_yesterday), 0.0)
    return out


def seasonal_naive_forecast(
    history: Sequence[Reading],
    now,
    horizon: timedelta,
    step: timedelta = timedelta(hours=1),
    tau: timedelta = DEFAULT_TAU,
) -> list[Reading]:
    """Forecast readings at the step boundaries after ``now`` up to ``now + horizon``.

    ``history`` holds actual readings (forecasts in it are ignored); each holds until the next.
    Returns [] when there is no actual reading at or before ``now``. Readings are marked
    ``forecast=True, estimated=True, provider="own-forecaster"``.
    """
    now = utc(now)
    actual = _actual_up_to(history, now)
    if not actual or step <= timedelta(0) or horizon <= timedelta(0):
        return []
    latest = actual[-1]
    times = np.array([r.timestamp.timestamp() for r in actual])
    values = np.array([r.intensity for r in actual])

    step_s = step.total_seconds()
    now_s = now.timestamp()
    first_target = (np.floor(now_s / step_s) + 1) * step_s
    count = int(np.floor((now_s + horizon.total_seconds() - first_target) / step_s + 1e-6)) + 1
    if count <= 0:
        return []
    targets = first_target + step_s * np.arange(count)
    lead = targets - now_s
    days_back = np.ceil(lead / DAY.total_seconds())
    seasonal_at = targets - days_back * DAY.total_seconds()
    seasonal = _in_force(times, values, seasonal_at)
    yesterday_now = _in_force(times, values, np.array([now_s - DAY.total_seconds()]))[0]
    if np.isnan(yesterday_now):  # under a day of history: persistence
        predicted = np.full(targets.shape, latest.intensity)
    else:
        anomaly = latest.intensity - yesterday_now
        predicted = np.maximum(seasonal + blend_weight(lead, tau) * anomaly, 0.0)
    stamps = targets.astype("datetime64[s]").astype(object)
    return _forecast_readings(latest, stamps, predicted)


def _actual_up_to(history: Sequence[Reading], now) -> list[Reading]:
    """The actual readings (no forecasts) at or before ``now``, oldest first."""
    return sorted(
        (r for r in history if not r.forecast and r.timestamp <= now), key=lambda r: r.timestamp
    )


def _forecast_readings(latest: Reading, stamps, values) -> list[Reading]:
    """Forecast readings for the zone and basis of ``latest``, marked as our own estimate."""
    return [
        Reading(
            zone=latest.zone,
            timestamp=utc(stamp),
            intensity=float(value),
            basis=latest.basis,
            forecast=True,
            estimated=True,
            provider=OWN_FORECASTER,
        )
        for stamp, value in zip(stamps, values, strict=True)
    ]


def _in_force(times: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Piecewise-constant lookup: the value of the reading in force at each instant (NaN
    before the first reading)."""
    index = np.searchsorted(times, at, side="right") - 1
    return np.where(index >= 0, values[np.clip(index, 0, None)], np.nan)


# --------------------------------------------------------------------------- profile forecaster

# Chosen on the 2021 Electricity Maps traces only (2022 held out): the latest day's weight 0.3
# and today's deviation decaying over a day by the forecast error 1-24 h ahead; then 14 days
# rather than 7 and a quarter's weight on the same hour a week before by the share of the
# oracle's saving that forecast-own captures (bench/scheduling.py), which both raised on 2021
# (80.0 -> 81.3 %), while a median or trimmed profile, geometric day weights, a slower or
# faster decay, a multi-day level term and a lead-dependent bonus or penalty for waiting did
# not (docs/benchmarks.md, "Scheduling").
PROFILE_DAYS = 14
PROFILE_RECENT_WEIGHT = 0.3
PROFILE_TAU = timedelta(hours=24)
PROFILE_WEEKLY_WEIGHT = 0.25
# What the forecaster wants at submission: the profile's days plus one (today's deviation
# from the profile needs the day before the first); the operator and carbonctl ask for it.
FORECASTER_HISTORY = timedelta(days=PROFILE_DAYS + 1)


@dataclass(frozen=True, slots=True)
class ProfileSettings:
    """The profile forecaster's knobs, in steps of the series (defaults: hourly steps)."""

    steps_per_day: int = 24
    days: int = PROFILE_DAYS  # at most this many past days make the daily profile
    recent_weight: float = PROFILE_RECENT_WEIGHT  # extra weight on the latest day's value
    tau_steps: float = PROFILE_TAU / timedelta(hours=1)  # decay of today's deviation
    weekly_weight: float = PROFILE_WEEKLY_WEIGHT  # weight of the same hour a week before

    @classmethod
    def for_step(cls, step: timedelta, days: int = PROFILE_DAYS) -> ProfileSettings:
        return cls(max(1, round(DAY / step)), days, tau_steps=PROFILE_TAU / step)


def profile_forecast_rows(
    values: np.ndarray,
    origins: np.ndarray,
    horizon: int,
    history_steps: np.ndarray | int | None = None,
    settings: ProfileSettings = ProfileSettings(),
) -> np.ndarray:
    """Forecast rows issued at each of ``origins`` from the values up to it, and no later.

    Row ``i``, column ``L`` is the forecast of ``values[origins[i] + L]`` made at
    ``origins[i]``; column 0 is the value at the origin itself (it is known). The forecaster
    sees only the last ``history_steps`` values up to and including the origin (all of them
    when None; an int or one per origin): what a scheduler that was handed that much history
    knows. For lead ``L`` it is

        profile(L) + exp(-L / tau) * (value now - profile(0)),

    where ``profile(L)`` is the mean of the values at the same time of day on up to ``days``
    past days (the most recent ones whose value is already known at the origin), blended
    with the latest of them by ``recent_weight``, then with the value a week before the
    target by ``weekly_weight`` (where the history holds it), and
    ``profile(0)`` the same for the origin's time of day on the days before it. So near the
    origin the forecast follows today's level, further ahead the daily and weekly shape of
    the last weeks.
    Without a day's history for a lead the forecast is the value now (persistence); without
    a previous day for the origin's time the deviation term is dropped. Never below zero.
    """
    x = np.asarray(values, dtype=float)
    t = np.asarray(origins, dtype=int)
    per_day, days = settings.steps_per_day, settings.days
    if horizon < 1 or per_day < 1 or days < 1:
        raise ValueError(
            f"need horizon, steps_per_day, days >= 1, got {horizon}, {per_day}, {days}"
        )
    if t.size and (t.min() < 0 or t.max() >= x.size):
        raise ValueError("origins must index into values")
    seen = t + 1 if history_steps is None else np.minimum(np.asarray(history_steps), t + 1)
    seen = np.broadcast_to(np.maximum(seen, 1), t.shape)[:, None]
    same_hour = _same_hour_sums(x, per_day, days)
    lead = np.arange(1, horizon)[None, :]
    days_back = -(-lead // per_day)  # the same time of day on the latest day known at the origin
    # (where no such day is in the history, count is 0 and the index is never read)
    at = np.maximum(t[:, None] + lead - days_back * per_day, 0)
    count = np.clip((lead + seen - 1) // per_day - days_back + 1, 0, days)
    profile = _profile(x, same_hour, at, count, settings.recent_weight)
    now = x[t][:, None]
    count_now = np.clip((seen - 1) // per_day, 0, days)
    before = np.maximum(t[:, None] - per_day, 0)
    profile_now = _profile(x, same_hour, before, count_now, settings.recent_weight)
    deviation = np.where(count_now > 0, now - profile_now, 0.0)
    if settings.weekly_weight:  # weekly cycle: the same hour a week before, where it is held
        week = 7 * per_day
        at_week = t[:, None] + lead - week
        held = (lead <= week) & (at_week > t[:, None] - seen) & (at_week >= 0) & (count > 0)
        profile = _with_weekly(profile, x, at_week, held, settings.weekly_weight)
        held_now = (t[:, None] - week > t[:, None] - seen) & (t[:, None] >= week) & (count_now > 0)
        profile_now = _with_weekly(
            profile_now, x, t[:, None] - week, held_now, settings.weekly_weight
        )
        deviation = np.where(count_now > 0, now - profile_now, 0.0)
    predicted = profile + np.exp(-lead / settings.tau_steps) * deviation
    predicted = np.where(count > 0, np.maximum(predicted, 0.0), now)
    return np.concatenate([now, predicted], axis=1)


def _with_weekly(profile, x, at, held, weight) -> np.ndarray:
    """``profile`` blended with the value a week before (``x[at]``) by ``weight`` where held."""
    return np.where(held, (1.0 - weight) * profile + weight * x[np.maximum(at, 0)], profile)


def _same_hour_sums(x: np.ndarray, per_day: int, days: int) -> np.ndarray:
    """``sums[m, i]``: sum of ``x[i], x[i - per_day], ...`` (m values; fewer near the start,
    where callers never look: their ``count`` stays within the history)."""
    sums = np.zeros((days + 1, x.size))
    for m in range(1, days + 1):
        shift = (m - 1) * per_day
        sums[m] = sums[m - 1]
        if shift < x.size:
            sums[m, shift:] += x[: x.size - shift]
    return sums


def _profile(x, same_hour, at, count, recent_weight) -> np.ndarray:
    """Mean of the ``count`` same-time values ending at index ``at``, blended with the most
    recent one by ``recent_weight``; NaN-free (0 where ``count`` is 0)."""
    safe = np.maximum(count, 1)
    mean = same_hour[safe, at] / safe
    profile = recent_weight * x[at] + (1.0 - recent_weight) * mean
    return np.where(count > 0, profile, 0.0)


def profile_forecast(
    history: Sequence[Reading],
    now,
    horizon: timedelta,
    step: timedelta = timedelta(hours=1),
    days: int = PROFILE_DAYS,
) -> list[Reading]:
    """:func:`profile_forecast_rows` on readings: the forecast at the step boundaries after
    ``now`` up to ``now + horizon``, from the actual readings at or before ``now``.

    The history is put on the step grid ending at ``now``'s step (each reading holds until
    the next; the origin's value is the latest reading) and only the last ``days`` days of it
    are used. Returns [] when there is no actual reading at or before ``now``. Readings are
    marked ``forecast=True, estimated=True, provider="own-forecaster"``.
    """
    now = utc(now)
    actual = _actual_up_to(history, now)
    if not actual or step <= timedelta(0) or horizon <= timedelta(0):
        return []
    latest = actual[-1]
    step_s = step.total_seconds()
    now_s = now.timestamp()
    anchor = np.floor(now_s / step_s) * step_s
    count = int(np.floor((now_s + horizon.total_seconds() - anchor) / step_s + 1e-6))
    if count <= 0:
        return []
    settings = ProfileSettings.for_step(step, days)
    per_day = settings.steps_per_day
    times = np.array([r.timestamp.timestamp() for r in actual])
    values = np.array([r.intensity for r in actual])
    # the grid back to the first reading, at most the days the profile can use
    span = min(int((anchor - times[0]) // step_s), days * per_day)
    grid = _in_force(times, values, anchor - step_s * np.arange(span, -1, -1))
    grid[-1] = latest.intensity
    row = profile_forecast_rows(grid, np.array([span]), count + 1, None, settings)[0, 1:]
    stamps = (anchor + step_s * np.arange(1, count + 1)).astype("datetime64[s]").astype(object)
    return _forecast_readings(latest, stamps, row)
