"""``carbonctl backtest``: replay a year of job arrivals against real traces, compare policies.

The shell around :mod:`carbonaware.core.backtest`: reads the traces, builds the forecast the
policies see, runs the engine and prints a table (or JSON). Emissions are always integrated
over the trace's *actual* intensities; the forecast only drives decisions.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import click

from carbonaware.cli import backtest_schedule
from carbonaware.core import backtest as bt
from carbonaware.core.durations import parse_duration
from carbonaware.traces import detect_format, load_issued_forecasts, load_trace

POLICY_CHOICES = (*bt.NON_INTERRUPTIBLE_POLICIES, "interruptible", "interruptible-own", "all")


def _expand(policies: tuple[str, ...]) -> list[str]:
    """``all`` means every policy; ``oracle`` also reports the interruptible oracle."""
    chosen = list(bt.POLICIES) if "all" in policies or not policies else list(policies)
    if "oracle" in chosen and "oracle-interruptible" not in chosen:
        chosen.insert(chosen.index("oracle") + 1, "oracle-interruptible")
    return chosen


def _arrivals(spec: str, series: bt.RegularSeries, job: bt.JobShape, seed: int):
    if spec == "hourly":
        return bt.hourly_arrivals(len(series.actual), series.steps_per_hour, job)
    match = re.fullmatch(r"poisson:([0-9]*\.?[0-9]+)", spec)
    if not match:
        raise click.BadParameter(
            f"{spec!r}: use hourly or poisson:RATE (jobs per hour)", param_hint="--arrivals"
        )
    rate = float(match.group(1))
    return bt.poisson_arrivals(len(series.actual), series.steps_per_hour, job, rate, seed)


def _provider_forecast(
    model: str, series: bt.RegularSeries, path: Path, job: bt.JobShape, seed: int
) -> bt.ForecastSource:
    if model == "perfect":
        return bt.perfect_forecast(series)
    if model == "real":
        if detect_format(path) == "watttime":  # WattTime ships issued forecasts beside it
            sibling = path.with_name(path.name.replace("_actual", "_forecast"))
            if sibling == path or not sibling.is_file():
                raise click.BadParameter(
                    f"no issued-forecast file {sibling.name} beside {path}", param_hint="--trace"
                )
            return bt.issued_forecast(series, load_issued_forecasts(sibling), job.horizon)
        return bt.real_forecast(series)
    match = re.fullmatch(r"gaussian:([0-9]*\.?[0-9]+)", model)
    if not match:
        raise click.BadParameter(
            f"{model!r}: use perfect, real or gaussian:SIGMA (relative error, e.g. 0.1)",
            param_hint="--forecast-error",
        )
    return bt.gaussian_forecast(series, float(match.group(1)), seed)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _table(report: list[dict]) -> str:
    header = (
        f"{'policy':<21}{'forecast':<13}{'jobs':>6}{'g/kWh':>8}{'saving%':>9}"
        f"{'oracle%':>9}{'delay h':>9}{'p95 h':>7}{'misses':>8}{'segs':>6}"
    )
    lines = []
    for trace in report:
        lines.append(
            f"{trace['trace']}  zone {trace['zone']}  {trace['format']}  "
            f"step {trace['step_minutes']:g} min  duration {trace['duration']}  "
            f"max delay {trace['max_delay']}  arrivals {trace['arrivals']}  "
            f"at-arrival mean {trace['baseline_intensity']:.1f} g/kWh"
        )
        lines.append(header)
        for r in trace["results"]:
            lines.append(
                f"{r['policy']:<21}{r['forecast']:<13}{r['jobs']:>6}{r['mean_intensity']:>8.1f}"
                f"{r['savings_pct']:>9.2f}{_percent(r['oracle_captured']):>9}"
                f"{r['mean_delay_h']:>9.1f}{r['p95_delay_h']:>7.1f}{r['misses']:>8}"
                f"{r['mean_segments']:>6.2f}"
            )
        lines.append("")
    lines.append(
        "saving%: emissions vs running at arrival (actual intensities); oracle%: share of the "
        "oracle's saving captured (interruptible policies vs the interruptible oracle); "
        "delay: finish later than at arrival; segs: run segments per job."
    )
    return "\n".join(lines)


@click.command(name="backtest")
@click.option(
    "--trace",
    "traces",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A trace file (any format in shared/data/traces, or an Electricity Maps export).",
)
@click.option(
    "--spatial",
    is_flag=True,
    help="Where and when: the TRACES given after it (TRACE[@POWERSCALE], the first the "
    "default zone) are candidate placements; compares space-time policies with an oracle.",
)
@click.argument("spatial_traces", nargs=-1, metavar="[TRACES]...")
@click.option(
    "--policy",
    "policies",
    multiple=True,
    type=click.Choice(POLICY_CHOICES),
    help="Policy to evaluate (repeatable; default all).",
)
@click.option("--duration", default="2h", show_default=True, help="The job's length.")
@click.option(
    "--max-delay", default="24h", show_default=True, help="Longest the start may be delayed."
)
@click.option(
    "--arrivals",
    default="hourly",
    show_default=True,
    help="hourly, or poisson:RATE jobs per hour (seeded with --seed).",
)
@click.option("--seed", default=0, show_default=True, help="Seed for Poisson and gaussian noise.")
@click.option(
    "--threshold",
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="g/kWh for the threshold policy.",
)
@click.option(
    "--forecast-error",
    default="perfect",
    show_default=True,
    help="Forecast the forecast/interruptible policies see: perfect, real (the trace's own "
    "forecast: DACF day-ahead or WattTime issued) or gaussian:SIGMA (relative).",
)
@click.option(
    "--hysteresis",
    default=0.05,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Interruptible jobs keep running up to this fraction of the forecast's range "
    "above the plan's cutoff (fewer suspend/resume cycles).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@backtest_schedule.schedule_options
def command(
    traces: tuple[Path, ...],
    policies: tuple[str, ...],
    duration: str,
    max_delay: str,
    arrivals: str,
    seed: int,
    threshold: float,
    forecast_error: str,
    hysteresis: float,
    as_json: bool,
    schedule: str | None,
    time_zone: str | None,
    window: str | None,
    series_plot: Path | None,
    spatial: bool,
    spatial_traces: tuple[str, ...],
) -> None:
    """Replay job arrivals against real traces and compare scheduling policies."""
    if spatial or spatial_traces:  # where and when: carbonaware.cli.backtest_spatial
        if not spatial or traces or policies or schedule:
            raise click.UsageError("use either --trace [--policy], or --spatial TRACE TRACE...")
        from carbonaware.cli.backtest_spatial import run_spatial

        length, delay = parse_duration(duration), parse_duration(max_delay)
        args = (duration, max_delay, arrivals, seed, forecast_error, as_json)
        return run_spatial(spatial_traces, length, delay, *args)
    if not traces:
        raise click.UsageError("give a trace with --trace FILE (or --spatial TRACE TRACE...)")
    backtest_schedule.check(schedule, time_zone, window, series_plot)
    length, delay = parse_duration(duration), parse_duration(window or max_delay)
    if schedule:
        arrivals, max_delay = f"schedule {schedule} {time_zone or 'UTC'}", window or max_delay
    chosen = _expand(policies)
    report = []
    started = time.perf_counter()
    for path in traces:
        trace = load_trace(path)
        try:
            series = bt.regular_series(trace.series, trace.forecast)
            job = bt.JobShape(series.steps(length), int(delay / series.step))
            when = (
                backtest_schedule.arrivals(schedule, time_zone, series, job)
                if schedule
                else _arrivals(arrivals, series, job, seed)
            )
            provider = _provider_forecast(forecast_error, series, path, job, seed)
            run = bt.evaluate(
                series,
                job,
                when,
                chosen,
                threshold,
                provider,
                own_forecast=lambda s=series: bt.own_forecast(s),
                hysteresis=hysteresis,
            )
            if series_plot is not None:
                what = f"{trace.zone or path.stem}: {arrivals}, window {max_delay}"
                backtest_schedule.write_series_plot(series_plot, path, series, when, job, what)
        except bt.BacktestError as exc:
            raise click.ClickException(f"{path}: {exc}") from None
        report.append(
            {
                "trace": str(path),
                "zone": trace.zone,
                "format": trace.source_format,
                "basis": str(trace.basis),
                "step_minutes": series.step.total_seconds() / 60,
                "first": str(series.start),
                "steps": len(series.actual),
                "duration": duration,
                "max_delay": max_delay,
                "arrivals": arrivals,
                "threshold_g_per_kwh": threshold,
                "forecast_error": forecast_error,
                "baseline_intensity": run.results[0].baseline_intensity,
                "results": [r.as_dict() for r in run.results],
            }
        )
    elapsed = time.perf_counter() - started
    if as_json:
        click.echo(json.dumps({"traces": report, "seconds": round(elapsed, 3)}, indent=2))
    else:
        click.echo(_table(report))
        click.echo(f"{len(traces)} trace(s) evaluated in {elapsed:.2f} s")
