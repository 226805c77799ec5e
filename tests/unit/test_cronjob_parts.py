"""CarbonAwareCronJob's pure parts: the run builder, the recurring backtest, the series plot,
and the CRD's and the typed spec's agreement on defaults."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from carbonaware.cli.carbonctl import cli as carbonctl
from carbonaware.cli.kubectl_carbon import plot_cron_series
from carbonaware.core import backtest as bt
from carbonaware.core.backtest_recurring import scheduled_arrivals, series_runs
from carbonaware.core.recurring import Run, Schedule, child_name
from carbonaware.kube import cronjob_builders as cronjobs
from carbonaware.kube.models import SpecError
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
UID = "6d1f1c2e-0000-4000-8000-000000000001"
WHEN = datetime(2024, 3, 5, 22, 0, tzinfo=UTC)


def spec(**overrides) -> cronjobs.CronJobSpec:
    raw = {
        "schedule": "0 22 * * *",
        "window": "8h",
        "jobTemplate": {"zone": "DE", "provider": {"name": "replay", "speed": 60}},
    }
    return cronjobs.parse_cron_spec(raw | overrides)


def test_a_run_is_the_template_owned_by_the_cron_job_and_named_after_its_time() -> None:
    body = cronjobs.build_run("nightly", UID, "ml", spec(), WHEN, replay=True)
    meta = body["metadata"]
    assert meta["name"] == child_name("nightly", WHEN)
    assert meta["labels"][cronjobs.CRON_LABEL] == "nightly"
    assert meta["annotations"][cronjobs.SCHEDULED_ANNOTATION] == "2024-03-05T22:00:00Z"
    owner = meta["ownerReferences"][0]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("CarbonAwareCronJob", UID, True)
    assert body["spec"]["maxDelay"] == "28800s"  # the window
    assert body["spec"]["provider"] == {
        "name": "replay",
        "speed": 60,
        "start": meta["annotations"][cronjobs.SCHEDULED_ANNOTATION],
    }
    # The template itself is left as it was (the next run starts from it again).
    assert "start" not in spec().job_template["provider"]
    wall = cronjobs.build_run("nightly", UID, "ml", spec(), WHEN, replay=False)
    assert "start" not in wall["spec"]["provider"]


def test_a_run_reads_back_as_the_core_sees_it() -> None:
    body = cronjobs.build_run("nightly", UID, "ml", spec(), WHEN, replay=False)
    body["status"] = {
        "phase": "Succeeded",
        "energyKWh": 0.5,
        "emissionsGrams": 60.0,
        "baselineEmissionsGrams": 100.0,
        "savedGrams": 40.0,
        "startedAt": "2024-03-06T03:00:00Z",
        "deadline": "2024-03-06T06:00:00Z",
    }
    run = cronjobs.run_of(body)
    assert run.scheduled == WHEN and run.finished and not run.at_deadline
    assert (run.energy_kwh, run.saved_grams) == (0.5, 40.0)


@given(
    st.builds(
        Run,
        name=st.just("r"),
        scheduled=st.just(WHEN),
        phase=st.just("Succeeded"),
        energy_kwh=st.floats(0, 10),
        emissions_grams=st.floats(0, 1e4),
        baseline_grams=st.floats(0, 1e4),
        saved_grams=st.floats(-1e3, 1e4),
    )
)
def test_totals_survive_the_round_trip_through_status(run) -> None:
    from carbonaware.core.recurring import Totals

    totals = Totals().add(run)
    back = cronjobs.totals_of({"totals": cronjobs.build_totals(totals)})
    assert back.runs == 1 and back.succeeded == 1
    assert back.saved_grams == pytest.approx(totals.saved_grams, abs=1e-6)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"schedule": "0 22 * *"}, "five-field"),
        ({"timeZone": "Nowhere/Land"}, "unknown time zone"),
        ({"window": "soon"}, "spec.window"),
    ],
)
def test_a_bad_spec_is_one_line_naming_the_field(overrides, fragment) -> None:
    with pytest.raises(SpecError, match=fragment):
        spec(**overrides)


def test_crd_defaults_match_the_typed_spec() -> None:
    crd = yaml.safe_load((REPO / "manifests" / "cronjob-crd.yaml").read_text())
    props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    defaults = {k: v["default"] for k, v in props["properties"].items() if "default" in v}
    parsed = spec()
    assert defaults == {
        "concurrencyPolicy": parsed.concurrency_policy,
        "suspend": parsed.suspend,
        "successfulJobsHistoryLimit": parsed.successful_jobs_history_limit,
        "failedJobsHistoryLimit": parsed.failed_jobs_history_limit,
    }
    assert "cronjob-crd.yaml" in (REPO / "manifests" / "kustomization.yaml").read_text()


# --- the recurring backtest ------------------------------------------------------------------


def hourly_series(days: int, seed: int = 0) -> bt.RegularSeries:
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-01-01", periods=24 * days, freq="h", tz="UTC")
    values = (
        200 + 100 * np.sin(np.arange(len(index)) / 24 * 2 * np.pi) + rng.normal(0, 5, len(index))
    )
    return bt.regular_series(pd.Series(values, index=index))


@settings(max_examples=30, deadline=None)
@given(hour=st.integers(0, 23), minute=st.sampled_from([0, 15, 30]), window=st.integers(0, 12))
def test_one_arrival_per_scheduled_time_whose_window_fits(hour, minute, window) -> None:
    series = hourly_series(10)
    job = bt.JobShape(2, window)
    when = scheduled_arrivals(series, Schedule(f"{minute} {hour} * * *"), job)
    times = [series.start + int(i) * series.step for i in when]
    # Each arrival is the first step at or after the scheduled time (minute 0 falls on one).
    for t in times:
        assert t.hour == (hour + (minute > 0)) % 24 and t.minute == 0
    assert all(b - a == pd.Timedelta(days=1) for a, b in itertools.pairwise(times))
    assert when[-1] + job.horizon <= len(series.actual)
    assert len(when) >= 10 - 1 - (window + 3) // 24 - 1


def test_each_run_of_the_series_is_at_best_as_clean_as_the_oracle() -> None:
    series = hourly_series(30, seed=3)
    job = bt.JobShape(2, 8)
    when = scheduled_arrivals(series, Schedule("0 22 * * *"), job)
    runs = series_runs(series, when, job, bt.perfect_forecast(series))
    assert len(runs) == len(when)
    for run in runs:
        assert run.oracle <= run.policy + 1e-9 and run.oracle <= run.at_schedule + 1e-9
        assert 0 <= run.delay_h <= 8
    # A perfect forecast finds the oracle's start for every run.
    assert [r.policy for r in runs] == pytest.approx([r.oracle for r in runs])


def test_carbonctl_backtest_schedule_over_a_trace(tmp_path: Path) -> None:
    series = hourly_series(40, seed=1)
    csv = tmp_path / "trace.csv"
    pd.DataFrame(
        {
            "timestamp": [
                t.strftime("%Y-%m-%dT%H:%M:%SZ")
                for t in series.start + np.arange(len(series.actual)) * series.step
            ],
            "intensity": series.actual,
        }
    ).to_csv(csv, index=False)
    args = ["backtest", "--trace", str(csv), "--schedule", "0 22 * * *", "--window", "8h"]
    args += ["--policy", "forecast-own", "--series-plot", str(tmp_path / "plots")]
    result = CliRunner().invoke(carbonctl, args)
    assert result.exit_code == 0, result.output
    assert "arrivals schedule 0 22 * * * UTC" in result.output and "max delay 8h" in result.output
    assert (tmp_path / "plots" / "trace.png").read_bytes().startswith(b"\x89PNG")
    bad = CliRunner().invoke(carbonctl, ["backtest", "--trace", str(csv), "--window", "8h"])
    assert bad.exit_code != 0 and "go with --schedule" in bad.output


# --- the series figure -------------------------------------------------------------------------


def test_kubectl_carbon_plots_a_cron_jobs_series(tmp_path: Path) -> None:
    entries = [
        {
            "name": child_name("nightly", WHEN + timedelta(days=i)),
            "scheduledTime": (WHEN + timedelta(days=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "phase": "Succeeded",
            "energyKWh": 0.5,
            "emissionsGrams": 50.0 + i,
            "baselineEmissionsGrams": 80.0,
        }
        for i in range(5)
    ] + [{"name": "failed", "scheduledTime": "2024-03-11T22:00:00Z", "phase": "Failed"}]
    cron = {
        "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 22 * * *", "window": "8h", "jobTemplate": {"zone": "DE"}},
        "status": {"series": entries},
    }
    out = plot_cron_series(cron, str(tmp_path / "series.png"))
    assert Path(out).read_bytes().startswith(b"\x89PNG")
    from carbonaware.series_plot import bars_from_status

    bars = bars_from_status(entries)
    assert len(bars) == 5 and bars[0].intensity == pytest.approx(100.0)  # 50 g / 0.5 kWh
    from carbonaware.kube.lookup import LookupFailed

    with pytest.raises(LookupFailed, match="no finished run"):
        plot_cron_series(cron | {"status": {}}, str(tmp_path / "none.png"))
