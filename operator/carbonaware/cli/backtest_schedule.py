"""``carbonctl backtest --schedule``: the options and shell for a recurring job's backtest.

``--schedule "0 22 * * *" --window 8h`` evaluates one run per scheduled time (what a
CarbonAwareCronJob creates), each free to start within its window, against the oracle; the
engine is :mod:`carbonaware.core.backtest_recurring`. ``--series-plot DIR`` draws each
trace's series (one bar per run: emitted vs at its scheduled time, and the intensity it ran
at) as DIR/<trace>.png.
"""

from __future__ import annotations

from pathlib import Path

import click

from carbonaware.core import backtest as bt
from carbonaware.core.backtest_recurring import scheduled_arrivals, series_runs
from carbonaware.core.recurring import Schedule


def schedule_options(fn):
    fn = click.option(
        "--series-plot",
        type=click.Path(file_okay=False, path_type=Path),
        help="With --schedule: write each trace's series figure to this folder.",
    )(fn)
    fn = click.option(
        "--window", help="With --schedule: how long each run may wait (its max delay)."
    )(fn)
    fn = click.option(
        "--time-zone", help="With --schedule: IANA time zone the schedule is read in (UTC)."
    )(fn)
    fn = click.option(
        "--schedule",
        help='A recurring job: one arrival per time of this cron line, e.g. "0 22 * * *".',
    )(fn)
    return fn


def check(schedule: str | None, time_zone: str | None, window: str | None, plot) -> None:
    if schedule is None and (time_zone or window or plot):
        raise click.UsageError("--time-zone, --window and --series-plot go with --schedule")


def arrivals(schedule: str, time_zone: str | None, series: bt.RegularSeries, job: bt.JobShape):
    return scheduled_arrivals(series, Schedule(schedule, time_zone), job)


def write_series_plot(
    folder: Path, trace: Path, series: bt.RegularSeries, when, job: bt.JobShape, title: str
) -> Path:
    """The series as the product schedules it (the own forecaster's forecast policy)."""
    from carbonaware.series_plot import SeriesBar, render_series  # matplotlib: only here

    runs = series_runs(series, when, job, bt.own_forecast(series))
    bars = [SeriesBar(r.scheduled.to_pydatetime(), r.policy, r.at_schedule, r.policy) for r in runs]
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{trace.stem}.png"
    render_series(bars, title, unit="g per kWh of the run's energy", path=out)
    return out
