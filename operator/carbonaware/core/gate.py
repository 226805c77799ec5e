"""The carbon gate for Kueue Workloads: what state and message its AdmissionCheck says.

Pure functions: the caller brings the policy's decision (:func:`carbonaware.core.policy.decide`),
the clock, and whether Kueue has reserved quota for the Workload.

Quota: Kueue reserves ClusterQueue quota before it asks the checks, and a Workload that
waits for a cleaner grid must not sit on that quota for hours. While the decision is *wait*
the gate therefore keeps the Workload inactive (``spec.active: false``, the switch Kueue
offers for exactly this): Kueue releases its quota and leaves it out of the queue, the Job
stays suspended, and the check stays ``Pending`` with the plan as its message. When the
decision is *run* (a clean grid, the chosen window, or the deadline) the check says
``Ready`` and the gate activates the Workload again: Kueue queues it, reserves quota and,
every check being Ready, admits it at once.

(The check's ``Retry`` state with ``requeueAfterSeconds`` does not do this in Kueue v0.17:
the Workload keeps its quota until the requeue time has passed, and is evicted only then.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from carbonaware.core.durations import DurationError, parse_duration
from carbonaware.core.policy import Decision

CONTROLLER_NAME = "carbonaware.io/carbon-gate"
# Workload annotations a user may set to override the policy for one Workload.
EXPECTED_DURATION_ANNOTATION = "carbonaware.io/expected-duration"
MAX_DELAY_ANNOTATION = "carbonaware.io/max-delay"
# Kueue's AdmissionCheckState.message holds at most this many characters.
MESSAGE_LIMIT = 32768
MESSAGE_PREFIX = "carbon gate"  # every message the gate writes starts so
# A waiting check's "deadline in ..." is rewritten this often when nothing else changed.
COUNTDOWN_REFRESH_SECONDS = 600.0


@dataclass(frozen=True)
class CheckUpdate:
    """What the gate writes: the admission check's state and message, and whether the
    Workload may be active (queued for quota) now."""

    state: str  # "Pending" | "Ready" | "Rejected"
    message: str

    @property
    def active(self) -> bool:
        return self.state == "Ready"


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


def check_update(decision: Decision) -> CheckUpdate:
    """The check state for ``decision`` (see the module docstring)."""
    if decision.run:
        return CheckUpdate("Ready", _fit(f"{MESSAGE_PREFIX} open: {decision.reason}"))
    return CheckUpdate("Pending", _fit(f"{MESSAGE_PREFIX}: {decision.reason}"))


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
