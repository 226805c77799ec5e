"""Scheduling benchmark: every policy against the oracle on real traces.

Runs :mod:`carbonaware.core.backtest` (the engine behind ``carbonctl backtest``) with hourly
arrivals over whole traces:

- the 16 Electricity Maps zones, 2021 and 2022 (direct emission factors), with a perfect
  forecast and with the project's own forecaster, holding the 15 days of history the operator
  and ``carbonctl run`` ask the provider for at submission (``-own``, the product as it ships)
  or only the 24 h of a provider's basic history call (``-own-day``, what the product held
  before it asked for more), and, for comparison, committing to the start picked at arrival
  instead of re-planning at every hourly poll as the product does (``-commit``);
- the DACF traces (Jul-Dec 2021), also with their real day-ahead forecast;

for job lengths 1 h, 4 h, 12 h and deadlines (max start delay) 12 h, 24 h, 72 h. Prints
markdown: the summary table, per-zone figures for 4 h jobs with a 24 h deadline, the real
forecast against the own one, the own forecaster's error per zone and lead (and per year:
its knobs were tuned on 2021 only, so 2022 is held out), the goals, and timings.

    .venv/bin/python bench/scheduling.py [--jobs 2] [--match DE]

Reads ../shared/data/traces (CARBONAWARE_SHARED_DATA overrides ../shared/data).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
from carbonaware.core import backtest as bt
from carbonaware.traces import load_trace

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("CARBONAWARE_SHARED_DATA", ROOT.parent / "shared" / "data"))
DURATIONS_H = (1, 4, 12)
DEADLINES_H = (12, 24, 72)
THRESHOLD = 300.0  # the product's default threshold, g/kWh
ERROR_LEADS_H = (1, 6, 24, 72)
MAIN = (4, 24)  # the configuration shown zone by zone
POLICY_ORDER = (
    "threshold",
    "forecast",
    "forecast-own",
    "forecast-own-commit",
    "forecast-own-day",
    "forecast-real",
    "interruptible",
    "interruptible-own",
    "interruptible-real",
    "oracle",
    "oracle-interruptible",
)
EM_ZONE_POLICIES = (
    "threshold",
    "forecast",
    "forecast-own",
    "forecast-own-day",
    "interruptible",
    "interruptible-own",
    "oracle",
    "oracle-interruptible",
)
DACF_ZONE_POLICIES = (
    "forecast",
    "forecast-real",
    "forecast-own",
    "forecast-own-day",
    "interruptible",
    "interruptible-real",
    "interruptible-own",
)


def run_trace(path: Path) -> dict:
    """Every configuration on one trace; rows of plain numbers (picklable)."""
    trace = load_trace(path)
    series = bt.regular_series(trace.series, trace.forecast)
    has_real = series.forecast is not None and not np.isnan(series.forecast).all()
    own = bt.own_forecast(series)  # what the product holds: 15 days at submission, then its log
    day = bt.own_forecast(series, bt.DAY_HISTORY, label="own-day")
    perfect = bt.perfect_forecast(series)
    # the file's zone and year: the export's Zone Id can differ (the DE-LU files say DE)
    label = path.stem.removesuffix("_hourly").split("_carbon")[0].replace("_", " ")
    rows = []
    for duration in DURATIONS_H:
        for deadline in DEADLINES_H:
            job = bt.JobShape(duration, deadline)
            arrivals = bt.hourly_arrivals(len(series.actual), 1.0, job)
            run = bt.evaluate(
                series, job, arrivals, bt.POLICIES, THRESHOLD, perfect, own_forecast=lambda: own
            )
            results = list(run.results)
            with_day = bt.evaluate(
                series, job, arrivals, ["forecast-own"], THRESHOLD, perfect, lambda: day
            )
            results += [replace(r, policy="forecast-own-day") for r in with_day.results]
            baseline = bt.run_now(series.actual, arrivals, job)
            best = bt.oracle(series.actual, arrivals, job)
            # planning once at arrival, for comparison
            committed = bt.forecast_policy(
                series.actual, arrivals, job, own, "forecast-own-commit", False
            )
            results.append(bt.summarise(committed, baseline, best, 1.0))
            if has_real:
                real = bt.real_forecast(series)
                extra = bt.evaluate(
                    series, job, arrivals, ["forecast", "interruptible"], THRESHOLD, real
                )
                results += extra.results
            for r in results:
                name = f"{r.policy}-real" if r.forecast == "real" else r.policy
                rows.append(
                    {
                        "trace": label,
                        "duration": duration,
                        "deadline": deadline,
                        "policy": name,
                        "savings": r.savings_pct,
                        "captured": r.oracle_captured,
                        "delay": r.mean_delay_h,
                        "misses": r.misses,
                        "segments": r.mean_segments,
                        "jobs": r.jobs,
                        "baseline": r.baseline_intensity,
                    }
                )
    errors = bt.own_forecast_errors(series, ERROR_LEADS_H)  # holding all of the past
    if has_real:
        errors.append(bt.forecast_error("real day-ahead", series.actual, series.forecast))
    return {"label": label, "rows": rows, "errors": [e.as_dict() for e in errors]}


def time_one_year(path: Path) -> tuple[int, float, dict[str, float]]:
    """Seconds for a year of hourly arrivals on one trace: each policy, then all together."""
    trace = load_trace(path)
    series = bt.regular_series(trace.series, trace.forecast)
    job = bt.JobShape(*MAIN)
    arrivals = bt.hourly_arrivals(len(series.actual), 1.0, job)
    each = {}
    for policy in bt.POLICIES:
        started = time.perf_counter()
        bt.evaluate(
            series,
            job,
            arrivals,
            [policy],
            THRESHOLD,
            bt.perfect_forecast(series),
            own_forecast=lambda: bt.own_forecast(series),
        )
        each[policy] = time.perf_counter() - started
    started = time.perf_counter()
    bt.evaluate(
        series,
        job,
        arrivals,
        bt.POLICIES,
        THRESHOLD,
        bt.perfect_forecast(series),
        own_forecast=lambda: bt.own_forecast(series),
    )
    return len(arrivals), time.perf_counter() - started, each


def mean(values) -> float:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def pct(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.0f}"


def summary_table(rows: list[dict], title: str) -> list[str]:
    out = [
        f"#### {title}",
        "",
        "| job | deadline | policy | saving % (mean) | oracle captured % (mean / min) "
        "| mean delay h | misses | segments/job |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for duration in DURATIONS_H:
        for deadline in DEADLINES_H:
            for policy in POLICY_ORDER:
                sel = [
                    r
                    for r in rows
                    if r["duration"] == duration
                    and r["deadline"] == deadline
                    and r["policy"] == policy
                ]
                if not sel:
                    continue
                captured = [r["captured"] for r in sel if r["captured"] is not None]
                saving = mean(r["savings"] for r in sel)
                out.append(
                    f"| {duration} h | {deadline} h | {policy} | {saving:.1f} "
                    f"| {pct(mean(captured))} / {pct(min(captured) if captured else None)} "
                    f"| {mean(r['delay'] for r in sel):.1f} | {sum(r['misses'] for r in sel)} "
                    f"| {mean(r['segments'] for r in sel):.2f} |"
                )
    return [*out, ""]


def per_zone_table(rows: list[dict], policies: tuple[str, ...]) -> list[str]:
    duration, deadline = MAIN
    labels = list(dict.fromkeys(r["trace"] for r in rows))
    head = " | ".join(f"{p} sav% / cap%" for p in policies)
    out = [
        f"| trace | at arrival g/kWh | {head} |",
        "|---|---|" + "---|" * len(policies),
    ]
    for label in labels:
        sel = {
            r["policy"]: r
            for r in rows
            if r["trace"] == label and r["duration"] == duration and r["deadline"] == deadline
        }
        cells = " | ".join(
            f"{sel[p]['savings']:.1f} / {pct(sel[p]['captured'])}" if p in sel else "-"
            for p in policies
        )
        base = next(iter(sel.values()))["baseline"]
        out.append(f"| {label} | {base:.0f} | {cells} |")
    return [*out, ""]


def error_table(results: list[dict]) -> list[str]:
    out = [
        "| trace | "
        + " | ".join(f"{h} h ahead: own / seasonal-naive MAE (MAPE %)" for h in ERROR_LEADS_H)
        + " | real day-ahead MAE (MAPE %) |",
        "|---|" + "---|" * (len(ERROR_LEADS_H) + 1),
    ]
    for res in results:
        by = {(e["label"], e["lead_h"]): e for e in res["errors"]}
        cells = [
            f"{by['own', h]['mae']:.1f} / {by['seasonal-naive', h]['mae']:.1f} "
            f"({by['own', h]['mape_pct']:.1f} / {by['seasonal-naive', h]['mape_pct']:.1f})"
            for h in ERROR_LEADS_H
        ]
        real = by.get(("real day-ahead", None))
        cells.append(f"{real['mae']:.1f} ({real['mape_pct']:.1f})" if real else "-")
        out.append(f"| {res['label']} | " + " | ".join(cells) + " |")
    return [*out, ""]


OWN_VARIANTS = ("forecast-own", "forecast-own-day", "forecast-own-commit")


def own_shares(em_rows: list[dict], year: str = "") -> dict[str, dict[str, list[float]]]:
    """Per zone (all 9 job shapes; both years, or only traces of ``year``): the oracle
    captured by each own variant, one share per run."""
    shares: dict[str, dict[str, list[float]]] = {}
    for r in em_rows:
        if r["policy"] in OWN_VARIANTS and r["captured"] is not None:
            zone, trace_year = r["trace"].rsplit(" ", 1)
            if year in ("", trace_year):
                shares.setdefault(zone, {}).setdefault(r["policy"], []).append(r["captured"])
    return shares


def zone_means(shares: dict[str, dict[str, list[float]]]) -> dict[str, float]:
    """The goal's figure for each variant: mean over zones of each zone's mean share."""
    return {v: mean(mean(by.get(v, [])) for by in shares.values()) for v in OWN_VARIANTS}


def own_goal_by_zone(em_rows: list[dict]) -> tuple[list[str], dict[str, float]]:
    """Per zone (both years, all 9 job shapes): oracle captured by each own variant, then the
    mean over zones for both years and for each year alone (2021 tuned on, 2022 held out)."""
    shares = own_shares(em_rows)
    out = [
        "| zone | " + " | ".join(f"{v} captured %" for v in OWN_VARIANTS) + " | ≥ 80 % |",
        "|---|" + "---|" * (len(OWN_VARIANTS) + 1),
    ]
    for zone, by in shares.items():
        cells = " | ".join(pct(mean(by.get(v, []))) for v in OWN_VARIANTS)
        verdict = "/".join("yes" if mean(by.get(v, [])) >= 0.80 else "no" for v in OWN_VARIANTS[:2])
        out.append(f"| {zone} | {cells} | {verdict} |")
    averages = zone_means(shares)
    out.append(
        "| **mean over zones** | "
        + " | ".join(f"**{pct(averages[v])}**" for v in OWN_VARIANTS)
        + " | |"
    )
    for year, role in (("2021", "tuned on"), ("2022", "held out")):
        by_year = zone_means(own_shares(em_rows, year))
        out.append(
            f"| mean over zones, {year} only ({role}) | "
            + " | ".join(pct(by_year[v]) for v in OWN_VARIANTS)
            + " | |"
        )
    return [*out, ""], averages


def error_by_year(em_results: list[dict]) -> list[str]:
    """The own forecaster's MAE by lead, averaged over the zones of each year."""
    out = [
        "| year | "
        + " | ".join(f"{h} h ahead: own / seasonal-naive MAE" for h in ERROR_LEADS_H)
        + " |",
        "|---|" + "---|" * len(ERROR_LEADS_H),
    ]
    for year in ("2021", "2022"):
        picked = [res for res in em_results if res["label"].endswith(year)]
        cells = []
        for h in ERROR_LEADS_H:
            own, naive = (
                mean(
                    e["mae"]
                    for res in picked
                    for e in res["errors"]
                    if e["label"] == label and e["lead_h"] == h
                )
                for label in ("own", "seasonal-naive")
            )
            cells.append(f"{own:.1f} / {naive:.1f}")
        out.append(f"| {year} | " + " | ".join(cells) + " |")
    return [*out, ""]


def goals(em_rows: list[dict], all_rows: list[dict]) -> list[str]:
    def captured(rows, policy):
        return [r["captured"] for r in rows if r["policy"] == policy and r["captured"] is not None]

    perfect = captured(all_rows, "forecast")
    _, own = own_goal_by_zone(em_rows)
    interruptible = captured(all_rows, "interruptible")
    misses = sum(r["misses"] for r in all_rows)
    skipped = sum(1 for r in all_rows if r["captured"] is None and r["policy"] == "forecast")

    def verdict(ok: bool) -> str:
        return "met" if ok else "**MISSED**"

    return [
        f"- forecast, perfect forecast, ≥ 95 % of the non-interruptible oracle: mean "
        f"{pct(mean(perfect))} %, min {pct(min(perfect))} % over {len(perfect)} runs — "
        f"{verdict(min(perfect) >= 0.95)}",
        f"- forecast-own (own forecaster, the 15 days of history the product asks for at "
        f"submission), ≥ 80 % averaged over zones (Electricity Maps, both years, all 9 job "
        f"shapes): {pct(own['forecast-own'])} % — {verdict(own['forecast-own'] >= 0.80)}",
        f"- forecast-own-day (holding only a provider's basic 24 h at submission), the same "
        f"goal: {pct(own['forecast-own-day'])} % — {verdict(own['forecast-own-day'] >= 0.80)}",
        f"- interruptible (perfect forecast), ≥ 90 % of the interruptible oracle: mean "
        f"{pct(mean(interruptible))} %, min {pct(min(interruptible))} % — "
        f"{verdict(min(interruptible) >= 0.90)}",
        f"- zero deadline misses: {misses} misses over every policy and run — "
        f"{verdict(misses == 0)}",
        f"- runs where the oracle saves nothing, so no share can be computed: {skipped}",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--match", default="", help="only traces whose file name contains this (quick runs)"
    )
    args = parser.parse_args()
    traces = DATA / "traces"
    em = sorted((traces / "electricitymaps").glob("*_hourly.csv"))
    dacf = sorted((traces / "dacf").glob("*_carbon_from_src_prod_forecasts_direct.csv"))
    em, dacf = ([p for p in paths if args.match in p.name] for paths in (em, dacf))
    if not em or not dacf:
        sys.exit(f"scheduling bench: no traces under {traces} (set CARBONAWARE_SHARED_DATA)")

    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        em_results = list(pool.map(run_trace, em))
        dacf_results = list(pool.map(run_trace, dacf))
    wall = time.perf_counter() - started
    jobs_one_year, one_year_s, each = time_one_year(
        traces / "electricitymaps" / "DE-LU_2022_hourly.csv"
    )

    em_rows = [row for res in em_results for row in res["rows"]]
    dacf_rows = [row for res in dacf_results for row in res["rows"]]
    lines = [
        f"### Electricity Maps: {len(em)} zone-years, hourly arrivals, direct factors, "
        f"threshold {THRESHOLD:.0f} g/kWh",
        "",
        *summary_table(em_rows, "Averaged over the zone-years"),
        f"#### Zone by zone: {MAIN[0]} h jobs, {MAIN[1]} h deadline (saving % / oracle captured %)",
        "",
        *per_zone_table(em_rows, EM_ZONE_POLICIES),
        f"### DACF (Jul–Dec 2021): {len(dacf)} regions with a real day-ahead forecast",
        "",
        *summary_table(dacf_rows, "Averaged over the regions"),
        f"#### Region by region: {MAIN[0]} h jobs, {MAIN[1]} h deadline",
        "",
        *per_zone_table(dacf_rows, DACF_ZONE_POLICIES),
        "### Forecast error (whole trace; actual vs forecast, g/kWh and %)",
        "",
        *error_table(em_results + dacf_results),
        "#### Own forecaster's error by year (mean MAE over the 16 zones, g/kWh; knobs tuned "
        "on 2021)",
        "",
        *error_by_year(em_results),
        "### Own forecaster against the goal, zone by zone (oracle captured, mean over both "
        "years and the 9 job shapes; ≥ 80 %: own / own-day)",
        "",
        *own_goal_by_zone(em_rows)[0],
        "### Goals",
        "",
        *goals(em_rows, em_rows + dacf_rows),
        "### Speed",
        "",
        f"- one year of hourly arrivals ({jobs_one_year} jobs, 4 h, 24 h deadline) on "
        f"DE-LU 2022, all {len(bt.POLICIES)} policies: {one_year_s:.2f} s; per policy: "
        + ", ".join(f"{p} {s:.2f} s" for p, s in each.items()),
        f"- whole benchmark ({len(em) + len(dacf)} traces × 9 job shapes, {args.jobs} "
        f"processes): {wall:.0f} s",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
