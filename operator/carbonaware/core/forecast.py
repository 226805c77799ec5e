"""Our own forecaster for providers that offer none: seasonal-naive blended with the recent level.

Grid intensity has a strong daily cycle, so the value at the same time yesterday is a good
guess for a few hours ahead; how far today runs above or below yesterday right now is a good
guess for the next hour or so. The forecast for lead time ``L`` is yesterday's value shifted by
today's anomaly, the shift decaying as ``w(L) = exp(-L / tau)`` (``tau`` defaults to 3 h):

    forecast(t) = value(t - k * 24 h) + w(L) * (latest - value(now - 24 h)),   L = t - now,

where ``k`` is the smallest whole number of days that puts ``t - k * 24 h`` at or before now.
At lead 0 this is the latest reading; far ahead it is the daily cycle. Where the history does
not reach back a day, the forecast is the latest reading (persistence). Never below zero.

Two forms of the same formula: :func:`seasonal_naive_forecast` on readings (what the policy
uses) and :func:`seasonal_naive_predict` on an evenly spaced array (what the backtest uses to
measure its error on whole traces).
"""

from __future__ import annotations

from collections.abc import Sequence
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
    level = series[first - lead_steps : series.size - lead_steps]
    seasonal = series[first - seasonal_lag : series.size - seasonal_lag]
    out[first:] = weight * level + (1.0 - weight) * seasonal
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
    actual = sorted(
        (r for r in history if not r.forecast and r.timestamp <= now), key=lambda r: r.timestamp
    )
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
        for stamp, value in zip(stamps, predicted, strict=True)
    ]


def _in_force(times: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Piecewise-constant lookup: the value of the reading in force at each instant (NaN
    before the first reading)."""
    index = np.searchsorted(times, at, side="right") - 1
    return np.where(index >= 0, values[np.clip(index, 0, None)], np.nan)
