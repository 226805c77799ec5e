"""Prometheus metrics, named per Prometheus conventions (docs/monitoring.md lists them all).

Base units: grams (mass), joules (energy), seconds; counters end in ``_total``. The one
exception is grid intensity, in gCO2eq/kWh as every provider publishes it.

- Grid and provider metrics come from the job handlers: ``observe_reading`` per reading, and
  ``MeteredProvider`` below the shared cache, so ``carbonaware_provider_requests_total`` is
  requests actually sent, not lookups.
- Per-job counters (``namespace`` and ``zone`` labels, for charge-back) come from what each
  CarbonAwareJob's status says, seen on the watch (``observe_job``, a kopf event handler
  added by ``register``): a job is counted when its status first shows a start, an outcome or
  its accounting, so a status the operator wrote counts once, whoever wrote it.
"""

from __future__ import annotations

import platform
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from carbonaware import __version__
from carbonaware.core.model import Reading
from carbonaware.kube.models import PHASES
from carbonaware.providers.base import DEFAULT_HISTORY, Provider, ProviderError

JOULES_PER_KWH = 3.6e6
JOB_LABELS = ["namespace", "zone"]

BUILD_INFO = Gauge(
    "carbonaware_build_info",
    "Always 1; the operator's version and Python version as labels",
    ["version", "python_version"],
)
INTENSITY = Gauge(
    "carbonaware_grid_intensity_grams_per_kwh",
    "Latest grid carbon intensity seen per zone (gCO2eq/kWh, as providers publish it)",
    ["zone", "provider"],
)
LAST_POLL = Gauge(
    "carbonaware_last_poll_timestamp_seconds",
    "Unix time the operator last polled the grid for a job (a reading or a provider request)",
)
JOBS = Gauge("carbonaware_jobs", "CarbonAwareJobs this operator follows, by phase", ["phase"])
STARTED = Counter(
    "carbonaware_jobs_started_total",
    "Jobs started, by trigger: 'grid' (clean enough or the planned window) or 'deadline'",
    [*JOB_LABELS, "trigger"],
)
FINISHED = Counter(
    "carbonaware_jobs_finished_total",
    "Jobs finished, by phase (Succeeded, Failed)",
    [*JOB_LABELS, "phase"],
)
EMISSIONS = Counter(
    "carbonaware_emissions_grams_total",
    "gCO2eq emitted by finished jobs (their status.emissionsGrams)",
    JOB_LABELS,
)
SAVED = Counter(
    "carbonaware_saved_grams_total",
    "gCO2eq saved by finished jobs vs starting at submission (jobs that saved)",
    JOB_LABELS,
)
EXCESS = Counter(
    "carbonaware_excess_grams_total",
    "gCO2eq emitted beyond starting at submission (jobs whose wait cost carbon)",
    JOB_LABELS,
)
ENERGY = Counter(
    "carbonaware_energy_joules_total",
    "Facility energy of finished jobs (J; 1 kWh = 3.6 MJ)",
    JOB_LABELS,
)
REQUESTS = Counter(
    "carbonaware_provider_requests_total",
    "Requests sent to carbon-intensity providers",
    ["provider", "kind"],
)
ERRORS = Counter(
    "carbonaware_provider_errors_total",
    "Failed provider requests, by error type",
    ["provider", "kind", "error"],
)
CONSECUTIVE_FAILURES = Gauge(
    "carbonaware_provider_consecutive_failures",
    "Provider requests failed in a row (0 after a success)",
    ["provider"],
)
LATENCY = Histogram(
    "carbonaware_provider_request_duration_seconds",
    "Provider request latency",
    ["provider", "kind"],
)
BUILD_INFO.labels(version=__version__, python_version=platform.python_version()).set(1)

_phases: dict[str, str] = {}
_phases_lock = threading.Lock()


def serve(port: int) -> None:
    if port:
        start_http_server(port)


def observe_reading(reading: Reading) -> None:
    INTENSITY.labels(zone=reading.zone, provider=reading.provider or "unknown").set(
        reading.intensity
    )
    LAST_POLL.set_to_current_time()


def set_phase(uid: str, phase: str | None) -> None:
    """Record a job's phase (None: forget it) and refresh the per-phase gauge."""
    with _phases_lock:
        if phase is None:
            _phases.pop(uid, None)
        else:
            _phases[uid] = phase
        counts = {p: 0 for p in PHASES}
        for value in _phases.values():
            counts[value] = counts.get(value, 0) + 1
    for p, count in counts.items():
        JOBS.labels(phase=p).set(count)


# --- per-job counters from the status the operator published ---------------------------


@dataclass(frozen=True)
class JobCounts:
    """What one status change adds to the per-job counters (pure; see ``job_counts``)."""

    started: str | None = None  # the trigger: "grid" or "deadline"
    finished: str | None = None  # the phase: "Succeeded" or "Failed"
    emissions_g: float | None = None
    saved_g: float | None = None
    energy_j: float | None = None


TERMINAL = ("Succeeded", "Failed")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def job_counts(before: dict[str, Any] | None, after: dict[str, Any]) -> JobCounts:
    """What changed between two statuses of one job. ``before`` None: the first status this
    process sees; it only sets the baseline (a restarted operator does not count again what
    its predecessor counted)."""
    if before is None:
        return JobCounts()

    def new(key: str) -> bool:
        return after.get(key) is not None and before.get(key) is None

    started = None
    if new("startedAt"):
        deadline = after.get("deadline")
        late = deadline is not None and _parse(after["startedAt"]) >= _parse(deadline)
        started = "deadline" if late else "grid"
    phase = after.get("phase")
    finished = phase if phase in TERMINAL and before.get("phase") != phase else None
    saved = after.get("savedGrams") if new("savedGrams") else None
    energy = after.get("energyKWh") if new("energyKWh") else None
    return JobCounts(
        started=started,
        finished=finished,
        emissions_g=after.get("emissionsGrams") if new("emissionsGrams") else None,
        saved_g=saved,
        energy_j=None if energy is None else float(energy) * JOULES_PER_KWH,
    )


def count_job(namespace: str, zone: str, counts: JobCounts) -> None:
    labels = {"namespace": namespace, "zone": zone}
    if counts.started:
        STARTED.labels(**labels, trigger=counts.started).inc()
    if counts.finished:
        FINISHED.labels(**labels, phase=counts.finished).inc()
    if counts.emissions_g is not None:
        EMISSIONS.labels(**labels).inc(max(counts.emissions_g, 0.0))
    if counts.saved_g is not None:
        # A Counter cannot go down: a negative saving is counted as excess. Both series
        # appear at once, so a dashboard's sum of either has data from the first job.
        SAVED.labels(**labels).inc(max(counts.saved_g, 0.0))
        EXCESS.labels(**labels).inc(max(-counts.saved_g, 0.0))
    if counts.energy_j is not None:
        ENERGY.labels(**labels).inc(max(counts.energy_j, 0.0))


_statuses: dict[str, dict[str, Any]] = {}
_statuses_lock = threading.Lock()


def observe_job(event_type: str, body: Any) -> None:
    """One watch event of a CarbonAwareJob: count what its status newly shows."""
    meta = body.get("metadata") or {}
    uid = str(meta.get("uid") or "")
    if event_type == "DELETED":
        with _statuses_lock:
            _statuses.pop(uid, None)
        return
    after = dict(body.get("status") or {})
    with _statuses_lock:
        before = _statuses.get(uid)
        _statuses[uid] = after
    namespace, zone = (
        str(meta.get("namespace") or ""),
        str((body.get("spec") or {}).get("zone") or ""),
    )
    if before is None:
        zero_job_series(namespace, zone)
    count_job(namespace, zone, job_counts(before, after))


def zero_job_series(namespace: str, zone: str) -> None:
    """Create a namespace/zone's per-job series at 0 before anything counts in them: a
    series that first appears at 1 shows no increase() in Prometheus, so the first failed
    job would raise no alert."""
    labels = {"namespace": namespace, "zone": zone}
    for trigger in ("grid", "deadline"):
        STARTED.labels(**labels, trigger=trigger)
    for phase in TERMINAL:
        FINISHED.labels(**labels, phase=phase)
    for counter in (EMISSIONS, SAVED, EXCESS, ENERGY):
        counter.labels(**labels)


def register(registry: Any) -> None:
    """Add ``observe_job`` to a kopf registry (main.build_registry calls this)."""
    import kopf

    from carbonaware.kube.builders import GROUP, PLURAL, VERSION

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="metrics")
    async def metrics_event(type: str, body: Any, **_: Any) -> None:
        observe_job(type or "", body)


class MeteredProvider:
    """A provider that counts and times its requests; ``key_suffix`` separates cache entries
    of providers whose answers depend on more than their configuration (a replay's anchor)."""

    def __init__(self, inner: Provider, key_suffix: str = "") -> None:
        self.inner = inner
        self.name = inner.name
        self._suffix = key_suffix

    @property
    def cache_key(self) -> str:
        return str(getattr(self.inner, "cache_key", self.inner.name)) + self._suffix

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.inner, attribute)

    def _call(self, kind: str, zone: str, *args: Any) -> Any:
        REQUESTS.labels(provider=self.name, kind=kind).inc()
        LAST_POLL.set_to_current_time()
        started = time.perf_counter()
        try:
            result = getattr(self.inner, kind)(zone, *args)
        except ProviderError as exc:
            ERRORS.labels(provider=self.name, kind=kind, error=type(exc).__name__).inc()
            CONSECUTIVE_FAILURES.labels(provider=self.name).inc()
            raise
        finally:
            LATENCY.labels(provider=self.name, kind=kind).observe(time.perf_counter() - started)
        CONSECUTIVE_FAILURES.labels(provider=self.name).set(0)
        return result

    def latest(self, zone: str) -> Reading:
        return self._call("latest", zone)

    def forecast(self, zone: str) -> list[Reading]:
        return self._call("forecast", zone)

    def history(self, zone: str, span: timedelta = DEFAULT_HISTORY) -> list[Reading]:
        return self._call("history", zone, span)
