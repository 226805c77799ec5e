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
from carbonaware.core.forecast import seasonal_naive_forecast
from carbonaware.core.model import Reading
from carbonaware.core.policy import PolicySettings, Strategy, decide
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
        own_forecast=lambda: bt.own_forecast(series, job.horizon),
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
    # best_window_start treats sums within 1e-9 relative as ties (earliest wins)
    np.testing.assert_allclose(planned.intensity, best.intensity, rtol=1e-7, atol=1e-6)


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
    # The forecast says every hour is equally clean, so the policy starts at once: its
    # emissions are the actual ones at arrival, not the forecast's zero.
    assert forecast.mean_intensity == pytest.approx(at_arrival)
    assert forecast.savings_pct == pytest.approx(0.0)
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


def test_own_forecast_matrix_is_the_policy_forecaster():
    """The backtest's vectorised own forecast equals what decide() forecasts from readings."""
    rng = np.random.default_rng(5)
    hours = np.arange(24 * 5)
    values = 300 + 100 * np.sin(hours * 2 * np.pi / 24) + rng.normal(0, 20, hours.size)
    series = regular(values)
    matrix = bt.own_forecast(series, 30).matrix
    t0 = datetime(2022, 1, 1, tzinfo=UTC)
    readings = [Reading("XX", t0 + timedelta(hours=int(i)), float(v)) for i, v in enumerate(values)]
    for issue in (30, 61, 88):
        now = t0 + timedelta(hours=issue)
        expected = seasonal_naive_forecast(readings[: issue + 1], now, timedelta(hours=29))
        got = matrix[issue, 1:30]
        np.testing.assert_allclose(got, [r.intensity for r in expected][:29], rtol=1e-9)


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
