#!/usr/bin/env python3
"""Generate operator/carbonaware/data/demo_trace.csv: a SYNTHETIC carbon-intensity trace.

The project may not ship the real traces in ../shared/data, so ``make demo`` replays this one.
It is made up — labelled so in every row (zone ``SYNTHETIC``) — but shaped like a real grid
with wind and solar (loosely modelled on GB's 2022 direct intensity, 7–297 g/kWh): a daily cycle
with an overnight trough, a midday solar dip and an early-evening peak, lower weekends, and
slow "weather" swings (an AR(1) process, as wind output drifts over days). Hourly, 14 days from
2024-03-04 00:00 UTC, seeded so the file is reproducible:

    .venv/bin/python hack/make_demo_trace.py            # rewrites the file
    .venv/bin/python hack/make_demo_trace.py --check    # fails if the file is out of date

To replay real data instead, point ``carbonctl run --trace`` at an Electricity Maps CSV export.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "operator" / "carbonaware" / "data" / "demo_trace.csv"
START = "2024-03-04T00:00:00Z"  # a Monday
DAYS = 14
SEED = 2024


def synthetic_trace(days: int = DAYS, seed: int = SEED) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    times = pd.date_range(START, periods=days * 24, freq="h")
    hour = times.hour.to_numpy() + times.minute.to_numpy() / 60
    # daily shape: evening peak (18:00), overnight trough (03:00), solar dip around 13:00
    daily = (
        55 * np.cos(2 * np.pi * (hour - 18) / 24)
        + 20 * np.cos(2 * np.pi * (hour - 9) / 12)
        - 30 * np.exp(-(((hour - 13) / 2.5) ** 2))
    )
    weekend = np.where(times.day_of_week.to_numpy() >= 5, -25.0, 0.0)
    weather = np.zeros(len(times))  # wind: slow swings over days
    for i in range(1, len(times)):
        weather[i] = 0.97 * weather[i - 1] + rng.normal(0, 9)
    noise = rng.normal(0, 4, len(times))
    intensity = np.clip(175 + daily + weekend + weather + noise, 20, None)
    return pd.DataFrame(
        {
            "timestamp": times.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "intensity": np.round(intensity, 1),
            "zone": "SYNTHETIC",
            "basis": "direct",
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args()
    text = synthetic_trace().to_csv(index=False, lineterminator="\n")
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if current != text:
            print(f"{OUT} is out of date: run hack/make_demo_trace.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT} ({len(text)} bytes, {text.count(chr(10)) - 1} hours, SYNTHETIC)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
