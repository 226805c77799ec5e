"""The space-time backtest and ``carbonctl backtest --spatial`` on real traces."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from carbonaware.core import backtest as bt
from carbonaware.core import backtest_spatial as sbt
from carbonaware.core.model import Reading
from carbonaware.core.placement import Placement, ZoneReadings, decide_placement
from carbonaware.core.policy import PolicySettings, Strategy
from hypothesis import given, settings
from hypothesis import strategies as st
from test_backtest import carbonctl

intensity = st.floats(min_value=0, max_value=900, allow_nan=False, allow_infinity=False)


def regular(values) -> bt.RegularSeries:
    index = pd.date_range("2022-01-01", periods=len(values), freq="h", tz="UTC")
    return bt.regular_series(pd.Series(values, index=index, dtype=float))


@st.composite
def zone_sets(draw):
    """2-3 zones' series of the same length, a job shape that fits, powerScales."""
    length = draw(st.integers(4, 24))
    zones = draw(st.integers(2, 3))
    values = [draw(st.lists(intensity, min_size=length, max_size=length)) for _ in range(zones)]
    duration = draw(st.integers(1, 3))
    max_delay = draw(st.integers(0, max(0, length - duration)))
    scales = draw(st.lists(st.floats(0.5, 2), min_size=zones, max_size=zones))
    job = bt.JobShape(duration, max_delay)
    return np.array(values), job, np.array(scales)


@settings(max_examples=150, deadline=None)
@given(zone_sets())
def test_the_space_time_oracle_bounds_every_policy_and_nobody_misses(case):
    actual, job, scales = case
    arrivals = bt.hourly_arrivals(actual.shape[1], 1.0, job)
    if arrivals.size == 0:
        return
    best = sbt.spatial_oracle(actual, arrivals, job, scales).outcome
    perfect = [bt.perfect_forecast(regular(a)) for a in actual]
    others = [
        sbt.spatial_now(actual, arrivals, job, scales),
        sbt.best_zone_oracle(actual, arrivals, job, scales),
        sbt.spatial_forecast_policy(actual, arrivals, job, perfect, scales),
    ]
    for zone in range(len(actual)):  # the time-only oracle in any zone, scaled
        alone = bt.oracle(actual[zone], arrivals, job).intensity * scales[zone]
        assert (best.intensity <= alone + 1e-6).all()
    for ran in others:
        assert (best.intensity <= ran.outcome.intensity + 1e-6).all()
        assert not ran.outcome.missed.any()
        assert (ran.outcome.delay_steps >= 0).all()
        assert (ran.outcome.delay_steps <= job.max_delay_steps).all()
    # a perfect forecast re-planned at every step finds the oracle's (zone, start), up to the
    # window choice's tolerance for ties (1e-12 of a row's sum: far below 1e-4 g/kWh here)
    np.testing.assert_allclose(others[2].outcome.intensity, best.intensity, rtol=1e-6, atol=1e-4)


@settings(max_examples=100, deadline=None)
@given(st.lists(intensity, min_size=6, max_size=24), st.integers(1, 3), st.integers(0, 5))
def test_the_same_zone_twice_is_the_time_only_policy(values, duration, max_delay):
    actual = np.array([values, values], dtype=float)
    job = bt.JobShape(duration, min(max_delay, len(values) - duration))
    arrivals = bt.hourly_arrivals(len(values), 1.0, job)
    own = bt.own_forecast(regular(values), None)
    alone = bt.forecast_policy(actual[0], arrivals, job, own)
    both = sbt.spatial_forecast_policy(actual, arrivals, job, [own, own], np.ones(2))
    np.testing.assert_array_equal(both.outcome.delay_steps, alone.delay_steps)
    assert (both.zone == 0).all()  # ties go to the first listed


def test_power_scale_steers_jobs_off_a_slower_pool():
    clean_but_slow = np.full(48, 100.0)
    dirtier = np.full(48, 130.0)
    actual = np.array([dirtier, clean_but_slow])
    job = bt.JobShape(2, 6)
    arrivals = bt.hourly_arrivals(48, 1.0, job)
    assert (sbt.spatial_oracle(actual, arrivals, job, np.array([1.0, 1.0])).zone == 1).all()
    slow = sbt.spatial_oracle(actual, arrivals, job, np.array([1.0, 1.5]))
    assert (slow.zone == 0).all()
    np.testing.assert_allclose(slow.outcome.intensity, 130.0)


def test_spatial_forecast_own_replays_decide_placement_poll_by_poll():
    """The backtest's space-time forecast-own is what the core decides at every hourly poll
    from each zone's readings (own forecaster, no provider forecast)."""
    rng = np.random.default_rng(7)
    hours = np.arange(24 * 16)
    a = 300 + 100 * np.sin(hours * 2 * np.pi / 24) + rng.normal(0, 30, hours.size)
    b = 320 + 120 * np.sin(hours * 2 * np.pi / 24 + 2.5) + rng.normal(0, 30, hours.size)
    actual = np.maximum(np.array([a, b]), 0)
    job = bt.JobShape(3, 12)
    arrivals = bt.hourly_arrivals(hours.size, 1.0, job)[24 * 3 :: 11]
    sources = [bt.own_forecast(regular(x), None) for x in actual]
    ran = sbt.spatial_forecast_policy(actual, arrivals, job, sources, np.ones(2))
    t0 = datetime(2022, 1, 1, tzinfo=UTC)
    rules = PolicySettings(Strategy.FORECAST, 0, timedelta(hours=12), timedelta(hours=3))
    candidates = [Placement("A"), Placement("B")]
    readings = [
        [Reading(z, t0 + timedelta(hours=int(i)), float(v)) for i, v in enumerate(x)]
        for z, x in zip("AB", actual, strict=True)
    ]
    waited, where = [], []
    for arrival in arrivals:
        submitted = t0 + timedelta(hours=int(arrival))
        for step in range(arrival, arrival + job.max_delay_steps + 1):
            now = t0 + timedelta(hours=step, minutes=5)
            held = [ZoneReadings(r[: step + 1]) for r in readings]
            decision = decide_placement(rules, candidates, submitted, now, held)
            if decision.run:
                waited.append(step - arrival)
                where.append(decision.placement)
                break
    np.testing.assert_array_equal(ran.outcome.delay_steps, waited)
    np.testing.assert_array_equal(ran.zone, where)
    assert set(where) == {0, 1} and 0 < np.mean(waited) < job.max_delay_steps


def test_aligned_series_keeps_the_shared_steps_and_refuses_one_zone():
    index = pd.date_range("2022-01-01", periods=10, freq="h", tz="UTC")
    first = pd.Series(np.arange(10.0), index=index)
    second = pd.Series(np.arange(10.0) + 100, index=index + pd.Timedelta(hours=4))
    aligned = sbt.aligned_series([first, second], [None, None])
    assert [s.start for s in aligned] == [index[4], index[4]]
    np.testing.assert_array_equal(aligned[1].actual, np.arange(6.0) + 100)
    with pytest.raises(bt.BacktestError, match="at least two"):
        sbt.aligned_series([first], [None])
    far = pd.Series(np.arange(10.0), index=index + pd.Timedelta(days=30))
    with pytest.raises(bt.BacktestError, match="share fewer than 3 steps"):
        sbt.aligned_series([first, far], [None, None])


def test_cli_spatial_on_real_traces_beats_time_only_and_misses_nothing(traces_dir):
    folder = traces_dir / "electricitymaps"
    pjm, caiso = folder / "US-MIDA-PJM_2022_hourly.csv", folder / "US-CAL-CISO_2022_hourly.csv"
    done = carbonctl("--json", "--duration", "2h", "--max-delay", "24h", "--spatial", pjm, caiso)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["zones"] == ["US-MIDA-PJM", "US-CAL-CISO"]
    by = {r["policy"]: r for r in report["results"]}
    assert set(by) == set(sbt.POLICIES)
    assert all(r["misses"] == 0 for r in report["results"])
    # CAISO is far cleaner than PJM in 2022: moving there saves far more than waiting
    assert by["spatial-forecast-own"]["savings_pct"] > by["forecast-own"]["savings_pct"] + 30
    assert by["spatial-forecast-own"]["oracle_captured"] >= 0.8
    assert by["now"]["zone_shares"] == [1.0, 0.0]
    # a slower CAISO pool (x3 the energy) is worth moving to only at CAISO's cleanest hours
    slow = carbonctl("--json", "--spatial", str(pjm), f"{caiso}@3")
    assert slow.returncode == 0, slow.stderr
    slow_by = {r["policy"]: r for r in json.loads(slow.stdout)["results"]}
    moved = by["spatial-oracle"]["zone_shares"][1]
    assert moved > 0.9 and slow_by["spatial-oracle"]["zone_shares"][1] < 0.6 * moved


def test_cli_spatial_bad_input_is_one_clear_error(traces_dir, tmp_path):
    trace = traces_dir / "electricitymaps" / "GB_2022_hourly.csv"
    cases = [
        (["--spatial", str(trace)], "at least two traces"),
        (["--spatial", str(trace), str(tmp_path / "missing.csv")], "no such trace file"),
        (["--spatial", str(trace), f"{trace}@0"], "powerScale must be > 0"),
        (["--trace", str(trace), "--spatial", str(trace), str(trace)], "either --trace"),
        ([str(trace)], "either --trace"),
        ([], "give a trace"),
    ]
    for args, message in cases:
        done = carbonctl(*args)
        assert done.returncode != 0 and message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
