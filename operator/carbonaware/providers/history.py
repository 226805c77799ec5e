"""The past the own forecaster starts from, degraded step by step as the account's plan allows.

A forecaster's profile wants two weeks of a zone's readings. Not every plan has them: free
Electricity Maps accounts have no ``past-range`` (only the last 24 h through ``/history``),
and any provider can be down at submission. So the seed is, in order, the first that works:

1. the span asked for (Electricity Maps ``past-range``, UK CI ``{from}/{to}``, WattTime
   ``historical``);
2. the last 24 hours (Electricity Maps ``/history``, UK CI ``pt24h``);
3. nothing: the forecaster learns from the readings collected since submission.

:class:`SeedHistory` says which one it got, and why it got less, in a label the CLI prints
and the operator writes to status (``forecasterHistory``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from carbonaware.core.durations import format_duration
from carbonaware.core.model import Reading
from carbonaware.providers.base import DEFAULT_HISTORY, NotInPlanError, ProviderError

REQUESTED = "requested"  # the whole span asked for
LAST_DAY = "last-24h"  # the provider's last 24 h only
SINCE_SUBMISSION = "since-submission"  # nothing from the provider


@dataclass(frozen=True)
class SeedHistory:
    """What the forecaster was seeded with: readings (oldest first), which step of the
    degradation gave them, and why the steps before it did not."""

    readings: tuple[Reading, ...]
    depth: str  # REQUESTED, LAST_DAY or SINCE_SUBMISSION
    span: timedelta  # what was asked for
    provider: str
    why_less: str = ""  # the errors that made it degrade ("" when it got what it asked)
    # True when the plan (not a passing failure) set the limit: worth keeping for long
    settled: bool = True

    @property
    def label(self) -> str:
        """One line for people: where the forecaster's past comes from, and why."""
        if self.depth == REQUESTED:
            return f"{format_duration(self.span)} of {self.provider} history"
        because = f" ({self.why_less})" if self.why_less else ""
        if self.depth == LAST_DAY:
            return f"last 24h of {self.provider} history only{because}"
        return f"readings since submission only{because}"


def seed_history(
    fetch: Callable[[timedelta], list[Reading]], span: timedelta, provider: str
) -> SeedHistory:
    """The first of span → last 24 h → nothing that ``fetch(span)`` answers.

    Only past (non-forecast) readings are kept. A NotInPlanError is the plan's answer
    (``settled``); any other ProviderError may pass, and the result says so.
    """
    reasons: list[str] = []
    settled = True
    steps = [(span, REQUESTED)] + ([(DEFAULT_HISTORY, LAST_DAY)] if span > DEFAULT_HISTORY else [])
    for asked, depth in steps:
        try:
            readings = tuple(r for r in fetch(asked) if not r.forecast)
        except ProviderError as exc:
            reasons.append(_reason(exc))
            settled = settled and isinstance(exc, NotInPlanError)
            continue
        return SeedHistory(readings, depth, span, provider, "; ".join(reasons), settled)
    return SeedHistory((), SINCE_SUBMISSION, span, provider, "; ".join(reasons), settled)


def _reason(error: ProviderError) -> str:
    """Short: what the error means where the client could tell, else its own words; without
    the provider/zone prefix the label already has."""
    words = error.meaning or error.detail
    return words + (f" (HTTP {error.status})" if error.status is not None else "")
