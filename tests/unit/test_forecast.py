"""Our own forecasters (seasonal-naive and the profile one the policy uses), in their reading
and array forms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from carbonaware.core import backtest as bt
from carbonaware.core.forecast import (
    PROFILE_RECENT_WEIGHT,
    PROFILE_WEEKLY_WEIGHT,
    ProfileSettings,
    profile_forecast,
    profile_forecast_rows,
    seasonal_naive_forecast,
    seasonal_naive_predict,
)
from carbonaware.core.model import Reading
from carbonaware.traces import load_trace
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = datetime(2022, 3, 2, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def cycle(hour: int) -> float:
    return 200 + 100 * np.sin(2 * np.pi * hour / 24)


def test_forecast_repeats_the_daily_cycle_far_ahead_and_the_level_near():
    history = [Reading("DE", T0 + h * HOUR, cycle(h)) for h in range(-48, 1)]
    now = T0 + timedelta(minutes=20)
    out = seasonal_naive_forecast(history, now, timedelta(hours=24))
    assert [r.timestamp for r in out] == [T0 + h * HOUR for h in range(1, 25)]
    assert all(r.forecast and r.estimated and r.provider == "own-forecaster" for r in out)
    # 12 h ahead the recent level weighs exp(-4): the forecast is yesterday's value
    assert abs(out[11].intensity - cycle(12)) < 0.02 * 200
    # 1 h ahead it is close to the latest reading blended in
    assert min(cycle(0), cycle(1)) - 1 <= out[0].intensity <= max(cycle(0), cycle(1)) + 1


def test_forecast_without_a_day_of_history_is_persistence():
    history = [Reading("DE", T0, 321.0)]
    out = seasonal_naive_forecast(history, T0, timedelta(hours=5))
    assert len(out) == 5 and {r.intensity for r in out} == {321.0}


def test_forecast_ignores_forecasts_and_needs_a_reading():
    assert seasonal_naive_forecast([], T0, timedelta(hours=5)) == []
    fake = [Reading("DE", T0, 1.0, forecast=True)]
    assert seasonal_naive_forecast(fake, T0, timedelta(hours=5)) == []


def test_array_form_matches_reading_form():
    values = np.array([cycle(h) for h in range(72)])
    lead = 5
    predicted = seasonal_naive_predict(values, lead)
    # the origin needs a day of history behind it: first forecast at 24 + lead
    assert np.isnan(predicted[: 24 + lead]).all() and not np.isnan(predicted[24 + lead :]).any()
    origin = 40
    history = [Reading("DE", T0 + h * HOUR, values[h]) for h in range(origin + 1)]
    readings = seasonal_naive_forecast(history, T0 + origin * HOUR, lead * HOUR)
    assert abs(readings[lead - 1].intensity - predicted[origin + lead]) < 1e-9


# --------------------------------------------------------------------------- profile forecaster


def readings_of(values, start=T0):
    return [Reading("DE", start + h * HOUR, float(v)) for h, v in enumerate(values)]


def test_profile_forecast_follows_the_weekly_profile_not_one_odd_day():
    # a week of the same cycle, then yesterday an outage doubled every value
    values = [cycle(h) for h in range(24 * 8)] + [2 * cycle(h) for h in range(24)] + [cycle(0)]
    now = T0 + (len(values) - 1) * HOUR
    out = profile_forecast(readings_of(values), now, timedelta(hours=24))
    naive = seasonal_naive_forecast(readings_of(values), now, timedelta(hours=24))
    truth = np.array([cycle(h) for h in range(1, 25)])
    own_error = np.abs(np.array([r.intensity for r in out]) - truth)[6:].mean()
    naive_error = np.abs(np.array([r.intensity for r in naive]) - truth)[6:].mean()
    # 7 normal days and 1 doubled one: the profile is off by a seventh, naive by all of it
    assert own_error < naive_error / 4
    assert all(r.forecast and r.estimated and r.provider == "own-forecaster" for r in out)
    assert [r.timestamp for r in out] == [now + h * HOUR for h in range(1, 25)]


def test_profile_forecast_starts_from_todays_level_and_decays_to_the_profile():
    values = [cycle(h) for h in range(24 * 7)] + [cycle(0) + 150]  # now: 150 above the profile
    now = T0 + (len(values) - 1) * HOUR
    out = [r.intensity for r in profile_forecast(readings_of(values), now, timedelta(hours=24))]
    deviation = np.array(out) - np.array([cycle(h) for h in range(1, 25)])
    assert 100 < deviation[0] < 150  # one hour ahead: most of today's excess
    assert np.all(np.diff(deviation[:23]) < 0)  # fading away with the lead time
    assert deviation[22] == pytest.approx(150 * np.exp(-23 / 24), rel=0.01)
    # 24 h ahead, today's own reading is the latest of the 8 same-hour values held (today
    # and the 7 days before), that profile blended with the same hour a week before (normal)
    daily = PROFILE_RECENT_WEIGHT + (1 - PROFILE_RECENT_WEIGHT) / 8
    expected = 150 * np.exp(-1) + (1 - PROFILE_WEEKLY_WEIGHT) * 150 * daily
    assert deviation[23] == pytest.approx(expected, rel=1e-6)


def test_profile_forecast_follows_the_weekly_cycle_where_it_holds_a_week():
    # two weeks of a cycle whose weekends (days 5, 6 and 12, 13) run 100 g/kWh lower
    values = [cycle(h) - 100 * ((h // 24) % 7 >= 5) for h in range(24 * 14)] + [cycle(0)]
    now = T0 + (len(values) - 1) * HOUR  # the start of day 14, a weekday
    week_ahead = profile_forecast(readings_of(values), now, timedelta(hours=24 * 7))
    ahead = np.array([r.intensity for r in week_ahead])
    origin = np.array([len(values) - 1])
    daily_only = profile_forecast_rows(
        np.array(values), origin, 24 * 7 + 1, None, ProfileSettings(weekly_weight=0.0)
    )[0, 1:]
    tuesday, saturday = 24 * 1 + 11, 24 * 5 + 11  # 12:00 on days 15 and 19
    gap = ahead[tuesday] - ahead[saturday]
    gap_daily_only = daily_only[tuesday] - daily_only[saturday]
    # the weekend is forecast lower than a weekday, a quarter of the 100 more than without
    assert gap > 0
    assert gap - gap_daily_only > 0.5 * PROFILE_WEEKLY_WEIGHT * 100
    # held only a day: no weekly term, and no error
    short = profile_forecast(readings_of(values[-25:], now - 24 * HOUR), now, 48 * HOUR)
    assert len(short) == 48


def test_profile_forecast_with_one_reading_is_persistence_and_needs_a_reading():
    out = profile_forecast([Reading("DE", T0, 321.0)], T0, timedelta(hours=5))
    assert len(out) == 5 and {r.intensity for r in out} == {321.0}
    assert profile_forecast([], T0, timedelta(hours=5)) == []
    assert profile_forecast([Reading("DE", T0, 1.0, forecast=True)], T0, timedelta(hours=5)) == []


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0, 900), min_size=30, max_size=24 * 9),
    st.integers(0, 24 * 9),
    st.sampled_from([None, 24, 30, 200]),
    st.integers(0, 2**16),
)
def test_no_look_ahead_changing_the_future_never_changes_a_forecast(values, origin, seen, seed):
    """A forecast issued at t reads nothing after t: rewrite every later value, same forecast."""
    values = np.array(values)
    origin = min(origin, len(values) - 1)
    future = values.copy()
    future[origin + 1 :] = np.random.default_rng(seed).uniform(0, 900, len(values) - origin - 1)
    horizon = 80
    before = profile_forecast_rows(values, np.array([origin]), horizon, seen)
    after = profile_forecast_rows(future, np.array([origin]), horizon, seen)
    np.testing.assert_array_equal(before, after)
    # the reading form too: history up to now, and the same history plus later readings
    now = T0 + origin * HOUR
    cut = profile_forecast(readings_of(values[: origin + 1]), now, horizon * HOUR)
    full = profile_forecast(readings_of(future), now, horizon * HOUR)
    assert cut == full


def test_rows_form_matches_reading_form_with_a_limited_history():
    values = np.random.default_rng(7).uniform(50, 600, 24 * 10)
    for origin, seen in ((200, None), (200, 24), (200, 40), (30, None), (5, None)):
        first = 0 if seen is None else origin - seen + 1
        now = T0 + origin * HOUR + timedelta(minutes=20)  # polls fall between readings
        readings = profile_forecast(
            readings_of(values[first : origin + 1], T0 + first * HOUR), now, 30 * HOUR
        )
        rows = profile_forecast_rows(values, np.array([origin]), 31, seen)
        np.testing.assert_allclose([r.intensity for r in readings], rows[0, 1:], rtol=1e-12)


@pytest.mark.parametrize("zone", ["DE-LU_2022", "GB_2021", "US-TEX-ERCO_2022", "AU-VIC_2021"])
def test_profile_forecaster_errs_less_than_seasonal_naive_on_real_traces(traces_dir, zone):
    trace = load_trace(traces_dir / "electricitymaps" / f"{zone}_hourly.csv")
    series = bt.regular_series(trace.series)
    errors = {(e.label, e.lead_h): e for e in bt.own_forecast_errors(series, (1, 6, 24))}
    for lead, at_most in ((1, 0.8), (6, 0.9), (24, 1.0)):  # the gain shrinks with the lead
        own, naive = errors["own", lead], errors["seasonal-naive", lead]
        assert own.points == naive.points > 300 * 24
        assert own.mae < at_most * naive.mae, (lead, own.mae, naive.mae)
