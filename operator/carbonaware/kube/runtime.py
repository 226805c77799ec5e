"""The operator's shared state (settings, API, provider cache, sources, bells, the start
wave, the handler threads) and what it remembers about each job between reconciles."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from carbonaware.core.intensity_log import IntensityLog
from carbonaware.kube.api import KubeApi
from carbonaware.kube.models import CarbonAwareJobSpec
from carbonaware.kube.pod_usage import UsageTracker
from carbonaware.kube.settings import OperatorSettings
from carbonaware.kube.sources import SharedSources
from carbonaware.kube.wakeups import StartWave, UrgentFirstExecutor, ZoneBells
from carbonaware.providers.cache import ProviderCache
from carbonaware.source import Source


@dataclass
class Runtime:
    settings: OperatorSettings
    kube: KubeApi
    cache: ProviderCache
    sources: SharedSources = field(default_factory=SharedSources)
    bells: ZoneBells = field(default_factory=ZoneBells)  # the cache rings them
    wave: StartWave = field(default_factory=StartWave)
    _executor: UrgentFirstExecutor | None = None

    async def in_thread(self, call: Callable[[], Any], urgent: bool = False) -> Any:
        """``call()`` on one of the operator's ``workers`` handler threads (the kubernetes
        client blocks), with the caller's context (kopf's logging needs it); ``urgent``
        work goes before other work already queued."""
        if self._executor is None:
            self._executor = UrgentFirstExecutor(self.settings.workers)
        context = contextvars.copy_context()
        return await asyncio.wrap_future(self._executor.submit(lambda: context.run(call), urgent))


@dataclass
class JobMemory:
    """What the operator remembers about one job between ticks (lost on restart: that is
    fine, everything here can be re-read)."""

    generation: int | None = None
    spec: CarbonAwareJobSpec | None = None
    source: Source | None = None
    log: IntensityLog | None = None
    log_version: str | None = None
    log_written: str = ""
    log_stored_metadata: dict[str, Any] = field(default_factory=dict)  # others' labels, notes
    next_poll: float = 0.0
    failures: int = 0
    adoption_checked: bool = False
    # Interruptible jobs: the reading the last run/pause change was decided on. One change per
    # reading, as the backtest decides once per step: within an hour the rounding of work and
    # time left to whole steps would otherwise pause a job for minutes (a SIGTERM, a
    # checkpoint and a new pod each time).
    changed_at_reading: datetime | None = None
    # When the decision's text was last written (monotonic; 0: never, as after a restart).
    decision_written_at: float = 0.0
    # When the last reconcile ended (event-loop clock) and the resourceVersion it saw: the
    # next one waits for the rest of the interval, or for the zone's bell.
    last_tick: float | None = None
    rings_seen: int = 0
    seen_version: str | None = None
    patched: bool = False
    placement_sources: list[Source] | None = None  # placement: one per spec.placements
    # Energy (issue #22, kube/job_energy.py): the Job's pods and their last CPU-time samples.
    pod_usage: UsageTracker = field(default_factory=UsageTracker)
