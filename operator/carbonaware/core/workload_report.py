"""The workload's final report: the one contract between the trainer and its three readers.

``carbon-trainer`` prints one JSON object as its last stdout line and writes the same line to
its pod's termination message (``trainer/carbontrainer/report.py`` makes it). The operator
(status, log, Events), ``carbonctl run`` (log, summary) and the plot (through the log's
metadata) all read it through :func:`parse_report` / :func:`last_report`, nothing else.

The energy label is kept as the trainer wrote it: ``measured:rapl-package``,
``measured:nvml-energy-counter``, ``estimated:cpu-time×10W/core``, or parts joined by ``+``
(``measured:rapl-package+measured:nvml-energy-counter``). It counts as measured only when
every part was measured. A figure that comes without a label is used, labelled
:data:`UNLABELLED`, and counts as estimated: nothing is called measured that did not say so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Every final line of carbon-trainer has these keys (null when unknown); see report.py.
FIELDS = (
    "status",
    "exit_code",
    "accuracy",
    "loss",
    "epochs",
    "samples",
    "wall_seconds",
    "energy_kwh",
    "energy_method",
    "device",
    "checkpoint_path",
    "resumed",
)
UNLABELLED = "unlabelled"  # an energy figure reported without saying how it was obtained


@dataclass(frozen=True)
class WorkloadReport:
    """The fields the consumers use; a field missing or of the wrong kind is None."""

    status: str | None = None
    exit_code: int | None = None
    accuracy: float | None = None
    loss: float | None = None
    epochs: int | None = None
    samples: int | None = None
    wall_seconds: float | None = None
    energy_kwh: float | None = None
    energy_method: str | None = None
    device: str | None = None

    @property
    def energy_label(self) -> str | None:
        """How the reported energy was obtained (None when no energy was reported)."""
        if self.energy_kwh is None:
            return None
        return self.energy_method or UNLABELLED

    @property
    def energy_measured(self) -> bool:
        label = self.energy_label
        return label is not None and is_measured(label)


def is_measured(label: str) -> bool:
    """True when every ``+``-joined part of an energy label says ``measured``."""
    parts = [part.strip().lower() for part in label.split("+") if part.strip()]
    return bool(parts) and all(p == "measured" or p.startswith("measured:") for p in parts)


def _number(value: Any, minimum: float | None = 0.0) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        return None
    return float(value)


def _count(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number == int(number) else None


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def from_mapping(raw: dict[str, Any]) -> WorkloadReport:
    """The report from the decoded JSON object; bad fields (wrong type, negative or not
    finite numbers) are dropped, never guessed."""
    exit_code = raw.get("exit_code")
    if isinstance(exit_code, bool) or not isinstance(exit_code, int):
        exit_code = None
    return WorkloadReport(
        status=_text(raw.get("status")),
        exit_code=exit_code,
        accuracy=_number(raw.get("accuracy")),
        loss=_number(raw.get("loss"), minimum=None),
        epochs=_count(raw.get("epochs")),
        samples=_count(raw.get("samples")),
        wall_seconds=_number(raw.get("wall_seconds")),
        energy_kwh=_number(raw.get("energy_kwh")),
        energy_method=_text(raw.get("energy_method")),
        device=_text(raw.get("device")),
    )


def parse_report(text: str | None) -> WorkloadReport | None:
    """One line of JSON (a termination message, a stdout line); None when it is not one."""
    if not text or not text.strip():
        return None
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    return from_mapping(raw) if isinstance(raw, dict) else None


def last_report(lines: Iterable[str]) -> WorkloadReport | None:
    """The report on the last non-empty line of a workload's output, if that line is one."""
    last = None
    for line in lines:
        if line.strip():
            last = line
    return parse_report(last)
