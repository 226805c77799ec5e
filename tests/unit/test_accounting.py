"""Energy, emissions over the run, the counterfactual baseline and the saving."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from carbonaware.core.accounting import (
    account,
    baseline_emissions,
    emissions_over,
    emissions_over_segments,
    energy_from,
    estimate_energy,
)
from carbonaware.core.model import Reading
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = datetime(2022, 6, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def hourly(values, forecast=False):
    return [Reading("GB", T0 + h * HOUR, v, forecast=forecast) for h, v in enumerate(values)]


def test_estimated_energy_is_power_times_time_times_pue():
    energy = estimate_energy(250, timedelta(hours=2), pue=1.2)
    assert energy.kwh == pytest.approx(0.6)
    assert energy.method == "estimated" and "250 W" in energy.detail


def test_measured_energy_wins_keeps_its_label_and_pue_multiplies_it_too():
    energy = energy_from(
        0.5, power_watts=250, duration=timedelta(hours=2), pue=1.1, label="measured:rapl-package"
    )
    assert energy.method == "measured:rapl-package" and energy.measured
    assert energy.kwh == pytest.approx(0.55)
    assert energy_from(None, 100, HOUR).method == "estimated"
    # the workload's own estimate, or a mix of measured and estimated parts, is an estimate
    mixed = energy_from(0.5, 100, HOUR, label="measured:nvml+estimated:cpu-time")
    assert mixed.method == "measured:nvml+estimated:cpu-time" and not mixed.measured
    assert mixed.kwh == 0.5 and "estimated by" in mixed.detail
    # a figure that does not say how it was obtained is not called measured
    unlabelled = energy_from(0.5, 100, HOUR)
    assert unlabelled.method == "unlabelled" and not unlabelled.measured
    with pytest.raises(ValueError):
        estimate_energy(100, HOUR, pue=0.9)


def test_emissions_integrate_over_the_readings_during_the_run():
    readings = hourly([100, 200, 300, 400])
    # 1 kWh spread over 01:30-03:30: half an hour at 200, an hour at 300, half an hour at 400
    result = emissions_over(1.0, T0 + 1.5 * HOUR, T0 + 3.5 * HOUR, readings)
    assert result.method == "integrated"
    assert result.grams == pytest.approx((0.5 * 200 + 300 + 0.5 * 400) / 2)
    assert result.readings_used == 3 and result.basis == "direct"


def test_forecast_readings_never_count_and_missing_readings_fall_back_to_start():
    readings = hourly([100]) + hourly([0, 0, 0, 0, 0, 0], forecast=True)[1:]
    result = emissions_over(2.0, T0, T0 + 5 * HOUR, readings)
    assert result.method == "start-reading" and "missing" in result.note
    assert result.grams == pytest.approx(200.0)


def test_segments_of_an_interruptible_job():
    readings = hourly([100, 900, 300, 900])
    segments = [(T0, T0 + HOUR), (T0 + 2 * HOUR, T0 + 3 * HOUR)]
    result = emissions_over_segments(2.0, segments, readings)
    assert result.grams == pytest.approx(1.0 * 100 + 1.0 * 300)


def test_baseline_says_when_the_counterfactual_is_not_covered():
    readings = [*hourly([500]), Reading("GB", T0 + 5 * HOUR, 100)]
    result = baseline_emissions(1.0, 4 * HOUR, T0, readings)
    assert result.method == "start-reading"
    assert "not fully covered by actual readings" in result.note


def test_account_reports_saving_against_starting_at_submission():
    readings = hourly([400, 400, 100, 100, 100])
    energy = estimate_energy(1000, HOUR)
    report = account(energy, [(T0 + 2 * HOUR, T0 + 3 * HOUR)], T0, readings)
    assert report.emissions.grams == pytest.approx(100)
    assert report.baseline.grams == pytest.approx(400)
    assert report.saved_grams == pytest.approx(300)
    assert report.saved_percent == pytest.approx(75)
    assert report.savings_method.startswith("from actual logged readings")


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.floats(min_value=0, max_value=2000), min_size=2, max_size=48),
    start_hour=st.floats(min_value=0, max_value=40),
    length=st.floats(min_value=0.01, max_value=8),
    kwh=st.floats(min_value=0, max_value=100),
)
def test_saved_is_baseline_minus_actual_from_the_same_readings(values, start_hour, length, kwh):
    readings = hourly(values)
    start = T0 + start_hour * HOUR
    end = start + length * HOUR
    report = account(energy_from(kwh, 0, end - start), [(start, end)], T0, readings)
    actual = emissions_over(kwh, start, end, readings)
    baseline = baseline_emissions(kwh, end - start, T0, readings)
    assert report.emissions == actual and report.baseline == baseline
    assert report.saved_grams == pytest.approx(baseline.grams - actual.grams)
    # every gram is bounded by the readings seen
    assert min(values) * kwh - 1e-6 <= actual.grams <= max(values) * kwh + 1e-6
