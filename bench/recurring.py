"""Recurring-job benchmark: a nightly CarbonAwareCronJob against the oracle on real traces.

One run per scheduled time of "0 22 * * *" (a nightly 2 h job that may start anywhere in an
8 h window: 22:00-06:00), evaluated with :mod:`carbonaware.core.backtest_recurring` (the
engine behind ``carbonctl backtest --schedule``) over the 16 Electricity Maps zones, 2021 and
2022 (direct emission factors, actual intensities), with the project's own forecaster
(``forecast-own``: what each run, a CarbonAwareJob with ``strategy: forecast``, does when
the provider has no forecast) and the oracle (the cleanest start in each window, knowing the
future). The schedule is read in UTC and in each zone's own time zone (22:00 local).

Prints markdown: per zone, the saving of each and the share of the oracle's saving captured;
then, per year and time base, the share pooled over zones (the saving summed over zones,
g/kWh, over the oracle's) and the mean of the per-zone shares.

    .venv/bin/python bench/recurring.py

Reads ../shared/data/traces (CARBONAWARE_SHARED_DATA overrides ../shared/data).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from pathlib import Path

from carbonaware.core import backtest as bt
from carbonaware.core.backtest_recurring import scheduled_arrivals
from carbonaware.core.recurring import Schedule
from carbonaware.traces import load_trace

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("CARBONAWARE_SHARED_DATA", ROOT.parent / "shared" / "data"))
SCHEDULE, DURATION, WINDOW = "0 22 * * *", timedelta(hours=2), timedelta(hours=8)
TIME_ZONES = {
    "AU-NSW": "Australia/Sydney",
    "AU-VIC": "Australia/Melbourne",
    "BR-SP": "America/Sao_Paulo",
    "CA-ON": "America/Toronto",
    "CL-SIC": "America/Santiago",
    "DE-LU": "Europe/Berlin",
    "GB": "Europe/London",
    "IN-WE": "Asia/Kolkata",
    "JP-TK": "Asia/Tokyo",
    "KR": "Asia/Seoul",
    "SG": "Asia/Singapore",
    "US-CAL-CISO": "America/Los_Angeles",
    "US-MIDA-PJM": "America/New_York",
    "US-NY-NYIS": "America/New_York",
    "US-TEX-ERCO": "America/Chicago",
    "ZA": "Africa/Johannesburg",
}
GOAL = 0.80


def evaluate(path: Path, time_zone: str | None) -> tuple[float, float, float, int]:
    """(at-schedule g/kWh, forecast-own g/kWh, oracle g/kWh, runs) for one trace."""
    trace = load_trace(path)
    series = bt.regular_series(trace.series, trace.forecast)
    job = bt.JobShape(series.steps(DURATION), int(WINDOW / series.step))
    arrivals = scheduled_arrivals(series, Schedule(SCHEDULE, time_zone), job)
    run = bt.evaluate(
        series,
        job,
        arrivals,
        ["forecast-own", "oracle"],
        300.0,
        bt.perfect_forecast(series),
        own_forecast=lambda: bt.own_forecast(series),
    )
    own, best = run.results
    return own.baseline_intensity, own.mean_intensity, best.mean_intensity, own.jobs


def main() -> int:
    folder = DATA / "traces" / "electricitymaps"
    if not folder.is_dir():
        print(f"skipped: no traces at {folder}")
        return 0
    started = time.perf_counter()
    summary = []
    for year in ("2021", "2022"):
        for label in ("UTC", "local"):
            print(f"\n#### {year}, 22:00 {label}\n")
            print("| zone | runs | saving own % | saving oracle % | captured % |")
            print("|---|---:|---:|---:|---:|")
            base_sum = own_sum = best_sum = 0.0
            shares = []
            for zone, tz in TIME_ZONES.items():
                path = folder / f"{zone}_{year}_hourly.csv"
                base, own, best, runs = evaluate(path, tz if label == "local" else None)
                base_sum, own_sum, best_sum = base_sum + base, own_sum + own, best_sum + best
                share = (base - own) / (base - best) if base - best > 1e-9 * base else None
                if share is not None:
                    shares.append(share)
                print(
                    f"| {zone} | {runs} | {100 * (1 - own / base):.2f} | "
                    f"{100 * (1 - best / base):.2f} | "
                    f"{'n/a' if share is None else f'{100 * share:.0f}'} |"
                )
            pooled = (base_sum - own_sum) / (base_sum - best_sum)
            mean = sum(shares) / len(shares)
            summary.append((year, label, pooled, mean))
    print("\n#### Captured share of the oracle's saving (forecast-own)\n")
    print("| year | 22:00 in | pooled over zones | mean of zones | goal ≥ 80 % (pooled) |")
    print("|---|---|---:|---:|---|")
    for year, label, pooled, mean in summary:
        met = "met" if pooled >= GOAL else "**MISSED**"
        print(f"| {year} | {label} | {100 * pooled:.1f} % | {100 * mean:.1f} % | {met} |")
    print(f"\n{4 * len(TIME_ZONES)} backtests in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
