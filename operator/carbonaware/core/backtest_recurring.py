"""Backtest of a recurring job (``carbonctl backtest --schedule``): one run per scheduled time.

A ``CarbonAwareCronJob`` creates one CarbonAwareJob at each time of its cron schedule, which
may start anywhere in its window (its maxDelay). Over a trace that is the one-off backtest
(:mod:`carbonaware.core.backtest`) with the scheduled times as the arrivals: the same
policies, the same oracle, the same accounting on actual intensities.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

from carbonaware.core import backtest as bt
from carbonaware.core.recurring import Schedule, ScheduleError


def scheduled_arrivals(series: bt.RegularSeries, schedule: Schedule, job: bt.JobShape):
    """Step index of every scheduled time in the trace whose whole window (max delay +
    duration) lies in it; a time between two steps arrives at the next step."""
    try:
        schedule.check()
    except ScheduleError as exc:
        raise bt.BacktestError(str(exc)) from None
    start = pd.Timestamp(series.start)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    last = len(series.actual) - job.horizon
    step = series.step.to_pytimedelta()
    arrivals = []
    for when in schedule.times_after(start.to_pydatetime() - timedelta(microseconds=1)):
        index = int(np.ceil((when - start.to_pydatetime()) / step - 1e-9))
        if index > last:
            break
        arrivals.append(index)
    if not arrivals:
        raise bt.BacktestError(
            f"no scheduled time of {schedule.cron!r} has its whole window in the trace"
        )
    return np.unique(np.asarray(arrivals, dtype=int))


@dataclass(frozen=True, slots=True)
class SeriesRun:
    """One run of the series: when it was scheduled and what each policy made of it."""

    scheduled: pd.Timestamp
    at_schedule: float  # g/kWh of the run's energy, started at its scheduled time
    policy: float  # g/kWh, as the policy started it
    oracle: float  # g/kWh, the oracle's start
    delay_h: float  # the policy's start after the scheduled time


def series_runs(
    series: bt.RegularSeries, arrivals: np.ndarray, job: bt.JobShape, source: bt.ForecastSource
) -> list[SeriesRun]:
    """Each run's intensity at its scheduled time, as the forecast policy started it (the
    product's decision, from ``source``), and the oracle's: the figure's bars."""
    now = bt.run_now(series.actual, arrivals, job)
    chose = bt.forecast_policy(series.actual, arrivals, job, source)
    best = bt.oracle(series.actual, arrivals, job)
    hours = series.step / pd.Timedelta(hours=1)
    return [
        SeriesRun(
            scheduled=series.start + int(a) * series.step,
            at_schedule=float(now.intensity[i]),
            policy=float(chose.intensity[i]),
            oracle=float(best.intensity[i]),
            delay_h=float(chose.delay_steps[i] * hours),
        )
        for i, a in enumerate(arrivals)
    ]
