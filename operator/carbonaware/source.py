"""Where readings come from and on which clock: one abstraction for ``carbonctl`` and the
operator.

A :class:`Source` is a built provider, the zone it is asked about, and, for a replayed trace,
the replay whose clock every time of the run is on (trace time, ``speed`` times faster than
wall time). :func:`replay_options` holds the replay rules both sides apply: the trace
defaults to the demo trace shipped in the package, and no zone is passed, because a trace
answers for the zone it holds (asking a GB trace for DE fails, it is never relabelled).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carbonaware.core.model import utc
from carbonaware.providers.base import Provider

if TYPE_CHECKING:  # pandas-backed: imported only when a trace is replayed
    from carbonaware.providers.replay import ReplayProvider

DEMO_TRACE = "demo_trace.csv"


def demo_trace_path() -> Path:
    """The small synthetic trace the project ships (replayed when no trace is named)."""
    return Path(str(resources.files("carbonaware") / "data" / DEMO_TRACE))


def replay_options(
    trace: str | None,
    speed: float | None,
    start: str | None,
    default_trace: str | None = None,
    default_speed: float = 1.0,
) -> dict[str, Any]:
    """A replay provider's settings (no zone: the trace's own zone decides)."""
    return {
        "trace": trace or default_trace or str(demo_trace_path()),
        "speed": speed or default_speed,
        "start": start,
    }


@dataclass
class Source:
    """A provider, the zone asked about, and the replay whose clock it runs on (if any)."""

    provider: Provider
    zone: str
    replay: ReplayProvider | None = None

    @property
    def speed(self) -> float:
        """How much faster than wall time this source's clock runs."""
        return self.replay.speed if self.replay is not None else 1.0

    @property
    def clock(self) -> str:
        return "replay" if self.replay is not None else "wall"

    def now(self) -> datetime:
        return self.replay.now() if self.replay is not None else datetime.now(UTC)

    def to_job_time(self, wall: datetime) -> datetime:
        """A wall-clock instant on this source's clock."""
        if self.replay is None:
            return utc(wall)
        elapsed = (datetime.now(UTC) - utc(wall)).total_seconds()
        return self.now() - timedelta(seconds=elapsed * self.replay.speed)

    def to_wall(self, span: timedelta) -> timedelta:
        """A span of this source's clock in wall time."""
        return span / self.replay.speed if self.replay is not None else span
