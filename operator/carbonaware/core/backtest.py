"""Backtest: replay job arrivals against a real intensity trace and compare policies.

Pure functions on numpy/pandas data (no file I/O). Every policy is evaluated on the same
regular series of *actual* intensities; a policy may decide from a forecast, but its emissions
are always integrated over the actual intensities of the steps it ran in, so savings compare
like with like.

Units: a job's emissions are reported per kWh of the energy it uses (its mean intensity over
the steps it ran, gCO2eq/kWh), so they do not depend on the job's power. Savings are relative
to running every job at its arrival.

Policies (the decisions are the product's own pure functions):

- ``now``: start at arrival (the baseline).
- ``threshold``: start at the first step whose reading is at or below the threshold, at the
  latest at the deadline (arrival + max delay).
- ``forecast`` / ``forecast-own``: what the operator and ``carbonctl run`` do at every
  poll: take the forecast issued now, start if the window with the lowest mean forecast
  intensity among the starts up to the deadline starts now
  (:func:`carbonaware.core.policy.best_window_start`, vectorised as
  :func:`best_window_starts`), else wait and ask again at the next step. The forecast is the
  provider's (``perfect``, ``real``: the trace's own forecast column or issued forecasts, or
  ``gaussian`` noise) or the project's own
  (:func:`~carbonaware.core.forecast.profile_forecast_rows`) issued at that step from the
  history the scheduler holds then: the
  15 days the providers hand over at submission plus every reading logged while waiting
  (:class:`OwnForecast`). ``replan=False`` keeps the start picked at arrival instead (for
  comparison).
- ``interruptible`` / ``interruptible-own``: at each step, run or pause with
  :func:`carbonaware.core.interruptible.run_or_pause`, from the forecast issued at that step.
- ``oracle``: knows the future: the cleanest start up to the deadline; ``oracle-interruptible``:
  the cleanest steps adding up to the job's length, finishing by arrival + max delay + length.

The first step of every forecast is the actual reading: a policy always knows the current
intensity (it just read it), only the future is forecast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from carbonaware.core.forecast import (
    DEFAULT_TAU,
    FORECASTER_HISTORY,
    ProfileSettings,
    profile_forecast_rows,
    seasonal_naive_predict,
)
from carbonaware.core.interruptible import DEFAULT_HYSTERESIS, cleanest_steps, run_or_pause

NON_INTERRUPTIBLE_POLICIES = ("now", "threshold", "forecast", "forecast-own", "oracle")
INTERRUPTIBLE_POLICIES = ("interruptible", "interruptible-own", "oracle-interruptible")
POLICIES = NON_INTERRUPTIBLE_POLICIES + INTERRUPTIBLE_POLICIES
# What the scheduler holds when a job is submitted: the operator and ``carbonctl run`` ask
# the provider for FORECASTER_HISTORY (15 days: the forecaster's 14 plus the day before).
# More is logged while the job waits.
PROVIDER_HISTORY = FORECASTER_HISTORY
# What a provider's basic history call gives (24 h): what the product held before it asked
# for more, kept for comparison.
DAY_HISTORY = timedelta(hours=24)


class BacktestError(ValueError):
    """Input the backtest cannot evaluate (too short a trace, a job longer than the trace...)."""


# --------------------------------------------------------------------------- series and jobs


@dataclass(frozen=True, slots=True)
class RegularSeries:
    """Actual intensities on a regular grid, with the forecast the trace ships (if any)."""

    start: pd.Timestamp
    step: pd.Timedelta
    actual: np.ndarray  # gCO2eq/kWh, one value per step
    forecast: np.ndarray | None  # the trace's forecast of the same steps; NaN where it has none

    @property
    def steps_per_hour(self) -> float:
        return pd.Timedelta(hours=1) / self.step

    def steps(self, duration: timedelta) -> int:
        """Whole steps in ``duration`` (rounded up: a job never runs shorter than asked)."""
        return int(np.ceil(pd.Timedelta(duration) / self.step - 1e-9))


def regular_series(actual: pd.Series, forecast: pd.Series | None = None) -> RegularSeries:
    """The arrays the backtest works on, from a regular series (as
    :func:`carbonaware.traces.load_trace` returns) and the trace's forecast of the same steps."""
    series = actual.sort_index()
    if len(series) < 3 or series.isna().any():
        raise BacktestError("a trace needs at least 3 readings and no missing values")
    spacing = series.index.to_series().diff().dropna()
    if spacing.nunique() != 1 or spacing.iloc[0] <= pd.Timedelta(0):
        raise BacktestError("the trace is not on a regular step")
    aligned = None
    if forecast is not None:
        aligned = forecast[~forecast.index.duplicated()].reindex(series.index).to_numpy(float)
    return RegularSeries(
        start=series.index[0],
        step=spacing.iloc[0],
        actual=series.to_numpy(float),
        forecast=aligned,
    )


@dataclass(frozen=True, slots=True)
class JobShape:
    """A job's length and the longest its start may be delayed, in steps of the series."""

    duration_steps: int
    max_delay_steps: int

    @property
    def horizon(self) -> int:
        """Steps from arrival to the latest finish: max delay + length."""
        return self.max_delay_steps + self.duration_steps


def hourly_arrivals(n_steps: int, steps_per_hour: float, job: JobShape) -> np.ndarray:
    """One job at the start of every hour whose whole window lies in the trace."""
    stride = max(1, round(steps_per_hour))
    return np.arange(0, n_steps - job.horizon + 1, stride)


def poisson_arrivals(
    n_steps: int, steps_per_hour: float, job: JobShape, rate_per_hour: float, seed: int
) -> np.ndarray:
    """Jobs arriving as a Poisson process of ``rate_per_hour`` (seeded: reproducible)."""
    if rate_per_hour <= 0:
        raise BacktestError(f"the Poisson arrival rate must be > 0 per hour, got {rate_per_hour}")
    last = n_steps - job.horizon
    hours = last / steps_per_hour
    rng = np.random.default_rng(seed)
    expected = int(rate_per_hour * hours * 1.2) + 10
    times = np.cumsum(rng.exponential(1.0 / rate_per_hour, size=expected))
    times = times[times <= hours]
    return np.floor(times * steps_per_hour).astype(int)


# --------------------------------------------------------------------------- forecasts


class ForecastSource(Protocol):
    """The forecast a policy sees when it decides at step ``t``."""

    label: str

    def windows(self, issued: np.ndarray, horizon: int, waited: int = 0) -> np.ndarray:
        """``(len(issued), horizon)``: row i is the forecast issued at step ``issued[i]`` of
        steps ``issued[i] .. issued[i] + horizon - 1`` (column 0 is the actual reading), by a
        scheduler that has been waiting ``waited`` steps since the job arrived."""
        ...


@dataclass(frozen=True, slots=True)
class FixedForecast:
    """A forecast whose value for each step does not depend on when it is read.

    ``predicted`` holds, per step, the forecast value (the actual for a perfect forecast). Where
    it is NaN (a provider forecast that does not cover the step) the policy persists the
    current reading, as a scheduler without a forecast would.
    """

    label: str
    actual: np.ndarray
    predicted: np.ndarray

    def windows(self, issued: np.ndarray, horizon: int, waited: int = 0) -> np.ndarray:
        rows = sliding_window_view(self.predicted, horizon)[issued].copy()
        current = self.actual[issued]
        rows[:, 0] = current
        gaps = np.isnan(rows)
        if gaps.any():
            rows = np.where(gaps, current[:, None], rows)
        return rows


@dataclass(frozen=True, slots=True)
class IssuedForecast:
    """A forecast re-issued at every step: ``matrix[t, j]`` is the value for step ``t + j``
    forecast at step ``t`` (e.g. the project's own forecaster on the history up to ``t``)."""

    label: str
    actual: np.ndarray
    matrix: np.ndarray

    def windows(self, issued: np.ndarray, horizon: int, waited: int = 0) -> np.ndarray:
        if horizon > self.matrix.shape[1]:
            raise BacktestError(f"forecast covers {self.matrix.shape[1]} steps, need {horizon}")
        rows = self.matrix[issued, :horizon].copy()
        current = self.actual[issued]
        rows[:, 0] = current
        gaps = np.isnan(rows)
        if gaps.any():  # too little history to forecast from yet: persist the current reading
            rows = np.where(gaps, current[:, None], rows)
        return rows


def perfect_forecast(series: RegularSeries) -> FixedForecast:
    return FixedForecast("perfect", series.actual, series.actual)


def real_forecast(series: RegularSeries) -> FixedForecast:
    """The trace's own forecast column (e.g. DACF's day-ahead ``carbon_from_src_forecasts``)."""
    if series.forecast is None or np.isnan(series.forecast).all():
        raise BacktestError("this trace has no forecast column: use perfect or gaussian:SIGMA")
    return FixedForecast("real", series.actual, series.forecast)


def gaussian_forecast(series: RegularSeries, sigma: float, seed: int) -> FixedForecast:
    """Actual × (1 + sigma·N(0, 1)), floored at 0: a forecast with a relative error ``sigma``."""
    if not 0 <= sigma <= 5:
        raise BacktestError(f"gaussian forecast error must be in [0, 5] (relative), got {sigma}")
    noise = np.random.default_rng(seed).standard_normal(series.actual.shape)
    predicted = np.maximum(series.actual * (1.0 + sigma * noise), 0.0)
    return FixedForecast(f"gaussian:{sigma:g}", series.actual, predicted)


def issued_forecast(series: RegularSeries, issued: pd.DataFrame, horizon: int) -> IssuedForecast:
    """Forecasts as a provider issued them (columns ``request_time``, ``forecast_time``,
    ``intensity``; e.g. WattTime's, 5 to 65 minutes ahead), on the series' steps. Leads a
    forecast did not cover persist the current reading (see :class:`IssuedForecast`)."""
    n = len(series.actual)
    matrix = np.full((n, horizon), np.nan)
    origin = ((issued["request_time"] - series.start) / series.step).to_numpy(float)
    lead = ((issued["forecast_time"] - issued["request_time"]) / series.step).to_numpy(float)
    usable = (origin == np.round(origin)) & (lead == np.round(lead)) & (origin >= 0) & (origin < n)
    usable &= (lead >= 1) & (lead < horizon)
    matrix[origin[usable].astype(int), lead[usable].astype(int)] = issued["intensity"].to_numpy(
        float
    )[usable]
    if not usable.any():
        raise BacktestError("none of the issued forecasts falls on the trace's steps")
    return IssuedForecast("real", series.actual, matrix)


@dataclass(frozen=True, slots=True)
class OwnForecast:
    """The project's own forecaster (:func:`carbonaware.core.forecast.profile_forecast_rows`,
    the function :func:`~carbonaware.core.policy.decide` calls on readings), issued at any
    step from the values up to it.

    ``history_steps`` is how much history the scheduler holds when a job arrives (the
    providers hand over the last 15 days); it grows by one step for every step the job waits,
    as the operator logs each reading. None: the whole trace up to the step.
    """

    label: str
    actual: np.ndarray
    history_steps: int | None
    settings: ProfileSettings

    def windows(self, issued: np.ndarray, horizon: int, waited: int = 0) -> np.ndarray:
        seen = None if self.history_steps is None else self.history_steps + waited
        return profile_forecast_rows(self.actual, issued, horizon, seen, self.settings)


def own_forecast(
    series: RegularSeries, history: timedelta | None = PROVIDER_HISTORY, label: str = "own"
) -> OwnForecast:
    """The own forecaster on ``series``, holding ``history`` at each job's arrival."""
    steps = None if history is None else series.steps(history)
    return OwnForecast(label, series.actual, steps, _own_settings(series))


def _own_settings(series: RegularSeries) -> ProfileSettings:
    return ProfileSettings.for_step(series.step.to_pytimedelta())


@dataclass(frozen=True, slots=True)
class ForecastError:
    """How far a forecast was from the actual intensities it forecast."""

    label: str
    lead_h: float | None  # lead time in hours (None: as the trace ships it, e.g. day-ahead)
    points: int
    mae: float  # g/kWh
    mape_pct: float  # mean |error| / actual, over actuals > 0

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}


def forecast_error(
    label: str, actual: np.ndarray, predicted: np.ndarray, lead_h: float | None = None
) -> ForecastError:
    """MAE and MAPE of ``predicted`` against ``actual`` where both are known."""
    known = ~np.isnan(predicted) & ~np.isnan(actual)
    error = np.abs(predicted[known] - actual[known])
    seen = actual[known]
    positive = seen > 0
    mape = 100.0 * float(np.mean(error[positive] / seen[positive])) if positive.any() else 0.0
    return ForecastError(label, lead_h, int(known.sum()), float(error.mean()), mape)


def own_forecast_errors(
    series: RegularSeries, leads_h: Sequence[float], history: timedelta | None = None
) -> list[ForecastError]:
    """Error at each lead time (hours) over the whole series of the own forecaster (label
    ``own``, holding ``history``: None for all of it) and of plain seasonal-naive (label
    ``seasonal-naive``), both scored on the same targets: those the profile's full history
    precedes, so neither is judged on its warm-up."""
    settings = _own_settings(series)
    steps = None if history is None else series.steps(history)
    leads = [max(1, round(h * series.steps_per_hour)) for h in leads_h]
    naive_tau = pd.Timedelta(DEFAULT_TAU) / series.step
    warm_up = settings.days * settings.steps_per_day
    origins = np.arange(warm_up, len(series.actual) - max(leads))
    if origins.size == 0:
        raise BacktestError("the trace is too short to score a forecast on")
    rows = profile_forecast_rows(series.actual, origins, max(leads) + 1, steps, settings)
    errors = []
    for lead_h, lead in zip(leads_h, leads, strict=True):
        target = series.actual[origins + lead]
        naive = seasonal_naive_predict(series.actual, lead, settings.steps_per_day, naive_tau)
        naive = naive[origins + lead]
        errors.append(forecast_error("own", target, rows[:, lead], lead_h))
        errors.append(forecast_error("seasonal-naive", target, naive, lead_h))
    return errors


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one policy did with every arrival, as arrays aligned with ``arrivals``."""

    policy: str
    forecast: str  # which forecast it decided from ("actual", "perfect", "real", "own", ...)
    interruptible: bool
    intensity: np.ndarray  # mean actual intensity over the steps it ran (g/kWh of job energy)
    delay_steps: np.ndarray  # finish - (arrival + length): how much later than at once
    missed: np.ndarray  # bool: started after the deadline / finished after the latest finish
    segments: np.ndarray  # run segments (1 for a non-interruptible job)


def _window_means(actual: np.ndarray, length: int) -> np.ndarray:
    """Mean of ``actual[s : s + length]`` for every start ``s`` (cumulative sums: O(n))."""
    csum = np.concatenate(([0.0], np.cumsum(actual)))
    return (csum[length:] - csum[:-length]) / length


def _started(
    policy: str, forecast: str, actual: np.ndarray, arrivals: np.ndarray, starts, job: JobShape
) -> Outcome:
    starts = np.asarray(starts, dtype=int)
    means = _window_means(actual, job.duration_steps)
    return Outcome(
        policy=policy,
        forecast=forecast,
        interruptible=False,
        intensity=means[starts],
        delay_steps=starts - arrivals,
        missed=(starts < arrivals) | (starts > arrivals + job.max_delay_steps),
        segments=np.ones_like(arrivals),
    )


def run_now(actual: np.ndarray, arrivals: np.ndarray, job: JobShape) -> Outcome:
    return _started("now", "none", actual, arrivals, arrivals, job)


def threshold_policy(
    actual: np.ndarray, arrivals: np.ndarray, job: JobShape, threshold: float
) -> Outcome:
    """The seed's rule, evaluated for every arrival at once: the first reading at or below
    ``threshold`` (``reading <= threshold``, as :mod:`carbonaware.core.policy` decides), at the
    latest the deadline."""
    n = len(actual)
    index = np.arange(n)
    # next_clean[i]: first step >= i whose reading is at or below the threshold (n if none)
    candidate = np.where(actual <= threshold, index, n)
    next_clean = np.minimum.accumulate(candidate[::-1])[::-1]
    starts = np.minimum(next_clean[arrivals], arrivals + job.max_delay_steps)
    return _started("threshold", "actual", actual, arrivals, starts, job)


def oracle(actual: np.ndarray, arrivals: np.ndarray, job: JobShape) -> Outcome:
    """The best start up to the deadline, knowing the future (ties: the earliest)."""
    means = _window_means(actual, job.duration_steps)
    candidates = sliding_window_view(means, job.max_delay_steps + 1)[arrivals]
    starts = arrivals + np.argmin(candidates, axis=1)
    return _started("oracle", "perfect", actual, arrivals, starts, job)


def forecast_policy(
    actual: np.ndarray,
    arrivals: np.ndarray,
    job: JobShape,
    source: ForecastSource,
    policy: str = "forecast",
    replan: bool = True,
) -> Outcome:
    """The product's window choice, as the operator and ``carbonctl run`` make it.

    ``replan`` (what the product does): at every step from arrival, take the forecast issued
    at that step and start if the cleanest window up to the deadline starts now, else wait
    and ask again next step; start at the deadline at the latest. All pending jobs decide in
    lockstep, one vectorised :func:`best_window_starts` per step. Without ``replan`` each job
    keeps the start picked at arrival (for comparison).
    """
    starts = np.full(len(arrivals), -1)
    for waited in range(job.max_delay_steps + 1):
        pending = np.flatnonzero(starts < 0)
        if pending.size == 0:
            break
        issued = arrivals[pending] + waited
        if waited == job.max_delay_steps:  # deadline reached: run
            starts[pending] = issued
            break
        rows = source.windows(issued, job.horizon - waited, waited)
        best = best_window_starts(rows, job.duration_steps, job.max_delay_steps - waited)
        if not replan:
            starts[pending] = issued + best
            break
        go = best == 0
        starts[pending[go]] = issued[go]
    return _started(policy, source.label, actual, arrivals, starts, job)


def best_window_starts(rows: np.ndarray, window_steps: int, latest_index: int) -> np.ndarray:
    """:func:`carbonaware.core.policy.best_window_start` for every row of ``rows`` at once
    (earliest index 0; the same clipping and the same tolerance for ties)."""
    values = np.asarray(rows, dtype=float)
    latest = min(latest_index, values.shape[1] - window_steps)
    if latest < 0:
        return np.zeros(len(values), dtype=int)
    sums = np.concatenate([np.zeros((len(values), 1)), np.cumsum(values, axis=1)], axis=1)
    window_sums = sums[:, window_steps : latest + window_steps + 1] - sums[:, : latest + 1]
    tolerance = 1e-12 * np.maximum(1.0, np.abs(sums[:, -1]))
    lowest = window_sums.min(axis=1)
    return np.argmax(window_sums <= (lowest + tolerance)[:, None], axis=1)


def _ran(
    policy: str,
    forecast: str,
    actual: np.ndarray,
    arrivals: np.ndarray,
    ran: np.ndarray,
    job: JobShape,
) -> Outcome:
    """Outcome of interruptible runs: ``ran[i, k]`` says job i ran at step arrivals[i] + k."""
    window = sliding_window_view(actual, job.horizon)[arrivals]
    steps_run = ran.sum(axis=1)
    last = job.horizon - 1 - np.argmax(ran[:, ::-1], axis=1)  # offset of the last step run
    finish = np.where(steps_run > 0, last + 1, job.horizon + 1)
    starts_of_segments = ran & ~np.concatenate([np.zeros((len(ran), 1), bool), ran[:, :-1]], 1)
    intensity = (window * ran).sum(axis=1) / np.maximum(steps_run, 1)
    return Outcome(
        policy=policy,
        forecast=forecast,
        interruptible=True,
        intensity=intensity,
        delay_steps=finish - job.duration_steps,
        missed=(steps_run != job.duration_steps) | (finish > job.horizon),
        segments=starts_of_segments.sum(axis=1),
    )


def interruptible_oracle(actual: np.ndarray, arrivals: np.ndarray, job: JobShape) -> Outcome:
    """The cleanest steps adding up to the job's length, finishing by the latest finish."""
    window = sliding_window_view(actual, job.horizon)[arrivals]
    ran = cleanest_steps(window, job.duration_steps)
    return _ran("oracle-interruptible", "perfect", actual, arrivals, ran, job)


def interruptible_policy(
    actual: np.ndarray,
    arrivals: np.ndarray,
    job: JobShape,
    source: ForecastSource,
    policy: str = "interruptible",
    hysteresis: float = DEFAULT_HYSTERESIS,
) -> Outcome:
    """Every job steps through its window with the operator's online run-or-pause rule,
    all arrivals in lockstep (one vectorised decision per step of the window)."""
    n = len(arrivals)
    ran = np.zeros((n, job.horizon), dtype=bool)
    remaining = np.full(n, job.duration_steps)
    running = np.zeros(n, dtype=bool)
    for k in range(job.horizon):
        active = remaining > 0
        if not active.any():
            break
        rows = np.flatnonzero(active)
        forecast = source.windows(arrivals[rows] + k, job.horizon - k, k)
        decision = run_or_pause(forecast, remaining[rows], running[rows], hysteresis)
        running[:] = False
        running[rows] = decision
        ran[rows, k] = decision
        remaining[rows] -= decision
    return _ran(policy, source.label, actual, arrivals, ran, job)


# --------------------------------------------------------------------------- summaries


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """One policy's figures over all arrivals of one trace."""

    policy: str
    forecast: str
    interruptible: bool
    jobs: int
    mean_intensity: float  # g/kWh of the jobs' energy, actual intensities
    baseline_intensity: float  # the same jobs run at arrival
    savings_pct: float  # 100 · (1 - emissions / emissions at arrival)
    oracle_captured: float | None  # policy's saving / oracle's saving (None: oracle saves ~0)
    mean_delay_h: float  # mean of finish - (arrival + length), hours
    p95_delay_h: float
    misses: int
    mean_segments: float

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}


def summarise(outcome: Outcome, baseline: Outcome, reference: Outcome, hours_per_step: float):
    """Savings vs ``baseline`` and the share of ``reference``'s (the oracle's) saving."""
    base = float(baseline.intensity.mean())
    got = float(outcome.intensity.mean())
    best = float(reference.intensity.mean())
    oracle_saving = base - best
    captured = (base - got) / oracle_saving if oracle_saving > 1e-9 * max(base, 1.0) else None
    delays = outcome.delay_steps * hours_per_step
    return PolicyResult(
        policy=outcome.policy,
        forecast=outcome.forecast,
        interruptible=outcome.interruptible,
        jobs=len(outcome.intensity),
        mean_intensity=got,
        baseline_intensity=base,
        savings_pct=100.0 * (1.0 - got / base) if base > 0 else 0.0,
        oracle_captured=captured,
        mean_delay_h=float(delays.mean()),
        p95_delay_h=float(np.percentile(delays, 95)),
        misses=int(outcome.missed.sum()),
        mean_segments=float(outcome.segments.mean()),
    )


@dataclass(frozen=True, slots=True)
class BacktestRun:
    """Everything one backtest of one trace produced."""

    series: RegularSeries
    job: JobShape
    arrivals: np.ndarray
    results: list[PolicyResult]


def evaluate(
    series: RegularSeries,
    job: JobShape,
    arrivals: np.ndarray,
    policies: Sequence[str],
    threshold: float,
    provider_forecast: ForecastSource,
    own_forecast: Callable[[], ForecastSource] | None = None,
    hysteresis: float = DEFAULT_HYSTERESIS,
) -> BacktestRun:
    """Run ``policies`` for every arrival and summarise each against its oracle.

    ``provider_forecast`` drives ``forecast`` and ``interruptible``; ``own_forecast`` (built
    lazily: it is the costly one) drives the ``-own`` variants.
    """
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise BacktestError(f"unknown policy {unknown[0]!r}; choose from {', '.join(POLICIES)}")
    if job.duration_steps <= 0:
        raise BacktestError("the job's duration must be at least one step of the trace")
    if len(arrivals) == 0:
        raise BacktestError(
            f"the trace ({len(series.actual)} steps) is shorter than one job's window "
            f"({job.horizon} steps: max delay + duration)"
        )
    actual = series.actual
    own: ForecastSource | None = None

    def own_source() -> ForecastSource:
        nonlocal own
        if own is None:
            if own_forecast is None:
                raise BacktestError("no own forecaster given for the -own policies")
            own = own_forecast()
        return own

    baseline = run_now(actual, arrivals, job)
    best = oracle(actual, arrivals, job)
    best_interruptible = None
    runners: dict[str, Callable[[], Outcome]] = {
        "now": lambda: baseline,
        "threshold": lambda: threshold_policy(actual, arrivals, job, threshold),
        "forecast": lambda: forecast_policy(actual, arrivals, job, provider_forecast),
        "forecast-own": lambda: forecast_policy(
            actual, arrivals, job, own_source(), policy="forecast-own"
        ),
        "oracle": lambda: best,
        "interruptible": lambda: interruptible_policy(
            actual, arrivals, job, provider_forecast, hysteresis=hysteresis
        ),
        "interruptible-own": lambda: interruptible_policy(
            actual, arrivals, job, own_source(), "interruptible-own", hysteresis
        ),
        "oracle-interruptible": lambda: interruptible_oracle(actual, arrivals, job),
    }
    hours_per_step = 1.0 / series.steps_per_hour
    results = []
    for name in dict.fromkeys(policies):  # keep order, drop repeats
        outcome = runners[name]()
        reference = best
        if outcome.interruptible:
            if best_interruptible is None:
                best_interruptible = interruptible_oracle(actual, arrivals, job)
            reference = best_interruptible
        results.append(summarise(outcome, baseline, reference, hours_per_step))
    return BacktestRun(series=series, job=job, arrivals=arrivals, results=results)
