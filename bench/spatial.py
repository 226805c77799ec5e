"""Where and when: space-time scheduling against time-only, on real traces of zone groups.

Runs :mod:`carbonaware.core.backtest_spatial` (the engine behind
``carbonctl backtest --spatial``) with hourly arrivals over whole Electricity Maps years
(2021, 2022; direct factors) for groups of zones a platform could hold node pools in. Every
zone of a group takes its turn as the default (the zone a job is submitted in, listed first);
the others are the candidate placements. Job lengths 1 h, 2 h, 4 h, 12 h; deadlines (max
start delay) 12 h, 24 h, 72 h. Prints markdown: per group and default zone (2 h jobs, 24 h
deadline), per group over every shape, and the goal (space-time ``forecast`` with the own
forecaster captures >= 80 % of the space-time oracle, 0 misses).

    .venv/bin/python bench/spatial.py [--match US]

Reads ../shared/data/traces/electricitymaps (CARBONAWARE_SHARED_DATA overrides ../shared/data).
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
from carbonaware.core import backtest as bt
from carbonaware.core import backtest_spatial as sbt
from carbonaware.traces import load_trace

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("CARBONAWARE_SHARED_DATA", ROOT.parent / "shared" / "data"))
GROUPS = {
    "US": ("US-MIDA-PJM", "US-CAL-CISO", "US-NY-NYIS", "US-TEX-ERCO"),
    "Europe": ("DE-LU", "GB"),
    "AU": ("AU-VIC", "AU-NSW"),
    "Asia": ("KR", "JP-TK"),
}
YEARS = (2021, 2022)
DURATIONS_H = (1, 2, 4, 12)
DEADLINES_H = (12, 24, 72)
MAIN = (2, 24)
GOAL = 0.80


def run_group(zones: tuple[str, ...], year: int) -> list[dict]:
    """Every default zone in turn, every job shape: one row per (default, shape)."""
    folder = DATA / "traces" / "electricitymaps"
    traces = [load_trace(folder / f"{zone}_{year}_hourly.csv") for zone in zones]
    rows = []
    for first in range(len(zones)):
        order = [first] + [i for i in range(len(zones)) if i != first]
        series = sbt.aligned_series([traces[i].series for i in order], [None] * len(order))
        names = [zones[i] for i in order]
        own = [bt.own_forecast(s) for s in series]
        for hours in DURATIONS_H:
            for delay in DEADLINES_H:
                job = bt.JobShape(
                    series[0].steps(timedelta(hours=hours)),
                    int(timedelta(hours=delay) / series[0].step),
                )
                arrivals = bt.hourly_arrivals(len(series[0].actual), 1.0, job)
                started = time.perf_counter()
                run = sbt.evaluate_spatial(
                    series,
                    names,
                    job,
                    arrivals,
                    sbt.POLICIES,
                    lambda s=series: [bt.perfect_forecast(x) for x in s],
                    lambda o=own: o,
                )
                by = {r.policy: r for r in run.results}
                rows.append(
                    {
                        "default": names[0],
                        "year": year,
                        "duration_h": hours,
                        "deadline_h": delay,
                        "seconds": time.perf_counter() - started,
                        "by": by,
                        "shares": run.zone_shares,
                        "zones": names,
                    }
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--match", default="", help="only groups whose name has this")
    args = parser.parse_args()
    started = time.perf_counter()
    results = {}
    for group, zones in GROUPS.items():
        if args.match.lower() in group.lower():
            results[group] = [row for year in YEARS for row in run_group(zones, year)]

    print("#### 2 h jobs, 24 h deadline: by default zone (mean of 2021 and 2022)\n")
    print(
        "| group | default zone | time-only forecast-own saving % | time-only oracle % | "
        "space-time forecast-own saving % | spatial-now % | best-zone oracle % | "
        "space-time oracle % | captured % | chosen zone (space-time forecast-own) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for group, rows in results.items():
        for zone in GROUPS[group]:
            main_rows = [
                r
                for r in rows
                if r["default"] == zone and (r["duration_h"], r["deadline_h"]) == MAIN
            ]

            def mean(policy, field="savings_pct", rs=main_rows):
                return float(np.mean([getattr(r["by"][policy], field) for r in rs]))

            shares = np.mean([r["shares"]["spatial-forecast-own"] for r in main_rows], axis=0)
            where = ", ".join(
                f"{z} {100 * s:.0f} %"
                for z, s in zip(main_rows[0]["zones"], shares, strict=True)
                if s >= 0.005
            )
            print(
                f"| {group} | {zone} | {mean('forecast-own'):.1f} | {mean('oracle'):.1f} | "
                f"{mean('spatial-forecast-own'):.1f} | {mean('spatial-now'):.1f} | "
                f"{mean('best-zone-oracle'):.1f} | {mean('spatial-oracle'):.1f} | "
                f"{100 * mean('spatial-forecast-own', 'oracle_captured'):.0f} | {where} |"
            )

    print("\n#### Every shape (1, 2, 4, 12 h x 12, 24, 72 h), both years, every default zone\n")
    print(
        "| group | runs | time-only forecast-own saving % | space-time forecast-own saving % "
        "| space-time oracle saving % | captured % (mean / min) | misses |"
    )
    print("|---|---|---|---|---|---|---|")
    captured_all, misses_all = [], 0
    for group, rows in results.items():
        captured = [r["by"]["spatial-forecast-own"].oracle_captured for r in rows]
        misses = sum(r["by"][p].misses for r in rows for p in sbt.POLICIES)
        captured_all += captured
        misses_all += misses
        print(
            f"| {group} | {len(rows)} | "
            f"{np.mean([r['by']['forecast-own'].savings_pct for r in rows]):.1f} | "
            f"{np.mean([r['by']['spatial-forecast-own'].savings_pct for r in rows]):.1f} | "
            f"{np.mean([r['by']['spatial-oracle'].savings_pct for r in rows]):.1f} | "
            f"{100 * np.mean(captured):.0f} / {100 * np.min(captured):.0f} | {misses} |"
        )
    mean_captured = float(np.mean(captured_all))
    verdict = "met" if mean_captured >= GOAL and misses_all == 0 else "**MISSED**"
    print(
        f"\nGoal: space-time forecast-own captures >= {100 * GOAL:.0f} % of the space-time "
        f"oracle (mean over {len(captured_all)} runs), 0 misses: {100 * mean_captured:.1f} %, "
        f"min {100 * min(captured_all):.0f} %, {misses_all} misses: {verdict}"
    )
    seconds = [r["seconds"] for rows in results.values() for r in rows]
    print(
        f"\nSpeed: one run (9 policies, 8700 jobs, all zones of a group) median "
        f"{np.median(seconds):.2f} s, max {max(seconds):.2f} s; whole benchmark "
        f"{time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
