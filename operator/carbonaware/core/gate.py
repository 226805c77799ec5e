"""The carbon gate for Kueue Workloads: what state and message its AdmissionCheck says.

Pure functions: the caller brings the policy's decision (:func:`carbonaware.core.policy.decide`),
the clock, and whether Kueue has reserved quota for the Workload.

Quota: Kueue reserves ClusterQueue quota before it asks the checks. A Workload that waits
for a cleaner grid must not sit on that quota for hours, so while the decision is *wait*:

- with quota reserved, the check says ``Retry`` with ``requeueAfterSeconds``: Kueue evicts
  the Workload (the quota is released at once) and queues it again after that many seconds,
  when the gate looks again;
- without quota, the check stays ``Pending`` and only its message changes (the plan).

When the decision is *run* (a clean grid, the chosen window, or the deadline) the check says
``Ready``, with or without quota: Kueue admits the Workload as soon as it holds quota.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from carbonaware.core.durations import DurationError, parse_duration
from carbonaware.core.model import utc
from carbonaware.core.policy import Decision

CONTROLLER_NAME = "carbonaware.io/carbon-gate"
# Workload annotations a user may set to override the policy for one Workload.
EXPECTED_DURATION_ANNOTATION = "carbonaware.io/expected-duration"
MAX_DELAY_ANNOTATION = "carbonaware.io/max-delay"
# Kueue's AdmissionCheckState.message holds at most this many characters.
MESSAGE_LIMIT = 32768
MIN_REQUEUE_SECONDS = 1
MESSAGE_PREFIX = "carbon gate"  # every message the gate writes starts so
# A waiting check's "deadline in ..." is rewritten this often when nothing else changed.
COUNTDOWN_REFRESH_SECONDS = 600.0


@dataclass(frozen=True)
class CheckUpdate:
    """What the gate writes into the Workload's admission check state."""

    state: str  # "Pending" | "Ready" | "Retry"
    message: str
    requeue_after_seconds: int | None = None


@dataclass(frozen=True)
class Overrides:
    expected_duration: timedelta | None = None
    max_delay: timedelta | None = None


class OverrideError(ValueError):
    """An annotation the gate cannot read; the message names it."""


def parse_overrides(annotations: dict[str, str] | None) -> Overrides:
    """The Workload's overrides of expected duration and maximum delay (Go-style durations)."""
    found: dict[str, timedelta] = {}
    for key, field in (
        (EXPECTED_DURATION_ANNOTATION, "expected_duration"),
        (MAX_DELAY_ANNOTATION, "max_delay"),
    ):
        text = (annotations or {}).get(key)
        if text is None:
            continue
        try:
            value = parse_duration(text)
        except DurationError as exc:
            raise OverrideError(f"annotation {key}: {exc}") from None
        if value < timedelta(0) or (field == "expected_duration" and value == timedelta(0)):
            raise OverrideError(f"annotation {key}: must be positive, got {text!r}")
        found[field] = value
    return Overrides(**found)


def check_update(
    decision: Decision, now: datetime, poll: timedelta, quota_reserved: bool
) -> CheckUpdate:
    """The check state for ``decision`` (see the module docstring)."""
    if decision.run:
        return CheckUpdate("Ready", _fit(f"{MESSAGE_PREFIX} open: {decision.reason}"))
    message = _fit(f"{MESSAGE_PREFIX}: {decision.reason}")
    if not quota_reserved:
        return CheckUpdate("Pending", message)
    return CheckUpdate("Retry", message, requeue_after(decision, now, poll))


def requeue_after(decision: Decision, now: datetime, poll: timedelta) -> int:
    """Seconds until the gate must look again: the next poll, the planned start or the
    deadline, whichever comes first (at least MIN_REQUEUE_SECONDS)."""
    now = utc(now)
    candidates = [now + poll, utc(decision.deadline)]
    if decision.planned_start is not None:
        candidates.append(utc(decision.planned_start))
    seconds = (min(candidates) - now).total_seconds()
    return max(MIN_REQUEUE_SECONDS, math.ceil(seconds))


def needs_write(
    current: dict | None, update: CheckUpdate, same_reading: bool, since_written_s: float
) -> bool:
    """Whether the stored check state differs enough from ``update`` to write it.

    A new state always; a new message only when it rests on a new reading, or when the
    stored one is older than COUNTDOWN_REFRESH_SECONDS (its "deadline in ..." moves every
    minute, and a thousand waiting Workloads must not be patched each minute for it)."""
    if current is None or current.get("state") != update.state:
        return True
    if not str(current.get("message") or "").startswith(MESSAGE_PREFIX):
        return True  # Kueue's own text (e.g. "Reset to Pending after eviction"): ours instead
    if current.get("message") == update.message:
        return False
    return not same_reading or since_written_s >= COUNTDOWN_REFRESH_SECONDS


def _fit(message: str) -> str:
    return message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 1] + "…"
