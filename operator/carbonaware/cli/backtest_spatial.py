"""``carbonctl backtest --spatial TRACE TRACE ...``: where and when, over several zones.

The shell around :mod:`carbonaware.core.backtest_spatial`: reads the traces (the first is
the job's default zone), aligns them on the hours they share, runs every policy and prints a
table (or JSON). ``TRACE@SCALE`` gives a placement a ``powerScale`` (default 1).
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import click

from carbonaware.core import backtest as bt
from carbonaware.core import backtest_spatial as sbt
from carbonaware.providers.base import ConfigError
from carbonaware.traces import load_trace


def _placement(spec: str) -> tuple[Path, float]:
    path, _, scale = spec.rpartition("@") if "@" in spec else (spec, "", "1")
    try:
        factor = float(scale)
    except ValueError:
        raise click.BadParameter(f"{spec!r}: the powerScale after @ must be a number") from None
    if not Path(path).is_file():
        raise click.BadParameter(f"{path!r}: no such trace file", param_hint="--spatial")
    if not factor > 0 or factor == float("inf"):
        raise click.BadParameter(f"{spec!r}: powerScale must be > 0", param_hint="--spatial")
    return Path(path), factor


def run_spatial(
    specs: tuple[str, ...],
    length: timedelta,
    delay: timedelta,
    duration: str,
    max_delay: str,
    arrivals: str,
    seed: int,
    forecast_error: str,
    as_json: bool,
) -> None:
    """Evaluate every space-time policy over the traces ``specs`` and print the report."""
    from carbonaware.cli.backtest import _arrivals, _percent, _provider_forecast

    if len(specs) < 2:
        raise click.UsageError("--spatial needs at least two traces (candidate placements)")
    started = time.perf_counter()
    placements = [_placement(s) for s in specs]
    try:
        traces = [load_trace(path) for path, _ in placements]
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    zones = [t.zone or path.stem for t, (path, _) in zip(traces, placements, strict=True)]
    try:
        series = sbt.aligned_series([t.series for t in traces], [t.forecast for t in traces])
        first = series[0]
        job = bt.JobShape(first.steps(length), int(delay / first.step))
        when = _arrivals(arrivals, first, job, seed)
        run = sbt.evaluate_spatial(
            series,
            zones,
            job,
            when,
            sbt.POLICIES,
            lambda: [
                _provider_forecast(forecast_error, s, path, job, seed)
                for s, (path, _) in zip(series, placements, strict=True)
            ],
            lambda: [bt.own_forecast(s) for s in series],
            [scale for _, scale in placements],
        )
    except bt.BacktestError as exc:
        raise click.ClickException(str(exc)) from None
    elapsed = time.perf_counter() - started
    report = {
        "traces": [str(path) for path, _ in placements],
        "zones": zones,
        "power_scales": [scale for _, scale in placements],
        "first": str(first.start),
        "steps": len(first.actual),
        "step_minutes": first.step.total_seconds() / 60,
        "duration": duration,
        "max_delay": max_delay,
        "arrivals": arrivals,
        "forecast_error": forecast_error,
        "results": [{**r.as_dict(), "zone_shares": run.zone_shares[r.policy]} for r in run.results],
        "seconds": round(elapsed, 3),
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(
        f"zones {', '.join(zones)} (default {zones[0]})  step {report['step_minutes']:g} min  "
        f"{report['steps']} common steps from {report['first']}  duration {duration}  "
        f"max delay {max_delay}  arrivals {arrivals}"
    )
    click.echo(
        f"{'policy':<22}{'forecast':<10}{'jobs':>6}{'g/kWh':>8}{'saving%':>9}{'oracle%':>9}"
        f"{'delay h':>9}{'misses':>8}  jobs per zone %"
    )
    for r in report["results"]:
        shares = " ".join(f"{100 * s:.0f}" for s in r["zone_shares"])
        click.echo(
            f"{r['policy']:<22}{r['forecast']:<10}{r['jobs']:>6}{r['mean_intensity']:>8.1f}"
            f"{r['savings_pct']:>9.2f}{_percent(r['oracle_captured']):>9}"
            f"{r['mean_delay_h']:>9.1f}{r['misses']:>8}  {shares}"
        )
    click.echo(
        f"saving%: vs running at arrival in {zones[0]} (actual intensities x powerScale); "
        "oracle%: time-only policies vs oracle in the first zone, spatial ones vs "
        f"spatial-oracle.\n{len(zones)} zones evaluated in {elapsed:.2f} s"
    )
