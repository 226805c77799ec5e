"""Interruptible jobs: run in the cleanest steps, pause when the grid is dirty.

A job of ``job_steps`` steps that arrives at step ``a`` with a start delay of at most
``max_delay_steps`` may, when it can be suspended and resumed, spread its work over any steps
of the window ``[a, a + max_delay_steps + job_steps)``: it then finishes no later than a
non-interruptible job started at its deadline would.

Two pure forms of the same idea:

- :func:`cleanest_steps` plans offline: the ``job_steps`` cleanest steps of a window (with a
  perfect forecast this is the interruptible oracle);
- :func:`run_or_pause` decides online, one step at a time, from the forecast issued now and the
  work left (what the operator calls on every poll). With hysteresis, a running job keeps
  running through steps slightly above the plan's cutoff instead of flapping, and it always
  runs when the work left fills every step left (so it never misses its deadline).

Both take 2-D arrays (one row per job) so the backtest evaluates thousands of arrivals at
once; a 1-D row is one job.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from carbonaware.core.model import Reading, utc

DEFAULT_HYSTERESIS = 0.05  # keep running while within 5 % of the forecast's range of the cutoff


def cleanest_steps(intensities: np.ndarray, job_steps: int) -> np.ndarray:
    """Boolean mask of the ``job_steps`` lowest-intensity steps of each row (ties: earliest).

    ``intensities`` is ``(window,)`` or ``(jobs, window)``; the mask has the same shape and
    exactly ``job_steps`` True values per row.
    """
    values = np.asarray(intensities, dtype=float)
    if job_steps < 0 or job_steps > values.shape[-1]:
        raise ValueError(f"job_steps must be in [0, {values.shape[-1]}], got {job_steps}")
    order = np.argsort(values, axis=-1, kind="stable")  # stable: equal values, earliest first
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(values.shape[-1]), axis=-1)
    return rank < job_steps


def interruptible_window(arrival: int, job_steps: int, max_delay_steps: int) -> tuple[int, int]:
    """The steps ``[first, end)`` an interruptible job may run in: it must finish by ``end``."""
    if job_steps <= 0 or max_delay_steps < 0:
        raise ValueError("job_steps must be > 0 and max_delay_steps >= 0")
    return arrival, arrival + max_delay_steps + job_steps


def run_or_pause(
    forecast: np.ndarray,
    remaining_steps: np.ndarray | int,
    running: np.ndarray | bool,
    hysteresis: float = DEFAULT_HYSTERESIS,
) -> np.ndarray:
    """Whether each job should run during the current step.

    ``forecast[..., j]`` is the intensity expected ``j`` steps from now (column 0: the current
    step) for every step left before the job's latest finish, so ``forecast.shape[-1]`` is the
    number of steps left. ``remaining_steps`` is the work left; ``running`` whether the job ran
    in the previous step. A job runs when the current step is among the ``remaining_steps``
    cleanest steps left, when it is already running and the current step is above that cutoff
    by at most ``hysteresis`` × the forecast's range (max - min), or when it has no slack left.
    Finished jobs never run.

    The band scales with the forecast's range, not its level: on a flat grid (a daily swing of
    a few percent) a band of 5 % of the level would swallow the whole swing and keep a job
    running through its dirtiest hours.
    """
    values = np.atleast_2d(np.asarray(forecast, dtype=float))
    steps_left = values.shape[-1]
    remaining = np.broadcast_to(np.asarray(remaining_steps), values.shape[:1])
    was_running = np.broadcast_to(np.asarray(running, dtype=bool), values.shape[:1])
    if hysteresis < 0:
        raise ValueError(f"hysteresis must be >= 0, got {hysteresis}")
    now = values[:, :1]
    # x is within the w cleanest steps  <=>  fewer than w steps are strictly cleaner than x
    # (counting is O(n) where finding the w-th smallest per row would need a sort).
    in_plan = (values < now).sum(axis=1) < remaining
    band = hysteresis * (values.max(axis=1, keepdims=True) - values.min(axis=1, keepdims=True))
    near_plan = (values < now - band).sum(axis=1) < remaining
    no_slack = remaining >= steps_left
    return (remaining > 0) & (in_plan | (was_running & near_plan) | no_slack)


def should_run(
    forecast: np.ndarray,
    remaining_steps: int,
    running: bool,
    hysteresis: float = DEFAULT_HYSTERESIS,
) -> bool:
    """:func:`run_or_pause` for one job (a 1-D forecast), as the operator calls it."""
    return bool(run_or_pause(forecast, remaining_steps, running, hysteresis)[0])


def change_now(
    run: bool, running: bool, must_run: bool, reading: object, changed_at_reading: object
) -> bool:
    """Whether to act on a run/pause answer that differs from the job's state: at most one
    change per reading (the backtest decides once per step), except that a job with no slack
    left always runs. Within a step the work and time left, rounded up to whole steps, cross
    over mid-step; acting on that pauses a job for minutes (a SIGTERM, a checkpoint and a new
    pod each time)."""
    if run == running:
        return False
    return (run and must_run) or reading != changed_at_reading


def forecast_from_now(
    current: float,
    forecast: Sequence[Reading],
    now: datetime,
    latest_finish: datetime,
    step: timedelta,
) -> np.ndarray:
    """The 1-D forecast :func:`should_run` takes: one value per ``step`` from ``now`` until
    ``latest_finish`` (at least one), column 0 the current reading, each later column the
    forecast value in force then (the current reading where the forecast has none yet)."""
    if step <= timedelta(0):
        raise ValueError(f"step must be positive, got {step}")
    steps = max(1, math.ceil((latest_finish - now) / step))
    ahead = sorted((r for r in forecast if r.timestamp > now), key=lambda r: r.timestamp)
    times = np.array([r.timestamp.timestamp() for r in ahead])
    values = np.array([current] + [r.intensity for r in ahead])
    at = np.array([(now + j * step).timestamp() for j in range(steps)])
    # index 0 (the current reading) until the first forecast point, then the one in force
    return values[np.searchsorted(times, at, side="right")]


def remaining_steps(expected: timedelta, ran: timedelta, step: timedelta) -> int:
    """Work left in whole steps (rounded up). At least one: a job whose estimate has run out
    but that has not finished still has work left, and must not be paused for it."""
    return max(1, math.ceil((expected - ran) / step))


@dataclass(frozen=True)
class PlanStep:
    """One decision of an interruptible job: run or pause now, and why."""

    run: bool
    why: str
    forced: bool  # it must run now to finish in time
    reading_time: datetime | None  # the reading it rests on (None: no reading yet)


def plan_step(
    *,
    now: datetime,
    latest_finish: datetime,
    expected: timedelta,
    ran: timedelta,
    actual: Sequence[Reading],
    forecast: Sequence[Reading],
    running: bool,
    own_forecast: bool = False,
) -> PlanStep:
    """:func:`should_run` on a job's readings: ``actual`` up to ``now``, ``forecast`` after
    it (the provider's, or the own forecaster's when ``own_forecast``), ``ran`` the time it
    has run so far, ``latest_finish`` when it must be done."""
    gaps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(forecast)]
    step = min([g for g in gaps if g > timedelta(0)], default=timedelta(hours=1))
    work = remaining_steps(expected, ran, step)
    steps_left = max(1, -(-(latest_finish - now) // step))
    if not actual:
        run = work >= steps_left  # nothing to compare: run only when there is no slack
        why = f"no reading yet; {work} step(s) of work, {steps_left} step(s) left"
        return PlanStep(run, why, run, None)
    values = forecast_from_now(actual[-1].intensity, list(forecast), now, latest_finish, step)
    run = should_run(values, work, running)
    finish = utc(latest_finish).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    where = (
        f"{actual[-1].intensity:.0f} g/kWh now; {work} step(s) of {step} of work left in "
        f"{len(values)} step(s) before {finish}"
    )
    if own_forecast:
        where += " (forecast from own forecaster: the provider has none)"
    why = (
        f"run: {where}, and this step is in the cleanest plan"
        if run
        else f"pause: {where}, and cleaner steps ahead hold all of it"
    )
    return PlanStep(run, why, work >= len(values), actual[-1].timestamp)
