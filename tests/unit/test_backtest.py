"""The backtest engine and ``carbonctl backtest`` on real traces."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from carbonaware.core import backtest as bt
from carbonaware.core.model import Reading
from carbonaware.core.policy import PolicySettings, Strategy, best_window_start, decide
from hypothesis import given, settings
from hypothesis import strategies as st

intensity = st.floats(min_value=0, max_value=900, allow_nan=False, allow_infinity=False)


def regular(values, start="2022-01-01", forecast=None) -> bt.RegularSeries:
    index = pd.date_range(start, periods=len(values), freq="h", tz="UTC")
    fc = None if forecast is None else pd.Series(forecast, index=index)
    return bt.regular_series(pd.Series(values, index=index, dtype=float), fc)


@st.composite
def scenarios(draw):
    """A short series, a job shape that fits it, and every arrival whose window fits."""
    values = draw(st.lists(intensity, min_size=4, max_size=30))
    duration = draw(st.integers(1, 4))
    max_delay = draw(st.integers(0, max(0, len(values) - duration)))
    job = bt.JobShape(duration, max_delay)
    series = regular(values)
    arrivals = bt.hourly_arrivals(len(values), 1.0, job)
    return series, job, arrivals


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_oracle_is_the_best_start_by_brute_force(scenario):
    series, job, arrivals = scenario
    actual = series.actual
    outcome = bt.oracle(actual, arrivals, job)
    for i, a in enumerate(arrivals):
        best = min(
            actual[s : s + job.duration_steps].mean() for s in range(a, a + job.max_delay_steps + 1)
        )
        assert outcome.intensity[i] == pytest.approx(best)
    assert not outcome.missed.any()


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_interruptible_oracle_is_the_cleanest_steps_by_brute_force(scenario):
    series, job, arrivals = scenario
    actual = series.actual
    outcome = bt.interruptible_oracle(actual, arrivals, job)
    plain = bt.oracle(actual, arrivals, job)
    for i, a in enumerate(arrivals[:5]):
        window = actual[a : a + job.horizon]
        best = min(np.mean(c) for c in itertools.combinations(window, job.duration_steps))
        assert outcome.intensity[i] == pytest.approx(best)
    # Being allowed to pause never makes the best schedule worse.
    assert np.all(outcome.intensity <= plain.intensity + 1e-9)


@settings(max_examples=60, deadline=None)
@given(scenarios(), st.floats(0, 1.5), st.floats(0, 900), st.integers(0, 2**16))
def test_no_policy_ever_misses_a_deadline(scenario, sigma, threshold, seed):
    series, job, arrivals = scenario
    noisy = bt.gaussian_forecast(series, sigma, seed)
    run = bt.evaluate(
        series,
        job,
        arrivals,
        bt.POLICIES,
        threshold,
        noisy,
        own_forecast=lambda: bt.own_forecast(series),
    )
    assert {r.policy for r in run.results} == set(bt.POLICIES)
    for result in run.results:
        assert result.misses == 0, result.policy
        assert result.jobs == len(arrivals)
        # no delay beyond what the deadline allows
        assert result.p95_delay_h <= job.max_delay_steps + 1e-9


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_perfect_forecast_policy_equals_the_oracle(scenario):
    """best_window_start on a perfect forecast and the vectorised oracle agree."""
    series, job, arrivals = scenario
    planned = bt.forecast_policy(series.actual, arrivals, job, bt.perfect_forecast(series))
    best = bt.oracle(series.actual, arrivals, job)
    # best_window_start treats window sums within 1e-9 x max(1, |the row's total|) as ties
    # (earliest wins): means may differ by that much (hypothesis found 1e-6 vs 0 in a row
    # whose total is 2,024, a tie by that rule), no more.
    tie = 1e-9 * max(1.0, float(np.abs(series.actual).sum()))
    np.testing.assert_allclose(planned.intensity, best.intensity, rtol=1e-7, atol=tie + 1e-12)


def test_savings_come_from_the_same_actual_series():
    values = [500, 100, 500, 500, 50, 500, 500, 500, 500, 500]
    series = regular(values, forecast=[0.0] * len(values))  # a useless, flat forecast
    job = bt.JobShape(1, 4)
    arrivals = bt.hourly_arrivals(len(values), 1.0, job)
    run = bt.evaluate(
        series, job, arrivals, ["now", "forecast", "oracle"], 300, bt.real_forecast(series)
    )
    now, forecast, best = run.results
    at_arrival = np.array(values, dtype=float)[arrivals].mean()
    assert now.mean_intensity == pytest.approx(at_arrival)
    assert best.savings_pct == pytest.approx(100 * (1 - best.mean_intensity / at_arrival))
    # Every poll the forecast says the next hour is cleaner (0) than now, so each job waits
    # to its deadline: its emissions are the actual ones then, not the forecast's zero.
    at_deadline = np.array(values, dtype=float)[arrivals + job.max_delay_steps].mean()
    assert forecast.mean_intensity == pytest.approx(at_deadline)
    assert forecast.mean_delay_h == job.max_delay_steps
    assert forecast.savings_pct == pytest.approx(100 * (1 - at_deadline / at_arrival))
    assert best.oracle_captured == pytest.approx(1.0)


def test_threshold_starts_where_the_policy_module_decides():
    """The vectorised threshold replay matches carbonaware.core.policy.decide, step by step."""
    rng = np.random.default_rng(3)
    values = rng.uniform(100, 500, size=60)
    series = regular(values)
    job = bt.JobShape(2, 8)
    arrivals = bt.hourly_arrivals(len(values), 1.0, job)
    outcome = bt.threshold_policy(series.actual, arrivals, job, threshold=250)
    t0 = datetime(2022, 1, 1, tzinfo=UTC)
    readings = [Reading("XX", t0 + timedelta(hours=i), float(v)) for i, v in enumerate(values)]
    policy = PolicySettings(Strategy.THRESHOLD, 250, timedelta(hours=8), timedelta(hours=2))
    for a, delay in zip(arrivals, outcome.delay_steps, strict=True):
        submitted = t0 + timedelta(hours=int(a))
        start = next(
            s
            for s in range(a, a + 9)
            if decide(policy, submitted, t0 + timedelta(hours=s), readings[: s + 1], []).run
        )
        assert start - a == delay


@pytest.mark.parametrize("history", [bt.PROVIDER_HISTORY, bt.DAY_HISTORY, None])
def test_forecast_own_replays_decide_poll_by_poll(history):
    """The backtest's forecast-own is what the operator does: at every hourly poll, decide()
    on the readings it holds (the provider's last 15 days at submission, or only 24 h, plus
    every reading logged since; or the whole past), no provider forecast; start when it says
    run."""
    rng = np.random.default_rng(5)
    hours = np.arange(24 * 20)
    values = 300 + 100 * np.sin(hours * 2 * np.pi / 24) + rng.normal(0, 40, hours.size)
    series = regular(values)
    job = bt.JobShape(3, 20)
    arrivals = bt.hourly_arrivals(len(values), 1.0, job)[::7]
    outcome = bt.forecast_policy(series.actual, arrivals, job, bt.own_forecast(series, history))
    t0 = datetime(2022, 1, 1, tzinfo=UTC)
    readings = [Reading("XX", t0 + timedelta(hours=int(i)), float(v)) for i, v in enumerate(values)]
    settings = PolicySettings(Strategy.FORECAST, 0, timedelta(hours=20), timedelta(hours=3))
    waited = []
    for a in arrivals:
        held = a + 1 if history is None else round(history / timedelta(hours=1))
        first = max(0, a - held + 1)  # the readings handed over, up to the arrival
        submitted = t0 + timedelta(hours=int(a))
        for s in range(a, a + job.max_delay_steps + 1):
            now = t0 + timedelta(hours=s, minutes=5)  # a poll just after the hour's reading
            decision = decide(settings, submitted, now, readings[first : s + 1], [])
            if decision.run:
                waited.append(s - a)
                break
        assert decision.forecast_source in ("own-forecaster", None)  # None: deadline reached
    np.testing.assert_array_equal(outcome.delay_steps, waited)
    assert 0 < np.mean(waited) < job.max_delay_steps  # it did wait, and not always to the end


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.lists(intensity, min_size=8, max_size=8), min_size=1, max_size=6),
    st.integers(1, 4),
    st.integers(0, 9),
)
def test_vectorised_window_choice_is_best_window_start(rows, window, latest):
    rows = np.array(rows)
    expected = [best_window_start(np.arange(8), row, window, 0, latest) for row in rows]
    np.testing.assert_array_equal(bt.best_window_starts(rows, window, latest), expected)


def test_replanning_uses_the_fresh_forecast_committing_keeps_the_first_one():
    """A forecast that changes its mind: replanning follows it, committing does not."""
    actual = np.array([400, 400, 100, 400, 400, 400.0])
    # issued at 0: step 3 looks cleanest; issued at 1: step 2 (lead 1) does; at 2: nothing
    matrix = np.array(
        [[400, 400, 450, 50, 400, 400], [400, 50, 400, 400, 400, 400]] + [[400.0] * 6] * 4
    )
    source = bt.IssuedForecast("changing", actual, matrix)
    job = bt.JobShape(1, 4)
    arrivals = np.array([0])
    replanned = bt.forecast_policy(actual, arrivals, job, source)
    committed = bt.forecast_policy(actual, arrivals, job, source, replan=False)
    assert committed.delay_steps[0] == 3 and committed.intensity[0] == 400
    # at 2 the current reading (100) beats the forecast 400s: run then
    assert replanned.delay_steps[0] == 2 and replanned.intensity[0] == 100


def test_forecast_error_is_measured_against_the_actual():
    error = bt.forecast_error("x", np.array([100.0, 200.0, 0.0]), np.array([110.0, 150.0, 5.0]))
    assert error.mae == pytest.approx((10 + 50 + 5) / 3)
    assert error.mape_pct == pytest.approx(100 * (0.1 + 0.25) / 2)  # zero actuals left out


def test_too_short_a_trace_is_an_error():
    series = regular([100.0, 200.0, 300.0])
    job = bt.JobShape(2, 24)
    arrivals = bt.hourly_arrivals(3, 1.0, job)
    with pytest.raises(bt.BacktestError, match="shorter than one job"):
        bt.evaluate(series, job, arrivals, ["now"], 300, bt.perfect_forecast(series))


# --------------------------------------------------------------------------- the CLI


def carbonctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "carbonaware.cli.carbonctl", "backtest", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_prints_a_table_for_a_real_trace(traces_dir):
    trace = traces_dir / "electricitymaps" / "DE-LU_2022_hourly.csv"
    done = carbonctl("--trace", str(trace), "--duration", "4h", "--max-delay", "24h")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.strip()}
    for policy in bt.POLICIES:
        assert policy in rows, policy
    assert rows["oracle"][4] != "0.00"  # Germany's grid is far from flat: shifting saves
    assert all(rows[p][8] == "0" for p in bt.POLICIES)  # misses column


def test_cli_json_with_the_real_day_ahead_forecast(traces_dir):
    trace = traces_dir / "dacf" / "CISO_carbon_from_src_prod_forecasts_direct.csv"
    done = carbonctl(
        "--trace", str(trace), "--json", "--forecast-error", "real",
        "--policy", "forecast", "--policy", "interruptible", "--policy", "oracle",
        "--arrivals", "poisson:0.5", "--duration", "2h",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    (trace_report,) = report["traces"]
    results = {r["policy"]: r for r in trace_report["results"]}
    assert set(results) == {"forecast", "interruptible", "oracle", "oracle-interruptible"}
    assert results["forecast"]["forecast"] == "real"
    assert all(r["misses"] == 0 for r in results.values())
    # A real forecast errs: it cannot beat knowing the future.
    assert results["forecast"]["savings_pct"] <= results["oracle"]["savings_pct"] + 1e-9
    assert 0 < results["forecast"]["jobs"] < 4416


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duration", "2 hours"], "invalid duration"),
        (["--arrivals", "poisson:fast"], "poisson:RATE"),
        (["--forecast-error", "real"], "no forecast column"),
        (["--forecast-error", "gaussian:x"], "gaussian:SIGMA"),
        (["--max-delay", "400d"], "shorter than one job"),
        (["--threshold", "-5"], "threshold"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(traces_dir, args, message):
    trace = traces_dir / "electricitymaps" / "SG_2022_hourly.csv"
    done = carbonctl("--trace", str(trace), "--policy", "now", *args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert message in done.stderr


def test_cli_unreadable_trace_is_one_line_and_exit_2(tmp_path):
    bogus = tmp_path / "not_a_trace.csv"
    bogus.write_text("a,b\n1,2\n")
    done = carbonctl("--trace", str(bogus))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_issued_forecasts_land_on_their_origin_and_lead():
    series = regular([100.0, 200.0, 300.0, 400.0, 500.0])
    t = series.start
    issued = pd.DataFrame(
        {
            "request_time": [t, t, t + pd.Timedelta(hours=2), t + pd.Timedelta(minutes=30)],
            "forecast_time": [
                t + pd.Timedelta(hours=1),
                t + pd.Timedelta(hours=2),
                t + pd.Timedelta(hours=3),
                t + pd.Timedelta(hours=1),  # issued off the grid: ignored
            ],
            "intensity": [111.0, 222.0, 333.0, 999.0],
        }
    )
    source = bt.issued_forecast(series, issued, horizon=3)
    rows = source.windows(np.array([0, 1, 2]), 3)
    np.testing.assert_allclose(rows[0], [100.0, 111.0, 222.0])
    np.testing.assert_allclose(rows[1], [200.0, 200.0, 200.0])  # nothing issued: persistence
    np.testing.assert_allclose(rows[2], [300.0, 333.0, 300.0])


def test_cli_with_watttime_issued_forecasts(traces_dir):
    trace = traces_dir / "watttime" / "watttime2023_caiso-north_actual.csv"
    done = carbonctl(
        "--trace", str(trace), "--json", "--forecast-error", "real", "--duration", "1h",
        "--max-delay", "6h", "--policy", "forecast", "--policy", "interruptible",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (trace_report,) = json.loads(done.stdout)["traces"]
    assert trace_report["step_minutes"] == 5
    for result in trace_report["results"]:
        assert result["forecast"] == "real"
        assert result["misses"] == 0
