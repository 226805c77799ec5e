"""Space-time backtest: the best (placement, start) among several zones' traces.

The zones' traces, aligned on the hours they share, are candidate placements
(:mod:`carbonaware.core.placement`); the first is the job's default (where it is submitted).
Jobs arrive as in :mod:`carbonaware.core.backtest`; every figure is the mean *actual*
intensity of the steps a job ran, in the zone it ran in, times that placement's
``powerScale``, and savings are against running at arrival in the first zone.

Policies:

- ``now``: at arrival in the first zone (the baseline); ``forecast-own`` / ``forecast``:
  the time-only policy in the first zone (own forecaster / the provider forecast given);
  ``oracle``: the best start in the first zone.
- ``spatial-now``: at arrival, in the zone whose current reading is the cleanest (where only).
- ``spatial-forecast-own`` / ``spatial-forecast``: at every step from arrival, each zone's
  forecast issued then (own forecaster per zone, or the provider forecast), the best window
  per zone (:func:`~carbonaware.core.backtest.best_window_starts`, as
  :func:`~carbonaware.core.placement.decide_placement` does per poll), the zone with the lowest
  scaled mean wins; start if its window starts now, else wait; at the deadline, start in the
  zone whose next window is the cleanest.
- ``best-zone-oracle``: the time-only oracle in the one zone that is cleanest over the whole
  trace (a static, hindsight choice of zone); ``spatial-oracle``: the best (zone, start) for
  every job, knowing the future.

Time-only policies' oracle share is against ``oracle`` (the first zone); spatial ones'
against ``spatial-oracle``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from carbonaware.core.backtest import (
    BacktestError,
    ForecastSource,
    JobShape,
    Outcome,
    PolicyResult,
    RegularSeries,
    best_window_starts,
    forecast_policy,
    oracle,
    regular_series,
    run_now,
    summarise,
)

TIME_POLICIES = ("now", "forecast", "forecast-own", "oracle")
SPATIAL_POLICIES = (
    "spatial-now",
    "spatial-forecast",
    "spatial-forecast-own",
    "best-zone-oracle",
    "spatial-oracle",
)
POLICIES = TIME_POLICIES + SPATIAL_POLICIES


def aligned_series(
    actual: Sequence[pd.Series], forecast: Sequence[pd.Series | None]
) -> list[RegularSeries]:
    """Each zone's :class:`RegularSeries` on the steps every zone has (the first's step)."""
    if len(actual) < 2:
        raise BacktestError("a spatial backtest needs at least two zones' traces")
    common = actual[0].index
    for series in actual[1:]:
        common = common.intersection(series.index)
    if len(common) < 3:
        raise BacktestError("the traces share fewer than 3 steps: pick traces of the same period")
    return [
        regular_series(a.reindex(common), None if f is None else f.reindex(common))
        for a, f in zip(actual, forecast, strict=True)
    ]


@dataclass(frozen=True, slots=True)
class SpatialOutcome:
    """A policy's outcome and the zone (index) each job ran in."""

    outcome: Outcome
    zone: np.ndarray


def _scaled(outcome: Outcome, zone: np.ndarray, scales: np.ndarray, policy: str) -> SpatialOutcome:
    scaled = Outcome(
        policy=policy,
        forecast=outcome.forecast,
        interruptible=False,
        intensity=outcome.intensity * scales[zone],
        delay_steps=outcome.delay_steps,
        missed=outcome.missed,
        segments=outcome.segments,
    )
    return SpatialOutcome(scaled, zone)


def _in_zone(
    actual: np.ndarray,
    zone: np.ndarray,
    starts: np.ndarray,
    arrivals: np.ndarray,
    job: JobShape,
    policy: str,
    forecast: str,
) -> Outcome:
    """Outcome of jobs started at ``starts`` in ``zone`` (unscaled intensities)."""
    csum = np.concatenate([np.zeros((len(actual), 1)), np.cumsum(actual, axis=1)], axis=1)
    means = (csum[:, job.duration_steps :] - csum[:, : -job.duration_steps]) / job.duration_steps
    return Outcome(
        policy=policy,
        forecast=forecast,
        interruptible=False,
        intensity=means[zone, starts],
        delay_steps=starts - arrivals,
        missed=(starts < arrivals) | (starts > arrivals + job.max_delay_steps),
        segments=np.ones_like(arrivals),
    )


def spatial_oracle(
    actual: np.ndarray, arrivals: np.ndarray, job: JobShape, scales: np.ndarray
) -> SpatialOutcome:
    """The best (zone, start) up to the deadline, knowing the future (ties: first zone,
    earliest start)."""
    csum = np.concatenate([np.zeros((len(actual), 1)), np.cumsum(actual, axis=1)], axis=1)
    means = (csum[:, job.duration_steps :] - csum[:, : -job.duration_steps]) / job.duration_steps
    scaled = means * scales[:, None]
    windows = sliding_window_view(scaled, job.max_delay_steps + 1, axis=1)[:, arrivals]
    flat = windows.transpose(1, 0, 2).reshape(len(arrivals), -1)  # job x (zone, offset)
    best = np.argmin(flat, axis=1)
    zone, offset = np.divmod(best, job.max_delay_steps + 1)
    outcome = _in_zone(actual, zone, arrivals + offset, arrivals, job, "spatial-oracle", "perfect")
    return _scaled(outcome, zone, scales, "spatial-oracle")


def spatial_now(
    actual: np.ndarray, arrivals: np.ndarray, job: JobShape, scales: np.ndarray
) -> SpatialOutcome:
    """At arrival, in the zone whose current (scaled) reading is the cleanest."""
    zone = np.argmin(actual[:, arrivals] * scales[:, None], axis=0)
    outcome = _in_zone(actual, zone, arrivals, arrivals, job, "spatial-now", "actual")
    return _scaled(outcome, zone, scales, "spatial-now")


def best_zone_oracle(
    actual: np.ndarray, arrivals: np.ndarray, job: JobShape, scales: np.ndarray
) -> SpatialOutcome:
    """The time-only oracle in the zone whose oracle is cleanest over all arrivals."""
    per_zone = [oracle(a, arrivals, job) for a in actual]
    zone = int(np.argmin([o.intensity.mean() * s for o, s in zip(per_zone, scales, strict=True)]))
    zones = np.full(len(arrivals), zone)
    return _scaled(per_zone[zone], zones, scales, "best-zone-oracle")


def spatial_forecast_policy(
    actual: np.ndarray,
    arrivals: np.ndarray,
    job: JobShape,
    sources: Sequence[ForecastSource],
    scales: np.ndarray,
    policy: str = "spatial-forecast",
) -> SpatialOutcome:
    """The space-time choice, re-planned at every step from each zone's forecast issued then
    (all pending jobs in lockstep, as :func:`carbonaware.core.backtest.forecast_policy`)."""
    n = len(arrivals)
    starts = np.full(n, -1)
    zone = np.zeros(n, dtype=int)
    length = job.duration_steps
    for waited in range(job.max_delay_steps + 1):
        pending = np.flatnonzero(starts < 0)
        if pending.size == 0:
            break
        issued = arrivals[pending] + waited
        latest = job.max_delay_steps - waited  # 0 at the deadline: the next window only
        scores, firsts = [], []
        for source, factor in zip(sources, scales, strict=True):
            rows = source.windows(issued, job.horizon - waited, waited)
            best = best_window_starts(rows, length, latest)
            csum = np.concatenate([np.zeros((len(rows), 1)), np.cumsum(rows, axis=1)], axis=1)
            take = np.arange(len(rows))
            scores.append(factor * (csum[take, best + length] - csum[take, best]) / length)
            firsts.append(best)
        chosen = np.argmin(np.array(scores), axis=0)  # ties: the first zone
        go = np.array(firsts)[chosen, np.arange(pending.size)] == 0
        starts[pending[go]] = issued[go]
        zone[pending[go]] = chosen[go]
    outcome = _in_zone(actual, zone, starts, arrivals, job, policy, sources[0].label)
    return _scaled(outcome, zone, scales, policy)


@dataclass(frozen=True, slots=True)
class SpatialRun:
    """A spatial backtest's figures, and the share of jobs each zone got per policy."""

    zones: tuple[str, ...]
    job: JobShape
    arrivals: np.ndarray
    results: list[PolicyResult]
    zone_shares: dict[str, list[float]]  # policy -> share of jobs per zone


def evaluate_spatial(
    series: Sequence[RegularSeries],
    zones: Sequence[str],
    job: JobShape,
    arrivals: np.ndarray,
    policies: Sequence[str],
    provider_forecasts: Callable[[], Sequence[ForecastSource]],
    own_forecasts: Callable[[], Sequence[ForecastSource]],
    scales: Sequence[float] | None = None,
) -> SpatialRun:
    """Run ``policies`` for every arrival over the zones (the first is the default)."""
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise BacktestError(f"unknown policy {unknown[0]!r}; choose from {', '.join(POLICIES)}")
    if len(series) != len(zones) or len(series) < 2:
        raise BacktestError("a spatial backtest needs at least two zones, one series each")
    if len(arrivals) == 0 or job.duration_steps <= 0:
        raise BacktestError(
            f"the traces' common steps ({len(series[0].actual)}) are shorter than one job's "
            f"window ({job.horizon} steps: max delay + duration)"
        )
    factors = np.ones(len(zones)) if scales is None else np.asarray(scales, dtype=float)
    if factors.shape != (len(zones),) or not (np.isfinite(factors).all() and (factors > 0).all()):
        raise BacktestError("need one powerScale > 0 per zone")
    actual = np.stack([s.actual for s in series])
    first = np.zeros(len(arrivals), dtype=int)
    own: list[Sequence[ForecastSource]] = []

    def own_sources() -> Sequence[ForecastSource]:
        if not own:
            own.append(own_forecasts())
        return own[0]

    def time_only(outcome: Outcome) -> SpatialOutcome:
        return _scaled(outcome, first, factors, outcome.policy)

    runners: dict[str, Callable[[], SpatialOutcome]] = {
        "now": lambda: time_only(run_now(actual[0], arrivals, job)),
        "forecast": lambda: time_only(
            forecast_policy(actual[0], arrivals, job, provider_forecasts()[0])
        ),
        "forecast-own": lambda: time_only(
            forecast_policy(actual[0], arrivals, job, own_sources()[0], "forecast-own")
        ),
        "oracle": lambda: time_only(oracle(actual[0], arrivals, job)),
        "spatial-now": lambda: spatial_now(actual, arrivals, job, factors),
        "spatial-forecast": lambda: spatial_forecast_policy(
            actual, arrivals, job, provider_forecasts(), factors
        ),
        "spatial-forecast-own": lambda: spatial_forecast_policy(
            actual, arrivals, job, own_sources(), factors, "spatial-forecast-own"
        ),
        "best-zone-oracle": lambda: best_zone_oracle(actual, arrivals, job, factors),
        "spatial-oracle": lambda: spatial_oracle(actual, arrivals, job, factors),
    }
    baseline = runners["now"]().outcome
    time_reference = runners["oracle"]().outcome
    space_reference = runners["spatial-oracle"]().outcome
    hours_per_step = 1.0 / series[0].steps_per_hour
    results, shares = [], {}
    for name in dict.fromkeys(policies):
        ran = runners[name]()
        reference = time_reference if name in TIME_POLICIES else space_reference
        results.append(summarise(ran.outcome, baseline, reference, hours_per_step))
        counts = np.bincount(ran.zone, minlength=len(zones))
        shares[name] = [float(c) / len(arrivals) for c in counts]
    return SpatialRun(tuple(zones), job, arrivals, results, shares)
