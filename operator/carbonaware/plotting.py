"""``carbon_plot.png``: a job's intensity log as a picture a person can read at a glance.

Intensity over time (a step line: each reading holds until the next), the threshold, the latest
forecast (dashed), the waiting and running spans shaded, start/end and deadline markers, and a
caption with energy, emissions, the baseline and the saving (or "pending" while it waits).

Everything it shows comes from the log: readings, forecast, and metadata keys written by
``carbonctl run`` and the operator — ``zone``, ``strategy``, ``threshold``, ``submitted_at``,
``started_at``, ``completed_at``, ``deadline``, ``run_segments`` (``start/end;start/end`` for
interruptible jobs), ``status``, and the :func:`carbonaware.core.accounting.report_metadata`
keys. Headless: matplotlib's Agg backend, no display needed.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import pandas as pd

from carbonaware.core.durations import DurationError, parse_duration
from carbonaware.core.intensity_log import IntensityLog
from carbonaware.core.log_metadata import LogKey
from carbonaware.core.model import Reading

COLOURS = {
    "actual": "#1b4965",
    "forecast": "#5fa8d3",
    "threshold": "#c1121f",
    "waiting": "#f4a259",
    "running": "#2a9d8f",
    "deadline": "#6c757d",
}


def render_plot(log: IntensityLog, path: str | Path | None = None) -> bytes:
    """Render the log as a PNG; write it to ``path`` when given. Returns the PNG bytes."""
    meta = log.metadata
    actual = _frame(log.readings)
    forecast = _frame(log.forecast)
    submitted = _time(meta.get(LogKey.SUBMITTED_AT))
    deadline = _time(meta.get(LogKey.DEADLINE))
    segments = run_segments(meta)
    # the forecast strategy ignores the threshold: drawing it would suggest otherwise
    threshold = (
        _number(meta.get(LogKey.THRESHOLD)) if meta.get(LogKey.STRATEGY) != "forecast" else None
    )

    fig, ax = plt.subplots(figsize=(11, 6.4), dpi=110)
    fig.subplots_adjust(left=0.075, right=0.98, top=0.89, bottom=0.31)
    step = _step(actual)
    last_time = _last_time(actual, segments, submitted, _time(meta.get(LogKey.UPDATED_AT)), step)
    forecast = _relevant_forecast(forecast, deadline, meta.get(LogKey.EXPECTED_DURATION), last_time)

    if submitted is not None:
        wait_end = segments[0][0] if segments else last_time
        if wait_end is not None and wait_end > submitted:
            ax.axvspan(
                submitted, wait_end, color=COLOURS["waiting"], alpha=0.18, lw=0, label="waiting"
            )
    for index, (start, end) in enumerate(segments):
        ax.axvspan(
            start,
            end or last_time,
            color=COLOURS["running"],
            alpha=0.22,
            lw=0,
            label="running" if index == 0 else None,
        )

    if not actual.empty:
        times = list(actual["timestamp"])
        values = list(actual["intensity"])
        # the last reading holds until the end of what is shown
        if last_time is not None and last_time > times[-1]:
            times.append(last_time)
            values.append(values[-1])
        ax.step(
            times,
            values,
            where="post",
            color=COLOURS["actual"],
            lw=2,
            label="carbon intensity (actual)",
        )
        estimated = actual[actual["estimated"]]
        if not estimated.empty:
            ax.plot(
                estimated["timestamp"],
                estimated["intensity"],
                "o",
                ms=3,
                color=COLOURS["actual"],
                mfc="white",
                label="estimated by provider",
            )
    if not forecast.empty:
        times = list(forecast["timestamp"])
        values = list(forecast["intensity"])
        times.append(times[-1] + _step(forecast))  # the last forecast point holds one step
        values.append(values[-1])
        source = forecast["provider"].iloc[0] or "provider"
        ax.step(
            times,
            values,
            where="post",
            color=COLOURS["forecast"],
            lw=1.6,
            ls="--",
            label=f"forecast ({source})",
        )

    if threshold is not None:
        ax.axhline(
            threshold,
            color=COLOURS["threshold"],
            lw=1.2,
            ls=":",
            label=f"threshold {threshold:g} g/kWh",
        )
    top = _top(actual, forecast, threshold)
    ax.set_ylim(0, top)
    for start, end in segments:
        ax.axvline(start, color=COLOURS["running"], lw=1.5)
        ax.annotate(
            "start",
            (start, top),
            xytext=(3, -12),
            textcoords="offset points",
            color=COLOURS["running"],
            fontsize=9,
            fontweight="bold",
        )
        if end is not None:
            ax.axvline(end, color=COLOURS["running"], lw=1.5, ls="-.")
            ax.annotate(
                "end",
                (end, top),
                xytext=(3, -24),
                textcoords="offset points",
                color=COLOURS["running"],
                fontsize=9,
                fontweight="bold",
            )
    if deadline is not None:
        ax.axvline(deadline, color=COLOURS["deadline"], lw=1.2, ls="--", label="start deadline")
        ax.annotate(
            "deadline",
            (deadline, top),
            xytext=(3, -36),
            textcoords="offset points",
            color=COLOURS["deadline"],
            fontsize=9,
        )
    planned = _time(meta.get(LogKey.PLANNED_START))
    if planned is not None and not segments:
        ax.axvline(planned, color=COLOURS["running"], lw=1.5, ls=":", label="planned start")
        ax.annotate(
            "planned start",
            (planned, top),
            xytext=(3, -12),
            textcoords="offset points",
            color=COLOURS["running"],
            fontsize=9,
        )
    if submitted is not None:
        ax.annotate(
            "submitted",
            (submitted, top),
            xytext=(3, -12),
            textcoords="offset points",
            color="#9c6644",
            fontsize=9,
        )

    _fit_x(ax, submitted, deadline, last_time, forecast)
    locator = mdates.AutoDateLocator(minticks=5, maxticks=12)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_ylabel("gCO₂eq/kWh" + _basis_suffix(meta, actual))
    ax.set_xlabel("time (UTC)")
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(
            loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=4, frameon=False, fontsize=9
        )
    fig.suptitle(_title(meta), x=0.075, ha="left", fontsize=13, fontweight="bold")
    ax.set_title(_subtitle(meta), loc="left", fontsize=9.5, color="#444444")
    fig.text(
        0.075,
        0.135,
        caption_text(meta),
        fontsize=10,
        va="top",
        ha="left",
        family="DejaVu Sans",
        color="#222222",
    )
    if actual.empty and forecast.empty:
        ax.text(
            0.5,
            0.5,
            "no readings yet",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=14,
            color="#888888",
        )

    return save_png(fig, path)


def save_png(fig, path: str | Path | None) -> bytes:
    """The figure as PNG bytes, written to ``path`` when given; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    png = buffer.getvalue()
    if path is not None:
        Path(path).write_bytes(png)
    return png


def _frame(readings: list[Reading]) -> pd.DataFrame:
    columns = ["timestamp", "intensity", "estimated", "provider"]
    if not readings:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(
        {
            "timestamp": [r.timestamp for r in readings],
            "intensity": [r.intensity for r in readings],
            "estimated": [r.estimated for r in readings],
            "provider": [r.provider for r in readings],
        }
    )
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame.sort_values("timestamp", ignore_index=True)


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return pd.Timestamp(text).tz_convert("UTC").to_pydatetime()
    except (ValueError, TypeError):
        return None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def run_segments(meta: dict[str, str]) -> list[tuple[datetime, datetime | None]]:
    """Run segments: ``run_segments`` when present, else started_at..completed_at."""
    spans = []
    if meta.get(LogKey.RUN_SEGMENTS):
        for part in meta[LogKey.RUN_SEGMENTS].split(";"):
            start, _, end = part.partition("/")
            if _time(start) is not None:
                spans.append((_time(start), _time(end)))
    elif _time(meta.get(LogKey.STARTED_AT)) is not None:
        spans.append((_time(meta[LogKey.STARTED_AT]), _time(meta.get(LogKey.COMPLETED_AT))))
    return spans


def _step(frame: pd.DataFrame) -> pd.Timedelta:
    """Typical spacing of the readings (one hour when there are too few to tell)."""
    if len(frame) < 2:
        return pd.Timedelta(hours=1)
    return frame["timestamp"].diff().dropna().median()


def _last_time(actual, segments, submitted, updated, step) -> datetime | None:
    """Where the picture ends: the job's end, the log's last update, or one step past the
    last reading (it holds until the next one)."""
    candidates = [t for _, t in segments if t is not None]
    if updated is not None:
        candidates.append(updated)
    if not actual.empty:
        candidates.append((actual["timestamp"].iloc[-1] + step).to_pydatetime())
    if not candidates and submitted is not None:
        candidates.append(submitted)
    return max(candidates) if candidates else None


def _relevant_forecast(forecast, deadline, expected_duration, last_time) -> pd.DataFrame:
    """The part of the forecast that can matter: up to the end of a window starting at the
    deadline (the last start the policy may pick); days beyond would dwarf the job."""
    if forecast.empty or deadline is None:
        return forecast
    try:
        window = parse_duration(expected_duration) if expected_duration else timedelta(0)
    except DurationError:
        window = timedelta(0)
    end = max(deadline + window, last_time or deadline)
    return forecast[forecast["timestamp"] < pd.Timestamp(end)].reset_index(drop=True)


def _fit_x(ax, submitted, deadline, last_time, forecast) -> None:
    """Show everything from submission to the later of the deadline and the data, with room
    on the right for the marker labels."""
    times = [t for t in (submitted, deadline, last_time) if t is not None]
    if not forecast.empty:
        times.append((forecast["timestamp"].iloc[-1] + _step(forecast)).to_pydatetime())
    if len(times) < 2:
        return
    left, right = min(times), max(times)
    pad = (right - left) * 0.04
    ax.set_xlim(left - pad, right + pad * 2)


def _top(actual, forecast, threshold) -> float:
    values = [0.0]
    for frame in (actual, forecast):
        if not frame.empty:
            values.append(float(frame["intensity"].max()))
    if threshold is not None:
        values.append(threshold)
    return max(values) * 1.18 or 1.0


def _basis_suffix(meta: dict[str, str], actual: pd.DataFrame) -> str:
    basis = meta.get(LogKey.BASIS)
    return f" ({basis} factors)" if basis else ""


def _title(meta: dict[str, str]) -> str:
    zone = meta.get(LogKey.ZONE, "?")
    strategy = meta.get(LogKey.STRATEGY)
    job = meta.get(LogKey.JOB)
    head = f"{job} — " if job else ""
    return f"{head}Carbon intensity, zone {zone}" + (f" · {strategy} strategy" if strategy else "")


def _subtitle(meta: dict[str, str]) -> str:
    parts = []
    if meta.get(LogKey.STATUS):
        parts.append(meta[LogKey.STATUS])
    if meta.get(LogKey.DECISION):
        parts.append(f"decision: {meta[LogKey.DECISION]}")
    if meta.get(LogKey.DOWNSAMPLED_BEFORE):
        parts.append(
            f"readings before {meta[LogKey.DOWNSAMPLED_BEFORE]} are "
            f"{meta.get(LogKey.DOWNSAMPLED_TO, '')} means"
        )
    return " · ".join(parts)


def caption_text(meta: dict[str, str]) -> str:
    if LogKey.ENERGY_KWH not in meta:
        if meta.get(LogKey.STATUS) == "interrupted":
            return "Energy, emissions and saving: none (interrupted before the job started)"
        return "Energy, emissions and saving: pending (the job has not run yet)"
    energy = float(meta[LogKey.ENERGY_KWH])
    lines = [
        f"Energy {_kwh(energy)} ({meta.get(LogKey.ENERGY_METHOD, '?')})"
        f"   ·   Emissions {_grams(float(meta[LogKey.EMISSIONS_G]))} CO₂eq"
        f" ({meta.get(LogKey.EMISSIONS_METHOD, '?')}, {meta.get(LogKey.BASIS, '?')} factors)"
    ]
    if LogKey.BASELINE_G in meta:
        saved = float(meta[LogKey.SAVED_G])
        percent = (
            f" ({float(meta[LogKey.SAVED_PERCENT]):.0f} %)"
            if meta.get(LogKey.SAVED_PERCENT)
            else ""
        )
        word = "Saved" if saved >= 0 else "Extra"
        lines.append(
            f"Had it started at submission: {_grams(float(meta[LogKey.BASELINE_G]))}"
            f"   ·   {word} {_grams(abs(saved))}{percent}"
            f"   —   {meta.get(LogKey.SAVINGS_METHOD, '')}"
        )
    if meta.get(LogKey.ENERGY_DETAIL):
        lines.append(meta[LogKey.ENERGY_DETAIL])
    return "\n".join(lines)


def _kwh(value: float) -> str:
    return f"{value * 1000:.3g} Wh" if value < 1 else f"{value:.3g} kWh"


def _grams(value: float) -> str:
    return f"{value / 1000:.3g} kg" if value >= 1000 else f"{value:.3g} g"
