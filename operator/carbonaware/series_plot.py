"""A recurring job's series as a picture: one pair of bars per run, plus the intensity it saw.

Each run: what it emitted (as started, after waiting for a cleaner grid) beside what it would
have emitted had it started at its scheduled time; on a second axis the mean intensity of the
hours it ran. The same figure serves a ``CarbonAwareCronJob`` (``kubectl carbon plot``, from
``status.series``: each run's own accounting) and ``carbonctl backtest --schedule`` (per kWh
of the run's energy, on a trace's actual intensities). Headless (matplotlib's Agg backend).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from carbonaware.plotting import COLOURS, save_png

if TYPE_CHECKING:
    from pathlib import Path


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class SeriesBar:
    """One run of the series."""

    scheduled: datetime
    emitted: float  # as started
    baseline: float  # had it started at its scheduled time
    intensity: float | None  # mean g/kWh over the hours it ran


def bars_from_status(series: list[dict]) -> list[SeriesBar]:
    """The cron job's ``status.series`` entries that carry figures (failed runs without an
    accounting are left out)."""
    bars = []
    for entry in series:
        emitted, baseline = entry.get("emissionsGrams"), entry.get("baselineEmissionsGrams")
        if emitted is None or baseline is None:
            continue
        energy = entry.get("energyKWh") or 0.0
        bars.append(
            SeriesBar(
                scheduled=datetime.fromisoformat(
                    str(entry["scheduledTime"]).replace("Z", "+00:00")
                ),
                emitted=float(emitted),
                baseline=float(baseline),
                intensity=float(emitted) / energy if energy > 0 else None,
            )
        )
    return bars


def render_series(
    bars: list[SeriesBar], title: str, unit: str = "gCO2eq", path: str | Path | None = None
) -> bytes:
    """The figure as PNG bytes (written to ``path`` when given); ValueError without runs."""
    if not bars:
        raise ValueError("no finished run with an accounting to plot yet")
    x = np.arange(len(bars))
    width = 0.4
    fig, ax = plt.subplots(figsize=(min(16.0, max(8.0, 0.32 * len(bars) + 3)), 5.2), dpi=110)
    fig.subplots_adjust(left=0.08, right=0.9, top=0.86, bottom=0.2)
    ax.bar(
        x - width / 2,
        [b.baseline for b in bars],
        width,
        color=COLOURS["waiting"],
        label="at its scheduled time",
    )
    ax.bar(
        x + width / 2, [b.emitted for b in bars], width, color=COLOURS["running"], label="as run"
    )
    ax.set_ylabel(f"emissions ({unit})")
    labels = [b.scheduled.strftime("%m-%d %H:%M") for b in bars]
    stride = max(1, len(bars) // 20)
    ax.set_xticks(x[::stride], labels[::stride], rotation=45, ha="right", fontsize=8)
    seen = [(i, b.intensity) for i, b in enumerate(bars) if b.intensity is not None]
    if seen:
        right = ax.twinx()
        right.plot(
            [i for i, _ in seen],
            [v for _, v in seen],
            "o-",
            color=COLOURS["actual"],
            ms=3,
            lw=1,
            label="intensity it ran at",
        )
        right.set_ylabel("gCO2eq/kWh")
        right.set_ylim(bottom=0)
        right.legend(loc="upper right", fontsize=8)
    baseline = sum(b.baseline for b in bars)
    emitted = sum(b.emitted for b in bars)
    saved = f"{100 * (1 - emitted / baseline):.1f} %" if baseline > 0 else "n/a"
    fig.suptitle(title, fontsize=12)
    ax.set_title(
        f"{len(bars)} runs: {_amount(emitted)} {unit} emitted vs {_amount(baseline)} at the "
        f"scheduled times (saved {saved})",
        fontsize=9,
    )
    ax.legend(loc="upper left", fontsize=8)
    return save_png(fig, path)


def _amount(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
