"""carbon_plot.png: a valid, sensibly sized PNG that shows the spans and the caption."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import matplotlib.colors as mcolors
import matplotlib.image as mimage
import numpy as np
from carbonaware.core.accounting import account, estimate_energy, report_metadata
from carbonaware.core.intensity_log import IntensityLog
from carbonaware.core.model import Reading
from carbonaware.plotting import COLOURS, caption_text, render_plot

T0 = datetime(2022, 7, 23, 3, tzinfo=UTC)
HOUR = timedelta(hours=1)
VALUES = [257, 251, 238, 213, 197, 177, 147, 124, 108, 99, 91, 97, 116]


def waiting_log() -> IntensityLog:
    log = IntensityLog(
        {
            "zone": "GB",
            "strategy": "threshold",
            "threshold": 150,
            "submitted_at": T0,
            "deadline": T0 + 12 * HOUR,
            "status": "waiting",
        }
    )
    for h in range(3):
        log.append(Reading("GB", T0 + h * HOUR, VALUES[h], provider="replay"))
    log.set_forecast(
        Reading("GB", T0 + h * HOUR, v, forecast=True, provider="replay")
        for h, v in enumerate(VALUES)
        if h >= 3
    )
    return log


def completed_log() -> IntensityLog:
    log = waiting_log()
    for h in range(3, 11):
        log.append(Reading("GB", T0 + h * HOUR, VALUES[h], provider="replay"))
    start, end = T0 + 6 * HOUR, T0 + 9.5 * HOUR
    report = account(estimate_energy(300, end - start), [(start, end)], T0, log.readings)
    log.update({"started_at": start, "completed_at": end, "status": "completed"})
    log.update(report_metadata(report))
    return log


def pixels_near(png: bytes, colour: str, alpha: float) -> int:
    """How many pixels show ``colour`` blended over white at ``alpha`` (a shaded span)."""
    image = mimage.imread(io.BytesIO(png), format="png")[..., :3]
    blended = 1 - alpha + alpha * np.array(mcolors.to_rgb(colour))
    return int((np.abs(image - blended).max(axis=-1) < 0.02).sum())


def test_completed_plot_is_a_png_with_waiting_and_running_spans(tmp_path):
    out = tmp_path / "carbon_plot.png"
    png = render_plot(completed_log(), out)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and out.read_bytes() == png
    assert 20_000 < len(png) < 1_000_000
    height, width = mimage.imread(io.BytesIO(png), format="png").shape[:2]
    assert (width, height) == (1210, 704)
    assert pixels_near(png, COLOURS["waiting"], 0.18) > 10_000
    assert pixels_near(png, COLOURS["running"], 0.22) > 10_000


def test_waiting_plot_has_no_running_span_and_caption_says_pending():
    log = waiting_log()
    png = render_plot(log)
    assert pixels_near(png, COLOURS["waiting"], 0.18) > 1_000
    assert pixels_near(png, COLOURS["running"], 0.22) == 0
    assert "pending" in caption_text(log.metadata)


def test_caption_labels_energy_method_baseline_and_saving():
    text = caption_text(completed_log().metadata)
    assert "(estimated)" in text and "integrated" in text
    assert "Had it started at submission" in text and "Saved" in text
    assert "from actual logged readings" in text


def test_empty_log_still_renders():
    assert render_plot(IntensityLog({"zone": "DE"})).startswith(b"\x89PNG")
