"""Prometheus metrics: grid intensity per zone, jobs by phase, carbon totals, provider calls.

Provider calls are counted below the shared cache (``MeteredProvider`` wraps the real
provider), so ``carbonaware_provider_requests_total`` is requests actually sent, not lookups.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from carbonaware.core.model import Reading
from carbonaware.kube.models import PHASES
from carbonaware.providers.base import DEFAULT_HISTORY, Provider, ProviderError

INTENSITY = Gauge(
    "carbonaware_grid_intensity_grams_per_kwh",
    "Latest grid carbon intensity seen per zone (gCO2eq/kWh)",
    ["zone", "provider"],
)
JOBS = Gauge("carbonaware_jobs", "CarbonAwareJobs this operator follows, by phase", ["phase"])
EMISSIONS = Counter(
    "carbonaware_emissions_grams_total", "gCO2eq emitted by finished jobs (their accounting)"
)
SAVED = Counter(
    "carbonaware_saved_grams_total",
    "gCO2eq saved by finished jobs vs starting at submission (jobs that saved)",
)
EXCESS = Counter(
    "carbonaware_excess_grams_total",
    "gCO2eq emitted beyond starting at submission (jobs whose wait cost carbon)",
)
ENERGY = Counter("carbonaware_energy_kwh_total", "Facility energy of finished jobs (kWh)")
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
LATENCY = Histogram(
    "carbonaware_provider_request_seconds",
    "Provider request latency",
    ["provider", "kind"],
)

_phases: dict[str, str] = {}
_phases_lock = threading.Lock()


def serve(port: int) -> None:
    if port:
        start_http_server(port)


def observe_reading(reading: Reading) -> None:
    INTENSITY.labels(zone=reading.zone, provider=reading.provider or "unknown").set(
        reading.intensity
    )


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


def record_finished(energy_kwh: float, emissions_g: float, saved_g: float) -> None:
    ENERGY.inc(max(energy_kwh, 0.0))
    EMISSIONS.inc(max(emissions_g, 0.0))
    # A Counter cannot go down: a negative saving is counted as excess.
    if saved_g >= 0:
        SAVED.inc(saved_g)
    else:
        EXCESS.inc(-saved_g)


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
        started = time.perf_counter()
        try:
            return getattr(self.inner, kind)(zone, *args)
        except ProviderError as exc:
            ERRORS.labels(provider=self.name, kind=kind, error=type(exc).__name__).inc()
            raise
        finally:
            LATENCY.labels(provider=self.name, kind=kind).observe(time.perf_counter() - started)

    def latest(self, zone: str) -> Reading:
        return self._call("latest", zone)

    def forecast(self, zone: str) -> list[Reading]:
        return self._call("forecast", zone)

    def history(self, zone: str, span: timedelta = DEFAULT_HISTORY) -> list[Reading]:
        return self._call("history", zone, span)
