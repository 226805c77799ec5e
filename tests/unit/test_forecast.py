"""Our own seasonal-naive forecaster, in its reading and array forms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from carbonaware.core.forecast import seasonal_naive_forecast, seasonal_naive_predict
from carbonaware.core.model import Reading

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
